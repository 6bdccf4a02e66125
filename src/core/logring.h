/* Log lines that must never block their writer (access logs on a worker): each producer thread
 * owns a single-producer ring of bytes; one writer thread drains every ring to a descriptor. A
 * line that does not fit at once is dropped and counted, never waited for. */
#ifndef SLUICE_LOGRING_H
#define SLUICE_LOGRING_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* One producer's ring: written by its producer thread, read by the writer thread. */
struct logring {
    char *buf;             /* cap bytes */
    size_t cap;            /* a power of two */
    atomic_size_t head;    /* bytes taken by the writer, ever (mod cap is the offset) */
    atomic_size_t tail;    /* bytes put by the producer, ever */
    atomic_ullong dropped; /* lines that did not fit */
    atomic_ullong written; /* lines put */
};

/* The writer and its rings. */
struct log_writer {
    int fd;                /* where lines go */
    struct logring *rings; /* n_rings rings */
    size_t n_rings;        /* producers */
    pthread_t thread;      /* drains the rings */
    int started;           /* the thread runs */
    atomic_int stop;       /* log_writer_stop was called */
};

/* Prepares n rings of ring_bytes (rounded up to a power of two) writing to fd. 0 or -ENOMEM. */
int log_writer_init(struct log_writer *w, int fd, size_t n, size_t ring_bytes);

/* Starts the writer thread ("sluice-logs"); it looks at the rings every few milliseconds, so a
 * producer never makes a syscall for a line. 0 or -errno. */
int log_writer_start(struct log_writer *w);

/* Writes what is left, stops and joins the thread; idempotent. */
void log_writer_stop(struct log_writer *w);

/* Stops and frees the rings. Safe after a failed init. */
void log_writer_destroy(struct log_writer *w);

/* Puts one whole line (len bytes) into ring r: 0, or -ENOSPC when it does not fit (the line is
 * dropped and counted). Only r's producer thread. */
int logring_put(struct logring *r, const char *line, size_t len);

/* Lines dropped over every ring. Any thread. */
unsigned long long log_writer_dropped(const struct log_writer *w);

#endif
