/* SIGHUP: what a reload applies while running (instances, weights and balancers, logging, the
 * shutdown timeout) and what it names as needing a restart, rather than half-applying it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
    for (size_t i = 0; i < b->n; i++)
        members[i] = (struct owner_member){.addr = b->items[i].addr, .weight = b->items[i].weight};
    int rc = owner_set_members(o, members, b->n);
    free(members);
    if (rc > 0)
        log_event(&d->log, LOG_LEVEL_INFO, "service_published", LOG_STR("service", cs->name),
                  LOG_STR("balance", cs->lb.balance->name), LOG_INT("instances", b->n));
    return rc < 0 ? rc : 0;
}

/* Where a change that needs a restart was seen, for its log lines. */
struct restart_ctx {
    struct daemon *d;
    char section[INI_NAME_MAX + 16]; /* "[sluice]", "[listener:web]", ... */
};

/* One line per key: "[sluice] workers: 2 -> 4" (from or to "absent" for a section). */
static void needs_restart(void *ctx, const char *key, const char *from, const char *to)
{
    const struct restart_ctx *r = ctx;
    char change[INI_NAME_MAX + 600];

    snprintf(change, sizeof(change), "%s %s: %s -> %s", r->section, key, from, to);
    log_event(&r->d->log, LOG_LEVEL_WARN, "reload_needs_restart", LOG_STR("section", r->section),
              LOG_STR("key", key), LOG_STR("from", from), LOG_STR("to", to),
              LOG_STR("change", change));
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
    for (size_t i = 0; i < cfg->n_services; i++) {
        if (strcmp(cfg->services[i].name, name) == 0) {
            *index = i;
            return &cfg->services[i];
        }
    }
    return NULL;
}

static const struct listener_conf *find_listener(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (strcmp(cfg->listeners[i].name, name) == 0)
            return &cfg->listeners[i];
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
                (void)reload_static_service(d, d->services[j], cs);
        }
    }
    for (size_t i = 0; i < d->cfg->n_services; i++)
        if (find_service(next, d->cfg->services[i].name, &j) == NULL) {
            struct restart_ctx r = restart_in(d, "service", d->cfg->services[i].name);
            needs_restart(&r, "(section)", "present", "removed (still served)");
        }
}

/* Workers read listener settings without synchronisation, so they stay as they started. */
static void reload_listeners(struct daemon *d, const struct config *next)
{
    for (size_t i = 0; i < next->n_listeners; i++) {
        const struct listener_conf *cl = &next->listeners[i];
        const struct listener_conf *running = find_listener(d->cfg, cl->name);
        struct restart_ctx r = restart_in(d, "listener", cl->name);
        if (running == NULL)
            needs_restart(&r, "(section)", "absent", "added");
        else
            diff_start_only(&r, listener_keys, running, cl);
    }
    for (size_t i = 0; i < d->cfg->n_listeners; i++) {
        if (find_listener(next, d->cfg->listeners[i].name) == NULL) {
            struct restart_ctx r = restart_in(d, "listener", d->cfg->listeners[i].name);
            needs_restart(&r, "(section)", "present", "removed (still open)");
        }
    }
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
}

void reload_apply(struct daemon *d, const struct config *next)
{
    reload_globals(d, next);
    reload_services(d, next);
    reload_listeners(d, next);
}

int reload_run(struct daemon *d, struct ini_errors *out)
{
    struct config *next = NULL;
    struct ini_errors errs = {0};

    notify_reloading(&d->log);
    log_event(&d->log, LOG_LEVEL_INFO, "reload_started", LOG_STR("config", d->cfg->path));
    int rc = config_load(d->cfg->path, &next, &errs);
    if (rc != 0) {
        for (size_t i = 0; i < errs.n; i++)
            log_event(&d->log, LOG_LEVEL_ERROR, "config_error", LOG_STR("error", errs.lines[i]));
        log_event(&d->log, LOG_LEVEL_ERROR, "reload_failed", LOG_STR("config", d->cfg->path),
                  LOG_INT("errors", errs.n), LOG_STR("action", "keeping the running config"));
        if (out != NULL)
            *out = errs; /* the caller frees them */
        else
            ini_errors_clear(&errs);
        notify_ready(&d->log, "serving; the last reload failed, see the log");
        return rc;
    }
    reload_apply(d, next);
    config_destroy(next);
    log_event(&d->log, LOG_LEVEL_INFO, "reload_done", LOG_STR("config", d->cfg->path));
    notify_ready(&d->log, "serving");
    return 0;
}
