/* Parsing and printing of numeric IPv4 and IPv6 socket addresses. */
#include "addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* Why host (already split from its port) is not an address of the given family. */
static const char *host_phrase(const char *host, int family)
{
    const char *hex = "0123456789abcdefABCDEF:.";

    for (const char *s = host; *s != '\0'; s++) {
        bool letter = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z');
        if ((family == AF_INET && letter) || (family == AF_INET6 && !strchr(hex, *s))) {
            return "host names are not resolved; use an IP address";
        }
    }
    return family == AF_INET ? "host is not an IPv4 address" : "host is not an IPv6 address";
}

/* Splits "ip:port" or "[ip6]:port" into host and port text. */
static const char *addr_split(const char *text, char *host, size_t size, const char **port,
                              bool *v6)
{
    const char *host_start = text, *host_end;

    *v6 = text[0] == '[';
    if (*v6) {
        host_start = text + 1;
        host_end = strchr(text, ']');
        if (host_end == NULL) {
            return "\"]\" is missing after the IPv6 address";
        }
        if (host_end[1] != ':') {
            return host_end[1] == '\0' ? "port is missing (use [IPv6]:PORT)"
                                       : "expected \":PORT\" after \"]\"";
        }
    } else {
        host_end = strrchr(text, ':');
        if (host_end == NULL) {
            return "port is missing (use IP:PORT)";
        }
        if (memchr(text, ':', (size_t)(host_end - text)) != NULL) {
            return "IPv6 addresses need brackets, as in [::1]:80";
        }
    }
    if (host_end == host_start) {
        return "host is missing (use 0.0.0.0 or [::] for every interface)";
    }
    if ((size_t)(host_end - host_start) >= size) {
        return "host is too long";
    }
    memcpy(host, host_start, (size_t)(host_end - host_start));
    host[host_end - host_start] = '\0';
    *port = host_end + (*v6 ? 2 : 1);
    return NULL;
}

const char *net_port_parse(const char *text, uint16_t *port)
{
    uint64_t n = 0;
    size_t digits = strspn(text, "0123456789");

    if (*text == '\0') {
        return "port is missing";
    }
    if (digits == 0 || text[digits] != '\0') {
        return "port is not a number";
    }
    for (size_t i = 0; i < digits && n <= 65535; i++) {
        n = n * 10 + (uint64_t)(text[i] - '0');
    }
    if (n == 0 || n > 65535) {
        return "port must be between 1 and 65535";
    }
    *port = (uint16_t)n;
    return NULL;
}

/* Canonical text of an address already stored in out->sa. */
static void addr_format(struct net_addr *out)
{
    char ip[INET6_ADDRSTRLEN];

    if (out->sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&out->sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
        snprintf(out->text, sizeof(out->text), "[%s]:%u", ip, (unsigned)ntohs(sin6->sin6_port));
        return;
    }
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&out->sa;
    inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
    snprintf(out->text, sizeof(out->text), "%s:%u", ip, (unsigned)ntohs(sin->sin_port));
}

/* Fills sa, len and the canonical text of out from a numeric host and a port. */
static const char *addr_fill(const char *host, bool v6, uint16_t port, struct net_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (v6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->sa;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
            return host_phrase(host, AF_INET6);
        }
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        out->len = sizeof(*sin6);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&out->sa;
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
            return host_phrase(host, AF_INET);
        }
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        out->len = sizeof(*sin);
    }
    addr_format(out);
    return NULL;
}

const char *net_addr_parse(const char *text, struct net_addr *out)
{
    char host[NET_ADDR_MAX];
    const char *port_text, *why;
    struct net_addr addr;
    uint16_t port;
    bool v6;

    if (text == NULL || *text == '\0') {
        return "address is empty";
    }
    why = addr_split(text, host, sizeof(host), &port_text, &v6);
    if (why == NULL) {
        why = net_port_parse(port_text, &port);
    }
    if (why == NULL) {
        why = addr_fill(host, v6, port, &addr);
    }
    if (why == NULL) {
        *out = addr;
    }
    return why;
}

uint16_t net_addr_port(const struct net_addr *a)
{
    if (a->sa.ss_family == AF_INET6) {
        return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
    }
    return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
}

bool net_addr_is_wildcard(const struct net_addr *a)
{
    if (a->sa.ss_family == AF_INET6) {
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&a->sa)->sin6_addr);
    }
    return ((const struct sockaddr_in *)&a->sa)->sin_addr.s_addr == htonl(INADDR_ANY);
}

void net_addr_ip_text(const struct net_addr *a, char *out, size_t len)
{
    const char *text = a->text;
    const char *colon = strrchr(text, ':');
    size_t n = colon != NULL ? (size_t)(colon - text) : strlen(text);

    if (text[0] == '[') {
        text++;
        n = n >= 2 ? n - 2 : 0;
    }
    snprintf(out, len, "%.*s", (int)n, text);
}

int net_addr_from_sockaddr(struct net_addr *out, const struct sockaddr *sa, socklen_t len)
{
    memset(out, 0, sizeof(*out));
    if ((sa->sa_family != AF_INET && sa->sa_family != AF_INET6) || len > sizeof(out->sa)) {
        snprintf(out->text, sizeof(out->text), "unknown");
        return -EAFNOSUPPORT;
    }
    memcpy(&out->sa, sa, len);
    out->len = len;
    addr_format(out);
    return 0;
}
