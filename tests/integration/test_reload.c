/* Listener hot reload under load: a client loop on a listener that stays sees no failed
 * connection across 20 reloads (SIGHUP and POST /v1/reload) that add, change, rebind and remove
 * other listeners and change its own settings; a long transfer started before them finishes
 * intact; a removed listener refuses new connections while its open session goes on; a bind
 * that fails is named with its line and the rest of that reload applies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "pattern.h"

#define RELOADS      20
#define CLIENT_BYTES 8192 /* each loop connection sends this and checks the echo */
#define TOKEN        "reload-test-token"
#define BEARER       "Authorization: Bearer " TOKEN "\r\n"

static struct proc echo_a, echo_b, source;
static int port_a, port_b, port_source;

static int setup(void **state)
{
    (void)state;
    const char *hello_a[] = {"--hello", "A", "--threads", "2", NULL};
    const char *hello_b[] = {"--hello", "B", "--threads", "2", NULL};
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

/* --- the client loop ------------------------------------------------------------------------ */

struct client_loop {
    int port;                    /* the listener that stays */
    atomic_int stop;             /* set by the test */
    atomic_ullong attempted;     /* connections tried (the test reads it while running) */
    unsigned long long verified; /* connections whose echo came back intact */
    unsigned long long failed;   /* connections refused, reset or wrong */
    unsigned long long bytes;    /* bytes verified */
    char first_error[128];       /* what the first failure was */
};

/* One connection: the hello (A or B, the staying listener switches services), then bytes out
 * and the same bytes back. 0, or -1 with why. */
static int client_once(int port, unsigned long long n, const char **why)
{
    static const char *const hellos[] = {"A", "B", NULL};
    return echo_verified(port, n, CLIENT_BYTES, hellos, why);
}

static void *client_loop_run(void *arg)
{
    struct client_loop *c = arg;

    while (!atomic_load(&c->stop)) {
        const char *why;
        unsigned long long n = atomic_fetch_add(&c->attempted, 1) + 1;
        if (client_once(c->port, n, &why) == 0) {
            c->verified++;
            c->bytes += CLIENT_BYTES;
        } else if (c->failed++ == 0) {
            snprintf(c->first_error, sizeof(c->first_error), "connection %llu: %s", n, why);
        }
    }
    return NULL;
}

/* Waits (bounded) until the loop has made more connections, so that every reload has
 * connections before and after it. */
static void loop_advance(struct client_loop *c, unsigned long long more)
{
    unsigned long long until = atomic_load(&c->attempted) + more;
    for (int i = 0; i < HARNESS_WAIT_MS && atomic_load(&c->attempted) < until; i++)
        sleep_ms(1);
}

/* --- a long transfer ------------------------------------------------------------------------ */

struct bulk {
    int fd;          /* through sluice to the source backend */
    uint64_t total;  /* bytes asked for */
    int64_t reached; /* offset read up to with every byte right, or -1 */
};

static void *bulk_run(void *arg)
{
    struct bulk *b = arg;
    b->reached = read_pattern_to_eof(b->fd, 99, 0);
    return NULL;
}

/* --- the admin thread reading while the main thread reloads -------------------------------- */

struct poller {
    int port;                  /* admin port */
    atomic_int stop;           /* set by the test */
    unsigned long long reads;  /* /status and /metrics answers */
    unsigned long long failed; /* answers other than 200 */
};

static void *poller_run(void *arg)
{
    struct poller *p = arg;
    static char body[1 << 16];

    while (!atomic_load(&p->stop)) {
        const char *path = p->reads % 2 ? "/metrics" : "/status";
        p->failed += http_request(p->port, "GET", path, NULL, body, sizeof(body)) != 200;
        p->reads++;
    }
    return NULL;
}

/* --- the configs ---------------------------------------------------------------------------- */

struct ports {
    int stay, bulk, gone, mover[2], extra, blocked, admin;
};

/* Reload step k's file (0 = start): "stay" changes its settings and service every step; "mover"
 * alternates binds and services; "extra" comes and goes; "gone" is there at start only;
 * "blocked" (step 10) binds a port someone else holds. Returns the line of [listener:blocked]. */
static int config_step(char *out, size_t len, const struct ports *pt, int k)
{
    static const char *const svc[] = {"sa", "sb"};
    size_t n = 0;
    n += (size_t)snprintf(out + n, len - n,
                          "[sluice]\nworkers = 2\nlog_level = info\nlog_format = json\n"
                          "[admin]\nbind = 127.0.0.1:%d\ntoken = %s\n"
                          "[service:sa]\nbackends = 127.0.0.1:%d\n"
                          "[service:sb]\nbackends = 127.0.0.1:%d\n"
                          "[service:src]\nbackends = 127.0.0.1:%d\n",
                          pt->admin, TOKEN, port_a, port_b, port_source);
    n += (size_t)snprintf(out + n, len - n,
                          "[listener:stay]\nbind = 127.0.0.1:%d\nservice = %s\n"
                          "connect_timeout = %ds\nidle_timeout = %dm\nretries = %d\n"
                          "backlog = %d\n",
                          pt->stay, svc[k % 2], 2 + k % 3, 5 + k, k % 4, 512 + 64 * k);
    n += (size_t)snprintf(out + n, len - n,
                          "[listener:bulk]\nbind = 127.0.0.1:%d\nservice = src\n"
                          "idle_timeout = %dh\nretries = %d\n",
                          pt->bulk, 1 + k, k % 3);
    n += (size_t)snprintf(out + n, len - n, "[listener:mover]\nbind = 127.0.0.1:%d\nservice = %s\n",
                          pt->mover[k % 2], svc[(k / 2) % 2]);
    if (k == 0)
        n += (size_t)snprintf(out + n, len - n,
                              "[listener:gone]\nbind = 127.0.0.1:%d\n"
                              "service = sa\n",
                              pt->gone);
    if (k % 2 == 1)
        n += (size_t)snprintf(out + n, len - n,
                              "[listener:extra]\nbind = 127.0.0.1:%d\n"
                              "service = sb\nretries = %d\n",
                              pt->extra, k % 5);
    int line = 0;
    if (k == 10) {
        for (size_t i = 0; i < n; i++)
            line += out[i] == '\n';
        n += (size_t)snprintf(out + n, len - n,
                              "[listener:blocked]\nbind = 127.0.0.1:%d\n"
                              "service = sa\n",
                              pt->blocked);
        line++;
    }
    return line;
}

/* --- checks --------------------------------------------------------------------------------- */

/* A connection through port gets a hello and its bytes back. */
static int serves(int port)
{
    const char *why;
    return client_once(port, 1, &why) == 0;
}

/* Reload k: through POST /v1/reload on odd steps, SIGHUP on even ones; waits for it to be done. */
static void reload_step(struct proc *p, const struct ports *pt, int k, size_t *from)
{
    if (k % 2 == 1) {
        char body[4096];
        assert_int_equal(
            http_request_with(pt->admin, "POST", "/v1/reload", BEARER, NULL, 0, body, sizeof(body)),
            200);
        assert_non_null(strstr(body, "\"ok\":true"));
    } else {
        proc_signal(p, SIGHUP);
    }
    const char *done[] = {"\"event\":\"reload_done\"", NULL};
    assert_int_equal(log_wait(p, from, NULL, 0, done), 0);
}

/* A socket that holds port without SO_REUSEPORT, so that sluice cannot bind it. */
static int hold_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 1), 0);
    return fd;
}

/* What each reload must have done, seen from outside. */
static void check_step(struct proc *p, const struct ports *pt, int k, int gone_fd)
{
    assert_true(serves(pt->mover[k % 2]));
    assert_true(tcp_connect(pt->mover[(k + 1) % 2]) < 0); /* the old bind is closed */
    if (k % 2 == 1)
        assert_true(serves(pt->extra));
    else
        assert_true(tcp_connect(pt->extra) < 0);
    if (k == 1) { /* gone is removed: no new connection, its open session goes on */
        assert_true(tcp_connect(pt->gone) < 0);
        char back[4];
        assert_int_equal(write_all(gone_fd, "gone", 4), 0);
        assert_int_equal(read_exact(gone_fd, back, 4), 0);
        assert_memory_equal(back, "gone", 4);
    }
    (void)p;
}

static void check_blocked(struct proc *p, size_t from, int line)
{
    char where[64], got[2048];
    /* the bind key is the line after the section header */
    snprintf(where, sizeof(where), ".ini:%d: bind: 127.0.0.1:", line + 1);
    const char *failed[] = {"\"event\":\"reload_listener_failed\"", "\"listener\":\"blocked\"",
                            where, "address already in use", NULL};
    assert_int_equal(log_wait(p, &from, got, sizeof(got), failed), 0);
    print_message("bind failure: %s\n", got);
}

static void test_reload_under_load(void **state)
{
    (void)state;
    struct proc p = {0};
    struct ports pt = {harness_free_port(), harness_free_port(),
                       harness_free_port(), {harness_free_port(), harness_free_port()},
                       harness_free_port(), harness_free_port(),
                       harness_free_port()};
    static char conf[8192];
    config_step(conf, sizeof(conf), &pt, 0);
    assert_int_equal(sluice_start(&p, conf), 0);

    int gone_fd = tcp_connect(pt.gone);
    char hello[16];
    assert_true(gone_fd >= 0 && read_line(gone_fd, hello, sizeof(hello)) > 0);
    struct bulk bulk = {.fd = tcp_connect(pt.bulk), .total = harness_scale(64ULL << 20)};
    assert_true(bulk.fd >= 0);
    assert_int_equal(source_request(bulk.fd, bulk.total, 99), 0);
    pthread_t bulk_th, loop_th;
    assert_int_equal(pthread_create(&bulk_th, NULL, bulk_run, &bulk), 0);
    struct client_loop loop = {.port = pt.stay};
    assert_int_equal(pthread_create(&loop_th, NULL, client_loop_run, &loop), 0);
    pthread_t poll_th;
    struct poller poller = {.port = pt.admin};
    assert_int_equal(pthread_create(&poll_th, NULL, poller_run, &poller), 0);

    int blocker = hold_port(pt.blocked);
    size_t from = log_size(&p);
    for (int k = 1; k <= RELOADS; k++) {
        loop_advance(&loop, 20);
        size_t step_from = from;
        int line = config_step(conf, sizeof(conf), &pt, k);
        config_write(p.conf_path, conf);
        reload_step(&p, &pt, k, &from);
        if (k == 10)
            check_blocked(&p, step_from, line);
        check_step(&p, &pt, k, gone_fd);
        assert_int_equal(http_request(pt.admin, "GET", "/status", NULL, NULL, 0), 200);
    }
    sleep_ms(200); /* a few more connections after the last reload */
    atomic_store(&loop.stop, 1);
    atomic_store(&poller.stop, 1);
    pthread_join(loop_th, NULL);
    pthread_join(poll_th, NULL);
    pthread_join(bulk_th, NULL);
    close(blocker);
    close(gone_fd);
    close(bulk.fd);

    print_message("reload under load: %d reloads, %llu connections attempted, %llu failed, "
                  "%llu verified, %llu bytes verified; long transfer %lld of %llu bytes intact\n",
                  RELOADS, (unsigned long long)atomic_load(&loop.attempted), loop.failed,
                  loop.verified, loop.bytes, (long long)bulk.reached,
                  (unsigned long long)bulk.total);
    print_message("admin reads during the reloads: %llu, failed %llu\n", poller.reads,
                  poller.failed);
    if (loop.failed > 0)
        print_message("first failure: %s\n", loop.first_error);
    assert_int_equal(loop.failed, 0);
    assert_true(loop.verified > 0);
    assert_int_equal(poller.failed, 0);
    assert_int_equal(bulk.reached, (int64_t)bulk.total);
    const char *restart[] = {"\"event\":\"reload_needs_restart\"", NULL};
    assert_int_equal(log_count_all(&p, restart), 0); /* everything here applies live */
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

/* A service that did not exist at start cannot be served until a restart: a listener switched
 * to it keeps its service (named key by key) but takes its other changes; a listener added for
 * it is not opened. */
static void test_reload_names_what_needs_restart(void **state)
{
    (void)state;
    struct proc p = {0};
    int port = harness_free_port(), port_new = harness_free_port();
    char conf[2048], line[1024];
    snprintf(conf, sizeof(conf),
             "[sluice]\nworkers = 1\nlog_format = json\n"
             "[listener:web]\nbind = 127.0.0.1:%d\nservice = sa\n"
             "[service:sa]\nbackends = 127.0.0.1:%d\n",
             port, port_a);
    assert_int_equal(sluice_start(&p, conf), 0);
    snprintf(conf, sizeof(conf),
             "[sluice]\nworkers = 1\nlog_format = json\n"
             "[listener:web]\nbind = 127.0.0.1:%d\nservice = sn\nidle_timeout = 1h\n"
             "[listener:fresh]\nbind = 127.0.0.1:%d\nservice = sn\n"
             "[service:sa]\nbackends = 127.0.0.1:%d\n"
             "[service:sn]\nbackends = 127.0.0.1:%d\n",
             port, port_new, port_a, port_b);
    config_write(p.conf_path, conf);
    size_t from = log_size(&p);
    proc_signal(&p, SIGHUP);
    const char *done[] = {"\"event\":\"reload_done\"", NULL};
    assert_int_equal(log_wait(&p, &from, NULL, 0, done), 0);
    const char *svc[] = {"\"event\":\"reload_needs_restart\"",
                         "\"change\":\"[listener:web] service: sa -> sn\"", NULL};
    const char *fresh[] = {"\"event\":\"reload_needs_restart\"",
                           "\"change\":\"[listener:fresh] service: absent -> sn\"", NULL};
    const char *added[] = {"\"event\":\"reload_needs_restart\"",
                           "\"change\":\"[service:sn] (section): absent -> added\"", NULL};
    const char *idle[] = {"\"event\":\"reload_applied\"",
                          "\"change\":\"[listener:web] idle_timeout: 5m -> 1h\"", NULL};
    const char *const *want[] = {svc, fresh, added, idle};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        size_t at = 0;
        assert_int_equal(log_wait(&p, &at, line, sizeof(line), want[i]), 0);
    }
    char hello[16];
    assert_int_equal(hello_of(port, hello, sizeof(hello)), 0);
    assert_string_equal(hello, "A"); /* still its running service */
    assert_true(tcp_connect(port_new) < 0);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reload_under_load),
        cmocka_unit_test(test_reload_names_what_needs_restart),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
