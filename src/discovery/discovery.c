/* Discovery thread: blocking Consul health queries (libcurl multi) -> published snapshots. */
#include "discovery.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "consul.h"
#include "consul_parse.h"
#include "log.h"
#include "owner.h"

#define POLL_MAX_MS 1000 /* the loop wakes at least this often to check deadlines */

/*
 * How it works:
 *  - Every watch is idle (next_ms says when it may start) or in flight (deadline_ms says when the
 *    watchdog gives up on it). The loop starts idle watches that are due, taking a token from
 *    the watch's bucket first ([consul] min_query_interval between two starts), runs libcurl,
 * handles finished transfers, aborts overdue ones, and sleeps in curl_multi_poll until the next due
 * time; discovery_stop wakes it.
 *  - A good answer advances the index (discovery_index_next) and resets the backoff. Its
 *    instance set is published unless it equals the current one.
 *  - A failure keeps the current set (last known good), marks the watch failing and retries after
 *    discovery_backoff_ms with a full (non-blocking) read. The discovery is degraded while any
 *    watch is failing.
 */

/* State and counters of one discovery, readable from any thread. Counters are atomics; the rest
 * is under lock. */
struct discovery_state_ {
    pthread_mutex_t lock; /* guards the fields below the atomics */
    atomic_int state;     /* enum discovery_state */
    atomic_ullong requests, errors, publishes, unchanged, watchdog, degraded, acl_denied,
        rate_limited;                  /* discovery_status counters */
    unsigned watches, synced, failing; /* see discovery_status */
    unsigned failing_unsynced;         /* failing watches that never had an answer: nothing to
                                        * serve, no last known good */
    uint64_t degraded_since_ms;        /* clock when the degraded period began */
    struct discovery_totals totals;    /* for metrics */
    unsigned long long failed_calls;   /* failures during the current degraded period */
    char last_error[256];              /* last failure */
};

/* One watched service. */
struct watch {
    struct discovery *d;                 /* the discovery it belongs to */
    const char *name;                    /* the service's NAME, for logs */
    const struct consul_watch_conf *cfg; /* what to ask Consul */
    struct owner *owner;                 /* where its instance lists go */
    atomic_int *synced_flag;             /* the target's synced flag, or NULL */
    const char *dc;                      /* datacenter to ask; NULL = the agent's */
    uint64_t index;                      /* index to send; 0 = non-blocking full read */
    struct discovery_bucket bucket;      /* min_query_interval between query starts */
    unsigned failures;                   /* failures in a row */
    uint64_t next_ms;                    /* earliest start of the next query (idle) */
    uint64_t started_ms;                 /* start of the query in flight */
    uint64_t deadline_ms;                /* watchdog deadline of the query in flight */
    int in_flight;                       /* call is in the multi handle */
    struct consul_call call;             /* query in flight */
    struct consul_instance *current;     /* last published set, sorted by id, owned */
    size_t n_current;                    /* entries in current */
    int synced;                          /* a good answer has been published */
    int failing;                         /* the last query failed */
    int acl_empty_warned;                /* warned about an empty list under ACL deny */
    uint64_t contact_ms;      /* clock of the last answer of any kind; 0 = none (g lock) */
    uint64_t good_ms;         /* clock of the last good answer; 0 = none (g lock) */
    int known_leader;         /* X-Consul-KnownLeader last seen; -1 = none (g lock) */
    uint64_t last_contact_ms; /* X-Consul-LastContact last seen; UINT64_MAX = none (g lock) */
    uint64_t status_index;    /* what status shows of index (g lock) */
    int status_synced;        /* ... of synced (g lock) */
    int status_failing;       /* ... of failing (g lock) */
    size_t status_instances;  /* ... of n_current (g lock) */
    char status_error[256];   /* ... of error (g lock) */
    size_t invalid_logged;    /* invalid entries count last logged */
    char error[256];          /* last failure logged for this watch */
    uint64_t rng;             /* xorshift64 state for backoff jitter: the watch's own, so a
                               * first query run by the thread that adds it races nothing */
};

struct discovery {
    const struct consul_conf *ccfg; /* [consul] */
    struct consul_client *client;   /* resolved settings */
    CURLM *multi;                   /* all transfers */
    struct watch **watches;         /* one per consul service: the thread's (status: g lock) */
    size_t n;                       /* entries in watches */
    size_t cap;                     /* room in watches */
    struct watch **pending;         /* added by discovery_add, not yet the thread's (g lock) */
    size_t n_pending;               /* entries in pending */
    size_t cap_pending;             /* room in pending */
    pthread_t thread;               /* the discovery thread */
    int started;                    /* thread is running (or joinable) */
    atomic_int stop;                /* discovery_stop was called */
    struct logger *log;             /* where events go */
    struct discovery_state_ g;      /* state and counters for other threads */
};

static const char *const state_names[] = {"off", "starting", "ok", "degraded"};

/* --- pure rules --------------------------------------------------------------------------- */

uint64_t discovery_index_next(uint64_t sent, uint64_t received)
{
    if (received < sent) {
        return 0; /* snapshot restore, agent restart: start over with a full read */
    }
    return received < 1 ? 1 : received; /* 0 would make every query return at once */
}

uint64_t discovery_bucket_take(struct discovery_bucket *b, uint64_t now_ms_, uint64_t period_ms,
                               unsigned burst)
{
    uint64_t cap = period_ms * burst;

    if (!b->primed) {
        b->credit_ms = cap;
        b->last_ms = now_ms_;
        b->primed = 1;
    }
    if (now_ms_ > b->last_ms) {
        uint64_t gained = now_ms_ - b->last_ms;
        b->credit_ms = gained >= cap - b->credit_ms ? cap : b->credit_ms + gained;
        b->last_ms = now_ms_;
    }
    if (b->credit_ms >= period_ms) {
        b->credit_ms -= period_ms;
        return 0;
    }
    return period_ms - b->credit_ms;
}

uint64_t discovery_http_timeout_ms(uint64_t wait_ms)
{
    return wait_ms + wait_ms / 16 + DISCOVERY_SLACK_MS;
}

uint64_t discovery_watchdog_ms(uint64_t wait_ms)
{
    return discovery_http_timeout_ms(wait_ms) + DISCOVERY_WATCHDOG_GRACE;
}

/* --- shared state -------------------------------------------------------------------------- */

const char *discovery_state_name(enum discovery_state state)
{
    return (unsigned)state < sizeof(state_names) / sizeof(state_names[0]) ? state_names[state]
                                                                          : "unknown";
}

size_t discovery_watches(struct discovery *d, struct discovery_watch_status *out, size_t cap)
{
    uint64_t now = clock_ms();

    if (d == NULL)
        return 0;
    pthread_mutex_lock(&d->g.lock);
    size_t total = d->n + d->n_pending;
    for (size_t i = 0; i < total && i < cap; i++) {
        const struct watch *w = i < d->n ? d->watches[i] : d->pending[i - d->n];
        out[i] = (struct discovery_watch_status){
            .index = w->status_index,
            .synced = w->status_synced,
            .failing = w->status_failing,
            .instances = w->status_instances,
            .contact_ago_ms = w->contact_ms != 0 ? now - w->contact_ms : UINT64_MAX,
            .stale_ms = w->good_ms != 0 ? now - w->good_ms : UINT64_MAX,
            .known_leader = w->known_leader,
            .last_contact_ms = w->last_contact_ms,
        };
        snprintf(out[i].service, sizeof(out[i].service), "%s", w->name);
        snprintf(out[i].consul_service, sizeof(out[i].consul_service), "%s", w->cfg->service);
        snprintf(out[i].last_error, sizeof(out[i].last_error), "%s", w->status_error);
    }
    pthread_mutex_unlock(&d->g.lock);
    return total;
}

void discovery_totals_get(struct discovery *d, struct discovery_totals *out)
{
    memset(out, 0, sizeof(*out));
    if (d == NULL)
        return;
    pthread_mutex_lock(&d->g.lock);
    *out = d->g.totals;
    pthread_mutex_unlock(&d->g.lock);
}

enum discovery_state discovery_state_get(const struct discovery *d)
{
    return d != NULL ? (enum discovery_state)atomic_load(&d->g.state) : DISCOVERY_OFF;
}

void discovery_status_get(struct discovery *d, struct discovery_status *out)
{
    memset(out, 0, sizeof(*out));
    if (d == NULL) {
        return; /* DISCOVERY_OFF */
    }
    struct discovery_state_ *g = &d->g;
    pthread_mutex_lock(&g->lock);
    out->state = (enum discovery_state)atomic_load(&g->state);
    out->watches = g->watches;
    out->synced = g->synced;
    out->failing = g->failing;
    if (out->state == DISCOVERY_DEGRADED) {
        out->degraded_ms = clock_ms() - g->degraded_since_ms;
    }
    snprintf(out->last_error, sizeof(out->last_error), "%s", g->last_error);
    pthread_mutex_unlock(&g->lock);
    out->requests = atomic_load(&g->requests);
    out->errors = atomic_load(&g->errors);
    out->publishes = atomic_load(&g->publishes);
    out->unchanged = atomic_load(&g->unchanged);
    out->watchdog = atomic_load(&g->watchdog);
    out->degraded = atomic_load(&g->degraded);
    out->acl_denied = atomic_load(&g->acl_denied);
    out->rate_limited = atomic_load(&g->rate_limited);
}

/* What the proxy does while degraded: an agent unreachable at start leaves nothing to serve,
 * and saying "last known good" then would send the operator looking in the wrong place. */
static const char *degraded_action(const struct discovery_state_ *g)
{
    if (g->failing_unsynced == 0)
        return "serving the last known good instances";
    if (g->failing_unsynced == g->failing)
        return "no instances are known yet: connections to these services fail until Consul "
               "answers";
    return "serving the last known good instances where there are some; the services never "
           "synced have none yet";
}

/* Recomputes the state under g->lock and logs the transitions in and out of degraded. */
static void state_update_locked(struct discovery *d)
{
    struct discovery_state_ *g = &d->g;
    enum discovery_state old = (enum discovery_state)atomic_load(&g->state);
    enum discovery_state now = g->failing > 0           ? DISCOVERY_DEGRADED
                               : g->synced < g->watches ? DISCOVERY_STARTING
                                                        : DISCOVERY_OK;

    if (now == DISCOVERY_DEGRADED && old != DISCOVERY_DEGRADED) {
        g->degraded_since_ms = clock_ms();
        g->failed_calls = 0;
        atomic_fetch_add(&g->degraded, 1);
        log_event(d->log, LOG_LEVEL_WARN, "discovery_degraded", LOG_STR("error", g->last_error),
                  LOG_INT("failing", g->failing), LOG_INT("watches", g->watches),
                  LOG_INT("without_instances", g->failing_unsynced),
                  LOG_STR("action", degraded_action(g)));
    } else if (old == DISCOVERY_DEGRADED && now != DISCOVERY_DEGRADED) {
        log_event(d->log, LOG_LEVEL_INFO, "discovery_recovered",
                  LOG_INT("degraded_ms", clock_ms() - g->degraded_since_ms),
                  LOG_INT("failed_queries", g->failed_calls));
    }
    atomic_store(&g->state, (int)now);
}

/* A watch's good/failing flags changed: adjust the totals. */
static void state_watch(struct watch *w, int synced_before, int failing_before, const char *err)
{
    struct discovery_state_ *g = &w->d->g;
    pthread_mutex_lock(&g->lock);
    g->synced += (unsigned)(w->synced - synced_before);
    g->failing = g->failing + (unsigned)w->failing - (unsigned)failing_before;
    g->failing_unsynced = g->failing_unsynced + (unsigned)(w->failing && !w->synced) -
                          (unsigned)(failing_before && !synced_before);
    if (err != NULL) {
        snprintf(g->last_error, sizeof(g->last_error), "%s", err);
    }
    state_update_locked(w->d); /* entering the degraded state resets failed_calls */
    g->failed_calls += err != NULL;
    pthread_mutex_unlock(&g->lock);
}

/* --- answers ------------------------------------------------------------------------------ */

/* Publishes r's instances for w; the set becomes w->current (ownership moves). */
static int watch_publish(struct watch *w, struct consul_parse_result *r, uint64_t parse_us)
{
    struct discovery_state_ *g = &w->d->g;
    struct owner_member *members = calloc(r->n + 1, sizeof(*members));
    uint64_t t0 = clock_us();
    int rc;

    if (members == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < r->n; i++) {
        members[i] = (struct owner_member){.id = r->inst[i].id,
                                           .addr = r->inst[i].addr,
                                           .weight = r->inst[i].weight,
                                           .warning = r->inst[i].health == CONSUL_HEALTH_WARNING};
    }
    rc = owner_set_members(w->owner, members, r->n);
    free(members);
    if (rc < 0) {
        return rc;
    }
    atomic_fetch_add(rc > 0 ? &g->publishes : &g->unchanged, 1);
    log_event(w->d->log, LOG_LEVEL_INFO, "discovery_published", LOG_STR("service", w->name),
              LOG_STR("consul_service", w->cfg->service), LOG_INT("instances", r->n),
              LOG_INT("passing", r->by_health[CONSUL_HEALTH_PASSING]),
              LOG_INT("warning", r->by_health[CONSUL_HEALTH_WARNING]),
              LOG_INT("critical", r->by_health[CONSUL_HEALTH_CRITICAL]),
              LOG_INT("maintenance", r->by_health[CONSUL_HEALTH_MAINTENANCE]),
              LOG_INT("index", w->call.index), LOG_INT("parse_us", parse_us),
              LOG_INT("publish_us", clock_us() - t0));
    free(w->current);
    w->current = r->inst;
    w->n_current = r->n;
    r->inst = NULL;
    return 0;
}

/* Warnings an answer deserves: entries that cannot be used, an empty list under ACL deny. */
static void watch_warn(struct watch *w, const struct consul_parse_result *r)
{
    if (r->invalid != w->invalid_logged && r->invalid > 0) {
        log_event(w->d->log, LOG_LEVEL_WARN, "discovery_invalid_entries",
                  LOG_STR("service", w->name), LOG_INT("invalid", r->invalid),
                  LOG_STR("first", r->invalid_why));
    }
    w->invalid_logged = r->invalid;
    if (r->entries == 0 && w->call.acl_deny && !w->acl_empty_warned) {
        log_event(w->d->log, LOG_LEVEL_WARN, "discovery_empty_acl", LOG_STR("service", w->name),
                  LOG_STR("consul_service", w->cfg->service),
                  LOG_STR("hint", "Consul lists no instance and its ACL default policy is deny: "
                                  "the token may lack service:read on this service or node:read "
                                  "on its nodes (denied entries are filtered out silently)"));
    }
    w->acl_empty_warned = r->entries == 0 && w->call.acl_deny;
}

/* A 2xx answer: parse, publish when changed. 0, or -errno with the reason in why. */
static int watch_answer(struct watch *w, char *why, size_t why_len)
{
    struct discovery_state_ *g = &w->d->g;
    struct consul_filter f = {
        .mode = w->cfg->health, .tags = w->cfg->tags.items, .n_tags = w->cfg->tags.n};
    struct consul_parse_result r;
    uint64_t t0 = clock_us();
    int rc = consul_parse_health(w->call.body != NULL ? w->call.body : "", w->call.len, &f, &r, why,
                                 why_len);

    if (rc != 0) {
        return rc;
    }
    watch_warn(w, &r);
    /* most blocking queries end with the same list (the wait ran out): skip the owner then */
    if (w->synced && consul_instances_equal(r.inst, r.n, w->current, w->n_current)) {
        atomic_fetch_add(&g->unchanged, 1);
    } else if ((rc = watch_publish(w, &r, clock_us() - t0)) != 0) {
        snprintf(why, why_len, "publishing the instance set failed: out of memory");
    }
    consul_parse_result_free(&r);
    return rc;
}

/* The reason a 403 happened, naming what the token needs. */
static void watch_denied(struct watch *w, const char *what, char *out, size_t len)
{
    struct discovery_state_ *g = &w->d->g;
    int unknown;

    consul_call_acl_denied(&w->call, &unknown);
    if (unknown) {
        snprintf(out, len,
                 "%s: the ACL token is unknown to Consul; discovery needs a token "
                 "with service:read on \"%s\" and node:read",
                 what, w->cfg->service);
    } else {
        snprintf(out, len,
                 "%s: permission denied; discovery needs service:read on \"%s\" and "
                 "node:read%s",
                 what, w->cfg->service,
                 consul_client_has_token(w->d->client) ? "" : " (no token is configured)");
    }
    atomic_fetch_add(&g->acl_denied, 1);
}

/* Keeps the last known good set and schedules a retry with backoff. */
static void watch_fail(struct watch *w, enum consul_outcome outcome, const char *why, uint64_t now)
{
    struct discovery_state_ *g = &w->d->g;
    int failing_before = w->failing;

    atomic_fetch_add(&g->errors, 1);
    w->failures++;
    w->failing = 1;
    /* The retry reads in full, without an index: it answers at once, so recovery shows without
     * waiting for a blocking query to time out, and an agent that restarted (its index went
     * back) is read afresh. */
    w->index = 0;
    w->next_ms = now + backoff_ms(w->failures, w->d->ccfg->retry_min_ms, w->d->ccfg->retry_max_ms,
                                  rng_next(&w->rng));
    if (strcmp(why, w->error) != 0) {
        /* Unreachable agents are reported once per outage by the discovery state; errors that
         * the agent answered are worth one line per watch and per distinct error. */
        log_event(w->d->log, outcome == CONSUL_UNREACHABLE ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR,
                  "discovery_error", LOG_STR("service", w->name),
                  LOG_STR("consul_service", w->cfg->service), LOG_STR("error", why),
                  LOG_INT("retry_ms", w->next_ms - now));
        snprintf(w->error, sizeof(w->error), "%s", why);
    }
    state_watch(w, w->synced, failing_before, why);
}

/* A good answer was handled: advance the index, reset the backoff, clear the failing flag. */
static void watch_ok(struct watch *w, uint64_t now)
{
    int synced_before = w->synced, failing_before = w->failing;
    uint64_t received = w->call.has_index ? w->call.index : 0;
    uint64_t next = discovery_index_next(w->index, received);

    if (next == 0) {
        pthread_mutex_lock(&w->d->g.lock);
        w->d->g.totals.index_resets++;
        pthread_mutex_unlock(&w->d->g.lock);
        log_event(w->d->log, LOG_LEVEL_INFO, "discovery_index_reset", LOG_STR("service", w->name),
                  LOG_INT("sent", w->index), LOG_INT("received", received),
                  LOG_STR("action", "full resync"));
    }
    w->index = next;
    w->failures = 0;
    w->failing = 0;
    w->synced = 1;
    if (w->synced_flag != NULL)
        atomic_store(w->synced_flag, 1);
    w->error[0] = '\0';
    w->next_ms = now;
    if (failing_before) {
        log_event(w->d->log, LOG_LEVEL_INFO, "discovery_watch_recovered",
                  LOG_STR("service", w->name), LOG_INT("instances", w->n_current));
    }
    if (synced_before != w->synced || failing_before != w->failing) {
        state_watch(w, synced_before, failing_before, NULL);
    }
}

/* The watchdog (or libcurl's own timeout) gave up on the query in flight. */
static void watch_overdue(struct watch *w, uint64_t now, const char *by)
{
    struct discovery_state_ *g = &w->d->g;
    char why[256];

    atomic_fetch_add(&g->watchdog, 1);
    snprintf(why, sizeof(why), "no answer from %s within %llu ms (%s)",
             consul_client_address(w->d->client), (unsigned long long)(now - w->started_ms), by);
    log_event(w->d->log, LOG_LEVEL_WARN, "discovery_watchdog", LOG_STR("service", w->name),
              LOG_INT("after_ms", now - w->started_ms), LOG_STR("by", by),
              LOG_STR("action", "query aborted and restarted"));
    watch_fail(w, CONSUL_UNREACHABLE, why, now);
}

/* Bounds of the request-duration histogram. */
const uint64_t discovery_duration_bounds_ms[DISCOVERY_HIST_BUCKETS] = {
    5, 25, 100, 250, 1000, 5000, 15000, 30000, 60000, 120000};

/* Totals of one finished request: its duration, and what kind of error it was (too_stale: the
 * answer came but was older than max_stale); the leader headers of an answer are kept, over
 * max_stale too, so that metrics show why. */
static void watch_account(struct watch *w, enum consul_outcome outcome, int parsed, int too_stale,
                          uint64_t now)
{
    struct discovery_totals *t = &w->d->g.totals;
    uint64_t took = now - w->started_ms;

    pthread_mutex_lock(&w->d->g.lock);
    for (size_t i = 0; i < DISCOVERY_HIST_BUCKETS; i++)
        t->duration_le[i] += took <= discovery_duration_bounds_ms[i];
    t->duration_count++;
    t->duration_sum_ms += took;
    t->unreachable += outcome == CONSUL_UNREACHABLE;
    t->rejected += outcome == CONSUL_REJECTED;
    t->invalid += outcome == CONSUL_OK && !parsed && !too_stale;
    t->too_stale += too_stale != 0;
    if (outcome != CONSUL_UNREACHABLE)
        w->contact_ms = now;
    if (outcome != CONSUL_UNREACHABLE && w->call.known_leader >= 0)
        w->known_leader = w->call.known_leader;
    if (outcome != CONSUL_UNREACHABLE && w->call.has_last_contact)
        w->last_contact_ms = w->call.last_contact_ms;
    if (outcome == CONSUL_OK && parsed)
        w->good_ms = now;
    pthread_mutex_unlock(&w->d->g.lock);
}

/* Copies what status shows of w (after each answer). */
static void watch_publish_status(struct watch *w)
{
    pthread_mutex_lock(&w->d->g.lock);
    w->status_index = w->index;
    w->status_synced = w->synced;
    w->status_failing = w->failing;
    w->status_instances = w->n_current;
    snprintf(w->status_error, sizeof(w->status_error), "%s", w->error);
    pthread_mutex_unlock(&w->d->g.lock);
}

/* 1 when a stale read's answer comes from a server that heard from the leader longer ago than
 * [consul] max_stale, with the reason in why. The reason holds no figure, so that one outage is
 * logged once (watch_fail logs each distinct reason); the figure is in the metrics. */
static int watch_too_stale(const struct watch *w, char *why, size_t why_len)
{
    const struct consul_conf *c = w->d->ccfg;

    if (!c->stale || c->max_stale_ms == 0 || !w->call.has_last_contact ||
        w->call.last_contact_ms <= c->max_stale_ms)
        return 0;
    snprintf(why, why_len,
             "stale answer from %s: the Consul server that answered last heard from the leader "
             "longer ago than max_stale (%llu ms)%s",
             consul_client_address(w->d->client), (unsigned long long)c->max_stale_ms,
             w->call.known_leader == 0 ? " and knows no leader" : "");
    return 1;
}

/* A query ended (on the thread, or on the caller of discovery_add): publish, fail, account. */
static void watch_finished(struct watch *w, enum consul_outcome outcome, CURLcode result,
                           uint64_t now)
{
    char why[640], what[400];

    w->in_flight = 0;
    int too_stale = outcome == CONSUL_OK && watch_too_stale(w, why, sizeof(why));
    int parsed = outcome == CONSUL_OK && !too_stale && watch_answer(w, why, sizeof(why)) == 0;
    watch_account(w, outcome, parsed, too_stale, now);
    if (parsed) {
        watch_ok(w, now);
    } else if (outcome == CONSUL_OK) {
        watch_fail(w, CONSUL_REJECTED, why, now);
    } else if (result == CURLE_OPERATION_TIMEDOUT) {
        watch_overdue(w, now, "http timeout");
    } else {
        consul_call_describe(&w->call, what, sizeof(what));
        if (w->call.status == 403) {
            watch_denied(w, what, why, sizeof(why));
        } else {
            snprintf(why, sizeof(why), "%s %s: %s", consul_call_failure_phrase(&w->call),
                     consul_client_address(w->d->client), what);
        }
        watch_fail(w, outcome, why, now);
    }
    watch_publish_status(w);
    consul_call_cleanup(&w->call);
}

/* A transfer of the multi handle ended. */
static void watch_done(struct watch *w, CURLcode result, uint64_t now)
{
    enum consul_outcome outcome = consul_call_done(&w->call, result);

    curl_multi_remove_handle(w->d->multi, w->call.easy);
    watch_finished(w, outcome, result, now);
}

/* Prepares the query of w (its index decides whether it blocks), bounded by timeout_ms (0: the
 * blocking wait's own bound). 0, or the watch failed and retries later. */
static int watch_prepare(struct watch *w, uint64_t now, uint64_t timeout_ms)
{
    struct discovery *d = w->d;
    uint64_t wait_ms = w->index > 0 ? d->ccfg->wait_ms : 0;
    char path[CONSUL_QUERY_PATH_MAX];

    if (consul_health_path(path, sizeof(path), w->cfg->service, w->dc, w->cfg->tags.items,
                           w->cfg->tags.n, d->ccfg->stale, w->index, wait_ms) != 0) {
        watch_fail(w, CONSUL_REJECTED, "the query is too long (too many or too long tags)", now);
        return -ENAMETOOLONG;
    }
    /* a blocking query is bounded by its wait; an immediate one by [consul] timeout */
    uint64_t bound =
        wait_ms > 0 ? discovery_http_timeout_ms(wait_ms) : consul_client_timeout_ms(d->client);
    if (consul_call_init(&w->call, d->client, "GET", path, NULL,
                         timeout_ms > 0 && timeout_ms < bound ? timeout_ms : bound) != 0) {
        consul_call_cleanup(&w->call);
        watch_fail(w, CONSUL_UNREACHABLE, "cannot start a query: out of memory", now);
        return -ENOMEM;
    }
    atomic_fetch_add(&d->g.requests, 1);
    w->call.data = w;
    w->started_ms = now;
    w->deadline_ms = clock_deadline(now, bound + DISCOVERY_WATCHDOG_GRACE);
    return 0;
}

/* Starts the query of an idle watch whose time has come, unless its bucket is dry. */
static void watch_start(struct watch *w, uint64_t now)
{
    struct discovery *d = w->d;
    uint64_t delay =
        discovery_bucket_take(&w->bucket, now, w->d->ccfg->min_query_interval_ms, DISCOVERY_BURST);

    if (delay > 0) {
        atomic_fetch_add(&d->g.rate_limited, 1);
        w->next_ms = clock_deadline(now, delay);
        return;
    }
    if (watch_prepare(w, now, 0) != 0)
        return;
    if (curl_multi_add_handle(d->multi, w->call.easy) != CURLM_OK) {
        consul_call_cleanup(&w->call);
        watch_fail(w, CONSUL_UNREACHABLE, "cannot start a query: out of memory", now);
        return;
    }
    w->in_flight = 1;
}

/* Starts a due watch or aborts an overdue one; returns when it next needs attention. */
static uint64_t watch_tick(struct watch *w, uint64_t now)
{
    if (w->in_flight && now >= w->deadline_ms) {
        curl_multi_remove_handle(w->d->multi, w->call.easy);
        w->in_flight = 0;
        watch_overdue(w, now, "watchdog");
        consul_call_cleanup(&w->call);
    }
    if (!w->in_flight && now >= w->next_ms) {
        watch_start(w, now);
    }
    return w->in_flight ? w->deadline_ms : w->next_ms;
}

/* Hands every finished transfer to its watch. */
static void discovery_collect(struct discovery *d)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(d->multi, &left)) != NULL) {
        struct consul_call *call = NULL;
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&call);
        if (call != NULL && call->data != NULL) {
            watch_done(call->data, msg->data.result, clock_ms());
        }
    }
}

/* Room for n watches in *arr (cap entries now). 0 or -ENOMEM. */
static int watches_reserve(struct watch ***arr, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 0;
    size_t want = *cap > 0 ? *cap * 2 : 8;
    want = want < n ? n : want;
    struct watch **grown = realloc(*arr, want * sizeof(**arr));
    if (grown == NULL)
        return -ENOMEM;
    *arr = grown;
    *cap = want;
    return 0;
}

/* The watches discovery_add handed over become the thread's. */
static void discovery_adopt(struct discovery *d)
{
    pthread_mutex_lock(&d->g.lock);
    if (d->n_pending > 0 && watches_reserve(&d->watches, &d->cap, d->n + d->n_pending) == 0) {
        memcpy(d->watches + d->n, d->pending, d->n_pending * sizeof(*d->pending));
        d->n += d->n_pending;
        d->n_pending = 0;
    }
    pthread_mutex_unlock(&d->g.lock);
}

static void *discovery_main(void *arg)
{
    struct discovery *d = arg;
    int running;

    while (!atomic_load(&d->stop)) {
        discovery_adopt(d);
        uint64_t now = clock_ms(), next = now + POLL_MAX_MS;
        for (size_t i = 0; i < d->n; i++) {
            uint64_t due = watch_tick(d->watches[i], now);
            next = due < next ? due : next;
        }
        curl_multi_perform(d->multi, &running);
        discovery_collect(d);
        now = clock_ms();
        for (size_t i = 0; i < d->n; i++) { /* answers handled above may be due again now */
            const struct watch *w = d->watches[i];
            uint64_t due = w->in_flight ? w->deadline_ms : w->next_ms;
            next = due < next ? due : next;
        }
        if (next > now && !atomic_load(&d->stop)) {
            curl_multi_poll(d->multi, NULL, 0, (int)(next - now), NULL);
        }
    }
    return NULL;
}

/* --- lifecycle ---------------------------------------------------------------------------- */

static struct watch *watch_new(struct discovery *d, const struct discovery_target *t)
{
    struct watch *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    w->d = d;
    w->name = t->name;
    w->cfg = t->watch;
    w->owner = t->owner;
    w->synced_flag = t->synced;
    w->dc = t->watch->datacenter[0] != '\0' ? t->watch->datacenter : d->ccfg->datacenter;
    w->rng = rng_seed() ^ (uint64_t)(uintptr_t)w;
    w->rng = w->rng != 0 ? w->rng : 1;
    w->known_leader = -1;
    w->last_contact_ms = UINT64_MAX;
    return w;
}

static void watch_free(struct watch *w)
{
    if (w == NULL)
        return;
    consul_call_cleanup(&w->call);
    free(w->current);
    free(w);
}

/* Counts w among the watches (the state goes back to starting until it has an answer). */
static void watch_count(struct watch *w)
{
    pthread_mutex_lock(&w->d->g.lock);
    w->d->g.watches++;
    state_update_locked(w->d);
    pthread_mutex_unlock(&w->d->g.lock);
}

int discovery_create(const struct consul_conf *ccfg, const struct discovery_target *targets,
                     size_t n, struct logger *log, struct discovery **out, char *err,
                     size_t err_len)
{
    struct discovery *d = calloc(1, sizeof(*d));
    int rc = 0;

    *out = NULL;
    if (d == NULL) {
        return -ENOMEM;
    }
    d->ccfg = ccfg;
    d->log = log;
    pthread_mutex_init(&d->g.lock, NULL);
    if (watches_reserve(&d->watches, &d->cap, n) != 0)
        rc = -ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if ((d->watches[d->n] = watch_new(d, &targets[i])) == NULL)
            rc = -ENOMEM;
        else
            d->n++;
    }
    if (rc == 0) {
        rc = consul_client_create(ccfg, &d->client, err, err_len);
    }
    if (rc == 0 && (d->multi = curl_multi_init()) == NULL) {
        rc = -ENOMEM;
    }
    if (rc != 0) {
        discovery_destroy(d);
        return rc;
    }
    d->g.watches = (unsigned)d->n;
    *out = d;
    return 0;
}

int discovery_add(struct discovery *d, const struct discovery_target *t, uint64_t sync_ms,
                  char *err, size_t err_len)
{
    struct watch *w = watch_new(d, t);
    int rc = 0;

    if (w == NULL)
        return -ENOMEM;
    watch_count(w);
    if (sync_ms > 0) {
        /* the first query on the caller's thread: it knows at once what Consul said */
        uint64_t now = clock_ms();
        (void)discovery_bucket_take(&w->bucket, now, w->d->ccfg->min_query_interval_ms,
                                    DISCOVERY_BURST);
        rc = watch_prepare(w, now, sync_ms);
        if (rc == 0) {
            consul_call_cancel_on(&w->call, &d->stop);
            enum consul_outcome outcome = consul_call_perform(&w->call);
            watch_finished(w, outcome, w->call.result, clock_ms());
            rc = w->synced ? 0 : outcome == CONSUL_UNREACHABLE ? -EHOSTUNREACH : -EPROTO;
        }
        snprintf(err, err_len, "%s", w->synced ? "" : w->error);
    }
    pthread_mutex_lock(&d->g.lock);
    int room = watches_reserve(&d->pending, &d->cap_pending, d->n_pending + 1) == 0;
    if (room)
        d->pending[d->n_pending++] = w;
    pthread_mutex_unlock(&d->g.lock);
    if (!room) {
        watch_free(w);
        return -ENOMEM;
    }
    if (d->multi != NULL)
        curl_multi_wakeup(d->multi);
    return rc;
}

int discovery_start(struct discovery *d)
{
    struct discovery_state_ *g = &d->g;
    int rc;

    pthread_mutex_lock(&g->lock);
    g->synced = g->failing = g->failing_unsynced = 0;
    g->last_error[0] = '\0';
    state_update_locked(d);
    pthread_mutex_unlock(&g->lock);
    rc = pthread_create(&d->thread, NULL, discovery_main, d);
    if (rc != 0) {
        atomic_store(&g->state, DISCOVERY_OFF);
        return -rc;
    }
    d->started = 1;
    log_event(d->log, LOG_LEVEL_INFO, "discovery_started",
              LOG_STR("consul", consul_client_address(d->client)), LOG_INT("watches", d->n),
              LOG_INT("wait_ms", d->ccfg->wait_ms));
    return 0;
}

void discovery_stop(struct discovery *d)
{
    if (d == NULL || !d->started) {
        return;
    }
    atomic_store(&d->stop, 1);
    curl_multi_wakeup(d->multi);
    pthread_join(d->thread, NULL);
    d->started = 0;
    discovery_adopt(d);
    for (size_t i = 0; i < d->n; i++) {
        struct watch *w = d->watches[i];
        if (w->in_flight) {
            curl_multi_remove_handle(d->multi, w->call.easy);
            w->in_flight = 0;
        }
        consul_call_cleanup(&w->call);
    }
    log_event(d->log, LOG_LEVEL_INFO, "discovery_stopped", LOG_INT("watches", d->n));
}

void discovery_destroy(struct discovery *d)
{
    if (d == NULL) {
        return;
    }
    discovery_stop(d);
    discovery_adopt(d);
    for (size_t i = 0; i < d->n; i++) {
        watch_free(d->watches[i]);
    }
    free(d->watches);
    free(d->pending);
    if (d->multi != NULL) {
        curl_multi_cleanup(d->multi);
    }
    consul_client_destroy(d->client);
    pthread_mutex_destroy(&d->g.lock);
    free(d);
}
