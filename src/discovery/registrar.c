/* Consul registration: register with rollback, deregister, and the daemon's anti-entropy
 * thread. */
#include "registrar.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "consul_parse.h"
#include "inifile.h"
#include "log.h"

#define SHUTDOWN_TIMEOUT_MS 3000 /* one deregistration while shutting down */
#define RETRY_MIN_MS        1000 /* first retry of a failed registration */

/* --- building the request ----------------------------------------------------------------- */

int registrar_check_id(char *out, size_t len, const char *service_id, size_t i, size_t n)
{
    int w = n > 1 ? snprintf(out, len, "service:%s:%zu", service_id, i + 1)
                  : snprintf(out, len, "service:%s", service_id);

    return w < 0 || (size_t)w >= len ? -ENOSPC : 0;
}

static size_t check_count(const struct registrar_spec *spec)
{
    return (size_t)(spec->http_check != NULL) + (size_t)(spec->tcp_check != NULL);
}

/* Go duration text ("5s", "250ms"), which is what Consul parses. */
static void go_duration(uint64_t ms, char out[32])
{
    if (ms % 1000 == 0) {
        snprintf(out, 32, "%llus", (unsigned long long)(ms / 1000));
    } else {
        snprintf(out, 32, "%llums", (unsigned long long)ms);
    }
}

/* Adds one check object (HTTP or TCP target) to the Checks array. */
static int body_check(cJSON *checks, const struct registrar_spec *spec, const char *kind,
                      const char *target, size_t i, size_t n)
{
    char id[REGISTRAR_ID_MAX + 32], name[300], d[32];
    cJSON *check = cJSON_CreateObject();

    if (check == NULL || !cJSON_AddItemToArray(checks, check) ||
        registrar_check_id(id, sizeof(id), spec->id, i, n) != 0) {
        return -ENOMEM;
    }
    snprintf(name, sizeof(name), "%s check on %.250s", kind, target);
    int ok = cJSON_AddStringToObject(check, "CheckID", id) != NULL &&
             cJSON_AddStringToObject(check, "Name", name) != NULL &&
             cJSON_AddStringToObject(check, kind, target) != NULL;
    go_duration(spec->interval_ms, d);
    ok = ok && cJSON_AddStringToObject(check, "Interval", d) != NULL;
    if (spec->timeout_ms != 0) {
        go_duration(spec->timeout_ms, d);
        ok = ok && cJSON_AddStringToObject(check, "Timeout", d) != NULL;
    }
    if (spec->deregister_after_ms != 0) {
        go_duration(spec->deregister_after_ms, d);
        ok = ok && cJSON_AddStringToObject(check, "DeregisterCriticalServiceAfter", d) != NULL;
    }
    return ok ? 0 : -ENOMEM;
}

/* Tags and Meta ("key=value" split at the first '='). */
static int body_labels(cJSON *root, const struct registrar_spec *spec)
{
    cJSON *tags = cJSON_AddArrayToObject(root, "Tags");
    cJSON *meta = spec->n_meta > 0 ? cJSON_AddObjectToObject(root, "Meta") : NULL;

    if (tags == NULL || (spec->n_meta > 0 && meta == NULL)) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < spec->n_tags; i++) {
        cJSON *tag = cJSON_CreateString(spec->tags[i]);
        if (tag == NULL || !cJSON_AddItemToArray(tags, tag)) {
            cJSON_Delete(tag);
            return -ENOMEM;
        }
    }
    for (size_t i = 0; i < spec->n_meta; i++) {
        const char *eq = strchr(spec->meta[i], '=');
        char *key = strndup(spec->meta[i], eq != NULL ? (size_t)(eq - spec->meta[i]) : 0);
        int ok = key != NULL && cJSON_AddStringToObject(meta, key, eq != NULL ? eq + 1 : "");
        free(key);
        if (!ok) {
            return -ENOMEM;
        }
    }
    return 0;
}

static int body_fill(cJSON *root, const struct registrar_spec *spec)
{
    size_t n = check_count(spec), i = 0;
    cJSON *checks;

    if (cJSON_AddStringToObject(root, "ID", spec->id) == NULL ||
        cJSON_AddStringToObject(root, "Name", spec->name) == NULL || body_labels(root, spec) != 0) {
        return -ENOMEM;
    }
    if (spec->address != NULL && spec->address[0] != '\0' &&
        cJSON_AddStringToObject(root, "Address", spec->address) == NULL) {
        return -ENOMEM;
    }
    if (spec->port != 0 && cJSON_AddNumberToObject(root, "Port", spec->port) == NULL) {
        return -ENOMEM;
    }
    checks = cJSON_AddArrayToObject(root, "Checks");
    if (checks == NULL) {
        return -ENOMEM;
    }
    if (spec->http_check != NULL && body_check(checks, spec, "HTTP", spec->http_check, i++, n)) {
        return -ENOMEM;
    }
    if (spec->tcp_check != NULL && body_check(checks, spec, "TCP", spec->tcp_check, i, n)) {
        return -ENOMEM;
    }
    return 0;
}

char *registrar_body(const struct registrar_spec *spec)
{
    cJSON *root = cJSON_CreateObject();
    char *text = NULL, *copy = NULL;

    if (root != NULL && body_fill(root, spec) == 0) {
        text = cJSON_PrintUnformatted(root);
    }
    cJSON_Delete(root);
    if (text != NULL) {
        copy = strdup(text); /* callers free() it; cJSON may use another allocator */
        cJSON_free(text);
    }
    return copy;
}

/* --- calls -------------------------------------------------------------------------------- */

/* What a 403 tells the operator: Consul says "ACL not found" for a token it does not know and
 * "Permission denied" for a known token without the rule. */
static const char *acl_hint(const struct consul_call *call)
{
    int unknown = 0;

    if (!consul_call_acl_denied(call, &unknown)) {
        return "";
    }
    return unknown ? " (the ACL token is unknown to Consul)"
                   : " (registration needs an ACL token with service:write on the service)";
}

/* Runs one call; on failure writes "<what>: <why>" into msg. The call stays for reading. */
static enum consul_outcome call_run(struct consul_call *call, const struct consul_client *c,
                                    const char *method, const char *path, const char *body,
                                    uint64_t timeout_ms, const atomic_int *cancel, const char *what,
                                    char *msg, size_t len)
{
    char why[512];
    enum consul_outcome out;

    if (consul_call_init(call, c, method, path, body, timeout_ms) != 0) {
        snprintf(msg, len, "%s: out of memory", what);
        return CONSUL_UNREACHABLE;
    }
    if (cancel != NULL) {
        consul_call_cancel_on(call, cancel);
    }
    out = consul_call_perform(call);
    if (out != CONSUL_OK) {
        consul_call_describe(call, why, sizeof(why));
        snprintf(msg, len, "%s: %s %s: %s%s", what, consul_call_failure_phrase(call),
                 consul_client_address(c), why, acl_hint(call));
    }
    return out;
}

/* 429 and 5xx are temporary, like an agent out of reach: try again later (exit status 2). */
static enum registrar_result result_of(const struct consul_call *call, enum consul_outcome out)
{
    int busy = out == CONSUL_REJECTED && (call->status == 429 || call->status >= 500);

    return out == CONSUL_OK                    ? REGISTRAR_DONE
           : out == CONSUL_UNREACHABLE || busy ? REGISTRAR_UNREACHABLE
                                               : REGISTRAR_REJECTED;
}

/* "/v1/agent/service/<escaped id>" style paths. */
static int id_path(char *out, size_t len, const char *prefix, const char *id)
{
    char esc[REGISTRAR_ID_MAX * 3];
    int w;

    if (consul_escape(id, esc, sizeof(esc)) < 0) {
        return -ENOSPC;
    }
    w = snprintf(out, len, "%s%s", prefix, esc);
    return w < 0 || (size_t)w >= len ? -ENOSPC : 0;
}

/* Step 0: does the agent know id already? 1 yes, 0 no, or a negative registrar_result. */
static int service_known(const struct consul_client *c, const char *id, const atomic_int *cancel,
                         char *msg, size_t len)
{
    struct consul_call call;
    char path[REGISTRAR_ID_MAX * 3 + 64];
    enum consul_outcome out;

    if (id_path(path, sizeof(path), "/v1/agent/service/", id) != 0) {
        snprintf(msg, len, "service id is too long");
        return -(int)REGISTRAR_REJECTED;
    }
    out = call_run(&call, c, "GET", path, NULL, consul_client_timeout_ms(c), cancel,
                   "looking up the service", msg, len);
    long status = call.status;
    enum registrar_result res = result_of(&call, out);
    consul_call_cleanup(&call);
    if (out == CONSUL_OK) {
        return 1;
    }
    return out == CONSUL_REJECTED && status == 404 ? 0 : -(int)res;
}

/* Every expected check id appears in the agent's check list, bound to the service. */
static int checks_present(const char *json, size_t json_len, const struct registrar_spec *spec,
                          char *missing, size_t missing_len)
{
    char ids[2][REGISTRAR_ID_MAX + 32];
    const char *names[2] = {ids[0], ids[1]};
    size_t n = check_count(spec);

    for (size_t i = 0; i < n; i++) {
        registrar_check_id(ids[i], sizeof(ids[i]), spec->id, i, n);
    }
    return consul_parse_checks_bound(json, json_len, spec->id, names, n, missing, missing_len);
}

/* Step 2: the agent lists the service with every check. */
static enum registrar_result verify(const struct consul_client *c,
                                    const struct registrar_spec *spec, const atomic_int *cancel,
                                    char *msg, size_t len)
{
    struct consul_call call;
    char path[REGISTRAR_ID_MAX * 3 + 64], missing[REGISTRAR_ID_MAX + 64];
    int with_checks = spec->http_check != NULL || spec->tcp_check != NULL;
    enum consul_outcome out;
    enum registrar_result res;

    if (with_checks) {
        snprintf(path, sizeof(path), "/v1/agent/checks");
    } else {
        id_path(path, sizeof(path), "/v1/agent/service/", spec->id);
    }
    out = call_run(&call, c, "GET", path, NULL, consul_client_timeout_ms(c), cancel,
                   "confirming the registration", msg, len);
    res = result_of(&call, out);
    if (out == CONSUL_OK && with_checks &&
        !checks_present(call.body != NULL ? call.body : "", call.len, spec, missing,
                        sizeof(missing))) {
        snprintf(msg, len,
                 "the agent accepted the service but does not list its check %s "
                 "(an older agent that ignores this check type?)",
                 missing);
        res = REGISTRAR_REJECTED;
    }
    consul_call_cleanup(&call);
    return res;
}

/* Undoes a registration that failed half-way; appends the outcome to msg. 1 when the service
 * was deregistered, else 0. */
static int rollback(const struct consul_client *c, const char *id, char *msg, size_t len)
{
    char why[REGISTRAR_MSG_MAX];
    size_t used = strlen(msg);
    enum registrar_result res =
        registrar_deregister(c, id, consul_client_timeout_ms(c), why, sizeof(why));

    snprintf(msg + used, len - used,
             res == REGISTRAR_DONE ? "; rolled back: service %s deregistered"
                                   : "; ROLLBACK FAILED, service %s may remain: %s",
             id, why);
    return res == REGISTRAR_DONE;
}

/* The registration call failed for a service the agent did not know before. An agent answers
 * errors before it changes anything, but a broken connection or a 5xx may come after the change:
 * look, and roll back what is there. */
static int cleanup_unknown(const struct consul_client *c, const char *id, const atomic_int *cancel,
                           char *msg, size_t len)
{
    char why[REGISTRAR_MSG_MAX];
    int known = service_known(c, id, cancel, why, sizeof(why));
    size_t used = strlen(msg);

    if (known == 1) {
        return rollback(c, id, msg, len);
    }
    if (known < 0) {
        snprintf(msg + used, len - used, "; whether the agent kept service %s is unknown (%s)", id,
                 why);
    }
    return 0;
}

enum registrar_result registrar_register(const struct consul_client *c,
                                         const struct registrar_spec *spec,
                                         const atomic_int *cancel, int *rolled_back, char *msg,
                                         size_t msg_len)
{
    struct consul_call call;
    int undone = 0;
    char *body = registrar_body(spec);
    int known = body != NULL ? service_known(c, spec->id, cancel, msg, msg_len) : -1;
    enum consul_outcome out;
    enum registrar_result res;

    if (body == NULL) {
        snprintf(msg, msg_len, "out of memory");
    }
    if (body == NULL || known < 0) {
        free(body);
        return body == NULL ? REGISTRAR_UNREACHABLE : (enum registrar_result)(-known);
    }
    out = call_run(&call, c, "PUT", "/v1/agent/service/register?replace-existing-checks=true", body,
                   consul_client_timeout_ms(c), cancel, "registering the service", msg, msg_len);
    res = result_of(&call, out);
    consul_call_cleanup(&call);
    free(body);
    if (out == CONSUL_OK) {
        res = verify(c, spec, cancel, msg, msg_len);
        if (res != REGISTRAR_DONE) {
            undone = rollback(c, spec->id, msg, msg_len); /* exists: never leave it half */
        }
    } else if (!known) {
        undone = cleanup_unknown(c, spec->id, cancel, msg, msg_len);
    }
    if (rolled_back != NULL) {
        *rolled_back = undone;
    }
    if (res == REGISTRAR_DONE) {
        snprintf(msg, msg_len, "registered service \"%s\" as %s", spec->name, spec->id);
    }
    return res;
}

/* registrar_deregister, and *absent = 1 when the agent did not have the service (404). */
static enum registrar_result deregister_call(const struct consul_client *c, const char *id,
                                             uint64_t timeout_ms, char *msg, size_t msg_len,
                                             int *absent)
{
    struct consul_call call;
    char path[REGISTRAR_ID_MAX * 3 + 64];
    enum consul_outcome out;

    if (id_path(path, sizeof(path), "/v1/agent/service/deregister/", id) != 0) {
        snprintf(msg, msg_len, "service id is too long");
        return REGISTRAR_REJECTED;
    }
    out = call_run(&call, c, "PUT", path, NULL, timeout_ms, NULL, "deregistering the service", msg,
                   msg_len);
    long status = call.status;
    enum registrar_result res = result_of(&call, out);
    consul_call_cleanup(&call);
    *absent = out == CONSUL_REJECTED && status == 404;
    if (*absent) {
        snprintf(msg, msg_len, "service %s was not registered", id);
        return REGISTRAR_DONE; /* already gone is what was asked for */
    }
    if (out == CONSUL_OK) {
        snprintf(msg, msg_len, "deregistered service %s", id);
    }
    return res;
}

enum registrar_result registrar_deregister(const struct consul_client *c, const char *id,
                                           uint64_t timeout_ms, char *msg, size_t msg_len)
{
    int absent;

    return deregister_call(c, id, timeout_ms, msg, msg_len, &absent);
}

/* --- the daemon's registrations ----------------------------------------------------------- */

/* One of the daemon's registrations: a listener, or the process as a member of its fleet. */
struct registration {
    char id[REGISTRAR_ID_MAX];     /* <name>-<hostname>-<port> */
    char name[INI_NAME_MAX];       /* service name */
    char address[NET_ADDR_MAX];    /* advertised IP; "" = the agent's node address */
    char check[NET_ADDR_MAX + 32]; /* check target: host:port (TCP) or URL (HTTP) */
    struct registrar_spec spec;    /* what is registered; points into the above and cfg */
    int registered;                /* the agent confirmed it last time we asked */
    int lost;                      /* the agent forgot it; the next success is a restore */
    unsigned failures;             /* failed attempts in a row */
    uint64_t next_ms;              /* when to register or confirm next */
    char error[REGISTRAR_MSG_MAX]; /* last failure logged */
    struct registrar_status shown; /* what status shows: copied under status_lock */
};

struct registrar {
    const struct registration_conf *cfg; /* [registration] */
    struct consul_client *client;        /* Consul settings */
    struct registration *regs;           /* one per registered listener, then the fleet's */
    size_t n;                            /* entries in regs */
    pthread_t thread;                    /* anti-entropy thread */
    int started;                         /* the thread runs */
    int stopped;                         /* registrar_stop ran */
    pthread_mutex_t lock;                /* with cond: the thread's sleep */
    pthread_cond_t cond;                 /* signalled by registrar_stop */
    atomic_int stop;                     /* ends the thread and calls in flight */
    uint64_t rng;                        /* jitter for retries */
    struct logger *log;                  /* where events go */
    pthread_mutex_t status_lock;         /* guards every registration's shown copy */
    atomic_ullong successes;             /* registrations (and restores) that succeeded */
    atomic_ullong failed;                /* attempts that failed */
};

/* Logs a failure once per distinct reason and schedules a retry with backoff. */
static void reg_failed(struct registrar *r, struct registration *g, const char *event,
                       const char *why, uint64_t now)
{
    g->failures++;
    atomic_fetch_add(&r->failed, 1);
    g->next_ms = clock_deadline(
        now, backoff_ms(g->failures, RETRY_MIN_MS, r->cfg->anti_entropy_ms, rng_next(&r->rng)));
    if (strcmp(g->error, why) != 0) {
        log_event(r->log, LOG_LEVEL_WARN, event, LOG_STR("id", g->id), LOG_STR("error", why),
                  LOG_INT("retry_ms", g->next_ms - now));
        snprintf(g->error, sizeof(g->error), "%s", why);
    }
}

static void reg_register(struct registrar *r, struct registration *g, uint64_t now)
{
    char msg[REGISTRAR_MSG_MAX];
    enum registrar_result res =
        registrar_register(r->client, &g->spec, &r->stop, NULL, msg, sizeof(msg));

    if (res != REGISTRAR_DONE) {
        if (!atomic_load(&r->stop)) {
            reg_failed(r, g, "registration_failed", msg, now);
        }
        return;
    }
    log_event(r->log, LOG_LEVEL_INFO, g->lost ? "registration_restored" : "registration_added",
              LOG_STR("id", g->id), LOG_STR("service", g->name), LOG_STR("address", g->address),
              LOG_INT("port", g->spec.port), LOG_STR("check", g->check));
    g->registered = 1;
    g->lost = 0;
    g->failures = 0;
    g->error[0] = '\0';
    g->next_ms = clock_deadline(now, r->cfg->anti_entropy_ms);
    atomic_fetch_add(&r->successes, 1);
}

/* Copies what status shows of g. */
static void reg_show(struct registrar *r, struct registration *g)
{
    pthread_mutex_lock(&r->status_lock);
    snprintf(g->shown.id, sizeof(g->shown.id), "%s", g->id);
    snprintf(g->shown.service, sizeof(g->shown.service), "%s", g->name);
    g->shown.registered = g->registered;
    g->shown.failures = g->failures;
    snprintf(g->shown.last_error, sizeof(g->shown.last_error), "%.255s", g->error);
    pthread_mutex_unlock(&r->status_lock);
}

/* Anti-entropy: does the agent still know the service? An agent restart forgets it. */
static void reg_confirm(struct registrar *r, struct registration *g, uint64_t now)
{
    char msg[REGISTRAR_MSG_MAX];
    int known = service_known(r->client, g->id, &r->stop, msg, sizeof(msg));

    if (known == 1) {
        g->failures = 0;
        g->error[0] = '\0';
        g->next_ms = clock_deadline(now, r->cfg->anti_entropy_ms);
    } else if (known == 0) {
        log_event(r->log, LOG_LEVEL_WARN, "registration_lost", LOG_STR("id", g->id),
                  LOG_STR("action", "registering again"));
        g->registered = 0;
        g->lost = 1;
        reg_register(r, g, now);
    } else if (!atomic_load(&r->stop)) {
        reg_failed(r, g, "registration_check_failed", msg, now);
    }
}

static void *registrar_main(void *arg)
{
    struct registrar *r = arg;

    while (!atomic_load(&r->stop)) {
        uint64_t now = clock_ms(), next = clock_deadline(now, r->cfg->anti_entropy_ms);
        for (size_t i = 0; i < r->n && !atomic_load(&r->stop); i++) {
            struct registration *g = &r->regs[i];
            if (clock_ms() >= g->next_ms) {
                (g->registered ? reg_confirm : reg_register)(r, g, clock_ms());
                reg_show(r, g);
            }
            next = g->next_ms < next ? g->next_ms : next;
        }
        now = clock_ms();
        pthread_mutex_lock(&r->lock);
        if (next > now && !atomic_load(&r->stop)) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t ns = (uint64_t)ts.tv_nsec + (next - now) % 1000 * 1000000;
            ts.tv_sec += (time_t)((next - now) / 1000 + ns / 1000000000);
            ts.tv_nsec = (long)(ns % 1000000000);
            pthread_cond_timedwait(&r->cond, &r->lock, &ts);
        }
        pthread_mutex_unlock(&r->lock);
    }
    return NULL;
}

/* "ip:port" or "[ip6]:port". */
static void host_port_text(char *out, size_t len, const char *ip, int port)
{
    snprintf(out, len, strchr(ip, ':') != NULL ? "[%s]:%d" : "%s:%d", ip, port);
}

/* The spec every registration shares: what [registration] says about checks and meta. The
 * caller adds the check target (tcp_check or http_check) and its own tags. */
static struct registrar_spec reg_spec(const struct registration *g,
                                      const struct registration_conf *rc, int port)
{
    return (struct registrar_spec){.id = g->id,
                                   .name = g->name,
                                   .address = g->address,
                                   .port = port,
                                   .meta = rc->meta.items,
                                   .n_meta = rc->meta.n,
                                   .interval_ms = rc->check_interval_ms,
                                   .timeout_ms = rc->check_timeout_ms,
                                   .deregister_after_ms = rc->deregister_after_ms};
}

/* The URL of an HTTP check on the admin server's /healthz: its bind IP, or for a wildcard bind
 * the advertised IP (loopback when nothing is advertised: the agent runs next to us). */
static void admin_healthz_url(char *out, size_t len, const struct net_addr *admin,
                              const char *advertised)
{
    char check_ip[NET_ADDR_MAX], hp[NET_ADDR_MAX + 8];

    if (!net_addr_is_wildcard(admin)) {
        net_addr_ip_text(admin, check_ip, sizeof(check_ip));
    } else {
        snprintf(check_ip, sizeof(check_ip), "%s",
                 advertised[0] != '\0'             ? advertised
                 : admin->sa.ss_family == AF_INET6 ? "::1"
                                                   : "127.0.0.1");
    }
    host_port_text(hp, sizeof(hp), check_ip, net_addr_port(admin));
    snprintf(out, len, "http://%s/healthz", hp);
}

/* Fills one registration for listener l. With [admin] (admin not NULL) its check is the admin
 * server's /healthz, as the fleet's: a TCP check through the listener would make sluice dial a
 * backend on every check interval. Without it, a TCP check on the advertised address. */
static void reg_fill(struct registration *g, const struct registration_conf *rc,
                     const struct registrar_listener *l, const struct net_addr *admin,
                     const char *host)
{
    int port = net_addr_port(l->bind);

    snprintf(g->name, sizeof(g->name), "%s", rc->name[0] != '\0' ? rc->name : l->name);
    snprintf(g->id, sizeof(g->id), "%s-%s-%d", g->name, host, port);
    if (rc->address[0] != '\0') {
        snprintf(g->address, sizeof(g->address), "%s", rc->address);
    } else {
        net_addr_ip_text(l->bind, g->address, sizeof(g->address));
    }
    g->spec = reg_spec(g, rc, port);
    g->spec.tags = rc->tags.items;
    g->spec.n_tags = rc->tags.n;
    if (admin != NULL) {
        admin_healthz_url(g->check, sizeof(g->check), admin, g->address);
        g->spec.http_check = g->check;
    } else {
        host_port_text(g->check, sizeof(g->check), g->address, port);
        g->spec.tcp_check = g->check;
    }
}

/* Fills the fleet registration: this process as one instance of service rc->fleet. Clients dial
 * the fleet listener front (its port, and its IP unless it binds a wildcard: then the agent's
 * node address); Consul checks the admin server's /healthz (admin_healthz_url). */
static void fleet_fill(struct registration *g, const struct registration_conf *rc,
                       const struct net_addr *admin, const struct net_addr *front, const char *host)
{
    int admin_port = net_addr_port(admin);

    snprintf(g->name, sizeof(g->name), "%s", rc->fleet);
    if (rc->fleet_id[0] != '\0') {
        snprintf(g->id, sizeof(g->id), "%s", rc->fleet_id);
    } else {
        snprintf(g->id, sizeof(g->id), "%s-%s-%d", g->name, host, admin_port);
    }
    if (rc->fleet_address[0] != '\0' || rc->address[0] != '\0') {
        snprintf(g->address, sizeof(g->address), "%s",
                 rc->fleet_address[0] != '\0' ? rc->fleet_address : rc->address);
    } else if (front != NULL && !net_addr_is_wildcard(front)) {
        net_addr_ip_text(front, g->address, sizeof(g->address));
    }
    admin_healthz_url(g->check, sizeof(g->check), admin, g->address);
    g->spec = reg_spec(g, rc,
                       rc->fleet_port != 0 ? rc->fleet_port
                       : front != NULL     ? net_addr_port(front)
                                           : 0);
    g->spec.tags = rc->fleet_tags.items;
    g->spec.n_tags = rc->fleet_tags.n;
    g->spec.http_check = g->check;
}

/* One registration per chosen listener, then the fleet's (whose port is that of the first
 * listener registered, or else of the first listener). */
static int registrar_fill(struct registrar *r, const struct registration_conf *rc,
                          const struct registrar_listener *listeners, size_t n,
                          const struct net_addr *admin, char *err, size_t err_len)
{
    char host[128] = "localhost";
    const struct net_addr *front = n > 0 ? listeners[0].bind : NULL;

    if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') {
        snprintf(host, sizeof(host), "localhost");
    }
    r->regs = calloc(n + 1, sizeof(*r->regs));
    if (r->regs == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (registration_conf_chooses(rc, listeners[i].name)) {
            front = r->n == 0 ? listeners[i].bind : front;
            reg_fill(&r->regs[r->n++], rc, &listeners[i], admin, host);
        }
    }
    if (rc->fleet[0] == '\0') {
        return 0;
    }
    if (admin == NULL) {
        snprintf(err, err_len, "[registration] fleet needs an [admin] section to check");
        return -EINVAL;
    }
    fleet_fill(&r->regs[r->n], rc, admin, front, host);
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->regs[i].id, r->regs[r->n].id) == 0) {
            snprintf(err, err_len,
                     "[registration] fleet_id %s is also the ID of a listener's "
                     "registration; set another fleet_id",
                     r->regs[i].id);
            return -EINVAL;
        }
    }
    r->n++;
    return 0;
}

int registrar_create(const struct consul_conf *ccfg, const struct registration_conf *rcfg,
                     const struct registrar_listener *listeners, size_t n_listeners,
                     const struct net_addr *admin, struct logger *log, struct registrar **out,
                     char *err, size_t err_len)
{
    struct registrar *r;
    pthread_condattr_t attr;
    int rc;

    *out = NULL;
    if (rcfg->line == 0) {
        return 0;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return -ENOMEM;
    }
    r->cfg = rcfg;
    r->log = log;
    r->rng = rng_seed();
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->status_lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &attr);
    pthread_condattr_destroy(&attr);
    rc = registrar_fill(r, rcfg, listeners, n_listeners, admin, err, err_len);
    if (rc == 0) {
        rc = consul_client_create(ccfg, &r->client, err, err_len);
    }
    if (rc != 0) {
        registrar_destroy(r);
        return rc;
    }
    *out = r;
    return 0;
}

int registrar_start(struct registrar *r)
{
    int rc = pthread_create(&r->thread, NULL, registrar_main, r);

    if (rc != 0) {
        return -rc;
    }
    r->started = 1;
    log_event(r->log, LOG_LEVEL_INFO, "registrar_started",
              LOG_STR("consul", consul_client_address(r->client)), LOG_INT("services", r->n),
              LOG_INT("anti_entropy_ms", r->cfg->anti_entropy_ms));
    return 0;
}

void registrar_stop(struct registrar *r)
{
    char msg[REGISTRAR_MSG_MAX];

    if (r == NULL || r->stopped) {
        return;
    }
    r->stopped = 1;
    pthread_mutex_lock(&r->lock);
    atomic_store(&r->stop, 1);
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    if (r->started) {
        pthread_join(r->thread, NULL);
        r->started = 0;
    }
    for (size_t i = 0; i < r->n; i++) {
        /* also when not confirmed: an attempt that failed half-way may have left it; one the
         * agent never had (a refused registration) is not reported as removed */
        int absent = 0;
        enum registrar_result res = deregister_call(r->client, r->regs[i].id, SHUTDOWN_TIMEOUT_MS,
                                                    msg, sizeof(msg), &absent);
        if (res == REGISTRAR_DONE && !absent) {
            log_event(r->log, LOG_LEVEL_INFO, "registration_removed", LOG_STR("id", r->regs[i].id));
        } else if (res != REGISTRAR_DONE) {
            log_event(r->log, LOG_LEVEL_WARN, "registration_remove_failed",
                      LOG_STR("id", r->regs[i].id), LOG_STR("error", msg));
        }
    }
}

void registrar_destroy(struct registrar *r)
{
    if (r == NULL) {
        return;
    }
    if (r->started) {
        registrar_stop(r);
    }
    consul_client_destroy(r->client);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->status_lock);
    free(r->regs);
    free(r);
}

size_t registrar_status(struct registrar *r, struct registrar_status *out, size_t cap,
                        unsigned long long *successes, unsigned long long *failures)
{
    if (r == NULL)
        return 0;
    pthread_mutex_lock(&r->status_lock);
    for (size_t i = 0; i < r->n && i < cap; i++) {
        out[i] = r->regs[i].shown;
        if (out[i].id[0] == '\0') /* not tried yet */
            snprintf(out[i].id, sizeof(out[i].id), "%s", r->regs[i].id);
        if (out[i].service[0] == '\0')
            snprintf(out[i].service, sizeof(out[i].service), "%s", r->regs[i].name);
    }
    pthread_mutex_unlock(&r->status_lock);
    if (successes != NULL)
        *successes = atomic_load(&r->successes);
    if (failures != NULL)
        *failures = atomic_load(&r->failed);
    return r->n;
}
