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
#include "client_limit.h"
#include "inifile.h"

struct acl;
struct owner;

/* A service as sessions see it: its owner and what they enforce. Read-only while workers run,
 * but for queued. */
struct service_rt {
    const char *name;          /* [service:NAME] */
    struct owner *owner;       /* where instances come from */
    size_t index;              /* the service's number, for per-service caller state */
    uint32_t queue_size;       /* clients that may wait when all instances are full */
    uint8_t proxy_protocol;    /* enum proxy_send: the PROXY header sent after each connect */
    uint64_t queue_timeout_ms; /* how long one may wait */
    uint64_t drain_timeout_ms; /* sessions on a removed instance end after this; 0 = never */
    uint64_t lifetime_ms;      /* sessions end after this (+ jitter); 0 = never */
    atomic_uint queued;        /* clients waiting now, all workers */
};

/* One version of a listener: immutable once published, refcounted. A reload that changes a
 * listener makes a new version; the daemon's table, each worker's socket and each session hold a
 * reference, so a session keeps the settings it started with and nothing is freed under it.
 * One uncontended atomic add and sub per session, at start and at free: cheap next to the
 * accept and connect syscalls around them. */
struct listener_rt {
    atomic_uint refs;            /* holders; the last listener_rt_drop frees it */
    char name[INI_NAME_MAX];     /* [listener:NAME] */
    int line;                    /* line of its section header, for reload errors */
    const char *conf_path;       /* config file it comes from, for FILE:LINE in errors */
    int bind_line;               /* line of its bind key there */
    struct net_addr bind;        /* bind address */
    int wildcard;                /* bind is 0.0.0.0 or ::: the local address is per connection */
    struct service_rt *service;  /* what it proxies to; services live as long as the workers */
    size_t index;                /* per-listener counters' slot: the same for every version */
    int log_access;              /* one access-log line per closed connection */
    uint64_t connect_timeout_ms; /* per connect attempt */
    uint64_t idle_timeout_ms;    /* 0 = never */
    uint32_t retries;            /* other instances tried after a failed connect */
    int backlog;                 /* listen(2) backlog */
    struct acl *acl;             /* allow/deny, owned by this version; NULL: everyone may come */
    /* per-client limits (client_limit.h) */
    struct client_limit *clients;       /* the table, a reference: versions with the same
                                           client_table_size and client_ipv6_prefix share it; NULL
                                           when this version has no per-client limit */
    struct client_limits client_limits; /* what this version enforces with it */
    int accept_proxy;                 /* a PROXY header comes first: read it before anything else */
    struct acl *trusted;              /* accept_proxy: peers allowed to send one (an allow list),
                                         owned by this version */
    uint64_t proxy_header_timeout_ms; /* accept_proxy: the header's deadline from accept */
};

/* The ranges a version is built with: allow/deny, and the peers trusted with a PROXY header. */
struct listener_acls {
    struct acl *access;  /* allow/deny; NULL: everyone may come */
    struct acl *trusted; /* proxy_trusted; NULL without accept_proxy */
};

/* Frees both (either may be NULL). */
void listener_acls_destroy(struct listener_acls *a);

/* A new version: a copy of tmpl (which hands over its acl, trusted and clients) (a template on the
 * caller's stack, never a published version: its refs are read plainly) with one reference, the
 * caller's. NULL on ENOMEM. Any thread. */
struct listener_rt *listener_rt_create(const struct listener_rt *tmpl);

/* Takes one more reference. Any thread. */
void listener_rt_hold(struct listener_rt *rt);

/* Gives one back; the last one frees rt, its acl and its clients reference. NULL is fine. */
void listener_rt_drop(struct listener_rt *rt);

/* A listening socket for rt, bound with SO_REUSEPORT so that every worker binds the same address
 * and the kernel spreads connections over them (libuv 1.44 has no flag for it). Returns the
 * descriptor, or -errno with "FILE:LINE: bind: ADDRESS: what failed" in err, naming the line of
 * the listener's bind key as a config error would. */
int listener_socket(const struct listener_rt *rt, char *err, size_t err_len);

/* Accepts one non-blocking connection and the client's address. Returns the descriptor or
 * -errno (EAGAIN when none is waiting). */
int listener_accept(int fd, struct sockaddr_storage *client, socklen_t *len);

#endif
