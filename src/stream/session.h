/* One client/upstream pair: pick an instance, connect with retries and timeouts, pump both ways,
 * end through one finalize path. A session lives in a host (a worker) that lends it an event
 * loop, pools, counters and balancer state; it knows nothing else of the worker. Host thread
 * only, except the connection budget. */
#ifndef SLUICE_SESSION_H
#define SLUICE_SESSION_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "balancer.h"
#include "evloop.h"
#include "instance_use.h"
#include "listener.h"
#include "log.h"
#include "pump.h"
#include "stats.h"
#include "wheel.h"

/* The slots one host took from the cap and has not used yet, on a cache line of its own. */
struct conn_budget_spare {
    atomic_uint n;
} __attribute__((aligned(64)));

/* The cap on open client connections, shared by every host. A host takes slots from the cap a
 * chunk at a time and gives them back to its own spare, so a connection writes only that
 * host's line, not one every worker writes; a host that finds the cap reached takes another
 * host's spare slot before it refuses. */
struct conn_budget {
    atomic_uint open; /* slots taken from the cap: connections admitted, plus the spares */
    uint32_t max;     /* max_connections */
    uint32_t chunk;   /* slots taken at once: at most a quarter of max in all the spares */
    unsigned n_hosts; /* entries in spare: index 0 unused, a worker's is its id + 1 */
    struct conn_budget_spare *spare;
};

/* For n_hosts > 0 hosts. 0, or -ENOMEM. */
int conn_budget_init(struct conn_budget *b, uint32_t max, unsigned n_hosts);
void conn_budget_destroy(struct conn_budget *b);

/* Reserves a slot for host before an accept; 0 when the cap is reached. Any thread. */
int conn_budget_take(struct conn_budget *b, unsigned host);

/* Takes a slot even beyond the cap: for a connection that would otherwise be reset (the queue of
 * a listening socket about to close). Any thread. */
void conn_budget_force(struct conn_budget *b);

/* Gives host's slot back (a closed session, or an accept that yielded none). Any thread. */
void conn_budget_give(struct conn_budget *b, unsigned host);

/* Connections admitted and not yet closed (a moment's view while hosts take and give). */
unsigned conn_budget_open(const struct conn_budget *b);

struct session;

/* Clients of one service waiting in one host for an instance with room, oldest first. A ring of
 * queue_size slots; a slot whose client left is NULL until the head passes it. */
struct session_queue {
    struct session **slots; /* ring storage, queue_size entries; NULL before first use */
    uint32_t cap;           /* entries in slots */
    uint32_t head;          /* oldest slot */
    uint32_t len;           /* slots in use from head, holes included */
};

/* How sessions end, as the access log and the per-listener counters name it: X(NAME, "name"). */
#define SESSION_END_LIST(X)                                                                        \
    X(CLIENT_FIN, "client_fin")         /* the client closed first, cleanly */                     \
    X(SERVER_FIN, "server_fin")         /* the instance closed first, cleanly */                   \
    X(CLIENT_RESET, "client_reset")     /* the client's socket failed */                           \
    X(SERVER_RESET, "server_reset")     /* the instance's socket failed */                         \
    X(IDLE_TIMEOUT, "idle_timeout")     /* no traffic for idle_timeout */                          \
    X(CONNECT_FAILED, "connect_failed") /* every attempt to connect failed */                      \
    X(NO_INSTANCE, "no_instance")       /* the service had nothing to pick */                      \
    X(QUEUE_TIMEOUT, "queue_timeout")   /* it waited for a free instance too long */               \
    X(DRAINED, "drained")               /* its instance left the set drain_timeout ago */          \
    X(LIFETIME, "lifetime")             /* it outlived max_connection_lifetime */                  \
    X(SHUTDOWN, "shutdown")             /* sluice stopped */                                       \
    X(REJECTED, "rejected")             /* refused: every instance full, no room in the queue */   \
    X(RESOURCES, "resources")           /* out of memory or descriptors on sluice's side */

#define SESSION_END_ENUM(name, text) SESSION_END_##name,
enum session_end { SESSION_END_LIST(SESSION_END_ENUM) SESSION_END_COUNT };
#undef SESSION_END_ENUM

/* "client_fin", ... */
const char *session_end_name(enum session_end end);

/* Why a connection was refused before any upstream work: X(ENUM, "metric reason"). */
#define LISTENER_REJECT_LIST(X)                                                                    \
    X(DENY, "deny")               /* a deny range holds the client */                              \
    X(NOT_ALLOWED, "not_allowed") /* there is an allow list and the client is outside it */        \
    X(CLIENT_CONNECTIONS, "client_connections") /* max_connections_per_client open already */      \
    X(CLIENT_RATE, "client_rate") /* over connection_rate_per_client (its bucket is empty) */      \
    X(PROXY_UNTRUSTED, "proxy_untrusted") /* accept_proxy: the peer is outside proxy_trusted */    \
    X(PROXY_INVALID, "proxy_invalid")     /* accept_proxy: no valid PROXY header came first */     \
    X(PROXY_TIMEOUT, "proxy_timeout")     /* accept_proxy: no whole header in time */

#define LISTENER_REJECT_ENUM(name, text) LISTENER_REJECT_##name,
enum listener_reject { LISTENER_REJECT_LIST(LISTENER_REJECT_ENUM) LISTENER_REJECT_COUNT };
#undef LISTENER_REJECT_ENUM

/* "deny", ... */
const char *listener_reject_name(enum listener_reject why);

/* One listener's counters in one host (summed over hosts when read). Host thread writes. */
struct listener_stats {
    atomic_ullong accepted;                        /* connections accepted */
    atomic_ullong open;                            /* connections open now */
    atomic_ullong ended[SESSION_END_COUNT];        /* connections ended, by how */
    atomic_ullong rejected[LISTENER_REJECT_COUNT]; /* refused before any upstream work, by why */
};

#define SESSION_HIST_BUCKETS 12 /* finite buckets of each latency histogram */

/* Bounds (µs) of the connect-time and session-duration buckets. */
extern const uint64_t session_connect_bounds_us[SESSION_HIST_BUCKETS];
extern const uint64_t session_duration_bounds_us[SESSION_HIST_BUCKETS];

/* A latency histogram written by one thread: counts per bucket (<= its bound), total, sum. */
struct session_hist {
    atomic_ullong le[SESSION_HIST_BUCKETS]; /* observations at most the bucket's bound */
    atomic_ullong count;                    /* every observation (the +Inf bucket) */
    atomic_ullong sum_us;                   /* their sum */
};

struct logring;

/* What a host lends its sessions. */
struct session_host {
    struct evloop *loop;           /* descriptors, timers, clock */
    struct pump_env pump;          /* buffers, pipes, splice policy */
    struct stats *stats;           /* the host thread's counters */
    struct logger *log;            /* where events go */
    struct conn_budget *budget;    /* open-connection cap, shared by all hosts */
    struct instance_user user;     /* its shard of every instance (worker id + 1) */
    struct lb_scratch *scratch;    /* balancer state, one per service (service_rt.index) */
    struct session_queue *queues;  /* waiting clients, one queue per service (service_rt.index) */
    uint64_t rng;                  /* random source for balancers; never 0 */
    struct session *live;          /* open sessions (list head) */
    size_t n_live;                 /* entries in live */
    struct session *graveyard;     /* sessions closed during this batch, freed after it */
    int serving;                   /* session_serve_queue runs (it may end sessions itself) */
    struct listener_stats *lstats; /* per listener (listener_rt.index) */
    struct session_hist connect_time; /* accept -> upstream connected */
    struct session_hist duration;     /* accept -> end */
    struct logring *access;           /* where access-log lines go (log_access listeners) */
    /* Out of descriptors for an upstream socket: the host should stop accepting for a while. */
    void (*on_fd_shortage)(struct session_host *h, int err);
    /* The admission decision (allow/deny, per-client limits) for a client of lst at address
     * client, for accept_proxy listeners once the header named the client:
     * LISTENER_REJECT_COUNT to let it in, with *slot the client-table entry it then holds
     * (released when the session ends), or why not (the session counts the refusal). */
    enum listener_reject (*admit)(struct session_host *h, const struct listener_rt *lst,
                                  const struct sockaddr *client, uint32_t *slot);
};

enum session_state {
    SESSION_PROXY_HEADER, /* accept_proxy: waiting for the PROXY header, not yet admitted */
    SESSION_QUEUED,       /* every instance is full: waiting in the service's queue */
    SESSION_CONNECTING,   /* waiting for the upstream connect */
    SESSION_ESTABLISHED,  /* pumping */
    SESSION_CLOSED,       /* finalized, waiting to be freed after the epoll batch */
};

/* 264 bytes on x86-64: one 272-byte malloc chunk per idle connection. Fields are ordered so
 * that the small ones share words; measure idle memory before adding any. */
struct session {
    struct session_host *host; /* the host it lives in */
    struct listener_rt *lst;   /* listener version it came in on (a reference) */
    struct watch client;       /* client socket */
    struct watch upstream;     /* upstream socket, fd -1 before the first connect */
    struct pump_dir up;        /* client -> upstream */
    struct pump_dir down;      /* upstream -> client */
    struct wheel_entry timer;  /* connect or idle deadline */
    uint64_t started_us;       /* monotonic µs of the accept */
    union {
        uint64_t last_active;   /* established: loop time of the last byte moved */
        uint64_t fd_wait_since; /* connecting: loop time it first found no descriptor; 0 */
        uint64_t queue_slot;    /* queued: its slot in the host's queue of its service */
        uint64_t header_lowat;  /* proxy header: the SO_RCVLOWAT it set; 0 = the default */
    } t;
    struct instance_state *inst;   /* instance in use (held, counted in active) */
    struct instance_state **tried; /* instances that failed a connect (held); NULL if none */
    uint16_t n_tried;              /* entries in tried (retries <= 100) */
    uint16_t attempts;             /* connect attempts made */
    uint8_t state;                 /* enum session_state */
    uint8_t client_family;         /* AF_INET or AF_INET6 */
    uint16_t client_port;          /* client's port, host order */
    uint8_t client_ip[16];         /* client's address (4 bytes used for IPv4) */
    uint32_t connect_us;           /* accept -> upstream connected, µs (retries included) */
    uint32_t client_slot; /* entry held in lst's client table (admit.h), or CLIENT_LIMIT_NONE;
                             in what was padding before prev: the size stays */
    struct session *prev; /* host's live list */
    struct session *next; /* host's live list, or graveyard link */
    /* a listener bound to a wildcard address: the local address follows (session_local) */
};

/* Takes over an accepted client socket (client: its address from accept) and starts connecting
 * upstream, or for an accept_proxy listener first waits for the PROXY header (then h->admit
 * decides with the header's address and hands back the client slot it took); the session holds
 * a reference to lst until it is freed, and gives client_slot (from admit_check on lst, or
 * CLIENT_LIMIT_NONE) back to lst when it ends. Returns 0, or -ENOMEM: then nothing was taken, the
 * caller closes fd, releases client_slot and gives the budget slot back. */
int session_start(struct session_host *h, struct listener_rt *lst, int fd,
                  const struct sockaddr *client, socklen_t client_len, uint32_t client_slot);

/* Ends a session at once (shutdown timeout): both sockets are reset. */
void session_abort(struct session *s);

/* Handles an expired wheel entry of a session. */
void session_on_timer(struct wheel_entry *e);

/* Frees sessions closed during the last epoll batch (events may still have named them). */
void session_free_closed(struct session_host *h);

/* Gives queued clients of service index svc the instances that have room now, oldest first;
 * returns how many still wait here. */
size_t session_serve_queue(struct session_host *h, size_t svc);

/* Closes the established sessions of h whose instance left its set more than drain_timeout ago
 * or that outlived max_connection_lifetime; now_ms and now_us are clock_ms() and clock_us(). */
void session_sweep(struct session_host *h, uint64_t now_ms, uint64_t now_us);

/* The client's address, and the local address it connected to. */
void session_client(const struct session *s, struct net_addr *out);
void session_local(const struct session *s, struct net_addr *out);

#endif
