/* The daemon's main thread: setup, signals, reload, drain and shutdown. */
#include "daemon.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "balancer.h"
#include "discovery.h"
#include "log.h"
#include "registrar.h"
#include "snapshot.h"
#include "stats.h"
#include "worker.h"

struct proxy {
    struct config *cfg;                 /* running configuration, owned */
    struct proxy_shared shared;         /* what workers share */
    struct listener_rt *listeners;      /* one per cfg listener */
    struct snapshot_service **services; /* one per cfg service, same order */
    struct worker *workers;             /* n_workers */
    unsigned n_workers;                 /* workers */
    unsigned n_inited;                  /* workers worker_init was called on */
    unsigned n_started;                 /* workers whose thread runs */
    atomic_uint n_exited;               /* workers whose loop ended */
    atomic_uint n_unlistened;           /* workers whose listening sockets are closed */
    uv_async_t unlistened;              /* a worker closed its listening sockets */
    uv_loop_t *loop;                    /* main loop */
    uv_signal_t signals[4];             /* TERM, INT, HUP, USR1 */
    uv_timer_t shutdown_timer;          /* shutdown_timeout */
    uv_async_t worker_exited;           /* a worker ended */
    int draining;                       /* shutdown under way */
    int said_unlistened;                /* listeners_closed was logged */
    struct discovery *discovery;        /* Consul watches; NULL without consul services */
    struct registrar *registrar;        /* Consul registrations; NULL without [registration] */
    struct logger log;                  /* every event of this daemon */
};

static const int proxy_signals[4] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};

/* Logs every error line of errs as a config_error event. */
static void proxy_log_config_errors(struct proxy *p, const struct config_errors *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        log_event(&p->log, LOG_LEVEL_ERROR, "config_error", LOG_STR("error", errs->lines[i]));
}

/* Many sessions need two descriptors each (plus pipes): use all the hard limit allows. Returns
 * the soft limit now in force. */
static rlim_t raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return RLIM_INFINITY;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        (void)getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

/* A session holds two sockets; accepting more than the descriptor limit can carry would only
 * turn into failed connects. Like HAProxy, lower the cap to fit and say so. Pipes are not
 * counted: without a descriptor for one, a direction copies instead of splicing. */
static uint32_t fit_max_connections(struct proxy *p)
{
    const struct config *cfg = p->cfg;
    rlim_t limit = raise_fd_limit();
    rlim_t reserve = 32 + (rlim_t)cfg->workers * (8 + cfg->n_listeners);
    rlim_t fit = limit > reserve + 2 ? (limit - reserve) / 2 : 1;
    if (limit == RLIM_INFINITY || fit >= cfg->max_connections)
        return cfg->max_connections;
    log_event(&p->log, LOG_LEVEL_WARN, "max_connections_lowered",
              LOG_INT("configured", cfg->max_connections), LOG_INT("effective", fit),
              LOG_INT("nofile", limit),
              LOG_STR("why", "two descriptors per connection must fit RLIMIT_NOFILE"));
    return (uint32_t)fit;
}

/* --- services ----------------------------------------------------------------------------- */

static int service_publish_static(struct proxy *p, struct snapshot_service *svc,
                                  const struct config_service *cs)
{
    struct snapshot_spec *specs = calloc(cs->n_backends ? cs->n_backends : 1, sizeof(*specs));
    if (specs == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < cs->n_backends; i++)
        specs[i] =
            (struct snapshot_spec){.addr = cs->backends[i].addr, .weight = cs->backends[i].weight};
    int rc = snapshot_publish(svc, balancer_for(cs->balance), specs, cs->n_backends);
    free(specs);
    if (rc == 0)
        log_event(&p->log, LOG_LEVEL_INFO, "service_published", LOG_STR("service", cs->name),
                  LOG_STR("balance", config_balance_name(cs->balance)),
                  LOG_INT("instances", cs->n_backends));
    return rc;
}

static int proxy_setup_services(struct proxy *p)
{
    p->services = calloc(p->cfg->n_services ? p->cfg->n_services : 1, sizeof(*p->services));
    if (p->services == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < p->cfg->n_services; i++) {
        const struct config_service *cs = &p->cfg->services[i];
        p->services[i] = snapshot_service_create(cs->name, p->n_workers);
        if (p->services[i] == NULL)
            return -ENOMEM;
        if (cs->discovery == CONFIG_DISCOVERY_STATIC &&
            service_publish_static(p, p->services[i], cs) != 0)
            return -ENOMEM;
    }
    return 0;
}

static int proxy_setup_listeners(struct proxy *p)
{
    p->listeners = calloc(p->cfg->n_listeners ? p->cfg->n_listeners : 1, sizeof(*p->listeners));
    if (p->listeners == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < p->cfg->n_listeners; i++) {
        const struct config_listener *cl = &p->cfg->listeners[i];
        p->listeners[i] = (struct listener_rt){
            .name = cl->name,
            .bind = cl->bind,
            .service = p->services[cl->service_index],
            .connect_timeout_ms = cl->connect_timeout_ms,
            .idle_timeout_ms = cl->idle_timeout_ms,
            .retries = cl->retries,
            .backlog = cl->backlog,
        };
    }
    p->shared = (struct proxy_shared){
        .max_connections = fit_max_connections(p),
        .listeners = p->listeners,
        .n_listeners = p->cfg->n_listeners,
        .splice = p->cfg->splice,
        .pipe_size = p->cfg->pipe_size,
        .buffer_size = p->cfg->buffer_size,
        .log = &p->log,
    };
    return 0;
}

/* --- workers ------------------------------------------------------------------------------ */

static void on_worker_unlisten(struct worker *w)
{
    struct proxy *p = w->data;
    atomic_fetch_add(&p->n_unlistened, 1);
    uv_async_send(&p->unlistened);
}

static void on_worker_exit(struct worker *w)
{
    struct proxy *p = w->data;
    atomic_fetch_add(&p->n_exited, 1);
    uv_async_send(&p->worker_exited);
}

static int proxy_start_workers(struct proxy *p)
{
    char err[256];
    p->workers = calloc(p->n_workers, sizeof(*p->workers));
    if (p->workers == NULL)
        return -ENOMEM;
    for (unsigned i = 0; i < p->n_workers; i++) {
        p->n_inited++;
        int rc = worker_init(&p->workers[i], i, &p->shared, err, sizeof(err));
        if (rc != 0) {
            log_event(&p->log, LOG_LEVEL_ERROR, "startup_failed", LOG_STR("error", err));
            return rc;
        }
        p->workers[i].on_exit = on_worker_exit;
        p->workers[i].on_unlisten = on_worker_unlisten;
        p->workers[i].data = p;
    }
    for (unsigned i = 0; i < p->n_workers; i++) {
        if (worker_start(&p->workers[i]) != 0)
            return -EAGAIN;
        p->n_started++;
    }
    return 0;
}

static void proxy_log_stats(struct proxy *p, const char *event)
{
    struct stats total;
    memset(&total, 0, sizeof(total));
    for (unsigned i = 0; i < p->n_started; i++)
        stats_accumulate(&total, &p->workers[i].stats);
    unsigned n = stats_count();
    struct log_field fields[64];
    fields[0] = LOG_INT("open", atomic_load(&p->shared.open_sessions));
    for (unsigned i = 0; i < n && i + 1 < 64; i++)
        fields[i + 1] = LOG_INT(stats_name(i), stats_value(&total, i));
    log_emit(&p->log, LOG_LEVEL_INFO, event, fields, n + 1 < 64 ? n + 1 : 64);
}

/* --- consul ------------------------------------------------------------------------------- */

/* Discovery starts before the workers accept (the first sets arrive sooner); registration after
 * the listeners are bound, so that the agent's first TCP check can pass. */
static int proxy_start_discovery(struct proxy *p)
{
    char err[512] = "";
    int rc = discovery_create(p->cfg, p->services, &p->log, &p->discovery, err, sizeof(err));

    if (rc == 0 && p->discovery != NULL)
        rc = discovery_start(p->discovery);
    if (rc != 0)
        log_event(&p->log, LOG_LEVEL_ERROR, "startup_failed", LOG_STR("component", "discovery"),
                  LOG_STR("error", err[0] != '\0' ? err : strerror(-rc)));
    return rc;
}

static int proxy_start_registrar(struct proxy *p)
{
    char err[512] = "";
    int rc = registrar_create(p->cfg, &p->log, &p->registrar, err, sizeof(err));

    if (rc == 0 && p->registrar != NULL)
        rc = registrar_start(p->registrar);
    if (rc != 0)
        log_event(&p->log, LOG_LEVEL_ERROR, "startup_failed", LOG_STR("component", "registrar"),
                  LOG_STR("error", err[0] != '\0' ? err : strerror(-rc)));
    return rc;
}

/* First step of a shutdown: leave Consul (deregister, so that clients stop sending new work
 * here) and stop watching it; draining follows. */
static void proxy_leave_consul(struct proxy *p)
{
    registrar_stop(p->registrar);
    discovery_stop(p->discovery);
}

static void proxy_log_discovery(struct proxy *p)
{
    struct discovery_status st;

    discovery_status_get(p->discovery, &st);
    if (st.state == DISCOVERY_OFF)
        return;
    log_event(&p->log, LOG_LEVEL_INFO, "discovery_stats",
              LOG_STR("state", discovery_state_name(st.state)), LOG_INT("watches", st.watches),
              LOG_INT("synced", st.synced), LOG_INT("failing", st.failing),
              LOG_INT("degraded_ms", st.degraded_ms), LOG_INT("requests", st.requests),
              LOG_INT("errors", st.errors), LOG_INT("publishes", st.publishes),
              LOG_INT("unchanged", st.unchanged), LOG_INT("watchdog", st.watchdog),
              LOG_INT("degraded", st.degraded), LOG_INT("acl_denied", st.acl_denied),
              LOG_INT("rate_limited", st.rate_limited), LOG_STR("last_error", st.last_error));
}

/* --- signals ------------------------------------------------------------------------------ */

static void proxy_close_handles(struct proxy *p)
{
    for (size_t i = 0; i < 4; i++)
        uv_close((uv_handle_t *)&p->signals[i], NULL);
    uv_close((uv_handle_t *)&p->shutdown_timer, NULL);
    uv_close((uv_handle_t *)&p->worker_exited, NULL);
    uv_close((uv_handle_t *)&p->unlistened, NULL);
}

/* Once every worker has closed its sockets no new connection can arrive: worth a line, since
 * from then on a connect is refused by the kernel. */
static void on_unlistened(uv_async_t *a)
{
    struct proxy *p = a->data;
    if (atomic_load(&p->n_unlistened) == p->n_started && !p->said_unlistened) {
        p->said_unlistened = 1;
        log_event(&p->log, LOG_LEVEL_INFO, "listeners_closed",
                  LOG_INT("open", atomic_load(&p->shared.open_sessions)));
    }
}

static void on_worker_exited(uv_async_t *a)
{
    struct proxy *p = a->data;
    if (atomic_load(&p->n_exited) == p->n_started && !uv_is_closing((uv_handle_t *)a)) {
        on_unlistened(&p->unlistened); /* both wake-ups may land in one loop turn */
        proxy_close_handles(p);
    }
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    struct proxy *p = t->data;
    log_event(&p->log, LOG_LEVEL_WARN, "shutdown_timeout",
              LOG_INT("open", atomic_load(&p->shared.open_sessions)));
    for (unsigned i = 0; i < p->n_started; i++)
        worker_command(&p->workers[i], WORKER_STOP);
}

static void proxy_drain(struct proxy *p, const char *signal_name)
{
    if (p->draining) {
        /* a second signal: the operator does not want to wait */
        on_shutdown_timeout(&p->shutdown_timer);
        return;
    }
    p->draining = 1;
    log_event(&p->log, LOG_LEVEL_INFO, "shutdown_started", LOG_STR("signal", signal_name),
              LOG_INT("open", atomic_load(&p->shared.open_sessions)),
              LOG_INT("timeout_ms", p->cfg->shutdown_timeout_ms));
    proxy_leave_consul(p);
    for (unsigned i = 0; i < p->n_started; i++)
        worker_command(&p->workers[i], WORKER_DRAIN);
    uv_timer_start(&p->shutdown_timer, on_shutdown_timeout, p->cfg->shutdown_timeout_ms, 0);
}

static void reload_needs_restart(const struct proxy *p, const char *kind, const char *name,
                                 const char *why)
{
    log_event(&p->log, LOG_LEVEL_WARN, "reload_needs_restart", LOG_STR(kind, name),
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

static const struct config_listener *find_listener(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (strcmp(cfg->listeners[i].name, name) == 0)
            return &cfg->listeners[i];
    return NULL;
}

/* Static services swap in their new instances, weights and balancer; anything else about the
 * service set needs a restart, and the log says so rather than half-applying it. */
static void proxy_apply_services(struct proxy *p, const struct config *next)
{
    size_t j = 0;
    for (size_t i = 0; i < next->n_services; i++) {
        const struct config_service *cs = &next->services[i];
        const struct config_service *running = find_service(p->cfg, cs->name, &j);
        if (running == NULL)
            reload_needs_restart(p, "service", cs->name, "new service");
        else if (running->discovery != cs->discovery)
            reload_needs_restart(p, "service", cs->name, "discovery changed");
        else if (cs->discovery == CONFIG_DISCOVERY_STATIC)
            (void)service_publish_static(p, p->services[j], cs);
    }
    for (size_t i = 0; i < p->cfg->n_services; i++)
        if (find_service(next, p->cfg->services[i].name, &j) == NULL)
            reload_needs_restart(p, "service", p->cfg->services[i].name, "removed, still served");
}

static int listener_changed(const struct config_listener *a, const struct config_listener *b)
{
    return strcmp(a->bind.text, b->bind.text) != 0 || strcmp(a->service, b->service) != 0 ||
           a->connect_timeout_ms != b->connect_timeout_ms ||
           a->idle_timeout_ms != b->idle_timeout_ms || a->retries != b->retries ||
           a->backlog != b->backlog;
}

/* Workers read listener settings without synchronisation, so they stay as they started. */
static void proxy_check_listeners(const struct proxy *p, const struct config *next)
{
    for (size_t i = 0; i < next->n_listeners; i++) {
        const struct config_listener *cl = &next->listeners[i];
        const struct config_listener *running = find_listener(p->cfg, cl->name);
        if (running == NULL)
            reload_needs_restart(p, "listener", cl->name, "new listener");
        else if (listener_changed(running, cl))
            reload_needs_restart(p, "listener", cl->name, "settings changed");
    }
    for (size_t i = 0; i < p->cfg->n_listeners; i++)
        if (find_listener(next, p->cfg->listeners[i].name) == NULL)
            reload_needs_restart(p, "listener", p->cfg->listeners[i].name, "removed, still open");
}

/* Logging and the shutdown timeout belong to the main thread and apply at once; the data path's
 * sizes and thread count are fixed at start. */
static void proxy_apply_globals(struct proxy *p, const struct config *next)
{
    log_configure(&p->log, next->log_level, next->log_format);
    p->cfg->log_level = next->log_level;
    p->cfg->log_format = next->log_format;
    p->cfg->shutdown_timeout_ms = next->shutdown_timeout_ms;
    if (next->workers != p->cfg->workers || next->max_connections != p->cfg->max_connections ||
        next->splice != p->cfg->splice || next->pipe_size != p->cfg->pipe_size ||
        next->buffer_size != p->cfg->buffer_size)
        reload_needs_restart(p, "section", "sluice",
                             "workers, max_connections, splice, pipe_size or buffer_size changed");
}

/* Applies what a reload can change while running and names what needs a restart. */
static void proxy_apply(struct proxy *p, const struct config *next)
{
    proxy_apply_globals(p, next);
    proxy_apply_services(p, next);
    proxy_check_listeners(p, next);
}

static void proxy_reload(struct proxy *p)
{
    struct config *next = NULL;
    struct config_errors errs = {0};
    log_event(&p->log, LOG_LEVEL_INFO, "reload_started", LOG_STR("config", p->cfg->path));
    int rc = config_load(p->cfg->path, &next, &errs);
    if (rc != 0) {
        proxy_log_config_errors(p, &errs);
        log_event(&p->log, LOG_LEVEL_ERROR, "reload_failed", LOG_STR("config", p->cfg->path),
                  LOG_INT("errors", errs.n), LOG_STR("action", "keeping the running config"));
        config_errors_clear(&errs);
        return;
    }
    proxy_apply(p, next);
    config_destroy(next);
    log_event(&p->log, LOG_LEVEL_INFO, "reload_done", LOG_STR("config", p->cfg->path));
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct proxy *p = h->data;
    if (signum == SIGHUP && !p->draining)
        proxy_reload(p);
    else if (signum == SIGUSR1) {
        proxy_log_stats(p, "stats");
        proxy_log_discovery(p);
    } else if (signum == SIGTERM || signum == SIGINT)
        proxy_drain(p, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static int proxy_setup_loop(struct proxy *p)
{
    p->loop = uv_default_loop();
    for (size_t i = 0; i < 4; i++) {
        uv_signal_init(p->loop, &p->signals[i]);
        p->signals[i].data = p;
        if (uv_signal_start(&p->signals[i], on_signal, proxy_signals[i]) != 0)
            return -EINVAL;
    }
    uv_timer_init(p->loop, &p->shutdown_timer);
    p->shutdown_timer.data = p;
    uv_async_init(p->loop, &p->worker_exited, on_worker_exited);
    p->worker_exited.data = p;
    uv_async_init(p->loop, &p->unlistened, on_unlistened);
    p->unlistened.data = p;
    return 0;
}

/* --- run ---------------------------------------------------------------------------------- */

static void proxy_teardown(struct proxy *p)
{
    /* before the services: the discovery thread publishes into them */
    registrar_destroy(p->registrar);
    discovery_destroy(p->discovery);
    for (unsigned i = 0; i < p->n_inited; i++) {
        if (i < p->n_started)
            worker_join(&p->workers[i]);
        else
            worker_destroy(&p->workers[i]);
    }
    free(p->workers);
    for (size_t i = 0; p->services != NULL && i < p->cfg->n_services; i++)
        snapshot_service_destroy(p->services[i]);
    free(p->services);
    free(p->listeners);
    if (p->loop != NULL)
        uv_loop_close(p->loop);
    config_destroy(p->cfg);
}

static void proxy_log_started(const struct proxy *p)
{
    for (size_t i = 0; i < p->cfg->n_listeners; i++)
        log_event(&p->log, LOG_LEVEL_INFO, "listener_started",
                  LOG_STR("listener", p->listeners[i].name),
                  LOG_STR("bind", p->listeners[i].bind.text),
                  LOG_STR("service", p->cfg->listeners[i].service));
    log_event(&p->log, LOG_LEVEL_INFO, "started", LOG_STR("version", SLUICE_VERSION),
              LOG_INT("workers", p->n_workers), LOG_INT("pid", getpid()),
              LOG_INT("max_connections", p->shared.max_connections));
}

int proxy_run(struct config *cfg)
{
    struct proxy p = {.cfg = cfg, .n_workers = cfg->workers};
    log_init(&p.log, STDERR_FILENO);
    log_configure(&p.log, cfg->log_level, cfg->log_format);
    int rc = proxy_setup_services(&p);
    if (rc == 0)
        rc = proxy_setup_listeners(&p);
    if (rc == 0)
        rc = proxy_setup_loop(&p);
    if (rc == 0)
        rc = proxy_start_discovery(&p);
    if (rc == 0)
        rc = proxy_start_workers(&p);
    if (rc == 0)
        rc = proxy_start_registrar(&p);
    if (rc != 0) {
        log_event(&p.log, LOG_LEVEL_ERROR, "startup_failed", LOG_STR("error", strerror(-rc)));
        for (unsigned i = 0; i < p.n_started; i++)
            worker_command(&p.workers[i], WORKER_STOP);
        if (p.loop != NULL) {
            proxy_close_handles(&p);
            uv_run(p.loop, UV_RUN_DEFAULT);
        }
        proxy_teardown(&p);
        return 1;
    }
    proxy_log_started(&p);
    uv_run(p.loop, UV_RUN_DEFAULT);
    proxy_log_stats(&p, "stopped");
    proxy_teardown(&p);
    return 0;
}
