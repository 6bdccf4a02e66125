/* Unit tests for the discovery rules (index, token bucket, backoff, timeouts) as pure functions,
 * the query path builder, the client's INI-over-environment resolution, and the registration
 * body. No clock, no network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "consul.h"
#include "discovery.h"
#include "registrar.h"

static void test_index_rules(void **state)
{
    static const struct {
        uint64_t sent, received, want;
    } rows[] = {
        {0, 5, 5}, /* first answer */
        {5, 5, 5}, /* wait expired, nothing changed */
        {5, 9, 9}, /* change */
        {9, 3, 0}, /* backwards: full resync */
        {0, 0, 1}, /* a 0 index would make every query return at once */
        {7, 0, 0}, /* backwards to 0: resync first; the next answer lifts it to >= 1 */
        {0, 1, 1}, {UINT64_MAX - 1, UINT64_MAX, UINT64_MAX},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        assert_int_equal(discovery_index_next(rows[i].sent, rows[i].received), rows[i].want);
    }
}

static void test_bucket_burst_then_rate(void **state)
{
    struct discovery_bucket b = {0};
    (void)state;

    assert_int_equal(discovery_bucket_take(&b, 1000, 1000, 2), 0);
    assert_int_equal(discovery_bucket_take(&b, 1000, 1000, 2), 0); /* burst of 2 */
    assert_int_equal(discovery_bucket_take(&b, 1000, 1000, 2), 1000);
    assert_int_equal(discovery_bucket_take(&b, 1400, 1000, 2), 600); /* nothing taken */
    assert_int_equal(discovery_bucket_take(&b, 2000, 1000, 2), 0);
    assert_int_equal(discovery_bucket_take(&b, 2000, 1000, 2), 1000);
    /* a long quiet spell refills to the burst, not beyond */
    assert_int_equal(discovery_bucket_take(&b, 900000, 1000, 2), 0);
    assert_int_equal(discovery_bucket_take(&b, 900000, 1000, 2), 0);
    assert_int_equal(discovery_bucket_take(&b, 900000, 1000, 2), 1000);
}

/* Churn: a watch that would restart every millisecond gets at most burst + seconds queries. */
static void test_bucket_caps_churn(void **state)
{
    struct discovery_bucket b = {0};
    unsigned taken = 0;
    (void)state;

    for (uint64_t now = 0; now < 10000; now++) {
        taken += discovery_bucket_take(&b, now, 1000, 2) == 0;
    }
    assert_true(taken >= 10 && taken <= 12);
}

static void test_backoff(void **state)
{
    (void)state;
    assert_int_equal(backoff_ms(0, 250, 60000, 12345), 0); /* success resets */
    for (uint64_t r = 0; r < 2000; r += 7) {
        uint64_t d1 = backoff_ms(1, 250, 60000, r);
        uint64_t d3 = backoff_ms(3, 250, 60000, r);
        uint64_t big = backoff_ms(40, 250, 60000, r);
        assert_true(d1 >= 125 && d1 <= 250);
        assert_true(d3 >= 500 && d3 <= 1000);
        assert_true(big >= 30000 && big <= 60000); /* capped */
    }
    /* jitter covers the whole range: both ends are reachable */
    assert_int_equal(backoff_ms(2, 250, 60000, 0), 250);
    assert_int_equal(backoff_ms(2, 250, 60000, 250), 500);
    /* no overflow for absurd failure counts or extreme randomness */
    assert_true(backoff_ms(4000000000u, 250, 60000, UINT64_MAX) <= 60000);
    assert_true(backoff_ms(70, 1, UINT64_MAX / 2, UINT64_MAX) <= UINT64_MAX / 2);
    /* the cap applies even when it is below the minimum */
    assert_true(backoff_ms(1, 5000, 1000, 3) <= 1000);
}

static void test_timeouts(void **state)
{
    (void)state;
    assert_int_equal(discovery_http_timeout_ms(55000), 55000 + 3437 + DISCOVERY_SLACK_MS);
    assert_int_equal(discovery_http_timeout_ms(0), DISCOVERY_SLACK_MS);
    assert_true(discovery_watchdog_ms(55000) > discovery_http_timeout_ms(55000));
    assert_true(discovery_watchdog_ms(1000) < 10000);
}

static void test_escape(void **state)
{
    char out[16];
    (void)state;

    assert_int_equal(consul_escape("api-v1_x.y~z", out, sizeof(out)), 12);
    assert_string_equal(out, "api-v1_x.y~z");
    assert_int_equal(consul_escape("a b/c&", out, sizeof(out)), 12);
    assert_string_equal(out, "a%20b%2Fc%26");
    assert_int_equal(consul_escape("0123456789abcdef", out, sizeof(out)), -ENOSPC);
    assert_int_equal(consul_escape("\xff", out, 3), -ENOSPC);
}

static void test_health_path(void **state)
{
    char path[256], *tags[] = {"v1", "a b"};
    (void)state;

    assert_int_equal(consul_health_path(path, sizeof(path), "api", NULL, NULL, 0, 0, 0, 55000), 0);
    assert_string_equal(path, "/v1/health/service/api");
    assert_int_equal(consul_health_path(path, sizeof(path), "api", "dc2", tags, 2, 1, 42, 55000),
                     0);
    assert_string_equal(
        path, "/v1/health/service/api?dc=dc2&tag=v1&tag=a%20b&stale&index=42&wait=55000ms");
    assert_int_equal(consul_health_path(path, sizeof(path), "api", "", NULL, 0, 0, 7, 1000), 0);
    assert_string_equal(path, "/v1/health/service/api?index=7&wait=1000ms");
    assert_int_equal(consul_health_path(path, 30, "api", "dc2", tags, 2, 1, 42, 55000), -ENOSPC);
}

/* Every CONSUL_* variable the client reads, cleared between cases. */
static void env_clear(void)
{
    static const char *const vars[] = {"CONSUL_HTTP_ADDR",       "CONSUL_HTTP_TOKEN",
                                       "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_SSL",
                                       "CONSUL_HTTP_SSL_VERIFY", "CONSUL_CACERT",
                                       "CONSUL_CAPATH",          "CONSUL_CLIENT_CERT",
                                       "CONSUL_CLIENT_KEY",      "CONSUL_TLS_SERVER_NAME"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        unsetenv(vars[i]);
    }
}

/* Creates a client from cfg and returns its address text in out. */
static int client_address(const struct consul_conf *cfg, char *out, size_t len, int *token)
{
    struct consul_client *c;
    char err[256];
    int rc = consul_client_create(cfg, &c, err, sizeof(err));

    if (rc != 0) {
        snprintf(out, len, "error: %.200s", err);
        return rc;
    }
    snprintf(out, len, "%s", consul_client_address(c));
    if (token != NULL) {
        *token = consul_client_has_token(c);
    }
    consul_client_destroy(c);
    return 0;
}

static void test_client_env_fallbacks(void **state)
{
    struct consul_conf cfg = {0};
    char addr[256];
    int token = -1;
    (void)state;

    env_clear();
    assert_int_equal(client_address(NULL, addr, sizeof(addr), &token), 0);
    assert_string_equal(addr, "http://127.0.0.1:8500");
    assert_int_equal(token, 0);
    setenv("CONSUL_HTTP_ADDR", "10.1.2.3:8600", 1);
    setenv("CONSUL_HTTP_TOKEN", "abc", 1);
    assert_int_equal(client_address(&cfg, addr, sizeof(addr), &token), 0);
    assert_string_equal(addr, "http://10.1.2.3:8600");
    assert_int_equal(token, 1);
    setenv("CONSUL_HTTP_SSL", "true", 1);
    assert_int_equal(client_address(&cfg, addr, sizeof(addr), NULL), 0);
    assert_string_equal(addr, "https://10.1.2.3:8600");
    setenv("CONSUL_HTTP_ADDR", "http://consul.local", 1); /* an explicit scheme wins */
    assert_int_equal(client_address(&cfg, addr, sizeof(addr), NULL), 0);
    assert_string_equal(addr, "http://consul.local:8500");
    setenv("CONSUL_HTTP_ADDR", "unix:///run/consul.sock", 1);
    assert_int_equal(client_address(&cfg, addr, sizeof(addr), NULL), 0);
    assert_string_equal(addr, "unix:///run/consul.sock");
    /* the INI file wins over the environment */
    cfg.address = "https://[::1]:8501";
    assert_int_equal(client_address(&cfg, addr, sizeof(addr), NULL), 0);
    assert_string_equal(addr, "https://[::1]:8501");
    env_clear();
}

static void test_client_token_file(void **state)
{
    struct consul_conf cfg = {0};
    char path[] = "/tmp/sluice_test_token_XXXXXX", addr[256];
    int fd = mkstemp(path), token = 0;
    (void)state;

    env_clear();
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "  secret-token\n", 15), 15);
    close(fd);
    setenv("CONSUL_HTTP_TOKEN_FILE", path, 1);
    assert_int_equal(client_address(&cfg, addr, sizeof(addr), &token), 0);
    assert_int_equal(token, 1);
    setenv("CONSUL_HTTP_TOKEN_FILE", "/nonexistent/token", 1); /* the file wins, even broken */
    setenv("CONSUL_HTTP_TOKEN", "abc", 1);
    assert_true(client_address(&cfg, addr, sizeof(addr), NULL) < 0);
    assert_true(strstr(addr, "/nonexistent/token") != NULL);
    cfg.token = "from-ini"; /* INI wins: the broken variable is not even read */
    assert_int_equal(client_address(&cfg, addr, sizeof(addr), &token), 0);
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    close(fd);
    cfg.token = NULL;
    cfg.token_file = path;
    assert_true(client_address(&cfg, addr, sizeof(addr), NULL) < 0);
    assert_true(strstr(addr, "is empty") != NULL);
    unlink(path);
    env_clear();
}

static void test_registration_body(void **state)
{
    char *tags[] = {"v1", "blue"}, *meta[] = {"version=1.0.0", "team=a=b"};
    struct registrar_spec spec = {.id = "api-1",
                                  .name = "api",
                                  .address = "127.0.0.1",
                                  .port = 9001,
                                  .tags = tags,
                                  .n_tags = 2,
                                  .meta = meta,
                                  .n_meta = 2,
                                  .http_check = "http://127.0.0.1:9001/health",
                                  .tcp_check = "127.0.0.1:9001",
                                  .interval_ms = 5000,
                                  .timeout_ms = 1500,
                                  .deregister_after_ms = 60000};
    char *text = registrar_body(&spec);
    cJSON *root = cJSON_Parse(text);
    (void)state;

    assert_non_null(root);
    assert_string_equal(cJSON_GetObjectItem(root, "ID")->valuestring, "api-1");
    assert_string_equal(cJSON_GetObjectItem(root, "Name")->valuestring, "api");
    assert_string_equal(cJSON_GetObjectItem(root, "Address")->valuestring, "127.0.0.1");
    assert_int_equal(cJSON_GetObjectItem(root, "Port")->valueint, 9001);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(root, "Tags")), 2);
    cJSON *m = cJSON_GetObjectItem(root, "Meta");
    assert_string_equal(cJSON_GetObjectItem(m, "version")->valuestring, "1.0.0");
    assert_string_equal(cJSON_GetObjectItem(m, "team")->valuestring, "a=b");
    cJSON *checks = cJSON_GetObjectItem(root, "Checks");
    assert_int_equal(cJSON_GetArraySize(checks), 2);
    cJSON *http = cJSON_GetArrayItem(checks, 0), *tcp = cJSON_GetArrayItem(checks, 1);
    assert_string_equal(cJSON_GetObjectItem(http, "CheckID")->valuestring, "service:api-1:1");
    assert_string_equal(cJSON_GetObjectItem(http, "HTTP")->valuestring,
                        "http://127.0.0.1:9001/health");
    assert_string_equal(cJSON_GetObjectItem(http, "Interval")->valuestring, "5s");
    assert_string_equal(cJSON_GetObjectItem(http, "Timeout")->valuestring, "1500ms");
    assert_string_equal(cJSON_GetObjectItem(http, "DeregisterCriticalServiceAfter")->valuestring,
                        "60s");
    assert_string_equal(cJSON_GetObjectItem(tcp, "CheckID")->valuestring, "service:api-1:2");
    assert_string_equal(cJSON_GetObjectItem(tcp, "TCP")->valuestring, "127.0.0.1:9001");
    cJSON_Delete(root);
    free(text);

    /* minimal: no address, port, checks or meta */
    struct registrar_spec bare = {.id = "x", .name = "x", .interval_ms = 1000};
    text = registrar_body(&bare);
    root = cJSON_Parse(text);
    assert_null(cJSON_GetObjectItem(root, "Address"));
    assert_null(cJSON_GetObjectItem(root, "Port"));
    assert_null(cJSON_GetObjectItem(root, "Meta"));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(root, "Checks")), 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(root, "Tags")), 0);
    cJSON_Delete(root);
    free(text);
}

static void test_check_ids(void **state)
{
    char id[32];
    (void)state;

    assert_int_equal(registrar_check_id(id, sizeof(id), "api-1", 0, 1), 0);
    assert_string_equal(id, "service:api-1");
    assert_int_equal(registrar_check_id(id, sizeof(id), "api-1", 1, 2), 0);
    assert_string_equal(id, "service:api-1:2");
    assert_int_equal(registrar_check_id(id, 8, "api-1", 0, 1), -ENOSPC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index_rules),       cmocka_unit_test(test_bucket_burst_then_rate),
        cmocka_unit_test(test_bucket_caps_churn), cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_timeouts),          cmocka_unit_test(test_escape),
        cmocka_unit_test(test_health_path),       cmocka_unit_test(test_client_env_fallbacks),
        cmocka_unit_test(test_client_token_file), cmocka_unit_test(test_registration_body),
        cmocka_unit_test(test_check_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
