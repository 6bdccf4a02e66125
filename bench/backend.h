/* Internal contract between the backend's event loop (backend.c) and its protocols. */
#ifndef SLUICE_BENCH_BACKEND_H
#define SLUICE_BENCH_BACKEND_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

/* What the backend does with each connection. */
enum backend_mode {
    BACKEND_ECHO,   /* send every byte back */
    BACKEND_SINK,   /* count and FNV-1a every byte, report both at EOF */
    BACKEND_VERIFY, /* "<seed>\n" then a pattern stream: report length and first bad offset */
    BACKEND_SOURCE, /* "<nbytes> <seed>\n" then send the pattern stream */
    BACKEND_HTTP,   /* answer one HTTP request and close */
};

/* What one protocol step achieved; the loop keeps stepping while there is progress. */
enum backend_step {
    BACKEND_PROGRESS, /* did something, call again */
    BACKEND_BLOCKED,  /* waits for the socket to become readable or writable */
    BACKEND_CLOSE,    /* the connection is finished or broken: close it */
};

/* Read-only settings shared by every worker thread. */
struct backend_conf {
    enum backend_mode mode; /* protocol spoken on every connection */
    const char *hello;      /* echo: greeting sent on accept, '\n' included, or NULL */
    size_t hello_len;       /* bytes in `hello` */
    int http_status;        /* http: status code of every answer */
    atomic_int http_down;   /* http: answer 503 instead (SIGUSR1 sets, SIGUSR2 clears) */
};

/* One accepted connection, owned by the worker thread that accepted it. */
struct backend_conn {
    struct util_list link;  /* in the worker's list of all connections */
    struct util_list ready; /* in the worker's ready list while it has unfinished work */
    int fd;                 /* the socket, non-blocking */
    unsigned readable : 1;  /* the last event said readable and recv has not hit EAGAIN */
    unsigned writable : 1;  /* the last event said writable and send has not hit EAGAIN */
    unsigned rd_eof : 1;    /* the peer shut down its write side */
    unsigned rd_hup : 1;    /* epoll reported the peer's FIN or an error: read until recv says so */
    unsigned fin : 1;       /* shut our write side down once `out` drains */
    unsigned wr_shut : 1;   /* our write side is shut down; waiting for the peer's EOF */
    unsigned head_done : 1; /* the request line or HTTP head has been read */
    unsigned unlimited : 1; /* source: stream until the peer goes away */
    unsigned char *out;     /* bytes the kernel has not taken yet (heap), or NULL when idle */
    size_t out_len;         /* bytes in `out` */
    size_t out_off;         /* bytes of `out` already sent */
    char line[96];          /* request line being assembled */
    size_t line_len;        /* bytes in `line` */
    unsigned http_nl;       /* http: 1 when the last non-'\r' byte was '\n' */
    uint64_t bytes;         /* sink/verify: payload bytes received; source: bytes sent */
    uint64_t hash;          /* sink: FNV-1a of the payload so far */
    uint64_t seed;          /* verify/source: pattern seed from the request line */
    uint64_t remaining;     /* source: bytes still to send (unless unlimited) */
    int64_t bad;            /* verify: stream offset of the first wrong byte, or -1 */
};

/* One event-loop thread with its own SO_REUSEPORT listener. */
struct backend_worker {
    const struct backend_conf *conf; /* shared settings */
    int ep;                          /* epoll instance */
    int listen_fd;                   /* this thread's listener */
    int wake_fd;                     /* eventfd written by main to stop the loop */
    int stopping;                    /* set once wake_fd fired */
    unsigned char *scratch;          /* receive buffer, BACKEND_SCRATCH bytes */
    struct util_list conns;          /* every open connection */
    struct util_list ready;          /* connections that ran out of budget with work left */
    pthread_t thread;                /* the thread running backend_worker_run */
    uint64_t accepted;               /* connections accepted so far */
};

/* Size of each worker's receive buffer. */
#define BACKEND_SCRATCH ((size_t)256 * 1024)

/* Receives into buf: >0 bytes, 0 at EOF (sets rd_eof), -EAGAIN (clears readable), -errno. */
ssize_t backend_recv(struct backend_conn *c, void *buf, size_t len);

/* Sends without copying: bytes taken, -EAGAIN (clears writable) or -errno. */
ssize_t backend_send_raw(struct backend_conn *c, const void *buf, size_t len);

/* Sends buf, keeping a heap copy of what the kernel does not take yet; 0 or -errno. */
int backend_send(struct backend_conn *c, const void *buf, size_t len);

/* Parses a mode name; returns 0 and sets *mode, or -EINVAL. */
int backend_mode_parse(const char *name, enum backend_mode *mode);

/* Called once per accepted connection before its first step (echo sends the hello). */
enum backend_step backend_proto_open(struct backend_worker *w, struct backend_conn *c);

/* Advances the connection's protocol by one bounded unit of work. */
enum backend_step backend_proto_step(struct backend_worker *w, struct backend_conn *c);

#endif
