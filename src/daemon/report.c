/* /status, /metrics and /healthz contents, from the daemon's state. */
#include "report.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acl.h"
#include "balancer.h"
#include "clock.h"
#include "daemon_int.h"
#include "stats.h"

#define REPORT_INSTANCES_MAX 100000 /* instances one service may report */

/* --- sums over the workers ----------------------------------------------------------------- */

static void sum_stats(struct daemon *d, struct stats *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < d->n_inited; i++)
        stats_accumulate(out, &d->workers[i].stats);
}

/* One listener's counters over every worker. */
static void sum_listener(struct daemon *d, size_t l, unsigned long long *accepted,
                         unsigned long long *open, unsigned long long ended[SESSION_END_COUNT],
                         unsigned long long rejected[LISTENER_REJECT_COUNT])
{
    *accepted = *open = 0;
    memset(ended, 0, SESSION_END_COUNT * sizeof(ended[0]));
    memset(rejected, 0, LISTENER_REJECT_COUNT * sizeof(rejected[0]));
    for (unsigned i = 0; i < d->n_inited; i++) {
        const struct listener_stats *ls = &d->workers[i].host.lstats[l];
        *accepted += atomic_load_explicit(&ls->accepted, memory_order_relaxed);
        *open += atomic_load_explicit(&ls->open, memory_order_relaxed);
        for (size_t e = 0; e < SESSION_END_COUNT; e++)
            ended[e] += atomic_load_explicit(&ls->ended[e], memory_order_relaxed);
        for (size_t r = 0; r < LISTENER_REJECT_COUNT; r++)
            rejected[r] += atomic_load_explicit(&ls->rejected[r], memory_order_relaxed);
    }
}

/* A histogram over every worker (which = 0: connect time, 1: duration). */
static void sum_hist(struct daemon *d, int which, unsigned long long le[SESSION_HIST_BUCKETS],
                     unsigned long long *count, unsigned long long *sum_us)
{
    memset(le, 0, SESSION_HIST_BUCKETS * sizeof(le[0]));
    *count = *sum_us = 0;
    for (unsigned i = 0; i < d->n_inited; i++) {
        const struct session_hist *h =
            which == 0 ? &d->workers[i].host.connect_time : &d->workers[i].host.duration;
        for (size_t b = 0; b < SESSION_HIST_BUCKETS; b++)
            le[b] += atomic_load_explicit(&h->le[b], memory_order_relaxed);
        *count += atomic_load_explicit(&h->count, memory_order_relaxed);
        *sum_us += atomic_load_explicit(&h->sum_us, memory_order_relaxed);
    }
}

/* The instances of service i (malloc'd, *n entries); NULL with *n = 0 on ENOMEM. */
static struct owner_instance_info *service_instances(struct daemon *d, size_t i, size_t *n)
{
    uint64_t version;
    size_t want;

    owner_summary(d->services[i], &version, &want);
    for (int tries = 0; tries < 4; tries++) {
        size_t cap = want + 16 < REPORT_INSTANCES_MAX ? want + 16 : REPORT_INSTANCES_MAX;
        struct owner_instance_info *out = calloc(cap, sizeof(*out)); /* cap >= 1 */
        if (out == NULL)
            break;
        want = owner_instances(d->services[i], out, cap);
        if (want <= cap) {
            *n = want;
            return out;
        }
        free(out); /* the set grew between the two calls: again, with room */
    }
    *n = 0;
    return NULL;
}

const char *report_health_word(struct daemon *d)
{
    if (atomic_load(&d->draining))
        return "draining";
    if (!atomic_load(&d->serving))
        return "starting";
    if (registry_failing(d->registry) != 0)
        return "degraded";
    switch (discovery_state_get(d->discovery)) {
    case DISCOVERY_STARTING:
        return "starting";
    case DISCOVERY_DEGRADED:
        return "degraded";
    default:
        return "ok";
    }
}

/* --- /status --------------------------------------------------------------------------------- */

/* A listener's per-client limits and its table's counters; null without limits. */
static void status_client_table(cJSON *o, const struct listener_rt *l)
{
    struct client_limit_stats st;

    if (l->clients == NULL) {
        cJSON_AddNullToObject(o, "client_limits");
        return;
    }
    client_limit_stats(l->clients, &st);
    cJSON *c = cJSON_AddObjectToObject(o, "client_limits");
    cJSON_AddNumberToObject(c, "max_connections_per_client", l->client_limits.max_conns);
    cJSON_AddNumberToObject(c, "connection_rate_per_client", l->client_limits.rate);
    cJSON_AddNumberToObject(c, "connection_burst_per_client", l->client_limits.burst);
    cJSON_AddNumberToObject(c, "table_size", st.capacity);
    cJSON_AddNumberToObject(c, "entries", (double)st.entries);
    cJSON_AddNumberToObject(c, "evictions", (double)st.evictions);
    cJSON_AddNumberToObject(c, "table_full", (double)st.table_full);
}

/* The listener table is read under table_lock: a reload on the main thread replaces it. */
static cJSON *status_listeners(struct daemon *d)
{
    cJSON *arr = cJSON_CreateArray();
    unsigned long long accepted, open, ended[SESSION_END_COUNT], rejected[LISTENER_REJECT_COUNT];

    pthread_mutex_lock(&d->table_lock);
    for (size_t i = 0; arr != NULL && i < d->n_listeners; i++) {
        const struct listener_rt *l = d->listeners[i].rt;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, o);
        sum_listener(d, l->index, &accepted, &open, ended, rejected);
        cJSON_AddStringToObject(o, "name", l->name);
        cJSON_AddStringToObject(o, "bind", l->bind.text);
        cJSON_AddStringToObject(o, "service", l->service->name);
        cJSON_AddNumberToObject(o, "open", (double)open);
        cJSON_AddNumberToObject(o, "accepted", (double)accepted);
        cJSON_AddBoolToObject(o, "log_access", l->log_access);
        cJSON *rej = cJSON_AddObjectToObject(o, "rejected");
        for (size_t r = 0; r < LISTENER_REJECT_COUNT; r++)
            cJSON_AddNumberToObject(rej, listener_reject_name((enum listener_reject)r),
                                    (double)rejected[r]);
        cJSON_AddNumberToObject(o, "acl_ranges", (double)acl_ranges(l->acl));
        status_client_table(o, l);
    }
    pthread_mutex_unlock(&d->table_lock);
    return arr;
}

static cJSON *status_instance(const struct owner_instance_info *in)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "id", in->id);
    cJSON_AddStringToObject(o, "address", in->addr);
    cJSON_AddNumberToObject(o, "weight", in->weight);
    cJSON_AddNumberToObject(o, "effective_weight", (double)in->effective / OWNER_WEIGHT_SCALE);
    cJSON_AddStringToObject(o, "state", in->state);
    cJSON_AddNumberToObject(o, "active", in->active);
    cJSON_AddNumberToObject(o, "connects", (double)in->connects);
    cJSON_AddNumberToObject(o, "failures", (double)in->failures);
    cJSON_AddNumberToObject(o, "timeouts", (double)in->timeouts);
    cJSON_AddNumberToObject(o, "ejections", (double)in->ejections);
    cJSON_AddNumberToObject(o, "bytes_up", (double)in->bytes_up);
    cJSON_AddNumberToObject(o, "bytes_down", (double)in->bytes_down);
    cJSON_AddStringToObject(o, "last_check", in->check);
    if (in->check_code != 0)
        cJSON_AddNumberToObject(o, "last_check_status", in->check_code);
    if (in->ejected_ms != 0)
        cJSON_AddNumberToObject(o, "ejected_for_ms", (double)in->ejected_ms);
    return o;
}

static cJSON *status_services(struct daemon *d)
{
    cJSON *arr = cJSON_CreateArray();

    for (size_t i = 0; arr != NULL && i < d->cfg->n_services; i++) {
        const struct config_service *cs = &d->cfg->services[i];
        cJSON *o = cJSON_CreateObject(), *list = cJSON_CreateArray();
        size_t n;
        struct owner_instance_info *in = service_instances(d, i, &n);
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "name", cs->name);
        cJSON_AddStringToObject(o, "balance", cs->lb.balance->name);
        cJSON_AddStringToObject(o, "discovery", config_discovery_name(cs->discovery));
        cJSON_AddStringToObject(o, "check", health_check_name(cs->check.kind));
        cJSON_AddNumberToObject(o, "queued", atomic_load(&d->service_rts[i].queued));
        cJSON_AddItemToObject(o, "instances", list);
        for (size_t k = 0; k < n; k++)
            cJSON_AddItemToArray(list, status_instance(&in[k]));
        free(in);
    }
    return arr;
}

static cJSON *status_consul(struct daemon *d)
{
    struct discovery_status st;
    struct discovery_watch_status w[256];
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_CreateArray();

    discovery_status_get(d->discovery, &st);
    cJSON_AddStringToObject(o, "state", discovery_state_name(st.state));
    cJSON_AddItemToObject(o, "watches", arr);
    size_t n = discovery_watches(d->discovery, w, sizeof(w) / sizeof(w[0]));
    for (size_t i = 0; i < n && i < sizeof(w) / sizeof(w[0]); i++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, x);
        cJSON_AddStringToObject(x, "service", w[i].service);
        cJSON_AddStringToObject(x, "consul_service", w[i].consul_service);
        cJSON_AddNumberToObject(x, "index", (double)w[i].index);
        cJSON_AddBoolToObject(x, "synced", w[i].synced);
        cJSON_AddBoolToObject(x, "failing", w[i].failing);
        cJSON_AddNumberToObject(x, "instances", (double)w[i].instances);
        if (w[i].contact_ago_ms != UINT64_MAX)
            cJSON_AddNumberToObject(x, "last_contact_ms_ago", (double)w[i].contact_ago_ms);
        if (w[i].stale_ms != UINT64_MAX)
            cJSON_AddNumberToObject(x, "staleness_ms", (double)w[i].stale_ms);
        if (w[i].known_leader >= 0)
            cJSON_AddBoolToObject(x, "consul_known_leader", w[i].known_leader);
        if (w[i].last_contact_ms != UINT64_MAX)
            cJSON_AddNumberToObject(x, "consul_last_contact_ms", (double)w[i].last_contact_ms);
        cJSON_AddStringToObject(x, "last_error", w[i].last_error);
    }
    return o;
}

/* The DNS and file sources: what each serves, and whether it serves its last good set. */
static cJSON *status_registries(struct daemon *d)
{
    struct registry_source_status w[256];
    cJSON *arr = cJSON_CreateArray();
    size_t n = registry_sources(d->registry, w, sizeof(w) / sizeof(w[0]));

    for (size_t i = 0; arr != NULL && i < n && i < sizeof(w) / sizeof(w[0]); i++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, x);
        cJSON_AddStringToObject(x, "service", w[i].service);
        cJSON_AddStringToObject(x, "kind", w[i].kind);
        cJSON_AddStringToObject(x, "source", w[i].source);
        cJSON_AddBoolToObject(x, "synced", w[i].synced);
        cJSON_AddBoolToObject(x, "failing", w[i].failing);
        cJSON_AddNumberToObject(x, "instances", (double)w[i].instances);
        cJSON_AddNumberToObject(x, "ttl", w[i].ttl_s);
        cJSON_AddNumberToObject(x, "resolve_us", (double)w[i].resolve_us);
        cJSON_AddNumberToObject(x, "attempts", (double)w[i].attempts);
        cJSON_AddNumberToObject(x, "errors", (double)w[i].errors);
        cJSON_AddNumberToObject(x, "outages", (double)w[i].outages);
        cJSON_AddNumberToObject(x, "publishes", (double)w[i].publishes);
        if (w[i].stale_ms != UINT64_MAX)
            cJSON_AddNumberToObject(x, "staleness_ms", (double)w[i].stale_ms);
        cJSON_AddStringToObject(x, "last_error", w[i].last_error);
    }
    return arr;
}

static cJSON *status_registrations(struct daemon *d)
{
    struct registrar_status r[64];
    cJSON *arr = cJSON_CreateArray();
    size_t n = registrar_status(daemon_registrar(d), r, sizeof(r) / sizeof(r[0]), NULL, NULL);

    for (size_t i = 0; i < n && i < sizeof(r) / sizeof(r[0]); i++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, x);
        cJSON_AddStringToObject(x, "id", r[i].id);
        cJSON_AddStringToObject(x, "service", r[i].service);
        cJSON_AddBoolToObject(x, "registered", r[i].registered);
        cJSON_AddNumberToObject(x, "failures", r[i].failures);
        cJSON_AddStringToObject(x, "last_error", r[i].last_error);
    }
    return arr;
}

static cJSON *status_counters(struct daemon *d)
{
    struct stats total;
    cJSON *o = cJSON_CreateObject();

    sum_stats(d, &total);
    cJSON_AddNumberToObject(o, "open", conn_budget_open(&d->shared.budget));
    for (unsigned i = 0; i < stats_count(); i++)
        cJSON_AddNumberToObject(o, stats_name(i), (double)stats_value(&total, i));
    return o;
}

char *report_status_json(struct daemon *d)
{
    cJSON *root = cJSON_CreateObject();
    char *text = NULL, *copy = NULL;

    if (root == NULL)
        return NULL;
    cJSON_AddStringToObject(root, "version", SLUICE_VERSION);
    cJSON_AddStringToObject(root, "state", report_health_word(d));
    cJSON_AddNumberToObject(root, "pid", getpid());
    cJSON_AddNumberToObject(root, "uptime_s", (double)(clock_ms() - d->started_ms) / 1000.0);
    cJSON_AddNumberToObject(root, "workers", d->n_workers);
    cJSON_AddItemToObject(root, "listeners", status_listeners(d));
    cJSON_AddItemToObject(root, "services", status_services(d));
    cJSON_AddItemToObject(root, "consul", status_consul(d));
    cJSON_AddItemToObject(root, "registries", status_registries(d));
    cJSON_AddItemToObject(root, "registrations", status_registrations(d));
    cJSON_AddItemToObject(root, "counters", status_counters(d));
    text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (text != NULL) {
        copy = strdup(text); /* callers free() it; cJSON may use another allocator */
        cJSON_free(text);
    }
    return copy;
}

/* --- /metrics -------------------------------------------------------------------------------- */

/* A growing text buffer; on ENOMEM it stops growing and says so. */
struct mbuf {
    char *p;    /* the text */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
    int oom;    /* an allocation failed */
};

__attribute__((format(printf, 2, 3))) static void put(struct mbuf *b, const char *fmt, ...)
{
    va_list ap;

    for (int pass = 0; pass < 2 && !b->oom; pass++) {
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *grown = realloc(b->p, cap);
        if (grown == NULL) {
            b->oom = 1;
            return;
        }
        b->p = grown;
        b->cap = cap;
    }
}

/* A label value with \, " and newline escaped, as the exposition format wants. */
static const char *label(const char *v, char *out, size_t len)
{
    size_t o = 0;

    for (; *v != '\0' && o + 2 < len; v++) {
        if (*v == '\\' || *v == '"' || *v == '\n') {
            out[o++] = '\\';
            out[o++] = *v == '\n' ? 'n' : *v;
        } else {
            out[o++] = *v;
        }
    }
    out[o] = '\0';
    return out;
}

static void family(struct mbuf *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The per-worker counters of stats.h that metrics show under their own names. */
static void metrics_totals(struct mbuf *b, struct daemon *d)
{
    struct stats t;

    sum_stats(d, &t);
    family(b, "sluice_retries_total", "counter",
           "Connect attempts on another instance after a failure.");
    put(b, "sluice_retries_total %llu\n", (unsigned long long)atomic_load(&t.retries));
    family(b, "sluice_bytes_total", "counter",
           "Bytes moved, by direction and by how (splice or copy).");
    unsigned long long up = atomic_load(&t.bytes_up), down = atomic_load(&t.bytes_down);
    unsigned long long sup = atomic_load(&t.spliced_up), sdown = atomic_load(&t.spliced_down);
    put(b, "sluice_bytes_total{direction=\"up\",how=\"splice\"} %llu\n", sup);
    put(b, "sluice_bytes_total{direction=\"up\",how=\"copy\"} %llu\n", up - sup);
    put(b, "sluice_bytes_total{direction=\"down\",how=\"splice\"} %llu\n", sdown);
    put(b, "sluice_bytes_total{direction=\"down\",how=\"copy\"} %llu\n", down - sdown);
    family(b, "sluice_queue_waits_total", "counter", "Clients that waited in a service queue.");
    put(b, "sluice_queue_waits_total %llu\n", (unsigned long long)atomic_load(&t.queued));
    family(b, "sluice_queue_timeouts_total", "counter", "Queued clients closed by queue_timeout.");
    put(b, "sluice_queue_timeouts_total %llu\n",
        (unsigned long long)atomic_load(&t.queue_timeouts));
    family(b, "sluice_connections_open", "gauge", "Client connections open, all listeners.");
    put(b, "sluice_connections_open %u\n", conn_budget_open(&d->shared.budget));
    family(b, "sluice_log_lines_dropped_total", "counter",
           "Access-log lines dropped because the writer could not keep up.");
    put(b, "sluice_log_lines_dropped_total %llu\n",
        d->access_on ? log_writer_dropped(&d->access) : 0ULL);
}

/* One listener's samples of the three families, by its table position. */
static void metrics_listener(struct mbuf *b, struct daemon *d, size_t i, int family_no)
{
    unsigned long long accepted, open, ended[SESSION_END_COUNT], rejected[LISTENER_REJECT_COUNT];
    const struct listener_rt *rt = d->listeners[i].rt;
    char l[128];

    sum_listener(d, rt->index, &accepted, &open, ended, rejected);
    label(rt->name, l, sizeof(l));
    if (family_no == 0)
        put(b, "sluice_listener_connections_accepted_total{listener=\"%s\"} %llu\n", l, accepted);
    else if (family_no == 1)
        put(b, "sluice_listener_connections_open{listener=\"%s\"} %llu\n", l, open);
    else if (family_no == 3)
        for (size_t r = 0; r < LISTENER_REJECT_COUNT; r++)
            put(b, "sluice_listener_rejected_total{listener=\"%s\",reason=\"%s\"} %llu\n", l,
                listener_reject_name((enum listener_reject)r), rejected[r]);
    else
        for (size_t e = 0; e < SESSION_END_COUNT; e++)
            put(b, "sluice_listener_connections_closed_total{listener=\"%s\",reason=\"%s\"} %llu\n",
                l, session_end_name((enum session_end)e), ended[e]);
}

/* The client tables of listeners with per-client limits (table_lock held). A reload that changes
 * a table's shape starts a new one, with counters from zero. */
static void metrics_client_tables(struct mbuf *b, struct daemon *d)
{
    static const char *const families[][3] = {
        {"sluice_listener_client_entries", "gauge",
         "Clients tracked by the per-client limits (entries in use)."},
        {"sluice_listener_client_evictions_total", "counter",
         "Idle client entries replaced by a new client."},
        {"sluice_listener_client_table_full_total", "counter",
         "Clients admitted untracked: every entry they could take was busy."},
    };
    struct client_limit_stats st;
    char l[128];

    for (int f = 0; f < 3; f++) {
        family(b, families[f][0], families[f][1], families[f][2]);
        for (size_t i = 0; i < d->n_listeners; i++) {
            const struct listener_rt *rt = d->listeners[i].rt;
            if (rt->clients == NULL)
                continue;
            client_limit_stats(rt->clients, &st);
            unsigned long long v = f == 0 ? st.entries : f == 1 ? st.evictions : st.table_full;
            put(b, "%s{listener=\"%s\"} %llu\n", families[f][0], label(rt->name, l, sizeof(l)), v);
        }
    }
}

/* The listener table is read under table_lock: a reload on the main thread replaces it. */
static void metrics_listeners(struct mbuf *b, struct daemon *d)
{
    static const char *const families[][3] = {
        {"sluice_listener_connections_accepted_total", "counter", "Connections accepted."},
        {"sluice_listener_connections_open", "gauge", "Connections open now."},
        {"sluice_listener_connections_closed_total", "counter",
         "Connections that ended, by how (rejected ones too)."},
        {"sluice_listener_rejected_total", "counter",
         "Connections refused at accept by allow/deny or a per-client limit, by reason."},
    };

    pthread_mutex_lock(&d->table_lock);
    for (int f = 0; f < 4; f++) {
        family(b, families[f][0], families[f][1], families[f][2]);
        for (size_t i = 0; i < d->n_listeners; i++)
            metrics_listener(b, d, i, f);
    }
    metrics_client_tables(b, d);
    pthread_mutex_unlock(&d->table_lock);
}

/* One instance family: its HELP/TYPE, then a sample per instance of every service. */
struct ifamily {
    const char *name;                                                /* metric name */
    const char *type;                                                /* counter | gauge */
    const char *help;                                                /* HELP text */
    unsigned long long (*value)(const struct owner_instance_info *); /* the sample */
};

static unsigned long long v_active(const struct owner_instance_info *i)
{
    return i->active;
}
static unsigned long long v_connects(const struct owner_instance_info *i)
{
    return i->connects;
}
static unsigned long long v_failures(const struct owner_instance_info *i)
{
    return i->failures;
}
static unsigned long long v_timeouts(const struct owner_instance_info *i)
{
    return i->timeouts;
}
static unsigned long long v_ejections(const struct owner_instance_info *i)
{
    return i->ejections;
}
static unsigned long long v_up(const struct owner_instance_info *i)
{
    return i->bytes_up;
}
static unsigned long long v_down(const struct owner_instance_info *i)
{
    return i->bytes_down;
}
static unsigned long long v_weight(const struct owner_instance_info *i)
{
    return i->effective;
}

static const struct ifamily ifamilies[] = {
    {"sluice_instance_active_connections", "gauge", "Connections to the instance now.", v_active},
    {"sluice_instance_connects_total", "counter", "Sessions that connected.", v_connects},
    {"sluice_instance_connect_failures_total", "counter", "Failed connect attempts.", v_failures},
    {"sluice_instance_connect_timeouts_total", "counter", "Connect attempts that timed out.",
     v_timeouts},
    {"sluice_instance_ejections_total", "counter", "Passive-health ejections.", v_ejections},
    {"sluice_instance_sent_bytes_total", "counter", "Bytes sent to it (ended sessions).", v_up},
    {"sluice_instance_received_bytes_total", "counter", "Bytes received (ended sessions).", v_down},
    {"sluice_instance_effective_weight", "gauge",
     "Weight in the current set, x100 of the configured (0 = out).", v_weight},
};

static void metrics_instances(struct mbuf *b, struct daemon *d)
{
    static const char *const states[] = {"healthy",  "warning",  "unhealthy", "ejected",
                                         "draining", "disabled", "slow_start"};
    size_t n_svc = d->cfg->n_services;
    struct owner_instance_info **all = calloc(n_svc ? n_svc : 1, sizeof(*all));
    size_t *n = calloc(n_svc ? n_svc : 1, sizeof(*n));
    char s[128], id[512];

    for (size_t i = 0; all != NULL && n != NULL && i < n_svc; i++)
        all[i] = service_instances(d, i, &n[i]);
    for (size_t f = 0; all != NULL && n != NULL && f < sizeof(ifamilies) / sizeof(ifamilies[0]);
         f++) {
        family(b, ifamilies[f].name, ifamilies[f].type, ifamilies[f].help);
        for (size_t i = 0; i < n_svc; i++)
            for (size_t k = 0; k < n[i]; k++)
                put(b, "%s{service=\"%s\",instance=\"%s\"} %llu\n", ifamilies[f].name,
                    label(d->cfg->services[i].name, s, sizeof(s)),
                    label(all[i][k].id, id, sizeof(id)), ifamilies[f].value(&all[i][k]));
    }
    family(b, "sluice_instance_state", "gauge", "1 for the instance's state, 0 for the others.");
    for (size_t i = 0; all != NULL && n != NULL && i < n_svc; i++)
        for (size_t k = 0; k < n[i]; k++)
            for (size_t st = 0; st < sizeof(states) / sizeof(states[0]); st++)
                put(b, "sluice_instance_state{service=\"%s\",instance=\"%s\",state=\"%s\"} %d\n",
                    label(d->cfg->services[i].name, s, sizeof(s)),
                    label(all[i][k].id, id, sizeof(id)), states[st],
                    strcmp(all[i][k].state, states[st]) == 0);
    family(b, "sluice_instance_health_checks", "gauge",
           "Result of the last active check: 1 passed, 0 failed (absent without a check).");
    for (size_t i = 0; all != NULL && n != NULL && i < n_svc; i++)
        for (size_t k = 0; k < n[i]; k++)
            if (strcmp(all[i][k].check, "none") != 0)
                put(b, "sluice_instance_health_checks{service=\"%s\",instance=\"%s\"} %d\n",
                    label(d->cfg->services[i].name, s, sizeof(s)),
                    label(all[i][k].id, id, sizeof(id)), strcmp(all[i][k].check, "passed") == 0);
    for (size_t i = 0; all != NULL && i < n_svc; i++)
        free(all[i]);
    free(all);
    free(n);
}

static void metrics_services(struct mbuf *b, struct daemon *d)
{
    char s[128];

    family(b, "sluice_queue_depth", "gauge", "Clients waiting for a free instance now.");
    for (size_t i = 0; i < d->cfg->n_services; i++)
        put(b, "sluice_queue_depth{service=\"%s\"} %u\n",
            label(d->cfg->services[i].name, s, sizeof(s)), atomic_load(&d->service_rts[i].queued));
    family(b, "sluice_snapshot_publishes_total", "counter", "Instance sets published.");
    for (size_t i = 0; i < d->cfg->n_services; i++)
        put(b, "sluice_snapshot_publishes_total{service=\"%s\"} %llu\n",
            label(d->cfg->services[i].name, s, sizeof(s)),
            (unsigned long long)owner_publishes(d->services[i]));
}

/* A histogram family from cumulative µs buckets, in seconds. */
static void metrics_hist(struct mbuf *b, const char *name, const char *help, const uint64_t *bounds,
                         const unsigned long long *le, size_t n, unsigned long long count,
                         double sum_s)
{
    family(b, name, "histogram", help);
    for (size_t i = 0; i < n; i++)
        put(b, "%s_bucket{le=\"%g\"} %llu\n", name, (double)bounds[i] / 1e6, le[i]);
    put(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, count, name, sum_s,
        name, count);
}

static void metrics_latency(struct mbuf *b, struct daemon *d)
{
    unsigned long long le[SESSION_HIST_BUCKETS], count, sum_us;

    sum_hist(d, 0, le, &count, &sum_us);
    metrics_hist(b, "sluice_connect_duration_seconds",
                 "Accept to upstream connected (retries included).", session_connect_bounds_us, le,
                 SESSION_HIST_BUCKETS, count, (double)sum_us / 1e6);
    sum_hist(d, 1, le, &count, &sum_us);
    metrics_hist(b, "sluice_session_duration_seconds", "Accept to end of the session.",
                 session_duration_bounds_us, le, SESSION_HIST_BUCKETS, count, (double)sum_us / 1e6);
}

/* The leader headers of each watch's last answer (absent before the first). */
static void metrics_leader(struct mbuf *b, const struct discovery_watch_status *w, size_t n)
{
    char s[128];

    family(b, "sluice_consul_last_contact_seconds", "gauge",
           "X-Consul-LastContact of the watch's last answer: how long the answering server had "
           "not heard from the leader (0 unless stale = true).");
    for (size_t i = 0; i < n; i++)
        if (w[i].last_contact_ms != UINT64_MAX)
            put(b, "sluice_consul_last_contact_seconds{service=\"%s\"} %.3f\n",
                label(w[i].service, s, sizeof(s)), (double)w[i].last_contact_ms / 1e3);
    family(b, "sluice_consul_known_leader", "gauge",
           "X-Consul-KnownLeader of the watch's last answer (1 true, 0 false).");
    for (size_t i = 0; i < n; i++)
        if (w[i].known_leader >= 0)
            put(b, "sluice_consul_known_leader{service=\"%s\"} %d\n",
                label(w[i].service, s, sizeof(s)), w[i].known_leader);
}

static void metrics_consul(struct mbuf *b, struct daemon *d)
{
    struct discovery_totals t;
    struct discovery_watch_status w[256];
    uint64_t bounds_us[DISCOVERY_HIST_BUCKETS];
    unsigned long long ok = 0, failed = 0;
    char s[128];

    discovery_totals_get(d->discovery, &t);
    for (size_t i = 0; i < DISCOVERY_HIST_BUCKETS; i++)
        bounds_us[i] = discovery_duration_bounds_ms[i] * 1000;
    metrics_hist(b, "sluice_consul_request_duration_seconds",
                 "Consul health queries, blocking ones included.", bounds_us, t.duration_le,
                 DISCOVERY_HIST_BUCKETS, t.duration_count, (double)t.duration_sum_ms / 1e3);
    family(b, "sluice_consul_errors_total", "counter", "Failed Consul queries, by kind.");
    put(b, "sluice_consul_errors_total{kind=\"unreachable\"} %llu\n", t.unreachable);
    put(b, "sluice_consul_errors_total{kind=\"rejected\"} %llu\n", t.rejected);
    put(b, "sluice_consul_errors_total{kind=\"invalid\"} %llu\n", t.invalid);
    put(b, "sluice_consul_errors_total{kind=\"too_stale\"} %llu\n", t.too_stale);
    family(b, "sluice_consul_index_resets_total", "counter", "X-Consul-Index went backwards.");
    put(b, "sluice_consul_index_resets_total %llu\n", t.index_resets);
    family(b, "sluice_consul_sync_staleness_seconds", "gauge",
           "Time since the watch's last good answer (absent before the first).");
    size_t n = discovery_watches(d->discovery, w, sizeof(w) / sizeof(w[0]));
    for (size_t i = 0; i < n && i < sizeof(w) / sizeof(w[0]); i++)
        if (w[i].stale_ms != UINT64_MAX)
            put(b, "sluice_consul_sync_staleness_seconds{service=\"%s\"} %.3f\n",
                label(w[i].service, s, sizeof(s)), (double)w[i].stale_ms / 1e3);
    metrics_leader(b, w, n < sizeof(w) / sizeof(w[0]) ? n : sizeof(w) / sizeof(w[0]));
    struct registrar_status r[1];
    registrar_status(daemon_registrar(d), r, 0, &ok, &failed);
    family(b, "sluice_registrations_total", "counter", "Consul registrations, by result.");
    put(b, "sluice_registrations_total{result=\"success\"} %llu\n", ok);
    put(b, "sluice_registrations_total{result=\"failure\"} %llu\n", failed);
}

/* The DNS and file sources' families, in this order (registry_value reads each). */
static const struct {
    const char *name, *type, *help;
} registry_families[] = {
    {"sluice_registry_errors_total", "counter",
     "Failed DNS resolutions or file reads (an empty DNS answer counts)."},
    {"sluice_registry_outages_total", "counter",
     "Times a source started failing and kept its last good set."},
    {"sluice_registry_failing", "gauge",
     "1 while the source's last attempt failed and its last good set serves."},
    {"sluice_registry_instances", "gauge", "Instances of the source's last good answer."},
};

static unsigned long long registry_value(const struct registry_source_status *w, size_t family)
{
    switch (family) {
    case 0:
        return w->errors;
    case 1:
        return w->outages;
    case 2:
        return (unsigned long long)w->failing;
    default:
        return (unsigned long long)w->instances;
    }
}

/* The DNS and file sources, by service. */
static void metrics_registries(struct mbuf *b, struct daemon *d)
{
    struct registry_source_status w[256];
    size_t cap = sizeof(w) / sizeof(w[0]), n = registry_sources(d->registry, w, cap);
    char s[128];

    if (n > cap)
        n = cap;
    for (size_t f = 0; f < sizeof(registry_families) / sizeof(registry_families[0]); f++) {
        family(b, registry_families[f].name, registry_families[f].type, registry_families[f].help);
        for (size_t i = 0; i < n; i++)
            put(b, "%s{service=\"%s\",kind=\"%s\"} %llu\n", registry_families[f].name,
                label(w[i].service, s, sizeof(s)), w[i].kind, registry_value(&w[i], f));
    }
}

/* Descriptors open now, from /proc/self/fd. */
static long open_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    long n = -1; /* the directory's own descriptor */
    struct dirent *e;

    if (dir == NULL)
        return 0;
    while ((e = readdir(dir)) != NULL)
        n += e->d_name[0] != '.';
    closedir(dir);
    return n;
}

static long rss_bytes(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    /* the kernel writes two page counts that fit a long: fscanf cannot overflow here */
    if (f != NULL && fscanf(f, "%ld %ld", &pages, &rss) != 2) // NOLINT(cert-err34-c)
        rss = 0;
    if (f != NULL)
        (void)fclose(f); /* read only: nothing is lost when it fails */
    return rss * sysconf(_SC_PAGESIZE);
}

static void metrics_process(struct mbuf *b, struct daemon *d)
{
    struct health_stats h;

    health_stats_get(d->health, &h);
    family(b, "sluice_health_checks_total", "counter", "Active health checks, by result.");
    put(b, "sluice_health_checks_total{result=\"passed\"} %llu\n", h.checks - h.failures);
    put(b, "sluice_health_checks_total{result=\"failed\"} %llu\n", h.failures);
    family(b, "process_open_fds", "gauge", "Open file descriptors.");
    put(b, "process_open_fds %ld\n", open_fds());
    family(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    put(b, "process_resident_memory_bytes %ld\n", rss_bytes());
    family(b, "process_start_time_seconds", "gauge", "Start time since the Unix epoch, seconds.");
    put(b, "process_start_time_seconds %.3f\n", d->started_wall);
}

char *report_metrics(struct daemon *d, size_t *len)
{
    struct mbuf b = {0};

    metrics_listeners(&b, d);
    metrics_totals(&b, d);
    metrics_services(&b, d);
    metrics_instances(&b, d);
    metrics_latency(&b, d);
    metrics_consul(&b, d);
    metrics_registries(&b, d);
    metrics_process(&b, d);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
