/* One direction of a session: copy path, splice path, backpressure and FIN propagation. */
#include "pump.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

/* HAProxy's rule of thumb: a direction that fills the buffer a few times in a row is a stream
 * worth splicing; a spliced one that keeps moving little returns to the cheaper copy path. */
#define PUMP_STREAM_AFTER 2 /* full copy reads in a row before switching to splice */
#define PUMP_COPY_AFTER   4 /* small splices in a row before switching back */

/* Result of one read or write step. */
enum step {
    STEP_MORE,  /* progress; go on */
    STEP_WAIT,  /* would block: wait for an event */
    STEP_ERROR, /* socket failed; errno is set */
};

void pump_init(struct pump_dir *d, const struct pump_env *env)
{
    *d = (struct pump_dir){.pipe = {.rd = -1, .wr = -1}};
    d->mode = env->splice == SPLICE_OFF      ? PUMP_COPY_ONLY
              : env->splice == SPLICE_ALWAYS ? PUMP_SPLICE
                                             : PUMP_COPY;
}

int pump_pending(const struct pump_dir *d)
{
    return d->off < d->len || d->in_pipe > 0;
}

int pump_wants_read(const struct pump_dir *d)
{
    return !d->eof && !pump_pending(d);
}

int pump_done(const struct pump_dir *d)
{
    return d->shut;
}

static int is_wait(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

static enum step copy_flush(struct pump_dir *d, int dst)
{
    while (d->off < d->len) {
        ssize_t n = send(dst, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
        if (n < 0)
            return is_wait(errno) ? STEP_WAIT : STEP_ERROR;
        d->off += (uint32_t)n;
        d->bytes += (uint64_t)n;
    }
    d->off = d->len = 0;
    return STEP_MORE;
}

static enum step splice_flush(struct pump_dir *d, int dst)
{
    while (d->in_pipe > 0) {
        ssize_t n =
            splice(d->pipe.rd, NULL, dst, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n < 0)
            return is_wait(errno) ? STEP_WAIT : STEP_ERROR;
        d->in_pipe -= (uint32_t)n;
        d->bytes += (uint64_t)n;
        d->spliced += (uint64_t)n;
    }
    return STEP_MORE;
}

/* Reads one chunk into the buffer; *got is the byte count (0 = FIN), *drained says the read came
 * back short, so the socket is empty for now. */
static enum step copy_read(struct pump_dir *d, int src, const struct pump_env *env, size_t *got,
                           int *drained)
{
    if (d->buf == NULL && (d->buf = pool_buffer_get(env->buffers)) == NULL) {
        errno = ENOMEM;
        return STEP_ERROR;
    }
    ssize_t n = recv(src, d->buf, env->buffers->size, 0);
    if (n < 0)
        return is_wait(errno) ? STEP_WAIT : STEP_ERROR;
    d->off = 0;
    d->len = (uint32_t)n;
    *got = (size_t)n;
    *drained = (size_t)n < env->buffers->size;
    if (d->mode == PUMP_COPY) {
        d->streak = (size_t)n == env->buffers->size ? (uint8_t)(d->streak + 1) : 0;
        if (d->streak >= PUMP_STREAM_AFTER) {
            d->mode = PUMP_SPLICE;
            d->streak = 0;
        }
    }
    return STEP_MORE;
}

/* Reads one chunk into the pipe, as copy_read does into the buffer. */
static enum step splice_read(struct pump_dir *d, int src, const struct pump_env *env, size_t *got,
                             int *drained)
{
    if (d->pipe.rd < 0 && pool_pipe_get(env->pipes, &d->pipe) != 0) {
        /* no descriptor or memory for a pipe: copying works too, just slower */
        d->mode = PUMP_COPY;
        d->streak = 0;
        return copy_read(d, src, env, got, drained);
    }
    ssize_t n = splice(src, NULL, d->pipe.wr, NULL, (size_t)env->pipes->size,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0) {
        if (errno == EINVAL || errno == ENOSYS) {
            d->mode = PUMP_COPY_ONLY; /* this socket type cannot splice: copy from now on */
            return copy_read(d, src, env, got, drained);
        }
        return is_wait(errno) ? STEP_WAIT : STEP_ERROR;
    }
    d->in_pipe = (uint32_t)n;
    *got = (size_t)n;
    *drained = (size_t)n < (size_t)env->pipes->size;
    d->streak = (size_t)n < env->buffers->size ? (uint8_t)(d->streak + 1) : 0;
    if (d->streak >= PUMP_COPY_AFTER) {
        d->mode = PUMP_COPY;
        d->streak = 0;
    }
    return STEP_MORE;
}

static enum step flush(struct pump_dir *d, int dst)
{
    enum step st = copy_flush(d, dst);
    return st == STEP_MORE ? splice_flush(d, dst) : st;
}

/* Gives back what the direction no longer needs, so idle connections hold nothing. */
static void release_drained(struct pump_dir *d, const struct pump_env *env)
{
    if (d->buf != NULL && d->off >= d->len) {
        pool_buffer_put(env->buffers, d->buf);
        d->buf = NULL;
        d->off = d->len = 0;
    }
    if (d->pipe.rd >= 0 && d->in_pipe == 0)
        pool_pipe_put(env->pipes, &d->pipe, 1);
}

static enum step pass_fin(struct pump_dir *d, int dst)
{
    if (!d->shut && !d->fin_by_close && shutdown(dst, SHUT_WR) != 0 && errno != ENOTCONN)
        return STEP_ERROR;
    d->shut = 1;
    return STEP_WAIT;
}

static enum step pump_step(struct pump_dir *d, int src, int dst, const struct pump_env *env,
                           size_t *read_total)
{
    enum step st = flush(d, dst);
    d->err_dst = 1; /* until a read: flushing and passing FIN act on dst */
    if (st != STEP_MORE)
        return st;
    if (d->eof)
        return pass_fin(d, dst);
    if (*read_total >= env->budget)
        return STEP_WAIT; /* fairness, or the source is drained: polling brings us back */
    size_t got = 0;
    int drained = 0;
    d->err_dst = 0;
    st = d->mode == PUMP_SPLICE ? splice_read(d, src, env, &got, &drained)
                                : copy_read(d, src, env, &got, &drained);
    if (st != STEP_MORE)
        return st;
    if (got == 0)
        d->eof = 1;
    /* a short read emptied the socket: flush it, then wait instead of asking for EAGAIN */
    *read_total = drained ? env->budget : *read_total + got;
    return STEP_MORE;
}

int pump_run(struct pump_dir *d, int src, int dst, const struct pump_env *env)
{
    /* one chunk in flight at most: a buffer or a pipe, never both with bytes in them */
    assert(src >= 0 && dst >= 0 && !(d->off < d->len && d->in_pipe > 0));
    size_t read_total = 0;
    enum step st;
    do {
        st = pump_step(d, src, dst, env, &read_total);
    } while (st == STEP_MORE);
    int err = st == STEP_ERROR ? errno : 0;
    d->failed = err != 0;
    /* a failed socket is dropped whole: the session releases the rest */
    if (err == 0)
        release_drained(d, env);
    return -err;
}

void pump_release(struct pump_dir *d, const struct pump_env *env)
{
    pool_buffer_put(env->buffers, d->buf);
    d->buf = NULL;
    d->off = d->len = 0;
    pool_pipe_put(env->pipes, &d->pipe, d->in_pipe == 0);
    d->in_pipe = 0;
}
