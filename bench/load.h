/* Internal contract of sluice-load: options, the worker event loop and the traffic modes. */
#ifndef SLUICE_BENCH_LOAD_H
#define SLUICE_BENCH_LOAD_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "hist.h"
#include "util.h"

/* Traffic patterns. */
enum load_mode {
    LOAD_CONNRATE, /* connect, 64 B echo, close, repeat */
    LOAD_RR,       /* persistent connections doing ping-pong */
    LOAD_BULK,     /* long streams to a sink/verify backend or from a source backend */
    LOAD_IDLE,     /* many verified connections held open */
};

/* Phases every worker walks through, driven by the main thread. */
enum load_phase {
    LOAD_SETUP, /* open the connections that must exist before the clock starts */
    LOAD_RUN,   /* measure */
    LOAD_STOP,  /* wind down: finish exchanges that prove correctness, close the rest */
};

/* Result of one unit of work on a connection. */
enum load_step {
    LOAD_PROGRESS, /* did something; call again */
    LOAD_BLOCKED,  /* waits for an event */
    LOAD_CLOSE,    /* finished (counters already updated): close it */
};

/* Command-line settings, read-only once workers start. */
struct load_opts {
    enum load_mode mode;     /* traffic pattern */
    struct util_addr target; /* where to connect */
    const char *target_text; /* the --target argument, for the report */
    double duration;         /* connrate, rr, bulk: measured seconds */
    double hold;             /* idle: seconds to hold, 0 = until signal or stdin EOF */
    double connect_timeout;  /* seconds for a connect, and for one echo exchange */
    unsigned concurrency;    /* connrate: parallel attempts; idle: parallel connects */
    unsigned connections;    /* rr and idle: connections */
    unsigned streams;        /* bulk: parallel streams */
    unsigned threads;        /* worker threads */
    unsigned size;           /* connrate and rr: message bytes */
    int upload;              /* bulk: 1 = up (client sends), 0 = down */
    int verify_pattern;      /* bulk up: 1 = verify backend, 0 = sink backend (FNV-1a) */
    uint64_t seed;           /* first pattern seed */
};

/* Counters of one worker; merged by main at the end. */
struct load_stats {
    uint64_t ops;            /* connrate: connections done; rr: requests; bulk: streams ok */
    uint64_t bytes;          /* bulk: payload bytes moved and verified */
    uint64_t errors;         /* wrong bytes, bad replies, early EOF or reset mid-exchange */
    uint64_t connect_errors; /* failed or timed-out connects */
    uint64_t timeouts;       /* exchanges that did not finish within the connect timeout */
    uint64_t established;    /* connections that passed their first check */
    uint64_t dropped;        /* idle: held connections the far side closed */
    struct hist latency;     /* rr: per request; connrate: connect to last echo byte */
};

/* One client connection, owned by its worker. */
struct load_conn {
    struct util_list link;  /* in the worker's list of connections */
    struct util_list ready; /* in the worker's ready list while it has work left */
    int fd;                 /* non-blocking socket */
    unsigned connected : 1; /* the connect completed */
    unsigned setup : 1;     /* opened during setup and not yet settled */
    unsigned readable : 1;  /* may have input: recv has not hit EAGAIN since the last event */
    unsigned writable : 1;  /* may take output: send has not hit EAGAIN since the last event */
    unsigned rd_hup : 1;    /* epoll reported FIN or error: read until recv says so */
    unsigned rd_eof : 1;    /* recv returned 0 */
    unsigned wr_shut : 1;   /* we sent FIN */
    int state;              /* mode-specific sub-state */
    uint64_t seed;          /* pattern seed of this connection */
    uint64_t tx;            /* pattern bytes sent */
    uint64_t rx;            /* pattern bytes received and verified */
    uint64_t target;        /* end offset of the exchange in progress */
    uint64_t t0;            /* ns: start of the measured operation */
    uint64_t deadline;      /* ns: give up after this, 0 = none */
    uint64_t hash;          /* bulk up: FNV-1a of the bytes sent */
    char out[64];           /* control line to send before anything else */
    size_t out_len;         /* bytes in `out` */
    size_t out_off;         /* bytes of `out` sent */
    char line[96];          /* reply line being read */
    size_t line_len;        /* bytes in `line` */
};

/* State the main thread shares with the workers. */
struct load_shared {
    int phase;            /* enum load_phase, atomic */
    unsigned ready;       /* workers done with setup, atomic */
    uint64_t established; /* connections established so far (all workers), atomic */
    int main_wake_fd;     /* eventfd: a worker finished its setup */
};

/* One event-loop thread. */
struct load_worker {
    const struct load_opts *o;       /* settings */
    const struct load_mode_ops *ops; /* the traffic mode */
    struct load_shared *shared;      /* phase and readiness, shared with main */
    unsigned id;                     /* 0..threads-1 */
    unsigned share;                  /* this worker's part of the connections/streams */
    int ep;                          /* epoll instance */
    int wake_fd;                     /* eventfd: main changed the phase */
    int phase;                       /* phase this worker has acted on */
    int setup_reported;              /* told main its setup is done */
    unsigned setup_left;             /* setup connections opened, not yet settled */
    unsigned to_open;                /* setup connections the mode has yet to open */
    unsigned opened;                 /* connections opened so far */
    unsigned open_now;               /* connections currently open */
    struct util_list conns;          /* every open connection */
    struct util_list ready;          /* connections that spent their budget */
    unsigned char *buf;              /* receive buffer, LOAD_BUF bytes */
    uint64_t t_done;                 /* ns: the worker finished */
    pthread_t thread;                /* thread running load_worker_run */
    struct load_stats st;            /* counters */
};

/* Per-mode behaviour, one table per mode in load_modes.c. */
struct load_mode_ops {
    const char *name;                                                   /* --mode value */
    void (*setup)(struct load_worker *w);                               /* open setup conns */
    void (*phase)(struct load_worker *w, enum load_phase phase);        /* RUN or STOP began */
    void (*tick)(struct load_worker *w);                                /* after each event batch */
    enum load_step (*step)(struct load_worker *w, struct load_conn *c); /* connected conn */
};

/* Receive buffer size of each worker. */
#define LOAD_BUF ((size_t)256 * 1024)

/* Returns the ops table of `mode`. */
const struct load_mode_ops *load_mode_ops(enum load_mode mode);

/* Thread entry point: runs worker `arg` until it has closed everything after STOP. */
void *load_worker_run(void *arg);

/* Opens a non-blocking connection to the target with `seed`; NULL on failure (counted). */
struct load_conn *load_conn_open(struct load_worker *w, uint64_t seed);

/* Returns a fresh pattern seed, unique across workers. */
uint64_t load_next_seed(struct load_worker *w);

/* Marks a setup connection as resolved (established or failed); idempotent. */
void load_conn_settle(struct load_worker *w, struct load_conn *c);

/* Closes one connection; counters are the caller's business. */
void load_conn_close(struct load_worker *w, struct load_conn *c);

/* Closes every connection of the worker without counting anything. */
void load_close_all(struct load_worker *w);

/* Queues every connection for a step: used when the phase changes. */
void load_kick_all(struct load_worker *w);

/* Receives: >0 bytes, 0 at EOF, -EAGAIN (clears readable) or -errno. */
ssize_t load_recv(struct load_conn *c, void *buf, size_t len);

/* Sends pattern bytes from offset c->tx, at most `max`; advances tx; bytes, -EAGAIN, -errno. */
ssize_t load_send_pattern(struct load_conn *c, uint64_t max);

/* Sends what is left of c->out: 1 when empty, 0 when blocked, -errno on failure. */
int load_flush_out(struct load_conn *c);

/* Counts an error and describes the first few on stderr. */
void load_error(struct load_worker *w, struct load_conn *c, const char *what, int64_t detail);

#endif
