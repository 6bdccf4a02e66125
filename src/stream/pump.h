/* Moving bytes one way between two sockets: a copy path for small flows, splice(2) through a
 * pooled pipe for streams, one chunk in flight at most, FIN passed on as shutdown(SHUT_WR). */
#ifndef SLUICE_PUMP_H
#define SLUICE_PUMP_H

#include <stdint.h>

#include "pool.h"

/* splice = ...: when directions move bytes with splice(2). */
enum splice_policy {
    SPLICE_AUTO,   /* streaming directions switch to splice(2) */
    SPLICE_OFF,    /* always copy through a user-space buffer */
    SPLICE_ALWAYS, /* every direction splices from the first byte */
};

enum pump_mode {
    PUMP_COPY,      /* recv/send through a pooled buffer */
    PUMP_SPLICE,    /* splice through a pooled pipe */
    PUMP_COPY_ONLY, /* splice failed or is off: copy for good */
};

/* One direction of a session. Holds a buffer or a pipe only while bytes are in flight. */
struct pump_dir {
    char *buf;             /* borrowed copy buffer, NULL when none is held */
    uint32_t off;          /* first pending byte in buf */
    uint32_t len;          /* end of pending bytes in buf */
    struct pipe_pair pipe; /* borrowed pipe, rd = -1 when none is held */
    uint32_t in_pipe;      /* bytes in the pipe not yet written */
    uint8_t mode;          /* enum pump_mode */
    uint8_t eof;           /* the source sent FIN */
    uint8_t shut;          /* FIN passed on to the destination */
    uint8_t streak;        /* full reads in a row (copy) or small ones in a row (splice) */
    uint8_t fin_by_close;  /* the other way is over: close(2) will send the FIN, skip shutdown */
    uint8_t eof_first;     /* this direction's FIN came before the other's (access log) */
    uint8_t err_dst;       /* after an error: it was the destination's socket, not the source's */
    uint8_t failed;        /* pump_run returned an error for this direction */
    uint64_t bytes;        /* bytes written to the destination */
    uint64_t spliced;      /* of which moved by splice */
};

/* What a worker lends to its pumps. */
struct pump_env {
    struct buffer_pool *buffers; /* copy buffers */
    struct pipe_pool *pipes;     /* splice pipes */
    enum splice_policy splice;   /* auto | off | always */
    uint32_t budget;             /* bytes one pump_run may read before yielding to others */
};

/* Prepares a direction (no allocation). */
void pump_init(struct pump_dir *d, const struct pump_env *env);

/* Moves what can be moved now from src to dst without blocking: flushes pending bytes, reads
 * more while dst takes them and the budget lasts, passes FIN on. Returns 0, or -errno when a
 * socket failed (reset: the caller resets the session) or -ENOMEM (no buffer/pipe). */
int pump_run(struct pump_dir *d, int src, int dst, const struct pump_env *env);

/* Non-zero when bytes wait for dst to become writable. */
int pump_pending(const struct pump_dir *d);

/* Non-zero when the direction wants to read src now: not at EOF and nothing pending. */
int pump_wants_read(const struct pump_dir *d);

/* Non-zero when the direction is over: FIN read and passed on. */
int pump_done(const struct pump_dir *d);

/* Returns the buffer and pipe to the pools (a pipe still holding bytes is closed). */
void pump_release(struct pump_dir *d, const struct pump_env *env);

#endif
