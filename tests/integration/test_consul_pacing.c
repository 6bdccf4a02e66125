/* How often a watch asks Consul and how fresh its answers must be, end to end against the
 * emulator: [consul] min_query_interval bounds the queries of a churning service and the last
 * change still arrives; with stale = true the X-Consul-LastContact and X-Consul-KnownLeader of
 * each answer show in /metrics and /status, and an answer older than max_stale keeps the last
 * known good set and degrades the discovery until the answers are fresh again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consul_fixture.h"

#define N_BACKENDS  2
#define HEALTH_PATH "/v1/health/service/api"

static int sluice_port; /* the listener of the current test's sluice */

static int setup(void **state)
{
    (void)state;
    return consul_fixture_start(N_BACKENDS, NULL);
}

static void instance_add(int i, const char *status)
{
    char body[1024];
    consul_instance_body(body, sizeof(body), i, "127.0.0.1", "", status, "");
    consul_emu_send("PUT", "/v1/catalog/register", body);
}

static void check_set(int i, const char *status)
{
    char body[256];
    snprintf(body, sizeof(body), "{\"node\":\"n%d\",\"check_id\":\"chk-%d\",\"status\":\"%s\"}", i,
             i, status);
    consul_emu_send("PUT", "/_emu/check", body);
}

/* Health queries of service api in the emulator's request log. */
static int health_queries(void)
{
    char *log = consul_emu_get("/_emu/requests?path=" HEALTH_PATH);
    cJSON *list = cJSON_Parse(log);
    assert_non_null(list);
    int n = cJSON_GetArraySize(list);
    cJSON_Delete(list);
    free(log);
    return n;
}

/* The churn of one run: many changes of instance 1's health in a short time, the last of which
 * (critical) leaves only instance 0. Returns how many health queries sluice made meanwhile, and
 * the time they span in *elapsed_ms. */
static int churn(uint64_t *elapsed_ms)
{
    size_t from = log_size(&consul_fx.sluice);
    consul_emu_send("DELETE", "/_emu/requests", NULL);
    uint64_t t0 = harness_now_ms();
    for (int i = 0; i < 60; i++) { /* warning and passing both keep 2 instances */
        check_set(1, i % 2 == 0 ? "warning" : "passing");
        sleep_ms(100);
    }
    check_set(1, "critical");
    consul_wait_published(&from, 1, NULL); /* the last change is seen */
    *elapsed_ms = harness_now_ms() - t0;
    for (int i = 0; i < 4; i++)
        assert_int_equal(hello_index(sluice_port, N_BACKENDS), 0);
    return health_queries();
}

/* 61 changes in about 6 s: with a 2 s floor sluice may start a query at most once per 2 s (plus
 * the one in flight when the churn began), where the index alone would have it ask about 61
 * times. The bound allows two more than the floor permits, so load cannot make it fail. */
static void test_min_query_interval_bounds_churn(void **state)
{
    (void)state;
    instance_add(0, "passing");
    instance_add(1, "passing");
    sluice_port = consul_sluice_start(consul_fx.emu_port, "", "min_query_interval = 2s\n", "");
    consul_wait_published(NULL, 2, NULL);
    uint64_t elapsed;
    int queries = churn(&elapsed);
    unsigned long long allowed = elapsed / 2000 + 1 + 2;
    print_message("min_query_interval = 2s: %d health queries for 61 changes in %llu ms (at most "
                  "%llu allowed)\n",
                  queries, (unsigned long long)elapsed, allowed);
    assert_true(queries >= 1);
    assert_true((unsigned long long)queries <= allowed);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* min_query_interval = 0 removes the floor: the same churn makes many more queries, which shows
 * that the floor (not the emulator or the churn) is what bounded the run above. */
static void test_min_query_interval_zero_follows_index(void **state)
{
    (void)state;
    instance_add(0, "passing");
    instance_add(1, "passing");
    sluice_port = consul_sluice_start(consul_fx.emu_port, "", "min_query_interval = 0s\n", "");
    consul_wait_published(NULL, 2, NULL);
    uint64_t elapsed;
    int queries = churn(&elapsed);
    print_message("min_query_interval = 0: %d health queries for 61 changes in %llu ms\n", queries,
                  (unsigned long long)elapsed);
    /* each change wakes the blocked query; even a loaded machine answers most of 61 changes
     * 100 ms apart one by one, far above the 2 s floor's 6 */
    assert_true(queries > 15);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

static void settings(int last_contact_ms, int known_leader)
{
    char body[128];
    snprintf(body, sizeof(body), "{\"last_contact_ms\":%d,\"known_leader\":%s}", last_contact_ms,
             known_leader ? "true" : "false");
    consul_emu_send("PUT", "/_emu/settings", body);
}

static double sample(int admin, const char *series)
{
    static char body[1 << 18];
    assert_int_equal(http_request(admin, "GET", "/metrics", NULL, body, sizeof(body)), 200);
    return metrics_sample(body, series);
}

/* The api watch in /status, as JSON (the caller deletes the root in *root). */
static const cJSON *status_watch(int admin, cJSON **root)
{
    static char body[1 << 18];
    assert_int_equal(http_request(admin, "GET", "/status", NULL, body, sizeof(body)), 200);
    *root = cJSON_Parse(body);
    assert_non_null(*root);
    const cJSON *consul = cJSON_GetObjectItem(*root, "consul");
    assert_non_null(consul);
    const cJSON *w = cJSON_GetArrayItem(cJSON_GetObjectItem(consul, "watches"), 0);
    assert_non_null(w);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(w, "service")), "api");
    return w;
}

static void expect_status(int admin, const char *state, double last_contact_ms, int known_leader)
{
    cJSON *root;
    const cJSON *w = status_watch(admin, &root);
    const cJSON *consul = cJSON_GetObjectItem(root, "consul");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(consul, "state")), state);
    assert_true(cJSON_GetObjectItem(w, "consul_last_contact_ms")->valuedouble == last_contact_ms);
    assert_int_equal(cJSON_IsTrue(cJSON_GetObjectItem(w, "consul_known_leader")), known_leader);
    cJSON_Delete(root);
}

#define LAST_CONTACT "sluice_consul_last_contact_seconds{service=\"api\"}"
#define KNOWN_LEADER "sluice_consul_known_leader{service=\"api\"}"
#define TOO_STALE    "sluice_consul_errors_total{kind=\"too_stale\"}"

/* Stale reads: the leader headers are shown; over max_stale the previous set stays (traffic
 * included), the discovery degrades and says so once; fresh answers again recover. */
static void test_stale_answers_and_max_stale(void **state)
{
    (void)state;
    int admin = harness_free_port();
    char extra[128];
    snprintf(extra, sizeof(extra), "[admin]\nbind = 127.0.0.1:%d\n", admin);
    settings(150, 1);
    instance_add(0, "passing");
    int port = consul_sluice_start(consul_fx.emu_port, "", "stale = true\nmax_stale = 2s\n", extra);
    size_t from = 0;
    consul_wait_published(&from, 1, NULL);
    assert_true(sample(admin, LAST_CONTACT) == 0.150);
    assert_true(sample(admin, KNOWN_LEADER) == 1);
    assert_true(sample(admin, TOO_STALE) == 0);
    expect_status(admin, "ok", 150, 1);

    /* the server lost the leader 5 s ago; a new instance arrives in that stale answer */
    settings(5000, 0);
    instance_add(1, "passing");
    consul_wait_event(&from, "\"event\":\"discovery_degraded\"", "max_stale (2000 ms)");
    int seq_before = health_queries();
    while (health_queries() < seq_before + 3) /* a few retries, all over max_stale */
        sleep_ms(100);
    for (int i = 0; i < 4; i++) /* the last known good set, without the new instance */
        assert_int_equal(hello_index(port, N_BACKENDS), 0);
    assert_true(sample(admin, LAST_CONTACT) == 5.0);
    assert_true(sample(admin, KNOWN_LEADER) == 0);
    assert_true(sample(admin, TOO_STALE) >= 3);
    expect_status(admin, "degraded", 5000, 0);
    const char *once[] = {"\"event\":\"discovery_error\"", "max_stale", NULL};
    assert_int_equal(log_count_all(&consul_fx.sluice, once), 1);

    settings(100, 1);
    consul_wait_published(&from, 2, NULL); /* logged before the recovery */
    consul_wait_event(&from, "\"event\":\"discovery_recovered\"", NULL);
    int seen[N_BACKENDS];
    assert_int_equal(count_hellos(port, 4, seen, N_BACKENDS), 0);
    assert_int_equal(seen[1], 2); /* the new instance, from the first fresh answer */
    assert_true(sample(admin, LAST_CONTACT) == 0.100);
    expect_status(admin, "ok", 100, 1);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        CONSUL_FIXTURE_TEST(test_min_query_interval_bounds_churn),
        CONSUL_FIXTURE_TEST(test_min_query_interval_zero_follows_index),
        CONSUL_FIXTURE_TEST(test_stale_answers_and_max_stale),
    };
    return cmocka_run_group_tests(tests, setup, consul_fixture_stop);
}
