/* Listening sockets and accept. */
#include "listener.h"

#include "acl.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

struct listener_rt *listener_rt_create(const struct listener_rt *tmpl)
{
    struct listener_rt *rt = malloc(sizeof(*rt));

    if (rt == NULL) {
        acl_destroy(tmpl->acl); /* handed over either way */
        client_limit_drop(tmpl->clients);
        acl_destroy(tmpl->trusted);
        return NULL;
    }
    memcpy(rt, tmpl, sizeof(*rt));
    atomic_init(&rt->refs, 1);
    return rt;
}

void listener_rt_hold(struct listener_rt *rt)
{
    unsigned before = atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
    assert(before > 0); /* only a holder may hand out another reference */
    (void)before;
}

void listener_rt_drop(struct listener_rt *rt)
{
    if (rt == NULL)
        return;
    /* release: this holder's reads happen before the free; acquire in the freeing thread */
    unsigned before = atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel);
    assert(before > 0);
    if (before == 1) {
        acl_destroy(rt->acl);
        client_limit_drop(rt->clients);
        acl_destroy(rt->trusted);
        free(rt);
    }
}

void listener_acls_destroy(struct listener_acls *a)
{
    acl_destroy(a->access);
    acl_destroy(a->trusted);
    a->access = a->trusted = NULL;
}

int listener_socket(const struct listener_rt *rt, char *err, size_t err_len)
{
    int one = 1;
    int fd = socket(rt->bind.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        goto fail;
    /* accepted sockets inherit TCP_NODELAY: one setsockopt per listener, none per connection */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        bind(fd, (const struct sockaddr *)&rt->bind.sa, rt->bind.len) != 0 ||
        listen(fd, rt->backlog) != 0)
        goto fail;
    return fd;
fail:;
    int e = errno;
    /* libuv's wording (lower case) reads like the config checker's phrases */
    snprintf(err, err_len, "%s:%d: bind: %s: %s", rt->conf_path, rt->bind_line, rt->bind.text,
             uv_strerror(-e));
    if (fd >= 0)
        close(fd);
    return -e;
}

int listener_accept(int fd, struct sockaddr_storage *client, socklen_t *len)
{
    *len = sizeof(*client);
    int c = accept4(fd, (struct sockaddr *)client, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    return c >= 0 ? c : -errno;
}
