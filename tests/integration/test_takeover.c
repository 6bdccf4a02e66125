/* Zero-downtime binary upgrade: `sluice --takeover` started three times in a row (A -> B -> C ->
 * D) under a client loop that connects continuously sees no failed connection; each old process
 * drains and exits 0, the first one only after a long transfer it carried ends intact; a plain
 * start afterwards names the new holder. A takeover that fails before it is ready leaves the old
 * process serving, and --takeover with nothing running starts as usual with a warning. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "addr.h"
#include "harness.h"
#include "listen_lock.h"
#include "pattern.h"

#define TAKEOVERS    3
#define CLIENT_BYTES 4096 /* each loop connection sends this and checks the echo */
#define BULK_SEED    77
#define LOOPS                                                                                      \
    6 /* client loops at once: connections are in flight at every moment, some                     \
         of them in the accept queue that the takeover must not lose */

static struct proc echo, source;
static int port_echo, port_source;
static const char *const takeover_args[] = {"--takeover", NULL};

static int setup(void **state)
{
    (void)state;
    const char *hello[] = {"--hello", "A", "--threads", "2", NULL};
    port_echo = backend_start(&echo, "echo", hello);
    port_source = backend_start(&source, "source", NULL);
    return port_echo > 0 && port_source > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&echo, SIGTERM);
    proc_stop(&source, SIGTERM);
    return 0;
}

static char pid_path[512];

/* The pid in pid_path, or -1. */
static long pid_file_read(void)
{
    char text[32] = "";
    FILE *f = fopen(pid_path, "r");
    if (f == NULL)
        return -1;
    long pid = fgets(text, sizeof(text), f) != NULL ? atol(text) : -1;
    fclose(f);
    return pid;
}

/* Two workers, a listener in front of the echo backend and one in front of the source;
 * max_connections as given. */
static void config_max(char *out, size_t len, int web, int bulk, int max)
{
    snprintf(pid_path, sizeof(pid_path), "%s/takeover-%d.pid", harness_tmpdir(), (int)getpid());
    snprintf(out, len,
             "[sluice]\nworkers = 2\nlog_level = debug\nlog_format = json\n"
             "shutdown_timeout = 120s\nmax_connections = %d\npid_file = %s\n"
             "[listener:web]\nbind = 127.0.0.1:%d\nservice = api\n"
             "[listener:bulk]\nbind = 127.0.0.1:%d\nservice = src\n"
             "[service:api]\nbackends = 127.0.0.1:%d\n"
             "[service:src]\nbackends = 127.0.0.1:%d\n",
             max, pid_path, web, bulk, port_echo, port_source);
}

static void config_two(char *out, size_t len, int web, int bulk)
{
    config_max(out, len, web, bulk, 10000);
}

/* --- the client loop ------------------------------------------------------------------------ */

struct client_loop {
    int port;                    /* the listener taken over */
    atomic_int *stop;            /* set by the test */
    atomic_ullong *attempted;    /* connections tried, every loop (read while running) */
    unsigned long long verified; /* connections whose echo came back intact */
    unsigned long long failed;   /* connections refused, reset or wrong */
    unsigned long long bytes;    /* bytes verified */
    char first_error[128];       /* what the first failure was */
};

/* One connection: the hello, then bytes out and the same bytes back. 0, or -1 with why. */
static int client_once(int port, unsigned long long n, const char **why)
{
    static const char *const hellos[] = {"A", NULL};
    return echo_verified(port, n, CLIENT_BYTES, hellos, why);
}

static void *client_loop_run(void *arg)
{
    struct client_loop *c = arg;

    while (!atomic_load(c->stop)) {
        const char *why;
        unsigned long long n = atomic_fetch_add(c->attempted, 1) + 1;
        if (client_once(c->port, n, &why) == 0) {
            c->verified++;
            c->bytes += CLIENT_BYTES;
        } else if (c->failed++ == 0) {
            snprintf(c->first_error, sizeof(c->first_error), "connection %llu: %s (errno %d)", n,
                     why, errno);
        }
    }
    return NULL;
}

/* Waits (bounded) until the loops have made more connections. */
static void loop_advance(atomic_ullong *attempted, unsigned long long more)
{
    unsigned long long until = atomic_load(attempted) + more;
    for (int i = 0; i < HARNESS_WAIT_MS && atomic_load(attempted) < until; i++)
        sleep_ms(1);
}

/* The loops' counts added up into total (its first_error: the first loop's that failed). */
static void loops_sum(const struct client_loop *loops, struct client_loop *total)
{
    for (int i = 0; i < LOOPS; i++) {
        total->verified += loops[i].verified;
        total->bytes += loops[i].bytes;
        if (loops[i].failed > 0 && total->failed == 0)
            memcpy(total->first_error, loops[i].first_error, sizeof(total->first_error));
        total->failed += loops[i].failed;
    }
}

/* --- a long transfer, read slowly while the takeovers run ---------------------------------- */

struct bulk {
    int fd;          /* through the first sluice to the source backend */
    uint64_t total;  /* bytes asked for */
    atomic_int slow; /* read slowly (the sender stays blocked, the session open) */
    int64_t reached; /* offset read up to with every byte right, or -1 */
};

static void *bulk_run(void *arg)
{
    static unsigned char buf[16384];
    struct bulk *b = arg;
    uint64_t off = 0;

    for (;;) {
        ssize_t got = recv(b->fd, buf, sizeof(buf), 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0 || pattern_check(BULK_SEED, off, buf, (size_t)got) != -1)
            break;
        off += (uint64_t)got;
        if (atomic_load(&b->slow))
            sleep_ms(2);
    }
    if (off != b->total)
        fprintf(stderr, "bulk: stopped at %llu of %llu\n", (unsigned long long)off,
                (unsigned long long)b->total);
    b->reached = off == b->total ? (int64_t)off : -1;
    return NULL;
}

/* --- the takeover --------------------------------------------------------------------------- */

/* Starts next with --takeover on old's listeners and waits until next said it took them over
 * and old that it drains. */
static void takeover_step(struct proc *old, struct proc *next, const char *conf)
{
    char line[2048], pid_text[32];
    size_t from_old = 0, from_next = 0;

    assert_int_equal(sluice_start_args(next, conf, takeover_args, NULL), 0);
    snprintf(pid_text, sizeof(pid_text), "\"from_pid\":%d", (int)old->pid);
    const char *done[] = {"\"event\":\"takeover_done\"", pid_text, NULL};
    assert_int_equal(log_wait(next, &from_next, line, sizeof(line), done), 0);
    const char *draining[] = {"\"event\":\"shutdown_started\"", "\"signal\":\"takeover\"", NULL};
    assert_int_equal(log_wait(old, &from_old, line, sizeof(line), draining), 0);
    const char *none[] = {"\"event\":\"takeover_nothing_to_take\"", NULL};
    assert_int_equal(log_count_all(next, none), 0); /* both listeners were taken */
}

/* A plain start is refused, naming holder as the pid that serves. */
static void check_refused_by(const char *conf, int port, pid_t holder)
{
    char out[16384], want[256], path[512];
    char *argv[] = {(char *)harness_bin("SLUICE_BIN"), "-c", path, NULL};

    snprintf(path, sizeof(path), "%s/%d-plain.ini", harness_tmpdir(), (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(conf, f);
    fclose(f);
    assert_int_equal(run_capture(argv, out, sizeof(out)), 1);
    snprintf(want, sizeof(want), "bind: 127.0.0.1:%d: already served by sluice pid %d", port,
             (int)holder);
    if (strstr(out, want) == NULL)
        fail_msg("missing '%s' in:\n%s", want, out);
}

static void test_takeover_under_load(void **state)
{
    (void)state;
    static char conf[2048];
    int web = harness_free_port(), bulk_port = harness_free_port();
    struct proc gen[TAKEOVERS + 1] = {{0}};

    config_two(conf, sizeof(conf), web, bulk_port);
    assert_int_equal(sluice_start(&gen[0], conf), 0);
    struct bulk bulk = {.fd = tcp_connect(bulk_port), .total = harness_scale(16ULL << 20)};
    assert_true(bulk.fd >= 0);
    atomic_init(&bulk.slow, 1);
    assert_int_equal(source_request(bulk.fd, bulk.total, BULK_SEED), 0);
    pthread_t bulk_th, loop_th[LOOPS];
    assert_int_equal(pthread_create(&bulk_th, NULL, bulk_run, &bulk), 0);
    atomic_int stop = 0;
    atomic_ullong attempted = 0;
    struct client_loop loops[LOOPS], loop = {0};
    for (int i = 0; i < LOOPS; i++) {
        loops[i] = (struct client_loop){.port = web, .stop = &stop, .attempted = &attempted};
        assert_int_equal(pthread_create(&loop_th[i], NULL, client_loop_run, &loops[i]), 0);
    }

    for (int k = 1; k <= TAKEOVERS; k++) {
        loop_advance(&attempted, 500);
        takeover_step(&gen[k - 1], &gen[k], conf);
        if (k > 1) /* only the first one carries the long transfer */
            assert_int_equal(proc_wait(&gen[k - 1], HARNESS_WAIT_MS), 0);
    }
    loop_advance(&attempted, 500);
    atomic_store(&stop, 1);
    for (int i = 0; i < LOOPS; i++)
        pthread_join(loop_th[i], NULL);
    loops_sum(loops, &loop);
    check_refused_by(conf, web, gen[TAKEOVERS].pid);
    atomic_store(&bulk.slow, 0);
    pthread_join(bulk_th, NULL);
    close(bulk.fd);
    assert_int_equal(proc_wait(&gen[0], HARNESS_WAIT_MS), 0); /* drained, then exited 0 */
    assert_int_equal(pid_file_read(), gen[TAKEOVERS].pid);    /* the old ones left D's alone */

    print_message("takeover under load: %d takeovers, %llu connections attempted, %llu failed, "
                  "%llu verified, %llu bytes verified; long transfer %lld of %llu bytes intact\n",
                  TAKEOVERS, (unsigned long long)atomic_load(&attempted), loop.failed,
                  loop.verified, loop.bytes, (long long)bulk.reached,
                  (unsigned long long)bulk.total);
    if (loop.failed > 0)
        print_message("first failure: %s\n", loop.first_error);
    assert_int_equal(loop.failed, 0);
    assert_true(loop.verified > 0);
    assert_int_equal(bulk.reached, (int64_t)bulk.total);
    assert_int_equal(proc_stop(&gen[TAKEOVERS], SIGTERM), 0);
}

/* A takeover whose start fails after it received the sockets (its last step is made to fail)
 * never tells the old process to drain: that one keeps serving and names itself again. */
static void test_failed_takeover_leaves_the_old_one(void **state)
{
    (void)state;
    static char conf[2048];
    char hello[16], line[2048];
    int web = harness_free_port(), bulk_port = harness_free_port();
    struct proc a = {0}, b = {0};
    size_t from = 0;

    config_two(conf, sizeof(conf), web, bulk_port);
    assert_int_equal(sluice_start(&a, conf), 0);
    setenv("SLUICE_FAULT", "pid_file", 1);
    assert_int_equal(sluice_spawn_args(&b, conf, NULL, takeover_args), 0);
    unsetenv("SLUICE_FAULT");
    assert_int_equal(proc_wait(&b, HARNESS_WAIT_MS), 1);
    const char *received[] = {"\"event\":\"takeover_received\"", NULL};
    assert_true(log_count_all(&b, received) > 0);
    const char *abandoned[] = {"\"event\":\"takeover_abandoned\"", NULL};
    assert_int_equal(log_wait(&a, &from, line, sizeof(line), abandoned), 0);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(hello_of(web, hello, sizeof(hello)), 0);
        assert_string_equal(hello, "A");
    }
    const char *drained[] = {"\"event\":\"shutdown_started\"", NULL};
    assert_int_equal(log_count_all(&a, drained), 0);
    check_refused_by(conf, web, a.pid);
    assert_int_equal(proc_stop(&a, SIGTERM), 0);
}

/* A child of uid and gid 65534 (nobody) asks for the sockets of 127.0.0.1:port: 0 when it is
 * closed without an answer, 1 when it got one. */
static int ask_as_nobody(int port)
{
    char text[64];
    struct net_addr addr;
    snprintf(text, sizeof(text), "127.0.0.1:%d", port);
    assert_null(net_addr_parse(text, &addr));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
            _exit(2);
        int fd = listen_lock_connect(&addr);
        char c;
        if (fd < 0)
            _exit(3);
        /* the refusal may close the socket before the request is written */
        if (send(fd, "TAKEOVER\n", 9, MSG_NOSIGNAL) != 9)
            _exit(errno == EPIPE || errno == ECONNRESET ? 0 : 3);
        _exit(read(fd, &c, 1) > 0 ? 1 : 0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_true(WEXITSTATUS(status) <= 1);
    return WEXITSTATUS(status);
}

/* The claim socket is abstract (no file permissions): another user's process that asks for the
 * sockets is refused and logged, and nothing drains. */
static void test_takeover_refuses_other_users(void **state)
{
    (void)state;
    static char conf[2048];
    char hello[16];
    int web = harness_free_port(), bulk_port = harness_free_port();
    struct proc a = {0};
    size_t from = 0;

    if (geteuid() != 0) /* a failure, not a skip: the check would go untested */
        fail_msg("not root (euid %u): asking as another user needs root; run the suite as root "
                 "(CI does)",
                 (unsigned)geteuid());
    config_two(conf, sizeof(conf), web, bulk_port);
    assert_int_equal(sluice_start(&a, conf), 0);
    assert_int_equal(ask_as_nobody(web), 0);
    const char *refused[] = {"\"event\":\"takeover_refused\"", "\"by_uid\":65534", NULL};
    assert_int_equal(log_wait(&a, &from, NULL, 0, refused), 0);
    assert_int_equal(hello_of(web, hello, sizeof(hello)), 0);
    assert_string_equal(hello, "A");
    const char *drained[] = {"\"event\":\"shutdown_started\"", NULL};
    assert_int_equal(log_count_all(&a, drained), 0);
    assert_int_equal(proc_stop(&a, SIGTERM), 0);
}

#define QUEUED 40 /* connections left in the old process's accept queues */

/* Connections queued in the old process's sockets when it hands them over (it is at
 * max_connections, so it does not accept them) are served, none reset: the new process accepts
 * from the same sockets, and the old one's close only drops its reference to them. */
static void test_queued_connections_survive(void **state)
{
    (void)state;
    static char conf_a[2048], conf_b[2048];
    char hello[16], line[2048];
    int web = harness_free_port(), bulk_port = harness_free_port(), queued[QUEUED];
    struct proc a = {0}, b = {0};
    size_t from = 0;

    config_max(conf_a, sizeof(conf_a), web, bulk_port, 1);
    config_two(conf_b, sizeof(conf_b), web, bulk_port);
    assert_int_equal(sluice_start(&a, conf_a), 0);
    int held = tcp_connect(web); /* A's one connection: A accepts no more */
    assert_true(held >= 0 && read_line(held, hello, sizeof(hello)) > 0);
    for (int i = 0; i < QUEUED; i++)
        assert_true((queued[i] = tcp_connect(web)) >= 0); /* the kernel completes them */
    sleep_ms(150);
    assert_int_equal(sluice_start_args(&b, conf_b, takeover_args, NULL), 0);
    const char *draining[] = {"\"event\":\"shutdown_started\"", "\"signal\":\"takeover\"", NULL};
    assert_int_equal(log_wait(&a, &from, line, sizeof(line), draining), 0);
    int served = 0;
    for (int i = 0; i < QUEUED; i++) {
        served += read_line(queued[i], hello, sizeof(hello)) > 0 && strcmp(hello, "A") == 0 &&
                  write_all(queued[i], "ping", 4) == 0 && read_exact(queued[i], line, 4) == 0 &&
                  memcmp(line, "ping", 4) == 0;
        close(queued[i]);
    }
    print_message("queued in the old process at the takeover: %d, served: %d\n", QUEUED, served);
    assert_int_equal(served, QUEUED);
    close(held);
    assert_int_equal(proc_wait(&a, HARNESS_WAIT_MS), 0);
    assert_int_equal(proc_stop(&b, SIGTERM), 0);
}

/* --takeover with nothing to take over: a warning per listener, then an ordinary start. */
static void test_takeover_with_nothing_running(void **state)
{
    (void)state;
    static char conf[2048];
    char hello[16];
    int web = harness_free_port(), bulk_port = harness_free_port();
    struct proc a = {0};

    config_two(conf, sizeof(conf), web, bulk_port);
    assert_int_equal(sluice_start_args(&a, conf, takeover_args, NULL), 0);
    const char *none[] = {"\"event\":\"takeover_nothing_to_take\"", "no sluice serves it", NULL};
    assert_int_equal(log_count_all(&a, none), 2);
    assert_int_equal(hello_of(web, hello, sizeof(hello)), 0);
    assert_string_equal(hello, "A");
    check_refused_by(conf, web, a.pid);
    assert_int_equal(proc_stop(&a, SIGTERM), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_takeover_under_load),
        cmocka_unit_test(test_queued_connections_survive),
        cmocka_unit_test(test_failed_takeover_leaves_the_old_one),
        cmocka_unit_test(test_takeover_with_nothing_running),
        cmocka_unit_test(test_takeover_refuses_other_users),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
