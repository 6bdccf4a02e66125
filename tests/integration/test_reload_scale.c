/* A reload from 10 to 100,000 static backends (issue #12, defect 7): it applies, traffic through
 * the new set still carries verified bytes, and a SIGTERM sent while such a reload runs is acted
 * on (drain logged, clean exit) instead of waiting behind it. No timing is asserted: the figures
 * are printed. The backends are 100,000 distinct loopback addresses (127.1.0.1 ...) on the port
 * of one echo backend listening on 0.0.0.0, so every one of them answers. */
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

#include "harness.h"

#define BIG   100000 /* backends after the reload (a quarter under the sanitizers) */
#define BYTES 16384  /* echoed and verified per connection */

static struct proc echo;
static int echo_port;

static int setup(void **state)
{
    (void)state;
    int port = harness_free_port();
    char any[32];
    snprintf(any, sizeof(any), "0.0.0.0:%d", port);
    /* the later --listen wins: every 127.x.y.z address reaches this one backend */
    const char *extra[] = {"--hello", "E", "--threads", "2", "--listen", any, NULL};
    echo_port = backend_start_on(&echo, port, "echo", extra);
    return echo_port > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&echo, SIGTERM);
    return 0;
}

/* The config with n backends 127.(1 + k / 62500).((k / 250) % 250).(1 + k % 250):echo_port.
 * Returns it (malloc'd). */
static char *config_with(int listen_port, size_t n)
{
    size_t cap = 256 + n * 32;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t len = (size_t)snprintf(text, cap,
                                  "[sluice]\nworkers = 2\nlog_format = json\n"
                                  "[listener:web]\nbind = 127.0.0.1:%d\nservice = echo\n"
                                  "[service:echo]\nbackends = ",
                                  listen_port);
    for (size_t k = 0; k < n; k++)
        len += (size_t)snprintf(text + len, cap - len, "%s127.%zu.%zu.%zu:%d", k ? ", " : "",
                                1 + k / 62500, (k / 250) % 250, 1 + k % 250, echo_port);
    snprintf(text + len, cap - len, "\n");
    return text;
}

static void traffic_verified(int port, int connections)
{
    static const char *const hellos[] = {"E", NULL};
    for (int i = 0; i < connections; i++) {
        const char *why = "";
        if (echo_verified(port, (unsigned long long)i + 7, BYTES, hellos, &why) != 0)
            fail_msg("connection %d failed: %s", i, why);
    }
}

static size_t big_count(void)
{
    return (size_t)harness_scale(BIG);
}

static void test_reload_to_many_backends(void **state)
{
    (void)state;
    struct proc p = {0};
    int port = harness_free_port();
    char *small = config_with(port, 10), *big = config_with(port, big_count());
    char want[64];
    assert_int_equal(sluice_start(&p, small), 0);
    traffic_verified(port, 4);

    size_t from = log_size(&p);
    config_write(p.conf_path, big);
    uint64_t t0 = harness_now_ms();
    proc_signal(&p, SIGHUP);
    snprintf(want, sizeof(want), "\"instances\":%zu", big_count());
    const char *published[] = {"\"event\":\"service_published\"", want, NULL};
    const char *done[] = {"\"event\":\"reload_done\"", NULL};
    assert_int_equal(log_wait(&p, &from, NULL, 0, published), 0);
    assert_int_equal(log_wait(&p, &from, NULL, 0, done), 0);
    print_message("reload from 10 to %zu backends: reload_done after %llu ms\n", big_count(),
                  (unsigned long long)(harness_now_ms() - t0));
    traffic_verified(port, 20); /* round robin: 20 different addresses of the new set */
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
    free(small);
    free(big);
}

/* SIGTERM right after SIGHUP: the drain starts while the reload still reads the file or builds
 * the set, the reload is given up, and sluice exits 0. */
static void test_sigterm_during_large_reload(void **state)
{
    (void)state;
    struct proc p = {0};
    int port = harness_free_port();
    char *small = config_with(port, 10), *big = config_with(port, big_count());
    assert_int_equal(sluice_start(&p, small), 0);
    config_write(p.conf_path, big);
    size_t from = log_size(&p);
    proc_signal(&p, SIGHUP);
    const char *started[] = {"\"event\":\"reload_started\"", NULL};
    assert_int_equal(log_wait(&p, &from, NULL, 0, started), 0);
    uint64_t t0 = harness_now_ms();
    proc_signal(&p, SIGTERM);
    const char *drain[] = {"\"event\":\"shutdown_started\"", "\"signal\":\"SIGTERM\"", NULL};
    assert_int_equal(log_wait(&p, &from, NULL, 0, drain), 0);
    uint64_t t1 = harness_now_ms();
    assert_int_equal(proc_wait(&p, HARNESS_WAIT_MS), 0);
    print_message("SIGTERM during the reload: shutdown_started seen after %llu ms, exit after "
                  "%llu ms\n",
                  (unsigned long long)(t1 - t0), (unsigned long long)(harness_now_ms() - t0));
    /* the reload either finished before the signal was seen or was given up; never both */
    const char *done[] = {"\"event\":\"reload_done\"", NULL};
    const char *abandoned[] = {"\"event\":\"reload_abandoned\"", NULL};
    assert_int_equal(log_count_all(&p, done) + log_count_all(&p, abandoned), 1);
    free(small);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reload_to_many_backends),
        cmocka_unit_test(test_sigterm_during_large_reload),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
