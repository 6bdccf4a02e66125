/* The daemon's main thread: start-up (each step undone when a later one fails), signals,
 * drain and shutdown. */
#include "daemon.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "acl.h"
#include "admin.h"
#include "balancer.h"
#include "clock.h"
#include "daemon_int.h"
#include "listen_lock.h"
#include "notify.h"
#include "stats.h"
#include "privileges.h"
#include "takeover.h"

#define FAULT_ENV "SLUICE_FAULT" /* test hook: the start-up step named here fails */

static const int daemon_signals[DAEMON_SIGNALS] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};

/* A start-up step about to run: fails it (as out of memory) when the test hook names it. */
static int step_fault(const struct daemon *d, const char *step)
{
    return d->fault != NULL && strcmp(d->fault, step) == 0 ? -ENOMEM : 0;
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
static uint32_t fit_max_connections(struct daemon *d)
{
    const struct config *cfg = d->cfg;
    rlim_t limit = raise_fd_limit();
    rlim_t reserve = 32 + (rlim_t)cfg->workers * (8 + cfg->n_listeners);
    rlim_t fit = limit > reserve + 2 ? (limit - reserve) / 2 : 1;
    if (limit == RLIM_INFINITY || fit >= cfg->stream.max_connections)
        return cfg->stream.max_connections;
    log_event(&d->log, LOG_LEVEL_WARN, "max_connections_lowered",
              LOG_INT("configured", cfg->stream.max_connections), LOG_INT("effective", fit),
              LOG_INT("nofile", limit),
              LOG_STR("why", "two descriptors per connection must fit RLIMIT_NOFILE"));
    return (uint32_t)fit;
}

/* --- one sluice per listener -------------------------------------------------------------- */

static void on_claim_knock(uv_poll_t *poll, int status, int events)
{
    struct listen_claim *c = poll->data;
    (void)status;
    (void)events;
    takeover_on_knock(c->daemon, c);
}

/* Why listener cl could not be claimed, in the config checker's FILE:LINE: key: form. */
static void claim_refused(struct daemon *d, const struct listener_conf *cl, int rc, pid_t holder)
{
    char *out = d->step_error;
    size_t len = sizeof(d->step_error);
    const char *file = d->cfg->path;

    if (rc == -EADDRINUSE && holder > 0)
        snprintf(out, len, "%s:%d: bind: %s: already served by sluice pid %d (listener %s)", file,
                 cl->bind_line, cl->bind.text, (int)holder, cl->name);
    else if (rc == -EADDRINUSE)
        snprintf(out, len,
                 "%s:%d: bind: %s: already served by another sluice, pid unknown (listener %s)",
                 file, cl->bind_line, cl->bind.text, cl->name);
    else
        snprintf(out, len, "%s:%d: bind: %s: cannot claim the address: %s (listener %s)", file,
                 cl->bind_line, cl->bind.text, uv_strerror(rc), cl->name);
}

/* --takeover: listener i's claim and sockets from the sluice holding it (1), or nothing (0:
 * nobody serves it, so it is bound as usual, with a warning), or an error. */
static int daemon_take_listener(struct daemon *d, size_t i, int *fd)
{
    int rc = takeover_listener(d, i, fd);

    if (rc == 0)
        log_event(&d->log, LOG_LEVEL_WARN, "takeover_nothing_to_take",
                  LOG_STR("listener", d->cfg->listeners[i].name),
                  LOG_STR("bind", d->cfg->listeners[i].bind.text),
                  LOG_STR("action", "no sluice serves it: binding it"));
    return rc;
}

/* Where --takeover keeps what it receives: per listener, the old process's connection and
 * sockets. */
static int daemon_setup_takeover(struct daemon *d)
{
    size_t n = d->cfg->n_listeners ? d->cfg->n_listeners : 1;

    d->takeovers = calloc(n, sizeof(*d->takeovers));
    d->inherited = calloc(n, sizeof(*d->inherited));
    if (d->takeovers == NULL || d->inherited == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        d->takeovers[i].conn = -1;
    return 0;
}

/* Claims every listener's address before anything else starts, so that a second sluice on the
 * same config stops at once and names the one serving, where SO_REUSEPORT would let it share the
 * ports silently. A --takeover start receives the claim from its holder instead, with the
 * listening sockets (takeover.h): both processes hold the claim until the old one exits, so no
 * third start finds the name free in between. */
static int daemon_claim_listeners(struct daemon *d)
{
    const struct config *cfg = d->cfg;

    d->claims = calloc(cfg->n_listeners ? cfg->n_listeners : 1, sizeof(*d->claims));
    if (d->claims == NULL || (d->takeover && daemon_setup_takeover(d) != 0))
        return -ENOMEM;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        struct listen_claim *c = &d->claims[i];
        pid_t holder;
        int rc = d->takeover ? daemon_take_listener(d, i, &c->fd) : 0;
        if (rc < 0)
            return rc;
        if (rc == 0 && (c->fd = listen_lock_acquire(&cfg->listeners[i].bind, &holder)) < 0) {
            claim_refused(d, &cfg->listeners[i], c->fd, holder);
            return c->fd;
        }
        if ((rc = uv_poll_init(&d->loop, &c->poll, c->fd)) != 0) {
            listen_lock_release(c->fd);
            return rc;
        }
        d->n_claims++;
        c->poll.data = c;
        c->daemon = d;
        c->index = i;
        if ((rc = uv_poll_start(&c->poll, UV_READABLE, on_claim_knock)) != 0)
            return rc;
    }
    return 0;
}

/* Gives the claims up: once no worker accepts, a new sluice may start on the same addresses
 * while this one still drains. */
static void daemon_release_claims(struct daemon *d)
{
    for (size_t i = 0; i < d->n_claims; i++) {
        struct listen_claim *c = &d->claims[i];
        if (c->fd < 0)
            continue;
        uv_close((uv_handle_t *)&c->poll, NULL); /* stops watching fd before it closes */
        listen_lock_release(c->fd);
        c->fd = -1;
    }
}

/* --- pid file ----------------------------------------------------------------------------- */

/* pid_file, once every listener accepts: written next to its place and renamed there, so that
 * an init system never reads half a number. */
static int daemon_write_pid_file(struct daemon *d)
{
    const char *path = d->cfg->pid_file;
    char tmp[4096], text[32];
    int n = snprintf(text, sizeof(text), "%d\n", (int)getpid()), fd = -1, rc = 0;
    ssize_t written;

    if (path == NULL)
        return 0;
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
        rc = -ENAMETOOLONG;
    else if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
        rc = -errno;
    else if ((written = write(fd, text, (size_t)n)) != n)
        rc = written < 0 ? -errno : -EIO;
    if (fd >= 0 && close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0) {
        if (fd >= 0)
            unlink(tmp);
        snprintf(d->step_error, sizeof(d->step_error), "%s:%d: pid_file: %s: %s", d->cfg->path,
                 d->cfg->pid_file_line, path, uv_strerror(rc));
        return rc;
    }
    d->pid_written = 1;
    return 0;
}

/* [sluice] user: the last start-up step, once every listener, the admin socket and the pid file
 * are set up (they may need root: ports below 1024, /run). Without user, root is worth a
 * warning: every bug would then be root's. */
static int daemon_drop_privileges(struct daemon *d)
{
    const struct config *cfg = d->cfg;
    struct privileges p;
    int rc;

    if (cfg->user == NULL) {
        if (geteuid() == 0)
            log_event(&d->log, LOG_LEVEL_WARN, "running_as_root",
                      LOG_STR("why", "[sluice] user is not set"),
                      LOG_STR("hint", "set user (and group) to an unprivileged account, such as "
                                      "user = nobody: sluice drops root once it is set up"));
        return 0;
    }
    if ((rc = privileges_resolve(cfg->user, cfg->group, &p, d->step_error,
                                 sizeof(d->step_error))) != 0)
        return rc;
    if (geteuid() != 0 && getuid() == p.uid && getgid() == p.gid) {
        /* started as that user already: nothing to drop, but still nothing extra to keep */
        rc = privileges_verify(&p, d->step_error, sizeof(d->step_error));
    } else if (geteuid() != 0) {
        snprintf(d->step_error, sizeof(d->step_error),
                 "becoming user %s needs root, and sluice runs as uid %u", cfg->user,
                 (unsigned)geteuid());
        return -EPERM;
    } else {
        rc = privileges_drop(&p, d->step_error, sizeof(d->step_error));
    }
    if (rc != 0)
        return rc;
    log_event(&d->log, LOG_LEVEL_INFO, "privileges_dropped", LOG_STR("user", p.user),
              LOG_STR("group", p.group), LOG_INT("uid", p.uid), LOG_INT("gid", p.gid),
              LOG_STR("supplementary_groups", "none"));
    return 0;
}

/* Whether pid_file still holds our pid: after a takeover the successor has written its own,
 * which the old process's exit must not remove. */
static int pid_file_is_ours(const char *path)
{
    char text[32] = "";
    FILE *f = fopen(path, "r");

    if (f == NULL)
        return 0;
    /* strtol, not atol: defined for any text (a number too large is LONG_MAX, never our pid) */
    int ok = fgets(text, sizeof(text), f) != NULL && strtol(text, NULL, 10) == (long)getpid();
    (void)fclose(f); /* read only: nothing is lost when it fails */
    return ok;
}

/* --- services and listeners --------------------------------------------------------------- */

static int daemon_setup_services(struct daemon *d)
{
    const struct config *cfg = d->cfg;

    d->services = calloc(cfg->n_services ? cfg->n_services : 1, sizeof(*d->services));
    if (d->services == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->n_services; i++) {
        const struct config_service *cs = &cfg->services[i];
        d->services[i] = owner_create(cs->name, cs->lb.balance, &cs->lb.policy, &d->log);
        if (d->services[i] == NULL)
            return -ENOMEM;
        d->n_services++;
        if (cs->discovery == CONFIG_DISCOVERY_STATIC &&
            reload_static_service(d, d->services[i], cs))
            return -ENOMEM;
    }
    return 0;
}

/* What sessions see of each service: its owner, queue, drain and lifetime settings. */
static int daemon_setup_service_rts(struct daemon *d)
{
    const struct config *cfg = d->cfg;

    d->service_rts = calloc(cfg->n_services ? cfg->n_services : 1, sizeof(*d->service_rts));
    if (d->service_rts == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->n_services; i++) {
        const struct config_service *cs = &cfg->services[i];
        struct service_rt *rt = &d->service_rts[i];
        rt->name = cs->name;
        rt->owner = d->services[i];
        rt->index = i;
        rt->queue_size = cs->stream.queue_size;
        rt->queue_timeout_ms = cs->stream.queue_timeout_ms;
        rt->drain_timeout_ms = cs->stream.drain_timeout_ms;
        rt->lifetime_ms = cs->stream.lifetime_ms;
        rt->proxy_protocol = (uint8_t)cs->stream.proxy_protocol;
        atomic_init(&rt->queued, 0);
    }
    return 0;
}

/* Counter slots beyond the start-up listeners, for listeners a reload adds. */
static size_t listener_slots_for(size_t n)
{
    return n * 2 > n + 16 ? n * 2 : n + 16;
}

/* The first version of every listener, in the daemon's table. */
static int daemon_setup_listener_table(struct daemon *d)
{
    const struct config *cfg = d->cfg;
    size_t n = cfg->n_listeners;

    d->lstats_cap = listener_slots_for(n);
    d->slot_names = calloc(d->lstats_cap, sizeof(*d->slot_names));
    d->listeners = calloc(n ? n : 1, sizeof(*d->listeners));
    d->start_rts = calloc(n ? n : 1, sizeof(*d->start_rts));
    if (d->slot_names == NULL || d->listeners == NULL || d->start_rts == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const struct listener_conf *cl = &cfg->listeners[i];
        struct listener_rt tmpl;
        struct listener_acls acls;
        if (reload_listener_acl(cl, &acls) != 0)
            return -ENOMEM;
        reload_listener_fill(&tmpl, cl, cfg->path, &d->service_rts[cl->service_index],
                             reload_listener_slot(d, cl->name), &acls);
        if (reload_listener_clients(&tmpl, cl, NULL) != 0) {
            listener_acls_destroy(&acls);
            return -ENOMEM;
        }
        struct listener_rt *rt = listener_rt_create(&tmpl);
        if (rt == NULL)
            return -ENOMEM;
        d->listeners[d->n_listeners++] =
            (struct listener_entry){.rt = rt, .conf = reload_listener_kept(cl)};
        d->start_rts[i] = rt;
    }
    return 0;
}

static int daemon_setup_listeners(struct daemon *d)
{
    const struct config *cfg = d->cfg;

    if (daemon_setup_service_rts(d) != 0 || daemon_setup_listener_table(d) != 0)
        return -ENOMEM;
    d->shared = (struct worker_shared){
        .listeners = d->start_rts,
        .n_listeners = d->n_listeners,
        .lstats_cap = d->lstats_cap,
        .services = d->service_rts,
        .n_services = cfg->n_services,
        .splice = cfg->stream.splice,
        .pipe_size = cfg->stream.pipe_size,
        .buffer_size = cfg->stream.buffer_size,
        .log = &d->log,
        .access = d->access_on ? &d->access : NULL,
        .inherited = d->inherited,
        .n_workers = d->n_workers,
    };
    /* the workers' hosts are 1..n_workers (instance_use.h numbers its shards the same way) */
    return conn_budget_init(&d->shared.budget, fit_max_connections(d), d->n_workers + 1);
}

#define ACCESS_RING_BYTES                                                                          \
    (512 * 1024) /* per worker: lines beyond it are dropped, not waited for                        \
                  */

/* The access log: one ring per worker and a writer thread, when some listener asks for it. */
static int daemon_setup_access_log(struct daemon *d)
{
    int rc;

    for (size_t i = 0; i < d->cfg->n_listeners; i++)
        d->access_on |= d->cfg->listeners[i].log_access;
    if (!d->access_on)
        return 0;
    if ((rc = log_writer_init(&d->access, STDERR_FILENO, d->n_workers, ACCESS_RING_BYTES)) != 0 ||
        (rc = log_writer_start(&d->access)) != 0) {
        log_writer_destroy(&d->access);
        d->access_on = 0;
    }
    return rc;
}

/* --- workers ------------------------------------------------------------------------------ */

static void on_worker_unlisten(struct worker *w)
{
    struct daemon *d = w->data;
    atomic_fetch_add(&d->n_unlistened, 1);
    uv_async_send(&d->unlistened);
}

static void on_worker_exit(struct worker *w)
{
    struct daemon *d = w->data;
    atomic_fetch_add(&d->n_exited, 1);
    uv_async_send(&d->worker_exited);
}

/* A worker applied a listener change: the reload waiting for it may go on. */
static void on_worker_changed(struct worker *w)
{
    struct daemon *d = w->data;
    pthread_mutex_lock(&d->change_lock);
    pthread_cond_broadcast(&d->change_cond);
    pthread_mutex_unlock(&d->change_lock);
}

static int daemon_init_workers(struct daemon *d)
{
    d->workers = calloc(d->n_workers, sizeof(*d->workers));
    if (d->workers == NULL)
        return -ENOMEM;
    for (unsigned i = 0; i < d->n_workers; i++) {
        int rc = worker_init(&d->workers[i], i, &d->shared, d->step_error, sizeof(d->step_error));
        if (rc != 0)
            return rc;
        d->n_inited++;
        d->workers[i].on_exit = on_worker_exit;
        d->workers[i].on_unlisten = on_worker_unlisten;
        d->workers[i].on_changed = on_worker_changed;
        d->workers[i].data = d;
    }
    return 0;
}

static int daemon_start_workers(struct daemon *d)
{
    for (unsigned i = 0; i < d->n_workers; i++) {
        int rc = step_fault(d, "worker_threads");
        if (rc != 0 || (rc = worker_start(&d->workers[i])) != 0)
            return rc;
        d->n_started++;
    }
    return 0;
}

static void daemon_log_stats(struct daemon *d, const char *event)
{
    struct stats total;
    memset(&total, 0, sizeof(total));
    for (unsigned i = 0; i < d->n_started; i++)
        stats_accumulate(&total, &d->workers[i].stats);
    unsigned n = stats_count();
    struct log_field fields[64];
    fields[0] = LOG_INT("open", conn_budget_open(&d->shared.budget));
    for (unsigned i = 0; i < n && i + 1 < 64; i++)
        fields[i + 1] = LOG_INT(stats_name(i), stats_value(&total, i));
    log_emit(&d->log, LOG_LEVEL_INFO, event, fields, n + 1 < 64 ? n + 1 : 64);
}

/* --- consul ------------------------------------------------------------------------------- */

/* Discovery starts before the workers accept (the first sets arrive sooner). */
static int daemon_start_discovery(struct daemon *d)
{
    const struct config *cfg = d->cfg;
    struct discovery_target *targets = calloc(cfg->n_services + 1, sizeof(*targets));
    size_t n = 0;
    int rc;

    if (targets == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->n_services; i++) {
        if (cfg->services[i].discovery == CONFIG_DISCOVERY_CONSUL)
            targets[n++] = (struct discovery_target){.name = cfg->services[i].name,
                                                     .watch = &cfg->services[i].consul,
                                                     .owner = d->services[i]};
    }
    rc = n == 0 ? 0 /* no service uses Consul: no discovery */
                : discovery_create(&cfg->consul, targets, n, &d->log, &d->discovery, d->step_error,
                                   sizeof(d->step_error));
    free(targets);
    if (rc == 0 && d->discovery != NULL)
        rc = discovery_start(d->discovery);
    return rc;
}

/* The DNS and file sources, on their own thread, before the workers accept. */
static int daemon_start_registry(struct daemon *d)
{
    const struct config *cfg = d->cfg;
    struct registry_target *targets = calloc(cfg->n_services + 1, sizeof(*targets));
    size_t n = 0;
    int rc;

    if (targets == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->n_services; i++) {
        const struct config_service *cs = &cfg->services[i];
        enum registry_kind kind = cs->discovery == CONFIG_DISCOVERY_DNS    ? REGISTRY_DNS
                                  : cs->discovery == CONFIG_DISCOVERY_FILE ? REGISTRY_FILE
                                                                           : REGISTRY_HOSTS;
        if (kind != REGISTRY_HOSTS || cs->lb.backends.n_hosts > 0)
            targets[n++] = (struct registry_target){.name = cs->name,
                                                    .kind = kind,
                                                    .conf = &cs->registry,
                                                    .owner = d->services[i],
                                                    .backends = &cs->lb.backends};
    }
    rc = n == 0 ? 0
                : registry_create(targets, n, &d->log, &d->registry, d->step_error,
                                  sizeof(d->step_error));
    free(targets);
    if (rc == 0 && d->registry != NULL)
        rc = registry_start(d->registry);
    return rc;
}

/* The health thread: active checks where configured, and every owner's ticks (passive health,
 * slow start). Before the workers, so that their first failures already have a ticker. */
static int daemon_start_health(struct daemon *d)
{
    const struct config *cfg = d->cfg;
    struct health_target *targets = calloc(cfg->n_services + 1, sizeof(*targets));
    int rc;

    if (targets == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->n_services; i++)
        targets[i] = (struct health_target){.name = cfg->services[i].name,
                                            .owner = d->services[i],
                                            .check = &cfg->services[i].check};
    rc = health_create(targets, cfg->n_services, &d->log, &d->health);
    free(targets);
    if (rc == 0 && d->health != NULL)
        rc = health_start(d->health);
    return rc;
}

/* Registration after the listeners are bound and the admin server runs, so that the agent's
 * first check (HTTP on the admin /healthz, or TCP on a listener without [admin]) can pass. */
static int daemon_start_registrar(struct daemon *d)
{
    const struct config *cfg = d->cfg;
    struct registrar_listener *ls = calloc(cfg->n_listeners + 1, sizeof(*ls));
    struct registrar *r = NULL;
    int rc;

    if (ls == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->n_listeners; i++)
        ls[i] = (struct registrar_listener){.name = cfg->listeners[i].name,
                                            .bind = &cfg->listeners[i].bind};
    rc = registrar_create(&cfg->consul, &cfg->registration, ls, cfg->n_listeners,
                          cfg->admin.line != 0 ? &cfg->admin.bind : NULL, &d->log, &r,
                          d->step_error, sizeof(d->step_error));
    free(ls);
    /* the admin thread already serves /status and /metrics, which read it: published whole */
    __atomic_store_n(&d->registrar, r, __ATOMIC_RELEASE);
    if (rc == 0 && r != NULL)
        rc = registrar_start(r);
    return rc;
}

static void daemon_log_health(struct daemon *d)
{
    struct health_stats st;

    if (d->health == NULL)
        return;
    health_stats_get(d->health, &st);
    log_event(&d->log, LOG_LEVEL_INFO, "health_stats", LOG_INT("checks", st.checks),
              LOG_INT("failures", st.failures), LOG_INT("downs", st.downs), LOG_INT("ups", st.ups));
}

static void daemon_log_discovery(struct daemon *d)
{
    struct discovery_status st;

    discovery_status_get(d->discovery, &st);
    if (st.state == DISCOVERY_OFF)
        return;
    log_event(&d->log, LOG_LEVEL_INFO, "discovery_stats",
              LOG_STR("state", discovery_state_name(st.state)), LOG_INT("watches", st.watches),
              LOG_INT("synced", st.synced), LOG_INT("failing", st.failing),
              LOG_INT("degraded_ms", st.degraded_ms), LOG_INT("requests", st.requests),
              LOG_INT("errors", st.errors), LOG_INT("publishes", st.publishes),
              LOG_INT("unchanged", st.unchanged), LOG_INT("watchdog", st.watchdog),
              LOG_INT("degraded", st.degraded), LOG_INT("acl_denied", st.acl_denied),
              LOG_INT("rate_limited", st.rate_limited), LOG_STR("last_error", st.last_error));
}

/* --- signals and shutdown ----------------------------------------------------------------- */

static void daemon_close_handles(struct daemon *d)
{
    takeover_peers_close(d);
    daemon_release_claims(d);
    reload_abandon(d); /* a reload thread ends with a send on reload_finished, closed below */
    for (unsigned i = 0; i < d->n_signals; i++)
        uv_close((uv_handle_t *)&d->signals[i], NULL);
    uv_handle_t *handles[] = {(uv_handle_t *)&d->shutdown_timer, (uv_handle_t *)&d->worker_exited,
                              (uv_handle_t *)&d->unlistened, (uv_handle_t *)&d->reload_async,
                              (uv_handle_t *)&d->reload_finished};
    for (unsigned i = 0; i < d->n_handles; i++)
        uv_close(handles[i], NULL);
    d->n_signals = d->n_handles = 0;
}

/* Once every worker has closed its sockets no new connection can arrive: worth a line, since
 * from then on a connect is refused by the kernel. */
static void on_unlistened(uv_async_t *a)
{
    struct daemon *d = a->data;
    if (atomic_load(&d->n_unlistened) == d->n_started && !d->said_unlistened) {
        d->said_unlistened = 1;
        daemon_release_claims(d);
        log_event(&d->log, LOG_LEVEL_INFO, "listeners_closed",
                  LOG_INT("open", conn_budget_open(&d->shared.budget)));
    }
}

static void on_worker_exited(uv_async_t *a)
{
    struct daemon *d = a->data;
    if (atomic_load(&d->n_exited) == d->n_started && !uv_is_closing((uv_handle_t *)a)) {
        on_unlistened(&d->unlistened); /* both wake-ups may land in one loop turn */
        daemon_close_handles(d);
    }
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    struct daemon *d = t->data;
    log_event(&d->log, LOG_LEVEL_WARN, "shutdown_timeout",
              LOG_INT("open", conn_budget_open(&d->shared.budget)));
    for (unsigned i = 0; i < d->n_started; i++)
        worker_command(&d->workers[i], WORKER_STOP);
}

/* Leaves Consul first (deregister, so that clients stop sending new work here, and stop
 * watching), then drains. */
void daemon_drain(struct daemon *d, const char *signal_name)
{
    if (atomic_load(&d->draining)) {
        /* a second signal: the operator does not want to wait */
        on_shutdown_timeout(&d->shutdown_timer);
        return;
    }
    atomic_store(&d->draining, 1);
    log_event(&d->log, LOG_LEVEL_INFO, "shutdown_started", LOG_STR("signal", signal_name),
              LOG_INT("open", conn_budget_open(&d->shared.budget)),
              LOG_INT("timeout_ms", d->cfg->shutdown_timeout_ms));
    notify_stopping(&d->log, "draining open connections");
    registrar_stop(d->registrar);
    discovery_stop(d->discovery);
    registry_stop(d->registry);
    health_stop(d->health);
    for (unsigned i = 0; i < d->n_started; i++)
        worker_command(&d->workers[i], WORKER_DRAIN);
    uv_timer_start(&d->shutdown_timer, on_shutdown_timeout, d->cfg->shutdown_timeout_ms, 0);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    if (signum == SIGHUP && !atomic_load(&d->draining)) {
        reload_begin(d, 0);
    } else if (signum == SIGUSR1) {
        daemon_log_stats(d, "stats");
        daemon_log_discovery(d);
        daemon_log_health(d);
    } else if (signum == SIGTERM || signum == SIGINT) {
        daemon_drain(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
    }
}

/* --- reloads asked for by the admin thread ------------------------------------------------ */

static void on_reload_asked(uv_async_t *a)
{
    struct daemon *d = a->data;

    pthread_mutex_lock(&d->reload_lock);
    int pending = d->reload_pending;
    pthread_mutex_unlock(&d->reload_lock);
    if (!pending)
        return;
    if (!atomic_load(&d->draining)) {
        reload_begin(d, 1); /* reload_finish answers */
        return;
    }
    pthread_mutex_lock(&d->reload_lock);
    ini_errors_clear(&d->reload_errs); /* an answer nobody waited for */
    d->reload_rc = -EBUSY;
    d->reload_pending = 0;
    d->reload_done = 1;
    pthread_cond_broadcast(&d->reload_cond);
    pthread_mutex_unlock(&d->reload_lock);
}

static void on_reload_finished(uv_async_t *a)
{
    reload_finish(a->data);
}

int daemon_reload_from_admin(struct daemon *d, struct ini_errors *errs, uint64_t timeout_ms)
{
    struct timespec until;
    int rc = 0;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)(timeout_ms / 1000);
    pthread_mutex_lock(&d->reload_lock);
    if (atomic_load(&d->draining)) {
        pthread_mutex_unlock(&d->reload_lock);
        return -EBUSY;
    }
    d->reload_pending = 1;
    d->reload_done = 0;
    uv_async_send(&d->reload_async);
    while (!d->reload_done && rc == 0)
        rc = pthread_cond_timedwait(&d->reload_cond, &d->reload_lock, &until);
    if (d->reload_done) {
        rc = d->reload_rc;
        *errs = d->reload_errs;
        d->reload_errs = (struct ini_errors){0};
        d->reload_done = 0;
    } else {
        rc = -ETIMEDOUT;
    }
    pthread_mutex_unlock(&d->reload_lock);
    return rc;
}

/* The admin server, after the workers: it reports on them. */
static int daemon_start_admin(struct daemon *d)
{
    return admin_start(d, &d->admin, d->step_error, sizeof(d->step_error));
}

static double wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The main loop and its handles; each one counted as it is initialised, so that a failure
 * closes exactly those. */
static int daemon_setup_loop(struct daemon *d)
{
    int rc = uv_loop_init(&d->loop);
    if (rc != 0)
        return rc;
    d->loop_ready = 1;
    for (unsigned i = 0; i < DAEMON_SIGNALS; i++) {
        if ((rc = uv_signal_init(&d->loop, &d->signals[i])) != 0)
            return rc;
        d->n_signals++;
        d->signals[i].data = d;
        if ((rc = uv_signal_start(&d->signals[i], on_signal, daemon_signals[i])) != 0)
            return rc;
    }
    if ((rc = uv_timer_init(&d->loop, &d->shutdown_timer)) != 0)
        return rc;
    d->n_handles++;
    if ((rc = uv_async_init(&d->loop, &d->worker_exited, on_worker_exited)) != 0)
        return rc;
    d->n_handles++;
    if ((rc = uv_async_init(&d->loop, &d->unlistened, on_unlistened)) != 0)
        return rc;
    d->n_handles++;
    if ((rc = uv_async_init(&d->loop, &d->reload_async, on_reload_asked)) != 0)
        return rc;
    d->n_handles++;
    if ((rc = uv_async_init(&d->loop, &d->reload_finished, on_reload_finished)) != 0)
        return rc;
    d->n_handles++;
    d->shutdown_timer.data = d->worker_exited.data = d->unlistened.data = d;
    d->reload_async.data = d->reload_finished.data = d;
    return 0;
}

/* --- run ---------------------------------------------------------------------------------- */

/* Undoes every start-up step that was done, in reverse order. */
static void daemon_teardown(struct daemon *d)
{
    admin_stop(d->admin); /* first: it reads what the rest frees */
    for (unsigned i = 0; i < d->n_started; i++)
        worker_command(&d->workers[i], WORKER_STOP);
    registrar_destroy(d->registrar);
    discovery_destroy(d->discovery); /* before the owners: it hands them lists */
    registry_destroy(d->registry);   /* likewise */
    health_destroy(d->health);       /* likewise verdicts and ticks */
    for (unsigned i = 0; i < d->n_inited; i++) {
        if (i < d->n_started)
            worker_join(&d->workers[i]);
        else
            worker_destroy(&d->workers[i]);
    }
    free(d->workers);
    conn_budget_destroy(&d->shared.budget); /* after the workers: they give slots back */
    if (d->access_on)
        log_writer_destroy(&d->access); /* after the workers: their last lines are written */
    for (size_t i = 0; i < d->n_listeners; i++)
        listener_rt_drop(d->listeners[i].rt); /* after the workers: the last references */
    free(d->listeners);
    free(d->start_rts);
    free(d->slot_names);
    free(d->service_rts);
    for (size_t i = 0; i < d->n_services; i++)
        owner_destroy(d->services[i]);
    free(d->services);
    if (d->pid_written && pid_file_is_ours(d->cfg->pid_file) && unlink(d->cfg->pid_file) != 0)
        /* after [sluice] user the directory (/run) may be root's: say so instead of failing */
        log_event(&d->log, LOG_LEVEL_WARN, "pid_file_not_removed",
                  LOG_STR("pid_file", d->cfg->pid_file), LOG_STR("error", strerror(errno)));
    if (d->loop_ready) {
        daemon_close_handles(d);
        uv_run(&d->loop, UV_RUN_DEFAULT); /* close callbacks */
        int rc = uv_loop_close(&d->loop);
        assert(rc == 0);
        (void)rc;
    }
    free(d->claims); /* after the close callbacks: the poll handles live in it */
    takeover_release(d);
    free(d->takeovers);
    free(d->inherited);
    ini_errors_clear(&d->reload_errs);
    pthread_cond_destroy(&d->reload_cond);
    pthread_mutex_destroy(&d->reload_lock);
    pthread_cond_destroy(&d->change_cond);
    pthread_mutex_destroy(&d->change_lock);
    pthread_mutex_destroy(&d->table_lock);
    config_destroy(d->cfg);
}

static void daemon_log_started(struct daemon *d)
{
    for (size_t i = 0; i < d->n_listeners; i++)
        log_event(&d->log, LOG_LEVEL_INFO, "listener_started",
                  LOG_STR("listener", d->listeners[i].rt->name),
                  LOG_STR("bind", d->listeners[i].rt->bind.text),
                  LOG_STR("service", d->listeners[i].conf.service));
    log_event(&d->log, LOG_LEVEL_INFO, "started", LOG_STR("version", SLUICE_VERSION),
              LOG_INT("workers", d->n_workers), LOG_INT("pid", getpid()),
              LOG_INT("max_connections", d->shared.budget.max));
}

/* After the last start-up step: each listener's socket listens (the workers bound them) and
 * every worker's loop runs, so a connect made once systemd hears this is accepted. */
static void daemon_notify_ready(struct daemon *d)
{
    char status[128];

    snprintf(status, sizeof(status), "serving %zu listener(s) with %u worker(s)",
             d->cfg->n_listeners, d->n_workers);
    notify_ready(&d->log, status);
}

/* workers = auto: how many CPUs the process may use and which limit chose the count, so that a
 * taskset or a container's CPU limit shows in the first lines. */
static void daemon_log_workers_auto(struct daemon *d)
{
    const struct cpus_usable *u = &d->cfg->workers_auto;
    int quota_binds = u->cpu_max != 0 && u->cpu_max < u->affinity;
    uint32_t usable = quota_binds ? u->cpu_max : u->affinity;
    const char *by = u->count < usable ? "workers_max" : quota_binds ? "cpu.max" : "affinity";
    struct log_field fields[] = {LOG_INT("workers", u->count), LOG_STR("limited_by", by),
                                 LOG_INT("affinity", u->affinity), LOG_INT("cpu_max", u->cpu_max)};

    if (u->count == 0)
        return; /* the file gave a number */
    /* cpu_max is left out when no cgroup sets a quota */
    log_emit(&d->log, LOG_LEVEL_INFO, "workers_auto", fields, u->cpu_max != 0 ? 4 : 3);
}

/* A token file others may read leaks the secret to every local user: warn at start, as ssh does
 * for its keys (the content is never logged, only the name and the mode). */
static void daemon_warn_token_files(struct daemon *d)
{
    const char *files[] = {d->cfg->consul.token_file, d->cfg->admin.token_file};
    struct stat st;
    char mode[8];

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if (files[i] == NULL || stat(files[i], &st) != 0 || (st.st_mode & 077) == 0)
            continue;
        snprintf(mode, sizeof(mode), "%04o", (unsigned)st.st_mode & 07777);
        log_event(&d->log, LOG_LEVEL_WARN, "token_file_permissions", LOG_STR("file", files[i]),
                  LOG_STR("mode", mode),
                  LOG_STR("why", "group or others have access: chmod 600 it"));
    }
}

/* One start-up step: its fault hook, then the step; a failure is logged once, with the step's
 * name and its own detail when it gave one. */
static int daemon_step(struct daemon *d, const char *name, int (*step)(struct daemon *))
{
    int injected = step_fault(d, name) != 0;
    int rc = injected ? step_fault(d, name) : step(d);

    if (rc != 0)
        log_event(&d->log, LOG_LEVEL_ERROR, "startup_failed", LOG_STR("step", name),
                  LOG_STR("error", injected                   ? "injected fault"
                                   : d->step_error[0] != '\0' ? d->step_error
                                                              : uv_strerror(rc)));
    return rc;
}

int daemon_run(struct config *cfg, int takeover)
{
    static const struct {
        const char *name;
        int (*run)(struct daemon *);
    } steps[] = {
        {"loop", daemon_setup_loop},           {"listen_locks", daemon_claim_listeners},
        {"services", daemon_setup_services},   {"access_log", daemon_setup_access_log},
        {"listeners", daemon_setup_listeners}, {"discovery", daemon_start_discovery},
        {"registry", daemon_start_registry},   {"health", daemon_start_health},
        {"workers", daemon_init_workers},      {"worker_threads", daemon_start_workers},
        {"admin", daemon_start_admin},         {"registrar", daemon_start_registrar},
        {"pid_file", daemon_write_pid_file},   {"privileges", daemon_drop_privileges},
    };
    struct daemon *d = calloc(1, sizeof(*d));
    int rc = 0;

    if (d == NULL) {
        config_destroy(cfg);
        return 1;
    }
    d->cfg = cfg;
    d->takeover = takeover;
    d->n_workers = cfg->workers;
    instance_shards_set_workers(d->n_workers); /* before the first service owner */
    d->fault = getenv(FAULT_ENV);
    d->started_ms = clock_ms();
    d->started_wall = wall_seconds();
    pthread_mutex_init(&d->reload_lock, NULL);
    pthread_cond_init(&d->reload_cond, NULL);
    pthread_mutex_init(&d->change_lock, NULL);
    pthread_cond_init(&d->change_cond, NULL);
    pthread_mutex_init(&d->table_lock, NULL);
    log_init(&d->log, STDERR_FILENO);
    log_configure(&d->log, cfg->log_level, cfg->log_format);
    daemon_log_workers_auto(d);
    daemon_warn_token_files(d);
    for (size_t i = 0; rc == 0 && i < sizeof(steps) / sizeof(steps[0]); i++)
        rc = daemon_step(d, steps[i].name, steps[i].run);
    if (rc == 0) {
        atomic_store(&d->serving, 1);
        daemon_log_started(d);
        daemon_notify_ready(d);
        takeover_finish(d); /* only now: a start that failed leaves the old process serving */
        uv_run(&d->loop, UV_RUN_DEFAULT);
        daemon_log_stats(d, "stopped");
    }
    daemon_teardown(d);
    free(d);
    return rc == 0 ? 0 : 1;
}
