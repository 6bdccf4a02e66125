/* A worker thread: its own libuv loop (timers, wake-ups) embedded in its own epoll set (sessions,
 * listeners), its own SO_REUSEPORT socket per listener, pools and timer wheel. Workers share
 * nothing mutable but atomics. */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "pool.h"
#include "pump.h"
#include "snapshot.h"
#include "stats.h"
#include "wheel.h"

struct worker;
struct watch;

/* Called with the epoll events of a watched descriptor. */
typedef void (*watch_cb)(struct watch *wt, uint32_t events);

/* A descriptor in the worker's epoll set. Embed it; the callback recovers the owner. */
struct watch {
    int fd;          /* descriptor, -1 when closed */
    uint32_t events; /* interest currently registered; 0 = not in the epoll set */
    watch_cb cb;     /* handler */
};

/* A listener as all workers see it; read-only while workers run. */
struct listener_rt {
    const char *name;                 /* [listener:NAME] */
    struct config_addr bind;          /* bind address */
    struct snapshot_service *service; /* where instances come from */
    uint64_t connect_timeout_ms;      /* per connect attempt */
    uint64_t idle_timeout_ms;         /* 0 = never */
    uint32_t retries;                 /* other instances tried after a failed connect */
    int backlog;                      /* listen(2) backlog */
};

/* State every worker shares with the others and with the main thread. */
struct proxy_shared {
    atomic_uint open_sessions;           /* client connections open, all workers */
    uint32_t max_connections;            /* cap on open_sessions */
    const struct listener_rt *listeners; /* n_listeners entries */
    size_t n_listeners;                  /* listeners */
    enum config_splice splice;           /* splice policy */
    uint32_t pipe_size;                  /* bytes per pipe */
    uint32_t buffer_size;                /* bytes per copy buffer */
    struct logger *log;                  /* where events go */
};

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

struct session;

struct worker {
    unsigned id;                           /* 0..n-1, also the balancer scratch index */
    struct proxy_shared *shared;           /* shared settings and counters */
    uv_loop_t loop;                        /* this thread's loop */
    uv_thread_t thread;                    /* the thread */
    int epfd;                              /* epoll set of every descriptor the worker waits on */
    struct watch uv_watch;                 /* libuv's backend descriptor inside epfd */
    int exiting;                           /* handles closed: leave the loop */
    uv_timer_t tick;                       /* drives the wheel */
    uv_timer_t resume;                     /* re-enables accepting after a pause */
    uv_async_t wakeup;                     /* main thread's commands */
    atomic_int command;                    /* enum worker_command */
    struct worker_listener *listeners;     /* one per shared listener */
    size_t n_listeners;                    /* entries in listeners */
    int accepting;                         /* listeners are in the epoll set */
    int loop_ready;                        /* loop and handles initialised */
    uint64_t last_pause_log;               /* loop time of the last accept_paused log line */
    struct buffer_pool buffers;            /* copy buffers */
    struct pipe_pool pipes;                /* splice pipes */
    struct pump_env pump_env;              /* what sessions lend their pumps */
    struct wheel wheel;                    /* session deadlines */
    struct session *sessions;              /* every open session (list head) */
    size_t n_sessions;                     /* entries in sessions */
    struct session *graveyard;             /* sessions closed during this epoll batch */
    struct stats stats;                    /* counters; written by this thread only */
    void (*on_exit)(struct worker *w);     /* called on the worker thread right before it ends */
    void (*on_unlisten)(struct worker *w); /* called on the worker thread once its listening
                                              sockets are closed (drain or stop) */
    void *data;                            /* for on_exit and on_unlisten */
};

/* Sets up a worker (loop, epoll set, pools, timers) and creates its listening sockets (bound
 * with SO_REUSEPORT). Does not start the thread. Returns 0 or -errno; on failure err gets a
 * message naming the listener. Main thread. */
int worker_init(struct worker *w, unsigned id, struct proxy_shared *shared, char *err,
                size_t err_len);

/* Starts the thread. Returns 0 or a libuv error. */
int worker_start(struct worker *w);

/* Posts a command; any thread. */
void worker_command(struct worker *w, enum worker_command cmd);

/* Waits for the thread to end and frees what worker_init made. Main thread. */
void worker_join(struct worker *w);

/* Frees what worker_init made for a worker whose thread never started (or already ended).
 * Safe after a failed worker_init. Main thread. */
void worker_destroy(struct worker *w);

/* Registers wt with the given interest (0 removes it). Only issues epoll_ctl when the interest
 * changes. Returns 0 or -errno. Worker thread. */
int worker_watch(struct worker *w, struct watch *wt, uint32_t events);

/* Schedules a wheel entry for due (ms) and starts the tick when needed. Worker thread. */
void worker_timer_add(struct worker *w, struct wheel_entry *e, uint64_t due);

/* Stops accepting for WORKER_PAUSE_MS (connection cap, out of descriptors or memory); open
 * sessions go on. Logged at most once a second. Worker thread. */
void worker_pause(struct worker *w, const char *why, int err);

#define WORKER_PAUSE_MS 100 /* how long accepting pauses at the connection or fd limit */

/* Current loop time, ms. Worker thread. */
uint64_t worker_now(const struct worker *w);

#endif
