/* The admin API's routing, token checks, JSON bodies and JSON errors, free of the HTTP server. */
#include "admin_route.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lb_conf.h"
#include "status_page.h"

#define TOKEN_MAX 4096 /* longest token: what a Basic header may carry besides the user */
#define PATH_MAX_ 2048 /* longest /v1/services/... path after its prefix */

enum {
    HTTP_OK = 200,
    HTTP_BAD_REQUEST = 400,
    HTTP_UNAUTHORIZED = 401,
    HTTP_FORBIDDEN = 403,
    HTTP_NOT_FOUND = 404,
    HTTP_METHOD_NOT_ALLOWED = 405,
    HTTP_CONTENT_TOO_LARGE = 413,
    HTTP_URI_TOO_LONG = 414,
    HTTP_INTERNAL_SERVER_ERROR = 500,
    HTTP_SERVICE_UNAVAILABLE = 503,
};

static const char json_type[] = "application/json";
static const char oom_body[] = "{\"error\":\"out of memory\"}";

/* --- answers ----------------------------------------------------------------------------- */

static void reply_static(struct admin_reply *out, unsigned status, const char *type,
                         const char *text)
{
    *out = (struct admin_reply){.status = status, .type = type, .body = text, .len = strlen(text)};
}

static void reply_oom(struct admin_reply *out)
{
    reply_static(out, HTTP_INTERNAL_SERVER_ERROR, json_type, oom_body);
}

/* Takes text (malloc'd, len bytes); NULL answers 500. */
static void reply_owned(struct admin_reply *out, unsigned status, const char *type, char *text,
                        size_t len)
{
    if (text == NULL) {
        reply_oom(out);
        return;
    }
    *out = (struct admin_reply){
        .status = status, .type = type, .body = text, .len = len, .owned = text};
}

/* The unformatted text of o (deleted here) as an owned JSON answer. */
static void reply_cjson(struct admin_reply *out, unsigned status, cJSON *o)
{
    char *text = o != NULL ? cJSON_PrintUnformatted(o) : NULL;
    char *copy = text != NULL ? strdup(text) : NULL; /* cJSON's allocator may not be free() */

    cJSON_free(text);
    cJSON_Delete(o);
    reply_owned(out, status, json_type, copy, copy != NULL ? strlen(copy) : 0);
}

/* {"error": "<what>"} with status; what may hold anything (it is JSON-escaped). */
static void reply_error(struct admin_reply *out, unsigned status, const char *what)
{
    cJSON *o = cJSON_CreateObject();

    if (o == NULL || cJSON_AddStringToObject(o, "error", what) == NULL) {
        cJSON_Delete(o);
        reply_oom(out);
        return;
    }
    reply_cjson(out, status, o);
}

void admin_reply_free(struct admin_reply *r)
{
    if (r == NULL) {
        return;
    }
    free(r->owned);
    *r = (struct admin_reply){0};
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
static unsigned caller_status(const char *token, const char *auth)
{
    unsigned char plain[TOKEN_MAX + 256];
    size_t len;

    if (auth == NULL)
        return HTTP_UNAUTHORIZED;
    if (strncasecmp(auth, "Bearer ", 7) == 0)
        return admin_secret_equal(token, auth + 7, strlen(auth + 7)) ? 0 : HTTP_FORBIDDEN;
    if (strncasecmp(auth, "Basic ", 6) == 0 &&
        base64_decode(auth + 6, plain, sizeof(plain), &len) == 0) {
        const unsigned char *colon = memchr(plain, ':', len);
        size_t off = colon != NULL ? (size_t)(colon - plain) + 1 : len;
        return colon != NULL && admin_secret_equal(token, (const char *)plain + off, len - off)
                   ? 0
                   : HTTP_FORBIDDEN;
    }
    return HTTP_UNAUTHORIZED;
}

/* Whether the call may go on; answers 401/403 into out when it may not. mutating: a change. */
static int authorized(const struct admin_auth *auth, const struct admin_request *rq, int mutating,
                      struct admin_reply *out)
{
    if (!mutating && !auth->read_auth)
        return 1;
    if (auth->token == NULL) {
        reply_error(out, HTTP_FORBIDDEN,
                    "changes through the admin API need [admin] token or token_file");
        return 0;
    }
    unsigned status = caller_status(auth->token, rq->authorization);
    if (status == 0)
        return 1;
    reply_error(out, status,
                status == HTTP_UNAUTHORIZED
                    ? "this call needs the admin token (Authorization: Bearer TOKEN)"
                    : "the admin token is wrong");
    return 0;
}

/* --- instance calls ---------------------------------------------------------------------- */

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes one path segment in place; -1 on a broken escape or an escaped NUL. Exactly two
 * hex digits follow each '%' (strtol would also take "+f", "-1" or " f"). */
static int segment_decode(char *s)
{
    char *o = s;

    for (; *s != '\0'; s++) {
        if (*s != '%') {
            *o++ = *s;
            continue;
        }
        int hi = hex_digit(s[1]), lo = hi < 0 ? -1 : hex_digit(s[2]);
        if (lo < 0 || (hi == 0 && lo == 0))
            return -1;
        *o++ = (char)(hi << 4 | lo);
        s += 2;
    }
    *o = '\0';
    return 0;
}

/* {"weight": N} -> N; -1 with why on a bad body. */
static long weight_of(const struct admin_request *rq, const char **why)
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
static void reply_instance(const struct admin_ops *ops, void *ctx, long si, const char *id,
                           struct admin_reply *out)
{
    char members[900], text[1024];

    if (ops->instance_show(ctx, si, id, members, sizeof(members)) == 0)
        snprintf(text, sizeof(text), "{\"ok\":true,\"instance\":{%s}}", members);
    else
        snprintf(text, sizeof(text), "{\"ok\":true}");
    char *copy = strdup(text);
    reply_owned(out, HTTP_OK, json_type, copy, copy != NULL ? strlen(copy) : 0);
}

/* Which action a path names: 1 weight, 0 another known one (*act), -1 unknown. */
static int action_parse(const char *action, enum owner_admin *act)
{
    if (strcmp(action, "weight") == 0)
        return 1;
    if (strcmp(action, "drain") == 0)
        *act = OWNER_ADMIN_DRAIN;
    else if (strcmp(action, "disable") == 0)
        *act = OWNER_ADMIN_DISABLE;
    else if (strcmp(action, "enable") == 0)
        *act = OWNER_ADMIN_NONE;
    else
        return -1;
    return 0;
}

/* path = <svc>/instances/<id>/<action>: drain | enable | disable (POST), weight (PUT). */
static void instance_call(const struct admin_ops *ops, void *ctx, const struct admin_request *rq,
                          char *path, struct admin_reply *out)
{
    char *svc = path, *rest = strchr(svc, '/'), *id, *action;
    const char *why = NULL;
    enum owner_admin act = OWNER_ADMIN_NONE;

    if (rest == NULL || strncmp(rest, "/instances/", 11) != 0) {
        reply_error(out, HTTP_NOT_FOUND, "no such path");
        return;
    }
    *rest = '\0';
    id = rest + 11;
    action = strrchr(id, '/');
    if (action == NULL || action == id || segment_decode(svc) != 0) {
        reply_error(out, HTTP_NOT_FOUND, "no such path");
        return;
    }
    *action++ = '\0';
    if (segment_decode(id) != 0) {
        reply_error(out, HTTP_BAD_REQUEST, "the instance id has a broken %-escape");
        return;
    }
    long si = ops->service_find(ctx, svc);
    if (si < 0) {
        reply_error(out, HTTP_NOT_FOUND, "there is no such service");
        return;
    }
    int is_weight = action_parse(action, &act);
    if (is_weight < 0) {
        reply_error(out, HTTP_NOT_FOUND, "unknown action (use drain, enable, disable or weight)");
        return;
    }
    if (strcmp(rq->method, is_weight ? "PUT" : "POST") != 0) {
        reply_error(out, HTTP_METHOD_NOT_ALLOWED,
                    is_weight ? "weight takes PUT" : "this action takes POST");
        return;
    }
    int rc;
    if (is_weight) {
        long w = weight_of(rq, &why);
        if (w < 0) {
            reply_error(out, HTTP_BAD_REQUEST, why);
            return;
        }
        rc = ops->instance_weight(ctx, si, id, (uint32_t)w);
    } else {
        rc = ops->instance_admin(ctx, si, id, act);
    }
    if (rc == -ENOENT) {
        reply_error(out, HTTP_NOT_FOUND, "the service lists no such instance");
        return;
    }
    if (rc != 0) {
        reply_error(out, HTTP_INTERNAL_SERVER_ERROR, "out of memory");
        return;
    }
    ops->changed(ctx, svc, id, action);
    reply_instance(ops, ctx, si, id, out);
}

/* POST /v1/reload: the answer carries a broken file's errors. */
static void reload_call(const struct admin_ops *ops, void *ctx, struct admin_reply *out)
{
    struct ini_errors errs = {0};
    int rc = ops->reload(ctx, &errs);
    cJSON *o = cJSON_CreateObject(), *list = cJSON_CreateArray();

    if (o == NULL || list == NULL) {
        cJSON_Delete(o);
        cJSON_Delete(list);
        ini_errors_clear(&errs);
        {
            reply_oom(out);
            return;
        }
    }
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
    reply_cjson(out, rc == 0 ? HTTP_OK : HTTP_BAD_REQUEST, o);
}

/* --- routing ----------------------------------------------------------------------------- */

/* A read of one of the GET pages. */
static void read_call(const struct admin_ops *ops, void *ctx, const char *url,
                      struct admin_reply *out)
{
    if (strcmp(url, "/status") == 0) {
        char *text = ops->status_json(ctx);
        {
            reply_owned(out, HTTP_OK, json_type, text, text != NULL ? strlen(text) : 0);
            return;
        }
    }
    if (strcmp(url, "/metrics") == 0) {
        size_t len = 0;
        char *text = ops->metrics(ctx, &len);
        {
            reply_owned(out, HTTP_OK, "text/plain; version=0.0.4", text, len);
            return;
        }
    }
    reply_static(out, HTTP_OK, "text/html; charset=utf-8", status_page_html);
}

void admin_route(const struct admin_auth *auth, const struct admin_ops *ops, void *ctx,
                 const struct admin_request *rq, struct admin_reply *out)
{
    const char *url = rq->url, *method = rq->method;
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

    *out = (struct admin_reply){0};
    if (rq->too_big) {
        reply_error(out, HTTP_CONTENT_TOO_LARGE, "the request body is over 64 KiB");
        return;
    }
    if (strcmp(url, "/healthz") == 0) {
        if (!get) {
            reply_error(out, HTTP_METHOD_NOT_ALLOWED, "this path takes GET");
            return;
        }
        const char *word = ops->health_word(ctx);
        {
            reply_static(out, strcmp(word, "ok") == 0 ? HTTP_OK : HTTP_SERVICE_UNAVAILABLE,
                         "text/plain", word);
            return;
        }
    }
    if (strcmp(url, "/") == 0 || strcmp(url, "/status") == 0 || strcmp(url, "/metrics") == 0) {
        if (!get) {
            reply_error(out, HTTP_METHOD_NOT_ALLOWED, "this path takes GET");
            return;
        }
        if (authorized(auth, rq, 0, out))
            read_call(ops, ctx, url, out);
        return;
    }
    if (strcmp(url, "/v1/reload") == 0) {
        if (strcmp(method, "POST") != 0) {
            reply_error(out, HTTP_METHOD_NOT_ALLOWED, "this path takes POST");
            return;
        }
        if (authorized(auth, rq, 1, out))
            reload_call(ops, ctx, out);
        return;
    }
    if (strncmp(url, "/v1/services/", 13) == 0) {
        char path[PATH_MAX_];
        if (!authorized(auth, rq, 1, out))
            return;
        if (strlen(url + 13) >= sizeof(path)) {
            reply_error(out, HTTP_URI_TOO_LONG, "the path is too long");
            return;
        }
        snprintf(path, sizeof(path), "%s", url + 13);
        return instance_call(ops, ctx, rq, path, out);
    }
    reply_error(out, HTTP_NOT_FOUND, "no such path");
}
