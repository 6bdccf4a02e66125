/* Unit tests for config: parsing into the struct, defaults, and every FILE:LINE: key: error. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "balancer.h"
#include "clock.h"
#include "config_fixture.h"
#include "config.h"

/* A listener and its service, 5 lines, so a test that appends to it sees only its own error;
 * appended text starts at line 6. */
#define BASE                                                                                       \
    "[listener:web]\n"                                                                             \
    "bind = 127.0.0.1:8080\n"                                                                      \
    "service = api\n"                                                                              \
    "[service:api]\n"                                                                              \
    "backends = 127.0.0.1:9001\n"

static uint16_t addr_port(const struct net_addr *a)
{
    if (a->sa.ss_family == AF_INET6) {
        return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
    }
    return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
}

static void test_good_config_sets_every_field(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[sluice]\n"                    /* 1 */
                                 "workers = 3\n"                 /* 2 */
                                 "max_connections = 500\n"       /* 3 */
                                 "log_level = warn\n"            /* 4 */
                                 "log_format = text\n"           /* 5 */
                                 "shutdown_timeout = 1m\n"       /* 6 */
                                 "splice = always\n"             /* 7 */
                                 "pipe_size = 512k\n"            /* 8 */
                                 "buffer_size = 4096\n"          /* 9 */
                                 "\n"                            /* 10 */
                                 "[listener:web]\n"              /* 11 */
                                 "bind = 127.0.0.1:8080\n"       /* 12 */
                                 "service = api\n"               /* 13 */
                                 "connect_timeout = 250ms\n"     /* 14 */
                                 "idle_timeout = 1h\n"           /* 15 */
                                 "retries = 0\n"                 /* 16 */
                                 "backlog = 128\n"               /* 17 */
                                 "[service:other]\n"             /* 18 */
                                 "backends = 10.0.0.1:1\n"       /* 19 */
                                 "[service:api]\n"               /* 20 */
                                 "balance = least_connections\n" /* 21 */
                                 "discovery = static\n"          /* 22 */
                                 "backends = 127.0.0.1:9001 weight=3, 127.0.0.1:9002, "
                                 "[::1]:9003 weight=0\n"); /* 23 */

    assert_string_equal(cfg->path, load_text_path());
    assert_int_equal(cfg->workers, 3);
    assert_int_equal(cfg->stream.max_connections, 500);
    assert_int_equal(cfg->log_level, LOG_LEVEL_WARN);
    assert_int_equal(cfg->log_format, LOG_FORMAT_TEXT);
    assert_int_equal(cfg->shutdown_timeout_ms, 60000);
    assert_int_equal(cfg->stream.splice, SPLICE_ALWAYS);
    assert_int_equal(cfg->stream.pipe_size, 512 * 1024);
    assert_int_equal(cfg->stream.buffer_size, 4096);

    assert_int_equal(cfg->n_listeners, 1);
    const struct listener_conf *l = &cfg->listeners[0];
    assert_string_equal(l->name, "web");
    assert_int_equal(l->line, 11);
    assert_string_equal(l->bind.text, "127.0.0.1:8080");
    assert_int_equal(l->bind.sa.ss_family, AF_INET);
    assert_int_equal(l->bind.len, sizeof(struct sockaddr_in));
    assert_int_equal(addr_port(&l->bind), 8080);
    assert_string_equal(l->service, "api");
    assert_int_equal(l->service_index, 1);
    assert_int_equal(l->connect_timeout_ms, 250);
    assert_int_equal(l->idle_timeout_ms, 3600000);
    assert_int_equal(l->retries, 0);
    assert_int_equal(l->backlog, 128);

    assert_int_equal(cfg->n_services, 2);
    assert_string_equal(cfg->services[0].name, "other");
    assert_int_equal(cfg->services[0].line, 18);
    assert_ptr_equal(cfg->services[0].lb.balance, &lb_round_robin);
    const struct config_service *s = &cfg->services[1];
    assert_string_equal(s->name, "api");
    assert_int_equal(s->line, 20);
    assert_ptr_equal(s->lb.balance, &lb_least_connections);
    assert_int_equal(s->discovery, CONFIG_DISCOVERY_STATIC);
    assert_int_equal(s->lb.backends.n, 3);
    assert_string_equal(s->lb.backends.items[0].addr.text, "127.0.0.1:9001");
    assert_int_equal(s->lb.backends.items[0].weight, 3);
    assert_string_equal(s->lb.backends.items[1].addr.text, "127.0.0.1:9002");
    assert_int_equal(s->lb.backends.items[1].weight, 1);
    assert_string_equal(s->lb.backends.items[2].addr.text, "[::1]:9003");
    assert_int_equal(s->lb.backends.items[2].addr.sa.ss_family, AF_INET6);
    assert_int_equal(s->lb.backends.items[2].addr.len, sizeof(struct sockaddr_in6));
    assert_int_equal(addr_port(&s->lb.backends.items[2].addr), 9003);
    assert_int_equal(s->lb.backends.items[2].weight, 0);
    config_destroy(cfg);
}

static void test_defaults(void **state)
{
    (void)state;
    struct config *cfg = load_ok(BASE);
    struct cpus_usable cpus;

    cpus_usable(&cpus, 256);
    assert_int_equal(cfg->workers, cpus.count);
    assert_int_equal(cfg->workers_auto.count, cpus.count);
    assert_int_equal(cfg->stream.max_connections, 10000);
    assert_int_equal(cfg->log_level, LOG_LEVEL_INFO);
    assert_int_equal(cfg->log_format, LOG_FORMAT_JSON);
    assert_int_equal(cfg->shutdown_timeout_ms, 30000);
    assert_int_equal(cfg->stream.splice, SPLICE_AUTO);
    assert_int_equal(cfg->stream.pipe_size, 1024 * 1024);
    assert_int_equal(cfg->stream.buffer_size, 16 * 1024);
    assert_int_equal(cfg->listeners[0].connect_timeout_ms, 2000);
    assert_int_equal(cfg->listeners[0].idle_timeout_ms, 300000);
    assert_int_equal(cfg->listeners[0].retries, 2);
    assert_int_equal(cfg->listeners[0].backlog, 4096);
    assert_ptr_equal(cfg->services[0].lb.balance, &lb_round_robin);
    assert_int_equal(cfg->services[0].discovery, CONFIG_DISCOVERY_STATIC);
    assert_int_equal(cfg->services[0].lb.backends.items[0].weight, 1);
    config_destroy(cfg);
}

static void test_workers(void **state)
{
    (void)state;
    struct config *cfg = load_ok(BASE "[sluice]\nworkers = 256\n");
    struct cpus_usable cpus;

    cpus_usable(&cpus, 256);
    assert_int_equal(cfg->workers, 256);
    assert_int_equal(cfg->workers_auto.count, 0); /* a number: nothing counted */
    config_destroy(cfg);
    cfg = load_ok(BASE "[sluice]\nworkers = auto\n");
    assert_int_equal(cfg->workers, cpus.count);
    config_destroy(cfg);
    EXPECT_ERRORS(BASE "[sluice]\nworkers = 0\n", {7, "workers", "\"0\" is out of range (1..256)"});
    EXPECT_ERRORS(BASE "[sluice]\nworkers = 257\n", {7, "workers", "is out of range (1..256)"});
    EXPECT_ERRORS(BASE "[sluice]\nworkers = many\n", {7, "workers", "\"many\" is not a number"});
    EXPECT_ERRORS(BASE "[sluice]\nworkers = -1\n", {7, "workers", "is not a number"});
    EXPECT_ERRORS(BASE "[sluice]\nworkers = 99999999999999999999999\n",
                  {7, "workers", "is out of range"});
}

/* pid_file is off unless set; its line is kept for start-up errors, as the bind key's is. */
static void test_pid_file_and_lines(void **state)
{
    (void)state;
    struct config *cfg = load_ok(BASE);
    assert_null(cfg->pid_file);
    assert_int_equal(cfg->pid_file_line, 0);
    assert_int_equal(cfg->listeners[0].bind_line, 2);
    config_destroy(cfg);
    cfg = load_ok(BASE "[sluice]\nworkers = 1\npid_file = /run/sluice.pid\n");
    assert_string_equal(cfg->pid_file, "/run/sluice.pid");
    assert_int_equal(cfg->pid_file_line, 8);
    config_destroy(cfg);
}

/* user and group: names or numbers; unknown names, group alone, and a uid without an entry
 * (so without a primary group) and without group are FILE:LINE errors. */
static void test_user_and_group(void **state)
{
    (void)state;
    struct config *cfg = load_ok(BASE "[sluice]\nuser = nobody\ngroup = nogroup\n");
    assert_string_equal(cfg->user, "nobody");
    assert_string_equal(cfg->group, "nogroup");
    config_destroy(cfg);
    cfg = load_ok(BASE "[sluice]\nuser = 54321\ngroup = 54321\n");
    assert_string_equal(cfg->user, "54321");
    config_destroy(cfg);
    cfg = load_ok(BASE);
    assert_null(cfg->user);
    assert_null(cfg->group);
    config_destroy(cfg);
    EXPECT_ERRORS(BASE "[sluice]\nuser = no-such-user-x\n",
                  {7, "user", "\"no-such-user-x\" is not a known user"});
    EXPECT_ERRORS(BASE "[sluice]\nuser = nobody\ngroup = no-such-group-x\n",
                  {8, "group", "\"no-such-group-x\" is not a known group"});
    EXPECT_ERRORS(BASE "[sluice]\ngroup = nogroup\n", {7, "group", "only applies with user"});
    EXPECT_ERRORS(BASE "[sluice]\nuser = 54321\n",
                  {7, "user", "uid without a user database entry: set group too"});
}

static void test_number_ranges(void **state)
{
    (void)state;
    struct config *cfg = load_ok(BASE "[sluice]\nmax_connections = 10000000\n"
                                      "[listener:b]\nbind = 127.0.0.1:1\nservice = api\n"
                                      "retries = 100\nbacklog = 65535\n");

    assert_int_equal(cfg->stream.max_connections, 10000000);
    assert_int_equal(cfg->listeners[1].retries, 100);
    assert_int_equal(cfg->listeners[1].backlog, 65535);
    config_destroy(cfg);
    EXPECT_ERRORS(BASE "[sluice]\nmax_connections = 10000001\n",
                  {7, "max_connections", "is out of range (1..10000000)"});
    EXPECT_ERRORS(BASE "[sluice]\nmax_connections = 0\n", {7, "max_connections", "out of range"});
    EXPECT_ERRORS(BASE "[listener:b]\nbind = 127.0.0.1:1\nservice = api\nretries = 101\n",
                  {9, "retries", "\"101\" is out of range (0..100)"});
    EXPECT_ERRORS(BASE "[listener:b]\nbind = 127.0.0.1:1\nservice = api\nbacklog = 0\n",
                  {9, "backlog", "\"0\" is out of range (1..65535)"});
    EXPECT_ERRORS(BASE "[listener:b]\nbind = 127.0.0.1:1\nservice = api\nbacklog = 65536\n",
                  {9, "backlog", "is out of range (1..65535)"});
    EXPECT_ERRORS(BASE "[listener:b]\nbind = 127.0.0.1:1\nservice = api\nbacklog = 1.5\n",
                  {9, "backlog", "\"1.5\" is not a number"});
}

static void test_sizes(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint32_t bytes;
    } good[] = {{"4096", 4096},       {"4k", 4096},        {"4K", 4096},
                {"256k", 256 * 1024}, {"1m", 1024 * 1024}, {"16m", 16 * 1024 * 1024},
                {"16M", 16777216},    {"5000", 5000}};
    static const struct {
        const char *text;
        const char *phrase;
    } bad[] = {{"4095", "is out of range (4k..16m)"},
               {"17m", "is out of range (4k..16m)"},
               {"16385k", "is out of range"},
               {"4x", "is not a size"},
               {"k", "is not a size"},
               {"4kb", "is not a size"},
               {"-4k", "is not a size"},
               {"4 k", "is not a size"},
               {"99999999999999999999999k", "is out of range"}};
    char text[256];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(text, sizeof(text), BASE "[sluice]\npipe_size = %s\n", good[i].text);
        struct config *cfg = load_ok(text);
        assert_int_equal(cfg->stream.pipe_size, good[i].bytes);
        config_destroy(cfg);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), BASE "[sluice]\npipe_size = %s\n", bad[i].text);
        EXPECT_ERRORS(text, {7, "pipe_size", bad[i].phrase});
    }
    EXPECT_ERRORS(BASE "[sluice]\nbuffer_size = 1023\n",
                  {7, "buffer_size", "\"1023\" is out of range (1k..1m)"});
    EXPECT_ERRORS(BASE "[sluice]\nbuffer_size = 2m\n", {7, "buffer_size", "out of range (1k..1m)"});
}

static void test_enums(void **state)
{
    (void)state;
    struct config *cfg = load_ok(BASE "balance = weighted\n[sluice]\nlog_level = debug\n"
                                      "log_format = json\nsplice = off\n");

    assert_ptr_equal(cfg->services[0].lb.balance, &lb_weighted);
    assert_int_equal(cfg->log_level, LOG_LEVEL_DEBUG);
    assert_int_equal(cfg->log_format, LOG_FORMAT_JSON);
    assert_int_equal(cfg->stream.splice, SPLICE_OFF);
    config_destroy(cfg);
    cfg = load_ok(BASE "balance = round_robin\n[sluice]\nlog_level = error\n");
    assert_ptr_equal(cfg->services[0].lb.balance, &lb_round_robin);
    assert_int_equal(cfg->log_level, LOG_LEVEL_ERROR);
    config_destroy(cfg);
    EXPECT_ERRORS(BASE "balance = random\n",
                  {6, "balance",
                   "\"random\" is not a balance method (use round_robin, least_connections, "
                   "weighted, random_two, maglev, source_hash)"});
    EXPECT_ERRORS(
        BASE "discovery = mdns\n",
        {6, "discovery", "\"mdns\" is not a discovery method (use static, consul, dns, file)"});
    EXPECT_ERRORS(BASE "[sluice]\nlog_level = verbose\n",
                  {7, "log_level", "\"verbose\" is not a level (use debug, info, warn, error)"});
    EXPECT_ERRORS(BASE "[sluice]\nlog_level = INFO\n", {7, "log_level", "is not a level"});
    EXPECT_ERRORS(BASE "[sluice]\nlog_format = xml\n",
                  {7, "log_format", "\"xml\" is not a format (use json, text)"});
    EXPECT_ERRORS(BASE "[sluice]\nsplice = sometimes\n",
                  {7, "splice", "\"sometimes\" is not a splice mode (use auto, off, always)"});
}

static void test_duration_table(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t ms;
    } good[] = {{"250ms", 250},
                {"2s", 2000},
                {"5m", 300000},
                {"1h", 3600000},
                {"0", 0},
                {"0s", 0},
                {"0ms", 0},
                {"007s", 7000},
                {"18446744073709551615ms", UINT64_MAX},
                {"5124095576030h", 5124095576030ULL * 3600000ULL}};
    static const char *const bad[] = {"5",
                                      "5x",
                                      "-1s",
                                      "s",
                                      "",
                                      " 5s",
                                      "5s ",
                                      "5 s",
                                      "1.5s",
                                      "5S",
                                      "5sec",
                                      "1h30m",
                                      "+5s",
                                      "ms",
                                      "18446744073709551616ms",
                                      "5124095576031h",
                                      "99999999999999999999999999h"};
    uint64_t ms;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ms = 12345;
        if (ini_parse_duration(good[i].text, &ms) != NULL || ms != good[i].ms) {
            print_message("duration \"%s\": got %llu\n", good[i].text, (unsigned long long)ms);
            fail();
        }
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ms = 12345;
        if (ini_parse_duration(bad[i], &ms) == NULL || ms != 12345) {
            print_message("duration \"%s\" was accepted\n", bad[i]);
            fail();
        }
    }
}

static void test_duration_keys(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[listener:web]\nbind = 127.0.0.1:8080\nservice = api\n"
                                 "idle_timeout = 0\n[service:api]\nbackends = 127.0.0.1:9001\n"
                                 "[sluice]\nshutdown_timeout = 0\n");

    assert_int_equal(cfg->listeners[0].idle_timeout_ms, 0);
    assert_int_equal(cfg->shutdown_timeout_ms, 0);
    config_destroy(cfg);
    EXPECT_ERRORS("[listener:web]\nbind = 127.0.0.1:8080\nservice = api\nidle_timeout = 5x\n"
                  "[service:api]\nbackends = 127.0.0.1:9001\n",
                  {4, "idle_timeout", "\"5x\" is not a duration (use ms, s, m, h)"});
    EXPECT_ERRORS(BASE "[listener:b]\nbind = 127.0.0.1:1\nservice = api\nconnect_timeout = 5\n",
                  {9, "connect_timeout", "\"5\" needs a unit (ms, s, m, h)"});
    EXPECT_ERRORS(BASE "[listener:b]\nbind = 127.0.0.1:1\nservice = api\nconnect_timeout = 0\n",
                  {9, "connect_timeout", "\"0\" is too short"});
    EXPECT_ERRORS(BASE "[sluice]\nshutdown_timeout = 99999999999999999999h\n",
                  {7, "shutdown_timeout", "is too large"});
    EXPECT_ERRORS(BASE "[sluice]\nshutdown_timeout = 5124095576030432h\n",
                  {7, "shutdown_timeout", "is too large"});
    EXPECT_ERRORS(BASE "[sluice]\nshutdown_timeout = -1s\n",
                  {7, "shutdown_timeout", "is not a duration"});
}

static void test_address_table(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *canonical;
        int family;
        uint16_t port;
    } good[] = {
        {"127.0.0.1:80", "127.0.0.1:80", AF_INET, 80},
        {"0.0.0.0:1", "0.0.0.0:1", AF_INET, 1},
        {"10.1.2.3:065535", "10.1.2.3:65535", AF_INET, 65535},
        {"[::1]:9003", "[::1]:9003", AF_INET6, 9003},
        {"[::]:443", "[::]:443", AF_INET6, 443},
        {"[0:0:0:0:0:0:0:1]:80", "[::1]:80", AF_INET6, 80},
        {"[2001:DB8::A]:8080", "[2001:db8::a]:8080", AF_INET6, 8080},
        {"[::ffff:10.0.0.1]:80", "[::ffff:10.0.0.1]:80", AF_INET6, 80},
    };
    static const struct {
        const char *text;
        const char *phrase;
    } bad[] = {
        {"", "address is empty"},
        {"127.0.0.1", "port is missing"},
        {"127.0.0.1:", "port is missing"},
        {"127.0.0.1:0", "port must be between 1 and 65535"},
        {"127.0.0.1:65536", "port must be between 1 and 65535"},
        {"127.0.0.1:99999999999999999999999", "port must be between 1 and 65535"},
        {"127.0.0.1:http", "port is not a number"},
        {"127.0.0.1:-80", "port is not a number"},
        {"127.0.0.1:80x", "port is not a number"},
        {"localhost:80", "host names are not resolved; use an IP address"},
        {"db.example.com:5432", "host names are not resolved; use an IP address"},
        {"[localhost]:80", "host names are not resolved; use an IP address"},
        {"1.2.3:80", "host is not an IPv4 address"},
        {"256.1.1.1:80", "host is not an IPv4 address"},
        {"[1.2.3.4]:80", "host is not an IPv6 address"},
        {"[::1]", "port is missing"},
        {"[::1]:", "port is missing"},
        {"[::1]80", "expected \":PORT\" after \"]\""},
        {"[::1:80", "\"]\" is missing"},
        {"::1:80", "IPv6 addresses need brackets"},
        {":80", "host is missing"},
        {"[]:80", "host is missing"},
    };
    struct net_addr addr;
    const char *err;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        err = "unset";
        err = net_addr_parse(good[i].text, &addr);
        assert_null(err);
        assert_string_equal(addr.text, good[i].canonical);
        assert_int_equal(addr.sa.ss_family, good[i].family);
        assert_int_equal(addr.len, good[i].family == AF_INET ? sizeof(struct sockaddr_in)
                                                             : sizeof(struct sockaddr_in6));
        assert_int_equal(addr_port(&addr), good[i].port);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        err = net_addr_parse(bad[i].text, &addr);
        if (err == NULL || strstr(err, bad[i].phrase) == NULL) {
            print_message("address \"%s\": got \"%s\", want \"%s\"\n", bad[i].text,
                          err != NULL ? err : "(accepted)", bad[i].phrase);
            fail();
        }
    }
    assert_non_null(net_addr_parse("nope", &addr));
    assert_non_null(net_addr_parse(NULL, &addr));
}

static void test_bind_errors(void **state)
{
    (void)state;
    static const struct {
        const char *bind;
        const char *phrase;
    } cases[] = {
        {"127.0.0.1", "\"127.0.0.1\": port is missing"},
        {"127.0.0.1:0", "\"127.0.0.1:0\": port must be between 1 and 65535"},
        {"127.0.0.1:70000", "port must be between 1 and 65535"},
        {"localhost:8080", "\"localhost:8080\": host names are not resolved; use an IP address"},
        {"::1:8080", "IPv6 addresses need brackets"},
    };
    char text[256];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text),
                 "[service:api]\nbackends = 127.0.0.1:9001\n[listener:web]\n"
                 "service = api\nbind = %s\n",
                 cases[i].bind);
        EXPECT_ERRORS(text, {5, "bind", cases[i].phrase});
    }
}

static void test_bad_sections(void **state)
{
    (void)state;
    char text[512];

    EXPECT_ERRORS(BASE "[foo]\n", {6, "[foo]", "is not a known section"});
    EXPECT_ERRORS(BASE "[listener]\n", {6, "[listener]", "needs a name, as in [listener:NAME]"});
    EXPECT_ERRORS(BASE "[listener:]\n", {6, "[listener:]", "needs a name"});
    EXPECT_ERRORS(BASE "[service:]\n", {6, "[service:]", "needs a name, as in [service:NAME]"});
    EXPECT_ERRORS(BASE "[listener:a b]\n", {6, "[listener:a b]", "may only use letters"});
    EXPECT_ERRORS(BASE "[service:a/b]\n", {6, "[service:a/b]", "may only use letters"});
    EXPECT_ERRORS(BASE "[listeners:x]\n", {6, "[listeners:x]", "is not a known section"});
    EXPECT_ERRORS(BASE "[Sluice]\n", {6, "[Sluice]", "is not a known section"});
    EXPECT_ERRORS(BASE "[]\n", {6, "[]", "is not a known section"});
    EXPECT_ERRORS(BASE "[sluice\n", {6, "[sluice", "is missing the closing \"]\""});
    EXPECT_ERRORS(BASE "[sluice] workers = 1\n", {6, "[sluice] workers = 1", "text after"});

    /* 63 characters are fine, 64 are not. */
    snprintf(text, sizeof(text), BASE "[service:%.63s]\nbackends = 127.0.0.1:1\n",
             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-");
    struct config *cfg = load_ok(text);
    assert_int_equal(strlen(cfg->services[1].name), 63);
    config_destroy(cfg);
    snprintf(text, sizeof(text), BASE "[service:%.64s]\n",
             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-");
    EXPECT_ERRORS(text,
                  {6, "[service:abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.]",
                   "longer than 63 characters"});
}

static void test_keys_of_rejected_section_are_ignored(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "[foo]\nbar = 1\nbaz = 2\n[sluice]\nworkers = 0\n",
                  {6, "[foo]", "is not a known section"}, {10, "workers", "out of range"});
}

static void test_unknown_keys(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "bogus = 1\n", {6, "bogus", "is not a known key in [service:api]"});
    EXPECT_ERRORS(BASE "bind = 127.0.0.1:1\n",
                  {6, "bind", "does not belong in [service:api] (it goes in [listener:NAME])"});
    EXPECT_ERRORS(BASE "[sluice]\nbalance = weighted\n",
                  {7, "balance", "does not belong in [sluice] (it goes in [service:NAME])"});
    EXPECT_ERRORS(BASE "Workers = 1\n", {6, "Workers", "is not a key name"});
    EXPECT_ERRORS(BASE "a:b = 1\n", {6, "line", "has no key name before \"=\""});
}

static void test_syntax_errors(void **state)
{
    (void)state;
    EXPECT_ERRORS("workers = 4\n" BASE,
                  {1, "workers", "is outside any section (put it under [sluice]"});
    EXPECT_ERRORS(BASE "just words\n", {6, "line", "is not a \"key = value\" line"});
    EXPECT_ERRORS(BASE "= 5\n", {6, "=", "a key name is missing"});
    EXPECT_ERRORS(BASE "balance =\n", {6, "balance", "has no value"});
    EXPECT_ERRORS(BASE "balance = ; nothing\n", {6, "balance", "has no value"});
}

static void test_duplicate_section(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "[sluice]\n[listener:web]\nbind = 127.0.0.1:1\n",
                  {7, "[listener:web]", "is defined twice (first at line 1)"});
    EXPECT_ERRORS(BASE "[sluice]\n[sluice]\n",
                  {7, "[sluice]", "is defined twice (first at line 6)"});
    /* A listener and a service may share a name. */
    struct config *cfg = load_ok("[listener:api]\nbind = 127.0.0.1:1\nservice = api\n"
                                 "[service:api]\nbackends = 127.0.0.1:2\n");
    assert_string_equal(cfg->listeners[0].name, "api");
    config_destroy(cfg);
}

static void test_duplicate_key(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "balance = weighted\nbalance = round_robin\n",
                  {7, "balance", "is set twice in [service:api] (first at line 6)"});
    EXPECT_ERRORS(BASE "backends = 127.0.0.1:9002\n", {6, "backends", "first at line 5"});
}

static void test_listener_references(void **state)
{
    (void)state;
    EXPECT_ERRORS("[listener:web]\nbind = 127.0.0.1:8080\nservice = nope\n[service:api]\n"
                  "backends = 127.0.0.1:9001\n",
                  {3, "service", "there is no [service:nope] in this file"});
    EXPECT_ERRORS(BASE "[listener:b]\nbind = 127.0.0.1:1\nservice = a b\n",
                  {8, "service", "\"a b\" is not a service name"});
    EXPECT_ERRORS(BASE "[listener:b]\n", {6, "[listener:b]", "bind is required"},
                  {6, "[listener:b]", "service is required"});
}

/* allow/deny: CIDR lists with FILE:LINE errors; host bits are refused, not masked. */
static void test_listener_acl(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "[listener:b]\nbind = 127.0.0.1:1\nservice = api\ndeny = 10.0.0.300/8\n",
                  {9, "deny", "entry \"10.0.0.300/8\" is not a CIDR"});
    EXPECT_ERRORS(BASE "[listener:b]\nbind = 127.0.0.1:1\nservice = api\nallow = ::1, ::/129\n",
                  {9, "allow", "entry \"::/129\" has a prefix longer than its family's"});
    EXPECT_ERRORS(BASE "[listener:b]\nbind = 127.0.0.1:1\nservice = api\nallow = 10.1.2.3/8\n",
                  {9, "allow", "entry \"10.1.2.3/8\" has bits set beyond its prefix"});
    struct config *cfg = load_ok(BASE "[listener:b]\nbind = 127.0.0.1:1\nservice = api\n"
                                      "allow = 10.0.0.0/8, 2001:db8::/32\ndeny = 127.0.0.2\n");
    assert_int_equal(cfg->listeners[1].allow.n, 2);
    assert_string_equal(cfg->listeners[1].allow.items[1], "2001:db8::/32");
    assert_int_equal(cfg->listeners[1].deny.n, 1);
    assert_int_equal(cfg->listeners[0].allow.n, 0);
    config_destroy(cfg);
}

static void test_duplicate_bind(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "[listener:two]\nservice = api\nbind = 127.0.0.1:8080\n",
                  {8, "bind", "127.0.0.1:8080 is already bound by [listener:web] (line 1)"});
    /* The same address written two ways is still the same address. */
    EXPECT_ERRORS(BASE "[listener:a]\nservice = api\nbind = [::1]:80\n"
                       "[listener:b]\nservice = api\nbind = [0:0::1]:80\n",
                  {11, "bind", "[::1]:80 is already bound by [listener:a] (line 6)"});
    struct config *cfg = load_ok(BASE "[listener:b]\nbind = 127.0.0.1:8081\nservice = api\n");
    assert_int_equal(cfg->n_listeners, 2);
    config_destroy(cfg);
}

static void test_no_listener(void **state)
{
    (void)state;
    EXPECT_ERRORS("[service:api]\nbackends = 127.0.0.1:9001\n",
                  {0, "[listener:NAME]", "defines no listener"});
    EXPECT_ERRORS("", {0, "[listener:NAME]", "defines no listener"});
}

static void test_service_discovery(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "[service:empty]\nbalance = weighted\n",
                  {6, "[service:empty]", "static discovery needs backends"});
    EXPECT_ERRORS(BASE "[service:c]\ndiscovery = consul\nbackends = 127.0.0.1:1\n",
                  {8, "backends", "only applies to discovery = static"});
    struct config *cfg = load_ok(BASE "[service:c]\ndiscovery = consul\n");
    assert_int_equal(cfg->services[1].discovery, CONFIG_DISCOVERY_CONSUL);
    assert_int_equal(cfg->services[1].lb.backends.n, 0);
    assert_null(cfg->services[1].lb.backends.items);
    config_destroy(cfg);
}

/* discovery = dns and discovery = file: their keys, defaults and the rules between them. */
static void test_registry_discovery(void **state)
{
    (void)state;
    struct config *cfg =
        load_ok(BASE "[service:d]\ndiscovery = dns\ndns_name = _api._tcp.test.\n"
                     "dns_servers = 127.0.0.1:5353, 10.0.0.2, [::1]:53\n"
                     "[service:a]\ndiscovery = dns\ndns_name = api.test\n"
                     "dns_port = 9001\ndns_min_interval = 2s\n"
                     "[service:f]\ndiscovery = file\nfile = /etc/sluice/api.json\n");
    const struct registry_conf *d = &cfg->services[1].registry, *a = &cfg->services[2].registry;
    assert_int_equal(cfg->services[1].discovery, CONFIG_DISCOVERY_DNS);
    assert_string_equal(d->dns_name, "_api._tcp.test.");
    assert_int_equal(d->dns_servers.n, 3);
    assert_int_equal(d->dns_min_interval_ms, 1000);
    assert_int_equal(d->dns_max_interval_ms, 300000);
    assert_int_equal(d->dns_empty_is_valid, 0);
    assert_int_equal(a->dns_port, 9001);
    assert_int_equal(a->dns_min_interval_ms, 2000);
    assert_int_equal(cfg->services[3].discovery, CONFIG_DISCOVERY_FILE);
    assert_string_equal(cfg->services[3].registry.file, "/etc/sluice/api.json");
    config_destroy(cfg);

    EXPECT_ERRORS(BASE "[service:d]\ndiscovery = dns\n",
                  {6, "[service:d]", "discovery = dns needs dns_name"});
    EXPECT_ERRORS(BASE "[service:d]\ndiscovery = dns\ndns_name = api.test\n",
                  {8, "dns_name", "names A/AAAA records: add dns_port = PORT"});
    EXPECT_ERRORS(BASE "[service:d]\ndiscovery = dns\ndns_name = _a._tcp.test\ndns_port = 80\n",
                  {9, "dns_port", "does not apply to an SRV name"});
    EXPECT_ERRORS(BASE "[service:d]\ndiscovery = dns\ndns_name = bad..name\ndns_port = 80\n",
                  {8, "dns_name", "has an empty label"});
    EXPECT_ERRORS(BASE "[service:d]\ndiscovery = dns\ndns_name = _a._tcp.t\n"
                       "dns_servers = 127.0.0.1:, dns.example\n",
                  {9, "dns_servers", "is not IP or IP:PORT"});
    EXPECT_ERRORS(BASE "[service:d]\ndiscovery = dns\ndns_name = _a._tcp.t\n"
                       "dns_min_interval = 10s\ndns_max_interval = 5s\n",
                  {10, "dns_max_interval", "is shorter than dns_min_interval"});
    EXPECT_ERRORS(BASE "dns_name = _a._tcp.t\n",
                  {6, "dns_name", "only applies to discovery = dns"});
    EXPECT_ERRORS(BASE "file = /x.json\n", {6, "file", "only applies to discovery = file"});
    EXPECT_ERRORS(BASE "[service:f]\ndiscovery = file\n",
                  {6, "[service:f]", "discovery = file needs file"});
    EXPECT_ERRORS(BASE "[service:f]\ndiscovery = file\nfile = api.json\n",
                  {8, "file", "must be an absolute path"});
    EXPECT_ERRORS(BASE "[service:f]\ndiscovery = file\nfile = /a.json\nbackends = 127.0.0.1:1\n",
                  {9, "backends", "only applies to discovery = static"});
}

static void test_backends(void **state)
{
    (void)state;
    struct config *cfg = load_ok(BASE "[service:b]\nbackends = 10.0.0.1:1 weight=1000000,"
                                      "10.0.0.2:1\tweight=0 ,  [::1]:5\n");
    const struct config_service *s = &cfg->services[1];

    assert_int_equal(s->lb.backends.n, 3);
    assert_int_equal(s->lb.backends.items[0].weight, 1000000);
    assert_int_equal(s->lb.backends.items[1].weight, 0);
    assert_int_equal(s->lb.backends.items[2].weight, 1);
    assert_string_equal(s->lb.backends.items[2].addr.text, "[::1]:5");
    config_destroy(cfg);

    EXPECT_ERRORS(BASE "[service:b]\nbackends = 10.0.0.1:1, 10.0.0.2:1, 10.0.0.1:1\n",
                  {7, "backends", "10.0.0.1:1 is listed twice (backends 1 and 3)"});
    EXPECT_ERRORS(BASE "[service:b]\nbackends = [::1]:1, [0::1]:1\n",
                  {7, "backends", "[::1]:1 is listed twice"});
    EXPECT_ERRORS(BASE "[service:b]\nbackends = 10.0.0.1:1 weight=1000001\n",
                  {7, "backends",
                   "backend 1 \"10.0.0.1:1 weight=1000001\": has a weight out of "
                   "range (0..1000000)"});
    EXPECT_ERRORS(BASE "[service:b]\nbackends = 10.0.0.1:1 weight=heavy\n",
                  {7, "backends", "weight that is not a number"});
    EXPECT_ERRORS(BASE "[service:b]\nbackends = 10.0.0.1:1 weight=1 weight=2\n",
                  {7, "backends", "sets weight twice"});
    EXPECT_ERRORS(BASE "[service:b]\nbackends = 10.0.0.1:1 colour=blue\n",
                  {7, "backends", "has an unknown option (only weight=N)"});
    EXPECT_ERRORS(BASE "[service:b]\nbackends = 10.0.0.1:1, , 10.0.0.2:1\n",
                  {7, "backends", "backend 2 is empty"});
    EXPECT_ERRORS(BASE "[service:b]\nbackends = 10.0.0.1:1,\n",
                  {7, "backends", "backend 2 is empty"});
    EXPECT_ERRORS(BASE "[service:b]\nbackends = 10.0.0.1:1, web-1:http\n",
                  {7, "backends", "backend 2 \"web-1:http\": "});
    EXPECT_ERRORS(BASE "[service:b]\nbackends = 10.0.0.1:1, 10.0.0:80\n",
                  {7, "backends", "backend 2 \"10.0.0:80\": "});
    EXPECT_ERRORS(BASE "[service:b]\nbackends = web..test:80\n", {7, "backends", "backend 1"});
    EXPECT_ERRORS(BASE "[service:b]\nbackends = web.test:80, web.test:80\n",
                  {7, "backends", "web.test:80 is listed twice"});
}

/* Host names in a static list: kept for the registry thread, with their port and weight; the
 * resolver keys apply to them; strict_dns = on resolves them at load (here against a closed
 * port, which fails at once). */
static void test_backend_host_names(void **state)
{
    (void)state;
    struct config *cfg =
        load_ok(BASE "[service:b]\nbackends = 10.0.0.1:1, api-1.test.:9001 weight=3\n"
                     "dns_servers = 127.0.0.1:5353\ndns_max_interval = 30s\n");
    const struct lb_backends *b = &cfg->services[1].lb.backends;
    assert_int_equal(b->n, 2);
    assert_int_equal(b->n_hosts, 1);
    assert_null(b->items[0].host);
    assert_string_equal(b->items[1].host, "api-1.test.");
    assert_int_equal(b->items[1].port, 9001);
    assert_int_equal(b->items[1].weight, 3);
    assert_string_equal(b->items[1].addr.text, "api-1.test.:9001");
    assert_int_equal(cfg->services[1].registry.dns_max_interval_ms, 30000);
    config_destroy(cfg);

    EXPECT_ERRORS(
        BASE "dns_servers = 127.0.0.1\n",
        {6, "dns_servers", "only applies to discovery = dns or to host names in backends"});
    EXPECT_ERRORS(BASE "strict_dns = on\n", {6, "strict_dns", "only applies to host names"});
    EXPECT_ERRORS(BASE "[service:b]\nbackends = nowhere.sluice-test.:80\nstrict_dns = on\n"
                       "dns_servers = 127.0.0.1:1\ndns_timeout = 100ms\n",
                  {7, "backends", "backend 1 \"nowhere.sluice-test.:80\": "});
}

static void test_comments_and_layout(void **state)
{
    (void)state;
    struct config *cfg = load_ok("\xEF\xBB\xBF; a comment\r\n"
                                 "# another comment\r\n"
                                 "\r\n"
                                 "  [sluice]   ; header comment\r\n"
                                 "    workers = 7    ; indented, with a comment\r\n"
                                 "\tmax_connections = 9 # hash comment\r\n"
                                 "[listener:web]\n"
                                 "bind=127.0.0.1:8080\n"
                                 "service   =   api\n"
                                 "[service:api]\n"
                                 "backends = 127.0.0.1:9001 weight=2 ; weight=5\n");

    assert_int_equal(cfg->workers, 7);
    assert_int_equal(cfg->stream.max_connections, 9);
    assert_int_equal(cfg->services[0].lb.backends.items[0].weight, 2);
    config_destroy(cfg);
    /* The ';' glued to the port is part of the value, so the port is wrong (and the line
     * numbers count the CRLF lines). */
    EXPECT_ERRORS("; c\r\n[listener:web]\r\nbind=127.0.0.1:8080;x\r\nservice = api\r\n"
                  "[service:api]\r\nbackends = 127.0.0.1:9001\r\n",
                  {3, "bind", "port is not a number"});
}

/* Lines longer than inih's 200-byte buffer still parse, with the right line numbers after. */
static void test_long_lines(void **state)
{
    (void)state;
    char text[8192], *p = text;
    size_t n = 150;

    p += sprintf(p, "[listener:web]\nbind = 127.0.0.1:8080\nservice = api\n[service:api]\n"
                    "backends = ");
    for (size_t i = 0; i < n; i++) {
        p += sprintf(p, "%s[2001:db8::%zx]:9001 weight=%zu", i ? ", " : "", i + 1, i + 1);
    }
    sprintf(p, "\nbalance = weighted\n");
    struct config *cfg = load_ok(text);
    assert_int_equal(cfg->services[0].lb.backends.n, n);
    assert_string_equal(cfg->services[0].lb.backends.items[n - 1].addr.text, "[2001:db8::96]:9001");
    assert_int_equal(cfg->services[0].lb.backends.items[n - 1].weight, n);
    assert_ptr_equal(cfg->services[0].lb.balance, &lb_weighted);
    config_destroy(cfg);

    sprintf(p, "\nbalance = nope\n");
    EXPECT_ERRORS(text, {6, "balance", "\"nope\" is not a balance method"});
}

static void test_multiple_errors_are_all_reported(void **state)
{
    (void)state;
    struct ini_errors errs = {0};
    struct config *cfg = NULL;

    /* Existing lines are kept: errors are appended. */
    errs.lines = calloc(1, sizeof(char *));
    errs.lines[0] = strdup("earlier");
    errs.n = 1;
    int rc = load_text("[sluice]\n"                           /* 1 */
                       "workers = 0\n"                        /* 2 */
                       "log_level = loud\n"                   /* 3 */
                       "[listener:web]\n"                     /* 4 */
                       "bind = 127.0.0.1\n"                   /* 5 */
                       "service = missing\n"                  /* 6 */
                       "idle_timeout = 5\n"                   /* 7 */
                       "[listener:web]\n"                     /* 8 */
                       "[service:api]\n"                      /* 9 */
                       "balance = fastest\n"                  /* 10 */
                       "backends = 10.0.0.1:1, 10.0.0.1:1\n", /* 11 */
                       &cfg, &errs);
    const struct want want[] = {
        {2, "workers", "out of range"},
        {3, "log_level", "\"loud\" is not a level"},
        {5, "bind", "port is missing"},
        {6, "service", "there is no [service:missing]"},
        {7, "idle_timeout", "needs a unit"},
        {8, "[listener:web]", "is defined twice (first at line 4)"},
        {10, "balance", "\"fastest\" is not a balance method"},
        {11, "backends", "is listed twice"},
    };

    assert_int_equal(rc, -EINVAL);
    assert_null(cfg);
    assert_int_equal(errs.n, 1 + sizeof(want) / sizeof(want[0]));
    assert_string_equal(errs.lines[0], "earlier");
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_error_line(load_text_path(), errs.lines[i + 1], &want[i]);
    }
    ini_errors_clear(&errs);
}

static void test_missing_file(void **state)
{
    (void)state;
    struct ini_errors errs = {0};
    struct config *cfg = (struct config *)&errs;
    const char *path = "/tmp/sluice_test_config_does_not_exist.ini";

    unlink(path);
    assert_int_equal(config_load(path, &cfg, &errs), -ENOENT);
    assert_null(cfg);
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.lines[0], "/tmp/sluice_test_config_does_not_exist.ini:0: file: "
                                       "cannot be read: No such file or directory");
    ini_errors_clear(&errs);
}

static void test_unreadable_file(void **state)
{
    (void)state;
    struct ini_errors errs = {0};
    struct config *cfg = NULL;

    assert_int_equal(config_load("/tmp", &cfg, &errs), -EISDIR);
    assert_null(cfg);
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.lines[0], "/tmp:0: file: is not a regular file");
    ini_errors_clear(&errs);
}

/* The demo config of `make run` must stay valid and say what the README promises. */
static void test_demo_config(void **state)
{
    (void)state;
    char path[4096];
    const char *slash = strrchr(__FILE__, '/');
    struct ini_errors errs = {0};
    struct config *cfg = NULL;

    snprintf(path, sizeof(path), "%.*s/../../config/sluice.ini",
             slash != NULL ? (int)(slash - __FILE__) : 1, slash != NULL ? __FILE__ : ".");
    assert_int_equal(config_load(path, &cfg, &errs), 0);
    assert_int_equal(cfg->n_listeners, 1);
    assert_string_equal(cfg->listeners[0].name, "web");
    assert_string_equal(cfg->listeners[0].bind.text, "127.0.0.1:8080");
    assert_string_equal(cfg->listeners[0].service, "api");
    assert_int_equal(cfg->n_services, 1);
    assert_ptr_equal(cfg->services[0].lb.balance, &lb_least_connections);
    assert_int_equal(cfg->services[0].lb.backends.n, 3);
    assert_string_equal(cfg->services[0].lb.backends.items[0].addr.text, "127.0.0.1:9001");
    assert_int_equal(cfg->services[0].lb.backends.items[0].weight, 3);
    assert_string_equal(cfg->services[0].lb.backends.items[1].addr.text, "127.0.0.1:9002");
    assert_string_equal(cfg->services[0].lb.backends.items[2].addr.text, "127.0.0.1:9003");
    config_destroy(cfg);
}

/* Per-client limits: off by default; the burst is the rate unless set. */
static void test_client_limit_keys(void **state)
{
    (void)state;
    struct config *cfg = load_ok("[listener:a]\nbind = 127.0.0.1:8080\nservice = api\n"
                                 "[listener:b]\nbind = 127.0.0.1:8081\nservice = api\n"
                                 "connection_rate_per_client = 20\n"
                                 "[listener:c]\nbind = 127.0.0.1:8082\nservice = api\n"
                                 "max_connections_per_client = 7\nconnection_rate_per_client = 5\n"
                                 "connection_burst_per_client = 50\nclient_ipv6_prefix = 48\n"
                                 "client_table_size = 1024\n"
                                 "[service:api]\nbackends = 127.0.0.1:9001\n");
    const struct listener_conf *a = &cfg->listeners[0], *b = &cfg->listeners[1];
    const struct listener_conf *c = &cfg->listeners[2];
    assert_int_equal(a->max_conns_per_client, 0);
    assert_int_equal(a->rate_per_client, 0);
    assert_int_equal(a->client_ipv6_prefix, 64);
    assert_int_equal(a->client_table_size, 65536);
    assert_int_equal(b->rate_per_client, 20);
    assert_int_equal(b->burst_per_client, 20);
    assert_int_equal(c->max_conns_per_client, 7);
    assert_int_equal(c->rate_per_client, 5);
    assert_int_equal(c->burst_per_client, 50);
    assert_int_equal(c->client_ipv6_prefix, 48);
    assert_int_equal(c->client_table_size, 1024);
    config_destroy(cfg);
}

struct change_log {
    char lines[8][256];
    size_t n;
};

static void note_change(void *ctx, const char *key, const char *from, const char *to)
{
    struct change_log *c = ctx;
    assert_true(c->n < 8);
    snprintf(c->lines[c->n++], sizeof(c->lines[0]), "%s: %s -> %s", key, from, to);
}

/* Values read back as a config writes them, and reload's key-by-key comparison: only the keys
 * that differ, each with both values; a secret is never shown. */
static void test_value_text_and_diff(void **state)
{
    (void)state;
    struct config *a = load_ok("[sluice]\npipe_size = 1m\nsplice = auto\n"
                               "[listener:web]\nbind = 127.0.0.1:8080\nservice = api\n"
                               "idle_timeout = 90s\n"
                               "[service:api]\nbackends = 127.0.0.1:9001\ncheck = tcp\n"
                               "check_interval = 1500ms\n");
    struct config *b = load_ok("[sluice]\npipe_size = 64k\nsplice = off\n"
                               "[listener:web]\nbind = 127.0.0.1:8081\nservice = api\n"
                               "idle_timeout = 90s\nlog_access = on\n"
                               "[service:api]\nbackends = 127.0.0.1:9001\ncheck = http\n"
                               "check_interval = 1h\n");
    struct change_log c = {0};

    assert_int_equal(ini_keys_diff(stream_keys, &a->stream, &b->stream, note_change, &c), 2);
    assert_string_equal(c.lines[0], "splice: auto -> off");
    assert_string_equal(c.lines[1], "pipe_size: 1m -> 64k");
    c.n = 0;
    assert_int_equal(
        ini_keys_diff(listener_keys, &a->listeners[0], &b->listeners[0], note_change, &c), 2);
    assert_string_equal(c.lines[0], "bind: 127.0.0.1:8080 -> 127.0.0.1:8081");
    assert_string_equal(c.lines[1], "log_access: off -> on");
    c.n = 0;
    assert_int_equal(
        ini_keys_diff(health_keys, &a->services[0].check, &b->services[0].check, note_change, &c),
        3);
    assert_string_equal(c.lines[0], "check: tcp -> http");
    assert_string_equal(c.lines[1], "check_interval: 1500ms -> 1h");
    assert_string_equal(c.lines[2], "check_jitter: 150ms -> 6m"); /* 10 % of the interval */
    c.n = 0;
    assert_int_equal(
        ini_keys_diff(listener_keys, &a->listeners[0], &a->listeners[0], note_change, &c), 0);

    char text[64];
    const struct ini_key secret = {.name = "token", .set = ini_set_string, .secret = true};
    struct {
        char *token;
    } holder = {"hunter2"};
    assert_int_equal(ini_value_text(&secret, &holder, text, sizeof(text)), 0);
    assert_string_equal(text, "(secret)");
    const struct ini_key custom = {.name = "x", .set = NULL};
    assert_int_equal(ini_value_text(&custom, &holder, text, sizeof(text)), -ENOTSUP);
    config_destroy(a);
    config_destroy(b);
}

/* Every duration and size shown by ini_value_text (reload's messages) reads back as the same
 * value: a whole number of days used to be shown as "1d", which no key accepts (found by
 * fuzz/fuzz_values). */
static void test_value_text_reads_back(void **state)
{
    (void)state;
    const struct ini_key duration = INI_KEY("d", 0, ini_set_duration, 0, UINT64_MAX, NULL, false);
    const struct ini_key size = INI_KEY("z", 0, ini_set_size, 1, UINT32_MAX, NULL, false);
    static const char *const durations[] = {"24h", "168h", "48h", "90s", "1500ms", "0", "1440m"};
    static const char *const shown_as[] = {"24h", "168h", "48h", "90s", "1500ms", "0", "24h"};
    static const char *const sizes[] = {"1m", "1024k", "64K", "4096", "3"};
    char msg[INI_PHRASE_MAX], text[64];

    for (size_t i = 0; i < sizeof(durations) / sizeof(durations[0]); i++) {
        uint64_t ms = 0, again = 0;
        assert_null(ini_set_duration(&ms, &duration, durations[i], msg));
        assert_int_equal(ini_value_text(&duration, &ms, text, sizeof(text)), 0);
        assert_string_equal(text, shown_as[i]);
        assert_null(ini_parse_duration(text, &again));
        assert_int_equal(again, ms);
    }
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint32_t n = 0, again = 0;
        assert_null(ini_set_size(&n, &size, sizes[i], msg));
        assert_int_equal(ini_value_text(&size, &n, text, sizeof(text)), 0);
        assert_null(ini_set_size(&again, &size, text, msg));
        assert_int_equal(again, n);
    }
}

static void test_helpers(void **state)
{
    (void)state;
    struct ini_errors errs = {0};

    assert_ptr_equal(balancer_find("round_robin"), &lb_round_robin);
    assert_ptr_equal(balancer_find("least_connections"), &lb_least_connections);
    assert_ptr_equal(balancer_find("weighted"), &lb_weighted);
    assert_null(balancer_find("random"));
    assert_null(balancer_find(NULL));
    config_destroy(NULL);
    ini_errors_clear(&errs);
    ini_errors_clear(NULL);
    assert_int_equal(errs.n, 0);
}

/* Health, ejection, slow start, limits, queue and drain keys: defaults, values, and every error
 * with its FILE:LINE. BASE is 5 lines; appended keys start at line 6 in [service:api]. */
static void test_health_and_resilience_keys(void **state)
{
    (void)state;
    struct config *cfg = load_ok(BASE);
    const struct config_service *s = &cfg->services[0];
    assert_int_equal(s->check.kind, HEALTH_CHECK_NONE);
    assert_int_equal(s->check.interval_ms, 2000);
    assert_int_equal(s->check.timeout_ms, 1000);
    assert_int_equal(s->check.rise, 2);
    assert_int_equal(s->check.fall, 3);
    assert_int_equal(s->check.jitter_ms, 200); /* 10 % of the interval */
    assert_string_equal(s->check.http_path, "/");
    assert_int_equal(s->check.n_expect, 1);
    assert_true(health_status_expected(&s->check, 200) && health_status_expected(&s->check, 399));
    assert_false(health_status_expected(&s->check, 404));
    assert_int_equal(s->lb.policy.eject_after, 3);
    assert_int_equal(s->lb.policy.eject_time_ms, 10000);
    assert_int_equal(s->lb.policy.eject_max_time_ms, 300000);
    assert_int_equal(s->lb.policy.max_ejection_percent, 50);
    assert_int_equal(s->lb.policy.slow_start_ms, 0);
    assert_int_equal(s->lb.policy.max_conns, 0);
    assert_int_equal(s->lb.policy.hash_with_port, 0);
    assert_int_equal(s->stream.queue_size, 0);
    assert_int_equal(s->stream.queue_timeout_ms, 5000);
    assert_int_equal(s->stream.drain_timeout_ms, 0);
    assert_int_equal(s->stream.lifetime_ms, 0);
    config_destroy(cfg);

    cfg = load_ok(BASE "check = http\ncheck_interval = 5s\ncheck_http_path = /health\n"
                       "check_http_host = api.internal\ncheck_http_expect = 200, 204, 300-302\n"
                       "check_port = 8081\nbalance = maglev\nhash_key = client_ip_port\n"
                       "max_connections = 10\nqueue_size = 5\nqueue_timeout = 250ms\n"
                       "slow_start = 30s\ndrain_timeout = 1m\nmax_connection_lifetime = 1h\n");
    s = &cfg->services[0];
    assert_int_equal(s->check.kind, HEALTH_CHECK_HTTP);
    assert_int_equal(s->check.jitter_ms, 500);
    assert_string_equal(s->check.http_host, "api.internal");
    assert_int_equal(s->check.port, 8081);
    assert_int_equal(s->check.n_expect, 3);
    assert_true(health_status_expected(&s->check, 204) && health_status_expected(&s->check, 301));
    assert_false(health_status_expected(&s->check, 201) || health_status_expected(&s->check, 303));
    assert_ptr_equal(s->lb.balance, &lb_maglev);
    assert_int_equal(s->lb.policy.hash_with_port, 1);
    assert_int_equal(s->lb.policy.max_conns, 10);
    assert_int_equal(s->stream.queue_size, 5);
    assert_int_equal(s->stream.queue_timeout_ms, 250);
    assert_int_equal(s->lb.policy.slow_start_ms, 30000);
    assert_int_equal(s->stream.lifetime_ms, 3600000);
    config_destroy(cfg);

    EXPECT_ERRORS(BASE "check = ping\n",
                  {6, "check", "\"ping\" is not a check kind (use none, tcp, http)"});
    EXPECT_ERRORS(BASE "check_interval = 1s\n",
                  {6, "check_interval", "only applies with check = tcp or http"});
    EXPECT_ERRORS(BASE "check = tcp\ncheck_http_path = /x\n",
                  {7, "check_http_path", "only applies with check = http"});
    EXPECT_ERRORS(BASE "check = tcp\ncheck_interval = 10ms\n",
                  {7, "check_interval", "is too short (at least 100ms)"});
    EXPECT_ERRORS(BASE "check = tcp\ncheck_jitter = 2s\n",
                  {7, "check_jitter", "must be shorter than check_interval"});
    EXPECT_ERRORS(BASE "check = tcp\ncheck_fall = 0\n", {7, "check_fall", "out of range (1..100)"});
    EXPECT_ERRORS(BASE "check = http\ncheck_http_path = health\n",
                  {7, "check_http_path", "is not an absolute URL path"});
    EXPECT_ERRORS(BASE "check = http\ncheck_http_expect = 200-99\n",
                  {7, "check_http_expect", "\"200-99\" is not within 100-599, low to high"});
    EXPECT_ERRORS(BASE "check = http\ncheck_http_expect = ok\n",
                  {7, "check_http_expect", "\"ok\" is not a status or a range"});
    EXPECT_ERRORS(BASE "check = tcp\ncheck_port = 70000\n",
                  {7, "check_port", "out of range (1..65535)"});
    EXPECT_ERRORS(BASE "eject_time = 1m\neject_max_time = 30s\n",
                  {7, "eject_max_time", "is shorter than eject_time"});
    EXPECT_ERRORS(BASE "max_ejection_percent = 101\n",
                  {6, "max_ejection_percent", "out of range (0..100)"});
    EXPECT_ERRORS(BASE "hash_key = port\n",
                  {6, "hash_key", "\"port\" is not a hash key (use client_ip, client_ip_port)"});
    EXPECT_ERRORS(BASE "slow_start = 2h\n", {6, "slow_start", "is too long (at most 3600000ms)"});
    EXPECT_ERRORS(BASE "queue_timeout = 0\n", {6, "queue_timeout", "is too short"});
    EXPECT_ERRORS(BASE "[sluice]\ncheck = tcp\n",
                  {7, "check", "does not belong in [sluice] (it goes in [service:NAME])"});
}

/* --- hostile files (issue #12) ------------------------------------------------------------ */

/* Fails the test when any error line of errs contains secret. */
static void assert_not_shown(const struct ini_errors *errs, const char *secret)
{
    assert_true(errs->n > 0);
    for (size_t i = 0; i < errs->n; i++) {
        if (strstr(errs->lines[i], secret) != NULL) {
            fail_msg("shows \"%s\": %s", secret, errs->lines[i]);
        }
    }
}

/* Loads text and checks that no error line shows secret. */
static void expect_hidden(const char *text, const char *secret)
{
    struct ini_errors errs = {0};
    struct config *cfg = NULL;

    assert_int_equal(load_text(text, &cfg, &errs), -EINVAL);
    assert_not_shown(&errs, secret);
    ini_errors_clear(&errs);
}

/* A malformed line is reported without its text: "token: SECRET" is a token with a typo. */
static void test_malformed_line_hides_its_text(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "[consul]\ntoken: SECRET\n", {7, "line", "is not a \"key = value\" line"});
    expect_hidden(BASE "[consul]\ntoken: SECRET\n", "SECRET");
    EXPECT_ERRORS(BASE "[consul]\ntoken: SECRET = x\n", {7, "line", "has no key name"});
    expect_hidden(BASE "[consul]\ntoken: SECRET = x\n", "SECRET");
}

/* Credentials in [consul] address are refused, and the password never appears. */
static void test_consul_address_userinfo(void **state)
{
    (void)state;
    EXPECT_ERRORS(BASE "[consul]\naddress = http://user:pa55word@127.0.0.1:1\n",
                  {7, "address", "must not hold credentials (user:password@): use token"});
    expect_hidden(BASE "[consul]\naddress = http://user:pa55word@127.0.0.1:1\n", "pa55word");
    expect_hidden(BASE "[consul]\naddress = https://pa55word@[::1]:1\n", "pa55word");
}

/* A schema of one [s] section whose secret key "token" takes one word: its setter echoes the
 * value, as many do, so the loader must hide it. */
struct secret_root {
    int token; /* the enum stored */
};
static const struct ini_choice secret_words[] = {{"right", 1}, {NULL, 0}};
static const struct ini_key secret_keys[] = {
    INI_KEY("token", 0, ini_set_enum, 0, 0, NULL, false, .choices = secret_words, .noun = "word",
            .secret = true),
    {.name = NULL},
};
static const struct ini_table secret_tables[] = {{secret_keys, 0}};
static const struct ini_kind secret_kinds[] = {
    {.name = "s", .tables = secret_tables, .n_tables = 1, .line_offset = SIZE_MAX}};
static const struct ini_schema secret_schema = {secret_kinds, 1, NULL};

/* Loads text with secret_schema; must fail without showing secret, with shown in the line. */
static void expect_secret_hidden(const char *text, const char *secret, const char *shown)
{
    struct ini_errors errs = {0};
    struct secret_root root = {0};
    char path[] = "/tmp/sluice_test_secret_XXXXXX";
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(ini_load(&secret_schema, path, &root, NULL, &errs), -EINVAL);
    unlink(path);
    assert_not_shown(&errs, secret);
    if (strstr(errs.lines[0], shown) == NULL) {
        fail_msg("\"%s\" is not in %s", shown, errs.lines[0]);
    }
    ini_release_all(&secret_schema, &root);
    ini_errors_clear(&errs);
}

static void test_secret_value_not_echoed(void **state)
{
    char text[2048];
    (void)state;

    expect_secret_hidden("[s]\ntoken = SECRETSECRET\n", "SECRET",
                         ":2: token: \"(secret)\" is not a word (use right)");
    /* longer than a phrase holds: the cut copy must be hidden too */
    snprintf(text, sizeof(text), "[s]\ntoken = %0900d\n", 7);
    expect_secret_hidden(text, "00000000", ":2: token: \"(secret)");
}

/* Writes len bytes to a fresh file named into path (a mkstemp template). */
static void write_file(char *path, const char *data, size_t len)
{
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

/* A FIFO, as the config or as a path key, is refused at once instead of blocking in open(). The
 * alarm turns a regression (a hang) into a failure. */
static void test_fifo_is_refused(void **state)
{
    char dir[] = "/tmp/sluice_test_fifo_XXXXXX", fifo[64], text[256], want[128];
    struct ini_errors errs = {0};
    struct config *cfg = NULL;
    (void)state;

    assert_non_null(mkdtemp(dir));
    snprintf(fifo, sizeof(fifo), "%s/f", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(20);
    assert_int_equal(config_load(fifo, &cfg, &errs), -EINVAL);
    assert_int_equal(errs.n, 1);
    snprintf(want, sizeof(want), "%s:0: file: is not a regular file", fifo);
    assert_string_equal(errs.lines[0], want);
    ini_errors_clear(&errs);
    snprintf(text, sizeof(text), BASE "[consul]\ntoken_file = %s\n", fifo);
    EXPECT_ERRORS(text, {7, "token_file", "is not a regular file"});
    snprintf(text, sizeof(text), BASE "[consul]\nca_file = %s\n", fifo);
    EXPECT_ERRORS(text, {7, "ca_file", "is not a regular file"});
    snprintf(text, sizeof(text), BASE "[consul]\ntoken_file = /dev/null\n");
    EXPECT_ERRORS(text, {7, "token_file", "is not a regular file"});
    alarm(0);
    unlink(fifo);
    rmdir(dir);
}

/* Durations near 2^64 ms are refused by every key's maximum (they used to wrap deadlines into
 * the past), and a number times its unit that overflows is "too large". */
static void test_duration_maxima(void **state)
{
    uint64_t ms = 0;
    (void)state;

    EXPECT_ERRORS(BASE "[listener:b]\nbind = 127.0.0.1:1\nservice = api\n"
                       "idle_timeout = 18446744073709551615ms\n",
                  {9, "idle_timeout", "is too long (at most 604800000ms)"});
    EXPECT_ERRORS(BASE "[listener:b]\nbind = 127.0.0.1:1\nservice = api\n"
                       "connect_timeout = 18446744073709551615ms\n",
                  {9, "connect_timeout", "is too long (at most 3600000ms)"});
    EXPECT_ERRORS(BASE "[sluice]\nshutdown_timeout = 8d\n", {7, "shutdown_timeout", "not a"});
    EXPECT_ERRORS(BASE "[sluice]\nshutdown_timeout = 169h\n", {7, "shutdown_timeout", "too long"});
    assert_string_equal(ini_parse_duration("18446744073709551616ms", &ms), "is too large");
    assert_string_equal(ini_parse_duration("307445734561826m", &ms), "is too large");
    assert_null(ini_parse_duration("307445734561825m", &ms));
    assert_int_equal(clock_deadline(UINT64_MAX - 5, 10), UINT64_MAX);
    assert_int_equal(clock_deadline(5, UINT64_MAX), UINT64_MAX);
    assert_int_equal(clock_deadline(5, 10), 15);
}

/* anti_entropy's maximum, seen among whatever else [registration] reports. */
static void test_anti_entropy_maximum(void **state)
{
    struct ini_errors errs = {0};
    struct config *cfg = NULL;
    int found = 0;
    (void)state;

    assert_int_equal(
        load_text(BASE "[registration]\nanti_entropy = 18446744073709551615ms\n", &cfg, &errs),
        -EINVAL);
    for (size_t i = 0; i < errs.n; i++) {
        found = found || (strstr(errs.lines[i], ":7: anti_entropy: ") != NULL &&
                          strstr(errs.lines[i], "is too long (at most 86400000ms)") != NULL);
    }
    assert_true(found);
    ini_errors_clear(&errs);
}

/* A NUL byte is an error at its line, not the end of the value. */
static void test_nul_byte(void **state)
{
    static const char text[] = "[listener:web]\nbind = 127.0.0.1:18090\0garbage\nservice = api\n"
                               "[service:api]\nbackends = 127.0.0.1:9001\n";
    char path[] = "/tmp/sluice_test_nul_XXXXXX", want[128];
    struct ini_errors errs = {0};
    struct config *cfg = NULL;
    (void)state;

    write_file(path, text, sizeof(text) - 1);
    assert_int_equal(config_load(path, &cfg, &errs), -EINVAL);
    assert_int_equal(errs.n, 1);
    snprintf(want, sizeof(want), "%s:2: line: contains a NUL byte", path);
    assert_string_equal(errs.lines[0], want);
    ini_errors_clear(&errs);
    unlink(path);
}

/* A file over INI_FILE_MAX is refused before anything is read (the file is sparse). */
static void test_config_too_large(void **state)
{
    char path[] = "/tmp/sluice_test_big_XXXXXX", want[160];
    struct ini_errors errs = {0};
    struct config *cfg = NULL;
    (void)state;

    write_file(path, "[sluice]\n", 9);
    assert_int_equal(truncate(path, (off_t)INI_FILE_MAX + 1), 0);
    assert_int_equal(config_load(path, &cfg, &errs), -EFBIG);
    assert_int_equal(errs.n, 1);
    snprintf(want, sizeof(want), "%s:0: file: is larger than %u bytes", path, INI_FILE_MAX);
    assert_string_equal(errs.lines[0], want);
    ini_errors_clear(&errs);
    unlink(path);
}

/* Bytes of address space this process maps now, from /proc/self/statm. */
static uint64_t mapped_bytes(void)
{
    unsigned long long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    assert_non_null(f);
    assert_int_equal(fscanf(f, "%llu", &pages), 1);
    fclose(f);
    return (uint64_t)pages * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* Under the sanitizers: `sluice -t` on path with the sanitizer's allocator (ASan's or TSan's,
 * whichever the build has; the other ignores its variable) refusing anything over 32 MiB must
 * report the out-of-memory read error and exit 1. TSan's options keep the suite's own. */
static void sanitized_oom_check(const char *path)
{
    char cmd[1024], out[4096] = "";
    const char *bin = getenv("SLUICE_BIN");
    assert_non_null(bin);
    snprintf(cmd, sizeof(cmd),
             "ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=32 "
             "TSAN_OPTIONS=\"${TSAN_OPTIONS:-}:allocator_may_return_null=1:"
             "max_allocation_size_mb=32\" '%s' -t -c '%s' 2>&1",
             bin, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    print_message("%s", out);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    assert_non_null(strstr(out, ":0: file: cannot be read: out of memory"));
}

/* Out of memory while reading is an error, never a short file taken as whole: a child with
 * little address space left loads a 48 MiB file (sparse: blank bytes, then a broken section). */
static void test_out_of_memory_is_an_error(void **state)
{
    char path[] = "/tmp/sluice_test_oom_XXXXXX";
    int status = 0;
    pid_t pid;
    (void)state;

    write_file(path, "\n", 1);
    assert_int_equal(truncate(path, 48 << 20), 0);
    if (getenv("SLUICE_SANITIZED") != NULL) {
        /* ASan and TSan reserve terabytes of shadow memory, so RLIMIT_AS cannot be used: their own
         * allocator limit makes the same allocation fail in the real `sluice -t` */
        sanitized_oom_check(path);
        unlink(path);
        return;
    }
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct ini_errors errs = {0};
        struct config *cfg = NULL;
        uint64_t limit = mapped_bytes() + (16 << 20);
        struct rlimit rl = {.rlim_cur = limit, .rlim_max = limit};
        int rc = setrlimit(RLIMIT_AS, &rl) == 0 ? config_load(path, &cfg, &errs) : 99;
        _exit(rc == -ENOMEM && errs.n == 1 &&
                      strstr(errs.lines[0], ":0: file: cannot be read: "
                                            "out of memory") != NULL
                  ? 0
                  : 1);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    unlink(path);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_config_sets_every_field),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_workers),
        cmocka_unit_test(test_pid_file_and_lines),
        cmocka_unit_test(test_user_and_group),
        cmocka_unit_test(test_number_ranges),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_enums),
        cmocka_unit_test(test_duration_table),
        cmocka_unit_test(test_duration_keys),
        cmocka_unit_test(test_address_table),
        cmocka_unit_test(test_bind_errors),
        cmocka_unit_test(test_bad_sections),
        cmocka_unit_test(test_keys_of_rejected_section_are_ignored),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_duplicate_section),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_listener_references),
        cmocka_unit_test(test_listener_acl),
        cmocka_unit_test(test_duplicate_bind),
        cmocka_unit_test(test_no_listener),
        cmocka_unit_test(test_service_discovery),
        cmocka_unit_test(test_registry_discovery),
        cmocka_unit_test(test_backends),
        cmocka_unit_test(test_backend_host_names),
        cmocka_unit_test(test_comments_and_layout),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_multiple_errors_are_all_reported),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_unreadable_file),
        cmocka_unit_test(test_demo_config),
        cmocka_unit_test(test_health_and_resilience_keys),
        cmocka_unit_test(test_helpers),
        cmocka_unit_test(test_value_text_and_diff),
        cmocka_unit_test(test_client_limit_keys),
        cmocka_unit_test(test_malformed_line_hides_its_text),
        cmocka_unit_test(test_consul_address_userinfo),
        cmocka_unit_test(test_secret_value_not_echoed),
        cmocka_unit_test(test_fifo_is_refused),
        cmocka_unit_test(test_duration_maxima),
        cmocka_unit_test(test_anti_entropy_maximum),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_value_text_reads_back),
        cmocka_unit_test(test_config_too_large),
        cmocka_unit_test(test_out_of_memory_is_an_error),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
