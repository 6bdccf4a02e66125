/* Per-client limits end to end: max_connections_per_client holds (every admitted connection
 * echoes its bytes through the backends, the one beyond the cap is reset and counted), a closed
 * connection makes room, another source address (127.0.0.2) has its own count, a reload keeps
 * the counts; connection_rate_per_client refuses a burst beyond the bucket and admits again once
 * it refilled; sluice -t names FILE:LINE for bad values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static struct proc backends[2];
static int backend_ports[2];

static int setup(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++)
        if ((backend_ports[i] = backend_start(&backends[i], "echo", NULL)) <= 0)
            return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++)
        proc_stop(&backends[i], SIGTERM);
    return 0;
}

/* 1 when fd echoes a message of its own back whole (served), 0 when it gets an EOF or a reset
 * instead (refused); fails the test on anything else or when nothing comes within the wait. */
static int echoes(int fd, int tag)
{
    char msg[64], got[64];
    int len = snprintf(msg, sizeof(msg), "client-limits-%08d-payload", tag);
    size_t have = 0;

    if (send(fd, msg, (size_t)len, MSG_NOSIGNAL) != len) {
        assert_true(errno == ECONNRESET || errno == EPIPE);
        return 0;
    }
    while (have < (size_t)len) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&pfd, 1, HARNESS_WAIT_MS), 1);
        ssize_t n = recv(fd, got + have, sizeof(got) - have, 0);
        if (n <= 0) {
            assert_true(have == 0 && (n == 0 || errno == ECONNRESET));
            return 0;
        }
        have += (size_t)n;
    }
    assert_int_equal(have, len);
    assert_memory_equal(got, msg, (size_t)len);
    return 1;
}

/* A connection from src that must be served: it stays open, returned. */
static int held_from(const char *src, int port, int tag)
{
    int fd = tcp_connect_from(src, "127.0.0.1", port);
    if (!echoes(fd, tag))
        fail_msg("connection %d from %s was refused", tag, src);
    return fd;
}

/* A connection from src that must be refused. */
static void refused_from(const char *src, int port, int tag)
{
    int fd = tcp_connect_from(src, "127.0.0.1", port);
    if (echoes(fd, tag))
        fail_msg("connection %d from %s was served", tag, src);
    close(fd);
}

/* Waits until a sample reaches want (a close is seen by sluice a moment after it is made). */
static void sample_wait(int admin, const char *series, double want)
{
    uint64_t until = harness_now_ms() + HARNESS_WAIT_MS;
    while (metrics_scrape(admin, series) != want) {
        if (harness_now_ms() > until)
            fail_msg("%s stayed at %g, want %g", series, metrics_scrape(admin, series), want);
        sleep_ms(20);
    }
}

#define OPEN(l)        "sluice_listener_connections_open{listener=\"" l "\"}"
#define REJECTED(l, r) "sluice_listener_rejected_total{listener=\"" l "\",reason=\"" r "\"}"
#define ENTRIES(l)     "sluice_listener_client_entries{listener=\"" l "\"}"

static void write_conf(char *conf, size_t len, int admin, int port, int max, const char *idle)
{
    snprintf(conf, len,
             "[sluice]\nworkers = 2\nlog_format = json\n"
             "[admin]\nbind = 127.0.0.1:%d\n"
             "[listener:conn]\nbind = 127.0.0.1:%d\nservice = s\n"
             "max_connections_per_client = %d\nidle_timeout = %s\n"
             "[service:s]\nbackends = 127.0.0.1:%d, 127.0.0.1:%d\n",
             admin, port, max, idle, backend_ports[0], backend_ports[1]);
}

static void reload(struct proc *p, const char *conf, const char *applied)
{
    size_t from = log_size(p);
    config_write(p->conf_path, conf);
    proc_signal(p, SIGHUP);
    const char *change[] = {"\"event\":\"reload_applied\"", applied, NULL};
    assert_int_equal(log_wait(p, &from, NULL, 0, change), 0);
    const char *done[] = {"\"event\":\"reload_done\"", NULL};
    assert_int_equal(log_wait(p, &from, NULL, 0, done), 0);
}

#define MAX 3

static void test_connections_per_client(void **state)
{
    (void)state;
    struct proc p = {0};
    int admin = harness_free_port(), port = harness_free_port(), tag = 0;
    int one[MAX + 1], two[MAX];
    char conf[2048];

    write_conf(conf, sizeof(conf), admin, port, MAX, "5m");
    assert_int_equal(sluice_start(&p, conf), 0);

    for (int i = 0; i < MAX; i++)
        one[i] = held_from("127.0.0.1", port, tag++);
    refused_from("127.0.0.1", port, tag++);
    assert_true(metrics_scrape(admin, REJECTED("conn", "client_connections")) == 1);
    assert_true(metrics_scrape(admin, REJECTED("conn", "client_rate")) == 0);
    /* another source address has a count of its own */
    for (int i = 0; i < MAX; i++)
        two[i] = held_from("127.0.0.2", port, tag++);
    refused_from("127.0.0.2", port, tag++);
    assert_true(metrics_scrape(admin, REJECTED("conn", "client_connections")) == 2);
    assert_true(metrics_scrape(admin, ENTRIES("conn")) == 2);
    assert_true(metrics_scrape(admin, OPEN("conn")) == 2 * MAX);

    /* one closed makes room for one */
    close(one[0]);
    sample_wait(admin, OPEN("conn"), 2 * MAX - 1);
    one[0] = held_from("127.0.0.1", port, tag++);
    refused_from("127.0.0.1", port, tag++);
    assert_true(metrics_scrape(admin, REJECTED("conn", "client_connections")) == 3);

    /* a reload that changes another key keeps the table: still at the cap */
    write_conf(conf, sizeof(conf), admin, port, MAX, "1h");
    reload(&p, conf, "[listener:conn] idle_timeout: 5m -> 1h");
    refused_from("127.0.0.1", port, tag++);
    /* one that raises the cap keeps the counts too: exactly one more each, not MAX + 1 */
    write_conf(conf, sizeof(conf), admin, port, MAX + 1, "1h");
    reload(&p, conf, "[listener:conn] max_connections_per_client: 3 -> 4");
    one[MAX] = held_from("127.0.0.1", port, tag++);
    refused_from("127.0.0.1", port, tag++);
    assert_true(metrics_scrape(admin, REJECTED("conn", "client_connections")) == 5);
    /* sessions of the old versions release into the same table: all closed, all room again */
    for (int i = 0; i <= MAX; i++)
        close(one[i]);
    sample_wait(admin, OPEN("conn"), MAX);
    for (int i = 0; i <= MAX; i++)
        one[i] = held_from("127.0.0.1", port, tag++);
    refused_from("127.0.0.1", port, tag++);
    assert_true(metrics_scrape(admin, REJECTED("conn", "client_connections")) == 6);
    for (int i = 0; i <= MAX; i++)
        close(one[i]);
    for (int i = 0; i < MAX; i++)
        close(two[i]);
    sample_wait(admin, OPEN("conn"), 0);
    char status[16384];
    assert_int_equal(http_request(admin, "GET", "/status", NULL, status, sizeof(status)), 200);
    assert_non_null(strstr(status, "\"client_limits\":{\"max_connections_per_client\":4,"));
    assert_non_null(strstr(status, "\"client_connections\":6"));
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

#define RATE_TRIES 20

static void test_rate_per_client(void **state)
{
    (void)state;
    struct proc p = {0};
    int admin = harness_free_port(), port = harness_free_port();
    int served = 0, refused = 0;
    char conf[2048];

    /* 1 per second, bursts of 3: 20 connections in a row cannot all fit */
    snprintf(conf, sizeof(conf),
             "[sluice]\nworkers = 2\nlog_format = json\n"
             "[admin]\nbind = 127.0.0.1:%d\n"
             "[listener:rate]\nbind = 127.0.0.1:%d\nservice = s\n"
             "connection_rate_per_client = 1\nconnection_burst_per_client = 3\n"
             "[service:s]\nbackends = 127.0.0.1:%d, 127.0.0.1:%d\n",
             admin, port, backend_ports[0], backend_ports[1]);
    assert_int_equal(sluice_start(&p, conf), 0);
    for (int i = 0; i < RATE_TRIES; i++) {
        int fd = tcp_connect_from("127.0.0.1", "127.0.0.1", port);
        if (echoes(fd, i))
            served++;
        else
            refused++;
        close(fd);
    }
    assert_true(served >= 3);
    assert_true(refused >= 1);
    assert_true(metrics_scrape(admin, REJECTED("rate", "client_rate")) == refused);
    assert_true(metrics_scrape(admin, REJECTED("rate", "client_connections")) == 0);
    /* another source address has its own bucket */
    close(held_from("127.0.0.2", port, 100));
    /* well past the refill of one token */
    sleep_ms(3000);
    close(held_from("127.0.0.1", port, 101));
    assert_true(metrics_scrape(admin, REJECTED("rate", "client_rate")) == refused);
    assert_true(metrics_scrape(admin, ENTRIES("rate")) == 2);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

static void test_check_names_file_and_line(void **state)
{
    (void)state;
    char path[512], out[8192], want[700];

    snprintf(path, sizeof(path), "%s/limits-%d.ini", harness_tmpdir(), getpid());
    config_write(path, "[listener:a]\n"
                       "bind = 127.0.0.1:1\n"
                       "service = s\n"
                       "max_connections_per_client = 10000001\n" /* line 4: beyond the max */
                       "connection_rate_per_client = 2000000\n"  /* line 5: beyond the max */
                       "connection_burst_per_client = 0\n"       /* line 6: below 1 */
                       "client_ipv6_prefix = 129\n"              /* line 7 */
                       "client_table_size = 2000000\n"           /* line 8 */
                       "[listener:b]\n"
                       "bind = 127.0.0.1:2\n"
                       "service = s\n"
                       "connection_burst_per_client = 5\n" /* line 12: no rate */
                       "client_table_size = 1024\n"        /* line 13: no limit */
                       "[service:s]\n"
                       "backends = 127.0.0.1:9\n");
    char *argv[] = {(char *)harness_bin("SLUICE_BIN"), "-t", "-c", path, NULL};
    assert_int_equal(run_capture(argv, out, sizeof(out)), 1);
    const char *expect[] = {
        ":4: max_connections_per_client: \"10000001\" is out of range (0..10000000)",
        ":5: connection_rate_per_client: \"2000000\" is out of range (0..1000000)",
        ":6: connection_burst_per_client: \"0\" is out of range (1..1000000)",
        ":7: client_ipv6_prefix: \"129\" is out of range (1..128)",
        ":8: client_table_size: \"2000000\" is out of range (64..1048576)",
        ":12: connection_burst_per_client: only applies with connection_rate_per_client",
        ":13: client_table_size: only applies with max_connections_per_client or "
        "connection_rate_per_client",
    };
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        snprintf(want, sizeof(want), "%s%s", path, expect[i]);
        if (strstr(out, want) == NULL)
            fail_msg("missing '%s' in:\n%s", want, out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connections_per_client),
        cmocka_unit_test(test_rate_per_client),
        cmocka_unit_test(test_check_names_file_and_line),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
