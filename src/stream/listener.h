/* A listener as the workers see it: where it binds, which service it feeds and its per-session
 * settings; and the socket calls around it: one SO_REUSEPORT listening socket per worker, accept
 * with the client's address. */
#ifndef SLUICE_LISTENER_H
#define SLUICE_LISTENER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "addr.h"

struct owner;

/* A service as sessions see it: its owner and what they enforce. Read-only while workers run,
 * but for queued. */
struct service_rt {
    const char *name;          /* [service:NAME] */
    struct owner *owner;       /* where instances come from */
    size_t index;              /* the service's number, for per-service caller state */
    uint32_t queue_size;       /* clients that may wait when all instances are full */
    uint64_t queue_timeout_ms; /* how long one may wait */
    uint64_t drain_timeout_ms; /* sessions on a removed instance end after this; 0 = never */
    uint64_t lifetime_ms;      /* sessions end after this (+ jitter); 0 = never */
    atomic_uint queued;        /* clients waiting now, all workers */
};

/* A listener; read-only while workers run. */
struct listener_rt {
    const char *name;            /* [listener:NAME] */
    const char *conf_path;       /* config file it comes from, for FILE:LINE in errors */
    int bind_line;               /* line of its bind key there */
    struct net_addr bind;        /* bind address */
    int wildcard;                /* bind is 0.0.0.0 or ::: the local address is per connection */
    struct service_rt *service;  /* what it proxies to */
    size_t index;                /* the listener's number, for per-listener counters */
    int log_access;              /* one access-log line per closed connection */
    uint64_t connect_timeout_ms; /* per connect attempt */
    uint64_t idle_timeout_ms;    /* 0 = never */
    uint32_t retries;            /* other instances tried after a failed connect */
    int backlog;                 /* listen(2) backlog */
};

/* A listening socket for rt, bound with SO_REUSEPORT so that every worker binds the same address
 * and the kernel spreads connections over them (libuv 1.44 has no flag for it). Returns the
 * descriptor, or -errno with "FILE:LINE: bind: ADDRESS: what failed" in err, naming the line of
 * the listener's bind key as a config error would. */
int listener_socket(const struct listener_rt *rt, char *err, size_t err_len);

/* Accepts one non-blocking connection and the client's address. Returns the descriptor or
 * -errno (EAGAIN when none is waiting). */
int listener_accept(int fd, struct sockaddr_storage *client, socklen_t *len);

#endif
