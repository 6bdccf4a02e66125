/* --takeover, both sides: handing listening sockets to a successor over the listen-lock claim
 * (SCM_RIGHTS), and taking them from a predecessor. */
#include "takeover.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <netinet/in.h>
#include <unistd.h>
#include <uv.h>

#include "daemon_int.h"
#include "listen_lock.h"

#define TAKEOVER_ASK      "TAKEOVER\n"
#define TAKEOVER_DRAIN    "DRAIN\n"
#define TAKEOVER_OK       "SLUICE1" /* hello magic: sockets follow */
#define TAKEOVER_BUSY     "SLUBUSY" /* hello magic: draining or mid-reload, ask again soon */
#define TAKEOVER_PEERS    16        /* takeover connections answered at once; more are closed */
#define TAKEOVER_SOCKS    1024      /* listening sockets of one address handed over at most */
#define TAKEOVER_RETRY_MS 100       /* pause before asking a busy process again */

/* The old process's answer, sent with its claim's descriptor. */
struct takeover_hello {
    char magic[8]; /* TAKEOVER_OK or TAKEOVER_BUSY, NUL-terminated */
    int32_t pid;   /* the old process */
    uint32_t n;    /* listening sockets that follow, one byte each */
};

/* A takeover connection the old process answers. */
struct takeover_peer {
    uv_poll_t poll;             /* readable: the request, DRAIN, or the close */
    int fd;                     /* the accepted connection */
    struct listen_claim *claim; /* the claim it came in on */
    char buf[16];               /* the request line being read */
    size_t len;                 /* bytes in buf */
    int handed;                 /* the sockets were sent */
    pid_t pid;                  /* the new process (SO_PEERCRED) */
    struct takeover_peer *next; /* the daemon's list */
};

/* --- descriptors over a unix socket -------------------------------------------------------- */

/* Sends len bytes with descriptor fd attached (fd < 0: none). 0 or -errno. */
static int send_with_fd(int sock, const void *buf, size_t len, int fd)
{
    union {
        char space[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

    memset(&control, 0, sizeof(control));
    if (fd >= 0) {
        msg.msg_control = control.space;
        msg.msg_controllen = sizeof(control.space);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    }
    ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
}

/* Receives exactly len bytes and the descriptor attached to them (*fd = -1 when none). Blocking
 * with the socket's receive timeout. 0 or -errno (-EPIPE at an early close). */
static int recv_with_fd(int sock, void *buf, size_t len, int *fd)
{
    union {
        char space[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = control.space,
                         .msg_controllen = sizeof(control.space)};

    *fd = -1;
    ssize_t n = recvmsg(sock, &msg, MSG_WAITALL | MSG_CMSG_CLOEXEC);
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); n >= 0 && cm != NULL; cm = CMSG_NXTHDR(&msg, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
            memcpy(fd, CMSG_DATA(cm), sizeof(int));
    if (n == (ssize_t)len)
        return 0;
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
    return n < 0 ? -errno : -EPIPE;
}

/* --- old side: finding and handing over the sockets ----------------------------------------- */

static int same_address(const struct sockaddr_storage *a, const struct net_addr *b)
{
    if (a->ss_family != b->sa.ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)&b->sa;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)&b->sa;
    return a->ss_family == AF_INET6 && x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

/* Whether fd is a listening TCP socket bound to addr. */
static int listens_on(int fd, const struct net_addr *addr)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int on = 0;
    socklen_t on_len = sizeof(on);

    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &on_len) == 0 && on &&
           getsockname(fd, (struct sockaddr *)&ss, &len) == 0 && same_address(&ss, addr);
}

/* The workers' listening sockets for addr. The main thread keeps no copy of their descriptors
 * (a copy would keep a retired socket in the port's group with nobody accepting); it finds them
 * in /proc/self/fd instead. What it finds is stable while it sends: listening sockets are opened
 * by the main thread only and closed only on its commands (a reload's change, a drain), which
 * the caller checked are not under way. Returns how many went into fds, or -errno. */
static int find_listening(const struct net_addr *addr, int *fds, size_t cap)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *e;
    size_t n = 0;

    if (dir == NULL)
        return -errno;
    while ((e = readdir(dir)) != NULL && n < cap) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end == '\0' && end != e->d_name && fd != dirfd(dir) && listens_on((int)fd, addr))
            fds[n++] = (int)fd;
    }
    closedir(dir);
    return (int)n;
}

/* Answers a takeover: BUSY while draining or while a reload's change is being applied, else the
 * claim and every listening socket of its address. 0, or -errno (the peer is then closed). */
static int peer_answer(struct daemon *d, struct takeover_peer *p)
{
    const struct net_addr *addr = &d->cfg->listeners[p->claim->index].bind;
    int *fds = calloc(TAKEOVER_SOCKS, sizeof(*fds));
    struct takeover_hello hello = {.pid = (int32_t)getpid()};
    int busy = atomic_load(&d->draining), n = 0, rc = 0;

    for (unsigned i = 0; i < d->n_started && !busy; i++)
        busy = worker_change_pending(&d->workers[i]);
    if (fds == NULL)
        return -ENOMEM;
    if (!busy && (n = find_listening(addr, fds, TAKEOVER_SOCKS)) < 0)
        rc = n;
    snprintf(hello.magic, sizeof(hello.magic), "%s", busy ? TAKEOVER_BUSY : TAKEOVER_OK);
    hello.n = busy ? 0 : (uint32_t)n;
    if (rc == 0)
        rc = send_with_fd(p->fd, &hello, sizeof(hello), busy ? -1 : p->claim->fd);
    for (int i = 0; rc == 0 && !busy && i < n; i++)
        rc = send_with_fd(p->fd, "s", 1, fds[i]);
    free(fds);
    if (rc == 0 && !busy) {
        p->handed = 1;
        log_event(&d->log, LOG_LEVEL_INFO, "takeover_handed_over",
                  LOG_STR("listener", d->cfg->listeners[p->claim->index].name),
                  LOG_STR("bind", addr->text), LOG_INT("sockets", n), LOG_INT("to_pid", p->pid));
    }
    return rc != 0 ? rc : busy ? -EBUSY : 0;
}

static void on_peer_closed(uv_handle_t *h)
{
    struct takeover_peer *p = h->data;
    close(p->fd);
    free(p);
}

/* Unlinks p and closes it. A connection that handed our sockets over and closes without DRAIN
 * is an abandoned takeover: listen(2) again makes the claim name this process, which still
 * serves (the successor's listen named it). */
static void peer_close(struct daemon *d, struct takeover_peer *p)
{
    for (struct takeover_peer **link = &d->peers; *link != NULL; link = &(*link)->next)
        if (*link == p) {
            *link = p->next;
            break;
        }
    d->n_peers--;
    if (p->handed && !atomic_load(&d->draining) && p->claim->fd >= 0) {
        (void)listen_lock_reclaim(p->claim->fd);
        log_event(&d->log, LOG_LEVEL_WARN, "takeover_abandoned",
                  LOG_STR("listener", d->cfg->listeners[p->claim->index].name),
                  LOG_INT("by_pid", p->pid), LOG_STR("action", "still serving"));
    }
    uv_close((uv_handle_t *)&p->poll, on_peer_closed);
}

/* One complete line from the peer: the request, or DRAIN once our sockets were handed. */
static void peer_line(struct daemon *d, struct takeover_peer *p)
{
    if (!p->handed && strcmp(p->buf, TAKEOVER_ASK) == 0) {
        if (peer_answer(d, p) != 0)
            peer_close(d, p);
    } else if (p->handed && strcmp(p->buf, TAKEOVER_DRAIN) == 0) {
        p->handed = 0; /* done: its close is not an abandon */
        log_event(&d->log, LOG_LEVEL_INFO, "takeover_draining", LOG_INT("by_pid", p->pid));
        peer_close(d, p);
        if (!atomic_load(&d->draining)) /* one DRAIN per listener; a second drain would cut */
            daemon_drain(d, "takeover");
    } else {
        peer_close(d, p);
    }
}

static void on_peer_readable(uv_poll_t *poll, int status, int events)
{
    struct takeover_peer *p = poll->data;
    struct daemon *d = p->claim->daemon;
    (void)events;

    ssize_t n = status < 0 ? -1 : recv(p->fd, p->buf + p->len, sizeof(p->buf) - 1 - p->len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR) && status >= 0)
        return;
    if (n <= 0) { /* a starter that only learnt our pid, or the successor gone */
        peer_close(d, p);
        return;
    }
    p->len += (size_t)n;
    p->buf[p->len] = '\0';
    char *nl = strchr(p->buf, '\n');
    if (nl == NULL && p->len + 1 < sizeof(p->buf))
        return;
    if (nl != NULL)
        nl[1] = '\0';
    p->len = 0;
    peer_line(d, p);
}

/* Whether the peer on fd may take our sockets: root, or our own user. An abstract socket has
 * no file permissions, so without this any local user could take the listeners and make this
 * process drain. */
static int peer_allowed(struct daemon *d, int fd, struct ucred *cred)
{
    socklen_t len = sizeof(*cred);

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) == 0 &&
        (cred->uid == 0 || cred->uid == geteuid()))
        return 1;
    log_event(&d->log, LOG_LEVEL_WARN, "takeover_refused", LOG_INT("by_pid", cred->pid),
              LOG_INT("by_uid", (long long)cred->uid),
              LOG_STR("why", "neither root nor sluice's own user"));
    return 0;
}

/* Watches connection fd from claim c; closes it when it cannot, or when its peer may not. */
static void peer_open(struct daemon *d, struct listen_claim *c, int fd)
{
    struct ucred cred = {.uid = (uid_t)-1};
    struct takeover_peer *p =
        d->n_peers < TAKEOVER_PEERS && peer_allowed(d, fd, &cred) ? calloc(1, sizeof(*p)) : NULL;

    if (p == NULL || uv_poll_init(&d->loop, &p->poll, fd) != 0) {
        free(p);
        close(fd);
        return;
    }
    p->fd = fd;
    p->claim = c;
    p->pid = cred.pid;
    p->poll.data = p;
    p->next = d->peers;
    d->peers = p;
    d->n_peers++;
    if (uv_poll_start(&p->poll, UV_READABLE | UV_DISCONNECT, on_peer_readable) != 0)
        peer_close(d, p);
}

void takeover_on_knock(struct daemon *d, struct listen_claim *c)
{
    int fd;

    while ((fd = accept4(c->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0 || errno == EINTR)
        if (fd >= 0)
            peer_open(d, c, fd);
}

void takeover_peers_close(struct daemon *d)
{
    while (d->peers != NULL)
        peer_close(d, d->peers);
}

/* --- new side: asking for the sockets ------------------------------------------------------- */

/* Why listener i could not be taken over, in the FILE:LINE: key: form of start-up errors. */
static int take_failed(struct daemon *d, size_t i, pid_t from, int rc)
{
    const struct listener_conf *cl = &d->cfg->listeners[i];

    char who[32] = "";

    if (from > 0)
        snprintf(who, sizeof(who), " from sluice pid %d", (int)from);
    snprintf(d->step_error, sizeof(d->step_error),
             "%s:%d: bind: %s: takeover%s failed: %s (listener %s)", d->cfg->path, cl->bind_line,
             cl->bind.text, who, uv_strerror(rc), cl->name);
    return rc;
}

/* Asks on a new connection to the claim of addr. Returns the connection, with the hello read and
 * *claim set (-1 for BUSY); -ECONNREFUSED when nobody holds the claim; or another -errno. */
static int ask_once(const struct net_addr *addr, struct takeover_hello *hello, int *claim)
{
    struct timeval tv = {.tv_sec = TAKEOVER_WAIT_MS / 1000};
    int conn = listen_lock_connect(addr), rc;

    if (conn < 0)
        return conn;
    if (setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
        rc = -errno;
    else if ((rc = send_with_fd(conn, TAKEOVER_ASK, strlen(TAKEOVER_ASK), -1)) == 0)
        rc = recv_with_fd(conn, hello, sizeof(*hello), claim);
    hello->magic[sizeof(hello->magic) - 1] = '\0';
    if (rc == 0 && strcmp(hello->magic, TAKEOVER_OK) != 0 &&
        strcmp(hello->magic, TAKEOVER_BUSY) != 0)
        rc = -EPROTO;
    if (rc == 0 && strcmp(hello->magic, TAKEOVER_OK) == 0 && (*claim < 0 || hello->n > 4096))
        rc = -EPROTO;
    if (rc != 0) {
        if (*claim >= 0)
            close(*claim);
        close(conn);
        return rc == -ECONNREFUSED ? -ECONNRESET : rc; /* refused means nobody, not this */
    }
    return conn;
}

/* Receives the n sockets that follow the hello into d->inherited[i]. 0 or -errno. */
static int receive_sockets(struct daemon *d, size_t i, int conn, uint32_t n)
{
    struct worker_inherited *inh = &d->inherited[i];

    inh->fds = calloc(n ? n : 1, sizeof(*inh->fds));
    if (inh->fds == NULL)
        return -ENOMEM;
    for (inh->n = 0; inh->n < n; inh->n++) {
        char byte;
        int rc = recv_with_fd(conn, &byte, 1, &inh->fds[inh->n]);
        if (rc == 0 && inh->fds[inh->n] < 0)
            rc = -EPROTO;
        if (rc != 0)
            return rc;
    }
    return 0;
}

int takeover_listener(struct daemon *d, size_t i, int *claim)
{
    const struct listener_conf *cl = &d->cfg->listeners[i];
    struct takeover_hello hello = {0};
    int conn = -1, rc;

    /* a predecessor that is itself draining, or mid-reload, answers BUSY: ask again */
    for (int waited = 0;; waited += TAKEOVER_RETRY_MS) {
        if ((conn = ask_once(&cl->bind, &hello, claim)) < 0)
            return conn == -ECONNREFUSED || conn == -ENOENT ? 0 : take_failed(d, i, 0, conn);
        if (strcmp(hello.magic, TAKEOVER_OK) == 0)
            break;
        close(conn);
        if (waited >= TAKEOVER_WAIT_MS)
            return take_failed(d, i, hello.pid, -EBUSY);
        const struct timespec retry_pause = {.tv_sec = TAKEOVER_RETRY_MS / 1000,
                                             .tv_nsec = TAKEOVER_RETRY_MS % 1000 * 1000000L};
        nanosleep(&retry_pause, NULL); /* usleep is obsolescent (POSIX 2008 removed it) */
    }
    d->takeovers[i] = (struct takeover_in){.conn = conn, .from = hello.pid};
    if ((rc = receive_sockets(d, i, conn, hello.n)) != 0 ||
        (rc = listen_lock_reclaim(*claim)) != 0) {
        close(*claim);
        *claim = -1;
        return take_failed(d, i, hello.pid, rc); /* takeover_release closes the rest */
    }
    log_event(&d->log, LOG_LEVEL_INFO, "takeover_received", LOG_STR("listener", cl->name),
              LOG_STR("bind", cl->bind.text), LOG_INT("sockets", hello.n),
              LOG_INT("from_pid", hello.pid));
    return 1;
}

void takeover_finish(struct daemon *d)
{
    for (size_t i = 0; d->takeovers != NULL && i < d->cfg->n_listeners; i++) {
        struct takeover_in *t = &d->takeovers[i];
        if (t->conn < 0)
            continue;
        int rc = send_with_fd(t->conn, TAKEOVER_DRAIN, strlen(TAKEOVER_DRAIN), -1);
        log_event(&d->log, rc == 0 ? LOG_LEVEL_INFO : LOG_LEVEL_WARN,
                  rc == 0 ? "takeover_done" : "takeover_drain_failed",
                  LOG_STR("listener", d->cfg->listeners[i].name), LOG_INT("from_pid", t->from),
                  LOG_STR("error", rc == 0 ? "" : uv_strerror(rc)));
        close(t->conn);
        t->conn = -1;
    }
}

void takeover_release(struct daemon *d)
{
    for (size_t i = 0; d->takeovers != NULL && i < d->cfg->n_listeners; i++) {
        if (d->takeovers[i].conn >= 0)
            close(d->takeovers[i].conn);
        d->takeovers[i].conn = -1;
    }
    for (size_t i = 0; d->inherited != NULL && i < d->cfg->n_listeners; i++) {
        for (size_t j = 0; j < d->inherited[i].n; j++)
            if (d->inherited[i].fds[j] >= 0)
                close(d->inherited[i].fds[j]);
        free(d->inherited[i].fds);
        d->inherited[i] = (struct worker_inherited){0};
    }
}
