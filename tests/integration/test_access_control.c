/* allow/deny end to end: clients bound to 127.0.0.1, .2 and .3 get the backend's hello or an
 * immediate reset/EOF, the refusals are counted by reason without a session, and a reload that
 * adds to deny applies to new connections. */
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

static struct proc backend;
static int backend_port;

static int setup(void **state)
{
    (void)state;
    const char *hello[] = {"--hello", "X", NULL};
    backend_port = backend_start(&backend, "echo", hello);
    return backend_port > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&backend, SIGTERM);
    return 0;
}

/* 1 when a client from src gets the backend's hello through port, 0 when it gets an EOF or a
 * reset first (a refusal); fails the test when nothing comes within the wait. */
static int served_from(const char *src, int port)
{
    int fd = tcp_connect_from(src, "127.0.0.1", port);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    char buf[16];

    assert_int_equal(poll(&pfd, 1, HARNESS_WAIT_MS), 1);
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    close(fd);
    if (n > 0) {
        assert_memory_equal(buf, "X", 1);
        return 1;
    }
    assert_true(n == 0 || errno == ECONNRESET);
    return 0;
}

#define ACCEPTED(l)    "sluice_listener_connections_accepted_total{listener=\"" l "\"}"
#define REJECTED(l, r) "sluice_listener_rejected_total{listener=\"" l "\",reason=\"" r "\"}"

static void write_conf(char *conf, size_t len, int admin, int p_deny, int p_allow, const char *deny)
{
    snprintf(conf, len,
             "[sluice]\nworkers = 2\nlog_format = json\nlog_level = debug\n"
             "[admin]\nbind = 127.0.0.1:%d\n"
             "[listener:deny]\nbind = 127.0.0.1:%d\nservice = s\ndeny = %s\n"
             "[listener:allow]\nbind = 127.0.0.1:%d\nservice = s\nallow = 127.0.0.3\n"
             "[service:s]\nbackends = 127.0.0.1:%d\n",
             admin, p_deny, deny, p_allow, backend_port);
}

static void test_allow_deny_and_reload(void **state)
{
    (void)state;
    struct proc p = {0};
    int admin = harness_free_port(), p_deny = harness_free_port(), p_allow = harness_free_port();
    char conf[2048];

    write_conf(conf, sizeof(conf), admin, p_deny, p_allow, "127.0.0.2/32");
    assert_int_equal(sluice_start(&p, conf), 0);

    assert_int_equal(served_from("127.0.0.1", p_deny), 1);
    assert_int_equal(served_from("127.0.0.2", p_deny), 0);
    assert_int_equal(served_from("127.0.0.3", p_deny), 1);
    assert_int_equal(served_from("127.0.0.1", p_allow), 0);
    assert_int_equal(served_from("127.0.0.2", p_allow), 0);
    assert_int_equal(served_from("127.0.0.3", p_allow), 1);

    /* refused connections never became sessions: no upstream work for them */
    assert_true(metrics_scrape(admin, ACCEPTED("deny")) == 2);
    assert_true(metrics_scrape(admin, ACCEPTED("allow")) == 1);
    assert_true(metrics_scrape(admin, REJECTED("deny", "deny")) == 1);
    assert_true(metrics_scrape(admin, REJECTED("deny", "not_allowed")) == 0);
    assert_true(metrics_scrape(admin, REJECTED("allow", "not_allowed")) == 2);
    assert_true(metrics_scrape(admin, REJECTED("allow", "deny")) == 0);
    const char *logged[] = {"\"event\":\"connection_rejected\"",
                            "\"client\":\"127.0.0.2:", "\"reason\":\"deny\"", NULL};
    size_t at = 0;
    assert_int_equal(log_wait(&p, &at, NULL, 0, logged), 0);

    /* a reload that adds 127.0.0.1 to deny applies to the next connections */
    write_conf(conf, sizeof(conf), admin, p_deny, p_allow, "127.0.0.2/32, 127.0.0.1");
    config_write(p.conf_path, conf);
    size_t from = log_size(&p);
    proc_signal(&p, SIGHUP);
    const char *applied[] = {"\"event\":\"reload_applied\"",
                             "[listener:deny] allow/deny: 1 ranges -> 1 ranges", NULL};
    assert_int_equal(log_wait(&p, &from, NULL, 0, applied), 0);
    const char *done[] = {"\"event\":\"reload_done\"", NULL};
    assert_int_equal(log_wait(&p, &from, NULL, 0, done), 0);
    assert_int_equal(served_from("127.0.0.1", p_deny), 0);
    assert_int_equal(served_from("127.0.0.2", p_deny), 0);
    assert_int_equal(served_from("127.0.0.3", p_deny), 1);
    assert_int_equal(served_from("127.0.0.3", p_allow), 1);
    assert_true(metrics_scrape(admin, REJECTED("deny", "deny")) == 3);
    assert_true(metrics_scrape(admin, ACCEPTED("deny")) == 3);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allow_deny_and_reload),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
