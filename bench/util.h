/* Socket, clock, list and command-line helpers shared by the sluice benchmark tools. */
#ifndef SLUICE_BENCH_UTIL_H
#define SLUICE_BENCH_UTIL_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>

/* Recovers the enclosing struct from a pointer to one of its members. */
#define UTIL_CONTAINER_OF(ptr, type, member)                                                       \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* A parsed socket address. */
struct util_addr {
    struct sockaddr_storage ss; /* IPv4 or IPv6 address and port */
    socklen_t len;              /* bytes of ss in use */
};

/* Intrusive circular doubly-linked list node; a list head is a node linked to itself. */
struct util_list {
    struct util_list *prev; /* previous node, or the head */
    struct util_list *next; /* next node, or the head */
};

/* Makes `head` an empty list (or marks a node as unlinked). */
static inline void util_list_init(struct util_list *head)
{
    head->prev = head;
    head->next = head;
}

/* Returns non-zero when the list is empty (or the node unlinked). */
static inline int util_list_empty(const struct util_list *head)
{
    return head->next == head;
}

/* Appends `node` at the tail of `head`. */
static inline void util_list_push(struct util_list *head, struct util_list *node)
{
    node->prev = head->prev;
    node->next = head;
    head->prev->next = node;
    head->prev = node;
}

/* Unlinks `node` from whatever list holds it and leaves it self-linked; idempotent. */
static inline void util_list_unlink(struct util_list *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    util_list_init(node);
}

/* Moves every node of `from` to the tail of `to`, leaving `from` empty. */
static inline void util_list_splice(struct util_list *to, struct util_list *from)
{
    if (util_list_empty(from))
        return;
    from->next->prev = to->prev;
    from->prev->next = to;
    to->prev->next = from->next;
    to->prev = from->prev;
    util_list_init(from);
}

/*
 * Takes every node of `ready` out at once and calls run(ctx, node) on each, in order. A node
 * that run queues on `ready` again waits for the next call, so one busy node cannot starve the
 * others.
 */
static inline void util_list_run(struct util_list *ready,
                                 void (*run)(void *ctx, struct util_list *node), void *ctx)
{
    struct util_list batch;

    util_list_init(&batch);
    util_list_splice(&batch, ready);
    while (!util_list_empty(&batch)) {
        struct util_list *node = batch.next;
        util_list_unlink(node);
        run(ctx, node);
    }
}

/*
 * Edge-triggered epoll (EPOLLET) events and what each tool's connection records from them:
 * the socket may have input (or an EOF or error to read), the peer's FIN or an error was
 * reported, the socket may take output.
 */
#define UTIL_EV_READABLE (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)
#define UTIL_EV_RD_HUP   (EPOLLRDHUP | EPOLLHUP | EPOLLERR)
#define UTIL_EV_WRITABLE (EPOLLOUT | EPOLLHUP | EPOLLERR)

/*
 * recv(2) on a non-blocking socket driven by edge-triggered epoll. Returns >0 bytes, 0 at EOF,
 * -EAGAIN or -errno. Sets *drained to 1 when nothing more can be read before the next edge,
 * else to 0; rd_hup says epoll already reported the peer's FIN or an error.
 */
static inline ssize_t util_recv_edge(int fd, void *buf, size_t len, int rd_hup, int *drained)
{
    ssize_t n = recv(fd, buf, len, 0);

    *drained = 0;
    if (n >= 0) {
        /*
         * A short read drained the queue, so the next arrival raises a new edge; but a FIN
         * already reported raises none, so then keep reading until recv returns 0.
         */
        *drained = (size_t)n < len && !rd_hup;
        return n;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        *drained = 1;
        return -EAGAIN;
    }
    return -errno;
}

/*
 * send(2) without SIGPIPE on a non-blocking socket driven by edge-triggered epoll. Returns the
 * bytes taken, -EAGAIN or -errno. Sets *full to 1 when the socket takes no more before the next
 * EPOLLOUT edge, else to 0.
 */
static inline ssize_t util_send_edge(int fd, const void *buf, size_t len, int *full)
{
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

    *full = 0;
    if (n >= 0) {
        /* A short write filled the socket buffer: EPOLLOUT fires when space frees up. */
        *full = (size_t)n < len;
        return n;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        *full = 1;
        return -EAGAIN;
    }
    return -errno;
}

/* Parses "host:port" or "[v6host]:port" (numeric only) into *out; 0 or -EINVAL. */
int util_parse_addr(const char *text, struct util_addr *out);

/* Formats an address as "host:port" into buf; returns buf. */
char *util_format_addr(const struct util_addr *addr, char *buf, size_t size);

/*
 * Creates a listening TCP socket bound to `addr` (SO_REUSEADDR, and SO_REUSEPORT when
 * `reuseport`), non-blocking when `nonblock`. Returns the descriptor or a negative errno.
 */
int util_listen(const struct util_addr *addr, int reuseport, int nonblock);

/* Stores the local address of socket `fd` into *out; 0 or a negative errno. */
int util_local_addr(int fd, struct util_addr *out);

/* Disables Nagle on `fd`: every tool forwards or answers small messages at once. */
void util_set_nodelay(int fd);

/* Returns CLOCK_MONOTONIC in nanoseconds. */
uint64_t util_now_ns(void);

/* Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit. */
uint64_t util_raise_nofile(void);

/* Parses a whole decimal unsigned number (k/m/g suffixes = 2^10/2^20/2^30); 0 or -EINVAL. */
int util_parse_u64(const char *text, uint64_t *out);

/* Parses a non-negative number of seconds (fractions allowed); 0 or -EINVAL. */
int util_parse_seconds(const char *text, double *out);

/* Blocks SIGINT, SIGTERM and SIGPIPE in the calling thread and the threads it creates later. */
void util_block_signals(void);

#endif
