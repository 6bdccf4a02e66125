/* The daemon's life: -t, -h, --version, graceful shutdown and its timeout, SIGHUP reloads (good
 * and broken), bind failures, and 2,000 concurrent sessions on one worker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "pattern.h"

#define LOG_LINE 4096 /* bytes of one log line the tests look into */

static struct proc echo_a, echo_b, source;
static int port_a, port_b, port_source;

static int setup(void **state)
{
    (void)state;
    const char *hello_a[] = {"--hello", "A", "--threads", "2", NULL};
    const char *hello_b[] = {"--hello", "B", NULL};
    port_a = backend_start(&echo_a, "echo", hello_a);
    port_b = backend_start(&echo_b, "echo", hello_b);
    port_source = backend_start(&source, "source", NULL);
    return port_a > 0 && port_b > 0 && port_source > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&echo_a, SIGTERM);
    proc_stop(&echo_b, SIGTERM);
    proc_stop(&source, SIGTERM);
    return 0;
}

static void test_check_good_config(void **state)
{
    (void)state;
    char conf[1024], path[512], out[4096];
    snprintf(path, sizeof(path), "%s/good-%d.ini", harness_tmpdir(), getpid());
    config_simple(conf, sizeof(conf), 18080, "127.0.0.1:9001 weight=3, 127.0.0.1:9002", "", "", "");
    config_write(path, conf);
    char *argv[] = {(char *)harness_bin("SLUICE_BIN"), "-t", "-c", path, NULL};
    assert_int_equal(run_capture(argv, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "configuration OK"));
}

/* Every problem is reported at once, each as FILE:LINE: key: what. */
static void test_check_bad_config_lists_every_problem(void **state)
{
    (void)state;
    char path[512], out[8192], want[600];
    snprintf(path, sizeof(path), "%s/bad-%d.ini", harness_tmpdir(), getpid());
    config_write(path, "[sluice]\n"
                       "workers = many\n" /* line 2 */
                       "[listener:web]\n"
                       "bind = 127.0.0.1\n"  /* line 4: no port */
                       "service = nowhere\n" /* line 5: missing service */
                       "idle_timeout = 5x\n" /* line 6 */
                       "[service:api]\n"
                       "backends = 127.0.0.1:9001\n"
                       "colour = blue\n"); /* line 9: unknown key */
    char *argv[] = {(char *)harness_bin("SLUICE_BIN"), "-t", "-c", path, NULL};
    assert_int_equal(run_capture(argv, out, sizeof(out)), 1);
    const char *expect[] = {
        ":2: workers:", ":4: bind:", ":5: service:", ":6: idle_timeout:", ":9: colour:"};
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        snprintf(want, sizeof(want), "%s%s", path, expect[i]);
        if (strstr(out, want) == NULL)
            fail_msg("missing '%s' in:\n%s", want, out);
    }
}

static void test_help_and_version(void **state)
{
    (void)state;
    char out[4096];
    char *help[] = {(char *)harness_bin("SLUICE_BIN"), "-h", NULL};
    assert_int_equal(run_capture(help, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "usage: sluice"));
    char *version[] = {(char *)harness_bin("SLUICE_BIN"), "--version", NULL};
    assert_int_equal(run_capture(version, out, sizeof(out)), 0);
    assert_true(strncmp(out, "sluice ", 7) == 0);
    char *bad[] = {(char *)harness_bin("SLUICE_BIN"), "--bogus", NULL};
    assert_int_equal(run_capture(bad, out, sizeof(out)), 2);
}

/* A port already taken (by a plain socket without SO_REUSEPORT) fails startup with exit 1 and
 * FILE:LINE: bind: ADDRESS: why, naming the line of the listener's bind key. */
static void test_bind_in_use_fails_startup(void **state)
{
    (void)state;
    int port = harness_free_port();
    int blocker = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(0x7f000001)};
    assert_int_equal(bind(blocker, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(blocker, 1), 0);
    char conf[1024], line[64], path[512], out[8192], want[700];
    snprintf(line, sizeof(line), "127.0.0.1:%d", port_a);
    config_simple(conf, sizeof(conf), port, line, "", "", "");
    snprintf(path, sizeof(path), "%s/in-use-%d.ini", harness_tmpdir(), getpid());
    config_write(path, conf);
    char *argv[] = {(char *)harness_bin("SLUICE_BIN"), "-c", path, NULL};
    assert_int_equal(run_capture(argv, out, sizeof(out)), 1);
    /* config_simple: [sluice] and three keys, a blank line, [listener:web], then bind */
    snprintf(want, sizeof(want), "%s:7: bind: 127.0.0.1:%d: address already in use", path, port);
    if (strstr(out, want) == NULL || strstr(out, "\"event\":\"startup_failed\"") == NULL)
        fail_msg("missing '%s' in:\n%s", want, out);
    close(blocker);
}

/* Every start-up step made to fail in turn (the SLUICE_FAULT test hook): a clean error naming
 * the step, exit status 1, nothing started, and under the sanitizers no leak and no report. The
 * config uses every step: two workers, a static service with a check and a Consul service, an
 * access log, the admin server, a registration and a file source. */
static void test_each_startup_step_fails_cleanly(void **state)
{
    static const char *const steps[] = {"loop",      "listen_locks",   "services", "access_log",
                                        "listeners", "discovery",      "registry", "health",
                                        "workers",   "worker_threads", "admin",    "registrar",
                                        "pid_file"};
    char path[512], pid_path[512], conf[1024], out[16384], fault[64], want[96];

    (void)state;
    snprintf(path, sizeof(path), "%s/fault-%d.ini", harness_tmpdir(), getpid());
    snprintf(pid_path, sizeof(pid_path), "%s/fault-%d.pid", harness_tmpdir(), getpid());
    snprintf(conf, sizeof(conf),
             "[sluice]\nworkers = 2\npid_file = %s\n"
             "[consul]\naddress = 127.0.0.1:1\nretry_min = 50ms\nretry_max = 100ms\n"
             "[registration]\n"
             "[admin]\nbind = 127.0.0.1:%d\n"
             "[listener:web]\nbind = 127.0.0.1:%d\nservice = api\nlog_access = on\n"
             "[listener:disc]\nbind = 127.0.0.1:%d\nservice = disc\n"
             "[service:api]\nbackends = 127.0.0.1:%d\ncheck = tcp\n"
             "[service:disc]\ndiscovery = consul\n"
             "[service:files]\ndiscovery = file\nfile = /nonexistent/sluice-test.json\n",
             pid_path, harness_free_port(), harness_free_port(), harness_free_port(), port_a);
    config_write(path, conf);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        snprintf(fault, sizeof(fault), "SLUICE_FAULT=%s", steps[i]);
        char *argv[] = {"/usr/bin/env", fault, (char *)harness_bin("SLUICE_BIN"), "-c", path, NULL};
        int status = run_capture(argv, out, sizeof(out));
        snprintf(want, sizeof(want), "\"step\":\"%s\",\"error\":\"injected fault\"", steps[i]);
        if (status != 1 || strstr(out, want) == NULL || strstr(out, "\"event\":\"started\"") ||
            strstr(out, "Sanitizer") != NULL || access(pid_path, F_OK) == 0)
            fail_msg("step %s: exit %d, output:\n%s", steps[i], status, out);
        print_message("start-up step %-14s fails cleanly (exit 1)\n", steps[i]);
    }
}

/* Threads of pid whose name starts with prefix (/proc/PID/task/TID/comm). */
static int threads_named(pid_t pid, const char *prefix)
{
    char path[512], comm[32];
    int n = 0;
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *dir = opendir(path);
    assert_non_null(dir);
    for (struct dirent *e; (e = readdir(dir)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/%d/task/%s/comm", (int)pid, e->d_name);
        FILE *f = fopen(path, "r");
        if (f != NULL && fgets(comm, sizeof(comm), f) != NULL &&
            strncmp(comm, prefix, strlen(prefix)) == 0)
            n++;
        if (f != NULL)
            fclose(f);
    }
    closedir(dir);
    return n;
}

/* workers = auto under taskset -c 0 counts the one CPU the process may run on, not the host's,
 * says so at start, and runs exactly one worker thread. */
static void test_workers_auto_follows_affinity(void **state)
{
    (void)state;
    char conf[1024], line[LOG_LINE];
    snprintf(conf, sizeof(conf),
             "[sluice]\nworkers = auto\n[listener:web]\nbind = 127.0.0.1:%d\nservice = api\n"
             "[service:api]\nbackends = 127.0.0.1:%d\n",
             harness_free_port(), port_a);
    const char *const taskset[] = {"/usr/bin/taskset", "-c", "0", NULL};
    struct proc p = {0};
    assert_int_equal(sluice_start_wrapped(&p, conf, taskset), 0);
    const char *chosen[] = {"\"event\":\"workers_auto\"", "\"workers\":1", NULL};
    assert_int_equal(log_wait(&p, NULL, line, sizeof(line), chosen), 0);
    assert_int_equal(log_field_int(line, "affinity"), 1);
    const char *started[] = {"\"event\":\"started\"", "\"workers\":1,", NULL};
    assert_int_equal(log_wait(&p, NULL, NULL, 0, started), 0);
    assert_int_equal(threads_named(p.pid, "sluice-w"), 1);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

/* Line number of the first line of text that starts with prefix; 0 when none does. */
static int line_of(const char *text, const char *prefix)
{
    int line = 1;
    for (const char *at = text; *at != '\0'; line++) {
        if (strncmp(at, prefix, strlen(prefix)) == 0)
            return line;
        const char *nl = strchr(at, '\n');
        if (nl == NULL)
            break;
        at = nl + 1;
    }
    return 0;
}

/* The pid in a pid file, or -1 when it cannot be read. */
static long pid_file_read(const char *path)
{
    char text[32] = "";
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    char *end;
    long pid = strtol(text, &end, 10);
    return end != text && strcmp(end, "\n") == 0 ? pid : -1;
}

/* A plain second start on the same config is refused at once: exit 1, the listener, its bind
 * line and the running sluice's pid named; the running one keeps serving and keeps its pid file.
 * Once that one is SIGKILLed (no clean-up at all) the claim is gone with it and a start works. */
static void test_second_start_refused_per_listener(void **state)
{
    (void)state;
    char pid_path[512], extra[600], conf[2048], backend[64], out[8192], want[1024], hello[16];
    snprintf(pid_path, sizeof(pid_path), "%s/second-%d.pid", harness_tmpdir(), getpid());
    snprintf(extra, sizeof(extra), "pid_file = %s\n", pid_path);
    snprintf(backend, sizeof(backend), "127.0.0.1:%d", port_a);
    int port = harness_free_port();
    config_simple(conf, sizeof(conf), port, backend, extra, "", "");
    struct proc a = {0};
    assert_int_equal(sluice_start(&a, conf), 0);
    assert_int_equal(pid_file_read(pid_path), a.pid);

    char *argv[] = {(char *)harness_bin("SLUICE_BIN"), "-c", a.conf_path, NULL};
    uint64_t t0 = harness_now_ms();
    assert_int_equal(run_capture(argv, out, sizeof(out)), 1);
    print_message("second start refused in %llu ms\n", (unsigned long long)(harness_now_ms() - t0));
    snprintf(want, sizeof(want),
             "%s:%d: bind: 127.0.0.1:%d: already served by sluice pid %d (listener web)",
             a.conf_path, line_of(conf, "bind = "), port, (int)a.pid);
    if (strstr(out, want) == NULL || strstr(out, "\"event\":\"started\"") != NULL)
        fail_msg("missing '%s' in:\n%s", want, out);
    assert_int_equal(pid_file_read(pid_path), a.pid); /* the refused one wrote nothing */
    for (int i = 0; i < 4; i++) { /* every connection still goes to A's backend, echoed */
        int fd = tcp_connect(port);
        assert_true(fd >= 0);
        assert_true(read_line(fd, hello, sizeof(hello)) > 0);
        assert_string_equal(hello, "A");
        assert_int_equal(write_all(fd, "ping", 4), 0);
        assert_int_equal(read_exact(fd, hello, 4), 0);
        assert_memory_equal(hello, "ping", 4);
        close(fd);
    }

    assert_int_equal(proc_stop(&a, SIGKILL), 128 + SIGKILL);
    struct proc b = {0};
    assert_int_equal(sluice_start(&b, conf), 0);
    assert_int_equal(pid_file_read(pid_path), b.pid); /* the stale one is replaced */
    assert_int_equal(hello_of(port, hello, sizeof(hello)), 0);
    assert_string_equal(hello, "A");
    assert_int_equal(proc_stop(&b, SIGTERM), 0);
    assert_int_equal(access(pid_path, F_OK), -1); /* a clean exit removes it */

    /* a pid file that cannot be written fails the start, naming its line */
    snprintf(extra, sizeof(extra), "pid_file = %s/no-such-dir/sluice.pid\n", harness_tmpdir());
    config_simple(conf, sizeof(conf), port, backend, extra, "", "");
    assert_int_equal(sluice_start(&b, conf), -1);
    snprintf(want, sizeof(want), "%s:5: pid_file: %s/no-such-dir/sluice.pid: no such file",
             b.conf_path, harness_tmpdir());
    const char *unwritable[] = {"\"step\":\"pid_file\"", want, NULL};
    assert_int_equal(log_wait(&b, NULL, NULL, 0, unwritable), 0);
}

/* The claims go with the listening sockets: while an old sluice drains a held connection, a new
 * one starts on the same config and serves; the old one finishes its connection and exits 0. */
static void test_new_start_while_old_drains(void **state)
{
    (void)state;
    char conf[2048], backend[64], hello[16];
    snprintf(backend, sizeof(backend), "127.0.0.1:%d", port_a);
    int port = harness_free_port();
    config_simple(conf, sizeof(conf), port, backend, "shutdown_timeout = 60s\n", "", "");
    struct proc old = {0}, next = {0};
    assert_int_equal(sluice_start(&old, conf), 0);
    int held = tcp_connect(port);
    assert_true(held >= 0);
    assert_true(read_line(held, hello, sizeof(hello)) > 0);
    proc_signal(&old, SIGTERM);
    const char *closed[] = {"\"event\":\"listeners_closed\"", NULL};
    assert_int_equal(log_wait(&old, NULL, NULL, 0, closed), 0);
    assert_int_equal(sluice_start(&next, conf), 0);
    assert_int_equal(hello_of(port, hello, sizeof(hello)), 0);
    assert_string_equal(hello, "A");
    assert_int_equal(write_all(held, "drained", 7), 0); /* the old one still carries it */
    char back[7];
    assert_int_equal(read_exact(held, back, 7), 0);
    assert_memory_equal(back, "drained", 7);
    close(held);
    assert_int_equal(proc_wait(&old, HARNESS_WAIT_MS), 0);
    assert_int_equal(proc_stop(&next, SIGTERM), 0);
}

static int start_on(struct proc *p, const char *backend_line, const char *sluice_extra)
{
    int port = harness_free_port();
    char conf[2048];
    config_simple(conf, sizeof(conf), port, backend_line, sluice_extra, "", "");
    assert_int_equal(sluice_start(p, conf), 0);
    return port;
}

/* SIGTERM mid-transfer: the listener closes at once, the transfer completes intact, exit 0. */
static void test_graceful_shutdown_finishes_transfer(void **state)
{
    (void)state;
    struct proc p = {0};
    char line[64];
    snprintf(line, sizeof(line), "127.0.0.1:%d", port_source);
    int port = start_on(&p, line, "shutdown_timeout = 60s\n");
    int fd = tcp_connect(port);
    assert_true(fd >= 0);
    uint64_t total = harness_scale(64ULL << 20), seed = 7;
    assert_int_equal(source_request(fd, total, seed), 0);
    static unsigned char buf[4096];
    assert_int_equal(read_exact(fd, buf, 4096), 0);
    assert_int_equal(pattern_check(seed, 0, buf, 4096), -1);
    proc_signal(&p, SIGTERM);
    const char *needles[] = {"\"event\":\"listeners_closed\"", NULL};
    assert_int_equal(log_wait(&p, NULL, NULL, 0, needles), 0);
    assert_true(tcp_connect(port) < 0); /* no new connections once draining */
    assert_int_equal(read_pattern_to_eof(fd, seed, 4096), (int64_t)total);
    close(fd);
    assert_int_equal(proc_wait(&p, HARNESS_WAIT_MS), 0);
}

/* A session that never ends is cut at shutdown_timeout, and sluice still exits 0. */
static void test_shutdown_timeout_cuts_stragglers(void **state)
{
    (void)state;
    struct proc p = {0};
    char line[64];
    snprintf(line, sizeof(line), "127.0.0.1:%d", port_a);
    int port = start_on(&p, line, "shutdown_timeout = 500ms\n");
    int fd = tcp_connect(port);
    char hello[16];
    assert_true(read_line(fd, hello, sizeof(hello)) > 0);
    proc_signal(&p, SIGTERM);
    assert_int_equal(wait_closed(fd, HARNESS_WAIT_MS), 1);
    assert_int_equal(proc_wait(&p, HARNESS_WAIT_MS), 0);
    const char *needles[] = {"\"event\":\"shutdown_timeout\"", NULL};
    assert_int_equal(log_wait(&p, NULL, NULL, 0, needles), 0);
    close(fd);
}

/* SIGHUP with new backends and a shorter idle_timeout: new sessions go to the new set and get the
 * new timeout, an open one keeps working with the settings it started with. Then a broken file:
 * rejected with its errors logged, the running set stays. */
static void test_reload_swaps_and_rejects_broken(void **state)
{
    (void)state;
    struct proc p = {0};
    char line[64], conf[2048], hello[16];
    snprintf(line, sizeof(line), "127.0.0.1:%d", port_a);
    int port = start_on(&p, line, "");
    int open_fd = tcp_connect(port);
    assert_true(read_line(open_fd, hello, sizeof(hello)) > 0);
    assert_string_equal(hello, "A");

    snprintf(line, sizeof(line), "127.0.0.1:%d", port_b);
    config_simple(conf, sizeof(conf), port, line, "", "idle_timeout = 300ms\n", "");
    config_write(p.conf_path, conf);
    size_t from = log_size(&p), from_applied = from;
    proc_signal(&p, SIGHUP);
    const char *done[] = {"\"event\":\"reload_done\"", NULL};
    assert_int_equal(log_wait(&p, &from, NULL, 0, done), 0);
    /* a listener's settings apply at once, to new connections, and say so key by key */
    const char *applied[] = {"\"event\":\"reload_applied\"",
                             "\"change\":\"[listener:web] idle_timeout: 5m -> 300ms\"", NULL};
    assert_int_equal(log_wait(&p, &from_applied, NULL, 0, applied), 0);
    const char *restart[] = {"\"event\":\"reload_needs_restart\"", NULL};
    assert_int_equal(log_count_all(&p, restart), 0);
    int new_fd = tcp_connect(port);
    assert_true(new_fd >= 0);
    assert_true(read_line(new_fd, hello, sizeof(hello)) > 0);
    assert_string_equal(hello, "B");
    assert_int_equal(wait_closed(new_fd, HARNESS_WAIT_MS), 1); /* idle for 300 ms: closed */
    close(new_fd);
    /* the old session, idle as long, still has its 5 minutes */
    assert_int_equal(write_all(open_fd, "still", 5), 0);
    char back[5];
    assert_int_equal(read_exact(open_fd, back, 5), 0);
    assert_memory_equal(back, "still", 5);

    config_write(p.conf_path, "[sluice]\nworkers = 1\n[listener:web]\nbind = nonsense\n");
    proc_signal(&p, SIGHUP);
    const char *failed[] = {"\"event\":\"reload_failed\"", NULL};
    const char *named[] = {"\"event\":\"config_error\"", ":4: bind:", NULL};
    size_t from2 = from;
    assert_int_equal(log_wait(&p, &from, NULL, 0, failed), 0);
    assert_int_equal(log_wait(&p, &from2, NULL, 0, named), 0);
    assert_int_equal(hello_of(port, hello, sizeof(hello)), 0);
    assert_string_equal(hello, "B");
    close(open_fd);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

/* A FIFO never hangs sluice: `sluice -t -c FIFO` answers at once (run under timeout(1), so a
 * regression fails instead of hanging), and a config replaced by a FIFO makes SIGHUP fail with
 * the reason while the main thread keeps serving and obeys SIGTERM. A malformed line on reload
 * is logged without its text, so a token with a typo stays out of the log. */
static void test_fifo_config_and_hidden_secret_on_reload(void **state)
{
    (void)state;
    struct proc p = {0};
    char fifo[512], line[64], conf[2048], out[4096], hello[16];
    snprintf(fifo, sizeof(fifo), "%s/fifo-%d.ini", harness_tmpdir(), getpid());
    unlink(fifo);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    char *argv[] = {
        "/usr/bin/timeout", "60", (char *)harness_bin("SLUICE_BIN"), "-t", "-c", fifo, NULL};
    assert_int_equal(run_capture(argv, out, sizeof(out)), 1);
    assert_non_null(strstr(out, ":0: file: is not a regular file"));
    unlink(fifo);

    snprintf(line, sizeof(line), "127.0.0.1:%d", port_a);
    int port = start_on(&p, line, "");
    size_t from = log_size(&p);
    assert_int_equal(unlink(p.conf_path), 0);
    assert_int_equal(mkfifo(p.conf_path, 0600), 0);
    proc_signal(&p, SIGHUP);
    const char *failed[] = {"\"event\":\"config_error\"", "is not a regular file", NULL};
    assert_int_equal(log_wait(&p, &from, NULL, 0, failed), 0);
    assert_int_equal(hello_of(port, hello, sizeof(hello)), 0);
    assert_string_equal(hello, "A");

    unlink(p.conf_path);
    config_simple(conf, sizeof(conf), port, line, "", "", "");
    snprintf(conf + strlen(conf), sizeof(conf) - strlen(conf), "[consul]\ntoken: SECRET\n");
    config_write(p.conf_path, conf);
    proc_signal(&p, SIGHUP);
    const char *hidden[] = {"\"event\":\"config_error\"", "is not a \\\"key = value\\\" line",
                            NULL};
    assert_int_equal(log_wait(&p, &from, NULL, 0, hidden), 0);
    const char *secret[] = {"SECRET", NULL};
    assert_int_equal(log_count_all(&p, secret), 0);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

/* A token file that group or others may read is warned about at start, by name and mode; its
 * content is never logged. */
static void test_token_file_permissions_warned(void **state)
{
    (void)state;
    struct proc p = {0};
    char tok[512], line[64], extra[1024], conf[2048];
    snprintf(tok, sizeof(tok), "%s/token-%d", harness_tmpdir(), getpid());
    config_write(tok, "t0k3n-s3cr3t\n");
    assert_int_equal(chmod(tok, 0644), 0);
    snprintf(line, sizeof(line), "127.0.0.1:%d", port_a);
    int port = harness_free_port();
    config_simple(conf, sizeof(conf), port, line, "", "", "");
    snprintf(extra, sizeof(extra), "[admin]\nbind = 127.0.0.1:%d\ntoken_file = %s\n",
             harness_free_port(), tok);
    snprintf(conf + strlen(conf), sizeof(conf) - strlen(conf), "%s", extra);
    assert_int_equal(sluice_start(&p, conf), 0);
    size_t from = 0;
    const char *warned[] = {"\"event\":\"token_file_permissions\"", tok, "\"mode\":\"0644\"", NULL};
    assert_int_equal(log_wait(&p, &from, NULL, 0, warned), 0);
    const char *secret[] = {"t0k3n-s3cr3t", NULL};
    assert_int_equal(log_count_all(&p, secret), 0);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
    unlink(tok);
}

/* 2,000 sessions open at once through one worker; each echoes its own bytes back. */
static void test_2000_concurrent_sessions_one_worker(void **state)
{
    (void)state;
    enum { N = 2000 };
    struct proc p = {0};
    char line[64];
    snprintf(line, sizeof(line), "127.0.0.1:%d", port_a);
    int port = start_on(&p, line, "max_connections = 5000\n");
    static int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = tcp_connect(port);
        assert_true(fds[i] >= 0);
    }
    for (int i = 0; i < N; i++) { /* every one is live at the same time */
        char hello[16], msg[64], back[64];
        assert_true(read_line(fds[i], hello, sizeof(hello)) > 0);
        assert_string_equal(hello, "A");
        int n = snprintf(msg, sizeof(msg), "session %d of %d", i, N);
        assert_int_equal(write_all(fds[i], msg, (size_t)n), 0);
        assert_int_equal(read_exact(fds[i], back, (size_t)n), 0);
        assert_memory_equal(back, msg, (size_t)n);
    }
    char stats[4096];
    assert_int_equal(sluice_stats(&p, stats, sizeof(stats)), 0);
    assert_int_equal(log_field_int(stats, "open"), N);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_good_config),
        cmocka_unit_test(test_check_bad_config_lists_every_problem),
        cmocka_unit_test(test_help_and_version),
        cmocka_unit_test(test_bind_in_use_fails_startup),
        cmocka_unit_test(test_each_startup_step_fails_cleanly),
        cmocka_unit_test(test_workers_auto_follows_affinity),
        cmocka_unit_test(test_second_start_refused_per_listener),
        cmocka_unit_test(test_new_start_while_old_drains),
        cmocka_unit_test(test_graceful_shutdown_finishes_transfer),
        cmocka_unit_test(test_shutdown_timeout_cuts_stragglers),
        cmocka_unit_test(test_reload_swaps_and_rejects_broken),
        cmocka_unit_test(test_fifo_config_and_hidden_secret_on_reload),
        cmocka_unit_test(test_token_file_permissions_warned),
        cmocka_unit_test(test_2000_concurrent_sessions_one_worker),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
