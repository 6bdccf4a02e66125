/* SIGHUP: what a reload applies while running (instances, weights and balancers, listeners,
 * logging, the shutdown timeout) and what it names as needing a restart, rather than
 * half-applying it. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <assert.h>

#include "acl.h"
#include "balancer.h"
#include "daemon_int.h"
#include "notify.h"

/* Static services: the backends list is the owner's source, at start and on every reload. */
int reload_static_service(struct daemon *d, struct owner *o, const struct config_service *cs)
{
    const struct lb_backends *b = &cs->lb.backends;
    struct owner_member *members = calloc(b->n ? b->n : 1, sizeof(*members));

    if (members == NULL)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++)
        if (b->items[i].host == NULL) /* host names come from the registry thread */
            members[n++] =
                (struct owner_member){.addr = b->items[i].addr, .weight = b->items[i].weight};
    int rc = owner_set_members(o, members, n);
    free(members);
    if (rc > 0)
        log_event(&d->log, LOG_LEVEL_INFO, "service_published", LOG_STR("service", cs->name),
                  LOG_STR("balance", cs->lb.balance->name), LOG_INT("instances", n));
    return rc < 0 ? rc : 0;
}

/* Where a change that needs a restart was seen, for its log lines. */
struct restart_ctx {
    struct daemon *d;
    char section[INI_NAME_MAX + 16]; /* "[sluice]", "[listener:web]", ... */
};

/* One line per key that changed: "[sluice] workers: 2 -> 4" (from or to "absent" for a
 * section), as event at level. */
static void log_change(const struct restart_ctx *r, enum log_level level, const char *event,
                       const char *key, const char *from, const char *to)
{
    char change[INI_NAME_MAX + 600];

    snprintf(change, sizeof(change), "%s %s: %s -> %s", r->section, key, from, to);
    log_event(&r->d->log, level, event, LOG_STR("section", r->section), LOG_STR("key", key),
              LOG_STR("from", from), LOG_STR("to", to), LOG_STR("change", change));
}

/* A key that changed but is read at start only. */
static void needs_restart(void *ctx, const char *key, const char *from, const char *to)
{
    log_change(ctx, LOG_LEVEL_WARN, "reload_needs_restart", key, from, to);
}

static struct restart_ctx restart_in(struct daemon *d, const char *kind, const char *name)
{
    struct restart_ctx r = {.d = d};
    if (name != NULL)
        snprintf(r.section, sizeof(r.section), "[%s:%s]", kind, name);
    else
        snprintf(r.section, sizeof(r.section), "[%s]", kind);
    return r;
}

/* Keys of tables that are read at start only: each one that differs is named. */
static void diff_start_only(struct restart_ctx *r, const struct ini_key *keys, const void *running,
                            const void *next)
{
    (void)ini_keys_diff(keys, running, next, needs_restart, r);
}

static const struct config_service *find_service(const struct config *cfg, const char *name,
                                                 size_t *index)
{
    assert(name != NULL); /* every [service:NAME] has one: the loader refuses a bare [service] */
    for (size_t i = 0; i < cfg->n_services; i++) {
        if (strcmp(cfg->services[i].name, name) == 0) {
            *index = i;
            return &cfg->services[i];
        }
    }
    return NULL;
}

/* A running service's keys that sessions and the health thread read at start: queue, drain,
 * lifetime, active checks and the Consul watch. */
static void service_start_only(struct daemon *d, const struct config_service *running,
                               const struct config_service *next)
{
    struct restart_ctx r = restart_in(d, "service", next->name);

    diff_start_only(&r, stream_service_keys, &running->stream, &next->stream);
    diff_start_only(&r, health_keys, &running->check, &next->check);
    if (!health_expect_equal(&running->check, &next->check))
        needs_restart(&r, "check_http_expect", "(old list)", "(new list)");
    diff_start_only(&r, consul_watch_keys, &running->consul, &next->consul);
    /* like the Consul watch: the registry thread reads these at start */
    diff_start_only(&r, registry_dns_keys, &running->registry, &next->registry);
    diff_start_only(&r, registry_file_keys, &running->registry, &next->registry);
}

static bool backends_equal(const struct lb_backends *a, const struct lb_backends *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->items[i].addr.text, b->items[i].addr.text) != 0 ||
            a->items[i].weight != b->items[i].weight)
            return false;
    return true;
}

/* A static list without host names is applied; one with host names is the registry thread's,
 * which reads it at start: a change of it needs a restart. */
static void reload_static_backends(struct daemon *d, struct owner *o,
                                   const struct config_service *running,
                                   const struct config_service *next)
{
    if (running->lb.backends.n_hosts == 0 && next->lb.backends.n_hosts == 0) {
        (void)reload_static_service(d, o, next);
    } else if (!backends_equal(&running->lb.backends, &next->lb.backends)) {
        struct restart_ctx r = restart_in(d, "service", next->name);
        needs_restart(&r, "backends", "(list with host names)", "(changed list)");
    }
}

/* Every service's owner takes its new balancer, and a static one its new instances and weights;
 * anything else about the service set needs a restart. */
static void reload_services(struct daemon *d, const struct config *next)
{
    size_t j = 0;
    for (size_t i = 0; i < next->n_services; i++) {
        const struct config_service *cs = &next->services[i];
        const struct config_service *running = find_service(d->cfg, cs->name, &j);
        if (running == NULL) {
            struct restart_ctx r = restart_in(d, "service", cs->name);
            needs_restart(&r, "(section)", "absent", "added");
        } else if (running->discovery != cs->discovery) {
            struct restart_ctx r = restart_in(d, "service", cs->name);
            diff_start_only(&r, config_service_keys, running, cs);
        } else {
            owner_set_policy(d->services[j], &cs->lb.policy);
            (void)owner_set_balancer(d->services[j], cs->lb.balance);
            service_start_only(d, running, cs);
            if (cs->discovery == CONFIG_DISCOVERY_STATIC)
                reload_static_backends(d, d->services[j], running, cs);
        }
    }
    for (size_t i = 0; i < d->cfg->n_services; i++)
        if (find_service(next, d->cfg->services[i].name, &j) == NULL) {
            struct restart_ctx r = restart_in(d, "service", d->cfg->services[i].name);
            needs_restart(&r, "(section)", "present", "removed (still served)");
        }
}

/* --- listeners ------------------------------------------------------------------------------ */

#define RELOAD_CHANGE_WAIT_MS                                                                      \
    5000 /* a worker applies a change in one loop turn; this bounds a                              \
            stuck one */

size_t reload_listener_slot(struct daemon *d, const char *name)
{
    for (size_t i = 0; i < d->n_slots; i++)
        if (strcmp(d->slot_names[i], name) == 0)
            return i;
    if (d->n_slots == d->lstats_cap)
        return SIZE_MAX;
    snprintf(d->slot_names[d->n_slots], sizeof(d->slot_names[0]), "%s", name);
    return d->n_slots++;
}

int reload_listener_acl(const struct listener_conf *cl, struct listener_acls *acls)
{
    /* the lists passed acl_cidr_check when loaded: only ENOMEM is left */
    acls->trusted = NULL;
    int rc = acl_create(&acls->access, (const char *const *)cl->allow.items, cl->allow.n,
                        (const char *const *)cl->deny.items, cl->deny.n);
    if (rc == 0 && cl->accept_proxy)
        rc = acl_create(&acls->trusted, (const char *const *)cl->proxy_trusted.items,
                        cl->proxy_trusted.n, NULL, 0);
    if (rc != 0)
        listener_acls_destroy(acls);
    return rc;
}

int reload_listener_clients(struct listener_rt *t, const struct listener_conf *cl,
                            const struct listener_rt *running)
{
    t->client_limits = (struct client_limits){.max_conns = cl->max_conns_per_client,
                                              .rate = cl->rate_per_client,
                                              .burst = cl->burst_per_client};
    t->clients = NULL;
    if (!client_limits_on(&t->client_limits))
        return 0;
    /* same shape: the new version shares the table, so open counts and buckets carry over */
    if (running != NULL && running->clients != NULL &&
        client_limit_same(running->clients, cl->client_table_size, cl->client_ipv6_prefix)) {
        client_limit_hold(running->clients);
        t->clients = running->clients;
        return 0;
    }
    t->clients = client_limit_create(cl->client_table_size, cl->client_ipv6_prefix, NULL);
    return t->clients != NULL ? 0 : -ENOMEM;
}

struct listener_conf reload_listener_kept(const struct listener_conf *cl)
{
    struct listener_conf kept = *cl;
    kept.allow = (struct ini_list){0};
    kept.deny = (struct ini_list){0};
    kept.proxy_trusted = (struct ini_list){0};
    return kept;
}

void reload_listener_fill(struct listener_rt *t, const struct listener_conf *cl,
                          const char *conf_path, struct service_rt *svc, size_t slot,
                          const struct listener_acls *acls)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", cl->name);
    t->line = cl->line;
    t->conf_path = conf_path;
    t->bind_line = cl->bind_line;
    t->bind = cl->bind;
    t->wildcard = net_addr_is_wildcard(&cl->bind);
    t->service = svc;
    t->index = slot;
    t->log_access = cl->log_access;
    t->connect_timeout_ms = cl->connect_timeout_ms;
    t->idle_timeout_ms = cl->idle_timeout_ms;
    t->retries = cl->retries;
    t->backlog = cl->backlog;
    t->acl = acls->access;
    t->accept_proxy = cl->accept_proxy;
    t->trusted = acls->trusted;
    t->proxy_header_timeout_ms = cl->proxy_header_timeout_ms;
}

/* What a reload does with one listener of the next file. */
struct listener_plan {
    struct listener_entry entry;          /* version to serve (a reference) and its section */
    struct worker_listener **fresh;       /* new sockets, one per worker; NULL: keep the running */
    const struct listener_entry *running; /* the version served now, NULL for an added one */
    int changed;                          /* entry is a new version */
};

static const struct listener_entry *running_listener(const struct daemon *d, const char *name)
{
    for (size_t i = 0; i < d->n_listeners; i++)
        if (strcmp(d->listeners[i].conf.name, name) == 0)
            return &d->listeners[i];
    return NULL;
}

static void ignore_change(void *ctx, const char *key, const char *from, const char *to)
{
    (void)ctx, (void)key, (void)from, (void)to;
}

/* Whether the running entry already serves conf b with the ranges acls. */
static int same_listener(const struct listener_entry *running, const struct listener_conf *b,
                         const struct listener_acls *acls)
{
    struct listener_conf kept = reload_listener_kept(b);
    return ini_keys_diff(listener_keys, &running->conf, &kept, ignore_change, NULL) == 0 &&
           acl_equal(running->rt->acl, acls->access) &&
           acl_equal(running->rt->trusted, acls->trusted);
}

/* The running version stays (nothing at all for a listener not running). 1 when p serves. */
static int plan_keep(struct listener_plan *p, const struct listener_entry *running)
{
    memset(p, 0, sizeof(*p));
    if (running == NULL)
        return 0;
    listener_rt_hold(running->rt);
    p->entry = *running;
    p->running = running;
    return 1;
}

static void plan_close_sockets(const struct daemon *d, struct listener_plan *p)
{
    for (unsigned i = 0; p->fresh != NULL && i < d->n_started; i++)
        worker_listener_destroy(p->fresh[i]);
    free(p->fresh);
    p->fresh = NULL;
}

/* One socket per worker for a new bind, opened here so that a bind error is known before any
 * worker changes: logged with the file's line, and nothing of this listener changes. */
static int plan_open_sockets(struct daemon *d, struct listener_plan *p)
{
    char err[512] = "out of memory";

    p->fresh = calloc(d->n_started ? d->n_started : 1, sizeof(*p->fresh));
    for (unsigned i = 0; p->fresh != NULL && i < d->n_started; i++) {
        p->fresh[i] = worker_listener_create(&d->workers[i], p->entry.rt, err, sizeof(err));
        if (p->fresh[i] == NULL)
            break;
        if (i + 1 == d->n_started)
            return 0;
    }
    plan_close_sockets(d, p);
    /* err names the file and the line of the bind key already (listener_socket) */
    /* after [sluice] user no port below 1024 can be bound: the hint saves a search */
    int low_port = d->cfg->user != NULL && net_addr_port(&p->entry.conf.bind) < 1024;
    struct log_field fields[] = {
        LOG_STR("listener", p->entry.conf.name), LOG_STR("error", err),
        LOG_STR("action", p->running != NULL ? "keeping the running listener" : "not added"),
        LOG_STR("hint", "sluice dropped root ([sluice] user): ports below 1024 need a restart")};
    log_emit(&d->log, LOG_LEVEL_ERROR, "reload_listener_failed", fields, low_port ? 4 : 3);
    return -1;
}

/* Whether [registration] registered listener name at start (a reload does not change that). */
static int registered(const struct daemon *d, const char *name)
{
    const struct registration_conf *reg = &d->cfg->registration;
    return reg->line != 0 && registration_conf_chooses(reg, name);
}

static int in_next(const struct config *next, const char *name)
{
    for (size_t j = 0; j < next->n_listeners; j++)
        if (strcmp(next->listeners[j].name, name) == 0)
            return 1;
    return 0;
}

/* What a new version cannot take while running: a log_access without the access log, and the
 * Consul registration of a listener added or moved. */
static void plan_warn(struct daemon *d, const struct listener_entry *running,
                      const struct listener_conf *cl)
{
    struct restart_ctx r = restart_in(d, "listener", cl->name);
    int reg = registered(d, cl->name);

    if (cl->log_access && !d->access_on)
        needs_restart(&r, "log_access", "off (no access log was set up at start)", "on");
    if (reg && running == NULL)
        needs_restart(&r, "(registration)", "not registered", "registered");
    else if (reg && strcmp(running->conf.bind.text, cl->bind.text) != 0)
        needs_restart(&r, "bind (registration)", running->conf.bind.text, cl->bind.text);
}

/* The service a new version of cl serves: its own, or when that did not exist at start (named as
 * needing a restart) the running version's, with want's service set back to match; NULL for a
 * listener that is not running. */
static struct service_rt *plan_service(struct daemon *d, const struct listener_entry *running,
                                       const struct listener_conf *cl, struct listener_conf *want)
{
    size_t svc = 0;

    *want = *cl;
    if (find_service(d->cfg, cl->service, &svc) != NULL)
        return &d->service_rts[svc];
    struct restart_ctx r = restart_in(d, "listener", cl->name);
    needs_restart(&r, "service", running != NULL ? running->conf.service : "absent",
                  cl->service); /* the service did not exist at start */
    if (running == NULL)
        return NULL;
    snprintf(want->service, sizeof(want->service), "%s", running->conf.service);
    return running->rt->service;
}

/* Decides what happens to listener cl of the next file: a new version (new sockets for a new
 * bind), or the running one. Returns 1 when p holds a version to serve, 0 when not served. */
static int plan_listener(struct daemon *d, const struct listener_conf *cl, struct listener_plan *p)
{
    const struct listener_entry *running = running_listener(d, cl->name);
    struct listener_conf want;
    struct listener_acls acls;

    if (reload_listener_acl(cl, &acls) != 0) {
        log_event(
            &d->log, LOG_LEVEL_ERROR, "reload_listener_failed", LOG_STR("listener", cl->name),
            LOG_STR("error", "out of memory for allow/deny"),
            LOG_STR("action", running != NULL ? "keeping the running listener" : "not added"));
        return plan_keep(p, running);
    }
    if (running != NULL && same_listener(running, cl, &acls)) {
        listener_acls_destroy(&acls);
        return plan_keep(p, running);
    }
    struct service_rt *svc = plan_service(d, running, cl, &want);
    if (svc == NULL || (running != NULL && same_listener(running, &want, &acls))) {
        listener_acls_destroy(&acls);
        return plan_keep(p, running);
    }
    size_t slot = running != NULL ? running->rt->index : reload_listener_slot(d, cl->name);
    if (slot == SIZE_MAX) {
        listener_acls_destroy(&acls);
        struct restart_ctx r = restart_in(d, "listener", cl->name);
        needs_restart(&r, "(section)", "absent", "added (no counter slot left)");
        return 0;
    }
    struct listener_rt tmpl;
    reload_listener_fill(&tmpl, &want, d->cfg->path, svc, slot, &acls);
    if (reload_listener_clients(&tmpl, &want, running != NULL ? running->rt : NULL) != 0) {
        listener_acls_destroy(&acls); /* tmpl took them: not published */
        log_event(
            &d->log, LOG_LEVEL_ERROR, "reload_listener_failed", LOG_STR("listener", cl->name),
            LOG_STR("error", "out of memory for the client table"),
            LOG_STR("action", running != NULL ? "keeping the running listener" : "not added"));
        return plan_keep(p, running);
    }
    memset(p, 0, sizeof(*p));
    p->entry = (struct listener_entry){.rt = listener_rt_create(&tmpl),
                                       .conf = reload_listener_kept(&want)};
    p->running = running;
    p->changed = 1;
    if (p->entry.rt == NULL ||
        ((running == NULL || strcmp(running->conf.bind.text, want.bind.text) != 0) &&
         plan_open_sockets(d, p) != 0)) {
        listener_rt_drop(p->entry.rt);
        return plan_keep(p, running);
    }
    plan_warn(d, running, &want);
    return 1;
}

static void plans_destroy(struct daemon *d, struct listener_plan *plans, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        plan_close_sockets(d, &plans[i]);
        listener_rt_drop(plans[i].entry.rt);
    }
    free(plans);
}

static int changes_pending(struct daemon *d)
{
    for (unsigned i = 0; i < d->n_started; i++)
        if (worker_change_pending(&d->workers[i]))
            return 1;
    return 0;
}

/* One change per worker, all allocated before any socket moves into one, so that a failure
 * leaves the plans whole. Each change holds its own reference to every version. */
static struct worker_change **changes_build(struct daemon *d, struct listener_plan *plans, size_t n)
{
    struct worker_change **changes = calloc(d->n_started ? d->n_started : 1, sizeof(*changes));

    for (unsigned w = 0; changes != NULL && w < d->n_started; w++) {
        if ((changes[w] = worker_change_create(n)) == NULL) {
            while (w-- > 0)
                worker_change_destroy(changes[w]);
            free(changes);
            return NULL;
        }
    }
    for (unsigned w = 0; changes != NULL && w < d->n_started; w++) {
        for (size_t k = 0; k < n; k++) {
            listener_rt_hold(plans[k].entry.rt);
            changes[w]->items[k].rt = plans[k].entry.rt;
            changes[w]->items[k].fresh = plans[k].fresh != NULL ? plans[k].fresh[w] : NULL;
            if (plans[k].fresh != NULL)
                plans[k].fresh[w] = NULL;
        }
    }
    return changes;
}

/* Posts every worker its change and waits (bounded) until all applied theirs: from then on a
 * removed listener refuses connections and an added one is watched. */
static int changes_post(struct daemon *d, struct worker_change **changes)
{
    struct timespec until;
    int rc = 0;

    for (unsigned w = 0; w < d->n_started; w++) {
        rc = worker_post_change(&d->workers[w], changes[w]);
        assert(rc == 0); /* the reload checked that nothing was pending */
    }
    free(changes);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += RELOAD_CHANGE_WAIT_MS / 1000;
    pthread_mutex_lock(&d->change_lock);
    while (rc == 0 && changes_pending(d))
        rc = pthread_cond_timedwait(&d->change_cond, &d->change_lock, &until);
    int pending = changes_pending(d);
    pthread_mutex_unlock(&d->change_lock);
    return pending ? -ETIMEDOUT : 0;
}

/* A key of a listener that changed and applies: "[listener:web] idle_timeout: 5m -> 1h". */
static void applied(void *ctx, const char *key, const char *from, const char *to)
{
    log_change(ctx, LOG_LEVEL_INFO, "reload_applied", key, from, to);
}

/* One list of ranges that changed, as range counts (the lists are not kept). */
static void log_applied_ranges(struct restart_ctx *r, const char *what, const struct acl *from,
                               const struct acl *to)
{
    char a[48], b[48];

    if (acl_equal(from, to))
        return;
    snprintf(a, sizeof(a), "%zu ranges", acl_ranges(from));
    snprintf(b, sizeof(b), "%zu ranges", acl_ranges(to));
    applied(r, what, a, b);
}

/* The keys of a changed listener; allow/deny and proxy_trusted as range counts. */
static void log_applied_keys(struct restart_ctx *r, const struct listener_plan *p)
{
    (void)ini_keys_diff(listener_keys, &p->running->conf, &p->entry.conf, applied, r);
    log_applied_ranges(r, "allow/deny", p->running->rt->acl, p->entry.rt->acl);
    log_applied_ranges(r, "proxy_trusted", p->running->rt->trusted, p->entry.rt->trusted);
}

static void log_applied(struct daemon *d, const struct listener_plan *plans, size_t n,
                        const struct config *next)
{
    for (size_t i = 0; i < n; i++) {
        struct restart_ctx r = restart_in(d, "listener", plans[i].entry.conf.name);
        if (plans[i].changed && plans[i].running == NULL)
            applied(&r, "(section)", "absent", "added");
        else if (plans[i].changed)
            log_applied_keys(&r, &plans[i]);
    }
    for (size_t i = 0; i < d->n_listeners; i++) {
        const char *name = d->listeners[i].conf.name;
        if (in_next(next, name))
            continue;
        struct restart_ctx r = restart_in(d, "listener", name);
        applied(&r, "(section)", "present", "removed (open sessions go on)");
        if (registered(d, name))
            needs_restart(&r, "(registration)", "registered", "removed");
    }
}

/* The served table becomes the plans' versions; the admin thread reads it under table_lock. */
static void table_swap(struct daemon *d, struct listener_entry *table, struct listener_plan *plans,
                       size_t n)
{
    for (size_t i = 0; i < n; i++) {
        table[i] = plans[i].entry; /* the plan's reference moves to the table */
        plans[i].entry.rt = NULL;
    }
    pthread_mutex_lock(&d->table_lock);
    struct listener_entry *old = d->listeners;
    size_t n_old = d->n_listeners;
    d->listeners = table;
    d->n_listeners = n;
    pthread_mutex_unlock(&d->table_lock);
    for (size_t i = 0; i < n_old; i++)
        listener_rt_drop(old[i].rt);
    free(old);
}

/* Plans every listener of next, hands each worker its change and waits for them; then the
 * table takes the new versions. Returns NULL, or why nothing changed. */
static const char *listeners_apply(struct daemon *d, const struct config *next)
{
    size_t cap = next->n_listeners ? next->n_listeners : 1, n = 0;
    struct listener_plan *plans = calloc(cap, sizeof(*plans));
    struct listener_entry *table = calloc(cap, sizeof(*table));
    struct worker_change **changes = NULL;

    if (plans != NULL && table != NULL) {
        for (size_t i = 0; i < next->n_listeners; i++)
            n += (size_t)plan_listener(d, &next->listeners[i], &plans[n]);
        changes = changes_build(d, plans, n);
    }
    if (changes == NULL) {
        if (plans != NULL)
            plans_destroy(d, plans, n);
        free(table);
        return "out of memory";
    }
    if (changes_post(d, changes) != 0)
        log_event(&d->log, LOG_LEVEL_WARN, "reload_listeners_slow",
                  LOG_INT("waited_ms", RELOAD_CHANGE_WAIT_MS),
                  LOG_STR("why", "a worker has not applied its listener change yet"));
    log_applied(d, plans, n, next);
    table_swap(d, table, plans, n);
    plans_destroy(d, plans, n);
    return NULL;
}

/* Added, changed and removed listeners apply at once: a kept socket takes the new version (new
 * connections get the new settings, open ones keep theirs), a new bind gets new sockets opened
 * here, a removed one is closed by its workers after they accept what is queued on it. */
static void reload_listeners(struct daemon *d, const struct config *next)
{
    const char *why = changes_pending(d)
                          ? "the workers have not applied the previous listener change yet"
                          : listeners_apply(d, next);
    if (why != NULL)
        log_event(&d->log, LOG_LEVEL_ERROR, "reload_listeners_skipped", LOG_STR("why", why));
}

/* An optional string of [sluice] read at start only (user, group). */
static void restart_if_changed(struct restart_ctx *r, const char *key, const char *from,
                               const char *to)
{
    from = from != NULL ? from : "(none)";
    to = to != NULL ? to : "(none)";
    if (strcmp(from, to) != 0)
        needs_restart(r, key, from, to);
}

/* Logging and the shutdown timeout belong to the main thread and apply at once; the data path's
 * sizes and thread count are fixed at start. */
static void reload_globals(struct daemon *d, const struct config *next)
{
    const struct stream_conf *a = &d->cfg->stream, *b = &next->stream;

    log_configure(&d->log, next->log_level, next->log_format);
    d->cfg->log_level = next->log_level;
    d->cfg->log_format = next->log_format;
    d->cfg->shutdown_timeout_ms = next->shutdown_timeout_ms;
    struct restart_ctx r = restart_in(d, "sluice", NULL);
    if (next->workers != d->cfg->workers) {
        char from[16], to[16];
        snprintf(from, sizeof(from), "%u", d->cfg->workers);
        snprintf(to, sizeof(to), "%u", next->workers);
        needs_restart(&r, "workers", from, to);
    }
    diff_start_only(&r, stream_keys, a, b);
    const char *pid_from = d->cfg->pid_file != NULL ? d->cfg->pid_file : "(none)";
    const char *pid_to = next->pid_file != NULL ? next->pid_file : "(none)";
    if (strcmp(pid_from, pid_to) != 0)
        needs_restart(&r, "pid_file", pid_from, pid_to);
    restart_if_changed(&r, "user", d->cfg->user, next->user);
    restart_if_changed(&r, "group", d->cfg->group, next->group);
}

/* The reload thread: the file, then the owners of static services (thread-safe, and the only
 * state of the reload it touches besides its own fields: d->cfg is read, never written, until
 * reload_finish runs on the main thread after the join). */
static void *reload_thread_main(void *arg)
{
    struct daemon *d = arg;

    d->reload_load_errs = (struct ini_errors){0};
    d->reload_next = NULL;
    d->reload_load_rc = config_load(d->cfg->path, &d->reload_next, &d->reload_load_errs);
    if (d->reload_load_rc == 0 && !atomic_load(&d->draining))
        reload_services(d, d->reload_next);
    uv_async_send(&d->reload_finished);
    return NULL;
}

/* A broken file: every error, once, and the running config stays. */
static void reload_log_failed(struct daemon *d)
{
    const struct ini_errors *errs = &d->reload_load_errs;

    for (size_t i = 0; i < errs->n; i++)
        log_event(&d->log, LOG_LEVEL_ERROR, "config_error", LOG_STR("error", errs->lines[i]));
    log_event(&d->log, LOG_LEVEL_ERROR, "reload_failed", LOG_STR("config", d->cfg->path),
              LOG_INT("errors", errs->n), LOG_STR("action", "keeping the running config"));
    notify_ready(&d->log, "serving; the last reload failed, see the log");
}

/* The admin thread waits in daemon_reload_from_admin for this answer. */
static void reload_answer_admin(struct daemon *d, int rc)
{
    pthread_mutex_lock(&d->reload_lock);
    ini_errors_clear(&d->reload_errs); /* an answer nobody waited for */
    d->reload_errs = d->reload_load_errs;
    d->reload_load_errs = (struct ini_errors){0};
    d->reload_rc = rc;
    d->reload_pending = 0;
    d->reload_done = 1;
    pthread_cond_broadcast(&d->reload_cond);
    pthread_mutex_unlock(&d->reload_lock);
}

void reload_begin(struct daemon *d, int for_admin)
{
    if (d->reload_running) {
        *(for_admin ? &d->reload_admin_again : &d->reload_again) = 1;
        return;
    }
    notify_reloading(&d->log);
    log_event(&d->log, LOG_LEVEL_INFO, "reload_started", LOG_STR("config", d->cfg->path));
    d->reload_running = 1;
    d->reload_for_admin = for_admin;
    int rc = pthread_create(&d->reload_thread, NULL, reload_thread_main, d);
    if (rc != 0) {
        /* no thread: the same work on this one (signals wait, the result is the same) */
        d->reload_thread = pthread_self();
        reload_thread_main(d);
    }
}

/* Joins the thread and applies (or, abandoning, drops) its result. */
static void reload_conclude(struct daemon *d, int abandon)
{
    if (!d->reload_running)
        return;
    if (!pthread_equal(d->reload_thread, pthread_self()))
        pthread_join(d->reload_thread, NULL);
    d->reload_running = 0;
    int rc = d->reload_load_rc;
    if (rc != 0) {
        reload_log_failed(d);
    } else if (abandon || atomic_load(&d->draining)) {
        log_event(&d->log, LOG_LEVEL_INFO, "reload_abandoned", LOG_STR("config", d->cfg->path),
                  LOG_STR("why", "shutting down"));
        rc = -EBUSY;
    } else {
        reload_globals(d, d->reload_next);
        reload_listeners(d, d->reload_next);
        log_event(&d->log, LOG_LEVEL_INFO, "reload_done", LOG_STR("config", d->cfg->path));
        notify_ready(&d->log, "serving");
    }
    config_destroy(d->reload_next);
    d->reload_next = NULL;
    if (d->reload_for_admin)
        reload_answer_admin(d, rc);
    ini_errors_clear(&d->reload_load_errs);
    if (abandon || atomic_load(&d->draining) || (!d->reload_again && !d->reload_admin_again))
        return;
    int admin = d->reload_admin_again; /* one more reload serves both askers */
    d->reload_again = d->reload_admin_again = 0;
    reload_begin(d, admin);
}

void reload_finish(struct daemon *d)
{
    reload_conclude(d, 0);
}

void reload_abandon(struct daemon *d)
{
    d->reload_again = d->reload_admin_again = 0;
    reload_conclude(d, 1); /* the join, the log line and the admin's answer */
}
