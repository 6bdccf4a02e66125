/* Sessions: instance pick, upstream connect with retries, event dispatch, one finalize path. */
#include "session.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admit.h"
#include "clock.h"
#include "instance_use.h"
#include "logring.h"
#include "owner.h"
#include "proxy_proto.h"
#include "stream_conf.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define SESSION_FD_WAIT_MS 100 /* retry interval while no descriptor is left for the upstream */

enum close_how {
    CLOSE_FIN,   /* orderly: close(2) after both directions ended */
    CLOSE_RESET, /* abortive: SO_LINGER 0, the peers see RST */
};

/* The local address of a session on a wildcard listener, stored right after the session. */
struct session_local {
    uint8_t ip[16]; /* 4 bytes used for IPv4 */
    uint16_t port;  /* host order */
    uint8_t family; /* AF_INET or AF_INET6 */
};

/* 264 bytes + glibc's 8-byte header = one 272-byte chunk; 256 B before connect times, the
 * access log and lifetimes needed their fields */
_Static_assert(sizeof(struct session) <= 264, "a session must fit one 272-byte malloc chunk");

static void session_finalize(struct session *s, enum session_end end, const char *reason,
                             enum close_how how);
static void session_connect_next(struct session *s);
static enum session_end session_end_of_reset(const struct session *s);
static void session_header_event(struct session *s, uint32_t events);
static void session_refuse(struct session *s, enum listener_reject why, const char *detail);
static void session_connect_failed(struct session *s, int err, int timed_out);

/* --- names, histograms ------------------------------------------------------------------- */

#define SESSION_END_NAME(name, text) text,
static const char *const end_names[] = {SESSION_END_LIST(SESSION_END_NAME)};
#undef SESSION_END_NAME

const char *session_end_name(enum session_end end)
{
    return (unsigned)end < SESSION_END_COUNT ? end_names[end] : "unknown";
}

#define LISTENER_REJECT_NAME(name, text) text,
static const char *const reject_names[] = {LISTENER_REJECT_LIST(LISTENER_REJECT_NAME)};
#undef LISTENER_REJECT_NAME

const char *listener_reject_name(enum listener_reject why)
{
    return (unsigned)why < LISTENER_REJECT_COUNT ? reject_names[why] : "unknown";
}

const uint64_t session_connect_bounds_us[SESSION_HIST_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 500000, 2000000};
const uint64_t session_duration_bounds_us[SESSION_HIST_BUCKETS] = {
    1000,     10000,    100000,    1000000,   5000000,    10000000,
    30000000, 60000000, 300000000, 900000000, 1800000000, 3600000000};

/* One observation into a histogram of this thread (counts are cumulative, as Prometheus wants
 * them: a value lands in every bucket whose bound it does not exceed). */
static void hist_add(struct session_hist *hist, const uint64_t *bounds, uint64_t us)
{
    for (size_t i = SESSION_HIST_BUCKETS; i-- > 0 && us <= bounds[i];)
        STATS_ADD(hist, le[i], 1);
    STATS_ADD(hist, count, 1);
    STATS_ADD(hist, sum_us, us);
}

/* --- connection budget -------------------------------------------------------------------- */

int conn_budget_init(struct conn_budget *b, uint32_t max, unsigned n_hosts)
{
    assert(n_hosts > 0);
    uint32_t chunk = max / (4 * n_hosts);

    *b = (struct conn_budget){.max = max, .n_hosts = n_hosts};
    b->chunk = chunk < 1 ? 1 : chunk > 32 ? 32 : chunk;
    b->spare = aligned_alloc(sizeof(*b->spare), n_hosts * sizeof(*b->spare));
    if (b->spare == NULL)
        return -ENOMEM;
    for (unsigned i = 0; i < n_hosts; i++)
        atomic_init(&b->spare[i].n, 0);
    return 0;
}

void conn_budget_destroy(struct conn_budget *b)
{
    free(b->spare);
    b->spare = NULL;
}

/* One slot out of a spare, if it has one. */
static int spare_take(atomic_uint *n)
{
    unsigned have = atomic_load_explicit(n, memory_order_relaxed);

    while (have > 0)
        if (atomic_compare_exchange_weak_explicit(n, &have, have - 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return 1;
    return 0;
}

int conn_budget_take(struct conn_budget *b, unsigned host)
{
    assert(host < b->n_hosts);
    if (spare_take(&b->spare[host].n))
        return 1;
    unsigned open = atomic_load_explicit(&b->open, memory_order_relaxed);
    while (open < b->max) {
        unsigned k = b->max - open < b->chunk ? b->max - open : b->chunk;
        if (atomic_compare_exchange_weak_explicit(&b->open, &open, open + k, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            if (k > 1)
                atomic_fetch_add_explicit(&b->spare[host].n, k - 1, memory_order_relaxed);
            return 1;
        }
    }
    for (unsigned i = 0; i < b->n_hosts; i++) /* the cap is reached: another host's spare */
        if (i != host && spare_take(&b->spare[i].n))
            return 1;
    return 0;
}

void conn_budget_force(struct conn_budget *b)
{
    atomic_fetch_add_explicit(&b->open, 1, memory_order_relaxed);
}

void conn_budget_give(struct conn_budget *b, unsigned host)
{
    assert(host < b->n_hosts);
    atomic_uint *n = &b->spare[host].n;
    unsigned have = atomic_fetch_add_explicit(n, 1, memory_order_relaxed) + 1;

    /* a spare of more than two chunks goes back to the cap, a chunk at a time (a lost race
     * leaves it for the next give) */
    if (have > 2 * b->chunk &&
        atomic_compare_exchange_strong_explicit(n, &have, have - b->chunk, memory_order_relaxed,
                                                memory_order_relaxed)) {
        unsigned before = atomic_fetch_sub_explicit(&b->open, b->chunk, memory_order_relaxed);
        assert(before >= b->chunk);
        (void)before;
    }
}

unsigned conn_budget_open(const struct conn_budget *b)
{
    unsigned spare = 0, open = atomic_load_explicit(&b->open, memory_order_relaxed);

    for (unsigned i = 0; i < b->n_hosts; i++)
        spare += atomic_load_explicit(&b->spare[i].n, memory_order_relaxed);
    return open > spare ? open - spare : 0;
}

/* --- addresses ---------------------------------------------------------------------------- */

/* Copies the IP and port of a kernel address into compact fields. */
static void compact_addr(const struct sockaddr *sa, uint8_t ip[16], uint16_t *port, uint8_t *family)
{
    memset(ip, 0, 16);
    /* getsockname(2) takes a transparent union (_GNU_SOURCE) the analyzer does not see fill ss */
    *family = (uint8_t)sa->sa_family; // NOLINT(clang-analyzer-core.uninitialized.Assign)
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        memcpy(ip, &s6->sin6_addr, 16);
        *port = ntohs(s6->sin6_port);
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        memcpy(ip, &s4->sin_addr, 4);
        *port = ntohs(s4->sin_port);
    } else {
        *port = 0;
    }
}

/* The inverse of compact_addr. */
static void expand_addr(const uint8_t ip[16], uint16_t port, uint8_t family, struct net_addr *out)
{
    struct sockaddr_storage ss;
    socklen_t len;

    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, ip, 16);
        s6->sin6_port = htons(port);
        len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, ip, 4);
        s4->sin_port = htons(port);
        len = sizeof(*s4);
    }
    net_addr_from_sockaddr(out, (const struct sockaddr *)&ss, len);
}

void session_client(const struct session *s, struct net_addr *out)
{
    expand_addr(s->client_ip, s->client_port, s->client_family, out);
}

void session_local(const struct session *s, struct net_addr *out)
{
    if (!s->lst->wildcard) {
        *out = s->lst->bind;
        return;
    }
    const struct session_local *l = (const struct session_local *)(s + 1);
    expand_addr(l->ip, l->port, l->family, out);
}

/* --- sockets ------------------------------------------------------------------------------ */

static void set_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void watch_close_how(struct watch *wt, enum close_how how)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};

    if (wt->fd >= 0 && how == CLOSE_RESET)
        (void)setsockopt(wt->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    watch_close(wt);
}

/* --- instance bookkeeping --------------------------------------------------------------- */

static void instance_take(struct session *s, struct instance_state *st)
{
    instance_use_begin(st, &s->host->user);
    s->inst = st;
}

static void instance_drop(struct session *s)
{
    if (s->inst == NULL)
        return;
    instance_use_end(s->inst, &s->host->user);
    s->inst = NULL;
}

/* Moves the current instance to the tried list; it keeps its reference so the exclusion
 * pointer cannot be reused by a new state while this session still retries. */
static int instance_mark_tried(struct session *s)
{
    assert(s->inst != NULL && s->n_tried <= s->lst->retries);
    if (s->tried == NULL) {
        s->tried = calloc((size_t)s->lst->retries + 1, sizeof(*s->tried));
        if (s->tried == NULL)
            return -ENOMEM;
    }
    instance_use_inactive(s->inst, &s->host->user);
    instance_use_failed(s->lst->service->owner, s->inst); /* it keeps the session's hold */
    s->tried[s->n_tried++] = s->inst;
    s->inst = NULL;
    return 0;
}

static void tried_release(struct session *s)
{
    for (uint32_t i = 0; i < s->n_tried; i++)
        instance_use_unhold(s->tried[i], &s->host->user);
    free(s->tried);
    s->tried = NULL;
    s->n_tried = 0;
}

/* The bytes a hashing balancer hashes: the client's IP, and its port with hash_key =
 * client_ip_port. Returns their length. */
static size_t hash_key_of(const struct session *s, const struct instance_set *set, uint8_t key[18])
{
    size_t n = s->client_family == AF_INET6 ? 16 : 4;

    memcpy(key, s->client_ip, n);
    if (set->hash_with_port) {
        key[n++] = (uint8_t)(s->client_port >> 8);
        key[n++] = (uint8_t)s->client_port;
    }
    return n;
}

/* Picks an instance inside a read section and copies its address out. 0, -ENOENT (nothing to
 * pick), -EBUSY (every instance is at its limit) or -ENOMEM. */
static int instance_pick(struct session *s, struct net_addr *addr)
{
    struct session_host *h = s->host;
    const struct service_rt *svc = s->lst->service;
    struct lb_ctx ctx = {
        .rng = &h->rng, .tried = s->tried, .n_tried = s->n_tried, .shard = h->user.shard};
    struct net_addr client;
    uint8_t key[18];
    long i;

    snapshot_read_lock();
    const struct instance_set *set = owner_current(svc->owner);
    if (set->lb != NULL && set->lb->needs_client) {
        ctx.key = key;
        ctx.key_len = hash_key_of(s, set, key);
        session_client(s, &client);
        ctx.client = (const struct sockaddr *)&client.sa;
    }
    i = lb_pick(set, &h->scratch[svc->index], &ctx);
    if (i >= 0) {
        *addr = set->inst[i].addr;
        instance_take(s, set->inst[i].state);
    }
    snapshot_read_unlock();
    return i >= 0 ? 0 : (int)i;
}

/* --- the queue ------------------------------------------------------------------------------- */

static struct session_queue *queue_of(const struct session *s)
{
    return &s->host->queues[s->lst->service->index];
}

/* Puts s at the tail of its service's queue in this host: 0, or -ENOSPC when the service's
 * queue_size (over every host) is reached. */
static int queue_push(struct session *s)
{
    struct service_rt *svc = s->lst->service;
    struct session_queue *q = queue_of(s);
    unsigned before = atomic_fetch_add_explicit(&svc->queued, 1, memory_order_relaxed);

    if (before >= svc->queue_size || q->len >= q->cap) {
        atomic_fetch_sub_explicit(&svc->queued, 1, memory_order_relaxed);
        return -ENOSPC;
    }
    uint32_t slot = (q->head + q->len) % q->cap;
    q->slots[slot] = s;
    q->len++;
    s->t.queue_slot = slot;
    return 0;
}

/* Takes s out of its queue (it leaves early or is served); holes at the head are skipped. */
static void queue_remove(struct session *s)
{
    struct session_queue *q = queue_of(s);

    assert(q->slots[s->t.queue_slot] == s);
    q->slots[s->t.queue_slot] = NULL;
    atomic_fetch_sub_explicit(&s->lst->service->queued, 1, memory_order_relaxed);
    while (q->len > 0 && q->slots[q->head] == NULL) {
        q->head = (q->head + 1) % q->cap;
        q->len--;
    }
}

/* Closes the holes of a queue whose slots ran out, keeping the order. */
static void queue_compact(struct session_queue *q)
{
    uint32_t live = 0;

    for (uint32_t k = 0; k < q->len; k++) {
        struct session *t = q->slots[(q->head + k) % q->cap];
        if (t == NULL)
            continue;
        uint32_t slot = (q->head + live++) % q->cap;
        q->slots[slot] = t;
        t->t.queue_slot = slot;
    }
    for (uint32_t k = live; k < q->len; k++)
        q->slots[(q->head + k) % q->cap] = NULL;
    q->len = live;
}

/* Every instance is full: the client waits (no buffer held) for queue_timeout, or is refused. */
static void session_enqueue(struct session *s)
{
    struct session_host *h = s->host;
    const struct service_rt *svc = s->lst->service;
    struct session_queue *q = queue_of(s);

    if (q->len == q->cap && q->cap > 0)
        queue_compact(q);
    if (svc->queue_size == 0 || queue_push(s) != 0) {
        STATS_ADD(h->stats, all_full, 1);
        owner_warn_nothing_left(svc->owner, "all_full", evloop_now(h->loop));
        session_finalize(s, SESSION_END_REJECTED, svc->queue_size == 0 ? "all_full" : "queue_full",
                         CLOSE_FIN);
        return;
    }
    STATS_ADD(h->stats, queued, 1);
    s->state = SESSION_QUEUED;
    evloop_timer_remove(h->loop, &s->timer);
    evloop_timer_add(h->loop, &s->timer,
                     clock_deadline(evloop_now(h->loop), svc->queue_timeout_ms));
    /* a client that gives up while waiting is noticed (its FIN); nothing is read */
    if (evloop_watch(h->loop, &s->client, EPOLLRDHUP) != 0)
        session_finalize(s, SESSION_END_RESOURCES, "epoll_failed", CLOSE_RESET);
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
    int rc = evloop_watch(s->host->loop, &s->client, client);
    return rc != 0 ? rc : evloop_watch(s->host->loop, &s->upstream, upstream);
}

static void session_count_bytes(struct session *s, uint64_t up0, uint64_t down0, uint64_t sp_up0,
                                uint64_t sp_down0)
{
    struct stats *st = s->host->stats;
    if (s->up.bytes == up0 && s->down.bytes == down0)
        return;
    s->t.last_active = evloop_now(s->host->loop);
    STATS_ADD(st, bytes_up, s->up.bytes - up0);
    STATS_ADD(st, bytes_down, s->down.bytes - down0);
    STATS_ADD(st, spliced_up, s->up.spliced - sp_up0);
    STATS_ADD(st, spliced_down, s->down.spliced - sp_down0);
}

/* Runs the directions an event concerns, then decides: go on, finish, or reset. */
static void session_pump(struct session *s, int run_up, int run_down)
{
    const struct pump_env *env = &s->host->pump;
    struct stats *st = s->host->stats;
    uint64_t up0 = s->up.bytes, down0 = s->down.bytes;
    uint64_t sp_up0 = s->up.spliced, sp_down0 = s->down.spliced;
    uint8_t up_mode = s->up.mode, down_mode = s->down.mode;
    int rc = 0;

    assert(s->state == SESSION_ESTABLISHED);
    /* when the other way is already over, the session closes right after this FIN */
    s->up.fin_by_close = (uint8_t)pump_done(&s->down);
    s->down.fin_by_close = (uint8_t)pump_done(&s->up);
    if (run_up)
        rc = pump_run(&s->up, s->client.fd, s->upstream.fd, env);
    if (rc == 0 && run_down)
        rc = pump_run(&s->down, s->upstream.fd, s->client.fd, env);
    /* who sent the first FIN names how a clean session ended */
    if (!s->up.eof_first && !s->down.eof_first)
        s->up.eof_first = s->up.eof, s->down.eof_first = s->down.eof && !s->up.eof;
    session_count_bytes(s, up0, down0, sp_up0, sp_down0);
    if (s->up.mode != up_mode && s->up.mode == PUMP_SPLICE)
        STATS_ADD(st, splice_switches, 1);
    if (s->down.mode != down_mode && s->down.mode == PUMP_SPLICE)
        STATS_ADD(st, splice_switches, 1);
    if (rc == -ENOMEM || rc == -EMFILE || rc == -ENFILE) {
        STATS_ADD(st, alloc_failures, 1);
        session_finalize(s, SESSION_END_RESOURCES, "no_memory", CLOSE_RESET);
    } else if (rc != 0) {
        session_finalize(s, session_end_of_reset(s), "reset", CLOSE_RESET);
    } else if (pump_done(&s->up) && pump_done(&s->down)) {
        session_finalize(s, s->up.eof_first ? SESSION_END_CLIENT_FIN : SESSION_END_SERVER_FIN,
                         "done", CLOSE_FIN);
    } else if (session_update_interest(s) != 0) {
        session_finalize(s, SESSION_END_RESOURCES, "epoll_failed", CLOSE_RESET);
    }
}

static void on_client_event(struct watch *wt, uint32_t events)
{
    struct session *s = container_of(wt, struct session, client);
    if (s->state == SESSION_PROXY_HEADER) {
        session_header_event(s, events);
        return;
    }
    if (s->state == SESSION_QUEUED) {
        session_finalize(s, SESSION_END_CLIENT_FIN, "client_fin",
                         CLOSE_FIN); /* it left before an instance had room */
        return;
    }
    if (s->state != SESSION_ESTABLISHED)
        return;
    /* errors and hang-ups surface through the next read or write of the affected direction */
    int err = (events & (EPOLLERR | EPOLLHUP)) != 0;
    session_pump(s, err || (events & EPOLLIN), err || (events & EPOLLOUT));
}

/* --- connecting --------------------------------------------------------------------------- */

/* The PROXY header for this connection into buf (PROXY_BUILD_MAX bytes): the client's address
 * (the one an accepted header named) and the local address it connected to. Its length. */
static size_t session_proxy_header(const struct session *s, uint8_t *buf)
{
    struct net_addr src, dst;

    session_client(s, &src);
    session_local(s, &dst);
    const struct sockaddr *a = (const struct sockaddr *)&src.sa;
    const struct sockaddr *b = (const struct sockaddr *)&dst.sa;
    return s->lst->service->proxy_protocol == PROXY_SEND_V2 ? proxy_build_v2(buf, a, b)
                                                            : proxy_build_v1((char *)buf, a, b);
}

/* Writes the PROXY header on the fresh upstream socket, before any client byte (the client
 * direction's pump starts after this). A fresh socket's send queue is empty and its buffer is at
 * least SOCK_MIN_SNDBUF (4 KiB and more), so the <= 107 bytes go whole; should the kernel still
 * take fewer, the rest waits in the client direction's buffer, which pump_run flushes before it
 * reads the client (they are then counted in bytes_up). 0, or an errno for a failed socket. */
static int session_send_proxy_header(struct session *s)
{
    uint8_t hdr[PROXY_BUILD_MAX];
    size_t n = session_proxy_header(s, hdr);
    ssize_t sent = send(s->upstream.fd, hdr, n, MSG_NOSIGNAL);

    if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        return errno;
    if (sent < 0)
        sent = 0;
    if ((size_t)sent == n)
        return 0;
    assert(s->up.buf == NULL && s->up.len == 0);
    if ((s->up.buf = pool_buffer_get(s->host->pump.buffers)) == NULL)
        return ENOMEM;
    memcpy(s->up.buf, hdr + sent, n - (size_t)sent);
    s->up.off = 0;
    s->up.len = (uint32_t)(n - (size_t)sent);
    return 0;
}

static void session_established(struct session *s)
{
    struct session_host *h = s->host;

    assert(s->state == SESSION_CONNECTING && s->inst != NULL);
    pump_init(&s->up, &h->pump);
    pump_init(&s->down, &h->pump);
    if (s->lst->service->proxy_protocol != PROXY_SEND_OFF) {
        int err = session_send_proxy_header(s);
        if (err == ENOMEM) {
            STATS_ADD(h->stats, alloc_failures, 1);
            session_finalize(s, SESSION_END_RESOURCES, "no_memory", CLOSE_RESET);
            return;
        }
        if (err != 0) { /* the instance dropped the connection at once: try another */
            session_connect_failed(s, err, 0);
            return;
        }
    }
    s->state = SESSION_ESTABLISHED;
    uint64_t took = clock_us() - s->started_us;
    s->connect_us = took < UINT32_MAX ? (uint32_t)took : UINT32_MAX;
    hist_add(&h->connect_time, session_connect_bounds_us, took);
    tried_release(s);
    instance_use_connected(s->inst, &h->user);
    STATS_ADD(h->stats, sessions_established, 1);
    s->t.last_active = evloop_now(h->loop);
    evloop_timer_remove(h->loop, &s->timer);
    if (s->lst->idle_timeout_ms > 0)
        evloop_timer_add(h->loop, &s->timer,
                         clock_deadline(s->t.last_active, s->lst->idle_timeout_ms));
    /* the client may have sent bytes already (the kernel kept them until now); the upstream's
     * first bytes, if any, are announced by epoll */
    session_pump(s, 1, 0);
}

/* Logs a failed connect (debug) with the session's identity. */
static void session_log_connect_failed(const struct session *s, int err, int timed_out)
{
    struct net_addr client, local;

    if (!log_enabled(s->host->log, LOG_LEVEL_DEBUG))
        return;
    session_client(s, &client);
    session_local(s, &local);
    log_event(s->host->log, LOG_LEVEL_DEBUG, "connect_failed", LOG_STR("listener", s->lst->name),
              LOG_STR("client", client.text), LOG_STR("local", local.text),
              LOG_STR("instance", s->inst->id), LOG_INT("errno", err),
              LOG_STR("why", timed_out ? "timeout" : "error"));
}

static void session_connect_failed(struct session *s, int err, int timed_out)
{
    struct stats *st = s->host->stats;

    STATS_ADD(st, connect_failures, 1);
    if (timed_out) {
        STATS_ADD(st, connect_timeouts, 1);
        atomic_fetch_add_explicit(&s->inst->timeouts, 1, memory_order_relaxed);
    }
    session_log_connect_failed(s, err, timed_out);
    if (instance_mark_tried(s) != 0) {
        session_finalize(s, SESSION_END_RESOURCES, "no_memory", CLOSE_RESET);
        return;
    }
    if (s->attempts > s->lst->retries) {
        session_finalize(s, SESSION_END_CONNECT_FAILED, "upstream_unavailable", CLOSE_FIN);
        return;
    }
    STATS_ADD(st, retries, 1);
    session_connect_next(s);
}

static void on_upstream_event(struct watch *wt, uint32_t events);

/* Opens the upstream socket for this attempt: the watch gets a new generation, so an event
 * still queued for the previous attempt's socket is dropped by the loop. */
static int upstream_socket(struct session *s, const struct net_addr *addr)
{
    watch_close_how(&s->upstream, CLOSE_FIN);
    int fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    set_nodelay(fd);
    watch_set_fd(&s->upstream, fd);
    return 0;
}

/* Out of descriptors for the upstream socket: not the instance's fault. The host stops
 * accepting for a while (closing sessions free descriptors) and the session tries again then;
 * the client just waits, up to connect_timeout in all. */
static void session_wait_for_descriptor(struct session *s, int err)
{
    struct session_host *h = s->host;
    uint64_t now = evloop_now(h->loop);

    instance_drop(s);
    h->on_fd_shortage(h, err);
    if (s->t.fd_wait_since == 0)
        s->t.fd_wait_since = now;
    if (now - s->t.fd_wait_since >= s->lst->connect_timeout_ms) {
        STATS_ADD(h->stats, alloc_failures, 1);
        session_finalize(s, SESSION_END_RESOURCES, "no_descriptors", CLOSE_RESET);
        return;
    }
    evloop_timer_add(h->loop, &s->timer, now + SESSION_FD_WAIT_MS);
}

/* Starts the connect of one attempt to addr. */
static void session_dial(struct session *s, const struct net_addr *addr)
{
    struct session_host *h = s->host;
    int rc = upstream_socket(s, addr);

    if (rc == -EMFILE || rc == -ENFILE) {
        session_wait_for_descriptor(s, -rc);
        return;
    }
    s->attempts++;
    s->t.fd_wait_since = 0;
    STATS_ADD(h->stats, connect_attempts, 1);
    if (rc == 0 && connect(s->upstream.fd, (const struct sockaddr *)&addr->sa, addr->len) != 0)
        rc = -errno;
    if (rc == 0) {
        session_established(s);
    } else if (rc == -EINPROGRESS) {
        evloop_timer_add(h->loop, &s->timer,
                         clock_deadline(evloop_now(h->loop), s->lst->connect_timeout_ms));
        if (evloop_watch(h->loop, &s->upstream, EPOLLOUT) != 0)
            session_finalize(s, SESSION_END_RESOURCES, "epoll_failed", CLOSE_RESET);
    } else if (rc == -ENOBUFS || rc == -ENOMEM) {
        STATS_ADD(h->stats, alloc_failures, 1);
        session_finalize(s, SESSION_END_RESOURCES, "no_memory", CLOSE_RESET);
    } else {
        session_connect_failed(s, -rc, 0);
    }
}

/* Acts on a pick: dial it, queue, or end the session with the reason. */
static void session_picked(struct session *s, int rc, const struct net_addr *addr)
{
    uint64_t now = evloop_now(s->host->loop);

    if (rc == 0) {
        session_dial(s, addr);
    } else if (rc == -ENOMEM) {
        STATS_ADD(s->host->stats, alloc_failures, 1);
        session_finalize(s, SESSION_END_RESOURCES, "no_memory", CLOSE_RESET);
    } else if (rc == -EBUSY) {
        session_enqueue(s);
    } else if (s->n_tried > 0) {
        STATS_ADD(s->host->stats, all_failed, 1); /* every instance failed */
        owner_warn_nothing_left(s->lst->service->owner, "all_failed", now);
        session_finalize(s, SESSION_END_CONNECT_FAILED, "upstream_unavailable", CLOSE_FIN);
    } else {
        STATS_ADD(s->host->stats, no_instance, 1); /* there is none to try */
        owner_warn_nothing_left(s->lst->service->owner, "no_instances", now);
        session_finalize(s, SESSION_END_NO_INSTANCE, "no_instance", CLOSE_FIN);
    }
}

static void session_connect_next(struct session *s)
{
    struct net_addr addr;

    session_picked(s, instance_pick(s, &addr), &addr);
}

size_t session_serve_queue(struct session_host *h, size_t svc)
{
    struct session_queue *q = &h->queues[svc];
    struct net_addr addr;

    if (h->serving)
        return q->len; /* a session of this pass ended: the pass goes on by itself */
    h->serving = 1;
    while (q->len > 0) {
        struct session *s = q->slots[q->head];
        int rc = instance_pick(s, &addr);
        if (rc == -EBUSY)
            break; /* still full: the head keeps its place, its timer and its count */
        queue_remove(s);
        s->state = SESSION_CONNECTING;
        evloop_timer_remove(h->loop, &s->timer);
        session_picked(s, rc, &addr);
    }
    h->serving = 0;
    return q->len;
}

/* An event of the current connect attempt (the loop dropped any of an earlier one): a failed
 * connect always raises EPOLLERR, so a plain EPOLLOUT means connected, no getsockopt(2) needed. */
static void session_connect_check(struct session *s, uint32_t events)
{
    if (events & (EPOLLERR | EPOLLHUP)) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(s->upstream.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        session_connect_failed(s, err != 0 ? err : ECONNREFUSED, 0);
        return;
    }
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
    struct session_host *h = s->host;

    if (s->state == SESSION_PROXY_HEADER) {
        session_refuse(s, LISTENER_REJECT_PROXY_TIMEOUT, "no whole header in time");
        return;
    }
    if (s->state == SESSION_QUEUED) {
        STATS_ADD(h->stats, queue_timeouts, 1);
        session_finalize(s, SESSION_END_QUEUE_TIMEOUT, "queue_timeout", CLOSE_FIN);
        return;
    }
    if (s->state == SESSION_CONNECTING) {
        if (s->upstream.fd < 0)
            session_connect_next(s); /* waited for a descriptor: try again */
        else
            session_connect_failed(s, ETIMEDOUT, 1);
        return;
    }
    assert(s->state == SESSION_ESTABLISHED);
    uint64_t due = clock_deadline(s->t.last_active, s->lst->idle_timeout_ms);
    if (due > evloop_now(h->loop)) {
        evloop_timer_add(h->loop, &s->timer, due); /* traffic since it was armed: look later */
        return;
    }
    STATS_ADD(h->stats, idle_timeouts, 1);
    session_finalize(s, SESSION_END_IDLE_TIMEOUT, "idle_timeout", CLOSE_FIN);
}

/* --- lifecycle ---------------------------------------------------------------------------- */

static void session_log_end(const struct session *s, enum session_end end, const char *reason)
{
    struct net_addr client, local;

    if (!log_enabled(s->host->log, LOG_LEVEL_DEBUG))
        return;
    session_client(s, &client);
    session_local(s, &local);
    log_event(s->host->log, LOG_LEVEL_DEBUG, "session_end", LOG_STR("listener", s->lst->name),
              LOG_STR("client", client.text), LOG_STR("local", local.text),
              LOG_STR("instance", s->inst != NULL ? s->inst->id : ""), LOG_STR("reason", reason),
              LOG_STR("end", session_end_name(end)), LOG_INT("attempts", s->attempts),
              LOG_INT("bytes_up", s->up.bytes), LOG_INT("bytes_down", s->down.bytes),
              LOG_INT("spliced_up", s->up.spliced), LOG_INT("spliced_down", s->down.spliced));
}

static void host_unlink(struct session_host *h, struct session *s)
{
    assert(h->n_live > 0);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        h->live = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->prev = NULL;
    s->next = h->graveyard;
    h->graveyard = s;
    h->n_live--;
}

/* The one way every session ends. Memory is freed after the current epoll batch. */
/* Which side's socket failed, from the direction that reported the error. */
static enum session_end session_end_of_reset(const struct session *s)
{
    if (s->up.failed) /* client -> upstream: reading the client, or writing the instance */
        return s->up.err_dst ? SESSION_END_SERVER_RESET : SESSION_END_CLIENT_RESET;
    return s->down.err_dst ? SESSION_END_CLIENT_RESET : SESSION_END_SERVER_RESET;
}

/* Counters of a session that ends: its listener's, its instance's bytes, its duration. */
static void session_count_end(struct session *s, enum session_end end)
{
    struct session_host *h = s->host;
    struct listener_stats *ls = &h->lstats[s->lst->index];

    STATS_ADD(ls, ended[end], 1);
    atomic_store_explicit(&ls->open, atomic_load_explicit(&ls->open, memory_order_relaxed) - 1,
                          memory_order_relaxed);
    hist_add(&h->duration, session_duration_bounds_us, clock_us() - s->started_us);
    if (s->inst != NULL && (s->up.bytes | s->down.bytes) != 0)
        instance_use_bytes(s->inst, &h->user, s->up.bytes, s->down.bytes);
}

/* The access-log line of a session that ends; dropped (and counted) when its ring is full. */
static void session_log_access(const struct session *s, enum session_end end)
{
    struct net_addr client;
    char line[LOG_LINE_BYTES];

    session_client(s, &client);
    char ip[NET_ADDR_MAX];
    net_addr_ip_text(&client, ip, sizeof(ip));
    /* the instance served, or else the last one dialled (a failed connect names it) */
    const struct instance_state *in = s->inst != NULL  ? s->inst
                                      : s->n_tried > 0 ? s->tried[s->n_tried - 1]
                                                       : NULL;
    const struct log_field f[] = {
        LOG_STR("listener", s->lst->name),
        LOG_STR("client", ip),
        LOG_INT("client_port", s->client_port),
        LOG_STR("instance", in != NULL ? in->id : ""),
        LOG_STR("instance_addr", in != NULL ? in->addr.text : ""),
        LOG_INT("bytes_up", s->up.bytes),
        LOG_INT("bytes_down", s->down.bytes),
        LOG_INT("duration_us", clock_us() - s->started_us),
        LOG_INT("connect_us", s->connect_us),
        LOG_INT("retries", s->attempts > 1 ? s->attempts - 1 : 0),
        LOG_STR("reason", session_end_name(end)),
    };
    size_t n = log_format(s->host->log, LOG_LEVEL_INFO, "access", f, sizeof(f) / sizeof(f[0]), line,
                          sizeof(line));
    if (n > 0)
        (void)logring_put(s->host->access, line, n);
}

static void session_finalize(struct session *s, enum session_end end, const char *reason,
                             enum close_how how)
{
    struct session_host *h = s->host;

    if (s->state == SESSION_CLOSED)
        return;
    if (s->state == SESSION_QUEUED)
        queue_remove(s);
    session_log_end(s, end, reason);
    session_count_end(s, end);
    if (s->lst->log_access && h->access != NULL)
        session_log_access(s, end);
    if (how == CLOSE_RESET)
        STATS_ADD(h->stats, resets, 1);
    STATS_ADD(h->stats, sessions_closed, 1);
    s->state = SESSION_CLOSED;
    evloop_timer_remove(h->loop, &s->timer);
    watch_close_how(&s->client, how);
    watch_close_how(&s->upstream, how);
    pump_release(&s->up, &h->pump);
    pump_release(&s->down, &h->pump);
    int had_instance = s->inst != NULL;
    instance_drop(s);
    tried_release(s);
    host_unlink(h, s);
    admit_release(s->lst, s->client_slot); /* into the table of the version it came in on */
    s->client_slot = CLIENT_LIMIT_NONE;
    conn_budget_give(h->budget, h->user.shard);
    /* a slot of this service freed up: the oldest waiting client of this host may have it */
    if (had_instance && h->queues[s->lst->service->index].len > 0)
        session_serve_queue(h, s->lst->service->index);
}

/* max_connection_lifetime plus up to 10 % jitter (from the client's port: steady per session),
 * so sessions of one burst do not all end in the same second. */
static uint64_t lifetime_of(const struct session *s)
{
    uint64_t life = s->lst->service->lifetime_ms;
    return life + (life / 10 > 0 ? (uint64_t)s->client_port * 40503u % (life / 10 + 1) : 0);
}

void session_sweep(struct session_host *h, uint64_t now_ms, uint64_t now_us)
{
    struct session *s, *next;

    for (s = h->live; s != NULL; s = next) {
        const struct service_rt *svc = s->lst->service;
        next = s->next; /* finalizing moves s to the graveyard */
        if (s->state != SESSION_ESTABLISHED)
            continue;
        uint64_t removed = atomic_load_explicit(&s->inst->removed_ms, memory_order_relaxed);
        if (removed != 0 && svc->drain_timeout_ms != 0 &&
            now_ms - removed >= svc->drain_timeout_ms) {
            STATS_ADD(h->stats, drained, 1);
            session_finalize(s, SESSION_END_DRAINED, "drained", CLOSE_FIN);
        } else if (svc->lifetime_ms != 0 && now_us - s->started_us >= lifetime_of(s) * 1000) {
            STATS_ADD(h->stats, lifetime_closed, 1);
            session_finalize(s, SESSION_END_LIFETIME, "lifetime", CLOSE_FIN);
        }
    }
}

void session_abort(struct session *s)
{
    if (s->state == SESSION_PROXY_HEADER) /* not admitted: nothing counted to end */
        session_refuse(s, LISTENER_REJECT_COUNT, "shutdown");
    else
        session_finalize(s, SESSION_END_SHUTDOWN, "shutdown", CLOSE_RESET);
}

void session_free_closed(struct session_host *h)
{
    while (h->graveyard != NULL) {
        struct session *s = h->graveyard;
        assert(s->state == SESSION_CLOSED && s->inst == NULL && s->tried == NULL);
        h->graveyard = s->next;
        listener_rt_drop(s->lst);
        free(s);
    }
}

/* The local address of a connection on a wildcard listener: one getsockname(2), paid only
 * there (a listener bound to one address already knows it). */
static void session_record_local(struct session *s, int fd)
{
    struct session_local *l = (struct session_local *)(s + 1);
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        ss.ss_family = AF_UNSPEC;
    compact_addr((const struct sockaddr *)&ss, l->ip, &l->port, &l->family);
}

/* --- PROXY protocol header (accept_proxy) ----------------------------------------------- */

/* Ends a session that was never admitted: the client is reset, the refusal counted under why
 * (LISTENER_REJECT_COUNT: not counted, sluice stops), and nothing of a session's end is logged
 * or counted, as for a refusal at accept. */
static void session_refuse(struct session *s, enum listener_reject why, const char *detail)
{
    struct session_host *h = s->host;

    assert(s->state == SESSION_PROXY_HEADER);
    if (why != LISTENER_REJECT_COUNT) {
        STATS_ADD(&h->lstats[s->lst->index], rejected[why], 1);
        if (log_enabled(h->log, LOG_LEVEL_DEBUG)) {
            struct net_addr peer;
            session_client(s, &peer);
            log_event(h->log, LOG_LEVEL_DEBUG, "connection_rejected",
                      LOG_STR("listener", s->lst->name), LOG_STR("client", peer.text),
                      LOG_STR("reason", listener_reject_name(why)), LOG_STR("detail", detail));
        }
    }
    s->state = SESSION_CLOSED;
    evloop_timer_remove(h->loop, &s->timer);
    watch_close_how(&s->client, CLOSE_RESET);
    host_unlink(h, s);
    conn_budget_give(h->budget, h->user.shard);
}

/* The client's address becomes the one the header carries (v1 UNKNOWN, v2 LOCAL and address
 * families without IP keep the peer's). */
static void session_take_header_addr(struct session *s, const struct proxy_header *ph)
{
    if (ph->local)
        return;
    memset(s->client_ip, 0, sizeof(s->client_ip));
    memcpy(s->client_ip, ph->src_ip, ph->family == AF_INET6 ? 16 : 4);
    s->client_port = ph->src_port;
    s->client_family = (uint8_t)ph->family;
}

/* Counted as open on its listener from here: the admission passed. Connecting comes next. */
static void session_admitted(struct session *s)
{
    struct session_host *h = s->host;

    STATS_ADD(&h->lstats[s->lst->index], accepted, 1);
    STATS_ADD(&h->lstats[s->lst->index], open, 1);
    s->state = SESSION_CONNECTING;
    session_connect_next(s);
}

/* Waits for at least need bytes before the next EPOLLIN (a header split over segments): the
 * peeked bytes stay queued, so a level-triggered watch would wake up again at once. */
static int session_wait_for(struct session *s, size_t need)
{
    int lowat = (int)need;

    if (setsockopt(s->client.fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)) != 0)
        return -errno;
    s->t.header_lowat = need;
    return 0;
}

/* Consumes exactly the header (the payload stays queued for the pump, copy or splice) and
 * undoes a raised SO_RCVLOWAT. 0, or -1 when the socket does not give back what it showed. */
static int session_consume_header(struct session *s, size_t len)
{
    uint8_t sink[PROXY_HEADER_MAX];
    int one = 1;

    assert(len <= sizeof(sink));
    /* only this thread reads the socket and it showed len bytes: recv gives them all */
    if (recv(s->client.fd, sink, len, 0) != (ssize_t)len)
        return -1;
    if (s->t.header_lowat != 0 &&
        setsockopt(s->client.fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one)) != 0)
        return -1;
    s->t.header_lowat = 0;
    return 0;
}

/* A whole valid header: take its address, stop watching the client until the upstream is
 * connected, then the admission decides. */
static void session_header_done(struct session *s, const struct proxy_header *ph)
{
    struct session_host *h = s->host;
    struct net_addr client;

    if (session_consume_header(s, ph->len) != 0) {
        session_refuse(s, LISTENER_REJECT_PROXY_INVALID, "header read failed");
        return;
    }
    evloop_timer_remove(h->loop, &s->timer);
    if (evloop_watch(h->loop, &s->client, 0) != 0) {
        session_refuse(s, LISTENER_REJECT_COUNT, "epoll_failed");
        return;
    }
    session_take_header_addr(s, ph);
    session_client(s, &client);
    enum listener_reject why =
        h->admit(h, s->lst, (const struct sockaddr *)&client.sa, &s->client_slot);
    if (why != LISTENER_REJECT_COUNT) {
        session_refuse(s, why, "admission");
        return;
    }
    session_admitted(s);
}

/* The client's socket is readable (or closed) while the header is awaited: peek, parse, and
 * act once the bytes decide. */
static void session_header_event(struct session *s, uint32_t events)
{
    uint8_t buf[PROXY_HEADER_MAX];
    struct proxy_header ph;
    ssize_t n = recv(s->client.fd, buf, sizeof(buf), MSG_PEEK);

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        session_refuse(s, LISTENER_REJECT_PROXY_INVALID, "closed before a whole header");
        return;
    }
    enum proxy_parse_status st = proxy_parse(buf, (size_t)n, &ph);
    if (st == PROXY_PARSE_DONE) {
        session_header_done(s, &ph);
    } else if (st == PROXY_PARSE_ERROR) {
        session_refuse(s, LISTENER_REJECT_PROXY_INVALID, ph.reason);
    } else if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        session_refuse(s, LISTENER_REJECT_PROXY_INVALID, "closed before a whole header");
    } else if (ph.need != s->t.header_lowat && session_wait_for(s, ph.need) != 0) {
        session_refuse(s, LISTENER_REJECT_PROXY_INVALID, "cannot wait for the rest");
    }
}

/* accept_proxy: nothing happens before the header, which has proxy_header_timeout to come. */
static void session_await_header(struct session *s)
{
    struct session_host *h = s->host;

    s->state = SESSION_PROXY_HEADER;
    s->t.header_lowat = 0;
    evloop_timer_add(h->loop, &s->timer,
                     clock_deadline(evloop_now(h->loop), s->lst->proxy_header_timeout_ms));
    if (evloop_watch(h->loop, &s->client, EPOLLIN | EPOLLRDHUP) != 0)
        session_refuse(s, LISTENER_REJECT_COUNT, "epoll_failed");
}

int session_start(struct session_host *h, struct listener_rt *lst, int fd,
                  const struct sockaddr *client, socklen_t client_len, uint32_t client_slot)
{
    size_t size = sizeof(struct session) + (lst->wildcard ? sizeof(struct session_local) : 0);
    struct session *s = calloc(1, size);

    (void)client_len;
    if (s == NULL)
        return -ENOMEM;
    s->host = h;
    listener_rt_hold(lst); /* the settings it started with stay until it is freed */
    s->lst = lst;
    s->client_slot = client_slot;
    watch_init(&s->client, fd, on_client_event);
    watch_init(&s->upstream, -1, on_upstream_event);
    s->up.pipe.rd = s->up.pipe.wr = s->down.pipe.rd = s->down.pipe.wr = -1;
    s->started_us = clock_us();
    compact_addr(client, s->client_ip, &s->client_port, &s->client_family);
    if (lst->wildcard)
        session_record_local(s, fd);
    s->next = h->live;
    if (h->live != NULL)
        h->live->prev = s;
    h->live = s;
    h->n_live++;
    /* TCP_NODELAY comes from the listening socket: accepted sockets inherit it */
    if (lst->accept_proxy)
        session_await_header(s);
    else
        session_admitted(s);
    return 0;
}
