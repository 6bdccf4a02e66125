/* Per-client limits of one listener: a fixed table of client entries (a source address, or an
 * IPv6 prefix) with the connections each has open and a token bucket of new connections, shared
 * by every worker without a global lock. Pure: the caller passes the time; no I/O, no allocation
 * after client_limit_create. Any thread, unless said otherwise. */
#ifndef SLUICE_CLIENT_LIMIT_H
#define SLUICE_CLIENT_LIMIT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define CLIENT_LIMIT_WAYS      8          /* entries per group: the bounded probe of a lookup */
#define CLIENT_LIMIT_SIZE_MIN  64         /* smallest client_table_size */
#define CLIENT_LIMIT_SIZE_MAX  1048576    /* largest client_table_size: 32 MiB of entries */
#define CLIENT_LIMIT_RATE_MAX  1000000    /* largest connection_rate_per_client (per second) */
#define CLIENT_LIMIT_BURST_MAX 1000000    /* largest connection_burst_per_client */
#define CLIENT_LIMIT_CONNS_MAX 10000000   /* largest max_connections_per_client */
#define CLIENT_LIMIT_NONE      UINT32_MAX /* no entry held: nothing to release */

/* What a listener version enforces per client; the table is shared by versions that agree on
 * its shape (size, IPv6 prefix), so these may change under it. */
struct client_limits {
    uint32_t max_conns; /* max_connections_per_client: open at once; 0 = no cap */
    uint32_t rate;      /* connection_rate_per_client: new ones per second; 0 = no rate limit */
    uint32_t burst;     /* connection_burst_per_client: the bucket's size (>= 1 with a rate) */
};

/* Whether lim limits anything (else a listener needs no table). Pure. */
static inline bool client_limits_on(const struct client_limits *lim)
{
    return lim->max_conns > 0 || lim->rate > 0;
}

/* What client_limit_admit says. */
enum client_verdict {
    CLIENT_PASS,       /* let it in */
    CLIENT_OVER_CONNS, /* the client has max_conns open already */
    CLIENT_OVER_RATE,  /* its bucket is empty */
};

/* The table's counters (for /metrics and /status). */
struct client_limit_stats {
    uint32_t capacity;   /* entries, client_table_size rounded up to CLIENT_LIMIT_WAYS */
    uint64_t entries;    /* entries in use (they stay until evicted) */
    uint64_t evictions;  /* idle entries replaced by a new client */
    uint64_t table_full; /* clients admitted untracked: every entry of their group was busy */
};

struct client_limit;

/* A table of size entries (rounded up to a multiple of CLIENT_LIMIT_WAYS) grouping IPv6 clients
 * by their first ipv6_prefix bits (1..128), IPv4 ones (and ::ffff:a.b.c.d) by address. seed: the
 * 128-bit key of the address hash, or NULL for one from getrandom(2) (tests pass their own). One
 * reference, the caller's; NULL on ENOMEM. */
struct client_limit *client_limit_create(uint32_t size, unsigned ipv6_prefix,
                                         const uint64_t seed[2]);

/* One more reference (a listener version that shares the table). */
void client_limit_hold(struct client_limit *t);

/* Gives one back; the last frees t. NULL is fine. */
void client_limit_drop(struct client_limit *t);

/* Whether t is what a listener with this size and prefix would build: a reload that keeps the
 * shape keeps the table, and with it every client's count. Pure. */
bool client_limit_same(const struct client_limit *t, uint32_t size, unsigned ipv6_prefix);

/* The verdict for a client (AF_INET or AF_INET6; other families pass untracked) at now_ns (any
 * monotonic clock, in ns). A pass with lim->max_conns > 0 counts one open connection in *slot,
 * to give back with client_limit_release; otherwise *slot is CLIENT_LIMIT_NONE. A refusal takes
 * no token and counts nothing. */
enum client_verdict client_limit_admit(struct client_limit *t, const struct client_limits *lim,
                                       const struct sockaddr *client, uint64_t now_ns,
                                       uint32_t *slot);

/* Ends one open connection counted in slot (from client_limit_admit); CLIENT_LIMIT_NONE is
 * fine. */
void client_limit_release(struct client_limit *t, uint32_t slot);

/* Open connections counted for client now (0 when it has no entry). */
uint32_t client_limit_open(struct client_limit *t, const struct sockaddr *client);

/* Reads t's counters. */
void client_limit_stats(const struct client_limit *t, struct client_limit_stats *out);

#endif
