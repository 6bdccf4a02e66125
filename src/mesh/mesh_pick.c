/* libsluice: picks from the cache, and their outcomes. A cache hit takes no lock and makes no
 * I/O: a read section, the table, the balancer, and the instance's own counters. */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "instance_use.h"
#include "mesh_int.h"
#include "snapshot.h"

/* The client's IP (and port when the set hashes it) as a hash key: what the daemon hashes for
 * the same client. Returns its length, 0 for a family it cannot hash. */
static size_t client_key(const struct sockaddr *sa, int with_port, uint8_t key[18])
{
    size_t n = 0;
    uint16_t port = 0;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        memcpy(key, &s4->sin_addr, 4);
        port = s4->sin_port;
        n = 4;
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        memcpy(key, &s6->sin6_addr, 16);
        port = s6->sin6_port;
        n = 16;
    }
    if (n > 0 && with_port) {
        memcpy(key + n, &port, 2);
        n += 2;
    }
    return n;
}

/* The thread's scratch for s, grown when the mesh has more services than it knew. */
static struct lb_scratch *scratch_of(struct mesh_thread *t, const struct mesh_service *s)
{
    if (s->index >= t->n_scratch) {
        size_t n = s->index + 8;
        struct lb_scratch *grown = realloc(t->scratch, n * sizeof(*grown));
        if (grown == NULL)
            return NULL;
        for (size_t i = t->n_scratch; i < n; i++)
            lb_scratch_init(&grown[i], (unsigned)(uintptr_t)t);
        t->scratch = grown;
        t->n_scratch = n;
    }
    return &t->scratch[s->index];
}

static void instance_out(const struct instance *in, const struct mesh_service *s,
                         struct sluice_instance *out)
{
    size_t id_len = strlen(in->state->id);

    memcpy(out->id, in->state->id, id_len + 1);
    net_addr_ip_text(&in->addr, out->host, sizeof(out->host));
    out->port = net_addr_port(&in->addr);
    memcpy(&out->addr, &in->addr.sa, in->addr.len);
    out->addr_len = in->addr.len;
    out->weight = in->weight;
    out->handle[0] = in->state;
    out->handle[1] = (void *)s;
    struct instance_user shared = INSTANCE_USER_SHARED;
    instance_use_begin(in->state, &shared);
}

/* One pick from s's current set. Inside a read section. 0 or a sluice_error. */
static int pick(struct mesh_thread *t, const struct mesh_service *s, struct lb_scratch *sc,
                const struct sluice_pick_hints *hints, struct sluice_instance *out)
{
    const struct instance_set *set = owner_current(s->owner);
    struct lb_ctx ctx = {.rng = &t->rng};
    uint8_t key[18];

    if (hints != NULL && hints->key != NULL) {
        ctx.key = hints->key;
        ctx.key_len = hints->key_len;
    } else if (hints != NULL && hints->client != NULL && set->lb != NULL && set->lb->needs_client) {
        ctx.client = hints->client;
        ctx.key = key;
        ctx.key_len = client_key(hints->client, set->hash_with_port, key);
    }
    long i = lb_pick(set, sc, &ctx);
    if (i >= 0) {
        instance_out(&set->inst[i], s, out);
        return 0;
    }
    if (i == -ENOMEM)
        return SLUICE_ERR_NO_MEMORY;
    if (set->n == 0 && !atomic_load_explicit(&s->synced, memory_order_relaxed))
        return atomic_load(&s->cold_error) != SLUICE_OK ? atomic_load(&s->cold_error)
                                                        : SLUICE_ERR_UNREACHABLE;
    return SLUICE_ERR_NO_INSTANCE;
}

static int pick_failed(struct mesh_thread *t, const char *name, int rc)
{
    if (rc == SLUICE_ERR_NO_INSTANCE) {
        mesh_count(&t->count.no_instance);
        return mesh_fail(rc, "service \"%s\": no healthy instance", name);
    }
    if (rc == SLUICE_ERR_NO_MEMORY)
        return mesh_fail(rc, "out of memory");
    if (sluice_mesh_last_error()[0] == '\0')
        return mesh_fail(rc, "service \"%s\": Consul has not answered yet", name);
    return rc; /* the first lookup's detail stands */
}

int sluice_get_service_instance(struct sluice_mesh *mesh, const char *service_name,
                                const struct sluice_pick_hints *hints, struct sluice_instance *out)
{
    if (mesh == NULL || service_name == NULL || out == NULL)
        return mesh_fail(SLUICE_ERR_INVALID, "mesh, service_name and out are required");
    struct mesh_thread *t = mesh_thread_get(mesh);
    if (t == NULL)
        return mesh_fail(SLUICE_ERR_NO_MEMORY, "out of memory");
    snapshot_read_lock();
    struct mesh_service *s = mesh_table_find(mesh, service_name);
    int hit = s != NULL && atomic_load_explicit(&s->ready, memory_order_acquire);
    snapshot_read_unlock();
    if (!hit) {
        mesh_count(&t->count.misses);
        int rc = mesh_service_get(mesh, service_name, &s);
        if (rc != 0 && (rc != SLUICE_ERR_UNREACHABLE && rc != SLUICE_ERR_REJECTED))
            return rc;
    } else {
        mesh_count(&t->count.hits);
    }
    struct lb_scratch *sc = scratch_of(t, s);
    if (sc == NULL)
        return mesh_fail(SLUICE_ERR_NO_MEMORY, "out of memory");
    snapshot_read_lock();
    int rc = pick(t, s, sc, hints, out);
    snapshot_read_unlock();
    if (rc != 0)
        return pick_failed(t, service_name, rc);
    mesh_count(&t->count.picks);
    if (!hit)
        mesh_ok();
    return 0;
}

void sluice_release_instance(struct sluice_mesh *mesh, const struct sluice_instance *inst,
                             enum sluice_outcome outcome)
{
    if (mesh == NULL || inst == NULL || inst->handle[0] == NULL)
        return;
    struct instance_state *st = inst->handle[0];
    const struct mesh_service *s = inst->handle[1];
    struct mesh_thread *t = mesh_thread_get(mesh);
    struct instance_user shared = INSTANCE_USER_SHARED; /* any thread may release */

    if (outcome == SLUICE_CONNECT_FAILED) {
        instance_use_failed(s->owner, st);
        if (t != NULL)
            mesh_count(&t->count.connect_failures);
    } else {
        instance_use_connected(st, &shared);
        if (outcome == SLUICE_REQUEST_FAILED && t != NULL)
            mesh_count(&t->count.request_failures);
    }
    instance_use_end(st, &shared);
}
