/* Soak load: N verified echo connections on one epoll thread (see soak_load.h). */
#include "soak_load.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "pattern.h"

#define SOAK_SCRATCH      ((size_t)256 * 1024)   /* one receive buffer for every connection */
#define SOAK_SMALL_WINDOW ((uint64_t)8 * 1024)   /* bytes in flight of most connections */
#define SOAK_BIG_WINDOW   ((uint64_t)256 * 1024) /* of the streamers, which sluice splices */
#define SOAK_STREAMER_LEN ((uint64_t)4 << 20)    /* bytes one streamer sends */
#define SOAK_MAX_LEN      ((uint64_t)1 << 20)    /* bytes a small connection sends, at most */
#define SOAK_OPEN_BURST   64                     /* connects per loop turn, so ramps are smooth */
#define SOAK_EVENTS       512

/* Where one connection is in its life. */
enum conn_state {
    CONN_FREE,       /* the slot holds no connection */
    CONN_CONNECTING, /* non-blocking connect in progress */
    CONN_HELLO,      /* waiting for the backend's hello line */
    CONN_STREAM,     /* sending the pattern and checking its echo */
};

/* One slot: a connection and what it must get back. */
struct conn {
    enum conn_state state; /* see above */
    int fd;                /* the socket, -1 when free */
    uint32_t tag;          /* changes with every connection of the slot: stale events are
                            * recognised by it */
    int instance;          /* from the hello, -1 before it */
    unsigned kills_done[SOAK_MAX_INSTANCES]; /* each instance's finished kills at the open (the
                                              * hello may come after its sender died) */
    unsigned any_kills_done;                 /* finished kills of any instance at the open */
    uint64_t seed;                           /* pattern of this connection */
    uint64_t total;                          /* bytes to send (lowered by the drain) */
    uint64_t window;                         /* bytes in flight at most */
    uint64_t sent;                           /* bytes sent */
    uint64_t recvd;                          /* bytes echoed and checked */
    int out_armed;      /* EPOLLOUT is in the interest set (the last send hit EAGAIN) */
    int shut;           /* our write side is shut down */
    int queued;         /* in the ready ring */
    char hello[16];     /* hello line so far */
    size_t hello_len;   /* bytes in hello */
    uint64_t opened_ms; /* monotonic ms when it opened */
};

struct soak_load {
    int ports[SOAK_MAX_PORTS]; /* listeners */
    int n_ports;               /* entries of ports */
    int n_conns;               /* slots */
    uint64_t rate;             /* bytes a second, all connections together */
    struct conn *conns;        /* n_conns slots */
    int *ring;                 /* ready slots (each at most once), n_conns entries */
    int ring_head, ring_len;   /* ring's first entry and length */
    unsigned char *scratch;    /* receive buffer */
    int ep;                    /* epoll set */
    pthread_t thread;          /* the load thread */
    int started;               /* thread was created */
    atomic_int draining;       /* set by soak_load_drain */
    int drain_applied;         /* the thread cut every connection's total */
    uint64_t drain_deadline;   /* monotonic ms when the drain gives up */
    uint64_t serial;           /* connections opened, the next one's seed */
    double budget;             /* bytes that may be sent now */
    uint64_t last_ms;          /* when the budget was last refilled */
    uint64_t start_ms;         /* when the thread started */
    atomic_uint kills_begun[SOAK_MAX_INSTANCES]; /* kills of each instance begun */
    atomic_uint kills_done[SOAK_MAX_INSTANCES];  /* kills of each instance whose process is gone */
    atomic_uint any_kills_begun, any_kills_done; /* the same over every instance */
    pthread_mutex_t lock;                        /* guards counts */
    struct soak_counts counts;                   /* what happened */
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int soak_instance_of_hello(const char *hello)
{
    int base = hello[0] == 'a' ? 0 : hello[0] == 's' ? SOAK_MAX_INSTANCES / 2 : -1;
    char *end;
    long i = strtol(hello + 1, &end, 10);
    if (base < 0 || end == hello + 1 || *end != '\0' || i < 0 || i >= SOAK_MAX_INSTANCES / 2)
        return -1;
    return base + (int)i;
}

/* Adds one to a counter and keeps the first failure's words. Load thread. */
static void count(struct soak_load *l, uint64_t *counter, const struct conn *c, const char *what)
{
    int err = errno;
    struct sockaddr_in local = {0};
    socklen_t len = sizeof(local);

    pthread_mutex_lock(&l->lock);
    (*counter)++;
    if (what != NULL && l->counts.first_problem[0] == '\0') {
        if (c->fd >= 0)
            getsockname(c->fd, (struct sockaddr *)&local, &len);
        snprintf(l->counts.first_problem, sizeof(l->counts.first_problem),
                 "%s: connection %llu from port %d (instance %d) after %llu of %llu bytes sent, "
                 "%llu echoed, %.0f ms after it opened, %.0f ms into the load (%s)",
                 what, (unsigned long long)c->seed, ntohs(local.sin_port), c->instance,
                 (unsigned long long)c->sent, (unsigned long long)c->total,
                 (unsigned long long)c->recvd, (double)(mono_ms() - c->opened_ms),
                 (double)(mono_ms() - l->start_ms), err != 0 ? strerror(err) : "EOF");
    }
    pthread_mutex_unlock(&l->lock);
}

static void ready_push(struct soak_load *l, int slot)
{
    struct conn *c = &l->conns[slot];
    if (c->queued)
        return;
    c->queued = 1;
    l->ring[(l->ring_head + l->ring_len) % l->n_conns] = slot;
    l->ring_len++;
}

static int ready_pop(struct soak_load *l)
{
    int slot = l->ring[l->ring_head];
    l->ring_head = (l->ring_head + 1) % l->n_conns;
    l->ring_len--;
    l->conns[slot].queued = 0;
    return slot;
}

static int interest(struct soak_load *l, int slot, int op, uint32_t events)
{
    struct conn *c = &l->conns[slot];
    struct epoll_event ev = {.events = events,
                             .data.u64 = ((uint64_t)c->tag << 32) | (uint32_t)slot};
    return epoll_ctl(l->ep, op, c->fd, &ev);
}

/* Ends a connection; the slot opens a new one on the next turn unless the load drains. */
static void conn_close(struct soak_load *l, struct conn *c)
{
    close(c->fd); /* also leaves the epoll set: the socket has no other reference */
    c->fd = -1;
    c->state = CONN_FREE;
    c->tag++;
    pthread_mutex_lock(&l->lock);
    l->counts.open_now--;
    pthread_mutex_unlock(&l->lock);
}

/* The connection ended early (EOF, reset or error before every byte came back): a kill of its
 * instance, or a loss. */
static void conn_cut(struct soak_load *l, struct conn *c)
{
    if (c->instance >= 0) {
        if (atomic_load(&l->kills_begun[c->instance]) > c->kills_done[c->instance])
            count(l, &l->counts.cut_by_kill, c, NULL);
        else
            count(l, &l->counts.lost, c, "cut on a live instance");
    } else if (atomic_load(&l->any_kills_begun) > c->any_kills_done) {
        count(l, &l->counts.cut_before_hello, c, NULL);
    } else {
        count(l, &l->counts.no_hello, c, "closed before the hello, no instance was killed");
    }
    conn_close(l, c);
}

/* Bytes of each connection: most are small (up to 1 MiB through 8 KiB in flight, copied by
 * sluice); one in eight streams 4 MiB through 256 KiB in flight, enough for sluice to splice. */
static void conn_plan(struct conn *c, uint64_t serial)
{
    uint64_t mix = serial;
    uint64_t r = pattern_splitmix64(&mix);
    c->seed = serial;
    if (serial % 8 == 0) {
        c->total = SOAK_STREAMER_LEN;
        c->window = SOAK_BIG_WINDOW;
    } else {
        c->total = 1 + r % SOAK_MAX_LEN;
        c->window = SOAK_SMALL_WINDOW;
    }
}

static void conn_open(struct soak_load *l, int slot)
{
    struct conn *c = &l->conns[slot];
    int port = l->ports[slot % l->n_ports];
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;

    conn_plan(c, ++l->serial);
    c->instance = -1;
    c->opened_ms = mono_ms();
    c->any_kills_done = atomic_load(&l->any_kills_done);
    for (int i = 0; i < SOAK_MAX_INSTANCES; i++)
        c->kills_done[i] = atomic_load(&l->kills_done[i]);
    c->sent = c->recvd = 0;
    c->out_armed = c->shut = 0;
    c->hello_len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    pthread_mutex_lock(&l->lock);
    l->counts.opened++;
    l->counts.open_now++;
    pthread_mutex_unlock(&l->lock);
    c->state = CONN_CONNECTING;
    if (c->fd < 0) {
        count(l, &l->counts.connect_errors, c, strerror(errno));
        c->state = CONN_FREE;
        pthread_mutex_lock(&l->lock);
        l->counts.open_now--;
        pthread_mutex_unlock(&l->lock);
        return;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if ((connect(c->fd, (struct sockaddr *)&a, sizeof(a)) != 0 && errno != EINPROGRESS) ||
        interest(l, slot, EPOLL_CTL_ADD, EPOLLOUT) != 0) {
        count(l, &l->counts.connect_errors, c, "connect to sluice failed");
        conn_close(l, c);
    }
}

static void on_connected(struct soak_load *l, int slot)
{
    struct conn *c = &l->conns[slot];
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        errno = err;
        if (err == ECONNRESET) { /* sluice accepted, then reset it: as an early close */
            conn_cut(l, c);
            return;
        }
        count(l, &l->counts.connect_errors, c, "connect to sluice failed");
        conn_close(l, c);
        return;
    }
    c->state = CONN_HELLO;
    if (interest(l, slot, EPOLL_CTL_MOD, EPOLLIN) != 0)
        conn_cut(l, c);
}

/* Reads the hello byte by byte: the backend sends nothing else before our first byte. */
static void on_hello(struct soak_load *l, int slot)
{
    struct conn *c = &l->conns[slot];
    ssize_t n = recv(c->fd, c->hello + c->hello_len, sizeof(c->hello) - 1 - c->hello_len, 0);

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        if (n == 0)
            errno = 0; /* the words say EOF */
        conn_cut(l, c);
        return;
    }
    c->hello_len += (size_t)n;
    c->hello[c->hello_len] = '\0';
    char *nl = strchr(c->hello, '\n');
    if (nl == NULL) {
        if (c->hello_len == sizeof(c->hello) - 1) {
            count(l, &l->counts.corrupt, c, "hello line too long");
            conn_close(l, c);
        }
        return;
    }
    *nl = '\0';
    c->instance = soak_instance_of_hello(c->hello);
    if (c->instance < 0 || nl[1] != '\0') {
        count(l, &l->counts.corrupt, c, "not a hello line");
        conn_close(l, c);
        return;
    }
    c->state = CONN_STREAM;
    ready_push(l, slot);
}

static void on_readable(struct soak_load *l, int slot)
{
    struct conn *c = &l->conns[slot];
    ssize_t n = recv(c->fd, l->scratch, SOAK_SCRATCH, 0);

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n == 0 && c->recvd == c->total && c->sent == c->total) {
        count(l, &l->counts.completed, c, NULL);
        conn_close(l, c);
        return;
    }
    if (n <= 0) {
        if (n == 0)
            errno = 0; /* the words say EOF */
        conn_cut(l, c);
        return;
    }
    if (c->recvd + (uint64_t)n > c->sent ||
        pattern_check(c->seed, c->recvd, l->scratch, (size_t)n) >= 0) {
        count(l, &l->counts.corrupt, c, "wrong bytes came back");
        conn_close(l, c);
        return;
    }
    c->recvd += (uint64_t)n;
    pthread_mutex_lock(&l->lock);
    l->counts.bytes_verified += (uint64_t)n;
    pthread_mutex_unlock(&l->lock);
    ready_push(l, slot);
}

/* Sends what the window, the plan and the budget allow; half-closes once all is sent. */
static void conn_send(struct soak_load *l, int slot)
{
    struct conn *c = &l->conns[slot];

    while (c->state == CONN_STREAM && !c->out_armed && c->sent < c->total &&
           c->sent - c->recvd < c->window && l->budget > 0) {
        size_t avail;
        const unsigned char *p = pattern_view(c->seed, c->sent, &avail);
        uint64_t want = c->total - c->sent;
        uint64_t room = c->window - (c->sent - c->recvd);
        want = want < room ? want : room;
        want = want < avail ? want : avail;
        ssize_t n = send(c->fd, p, (size_t)want, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN) {
            c->out_armed = 1;
            if (interest(l, slot, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT) != 0)
                conn_cut(l, c);
            return;
        }
        if (n < 0) {
            conn_cut(l, c);
            return;
        }
        c->sent += (uint64_t)n;
        l->budget -= (double)n;
    }
    if (c->state == CONN_STREAM && c->sent == c->total && !c->shut) {
        c->shut = 1;
        shutdown(c->fd, SHUT_WR);
    }
}

static void dispatch(struct soak_load *l, const struct epoll_event *ev)
{
    int slot = (int)(uint32_t)ev->data.u64;
    struct conn *c = &l->conns[slot];

    if (c->state == CONN_FREE || c->tag != (uint32_t)(ev->data.u64 >> 32))
        return; /* an event of a connection this slot already closed */
    switch (c->state) {
    case CONN_CONNECTING:
        on_connected(l, slot);
        return;
    case CONN_HELLO:
        on_hello(l, slot);
        return;
    case CONN_STREAM:
        if (ev->events & EPOLLOUT && c->out_armed) {
            c->out_armed = 0;
            if (interest(l, slot, EPOLL_CTL_MOD, EPOLLIN) != 0) {
                conn_cut(l, c);
                return;
            }
            ready_push(l, slot);
        }
        if (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            on_readable(l, slot);
        return;
    case CONN_FREE:
        return;
    }
}

/* Drain: every connection sends nothing more; those past the hello half-close now. */
static void drain_apply(struct soak_load *l)
{
    for (int i = 0; i < l->n_conns; i++) {
        struct conn *c = &l->conns[i];
        if (c->state == CONN_FREE)
            continue;
        c->total = c->sent;
        if (c->state == CONN_STREAM)
            ready_push(l, i);
    }
    l->drain_applied = 1;
}

static void refill_budget(struct soak_load *l)
{
    uint64_t now = mono_ms();
    l->budget += (double)l->rate * (double)(now - l->last_ms) / 1000.0;
    if (l->budget > (double)l->rate / 10) /* at most 100 ms of burst */
        l->budget = (double)l->rate / 10;
    l->last_ms = now;
}

/* Opens connections in free slots, a burst per turn. */
static void open_free_slots(struct soak_load *l)
{
    int opened = 0;
    for (int i = 0; i < l->n_conns && opened < SOAK_OPEN_BURST; i++) {
        if (l->conns[i].state == CONN_FREE) {
            conn_open(l, i);
            opened++;
        }
    }
}

static int open_count(struct soak_load *l)
{
    pthread_mutex_lock(&l->lock);
    int n = (int)l->counts.open_now;
    pthread_mutex_unlock(&l->lock);
    return n;
}

static void *load_run(void *arg)
{
    struct soak_load *l = arg;
    struct epoll_event evs[SOAK_EVENTS];

    l->start_ms = l->last_ms = mono_ms();
    for (;;) {
        if (atomic_load(&l->draining) && !l->drain_applied)
            drain_apply(l);
        if (l->drain_applied && (open_count(l) == 0 || mono_ms() >= l->drain_deadline))
            break;
        if (!l->drain_applied)
            open_free_slots(l);
        refill_budget(l);
        int timeout = l->ring_len > 0 && l->budget > 0 ? 0 : 2;
        int n = epoll_wait(l->ep, evs, SOAK_EVENTS, timeout);
        for (int i = 0; i < n; i++)
            dispatch(l, &evs[i]);
        for (int left = l->ring_len; left > 0 && l->budget > 0; left--) {
            int slot = ready_pop(l);
            conn_send(l, slot);
        }
    }
    for (int i = 0; i < l->n_conns; i++) {
        struct conn *c = &l->conns[i];
        if (c->state != CONN_FREE) {
            count(l, &l->counts.stuck, c, "still open when the drain ended");
            conn_close(l, c);
        }
    }
    return NULL;
}

struct soak_load *soak_load_create(const int *ports, int n_ports, int conns, uint64_t rate)
{
    if (n_ports < 1 || n_ports > SOAK_MAX_PORTS || conns < 1 || rate == 0)
        return NULL;
    struct soak_load *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    memcpy(l->ports, ports, sizeof(int) * (size_t)n_ports);
    l->n_ports = n_ports;
    l->n_conns = conns;
    l->rate = rate;
    l->ep = -1;
    pthread_mutex_init(&l->lock, NULL);
    l->conns = calloc((size_t)conns, sizeof(*l->conns));
    l->ring = calloc((size_t)conns, sizeof(*l->ring));
    l->scratch = malloc(SOAK_SCRATCH);
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    if (l->conns == NULL || l->ring == NULL || l->scratch == NULL || l->ep < 0) {
        soak_load_destroy(l);
        return NULL;
    }
    for (int i = 0; i < conns; i++)
        l->conns[i].fd = -1;
    return l;
}

int soak_load_start(struct soak_load *l)
{
    int rc = pthread_create(&l->thread, NULL, load_run, l);
    l->started = rc == 0;
    return -rc;
}

int soak_load_drain(struct soak_load *l, int timeout_ms)
{
    if (!l->started)
        return -1;
    l->drain_deadline = mono_ms() + (uint64_t)timeout_ms;
    atomic_store(&l->draining, 1);
    pthread_join(l->thread, NULL);
    l->started = 0;
    return l->counts.stuck == 0 ? 0 : -1;
}

void soak_load_counts(struct soak_load *l, struct soak_counts *out)
{
    pthread_mutex_lock(&l->lock);
    *out = l->counts;
    pthread_mutex_unlock(&l->lock);
}

void soak_load_kill_begin(struct soak_load *l, int instance)
{
    atomic_fetch_add(&l->kills_begun[instance], 1);
    atomic_fetch_add(&l->any_kills_begun, 1);
}

void soak_load_kill_done(struct soak_load *l, int instance)
{
    atomic_fetch_add(&l->kills_done[instance], 1);
    atomic_fetch_add(&l->any_kills_done, 1);
}

void soak_load_destroy(struct soak_load *l)
{
    if (l == NULL)
        return;
    if (l->ep >= 0)
        close(l->ep);
    free(l->conns);
    free(l->ring);
    free(l->scratch);
    pthread_mutex_destroy(&l->lock);
    free(l);
}
