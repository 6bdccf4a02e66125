/* Worker threads: loop, SO_REUSEPORT listeners, accept batches, pauses, commands. */
#include "worker.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "acl.h"
#include "admit.h"
#include "clock.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define WORKER_ACCEPT_BATCH  64   /* accepts per listener wakeup: bounded so sessions get a turn */
#define WORKER_PAUSE_LOG_MS  1000 /* at most one accept_paused line per second per worker */
#define WORKER_SPARE_BUFFERS 64   /* pooled copy buffers kept for reuse */
#define WORKER_SPARE_PIPES   32   /* pooled pipes kept for reuse */

static void worker_check_exit(struct worker *w);

/* --- accepting ---------------------------------------------------------------------------- */

static void worker_set_accepting(struct worker *w, int on)
{
    for (struct worker_listener *wl = w->listeners; wl != NULL; wl = wl->next)
        if (wl->watch.fd >= 0)
            (void)evloop_watch(&w->loop, &wl->watch, on ? EPOLLIN : 0);
    w->accepting = on;
}

static void on_resume(uv_timer_t *t)
{
    struct worker *w = t->data;
    if (atomic_load(&w->command) == WORKER_RUN)
        worker_set_accepting(w, 1);
}

/* Stops accepting for a short while (connection cap, out of descriptors or memory); open
 * sessions go on. Logged at most once a second. */
static void worker_pause(struct worker *w, const char *why, int err)
{
    STATS_ADD(&w->stats, accept_paused, 1);
    if (atomic_load(&w->command) != WORKER_RUN)
        return; /* draining: the listeners are gone for good */
    worker_set_accepting(w, 0);
    uv_timer_start(&w->resume, on_resume, WORKER_PAUSE_MS, 0);
    uint64_t now = evloop_now(&w->loop);
    if (w->last_pause_log == 0 || now - w->last_pause_log >= WORKER_PAUSE_LOG_MS) {
        w->last_pause_log = now;
        log_event(w->shared->log, LOG_LEVEL_WARN, "accept_paused", LOG_STR("why", why),
                  LOG_INT("errno", err), LOG_INT("worker", w->id),
                  LOG_INT("open", conn_budget_open(w->budget)),
                  LOG_INT("paused_total", atomic_load(&w->stats.accept_paused)));
    }
}

static void on_fd_shortage(struct session_host *h, int err)
{
    worker_pause(container_of(h, struct worker, host), "file_descriptors", err);
}

/* The admission decision for a client at its effective address (the peer's, or the one its
 * PROXY header named): allow/deny, then the per-client limits. LISTENER_REJECT_COUNT to let it
 * in, with *slot the client-table entry it holds (CLIENT_LIMIT_NONE: none), or why not. One
 * branch when the listener has neither lists nor per-client limits. */
static enum listener_reject worker_admission(const struct listener_rt *rt,
                                             const struct sockaddr *client, uint32_t *slot)
{
    enum listener_reject why = LISTENER_REJECT_COUNT;

    *slot = CLIENT_LIMIT_NONE;
    if ((rt->acl != NULL || rt->clients != NULL) && !admit_check(rt, client, slot, &why))
        return why;
    return LISTENER_REJECT_COUNT;
}

/* The session's view of worker_admission, once a PROXY header named the client. */
static enum listener_reject on_admit(struct session_host *h, const struct listener_rt *rt,
                                     const struct sockaddr *client, uint32_t *slot)
{
    (void)h;
    return worker_admission(rt, client, slot);
}

/* What is decided right after accept: for an accept_proxy listener only whether the peer may
 * send a header (the admission waits for the address in it), else the admission itself. */
static enum listener_reject worker_screen(const struct listener_rt *rt, const struct sockaddr *peer,
                                          uint32_t *slot)
{
    *slot = CLIENT_LIMIT_NONE;
    if (rt->accept_proxy)
        return acl_check(rt->trusted, peer) == ACL_PASS ? LISTENER_REJECT_COUNT
                                                        : LISTENER_REJECT_PROXY_UNTRUSTED;
    return worker_admission(rt, peer, slot);
}

/* Refuses a connection just accepted (fd closed, counted under why). A refusal resets
 * (SO_LINGER 0) rather than closes: for the client it is an error, not an end of stream, and
 * sluice keeps no TIME_WAIT socket per refused connection under a flood. */
static void worker_refuse(struct worker *w, const struct listener_rt *rt, int fd,
                          const struct sockaddr_storage *client, socklen_t len,
                          enum listener_reject why)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};

    /* counted before the reset: a client that saw it and asks /metrics finds it counted */
    STATS_ADD(&w->host.lstats[rt->index], rejected[why], 1);
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
    conn_budget_give(w->budget, w->host.user.shard);
    if (log_enabled(w->shared->log, LOG_LEVEL_DEBUG)) {
        struct net_addr a;
        (void)net_addr_from_sockaddr(&a, (const struct sockaddr *)client, len);
        log_event(w->shared->log, LOG_LEVEL_DEBUG, "connection_rejected",
                  LOG_STR("listener", rt->name), LOG_STR("client", a.text),
                  LOG_STR("reason", listener_reject_name(why)));
    }
}

/* Accepts one connection; returns 1 to go on, 0 to stop this batch. A socket about to close
 * (retiring) admits beyond max_connections: refusing would mean resetting the connection. */
static int worker_accept_one(struct worker *w, struct worker_listener *wl, int retiring)
{
    struct sockaddr_storage client;
    socklen_t len;

    /* the slot is reserved before accepting, so the cap holds across workers */
    if (retiring) {
        conn_budget_force(w->budget);
    } else if (!conn_budget_take(w->budget, w->host.user.shard)) {
        worker_pause(w, "max_connections", 0);
        return 0;
    }
    int fd = listener_accept(wl->watch.fd, &client, &len);
    if (fd < 0) {
        int err = -fd;
        conn_budget_give(w->budget, w->host.user.shard);
        if (retiring)
            return err == ECONNABORTED || err == EINTR || err == EPROTO;
        if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM)
            worker_pause(w, err == EMFILE || err == ENFILE ? "file_descriptors" : "memory", err);
        else if (err == ECONNABORTED || err == EINTR || err == EPROTO)
            return 1;
        else if (err != EAGAIN && err != EWOULDBLOCK)
            STATS_ADD(&w->stats, accept_errors, 1);
        return 0;
    }
    STATS_ADD(&w->stats, accepted, 1);
    uint32_t slot;
    enum listener_reject why = worker_screen(wl->rt, (const struct sockaddr *)&client, &slot);
    if (why != LISTENER_REJECT_COUNT) {
        worker_refuse(w, wl->rt, fd, &client, len, why);
        return 1;
    }
    if (session_start(&w->host, wl->rt, fd, (const struct sockaddr *)&client, len, slot) != 0) {
        admit_release(wl->rt, slot);
        close(fd);
        conn_budget_give(w->budget, w->host.user.shard);
        STATS_ADD(&w->stats, alloc_failures, 1);
    }
    return 1;
}

static void on_listener_event(struct watch *wt, uint32_t events)
{
    struct worker_listener *wl = container_of(wt, struct worker_listener, watch);
    (void)events;
    for (int i = 0; i < WORKER_ACCEPT_BATCH && wl->worker->accepting; i++) {
        if (!worker_accept_one(wl->worker, wl, 0))
            break;
    }
}

/* --- upkeep ------------------------------------------------------------------------------- */

#define WORKER_QUEUE_POLL_MS                                                                       \
    20                       /* queued clients look for room this often (other workers free        \
                              * slots this worker hears nothing of) */
#define WORKER_SWEEP_MS 1000 /* drain_timeout and max_connection_lifetime resolution */

/* What the sweep timer has to look after. */
static int worker_needs_sweep(const struct worker_shared *sh, int *queues)
{
    int any = 0;

    *queues = 0;
    for (size_t i = 0; i < sh->n_services; i++) {
        const struct service_rt *svc = &sh->services[i];
        *queues |= svc->queue_size > 0;
        any |= svc->queue_size > 0 || svc->drain_timeout_ms > 0 || svc->lifetime_ms > 0;
    }
    return any;
}

static void on_sweep(uv_timer_t *t)
{
    struct worker *w = t->data;
    uint64_t now = evloop_now(&w->loop);

    for (size_t i = 0; i < w->shared->n_services; i++)
        if (w->host.queues[i].len > 0)
            session_serve_queue(&w->host, i);
    if (now - w->last_sweep >= WORKER_SWEEP_MS) {
        w->last_sweep = now;
        if (w->sweep_sessions)
            session_sweep(&w->host, clock_ms(), clock_us());
        instance_user_sweep(&w->host.user);
    }
    session_free_closed(&w->host);
    worker_check_exit(w);
}

/* --- lifecycle ----------------------------------------------------------------------------- */

static void worker_close_handles(struct worker *w)
{
    w->closing = 1;
    uv_close((uv_handle_t *)&w->sweep, NULL);
    uv_close((uv_handle_t *)&w->resume, NULL);
    uv_close((uv_handle_t *)&w->wakeup, NULL);
    evloop_stop(&w->loop);
}

/* Closes the listening sockets still open (close(2) also takes them out of the epoll set);
 * returns how many it closed. */
static size_t worker_close_listeners(struct worker *w)
{
    size_t closed = 0;
    while (w->listeners != NULL) {
        struct worker_listener *wl = w->listeners;
        w->listeners = wl->next;
        closed += wl->watch.fd >= 0;
        worker_listener_destroy(wl);
    }
    w->accepting = 0;
    return closed;
}

/* Ends the loop once a drain has no session left. */
static void worker_check_exit(struct worker *w)
{
    if (atomic_load(&w->command) != WORKER_RUN && w->host.n_live == 0 && !w->closing)
        worker_close_handles(w);
}

/* After every batch: free what closed, and see whether a drain is over. */
static void worker_after_batch(void *data)
{
    struct worker *w = data;
    session_free_closed(&w->host);
    worker_check_exit(w);
}

/* --- listener changes (reload) ----------------------------------------------------------- */

/* close(2) on a listening socket resets every connection still in its accept queue (unless the
 * net.ipv4.tcp_migrate_req sysctl is on, default off; measured: 198 of 400 queued connections
 * lost over two SO_REUSEPORT sockets, one closed). So a socket that goes away leaves the epoll set
 * first, then everything queued on it is accepted and served; a second pass catches handshakes
 * that completed during the first. What is left is a handshake completing between the last
 * accept and close(2), a window of microseconds.
 * Each pass is bounded by the queue's size, so clients that keep connecting cannot hold the
 * worker here. Freeing wl is safe: changes are applied from libuv's turn, after the epoll batch
 * that might have named it. */
static void worker_retire_listener(struct worker *w, struct worker_listener *wl)
{
    if (wl->watch.fd >= 0) {
        (void)evloop_watch(&w->loop, &wl->watch, 0);
        for (int pass = 0; pass < 2; pass++) {
            int bound = wl->rt->backlog + WORKER_ACCEPT_BATCH;
            while (bound-- > 0 && worker_accept_one(w, wl, 1))
                ;
        }
    }
    worker_listener_destroy(wl);
}

/* A drain retires every socket like a reload does, so that what is queued on it is served
 * instead of reset; a socket another process also holds (handed over by a takeover) is not reset
 * by the close either way, it only loses this process's reference. */
static void worker_retire_listeners(struct worker *w)
{
    while (w->listeners != NULL) {
        struct worker_listener *wl = w->listeners;
        w->listeners = wl->next;
        worker_retire_listener(w, wl);
    }
    w->accepting = 0;
}

static struct worker_change_item *change_find(struct worker_change *c, size_t index)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->items[i].rt != NULL && c->items[i].rt->index == index)
            return &c->items[i];
    return NULL;
}

/* A kept socket takes its listener's new version. The socket takes a reference of its own (the
 * change keeps its one): a worker may hold several sockets of one listener (taken over from a
 * process that ran more workers), and each of them must find the item. */
static void worker_listener_swap(struct worker_listener *wl, struct worker_change_item *it)
{
    if (it->rt->backlog != wl->rt->backlog)
        (void)listen(wl->watch.fd, it->rt->backlog); /* Linux resizes the queue in place */
    listener_rt_hold(it->rt);
    listener_rt_drop(wl->rt);
    wl->rt = it->rt;
}

/* Kept sockets first (swap or retire), then the new ones join the list. */
static void worker_apply_change(struct worker *w, struct worker_change *c)
{
    struct worker_listener **link = &w->listeners;

    while (*link != NULL) {
        struct worker_listener *wl = *link;
        struct worker_change_item *it = change_find(c, wl->rt->index);
        if (it != NULL && it->fresh == NULL) {
            worker_listener_swap(wl, it);
            link = &wl->next;
        } else {
            *link = wl->next;
            worker_retire_listener(w, wl);
        }
    }
    for (size_t i = 0; i < c->n; i++) {
        struct worker_change_item *it = &c->items[i];
        struct worker_listener *wl = it->fresh;
        if (wl == NULL)
            continue;
        assert(wl->worker == w && wl->rt == NULL);
        wl->rt = it->rt;
        it->rt = NULL;
        it->fresh = NULL;
        wl->next = w->listeners;
        w->listeners = wl;
        if (w->accepting) /* paused: on_resume watches it with the others */
            (void)evloop_watch(&w->loop, &wl->watch, EPOLLIN);
    }
    worker_change_destroy(c); /* what is left: versions of sockets this worker did not have */
}

struct worker_listener *worker_listener_create(struct worker *w, const struct listener_rt *rt,
                                               char *err, size_t err_len)
{
    struct worker_listener *wl = calloc(1, sizeof(*wl));
    if (wl == NULL) {
        snprintf(err, err_len, "listener %s: out of memory", rt->name);
        errno = ENOMEM;
        return NULL;
    }
    int fd = listener_socket(rt, err, err_len);
    if (fd < 0) {
        free(wl);
        errno = -fd;
        return NULL;
    }
    watch_init(&wl->watch, fd, on_listener_event);
    wl->worker = w;
    return wl;
}

void worker_listener_destroy(struct worker_listener *wl)
{
    if (wl == NULL)
        return;
    /* close(2) takes a descriptor out of the epoll set only with the last reference to its open
     * file; a socket handed to a successor (takeover) has another one, and would go on waking
     * this set with a freed watch. So a watched socket leaves the set first. */
    if (wl->watch.fd >= 0 && wl->watch.events != 0)
        (void)evloop_watch(&wl->worker->loop, &wl->watch, 0);
    watch_close(&wl->watch);
    listener_rt_drop(wl->rt);
    free(wl);
}

struct worker_change *worker_change_create(size_t n)
{
    struct worker_change *c = calloc(1, sizeof(*c) + (n ? n : 1) * sizeof(c->items[0]));
    if (c != NULL)
        c->n = n;
    return c;
}

void worker_change_destroy(struct worker_change *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++) {
        listener_rt_drop(c->items[i].rt);
        worker_listener_destroy(c->items[i].fresh);
    }
    free(c);
}

int worker_change_pending(struct worker *w)
{
    return atomic_load(&w->changes_applied) != w->changes_posted;
}

int worker_post_change(struct worker *w, struct worker_change *c)
{
    if (worker_change_pending(w))
        return -EBUSY;
    assert(atomic_load(&w->change) == NULL);
    /* seq_cst: the change's contents are visible to the worker that takes it */
    atomic_store(&w->change, c);
    w->changes_posted++;
    uv_async_send(&w->wakeup);
    return 0;
}

/* --- commands ------------------------------------------------------------------------------- */

static void on_wakeup(uv_async_t *a)
{
    struct worker *w = a->data;
    struct worker_change *c = atomic_exchange(&w->change, NULL);

    if (c != NULL) {
        worker_apply_change(w, c);
        atomic_fetch_add(&w->changes_applied, 1);
        if (w->on_changed != NULL)
            w->on_changed(w);
    }
    int cmd = atomic_load(&w->command);
    if (cmd == WORKER_RUN)
        return;
    if (cmd == WORKER_DRAIN)
        worker_retire_listeners(w);
    (void)worker_close_listeners(w);
    uv_timer_stop(&w->resume);
    if (!w->unlistened && w->on_unlisten != NULL) {
        w->unlistened = 1;
        w->on_unlisten(w);
    }
    if (cmd == WORKER_STOP) {
        while (w->host.live != NULL)
            session_abort(w->host.live);
        session_free_closed(&w->host);
    }
    worker_check_exit(w);
}

void worker_command(struct worker *w, enum worker_command cmd)
{
    atomic_store(&w->command, (int)cmd);
    uv_async_send(&w->wakeup);
}

static void worker_main(void *arg)
{
    struct worker *w = arg;
    sigset_t pipe;
    char name[16]; /* the kernel keeps 15 bytes of a thread's name */

    /* named so that top -H and /proc/PID/task/<tid>/comm show how many workers run */
    snprintf(name, sizeof(name), "sluice-w%u", w->id % 10000000);
    pthread_setname_np(pthread_self(), name);
    /* splice(2) into a socket the peer reset raises SIGPIPE (send has MSG_NOSIGNAL, splice has
     * nothing like it): blocked here, the signal stays pending on this thread and never kills
     * the process, whatever the embedding program does with SIGPIPE */
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, NULL);
    snapshot_reader_register();
    evloop_run(&w->loop);
    snapshot_reader_unregister();
    if (w->on_exit != NULL)
        w->on_exit(w);
}

int worker_start(struct worker *w)
{
    int queues;

    /* always: the instance references of ended sessions are dropped there */
    w->sweep_sessions = worker_needs_sweep(w->shared, &queues);
    uv_timer_start(&w->sweep, on_sweep, queues ? WORKER_QUEUE_POLL_MS : WORKER_SWEEP_MS,
                   queues ? WORKER_QUEUE_POLL_MS : WORKER_SWEEP_MS);
    worker_set_accepting(w, 1);
    return uv_thread_create(&w->thread, worker_main, w);
}

/* --- setup -------------------------------------------------------------------------------- */

/* Resolution of the wheel: fine enough for the shortest timeout, coarse enough to stay cheap. */
static uint64_t wheel_tick_for(const struct worker_shared *shared)
{
    uint64_t shortest = UINT64_MAX;
    for (size_t i = 0; i < shared->n_listeners; i++) {
        const struct listener_rt *l = shared->listeners[i];
        if (l->connect_timeout_ms < shortest)
            shortest = l->connect_timeout_ms;
        if (l->idle_timeout_ms > 0 && l->idle_timeout_ms < shortest)
            shortest = l->idle_timeout_ms;
    }
    uint64_t tick = shortest / 16;
    return tick < 5 ? 5 : tick > 250 ? 250 : tick;
}

/* A socket taken over from the process this one replaces: already bound and listening, and
 * its queue is served from now on. listen(2) again gives it this file's backlog. */
static struct worker_listener *worker_listener_adopt(struct worker *w, int fd,
                                                     const struct listener_rt *rt)
{
    struct worker_listener *wl = calloc(1, sizeof(*wl));

    if (wl == NULL)
        return NULL;
    (void)listen(fd, rt->backlog);
    watch_init(&wl->watch, fd, on_listener_event);
    wl->worker = w;
    return wl;
}

static void worker_listener_append(struct worker_listener ***tail, struct worker_listener *wl,
                                   struct listener_rt *rt)
{
    listener_rt_hold(rt);
    wl->rt = rt;
    **tail = wl;
    *tail = &wl->next;
}

/* Appends to *tail the sockets of listener i dealt to w (socket j goes to worker j % n_workers),
 * taking their descriptors; or one bound here when none is dealt to w. 0 or -errno. */
static int worker_init_listener(struct worker *w, size_t i, struct worker_listener ***tail,
                                char *err, size_t err_len)
{
    const struct worker_shared *sh = w->shared;
    struct worker_inherited *inh = sh->inherited != NULL ? &sh->inherited[i] : NULL;
    struct listener_rt *rt = sh->listeners[i];

    if (inh == NULL || inh->n <= w->id) {
        struct worker_listener *wl = worker_listener_create(w, rt, err, err_len);
        if (wl == NULL)
            return -errno;
        worker_listener_append(tail, wl, rt);
        return 0;
    }
    assert(sh->n_workers > 0);
    for (size_t j = w->id; j < inh->n; j += sh->n_workers) {
        struct worker_listener *wl = worker_listener_adopt(w, inh->fds[j], rt);
        if (wl == NULL) {
            snprintf(err, err_len, "listener %s: out of memory", rt->name);
            return -ENOMEM;
        }
        inh->fds[j] = -1; /* the worker's now */
        worker_listener_append(tail, wl, rt);
    }
    return 0;
}

/* The start-up set, in file order. */
static int worker_init_listeners(struct worker *w, char *err, size_t err_len)
{
    struct worker_listener **tail = &w->listeners;

    for (size_t i = 0; i < w->shared->n_listeners; i++) {
        int rc = worker_init_listener(w, i, &tail, err, err_len);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The worker's own libuv handles on its loop. */
static int worker_init_handles(struct worker *w)
{
    int rc = uv_timer_init(evloop_uv(&w->loop), &w->resume);
    if (rc != 0)
        return rc;
    if ((rc = uv_timer_init(evloop_uv(&w->loop), &w->sweep)) != 0) {
        uv_close((uv_handle_t *)&w->resume, NULL);
        return rc;
    }
    rc = uv_async_init(evloop_uv(&w->loop), &w->wakeup, on_wakeup);
    if (rc != 0) {
        uv_close((uv_handle_t *)&w->resume, NULL);
        uv_close((uv_handle_t *)&w->sweep, NULL);
        return rc;
    }
    w->resume.data = w->sweep.data = w->wakeup.data = w;
    w->handles = 1;
    return 0;
}

/* A queue of queue_size slots for every service that has one. */
static struct session_queue *worker_init_queues(const struct worker_shared *sh)
{
    struct session_queue *q = calloc(sh->n_services ? sh->n_services : 1, sizeof(*q));

    for (size_t i = 0; q != NULL && i < sh->n_services; i++) {
        q[i].cap = sh->services[i].queue_size;
        if (q[i].cap > 0 && (q[i].slots = calloc(q[i].cap, sizeof(*q[i].slots))) == NULL) {
            while (i-- > 0)
                free(q[i].slots);
            free(q);
            return NULL;
        }
    }
    return q;
}

/* Balancer state and queues per service, and the rest of what sessions borrow. */
static int worker_init_host(struct worker *w)
{
    const struct worker_shared *sh = w->shared;
    struct lb_scratch *scratch = calloc(sh->n_services ? sh->n_services : 1, sizeof(*scratch));
    struct session_queue *queues = worker_init_queues(sh);
    struct listener_stats *lstats = calloc(sh->lstats_cap ? sh->lstats_cap : 1, sizeof(*lstats));

    if (scratch == NULL || queues == NULL || lstats == NULL) {
        free(scratch);
        free(lstats);
        if (queues != NULL)
            for (size_t i = 0; i < sh->n_services; i++)
                free(queues[i].slots);
        free(queues);
        return -ENOMEM;
    }
    for (size_t i = 0; i < sh->n_services; i++)
        lb_scratch_init(&scratch[i], w->id);
    w->host = (struct session_host){
        .loop = &w->loop,
        .pump = {.buffers = &w->buffers,
                 .pipes = &w->pipes,
                 .splice = sh->splice,
                 .budget = sh->pipe_size * 8},
        .stats = &w->stats,
        .log = sh->log,
        .budget = w->budget,
        .user = {.shard = w->id + 1},
        .scratch = scratch,
        .queues = queues,
        .lstats = lstats,
        .access = sh->access != NULL ? &sh->access->rings[w->id] : NULL,
        .rng = rng_seed() + w->id,
        .on_fd_shortage = on_fd_shortage,
        .admit = on_admit,
    };
    if (w->host.rng == 0)
        w->host.rng = 1;
    return 0;
}

int worker_init(struct worker *w, unsigned id, struct worker_shared *shared, char *err,
                size_t err_len)
{
    int rc;

    memset(w, 0, sizeof(*w));
    w->id = id;
    w->shared = shared;
    w->budget = &shared->budget;
    w->loop.epfd = -1;
    atomic_init(&w->command, WORKER_RUN);
    atomic_init(&w->change, NULL);
    atomic_init(&w->changes_applied, 0);
    if ((rc = evloop_init(&w->loop, wheel_tick_for(shared), session_on_timer, worker_after_batch,
                          w)) != 0 ||
        (rc = worker_init_handles(w)) != 0 ||
        (rc = pool_buffers_init(&w->buffers, shared->buffer_size, WORKER_SPARE_BUFFERS)) != 0 ||
        (rc = pool_pipes_init(&w->pipes, (int)shared->pipe_size, WORKER_SPARE_PIPES)) != 0 ||
        (rc = worker_init_host(w)) != 0) {
        snprintf(err, err_len, "worker %u: setup failed: %s", id, uv_strerror(rc));
        worker_destroy(w);
        return rc;
    }
    if ((rc = worker_init_listeners(w, err, err_len)) != 0) {
        worker_destroy(w);
        return rc;
    }
    return 0;
}

void worker_destroy(struct worker *w)
{
    worker_close_listeners(w);
    worker_change_destroy(atomic_exchange(&w->change, NULL)); /* posted, never taken */
    if (w->handles && !w->closing)
        worker_close_handles(w); /* a worker that never ran still has its handles open */
    w->handles = 0;
    evloop_close(&w->loop);
    assert(w->host.n_live == 0 && w->host.graveyard == NULL);
    instance_user_finish(&w->host.user);
    for (size_t i = 0; w->host.scratch != NULL && i < w->shared->n_services; i++)
        lb_scratch_free(&w->host.scratch[i]);
    for (size_t i = 0; w->host.queues != NULL && i < w->shared->n_services; i++)
        free(w->host.queues[i].slots);
    free(w->host.scratch);
    free(w->host.queues);
    free(w->host.lstats);
    w->host.lstats = NULL;
    w->host.scratch = NULL;
    w->host.queues = NULL;
    pool_buffers_destroy(&w->buffers);
    pool_pipes_destroy(&w->pipes);
}

void worker_join(struct worker *w)
{
    uv_thread_join(&w->thread);
    worker_destroy(w);
}
