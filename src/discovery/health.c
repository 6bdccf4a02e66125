/* The health thread: probes, rise/fall verdicts, owner ticks. */
#include "health.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "consul.h"
#include "owner.h"
#include "snapshot.h"

#define POLL_MAX_MS 1000        /* the loop wakes at least this often for owner ticks */
#define URL_MAX     512         /* http://[v6]:port/path */
#define BODY_MAX    (64 * 1024) /* bytes of a check's answer read before it is cut */
#define PASS_MIN_MS 10          /* probes due within this start together: one scan per tick */
#define EVENTS_MAX  256         /* epoll events taken per wait */

/*
 * How it works:
 *  - Each service with a check has a probe per instance of its current set, kept sorted by id;
 *    when the owner publishes a new set the probes are matched by id, so a probe's rise/fall
 *    state survives the swap, and a new instance is probed at once.
 *  - A probe is idle (next_ms says when) or in flight: a non-blocking TCP connect in the
 *    thread's epoll set, or an HTTP GET in the multi handle, driven by libcurl's socket
 *    interface (its sockets in an epoll set of their own, nested in the thread's). Each event
 *    costs only the transfer it belongs to: curl_multi_perform and curl_multi_poll walk every
 *    transfer on each call and fell behind at 5,000 HTTP checks a second.
 *  - Probes are started and TCP probes timed out by a scan over the probes at most once per
 *    PASS_MIN_MS, so the scan costs N x 100 visits a second at worst, whatever the event rate.
 *    Every probe is bounded by check_timeout.
 *  - Results go through rise/fall; verdict changes of one pass are handed to the owner in one
 *    call, which publishes only when an instance's eligibility changed.
 *  - Until its first result an instance counts as healthy: failing closed would refuse every
 *    connection of a fresh start until the first probes end, and the first probe runs at once,
 *    so the window is at most check_timeout (and passive health covers it). The first result
 *    decides alone; after that rise successes or fall failures in a row change the verdict.
 *  - The probe after the first comes at a random point of one interval: instances that
 *    appeared together (a start, a Consul answer) are not probed in one burst ever after,
 *    which jitter alone would take many intervals to undo.
 */

struct hc_service;

/* One instance's probe. */
struct probe {
    struct hc_service *svc;       /* its service */
    char id[SNAPSHOT_ID_MAX];     /* the instance */
    struct instance_state *st;    /* its state (held): the last result is shown there */
    int code;                     /* HTTP status of the last answer, 0 for TCP */
    struct net_addr addr;         /* what is probed (check_port applied) */
    uint64_t next_ms;             /* when the next probe starts (idle) */
    uint64_t started_ms;          /* when the probe in flight started */
    int fd;                       /* TCP probe in flight, or -1 */
    CURL *easy;                   /* HTTP handle (kept between probes), or NULL */
    struct curl_slist *headers;   /* its Host header, or NULL */
    int in_flight;                /* a probe runs */
    int taken;                    /* moved to the next probe list by service_sync */
    char listed[NET_ADDR_MAX];    /* the instance's own address, to match it across sets */
    uint32_t ok_in_row;           /* successes in a row */
    uint32_t fail_in_row;         /* failures in a row */
    enum instance_health verdict; /* UNKNOWN until the first result */
    char why[160];                /* the last failure */
};

/* One service with a check. */
struct hc_service {
    struct health *h;          /* the thread */
    struct health_target t;    /* what to check */
    struct probe **probes;     /* sorted by id, owned */
    size_t n;                  /* entries in probes */
    uint64_t version;          /* set version the probes follow */
    struct owner_verdict *out; /* verdict changes of this pass (n room) */
    struct probe **out_probe;  /* the probe of each of them */
    size_t n_out;              /* entries in out */
};

struct health {
    struct logger *log;                         /* events */
    struct health_target *targets;              /* every service, for ticks */
    size_t n_targets;                           /* entries in targets */
    size_t cap_targets;                         /* room in targets */
    struct hc_service **svcs;                   /* services with a check (probes point here) */
    size_t n_svcs;                              /* entries in svcs */
    pthread_mutex_t add_lock;                   /* guards pending */
    struct health_target *pending;              /* added by health_add, not yet the thread's */
    size_t n_pending, cap_pending;              /* entries and room in pending */
    CURLM *multi;                               /* HTTP probes */
    int ep;                                     /* TCP probes, ep_curl, wake_fd */
    int ep_curl;                                /* libcurl's sockets (curl_socket) */
    int wake_fd;                                /* eventfd: stop or a new set (health_wake) */
    uint64_t curl_due;                          /* libcurl's timer (curl_timer), or never */
    uint64_t pass_due;                          /* the next scan over the probes is due */
    uint64_t last_pass;                         /* when the last one ran */
    int woken;                                  /* health_wake: a pass at once, no tick wait */
    uint64_t rng;                               /* jitter */
    pthread_t thread;                           /* the thread */
    int started;                                /* it runs */
    int curl_held;                              /* counted in libcurl's users (consul_curl_use) */
    atomic_int stop;                            /* health_stop was called */
    atomic_ullong checks, failures, downs, ups; /* health_stats */
};

/* --- verdicts ------------------------------------------------------------------------------ */

/* A verdict changed: it goes to the owner with the others of this pass (flush_verdicts). */
static void verdict_change(struct probe *p, enum instance_health v)
{
    struct hc_service *s = p->svc;

    p->verdict = v;
    s->out_probe[s->n_out] = p;
    s->out[s->n_out++] = (struct owner_verdict){.id = p->id, .health = v};
    atomic_fetch_add(v == INSTANCE_HEALTH_DOWN ? &s->h->downs : &s->h->ups, 1);
}

/* Logs a verdict once the owner applied it: a client that connects after reading the line
 * meets the new set. */
static void verdict_log(const struct hc_service *s, const struct probe *p)
{
    if (p->verdict == INSTANCE_HEALTH_DOWN)
        log_event(s->h->log, LOG_LEVEL_WARN, "health_down", LOG_STR("service", s->t.name),
                  LOG_STR("instance", p->id), LOG_STR("check", health_check_name(s->t.check->kind)),
                  LOG_INT("failures", p->fail_in_row), LOG_STR("error", p->why));
    else
        log_event(s->h->log, LOG_LEVEL_INFO, "health_up", LOG_STR("service", s->t.name),
                  LOG_STR("instance", p->id), LOG_INT("successes", p->ok_in_row));
}

/* One probe's result, through rise and fall; schedules the next one with jitter. */
static void probe_result(struct probe *p, int ok, uint64_t now)
{
    const struct health_conf *c = p->svc->t.check;
    struct health *h = p->svc->h;
    uint64_t jitter = c->jitter_ms > 0 ? rng_next(&h->rng) % (2 * c->jitter_ms + 1) : 0;

    atomic_fetch_add(&h->checks, 1);
    atomic_store_explicit(&p->st->last_check, ok ? 1 : 2, memory_order_relaxed);
    atomic_store_explicit(&p->st->last_check_code, p->code, memory_order_relaxed);
    p->in_flight = 0;
    if (p->verdict == INSTANCE_HEALTH_UNKNOWN) /* the first result: a random phase from now on */
        p->next_ms = now + 1 + rng_next(&h->rng) % c->interval_ms;
    else
        p->next_ms = now + c->interval_ms + jitter - c->jitter_ms;
    if (p->next_ms < h->pass_due) /* a result outside a pass: the scan must come for it */
        h->pass_due = p->next_ms;
    if (ok) {
        p->ok_in_row++;
        p->fail_in_row = 0;
    } else {
        atomic_fetch_add(&h->failures, 1);
        p->fail_in_row++;
        p->ok_in_row = 0;
    }
    if (p->verdict == INSTANCE_HEALTH_UNKNOWN)
        verdict_change(p, ok ? INSTANCE_HEALTH_UP : INSTANCE_HEALTH_DOWN);
    else if (p->verdict == INSTANCE_HEALTH_UP && p->fail_in_row >= c->fall)
        verdict_change(p, INSTANCE_HEALTH_DOWN);
    else if (p->verdict == INSTANCE_HEALTH_DOWN && p->ok_in_row >= c->rise)
        verdict_change(p, INSTANCE_HEALTH_UP);
}

/* --- TCP probes ---------------------------------------------------------------------------- */

/* Closes with a reset: a health check leaves no TIME_WAIT behind on either side. */
static void tcp_close(struct probe *p)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};

    if (p->fd < 0)
        return;
    (void)setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(p->fd);
    p->fd = -1;
}

static void tcp_start(struct probe *p, uint64_t now)
{
    int fd = socket(p->addr.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    p->started_ms = now;
    p->in_flight = 1;
    if (fd < 0) {
        snprintf(p->why, sizeof(p->why), "socket: %s", strerror(errno));
        probe_result(p, 0, now);
        return;
    }
    p->fd = fd;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = p};
    if (connect(fd, (const struct sockaddr *)&p->addr.sa, p->addr.len) == 0) {
        tcp_close(p);
        probe_result(p, 1, now);
    } else if (errno != EINPROGRESS) {
        snprintf(p->why, sizeof(p->why), "connect: %s", strerror(errno));
        tcp_close(p);
        probe_result(p, 0, now);
    } else if (epoll_ctl(p->svc->h->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        snprintf(p->why, sizeof(p->why), "epoll: %s", strerror(errno));
        tcp_close(p);
        probe_result(p, 0, now);
    }
}

/* The connect of a TCP probe ended (writable or error) or timed out. */
static void tcp_finish(struct probe *p, int timed_out, uint64_t now)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (timed_out) {
        snprintf(p->why, sizeof(p->why), "no connect within %llu ms",
                 (unsigned long long)p->svc->t.check->timeout_ms);
        err = ETIMEDOUT;
    } else if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        snprintf(p->why, sizeof(p->why), "connect: %s", strerror(err != 0 ? err : errno));
        err = err != 0 ? err : errno;
    }
    tcp_close(p);
    probe_result(p, err == 0, now);
}

/* --- HTTP probes --------------------------------------------------------------------------- */

static size_t http_discard(char *data, size_t size, size_t n, void *user)
{
    struct probe *p = user;
    (void)data;
    /* a check needs the status, not a large body: stop reading past BODY_MAX */
    return p->in_flight && size * n <= BODY_MAX ? size * n : 0;
}

/* The URL and options of p's HTTP check; set once, the handle is reused. 0 or -ENOMEM. */
static int http_prepare(struct probe *p)
{
    const struct health_conf *c = p->svc->t.check;
    char url[URL_MAX], host[URL_MAX];

    p->easy = curl_easy_init();
    if (p->easy == NULL)
        return -ENOMEM;
    snprintf(url, sizeof(url), "http://%s%s", p->addr.text, c->http_path);
    CURL *e = p->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    consul_curl_direct(e);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L); /* each check proves a fresh connect works */
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    /* no name cache: libcurl 7.88 walks the whole cache before each transfer to prune it, and
     * one entry per instance made that the cost of a check at 5,000 instances */
    curl_easy_setopt(e, CURLOPT_DNS_CACHE_TIMEOUT, 0L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_discard);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, p);
    curl_easy_setopt(e, CURLOPT_PRIVATE, p);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "sluice-health/" SLUICE_VERSION);
    if (c->http_host != NULL) {
        /* libcurl copies option strings but not a header list: it lives with the probe */
        snprintf(host, sizeof(host), "Host: %s", c->http_host);
        p->headers = curl_slist_append(NULL, host);
        if (p->headers == NULL)
            return -ENOMEM;
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, p->headers);
    }
    return 0;
}

static void http_start(struct probe *p, uint64_t now)
{
    struct health *h = p->svc->h;

    p->started_ms = now;
    p->in_flight = 1;
    if ((p->easy == NULL && http_prepare(p) != 0) ||
        curl_multi_add_handle(h->multi, p->easy) != CURLM_OK) {
        snprintf(p->why, sizeof(p->why), "cannot start the check: out of memory");
        probe_result(p, 0, now);
    }
}

static void http_finish(struct probe *p, CURLcode result, uint64_t now)
{
    const struct health_conf *c = p->svc->t.check;
    long status = 0;

    curl_multi_remove_handle(p->svc->h->multi, p->easy);
    curl_easy_getinfo(p->easy, CURLINFO_RESPONSE_CODE, &status);
    p->code = (int)status;
    int ok = result == CURLE_OK && health_status_expected(c, status);
    if (result != CURLE_OK)
        snprintf(p->why, sizeof(p->why), "%s", curl_easy_strerror(result));
    else if (!ok)
        snprintf(p->why, sizeof(p->why), "HTTP %ld", status);
    probe_result(p, ok, now);
}

/* --- probes and the set --------------------------------------------------------------------- */

static void probe_cancel(struct probe *p)
{
    if (p->in_flight && p->easy != NULL)
        curl_multi_remove_handle(p->svc->h->multi, p->easy);
    tcp_close(p);
    p->in_flight = 0;
}

static void probe_free(struct probe *p)
{
    if (p == NULL)
        return;
    probe_cancel(p);
    if (p->easy != NULL)
        curl_easy_cleanup(p->easy);
    curl_slist_free_all(p->headers);
    if (p->st != NULL)
        instance_state_release(p->st);
    free(p);
}

static int probe_order(const void *a, const void *b)
{
    return strcmp((*(struct probe *const *)a)->id, (*(struct probe *const *)b)->id);
}

/* The probe for instance i of set: the existing one with its id, or a new one due at once. */
static struct probe *probe_for(struct hc_service *s, const struct instance *inst, uint64_t now)
{
    struct probe key, *keyp = &key, **found;

    snprintf(key.id, sizeof(key.id), "%s", inst->state->id);
    found = s->n > 0 ? bsearch(&keyp, s->probes, s->n, sizeof(*s->probes), probe_order) : NULL;
    if (found != NULL && !(*found)->taken && strcmp((*found)->listed, inst->addr.text) == 0) {
        struct probe *p = *found;
        p->taken = 1;               /* the old list frees only what was not taken */
        if (p->st != inst->state) { /* the instance left and came back: a new state */
            instance_state_release(p->st);
            p->st = inst->state;
            instance_state_hold(p->st);
        }
        return p;
    }
    struct probe *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->svc = s;
    p->fd = -1;
    snprintf(p->id, sizeof(p->id), "%s", inst->state->id);
    p->st = inst->state;
    instance_state_hold(p->st);
    p->addr = inst->addr;
    snprintf(p->listed, sizeof(p->listed), "%s", inst->addr.text);
    if (s->t.check->port != 0) {
        struct net_addr a = inst->addr;
        if (a.sa.ss_family == AF_INET6)
            ((struct sockaddr_in6 *)&a.sa)->sin6_port = htons((uint16_t)s->t.check->port);
        else
            ((struct sockaddr_in *)&a.sa)->sin_port = htons((uint16_t)s->t.check->port);
        net_addr_from_sockaddr(&p->addr, (const struct sockaddr *)&a.sa, a.len);
    }
    p->next_ms = now;
    return p;
}

/* Follows the owner's current set: one probe per instance, matched by id. -ENOMEM keeps the
 * old probes. */
static int service_sync(struct hc_service *s, uint64_t now)
{
    struct probe **next = NULL, **old = s->probes;
    size_t n = 0, n_old = s->n;
    int rc = 0;

    snapshot_read_lock();
    const struct instance_set *set = owner_current(s->t.owner);
    if (set->version == s->version) {
        snapshot_read_unlock();
        return 0;
    }
    next = calloc(set->n + 1, sizeof(*next));
    struct owner_verdict *out = calloc(set->n + 1, sizeof(*out));
    struct probe **out_probe = calloc(set->n + 1, sizeof(*out_probe));
    for (size_t i = 0; next != NULL && out != NULL && i < set->n; i++) {
        if ((next[n] = probe_for(s, &set->inst[i], now)) == NULL)
            break;
        n++;
    }
    uint64_t version = set->version;
    int complete = next != NULL && out != NULL && out_probe != NULL && n == set->n;
    snapshot_read_unlock();
    if (!complete) {
        for (size_t i = 0; next != NULL && i < n; i++) {
            if (next[i]->taken)
                next[i]->taken = 0; /* still in the old list */
            else
                probe_free(next[i]);
        }
        free(next);
        free(out);
        free(out_probe);
        return -ENOMEM;
    }
    qsort(next, n, sizeof(*next), probe_order);
    for (size_t i = 0; i < n_old; i++)
        if (!old[i]->taken)
            probe_free(old[i]);
    for (size_t i = 0; i < n; i++)
        next[i]->taken = 0;
    free(old);
    free(s->out);
    free(s->out_probe);
    s->probes = next;
    s->n = n;
    s->out = out;
    s->out_probe = out_probe;
    s->version = version;
    return rc;
}

/* --- the loop ------------------------------------------------------------------------------ */

/* Starts due probes, times out late ones; returns when the service next needs attention. */
static uint64_t service_pass(struct hc_service *s, uint64_t now)
{
    uint64_t next = UINT64_MAX;

    for (size_t i = 0; i < s->n; i++) {
        struct probe *p = s->probes[i];
        uint64_t deadline = clock_deadline(p->started_ms, s->t.check->timeout_ms);
        if (p->in_flight && p->fd >= 0 && now >= deadline)
            tcp_finish(p, 1, now); /* HTTP probes time out in libcurl */
        if (!p->in_flight && now >= p->next_ms)
            (s->t.check->kind == HEALTH_CHECK_TCP ? tcp_start : http_start)(p, now);
        uint64_t due =
            p->in_flight ? clock_deadline(p->started_ms, s->t.check->timeout_ms) : p->next_ms;
        next = due < next ? due : next;
    }
    return next;
}

static void collect_http(struct health *h, uint64_t now)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        struct probe *p = NULL;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&p);
        if (p != NULL && p->in_flight)
            http_finish(p, msg->data.result, now);
    }
}

/* Hands each service's verdict changes of this pass to its owner, in one call. */
static void flush_verdicts(struct health *h)
{
    for (size_t k = 0; k < h->n_svcs; k++) {
        struct hc_service *s = h->svcs[k];
        if (s->n_out > 0)
            (void)owner_set_health(s->t.owner, s->out, s->n_out);
        for (size_t i = 0; i < s->n_out; i++)
            verdict_log(s, s->out_probe[i]);
        s->n_out = 0;
    }
}

static void targets_adopt(struct health *h);

/* Owner ticks, new sets, due probes; sets when the next pass is due. */
static void health_pass(struct health *h, uint64_t now)
{
    uint64_t next = now + POLL_MAX_MS;

    targets_adopt(h);
    for (size_t i = 0; i < h->n_targets; i++) {
        uint64_t due = owner_tick(h->targets[i].owner, now);
        next = due < next ? due : next;
    }
    for (size_t k = 0; k < h->n_svcs; k++) {
        (void)service_sync(h->svcs[k], now);
        uint64_t due = service_pass(h->svcs[k], now);
        next = due < next ? due : next;
    }
    h->pass_due = next;
    h->last_pass = now;
    h->woken = 0;
}

/* libcurl says which events of socket fd it waits for (CURLMOPT_SOCKETFUNCTION). */
static int curl_socket(CURL *easy, curl_socket_t fd, int what, void *arg, void *socketp)
{
    struct health *h = arg;
    struct epoll_event ev = {.events = 0, .data.fd = fd};
    (void)easy;
    (void)socketp;

    if (what == CURL_POLL_REMOVE) {
        (void)epoll_ctl(h->ep_curl, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
    if (epoll_ctl(h->ep_curl, EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
        (void)epoll_ctl(h->ep_curl, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

/* libcurl wants to be called in timeout_ms, or not at all for -1 (CURLMOPT_TIMERFUNCTION). */
static int curl_timer(CURLM *multi, long timeout_ms, void *arg)
{
    struct health *h = arg;
    (void)multi;

    h->curl_due = timeout_ms < 0 ? UINT64_MAX : clock_ms() + (uint64_t)timeout_ms;
    return 0;
}

/* The libcurl sockets that are ready, each handed to libcurl on its own. */
static void curl_sockets_ready(struct health *h)
{
    struct epoll_event evs[EVENTS_MAX];
    int running, n = epoll_wait(h->ep_curl, evs, EVENTS_MAX, 0);

    for (int i = 0; i < n; i++) {
        int mask = ((evs[i].events & EPOLLIN) ? CURL_CSELECT_IN : 0) |
                   ((evs[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                   ((evs[i].events & (EPOLLERR | EPOLLHUP)) ? CURL_CSELECT_ERR : 0);
        curl_multi_socket_action(h->multi, evs[i].data.fd, mask, &running);
    }
}

/* One wait of the thread's epoll set and what it brought: connects ended, libcurl's sockets
 * ready, a wake-up (which asks for a pass at once). */
static void health_wait(struct health *h, int timeout)
{
    struct epoll_event evs[EVENTS_MAX];
    int n = epoll_wait(h->ep, evs, EVENTS_MAX, timeout);
    uint64_t now = clock_ms(), count;

    for (int i = 0; i < n; i++) {
        struct probe *p = evs[i].data.ptr;
        if (p == NULL) {
            (void)!read(h->wake_fd, &count, sizeof(count)); /* resets it; empty is fine too */
            h->woken = 1; /* an ejection or a new set should not wait for the tick */
        } else if ((void *)p == (void *)h) {
            curl_sockets_ready(h);
        } else if (p->in_flight && p->fd >= 0) {
            tcp_finish(p, 0, now);
        }
    }
}

/* When the next pass runs: at once when woken, else when due but not sooner than PASS_MIN_MS
 * after the last one. */
static uint64_t pass_at(const struct health *h)
{
    uint64_t soonest = h->last_pass + PASS_MIN_MS;

    if (h->woken)
        return 0;
    return h->pass_due > soonest ? h->pass_due : soonest;
}

static void *health_main(void *arg)
{
    struct health *h = arg;
    int running;

    snapshot_reader_register();
    while (!atomic_load(&h->stop)) {
        uint64_t now = clock_ms();
        if (now >= pass_at(h))
            health_pass(h, now);
        if (now >= h->curl_due) {
            h->curl_due = UINT64_MAX; /* libcurl sets it again if it must */
            curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        collect_http(h, clock_ms());
        flush_verdicts(h);
        uint64_t due = pass_at(h) < h->curl_due ? pass_at(h) : h->curl_due;
        now = clock_ms();
        health_wait(h, due > now ? (int)(due - now) : 0);
        collect_http(h, clock_ms());
        flush_verdicts(h);
    }
    snapshot_reader_unregister();
    return NULL;
}

/* --- lifecycle ----------------------------------------------------------------------------- */

/* t becomes one of the thread's targets (and a checked service when it has a check). 0 or
 * -ENOMEM (nothing changed). */
static int target_adopt(struct health *h, const struct health_target *t)
{
    int checked = t->check != NULL && t->check->kind != HEALTH_CHECK_NONE;

    if (h->n_targets == h->cap_targets) {
        size_t cap = h->cap_targets > 0 ? h->cap_targets * 2 : 8;
        struct health_target *grown = realloc(h->targets, cap * sizeof(*grown));
        struct hc_service **svcs = realloc(h->svcs, cap * sizeof(*svcs));
        if (grown != NULL) /* kept even when svcs failed: realloc freed the old block */
            h->targets = grown;
        if (svcs != NULL)
            h->svcs = svcs;
        if (grown == NULL || svcs == NULL)
            return -ENOMEM;
        h->cap_targets = cap;
    }
    if (checked) {
        struct hc_service *s = calloc(1, sizeof(*s));
        if (s == NULL)
            return -ENOMEM;
        *s = (struct hc_service){.h = h, .t = *t};
        h->svcs[h->n_svcs++] = s;
    }
    h->targets[h->n_targets++] = *t;
    return 0;
}

/* The targets health_add handed over become the thread's (one that finds no room stays
 * pending until the next pass). */
static void targets_adopt(struct health *h)
{
    pthread_mutex_lock(&h->add_lock);
    size_t done = 0;
    while (done < h->n_pending && target_adopt(h, &h->pending[done]) == 0)
        done++;
    if (done > 0 && done < h->n_pending) /* pending is NULL until the first health_add */
        memmove(h->pending, h->pending + done, (h->n_pending - done) * sizeof(*h->pending));
    h->n_pending -= done;
    pthread_mutex_unlock(&h->add_lock);
}

/* The epoll sets, the wake-up eventfd and libcurl's socket interface. 0 or -errno. */
static int health_events(struct health *h)
{
    struct epoll_event curl_ev = {.events = EPOLLIN, .data.ptr = h};
    struct epoll_event wake_ev = {.events = EPOLLIN, .data.ptr = NULL};

    h->curl_due = UINT64_MAX;
    h->ep = epoll_create1(EPOLL_CLOEXEC);
    h->ep_curl = epoll_create1(EPOLL_CLOEXEC);
    h->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (h->ep < 0 || h->ep_curl < 0 || h->wake_fd < 0 ||
        epoll_ctl(h->ep, EPOLL_CTL_ADD, h->ep_curl, &curl_ev) != 0 ||
        epoll_ctl(h->ep, EPOLL_CTL_ADD, h->wake_fd, &wake_ev) != 0)
        return -errno;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, curl_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, curl_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return 0;
}

int health_create(const struct health_target *targets, size_t n, struct logger *log,
                  struct health **out)
{
    struct health *h = calloc(1, sizeof(*h));

    *out = NULL;
    if (h == NULL)
        return -ENOMEM;
    h->log = log;
    h->rng = rng_seed();
    h->ep = h->ep_curl = h->wake_fd = -1;
    pthread_mutex_init(&h->add_lock, NULL);
    h->curl_held = consul_curl_use() == 0;
    h->multi = h->curl_held ? curl_multi_init() : NULL;
    if (h->multi == NULL || health_events(h) != 0) {
        health_destroy(h);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (target_adopt(h, &targets[i]) != 0) {
            health_destroy(h);
            return -ENOMEM;
        }
        owner_set_waker(targets[i].owner, health_wake, h);
    }
    *out = h;
    return 0;
}

int health_add(struct health *h, const struct health_target *t)
{
    int rc = 0;

    /* the waker is set here, before the caller shares the owner: workers read it unlocked */
    owner_set_waker(t->owner, health_wake, h);
    pthread_mutex_lock(&h->add_lock);
    if (h->n_pending == h->cap_pending) {
        size_t cap = h->cap_pending > 0 ? h->cap_pending * 2 : 8;
        struct health_target *grown = realloc(h->pending, cap * sizeof(*grown));
        if (grown != NULL) {
            h->pending = grown;
            h->cap_pending = cap;
        }
    }
    if (h->n_pending < h->cap_pending)
        h->pending[h->n_pending++] = *t;
    else
        rc = -ENOMEM;
    pthread_mutex_unlock(&h->add_lock);
    if (rc == 0)
        health_wake(h);
    return rc;
}

int health_start(struct health *h)
{
    int rc = pthread_create(&h->thread, NULL, health_main, h);

    if (rc != 0)
        return -rc;
    pthread_setname_np(h->thread, "sluice-health");
    h->started = 1;
    log_event(h->log, LOG_LEVEL_INFO, "health_started", LOG_INT("services", h->n_targets),
              LOG_INT("checked", h->n_svcs));
    return 0;
}

void health_wake(void *arg)
{
    struct health *h = arg;
    uint64_t one = 1;

    /* the counter only grows: a failed write means a wake-up is already pending */
    (void)!write(h->wake_fd, &one, sizeof(one));
}

void health_stop(struct health *h)
{
    if (h == NULL || !h->started)
        return;
    atomic_store(&h->stop, 1);
    health_wake(h);
    pthread_join(h->thread, NULL);
    h->started = 0;
}

void health_destroy(struct health *h)
{
    if (h == NULL)
        return;
    health_stop(h);
    for (size_t i = 0; i < h->n_targets; i++)
        owner_set_waker(h->targets[i].owner, NULL, NULL);
    for (size_t i = 0; i < h->n_pending; i++)
        owner_set_waker(h->pending[i].owner, NULL, NULL);
    for (size_t k = 0; k < h->n_svcs; k++) {
        for (size_t i = 0; i < h->svcs[k]->n; i++)
            probe_free(h->svcs[k]->probes[i]);
        free(h->svcs[k]->probes);
        free(h->svcs[k]->out);
        free(h->svcs[k]->out_probe);
        free(h->svcs[k]);
    }
    if (h->multi != NULL)
        curl_multi_cleanup(h->multi);
    if (h->curl_held)
        consul_curl_unuse();
    int fds[] = {h->ep, h->ep_curl, h->wake_fd};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(h->svcs);
    free(h->targets);
    free(h->pending);
    pthread_mutex_destroy(&h->add_lock);
    free(h);
}

void health_stats_get(const struct health *h, struct health_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (h == NULL)
        return;
    out->checks = atomic_load(&h->checks);
    out->failures = atomic_load(&h->failures);
    out->downs = atomic_load(&h->downs);
    out->ups = atomic_load(&h->ups);
}
