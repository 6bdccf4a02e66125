/* Bytes through sluice: echo, big transfers both ways with checksums, the splice path, half-close
 * both ways, and a slow reader that must not make sluice buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "pattern.h"

#define MIB (1024ULL * 1024ULL)

struct fixture {
    struct proc echo, sink, source, sluice;
    int echo_port, sink_port, source_port;
    int echo_proxy, sink_proxy, source_proxy; /* sluice listener ports */
};

static struct fixture fx;

/* One sluice, three listeners: each to a service with one backend of one mode. */
static int setup(void **state)
{
    (void)state;
    const char *hello[] = {"--hello", "echo-1", NULL};
    fx.echo_port = backend_start(&fx.echo, "echo", hello);
    fx.sink_port = backend_start(&fx.sink, "sink", NULL);
    fx.source_port = backend_start(&fx.source, "source", NULL);
    fx.echo_proxy = harness_free_port();
    fx.sink_proxy = harness_free_port();
    fx.source_proxy = harness_free_port();
    char conf[4096];
    snprintf(conf, sizeof(conf),
             "[sluice]\nworkers = 1\nlog_level = debug\n"
             "[listener:echo]\nbind = 127.0.0.1:%d\nservice = echo\n"
             "[listener:sink]\nbind = 127.0.0.1:%d\nservice = sink\n"
             "[listener:source]\nbind = 127.0.0.1:%d\nservice = source\n"
             "[service:echo]\nbackends = 127.0.0.1:%d\n"
             "[service:sink]\nbackends = 127.0.0.1:%d\n"
             "[service:source]\nbackends = 127.0.0.1:%d\n",
             fx.echo_proxy, fx.sink_proxy, fx.source_proxy, fx.echo_port, fx.sink_port,
             fx.source_port);
    if (fx.echo_port <= 0 || fx.sink_port <= 0 || fx.source_port <= 0)
        return -1;
    return sluice_start(&fx.sluice, conf);
}

static int teardown(void **state)
{
    (void)state;
    int status = proc_stop(&fx.sluice, SIGTERM);
    proc_stop(&fx.echo, SIGTERM);
    proc_stop(&fx.sink, SIGTERM);
    proc_stop(&fx.source, SIGTERM);
    return status == 0 ? 0 : -1;
}

/* The session_end line of the newest session on a listener, logged at debug level. */
static void last_session_end(const char *listener, size_t *from, char *line, size_t len)
{
    char want[128];
    snprintf(want, sizeof(want), "\"listener\":\"%s\"", listener);
    const char *needles[] = {"\"event\":\"session_end\"", want, NULL};
    assert_int_equal(log_wait(&fx.sluice, from, line, len, needles), 0);
}

static void test_echo_small(void **state)
{
    (void)state;
    int fd = tcp_connect(fx.echo_proxy);
    assert_true(fd >= 0);
    char line[64];
    assert_true(read_line(fd, line, sizeof(line)) > 0);
    assert_string_equal(line, "echo-1");
    const char msg[] = "ping through sluice";
    char back[sizeof(msg)];
    for (int i = 0; i < 100; i++) {
        assert_int_equal(write_all(fd, msg, sizeof(msg)), 0);
        assert_int_equal(read_exact(fd, back, sizeof(back)), 0);
        assert_memory_equal(back, msg, sizeof(msg));
    }
    close(fd);
}

/* Upload: the sink answers "<bytes> <fnv1a64>" after our FIN. */
static void upload(uint64_t total, uint64_t seed)
{
    int fd = tcp_connect(fx.sink_proxy);
    assert_true(fd >= 0);
    static unsigned char buf[256 * 1024];
    uint64_t fnv = FNV1A64_INIT;
    for (uint64_t off = 0; off < total;) {
        size_t n = total - off < sizeof(buf) ? (size_t)(total - off) : sizeof(buf);
        pattern_fill(seed, off, buf, n);
        fnv = fnv1a64_update(fnv, buf, n);
        assert_int_equal(write_all(fd, buf, n), 0);
        off += n;
    }
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    char line[128], want[128];
    assert_true(read_line(fd, line, sizeof(line)) > 0);
    snprintf(want, sizeof(want), "%llu %016llx", (unsigned long long)total,
             (unsigned long long)fnv);
    assert_string_equal(line, want);
    char c;
    assert_int_equal(recv(fd, &c, 1, 0), 0); /* then a clean EOF */
    close(fd);
}

/* Download: the source sends the pattern stream of seed, then FIN. */
static void download(uint64_t total, uint64_t seed)
{
    int fd = tcp_connect(fx.source_proxy);
    assert_true(fd >= 0);
    assert_int_equal(source_request(fd, total, seed), 0);
    assert_int_equal(read_pattern_to_eof(fd, seed, 0), (int64_t)total);
    close(fd);
}

static void test_upload_1mib(void **state)
{
    (void)state;
    upload(MIB, 11);
}

static void test_download_1mib(void **state)
{
    (void)state;
    download(MIB, 12);
}

/* A stream that big must leave the copy path for splice(2): the session's own counters say. */
static void test_upload_256mib_spliced(void **state)
{
    (void)state;
    uint64_t total = harness_scale(256 * MIB);
    size_t from = log_size(&fx.sluice);
    upload(total, 21);
    char line[4096];
    last_session_end("sink", &from, line, sizeof(line));
    assert_int_equal(log_field_int(line, "bytes_up"), (long long)total);
    assert_true(log_field_int(line, "spliced_up") >= (long long)(total * 9 / 10));
}

static void test_download_256mib_spliced(void **state)
{
    (void)state;
    uint64_t total = harness_scale(256 * MIB);
    size_t from = log_size(&fx.sluice);
    download(total, 22);
    char line[4096];
    last_session_end("source", &from, line, sizeof(line));
    assert_true(log_field_int(line, "bytes_down") >= (long long)total);
    assert_true(log_field_int(line, "spliced_down") >= (long long)(total * 9 / 10));
}

/* Client FIN first: it stops sending, and still reads the whole reply. */
static void test_half_close_client_first(void **state)
{
    (void)state;
    int fd = tcp_connect(fx.echo_proxy);
    assert_true(fd >= 0);
    char line[64];
    assert_true(read_line(fd, line, sizeof(line)) > 0);
    size_t len = 3 * MIB;
    unsigned char *out = malloc(len), *in = malloc(len + 1);
    pattern_fill(31, 0, out, len);
    /* write in a thread-free way: the echo comes back while we write, so read as we go */
    size_t sent = 0, got = 0;
    while (sent < len) {
        size_t n = len - sent < 65536 ? len - sent : 65536;
        assert_int_equal(write_all(fd, out + sent, n), 0);
        sent += n;
        while (got + 65536 <= sent) {
            assert_int_equal(read_exact(fd, in + got, 65536), 0);
            got += 65536;
        }
    }
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    ssize_t rest = read_to_eof(fd, in + got, len + 1 - got);
    assert_int_equal(rest, (ssize_t)(len - got));
    assert_memory_equal(in, out, len);
    free(out);
    free(in);
    close(fd);
}

/* A backend that speaks first and ends its side first, then reads the client to the end. */
struct early_fin {
    int listen_fd;
    uint64_t received; /* bytes read after its own FIN */
    uint64_t fnv;      /* their checksum */
};

static void *early_fin_backend(void *arg)
{
    struct early_fin *ef = arg;
    int fd = accept(ef->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    write_all(fd, "bye\n", 4);
    shutdown(fd, SHUT_WR);
    unsigned char buf[65536];
    ssize_t n;
    ef->fnv = FNV1A64_INIT;
    while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) {
        ef->received += (uint64_t)n;
        ef->fnv = fnv1a64_update(ef->fnv, buf, (size_t)n);
    }
    close(fd);
    return NULL;
}

static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    listen(fd, 16);
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return fd;
}

/* Server FIN first: the client sees the reply and EOF, then still sends 2 MiB that all arrive. */
static void test_half_close_server_first(void **state)
{
    (void)state;
    struct early_fin ef = {0};
    int backend_port;
    ef.listen_fd = listen_any(&backend_port);
    pthread_t th;
    pthread_create(&th, NULL, early_fin_backend, &ef);
    struct proc p = {0};
    int proxy_port = sluice_in_front_of(&p, backend_port);
    assert_true(proxy_port > 0);

    int fd = tcp_connect(proxy_port);
    assert_true(fd >= 0);
    char line[16];
    assert_true(read_line(fd, line, sizeof(line)) > 0);
    assert_string_equal(line, "bye");
    char c;
    assert_int_equal(recv(fd, &c, 1, 0), 0); /* the server's FIN came through */
    size_t len = 2 * MIB;
    unsigned char *out = malloc(len);
    pattern_fill(41, 0, out, len);
    assert_int_equal(write_all(fd, out, len), 0);
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    assert_int_equal(wait_closed(fd, HARNESS_WAIT_MS), 1);
    pthread_join(th, NULL);
    assert_int_equal(ef.received, len);
    assert_int_equal(ef.fnv, fnv1a64(out, len));
    free(out);
    close(fd);
    close(ef.listen_fd);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

/* A backend that reads one message then either resets, or waits to see how its peer ends. */
struct reset_peer {
    int listen_fd;
    int reset_first; /* 1: reset after the message; 0: report how the client side ended */
    int saw_reset;   /* the read after the message failed with ECONNRESET */
};

static void *reset_backend(void *arg)
{
    struct reset_peer *rp = arg;
    int fd = accept(rp->listen_fd, NULL, NULL);
    char buf[16];
    if (fd < 0 || read_exact(fd, buf, 5) != 0)
        return NULL;
    if (rp->reset_first) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    } else {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        rp->saw_reset = n < 0 && errno == ECONNRESET;
    }
    close(fd);
    return NULL;
}

/* A reset on one side must reach the other as a reset, not as a clean end. */
static void reset_case(int reset_first)
{
    struct reset_peer rp = {.reset_first = reset_first};
    int backend_port;
    rp.listen_fd = listen_any(&backend_port);
    pthread_t th;
    pthread_create(&th, NULL, reset_backend, &rp);
    struct proc p = {0};
    int proxy_port = sluice_in_front_of(&p, backend_port);
    assert_true(proxy_port > 0);
    int fd = tcp_connect(proxy_port);
    assert_true(fd >= 0);
    assert_int_equal(write_all(fd, "hello", 5), 0);
    if (reset_first) {
        char c;
        errno = 0;
        assert_int_equal(recv(fd, &c, 1, 0), -1);
        assert_int_equal(errno, ECONNRESET);
        close(fd);
    } else {
        sleep_ms(50); /* let "hello" reach the backend before the reset overtakes it */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
    }
    pthread_join(th, NULL);
    if (!reset_first)
        assert_true(rp.saw_reset);
    close(rp.listen_fd);
    const char *needles[] = {"\"event\":\"session_end\"", "\"reason\":\"reset\"", NULL};
    assert_int_equal(log_wait(&p, NULL, NULL, 0, needles), 0);
    assert_int_equal(proc_stop(&p, SIGTERM), 0);
}

static void test_backend_reset_resets_client(void **state)
{
    (void)state;
    reset_case(1);
}

static void test_client_reset_resets_backend(void **state)
{
    (void)state;
    reset_case(0);
}

/* The client reads slowly while the source pushes 1 GiB: sluice must stop reading the source
 * instead of buffering, so its memory stays flat; then every byte must still arrive intact. */
static void test_slow_reader_bounded_memory(void **state)
{
    (void)state;
    uint64_t total = harness_scale(1024 * MIB), seed = 51;
    long rss_before = proc_rss_kib(fx.sluice.pid);
    int fd = tcp_connect(fx.source_proxy);
    assert_true(fd >= 0);
    assert_int_equal(source_request(fd, total, seed), 0);
    static unsigned char buf[4096];
    uint64_t off = 0;
    long rss_max = rss_before;
    for (int i = 0; i < 100; i++) { /* slow phase: 4 KiB every 20 ms */
        assert_int_equal(read_exact(fd, buf, 4096), 0);
        assert_int_equal(pattern_check(seed, off, buf, 4096), -1);
        off += 4096;
        long rss = proc_rss_kib(fx.sluice.pid);
        rss_max = rss > rss_max ? rss : rss_max;
        sleep_ms(20);
    }
    /* then drain fast and verify the rest */
    assert_int_equal(read_pattern_to_eof(fd, seed, off), (int64_t)total);
    close(fd);
    print_message("sluice RSS %ld KiB before, %ld KiB max during the slow read\n", rss_before,
                  rss_max);
    assert_true(rss_max - rss_before < 4 * 1024);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_small),
        cmocka_unit_test(test_upload_1mib),
        cmocka_unit_test(test_download_1mib),
        cmocka_unit_test(test_upload_256mib_spliced),
        cmocka_unit_test(test_download_256mib_spliced),
        cmocka_unit_test(test_half_close_client_first),
        cmocka_unit_test(test_half_close_server_first),
        cmocka_unit_test(test_slow_reader_bounded_memory),
        cmocka_unit_test(test_backend_reset_resets_client),
        cmocka_unit_test(test_client_reset_resets_backend),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
