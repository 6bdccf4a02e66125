/*
 * multi-listen: N listening sockets in one epoll loop, for health-check and many-backend
 * benchmarks (bench/health). Modes:
 *   accept  accept and close at once (what a TCP check needs)
 *   http    read the request head, answer "HTTP/1.1 200 OK ... ok", close
 *   echo    send every byte back; close after the client's EOF (sluice-load rr / connrate)
 * Commands on stdin, one per line, each answered on stdout with the CLOCK_REALTIME of the
 * action (ms since the epoch, µs decimals), so a harness knows when an instance went away:
 *   close PORT...    close those listening sockets (connects are refused from then on)
 *   stall PORT...    stop accepting on them (the kernel still completes handshakes into the
 *                    backlog, but nothing is ever answered: an HTTP check times out)
 *   reopen PORT...   bind a closed port again / accept on a stalled one again (its backlog,
 *                    abandoned by the checker, is accepted and closed first)
 *   stats            counters, and accepts per 50 ms slot of the wall-clock second since the
 *                    last stats ("phase=a,b,...": even = the probes are spread over the interval)
 * stdin EOF or SIGTERM ends the program (stdin is only read when it is a pipe, socket or
 * terminal). Prints "ports P1 P2 ..." and "listening N" once every socket listens.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE     16384
#define ACCEPT_BATCH 64 /* accepts per listener per wake-up: no listener starves the rest */
#define MAX_EVENTS   256

enum { T_LISTENER, T_CONN, T_STDIN };
enum { MODE_ACCEPT, MODE_HTTP, MODE_ECHO };
enum { L_OPEN, L_STALLED, L_CLOSED };

struct lsn {
    int type;  /* T_LISTENER */
    int fd;    /* -1 while closed */
    int port;  /* bound port */
    int state; /* L_OPEN, L_STALLED, L_CLOSED */
};

struct conn {
    int type;         /* T_CONN */
    int fd;           /* the accepted socket */
    uint32_t len;     /* bytes in buf: request head (http) or not yet echoed (echo) */
    uint32_t off;     /* echo: bytes of buf already sent back */
    char buf[BUF_SIZE];
};

static const char HTTP_OK[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

static int g_ep, g_mode;
static struct in_addr g_host;
static struct lsn *g_lsn;
static size_t g_n;
static int g_by_port[65536]; /* port -> index in g_lsn + 1, 0 = none */
static int g_stdin_type = T_STDIN;
static unsigned long long g_accepted, g_answered, g_echo_bytes, g_conns;
/* accepts by phase within the wall-clock second (PHASES slots), since the last stats: shows
 * whether a checker spreads its probes over the interval or sends them in bursts */
#define PHASES 20
static unsigned long long g_phase[PHASES];

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int listen_on(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr = g_host};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -errno;
    /* TIME_WAIT left by answered HTTP checks must not stop a reopen */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

static int bound_port(int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        return -1;
    return ntohs(sa.sin_port);
}

static void watch(int fd, void *ptr, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    if (epoll_ctl(g_ep, op, fd, &ev) < 0 && op != EPOLL_CTL_DEL) {
        perror("epoll_ctl");
        exit(1);
    }
}

static void conn_close(struct conn *c)
{
    close(c->fd); /* closing removes it from the epoll set */
    free(c);
    g_conns--;
}

static void on_accept(struct lsn *l)
{
    if (l->state != L_OPEN)
        return; /* stalled or closed by a command earlier in this batch of events */
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN, or a connection reset before it was accepted */
        g_accepted++;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME_COARSE, &ts);
        g_phase[(ts.tv_nsec / 1000000) * PHASES / 1000]++;
        if (g_mode == MODE_ACCEPT) {
            close(fd);
            continue;
        }
        struct conn *c = malloc(sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->type = T_CONN;
        c->fd = fd;
        c->len = c->off = 0;
        g_conns++;
        if (g_mode == MODE_ECHO) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        watch(fd, c, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_ADD);
    }
}

static void on_http(struct conn *c)
{
    ssize_t n = recv(c->fd, c->buf + c->len, BUF_SIZE - 1 - c->len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_close(c);
        return;
    }
    c->len += (uint32_t)n;
    c->buf[c->len] = '\0';
    if (strstr(c->buf, "\r\n\r\n") == NULL && c->len < BUF_SIZE - 1)
        return; /* the head is not complete yet */
    if (send(c->fd, HTTP_OK, sizeof(HTTP_OK) - 1, MSG_NOSIGNAL) == (ssize_t)sizeof(HTTP_OK) - 1)
        g_answered++;
    conn_close(c);
}

/* Sends what is pending; 1 when all of it went out, 0 when the socket is full, -1 on error. */
static int echo_flush(struct conn *c)
{
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        c->off += (uint32_t)n;
        g_echo_bytes += (unsigned long long)n;
    }
    c->off = c->len = 0;
    return 1;
}

static void on_echo(struct conn *c)
{
    if (c->len > 0) { /* waiting for room: only EPOLLOUT is watched */
        int r = echo_flush(c);
        if (r < 0) {
            conn_close(c);
            return;
        }
        if (r == 0)
            return;
        watch(c->fd, c, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_MOD);
    }
    for (int turn = 0; turn < 4; turn++) { /* a bounded share per wake-up */
        ssize_t n = recv(c->fd, c->buf, BUF_SIZE, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {
            conn_close(c); /* EOF with nothing pending, or an error */
            return;
        }
        c->len = (uint32_t)n;
        c->off = 0;
        int r = echo_flush(c);
        if (r < 0) {
            conn_close(c);
            return;
        }
        if (r == 0) {
            watch(c->fd, c, EPOLLOUT, EPOLL_CTL_MOD);
            return;
        }
        if ((size_t)n < BUF_SIZE)
            return; /* drained */
    }
}

static struct lsn *find(const char *word)
{
    char *end;
    long port = strtol(word, &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535 || g_by_port[port] == 0)
        return NULL;
    return &g_lsn[g_by_port[port] - 1];
}

static void drain_backlog(struct lsn *l)
{
    int fd;
    while ((fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
        close(fd);
}

static void command(char *line, unsigned long long seq)
{
    char *save = NULL, *verb = strtok_r(line, " \t\r\n", &save), *w;
    int done = 0, bad = 0;
    double t0 = now_ms();

    if (verb == NULL)
        return;
    if (strcmp(verb, "stats") == 0) {
        size_t open = 0;
        for (size_t i = 0; i < g_n; i++)
            open += g_lsn[i].state == L_OPEN;
        printf("stats %llu accepted=%llu answered=%llu echo_bytes=%llu conns=%llu open=%zu phase=",
               seq, g_accepted, g_answered, g_echo_bytes, g_conns, open);
        for (int i = 0; i < PHASES; i++) {
            printf(i ? ",%llu" : "%llu", g_phase[i]);
            g_phase[i] = 0;
        }
        printf("\n");
        fflush(stdout);
        return;
    }
    int op = strcmp(verb, "close") == 0 ? 0 : strcmp(verb, "stall") == 0 ? 1
             : strcmp(verb, "reopen") == 0 ? 2 : -1;
    if (op < 0) {
        printf("error %llu unknown command %s\n", seq, verb);
        fflush(stdout);
        return;
    }
    while ((w = strtok_r(NULL, " \t\r\n", &save)) != NULL) {
        struct lsn *l = find(w);
        if (l == NULL) {
            bad++;
            continue;
        }
        if (op == 0 && l->state != L_CLOSED) {
            close(l->fd);
            l->fd = -1;
            l->state = L_CLOSED;
            done++;
        } else if (op == 1 && l->state == L_OPEN) {
            watch(l->fd, l, 0, EPOLL_CTL_DEL);
            l->state = L_STALLED;
            done++;
        } else if (op == 2 && l->state != L_OPEN) {
            if (l->state == L_CLOSED) {
                int fd = listen_on(l->port);
                if (fd < 0) {
                    bad++;
                    continue;
                }
                l->fd = fd;
            } else {
                drain_backlog(l);
            }
            l->state = L_OPEN;
            watch(l->fd, l, EPOLLIN, EPOLL_CTL_ADD);
            done++;
        }
    }
    double t1 = now_ms();
    printf("%s %llu %.3f %.3f done=%d bad=%d\n", verb, seq, t0, t1, done, bad);
    fflush(stdout);
}

static void on_stdin(void)
{
    static char line[1 << 16];
    static size_t len;
    static unsigned long long seq;
    ssize_t n = read(STDIN_FILENO, line + len, sizeof(line) - 1 - len);

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0)
        exit(0); /* the harness went away */
    len += (size_t)n;
    char *start = line, *nl;
    while ((nl = memchr(start, '\n', len - (size_t)(start - line))) != NULL) {
        *nl = '\0';
        command(start, ++seq);
        start = nl + 1;
    }
    len -= (size_t)(start - line);
    memmove(line, start, len);
    if (len == sizeof(line) - 1)
        len = 0; /* an absurdly long line: dropped */
}

static void usage(void)
{
    fprintf(stderr, "usage: multi-listen --count N --mode accept|http|echo [--host IPV4]\n"
                    "                    [--base-port P [--max-port Q]]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"count", required_argument, NULL, 'n'}, {"mode", required_argument, NULL, 'm'},
        {"host", required_argument, NULL, 'h'},  {"base-port", required_argument, NULL, 'b'},
        {"max-port", required_argument, NULL, 'x'}, {NULL, 0, NULL, 0}};
    long count = 0, base = 0, max = 0;
    const char *mode = NULL, *host = "127.0.0.1";
    int c;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'n': count = strtol(optarg, NULL, 10); break;
        case 'm': mode = optarg; break;
        case 'h': host = optarg; break;
        case 'b': base = strtol(optarg, NULL, 10); break;
        case 'x': max = strtol(optarg, NULL, 10); break;
        default: usage();
        }
    }
    if (count < 1 || count > 60000 || mode == NULL || inet_pton(AF_INET, host, &g_host) != 1 ||
        base < 0 || base > 65535 || max < 0 || max > 65535)
        usage();
    if (strcmp(mode, "accept") == 0)
        g_mode = MODE_ACCEPT;
    else if (strcmp(mode, "http") == 0)
        g_mode = MODE_HTTP;
    else if (strcmp(mode, "echo") == 0)
        g_mode = MODE_ECHO;
    else
        usage();
    if (max == 0)
        max = 65535;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    g_lsn = calloc((size_t)count, sizeof(*g_lsn));
    if (g_ep < 0 || g_lsn == NULL) {
        perror("setup");
        return 1;
    }
    /* --base-port: the first free ports from there up (a port that binds is free);
     * otherwise the kernel picks each one (from the ephemeral range) */
    long port = base;
    while (g_n < (size_t)count) {
        if (base > 0 && port > max) {
            fprintf(stderr, "multi-listen: only %zu free ports in %ld..%ld\n", g_n, base, max);
            return 1;
        }
        int fd = listen_on(base > 0 ? (int)port++ : 0);
        if (fd == -EADDRINUSE && base > 0)
            continue;
        if (fd < 0) {
            fprintf(stderr, "multi-listen: listener %zu: %s\n", g_n, strerror(-fd));
            return 1;
        }
        struct lsn *l = &g_lsn[g_n];
        l->type = T_LISTENER;
        l->fd = fd;
        l->port = bound_port(fd);
        l->state = L_OPEN;
        g_by_port[l->port] = (int)++g_n;
        watch(fd, l, EPOLLIN, EPOLL_CTL_ADD);
    }
    /* commands come from a pipe, socket or terminal; stdin = /dev/null (a script's `&`)
     * is not watched, and then only SIGTERM ends the program */
    struct stat st;
    if (fstat(STDIN_FILENO, &st) == 0 &&
        (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || isatty(STDIN_FILENO))) {
        int fl = fcntl(STDIN_FILENO, F_GETFL);
        fcntl(STDIN_FILENO, F_SETFL, fl | O_NONBLOCK);
        watch(STDIN_FILENO, &g_stdin_type, EPOLLIN, EPOLL_CTL_ADD);
    }

    printf("ports");
    for (size_t i = 0; i < g_n; i++)
        printf(" %d", g_lsn[i].port);
    printf("\nlistening %zu\n", g_n);
    fflush(stdout);

    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(g_ep, evs, MAX_EVENTS, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int type = *(int *)evs[i].data.ptr;
            if (type == T_LISTENER)
                on_accept(evs[i].data.ptr);
            else if (type == T_STDIN)
                on_stdin();
            else if (g_mode == MODE_HTTP)
                on_http(evs[i].data.ptr);
            else
                on_echo(evs[i].data.ptr);
        }
    }
}
