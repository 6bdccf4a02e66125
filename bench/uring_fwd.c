/*
 * uring-fwd: single-threaded io_uring TCP forwarder, the io_uring experiment of issue #14.
 *
 * It does the least sluice does per session and nothing more (no balancer, counters, timers
 * beyond the connect timeout, access control or state machine), so its CPU per operation is
 * a lower bound of what an io_uring data path integrated into sluice would cost.
 *
 * Kernel features used, with the first kernel that has each (liburing 2.3 man pages
 * io_uring_enter(2), io_uring_setup(2), io_uring_prep_*(3)):
 *   IORING_OP_ACCEPT 5.5, multishot accept 5.19     IORING_OP_CONNECT 5.5
 *   IORING_OP_LINK_TIMEOUT 5.5 (IOSQE_IO_LINK 5.3)  IORING_OP_SEND / IORING_OP_RECV 5.6
 *   IORING_OP_CLOSE 5.6                             IORING_OP_SPLICE 5.7
 *   IORING_OP_SHUTDOWN 5.11                         provided buffer rings 5.19
 *   multishot recv 6.0 (else single-shot recv with IOSQE_BUFFER_SELECT, 5.7)
 *   IORING_SETUP_COOP_TASKRUN 5.19, IORING_SETUP_SINGLE_ISSUER 6.0,
 *   IORING_SETUP_DEFER_TASKRUN 6.1 (else the next weaker setup is tried)
 * So everything exists on 6.1, Debian 12's kernel. A missing opcode or buffer ring stops the
 * program at start with the reason; missing multishot recv falls back to single-shot.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <liburing.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

enum {
    BUF_COUNT = 1024,      /* provided buffers (a power of two) */
    BUF_SIZE = 16384,      /* bytes per provided buffer */
    BGID = 1,              /* buffer group id */
    RING_ENTRIES = 4096,   /* submission queue entries */
    PIPE_SIZE = 1 << 20,   /* splice pipe per direction, like sluice's default */
    CONNECT_TIMEOUT_S = 5, /* linked timeout of the backend connect */
};

/* What a completion is for; a struct op's address is the request's user_data. */
enum op_kind { OP_IGNORE, OP_ACCEPT, OP_CONNECT, OP_READ, OP_WRITE };

/* One in-flight request slot. */
struct op {
    enum op_kind kind; /* which handler */
    int dir;           /* direction index for OP_READ / OP_WRITE */
    struct sess *s;    /* owning session, NULL for the global ops */
};

/* One direction of a session: bytes read from `from` are written to `to`. */
struct dir {
    struct op rd;             /* recv or splice-in request */
    struct op wr;             /* send or splice-out request */
    int from, to;             /* sockets */
    int pipe[2];              /* splice mode: read and write end, else -1 */
    int head, tail;           /* copy mode: queued buffer ids, -1 when empty */
    unsigned off;             /* bytes of the head buffer (or of the pipe) already written */
    unsigned piped;           /* splice mode: bytes in the pipe */
    int rd_busy, wr_busy;     /* requests in flight */
    int eof;                  /* the peer sent its FIN */
    int done;                 /* FIN passed on (or session closing) */
    struct util_list starved; /* linked while waiting for provided buffers */
};

/* A client connection and its backend connection. */
struct sess {
    struct dir d[2]; /* 0: client -> backend, 1: backend -> client */
    int fds[2];      /* client and backend sockets */
    struct op conn;  /* the backend connect request */
    int connecting;  /* the connect is in flight */
    int failed;      /* an error ended the session: both sockets shut down */
    int closed;      /* the closes are queued */
};

/* The process-wide state. */
struct fwd {
    struct io_uring ring;         /* the one ring */
    struct io_uring_buf_ring *br; /* provided buffer ring of group BGID */
    char *bufs;                   /* BUF_COUNT * BUF_SIZE bytes */
    int next[BUF_COUNT];          /* queue link per buffer id */
    unsigned len[BUF_COUNT];      /* bytes held per buffer id */
    struct util_list starved;     /* directions whose recv ended on -ENOBUFS */
    struct util_addr backend;     /* where every session connects */
    int lfd;                      /* listening socket */
    int splice;                   /* --splice */
    int multishot_recv;           /* 0 after the kernel refused it */
    struct op accept_op;          /* the multishot accept */
    struct op ignore_op;          /* link timeouts, closes, shutdowns */
};

static struct fwd g;
static struct __kernel_timespec connect_ts = {.tv_sec = CONNECT_TIMEOUT_S};

/* Returns an SQE with `n` consecutive free entries (links must not straddle a submit). */
static struct io_uring_sqe *sqe_get(unsigned n)
{
    struct io_uring_sqe *sqe;

    if (io_uring_sq_space_left(&g.ring) < n)
        io_uring_submit(&g.ring);
    sqe = io_uring_get_sqe(&g.ring);
    if (sqe == NULL) {
        fprintf(stderr, "uring-fwd: submission queue stuck\n");
        exit(1);
    }
    return sqe;
}

static void prep_ignored_close(int fd)
{
    struct io_uring_sqe *sqe = sqe_get(1);

    io_uring_prep_close(sqe, fd);
    io_uring_sqe_set_data(sqe, &g.ignore_op);
}

static void buf_give_back(int bid)
{
    io_uring_buf_ring_add(g.br, g.bufs + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(BUF_COUNT), 0);
    io_uring_buf_ring_advance(g.br, 1);
}

static void dir_read(struct sess *s, int i);

/* Buffers came back: every direction that ran dry gets its recv again. */
static void starved_rearm(void)
{
    while (!util_list_empty(&g.starved)) {
        struct dir *d = UTIL_CONTAINER_OF(g.starved.next, struct dir, starved);
        util_list_unlink(&d->starved);
        dir_read(d->rd.s, d->rd.dir);
    }
}

static void dir_drop_queue(struct dir *d)
{
    while (d->head >= 0) {
        int bid = d->head;
        d->head = g.next[bid];
        buf_give_back(bid);
    }
    d->tail = -1;
}

static void sess_free_if_idle(struct sess *s)
{
    int i;

    for (i = 0; i < 2; i++)
        if (s->d[i].rd_busy || s->d[i].wr_busy)
            return;
    if (s->connecting || (!s->failed && !(s->d[0].done && s->d[1].done)))
        return;
    for (i = 0; i < 2; i++) {
        struct dir *d = &s->d[i];
        util_list_unlink(&d->starved);
        dir_drop_queue(d);
        if (d->pipe[0] >= 0) {
            close(d->pipe[0]);
            close(d->pipe[1]);
        }
        if (!s->closed)
            prep_ignored_close(s->fds[i]);
    }
    free(s);
    starved_rearm();
}

/* An error: shutting both sockets down completes every request still in flight. */
static void sess_fail(struct sess *s)
{
    if (s->failed)
        return;
    s->failed = 1;
    shutdown(s->fds[0], SHUT_RDWR);
    shutdown(s->fds[1], SHUT_RDWR);
}

static void dir_read(struct sess *s, int i)
{
    struct dir *d = &s->d[i];
    struct io_uring_sqe *sqe = sqe_get(1);

    if (g.splice) {
        io_uring_prep_splice(sqe, d->from, -1, d->pipe[1], -1, PIPE_SIZE, SPLICE_F_MOVE);
    } else {
        if (g.multishot_recv)
            io_uring_prep_recv_multishot(sqe, d->from, NULL, 0, 0);
        else
            io_uring_prep_recv(sqe, d->from, NULL, BUF_SIZE, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = BGID;
    }
    io_uring_sqe_set_data(sqe, &d->rd);
    d->rd_busy = 1;
}

static void dir_write(struct dir *d)
{
    struct io_uring_sqe *sqe = sqe_get(1);

    if (g.splice) {
        io_uring_prep_splice(sqe, d->pipe[0], -1, d->to, -1, d->piped - d->off, SPLICE_F_MOVE);
    } else {
        const char *buf = g.bufs + (size_t)d->head * BUF_SIZE + d->off;
        io_uring_prep_send(sqe, d->to, buf, g.len[d->head] - d->off, MSG_NOSIGNAL);
    }
    io_uring_sqe_set_data(sqe, &d->wr);
    d->wr_busy = 1;
}

/* Everything from one side has been passed on: pass its FIN on, or close when both are. */
static void dir_finish(struct sess *s, int i)
{
    struct dir *d = &s->d[i];

    d->done = 1;
    if (!s->d[1 - i].done) {
        struct io_uring_sqe *sqe = sqe_get(1);
        io_uring_prep_shutdown(sqe, d->to, SHUT_WR);
        io_uring_sqe_set_data(sqe, &g.ignore_op);
        return;
    }
    /* Both directions read EOF, so no unread data is left: close sends FIN, not RST. */
    prep_ignored_close(s->fds[0]);
    prep_ignored_close(s->fds[1]);
    s->closed = 1;
}

static void on_recv(struct sess *s, struct dir *d, int res, unsigned flags)
{
    int more = (flags & IORING_CQE_F_MORE) != 0;

    if (!more)
        d->rd_busy = 0;
    if (res > 0) {
        int bid = (int)(flags >> IORING_CQE_BUFFER_SHIFT);
        if (s->failed) {
            buf_give_back(bid);
            return;
        }
        g.len[bid] = (unsigned)res;
        g.next[bid] = -1;
        if (d->tail >= 0)
            g.next[d->tail] = bid;
        else
            d->head = bid;
        d->tail = bid;
        if (!d->wr_busy)
            dir_write(d);
        if (!more)
            dir_read(s, d->rd.dir);
    } else if (res == 0 || s->failed) {
        d->eof = 1;
        if (!s->failed && !d->wr_busy && d->head < 0)
            dir_finish(s, d->rd.dir);
    } else if (res == -ENOBUFS && !more) {
        util_list_push(&g.starved, &d->starved);
    } else if (res == -EINVAL && g.multishot_recv) {
        fprintf(stderr, "uring-fwd: multishot recv refused (needs 6.0): single-shot recv\n");
        g.multishot_recv = 0;
        dir_read(s, d->rd.dir);
    } else {
        sess_fail(s);
    }
}

static void on_send(struct sess *s, struct dir *d, int res)
{
    d->wr_busy = 0;
    if (res < 0 || s->failed) {
        sess_fail(s);
        return;
    }
    d->off += (unsigned)res;
    if (d->off == g.len[d->head]) {
        int bid = d->head;
        d->head = g.next[bid];
        if (d->head < 0)
            d->tail = -1;
        d->off = 0;
        buf_give_back(bid);
        starved_rearm();
    }
    if (d->head >= 0)
        dir_write(d);
    else if (d->eof)
        dir_finish(s, d->rd.dir);
}

static void on_splice_in(struct sess *s, struct dir *d, int res)
{
    d->rd_busy = 0;
    if (res < 0 || s->failed) {
        sess_fail(s);
    } else if (res == 0) {
        d->eof = 1;
        dir_finish(s, d->rd.dir);
    } else {
        d->piped = (unsigned)res;
        d->off = 0;
        dir_write(d);
    }
}

static void on_splice_out(struct sess *s, struct dir *d, int res)
{
    d->wr_busy = 0;
    if (res <= 0 || s->failed) {
        sess_fail(s);
        return;
    }
    d->off += (unsigned)res;
    if (d->off < d->piped)
        dir_write(d);
    else
        dir_read(s, d->rd.dir);
}

static void on_connect(struct sess *s, int res)
{
    int i;

    s->connecting = 0;
    if (res < 0) {
        s->failed = 1; /* nothing in flight: the client gets a FIN, as from sluice */
        return;
    }
    for (i = 0; i < 2; i++)
        dir_read(s, i);
}

static int dir_init(struct dir *d, struct sess *s, int i)
{
    *d = (struct dir){.rd = {OP_READ, i, s},
                      .wr = {OP_WRITE, i, s},
                      .from = s->fds[i],
                      .to = s->fds[1 - i],
                      .pipe = {-1, -1},
                      .head = -1,
                      .tail = -1};
    util_list_init(&d->starved);
    if (!g.splice)
        return 0;
    if (pipe2(d->pipe, O_CLOEXEC) < 0)
        return -1;
    fcntl(d->pipe[1], F_SETPIPE_SZ, PIPE_SIZE);
    /* io_uring runs splice in a worker thread: let it block there rather than spin. */
    return fcntl(d->from, F_SETFL, 0);
}

/* A new client: socket + connect to the backend under a linked timeout. */
static void sess_start(int client)
{
    struct sess *s = calloc(1, sizeof(*s));
    int fd = socket(g.backend.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct io_uring_sqe *sqe;

    if (s == NULL || fd < 0) {
        free(s);
        if (fd >= 0)
            close(fd);
        close(client);
        return;
    }
    s->fds[0] = client;
    s->fds[1] = fd;
    s->conn = (struct op){OP_CONNECT, 0, s};
    if (dir_init(&s->d[0], s, 0) < 0 || dir_init(&s->d[1], s, 1) < 0) {
        s->failed = 1;
        sess_free_if_idle(s);
        return;
    }
    util_set_nodelay(client);
    util_set_nodelay(fd);
    sqe = sqe_get(2);
    io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&g.backend.ss, g.backend.len);
    io_uring_sqe_set_data(sqe, &s->conn);
    sqe->flags |= IOSQE_IO_LINK;
    sqe = io_uring_get_sqe(&g.ring);
    io_uring_prep_link_timeout(sqe, &connect_ts, 0);
    io_uring_sqe_set_data(sqe, &g.ignore_op);
    s->connecting = 1;
}

static void accept_arm(void)
{
    struct io_uring_sqe *sqe = sqe_get(1);

    io_uring_prep_multishot_accept(sqe, g.lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data(sqe, &g.accept_op);
}

static void on_accept(int res, unsigned flags)
{
    if (res >= 0) {
        sess_start(res);
    } else if (res == -EINVAL) {
        fprintf(stderr, "uring-fwd: multishot accept refused (needs 5.19)\n");
        exit(1);
    }
    if (!(flags & IORING_CQE_F_MORE))
        accept_arm();
}

static void on_cqe(const struct io_uring_cqe *cqe)
{
    struct op *op = io_uring_cqe_get_data(cqe);
    struct sess *s = op->s;

    switch (op->kind) {
    case OP_IGNORE:
        return;
    case OP_ACCEPT:
        on_accept(cqe->res, cqe->flags);
        return;
    case OP_CONNECT:
        on_connect(s, cqe->res);
        break;
    case OP_READ:
        if (g.splice)
            on_splice_in(s, &s->d[op->dir], cqe->res);
        else
            on_recv(s, &s->d[op->dir], cqe->res, cqe->flags);
        break;
    case OP_WRITE:
        if (g.splice)
            on_splice_out(s, &s->d[op->dir], cqe->res);
        else
            on_send(s, &s->d[op->dir], cqe->res);
        break;
    }
    sess_free_if_idle(s);
}

/* Ring setup variants, strongest first; --setup picks where to start. */
static const struct {
    const char *name; /* --setup value */
    unsigned flags;   /* IORING_SETUP_* */
} setups[] = {
    {"defer", IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN},
    {"single", IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN},
    {"coop", IORING_SETUP_COOP_TASKRUN},
    {"plain", 0},
};

static int ring_init(size_t first, int sqpoll)
{
    size_t i;

    for (i = first; i < sizeof(setups) / sizeof(setups[0]); i++) {
        struct io_uring_params p = {.flags = setups[i].flags};
        if (sqpoll)
            p.flags = IORING_SETUP_SQPOLL; /* DEFER_TASKRUN and SQPOLL exclude each other */
        int r = io_uring_queue_init_params(RING_ENTRIES, &g.ring, &p);
        if (r == 0) {
            fprintf(stderr, "uring-fwd: ring setup %s\n", sqpoll ? "sqpoll" : setups[i].name);
            return 0;
        }
        if (r != -EINVAL || sqpoll)
            return r;
    }
    return -EINVAL;
}

static int probe_ops(void)
{
    static const int need[] = {IORING_OP_ACCEPT,       IORING_OP_CONNECT, IORING_OP_RECV,
                               IORING_OP_SEND,         IORING_OP_SPLICE,  IORING_OP_CLOSE,
                               IORING_OP_LINK_TIMEOUT, IORING_OP_SHUTDOWN};
    struct io_uring_probe *p = io_uring_get_probe_ring(&g.ring);
    size_t i;

    if (p == NULL)
        return -1;
    for (i = 0; i < sizeof(need) / sizeof(need[0]); i++)
        if (!io_uring_opcode_supported(p, need[i])) {
            fprintf(stderr, "uring-fwd: kernel lacks io_uring opcode %d\n", need[i]);
            io_uring_free_probe(p);
            return -1;
        }
    io_uring_free_probe(p);
    return 0;
}

static int bufs_init(void)
{
    size_t ring_bytes = BUF_COUNT * sizeof(struct io_uring_buf);
    struct io_uring_buf_reg reg = {.ring_entries = BUF_COUNT, .bgid = BGID};
    void *mem = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    int r, i;

    g.bufs = malloc((size_t)BUF_COUNT * BUF_SIZE);
    if (mem == MAP_FAILED || g.bufs == NULL)
        return -ENOMEM;
    g.br = mem;
    reg.ring_addr = (unsigned long)(uintptr_t)mem;
    r = io_uring_register_buf_ring(&g.ring, &reg, 0);
    if (r < 0)
        return r;
    io_uring_buf_ring_init(g.br);
    for (i = 0; i < BUF_COUNT; i++)
        buf_give_back(i);
    return 0;
}

static void on_signal(int sig)
{
    (void)sig;
    _exit(0);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: uring-fwd --listen HOST:PORT --backend HOST:PORT [--splice]\n"
               "                 [--sqpoll on|off] [--setup defer|single|coop|plain]\n");
}

static int parse_setup(const char *arg, size_t *out)
{
    size_t i;

    for (i = 0; i < sizeof(setups) / sizeof(setups[0]); i++)
        if (strcmp(arg, setups[i].name) == 0) {
            *out = i;
            return 0;
        }
    return -1;
}

static int parse_args(int argc, char **argv, struct util_addr *listen_addr, size_t *setup,
                      int *sqpoll)
{
    static const struct option longs[] = {{"listen", required_argument, NULL, 'l'},
                                          {"backend", required_argument, NULL, 'b'},
                                          {"splice", no_argument, NULL, 's'},
                                          {"sqpoll", required_argument, NULL, 'q'},
                                          {"setup", required_argument, NULL, 'u'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    int opt, have = 0, r = 0;

    while ((opt = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        if (opt == 'h') {
            usage(stdout);
            exit(0);
        }
        if (opt == 'l')
            r = util_parse_addr(optarg, listen_addr);
        else if (opt == 'b')
            r = util_parse_addr(optarg, &g.backend);
        else if (opt == 's')
            g.splice = 1;
        else if (opt == 'u')
            r = parse_setup(optarg, setup);
        else if (opt == 'q' && (strcmp(optarg, "on") == 0 || strcmp(optarg, "off") == 0))
            *sqpoll = strcmp(optarg, "on") == 0;
        else
            r = -1;
        if (r < 0)
            return -1;
        have |= opt == 'l' ? 1 : opt == 'b' ? 2 : 0;
    }
    return have == 3 && optind == argc ? 0 : -1;
}

static int setup_all(size_t setup, int sqpoll)
{
    int r = ring_init(setup, sqpoll);

    if (r < 0) {
        fprintf(stderr, "uring-fwd: io_uring_queue_init: %s\n", strerror(-r));
        return -1;
    }
    if (probe_ops() < 0)
        return -1;
    r = bufs_init();
    if (r < 0) {
        fprintf(stderr, "uring-fwd: provided buffer ring (needs 5.19): %s\n", strerror(-r));
        return -1;
    }
    g.accept_op.kind = OP_ACCEPT;
    g.ignore_op.kind = OP_IGNORE;
    g.multishot_recv = 1;
    util_list_init(&g.starved);
    accept_arm();
    return 0;
}

static void run(void)
{
    for (;;) {
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        int r = io_uring_submit_and_wait(&g.ring, 1);

        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
            fprintf(stderr, "uring-fwd: io_uring_submit_and_wait: %s\n", strerror(-r));
            exit(1);
        }
        io_uring_for_each_cqe(&g.ring, head, cqe)
        {
            on_cqe(cqe);
            n++;
        }
        io_uring_cq_advance(&g.ring, n);
    }
}

int main(int argc, char **argv)
{
    struct util_addr listen_addr;
    size_t setup = 0;
    int sqpoll = 0;
    char text[96];

    if (parse_args(argc, argv, &listen_addr, &setup, &sqpoll) < 0) {
        usage(stderr);
        return 2;
    }
    util_raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    g.lfd = util_listen(&listen_addr, 0, 0);
    if (g.lfd < 0 || util_local_addr(g.lfd, &listen_addr) < 0) {
        fprintf(stderr, "uring-fwd: listen: %s\n", strerror(g.lfd < 0 ? -g.lfd : errno));
        return 1;
    }
    if (setup_all(setup, sqpoll) < 0)
        return 1;
    printf("listening %s\n", util_format_addr(&listen_addr, text, sizeof(text)));
    fflush(stdout);
    run();
    return 0;
}
