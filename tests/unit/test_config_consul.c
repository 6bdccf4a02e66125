/* Unit tests for the Consul parts of config: [consul], [registration] (its fleet keys included)
 * and the consul keys of [service:NAME], their defaults, and every FILE:LINE: key: error they can
 * produce. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "config_fixture.h"
#include "config.h"

/* A listener and a static service in 5 lines; appended text starts at line 6. */
#define BASE                                                                                       \
    "[listener:web]\n"                                                                             \
    "bind = 127.0.0.1:8080\n"                                                                      \
    "service = api\n"                                                                              \
    "[service:api]\n"                                                                              \
    "backends = 127.0.0.1:9001\n"

static void test_consul_section(void **state)
{
    (void)state;
    struct config *cfg = load_ok(BASE "[consul]\n"                            /* 6 */
                                      "address = https://consul.local:8501\n" /* 7 */
                                      "token = 1234-abcd\n"                   /* 8 */
                                      "datacenter = dc2\n"                    /* 9 */
                                      "ca_file = /etc/hostname\n"             /* 10 */
                                      "ca_path = /etc\n"                      /* 11 */
                                      "cert_file = /etc/hostname\n"           /* 12 */
                                      "key_file = /etc/hostname\n"            /* 13 */
                                      "tls_server_name = consul.dc2\n"        /* 14 */
                                      "tls_skip_verify = true\n"              /* 15 */
                                      "wait = 30s\n"                          /* 16 */
                                      "stale = yes\n"                         /* 17 */
                                      "retry_min = 100ms\n"                   /* 18 */
                                      "retry_max = 10s\n"                     /* 19 */
                                      "max_stale = 5s\n"                      /* 20 */
                                      "min_query_interval = 250ms\n");        /* 21 */
    const struct consul_conf *c = &cfg->consul;

    assert_int_equal(c->line, 6);
    assert_string_equal(c->address, "https://consul.local:8501");
    assert_string_equal(c->token, "1234-abcd");
    assert_null(c->token_file);
    assert_string_equal(c->datacenter, "dc2");
    assert_string_equal(c->ca_file, "/etc/hostname");
    assert_string_equal(c->ca_path, "/etc");
    assert_string_equal(c->cert_file, "/etc/hostname");
    assert_string_equal(c->key_file, "/etc/hostname");
    assert_string_equal(c->tls_server_name, "consul.dc2");
    assert_int_equal(c->tls_skip_verify, INI_FLAG_ON);
    assert_int_equal(c->wait_ms, 30000);
    assert_int_equal(c->stale, 1);
    assert_int_equal(c->retry_min_ms, 100);
    assert_int_equal(c->retry_max_ms, 10000);
    assert_int_equal(c->max_stale_ms, 5000);
    assert_int_equal(c->min_query_interval_ms, 250);
    config_destroy(cfg);
}

/* Without [consul] every string is NULL, so the environment decides; numbers have defaults. */
static void test_consul_defaults(void **state)
{
    (void)state;
    struct config *cfg = load_ok(BASE);
    const struct consul_conf *c = &cfg->consul;

    assert_int_equal(c->line, 0);
    assert_null(c->address);
    assert_null(c->token);
    assert_null(c->token_file);
    assert_null(c->datacenter);
    assert_null(c->ca_file);
    assert_null(c->tls_server_name);
    assert_int_equal(c->tls_skip_verify, INI_FLAG_UNSET);
    assert_int_equal(c->wait_ms, 55000);
    assert_int_equal(c->stale, 0);
    assert_int_equal(c->retry_min_ms, 250);
    assert_int_equal(c->retry_max_ms, 60000);
    assert_int_equal(c->max_stale_ms, 0);
    assert_int_equal(c->min_query_interval_ms, 1000);
    assert_int_equal(cfg->registration.line, 0);
    assert_int_equal(cfg->services[0].consul.health, CONSUL_HEALTH_MODE_PASSING_AND_WARNING);
    config_destroy(cfg);
}

static void test_consul_errors(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "[consul]\naddress = ftp://x:1\n", {7, "address", "unknown scheme"});
    EXPECT_ERRORS(BASE "[consul]\naddress = 127.0.0.1:99999\n",
                  {7, "address", "port must be between 1 and 65535"});
    EXPECT_ERRORS(BASE "[consul]\naddress = unix://relative.sock\n",
                  {7, "address", "absolute socket path"});
    EXPECT_ERRORS(BASE "[consul]\naddress = http://host/path\n", {7, "address", "HOST:PORT"});
    EXPECT_ERRORS(BASE "[consul]\ntoken = a\ntoken_file = /etc/hostname\n",
                  {8, "token_file", "token is already set (line 7)"});
    EXPECT_ERRORS(BASE "[consul]\ntoken_file = /nonexistent/token\n",
                  {7, "token_file", "cannot be read: No such file or directory"});
    EXPECT_ERRORS(BASE "[consul]\nca_path = /etc/hostname\n", {7, "ca_path", "not a directory"});
    EXPECT_ERRORS(BASE "[consul]\nca_file = /etc\n", {7, "ca_file", "is a directory"});
    EXPECT_ERRORS(BASE "[consul]\ncert_file = /etc/hostname\n",
                  {7, "cert_file", "needs key_file as well"});
    EXPECT_ERRORS(BASE "[consul]\ntls_skip_verify = maybe\n",
                  {7, "tls_skip_verify", "\"maybe\" is not a boolean"});
    EXPECT_ERRORS(BASE "[consul]\nstale = 2\n", {7, "stale", "is not a boolean"});
    EXPECT_ERRORS(BASE "[consul]\nwait = 500ms\n", {7, "wait", "too short"});
    EXPECT_ERRORS(BASE "[consul]\nwait = 11m\n", {7, "wait", "too long"});
    EXPECT_ERRORS(BASE "[consul]\nwait = 5\n", {7, "wait", "needs a unit"});
    EXPECT_ERRORS(BASE "[consul]\nretry_min = 5s\nretry_max = 1s\n",
                  {8, "retry_max", "shorter than retry_min"});
    EXPECT_ERRORS(BASE "[consul]\nretry_min = 2m\n", {7, "retry_min", "longer than retry_max"});
    EXPECT_ERRORS(BASE "[consul]\nmax_stale = 5s\n",
                  {7, "max_stale", "only applies to stale reads: set stale = true as well"});
    EXPECT_ERRORS(BASE "[consul]\nstale = true\nmax_stale = 0s\n", {8, "max_stale", "too short"});
    EXPECT_ERRORS(BASE "[consul]\nmin_query_interval = 2m\n",
                  {7, "min_query_interval", "too long (at most 60000ms)"});
    EXPECT_ERRORS(BASE "[consul]\nmin_query_interval = 1\n",
                  {7, "min_query_interval", "needs a unit"});
    EXPECT_ERRORS(BASE "[consul]\ntoken = a\x01z\n", {7, "token", "control character"});
    EXPECT_ERRORS(BASE "[consul]\nwait = 5s\n[consul]\n", {8, "[consul]", "is defined twice"});
    EXPECT_ERRORS(BASE "[consul]\nbalance = weighted\n",
                  {7, "balance", "does not belong in [consul] (it goes in [service:NAME])"});
    EXPECT_ERRORS(BASE "[consul]\nbogus = 1\n", {7, "bogus", "is not a known key in [consul]"});
    EXPECT_ERRORS(BASE "[service:c]\ndiscovery = consul\nwait = 5s\n",
                  {8, "wait", "does not belong in [service:c] (it goes in [consul])"});
}

static void test_consul_service_keys(void **state)
{
    (void)state;
    struct config *cfg = load_ok(BASE "[service:web]\n"
                                      "discovery = consul\n"
                                      "balance = weighted\n"
                                      "consul_service = web-v2\n"
                                      "consul_tags = v2, canary ,blue\n"
                                      "consul_datacenter = dc3\n"
                                      "health = passing\n"
                                      "[service:plain]\n"
                                      "discovery = consul\n");
    const struct config_service *s = &cfg->services[1];

    assert_string_equal(s->consul.service, "web-v2");
    assert_int_equal(s->consul.tags.n, 3);
    assert_string_equal(s->consul.tags.items[0], "v2");
    assert_string_equal(s->consul.tags.items[1], "canary");
    assert_string_equal(s->consul.tags.items[2], "blue");
    assert_string_equal(s->consul.datacenter, "dc3");
    assert_int_equal(s->consul.health, CONSUL_HEALTH_MODE_PASSING);
    assert_string_equal(consul_health_mode_name(s->consul.health), "passing");
    s = &cfg->services[2];
    assert_string_equal(s->consul.service, "plain"); /* defaults to the section's NAME */
    assert_int_equal(s->consul.tags.n, 0);
    assert_string_equal(s->consul.datacenter, "");
    assert_int_equal(s->consul.health, CONSUL_HEALTH_MODE_PASSING_AND_WARNING);
    assert_string_equal(consul_health_mode_name(s->consul.health), "passing_and_warning");
    config_destroy(cfg);
}

static void test_consul_service_errors(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "consul_service = x\nhealth = passing\n",
                  {6, "consul_service", "only applies to discovery = consul"},
                  {7, "health", "only applies to discovery = consul"});
    EXPECT_ERRORS(BASE "consul_tags = a\nconsul_datacenter = dc1\n",
                  {6, "consul_tags", "only applies to discovery = consul"},
                  {7, "consul_datacenter", "only applies to discovery = consul"});
    EXPECT_ERRORS(BASE "[service:c]\ndiscovery = consul\nhealth = warning\n",
                  {8, "health",
                   "\"warning\" is not a health mode (use passing, "
                   "passing_and_warning)"});
    EXPECT_ERRORS(BASE "[service:c]\ndiscovery = consul\nconsul_tags = a,,b\n",
                  {8, "consul_tags", "entry 2 is empty"});
    EXPECT_ERRORS(BASE "[service:c]\ndiscovery = consul\nconsul_tags = a, b, a\n",
                  {8, "consul_tags", "\"a\" is listed twice"});
    EXPECT_ERRORS(BASE "[service:c]\ndiscovery = consul\nconsul_service = a b\n",
                  {8, "consul_service", "is not a service name"});
    EXPECT_ERRORS(BASE "[service:c]\ndiscovery = consul\nconsul_datacenter = d/c\n",
                  {8, "consul_datacenter", "is not valid"});
}

/* Tags whose query would not fit the query buffer are refused by -t, with FILE:LINE, instead of
 * failing every query at run time (issue 12, defect 8); tags that fit pass. */
static void test_consul_tags_too_long(void **state)
{
    (void)state;
    char text[8192], tags[6000];
    size_t used = 0;
    for (int i = 0; i < 10; i++) {
        used += (size_t)snprintf(tags + used, sizeof(tags) - used, "%s%d", i ? "," : "", i);
        memset(tags + used, 'a', 440);
        used += 440;
        tags[used] = '\0';
    }
    snprintf(text, sizeof(text), BASE "[service:c]\ndiscovery = consul\nconsul_tags = %s\n", tags);
    EXPECT_ERRORS(text, {8, "consul_tags", "makes a Consul query longer than 4096 bytes"});
    tags[441 * 5 - 1] = '\0'; /* five of them fit */
    snprintf(text, sizeof(text), BASE "[service:c]\ndiscovery = consul\nconsul_tags = %s\n", tags);
    config_destroy(load_ok(text));
}

static void test_registration_section(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[listener:web]\nbind = 0.0.0.0:8080\nservice = api\n"
                                 "[listener:admin]\nbind = 127.0.0.1:8081\nservice = api\n"
                                 "[service:api]\ndiscovery = consul\n"
                                 "[registration]\n"                  /* 9 */
                                 "name = edge\n"                     /* 10 */
                                 "tags = v1, blue\n"                 /* 11 */
                                 "meta = version=1.0.0, team=core\n" /* 12 */
                                 "address = 10.0.0.5\n"              /* 13 */
                                 "listeners = web\n"                 /* 14 */
                                 "check_interval = 2s\n"             /* 15 */
                                 "check_timeout = 500ms\n"           /* 16 */
                                 "deregister_critical_after = 5m\n"  /* 17 */
                                 "anti_entropy = 1s\n");             /* 18 */
    const struct registration_conf *r = &cfg->registration;

    assert_int_equal(r->line, 9);
    assert_string_equal(r->name, "edge");
    assert_int_equal(r->tags.n, 2);
    assert_string_equal(r->tags.items[1], "blue");
    assert_int_equal(r->meta.n, 2);
    assert_string_equal(r->meta.items[0], "version=1.0.0");
    assert_string_equal(r->address, "10.0.0.5");
    assert_int_equal(r->listeners.n, 1);
    assert_string_equal(r->listeners.items[0], "web");
    assert_int_equal(r->check_interval_ms, 2000);
    assert_int_equal(r->check_timeout_ms, 500);
    assert_int_equal(r->deregister_after_ms, 300000);
    assert_int_equal(r->anti_entropy_ms, 1000);
    config_destroy(cfg);

    cfg = load_ok(BASE "[registration]\n");
    r = &cfg->registration;
    assert_int_equal(r->line, 6);
    assert_string_equal(r->name, "");
    assert_string_equal(r->address, "");
    assert_int_equal(r->check_interval_ms, 10000);
    assert_int_equal(r->check_timeout_ms, 5000);
    assert_int_equal(r->deregister_after_ms, 60000);
    assert_int_equal(r->anti_entropy_ms, 30000);
    config_destroy(cfg);
}

static void test_registration_errors(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "[registration]\nlisteners = web, nope\n",
                  {7, "listeners", "there is no [listener:nope] in this file"});
    EXPECT_ERRORS("[listener:web]\nbind = 0.0.0.0:8080\nservice = api\n[service:api]\n"
                  "backends = 127.0.0.1:1\n[registration]\n",
                  {6, "[registration]", "[listener:web] binds 0.0.0.0:8080: set address"});
    EXPECT_ERRORS(BASE "[registration]\naddress = 0.0.0.0\n",
                  {7, "address", "cannot be reached by anyone"});
    EXPECT_ERRORS(BASE "[registration]\naddress = host.local\n",
                  {7, "address", "is not an IP address"});
    EXPECT_ERRORS(BASE "[registration]\nderegister_critical_after = 30s\n",
                  {7, "deregister_critical_after", "shorter than Consul's minimum of 1m"});
    EXPECT_ERRORS(BASE "[registration]\nmeta = version\n", {7, "meta", "is not KEY=VALUE"});
    EXPECT_ERRORS(BASE "[registration]\nmeta = consul-x=1\n", {7, "meta", "reserved key prefix"});
    EXPECT_ERRORS(BASE "[registration]\nmeta = a.b=1\n", {7, "meta", "has a key with characters"});
    EXPECT_ERRORS(BASE "[registration]\ncheck_interval = 100ms\n",
                  {7, "check_interval", "too short"});
    EXPECT_ERRORS(BASE "[registration]\nanti_entropy = 0\n", {7, "anti_entropy", "too short"});
    EXPECT_ERRORS(BASE "[registration]\nname = a:b\n", {7, "name", "is not a service name"});
    EXPECT_ERRORS(BASE "[registrations]\n", {6, "[registrations]", "is not a known section"});
    /* 0 turns the reaper off and is allowed */
    struct config *cfg = load_ok(BASE "[registration]\nderegister_critical_after = 0\n");
    assert_int_equal(cfg->registration.deregister_after_ms, 0);
    config_destroy(cfg);
}

/* An admin server on loopback in 2 lines, for the fleet keys (its /healthz is their check). */
#define ADMIN                                                                                      \
    "[admin]\n"                                                                                    \
    "bind = 127.0.0.1:9090\n"

static void test_registration_fleet(void **state)
{
    (void)state;
    struct config *cfg = load_ok(BASE ADMIN "[registration]\n"    /* 8 */
                                            "fleet = edge\n"      /* 9 */
                                            "fleet_id = edge-a\n" /* 10 */
                                            "fleet_address = 10.0.0.5\n"
                                            "fleet_port = 443\n"
                                            "fleet_tags = l4, blue\n");
    const struct registration_conf *r = &cfg->registration;

    assert_int_equal(r->line, 8);
    assert_string_equal(r->fleet, "edge");
    assert_string_equal(r->fleet_id, "edge-a");
    assert_string_equal(r->fleet_address, "10.0.0.5");
    assert_int_equal(r->fleet_port, 443);
    assert_int_equal(r->fleet_tags.n, 2);
    assert_string_equal(r->fleet_tags.items[0], "l4");
    assert_string_equal(r->fleet_tags.items[1], "blue");
    assert_int_equal(r->tags.n, 0);                    /* fleet_tags are the fleet's own */
    assert_false(registration_conf_chooses(r, "web")); /* fleet alone: no listener registered */
    config_destroy(cfg);

    /* defaults: every fleet key but fleet is left to the registrar */
    cfg = load_ok(BASE ADMIN "[registration]\nfleet = edge\n");
    r = &cfg->registration;
    assert_string_equal(r->fleet_id, "");
    assert_string_equal(r->fleet_address, "");
    assert_int_equal(r->fleet_port, 0);
    assert_int_equal(r->fleet_tags.n, 0);
    assert_int_equal(r->check_interval_ms, 10000);
    config_destroy(cfg);

    /* with listeners = ..., the fleet and the named listeners are registered */
    cfg = load_ok("[listener:web]\nbind = 127.0.0.1:8080\nservice = api\n"
                  "[listener:db]\nbind = 127.0.0.1:8081\nservice = api\n"
                  "[service:api]\nbackends = 127.0.0.1:9001\n" ADMIN
                  "[registration]\nfleet = edge\nlisteners = db\n");
    assert_false(registration_conf_chooses(&cfg->registration, "web"));
    assert_true(registration_conf_chooses(&cfg->registration, "db"));
    config_destroy(cfg);

    /* without fleet nothing changed: every listener, no [admin] needed */
    cfg = load_ok(BASE "[registration]\n");
    assert_string_equal(cfg->registration.fleet, "");
    assert_true(registration_conf_chooses(&cfg->registration, "web"));
    config_destroy(cfg);
}

static void test_registration_fleet_errors(void **state)
{
    (void)state;
    struct ini_errors errs = {0};
    struct config *cfg = NULL;
    char want[512];

    /* the exact line sluice -t prints */
    assert_int_equal(load_text(BASE "[registration]\nfleet = edge\n", &cfg, &errs), -EINVAL);
    assert_null(cfg);
    assert_int_equal(errs.n, 1);
    snprintf(want, sizeof(want),
             "%s:7: fleet: needs an [admin] section: its /healthz is the fleet's health check",
             load_text_path());
    assert_string_equal(errs.lines[0], want);
    ini_errors_clear(&errs);

    EXPECT_ERRORS(BASE "[registration]\ntags = a\nfleet = edge\nfleet_tags = b\n",
                  {8, "fleet", "needs an [admin] section"});
    EXPECT_ERRORS(BASE "[registration]\nfleet_id = x\nfleet_address = 10.0.0.1\n"
                       "fleet_port = 80\nfleet_tags = a\n",
                  {7, "fleet_id", "only applies with fleet = NAME"},
                  {8, "fleet_address", "only applies with fleet = NAME"},
                  {9, "fleet_port", "only applies with fleet = NAME"},
                  {10, "fleet_tags", "only applies with fleet = NAME"});
    EXPECT_ERRORS(BASE ADMIN "[registration]\nfleet = a:b\n",
                  {9, "fleet", "\"a:b\" is not a service name"});
    EXPECT_ERRORS(BASE ADMIN "[registration]\nfleet = edge\nfleet_id = a/b\n",
                  {10, "fleet_id", "\"a/b\" is not valid"});
    EXPECT_ERRORS(BASE ADMIN "[registration]\nfleet = edge\nfleet_address = 0.0.0.0\n",
                  {10, "fleet_address", "cannot be reached by anyone"});
    EXPECT_ERRORS(BASE ADMIN "[registration]\nfleet = edge\nfleet_address = edge.local\n",
                  {10, "fleet_address", "is not an IP address"});
    EXPECT_ERRORS(BASE ADMIN "[registration]\nfleet = edge\nfleet_port = 0\n",
                  {10, "fleet_port", "\"0\" is out of range (1..65535)"});
    EXPECT_ERRORS(BASE ADMIN "[registration]\nfleet = edge\nfleet_port = 65536\n",
                  {10, "fleet_port", "is out of range"});
    EXPECT_ERRORS(BASE ADMIN "[registration]\nfleet = edge\nfleet_tags = a, a\n",
                  {10, "fleet_tags", "\"a\" is listed twice"});
}

/* register / deregister only need [consul]: a file without listeners is fine for them. */
static void test_load_consul_only(void **state)
{
    struct ini_errors errs = {0};
    struct config *cfg = NULL;
    (void)state;

    assert_int_equal(
        load_text_with(config_load_consul, "[consul]\naddress = 127.0.0.1:8600\n", &cfg, &errs), 0);
    assert_string_equal(cfg->consul.address, "127.0.0.1:8600");
    config_destroy(cfg);
    assert_int_equal(load_text("[consul]\naddress = 127.0.0.1:8600\n", &cfg, &errs), -EINVAL);
    assert_int_equal(errs.n, 1);
    assert_true(strstr(errs.lines[0], "defines no listener") != NULL);
    ini_errors_clear(&errs);
    assert_int_equal(load_text_with(config_load_consul, "[consul]\nwait = 1ms\n", &cfg, &errs),
                     -EINVAL);
    assert_int_equal(errs.n, 1);
    ini_errors_clear(&errs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_consul_section),
        cmocka_unit_test(test_consul_defaults),
        cmocka_unit_test(test_consul_errors),
        cmocka_unit_test(test_consul_service_keys),
        cmocka_unit_test(test_consul_service_errors),
        cmocka_unit_test(test_consul_tags_too_long),
        cmocka_unit_test(test_registration_section),
        cmocka_unit_test(test_registration_errors),
        cmocka_unit_test(test_registration_fleet),
        cmocka_unit_test(test_registration_fleet_errors),
        cmocka_unit_test(test_load_consul_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
