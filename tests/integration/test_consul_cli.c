/* "sluice register" and "sluice deregister" against the emulator: success, generated and given
 * ids, two checks, a check the agent rejects, rollback when the confirmation step fails, Consul
 * unreachable, ACL refusals, environment fallbacks and usage errors, with their exit codes. */
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

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "consul_fixture.h"

static struct proc http_backend;
static int http_port;
static char conf_path[512];
static char host[128];

static void write_conf(const char *path, int port, const char *extra)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "[consul]\naddress = 127.0.0.1:%d\n%s", port, extra);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    const char *fast[] = {"--fast-checks", NULL};
    int emu_ok = consul_fixture_start(0, fast) == 0;
    http_port = backend_start(&http_backend, "http", NULL);
    snprintf(conf_path, sizeof(conf_path), "%s/cli-%d.ini", harness_tmpdir(), getpid());
    write_conf(conf_path, consul_fx.emu_port, "");
    gethostname(host, sizeof(host) - 1);
    return emu_ok && http_port > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    proc_stop(&http_backend, SIGTERM);
    consul_fixture_stop(state);
    unlink(conf_path);
    return 0;
}

/* Runs sluice with args (NULL-terminated, after the binary); returns the exit status. */
static int run(char *out, size_t len, const char *const *args)
{
    const char *argv[40] = {harness_bin("SLUICE_BIN")};
    size_t n = 1;
    for (; args[n - 1] != NULL && n < 39; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    int status = run_capture((char *const *)argv, out, len);
    print_message("sluice %s ... -> %d: %s", args[0], status, out);
    return status;
}

static int agent_status(const char *id, char *out, size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "/v1/agent/service/%s", id);
    return http_request(consul_fx.emu_port, "GET", path, NULL, out, len);
}

static void test_register_and_deregister(void **state)
{
    (void)state;
    char out[4096], url[128], port[16], id[200], body[8192];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/health", http_port);
    snprintf(port, sizeof(port), "%d", http_port);
    snprintf(id, sizeof(id), "api-%s-%d", host, http_port);
    const char *reg[] = {
        "register",      "-c",           conf_path, "--name",     "api", "--address",
        "127.0.0.1",     "--port",       port,      "--tag",      "v1",  "--meta",
        "version=1.0.0", "--http-check", url,       "--interval", "5s",  NULL};
    assert_int_equal(run(out, sizeof(out), reg), 0);
    assert_non_null(strstr(out, id)); /* the generated id is printed */
    assert_int_equal(agent_status(id, body, sizeof(body)), 200);
    assert_non_null(strstr(body, "\"Tags\":[\"v1\"]"));
    assert_non_null(strstr(body, "\"version\":\"1.0.0\""));
    assert_int_equal(
        http_request(consul_fx.emu_port, "GET", "/v1/agent/checks", NULL, body, sizeof(body)), 200);
    char check[300];
    snprintf(check, sizeof(check), "\"service:%s\"", id);
    assert_non_null(strstr(body, check));
    assert_non_null(strstr(body, "\"Interval\":\"5s\""));
    const char *dereg[] = {"deregister", "-c", conf_path, "--id", id, NULL};
    assert_int_equal(run(out, sizeof(out), dereg), 0);
    assert_int_equal(agent_status(id, body, sizeof(body)), 404);
    assert_int_equal(run(out, sizeof(out), dereg), 0); /* already gone counts as done */
    assert_non_null(strstr(out, "was not registered"));
}

static void test_given_id_and_two_checks(void **state)
{
    (void)state;
    char out[4096], url[128], tcp[64], body[8192];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/health", http_port);
    snprintf(tcp, sizeof(tcp), "127.0.0.1:%d", http_port);
    const char *reg[] = {"register", "-c",          conf_path, "--name",
                         "web",      "--id",        "web-7",   "--http-check",
                         url,        "--tcp-check", tcp,       "--interval",
                         "2s",       "--timeout",   "1s",      "--deregister-after",
                         "1m",       NULL};
    assert_int_equal(run(out, sizeof(out), reg), 0);
    assert_non_null(strstr(out, "web-7"));
    assert_int_equal(
        http_request(consul_fx.emu_port, "GET", "/v1/agent/checks", NULL, body, sizeof(body)), 200);
    assert_non_null(strstr(body, "\"service:web-7:1\""));
    assert_non_null(strstr(body, "\"service:web-7:2\""));
    assert_int_equal(agent_status("web-7", body, sizeof(body)), 200);
    /* registering the same id again updates it in place */
    assert_int_equal(run(out, sizeof(out), reg), 0);
    const char *dereg[] = {"deregister", "-c", conf_path, "--id", "web-7", NULL};
    assert_int_equal(run(out, sizeof(out), dereg), 0);
}

/* The agent refuses the check: exit 1 with the agent's words, and nothing stays registered. */
static void test_rejected_check(void **state)
{
    (void)state;
    char out[4096], url[128], body[4096];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/health", http_port);
    /* the CLI itself refuses --interval 0 now, so the agent's refusal is a fault */
    consul_emu_send("POST", "/_emu/faults",
                    "{\"kind\":\"error\",\"path\":\"/v1/agent/service/register\",\"status\":400,"
                    "\"body\":\"Invalid check: Interval must be > 0\",\"count\":1}");
    const char *reg[] = {"register", "-c",      conf_path,      "--name", "api",
                         "--id",     "api-bad", "--http-check", url,      NULL};
    assert_int_equal(run(out, sizeof(out), reg), 1);
    assert_non_null(strstr(out, "Invalid check: Interval must be > 0"));
    assert_int_equal(agent_status("api-bad", body, sizeof(body)), 404);
}

/* The service is accepted but the confirmation fails: the registration is rolled back. */
static void test_rollback_when_second_step_fails(void **state)
{
    (void)state;
    char out[4096], url[128], body[1 << 16];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/health", http_port);
    consul_emu_send("POST", "/_emu/faults",
                    "{\"kind\":\"error\",\"path\":\"/v1/agent/checks\",\"status\":500,"
                    "\"body\":\"rpc error: agent busy\",\"count\":1}");
    const char *reg[] = {"register", "-c",       conf_path,      "--name", "api",
                         "--id",     "api-half", "--http-check", url,      NULL};
    assert_int_equal(run(out, sizeof(out), reg), 2); /* a 500 is temporary */
    assert_non_null(strstr(out, "rpc error: agent busy"));
    assert_non_null(strstr(out, "rolled back"));
    assert_int_equal(agent_status("api-half", body, sizeof(body)), 404);
    assert_int_equal(http_request(consul_fx.emu_port, "GET",
                                  "/_emu/requests?path=/v1/agent/service/", NULL, body,
                                  sizeof(body)),
                     200);
    assert_non_null(strstr(body, "/v1/agent/service/register"));
    assert_non_null(strstr(body, "/v1/agent/service/deregister/api-half"));
}

static void test_unreachable(void **state)
{
    (void)state;
    char out[4096], path[512];
    snprintf(path, sizeof(path), "%s/cli-dead-%d.ini", harness_tmpdir(), getpid());
    write_conf(path, harness_free_port(), "");
    const char *reg[] = {"register", "-c", path, "--name", "api", NULL};
    assert_int_equal(run(out, sizeof(out), reg), 2);
    assert_non_null(strstr(out, "cannot reach Consul"));
    const char *dereg[] = {"deregister", "-c", path, "--id", "x", NULL};
    assert_int_equal(run(out, sizeof(out), dereg), 2);
    unlink(path);
}

static const char *const proxy_vars[] = {"http_proxy",  "HTTP_PROXY", "https_proxy",
                                         "HTTPS_PROXY", "ALL_PROXY",  "all_proxy"};

/* A listening socket on 127.0.0.1 standing for a proxy; *port gets its port. */
static int fake_proxy(int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 64), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* Connections the fake proxy received (accepted and closed here). */
static int proxy_connections(int fd)
{
    int n = 0, c;
    while ((c = accept(fd, NULL, NULL)) >= 0) {
        close(c);
        n++;
    }
    return n;
}

/* Teardown: no proxy variable outlives its test, even a failed one, nor its sluice. */
static int proxy_teardown(void **state)
{
    for (size_t i = 0; i < sizeof(proxy_vars) / sizeof(proxy_vars[0]); i++)
        unsetenv(proxy_vars[i]);
    return consul_fixture_kill_sluice(state);
}

/* Proxies named by the environment are never used, by the CLI or by the daemon's discovery
 * (issue 12, defect 1): the fake proxy sees nothing and the agent gets every request. */
static void test_environment_proxy_ignored(void **state)
{
    (void)state;
    char out[4096], body[4096], proxy[64], port[16];
    int proxy_port, pfd = fake_proxy(&proxy_port);
    snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%d", proxy_port);
    for (size_t i = 0; i < sizeof(proxy_vars) / sizeof(proxy_vars[0]); i++)
        setenv(proxy_vars[i], proxy, 1);
    snprintf(port, sizeof(port), "%d", http_port);
    const char *reg[] = {"register", "-c",        conf_path,   "--name", "api", "--id",
                         "api-px",   "--address", "127.0.0.1", "--port", port,  NULL};
    assert_int_equal(run(out, sizeof(out), reg), 0);
    assert_int_equal(agent_status("api-px", body, sizeof(body)), 200);
    size_t from = 0;
    consul_sluice_start(consul_fx.emu_port, "", "token = sekrit-token\n", "");
    consul_wait_published(&from, 1, NULL); /* discovery read the agent's answer */
    assert_int_equal(proxy_connections(pfd), 0);
    close(pfd);
}

/* Without -c the CONSUL_* variables are used; with -c the file wins over them. */
static void test_environment(void **state)
{
    (void)state;
    char out[4096], addr[64], path[512];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", consul_fx.emu_port);
    setenv("CONSUL_HTTP_ADDR", addr, 1);
    const char *reg[] = {"register", "--name", "envsvc", "--id", "envsvc-1", NULL};
    assert_int_equal(run(out, sizeof(out), reg), 0);
    char body[4096];
    assert_int_equal(agent_status("envsvc-1", body, sizeof(body)), 200);
    snprintf(path, sizeof(path), "%s/cli-dead2-%d.ini", harness_tmpdir(), getpid());
    write_conf(path, harness_free_port(), "");
    const char *dereg[] = {"deregister", "-c", path, "--id", "envsvc-1", NULL};
    assert_int_equal(run(out, sizeof(out), dereg), 2); /* the file's dead address wins */
    unsetenv("CONSUL_HTTP_ADDR");
    unlink(path);
}

/* ACLs: a token without service:write is refused (exit 1) with the permission named; one with
 * it works; the INI token wins over CONSUL_HTTP_TOKEN. */
static void test_acl(void **state)
{
    (void)state;
    struct proc acl_emu = {0};
    const char *args[] = {"--acl-default-policy", "deny", "--acl-master-token", "root", NULL};
    int emu = emulator_start(&acl_emu, args);
    char out[4096], path[512];
    assert_true(emu > 0);
    assert_int_equal(http_request(emu, "PUT", "/_emu/acl/tokens",
                                  "{\"SecretID\":\"writer\",\"Rules\":{\"service_prefix\":{\"\":"
                                  "\"write\"}}}",
                                  NULL, 0),
                     200);
    snprintf(path, sizeof(path), "%s/cli-acl-%d.ini", harness_tmpdir(), getpid());
    write_conf(path, emu, "token = nobody\n");
    setenv("CONSUL_HTTP_TOKEN", "writer", 1);
    const char *reg[] = {"register", "-c", path, "--name", "api", "--id", "api-acl", NULL};
    assert_int_equal(run(out, sizeof(out), reg), 1);
    assert_non_null(strstr(out, "ACL not found"));
    /* an unknown token is named as such, not as a missing permission (issue 12, 9d) */
    assert_non_null(strstr(out, "the ACL token is unknown to Consul"));
    assert_null(strstr(out, "service:write"));
    write_conf(path, emu, "");
    assert_int_equal(run(out, sizeof(out), reg), 0); /* the variable's token now */
    unsetenv("CONSUL_HTTP_TOKEN");
    write_conf(path, emu, "token = anonymous-ish\n");
    assert_int_equal(http_request(emu, "PUT", "/_emu/acl/tokens",
                                  "{\"SecretID\":\"anonymous-ish\",\"Rules\":{\"service_prefix\":"
                                  "{\"\":\"read\"}}}",
                                  NULL, 0),
                     200);
    const char *dereg[] = {"deregister", "-c", path, "--id", "api-acl", NULL};
    assert_int_equal(run(out, sizeof(out), dereg), 1);
    assert_non_null(strstr(out, "service:write"));
    unlink(path);
    assert_int_equal(proc_stop(&acl_emu, SIGTERM), 0);
}

static void test_usage_errors(void **state)
{
    (void)state;
    char out[4096];
    const char *no_name[] = {"register", "-c", conf_path, NULL};
    assert_int_equal(run(out, sizeof(out), no_name), 64);
    const char *no_id[] = {"deregister", "-c", conf_path, NULL};
    assert_int_equal(run(out, sizeof(out), no_id), 64);
    const char *bad_duration[] = {"register", "--name", "a", "--interval", "5 s", NULL};
    assert_int_equal(run(out, sizeof(out), bad_duration), 64);
    assert_non_null(strstr(out, "--interval"));
    const char *bad_port[] = {"register", "--name", "a", "--port", "70000", NULL};
    assert_int_equal(run(out, sizeof(out), bad_port), 64);
    const char *bad_meta[] = {"register", "--name", "a", "--meta", "novalue", NULL};
    assert_int_equal(run(out, sizeof(out), bad_meta), 64);
    const char *bad_conf[] = {"register", "-c", "/nonexistent.ini", "--name", "a", NULL};
    assert_int_equal(run(out, sizeof(out), bad_conf), 64);
    assert_non_null(strstr(out, "/nonexistent.ini:0: file: cannot be read"));
    const char *help[] = {"register", "--help", NULL};
    assert_int_equal(run(out, sizeof(out), help), 0);
    assert_non_null(strstr(out, "Exit status"));
}

/* 429 and 500 are temporary: exit 2, like an agent out of reach (issue 12, 9b); a truncated
 * answer is called incomplete, not unreachable (9e); a 400 is a refusal, exit 1. */
static void test_temporary_failures(void **state)
{
    (void)state;
    char out[4096];
    const char *reg[] = {"register", "-c", conf_path, "--name", "busy", "--id", "busy-1", NULL};
    consul_emu_send("POST", "/_emu/faults",
                    "{\"kind\":\"rate_limit\",\"path\":\"/v1/agent/\",\"count\":1}");
    assert_int_equal(run(out, sizeof(out), reg), 2);
    assert_non_null(strstr(out, "HTTP 429"));
    consul_emu_send("POST", "/_emu/faults",
                    "{\"kind\":\"no_leader\",\"path\":\"/v1/agent/\",\"count\":1}");
    assert_int_equal(run(out, sizeof(out), reg), 2);
    assert_non_null(strstr(out, "No cluster leader"));
    consul_emu_send("POST", "/_emu/faults",
                    "{\"kind\":\"error\",\"path\":\"/v1/agent/\",\"status\":400,"
                    "\"body\":\"Invalid service\",\"count\":1}");
    assert_int_equal(run(out, sizeof(out), reg), 1);
    consul_emu_send("POST", "/_emu/faults",
                    "{\"kind\":\"truncate\",\"path\":\"/v1/agent/service/busy-1\",\"count\":1}");
    assert_int_equal(run(out, sizeof(out), reg), 2);
    assert_non_null(strstr(out, "incomplete answer from Consul at"));
    assert_null(strstr(out, "cannot reach"));
}

/* Requests offer compressed answers (issue 12, 9f). */
static void test_accept_encoding(void **state)
{
    (void)state;
    char out[4096];
    const char *reg[] = {"register", "-c", conf_path, "--name", "gz", "--id", "gz-1", NULL};
    assert_int_equal(run(out, sizeof(out), reg), 0);
    char *log = consul_emu_get("/_emu/requests?path=/v1/agent/service/register");
    assert_non_null(strcasestr(log, "accept-encoding"));
    assert_non_null(strcasestr(log, "gzip"));
    free(log);
}

/* Calls are bounded by [consul] timeout: 10 s by default, so a 2.5 s agent is waited for, and
 * "timeout = 1s" gives up on it as unreachable (issue 12, defect 9a). */
static void test_call_timeout(void **state)
{
    (void)state;
    char out[4096], path[512];
    const char *slow = "{\"kind\":\"latency\",\"path\":\"/v1/agent/service/register\","
                       "\"ms\":2500,\"count\":1}";
    consul_emu_send("POST", "/_emu/faults", slow);
    const char *reg[] = {"register", "-c", conf_path, "--name", "slow", "--id", "slow-1", NULL};
    assert_int_equal(run(out, sizeof(out), reg), 0);
    snprintf(path, sizeof(path), "%s/cli-timeout-%d.ini", harness_tmpdir(), getpid());
    write_conf(path, consul_fx.emu_port, "timeout = 1s\n");
    consul_emu_send("POST", "/_emu/faults", slow);
    const char *short_reg[] = {"register", "-c", path, "--name", "slow", "--id", "slow-2", NULL};
    assert_int_equal(run(out, sizeof(out), short_reg), 2);
    assert_non_null(strstr(out, "imed out"));
    unlink(path);
}

/* The CLI obeys [registration]'s rules (interval >= 1s, deregister-after 0 or >= 1m) and
 * refuses an --id Consul would not take instead of cutting it (issue 12, defect 8). */
static void test_daemon_rules(void **state)
{
    (void)state;
    char out[4096], body[4096], long_id[300];
    const char *short_interval[] = {"register", "-c",         conf_path, "--name",
                                    "a",        "--interval", "500ms",   NULL};
    assert_int_equal(run(out, sizeof(out), short_interval), 64);
    assert_non_null(strstr(out, "--interval: \"500ms\" is shorter than 1s"));
    const char *short_dereg[] = {"register",           "-c",  conf_path, "--name", "a",
                                 "--deregister-after", "10s", NULL};
    assert_int_equal(run(out, sizeof(out), short_dereg), 64);
    assert_non_null(strstr(out, "Consul's minimum of 1m"));
    const char *never[] = {"register",           "-c", conf_path, "--name", "a", "--id", "a-1",
                           "--deregister-after", "0",  NULL};
    assert_int_equal(run(out, sizeof(out), never), 0);
    memset(long_id, 'x', 256);
    long_id[256] = '\0';
    const char *too_long[] = {"register", "-c", conf_path, "--name", "a", "--id", long_id, NULL};
    assert_int_equal(run(out, sizeof(out), too_long), 64);
    assert_non_null(strstr(out, "--id: is too long (1 to 255 characters)"));
    long_id[255] = '\0'; /* the longest id Consul takes works */
    assert_int_equal(run(out, sizeof(out), too_long), 0);
    assert_int_equal(agent_status(long_id, body, sizeof(body)), 200);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_register_and_deregister, consul_fixture_reset),
        cmocka_unit_test_setup(test_given_id_and_two_checks, consul_fixture_reset),
        cmocka_unit_test_setup(test_rejected_check, consul_fixture_reset),
        cmocka_unit_test_setup(test_rollback_when_second_step_fails, consul_fixture_reset),
        cmocka_unit_test_setup(test_unreachable, consul_fixture_reset),
        cmocka_unit_test_setup(test_environment, consul_fixture_reset),
        cmocka_unit_test_setup_teardown(test_environment_proxy_ignored, consul_fixture_reset,
                                        proxy_teardown),
        cmocka_unit_test_setup(test_acl, consul_fixture_reset),
        cmocka_unit_test_setup(test_usage_errors, consul_fixture_reset),
        cmocka_unit_test_setup(test_daemon_rules, consul_fixture_reset),
        cmocka_unit_test_setup(test_call_timeout, consul_fixture_reset),
        cmocka_unit_test_setup(test_temporary_failures, consul_fixture_reset),
        cmocka_unit_test_setup(test_accept_encoding, consul_fixture_reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
