/* sluice-backend: multi-threaded epoll test server (echo, sink, verify, source, http). */
#include "backend.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* Steps one connection may take per turn before others get theirs. */
#define STEP_BUDGET 16
#define MAX_EVENTS  256
#define MAX_THREADS 64

/* Command-line settings. */
struct backend_opts {
    struct backend_conf conf; /* what every worker does */
    struct util_addr listen;  /* where to listen */
    unsigned threads;         /* worker threads, one listener each */
};

ssize_t backend_recv(struct backend_conn *c, void *buf, size_t len)
{
    int drained;
    ssize_t n = util_recv_edge(c->fd, buf, len, c->rd_hup, &drained);

    if (n == 0)
        c->rd_eof = 1;
    if (drained)
        c->readable = 0;
    return n;
}

ssize_t backend_send_raw(struct backend_conn *c, const void *buf, size_t len)
{
    int full;
    ssize_t n = util_send_edge(c->fd, buf, len, &full);

    if (full)
        c->writable = 0;
    return n;
}

/* Keeps a heap copy of bytes the kernel did not take; the buffer lives only while needed. */
static int out_append(struct backend_conn *c, const void *buf, size_t len)
{
    size_t keep = c->out_len - c->out_off;
    unsigned char *out = malloc(keep + len);

    if (out == NULL)
        return -ENOMEM;
    if (keep > 0)
        memcpy(out, c->out + c->out_off, keep);
    memcpy(out + keep, buf, len);
    free(c->out);
    c->out = out;
    c->out_len = keep + len;
    c->out_off = 0;
    return 0;
}

int backend_send(struct backend_conn *c, const void *buf, size_t len)
{
    size_t done = 0;

    if (c->out == NULL && c->writable) {
        ssize_t n = backend_send_raw(c, buf, len);
        if (n < 0 && n != -EAGAIN)
            return (int)n;
        if (n > 0)
            done = (size_t)n;
    }
    if (done == len)
        return 0;
    return out_append(c, (const unsigned char *)buf + done, len - done);
}

/* Sends pending bytes: 1 once all are gone, 0 when the socket is full, -errno on failure. */
static int conn_flush(struct backend_conn *c)
{
    while (c->out_off < c->out_len) {
        if (!c->writable)
            return 0;
        ssize_t n = backend_send_raw(c, c->out + c->out_off, c->out_len - c->out_off);
        if (n == -EAGAIN)
            return 0;
        if (n < 0)
            return (int)n;
        c->out_off += (size_t)n;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = 0;
    c->out_off = 0;
    return 1;
}

/* After our FIN, read until the peer's EOF so late bytes from it are not answered by RST. */
static enum backend_step conn_linger(struct backend_worker *w, struct backend_conn *c)
{
    if (!c->wr_shut) {
        shutdown(c->fd, SHUT_WR);
        c->wr_shut = 1;
    }
    if (c->rd_eof)
        return BACKEND_CLOSE;
    if (!c->readable)
        return BACKEND_BLOCKED;
    ssize_t n = backend_recv(c, w->scratch, BACKEND_SCRATCH);
    if (n == -EAGAIN)
        return BACKEND_BLOCKED;
    return n < 0 ? BACKEND_CLOSE : BACKEND_PROGRESS;
}

static enum backend_step conn_step(struct backend_worker *w, struct backend_conn *c)
{
    if (c->out != NULL) {
        /* Backpressure: nothing else happens on this connection until the peer reads. */
        int r = conn_flush(c);
        if (r < 0)
            return BACKEND_CLOSE;
        return r == 0 ? BACKEND_BLOCKED : BACKEND_PROGRESS;
    }
    if (c->fin)
        return conn_linger(w, c);
    return backend_proto_step(w, c);
}

static void conn_close(struct backend_conn *c)
{
    util_list_unlink(&c->link);
    util_list_unlink(&c->ready);
    close(c->fd);
    free(c->out);
    free(c);
}

/* Runs the connection until it blocks or spends its budget; then it queues for another turn. */
static void conn_drive(struct backend_worker *w, struct backend_conn *c)
{
    for (int i = 0; i < STEP_BUDGET; i++) {
        switch (conn_step(w, c)) {
        case BACKEND_PROGRESS:
            break;
        case BACKEND_BLOCKED:
            return;
        case BACKEND_CLOSE:
            conn_close(c);
            return;
        }
    }
    if (util_list_empty(&c->ready))
        util_list_push(&w->ready, &c->ready);
}

static void conn_accepted(struct backend_worker *w, int fd)
{
    struct backend_conn *c = calloc(1, sizeof(*c));
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET};

    if (c == NULL) {
        close(fd);
        return;
    }
    c->fd = fd;
    c->writable = 1; /* a fresh socket has an empty send buffer */
    util_list_init(&c->ready);
    util_list_push(&w->conns, &c->link);
    util_set_nodelay(fd);
    ev.data.ptr = c;
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0 || backend_proto_open(w, c) == BACKEND_CLOSE) {
        conn_close(c);
        return;
    }
    conn_drive(w, c);
}

static void accept_all(struct backend_worker *w)
{
    static int warned;

    for (;;) {
        int fd = accept4(w->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            w->accepted++;
            conn_accepted(w, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK &&
            !__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
            fprintf(stderr, "sluice-backend: accept: %s\n", strerror(errno));
        return;
    }
}

/* util_list_run callback: one more turn for a connection that ran out of budget. */
static void drive_ready(void *w, struct util_list *node)
{
    conn_drive(w, UTIL_CONTAINER_OF(node, struct backend_conn, ready));
}

static void dispatch(struct backend_worker *w, const struct epoll_event *ev)
{
    struct backend_conn *c = ev->data.ptr;

    if (ev->data.ptr == &w->listen_fd) {
        accept_all(w);
        return;
    }
    if (ev->data.ptr == &w->wake_fd) {
        w->stopping = 1;
        return;
    }
    if (ev->events & UTIL_EV_READABLE)
        c->readable = 1;
    if (ev->events & UTIL_EV_RD_HUP)
        c->rd_hup = 1;
    if (ev->events & UTIL_EV_WRITABLE)
        c->writable = 1;
    conn_drive(w, c);
}

static void *worker_run(void *arg)
{
    struct backend_worker *w = arg;
    struct epoll_event evs[MAX_EVENTS];

    while (!w->stopping) {
        int timeout = util_list_empty(&w->ready) ? -1 : 0;
        int n = epoll_wait(w->ep, evs, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) {
            perror("sluice-backend: epoll_wait");
            break;
        }
        for (int i = 0; i < n; i++)
            dispatch(w, &evs[i]);
        util_list_run(&w->ready, drive_ready, w);
    }
    while (!util_list_empty(&w->conns))
        conn_close(UTIL_CONTAINER_OF(w->conns.next, struct backend_conn, link));
    return NULL;
}

static int epoll_add(int ep, int fd, void *ptr)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = ptr};
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

/* Sets up one worker around its listener; 0 or -errno. */
static int worker_init(struct backend_worker *w, const struct backend_conf *conf, int listen_fd)
{
    w->conf = conf;
    w->listen_fd = listen_fd;
    util_list_init(&w->conns);
    util_list_init(&w->ready);
    w->scratch = malloc(BACKEND_SCRATCH);
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->scratch == NULL || w->ep < 0 || w->wake_fd < 0)
        return -ENOMEM;
    if (epoll_add(w->ep, listen_fd, &w->listen_fd) < 0 ||
        epoll_add(w->ep, w->wake_fd, &w->wake_fd) < 0)
        return -errno;
    return 0;
}

static void worker_fini(struct backend_worker *w)
{
    close(w->listen_fd);
    close(w->wake_fd);
    close(w->ep);
    free(w->scratch);
}

/*
 * Binds every listener to one port. SO_REUSEPORT would let us silently share a port with a
 * stale backend of the same user, so the port is first claimed (or picked, for port 0) by a
 * plain socket, which is released only when more than one listener must share it.
 */
static int open_listeners(struct backend_opts *o, int *fds)
{
    fds[0] = util_listen(&o->listen, 0, 1);
    if (fds[0] < 0 || util_local_addr(fds[0], &o->listen) < 0) {
        fprintf(stderr, "sluice-backend: listen: %s\n", strerror(fds[0] < 0 ? -fds[0] : errno));
        return -1;
    }
    if (o->threads == 1)
        return 0;
    close(fds[0]);
    for (unsigned i = 0; i < o->threads; i++) {
        fds[i] = util_listen(&o->listen, 1, 1);
        if (fds[i] < 0) {
            fprintf(stderr, "sluice-backend: listen: %s\n", strerror(-fds[i]));
            return -1;
        }
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sluice-backend --listen HOST:PORT --mode echo|sink|verify|source|http\n"
               "                      [--threads N] [--hello TEXT] [--http-status CODE]\n");
}

static int parse_opt(struct backend_opts *o, int opt, const char *arg)
{
    uint64_t v = 0;

    switch (opt) {
    case 'l':
        return util_parse_addr(arg, &o->listen);
    case 'm':
        return backend_mode_parse(arg, &o->conf.mode);
    case 't':
        if (util_parse_u64(arg, &v) < 0 || v == 0 || v > MAX_THREADS)
            return -EINVAL;
        o->threads = (unsigned)v;
        return 0;
    case 'H':
        o->conf.hello = arg;
        return 0;
    case 's':
        if (util_parse_u64(arg, &v) < 0 || v < 100 || v > 999)
            return -EINVAL;
        o->conf.http_status = (int)v;
        return 0;
    default:
        return -EINVAL;
    }
}

static int parse_args(struct backend_opts *o, int argc, char **argv)
{
    static const struct option longs[] = {{"listen", required_argument, NULL, 'l'},
                                          {"mode", required_argument, NULL, 'm'},
                                          {"threads", required_argument, NULL, 't'},
                                          {"hello", required_argument, NULL, 'H'},
                                          {"http-status", required_argument, NULL, 's'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    int have_listen = 0, have_mode = 0, opt, idx = 0;

    while ((opt = getopt_long(argc, argv, "", longs, &idx)) != -1) {
        if (opt == 'h') {
            usage(stdout);
            exit(0);
        }
        if (parse_opt(o, opt, optarg) < 0) {
            if (opt != '?')
                fprintf(stderr, "sluice-backend: bad value for --%s: %s\n", longs[idx].name,
                        optarg);
            return -1;
        }
        have_listen |= opt == 'l';
        have_mode |= opt == 'm';
    }
    if (!have_listen || !have_mode || optind != argc)
        return -1;
    return 0;
}

/* The greeting goes out in one send, so keep it with its newline in one buffer. */
static char *make_hello(struct backend_conf *conf)
{
    size_t len = strlen(conf->hello);
    char *line = malloc(len + 2);

    if (line == NULL)
        return NULL;
    memcpy(line, conf->hello, len);
    line[len] = '\n';
    line[len + 1] = '\0';
    conf->hello = line;
    conf->hello_len = len + 1;
    return line;
}

static int run(struct backend_opts *o)
{
    struct backend_worker workers[MAX_THREADS] = {0};
    int fds[MAX_THREADS];
    char text[96];
    int sig;
    sigset_t set;

    if (open_listeners(o, fds) < 0)
        return 1;
    for (unsigned i = 0; i < o->threads; i++) {
        if (worker_init(&workers[i], &o->conf, fds[i]) < 0 ||
            pthread_create(&workers[i].thread, NULL, worker_run, &workers[i]) != 0) {
            fprintf(stderr, "sluice-backend: cannot start worker %u\n", i);
            return 1;
        }
    }
    printf("listening %s\n", util_format_addr(&o->listen, text, sizeof(text)));
    fflush(stdout);

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    /* SIGUSR1 / SIGUSR2: http answers 503 / its own status again (health-check tests) */
    while (sigwait(&set, &sig) == 0 && (sig == SIGUSR1 || sig == SIGUSR2))
        atomic_store(&o->conf.http_down, sig == SIGUSR1);
    for (unsigned i = 0; i < o->threads; i++) {
        uint64_t one = 1;
        if (write(workers[i].wake_fd, &one, sizeof(one)) < 0)
            perror("sluice-backend: wake");
    }
    for (unsigned i = 0; i < o->threads; i++) {
        pthread_join(workers[i].thread, NULL);
        worker_fini(&workers[i]);
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct backend_opts o = {.conf = {.mode = BACKEND_ECHO, .http_status = 200}, .threads = 1};
    char *hello = NULL;
    int rc;

    if (parse_args(&o, argc, argv) < 0) {
        usage(stderr);
        return 2;
    }
    if (o.conf.hello != NULL && (hello = make_hello(&o.conf)) == NULL)
        return 1;
    util_raise_nofile();
    /* Workers inherit the mask: signals reach only main's sigwait, SIGPIPE reaches nobody. */
    util_block_signals();
    rc = run(&o);
    free(hello);
    return rc;
}
