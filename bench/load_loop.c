/* sluice-load's per-thread event loop: connects, drives connections, enforces deadlines. */
#include "load.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pattern.h"

/* Steps one connection may take per turn before others get theirs. */
#define STEP_BUDGET 16
#define MAX_EVENTS  256
/* Deadlines are checked this often, so timeouts are accurate to about this. */
#define SWEEP_MS 50
/* Largest single pattern send: big sends keep the syscall count per GB low. */
#define SEND_CHUNK ((size_t)1024 * 1024)
/* Errors described on stderr per process; the rest are only counted. */
#define ERROR_REPORTS 5

static uint64_t deadline_after(double seconds)
{
    return util_now_ns() + (uint64_t)(seconds * 1e9);
}

uint64_t load_next_seed(struct load_worker *w)
{
    /* The worker id in the high bits keeps seeds unique without sharing a counter. */
    return w->o->seed + ((uint64_t)w->id << 40) + w->opened;
}

void load_error(struct load_worker *w, struct load_conn *c, const char *what, int64_t detail)
{
    static unsigned reported;

    w->st.errors++;
    if (__atomic_fetch_add(&reported, 1, __ATOMIC_RELAXED) < ERROR_REPORTS)
        fprintf(stderr,
                "sluice-load: error: %s (%" PRId64 ") on connection seed %" PRIu64 " after %" PRIu64
                " bytes sent, %" PRIu64 " verified\n",
                what, detail, c->seed, c->tx, c->rx);
}

ssize_t load_recv(struct load_conn *c, void *buf, size_t len)
{
    int drained;
    ssize_t n = util_recv_edge(c->fd, buf, len, c->rd_hup, &drained);

    if (n == 0)
        c->rd_eof = 1;
    if (drained)
        c->readable = 0;
    return n;
}

/* Sends without copying: bytes taken, -EAGAIN (clears writable) or -errno. */
static ssize_t send_raw(struct load_conn *c, const void *buf, size_t len)
{
    int full;
    ssize_t n = util_send_edge(c->fd, buf, len, &full);

    if (full)
        c->writable = 0;
    return n;
}

ssize_t load_send_pattern(struct load_conn *c, uint64_t max)
{
    size_t avail;
    const unsigned char *p = pattern_view(c->seed, c->tx, &avail);
    size_t len = avail < SEND_CHUNK ? avail : SEND_CHUNK;
    ssize_t n;

    if (max < len)
        len = (size_t)max;
    n = send_raw(c, p, len);
    if (n > 0)
        c->tx += (uint64_t)n;
    return n;
}

int load_flush_out(struct load_conn *c)
{
    while (c->out_off < c->out_len) {
        if (!c->writable)
            return 0;
        ssize_t n = send_raw(c, c->out + c->out_off, c->out_len - c->out_off);
        if (n == -EAGAIN)
            return 0;
        if (n < 0)
            return (int)n;
        c->out_off += (size_t)n;
    }
    return 1;
}

void load_conn_settle(struct load_worker *w, struct load_conn *c)
{
    if (c->setup) {
        c->setup = 0;
        w->setup_left--;
    }
}

void load_conn_close(struct load_worker *w, struct load_conn *c)
{
    load_conn_settle(w, c);
    util_list_unlink(&c->link);
    util_list_unlink(&c->ready);
    close(c->fd);
    w->open_now--;
    free(c);
}

void load_close_all(struct load_worker *w)
{
    while (!util_list_empty(&w->conns))
        load_conn_close(w, UTIL_CONTAINER_OF(w->conns.next, struct load_conn, link));
}

void load_kick_all(struct load_worker *w)
{
    for (struct util_list *n = w->conns.next; n != &w->conns; n = n->next) {
        struct load_conn *c = UTIL_CONTAINER_OF(n, struct load_conn, link);
        if (util_list_empty(&c->ready))
            util_list_push(&w->ready, &c->ready);
    }
}

/* Starts a non-blocking connect; the fd joins epoll at once, edge-triggered for everything. */
static int conn_connect(struct load_worker *w, struct load_conn *c)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};

    c->fd = socket(w->o->target.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    util_set_nodelay(c->fd);
    if (connect(c->fd, (const struct sockaddr *)&w->o->target.ss, w->o->target.len) < 0 &&
        errno != EINPROGRESS)
        return -errno;
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        return -errno;
    return 0;
}

struct load_conn *load_conn_open(struct load_worker *w, uint64_t seed)
{
    static unsigned reported;
    struct load_conn *c = calloc(1, sizeof(*c));
    int err;

    if (c == NULL)
        return NULL;
    c->seed = seed;
    c->setup = w->phase == LOAD_SETUP;
    c->t0 = util_now_ns();
    c->deadline = deadline_after(w->o->connect_timeout);
    util_list_init(&c->ready);
    err = conn_connect(w, c);
    if (err < 0) {
        w->st.connect_errors++;
        if (__atomic_fetch_add(&reported, 1, __ATOMIC_RELAXED) < ERROR_REPORTS)
            fprintf(stderr, "sluice-load: connect: %s\n", strerror(-err));
        if (c->fd >= 0)
            close(c->fd);
        free(c);
        return NULL;
    }
    w->opened++;
    w->open_now++;
    w->setup_left += c->setup;
    util_list_push(&w->conns, &c->link);
    return c;
}

/* Resolves a pending connect once epoll says writable; 0 when connected, -1 when it failed. */
static int conn_check_connect(struct load_worker *w, struct load_conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        w->st.connect_errors++;
        return -1;
    }
    c->connected = 1;
    /* A fresh budget for the first exchange; modes that wait for the go clear it. */
    c->deadline = deadline_after(w->o->connect_timeout);
    return 0;
}

static void conn_drive(struct load_worker *w, struct load_conn *c)
{
    if (!c->connected) {
        if (!c->writable && !c->rd_hup)
            return;
        if (conn_check_connect(w, c) < 0) {
            load_conn_close(w, c);
            return;
        }
    }
    for (int i = 0; i < STEP_BUDGET; i++) {
        switch (w->ops->step(w, c)) {
        case LOAD_PROGRESS:
            break;
        case LOAD_BLOCKED:
            return;
        case LOAD_CLOSE:
            load_conn_close(w, c);
            return;
        }
    }
    if (util_list_empty(&c->ready))
        util_list_push(&w->ready, &c->ready);
}

/* util_list_run callback: one more turn for a connection that ran out of budget. */
static void drive_ready(void *w, struct util_list *node)
{
    conn_drive(w, UTIL_CONTAINER_OF(node, struct load_conn, ready));
}

/* Closes connections whose connect or exchange overran its deadline. */
static void sweep_deadlines(struct load_worker *w, uint64_t now)
{
    struct util_list *n = w->conns.next;

    while (n != &w->conns) {
        struct load_conn *c = UTIL_CONTAINER_OF(n, struct load_conn, link);
        n = n->next;
        if (c->deadline == 0 || now < c->deadline)
            continue;
        if (c->connected)
            w->st.timeouts++;
        else
            w->st.connect_errors++;
        load_conn_close(w, c);
    }
}

static void phase_changed(struct load_worker *w)
{
    uint64_t v;
    int phase = __atomic_load_n(&w->shared->phase, __ATOMIC_ACQUIRE);

    if (read(w->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        perror("sluice-load: wake");
    if (phase == w->phase)
        return;
    w->phase = phase;
    w->ops->phase(w, (enum load_phase)phase);
}

/* Handles one event; returns 1 for the phase wake-up, which the caller runs after the batch. */
static int dispatch(struct load_worker *w, const struct epoll_event *ev)
{
    struct load_conn *c = ev->data.ptr;

    if (ev->data.ptr == &w->wake_fd)
        return 1;
    if (ev->events & UTIL_EV_READABLE)
        c->readable = 1;
    if (ev->events & UTIL_EV_RD_HUP)
        c->rd_hup = 1;
    if (ev->events & UTIL_EV_WRITABLE)
        c->writable = 1;
    conn_drive(w, c);
    return 0;
}

/* Tells main once this worker's setup connections are all resolved. */
static void report_setup(struct load_worker *w)
{
    uint64_t one = 1;

    if (w->setup_reported || w->phase != LOAD_SETUP || w->setup_left > 0 || w->to_open > 0)
        return;
    w->setup_reported = 1;
    __atomic_add_fetch(&w->shared->ready, 1, __ATOMIC_ACQ_REL);
    if (write(w->shared->main_wake_fd, &one, sizeof(one)) < 0)
        perror("sluice-load: wake main");
}

static int worker_finished(const struct load_worker *w)
{
    return w->phase == LOAD_STOP && util_list_empty(&w->conns);
}

void *load_worker_run(void *arg)
{
    struct load_worker *w = arg;
    struct epoll_event evs[MAX_EVENTS];
    uint64_t next_sweep = util_now_ns();

    w->ops->setup(w);
    while (!worker_finished(w)) {
        w->ops->tick(w);
        report_setup(w);
        int n = epoll_wait(w->ep, evs, MAX_EVENTS, util_list_empty(&w->ready) ? SWEEP_MS : 0);
        if (n < 0 && errno != EINTR) {
            perror("sluice-load: epoll_wait");
            break;
        }
        int wake = 0;
        for (int i = 0; i < n; i++)
            wake |= dispatch(w, &evs[i]);
        /* Only after the batch: a phase change may free connections the batch still names. */
        if (wake)
            phase_changed(w);
        util_list_run(&w->ready, drive_ready, w);
        uint64_t now = util_now_ns();
        if (now >= next_sweep) {
            sweep_deadlines(w, now);
            next_sweep = now + SWEEP_MS * 1000000ULL;
        }
    }
    load_close_all(w);
    w->t_done = util_now_ns();
    return NULL;
}
