/* The admin HTTP server: libmicrohttpd on its own thread, the requests it receives handed to
 * admin_route() over the daemon. */
#include "admin.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin_route.h"
#include "daemon_int.h"
#include "inifile.h"
#include "report.h"

#define TOKEN_MAX      4096 /* longest token accepted from token_file */
#define ADMIN_CONNS    64   /* connections the server serves at once */
#define ADMIN_IDLE_S   10   /* an idle admin connection is closed after this */
#define RELOAD_WAIT_MS 30000

struct admin {
    struct daemon *d;       /* what it reports on and acts on */
    struct MHD_Daemon *mhd; /* the server */
    char *token;            /* the secret; NULL = none configured */
    int read_auth;          /* reads need the token too */
};

/* One request being received. */
struct request {
    char *body;  /* what arrived, NUL-terminated */
    size_t len;  /* bytes in body */
    int too_big; /* it passed ADMIN_BODY_MAX: the answer is 413 */
};

/* --- the daemon behind the routes ---------------------------------------------------------- */

static const char *daemon_health_word(void *ctx)
{
    return report_health_word(((struct admin *)ctx)->d);
}

static char *daemon_status_json(void *ctx)
{
    return report_status_json(((struct admin *)ctx)->d);
}

static char *daemon_metrics(void *ctx, size_t *len)
{
    return report_metrics(((struct admin *)ctx)->d, len);
}

static long daemon_service_find(void *ctx, const char *name)
{
    const struct daemon *d = ((struct admin *)ctx)->d;

    for (size_t i = 0; i < d->cfg->n_services; i++)
        if (strcmp(d->cfg->services[i].name, name) == 0)
            return (long)i;
    return -1;
}

static int daemon_instance_admin(void *ctx, long svc, const char *id, enum owner_admin action)
{
    return owner_admin(((struct admin *)ctx)->d->services[svc], id, action);
}

static int daemon_instance_weight(void *ctx, long svc, const char *id, uint32_t weight)
{
    return owner_admin_weight(((struct admin *)ctx)->d->services[svc], id, weight);
}

static int daemon_instance_show(void *ctx, long svc, const char *id, char *out, size_t len)
{
    struct owner *o = ((struct admin *)ctx)->d->services[svc];
    size_t n = owner_instances(o, NULL, 0);
    struct owner_instance_info *all = calloc(n + 1, sizeof(*all));
    int rc = -ENOENT;

    if (all == NULL)
        return -ENOMEM;
    n = owner_instances(o, all, n + 1);
    for (size_t i = 0; i < n && rc != 0; i++) {
        if (strcmp(all[i].id, id) == 0) {
            snprintf(out, len, "\"state\":\"%s\",\"weight\":%u,\"effective_weight\":%.2f",
                     all[i].state, all[i].weight, (double)all[i].effective / OWNER_WEIGHT_SCALE);
            rc = 0;
        }
    }
    free(all);
    return rc;
}

/* The main thread reloads; this thread waits for its verdict. */
static int daemon_reload(void *ctx, struct ini_errors *errs)
{
    return daemon_reload_from_admin(((struct admin *)ctx)->d, errs, RELOAD_WAIT_MS);
}

static void daemon_changed(void *ctx, const char *svc, const char *id, const char *action)
{
    log_event(&((struct admin *)ctx)->d->log, LOG_LEVEL_INFO, "admin_change",
              LOG_STR("service", svc), LOG_STR("instance", id), LOG_STR("action", action));
}

static const struct admin_ops daemon_ops = {
    .health_word = daemon_health_word,
    .status_json = daemon_status_json,
    .metrics = daemon_metrics,
    .service_find = daemon_service_find,
    .instance_admin = daemon_instance_admin,
    .instance_weight = daemon_instance_weight,
    .instance_show = daemon_instance_show,
    .reload = daemon_reload,
    .changed = daemon_changed,
};

/* --- the HTTP server ------------------------------------------------------------------------ */

static enum MHD_Result answer(struct MHD_Connection *c, const struct admin_reply *reply)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(reply->len, (void *)reply->body, MHD_RESPMEM_MUST_COPY);

    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", reply->type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (reply->status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, "WWW-Authenticate", "Basic realm=\"sluice\", charset=\"UTF-8\"");
    enum MHD_Result rc = MHD_queue_response(c, reply->status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result route(struct admin *a, struct MHD_Connection *c, const char *url,
                             const char *method, const struct request *rq)
{
    const struct admin_auth auth = {.token = a->token, .read_auth = a->read_auth};
    const struct admin_request call = {
        .method = method,
        .url = url,
        .authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"),
        .body = rq->body,
        .len = rq->len,
        .too_big = rq->too_big,
    };
    struct admin_reply reply;

    admin_route(&auth, &daemon_ops, a, &call, &reply);
    enum MHD_Result rc = answer(c, &reply);
    admin_reply_free(&reply);
    return rc;
}

/* libmicrohttpd calls this once with the headers, then per body chunk, then with none. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct admin *a = cls;
    struct request *rq = *con_cls;

    (void)version;
    if (rq == NULL) {
        rq = calloc(1, sizeof(*rq));
        *con_cls = rq;
        return rq != NULL ? MHD_YES : MHD_NO;
    }
    if (*upload_size > 0) {
        if (!rq->too_big && rq->len + *upload_size <= ADMIN_BODY_MAX) {
            char *grown = realloc(rq->body, rq->len + *upload_size + 1);
            if (grown == NULL)
                return MHD_NO;
            memcpy(grown + rq->len, upload, *upload_size);
            rq->body = grown;
            rq->len += *upload_size;
            rq->body[rq->len] = '\0';
        } else {
            rq->too_big = 1; /* read on (the client is still sending) but keep nothing */
        }
        *upload_size = 0;
        return MHD_YES;
    }
    return route(a, c, url, method, rq);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct request *rq = *con_cls;

    (void)cls;
    (void)c;
    (void)toe;
    if (rq != NULL) {
        free(rq->body);
        free(rq);
        *con_cls = NULL;
    }
}

/* The raw URL, so that a %2F inside an instance id stays inside its segment. */
static size_t keep_escapes(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

/* --- lifecycle --------------------------------------------------------------------------- */

/* The token of [admin]: the key's value, or token_file's text without surrounding blanks. Only a
 * regular file is read, without blocking (a FIFO would hang start-up). */
static int admin_token(const struct admin_conf *cfg, char **out, char *err, size_t err_len)
{
    char msg[INI_PHRASE_MAX], *data;
    size_t n = 0;

    *out = NULL;
    if (cfg->token != NULL)
        return (*out = strdup(cfg->token)) != NULL ? 0 : -ENOMEM;
    if (cfg->token_file == NULL)
        return 0;
    const char *why = ini_read_file(cfg->token_file, TOKEN_MAX + 1, &data, &n, NULL, msg);
    if (why != NULL) {
        int e = errno;
        snprintf(err, err_len, "[admin] token_file %s: %s", cfg->token_file,
                 e == EFBIG ? "is longer than 4096 bytes" : why);
        return -e;
    }
    char *s = data + strspn(data, " \t\r\n");
    size_t len = strlen(s);
    while (len > 0 && strchr(" \t\r\n", s[len - 1]) != NULL)
        s[--len] = '\0';
    if (len == 0 || n > TOKEN_MAX) {
        snprintf(err, err_len, "[admin] token_file %s: %s", cfg->token_file,
                 len == 0 ? "is empty" : "is longer than 4096 bytes");
        free(data);
        return -EINVAL;
    }
    *out = strdup(s);
    free(data);
    return *out != NULL ? 0 : -ENOMEM;
}

int admin_start(struct daemon *d, struct admin **out, char *err, size_t err_len)
{
    const struct admin_conf *cfg = &d->cfg->admin;
    struct admin *a;
    int rc;

    *out = NULL;
    if (cfg->line == 0)
        return 0;
    if ((a = calloc(1, sizeof(*a))) == NULL)
        return -ENOMEM;
    a->d = d;
    a->read_auth = admin_conf_read_auth(cfg);
    if ((rc = admin_token(cfg, &a->token, err, err_len)) != 0) {
        admin_stop(a);
        return rc;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO |
                     (cfg->bind.sa.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    a->mhd = MHD_start_daemon(
        flags, net_addr_port(&cfg->bind), NULL, NULL, on_request, a, MHD_OPTION_SOCK_ADDR,
        &cfg->bind.sa, MHD_OPTION_NOTIFY_COMPLETED, on_completed, a, MHD_OPTION_UNESCAPE_CALLBACK,
        keep_escapes, a, MHD_OPTION_CONNECTION_LIMIT, (unsigned)ADMIN_CONNS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)ADMIN_IDLE_S, MHD_OPTION_END);
    if (a->mhd == NULL) {
        snprintf(err, err_len,
                 "[admin] cannot listen on %s (in use, or not an address of this "
                 "host)",
                 cfg->bind.text);
        admin_stop(a);
        return -EADDRINUSE;
    }
    log_event(&d->log, LOG_LEVEL_INFO, "admin_started", LOG_STR("bind", cfg->bind.text),
              LOG_STR("read_auth", a->read_auth ? "on" : "off"),
              LOG_STR("token", a->token != NULL ? "set" : "none"));
    *out = a;
    return 0;
}

void admin_stop(struct admin *a)
{
    if (a == NULL)
        return;
    if (a->mhd != NULL)
        MHD_stop_daemon(a->mhd);
    if (a->token != NULL) {
        /* the secret does not outlive its use in freed memory */
        memset(a->token, 0, strlen(a->token));
        free(a->token);
    }
    free(a);
}
