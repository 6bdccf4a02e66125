/* splice-fwd: thread-per-direction splice(2) forwarder, the ceiling for a user-space proxy. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

/* Two pump threads share a session; the last one out closes both sockets. */
struct fwd_session {
    int fds[2];    /* client and upstream sockets */
    int refs;      /* pumps still running, atomic */
    int pipe_size; /* requested F_SETPIPE_SZ */
};

/* One direction of a session. */
struct fwd_pump {
    struct fwd_session *s; /* shared session */
    int from;              /* socket read from */
    int to;                /* socket written to */
};

static void session_put(struct fwd_session *s)
{
    if (__atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    close(s->fds[0]);
    close(s->fds[1]);
    free(s);
}

/* Moves `n` bytes from the pipe to the socket; 0 or -1 when the socket failed. */
static int drain_pipe(int pipe_rd, int to, ssize_t n)
{
    while (n > 0) {
        ssize_t m = splice(pipe_rd, NULL, to, NULL, (size_t)n, SPLICE_F_MOVE);
        if (m < 0 && errno == EINTR)
            continue;
        if (m <= 0)
            return -1;
        n -= m;
    }
    return 0;
}

/* Blocking splice loop for one direction; FIN becomes shutdown(SHUT_WR) on the other side. */
static void pump_run(const struct fwd_pump *p, int pipe_fds[2], size_t chunk)
{
    for (;;) {
        ssize_t n = splice(p->from, NULL, pipe_fds[1], NULL, chunk, SPLICE_F_MOVE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0) {
            shutdown(p->to, SHUT_WR);
            return;
        }
        if (n < 0 || drain_pipe(pipe_fds[0], p->to, n) < 0)
            break;
    }
    /* A broken direction ends the session: wake the other pump out of its splice. */
    shutdown(p->from, SHUT_RDWR);
    shutdown(p->to, SHUT_RDWR);
}

static void *pump_main(void *arg)
{
    struct fwd_pump p = *(struct fwd_pump *)arg;
    int pipe_fds[2];
    int size;

    free(arg);
    if (pipe2(pipe_fds, O_CLOEXEC) < 0) {
        shutdown(p.from, SHUT_RDWR);
        shutdown(p.to, SHUT_RDWR);
        session_put(p.s);
        return NULL;
    }
    /* Keep going at the default size if the request exceeds pipe-max-size or user limits. */
    size = fcntl(pipe_fds[1], F_SETPIPE_SZ, p.s->pipe_size);
    if (size < 0)
        size = fcntl(pipe_fds[1], F_GETPIPE_SZ);
    pump_run(&p, pipe_fds, size > 0 ? (size_t)size : 65536);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    session_put(p.s);
    return NULL;
}

static int pump_start(struct fwd_session *s, int from, int to)
{
    static pthread_attr_t attr;
    static int attr_ready;
    pthread_t tid;
    struct fwd_pump *p = malloc(sizeof(*p));

    if (p == NULL)
        return -1;
    if (!attr_ready) {
        /* Thousands of pumps may exist: small stacks keep their address space modest. */
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 64 * 1024);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        attr_ready = 1;
    }
    *p = (struct fwd_pump){.s = s, .from = from, .to = to};
    if (pthread_create(&tid, &attr, pump_main, p) != 0) {
        free(p);
        return -1;
    }
    return 0;
}

static int connect_upstream(const struct util_addr *to)
{
    int fd = socket(to->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    if (connect(fd, (const struct sockaddr *)&to->ss, to->len) < 0) {
        close(fd);
        return -1;
    }
    util_set_nodelay(fd);
    return fd;
}

/* Starts both pumps of a new session; on failure the session closes what it holds. */
static void session_start(int client, const struct util_addr *to, int pipe_size)
{
    struct fwd_session *s = malloc(sizeof(*s));
    int upstream = connect_upstream(to);

    if (s == NULL || upstream < 0) {
        free(s);
        close(client);
        if (upstream >= 0)
            close(upstream);
        return;
    }
    util_set_nodelay(client);
    *s = (struct fwd_session){.fds = {client, upstream}, .refs = 2, .pipe_size = pipe_size};
    if (pump_start(s, client, upstream) < 0) {
        shutdown(client, SHUT_RDWR); /* nothing to pump: drop the second reference too */
        session_put(s);
        session_put(s);
        return;
    }
    if (pump_start(s, upstream, client) < 0) {
        shutdown(client, SHUT_RDWR);
        shutdown(upstream, SHUT_RDWR);
        session_put(s);
    }
}

static void accept_loop(int lfd, const struct util_addr *to, int pipe_size)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            /* Connecting upstream here serialises sessions but keeps the forwarder minimal. */
            session_start(fd, to, pipe_size);
            continue;
        }
        if (errno == EMFILE || errno == ENFILE || errno == ENOMEM) {
            struct timespec pause = {.tv_nsec = 10 * 1000 * 1000};
            nanosleep(&pause, NULL); /* wait for sessions to end instead of spinning */
        }
    }
}

static void on_signal(int sig)
{
    (void)sig;
    _exit(0);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: splice-fwd --listen HOST:PORT --to HOST:PORT [--pipe-size BYTES]\n");
}

/* Command-line settings. */
struct fwd_opts {
    struct util_addr listen; /* where to accept */
    struct util_addr to;     /* the upstream every session connects to */
    uint64_t pipe_size;      /* F_SETPIPE_SZ request per direction */
};

static int parse_pipe_size(const char *arg, uint64_t *out)
{
    if (util_parse_u64(arg, out) < 0 || *out == 0 || *out > (1u << 30))
        return -1;
    return 0;
}

static int parse_args(struct fwd_opts *o, int argc, char **argv)
{
    static const struct option longs[] = {{"listen", required_argument, NULL, 'l'},
                                          {"to", required_argument, NULL, 't'},
                                          {"pipe-size", required_argument, NULL, 'p'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    int opt, have = 0;

    while ((opt = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        int r = -1;
        if (opt == 'h') {
            usage(stdout);
            exit(0);
        }
        if (opt == 'l')
            r = util_parse_addr(optarg, &o->listen);
        else if (opt == 't')
            r = util_parse_addr(optarg, &o->to);
        else if (opt == 'p')
            r = parse_pipe_size(optarg, &o->pipe_size);
        if (r < 0)
            return -1;
        have |= opt == 'l' ? 1 : opt == 't' ? 2 : 0;
    }
    return have == 3 && optind == argc ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct fwd_opts o = {.pipe_size = 1024 * 1024};
    char text[96];
    int lfd;

    if (parse_args(&o, argc, argv) < 0) {
        usage(stderr);
        return 2;
    }
    util_raise_nofile();
    signal(SIGPIPE, SIG_IGN); /* splice() has no MSG_NOSIGNAL */
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    lfd = util_listen(&o.listen, 0, 0);
    if (lfd < 0 || util_local_addr(lfd, &o.listen) < 0) {
        fprintf(stderr, "splice-fwd: listen: %s\n", strerror(lfd < 0 ? -lfd : errno));
        return 1;
    }
    printf("listening %s\n", util_format_addr(&o.listen, text, sizeof(text)));
    fflush(stdout);
    accept_loop(lfd, &o.to, (int)o.pipe_size);
    return 0;
}
