/* Consul discovery at scale against the emulator: 1,000 instances in one service and 200
 * watched services, each synced completely; prints how long the sync and the snapshot build
 * took. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consul_fixture.h"

#define N_INSTANCES 1000
#define N_SERVICES  200
#define PER_SERVICE 3

static int setup(void **state)
{
    (void)state;
    return consul_fixture_start(1, NULL);
}

/* Appends one catalog registration (instance id on node, of service svc, at port). */
static size_t append_instance(char *buf, size_t cap, size_t used, const char *node, const char *svc,
                              const char *id, int port, const char *status)
{
    int n = snprintf(buf + used, cap - used,
                     "%s{\"Node\":\"%s\",\"Address\":\"127.0.0.1\",\"Service\":{\"ID\":\"%s\","
                     "\"Service\":\"%s\",\"Port\":%d},\"Checks\":[{\"CheckID\":\"chk-%s\","
                     "\"Name\":\"chk\",\"Status\":\"%s\",\"ServiceID\":\"%s\"}]}",
                     used > 1 ? "," : "", node, id, svc, port, id, status, id);
    assert_true(n > 0 && (size_t)n < cap - used);
    return used + (size_t)n;
}

/* Waits until count lines hold every needle; returns the time it took in ms. */
static uint64_t wait_count(const char *const *needles, int count)
{
    uint64_t t0 = harness_now_ms();
    while (log_count_all(&consul_fx.sluice, needles) < count) {
        assert_true(harness_now_ms() - t0 < 3 * HARNESS_WAIT_MS);
        sleep_ms(20);
    }
    return harness_now_ms() - t0;
}

static void test_thousand_instances(void **state)
{
    (void)state;
    char consul[64], line[4096];
    snprintf(consul, sizeof(consul), "address = 127.0.0.1:%d\n", consul_fx.emu_port);
    consul_sluice_start_with("workers = 2\nlog_level = info\n", consul,
                             "balance = least_connections\n");
    size_t cap = (size_t)N_INSTANCES * 400, used = 1, from = 0;
    char *body = malloc(cap);
    body[0] = '[';
    for (int i = 0; i < N_INSTANCES; i++) { /* 100 nodes with 10 instances each */
        char node[32], id[32];
        snprintf(node, sizeof(node), "node-%03d", i / 10);
        snprintf(id, sizeof(id), "api-%04d", i);
        used = append_instance(body, cap, used, node, "api", id,
                               i == 0 ? consul_fx.backend_ports[0] : 20000 + i, "passing");
    }
    snprintf(body + used, cap - used, "]");
    uint64_t t0 = harness_now_ms();
    consul_emu_send("POST", "/_emu/catalog/register", body);
    const char *all[] = {"\"event\":\"discovery_published\"", "\"instances\":1000,", NULL};
    assert_int_equal(log_wait(&consul_fx.sluice, &from, line, sizeof(line), all), 0);
    print_message("1000 instances: visible %llu ms after registration; parse %lld us, snapshot "
                  "build and swap %lld us\n",
                  (unsigned long long)(harness_now_ms() - t0), log_field_int(line, "parse_us"),
                  log_field_int(line, "publish_us"));
    /* ten instances turn critical in one write: the next set has 990 */
    used = 1;
    for (int i = 990; i < N_INSTANCES; i++) {
        char node[32], id[32];
        snprintf(node, sizeof(node), "node-%03d", i / 10);
        snprintf(id, sizeof(id), "api-%04d", i);
        used = append_instance(body, cap, used, node, "api", id, 20000 + i, "critical");
    }
    snprintf(body + used, cap - used, "]");
    consul_emu_send("POST", "/_emu/catalog/register", body);
    const char *fewer[] = {"\"event\":\"discovery_published\"", "\"instances\":990,",
                           "\"critical\":10", NULL};
    assert_int_equal(log_wait(&consul_fx.sluice, &from, line, sizeof(line), fewer), 0);
    print_message("990 of 1000: parse %lld us, snapshot build and swap %lld us\n",
                  log_field_int(line, "parse_us"), log_field_int(line, "publish_us"));
    free(body);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

static void test_two_hundred_services(void **state)
{
    (void)state;
    int port = harness_free_port();
    size_t cap = 200000, used;
    char *conf = malloc(cap), *body = malloc(cap);
    used = (size_t)snprintf(conf, cap,
                            "[sluice]\nworkers = 2\nlog_level = info\n[consul]\naddress = "
                            "127.0.0.1:%d\n[listener:web]\nbind = 127.0.0.1:%d\nservice = s000\n",
                            consul_fx.emu_port, port);
    for (int s = 0; s < N_SERVICES; s++)
        used +=
            (size_t)snprintf(conf + used, cap - used, "[service:s%03d]\ndiscovery = consul\n", s);
    assert_int_equal(sluice_start(&consul_fx.sluice, conf), 0);
    const char *first[] = {"\"event\":\"discovery_published\"", "\"instances\":0,", NULL};
    uint64_t first_ms = wait_count(first, N_SERVICES);
    body[0] = '[';
    used = 1;
    for (int s = 0; s < N_SERVICES; s++) {
        for (int k = 0; k < PER_SERVICE; k++) {
            char svc[16], id[32], node[16];
            snprintf(svc, sizeof(svc), "s%03d", s);
            snprintf(id, sizeof(id), "s%03d-%d", s, k);
            snprintf(node, sizeof(node), "node-%d", k);
            used = append_instance(
                body, cap, used, node, svc, id,
                s == 0 && k == 0 ? consul_fx.backend_ports[0] : 30000 + s * 10 + k, "passing");
        }
    }
    snprintf(body + used, cap - used, "]");
    uint64_t t0 = harness_now_ms();
    consul_emu_send("POST", "/_emu/catalog/register", body);
    const char *synced[] = {"\"event\":\"discovery_published\"", "\"instances\":3,", NULL};
    wait_count(synced, N_SERVICES);
    uint64_t all_ms = harness_now_ms() - t0;
    print_message("200 services: first answers in %llu ms, all 600 instances published %llu ms "
                  "after one registration write\n",
                  (unsigned long long)first_ms, (unsigned long long)all_ms);
    /* each service's own set: s123 lists exactly its three instances */
    const char *s123[] = {"\"service\":\"s123\"", "\"instances\":3,", NULL};
    assert_int_equal(log_count_all(&consul_fx.sluice, s123), 1);
    char hello[32];
    for (int i = 0; i < 6; i++) { /* two of s000's three instances refuse: retries find b0 */
        assert_int_equal(hello_of(port, hello, sizeof(hello)), 0);
        assert_string_equal(hello, "b0");
    }
    /* a change to one service publishes that service only */
    used = 1;
    used = append_instance(body, cap, used, "node-0", "s042", "s042-0", 30420, "critical");
    snprintf(body + used, cap - used, "]");
    size_t from = log_size(&consul_fx.sluice);
    consul_emu_send("POST", "/_emu/catalog/register", body);
    const char *one[] = {"\"service\":\"s042\"", "\"instances\":2,", NULL};
    assert_int_equal(log_wait(&consul_fx.sluice, &from, NULL, 0, one), 0);
    sleep_ms(500);
    const char *any[] = {"\"event\":\"discovery_published\"", NULL};
    assert_int_equal(log_count_all(&consul_fx.sluice, any), 2 * N_SERVICES + 1);
    free(conf);
    free(body);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        CONSUL_FIXTURE_TEST(test_thousand_instances),
        CONSUL_FIXTURE_TEST(test_two_hundred_services),
    };
    return cmocka_run_group_tests(tests, setup, consul_fixture_stop);
}
