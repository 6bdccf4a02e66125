/* Per-worker pools of copy buffers and splice pipes, so busy directions borrow them cheaply and
 * idle connections hold none. Single-threaded: each worker owns its pools. */
#ifndef SLUICE_POOL_H
#define SLUICE_POOL_H

#include <stddef.h>

/* Equal-sized buffers kept on a LIFO free list (the most recently used one is cache-warm). */
struct buffer_pool {
    void **free;     /* spare buffers */
    size_t n_free;   /* entries in free */
    size_t max_free; /* spares kept; more are freed */
    size_t size;     /* bytes per buffer */
    size_t in_use;   /* buffers handed out and not returned */
};

/* Both ends of one pipe. */
struct pipe_pair {
    int rd; /* read end */
    int wr; /* write end */
};

/* Empty pipes of one size kept open for reuse: creating a pipe costs two syscalls more. */
struct pipe_pool {
    struct pipe_pair *free; /* spare pipes, all empty */
    size_t n_free;          /* entries in free */
    size_t max_free;        /* spares kept; more are closed */
    int size;               /* F_SETPIPE_SZ request, bytes */
    size_t in_use;          /* pipes handed out and not returned */
};

/* Initialises a pool of size-byte buffers keeping at most max_free spares. 0 or -ENOMEM. */
int pool_buffers_init(struct buffer_pool *pool, size_t size, size_t max_free);
/* Frees the spares; buffers still out are the holders' to return first. */
void pool_buffers_destroy(struct buffer_pool *pool);
/* A buffer of pool->size bytes, or NULL on ENOMEM. */
void *pool_buffer_get(struct buffer_pool *pool);
/* Gives a buffer back; NULL is ignored. */
void pool_buffer_put(struct buffer_pool *pool, void *buf);

/* Initialises a pool of pipes sized size bytes keeping at most max_free spares. 0 or -ENOMEM. */
int pool_pipes_init(struct pipe_pool *pool, int size, size_t max_free);
/* Closes the spares. */
void pool_pipes_destroy(struct pipe_pool *pool);
/* Fills *out with an empty non-blocking pipe. Returns 0 or -errno (EMFILE, ENFILE...). */
int pool_pipe_get(struct pipe_pool *pool, struct pipe_pair *out);
/* Gives a pipe back; a pipe that may still hold bytes must pass empty = 0 and is closed. */
void pool_pipe_put(struct pipe_pool *pool, struct pipe_pair *pipe, int empty);

#endif
