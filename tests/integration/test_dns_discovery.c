/* discovery = dns end to end against tests/dns/dns_server.py: SRV instances appear and disappear,
 * the TTL drives re-resolution, SRV weights give the measured split, SERVFAIL, silence and
 * NXDOMAIN keep the last good set (logged once, counted, shown in /status and /metrics), an
 * A/AAAA name with dns_port, passive ejection of an SRV instance, and host names in a static
 * backends list (resolved at start, followed on change, strict_dns for sluice -t). */
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

#include "harness.h"

#define N_BACKENDS 3

static struct proc backends[N_BACKENDS], dns, sluice, second; /* second: on 127.0.0.2 */
static int ports[N_BACKENDS], dns_port, admin_port, web_port;
static char zone_path[512], query_log[512];

static int setup(void **state)
{
    (void)state;
    snprintf(zone_path, sizeof(zone_path), "%s/zone-%d.json", harness_tmpdir(), getpid());
    snprintf(query_log, sizeof(query_log), "%s/zone-%d.queries", harness_tmpdir(), getpid());
    zone_write(zone_path, "{\"records\": {}}");
    dns_port = dns_server_start(&dns, zone_path, query_log);
    return dns_port > 0 && hello_backends_start(backends, ports, N_BACKENDS) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    hello_backends_stop(backends, N_BACKENDS);
    proc_stop(&dns, SIGTERM);
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    if (sluice.pid != 0)
        proc_stop(&sluice, SIGTERM);
    if (second.pid != 0) /* also after a failed test: the next one listens there again */
        proc_stop(&second, SIGTERM);
    return 0;
}

/* A zone with _api._tcp.test. listing backend i (target b<i>.test.) with weights[i] > 0, each
 * target an A record 127.0.0.1; a weight of -1 leaves the backend out. */
static void zone_srv(int ttl, const char *mode, const int *weights, const char *extra_records)
{
    char zone[4096], srv[1024] = "", hosts[1024] = "";

    for (int i = 0; i < N_BACKENDS; i++) {
        if (weights[i] < 0)
            continue;
        snprintf(srv + strlen(srv), sizeof(srv) - strlen(srv), "%s[0, %d, %d, \"b%d.test.\"]",
                 srv[0] ? ", " : "", weights[i], ports[i], i);
        snprintf(hosts + strlen(hosts), sizeof(hosts) - strlen(hosts),
                 ", \"b%d.test.\": {\"A\": [\"127.0.0.1\"]}", i);
    }
    snprintf(
        zone, sizeof(zone),
        "{\"ttl\": %d, \"mode\": \"%s\", \"records\": {\"_api._tcp.test.\": {\"SRV\": [%s]}%s%s}}",
        ttl, mode, srv, hosts, extra_records);
    zone_write(zone_path, zone);
}

/* sluice with service api on discovery = dns (dns_name, then extra service lines); waits for the
 * first published set when wait_publish. */
static void start_sluice(const char *dns_name, const char *service_extra, int wait_publish)
{
    char conf[2048];
    admin_port = harness_free_port();
    web_port = harness_free_port();
    snprintf(conf, sizeof(conf),
             "[sluice]\nworkers = 1\nlog_level = debug\n"
             "[admin]\nbind = 127.0.0.1:%d\n"
             "[listener:web]\nbind = 127.0.0.1:%d\nservice = api\n"
             "[service:api]\ndiscovery = dns\ndns_name = %s\ndns_servers = 127.0.0.1:%d\n"
             "dns_min_interval = 200ms\ndns_max_interval = 2s\ndns_timeout = 300ms\n%s\n",
             admin_port, web_port, dns_name, dns_port, service_extra);
    assert_int_equal(sluice_start(&sluice, conf), 0);
    if (wait_publish) {
        const char *needles[] = {"\"event\":\"registry_published\"", NULL};
        assert_int_equal(log_wait(&sluice, NULL, NULL, 0, needles), 0);
    }
}

/* Waits for a set of n instances to be published after log offset *from. */
static void wait_published(size_t *from, int n)
{
    char want[32];
    snprintf(want, sizeof(want), "\"instances\":%d,", n);
    const char *needles[] = {"\"event\":\"registry_published\"", want, NULL};
    assert_int_equal(log_wait(&sluice, from, NULL, 0, needles), 0);
}

/* The registries[0] object of /status: field as a number (bools as 0/1). */
/* The state of instance id in /status ("" when the set does not list it). */
static void test_srv_follows_additions_and_removals(void **state)
{
    (void)state;
    int counts[N_BACKENDS];
    size_t from = 0;

    zone_srv(1, "ok", (int[]){1, 1, -1}, "");
    start_sluice("_api._tcp.test.", "balance = round_robin", 0);
    wait_published(&from, 2);
    assert_int_equal(count_hellos(web_port, 20, counts, N_BACKENDS), 0);
    assert_int_equal(counts[0], 10);
    assert_int_equal(counts[1], 10);
    assert_int_equal(counts[2], 0);

    zone_srv(1, "ok", (int[]){1, 1, 1}, ""); /* added: no signal, the TTL brings it */
    wait_published(&from, 3);
    assert_int_equal(count_hellos(web_port, 30, counts, N_BACKENDS), 0);
    assert_true(counts[2] == 10);

    zone_srv(1, "ok", (int[]){-1, 1, 1}, ""); /* removed */
    wait_published(&from, 2);
    assert_int_equal(count_hellos(web_port, 30, counts, N_BACKENDS), 0);
    assert_int_equal(counts[0], 0);
    assert_int_equal(counts[1] + counts[2], 30);
    print_message("SRV: 2 -> 3 -> 2 instances followed by traffic\n");
}

static int count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[512];
    int n = 0;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, needle) != NULL;
    if (f != NULL)
        fclose(f);
    return n;
}

/* The answer's TTL (1 s, above dns_min_interval) drives new queries without any change. */
static void test_ttl_drives_reresolution(void **state)
{
    (void)state;
    zone_srv(1, "ok", (int[]){1, 1, 1}, "");
    start_sluice("_api._tcp.test.", "", 1);
    int before = count_lines(query_log, "SRV _api._tcp.test.");
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    while (count_lines(query_log, "SRV _api._tcp.test.") < before + 3 &&
           harness_now_ms() < deadline)
        sleep_ms(50);
    assert_true(count_lines(query_log, "SRV _api._tcp.test.") >= before + 3);
    assert_true(status_registry_field(admin_port, "ttl") == 1);
    assert_true(status_registry_field(admin_port, "attempts") >= 3);
    assert_true(status_registry_field(admin_port, "publishes") ==
                1); /* the same answer publishes nothing new */
}

/* SRV weights 3:1 under balance = weighted: measured over 400 connections. */
static void test_srv_weights_split(void **state)
{
    (void)state;
    int counts[N_BACKENDS];
    zone_srv(30, "ok", (int[]){3, 1, -1}, "");
    start_sluice("_api._tcp.test.", "balance = weighted", 1);
    assert_int_equal(count_hellos(web_port, 400, counts, N_BACKENDS), 0);
    print_message("SRV weights 3:1 -> %d / %d of 400 connections\n", counts[0], counts[1]);
    assert_in_range(counts[0], 260, 340);
    assert_in_range(counts[1], 60, 140);
    assert_int_equal(counts[2], 0);
}

static void assert_serves_both(void)
{
    int counts[N_BACKENDS];
    assert_int_equal(count_hellos(web_port, 20, counts, N_BACKENDS), 0);
    assert_int_equal(counts[0], 10);
    assert_int_equal(counts[1], 10);
}

/* Waits until /status counts more errors than before. */
static void wait_errors_above(double before)
{
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    while (status_registry_field(admin_port, "errors") <= before && harness_now_ms() < deadline)
        sleep_ms(50);
    assert_true(status_registry_field(admin_port, "errors") > before);
}

/* SERVFAIL, then silence, then NXDOMAIN: the last good set serves throughout, one outage is
 * logged once and counted, /status and /metrics show it, /healthz says degraded; a good answer
 * ends it. */
static void test_failures_keep_last_good_set(void **state)
{
    (void)state;
    char body[65536];
    size_t from = 0;
    const char *failed[] = {"\"event\":\"registry_failed\"", NULL};

    zone_srv(1, "ok", (int[]){1, 1, -1}, "");
    start_sluice("_api._tcp.test.", "balance = round_robin", 0);
    wait_published(&from, 2);

    zone_srv(1, "servfail", (int[]){1, 1, -1}, "");
    assert_int_equal(log_wait(&sluice, &from, NULL, 0, failed), 0);
    wait_errors_above(1);
    assert_serves_both();
    assert_true(status_registry_field(admin_port, "failing") == 1);
    assert_int_equal(http_request(admin_port, "GET", "/healthz", NULL, NULL, 0), 503);
    assert_int_equal(http_request(admin_port, "GET", "/metrics", NULL, body, sizeof(body)), 200);
    assert_true(metrics_sample(body, "sluice_registry_failing{service=\"api\",kind=\"dns\"}") == 1);
    assert_true(
        metrics_sample(body, "sluice_registry_outages_total{service=\"api\",kind=\"dns\"}") == 1);

    zone_srv(1, "timeout", (int[]){1, 1, -1}, "");
    double errors = status_registry_field(admin_port, "errors");
    wait_errors_above(errors);
    assert_serves_both();

    zone_srv(1, "nxdomain", (int[]){1, 1, -1}, "");
    errors = status_registry_field(admin_port, "errors");
    wait_errors_above(errors);
    assert_serves_both();
    assert_int_equal(log_count_all(&sluice, failed), 1); /* once per outage */
    assert_true(status_registry_field(admin_port, "outages") == 1);

    size_t mark = log_size(&sluice);
    zone_srv(1, "ok", (int[]){-1, 1, -1}, "");
    const char *recovered[] = {"\"event\":\"registry_recovered\"", NULL};
    assert_int_equal(log_wait(&sluice, &mark, NULL, 0, recovered), 0);
    wait_published(&mark, 1);
    int counts[N_BACKENDS];
    assert_int_equal(count_hellos(web_port, 10, counts, N_BACKENDS), 0);
    assert_int_equal(counts[1], 10);
    assert_true(status_registry_field(admin_port, "failing") == 0);
    assert_int_equal(http_request(admin_port, "GET", "/healthz", NULL, NULL, 0), 200);
}

/* An SRV target whose own lookup fails keeps the instances it had; the others follow. */
static void test_failed_target_keeps_its_instance(void **state)
{
    (void)state;
    char zone[2048];
    size_t from = 0;

    zone_srv(1, "ok", (int[]){1, 1, -1}, "");
    start_sluice("_api._tcp.test.", "balance = round_robin", 0);
    wait_published(&from, 2);
    snprintf(zone, sizeof(zone),
             "{\"ttl\": 1, \"records\": {\"_api._tcp.test.\": {\"SRV\": [[0, 1, %d, \"b0.test.\"], "
             "[0, 1, %d, \"b1.test.\"], [0, 1, %d, \"b2.test.\"]]}, "
             "\"b0.test.\": {\"A\": [\"127.0.0.1\"]}, \"b2.test.\": {\"A\": [\"127.0.0.1\"]}}}",
             ports[0], ports[1], ports[2]);
    zone_write(zone_path, zone); /* b1.test. no longer resolves; b2 is new */
    wait_published(&from, 3);
    int counts[N_BACKENDS];
    assert_int_equal(count_hellos(web_port, 30, counts, N_BACKENDS), 0);
    assert_int_equal(counts[0], 10);
    assert_int_equal(counts[1], 10);
    assert_int_equal(counts[2], 10);
}

/* dns_empty_is_valid = on: an answer without records empties the set. */
static void test_empty_is_valid(void **state)
{
    (void)state;
    size_t from = 0;
    char hello[32];

    zone_srv(1, "ok", (int[]){1, -1, -1}, "");
    start_sluice("_api._tcp.test.", "dns_empty_is_valid = on", 0);
    wait_published(&from, 1);
    zone_srv(1, "ok", (int[]){-1, -1, -1}, "");
    wait_published(&from, 0);
    assert_int_equal(hello_of(web_port, hello, sizeof(hello)), -1);
}

/* An A/AAAA name with dns_port: every address, ids "ip:port"; a changed address is followed. */
static void test_a_records_with_port(void **state)
{
    (void)state;
    char listen[64], extra[256], zone[512], conf_extra[64];
    size_t from = 0;
    int counts[N_BACKENDS];
    const char *hello_args[] = {"--hello", "b2", NULL};

    snprintf(listen, sizeof(listen), "127.0.0.2:%d", ports[0]);
    assert_true(backend_start_listen(&second, listen, "echo", hello_args) > 0);
    snprintf(zone, sizeof(zone),
             "{\"ttl\": 1, \"records\": {\"api.test.\": {\"A\": [\"127.0.0.1\"]}}}");
    zone_write(zone_path, zone);
    snprintf(conf_extra, sizeof(conf_extra), "dns_port = %d\nbalance = round_robin", ports[0]);
    start_sluice("api.test.", conf_extra, 0);
    wait_published(&from, 1);
    assert_int_equal(count_hellos(web_port, 4, counts, N_BACKENDS), 0);
    assert_int_equal(counts[0], 4);

    snprintf(extra, sizeof(extra), "%s", "");
    zone_write(
        zone_path,
        "{\"ttl\": 1, \"records\": {\"api.test.\": {\"A\": [\"127.0.0.1\", \"127.0.0.2\"]}}}");
    wait_published(&from, 2);
    assert_int_equal(count_hellos(web_port, 10, counts, N_BACKENDS), 0);
    assert_int_equal(counts[0], 5);
    assert_int_equal(counts[2], 5);
    char id[64], st[32];
    snprintf(id, sizeof(id), "127.0.0.2:%d", ports[0]);
    status_instance_state(admin_port, id, st, sizeof(st));
    assert_string_equal(st, "healthy");
}

/* An SRV instance whose port refuses connections is ejected by passive health; the live ones
 * take the traffic, and the ejected one stays ejected across re-resolutions (same id). */
static void test_srv_instance_ejected(void **state)
{
    (void)state;
    char zone[2048], st[32], id[64];
    int dead = harness_free_port(), counts[N_BACKENDS];
    size_t from = 0;

    snprintf(zone, sizeof(zone),
             "{\"ttl\": 1, \"records\": {\"_api._tcp.test.\": {\"SRV\": [[0, 1, %d, \"b0.test.\"], "
             "[0, 1, %d, \"dead.test.\"]]}, \"b0.test.\": {\"A\": [\"127.0.0.1\"]}, "
             "\"dead.test.\": {\"A\": [\"127.0.0.1\"]}}}",
             ports[0], dead);
    zone_write(zone_path, zone);
    start_sluice("_api._tcp.test.", "balance = round_robin\neject_after = 2\neject_time = 1m", 0);
    wait_published(&from, 2);
    assert_int_equal(count_hellos(web_port, 10, counts, N_BACKENDS), 0);
    assert_int_equal(counts[0], 10); /* retries send every client to the live one */
    snprintf(id, sizeof(id), "dead.test:%d", dead);
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    do {
        status_instance_state(admin_port, id, st, sizeof(st));
    } while (strcmp(st, "ejected") != 0 && harness_now_ms() < deadline && (sleep_ms(50), 1));
    assert_string_equal(st, "ejected");
    /* three more resolutions (TTL 1 s): still the same instance, still ejected */
    double attempts = status_registry_field(admin_port, "attempts");
    while (status_registry_field(admin_port, "attempts") < attempts + 3 &&
           harness_now_ms() < deadline)
        sleep_ms(100);
    status_instance_state(admin_port, id, st, sizeof(st));
    assert_string_equal(st, "ejected");
}

/* Host names in a static backends list: resolved at start through dns_servers, served with the
 * IP entries, and followed when the name's address changes (its TTL drives re-resolution). */
static void test_static_host_names(void **state)
{
    (void)state;
    char listen[64], conf[2048], zone[512];
    int counts[N_BACKENDS];
    size_t from = 0;
    const char *hello_args[] = {"--hello", "b2", NULL};

    snprintf(listen, sizeof(listen), "127.0.0.2:%d", ports[0]);
    assert_true(backend_start_listen(&second, listen, "echo", hello_args) > 0);
    snprintf(zone, sizeof(zone),
             "{\"ttl\": 1, \"records\": {\"api-1.test.\": {\"A\": [\"127.0.0.1\"]}}}");
    zone_write(zone_path, zone);
    admin_port = harness_free_port();
    web_port = harness_free_port();
    snprintf(conf, sizeof(conf),
             "[sluice]\nworkers = 1\nlog_level = debug\n[admin]\nbind = 127.0.0.1:%d\n"
             "[listener:web]\nbind = 127.0.0.1:%d\nservice = api\n"
             "[service:api]\nbackends = api-1.test.:%d, 127.0.0.1:%d\nbalance = round_robin\n"
             "dns_servers = 127.0.0.1:%d\ndns_min_interval = 200ms\ndns_max_interval = 2s\n"
             "strict_dns = on\n",
             admin_port, web_port, ports[0], ports[1], dns_port);
    assert_int_equal(sluice_start(&sluice, conf), 0);
    wait_published(&from, 2);
    assert_int_equal(count_hellos(web_port, 10, counts, N_BACKENDS), 0);
    assert_int_equal(counts[0], 5);
    assert_int_equal(counts[1], 5);
    char id[64], st[32];
    snprintf(id, sizeof(id), "api-1.test.:%d", ports[0]);
    status_instance_state(admin_port, id, st, sizeof(st));
    assert_string_equal(st, "healthy");

    zone_write(zone_path, "{\"ttl\": 1, \"records\": {\"api-1.test.\": {\"A\": [\"127.0.0.2\"]}}}");
    const char *published[] = {"\"event\":\"registry_published\"", NULL};
    assert_int_equal(log_wait(&sluice, &from, NULL, 0, published), 0);
    assert_int_equal(count_hellos(web_port, 10, counts, N_BACKENDS), 0);
    assert_int_equal(counts[0], 0);
    assert_int_equal(counts[2], 5); /* the same instance id, its new address */
    assert_int_equal(counts[1], 5);
    status_instance_state(admin_port, id, st, sizeof(st));
    assert_string_equal(st, "healthy");
}

/* strict_dns = on: sluice -t refuses a host name that does not resolve, with FILE:LINE; off, the
 * file is fine (the name is retried while running). */
static void test_strict_dns_check(void **state)
{
    (void)state;
    char path[512], conf[1024], out[4096], want[600];

    zone_write(zone_path, "{\"ttl\": 1, \"records\": {}}");
    snprintf(path, sizeof(path), "%s/strict-%d.ini", harness_tmpdir(), getpid());
    for (int strict = 1; strict >= 0; strict--) {
        snprintf(conf, sizeof(conf),
                 "[listener:web]\nbind = 127.0.0.1:%d\nservice = api\n"
                 "[service:api]\nbackends = missing.test.:80\ndns_servers = 127.0.0.1:%d\n"
                 "strict_dns = %s\n",
                 harness_free_port(), dns_port, strict ? "on" : "off");
        config_write(path, conf);
        char *argv[] = {(char *)harness_bin("SLUICE_BIN"), "-t", "-c", path, NULL};
        int status = run_capture(argv, out, sizeof(out));
        snprintf(want, sizeof(want), "%s:5: backends: backend 1 \"missing.test.:80\": ", path);
        if (strict && (status == 0 || strstr(out, want) == NULL))
            fail_msg("strict: exit %d, output: %s", status, out);
        if (!strict && status != 0)
            fail_msg("not strict: exit %d, output: %s", status, out);
    }
}

/* A reload names a changed dns_* key as needing a restart (the registry reads them at start),
 * as it does the Consul watch's keys, and the service keeps resolving as before. */
static void test_reload_names_dns_keys(void **state)
{
    (void)state;
    char conf[2048], line[4096];
    size_t from = 0;

    zone_srv(1, "ok", (int[]){1, -1, -1}, "");
    start_sluice("_api._tcp.test.", "", 0);
    wait_published(&from, 1);
    snprintf(conf, sizeof(conf),
             "[sluice]\nworkers = 1\nlog_level = debug\n"
             "[admin]\nbind = 127.0.0.1:%d\n"
             "[listener:web]\nbind = 127.0.0.1:%d\nservice = api\n"
             "[service:api]\ndiscovery = dns\ndns_name = _api._tcp.test.\n"
             "dns_servers = 127.0.0.1:%d\ndns_min_interval = 300ms\ndns_max_interval = 2s\n"
             "dns_timeout = 300ms\n",
             admin_port, web_port, dns_port);
    config_write(sluice.conf_path, conf);
    proc_signal(&sluice, SIGHUP);
    const char *needles[] = {"\"event\":\"reload_needs_restart\"", "dns_min_interval", NULL};
    assert_int_equal(log_wait(&sluice, &from, line, sizeof(line), needles), 0);
    if (strstr(line, "\"change\":\"[service:api] dns_min_interval: 200ms -> 300ms\"") == NULL)
        fail_msg("unexpected: %s", line);
    char hello[32];
    assert_int_equal(hello_of(web_port, hello, sizeof(hello)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_srv_follows_additions_and_removals, test_teardown),
        cmocka_unit_test_teardown(test_ttl_drives_reresolution, test_teardown),
        cmocka_unit_test_teardown(test_srv_weights_split, test_teardown),
        cmocka_unit_test_teardown(test_failures_keep_last_good_set, test_teardown),
        cmocka_unit_test_teardown(test_failed_target_keeps_its_instance, test_teardown),
        cmocka_unit_test_teardown(test_empty_is_valid, test_teardown),
        cmocka_unit_test_teardown(test_a_records_with_port, test_teardown),
        cmocka_unit_test_teardown(test_srv_instance_ejected, test_teardown),
        cmocka_unit_test_teardown(test_static_host_names, test_teardown),
        cmocka_unit_test_teardown(test_strict_dns_check, test_teardown),
        cmocka_unit_test_teardown(test_reload_names_dns_keys, test_teardown),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
