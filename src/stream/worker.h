/* A worker thread: its own event loop (epoll set with libuv embedded), its own SO_REUSEPORT socket
 * per listener, its pools, counters and balancer state, and the sessions it accepted. Workers
 * share nothing mutable but atomics (the connection budget, instance counts) and the sets. */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "evloop.h"
#include "listener.h"
#include "log.h"
#include "logring.h"
#include "pool.h"
#include "pump.h"
#include "session.h"
#include "stats.h"

/* What every worker shares with the others and with the main thread; read-only while they run,
 * but for the budget's atomics. */
struct worker_shared {
    struct conn_budget budget;            /* open-connection cap across workers */
    struct listener_rt *const *listeners; /* the start-up set, n_listeners entries: read by
                                             worker_init only (later sets come as changes) */
    size_t n_listeners;                   /* listeners */
    size_t lstats_cap;                    /* per-listener counter slots (listener_rt.index) */
    struct service_rt *services;          /* n_services entries; listeners point into it */
    size_t n_services;                    /* services */
    enum splice_policy splice;            /* splice policy */
    uint32_t pipe_size;                   /* bytes per pipe */
    uint32_t buffer_size;                 /* bytes per copy buffer */
    struct logger *log;                   /* where events go */
    struct log_writer *access;            /* access-log rings, one per worker; NULL = none */
    struct worker_inherited *inherited;   /* per start-up listener, or NULL: sockets taken over */
    unsigned n_workers;                   /* workers: how inherited sockets are dealt */
};

/* Listening sockets a --takeover start received from the process it replaces, for one listener
 * of the start-up set: dealt over the workers (socket j to worker j % n_workers), each taken
 * over as that worker's socket; a worker dealt none binds its own. */
struct worker_inherited {
    int *fds; /* n descriptors; worker_init sets the ones it takes to -1 */
    size_t n; /* sockets received; 0 = none, bind as usual */
};

struct worker;

/* A worker's socket for one listener. Created (socket bound and listening) by the main thread,
 * then owned by the worker thread once handed over. */
struct worker_listener {
    struct watch watch;           /* listening socket */
    struct worker *worker;        /* owner */
    struct listener_rt *rt;       /* the version it serves (a reference); NULL until handed over */
    struct worker_listener *next; /* the worker's list */
};

/* One worker's new listener set, posted by the main thread after a reload: every listener to
 * serve, each with its version and, for a new socket (an added listener or a new bind), the
 * socket. A listener the worker serves that the set does not name is removed. */
struct worker_change_item {
    struct listener_rt *rt;        /* version to serve; the change holds a reference */
    struct worker_listener *fresh; /* its new socket, or NULL: keep the one of rt->index */
};

struct worker_change {
    size_t n;                          /* entries in items */
    struct worker_change_item items[]; /* the set */
};

/* Commands the main thread posts to a worker. */
enum worker_command {
    WORKER_RUN,   /* serve */
    WORKER_DRAIN, /* stop accepting (what is queued is accepted first), let sessions finish,
                     then exit */
    WORKER_STOP,  /* close every session now and exit */
};

struct worker {
    unsigned id;                            /* 0..n-1: logs, and the balancers' ordinal */
    const struct worker_shared *shared;     /* shared settings */
    struct conn_budget *budget;             /* shared->budget, writable */
    struct evloop loop;                     /* this thread's loop */
    uv_thread_t thread;                     /* the thread */
    uv_timer_t resume;                      /* re-enables accepting after a pause */
    uv_timer_t sweep;                       /* drain, lifetime and queue upkeep */
    uint64_t last_sweep;                    /* loop time of the last drain/lifetime sweep */
    int sweep_sessions;                     /* some service has drain or lifetime limits */
    uv_async_t wakeup;                      /* main thread's commands */
    atomic_int command;                     /* enum worker_command */
    struct worker_listener *listeners;      /* sockets being served (list) */
    _Atomic(struct worker_change *) change; /* posted by the main thread, taken by the worker */
    unsigned changes_posted;                /* changes posted (main thread only) */
    atomic_uint changes_applied;            /* changes applied (written by the worker thread) */
    int accepting;                          /* listeners are in the epoll set */
    int handles;                            /* resume and wakeup are initialised */
    int closing;                            /* handles are being closed: the loop ends */
    uint64_t last_pause_log;                /* loop time of the last accept_paused log line */
    struct buffer_pool buffers;             /* copy buffers */
    struct pipe_pool pipes;                 /* splice pipes */
    struct session_host host;               /* what sessions borrow from this worker */
    struct stats stats;                     /* counters; written by this thread only */
    void (*on_exit)(struct worker *w);      /* called on the worker thread right before it ends */
    void (*on_unlisten)(struct worker *w);  /* called on the worker thread once its listening
                                               sockets are closed (drain or stop) */
    void (*on_changed)(struct worker *w);   /* called on the worker thread once it applied a
                                               posted change */
    int unlistened;                         /* on_unlisten was called */
    void *data;                             /* for on_exit, on_unlisten and on_changed */
};

/* Sets up a worker (loop, pools, timers, balancer state) and creates its listening sockets
 * (bound with SO_REUSEPORT), or takes the inherited ones dealt to it (their descriptors become
 * the worker's and are set to -1 in shared->inherited). Does not start the thread. Returns 0 or a
 * negative errno / libuv code with a message in err; on failure everything it did is undone. Main
 * thread. */
int worker_init(struct worker *w, unsigned id, struct worker_shared *shared, char *err,
                size_t err_len);

/* Starts the thread. Returns 0 or a libuv error. */
int worker_start(struct worker *w);

/* Posts a command; any thread. */
void worker_command(struct worker *w, enum worker_command cmd);

/* Waits for the thread to end and frees what worker_init made. Main thread. */
void worker_join(struct worker *w);

/* Frees what worker_init made for a worker whose thread never started (or already ended).
 * Main thread. */
void worker_destroy(struct worker *w);

/* A socket for rt, bound and listening (SO_REUSEPORT), for worker w; not yet watched. NULL with
 * a message naming the listener in err (errno kept). Main thread; destroy it with
 * worker_listener_destroy unless a posted change hands it over. */
struct worker_listener *worker_listener_create(struct worker *w, const struct listener_rt *rt,
                                               char *err, size_t err_len);

/* Closes a socket that was never handed over and drops its version. NULL is fine. */
void worker_listener_destroy(struct worker_listener *wl);

/* An empty change of n items (every rt and fresh NULL), or NULL on ENOMEM. Main thread. */
struct worker_change *worker_change_create(size_t n);

/* Drops a change's references and closes its sockets. NULL is fine. */
void worker_change_destroy(struct worker_change *c);

/* Whether a change posted to w is not yet applied. Main thread. */
int worker_change_pending(struct worker *w);

/* Hands c to w, which applies it on its thread and then calls on_changed: swaps the versions of
 * the sockets it keeps (new connections get the new settings; open sessions keep theirs),
 * watches new sockets, and for each socket it no longer serves stops watching it, accepts what
 * is queued on it and only then closes it. Returns 0, or -EBUSY while a change is pending (c
 * stays the caller's). Main thread. */
int worker_post_change(struct worker *w, struct worker_change *c);

#define WORKER_PAUSE_MS 100 /* how long accepting pauses at the connection or fd limit */

#endif
