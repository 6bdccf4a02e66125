/* Numeric socket addresses as sluice writes them: "IP:PORT" or "[IPv6]:PORT", never a host name,
 * so that a DNS hiccup cannot change where traffic goes. Pure functions, any thread. */
#ifndef SLUICE_ADDR_H
#define SLUICE_ADDR_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define NET_ADDR_MAX 64 /* longest "host:port" / "[v6]:port" text + 1 */

/* A numeric socket address and the text it was written as. */
struct net_addr {
    struct sockaddr_storage sa; /* IPv4 or IPv6 address with port */
    socklen_t len;              /* bytes of sa in use */
    char text[NET_ADDR_MAX];    /* canonical "ip:port" or "[ip6]:port" */
};

/* "127.0.0.1:80", "[::1]:80" -> address. Returns NULL, or a short phrase such as "port is not a
 * number" (out is then untouched). */
const char *net_addr_parse(const char *text, struct net_addr *out);

/* "80" -> 80: NULL, or a phrase ("port must be between 1 and 65535"). */
const char *net_port_parse(const char *text, uint16_t *port);

/* Port of a (AF_INET or AF_INET6) address, host order. */
uint16_t net_addr_port(const struct net_addr *a);

/* True for 0.0.0.0 and ::, which name every interface and no peer. */
bool net_addr_is_wildcard(const struct net_addr *a);

/* The IP part of a->text, without brackets or port, into out. */
void net_addr_ip_text(const struct net_addr *a, char *out, size_t len);

/* Fills out (canonical text included) from a socket address of the kernel (accept, getsockname).
 * Returns 0, or -EAFNOSUPPORT for other families (out then reads "unknown"). */
int net_addr_from_sockaddr(struct net_addr *out, const struct sockaddr *sa, socklen_t len);

#endif
