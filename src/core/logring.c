/* Per-producer byte rings drained by one writer thread; full means dropped, never blocked. */
#include "logring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WRITER_PERIOD_MS 10 /* how often the writer looks at the rings when they were empty */

int logring_put(struct logring *r, const char *line, size_t len)
{
    size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    size_t head = atomic_load_explicit(&r->head, memory_order_acquire);

    if (len > r->cap - (tail - head)) {
        atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
        return -ENOSPC;
    }
    size_t off = tail & (r->cap - 1), first = r->cap - off < len ? r->cap - off : len;
    memcpy(r->buf + off, line, first);
    memcpy(r->buf, line + first, len - first);
    /* release: the writer sees the bytes before it sees the new tail */
    atomic_store_explicit(&r->tail, tail + len, memory_order_release);
    atomic_fetch_add_explicit(&r->written, 1, memory_order_relaxed);
    return 0;
}

/* Writes everything r holds now; returns the bytes written (a failed write drops them: there is
 * nowhere left to report it). */
static size_t ring_drain(struct logring *r, int fd)
{
    size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    size_t done = 0;

    while (head + done < tail) {
        size_t off = (head + done) & (r->cap - 1);
        size_t chunk = tail - head - done < r->cap - off ? tail - head - done : r->cap - off;
        ssize_t n = write(fd, r->buf + off, chunk);
        if (n < 0 && errno == EINTR)
            continue;
        done += n > 0 ? (size_t)n : chunk;
    }
    atomic_store_explicit(&r->head, tail, memory_order_release);
    return done;
}

static void *writer_main(void *arg)
{
    struct log_writer *w = arg;
    struct timespec period = {.tv_nsec = WRITER_PERIOD_MS * 1000000L};

    for (;;) {
        int stopping = atomic_load(&w->stop);
        size_t moved = 0;
        for (size_t i = 0; i < w->n_rings; i++)
            moved += ring_drain(&w->rings[i], w->fd);
        if (stopping)
            break; /* the last pass ran after the stop was seen: nothing put before it is lost */
        if (moved == 0)
            nanosleep(&period, NULL);
    }
    return NULL;
}

int log_writer_init(struct log_writer *w, int fd, size_t n, size_t ring_bytes)
{
    size_t cap = 4096;

    memset(w, 0, sizeof(*w));
    w->fd = fd;
    while (cap < ring_bytes)
        cap *= 2;
    w->rings = calloc(n ? n : 1, sizeof(*w->rings));
    if (w->rings == NULL)
        return -ENOMEM;
    w->n_rings = n;
    for (size_t i = 0; i < n; i++) {
        w->rings[i].cap = cap;
        if ((w->rings[i].buf = malloc(cap)) == NULL) {
            log_writer_destroy(w);
            return -ENOMEM;
        }
    }
    return 0;
}

int log_writer_start(struct log_writer *w)
{
    int rc = pthread_create(&w->thread, NULL, writer_main, w);

    if (rc != 0)
        return -rc;
    pthread_setname_np(w->thread, "sluice-logs");
    w->started = 1;
    return 0;
}

void log_writer_stop(struct log_writer *w)
{
    if (!w->started)
        return;
    atomic_store(&w->stop, 1);
    pthread_join(w->thread, NULL);
    w->started = 0;
}

void log_writer_destroy(struct log_writer *w)
{
    log_writer_stop(w);
    for (size_t i = 0; w->rings != NULL && i < w->n_rings; i++)
        free(w->rings[i].buf);
    free(w->rings);
    w->rings = NULL;
    w->n_rings = 0;
}

unsigned long long log_writer_dropped(const struct log_writer *w)
{
    unsigned long long n = 0;

    for (size_t i = 0; i < w->n_rings; i++)
        n += atomic_load_explicit(&w->rings[i].dropped, memory_order_relaxed);
    return n;
}
