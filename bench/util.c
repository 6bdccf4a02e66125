/* Socket, clock and command-line helpers shared by the sluice benchmark tools. */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

int util_parse_addr(const char *text, struct util_addr *out)
{
    char host[128];
    const char *colon = strrchr(text, ':');
    const char *start = text;
    size_t len;

    if (colon == NULL || colon[1] == '\0')
        return -EINVAL;
    len = (size_t)(colon - text);
    if (text[0] == '[' && len >= 2 && colon[-1] == ']') {
        start = text + 1; /* "[::1]:80": strip the brackets */
        len -= 2;
    }
    if (len == 0 || len >= sizeof(host))
        return -EINVAL;
    memcpy(host, start, len);
    host[len] = '\0';

    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || res == NULL)
        return -EINVAL;
    memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
    out->len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

char *util_format_addr(const struct util_addr *addr, char *buf, size_t size)
{
    char host[NI_MAXHOST], port[NI_MAXSERV];

    if (getnameinfo((const struct sockaddr *)&addr->ss, addr->len, host, sizeof(host), port,
                    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(buf, size, "?");
        return buf;
    }
    if (addr->ss.ss_family == AF_INET6)
        snprintf(buf, size, "[%s]:%s", host, port);
    else
        snprintf(buf, size, "%s:%s", host, port);
    return buf;
}

int util_listen(const struct util_addr *addr, int reuseport, int nonblock)
{
    int one = 1;
    int type = SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0);
    int fd = socket(addr->ss.ss_family, type, 0);

    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0)
        goto fail;
    /* A deep backlog: connrate and idle open thousands of connections in bursts. */
    if (listen(fd, 4096) < 0)
        goto fail;
    return fd;
fail:;
    int err = -errno;
    close(fd);
    return err;
}

int util_local_addr(int fd, struct util_addr *out)
{
    out->len = sizeof(out->ss);
    if (getsockname(fd, (struct sockaddr *)&out->ss, &out->len) < 0)
        return -errno;
    return 0;
}

void util_set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

uint64_t util_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t util_raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (uint64_t)rl.rlim_cur;
}

int util_parse_u64(const char *text, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v;

    if (text[0] < '0' || text[0] > '9')
        return -EINVAL;
    errno = 0;
    v = strtoull(text, &end, 10);
    if (errno != 0 || end == text)
        return -EINVAL;
    if (*end != '\0') {
        const char *units = "kmg";
        const char *unit = strchr(units, tolower((unsigned char)*end));
        if (unit != NULL) {
            v <<= 10 * (unit - units + 1);
            end++;
        }
    }
    if (*end != '\0')
        return -EINVAL;
    *out = v;
    return 0;
}

int util_parse_seconds(const char *text, double *out)
{
    char *end = NULL;
    double v;

    errno = 0;
    v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !isfinite(v) || v < 0)
        return -EINVAL;
    *out = v;
    return 0;
}

void util_block_signals(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}
