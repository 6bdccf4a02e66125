/* Health and resilience end to end: passive ejection and its cap, TCP and HTTP checks, slow start,
 * drain, the per-service queue, and what a client gets when no instance is left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "pattern.h"

#define N_BACKENDS 4

/* A failed test may leave clients open: sluice must not wait its default 30 s for them. */
#define SLUICE_EXTRA "shutdown_timeout = 3s\n"

static struct proc sluice;
static struct proc backends[N_BACKENDS];
static int backend_ports[N_BACKENDS];

static int setup(void **state)
{
    (void)state;
    memset(&sluice, 0, sizeof(sluice));
    memset(backends, 0, sizeof(backends));
    memset(backend_ports, 0, sizeof(backend_ports));
    return 0;
}

/* Whatever a test started is stopped here, also when an assertion left the test early. */
static int teardown(void **state)
{
    (void)state;
    proc_stop(&sluice, SIGTERM);
    for (int i = 0; i < N_BACKENDS; i++)
        proc_stop(&backends[i], SIGTERM);
    return 0;
}

/* Starts sluice with one listener in front of the given backends line; returns its port. */
static int start_proxy(const char *backend_line, const char *listener_extra,
                       const char *service_extra)
{
    int port = harness_free_port();
    char conf[4096];
    config_simple(conf, sizeof(conf), port, backend_line, SLUICE_EXTRA, listener_extra,
                  service_extra);
    assert_int_equal(sluice_start(&sluice, conf), 0);
    return port;
}

/* Rewrites the running sluice's config (same listener port) and waits for its reload_done;
 * returns the log offset just past that line. */
static size_t reload_with(int port, const char *backend_line, const char *service_extra)
{
    char conf[4096];
    config_simple(conf, sizeof(conf), port, backend_line, SLUICE_EXTRA, "", service_extra);
    FILE *f = fopen(sluice.conf_path, "w");
    assert_non_null(f);
    fputs(conf, f);
    fclose(f);
    size_t from = log_size(&sluice);
    const char *done[] = {"\"event\":\"reload_done\"", NULL};
    proc_signal(&sluice, SIGHUP);
    assert_int_equal(log_wait(&sluice, &from, NULL, 0, done), 0);
    return from;
}

/* The "instance":"127.0.0.1:PORT" needle of log lines naming that instance. */
static const char *instance_needle(char *out, size_t len, int port)
{
    snprintf(out, len, "\"instance\":\"127.0.0.1:%d\"", port);
    return out;
}

/* Lines of the log between byte offsets from and to that hold every needle. */
static int log_count_range(const struct proc *p, size_t from, size_t to, const char *const *needles)
{
    FILE *f = fopen(p->log_path, "r");
    char line[16384];
    size_t at = from;
    int n = 0;

    assert_non_null(f);
    fseek(f, (long)from, SEEK_SET);
    while (at < to && fgets(line, sizeof(line), f) != NULL) {
        at += strlen(line);
        int all = 1;
        for (size_t i = 0; needles[i] != NULL && all; i++)
            all = strstr(line, needles[i]) != NULL;
        n += all;
    }
    fclose(f);
    return n;
}

/* One counter of a fresh stats line. */
static long long stat_of(const char *key)
{
    char stats[8192];
    assert_int_equal(sluice_stats(&sluice, stats, sizeof(stats)), 0);
    return log_field_int(stats, key);
}

/* Polls the stats line until counter key is at least want; fails the test when it never is. */
static void stat_wait(const char *key, long long want)
{
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    long long got;
    while ((got = stat_of(key)) < want && harness_now_ms() < deadline)
        sleep_ms(20);
    if (got < want)
        fail_msg("stats %s is %lld, expected %lld", key, got, want);
}

/* 1 when fd has neither bytes nor an EOF within ms (a client still waiting), 0 otherwise. */
static int still_waiting(int fd, int ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll(&pfd, 1, ms) == 0;
}

/* 1 when the next thing fd gets is a clean EOF, without a byte before it. */
static int eof_without_bytes(int fd)
{
    char c;
    ssize_t n;
    while ((n = recv(fd, &c, 1, 0)) < 0 && errno == EINTR)
        ;
    return n == 0;
}

/* Connects, expects a clean EOF without bytes (nothing to connect to), closes. */
static void expect_refused_cleanly(int port)
{
    int fd = tcp_connect(port);
    assert_true(fd >= 0);
    assert_true(eof_without_bytes(fd));
    close(fd);
}

/* Index i of the http backend "b<i>" whose answer ends the body (GET / through port), or -1. */
static int http_index(int port, int n_backends)
{
    char body[256];
    if (http_request(port, "GET", "/", NULL, body, sizeof(body)) != 200)
        return -1;
    size_t len = strlen(body);
    while (len > 0 && (body[len - 1] == '\n' || body[len - 1] == '\r'))
        body[--len] = '\0';
    if (len < 2 || body[len - 2] != 'b' || body[len - 1] < '0' || body[len - 1] >= '0' + n_backends)
        return -1;
    return body[len - 1] - '0';
}

/* Starts an http backend answering with "b<i>" in the body. */
static void http_backend_start(int i)
{
    char name[8];
    snprintf(name, sizeof(name), "b%d", i);
    const char *extra[] = {"--hello", name, NULL};
    backend_ports[i] = backend_start(&backends[i], "http", extra);
    assert_true(backend_ports[i] > 0);
}

/* Brings hello backend b<i> back on the port it had. */
static void hello_backend_restart(int i)
{
    char name[8];
    snprintf(name, sizeof(name), "b%d", i);
    const char *extra[] = {"--hello", name, NULL};
    assert_int_equal(backend_start_on(&backends[i], backend_ports[i], "echo", extra),
                     backend_ports[i]);
}

/* b1 stops: while it refuses, every client is served by b0 (the retry), exactly eject_after = 3
 * failed connects to b1 come before its instance_ejected line and none after it; once b1 is back
 * on its port it returns after eject_time (500 ms) and gets at least one of 20 connections. */
static void test_refusing_instance_is_ejected_and_returns(void **state)
{
    (void)state;
    char line[256], inst[64], ej[2048], stats[8192];
    assert_int_equal(hello_backends_start(backends, backend_ports, 2), 0);
    snprintf(line, sizeof(line), "127.0.0.1:%d, 127.0.0.1:%d", backend_ports[0], backend_ports[1]);
    int port = start_proxy(line, "", "eject_after = 3\neject_time = 500ms\n");
    instance_needle(inst, sizeof(inst), backend_ports[1]);
    const char *ejected[] = {"\"event\":\"instance_ejected\"", inst, NULL};
    const char *failed[] = {"\"event\":\"connect_failed\"", inst, NULL};
    const char *returned[] = {"\"event\":\"instance_returned\"", inst, NULL};

    proc_stop(&backends[1], SIGTERM);
    int made = 0;
    /* until the third failed connect; then the owner's own thread ejects, which we wait for
     * instead of racing it with more connections */
    while (log_count_all(&sluice, failed) < 3 && made < 200) {
        assert_int_equal(hello_index(port, 2), 0);
        made++;
    }
    size_t after_eject = 0;
    assert_int_equal(log_wait(&sluice, &after_eject, ej, sizeof(ej), ejected), 0);
    int before = log_count_range(&sluice, 0, after_eject, failed);
    print_message("b1 ejected after %d connections, %d failed connects before it\n", made, before);
    assert_int_equal(before, 3);
    assert_int_equal(log_field_int(ej, "ejections_in_row"), 1);
    for (int i = 0; i < 10; i++) /* ejected: not even tried */
        assert_int_equal(hello_index(port, 2), 0);
    assert_int_equal(log_count_all(&sluice, failed), 3);

    hello_backend_restart(1);
    size_t from = after_eject;
    assert_int_equal(log_wait(&sluice, &from, NULL, 0, returned), 0);
    int counts[2];
    assert_int_equal(count_hellos(port, 20, counts, 2), 0);
    print_message("after the return: b0 %d, b1 %d of 20\n", counts[0], counts[1]);
    assert_true(counts[1] >= 1);
    assert_int_equal(sluice_stats(&sluice, stats, sizeof(stats)), 0);
    assert_int_equal(log_field_int(stats, "sessions_established"), made + 10 + 20);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* Four instances, three of them dead, max_ejection_percent = 50: exactly 2 are ejected (never the
 * live b0), none returns (eject_time = 30s), the third dead one stays in the rotation (dialled
 * more than eject_after times), and all 60 clients are served by b0 (retries = 3 reach it). */
static void test_max_ejection_percent_caps_ejections(void **state)
{
    (void)state;
    char line[512], inst[64];
    assert_int_equal(hello_backends_start(backends, backend_ports, 4), 0);
    snprintf(line, sizeof(line), "127.0.0.1:%d, 127.0.0.1:%d, 127.0.0.1:%d, 127.0.0.1:%d",
             backend_ports[0], backend_ports[1], backend_ports[2], backend_ports[3]);
    int port = start_proxy(line, "retries = 3\n", "max_ejection_percent = 50\neject_time = 30s\n");
    for (int i = 1; i < 4; i++)
        proc_stop(&backends[i], SIGTERM);

    for (int i = 0; i < 60; i++)
        assert_int_equal(hello_index(port, 4), 0);
    const char *ejected[] = {"\"event\":\"instance_ejected\"", NULL};
    const char *returned[] = {"\"event\":\"instance_returned\"", NULL};
    size_t from = 0;
    assert_int_equal(log_wait(&sluice, &from, NULL, 0, ejected), 0);
    assert_int_equal(log_wait(&sluice, &from, NULL, 0, ejected), 0);
    for (int i = 0; i < 20; i++) /* more failures of the third: the cap must still hold */
        assert_int_equal(hello_index(port, 4), 0);
    assert_int_equal(log_count_all(&sluice, ejected), 2);
    assert_int_equal(log_count_all(&sluice, returned), 0);

    const char *b0_out[] = {"\"event\":\"instance_ejected\"",
                            instance_needle(inst, sizeof(inst), backend_ports[0]), NULL};
    assert_int_equal(log_count_all(&sluice, b0_out), 0);
    int kept_in = 0;
    for (int i = 1; i < 4; i++) {
        instance_needle(inst, sizeof(inst), backend_ports[i]);
        const char *out[] = {"\"event\":\"instance_ejected\"", inst, NULL};
        const char *failed[] = {"\"event\":\"connect_failed\"", inst, NULL};
        int dials = log_count_all(&sluice, failed);
        print_message("dead b%d: %d failed connects, ejected %d\n", i, dials,
                      log_count_all(&sluice, out));
        if (log_count_all(&sluice, out) == 0) {
            kept_in++;
            assert_true(dials > 3);
        }
    }
    assert_int_equal(kept_in, 1);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* backends = live, dead with passive health at its defaults (eject_after = 3, eject_time = 30s so
 * it cannot return): over 100 sequential connections the dead one is dialled at most 3 times, it
 * is ejected once, and every connection is served by the live one. */
static void test_dead_instance_dialled_at_most_eject_after(void **state)
{
    (void)state;
    char line[128], inst[64];
    const char *extra[] = {"--hello", "b0", NULL};
    backend_ports[0] = backend_start(&backends[0], "echo", extra);
    assert_true(backend_ports[0] > 0);
    int dead = harness_free_port();
    snprintf(line, sizeof(line), "127.0.0.1:%d, 127.0.0.1:%d", backend_ports[0], dead);
    int port = start_proxy(line, "", "eject_time = 30s\n");
    instance_needle(inst, sizeof(inst), dead);
    const char *failed[] = {"\"event\":\"connect_failed\"", inst, NULL};
    const char *ejected[] = {"\"event\":\"instance_ejected\"", inst, NULL};
    for (int i = 0, seen = 0; i < 100; i++) {
        assert_int_equal(hello_index(port, 1), 0);
        /* the owner ejects on its own thread: let it, rather than race it with more clients */
        if (!seen && log_count_all(&sluice, failed) >= 3) {
            size_t from = 0;
            assert_int_equal(log_wait(&sluice, &from, NULL, 0, ejected), 0);
            seen = 1;
        }
    }
    int dials = log_count_all(&sluice, failed);
    print_message("dead instance dialled %d times over 100 connections\n", dials);
    assert_true(dials >= 1 && dials <= 3);
    assert_int_equal(log_count_all(&sluice, ejected), 1);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* check = tcp (200 ms interval and timeout, rise 2, fall 2, passive health off): a killed b1 is
 * reported down after 2 failed probes, then 20 clients all reach b0 and b1 is never dialled; once
 * restarted it is reported up after 2 or more successful probes and serves again (at least one of
 * 20 connections). */
static void test_tcp_check_takes_out_and_brings_back(void **state)
{
    (void)state;
    char line[256], inst[64], down[2048], up[2048];
    assert_int_equal(hello_backends_start(backends, backend_ports, 2), 0);
    snprintf(line, sizeof(line), "127.0.0.1:%d, 127.0.0.1:%d", backend_ports[0], backend_ports[1]);
    int port = start_proxy(line, "",
                           "eject_after = 0\ncheck = tcp\ncheck_interval = 200ms\n"
                           "check_timeout = 200ms\ncheck_rise = 2\ncheck_fall = 2\n");
    instance_needle(inst, sizeof(inst), backend_ports[1]);
    const char *first_up[] = {"\"event\":\"health_up\"", inst, NULL};
    size_t from = 0;
    assert_int_equal(log_wait(&sluice, &from, NULL, 0, first_up), 0); /* first result decides */

    proc_stop(&backends[1], SIGKILL);
    const char *down_needles[] = {"\"event\":\"health_down\"", inst, NULL};
    assert_int_equal(log_wait(&sluice, &from, down, sizeof(down), down_needles), 0);
    assert_int_equal(log_field_int(down, "failures"), 2);
    size_t after_down = from;
    for (int i = 0; i < 20; i++)
        assert_int_equal(hello_index(port, 2), 0);
    const char *failed[] = {"\"event\":\"connect_failed\"", inst, NULL};
    assert_int_equal(log_count_range(&sluice, after_down, log_size(&sluice), failed), 0);

    hello_backend_restart(1);
    const char *up_needles[] = {"\"event\":\"health_up\"", inst, NULL};
    assert_int_equal(log_wait(&sluice, &from, up, sizeof(up), up_needles), 0);
    print_message("b1 back after %lld successful probes\n", log_field_int(up, "successes"));
    assert_true(log_field_int(up, "successes") >= 2);
    int counts[2];
    assert_int_equal(count_hellos(port, 20, counts, 2), 0);
    assert_true(counts[1] >= 1);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* check = http (200 ms, rise 2, fall 2, passive health off) over two http backends: b1 answering
 * 503 is reported down after 2 failures with "HTTP 503", then 10 requests are all answered by b0;
 * b1 answering 200 again is reported up after 2 successes and answers one of 10 requests again. */
static void test_http_check_follows_status(void **state)
{
    (void)state;
    char line[256], inst[64], down[2048], up[2048];
    http_backend_start(0);
    http_backend_start(1);
    snprintf(line, sizeof(line), "127.0.0.1:%d, 127.0.0.1:%d", backend_ports[0], backend_ports[1]);
    int port = start_proxy(line, "",
                           "eject_after = 0\ncheck = http\ncheck_interval = 200ms\n"
                           "check_rise = 2\ncheck_fall = 2\n");
    instance_needle(inst, sizeof(inst), backend_ports[1]);
    const char *first_up[] = {"\"event\":\"health_up\"", inst, NULL};
    size_t from = 0;
    assert_int_equal(log_wait(&sluice, &from, NULL, 0, first_up), 0);
    int seen1 = 0;
    for (int i = 0; i < 10; i++) /* both answer while healthy */
        seen1 += http_index(port, 2) == 1;
    assert_true(seen1 >= 1);

    proc_signal(&backends[1], SIGUSR1);
    const char *down_needles[] = {"\"event\":\"health_down\"", inst, NULL};
    assert_int_equal(log_wait(&sluice, &from, down, sizeof(down), down_needles), 0);
    assert_non_null(strstr(down, "HTTP 503"));
    assert_int_equal(log_field_int(down, "failures"), 2);
    for (int i = 0; i < 10; i++)
        assert_int_equal(http_index(port, 2), 0);

    proc_signal(&backends[1], SIGUSR2);
    const char *up_needles[] = {"\"event\":\"health_up\"", inst, NULL};
    assert_int_equal(log_wait(&sluice, &from, up, sizeof(up), up_needles), 0);
    assert_true(log_field_int(up, "successes") >= 2);
    int back = 0;
    for (int i = 0; i < 10 && !back; i++) {
        int b = http_index(port, 2);
        assert_true(b >= 0);
        back = b == 1;
    }
    assert_true(back);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* A sink instance (accepts, never answers) under check = http with check_timeout = 300ms and
 * check_fall = 1 is reported down with libcurl's "Timeout was reached"; the http instance b0 stays
 * up and answers all 10 requests. */
static void test_hanging_check_is_a_timeout(void **state)
{
    (void)state;
    char line[256], inst[64], down[2048], b0[64];
    http_backend_start(0);
    backend_ports[1] = backend_start(&backends[1], "sink", NULL);
    assert_true(backend_ports[1] > 0);
    snprintf(line, sizeof(line), "127.0.0.1:%d, 127.0.0.1:%d", backend_ports[0], backend_ports[1]);
    int port = start_proxy(line, "",
                           "eject_after = 0\ncheck = http\ncheck_interval = 500ms\n"
                           "check_timeout = 300ms\ncheck_fall = 1\n");
    instance_needle(inst, sizeof(inst), backend_ports[1]);
    const char *down_needles[] = {"\"event\":\"health_down\"", inst, NULL};
    assert_int_equal(log_wait(&sluice, NULL, down, sizeof(down), down_needles), 0);
    print_message("sink down: %s", down);
    assert_non_null(strstr(down, "Timeout was reached"));
    for (int i = 0; i < 10; i++)
        assert_int_equal(http_index(port, 2), 0);
    const char *b0_down[] = {"\"event\":\"health_down\"",
                             instance_needle(b0, sizeof(b0), backend_ports[0]), NULL};
    assert_int_equal(log_count_all(&sluice, b0_down), 0);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* balance = weighted, slow_start = 4s: b2 joins b0 and b1 by a reload and starts at 10 % of its
 * weight. Windows of 30 connections (about 0.5 s each) for 6 s: b2's share in the first window is
 * below 0.25 (about 0.05 expected), in the last one (after the ramp) within 0.2-0.47 (1/3
 * expected), and the last is above the first. */
static void test_slow_start_ramps_share(void **state)
{
    (void)state;
    enum { WINDOW = 30, MAX_WINDOWS = 20 };
    char line[256];
    assert_int_equal(hello_backends_start(backends, backend_ports, 3), 0);
    const char *service = "balance = weighted\nslow_start = 4s\n";
    snprintf(line, sizeof(line), "127.0.0.1:%d, 127.0.0.1:%d", backend_ports[0], backend_ports[1]);
    int port = start_proxy(line, "", service);
    int counts[3];
    assert_int_equal(count_hellos(port, 10, counts, 3), 0);
    assert_int_equal(counts[2], 0);

    snprintf(line, sizeof(line), "127.0.0.1:%d, 127.0.0.1:%d, 127.0.0.1:%d", backend_ports[0],
             backend_ports[1], backend_ports[2]);
    reload_with(port, line, service);
    uint64_t t0 = harness_now_ms();
    double share[MAX_WINDOWS];
    uint64_t began[MAX_WINDOWS];
    int n = 0;
    while (n < MAX_WINDOWS && (n < 2 || harness_now_ms() - t0 < 6000)) {
        int b2 = 0;
        began[n] = harness_now_ms() - t0;
        for (int i = 0; i < WINDOW; i++) {
            int b = hello_index(port, 3);
            assert_true(b >= 0);
            b2 += b == 2;
            sleep_ms(15);
        }
        share[n] = (double)b2 / WINDOW;
        print_message("window %2d from %5llu ms: b2 share %.3f\n", n, (unsigned long long)began[n],
                      share[n]);
        n++;
    }
    assert_true(began[n - 1] >= 4500); /* the last window lies after the ramp */
    assert_true(share[0] < 0.25);
    assert_true(share[n - 1] >= 0.2 && share[n - 1] <= 0.47);
    assert_true(share[n - 1] > share[0]);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* Drain: a download from source A (128 MiB) goes on while a reload removes A (drain_timeout = 0):
 * every byte arrives intact, new clients reach B, and nothing is counted as drained. With
 * drain_timeout = 1s a download that cannot finish (8 GiB, not read meanwhile) is closed before
 * its total: drained = 1 and a session_end with "reason":"drained". */
static void test_drain_keeps_transfer_then_times_out(void **state)
{
    (void)state;
    static unsigned char buf[65536];
    char line_a[64], line_b[64], hello[32], inst[64];
    const char *hello_b[] = {"--hello", "B", NULL};
    backend_ports[0] = backend_start(&backends[0], "source", NULL);
    backend_ports[1] = backend_start(&backends[1], "echo", hello_b);
    assert_true(backend_ports[0] > 0 && backend_ports[1] > 0);
    snprintf(line_a, sizeof(line_a), "127.0.0.1:%d", backend_ports[0]);
    snprintf(line_b, sizeof(line_b), "127.0.0.1:%d", backend_ports[1]);

    int port = start_proxy(line_a, "", "");
    int fd = tcp_connect(port);
    assert_true(fd >= 0);
    uint64_t total = harness_scale(128ULL << 20), seed = 21;
    assert_int_equal(source_request(fd, total, seed), 0);
    assert_int_equal(read_exact(fd, buf, sizeof(buf)), 0);
    assert_int_equal(pattern_check(seed, 0, buf, sizeof(buf)), -1);
    size_t reloaded = reload_with(port, line_b, "");
    for (int i = 0; i < 5; i++) {
        assert_int_equal(hello_of(port, hello, sizeof(hello)), 0);
        assert_string_equal(hello, "B");
    }
    assert_int_equal(read_pattern_to_eof(fd, seed, sizeof(buf)), (int64_t)total);
    close(fd);
    /* the download really outlived the reload: its end comes after reload_done */
    const char *done[] = {"\"event\":\"session_end\"",
                          instance_needle(inst, sizeof(inst), backend_ports[0]),
                          "\"reason\":\"done\"", NULL};
    assert_int_equal(log_wait(&sluice, &reloaded, NULL, 0, done), 0);
    assert_int_equal(stat_of("drained"), 0);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);

    port = start_proxy(line_a, "", "drain_timeout = 1s\n");
    fd = tcp_connect(port);
    assert_true(fd >= 0);
    total = 8ULL << 30;
    assert_int_equal(source_request(fd, total, seed), 0);
    assert_int_equal(read_exact(fd, buf, sizeof(buf)), 0);
    assert_int_equal(pattern_check(seed, 0, buf, sizeof(buf)), -1);
    size_t from = reload_with(port, line_b, "drain_timeout = 1s\n");
    const char *drained[] = {"\"event\":\"session_end\"", "\"reason\":\"drained\"", NULL};
    assert_int_equal(log_wait(&sluice, &from, NULL, 0, drained), 0);
    int64_t reached = read_pattern_to_eof(fd, seed, sizeof(buf));
    print_message("drained download ended at offset %lld of %llu\n", (long long)reached,
                  (unsigned long long)total);
    assert_true(reached < (int64_t)total); /* -1 (reset) is accepted too */
    close(fd);
    assert_int_equal(stat_of("drained"), 1);
    assert_int_equal(hello_of(port, hello, sizeof(hello)), 0);
    assert_string_equal(hello, "B");
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* Starts one echo backend "b0" behind a service with max_connections = 1, queue_size = 2 and
 * queue_timeout = 2s; returns the listener port. */
static int start_queue_proxy(void)
{
    char line[64];
    const char *extra[] = {"--hello", "b0", NULL};
    backend_ports[0] = backend_start(&backends[0], "echo", extra);
    assert_true(backend_ports[0] > 0);
    snprintf(line, sizeof(line), "127.0.0.1:%d", backend_ports[0]);
    return start_proxy(line, "", "max_connections = 1\nqueue_size = 2\nqueue_timeout = 2s\n");
}

/* Connects and reads the "b0" greeting: a client that got the one slot. */
static int connect_served(int port)
{
    char hello[32];
    int fd = tcp_connect(port);
    assert_true(fd >= 0);
    assert_true(read_line(fd, hello, sizeof(hello)) > 0);
    assert_string_equal(hello, "b0");
    return fd;
}

/* Waits until one of fds[n] is readable; returns its index, or -1 after HARNESS_WAIT_MS. */
static int first_readable(const int *fds, int n)
{
    struct pollfd pfd[4];
    assert_true(n <= 4);
    for (int i = 0; i < n; i++)
        pfd[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    if (poll(pfd, (nfds_t)n, HARNESS_WAIT_MS) <= 0)
        return -1;
    for (int i = 0; i < n; i++)
        if (pfd[i].revents != 0)
            return i;
    return -1;
}

/* max_connections = 1 (per instance), queue_size = 2: with C1 served, C2 and C3 wait without a
 * byte (C2 sends 5 bytes meanwhile), C4 is refused at once (EOF without a byte;
 * all_full 1, "reason":"queue_full"); freeing C1 serves C2 first while C3 still waits (FIFO),
 * freeing C2 serves C3, and C2's early bytes reach the backend once it is served. Counters:
 * queued 2 (the clients that waited), queue_timeouts 0, all_full 1. */
static void test_queue_serves_in_order_and_refuses_when_full(void **state)
{
    (void)state;
    char hello[32], back[8];
    int port = start_queue_proxy();
    int c1 = connect_served(port);
    int c2 = tcp_connect(port);
    assert_true(c2 >= 0);
    stat_wait("queued", 1); /* C2 is in the queue before C3 arrives */
    assert_int_equal(write_all(c2, "early", 5), 0);
    int c3 = tcp_connect(port);
    assert_true(c3 >= 0);
    stat_wait("queued", 2);
    int c4 = tcp_connect(port);
    assert_true(c4 >= 0);
    assert_true(eof_without_bytes(c4));
    close(c4);
    assert_int_equal(stat_of("all_full"), 1);
    const char *full[] = {"\"event\":\"session_end\"", "\"reason\":\"queue_full\"", NULL};
    assert_int_equal(log_wait(&sluice, NULL, NULL, 0, full), 0);
    assert_true(still_waiting(c2, 200));
    assert_true(still_waiting(c3, 0));

    close(c1);
    const int waiting[] = {c2, c3};
    int first = first_readable(waiting, 2);
    if (first != 0)
        fail_msg("freeing the slot served %s, expected C2 (queued first)",
                 first == 1 ? "C3" : "nobody");
    assert_true(read_line(c2, hello, sizeof(hello)) > 0);
    assert_string_equal(hello, "b0");
    assert_int_equal(read_exact(c2, back, 5), 0); /* kept by the kernel until served */
    assert_memory_equal(back, "early", 5);
    assert_true(still_waiting(c3, 200));
    close(c2);
    assert_true(read_line(c3, hello, sizeof(hello)) > 0);
    assert_string_equal(hello, "b0");
    assert_int_equal(write_all(c3, "after", 5), 0); /* served for real: echoes */
    assert_int_equal(read_exact(c3, back, 5), 0);
    assert_memory_equal(back, "after", 5);
    close(c3);
    char stats[8192];
    assert_int_equal(sluice_stats(&sluice, stats, sizeof(stats)), 0);
    assert_int_equal(log_field_int(stats, "queued"), 2);
    assert_int_equal(log_field_int(stats, "queue_timeouts"), 0);
    assert_int_equal(log_field_int(stats, "all_full"), 1);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* queue_timeout = 2s: a client queued behind a held one, with no slot freed, gets EOF without a
 * byte once its time is out ("reason":"queue_timeout"), while the held one keeps working.
 * Counters: queued 1, queue_timeouts 1, all_full 0. */
static void test_queue_times_out(void **state)
{
    (void)state;
    char back[8];
    int port = start_queue_proxy();
    int held = connect_served(port);
    int late = tcp_connect(port);
    assert_true(late >= 0);
    stat_wait("queued", 1);
    if (still_waiting(late, HARNESS_WAIT_MS))
        fail_msg("a queued client still waits after %d ms (queue_timeout = 2s)", HARNESS_WAIT_MS);
    assert_true(eof_without_bytes(late));
    close(late);
    const char *timed_out[] = {"\"event\":\"session_end\"", "\"reason\":\"queue_timeout\"", NULL};
    assert_int_equal(log_wait(&sluice, NULL, NULL, 0, timed_out), 0);
    const char *no_bytes[] = {"\"event\":\"session_end\"", "\"reason\":\"queue_timeout\"",
                              "\"bytes_down\":0,", NULL};
    assert_int_equal(log_count_all(&sluice, no_bytes), 1);
    assert_int_equal(write_all(held, "still", 5), 0);
    assert_int_equal(read_exact(held, back, 5), 0);
    assert_memory_equal(back, "still", 5);
    close(held);
    char stats[8192];
    assert_int_equal(sluice_stats(&sluice, stats, sizeof(stats)), 0);
    assert_int_equal(log_field_int(stats, "queued"), 1);
    assert_int_equal(log_field_int(stats, "queue_timeouts"), 1);
    assert_int_equal(log_field_int(stats, "all_full"), 0);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* Two dead instances, passive health off: clients for 3 s each get a clean EOF, and sluice warns
 * no_instance_available "reason":"all_failed" for "service":"api" at least once and at most once a
 * second (elapsed seconds + 1). One dead instance with max_ejection_percent = 100: once it is
 * ejected the next clients get "reason":"no_instances" (counter no_instance). */
static void test_nothing_left_warns_once_a_second(void **state)
{
    (void)state;
    char line[128];
    snprintf(line, sizeof(line), "127.0.0.1:%d, 127.0.0.1:%d", harness_free_port(),
             harness_free_port());
    int port = start_proxy(line, "", "eject_after = 0\n");
    uint64_t t0 = harness_now_ms();
    int made = 0;
    while (harness_now_ms() - t0 < 3000) {
        expect_refused_cleanly(port);
        made++;
        sleep_ms(20);
    }
    uint64_t elapsed = harness_now_ms() - t0;
    const char *warned[] = {"\"event\":\"no_instance_available\"", NULL};
    const char *failed[] = {"\"event\":\"no_instance_available\"", "\"service\":\"api\"",
                            "\"reason\":\"all_failed\"", NULL};
    int lines = log_count_all(&sluice, failed);
    print_message("%d clients in %llu ms: %d all_failed warnings\n", made,
                  (unsigned long long)elapsed, lines);
    assert_true(lines >= 1);
    assert_true(lines <= (int)(elapsed / 1000) + 1);
    assert_int_equal(log_count_all(&sluice, warned), lines);
    assert_int_equal(stat_of("all_failed"), made);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);

    snprintf(line, sizeof(line), "127.0.0.1:%d", harness_free_port());
    port = start_proxy(line, "", "max_ejection_percent = 100\neject_time = 30s\n");
    const char *ejected[] = {"\"event\":\"instance_ejected\"", NULL};
    for (int i = 0; i < 50 && log_count_all(&sluice, ejected) == 0; i++)
        expect_refused_cleanly(port); /* each one is a failed connect */
    size_t from = 0;
    assert_int_equal(log_wait(&sluice, &from, NULL, 0, ejected), 0);
    expect_refused_cleanly(port); /* the next client finds nothing to try */
    const char *ended[] = {"\"event\":\"session_end\"", "\"reason\":\"no_instance\"",
                           "\"attempts\":0,", NULL};
    assert_int_equal(log_wait(&sluice, &from, NULL, 0, ended), 0);
    const char *none[] = {"\"event\":\"no_instance_available\"", "\"service\":\"api\"",
                          "\"reason\":\"no_instances\"", NULL};
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    while (log_count_all(&sluice, none) == 0 && harness_now_ms() < deadline) {
        expect_refused_cleanly(port); /* the warning is once a second: keep asking */
        sleep_ms(100);
    }
    assert_true(log_count_all(&sluice, none) >= 1);
    assert_true(stat_of("no_instance") >= 1);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refusing_instance_is_ejected_and_returns, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_max_ejection_percent_caps_ejections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_instance_dialled_at_most_eject_after, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tcp_check_takes_out_and_brings_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_check_follows_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hanging_check_is_a_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_start_ramps_share, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain_keeps_transfer_then_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_serves_in_order_and_refuses_when_full, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nothing_left_warns_once_a_second, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
