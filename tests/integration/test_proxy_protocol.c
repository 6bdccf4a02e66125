/* PROXY protocol end to end, against real implementations: HAProxy (send-proxy, send-proxy-v2)
 * in front of an accept_proxy listener, whose access log must name the original client; nginx's
 * stream module (listen ... proxy_protocol) behind sluice's proxy_protocol = v1 / v2, which must
 * answer the client's own address and port; the whole chain HAProxy -> sluice -> nginx; IPv6.
 * Then the refusals (untrusted peer, garbage, silence past proxy_header_timeout, the ACL on the
 * header's address), each counted by reason, and large transfers both ways behind a header. */
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
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "pattern.h"

#define HAPROXY_BIN         "/usr/sbin/haproxy"
#define NGINX_BIN           "/usr/sbin/nginx"
#define NGINX_STREAM_MODULE "/usr/lib/nginx/modules/ngx_stream_module.so"

#define REJECTED(l, r) "sluice_listener_rejected_total{listener=\"" l "\",reason=\"" r "\"}"

/* --- clients -------------------------------------------------------------------------------- */

static int local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    return ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                    : ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* 1 when the connection gets the hello line "X" and an echo of a few bytes, 0 when it is closed
 * or reset first (a refusal). */
static int served(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    char buf[8];

    assert_int_equal(poll(&pfd, 1, HARNESS_WAIT_MS), 1);
    ssize_t n = recv(fd, buf, 2, 0);
    if (n <= 0) {
        assert_true(n == 0 || errno == ECONNRESET);
        return 0;
    }
    assert_int_equal(n, 2);
    assert_memory_equal(buf, "X\n", 2);
    assert_int_equal(write_all(fd, "ping", 4), 0);
    assert_int_equal(read_exact(fd, buf, 4), 0);
    assert_memory_equal(buf, "ping", 4);
    return 1;
}

/* --- helpers around the real implementations ----------------------------------------------- */

/* HAProxy in TCP mode on 127.0.0.1:port forwarding to sluice at to_port with send (the server
 * line's "send-proxy" or "send-proxy-v2"). */
static void haproxy_start(struct proc *p, int port, int to_port, const char *send)
{
    char path[600], conf[1024];
    snprintf(path, sizeof(path), "%s/haproxy-%d-%d.cfg", harness_tmpdir(), getpid(), port);
    snprintf(conf, sizeof(conf),
             "global\n    maxconn 100\n"
             "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n"
             "    timeout server 60s\n"
             "frontend f\n    bind 127.0.0.1:%d\n    default_backend b\n"
             "backend b\n    server s 127.0.0.1:%d %s\n",
             port, to_port, send);
    config_write(path, conf);
    const char *argv[] = {HAPROXY_BIN, "-db", "-f", path, NULL};
    assert_int_equal(proc_spawn(p, argv), 0);
    assert_int_equal(wait_listening(port), 0);
}

/* nginx (stream module) answering each PROXY protocol connection with "ADDR:PORT\n" of the
 * header, on 127.0.0.1:port, in the foreground with everything under its own directory. */
static void nginx_start(struct proc *p, int port)
{
    char dir[600], path[700], conf[2048];
    snprintf(dir, sizeof(dir), "%s/nginx-%d-%d", harness_tmpdir(), getpid(), port);
    char *const mk[] = {"/bin/mkdir", "-p", dir, NULL};
    char out[256];
    assert_int_equal(run_capture(mk, out, sizeof(out)), 0);
    snprintf(path, sizeof(path), "%s/nginx.conf", dir);
    snprintf(conf, sizeof(conf),
             "load_module %s;\n"
             "daemon off;\nmaster_process off;\npid %s/nginx.pid;\nerror_log %s/error.log info;\n"
             "events { worker_connections 64; }\n"
             "stream {\n"
             "    server {\n"
             "        listen 127.0.0.1:%d proxy_protocol;\n"
             "        return \"$proxy_protocol_addr:$proxy_protocol_port\\n\";\n"
             "    }\n"
             "}\n",
             NGINX_STREAM_MODULE, dir, dir, port);
    config_write(path, conf);
    const char *argv[] = {NGINX_BIN, "-p", dir, "-c", path, "-e", "stderr", NULL};
    assert_int_equal(proc_spawn(p, argv), 0);
    assert_int_equal(wait_listening(port), 0);
}

/* Connects from src to dst:port and returns nginx's line (without '\n') in out. */
static void nginx_says(const char *src, const char *dst, int port, char *out, size_t len,
                       int *client_port)
{
    int fd = tcp_connect_from(src, dst, port);
    *client_port = local_port(fd);
    assert_true(read_line(fd, out, len) > 0);
    close(fd);
}

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

/* The access-log line of a connection from ip:port (what sluice believed), waited for. */
static void assert_access_from(struct proc *p, size_t *from, const char *ip, int port)
{
    char client[64], cport[64];
    snprintf(client, sizeof(client), "\"client\":\"%s\"", ip);
    snprintf(cport, sizeof(cport), "\"client_port\":%d", port);
    const char *needles[] = {"\"event\":\"access\"", client, cport, NULL};
    if (log_wait(p, from, NULL, 0, needles) != 0)
        fail_msg("no access line for %s:%d in %s", ip, port, p->log_path);
}

/* --- interop ---------------------------------------------------------------------------------- */

/* HAProxy (v1, then v2) in front of sluice: sluice's access log names the client behind it. */
static void test_haproxy_in_front(void **state)
{
    (void)state;
    static const char *const sends[] = {"send-proxy", "send-proxy-v2"};
    struct proc s = {0};
    int port = harness_free_port();
    char conf[1024];

    snprintf(conf, sizeof(conf),
             "[sluice]\nworkers = 1\nlog_level = debug\n"
             "[listener:web]\nbind = 127.0.0.1:%d\nservice = api\nlog_access = on\n"
             "accept_proxy = on\nproxy_trusted = 127.0.0.1\n"
             "[service:api]\nbackends = 127.0.0.1:%d\n",
             port, backend_port);
    assert_int_equal(sluice_start(&s, conf), 0);
    for (size_t i = 0; i < 2; i++) {
        struct proc h = {0};
        int hport = harness_free_port();
        size_t from = log_size(&s);
        haproxy_start(&h, hport, port, sends[i]);
        int fd = tcp_connect_from("127.0.0.5", "127.0.0.1", hport);
        int cport = local_port(fd);
        assert_int_equal(served(fd), 1);
        close(fd);
        assert_access_from(&s, &from, "127.0.0.5", cport);
        proc_stop(&h, SIGTERM);
    }
    assert_int_equal(proc_stop(&s, SIGTERM), 0);
}

/* sluice (v1, then v2, IPv4 and IPv6 listeners) in front of nginx: nginx reads the client's own
 * address and port from the header sluice sent. */
static void test_nginx_behind(void **state)
{
    (void)state;
    struct proc n = {0}, s = {0};
    int nport = harness_free_port(), p1 = harness_free_port(), p2 = harness_free_port();
    int p6 = harness_free_port();
    char conf[2048], line[128], want[128];
    int cport;

    nginx_start(&n, nport);
    snprintf(conf, sizeof(conf),
             "[sluice]\nworkers = 1\n"
             "[listener:v1]\nbind = 127.0.0.1:%d\nservice = n1\n"
             "[listener:v2]\nbind = 127.0.0.1:%d\nservice = n2\n"
             "[listener:v6]\nbind = [::1]:%d\nservice = n2\n"
             "[service:n1]\nbackends = 127.0.0.1:%d\nproxy_protocol = v1\n"
             "[service:n2]\nbackends = 127.0.0.1:%d\nproxy_protocol = v2\n",
             p1, p2, p6, nport, nport);
    assert_int_equal(sluice_start(&s, conf), 0);

    nginx_says("127.0.0.7", "127.0.0.1", p1, line, sizeof(line), &cport);
    snprintf(want, sizeof(want), "127.0.0.7:%d", cport);
    assert_string_equal(line, want);
    nginx_says("127.0.0.7", "127.0.0.1", p2, line, sizeof(line), &cport);
    snprintf(want, sizeof(want), "127.0.0.7:%d", cport);
    assert_string_equal(line, want);
    nginx_says("::1", "::1", p6, line, sizeof(line), &cport);
    snprintf(want, sizeof(want), "::1:%d", cport);
    assert_string_equal(line, want);

    assert_int_equal(proc_stop(&s, SIGTERM), 0);
    proc_stop(&n, SIGTERM);
}

/* client -> HAProxy (send-proxy-v2) -> sluice (accept_proxy, proxy_protocol = v1) -> nginx:
 * nginx names the original client. */
static void test_full_chain(void **state)
{
    (void)state;
    struct proc h = {0}, n = {0}, s = {0};
    int nport = harness_free_port(), port = harness_free_port(), hport = harness_free_port();
    char conf[1024], line[128], want[128];
    int cport;

    nginx_start(&n, nport);
    snprintf(conf, sizeof(conf),
             "[sluice]\nworkers = 1\n"
             "[listener:web]\nbind = 127.0.0.1:%d\nservice = n\n"
             "accept_proxy = on\nproxy_trusted = 127.0.0.1/32\n"
             "[service:n]\nbackends = 127.0.0.1:%d\nproxy_protocol = v1\n",
             port, nport);
    assert_int_equal(sluice_start(&s, conf), 0);
    haproxy_start(&h, hport, port, "send-proxy-v2");
    nginx_says("127.0.0.5", "127.0.0.1", hport, line, sizeof(line), &cport);
    snprintf(want, sizeof(want), "127.0.0.5:%d", cport);
    assert_string_equal(line, want);
    proc_stop(&h, SIGTERM);
    assert_int_equal(proc_stop(&s, SIGTERM), 0);
    proc_stop(&n, SIGTERM);
}

/* --- refusals and the data path ------------------------------------------------------------ */

/* A trusted connection (from 127.0.0.1) that sends header first, then the caller's bytes. */
static int with_header(int port, const char *header)
{
    int fd = tcp_connect_from("127.0.0.1", "127.0.0.1", port);
    assert_int_equal(write_all(fd, header, strlen(header)), 0);
    return fd;
}

/* Listener ports of the refusal test's sluice. */
struct refusing_ports {
    int admin, web, slow, down, up; /* admin; listeners web, slow, down, up */
};

static void start_refusing(struct proc *s, const struct refusing_ports *p, int source_port,
                           int verify_port)
{
    char conf[2048];
    snprintf(conf, sizeof(conf),
             "[sluice]\nworkers = 1\nlog_level = debug\n"
             "[admin]\nbind = 127.0.0.1:%d\n"
             "[listener:web]\nbind = 127.0.0.1:%d\nservice = api\nlog_access = on\n"
             "accept_proxy = on\nproxy_trusted = 127.0.0.1/32, ::1\n"
             "proxy_header_timeout = 200ms\ndeny = 127.0.0.5\n"
             "[listener:slow]\nbind = 127.0.0.1:%d\nservice = api\nlog_access = on\n"
             "accept_proxy = on\nproxy_trusted = 127.0.0.1\nproxy_header_timeout = 1m\n"
             "[listener:down]\nbind = 127.0.0.1:%d\nservice = source\n"
             "accept_proxy = on\nproxy_trusted = 127.0.0.1\n"
             "[listener:up]\nbind = 127.0.0.1:%d\nservice = verify\n"
             "accept_proxy = on\nproxy_trusted = 127.0.0.1\n"
             "[service:api]\nbackends = 127.0.0.1:%d\n"
             "[service:source]\nbackends = 127.0.0.1:%d\n"
             "[service:verify]\nbackends = 127.0.0.1:%d\n",
             p->admin, p->web, p->slow, p->down, p->up, backend_port, source_port, verify_port);
    assert_int_equal(sluice_start(s, conf), 0);
}

/* The field of the session_end line of listener (debug log), waited for. */
static long long spliced(struct proc *p, const char *listener, const char *field)
{
    char want[64], line[2048];
    size_t at = 0;
    snprintf(want, sizeof(want), "\"listener\":\"%s\"", listener);
    const char *needles[] = {"\"event\":\"session_end\"", want, NULL};
    assert_int_equal(log_wait(p, &at, line, sizeof(line), needles), 0);
    return log_field_int(line, field);
}

static void test_refusals_counted(void **state)
{
    (void)state;
    struct proc s = {0}, src = {0}, ver = {0};
    int admin = harness_free_port(), port = harness_free_port();
    int down = harness_free_port(), up = harness_free_port();
    int source_port = backend_start(&src, "source", NULL);
    int verify_port = backend_start(&ver, "verify", NULL);
    assert_true(source_port > 0 && verify_port > 0);
    int slow_port = harness_free_port();
    struct refusing_ports ports = {admin, port, slow_port, down, up};
    start_refusing(&s, &ports, source_port, verify_port);

    /* untrusted peer: refused before reading anything */
    int fd = tcp_connect_from("127.0.0.9", "127.0.0.1", port);
    assert_int_equal(served(fd), 0);
    close(fd);
    assert_true(metrics_scrape(admin, REJECTED("web", "proxy_untrusted")) == 1);

    /* garbage instead of a header */
    fd = with_header(port, "GET / HTTP/1.0\r\n\r\n");
    assert_int_equal(served(fd), 0);
    close(fd);
    assert_true(metrics_scrape(admin, REJECTED("web", "proxy_invalid")) == 1);
    const char *why[] = {"\"event\":\"connection_rejected\"", "\"reason\":\"proxy_invalid\"",
                         "no PROXY signature", NULL};
    size_t at = 0;
    assert_int_equal(log_wait(&s, &at, NULL, 0, why), 0);

    /* silence: closed once the 200 ms deadline passed (the wait allows far more) */
    fd = tcp_connect_from("127.0.0.1", "127.0.0.1", port);
    assert_int_equal(wait_closed(fd, HARNESS_WAIT_MS), 1);
    close(fd);
    assert_true(metrics_scrape(admin, REJECTED("web", "proxy_timeout")) == 1);

    /* half a header, then nothing: the same deadline */
    fd = with_header(port, "PROXY TCP4 10.9.8.7 ");
    assert_int_equal(wait_closed(fd, HARNESS_WAIT_MS), 1);
    close(fd);
    assert_true(metrics_scrape(admin, REJECTED("web", "proxy_timeout")) == 2);

    /* the ACL judges the header's address: 127.0.0.5 is denied, 127.0.0.6 is not */
    fd = with_header(port, "PROXY TCP4 127.0.0.5 127.0.0.1 4000 80\r\n");
    assert_int_equal(served(fd), 0);
    close(fd);
    assert_true(metrics_scrape(admin, REJECTED("web", "deny")) == 1);
    size_t from = log_size(&s);
    fd = with_header(port, "PROXY TCP4 127.0.0.6 127.0.0.1 4001 80\r\n");
    assert_int_equal(served(fd), 1);
    close(fd);
    assert_access_from(&s, &from, "127.0.0.6", 4001);

    /* a header split byte by byte (where the header timeout is far longer than the writes
     * take), and one that keeps the peer's address (UNKNOWN) */
    static const char split[] = "PROXY TCP6 2001:db8::9 ::1 4002 80\r\n";
    fd = tcp_connect_from("127.0.0.1", "127.0.0.1", slow_port);
    for (size_t i = 0; i < sizeof(split) - 1; i++) {
        assert_int_equal(write_all(fd, split + i, 1), 0);
        sleep_ms(2);
    }
    assert_int_equal(served(fd), 1);
    close(fd);
    assert_access_from(&s, &from, "2001:db8::9", 4002);
    fd = with_header(port, "PROXY UNKNOWN\r\n");
    int peer_port = local_port(fd);
    assert_int_equal(served(fd), 1);
    close(fd);
    assert_access_from(&s, &from, "127.0.0.1", peer_port);
    assert_true(metrics_scrape(admin, REJECTED("web", "proxy_invalid")) == 1);
    assert_true(metrics_scrape(admin, REJECTED("web", "proxy_timeout")) == 2);

    /* downloads: a v2 header, then a large pattern stream from a source backend, verified */
    uint64_t total = harness_scale(64ull << 20);
    uint8_t v2hdr[28] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
                         0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C, 10,   1,    2,    3,
                         127,  0,    0,    1,    0x13, 0x88, 0x00, 0x50};
    fd = tcp_connect_from("127.0.0.1", "127.0.0.1", down);
    assert_int_equal(write_all(fd, v2hdr, sizeof(v2hdr)), 0);
    assert_int_equal(source_request(fd, total, 7), 0);
    assert_int_equal(read_pattern_to_eof(fd, 7, 0), (int64_t)total);
    close(fd);

    /* uploads: header, request line and the first bytes in one write, then the rest */
    static uint8_t chunk[1 << 16];
    char first[256];
    int n = snprintf(first, sizeof(first), "PROXY TCP4 10.1.2.3 127.0.0.1 5000 80\r\n9\n");
    fd = tcp_connect_from("127.0.0.1", "127.0.0.1", up);
    pattern_fill(9, 0, chunk, 100);
    memcpy(first + n, chunk, 100);
    assert_int_equal(write_all(fd, first, (size_t)n + 100), 0);
    for (uint64_t off = 100; off < total; off += sizeof(chunk)) {
        size_t len = total - off < sizeof(chunk) ? (size_t)(total - off) : sizeof(chunk);
        pattern_fill(9, off, chunk, len);
        assert_int_equal(write_all(fd, chunk, len), 0);
    }
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    char reply[64], expect[64];
    assert_true(read_line(fd, reply, sizeof(reply)) > 0);
    snprintf(expect, sizeof(expect), "%llu -1", (unsigned long long)total);
    assert_string_equal(reply, expect);
    close(fd);
    /* the payload behind the header stayed queued for the pump: both ways went by splice */
    assert_true(spliced(&s, "down", "spliced_down") > 0);
    assert_true(spliced(&s, "up", "spliced_up") > 0);

    assert_int_equal(proc_stop(&s, SIGTERM), 0);
    proc_stop(&src, SIGTERM);
    proc_stop(&ver, SIGTERM);
}

/* sluice -t on a file of one listener (extra lines after its service key) and one service
 * (extra lines after backends): its output must hold "FILE:LINE: " + want. */
static void assert_config_error(const char *listener_extra, const char *service_extra, int line,
                                const char *want)
{
    char path[600], out[4096], text[1024], expect[800];
    snprintf(path, sizeof(path), "%s/proxy-conf-%d.ini", harness_tmpdir(), getpid());
    snprintf(text, sizeof(text),
             "[listener:web]\nbind = 127.0.0.1:1\nservice = api\n%s"
             "[service:api]\nbackends = 127.0.0.1:2\n%s",
             listener_extra, service_extra);
    config_write(path, text);
    char *const argv[] = {(char *)harness_bin("SLUICE_BIN"), "-t", "-c", path, NULL};
    assert_int_not_equal(run_capture(argv, out, sizeof(out)), 0);
    snprintf(expect, sizeof(expect), "%s:%d: %s", path, line, want);
    if (strstr(out, expect) == NULL)
        fail_msg("expected \"%s\" in: %s", expect, out);
}

/* The keys' rules, each a FILE:LINE error naming the key. */
static void test_config_errors(void **state)
{
    (void)state;
    assert_config_error("accept_proxy = on\n", "", 4, "accept_proxy");
    assert_config_error("accept_proxy = on\n", "", 4, "accept_proxy: needs proxy_trusted");
    assert_config_error("proxy_trusted = 10.0.0.0/8\n", "", 4,
                        "proxy_trusted: only applies to accept_proxy = on");
    assert_config_error("accept_proxy = on\nproxy_trusted = 10.0.0.1/8\n", "", 5, "proxy_trusted");
    assert_config_error("accept_proxy = on\nproxy_trusted = 10.0.0.1\n"
                        "proxy_header_timeout = 2m\n",
                        "", 6, "proxy_header_timeout");
    assert_config_error("", "proxy_protocol = v3\n", 6, "proxy_protocol");
}

/* A reload that changes proxy_trusted applies to the next connections. */
/* Per-client limits count the client the header names, not the proxy that sent it: every
 * connection here comes from 127.0.0.1. */
static void test_limits_follow_the_header(void **state)
{
    (void)state;
    struct proc s = {0};
    int admin = harness_free_port(), port = harness_free_port();
    char conf[1024];
    snprintf(conf, sizeof(conf),
             "[sluice]\nworkers = 1\n[admin]\nbind = 127.0.0.1:%d\n"
             "[listener:web]\nbind = 127.0.0.1:%d\nservice = api\nlog_access = on\n"
             "accept_proxy = on\nproxy_trusted = 127.0.0.1\nmax_connections_per_client = 1\n"
             "[service:api]\nbackends = 127.0.0.1:%d\n",
             admin, port, backend_port);
    assert_int_equal(sluice_start(&s, conf), 0);

    int held = with_header(port, "PROXY TCP4 127.0.0.5 127.0.0.1 4000 80\r\n");
    assert_int_equal(served(held), 1);
    int fd = with_header(port, "PROXY TCP4 127.0.0.5 127.0.0.1 4001 80\r\n");
    assert_int_equal(served(fd), 0); /* 127.0.0.5 has its one connection */
    close(fd);
    assert_true(metrics_scrape(admin, REJECTED("web", "client_connections")) == 1);
    fd = with_header(port, "PROXY TCP4 127.0.0.6 127.0.0.1 4002 80\r\n");
    assert_int_equal(served(fd), 1); /* another client behind the same proxy */
    close(fd);

    size_t from = log_size(&s);
    close(held);
    assert_access_from(&s, &from, "127.0.0.5", 4000); /* its slot is given back */
    fd = with_header(port, "PROXY TCP4 127.0.0.5 127.0.0.1 4003 80\r\n");
    assert_int_equal(served(fd), 1);
    close(fd);
    assert_true(metrics_scrape(admin, REJECTED("web", "client_connections")) == 1);
    assert_int_equal(proc_stop(&s, SIGTERM), 0);
}

static void test_reload_trust(void **state)
{
    (void)state;
    struct proc s = {0};
    int port = harness_free_port();
    char conf[1024];
    const char *fmt = "[sluice]\nworkers = 1\n"
                      "[listener:web]\nbind = 127.0.0.1:%d\nservice = api\n"
                      "accept_proxy = on\nproxy_trusted = %s\n"
                      "[service:api]\nbackends = 127.0.0.1:%d\n";

    snprintf(conf, sizeof(conf), fmt, port, "127.0.0.2", backend_port);
    assert_int_equal(sluice_start(&s, conf), 0);
    int fd = tcp_connect_from("127.0.0.1", "127.0.0.1", port);
    (void)write_all(fd, "PROXY UNKNOWN\r\n", 15); /* the reset at accept may come first */
    assert_int_equal(served(fd), 0);
    close(fd);

    snprintf(conf, sizeof(conf), fmt, port, "127.0.0.0/24", backend_port);
    config_write(s.conf_path, conf);
    size_t from = log_size(&s);
    proc_signal(&s, SIGHUP);
    const char *applied[] = {"\"event\":\"reload_applied\"",
                             "[listener:web] proxy_trusted: 1 ranges -> 1 ranges", NULL};
    assert_int_equal(log_wait(&s, &from, NULL, 0, applied), 0);
    const char *done[] = {"\"event\":\"reload_done\"", NULL};
    assert_int_equal(log_wait(&s, &from, NULL, 0, done), 0);
    fd = tcp_connect_from("127.0.0.1", "127.0.0.1", port);
    assert_int_equal(write_all(fd, "PROXY UNKNOWN\r\n", 15), 0);
    assert_int_equal(served(fd), 1);
    close(fd);
    assert_int_equal(proc_stop(&s, SIGTERM), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_reload_trust),
        cmocka_unit_test(test_haproxy_in_front),
        cmocka_unit_test(test_nginx_behind),
        cmocka_unit_test(test_full_chain),
        cmocka_unit_test(test_refusals_counted),
        cmocka_unit_test(test_limits_follow_the_header),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
