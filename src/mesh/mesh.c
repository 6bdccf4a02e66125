/* libsluice: the mesh's life, its caller threads, errors and numbers. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "mesh_int.h"
#include "snapshot.h"

#define LOOKUP_TIMEOUT_MS 2000  /* default bound of a first lookup */
#define WAIT_MS           55000 /* default blocking-query wait, as the daemon's */
#define EJECT_AFTER       3     /* the daemon's passive-health defaults */
#define EJECT_TIME_MS     10000
#define EJECT_MAX_MS      300000
#define EJECT_PERCENT     50

/* --- errors -------------------------------------------------------------------------------- */

static __thread char last_error[512];

int mesh_fail(int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
    return code;
}

void mesh_ok(void)
{
    last_error[0] = '\0';
}

const char *sluice_mesh_last_error(void)
{
    return last_error;
}

const char *sluice_strerror(int code)
{
    switch (code) {
    case SLUICE_OK:
        return "ok";
    case SLUICE_ERR_INVALID:
        return "invalid argument";
    case SLUICE_ERR_NO_MEMORY:
        return "out of memory";
    case SLUICE_ERR_NO_INSTANCE:
        return "no healthy instance";
    case SLUICE_ERR_UNREACHABLE:
        return "Consul unreachable and nothing cached";
    case SLUICE_ERR_REJECTED:
        return "rejected by Consul";
    default:
        return "unknown error";
    }
}

/* --- caller threads ------------------------------------------------------------------------ */

/* liburcu wants every reader registered once and unregistered before it exits: one key for
 * the whole library, whose destructor unregisters. */
static pthread_once_t reader_once = PTHREAD_ONCE_INIT;
static pthread_key_t reader_key;
static __thread int reader_registered;

static void reader_gone(void *unused)
{
    (void)unused;
    snapshot_reader_unregister();
}

static void reader_key_make(void)
{
    (void)pthread_key_create(&reader_key, reader_gone);
}

static void reader_ensure(void)
{
    if (reader_registered)
        return;
    pthread_once(&reader_once, reader_key_make);
    snapshot_reader_register();
    (void)pthread_setspecific(reader_key, &reader_registered);
    reader_registered = 1;
}

static void counters_fold(struct mesh_counters *into, const struct mesh_counters *c)
{
    atomic_ullong *to = &into->hits;
    const atomic_ullong *from = &c->hits;
    for (size_t i = 0; i < sizeof(*c) / sizeof(*from); i++)
        atomic_fetch_add_explicit(&to[i], atomic_load_explicit(&from[i], memory_order_relaxed),
                                  memory_order_relaxed);
}

static void thread_free(struct mesh_thread *t)
{
    for (size_t i = 0; i < t->n_scratch; i++)
        lb_scratch_free(&t->scratch[i]);
    free(t->scratch);
    free(t);
}

/* A caller thread exits: its counters stay with the mesh. */
static void thread_gone(void *arg)
{
    struct mesh_thread *t = arg, **p;
    struct sluice_mesh *mesh = t->mesh;

    pthread_mutex_lock(&mesh->lock);
    counters_fold(&mesh->retired, &t->count);
    for (p = &mesh->threads; *p != NULL && *p != t; p = &(*p)->next)
        ;
    if (*p == t)
        *p = t->next;
    pthread_mutex_unlock(&mesh->lock);
    thread_free(t);
}

struct mesh_thread *mesh_thread_get(struct sluice_mesh *mesh)
{
    struct mesh_thread *t = pthread_getspecific(mesh->key);

    if (t != NULL)
        return t;
    reader_ensure();
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->mesh = mesh;
    t->rng = rng_seed() ^ (uint64_t)(uintptr_t)t;
    t->rng = t->rng != 0 ? t->rng : 1;
    pthread_mutex_lock(&mesh->lock);
    t->next = mesh->threads;
    mesh->threads = t;
    pthread_mutex_unlock(&mesh->lock);
    (void)pthread_setspecific(mesh->key, t);
    return t;
}

/* --- options ------------------------------------------------------------------------------- */

/* A copy of s, or NULL for NULL; *failed is set when the copy failed. */
static char *copy(const char *s, int *failed)
{
    char *c = s != NULL ? strdup(s) : NULL;

    *failed |= s != NULL && c == NULL;
    return c;
}

static int options_apply(struct sluice_mesh *mesh, const struct sluice_mesh_options *o)
{
    struct consul_conf *c = &mesh->ccfg;
    int failed = 0;

    c->address = copy(o->consul, &failed);
    c->token = copy(o->token, &failed);
    c->token_file = copy(o->token_file, &failed);
    c->datacenter = copy(o->datacenter, &failed);
    c->ca_file = copy(o->ca_file, &failed);
    c->cert_file = copy(o->cert_file, &failed);
    c->key_file = copy(o->key_file, &failed);
    c->tls_skip_verify = INI_FLAG_UNSET;
    c->wait_ms = o->wait_ms != 0 ? o->wait_ms : WAIT_MS;
    c->retry_min_ms = 250;
    c->min_query_interval_ms = CONSUL_MIN_QUERY_INTERVAL_MS;
    c->retry_max_ms = 60000;
    if (failed)
        return mesh_fail(SLUICE_ERR_NO_MEMORY, "out of memory");
    mesh->lb = balancer_find(o->balance != NULL ? o->balance : "round_robin");
    if (mesh->lb == NULL) {
        char names[256];
        balancer_names(names, sizeof(names));
        return mesh_fail(SLUICE_ERR_INVALID, "balance: unknown balancer \"%s\" (one of: %s)",
                         o->balance, names);
    }
    mesh->health_mode =
        o->passing_only ? CONSUL_HEALTH_MODE_PASSING : CONSUL_HEALTH_MODE_PASSING_AND_WARNING;
    mesh->lookup_timeout_ms = o->lookup_timeout_ms != 0 ? o->lookup_timeout_ms : LOOKUP_TIMEOUT_MS;
    mesh->policy = (struct owner_policy){
        .eject_after = o->eject_after < 0    ? 0
                       : o->eject_after == 0 ? EJECT_AFTER
                                             : (uint32_t)o->eject_after,
        .eject_time_ms = o->eject_time_ms != 0 ? o->eject_time_ms : EJECT_TIME_MS,
        .eject_max_time_ms = EJECT_MAX_MS,
        .max_ejection_percent = EJECT_PERCENT,
    };
    return 0;
}

static int logger_apply(struct sluice_mesh *mesh, const struct sluice_mesh_options *o)
{
    enum log_level level = LOG_LEVEL_INFO;

    if (o->log_level != NULL && log_level_parse(o->log_level, &level) != 0)
        return mesh_fail(SLUICE_ERR_INVALID, "log_level: \"%s\" is not debug, info, warn or error",
                         o->log_level);
    log_init(&mesh->log, o->log_level != NULL ? o->log_fd : -1);
    log_configure(&mesh->log, level, LOG_FORMAT_JSON);
    return 0;
}

/* --- life ---------------------------------------------------------------------------------- */

static void consul_conf_free(struct consul_conf *c)
{
    char *strings[] = {c->address, c->token,     c->token_file, c->datacenter,
                       c->ca_file, c->cert_file, c->key_file};
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
        free(strings[i]);
}

/* The threads and the client: 0 or a sluice_error with the detail. */
static int mesh_start(struct sluice_mesh *mesh)
{
    char err[512] = "";
    int rc = consul_client_create(&mesh->ccfg, &mesh->client, err, sizeof(err));

    if (rc == 0)
        rc = discovery_create(&mesh->ccfg, NULL, 0, &mesh->log, &mesh->discovery, err, sizeof(err));
    if (rc != 0)
        return mesh_fail(rc == -ENOMEM ? SLUICE_ERR_NO_MEMORY : SLUICE_ERR_INVALID, "%s",
                         err[0] != '\0' ? err : strerror(-rc));
    if (health_create(NULL, 0, &mesh->log, &mesh->health) != 0)
        return mesh_fail(SLUICE_ERR_NO_MEMORY, "out of memory");
    if (discovery_start(mesh->discovery) != 0 || health_start(mesh->health) != 0)
        return mesh_fail(SLUICE_ERR_NO_MEMORY, "cannot start the mesh's threads");
    return 0;
}

struct sluice_mesh *sluice_mesh_create(const struct sluice_mesh_options *opts, char *err,
                                       size_t errlen)
{
    static const struct sluice_mesh_options defaults = {0};
    struct sluice_mesh *mesh = calloc(1, sizeof(*mesh));
    int rc;

    if (mesh == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&mesh->lock, NULL);
    if (pthread_key_create(&mesh->key, thread_gone) != 0) {
        pthread_mutex_destroy(&mesh->lock);
        free(mesh);
        snprintf(err, errlen, "no thread-specific key left");
        return NULL;
    }
    opts = opts != NULL ? opts : &defaults;
    rc = options_apply(mesh, opts);
    if (rc == 0)
        rc = logger_apply(mesh, opts);
    if (rc == 0)
        rc = mesh_start(mesh);
    if (rc != 0) {
        snprintf(err, errlen, "%s", last_error);
        sluice_mesh_destroy(mesh);
        return NULL;
    }
    mesh_ok();
    return mesh;
}

void sluice_mesh_destroy(struct sluice_mesh *mesh)
{
    if (mesh == NULL)
        return;
    discovery_destroy(mesh->discovery);
    health_destroy(mesh->health);
    pthread_mutex_lock(&mesh->lock);
    pthread_key_delete(mesh->key); /* no destructor runs for this mesh from here on */
    while (mesh->threads != NULL) {
        struct mesh_thread *t = mesh->threads;
        mesh->threads = t->next;
        thread_free(t);
    }
    pthread_mutex_unlock(&mesh->lock);
    mesh_services_free(mesh);
    consul_client_destroy(mesh->client);
    consul_conf_free(&mesh->ccfg);
    pthread_mutex_destroy(&mesh->lock);
    free(mesh);
}

/* --- numbers ------------------------------------------------------------------------------- */

static void stats_discovery(struct sluice_mesh *mesh, struct sluice_stats *out)
{
    struct discovery_totals t;
    struct discovery_status s;

    discovery_totals_get(mesh->discovery, &t);
    discovery_status_get(mesh->discovery, &s);
    out->consul_requests = t.duration_count;
    out->consul_errors = s.errors;
    out->latency_sum_ms = t.duration_sum_ms;
    for (size_t i = 0; i < SLUICE_LATENCY_BUCKETS && i < DISCOVERY_HIST_BUCKETS; i++) {
        out->latency_le[i] = t.duration_le[i];
        out->latency_bound_ms[i] = discovery_duration_bounds_ms[i];
    }
}

int sluice_mesh_stats(struct sluice_mesh *mesh, struct sluice_stats *out)
{
    struct mesh_counters sum;

    if (mesh == NULL || out == NULL)
        return mesh_fail(SLUICE_ERR_INVALID, "mesh and out are required");
    memset(out, 0, sizeof(*out));
    memset(&sum, 0, sizeof(sum));
    pthread_mutex_lock(&mesh->lock);
    counters_fold(&sum, &mesh->retired);
    for (const struct mesh_thread *t = mesh->threads; t != NULL; t = t->next)
        counters_fold(&sum, &t->count);
    out->services = mesh->n_services;
    pthread_mutex_unlock(&mesh->lock);
    out->cache_hits = atomic_load(&sum.hits);
    out->cache_misses = atomic_load(&sum.misses);
    out->picks = atomic_load(&sum.picks);
    out->no_instance = atomic_load(&sum.no_instance);
    out->connect_failures = atomic_load(&sum.connect_failures);
    out->request_failures = atomic_load(&sum.request_failures);
    out->registrations = atomic_load(&mesh->registrations);
    out->registered = atomic_load(&mesh->registered);
    out->register_failures = atomic_load(&mesh->register_failures);
    out->rollbacks = atomic_load(&mesh->rollbacks);
    out->deregistrations = atomic_load(&mesh->deregistrations);
    stats_discovery(mesh, out);
    mesh_ok();
    return 0;
}

static void instance_stats_of(const struct owner_instance_info *in,
                              struct sluice_instance_stats *out)
{
    struct net_addr a;

    memset(out, 0, sizeof(*out));
    snprintf(out->id, sizeof(out->id), "%s", in->id);
    if (net_addr_parse(in->addr, &a) == NULL) {
        net_addr_ip_text(&a, out->host, sizeof(out->host));
        out->port = net_addr_port(&a);
    }
    out->state = in->state;
    out->active = in->active;
    out->connects = in->connects;
    out->failures = in->failures;
    out->ejections = in->ejections;
}

long sluice_service_instances(struct sluice_mesh *mesh, const char *service_name,
                              struct sluice_instance_stats *out, size_t cap)
{
    struct mesh_service *svc = NULL;

    if (mesh == NULL || service_name == NULL || (out == NULL && cap > 0))
        return mesh_fail(SLUICE_ERR_INVALID, "mesh and service_name are required");
    pthread_mutex_lock(&mesh->lock);
    for (size_t i = 0; i < mesh->n_services && svc == NULL; i++)
        if (strcmp(mesh->services[i]->name, service_name) == 0)
            svc = mesh->services[i];
    pthread_mutex_unlock(&mesh->lock);
    if (svc == NULL)
        return mesh_fail(SLUICE_ERR_INVALID, "the mesh does not watch service \"%s\"",
                         service_name);
    size_t room = owner_instances(svc->owner, NULL, 0) + 8; /* it may grow meanwhile */
    struct owner_instance_info *all = calloc(room, sizeof(*all));
    if (all == NULL)
        return mesh_fail(SLUICE_ERR_NO_MEMORY, "out of memory");
    size_t n = owner_instances(svc->owner, all, room);
    for (size_t i = 0; i < n && i < room && i < cap; i++)
        instance_stats_of(&all[i], &out[i]);
    free(all);
    mesh_ok();
    return (long)n;
}
