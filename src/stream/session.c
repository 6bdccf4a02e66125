/* Sessions: instance pick, upstream connect with retries, event dispatch, one finalize path. */
#include "session.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "balancer.h"
#include "log.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

enum close_how {
    CLOSE_FIN,   /* orderly: close(2) after both directions ended */
    CLOSE_RESET, /* abortive: SO_LINGER 0, the peers see RST */
};

static void session_finalize(struct session *s, const char *reason, enum close_how how);
static void session_connect_next(struct session *s);

static void set_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void set_linger_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    if (fd >= 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

static void watch_close(struct watch *wt, enum close_how how)
{
    if (wt->fd < 0)
        return;
    if (how == CLOSE_RESET)
        set_linger_reset(wt->fd);
    /* close(2) takes the descriptor out of the epoll set: no EPOLL_CTL_DEL needed */
    close(wt->fd);
    wt->fd = -1;
    wt->events = 0;
}

/* --- instance bookkeeping --------------------------------------------------------------- */

static void instance_take(struct session *s, struct instance_state *st)
{
    instance_state_hold(st);
    atomic_fetch_add_explicit(&st->active, 1, memory_order_relaxed);
    s->inst = st;
}

static void instance_drop(struct session *s)
{
    if (s->inst == NULL)
        return;
    atomic_fetch_sub_explicit(&s->inst->active, 1, memory_order_relaxed);
    instance_state_release(s->inst);
    s->inst = NULL;
}

/* Moves the current instance to the tried list; it keeps its reference so the exclusion
 * pointer cannot be reused by a new state while this session still retries. */
static int instance_mark_tried(struct session *s)
{
    if (s->tried == NULL) {
        s->tried = calloc((size_t)s->lst->retries + 1, sizeof(*s->tried));
        if (s->tried == NULL)
            return -ENOMEM;
    }
    atomic_fetch_sub_explicit(&s->inst->active, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->inst->failures, 1, memory_order_relaxed);
    s->tried[s->n_tried++] = s->inst;
    s->inst = NULL;
    return 0;
}

static void tried_release(struct session *s)
{
    for (uint32_t i = 0; i < s->n_tried; i++)
        instance_state_release(s->tried[i]);
    free(s->tried);
    s->tried = NULL;
    s->n_tried = 0;
}

/* Picks an instance inside a read section and copies its address out. */
static int instance_pick(struct session *s, struct config_addr *addr)
{
    const struct lb_exclude ex = {.states = s->tried, .n = s->n_tried};
    int rc = -ENOENT;
    snapshot_read_lock();
    const struct instance_set *set = snapshot_current(s->lst->service);
    long i = set->n > 0 ? set->lb->pick(set, snapshot_scratch(set, s->worker->id), &ex) : -1;
    if (i >= 0) {
        *addr = set->inst[i].addr;
        instance_take(s, set->inst[i].state);
        rc = 0;
    }
    snapshot_read_unlock();
    return rc;
}

/* --- readiness ---------------------------------------------------------------------------- */

/* Registers exactly the events the two directions need now: read a source only when its
 * direction has nothing pending (backpressure), write a destination only when it has. */
static int session_update_interest(struct session *s)
{
    uint32_t client = 0, upstream = 0;
    if (pump_wants_read(&s->up))
        client |= EPOLLIN;
    if (pump_pending(&s->down))
        client |= EPOLLOUT;
    if (pump_wants_read(&s->down))
        upstream |= EPOLLIN;
    if (pump_pending(&s->up))
        upstream |= EPOLLOUT;
    int rc = worker_watch(s->worker, &s->client, client);
    return rc != 0 ? rc : worker_watch(s->worker, &s->upstream, upstream);
}

static void session_count_bytes(struct session *s, uint64_t up0, uint64_t down0, uint64_t sp_up0,
                                uint64_t sp_down0)
{
    struct stats *st = &s->worker->stats;
    if (s->up.bytes == up0 && s->down.bytes == down0)
        return;
    s->last_active = worker_now(s->worker);
    STATS_ADD(st, bytes_up, s->up.bytes - up0);
    STATS_ADD(st, bytes_down, s->down.bytes - down0);
    STATS_ADD(st, spliced_up, s->up.spliced - sp_up0);
    STATS_ADD(st, spliced_down, s->down.spliced - sp_down0);
}

/* Runs the directions an event concerns, then decides: go on, finish, or reset. */
static void session_pump(struct session *s, int run_up, int run_down)
{
    const struct pump_env *env = &s->worker->pump_env;
    uint64_t up0 = s->up.bytes, down0 = s->down.bytes;
    uint64_t sp_up0 = s->up.spliced, sp_down0 = s->down.spliced;
    uint8_t up_mode = s->up.mode, down_mode = s->down.mode;
    int rc = 0;
    /* when the other way is already over, the session closes right after this FIN */
    s->up.fin_by_close = (uint8_t)pump_done(&s->down);
    s->down.fin_by_close = (uint8_t)pump_done(&s->up);
    if (run_up)
        rc = pump_run(&s->up, s->client.fd, s->upstream.fd, env);
    if (rc == 0 && run_down)
        rc = pump_run(&s->down, s->upstream.fd, s->client.fd, env);
    session_count_bytes(s, up0, down0, sp_up0, sp_down0);
    if (s->up.mode != up_mode && s->up.mode == PUMP_SPLICE)
        STATS_ADD(&s->worker->stats, splice_switches, 1);
    if (s->down.mode != down_mode && s->down.mode == PUMP_SPLICE)
        STATS_ADD(&s->worker->stats, splice_switches, 1);
    if (rc == -ENOMEM || rc == -EMFILE || rc == -ENFILE) {
        STATS_ADD(&s->worker->stats, alloc_failures, 1);
        session_finalize(s, "no_memory", CLOSE_RESET);
    } else if (rc != 0) {
        session_finalize(s, "reset", CLOSE_RESET);
    } else if (pump_done(&s->up) && pump_done(&s->down)) {
        session_finalize(s, "done", CLOSE_FIN);
    } else if (session_update_interest(s) != 0) {
        session_finalize(s, "epoll_failed", CLOSE_RESET);
    }
}

static void on_client_event(struct watch *wt, uint32_t events)
{
    struct session *s = container_of(wt, struct session, client);
    if (s->state != SESSION_ESTABLISHED)
        return;
    /* errors and hang-ups surface through the next read or write of the affected direction */
    int err = (events & (EPOLLERR | EPOLLHUP)) != 0;
    session_pump(s, err || (events & EPOLLIN), err || (events & EPOLLOUT));
}

static void on_upstream_event(struct watch *wt, uint32_t events);

/* --- connecting --------------------------------------------------------------------------- */

static void session_established(struct session *s)
{
    struct worker *w = s->worker;
    s->state = SESSION_ESTABLISHED;
    tried_release(s);
    atomic_fetch_add_explicit(&s->inst->connects, 1, memory_order_relaxed);
    STATS_ADD(&w->stats, sessions_established, 1);
    pump_init(&s->up, &w->pump_env);
    pump_init(&s->down, &w->pump_env);
    s->last_active = worker_now(w);
    wheel_remove(&w->wheel, &s->timer);
    if (s->lst->idle_timeout_ms > 0)
        worker_timer_add(w, &s->timer, s->last_active + s->lst->idle_timeout_ms);
    /* the client may have sent bytes already (the kernel kept them until now); the upstream's
     * first bytes, if any, are announced by epoll */
    session_pump(s, 1, 0);
}

static void session_connect_failed(struct session *s, int err, int timed_out)
{
    struct worker *w = s->worker;
    STATS_ADD(&w->stats, connect_failures, 1);
    if (timed_out)
        STATS_ADD(&w->stats, connect_timeouts, 1);
    log_event(s->worker->shared->log, LOG_LEVEL_DEBUG, "connect_failed",
              LOG_STR("listener", s->lst->name), LOG_STR("instance", s->inst->id),
              LOG_INT("errno", err), LOG_STR("why", timed_out ? "timeout" : "error"));
    if (instance_mark_tried(s) != 0) {
        session_finalize(s, "no_memory", CLOSE_RESET);
        return;
    }
    if (s->attempts > s->lst->retries) {
        session_finalize(s, "upstream_unavailable", CLOSE_FIN);
        return;
    }
    STATS_ADD(&w->stats, retries, 1);
    session_connect_next(s);
}

/* Opens the upstream socket for this attempt; the watch keeps its identity across attempts. */
static int upstream_socket(struct session *s, const struct config_addr *addr)
{
    watch_close(&s->upstream, CLOSE_FIN);
    int fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    set_nodelay(fd);
    s->upstream.fd = fd;
    return 0;
}

/* Out of descriptors for the upstream socket: not the instance's fault. Stop accepting for a
 * while (closing sessions free descriptors) and try again then; the client just waits, up to
 * connect_timeout in all. */
static void session_wait_for_descriptor(struct session *s, int err)
{
    struct worker *w = s->worker;
    uint64_t now = worker_now(w);
    instance_drop(s);
    worker_pause(w, "file_descriptors", err);
    if (s->fd_wait_since == 0)
        s->fd_wait_since = now;
    if (now - s->fd_wait_since >= s->lst->connect_timeout_ms) {
        STATS_ADD(&w->stats, alloc_failures, 1);
        session_finalize(s, "no_descriptors", CLOSE_RESET);
        return;
    }
    worker_timer_add(w, &s->timer, now + WORKER_PAUSE_MS);
}

static void session_connect_next(struct session *s)
{
    struct worker *w = s->worker;
    struct config_addr addr;
    if (instance_pick(s, &addr) != 0) {
        /* every instance failed already, or there never was one to try */
        if (s->n_tried > 0) {
            session_finalize(s, "upstream_unavailable", CLOSE_FIN);
            return;
        }
        STATS_ADD(&w->stats, no_instance, 1);
        session_finalize(s, "no_instance", CLOSE_FIN);
        return;
    }
    int rc = upstream_socket(s, &addr);
    if (rc == -EMFILE || rc == -ENFILE) {
        session_wait_for_descriptor(s, -rc);
        return;
    }
    s->attempts++;
    s->fd_wait_since = 0;
    STATS_ADD(&w->stats, connect_attempts, 1);
    if (rc == 0 && connect(s->upstream.fd, (const struct sockaddr *)&addr.sa, addr.len) != 0)
        rc = -errno;
    if (rc == 0) {
        session_established(s);
    } else if (rc == -EINPROGRESS) {
        worker_timer_add(w, &s->timer, worker_now(w) + s->lst->connect_timeout_ms);
        if (worker_watch(w, &s->upstream, EPOLLOUT) != 0)
            session_finalize(s, "epoll_failed", CLOSE_RESET);
    } else if (rc == -ENOBUFS || rc == -ENOMEM) {
        STATS_ADD(&w->stats, alloc_failures, 1);
        session_finalize(s, "no_memory", CLOSE_RESET);
    } else {
        session_connect_failed(s, -rc, 0);
    }
}

/* An event during a connect: done, failed, or (a stale event from a previous attempt's socket)
 * still in progress. A failed connect always raises EPOLLERR, so a plain EPOLLOUT on the first
 * attempt needs no getsockopt(2) to be trusted. */
static void session_connect_check(struct session *s, uint32_t events)
{
    if (events & (EPOLLERR | EPOLLHUP)) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(s->upstream.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err == 0 && s->attempts > 1)
            return; /* the previous attempt's error, reported late: this connect goes on */
        session_connect_failed(s, err != 0 ? err : ECONNREFUSED, 0);
        return;
    }
    /* after a retry, an event of the previous attempt's socket (same watch, same batch) may
     * arrive while the new connect is still in progress: only then is it worth asking */
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    if (s->attempts > 1 && getpeername(s->upstream.fd, (struct sockaddr *)&peer, &plen) != 0)
        return; /* ENOTCONN: not connected yet, wait for the real event */
    session_established(s);
}

static void on_upstream_event(struct watch *wt, uint32_t events)
{
    struct session *s = container_of(wt, struct session, upstream);
    if (s->state == SESSION_CONNECTING) {
        session_connect_check(s, events);
        return;
    }
    if (s->state != SESSION_ESTABLISHED)
        return;
    int err = (events & (EPOLLERR | EPOLLHUP)) != 0;
    session_pump(s, err || (events & EPOLLOUT), err || (events & EPOLLIN));
}

/* --- timers ------------------------------------------------------------------------------- */

void session_on_timer(struct wheel_entry *e)
{
    struct session *s = container_of(e, struct session, timer);
    struct worker *w = s->worker;
    if (s->state == SESSION_CONNECTING) {
        if (s->upstream.fd < 0)
            session_connect_next(s); /* waited for a descriptor: try again */
        else
            session_connect_failed(s, ETIMEDOUT, 1);
        return;
    }
    uint64_t due = s->last_active + s->lst->idle_timeout_ms;
    if (due > worker_now(w)) {
        worker_timer_add(w, &s->timer, due); /* traffic since it was armed: look again later */
        return;
    }
    STATS_ADD(&w->stats, idle_timeouts, 1);
    session_finalize(s, "idle_timeout", CLOSE_FIN);
}

/* --- lifecycle ---------------------------------------------------------------------------- */

static void session_log_end(const struct session *s, const char *reason)
{
    log_event(s->worker->shared->log, LOG_LEVEL_DEBUG, "session_end",
              LOG_STR("listener", s->lst->name),
              LOG_STR("instance", s->inst != NULL ? s->inst->id : ""), LOG_STR("reason", reason),
              LOG_INT("attempts", s->attempts), LOG_INT("bytes_up", s->up.bytes),
              LOG_INT("bytes_down", s->down.bytes), LOG_INT("spliced_up", s->up.spliced),
              LOG_INT("spliced_down", s->down.spliced));
}

/* The one way every session ends. Memory is freed after the current epoll batch. */
static void session_finalize(struct session *s, const char *reason, enum close_how how)
{
    struct worker *w = s->worker;
    if (s->state == SESSION_CLOSED)
        return;
    session_log_end(s, reason);
    if (how == CLOSE_RESET)
        STATS_ADD(&w->stats, resets, 1);
    STATS_ADD(&w->stats, sessions_closed, 1);
    s->state = SESSION_CLOSED;
    wheel_remove(&w->wheel, &s->timer);
    watch_close(&s->client, how);
    watch_close(&s->upstream, how);
    pump_release(&s->up, &w->pump_env);
    pump_release(&s->down, &w->pump_env);
    instance_drop(s);
    tried_release(s);
    /* unlink from the live list, park in the graveyard */
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->next = w->graveyard;
    w->graveyard = s;
    w->n_sessions--;
    atomic_fetch_sub_explicit(&w->shared->open_sessions, 1, memory_order_relaxed);
}

void session_abort(struct session *s)
{
    session_finalize(s, "shutdown", CLOSE_RESET);
}

void session_free_closed(struct worker *w)
{
    while (w->graveyard != NULL) {
        struct session *s = w->graveyard;
        w->graveyard = s->next;
        free(s);
    }
}

int session_start(struct worker *w, const struct listener_rt *lst, int client_fd)
{
    struct session *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        close(client_fd);
        atomic_fetch_sub_explicit(&w->shared->open_sessions, 1, memory_order_relaxed);
        return -ENOMEM;
    }
    s->worker = w;
    s->lst = lst;
    s->client = (struct watch){.fd = client_fd, .cb = on_client_event};
    s->upstream = (struct watch){.fd = -1, .cb = on_upstream_event};
    s->up.pipe.rd = s->up.pipe.wr = s->down.pipe.rd = s->down.pipe.wr = -1;
    s->state = SESSION_CONNECTING;
    s->next = w->sessions;
    if (w->sessions != NULL)
        w->sessions->prev = s;
    w->sessions = s;
    w->n_sessions++;
    /* TCP_NODELAY comes from the listening socket: accepted sockets inherit it */
    session_connect_next(s);
    return 0;
}
