/* Which backend gets the connection: balancers end to end, retries on refused and timed-out
 * connects, all instances down, idle timeout, and the max_connections pause. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define N_BACKENDS 3

static struct proc backends[N_BACKENDS];
static int backend_ports[N_BACKENDS];

static int setup(void **state)
{
    (void)state;
    return hello_backends_start(backends, backend_ports, N_BACKENDS);
}

static int teardown(void **state)
{
    (void)state;
    hello_backends_stop(backends, N_BACKENDS);
    return 0;
}

/* Starts sluice in front of the given backends line; returns its listener port. */
static int start_proxy(struct proc *p, const char *backend_line, const char *sluice_extra,
                       const char *listener_extra, const char *service_extra)
{
    int port = harness_free_port();
    char conf[2048];
    config_simple(conf, sizeof(conf), port, backend_line, sluice_extra, listener_extra,
                  service_extra);
    assert_int_equal(sluice_start(p, conf), 0);
    return port;
}

static void backends_line(char *out, size_t len, const char *w0, const char *w1, const char *w2)
{
    snprintf(out, len, "127.0.0.1:%d%s, 127.0.0.1:%d%s, 127.0.0.1:%d%s", backend_ports[0], w0,
             backend_ports[1], w1, backend_ports[2], w2);
}

static void test_round_robin_spreads_evenly(void **state)
{
    (void)state;
    struct proc p = {0};
    char line[256];
    backends_line(line, sizeof(line), "", "", "");
    int port = start_proxy(&p, line, "", "", "");
    int counts[N_BACKENDS];
    assert_int_equal(count_hellos(port, 30, counts, N_BACKENDS), 0);
    for (int i = 0; i < N_BACKENDS; i++)
        assert_int_equal(counts[i], 10); /* one worker, sequential: exact rotation */
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

static void test_weighted_respects_weights(void **state)
{
    (void)state;
    struct proc p = {0};
    char line[256];
    backends_line(line, sizeof(line), " weight=5", " weight=1", " weight=2");
    int port = start_proxy(&p, line, "", "", "balance = weighted\n");
    int counts[N_BACKENDS];
    /* ten full cycles of the smooth sequence */
    assert_int_equal(count_hellos(port, 80, counts, N_BACKENDS), 0);
    assert_int_equal(counts[0], 50);
    assert_int_equal(counts[1], 10);
    assert_int_equal(counts[2], 20);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

/* Two connections held open on b0 and b1: least_connections sends the next ones to b2. */
static void test_least_connections_prefers_emptiest(void **state)
{
    (void)state;
    struct proc p = {0};
    char line[256];
    backends_line(line, sizeof(line), "", "", "");
    int port = start_proxy(&p, line, "", "", "balance = least_connections\n");
    int held[2];
    char hello[32];
    int empty = hold_connections(port, held, 2);
    assert_true(empty >= 0);
    size_t from = log_size(&p);
    for (int i = 0; i < 5; i++) { /* short ones come and go: the emptiest keeps winning */
        assert_int_equal(hello_of(port, hello, sizeof(hello)), 0);
        assert_int_equal(hello[1] - '0', empty);
        /* the next pick must see this one gone: wait for its end in the log */
        const char *ended[] = {"\"event\":\"session_end\"", NULL};
        assert_int_equal(log_wait(&p, &from, NULL, 0, ended), 0);
    }
    close(held[0]);
    close(held[1]);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

/* One instance refuses: every client still gets a live backend, never an error. */
static void test_refused_instance_is_retried(void **state)
{
    (void)state;
    struct proc p = {0};
    char line[256];
    int dead = harness_free_port();
    snprintf(line, sizeof(line), "127.0.0.1:%d, 127.0.0.1:%d", dead, backend_ports[1]);
    int port = start_proxy(&p, line, "", "retries = 2\n", "eject_after = 0\n");
    for (int i = 0; i < 10; i++) {
        char hello[32];
        assert_int_equal(hello_of(port, hello, sizeof(hello)), 0);
        assert_string_equal(hello, "b1");
    }
    char stats[4096];
    assert_int_equal(sluice_stats(&p, stats, sizeof(stats)), 0);
    assert_true(log_field_int(stats, "retries") >= 5);
    assert_int_equal(log_field_int(stats, "sessions_established"), 10);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

/* Dials of the dead instance (each one a connect_failed line naming it) while n connections go
 * through port; every connection must still reach a live backend. */
static int dead_first_dials(struct proc *p, int port, int dead, int n, int n_live)
{
    char needle[64];
    int counts[N_BACKENDS];
    snprintf(needle, sizeof(needle), "\"instance\":\"127.0.0.1:%d\"", dead);
    const char *failed[] = {"\"event\":\"connect_failed\"", needle, NULL};
    assert_int_equal(count_hellos(port, n, counts, n_live), 0);
    char stats[4096];
    assert_int_equal(sluice_stats(p, stats, sizeof(stats)), 0);
    assert_int_equal(log_field_int(stats, "sessions_established"), n);
    return log_count_all(p, failed);
}

/* A retry picks another instance without moving the rotation that first attempts follow (passive
 * health off, so that the dead instance stays in the rotation): the
 * dead one of two is dialled first on at most 55 of 100 connections, the dead one of three on
 * at most 40 (an even rotation gives 50 and 33; a retry that advanced the cursor sent every
 * connection to the dead one first). */
static void test_retries_do_not_skew_rotation(void **state)
{
    (void)state;
    struct proc p = {0};
    char line[256];
    int dead = harness_free_port();

    snprintf(line, sizeof(line), "127.0.0.1:%d, 127.0.0.1:%d", backend_ports[0], dead);
    int port = start_proxy(&p, line, "", "retries = 2\n", "eject_after = 0\n");
    int two = dead_first_dials(&p, port, dead, 100, 1);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
    print_message("2 backends, 1 dead: dead dialled first on %d of 100 connections\n", two);
    assert_true(two <= 55);

    snprintf(line, sizeof(line), "127.0.0.1:%d, 127.0.0.1:%d, 127.0.0.1:%d", backend_ports[0], dead,
             backend_ports[1]);
    port = start_proxy(&p, line, "", "retries = 2\n", "eject_after = 0\n");
    int three = dead_first_dials(&p, port, dead, 100, 2);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
    print_message("3 backends, 1 dead: dead dialled first on %d of 100 connections\n", three);
    assert_true(three <= 40);
}

/* A listener whose accept queue is full drops SYNs: connects to it time out, and sluice moves on
 * to the next instance within connect_timeout. */
static void test_connect_timeout_is_retried(void **state)
{
    (void)state;
    int bh = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(bh, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(bh, 0), 0);
    getsockname(bh, (struct sockaddr *)&a, &alen);
    int filler[4];
    for (int i = 0; i < 4; i++) { /* fill the queue; later SYNs are dropped */
        filler[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(filler[i], (struct sockaddr *)&a, sizeof(a));
    }
    sleep_ms(100);
    struct proc p = {0};
    char line[256];
    snprintf(line, sizeof(line), "127.0.0.1:%d, 127.0.0.1:%d", ntohs(a.sin_port), backend_ports[2]);
    int port = start_proxy(&p, line, "", "connect_timeout = 300ms\nretries = 1\n", "");
    for (int i = 0; i < 4; i++) {
        char hello[32];
        assert_int_equal(hello_of(port, hello, sizeof(hello)), 0);
        assert_string_equal(hello, "b2");
    }
    char stats[4096];
    assert_int_equal(sluice_stats(&p, stats, sizeof(stats)), 0);
    assert_true(log_field_int(stats, "connect_timeouts") >= 1);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
    for (int i = 0; i < 4; i++)
        close(filler[i]);
    close(bh);
}

/* Nothing to connect to: after the retries the client gets a clean close (FIN, not RST). */
static void test_all_instances_down_closes_cleanly(void **state)
{
    (void)state;
    struct proc p = {0};
    char line[128];
    snprintf(line, sizeof(line), "127.0.0.1:%d, 127.0.0.1:%d", harness_free_port(),
             harness_free_port());
    int port = start_proxy(&p, line, "", "retries = 3\n", "");
    int fd = tcp_connect(port);
    assert_true(fd >= 0);
    char c;
    errno = 0;
    assert_int_equal(recv(fd, &c, 1, 0), 0); /* EOF, not ECONNRESET */
    close(fd);
    char end[2048];
    const char *needles[] = {"\"event\":\"session_end\"", "upstream_unavailable", NULL};
    assert_int_equal(log_wait(&p, NULL, end, sizeof(end), needles), 0);
    assert_int_equal(log_field_int(end, "attempts"), 2); /* both instances, no more */
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

static void test_idle_timeout_closes_quiet_sessions(void **state)
{
    (void)state;
    struct proc p = {0};
    char line[64];
    snprintf(line, sizeof(line), "127.0.0.1:%d", backend_ports[0]);
    int port = start_proxy(&p, line, "", "idle_timeout = 600ms\n", "");
    int quiet = tcp_connect(port), busy = tcp_connect(port);
    char hello[32];
    assert_true(read_line(quiet, hello, sizeof(hello)) > 0);
    assert_true(read_line(busy, hello, sizeof(hello)) > 0);
    for (int i = 0; i < 12; i++) { /* 1.2 s of traffic every 100 ms keeps busy alive */
        assert_int_equal(write_all(busy, "k", 1), 0);
        char c;
        assert_int_equal(read_exact(busy, &c, 1), 0);
        sleep_ms(100);
    }
    assert_int_equal(wait_closed(quiet, HARNESS_WAIT_MS), 1);
    assert_int_equal(write_all(busy, "z", 1), 0);
    char c;
    assert_int_equal(read_exact(busy, &c, 1), 0);
    assert_int_equal(c, 'z');
    close(quiet);
    close(busy);
    char end[2048];
    const char *needles[] = {"\"event\":\"session_end\"", "idle_timeout", NULL};
    assert_int_equal(log_wait(&p, NULL, end, sizeof(end), needles), 0);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

/* At max_connections sluice stops accepting (the kernel queues the newcomer), logs it, and
 * serves the newcomer as soon as a slot frees up. */
static void test_max_connections_pauses_and_resumes(void **state)
{
    (void)state;
    struct proc p = {0};
    char line[64];
    snprintf(line, sizeof(line), "127.0.0.1:%d", backend_ports[0]);
    int port = start_proxy(&p, line, "max_connections = 3\n", "", "");
    int fds[3];
    char hello[32];
    for (int i = 0; i < 3; i++) {
        fds[i] = tcp_connect(port);
        assert_true(read_line(fds[i], hello, sizeof(hello)) > 0);
    }
    int extra = tcp_connect(port); /* completes in the kernel, waits for accept */
    assert_true(extra >= 0);
    const char *needles[] = {"\"event\":\"accept_paused\"", "max_connections", NULL};
    assert_int_equal(log_wait(&p, NULL, NULL, 0, needles), 0);
    assert_int_equal(wait_closed(extra, 300), 0); /* not served, not dropped */
    close(fds[0]);
    assert_true(read_line(extra, hello, sizeof(hello)) > 0);
    assert_string_equal(hello, "b0");
    close(extra);
    close(fds[1]);
    close(fds[2]);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

/* A descriptor limit far below max_connections: sluice lowers its cap to fit (and says so),
 * pauses accepting instead of spinning, failing connects or dying, keeps the open sessions
 * working, and serves every waiting client once descriptors free up. */
static void test_fd_exhaustion_pauses_and_recovers(void **state)
{
    (void)state;
    enum { N = 40 };
    struct proc p = {0};
    char line[64], conf[2048];
    int port = harness_free_port();
    snprintf(line, sizeof(line), "127.0.0.1:%d", backend_ports[0]);
    config_simple(conf, sizeof(conf), port, line, "", "", "");
    const char *wrapper[] = {"/usr/bin/prlimit", "--nofile=48:48", NULL};
    assert_int_equal(sluice_start_wrapped(&p, conf, wrapper), 0);
    int fds[N], served = 0;
    char hello[32];
    for (int i = 0; i < N; i++) {
        fds[i] = tcp_connect(port); /* the kernel completes them all; sluice cannot take all */
        assert_true(fds[i] >= 0);
    }
    const char *lowered[] = {"\"event\":\"max_connections_lowered\"", NULL};
    assert_int_equal(log_wait(&p, NULL, NULL, 0, lowered), 0);
    const char *paused[] = {"\"event\":\"accept_paused\"", NULL};
    assert_int_equal(log_wait(&p, NULL, NULL, 0, paused), 0);
    assert_true(read_line(fds[0], hello, sizeof(hello)) > 0); /* the first ones are served */
    assert_int_equal(write_all(fds[0], "x", 1), 0);
    assert_int_equal(read_exact(fds[0], hello, 1), 0);
    served = 1;
    close(fds[0]);
    for (int i = 1; i < N; i++) { /* close served ones as we go: the rest get their turn */
        if (read_line(fds[i], hello, sizeof(hello)) > 0)
            served++;
        close(fds[i]);
    }
    assert_int_equal(served, N);
    char stats[4096];
    assert_int_equal(sluice_stats(&p, stats, sizeof(stats)), 0);
    assert_int_equal(log_field_int(stats, "resets"), 0);
    assert_int_equal(log_field_int(stats, "alloc_failures"), 0);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin_spreads_evenly),
        cmocka_unit_test(test_weighted_respects_weights),
        cmocka_unit_test(test_least_connections_prefers_emptiest),
        cmocka_unit_test(test_refused_instance_is_retried),
        cmocka_unit_test(test_retries_do_not_skew_rotation),
        cmocka_unit_test(test_connect_timeout_is_retried),
        cmocka_unit_test(test_all_instances_down_closes_cleanly),
        cmocka_unit_test(test_idle_timeout_closes_quiet_sessions),
        cmocka_unit_test(test_max_connections_pauses_and_resumes),
        cmocka_unit_test(test_fd_exhaustion_pauses_and_recovers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
