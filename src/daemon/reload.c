/* SIGHUP: what a reload applies while running (instances, weights and balancers, logging, the
 * shutdown timeout) and what it names as needing a restart, rather than half-applying it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"
#include "daemon_int.h"

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

static void reload_needs_restart(struct daemon *d, const char *kind, const char *name,
                                 const char *why)
{
    log_event(&d->log, LOG_LEVEL_WARN, "reload_needs_restart", LOG_STR(kind, name),
              LOG_STR("why", why));
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

/* Every service's owner takes its new balancer, and a static one its new instances and weights;
 * anything else about the service set needs a restart. */
static void reload_services(struct daemon *d, const struct config *next)
{
    size_t j = 0;
    for (size_t i = 0; i < next->n_services; i++) {
        const struct config_service *cs = &next->services[i];
        const struct config_service *running = find_service(d->cfg, cs->name, &j);
        if (running == NULL) {
            reload_needs_restart(d, "service", cs->name, "new service");
        } else if (running->discovery != cs->discovery) {
            reload_needs_restart(d, "service", cs->name, "discovery changed");
        } else {
            owner_set_policy(d->services[j], &cs->lb.policy);
            (void)owner_set_balancer(d->services[j], cs->lb.balance);
            if (memcmp(&running->stream, &cs->stream, sizeof(cs->stream)) != 0)
                reload_needs_restart(d, "service", cs->name,
                                     "queue_size, queue_timeout, drain_timeout or "
                                     "max_connection_lifetime changed");
            if (!health_conf_equal(&running->check, &cs->check))
                reload_needs_restart(d, "service", cs->name, "health check settings changed");
            if (cs->discovery == CONFIG_DISCOVERY_STATIC)
                (void)reload_static_service(d, d->services[j], cs);
        }
    }
    for (size_t i = 0; i < d->cfg->n_services; i++)
        if (find_service(next, d->cfg->services[i].name, &j) == NULL)
            reload_needs_restart(d, "service", d->cfg->services[i].name, "removed, still served");
}

static int listener_changed(const struct listener_conf *a, const struct listener_conf *b)
{
    return strcmp(a->bind.text, b->bind.text) != 0 || strcmp(a->service, b->service) != 0 ||
           a->connect_timeout_ms != b->connect_timeout_ms ||
           a->idle_timeout_ms != b->idle_timeout_ms || a->retries != b->retries ||
           a->backlog != b->backlog;
}

/* Workers read listener settings without synchronisation, so they stay as they started. */
static void reload_listeners(struct daemon *d, const struct config *next)
{
    for (size_t i = 0; i < next->n_listeners; i++) {
        const struct listener_conf *cl = &next->listeners[i];
        const struct listener_conf *running = find_listener(d->cfg, cl->name);
        if (running == NULL)
            reload_needs_restart(d, "listener", cl->name, "new listener");
        else if (listener_changed(running, cl))
            reload_needs_restart(d, "listener", cl->name, "settings changed");
    }
    for (size_t i = 0; i < d->cfg->n_listeners; i++)
        if (find_listener(next, d->cfg->listeners[i].name) == NULL)
            reload_needs_restart(d, "listener", d->cfg->listeners[i].name, "removed, still open");
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
    if (next->workers != d->cfg->workers || a->max_connections != b->max_connections ||
        a->splice != b->splice || a->pipe_size != b->pipe_size || a->buffer_size != b->buffer_size)
        reload_needs_restart(d, "section", "sluice",
                             "workers, max_connections, splice, pipe_size or buffer_size changed");
    if (strcmp(d->cfg->pid_file != NULL ? d->cfg->pid_file : "",
               next->pid_file != NULL ? next->pid_file : "") != 0)
        reload_needs_restart(d, "section", "sluice", "pid_file changed");
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
        return rc;
    }
    reload_apply(d, next);
    config_destroy(next);
    log_event(&d->log, LOG_LEVEL_INFO, "reload_done", LOG_STR("config", d->cfg->path));
    return 0;
}
