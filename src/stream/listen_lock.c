/* Per-address claims on abstract unix sockets, and learning who holds one (SO_PEERCRED). */
#include "listen_lock.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* The abstract address of addr's claim: sun_path starts with a NUL and the name is not
 * NUL-terminated, its length is in the socklen_t. */
static socklen_t claim_address(const struct net_addr *addr, struct sockaddr_un *un)
{
    memset(un, 0, sizeof(*un));
    un->sun_family = AF_UNIX;
    int n =
        snprintf(un->sun_path + 1, sizeof(un->sun_path) - 1, LISTEN_LOCK_PREFIX "%s", addr->text);
    size_t len = n < 0                                  ? 0
                 : (size_t)n < sizeof(un->sun_path) - 1 ? (size_t)n
                                                        : sizeof(un->sun_path) - 2;
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len);
}

/* The pid of the process listening on un: connect and read its credentials, which the kernel
 * copied from the listener at connect time (nothing has to answer). Non-blocking, so that a
 * full backlog answers EAGAIN instead of hanging the start. 0 when it cannot be learnt (the
 * holder is between bind and listen, or just died). */
static pid_t claim_holder(const struct sockaddr_un *un, socklen_t len)
{
    struct ucred cred = {0};
    socklen_t cred_len = sizeof(cred);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return 0;
    if (connect(fd, (const struct sockaddr *)un, len) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) != 0)
        cred.pid = 0;
    close(fd);
    return cred.pid;
}

int listen_lock_acquire(const struct net_addr *addr, pid_t *holder)
{
    struct sockaddr_un un;
    socklen_t len = claim_address(addr, &un);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    *holder = 0;
    if (fd < 0)
        return -errno;
    /* listen() is what lets a second starter connect and learn our pid */
    if (bind(fd, (const struct sockaddr *)&un, len) == 0 && listen(fd, SOMAXCONN) == 0)
        return fd;
    int e = errno;
    close(fd);
    if (e == EADDRINUSE)
        *holder = claim_holder(&un, len);
    return -e;
}

void listen_lock_drain(int fd)
{
    int c;

    while ((c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0 || errno == EINTR)
        if (c >= 0)
            close(c);
}

int listen_lock_connect(const struct net_addr *addr)
{
    struct sockaddr_un un;
    socklen_t len = claim_address(addr, &un);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -errno;
    if (connect(fd, (const struct sockaddr *)&un, len) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int listen_lock_reclaim(int fd)
{
    return listen(fd, SOMAXCONN) == 0 ? 0 : -errno;
}

void listen_lock_release(int fd)
{
    if (fd >= 0)
        close(fd);
}
