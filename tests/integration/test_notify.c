/* sd_notify, as systemd sees it: under a NOTIFY_SOCKET the test owns, sluice says READY=1 only
 * once its listener accepts, RELOADING=1 then READY=1 around a SIGHUP and a POST /v1/reload,
 * STOPPING=1 at SIGTERM, and never READY=1 when a start-up step fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"

#define NOTIFY_MESSAGE_BYTES 4096

static struct proc echo;
static int echo_port;

static int setup(void **state)
{
    (void)state;
    const char *hello[] = {"--hello", "A", NULL};
    echo_port = backend_start(&echo, "echo", hello);
    return echo_port > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&echo, SIGTERM);
    return 0;
}

/* The service manager's end: a datagram socket in the abstract namespace (nothing to clean up,
 * no path length to worry about), and the NOTIFY_SOCKET=@name assignment for sluice's env. */
static int notify_open(char *env, size_t env_len)
{
    static int serial;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n = snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "sluice-notify-%d-%d", getpid(),
                     serial++);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n)),
                     0);
    snprintf(env, env_len, "NOTIFY_SOCKET=@%s", sa.sun_path + 1);
    return fd;
}

/* The next message within timeout_ms, NUL-terminated into out; its length or -1 when none. */
static int notify_next(int fd, char *out, size_t out_len, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    if (poll(&pfd, 1, timeout_ms) != 1)
        return -1;
    ssize_t n = recv(fd, out, out_len - 1, 0);
    if (n < 0)
        return -1;
    out[n] = '\0';
    return (int)n;
}

/* Whether a message (newline-separated assignments) holds exactly this assignment. */
static int has_line(const char *message, const char *line)
{
    size_t len = strlen(line);
    for (const char *p = message; p != NULL && *p != '\0';
         p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, line, len) == 0 && (p[len] == '\n' || p[len] == '\0'))
            return 1;
    return 0;
}

/* The next message must hold want (e.g. "READY=1"); it is left in out. */
static void expect_next(int fd, char *out, size_t out_len, const char *want)
{
    if (notify_next(fd, out, out_len, HARNESS_WAIT_MS) < 0)
        fail_msg("no notification, waited for %s", want);
    if (!has_line(out, want))
        fail_msg("wanted %s, got:\n%s", want, out);
}

static int count_in_log(const struct proc *p, const char *needle)
{
    const char *needles[] = {needle, NULL};
    return log_count_all(p, needles);
}

/* Start-up, SIGHUP, POST /v1/reload and SIGTERM, each seen from the socket. At READY=1 (read as
 * it arrives: the harness does not wait for "started" here) the log already says the listener
 * started and a connection through it gets the backend's hello. */
static void test_ready_reload_stopping(void **state)
{
    (void)state;
    char env[128], conf[1024], msg[NOTIFY_MESSAGE_BYTES], hello[16], want[64];
    int fd = notify_open(env, sizeof(env));
    int port = harness_free_port(), admin_port = harness_free_port();
    const char *wrapper[] = {"/usr/bin/env", env, NULL};
    struct proc p = {0};

    snprintf(
        conf, sizeof(conf),
        "[sluice]\nworkers = 2\nlog_level = debug\n[admin]\nbind = 127.0.0.1:%d\ntoken = t0ken\n"
        "[listener:web]\nbind = 127.0.0.1:%d\nservice = api\n"
        "[service:api]\nbackends = 127.0.0.1:%d\n",
        admin_port, port, echo_port);
    assert_int_equal(sluice_spawn(&p, conf, wrapper), 0);
    expect_next(fd, msg, sizeof(msg), "READY=1"); /* the first message: nothing came before */
    assert_int_equal(count_in_log(&p, "\"event\":\"listener_started\""), 1);
    assert_int_equal(count_in_log(&p, "\"event\":\"started\""), 1);
    assert_int_equal(hello_of(port, hello, sizeof(hello)), 0);
    assert_string_equal(hello, "A");
    snprintf(want, sizeof(want), "MAINPID=%d", (int)p.pid);
    assert_true(has_line(msg, want));
    assert_true(has_line(msg, "STATUS=serving 1 listener(s) with 2 worker(s)"));

    proc_signal(&p, SIGHUP);
    expect_next(fd, msg, sizeof(msg), "RELOADING=1");
    assert_non_null(strstr(msg, "MONOTONIC_USEC="));
    expect_next(fd, msg, sizeof(msg), "READY=1");
    assert_int_equal(count_in_log(&p, "\"event\":\"reload_done\""), 1);

    assert_int_equal(http_request_with(admin_port, "POST", "/v1/reload",
                                       "Authorization: Bearer t0ken\r\n", NULL, 0, NULL, 0),
                     200);
    expect_next(fd, msg, sizeof(msg), "RELOADING=1");
    expect_next(fd, msg, sizeof(msg), "READY=1");
    assert_int_equal(count_in_log(&p, "\"event\":\"reload_done\""), 2);

    proc_signal(&p, SIGTERM);
    expect_next(fd, msg, sizeof(msg), "STOPPING=1");
    assert_int_equal(proc_wait(&p, HARNESS_WAIT_MS), 0);
    assert_int_equal(count_in_log(&p, "\"event\":\"shutdown_started\""), 1);
    assert_int_equal(count_in_log(&p, "\"event\":\"notify_failed\""), 0);
    assert_int_equal(notify_next(fd, msg, sizeof(msg), 0), -1); /* nothing after STOPPING */
    close(fd);
}

/* A broken file on SIGHUP: the running config stays, so READY=1 follows RELOADING=1 all the
 * same (systemd would otherwise wait for it until its timeout), with a STATUS saying so. */
static void test_failed_reload_is_ready_again(void **state)
{
    (void)state;
    char env[128], conf[1024], msg[NOTIFY_MESSAGE_BYTES], line[64];
    int fd = notify_open(env, sizeof(env));
    const char *wrapper[] = {"/usr/bin/env", env, NULL};
    struct proc p = {0};

    snprintf(line, sizeof(line), "127.0.0.1:%d", echo_port);
    config_simple(conf, sizeof(conf), harness_free_port(), line, "", "", "");
    assert_int_equal(sluice_start_wrapped(&p, conf, wrapper), 0);
    expect_next(fd, msg, sizeof(msg), "READY=1");
    FILE *f = fopen(p.conf_path, "w");
    assert_non_null(f);
    fputs("[sluice]\nworkers = many\n", f);
    fclose(f);
    proc_signal(&p, SIGHUP);
    expect_next(fd, msg, sizeof(msg), "RELOADING=1");
    expect_next(fd, msg, sizeof(msg), "READY=1");
    assert_non_null(strstr(msg, "STATUS=serving; the last reload failed"));
    assert_int_equal(count_in_log(&p, "\"event\":\"reload_failed\""), 1);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
    close(fd);
}

/* The last start-up step (registrar) made to fail, after the listeners and workers are up: exit
 * 1 and no READY=1, so systemd reports the start as failed instead of a service that is gone. */
static void test_failed_startup_is_never_ready(void **state)
{
    (void)state;
    char env[128], conf[1024], path[512], out[16384], msg[NOTIFY_MESSAGE_BYTES], line[64];
    int fd = notify_open(env, sizeof(env));

    snprintf(line, sizeof(line), "127.0.0.1:%d", echo_port);
    config_simple(conf, sizeof(conf), harness_free_port(), line, "", "", "");
    snprintf(path, sizeof(path), "%s/notify-fault-%d.ini", harness_tmpdir(), getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(conf, f);
    fclose(f);
    char *argv[] = {
        "/usr/bin/env", env, "SLUICE_FAULT=registrar", (char *)harness_bin("SLUICE_BIN"), "-c",
        path,           NULL};
    assert_int_equal(run_capture(argv, out, sizeof(out)), 1);
    assert_non_null(strstr(out, "\"step\":\"registrar\""));
    while (notify_next(fd, msg, sizeof(msg), 0) >= 0)
        if (has_line(msg, "READY=1"))
            fail_msg("READY=1 from a start-up that failed:\n%s", msg);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ready_reload_stopping),
        cmocka_unit_test(test_failed_reload_is_ready_again),
        cmocka_unit_test(test_failed_startup_is_never_ready),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
