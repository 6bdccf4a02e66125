/* The admin HTTP server: libmicrohttpd on its own thread, token checks, routing, JSON errors. */
#include "admin.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon_int.h"
#include "inifile.h"
#include "report.h"
#include "status_page.h"

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

/* --- answers ----------------------------------------------------------------------------- */

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *type,
                              const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);

    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, "WWW-Authenticate", "Basic realm=\"sluice\", charset=\"UTF-8\"");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

/* {"error": "<what>"} with status; what may hold anything (it is JSON-escaped). */
static enum MHD_Result answer_error(struct MHD_Connection *c, unsigned status, const char *what)
{
    cJSON *o = cJSON_CreateObject();
    char *text;

    cJSON_AddStringToObject(o, "error", what);
    text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (text == NULL)
        return answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "application/json",
                      "{\"error\":\"out of memory\"}", 25);
    enum MHD_Result rc = answer(c, status, "application/json", text, strlen(text));
    cJSON_free(text);
    return rc;
}

static enum MHD_Result answer_json(struct MHD_Connection *c, unsigned status, char *text)
{
    if (text == NULL)
        return answer_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    enum MHD_Result rc = answer(c, status, "application/json", text, strlen(text));
    free(text);
    return rc;
}

/* --- who is calling ---------------------------------------------------------------------- */

int admin_secret_equal(const char *secret, const char *given, size_t given_len)
{
    size_t len = strlen(secret);
    unsigned char diff = (unsigned char)(len != given_len);

    /* every byte of the secret is looked at, whatever the given text holds */
    for (size_t i = 0; i < len; i++)
        diff |= (unsigned char)(secret[i] ^ (i < given_len ? given[i] : 0));
    return diff == 0;
}

/* base64 of src (NUL-terminated) into out; -1 when it is not base64 or does not fit. */
static int base64_decode(const char *src, unsigned char *out, size_t cap, size_t *len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint32_t acc = 0;
    int bits = 0;

    *len = 0;
    for (; *src != '\0' && *src != '='; src++) {
        const char *p = strchr(alphabet, *src);
        if (p == NULL)
            return -1;
        acc = acc << 6 | (uint32_t)(p - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (*len >= cap)
                return -1;
            out[(*len)++] = (unsigned char)(acc >> bits);
        }
    }
    return 0;
}

/* 0 when the caller sent the token (Bearer, or Basic with it as the password); 401 when it
 * sent none, 403 when it sent a wrong one. */
static unsigned caller_status(const struct admin *a, struct MHD_Connection *c)
{
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    unsigned char plain[TOKEN_MAX + 256];
    size_t len;

    if (auth == NULL)
        return MHD_HTTP_UNAUTHORIZED;
    if (strncasecmp(auth, "Bearer ", 7) == 0)
        return admin_secret_equal(a->token, auth + 7, strlen(auth + 7)) ? 0 : MHD_HTTP_FORBIDDEN;
    if (strncasecmp(auth, "Basic ", 6) == 0 &&
        base64_decode(auth + 6, plain, sizeof(plain), &len) == 0) {
        const unsigned char *colon = memchr(plain, ':', len);
        size_t off = colon != NULL ? (size_t)(colon - plain) + 1 : len;
        return colon != NULL && admin_secret_equal(a->token, (const char *)plain + off, len - off)
                   ? 0
                   : MHD_HTTP_FORBIDDEN;
    }
    return MHD_HTTP_UNAUTHORIZED;
}

/* Whether the call may go on; answers 401/403 itself when it may not. mutating: a change. */
static int authorized(const struct admin *a, struct MHD_Connection *c, int mutating,
                      enum MHD_Result *rc)
{
    if (!mutating && !a->read_auth)
        return 1;
    if (a->token == NULL) {
        *rc = answer_error(c, MHD_HTTP_FORBIDDEN,
                           "changes through the admin API need [admin] token or token_file");
        return 0;
    }
    unsigned status = caller_status(a, c);
    if (status == 0)
        return 1;
    *rc = answer_error(c, status,
                       status == MHD_HTTP_UNAUTHORIZED
                           ? "this call needs the admin token (Authorization: Bearer TOKEN)"
                           : "the admin token is wrong");
    return 0;
}

/* --- instance calls ---------------------------------------------------------------------- */

/* Percent-decodes one path segment in place; -1 on a broken escape. */
static int segment_decode(char *s)
{
    char *o = s;

    for (; *s != '\0'; s++) {
        if (*s != '%') {
            *o++ = *s;
            continue;
        }
        char hex[3] = {s[1], s[1] ? s[2] : '\0', '\0'};
        char *end;
        long v = strtol(hex, &end, 16);
        if (hex[0] == '\0' || hex[1] == '\0' || *end != '\0' || v == 0)
            return -1;
        *o++ = (char)v;
        s += 2;
    }
    *o = '\0';
    return 0;
}

static long service_index(const struct daemon *d, const char *name)
{
    for (size_t i = 0; i < d->cfg->n_services; i++)
        if (strcmp(d->cfg->services[i].name, name) == 0)
            return (long)i;
    return -1;
}

/* {"weight": N} -> N; -1 with why on a bad body. */
static long weight_of(const struct request *rq, const char **why)
{
    cJSON *o = cJSON_ParseWithLength(rq->body != NULL ? rq->body : "", rq->len);
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(o, "weight");
    long v = -1;

    if (o == NULL)
        *why = "the body is not JSON (want {\"weight\": N})";
    else if (!cJSON_IsNumber(w)) /* same words as for a fraction, which needs the range first */
        *why = "\"weight\" must be a whole number";                // NOLINT(bugprone-branch-clone)
    else if (w->valuedouble < 0 || w->valuedouble > LB_WEIGHT_MAX) /* before any cast to long */
        *why = "\"weight\" must be between 0 and 1000000";
    else if (w->valuedouble != (double)(long)w->valuedouble)
        *why = "\"weight\" must be a whole number";
    else
        v = (long)w->valuedouble;
    cJSON_Delete(o);
    return v;
}

/* The JSON answer to a change: the instance as status shows it now. */
static enum MHD_Result answer_instance(struct MHD_Connection *c, struct owner *o, const char *id)
{
    char text[1024];
    size_t n = owner_instances(o, NULL, 0);
    struct owner_instance_info *all = calloc(n + 1, sizeof(*all));

    if (all == NULL)
        return answer_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    n = owner_instances(o, all, n + 1);
    snprintf(text, sizeof(text), "{\"ok\":true}");
    for (size_t i = 0; i < n; i++)
        if (strcmp(all[i].id, id) == 0)
            snprintf(text, sizeof(text),
                     "{\"ok\":true,\"instance\":{\"state\":\"%s\",\"weight\":%u,"
                     "\"effective_weight\":%.2f}}",
                     all[i].state, all[i].weight, (double)all[i].effective / OWNER_WEIGHT_SCALE);
    free(all);
    return answer(c, MHD_HTTP_OK, "application/json", text, strlen(text));
}

/* /v1/services/<svc>/instances/<id>/<action>: drain | enable | disable (POST), weight (PUT). */
static enum MHD_Result instance_call(struct admin *a, struct MHD_Connection *c, const char *method,
                                     char *path, const struct request *rq)
{
    char *svc = path, *rest = strchr(svc, '/'), *id, *action;
    const char *why = NULL;

    if (rest == NULL || strncmp(rest, "/instances/", 11) != 0)
        return answer_error(c, MHD_HTTP_NOT_FOUND, "no such path");
    *rest = '\0';
    id = rest + 11;
    action = strrchr(id, '/');
    if (action == NULL || action == id || segment_decode(svc) != 0)
        return answer_error(c, MHD_HTTP_NOT_FOUND, "no such path");
    *action++ = '\0';
    if (segment_decode(id) != 0)
        return answer_error(c, MHD_HTTP_BAD_REQUEST, "the instance id has a broken %-escape");
    long si = service_index(a->d, svc);
    if (si < 0)
        return answer_error(c, MHD_HTTP_NOT_FOUND, "there is no such service");
    struct owner *o = a->d->services[si];
    int is_weight = strcmp(action, "weight") == 0;
    int known = is_weight || strcmp(action, "drain") == 0 || strcmp(action, "enable") == 0 ||
                strcmp(action, "disable") == 0;
    if (!known)
        return answer_error(c, MHD_HTTP_NOT_FOUND,
                            "unknown action (use drain, enable, disable or weight)");
    if (strcmp(method, is_weight ? "PUT" : "POST") != 0)
        return answer_error(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                            is_weight ? "weight takes PUT" : "this action takes POST");
    int rc;
    if (is_weight) {
        long w = weight_of(rq, &why);
        if (w < 0)
            return answer_error(c, MHD_HTTP_BAD_REQUEST, why);
        rc = owner_admin_weight(o, id, (uint32_t)w);
    } else {
        enum owner_admin act = strcmp(action, "drain") == 0     ? OWNER_ADMIN_DRAIN
                               : strcmp(action, "disable") == 0 ? OWNER_ADMIN_DISABLE
                                                                : OWNER_ADMIN_NONE;
        rc = owner_admin(o, id, act);
    }
    if (rc == -ENOENT)
        return answer_error(c, MHD_HTTP_NOT_FOUND, "the service lists no such instance");
    if (rc != 0)
        return answer_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    log_event(&a->d->log, LOG_LEVEL_INFO, "admin_change", LOG_STR("service", svc),
              LOG_STR("instance", id), LOG_STR("action", action));
    return answer_instance(c, o, id);
}

/* POST /v1/reload: the main thread reloads; the answer carries a broken file's errors. */
static enum MHD_Result reload_call(struct admin *a, struct MHD_Connection *c)
{
    struct ini_errors errs = {0};
    int rc = daemon_reload_from_admin(a->d, &errs, RELOAD_WAIT_MS);
    cJSON *o = cJSON_CreateObject(), *list = cJSON_CreateArray();

    cJSON_AddBoolToObject(o, "ok", rc == 0);
    if (rc != 0)
        cJSON_AddStringToObject(o, "error",
                                rc == -ETIMEDOUT ? "the reload did not finish in time"
                                : rc == -EBUSY   ? "sluice is shutting down"
                                                 : "the configuration was rejected");
    cJSON_AddItemToObject(o, "errors", list);
    for (size_t i = 0; i < errs.n; i++)
        cJSON_AddItemToArray(list, cJSON_CreateString(errs.lines[i]));
    ini_errors_clear(&errs);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    char *copy = text != NULL ? strdup(text) : NULL;
    cJSON_free(text);
    return answer_json(c, rc == 0 ? MHD_HTTP_OK : MHD_HTTP_BAD_REQUEST, copy);
}

/* --- routing ----------------------------------------------------------------------------- */

/* A read of one of the GET pages. */
static enum MHD_Result read_call(struct admin *a, struct MHD_Connection *c, const char *url)
{
    if (strcmp(url, "/status") == 0)
        return answer_json(c, MHD_HTTP_OK, report_status_json(a->d));
    if (strcmp(url, "/metrics") == 0) {
        size_t len = 0;
        char *text = report_metrics(a->d, &len);
        if (text == NULL)
            return answer_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
        enum MHD_Result rc = answer(c, MHD_HTTP_OK, "text/plain; version=0.0.4", text, len);
        free(text);
        return rc;
    }
    return answer(c, MHD_HTTP_OK, "text/html; charset=utf-8", status_page_html,
                  strlen(status_page_html));
}

static enum MHD_Result route(struct admin *a, struct MHD_Connection *c, const char *url,
                             const char *method, const struct request *rq)
{
    enum MHD_Result rc = MHD_NO;
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

    if (strcmp(url, "/healthz") == 0) {
        if (!get)
            return answer_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "this path takes GET");
        const char *word = report_health_word(a->d);
        return answer(c, strcmp(word, "ok") == 0 ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                      "text/plain", word, strlen(word));
    }
    if (strcmp(url, "/") == 0 || strcmp(url, "/status") == 0 || strcmp(url, "/metrics") == 0) {
        if (!get)
            return answer_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "this path takes GET");
        return authorized(a, c, 0, &rc) ? read_call(a, c, url) : rc;
    }
    if (strcmp(url, "/v1/reload") == 0) {
        if (strcmp(method, "POST") != 0)
            return answer_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "this path takes POST");
        return authorized(a, c, 1, &rc) ? reload_call(a, c) : rc;
    }
    if (strncmp(url, "/v1/services/", 13) == 0) {
        if (!authorized(a, c, 1, &rc))
            return rc;
        char path[2048];
        if (strlen(url + 13) >= sizeof(path))
            return answer_error(c, MHD_HTTP_URI_TOO_LONG, "the path is too long");
        snprintf(path, sizeof(path), "%s", url + 13);
        return instance_call(a, c, method, path, rq);
    }
    return answer_error(c, MHD_HTTP_NOT_FOUND, "no such path");
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
    if (rq->too_big)
        return answer_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "the request body is over 64 KiB");
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
