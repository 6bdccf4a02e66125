/* Consul discovery end to end against the emulator: instances appear and disappear with their
 * health, warning instances get their lower weight, Node.Address fallback, tag filters, a full
 * resync when the index goes backwards, least-connections counts that survive a snapshot swap,
 * and the time from Consul's answer to the first connection that sees the change. */
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
#include <unistd.h>

#include "consul_fixture.h"

#define N_BACKENDS 4

static int setup(void **state)
{
    (void)state;
    return consul_fixture_start(N_BACKENDS, NULL);
}

/* Starts sluice with one consul service "api" behind listener "web"; returns the listener's
 * port once the first answer from Consul has been published. */
static int start_sluice(const char *consul_extra, const char *service_extra)
{
    int port = consul_sluice_start(consul_fx.emu_port, "", consul_extra, service_extra);
    consul_wait_event(NULL, "\"event\":\"discovery_published\"", NULL);
    return port;
}

/* Registers instance api-<i> (backend i) on node n<i> with one check in the given status.
 * svc_addr "" makes Consul report Service.Address empty; extra adds service fields. */
static void instance_add(int i, const char *node_addr, const char *svc_addr, const char *status,
                         const char *extra)
{
    char body[1024];
    consul_instance_body(body, sizeof(body), i, node_addr, svc_addr, status, extra);
    consul_emu_send("PUT", "/v1/catalog/register", body);
}

static void check_set(int i, const char *status)
{
    char body[256];
    snprintf(body, sizeof(body), "{\"node\":\"n%d\",\"check_id\":\"chk-%d\",\"status\":\"%s\"}", i,
             i, status);
    consul_emu_send("PUT", "/_emu/check", body);
}

static void test_instance_appears(void **state)
{
    (void)state;
    int port = start_sluice("", "");
    char hello[32];
    assert_int_equal(hello_of(port, hello, sizeof(hello)), -1); /* nothing to connect to yet */
    size_t from = log_size(&consul_fx.sluice);
    instance_add(0, "127.0.0.1", "", "passing", "");
    consul_wait_published(&from, 1, NULL);
    for (int i = 0; i < 5; i++)
        assert_int_equal(hello_index(port, N_BACKENDS), 0);
    instance_add(1, "127.0.0.1", "", "passing", "");
    consul_wait_published(&from, 2, NULL);
    int seen[N_BACKENDS];
    assert_int_equal(count_hellos(port, 10, seen, N_BACKENDS), 0);
    assert_int_equal(seen[0], 5); /* round robin, one worker: exact alternation */
    assert_int_equal(seen[1], 5);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* A critical instance gets no new connections; its open ones carry on. */
static void test_critical_instance_keeps_open_connections(void **state)
{
    (void)state;
    int port = start_sluice("", "");
    size_t from = log_size(&consul_fx.sluice);
    instance_add(0, "127.0.0.1", "", "passing", "");
    instance_add(1, "127.0.0.1", "", "passing", "");
    consul_wait_published(&from, 2, NULL);
    int held = tcp_connect(port);
    char line[64];
    assert_true(held >= 0);
    assert_true(read_line(held, line, sizeof(line)) > 0);
    int sick = line[1] - '0', other = 1 - sick;
    check_set(sick, "critical");
    consul_wait_published(&from, 1, "\"critical\":1");
    for (int i = 0; i < 10; i++)
        assert_int_equal(hello_index(port, N_BACKENDS), other);
    assert_int_equal(write_all(held, "still here\n", 11), 0);
    assert_int_equal(read_line(held, line, sizeof(line)), 10);
    assert_string_equal(line, "still here");
    check_set(sick, "passing");
    consul_wait_published(&from, 2, NULL);
    int seen[N_BACKENDS];
    assert_int_equal(count_hellos(port, 4, seen, N_BACKENDS), 0);
    assert_int_equal(seen[sick], 2);
    close(held);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* Warning instances stay with Weights.Warning: weights 1 (warning) and 4 (passing) give the
 * warning one exactly 1 of every 5 connections under the smooth weighted round robin. */
static void test_warning_instance_gets_lower_weight(void **state)
{
    (void)state;
    int port = start_sluice("", "balance = weighted\n");
    const char *weights = ",\"Weights\":{\"Passing\":4,\"Warning\":1}";
    size_t from = log_size(&consul_fx.sluice);
    instance_add(0, "127.0.0.1", "", "passing", weights);
    instance_add(1, "127.0.0.1", "", "passing", weights);
    consul_wait_published(&from, 2, "\"passing\":2");
    check_set(0, "warning");
    consul_wait_published(&from, 2, "\"warning\":1");
    int seen[N_BACKENDS]; /* ten full cycles of the 1 + 4 sequence */
    assert_int_equal(count_hellos(port, 50, seen, N_BACKENDS), 0);
    print_message("warning instance: %d of 50, passing instance: %d of 50\n", seen[0], seen[1]);
    assert_int_equal(seen[0], 10);
    assert_int_equal(seen[1], 40);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* health = passing leaves warning instances out altogether. */
static void test_health_passing_drops_warning(void **state)
{
    (void)state;
    int port = start_sluice("", "health = passing\n");
    size_t from = log_size(&consul_fx.sluice);
    instance_add(0, "127.0.0.1", "", "warning", "");
    instance_add(1, "127.0.0.1", "", "passing", "");
    consul_wait_published(&from, 1, "\"warning\":1");
    for (int i = 0; i < 6; i++)
        assert_int_equal(hello_index(port, N_BACKENDS), 1);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* Service.Address empty: the node's address is dialled; a set Service.Address wins over an
 * unreachable node address. */
static void test_node_address_fallback(void **state)
{
    (void)state;
    int port = start_sluice("", "");
    size_t from = log_size(&consul_fx.sluice);
    instance_add(0, "127.0.0.1", "", "passing", "");
    consul_wait_published(&from, 1, NULL);
    assert_int_equal(hello_index(port, N_BACKENDS), 0);
    check_set(0, "critical");
    instance_add(1, "192.0.2.1", "127.0.0.1", "passing", ""); /* TEST-NET: never reachable */
    consul_wait_published(&from, 1, "\"critical\":1");
    for (int i = 0; i < 3; i++)
        assert_int_equal(hello_index(port, N_BACKENDS), 1);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

static void test_tags_filter(void **state)
{
    (void)state;
    int port = start_sluice("", "consul_tags = v2, blue\n");
    size_t from = log_size(&consul_fx.sluice);
    instance_add(0, "127.0.0.1", "", "passing", ",\"Tags\":[\"v1\",\"blue\"]");
    instance_add(1, "127.0.0.1", "", "passing", ",\"Tags\":[\"blue\",\"v2\"]");
    instance_add(2, "127.0.0.1", "", "passing", ",\"Tags\":[\"v2\"]");
    consul_wait_published(&from, 1, NULL);
    for (int i = 0; i < 4; i++)
        assert_int_equal(hello_index(port, N_BACKENDS), 1);
    char *log = consul_emu_get("/_emu/requests?path=/v1/health/service/api");
    /* the emulator escapes '&' in JSON the way Go does */
    assert_non_null(strstr(log, "tag=v2\\u0026tag=blue"));
    free(log);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* Seq of the first health request after seq since whose query has no index (a full read). */
static long full_read_after(long since)
{
    char path[128];
    long found = -1;
    snprintf(path, sizeof(path), "/_emu/requests?path=/v1/health/service/api&since=%ld", since);
    char *log = consul_emu_get(path);
    cJSON *list = cJSON_Parse(log), *e;
    cJSON_ArrayForEach(e, list)
    {
        const cJSON *q = cJSON_GetObjectItem(e, "query");
        if (found < 0 && cJSON_IsString(q) && strstr(q->valuestring, "index=") == NULL)
            found = (long)cJSON_GetObjectItem(e, "seq")->valuedouble;
    }
    cJSON_Delete(list);
    free(log);
    return found;
}

/* A snapshot restore lowers the index: sluice resets to 0, reads everything again, and then
 * sees changes at once instead of waiting for an index that will not come back. */
static void test_index_backwards_resyncs(void **state)
{
    (void)state;
    int port = start_sluice("wait = 2s\n", "");
    size_t from = log_size(&consul_fx.sluice);
    instance_add(0, "127.0.0.1", "", "passing", "");
    consul_wait_published(&from, 1, NULL);
    consul_emu_send("PUT", "/_emu/index", "{\"index\":1000}");
    instance_add(1, "127.0.0.1", "", "passing", "");
    consul_wait_published(&from, 2, "\"index\":100");
    char *log = consul_emu_get("/_emu/requests");
    cJSON *list = cJSON_Parse(log);
    long seq_before =
        (long)cJSON_GetObjectItem(cJSON_GetArrayItem(list, cJSON_GetArraySize(list) - 1), "seq")
            ->valuedouble;
    cJSON_Delete(list);
    free(log);
    consul_emu_send("PUT", "/_emu/index", "{\"index\":5}");
    consul_wait_event(&from, "\"event\":\"discovery_index_reset\"", "\"action\":\"full resync\"");
    instance_add(2, "127.0.0.1", "", "passing", "");
    consul_wait_published(&from, 3, NULL);
    assert_true(full_read_after(seq_before) > seq_before);
    int seen[N_BACKENDS];
    assert_int_equal(count_hellos(port, 6, seen, N_BACKENDS), 0);
    assert_int_equal(seen[2], 2);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* Two connections held on two instances; a new set (the third instance's weight changes) must
 * keep their counts, so least_connections keeps sending new sessions to the empty third one. */
static void test_least_connections_survive_swap(void **state)
{
    (void)state;
    int port = start_sluice("", "balance = least_connections\n");
    size_t from = log_size(&consul_fx.sluice);
    for (int i = 0; i < 3; i++)
        instance_add(i, "127.0.0.1", "", "passing", "");
    consul_wait_published(&from, 3, NULL);
    int held[2];
    int empty = hold_connections(port, held, 2);
    assert_true(empty >= 0);
    instance_add(empty, "127.0.0.1", "", "passing", ",\"Weights\":{\"Passing\":2,\"Warning\":1}");
    consul_wait_published(&from, 3, NULL); /* a new set: the instance states must carry over */
    size_t ends = log_size(&consul_fx.sluice);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(hello_index(port, N_BACKENDS), empty);
        consul_wait_event(&ends, "\"event\":\"session_end\"", NULL);
    }
    close(held[0]);
    close(held[1]);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* Answer time of the newest health/service request that returned 200 (emulator clock). */
static double last_answer_time(void)
{
    char *log = consul_emu_get("/_emu/requests?path=/v1/health/service/api");
    double at = 0;
    cJSON *list = cJSON_Parse(log), *e;
    cJSON_ArrayForEach(e, list)
    {
        const cJSON *status = cJSON_GetObjectItem(e, "status");
        const cJSON *dur = cJSON_GetObjectItem(e, "duration_ms");
        if (cJSON_IsNumber(status) && status->valueint == 200 && cJSON_IsNumber(dur))
            at = cJSON_GetObjectItem(e, "time")->valuedouble + dur->valuedouble / 1000.0;
    }
    cJSON_Delete(list);
    free(log);
    return at;
}

/* How long after Consul's answer a new connection sees a health change. The bound asserted is
 * generous (5 s); the figure is printed. */
static void test_change_reaches_traffic_quickly(void **state)
{
    (void)state;
    int port = start_sluice("", "");
    size_t from = log_size(&consul_fx.sluice);
    instance_add(0, "127.0.0.1", "", "passing", "");
    instance_add(1, "127.0.0.1", "", "passing", "");
    consul_wait_published(&from, 2, NULL);
    sleep_ms(2500); /* let the watch's token bucket refill: the measured query is not delayed */
    uint64_t t0 = harness_now_ms();
    check_set(0, "critical");
    double seen_at = 0;
    int last = -1, connections = 0;
    while (harness_now_ms() - t0 < 5000) {
        int b = hello_index(port, N_BACKENDS);
        assert_true(b >= 0);
        connections++;
        if (b == 1 && last == 1) { /* round robin alternates: two b1 in a row = new set */
            seen_at = harness_wall_time();
            break;
        }
        last = b;
    }
    uint64_t t1 = harness_now_ms();
    assert_true(seen_at > 0);
    double answered = last_answer_time();
    double from_answer_ms = (seen_at - answered) * 1000.0;
    print_message("health change -> new connections: %.1f ms after Consul's answer, %llu ms "
                  "after the change was made (%d connections polled)\n",
                  from_answer_ms, (unsigned long long)(t1 - t0), connections);
    assert_true(t1 - t0 < 5000);
    assert_true(from_answer_ms < 5000.0);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* [consul] datacenter and stale reach the query; only that datacenter's instances are used. */
static void test_datacenter_and_stale(void **state)
{
    (void)state;
    consul_emu_send("PUT", "/_emu/datacenters", "{\"name\":\"dc2\"}");
    int port = start_sluice("datacenter = dc2\nstale = true\n", "");
    size_t from = log_size(&consul_fx.sluice);
    instance_add(0, "127.0.0.1", "", "passing", ""); /* dc1, the agent's own */
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"Datacenter\":\"dc2\",\"Node\":\"far\",\"Address\":\"127.0.0.1\",\"Service\":{"
             "\"ID\":\"api-far\",\"Service\":\"api\",\"Port\":%d}}",
             consul_fx.backend_ports[1]);
    consul_emu_send("PUT", "/v1/catalog/register", body);
    consul_wait_published(&from, 1, NULL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(hello_index(port, N_BACKENDS), 1);
    char *log = consul_emu_get("/_emu/requests?path=/v1/health/service/api");
    assert_non_null(strstr(log, "dc=dc2\\u0026stale"));
    free(log);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* unix:// addresses: the same API over the agent's Unix socket. */
static void test_unix_socket_address(void **state)
{
    (void)state;
    struct proc unix_emu = {0};
    char sock[256], arg[300], consul[320];
    snprintf(sock, sizeof(sock), "%s/consul-%d.sock", harness_tmpdir(), getpid());
    const char *extra[] = {"--unix", sock, NULL};
    int tcp = emulator_start(&unix_emu, extra);
    assert_true(tcp > 0);
    snprintf(arg, sizeof(arg), "unix://%s", sock);
    snprintf(consul, sizeof(consul), "address = %s\n", arg);
    int port = consul_sluice_start_with("workers = 1\n", consul, "");
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"Node\":\"n0\",\"Address\":\"127.0.0.1\",\"Service\":{\"ID\":\"api-0\","
             "\"Service\":\"api\",\"Port\":%d}}",
             consul_fx.backend_ports[0]);
    assert_int_equal(http_request(tcp, "PUT", "/v1/catalog/register", body, NULL, 0), 200);
    size_t from = 0;
    consul_wait_event(&from, "\"event\":\"discovery_started\"", arg);
    consul_wait_published(&from, 1, NULL);
    assert_int_equal(hello_index(port, N_BACKENDS), 0);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
    assert_int_equal(proc_stop(&unix_emu, SIGTERM), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        CONSUL_FIXTURE_TEST(test_instance_appears),
        CONSUL_FIXTURE_TEST(test_critical_instance_keeps_open_connections),
        CONSUL_FIXTURE_TEST(test_warning_instance_gets_lower_weight),
        CONSUL_FIXTURE_TEST(test_health_passing_drops_warning),
        CONSUL_FIXTURE_TEST(test_node_address_fallback),
        CONSUL_FIXTURE_TEST(test_tags_filter),
        CONSUL_FIXTURE_TEST(test_index_backwards_resyncs),
        CONSUL_FIXTURE_TEST(test_least_connections_survive_swap),
        CONSUL_FIXTURE_TEST(test_change_reaches_traffic_quickly),
        CONSUL_FIXTURE_TEST(test_datacenter_and_stale),
        CONSUL_FIXTURE_TEST(test_unix_socket_address),
    };
    return cmocka_run_group_tests(tests, setup, consul_fixture_stop);
}
