/* Per-worker pools of copy buffers and splice pipes. */
#include "pool.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

/* The spare list both pools keep: room for max_free entries of elem bytes (at least one). */
static void *spares_alloc(size_t max_free, size_t elem)
{
    return calloc(max_free ? max_free : 1, elem);
}

int pool_buffers_init(struct buffer_pool *pool, size_t size, size_t max_free)
{
    *pool = (struct buffer_pool){.max_free = max_free, .size = size};
    pool->free = spares_alloc(max_free, sizeof(*pool->free));
    return pool->free != NULL ? 0 : -ENOMEM;
}

void pool_buffers_destroy(struct buffer_pool *pool)
{
    assert(pool->in_use == 0); /* every holder returned its buffer first */
    for (size_t i = 0; i < pool->n_free; i++)
        free(pool->free[i]);
    free(pool->free);
    pool->free = NULL;
    pool->n_free = 0;
}

void *pool_buffer_get(struct buffer_pool *pool)
{
    void *buf = pool->n_free > 0 ? pool->free[--pool->n_free] : malloc(pool->size);
    if (buf != NULL)
        pool->in_use++;
    return buf;
}

void pool_buffer_put(struct buffer_pool *pool, void *buf)
{
    if (buf == NULL)
        return;
    assert(pool->in_use > 0 && pool->n_free <= pool->max_free);
    pool->in_use--;
    if (pool->n_free < pool->max_free)
        pool->free[pool->n_free++] = buf;
    else
        free(buf);
}

int pool_pipes_init(struct pipe_pool *pool, int size, size_t max_free)
{
    *pool = (struct pipe_pool){.max_free = max_free, .size = size};
    pool->free = spares_alloc(max_free, sizeof(*pool->free));
    return pool->free != NULL ? 0 : -ENOMEM;
}

static void pipe_close(struct pipe_pair *pipe)
{
    close(pipe->rd);
    close(pipe->wr);
    pipe->rd = pipe->wr = -1;
}

void pool_pipes_destroy(struct pipe_pool *pool)
{
    assert(pool->in_use == 0);
    for (size_t i = 0; i < pool->n_free; i++)
        pipe_close(&pool->free[i]);
    free(pool->free);
    pool->free = NULL;
    pool->n_free = 0;
}

int pool_pipe_get(struct pipe_pool *pool, struct pipe_pair *out)
{
    if (pool->n_free > 0) {
        *out = pool->free[--pool->n_free];
        pool->in_use++;
        return 0;
    }
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
        return -errno;
    /* A failed resize (pipe-max-size, pipe-user-pages-soft) leaves the default 64 KiB: slower,
     * still correct, so it is not an error. */
    (void)fcntl(fds[1], F_SETPIPE_SZ, pool->size);
    out->rd = fds[0];
    out->wr = fds[1];
    pool->in_use++;
    return 0;
}

void pool_pipe_put(struct pipe_pool *pool, struct pipe_pair *pipe, int empty)
{
    if (pipe->rd < 0)
        return;
    assert(pool->in_use > 0 && pipe->wr >= 0);
    pool->in_use--;
    if (empty && pool->n_free < pool->max_free)
        pool->free[pool->n_free++] = *pipe;
    else
        pipe_close(pipe);
    pipe->rd = pipe->wr = -1;
}
