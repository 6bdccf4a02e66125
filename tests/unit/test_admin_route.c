/* admin_route() without an HTTP server: routes, tokens, %-escapes in instance ids, weight bodies,
 * the JSON of refusals and of a rejected reload, over a stub daemon that records each change. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin_route.h"

/* What the stub saw. */
struct seen {
    char id[64];          /* instance id of the last change */
    enum owner_admin act; /* its action */
    long weight;          /* its weight, -1 = not a weight change */
    int changes;          /* changes reported */
};

static const char *health(void *ctx)
{
    (void)ctx;
    return "ok";
}

static char *status_json(void *ctx)
{
    (void)ctx;
    return strdup("{\"services\":[]}");
}

static char *metrics(void *ctx, size_t *len)
{
    (void)ctx;
    *len = 12;
    return strdup("sluice_up 1\n");
}

static long service_find(void *ctx, const char *name)
{
    (void)ctx;
    return strcmp(name, "web") == 0 ? 0 : -1;
}

static int instance_admin(void *ctx, long svc, const char *id, enum owner_admin act)
{
    struct seen *s = ctx;

    assert_int_equal(svc, 0);
    if (strcmp(id, "gone") == 0)
        return -ENOENT;
    snprintf(s->id, sizeof(s->id), "%s", id);
    s->act = act;
    s->weight = -1;
    return 0;
}

static int instance_weight(void *ctx, long svc, const char *id, uint32_t weight)
{
    struct seen *s = ctx;

    assert_int_equal(svc, 0);
    snprintf(s->id, sizeof(s->id), "%s", id);
    s->weight = weight;
    return 0;
}

static int instance_show(void *ctx, long svc, const char *id, char *out, size_t len)
{
    (void)ctx;
    (void)svc;
    snprintf(out, len, "\"state\":\"draining\",\"id\":\"%s\"", id);
    return 0;
}

/* A rejected file whose error quotes a control character and a quote. */
static int reload(void *ctx, struct ini_errors *errs)
{
    (void)ctx;
    errs->lines = malloc(sizeof(char *));
    errs->lines[0] = strdup("a.ini:2: bind: \"\x01\" is not an address");
    errs->n = 1;
    return -EINVAL;
}

static void changed(void *ctx, const char *svc, const char *id, const char *action)
{
    (void)svc;
    (void)id;
    (void)action;
    ((struct seen *)ctx)->changes++;
}

static const struct admin_ops ops = {
    .health_word = health,
    .status_json = status_json,
    .metrics = metrics,
    .service_find = service_find,
    .instance_admin = instance_admin,
    .instance_weight = instance_weight,
    .instance_show = instance_show,
    .reload = reload,
    .changed = changed,
};

static const struct admin_auth auth = {.token = "s3cret", .read_auth = 0};

/* Routes one call and returns its status; *body gets a copy of the answer (caller frees). */
static unsigned call(struct seen *s, const char *method, const char *url, const char *authz,
                     const char *body, char **text)
{
    const struct admin_request rq = {.method = method,
                                     .url = url,
                                     .authorization = authz,
                                     .body = body,
                                     .len = body != NULL ? strlen(body) : 0};
    struct admin_reply r;

    admin_route(&auth, &ops, s, &rq, &r);
    unsigned status = r.status;
    *text = strndup(r.body, r.len);
    admin_reply_free(&r);
    return status;
}

#define EXPECT(s, status, method, url, authz, body, want)                                          \
    do {                                                                                           \
        char *text_;                                                                               \
        assert_int_equal(call(s, method, url, authz, body, &text_), status);                       \
        assert_string_equal(text_, want);                                                          \
        free(text_);                                                                               \
    } while (0)

static void test_routes_and_methods(void **state)
{
    struct seen s = {0};
    (void)state;

    EXPECT(&s, 200, "GET", "/healthz", NULL, NULL, "ok");
    EXPECT(&s, 405, "POST", "/healthz", NULL, NULL, "{\"error\":\"this path takes GET\"}");
    EXPECT(&s, 200, "GET", "/status", NULL, NULL, "{\"services\":[]}");
    EXPECT(&s, 200, "HEAD", "/metrics", NULL, NULL, "sluice_up 1\n");
    EXPECT(&s, 404, "GET", "/nope", NULL, NULL, "{\"error\":\"no such path\"}");
    EXPECT(&s, 405, "GET", "/v1/reload", NULL, NULL, "{\"error\":\"this path takes POST\"}");
    assert_int_equal(s.changes, 0);
}

static void test_changes_need_the_token(void **state)
{
    struct seen s = {0};
    (void)state;

    EXPECT(&s, 401, "POST", "/v1/services/web/instances/a/drain", NULL, NULL,
           "{\"error\":\"this call needs the admin token (Authorization: Bearer TOKEN)\"}");
    EXPECT(&s, 403, "POST", "/v1/services/web/instances/a/drain", "Bearer s3cre", NULL,
           "{\"error\":\"the admin token is wrong\"}");
    assert_int_equal(s.changes, 0);
    /* Basic with the token as the password: "u:s3cret" */
    EXPECT(&s, 200, "POST", "/v1/services/web/instances/a/drain", "Basic dTpzM2NyZXQ=", NULL,
           "{\"ok\":true,\"instance\":{\"state\":\"draining\",\"id\":\"a\"}}");
    assert_int_equal(s.changes, 1);
    assert_int_equal(s.act, OWNER_ADMIN_DRAIN);
}

/* %2F stays inside the id; an escape is exactly two hex digits: "%+f", "%-1", "% f" (which
 * strtol took for 0x0f, 0xff and 0x0f) and "%00" are refused. */
static void test_instance_id_escapes(void **state)
{
    struct seen s = {0};
    (void)state;

    EXPECT(&s, 200, "POST", "/v1/services/web/instances/n1%2Fweb%201/disable", "Bearer s3cret",
           NULL, "{\"ok\":true,\"instance\":{\"state\":\"draining\",\"id\":\"n1/web 1\"}}");
    assert_string_equal(s.id, "n1/web 1");
    assert_int_equal(s.act, OWNER_ADMIN_DISABLE);
    static const char *const broken[] = {"%+f", "%-1", "% f", "%00", "%4", "%zz", "x%"};
    for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
        char url[128];
        snprintf(url, sizeof(url), "/v1/services/web/instances/a%s/enable", broken[i]);
        EXPECT(&s, 400, "POST", url, "Bearer s3cret", NULL,
               "{\"error\":\"the instance id has a broken %-escape\"}");
    }
    assert_int_equal(s.changes, 1);
    EXPECT(&s, 404, "POST", "/v1/services/web/instances/gone/enable", "Bearer s3cret", NULL,
           "{\"error\":\"the service lists no such instance\"}");
    EXPECT(&s, 404, "POST", "/v1/services/api/instances/a/enable", "Bearer s3cret", NULL,
           "{\"error\":\"there is no such service\"}");
}

static void test_weight_bodies(void **state)
{
    struct seen s = {0};
    (void)state;

    EXPECT(&s, 200, "PUT", "/v1/services/web/instances/b/weight", "Bearer s3cret",
           "{\"weight\": 25}", "{\"ok\":true,\"instance\":{\"state\":\"draining\",\"id\":\"b\"}}");
    assert_int_equal(s.weight, 25);
    EXPECT(&s, 400, "PUT", "/v1/services/web/instances/b/weight", "Bearer s3cret",
           "{\"weight\": 2.5}", "{\"error\":\"\\\"weight\\\" must be a whole number\"}");
    EXPECT(&s, 400, "PUT", "/v1/services/web/instances/b/weight", "Bearer s3cret",
           "{\"weight\": 1e7}", "{\"error\":\"\\\"weight\\\" must be between 0 and 1000000\"}");
    EXPECT(&s, 400, "PUT", "/v1/services/web/instances/b/weight", "Bearer s3cret", "weight=3",
           "{\"error\":\"the body is not JSON (want {\\\"weight\\\": N})\"}");
    EXPECT(&s, 405, "POST", "/v1/services/web/instances/b/weight", "Bearer s3cret",
           "{\"weight\": 3}", "{\"error\":\"weight takes PUT\"}");
    assert_int_equal(s.changes, 1);
}

static void test_reload_errors_are_json(void **state)
{
    struct seen s = {0};
    (void)state;

    EXPECT(&s, 400, "POST", "/v1/reload", "Bearer s3cret", NULL,
           "{\"ok\":false,\"error\":\"the configuration was rejected\","
           "\"errors\":[\"a.ini:2: bind: \\\"\\u0001\\\" is not an address\"]}");
    const struct admin_request big = {.method = "POST", .url = "/v1/reload", .too_big = 1};
    struct admin_reply r;
    admin_route(&auth, &ops, &s, &big, &r);
    assert_int_equal(r.status, 413);
    admin_reply_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_and_methods),
        cmocka_unit_test(test_changes_need_the_token),
        cmocka_unit_test(test_instance_id_escapes),
        cmocka_unit_test(test_weight_bodies),
        cmocka_unit_test(test_reload_errors_are_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
