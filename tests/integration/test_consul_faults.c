/* Consul failures against the emulator: a hung query and the watchdog, errors and garbage
 * answers (last known good, degraded state, recovery), ACL denials, an agent restart
 * (anti-entropy and resync), a 30 s outage with traffic flowing, and the shutdown order
 * (deregister, then drain); and what the daemon's registration is checked with (the admin
 * /healthz with [admin], else a TCP check on the listener). */
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
#include <sys/types.h>
#include <unistd.h>

#include "consul_fixture.h"

#define N_BACKENDS 2

static int setup(void **state)
{
    (void)state;
    return consul_fixture_start(N_BACKENDS, NULL);
}

/* Starts sluice against the emulator on emu (20 s to drain on SIGTERM) with extra [consul] lines
 * and extra sections; returns the listener port. */
static int start_sluice(int emu, const char *consul_extra, const char *sections)
{
    return consul_sluice_start(emu, "shutdown_timeout = 20s\n", consul_extra, sections);
}

/* Registers api-<i> (backend i) through the control API (no ACL checks) with a passing check. */
static void instance_add(int emu, int i)
{
    char body[1024];
    consul_instance_body(body, sizeof(body), i, "127.0.0.1", NULL, "passing", "");
    assert_int_equal(http_request(emu, "POST", "/_emu/catalog/register", body, NULL, 0), 200);
}

/* Lines of sluice's log holding needle. */
static int log_count(const char *needle)
{
    const char *needles[] = {needle, NULL};
    return log_count_all(&consul_fx.sluice, needles);
}

static void add_fault(const char *json)
{
    consul_emu_send("POST", "/_emu/faults", json);
}

/* The next health query hangs; the watchdog aborts it and the watch carries on. */
static void test_watchdog_recovers_hung_query(void **state)
{
    (void)state;
    int port = start_sluice(consul_fx.emu_port, "wait = 1s\n", "");
    size_t from = 0;
    instance_add(consul_fx.emu_port, 0);
    consul_wait_published(&from, 1, NULL);
    add_fault("{\"kind\":\"hang\",\"path\":\"/v1/health/service/api\",\"count\":1}");
    uint64_t t0 = harness_now_ms();
    consul_wait_event(&from, "\"event\":\"discovery_watchdog\"", NULL);
    print_message("hung query aborted after %llu ms (wait 1s)\n",
                  (unsigned long long)(harness_now_ms() - t0));
    /* served from the last known set meanwhile */
    assert_int_equal(hello_index(port, N_BACKENDS), 0);
    instance_add(consul_fx.emu_port, 1);
    consul_wait_published(&from, 2, NULL);
    int seen[N_BACKENDS];
    assert_int_equal(count_hellos(port, 4, seen, N_BACKENDS), 0);
    assert_int_equal(seen[1], 2);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* An agent that takes 6 s to answer is still read: a non-blocking query is bounded by [consul]
 * timeout (default 10 s), no longer by a fixed 5 s (issue 12, defect 9a). */
static void test_slow_agent_within_timeout(void **state)
{
    (void)state;
    instance_add(consul_fx.emu_port, 0);
    add_fault("{\"kind\":\"latency\",\"path\":\"/v1/health/service/api\",\"ms\":6000}");
    int port = start_sluice(consul_fx.emu_port, "", "");
    size_t from = 0;
    consul_wait_published(&from, 1, NULL);
    assert_int_equal(log_count("\"event\":\"discovery_degraded\""), 0);
    assert_int_equal(hello_index(port, N_BACKENDS), 0);
    consul_emu_send("DELETE", "/_emu/faults", NULL);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* Garbage and 500 answers: nothing is published, traffic goes on to the last good set, the
 * process is degraded once, and it recovers. */
static void test_errors_keep_last_known_good(void **state)
{
    (void)state;
    int port = start_sluice(consul_fx.emu_port, "", "");
    size_t from = 0;
    instance_add(consul_fx.emu_port, 0);
    consul_wait_published(&from, 1, NULL);
    add_fault("{\"kind\":\"garbage\",\"path\":\"/v1/health/service/api\",\"count\":2}");
    add_fault("{\"kind\":\"no_leader\",\"path\":\"/v1/health/service/api\",\"count\":2}");
    size_t degraded_from = from;
    /* the next queries meet the faults, then see this change */
    instance_add(consul_fx.emu_port, 1);
    consul_wait_event(&degraded_from, "\"event\":\"discovery_degraded\"",
                      "serving the last known good instances");
    assert_true(hello_index(port, N_BACKENDS) >= 0);
    proc_signal(&consul_fx.sluice, SIGUSR1);
    size_t stats_from = from;
    char line[4096];
    const char *stats[] = {"\"event\":\"discovery_stats\"", NULL};
    assert_int_equal(log_wait(&consul_fx.sluice, &stats_from, line, sizeof(line), stats), 0);
    size_t published_from = from;
    consul_wait_event(&from, "\"event\":\"discovery_recovered\"", NULL);
    consul_wait_published(&published_from, 2, NULL);
    assert_int_equal(log_count("\"event\":\"discovery_degraded\""), 1);
    assert_true(log_count("answer is not valid JSON") >= 1);
    assert_true(log_count("No cluster leader") >= 1);
    for (int i = 0; i < 4; i++)
        assert_true(hello_index(port, N_BACKENDS) >= 0);
    proc_signal(&consul_fx.sluice, SIGUSR1);
    assert_int_equal(log_wait(&consul_fx.sluice, &stats_from, line, sizeof(line), stats), 0);
    assert_non_null(strstr(line, "\"state\":\"ok\""));
    assert_true(log_field_int(line, "errors") >= 4);
    assert_int_equal(log_field_int(line, "degraded"), 1);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* No agent at start: the outage is logged as Consul unreachable with no instance known yet,
 * never as serving a last known good set that does not exist; connections are closed. */
static void test_unreachable_at_start_knows_nothing(void **state)
{
    (void)state;
    int port = start_sluice(harness_free_port(), "", ""); /* nothing listens there */
    size_t from = 0;
    char line[64];
    consul_wait_event(&from, "\"event\":\"discovery_degraded\"", "cannot reach Consul at");
    assert_int_equal(log_count("no instances are known yet"), 1);
    assert_int_equal(log_count("\"without_instances\":1"), 1);
    assert_int_equal(log_count("last known good"), 0);
    assert_int_equal(hello_of(port, line, sizeof(line)), -1); /* closed, nothing to pick */
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* ACLs on with default deny: an unknown token and a token without node:read are reported with
 * the permission that is missing; sluice stays up; a good token then works. */
static void test_acl_denials_are_explained(void **state)
{
    (void)state;
    struct proc acl_emu = {0};
    const char *args[] = {"--acl-default-policy", "deny", "--acl-master-token", "root", NULL};
    int emu = emulator_start(&acl_emu, args);
    assert_true(emu > 0);
    instance_add(emu, 0);
    assert_int_equal(http_request(emu, "PUT", "/_emu/acl/tokens",
                                  "{\"SecretID\":\"svc-only\",\"Rules\":{\"service_prefix\":{\"\":"
                                  "\"read\"}}}",
                                  NULL, 0),
                     200);
    int port = start_sluice(emu, "token = wrong-token\n", "");
    size_t from = 0;
    const char *denied[] = {"\"event\":\"discovery_error\"", "the ACL token is unknown to Consul",
                            "service:read on \\\"api\\\" and node:read", NULL};
    assert_int_equal(log_wait(&consul_fx.sluice, &from, NULL, 0, denied), 0);
    sleep_ms(1500); /* retries happen meanwhile; the error is logged once */
    assert_int_equal(log_count("\"event\":\"discovery_error\""), 1);
    char hello[32];
    assert_int_equal(hello_of(port, hello, sizeof(hello)), -1); /* closed, not crashed */
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);

    port = start_sluice(emu, "token = svc-only\n", "");
    from = 0;
    consul_wait_event(&from, "\"event\":\"discovery_empty_acl\"", "node:read");
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);

    assert_int_equal(http_request(emu, "PUT", "/_emu/acl/tokens",
                                  "{\"SecretID\":\"reader\",\"Rules\":{\"service_prefix\":{\"\":"
                                  "\"read\"},\"node_prefix\":{\"\":\"read\"}}}",
                                  NULL, 0),
                     200);
    port = start_sluice(emu, "token = reader\n", "[registration]\n");
    from = 0;
    consul_wait_published(&from, 1, NULL);
    assert_int_equal(hello_index(port, N_BACKENDS), 0);
    /* reading is allowed, registering is not: the agent's reason names service:write */
    consul_wait_event(&from, "\"event\":\"registration_failed\"", "service:write");
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
    assert_int_equal(proc_stop(&acl_emu, SIGTERM), 0);
}

static int agent_knows(const char *needle)
{
    char *state = consul_emu_get("/_emu/state");
    int found = strstr(state, needle) != NULL;
    free(state);
    return found;
}

/* The agent restarts and forgets everything: anti-entropy registers sluice again, discovery
 * resyncs (the index went back to 1) and follows new changes. */
static void test_agent_restart_restores_and_resyncs(void **state)
{
    (void)state;
    int port =
        start_sluice(consul_fx.emu_port, "wait = 2s\n", "[registration]\nanti_entropy = 1s\n");
    size_t from = 0, reg_from = 0;
    instance_add(consul_fx.emu_port, 0);
    consul_wait_published(&from, 1, NULL);
    consul_wait_event(&reg_from, "\"event\":\"registration_added\"", NULL);
    char id[128];
    snprintf(id, sizeof(id), "\"web-");
    assert_true(agent_knows(id));
    consul_emu_send("POST", "/_emu/restart", "{\"down_seconds\":1}");
    consul_wait_event(&reg_from, "\"event\":\"registration_restored\"", NULL);
    assert_true(agent_knows(id));
    instance_add(consul_fx.emu_port, 1);
    consul_wait_published(&from, 1, NULL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(hello_index(port, N_BACKENDS), 1);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* Consul is gone for 30 s (SLUICE_CONSUL_OUTAGE_S overrides): every connection meanwhile is
 * served from the last known set, the outage is logged once, the state reads degraded, and
 * discovery recovers when the agent is back. */
static void test_outage_keeps_traffic_flowing(void **state)
{
    (void)state;
    const char *env = getenv("SLUICE_CONSUL_OUTAGE_S");
    int outage_s = env != NULL && atoi(env) > 0 ? atoi(env) : 30;
    int port = start_sluice(consul_fx.emu_port, "", "");
    size_t from = 0;
    instance_add(consul_fx.emu_port, 0);
    instance_add(consul_fx.emu_port, 1);
    consul_wait_published(&from, 2, NULL);
    char body[64];
    snprintf(body, sizeof(body), "{\"down_seconds\":%d}", outage_s);
    uint64_t t0 = harness_now_ms();
    consul_emu_send("POST", "/_emu/restart", body);
    int served[N_BACKENDS] = {0}, asked = 0;
    while (harness_now_ms() - t0 < (uint64_t)outage_s * 1000 - 500) {
        int b = hello_index(port, N_BACKENDS);
        assert_true(b >= 0);
        served[b]++;
        asked++;
        if (asked == 10) {
            proc_signal(&consul_fx.sluice, SIGUSR1);
            char line[4096];
            const char *stats[] = {"\"event\":\"discovery_stats\"", NULL};
            size_t at = from;
            assert_int_equal(log_wait(&consul_fx.sluice, &at, line, sizeof(line), stats), 0);
            assert_non_null(strstr(line, "\"state\":\"degraded\""));
        }
        sleep_ms(250);
    }
    print_message("outage of %d s: %d connections, %d to b0, %d to b1, all served\n", outage_s,
                  asked, served[0], served[1]);
    assert_int_equal(served[0] + served[1], asked);
    assert_true(served[0] > 0 && served[1] > 0);
    assert_int_equal(log_count("\"event\":\"discovery_degraded\""), 1);
    consul_wait_event(&from, "\"event\":\"discovery_recovered\"", NULL);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* A registration the agent refused is not reported as removed at shutdown (issue 12, 9c). */
static void test_refused_registration_not_removed(void **state)
{
    (void)state;
    add_fault("{\"kind\":\"error\",\"path\":\"/v1/agent/service/register\",\"status\":400,"
              "\"body\":\"Invalid service\"}");
    start_sluice(consul_fx.emu_port, "", "[registration]\n");
    size_t from = 0;
    consul_wait_event(&from, "\"event\":\"registration_failed\"", "Invalid service");
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
    assert_int_equal(log_count("\"event\":\"registration_removed\""), 0);
    assert_int_equal(log_count("\"event\":\"registration_remove_failed\""), 0);
}

/* SIGTERM: the registration is gone while a session still drains, and the discovery thread
 * (in a 55 s blocking query) stops at once. */
static void test_shutdown_deregisters_then_drains(void **state)
{
    (void)state;
    int port = start_sluice(consul_fx.emu_port, "", "[registration]\n");
    size_t from = 0, reg_from = 0;
    instance_add(consul_fx.emu_port, 0);
    consul_wait_published(&from, 1, NULL);
    consul_wait_event(&reg_from, "\"event\":\"registration_added\"", NULL);
    assert_true(agent_knows("\"web-"));
    int held = tcp_connect(port);
    char line[64];
    assert_true(held >= 0);
    assert_true(read_line(held, line, sizeof(line)) > 0);
    sleep_ms(300); /* the discovery thread sits in its blocking query now */
    uint64_t t0 = harness_now_ms();
    from = log_size(&consul_fx.sluice);
    proc_signal(&consul_fx.sluice, SIGTERM);
    consul_wait_event(&from, "\"event\":\"registration_removed\"", NULL);
    consul_wait_event(&from, "\"event\":\"discovery_stopped\"", NULL);
    uint64_t stopped_ms = harness_now_ms() - t0;
    print_message("SIGTERM -> deregistered and discovery stopped in %llu ms\n",
                  (unsigned long long)stopped_ms);
    assert_true(stopped_ms < 5000);
    assert_false(agent_knows("\"web-"));
    /* still draining */
    assert_true(consul_fx.sluice.pid > 0 && kill(consul_fx.sluice.pid, 0) == 0);
    assert_int_equal(write_all(held, "bye\n", 4), 0);
    assert_int_equal(read_line(held, line, sizeof(line)), 3);
    close(held);
    assert_int_equal(proc_wait(&consul_fx.sluice, HARNESS_WAIT_MS), 0);
}

/* The agent's check of the listener's registration (service:web-HOSTNAME-PORT), as
 * /v1/agent/checks shows it, once its status is status (NULL: at once); the caller frees it. */
static cJSON *listener_check(int port, const char *status)
{
    char host[128], id[320];
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;

    if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0')
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    snprintf(id, sizeof(id), "service:web-%s-%d", host, port);
    for (;;) {
        char *body = consul_emu_get("/v1/agent/checks");
        cJSON *checks = cJSON_Parse(body), *chk;
        free(body);
        assert_non_null(checks);
        assert_int_equal(cJSON_GetArraySize(checks), 1); /* no other check than this one */
        chk = cJSON_DetachItemFromObject(checks, id);
        cJSON_Delete(checks);
        assert_non_null(chk);
        if (status == NULL ||
            strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(chk, "Status")), status) == 0)
            return chk;
        cJSON_Delete(chk);
        if (harness_now_ms() > deadline)
            fail_msg("check %s never turned %s", id, status);
        sleep_ms(100);
    }
}

static const char *definition_of(const cJSON *chk, const char *field)
{
    return cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(chk, "Definition"), field));
}

/* Without [admin] the listener is registered with a TCP check on itself (each probe makes sluice
 * dial a backend, which the README says). */
static void test_registration_check_tcp_without_admin(void **state)
{
    (void)state;
    int port = start_sluice(consul_fx.emu_port, "", "[registration]\ncheck_interval = 1s\n");
    size_t reg_from = 0;
    char want[64];
    consul_wait_event(&reg_from, "\"event\":\"registration_added\"", NULL);
    cJSON *chk = listener_check(port, "passing");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(chk, "Type")), "tcp");
    snprintf(want, sizeof(want), "127.0.0.1:%d", port);
    assert_string_equal(definition_of(chk, "TCP"), want);
    assert_null(definition_of(chk, "HTTP"));
    cJSON_Delete(chk);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* With [admin] the listener's registration is checked on the admin server's /healthz: the agent
 * really probes it and it turns passing with the 200 answer. */
static void test_registration_check_is_admin_healthz(void **state)
{
    (void)state;
    int admin_port = harness_free_port();
    char sections[256], want[64];
    snprintf(sections, sizeof(sections),
             "[admin]\nbind = 127.0.0.1:%d\n[registration]\ncheck_interval = 1s\n", admin_port);
    int port = start_sluice(consul_fx.emu_port, "", sections);
    size_t from = 0, reg_from = 0;
    instance_add(consul_fx.emu_port, 0); /* /healthz says ok once discovery is fresh */
    consul_wait_published(&from, 1, NULL);
    consul_wait_event(&reg_from, "\"event\":\"registration_added\"", NULL);
    cJSON *chk = listener_check(port, "passing");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(chk, "Type")), "http");
    snprintf(want, sizeof(want), "http://127.0.0.1:%d/healthz", admin_port);
    assert_string_equal(definition_of(chk, "HTTP"), want);
    assert_null(definition_of(chk, "TCP"));
    assert_non_null(strstr(cJSON_GetStringValue(cJSON_GetObjectItem(chk, "Output")), "200 OK"));
    cJSON_Delete(chk);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        CONSUL_FIXTURE_TEST(test_watchdog_recovers_hung_query),
        CONSUL_FIXTURE_TEST(test_errors_keep_last_known_good),
        CONSUL_FIXTURE_TEST(test_unreachable_at_start_knows_nothing),
        CONSUL_FIXTURE_TEST(test_acl_denials_are_explained),
        CONSUL_FIXTURE_TEST(test_agent_restart_restores_and_resyncs),
        CONSUL_FIXTURE_TEST(test_shutdown_deregisters_then_drains),
        CONSUL_FIXTURE_TEST(test_registration_check_tcp_without_admin),
        CONSUL_FIXTURE_TEST(test_registration_check_is_admin_healthz),
        CONSUL_FIXTURE_TEST(test_outage_keeps_traffic_flowing),
        CONSUL_FIXTURE_TEST(test_slow_agent_within_timeout),
        CONSUL_FIXTURE_TEST(test_refused_registration_not_removed),
    };
    return cmocka_run_group_tests(tests, setup, consul_fixture_stop);
}
