/* sluice-load's traffic modes (connrate, rr, bulk, idle), each a small ops table. */
#include "load.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "pattern.h"

/* Bytes of the idle mode's check exchanges. */
#define IDLE_PROBE 8
/* Seconds a bulk upload waits for the backend's verdict after its FIN. */
#define BULK_REPLY_WAIT 30.0

/* Idle connection sub-states. */
enum idle_state {
    IDLE_CHECK, /* first round trip */
    IDLE_HELD,  /* verified, held open */
    IDLE_FINAL, /* second round trip after the hold */
};

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* Counts a recv that ended an exchange early (EOF, reset or other failure); LOAD_CLOSE. */
static enum load_step recv_failed(struct load_worker *w, struct load_conn *c, ssize_t n)
{
    load_error(w, c, n == 0 ? "unexpected EOF" : strerror((int)-n), n);
    return LOAD_CLOSE;
}

/*
 * Receives up to max bytes and checks them against the pattern stream at c->rx, which moves
 * past them. LOAD_PROGRESS when some came intact, LOAD_BLOCKED when none came, LOAD_CLOSE after
 * counting an error (EOF, reset, or a wrong byte reported as `mismatch` with its offset).
 */
static enum load_step recv_pattern(struct load_worker *w, struct load_conn *c, size_t max,
                                   const char *mismatch)
{
    ssize_t n = load_recv(c, w->buf, max);

    if (n == -EAGAIN)
        return LOAD_BLOCKED;
    if (n <= 0)
        return recv_failed(w, c, n);
    int64_t bad = pattern_check(c->seed, c->rx, w->buf, (size_t)n);
    if (bad >= 0) {
        load_error(w, c, mismatch, bad);
        return LOAD_CLOSE;
    }
    c->rx += (uint64_t)n;
    return LOAD_PROGRESS;
}

/*
 * Sends pattern bytes up to c->target and verifies their echo; never reads past the target.
 * Returns LOAD_PROGRESS once every byte up to the target came back intact, LOAD_BLOCKED while
 * it waits for an event, LOAD_CLOSE after counting an error.
 */
static enum load_step exchange(struct load_worker *w, struct load_conn *c)
{
    while (c->rx < c->target) {
        if (c->tx < c->target && c->writable) {
            ssize_t n = load_send_pattern(c, c->target - c->tx);
            if (n < 0 && n != -EAGAIN) {
                load_error(w, c, strerror((int)-n), n);
                return LOAD_CLOSE;
            }
        }
        if (!c->readable)
            return LOAD_BLOCKED;
        enum load_step step = recv_pattern(w, c, (size_t)min_u64(c->target - c->rx, LOAD_BUF),
                                           "echoed byte differs at stream offset");
        if (step != LOAD_PROGRESS)
            return step;
    }
    return LOAD_PROGRESS;
}

/* Counts one completed exchange and its latency since it started. */
static void exchange_done(struct load_worker *w, const struct load_conn *c)
{
    w->st.ops++;
    hist_add(&w->st.latency, util_now_ns() - c->t0);
}

/* Starts the next echo exchange of `bytes` bytes with a fresh deadline. */
static void exchange_start(struct load_worker *w, struct load_conn *c, uint64_t bytes)
{
    c->t0 = util_now_ns();
    c->target = c->rx + bytes;
    c->deadline = c->t0 + (uint64_t)(w->o->connect_timeout * 1e9);
    /* Every arrival raises an edge, so there is nothing to read until the peer answers. */
    if (!c->rd_hup)
        c->readable = 0;
}

static void noop_tick(struct load_worker *w)
{
    (void)w;
}

/* Opens `n` connections for the setup phase. */
static void open_setup_conns(struct load_worker *w, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        load_conn_open(w, load_next_seed(w));
}

/* ---- connrate: connect, echo `size` bytes, close, as fast as `concurrency` allows ---- */

static void connrate_setup(struct load_worker *w)
{
    (void)w; /* nothing to prepare: every connection is part of the measurement */
}

static void connrate_phase(struct load_worker *w, enum load_phase phase)
{
    if (phase == LOAD_STOP)
        load_close_all(w); /* attempts in flight are neither counted nor errors */
}

static void connrate_tick(struct load_worker *w)
{
    while (w->phase == LOAD_RUN && w->open_now < w->share) {
        struct load_conn *c = load_conn_open(w, load_next_seed(w));
        if (c == NULL)
            return; /* retry on the next tick instead of spinning on a failing connect */
        c->target = w->o->size;
    }
}

static enum load_step connrate_step(struct load_worker *w, struct load_conn *c)
{
    enum load_step step = exchange(w, c);

    if (step != LOAD_PROGRESS)
        return step;
    exchange_done(w, c);
    return LOAD_CLOSE;
}

/* ---- rr: persistent connections, one `size`-byte request in flight on each ---- */

static void rr_setup(struct load_worker *w)
{
    open_setup_conns(w, w->share);
}

static void rr_phase(struct load_worker *w, enum load_phase phase)
{
    if (phase == LOAD_RUN)
        load_kick_all(w);
    else
        load_close_all(w); /* requests in flight at the end are not counted */
}

/* Marks a connection established the first time it is stepped after connecting. */
static void count_established(struct load_worker *w, struct load_conn *c)
{
    if (!c->setup)
        return;
    c->deadline = 0; /* it may now wait for the go as long as setup takes */
    w->st.established++;
    __atomic_add_fetch(&w->shared->established, 1, __ATOMIC_RELAXED);
    load_conn_settle(w, c);
}

static enum load_step rr_step(struct load_worker *w, struct load_conn *c)
{
    count_established(w, c);
    if (w->phase != LOAD_RUN)
        return LOAD_BLOCKED;
    if (c->target == c->rx)
        exchange_start(w, c, w->o->size);
    enum load_step step = exchange(w, c);
    if (step != LOAD_PROGRESS)
        return step;
    exchange_done(w, c);
    c->deadline = 0;
    return LOAD_PROGRESS;
}

/* ---- bulk: long streams, verified end to end ---- */

static void bulk_setup(struct load_worker *w)
{
    open_setup_conns(w, w->share);
}

static void bulk_phase(struct load_worker *w, enum load_phase phase)
{
    if (phase == LOAD_STOP && !w->o->upload) {
        /* Downloads are unlimited: a stream still open at the end has verified every byte. */
        for (struct util_list *n = w->conns.next; n != &w->conns; n = n->next)
            w->st.ops += UTIL_CONTAINER_OF(n, struct load_conn, link)->state == 1;
        load_close_all(w);
        return;
    }
    for (struct util_list *n = w->conns.next; n != &w->conns; n = n->next) {
        struct load_conn *c = UTIL_CONTAINER_OF(n, struct load_conn, link);
        if (phase == LOAD_STOP)
            c->deadline = util_now_ns() + (uint64_t)(BULK_REPLY_WAIT * 1e9);
    }
    load_kick_all(w);
}

/* Queues the request line: "0 <seed>" asks a source for an endless stream. */
static void bulk_request(struct load_worker *w, struct load_conn *c)
{
    int len = 0;

    if (!w->o->upload)
        len = snprintf(c->out, sizeof(c->out), "0 %" PRIu64 "\n", c->seed);
    else if (w->o->verify_pattern)
        len = snprintf(c->out, sizeof(c->out), "%" PRIu64 "\n", c->seed);
    c->out_len = (size_t)len;
    c->hash = FNV1A64_INIT;
    c->state = 1;
}

static enum load_step bulk_down(struct load_worker *w, struct load_conn *c)
{
    uint64_t before = c->rx;
    enum load_step step = recv_pattern(w, c, LOAD_BUF, "received byte differs at stream offset");

    w->st.bytes += c->rx - before;
    return step;
}

static enum load_step bulk_up(struct load_worker *w, struct load_conn *c)
{
    uint64_t before = c->tx;
    size_t avail;
    const unsigned char *p = pattern_view(c->seed, c->tx, &avail);

    if (!c->writable)
        return LOAD_BLOCKED;
    ssize_t n = load_send_pattern(c, UINT64_MAX);
    if (n == -EAGAIN)
        return LOAD_BLOCKED;
    if (n < 0) {
        load_error(w, c, strerror((int)-n), n);
        return LOAD_CLOSE;
    }
    if (!w->o->verify_pattern)
        c->hash = fnv1a64_update(c->hash, p, (size_t)(c->tx - before));
    w->st.bytes += (uint64_t)n;
    return LOAD_PROGRESS;
}

/* Checks the backend's "<bytes> <fnv hex>" (sink) or "<bytes> <bad offset>" (verify) line. */
static void bulk_verdict(struct load_worker *w, struct load_conn *c)
{
    char *end = NULL;
    uint64_t bytes = strtoull(c->line, &end, 10);
    int64_t bad = -1;
    uint64_t hash = c->hash;

    if (end == c->line || *end != ' ') {
        load_error(w, c, "unreadable backend verdict", (int64_t)c->line_len);
        return;
    }
    if (w->o->verify_pattern)
        bad = strtoll(end + 1, &end, 10);
    else
        hash = strtoull(end + 1, &end, 16);
    if (*end != '\n')
        load_error(w, c, "unreadable backend verdict", (int64_t)c->line_len);
    else if (bytes != c->tx)
        load_error(w, c, "backend received another byte count", (int64_t)bytes);
    else if (bad >= 0)
        load_error(w, c, "backend received a wrong byte at stream offset", bad);
    else if (hash != c->hash)
        load_error(w, c, "backend's FNV-1a differs; bytes received", (int64_t)bytes);
    else
        w->st.ops++;
}

/* After the FIN, collects the backend's one-line verdict. */
static enum load_step bulk_reply(struct load_worker *w, struct load_conn *c)
{
    if (!c->wr_shut) {
        shutdown(c->fd, SHUT_WR);
        c->wr_shut = 1;
    }
    size_t room = sizeof(c->line) - 1 - c->line_len;
    ssize_t n = load_recv(c, c->line + c->line_len, room);
    if (n == -EAGAIN)
        return LOAD_BLOCKED;
    if (n > 0) {
        c->line_len += (size_t)n;
        c->line[c->line_len] = '\0';
        if (memchr(c->line, '\n', c->line_len) == NULL && c->line_len < sizeof(c->line) - 1)
            return LOAD_PROGRESS;
        bulk_verdict(w, c);
        return LOAD_CLOSE;
    }
    return recv_failed(w, c, n);
}

static enum load_step bulk_step(struct load_worker *w, struct load_conn *c)
{
    count_established(w, c);
    if (w->phase == LOAD_SETUP)
        return LOAD_BLOCKED;
    if (c->state == 0)
        bulk_request(w, c);
    int r = load_flush_out(c);
    if (r < 0) {
        load_error(w, c, strerror(-r), r);
        return LOAD_CLOSE;
    }
    if (r == 0)
        return LOAD_BLOCKED;
    if (!w->o->upload)
        return c->readable ? bulk_down(w, c) : LOAD_BLOCKED;
    if (w->phase == LOAD_STOP)
        return c->readable || !c->wr_shut ? bulk_reply(w, c) : LOAD_BLOCKED;
    return bulk_up(w, c);
}

/* ---- idle: verified connections held open, verified again at the end ---- */

static void idle_setup(struct load_worker *w)
{
    w->to_open = w->share; /* idle_tick opens them, a bounded number at a time */
}

/* Opens connections while fewer than `concurrency` are still being checked. */
static void idle_tick(struct load_worker *w)
{
    unsigned limit = w->o->concurrency / w->o->threads + 1;

    while (w->phase == LOAD_SETUP && w->to_open > 0 && w->setup_left < limit) {
        w->to_open--;
        struct load_conn *c = load_conn_open(w, load_next_seed(w));
        if (c != NULL)
            c->target = IDLE_PROBE;
    }
}

static void idle_phase(struct load_worker *w, enum load_phase phase)
{
    if (phase != LOAD_STOP)
        return;
    w->to_open = 0;
    struct util_list *n = w->conns.next;
    while (n != &w->conns) {
        struct load_conn *c = UTIL_CONTAINER_OF(n, struct load_conn, link);
        n = n->next;
        if (c->state == IDLE_HELD) {
            c->state = IDLE_FINAL;
            exchange_start(w, c, IDLE_PROBE);
        } else {
            load_conn_close(w, c); /* stopped before its first check ended: not counted */
        }
    }
    load_kick_all(w);
}

/* A held connection must stay silent; EOF or reset means the far side dropped it. */
static enum load_step idle_held(struct load_worker *w, struct load_conn *c)
{
    if (!c->readable)
        return LOAD_BLOCKED;
    ssize_t n = load_recv(c, w->buf, LOAD_BUF);
    if (n == -EAGAIN)
        return LOAD_BLOCKED;
    if (n > 0)
        load_error(w, c, "unexpected bytes on a held connection", n);
    else
        w->st.dropped++;
    return LOAD_CLOSE;
}

static enum load_step idle_step(struct load_worker *w, struct load_conn *c)
{
    if (c->state == IDLE_HELD)
        return idle_held(w, c);
    enum load_step step = exchange(w, c);
    if (step != LOAD_PROGRESS)
        return step;
    c->deadline = 0;
    if (c->state == IDLE_FINAL) {
        w->st.ops++;
        return LOAD_CLOSE;
    }
    c->state = IDLE_HELD;
    count_established(w, c);
    return LOAD_PROGRESS;
}

static const struct load_mode_ops mode_ops[] = {
    [LOAD_CONNRATE] = {.name = "connrate",
                       .setup = connrate_setup,
                       .phase = connrate_phase,
                       .tick = connrate_tick,
                       .step = connrate_step},
    [LOAD_RR] =
        {.name = "rr", .setup = rr_setup, .phase = rr_phase, .tick = noop_tick, .step = rr_step},
    [LOAD_BULK] = {.name = "bulk",
                   .setup = bulk_setup,
                   .phase = bulk_phase,
                   .tick = noop_tick,
                   .step = bulk_step},
    [LOAD_IDLE] = {.name = "idle",
                   .setup = idle_setup,
                   .phase = idle_phase,
                   .tick = idle_tick,
                   .step = idle_step},
};

const struct load_mode_ops *load_mode_ops(enum load_mode mode)
{
    return &mode_ops[mode];
}
