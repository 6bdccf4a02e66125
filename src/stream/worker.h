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
    struct conn_budget budget;           /* open-connection cap across workers */
    const struct listener_rt *listeners; /* n_listeners entries */
    size_t n_listeners;                  /* listeners */
    struct service_rt *services;         /* n_services entries; listeners point into it */
    size_t n_services;                   /* services */
    enum splice_policy splice;           /* splice policy */
    uint32_t pipe_size;                  /* bytes per pipe */
    uint32_t buffer_size;                /* bytes per copy buffer */
    struct logger *log;                  /* where events go */
    struct log_writer *access;           /* access-log rings, one per worker; NULL = none */
};

struct worker;

/* A worker's socket for one listener. */
struct worker_listener {
    struct watch watch;           /* listening socket */
    struct worker *worker;        /* owner */
    const struct listener_rt *rt; /* what it serves */
};

/* Commands the main thread posts to a worker. */
enum worker_command {
    WORKER_RUN,   /* serve */
    WORKER_DRAIN, /* stop accepting, let sessions finish, then exit */
    WORKER_STOP,  /* close every session now and exit */
};

struct worker {
    unsigned id;                           /* 0..n-1: logs, and the balancers' ordinal */
    const struct worker_shared *shared;    /* shared settings */
    struct conn_budget *budget;            /* shared->budget, writable */
    struct evloop loop;                    /* this thread's loop */
    uv_thread_t thread;                    /* the thread */
    uv_timer_t resume;                     /* re-enables accepting after a pause */
    uv_timer_t sweep;                      /* drain, lifetime and queue upkeep */
    uint64_t last_sweep;                   /* loop time of the last drain/lifetime sweep */
    uv_async_t wakeup;                     /* main thread's commands */
    atomic_int command;                    /* enum worker_command */
    struct worker_listener *listeners;     /* one per shared listener */
    size_t n_listeners;                    /* entries in listeners */
    int accepting;                         /* listeners are in the epoll set */
    int handles;                           /* resume and wakeup are initialised */
    int closing;                           /* handles are being closed: the loop ends */
    uint64_t last_pause_log;               /* loop time of the last accept_paused log line */
    struct buffer_pool buffers;            /* copy buffers */
    struct pipe_pool pipes;                /* splice pipes */
    struct session_host host;              /* what sessions borrow from this worker */
    struct stats stats;                    /* counters; written by this thread only */
    void (*on_exit)(struct worker *w);     /* called on the worker thread right before it ends */
    void (*on_unlisten)(struct worker *w); /* called on the worker thread once its listening
                                              sockets are closed (drain or stop) */
    void *data;                            /* for on_exit and on_unlisten */
};

/* Sets up a worker (loop, pools, timers, balancer state) and creates its listening sockets
 * (bound with SO_REUSEPORT). Does not start the thread. Returns 0 or a negative errno / libuv
 * code with a message in err; on failure everything it did is undone. Main thread. */
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

#define WORKER_PAUSE_MS 100 /* how long accepting pauses at the connection or fd limit */

#endif
