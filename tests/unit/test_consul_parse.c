/* Unit tests for consul_parse: health/service JSON fixtures (good, garbage, huge, missing
 * fields), health aggregation, weights, tags, ordering, index headers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "consul_parse.h"

/* One entry: node name and address, service id, address, port, extra service fields (weights,
 * tags) and the Checks array text. */
#define ENTRY(node, naddr, sid, saddr, port, extra, checks)                                        \
    "{\"Node\":{\"Node\":\"" node "\",\"Address\":\"" naddr "\"},"                                 \
    "\"Service\":{\"ID\":\"" sid "\",\"Service\":\"api\",\"Address\":\"" saddr "\","               \
    "\"Port\":" port extra "},\"Checks\":" checks "}"

#define PASS(id, sid) "{\"CheckID\":\"" id "\",\"Status\":\"passing\",\"ServiceID\":\"" sid "\"}"
#define WARN(id, sid) "{\"CheckID\":\"" id "\",\"Status\":\"warning\",\"ServiceID\":\"" sid "\"}"
#define CRIT(id, sid) "{\"CheckID\":\"" id "\",\"Status\":\"critical\",\"ServiceID\":\"" sid "\"}"
#define SERF          PASS("serfHealth", "")

static const struct consul_filter both = {.mode = CONSUL_HEALTH_MODE_PASSING_AND_WARNING};

/* Parses text that must be a valid answer. */
static void parse_ok(const char *text, const struct consul_filter *f, struct consul_parse_result *r)
{
    char err[256] = "";
    int rc = consul_parse_health(text, strlen(text), f, r, err, sizeof(err));

    if (rc != 0) {
        print_message("unexpected error: %s\n", err);
    }
    assert_int_equal(rc, 0);
}

/* One fixture of the table: text, expected kept count, and the first instance's fields. */
struct fixture {
    const char *name;             /* what it shows */
    const char *json;             /* the answer */
    enum consul_health_mode mode; /* filter mode */
    size_t kept;                  /* instances kept */
    size_t invalid;               /* entries skipped as unusable */
    const char *id;               /* first kept instance id (NULL: none kept) */
    const char *addr;             /* its address */
    uint32_t weight;              /* its weight */
    enum consul_health health;    /* its aggregated health */
};

static const struct fixture fixtures[] = {
    {"empty array", "[]", CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 0, NULL, NULL, 0, 0},
    {"service address wins",
     "[" ENTRY("n1", "10.0.0.1", "api-1", "10.0.0.9", "8080", "", "[" SERF "]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 1, 0, "n1/api-1", "10.0.0.9:8080", 1,
     CONSUL_HEALTH_PASSING},
    {"empty service address falls back to the node's",
     "[" ENTRY("n1", "10.0.0.1", "api-1", "", "8080", "", "[]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 1, 0, "n1/api-1", "10.0.0.1:8080", 1,
     CONSUL_HEALTH_PASSING},
    {"IPv6 service address", "[" ENTRY("n1", "10.0.0.1", "a", "::1", "80", "", "null") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 1, 0, "n1/a", "[::1]:80", 1, CONSUL_HEALTH_PASSING},
    {"host names are not resolved", "[" ENTRY("n1", "", "a", "api.local", "80", "", "[]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 1, NULL, NULL, 0, 0},
    {"no address at all", "[" ENTRY("n1", "", "a", "", "80", "", "[]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 1, NULL, NULL, 0, 0},
    {"port 0", "[" ENTRY("n1", "10.0.0.1", "a", "", "0", "", "[]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 1, NULL, NULL, 0, 0},
    {"port too large", "[" ENTRY("n1", "10.0.0.1", "a", "", "70000", "", "[]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 1, NULL, NULL, 0, 0},
    {"port not an integer", "[" ENTRY("n1", "10.0.0.1", "a", "", "80.5", "", "[]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 1, NULL, NULL, 0, 0},
    {"port as a string", "[" ENTRY("n1", "10.0.0.1", "a", "", "\"80\"", "", "[]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 1, NULL, NULL, 0, 0},
    {"no Node", "[{\"Service\":{\"ID\":\"a\",\"Address\":\"10.0.0.1\",\"Port\":1}}]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 1, NULL, NULL, 0, 0},
    {"no Service", "[{\"Node\":{\"Node\":\"n\",\"Address\":\"10.0.0.1\"},\"Checks\":[]}]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 1, NULL, NULL, 0, 0},
    {"no Service.ID", "[" ENTRY("n1", "10.0.0.1", "", "", "80", "", "[]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 1, NULL, NULL, 0, 0},
    {"entry that is not an object", "[1, \"x\", null]", CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0,
     3, NULL, NULL, 0, 0},
    {"node check critical makes the instance critical",
     "[" ENTRY("n1", "10.0.0.1", "a", "", "80", "",
               "[" CRIT("serfHealth", "") "," PASS("service:a", "a") "]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 0, NULL, NULL, 0, 0},
    {"warning instance gets Weights.Warning",
     "[" ENTRY("n1", "10.0.0.1", "a", "", "80", ",\"Weights\":{\"Passing\":10,\"Warning\":3}",
               "[" SERF "," WARN("service:a", "a") "]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 1, 0, "n1/a", "10.0.0.1:80", 3, CONSUL_HEALTH_WARNING},
    {"passing instance gets Weights.Passing",
     "[" ENTRY("n1", "10.0.0.1", "a", "", "80", ",\"Weights\":{\"Passing\":10,\"Warning\":3}",
               "[" SERF "]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 1, 0, "n1/a", "10.0.0.1:80", 10,
     CONSUL_HEALTH_PASSING},
    {"warning dropped with health = passing",
     "[" ENTRY("n1", "10.0.0.1", "a", "", "80", "", "[" WARN("service:a", "a") "]") "]",
     CONSUL_HEALTH_MODE_PASSING, 0, 0, NULL, NULL, 0, 0},
    {"Warning weight 0 stays listed with weight 0",
     "[" ENTRY("n1", "10.0.0.1", "a", "", "80", ",\"Weights\":{\"Passing\":1,\"Warning\":0}",
               "[" WARN("service:a", "a") "]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 1, 0, "n1/a", "10.0.0.1:80", 0, CONSUL_HEALTH_WARNING},
    {"node maintenance wins over passing checks",
     "[" ENTRY("n1", "10.0.0.1", "a", "", "80", "",
               "[" SERF ",{\"CheckID\":\"_node_maintenance\",\"Status\":\"critical\"}]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 0, NULL, NULL, 0, 0},
    {"service maintenance",
     "[" ENTRY("n1", "10.0.0.1", "a", "", "80", "",
               "[{\"CheckID\":\"_service_maintenance:a\",\"Status\":\"critical\","
               "\"ServiceID\":\"a\"}]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 0, NULL, NULL, 0, 0},
    {"unknown status is unhealthy",
     "[" ENTRY("n1", "10.0.0.1", "a", "", "80", "",
               "[{\"CheckID\":\"x\",\"Status\":\"flapping\",\"ServiceID\":\"a\"}]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 0, NULL, NULL, 0, 0},
    {"check without status is unhealthy",
     "[" ENTRY("n1", "10.0.0.1", "a", "", "80", "",
               "[{\"CheckID\":\"x\",\"ServiceID\":\"a\"}]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 0, NULL, NULL, 0, 0},
    {"another service's check on the node does not count",
     "[" ENTRY("n1", "10.0.0.1", "a", "", "80", "", "[" SERF "," CRIT("service:b", "b") "]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 1, 0, "n1/a", "10.0.0.1:80", 1, CONSUL_HEALTH_PASSING},
    {"Checks that is not an array is unhealthy",
     "[" ENTRY("n1", "10.0.0.1", "a", "", "80", "", "{}") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 0, NULL, NULL, 0, 0},
    {"a check that is not an object is unhealthy",
     "[" ENTRY("n1", "10.0.0.1", "a", "", "80", "", "[" SERF ",7]") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 0, 0, NULL, NULL, 0, 0},
    {"unknown fields are ignored",
     "[" ENTRY("n1", "10.0.0.1", "a", "", "80", ",\"Future\":{\"x\":[1,2]}", "[],\"More\":1") "]",
     CONSUL_HEALTH_MODE_PASSING_AND_WARNING, 1, 0, "n1/a", "10.0.0.1:80", 1, CONSUL_HEALTH_PASSING},
};

static void test_fixtures(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++) {
        const struct fixture *fx = &fixtures[i];
        struct consul_filter f = {.mode = fx->mode};
        struct consul_parse_result r;
        char err[256] = "";
        int rc = consul_parse_health(fx->json, strlen(fx->json), &f, &r, err, sizeof(err));
        if (rc != 0 || r.n != fx->kept || r.invalid != fx->invalid) {
            print_message("fixture \"%s\": rc %d (%s), kept %zu (want %zu), invalid %zu (want "
                          "%zu)\n",
                          fx->name, rc, err, r.n, fx->kept, r.invalid, fx->invalid);
            fail();
        }
        if (fx->id != NULL) {
            assert_string_equal(r.inst[0].id, fx->id);
            assert_string_equal(r.inst[0].addr.text, fx->addr);
            assert_int_equal(r.inst[0].weight, fx->weight);
            assert_int_equal(r.inst[0].health, fx->health);
        }
        consul_parse_result_free(&r);
    }
}

/* Text that is not a JSON array fails as a whole, with a reason. */
static void test_garbage(void **state)
{
    static const char *const garbage[] = {
        "",
        "not json",
        "{\"Node\":{}}",
        "[{\"Node\":",
        "[1,2",
        "[{\"Node\":{\"ID\":\"\x00\xff not json at all <<<",
        "\"a string\"",
        "null",
        "[]]",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
        struct consul_parse_result r;
        char err[256] = "";
        size_t len = i == 5 ? 40 : strlen(garbage[i]);
        int rc = consul_parse_health(garbage[i], len, &both, &r, err, sizeof(err));
        assert_int_equal(rc, -EBADMSG);
        assert_true(strncmp(err, "answer ", 7) == 0);
        assert_null(r.inst);
        consul_parse_result_free(&r);
    }
}

/* Text does not need a terminating NUL: only len bytes are read. */
static void test_not_nul_terminated(void **state)
{
    const char text[] = "[" ENTRY("n1", "10.0.0.1", "a", "", "80", "", "[]") "]GARBAGE";
    struct consul_parse_result r;
    char err[128];
    (void)state;

    assert_int_equal(consul_parse_health(text, strlen(text) - 7, &both, &r, err, sizeof(err)), 0);
    assert_int_equal(r.n, 1);
    consul_parse_result_free(&r);
}

static void test_tags_filter(void **state)
{
    char *tags[] = {"v2", "blue"};
    struct consul_filter f = {
        .mode = CONSUL_HEALTH_MODE_PASSING_AND_WARNING, .tags = tags, .n_tags = 2};
    struct consul_parse_result r;
    (void)state;

    parse_ok(
        "[" ENTRY("n1", "10.0.0.1", "a", "", "1", ",\"Tags\":[\"v1\",\"blue\"]", "[]") "," ENTRY(
            "n2", "10.0.0.2", "b", "", "2", ",\"Tags\":[\"blue\",\"v2\",\"x\"]",
            "[]") "," ENTRY("n3", "10.0.0.3", "c", "", "3", ",\"Tags\":[]",
                            "[]") "," ENTRY("n4", "10.0.0.4", "d", "", "4", "", "[]") "]",
        &f, &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.inst[0].id, "n2/b");
    assert_int_equal(r.untagged, 3);
    consul_parse_result_free(&r);
}

static void test_sorted_and_deduplicated(void **state)
{
    struct consul_parse_result r;
    (void)state;

    parse_ok("[" ENTRY("n2", "10.0.0.2", "a", "", "1", "", "[]") "," ENTRY(
                 "n1", "10.0.0.1", "b", "", "2", "",
                 "[]") "," ENTRY("n1", "10.0.0.1", "a", "", "3", "",
                                 "[]") "," ENTRY("n1", "10.0.0.9", "a", "", "4", "", "[]") "]",
             &both, &r);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.inst[0].id, "n1/a");
    assert_string_equal(r.inst[1].id, "n1/b");
    assert_string_equal(r.inst[2].id, "n2/a");
    assert_int_equal(r.invalid, 1);
    assert_true(strstr(r.invalid_why, "listed twice") != NULL);
    assert_int_equal(r.entries, 4);
    consul_parse_result_free(&r);
}

static void test_health_counts(void **state)
{
    struct consul_parse_result r;
    (void)state;

    parse_ok(
        "[" ENTRY("n1", "10.0.0.1", "a", "", "1", "", "[" SERF "]") "," ENTRY(
            "n2", "10.0.0.2", "b", "", "1", "",
            "[" WARN(
                "w",
                "b") "]") "," ENTRY("n3", "10.0.0.3", "c", "", "1", "",
                                    "[" CRIT(
                                        "c",
                                        "c") "]") "," ENTRY("n4", "10.0.0.4", "d", "", "1", "",
                                                            "[{\"CheckID\":\"_node_maintenance\","
                                                            "\"Status\":\"critical\"}]") "]",
        &both, &r);
    assert_int_equal(r.by_health[CONSUL_HEALTH_PASSING], 1);
    assert_int_equal(r.by_health[CONSUL_HEALTH_WARNING], 1);
    assert_int_equal(r.by_health[CONSUL_HEALTH_CRITICAL], 1);
    assert_int_equal(r.by_health[CONSUL_HEALTH_MAINTENANCE], 1);
    assert_int_equal(r.n, 2);
    consul_parse_result_free(&r);
}

static void test_long_id_is_invalid(void **state)
{
    char node[200], *json;
    struct consul_parse_result r;
    (void)state;

    memset(node, 'n', sizeof(node) - 1);
    node[sizeof(node) - 1] = '\0';
    assert_true(asprintf(&json,
                         "[{\"Node\":{\"Node\":\"%s\",\"Address\":\"10.0.0.1\"},"
                         "\"Service\":{\"ID\":\"a\",\"Port\":1}}]",
                         node) > 0);
    parse_ok(json, &both, &r);
    assert_int_equal(r.n, 0);
    assert_int_equal(r.invalid, 1);
    consul_parse_result_free(&r);
    free(json);
}

/* 10,000 entries with checks: all kept, ordered, and it does not take long. */
static void test_huge(void **state)
{
    enum { N = 10000 };
    size_t cap = (size_t)N * 400 + 16, used = 0;
    char *json = malloc(cap);
    struct consul_parse_result r;
    struct timespec t0, t1;
    (void)state;

    assert_non_null(json);
    used += (size_t)snprintf(json + used, cap - used, "[");
    for (int i = 0; i < N; i++) {
        used += (size_t)snprintf(
            json + used, cap - used,
            "%s{\"Node\":{\"Node\":\"node-%05d\",\"Address\":\"10.%d.%d.%d\"},\"Service\":{"
            "\"ID\":\"api-%d\",\"Address\":\"\",\"Port\":%d,\"Tags\":[\"v1\"],\"Weights\":{"
            "\"Passing\":%d,\"Warning\":1}},\"Checks\":[{\"CheckID\":\"serfHealth\",\"Status\":"
            "\"passing\",\"ServiceID\":\"\"},{\"CheckID\":\"service:api-%d\",\"Status\":"
            "\"%s\",\"ServiceID\":\"api-%d\"}]}",
            i ? "," : "", N - i, i / 65536, (i / 256) % 256, i % 256, i, 1 + i % 60000, 1 + i % 7,
            i, i % 10 == 0 ? "critical" : "passing", i);
    }
    snprintf(json + used, cap - used, "]");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    parse_ok(json, &both, &r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(r.entries, N);
    assert_int_equal(r.n, N - N / 10);
    for (size_t i = 1; i < r.n; i++) {
        assert_true(strcmp(r.inst[i - 1].id, r.inst[i].id) < 0);
    }
    print_message("parsed %d entries (%zu bytes) in %.1f ms\n", N, strlen(json),
                  (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    consul_parse_result_free(&r);
    free(json);
}

static void test_check_health(void **state)
{
    static const struct {
        const char *id, *status;
        enum consul_health want;
    } rows[] = {
        {"serfHealth", "passing", CONSUL_HEALTH_PASSING},
        {"c", "warning", CONSUL_HEALTH_WARNING},
        {"c", "critical", CONSUL_HEALTH_CRITICAL},
        {"c", "Passing", CONSUL_HEALTH_CRITICAL}, /* statuses are lower case; others unknown */
        {"c", "", CONSUL_HEALTH_CRITICAL},
        {"c", NULL, CONSUL_HEALTH_CRITICAL},
        {NULL, "passing", CONSUL_HEALTH_PASSING},
        {"_node_maintenance", "passing", CONSUL_HEALTH_MAINTENANCE},
        {"_service_maintenance:api-1", "critical", CONSUL_HEALTH_MAINTENANCE},
        {"_service_maintenance", "passing", CONSUL_HEALTH_PASSING}, /* no ':' -> ordinary */
    };
    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        assert_int_equal(consul_check_health(rows[i].id, rows[i].status), rows[i].want);
    }
    assert_int_equal(consul_health_worse(CONSUL_HEALTH_WARNING, CONSUL_HEALTH_CRITICAL),
                     CONSUL_HEALTH_CRITICAL);
    assert_int_equal(consul_health_worse(CONSUL_HEALTH_MAINTENANCE, CONSUL_HEALTH_CRITICAL),
                     CONSUL_HEALTH_MAINTENANCE);
    assert_int_equal(consul_health_worse(CONSUL_HEALTH_PASSING, CONSUL_HEALTH_WARNING),
                     CONSUL_HEALTH_WARNING);
    assert_string_equal(consul_health_name(CONSUL_HEALTH_MAINTENANCE), "maintenance");
    assert_string_equal(consul_health_name((enum consul_health)9), "unknown");
}

static void test_instances_equal(void **state)
{
    struct consul_parse_result a, b, c, d;
    (void)state;

    parse_ok("[" ENTRY("n1", "10.0.0.1", "a", "", "1", "", "[]") "," ENTRY("n2", "10.0.0.2", "b",
                                                                           "", "1", "", "[]") "]",
             &both, &a);
    parse_ok("[" ENTRY("n2", "10.0.0.2", "b", "", "1", ",\"Tags\":[\"x\"]",
                       "[]") "," ENTRY("n1", "10.0.0.1", "a", "", "1", "", "[]") "]",
             &both, &b);
    parse_ok("[" ENTRY("n1", "10.0.0.1", "a", "", "1", ",\"Weights\":{\"Passing\":2}",
                       "[]") "," ENTRY("n2", "10.0.0.2", "b", "", "1", "", "[]") "]",
             &both, &c);
    parse_ok("[" ENTRY("n1", "10.0.0.1", "a", "", "1", "", "[]") "," ENTRY("n2", "10.0.0.3", "b",
                                                                           "", "1", "", "[]") "]",
             &both, &d);
    assert_true(consul_instances_equal(a.inst, a.n, b.inst, b.n));  /* order, tags: same set */
    assert_false(consul_instances_equal(a.inst, a.n, c.inst, c.n)); /* weight */
    assert_false(consul_instances_equal(a.inst, a.n, d.inst, d.n)); /* address */
    assert_false(consul_instances_equal(a.inst, a.n, a.inst, 1));   /* size */
    assert_true(consul_instances_equal(NULL, 0, NULL, 0));
    consul_parse_result_free(&a);
    consul_parse_result_free(&b);
    consul_parse_result_free(&c);
    consul_parse_result_free(&d);
}

static void test_index_header(void **state)
{
    uint64_t v = 7;
    (void)state;

    assert_int_equal(consul_parse_index("123", 3, &v), 0);
    assert_int_equal(v, 123);
    assert_int_equal(consul_parse_index(" 42\r\n", 5, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(consul_parse_index("18446744073709551615", 20, &v), 0);
    assert_int_equal(v, UINT64_MAX);
    v = 5;
    assert_int_equal(consul_parse_index("18446744073709551616", 20, &v), -EINVAL);
    assert_int_equal(consul_parse_index("", 0, &v), -EINVAL);
    assert_int_equal(consul_parse_index("  ", 2, &v), -EINVAL);
    assert_int_equal(consul_parse_index("12a", 3, &v), -EINVAL);
    assert_int_equal(consul_parse_index("-1", 2, &v), -EINVAL);
    assert_int_equal(v, 5);
}

/* GET /v1/agent/checks: every check id present and bound to the service, or the first one that
 * is not; anything but an object is no check list. */
static void test_checks_bound(void **state)
{
    (void)state;
    static const char *const two[] = {"service:web:1", "service:web:2"};
    const char *list = "{\"service:web:1\":{\"ServiceID\":\"web\"},"
                       "\"service:web:2\":{\"ServiceID\":\"web\"},"
                       "\"service:api\":{\"ServiceID\":\"api\"}}";
    char missing[64] = "";

    assert_int_equal(
        consul_parse_checks_bound(list, strlen(list), "web", two, 2, missing, sizeof(missing)), 1);
    const char *other = "{\"service:web:1\":{\"ServiceID\":\"web\"},"
                        "\"service:web:2\":{\"ServiceID\":\"web-old\"}}";
    assert_int_equal(
        consul_parse_checks_bound(other, strlen(other), "web", two, 2, missing, sizeof(missing)),
        0);
    assert_string_equal(missing, "service:web:2");
    assert_int_equal(consul_parse_checks_bound("[]", 2, "web", two, 0, missing, sizeof(missing)),
                     0);
    assert_string_equal(missing, "(the check list is not a JSON object)");
    /* the length is honoured: the closing brace is past it */
    assert_int_equal(consul_parse_checks_bound("{}", 1, "web", two, 0, missing, sizeof(missing)),
                     0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_not_nul_terminated),
        cmocka_unit_test(test_tags_filter),
        cmocka_unit_test(test_sorted_and_deduplicated),
        cmocka_unit_test(test_health_counts),
        cmocka_unit_test(test_long_id_is_invalid),
        cmocka_unit_test(test_huge),
        cmocka_unit_test(test_check_health),
        cmocka_unit_test(test_instances_equal),
        cmocka_unit_test(test_index_header),
        cmocka_unit_test(test_checks_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
