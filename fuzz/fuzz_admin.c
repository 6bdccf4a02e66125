/* libFuzzer target: the admin API's routing, token checks and JSON bodies (admin_route.c), over a
 * stub daemon of two services whose instances the calls really drain, disable and reweight.
 * The input is "METHOD\nURL\nAUTHORIZATION\nBODY" (an empty AUTHORIZATION line sends none). Every
 * answer must be well formed: a known status, a body, valid JSON with an "error" for every
 * refusal, and no change without the token. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin_route.h"
#include "fuzz_check.h"

#define TOKEN "fuzz-token"

/* One instance of the stub. */
struct stub_instance {
    const char *id;        /* its id */
    enum owner_admin mode; /* the operator's last action */
    uint32_t weight;       /* the operator's weight */
};

/* The stub daemon: what the calls read and change. */
struct stub {
    struct stub_instance inst[2][3]; /* per service */
    int changes;                     /* changes the API reported through ops->changed */
    const uint8_t *body;             /* the request body, for the reload's error lines */
    size_t body_len;                 /* bytes of body */
};

static const char *const services[] = {"web", "api"};

static struct stub_instance *stub_find(struct stub *s, long svc, const char *id)
{
    FUZZ_CHECK(svc >= 0 && svc < 2);
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(s->inst[svc][i].id, id) == 0) {
            return &s->inst[svc][i];
        }
    }
    return NULL;
}

static const char *stub_health_word(void *ctx)
{
    return ((struct stub *)ctx)->body_len % 2 ? "ok" : "draining";
}

static char *stub_status_json(void *ctx)
{
    (void)ctx;
    return strdup("{\"services\":[]}");
}

static char *stub_metrics(void *ctx, size_t *len)
{
    (void)ctx;
    *len = 23;
    return strdup("sluice_up 1\nsluice_x 2\n");
}

static long stub_service_find(void *ctx, const char *name)
{
    (void)ctx;
    for (long i = 0; i < 2; i++) {
        if (strcmp(services[i], name) == 0) {
            return i;
        }
    }
    return -1;
}

static int stub_instance_admin(void *ctx, long svc, const char *id, enum owner_admin action)
{
    struct stub_instance *in = stub_find(ctx, svc, id);

    if (in == NULL) {
        return -ENOENT;
    }
    in->mode = action;
    return 0;
}

static int stub_instance_weight(void *ctx, long svc, const char *id, uint32_t weight)
{
    struct stub_instance *in = stub_find(ctx, svc, id);

    FUZZ_CHECK(weight <= 1000000);
    if (in == NULL) {
        return -ENOENT;
    }
    in->weight = weight;
    return 0;
}

static int stub_instance_show(void *ctx, long svc, const char *id, char *out, size_t len)
{
    static const char *const modes[] = {"healthy", "draining", "disabled"};
    struct stub_instance *in = stub_find(ctx, svc, id);

    if (in == NULL) {
        return -ENOENT;
    }
    snprintf(out, len, "\"state\":\"%s\",\"weight\":%u", modes[in->mode], in->weight);
    return 0;
}

/* Rejects the file with two lines, one carrying the request body's bytes: JSON escaping of
 * whatever a config error may quote. */
static int stub_reload(void *ctx, struct ini_errors *errs)
{
    struct stub *s = ctx;
    char *lines[2];

    if (s->body_len == 0) {
        return 0;
    }
    if (s->body_len == 1) {
        return -ETIMEDOUT;
    }
    lines[0] = strdup("/etc/sluice/sluice.ini:3: bind: \"x\" is not an address");
    lines[1] = strndup((const char *)s->body, s->body_len);
    errs->lines = malloc(sizeof(lines));
    FUZZ_CHECK(lines[0] != NULL && lines[1] != NULL && errs->lines != NULL);
    memcpy(errs->lines, lines, sizeof(lines));
    errs->n = 2;
    return -EINVAL;
}

static void stub_changed(void *ctx, const char *svc, const char *id, const char *action)
{
    FUZZ_CHECK(stub_service_find(ctx, svc) >= 0 && id != NULL && action != NULL);
    ((struct stub *)ctx)->changes++;
}

static const struct admin_ops stub_ops = {
    .health_word = stub_health_word,
    .status_json = stub_status_json,
    .metrics = stub_metrics,
    .service_find = stub_service_find,
    .instance_admin = stub_instance_admin,
    .instance_weight = stub_instance_weight,
    .instance_show = stub_instance_show,
    .reload = stub_reload,
    .changed = stub_changed,
};

/* The next line of [*at, end) as a new string (without its '\n'); *at moves past it. */
static char *line_take(const uint8_t **at, const uint8_t *end)
{
    const uint8_t *nl = memchr(*at, '\n', (size_t)(end - *at));
    const uint8_t *stop = nl != NULL ? nl : end;
    char *s = strndup((const char *)*at, (size_t)(stop - *at));

    FUZZ_CHECK(s != NULL);
    *at = nl != NULL ? nl + 1 : end;
    return s;
}

/* What every answer must be. */
static void reply_check(const struct admin_reply *r, int with_token, const struct stub *s,
                        int changes_before)
{
    static const unsigned known[] = {200, 400, 401, 403, 404, 405, 413, 414, 500, 503};
    int status_known = 0;

    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        status_known = status_known || r->status == known[i];
    }
    FUZZ_CHECK(status_known && r->type != NULL && r->body != NULL);
    FUZZ_CHECK(r->owned == NULL || r->owned == r->body);
    if (strcmp(r->type, "application/json") == 0) {
        cJSON *o = cJSON_ParseWithLength(r->body, r->len);
        FUZZ_CHECK(cJSON_IsObject(o));
        const cJSON *error = cJSON_GetObjectItemCaseSensitive(o, "error");
        FUZZ_CHECK(r->status == 200 || cJSON_IsString(error));
        cJSON_Delete(o);
    } else {
        FUZZ_CHECK(r->status == 200 || r->status == 503); /* pages and /healthz */
    }
    /* a change needs the token; a refused call changes nothing */
    FUZZ_CHECK(s->changes == changes_before || (with_token && r->status == 200));
}

static void route_once(const struct admin_auth *auth, const struct admin_request *rq,
                       struct stub *s, int sent_token)
{
    struct admin_reply reply;
    int before = s->changes;

    admin_route(auth, &stub_ops, s, rq, &reply);
    reply_check(&reply, auth->token != NULL && sent_token, s, before);
    admin_reply_free(&reply);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *at = data, *end = data + size;
    char *method = line_take(&at, end), *url = line_take(&at, end), *auth = line_take(&at, end);
    struct stub s = {
        .inst = {{{.id = "a"}, {.id = "web-1/x"}, {.id = "n1/web 2"}},
                 {{.id = "api-1"}, {.id = "b"}, {.id = "c%d"}}},
        .body = at,
        .body_len = (size_t)(end - at),
    };
    const struct admin_request rq = {
        .method = method,
        .url = url,
        .authorization = auth[0] != '\0' ? auth : NULL,
        .body = (const char *)at,
        .len = (size_t)(end - at),
        .too_big = size > 0 && data[0] == '!',
    };
    /* sent the right token: Bearer, or Basic with it as the password */
    int sent_token = strstr(auth, TOKEN) != NULL || strncasecmp(auth, "basic ", 6) == 0;
    const struct admin_auth with_token = {.token = TOKEN, .read_auth = (int)(size % 2)};
    const struct admin_auth without = {.token = NULL, .read_auth = 0};

    route_once(&with_token, &rq, &s, sent_token);
    route_once(&without, &rq, &s, 0);
    free(method);
    free(url);
    free(auth);
    return 0;
}
