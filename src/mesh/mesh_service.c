/* libsluice: the watched services, found by name without a lock, created by the first pick. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "inifile.h"
#include "mesh_int.h"
#include "snapshot.h"

static size_t name_hash(const char *name)
{
    return (size_t)balancer_hash(name, strlen(name), BALANCER_HASH_SEED);
}

struct mesh_service *mesh_table_find(const struct sluice_mesh *mesh, const char *name)
{
    const struct mesh_table *t = snapshot_ptr_load(&mesh->table);

    if (t == NULL)
        return NULL;
    for (size_t i = name_hash(name) & t->mask;; i = (i + 1) & t->mask) {
        struct mesh_service *s = t->slot[i];
        if (s == NULL || strcmp(s->name, name) == 0)
            return s;
    }
}

/* A table of every service (at most half full, so a probe always ends). NULL on ENOMEM. */
static struct mesh_table *table_build(struct mesh_service *const *services, size_t n)
{
    size_t slots = 8;

    while (slots < 2 * n)
        slots *= 2;
    struct mesh_table *t = calloc(1, sizeof(*t) + slots * sizeof(t->slot[0]));
    if (t == NULL)
        return NULL;
    t->mask = slots - 1;
    for (size_t k = 0; k < n; k++) {
        size_t i = name_hash(services[k]->name) & t->mask;
        while (t->slot[i] != NULL)
            i = (i + 1) & t->mask;
        t->slot[i] = services[k];
    }
    return t;
}

static void service_free(struct mesh_service *s)
{
    if (s == NULL)
        return;
    owner_destroy(s->owner);
    pthread_mutex_destroy(&s->first_lock);
    free(s);
}

static struct mesh_service *service_new(struct sluice_mesh *mesh, const char *name)
{
    struct mesh_service *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    snprintf(s->name, sizeof(s->name), "%s", name);
    snprintf(s->watch.service, sizeof(s->watch.service), "%s", name);
    s->watch.health = mesh->health_mode;
    s->index = mesh->n_services;
    pthread_mutex_init(&s->first_lock, NULL);
    s->owner = owner_create(name, mesh->lb, &mesh->policy, &mesh->log);
    if (s->owner == NULL) {
        service_free(s);
        return NULL;
    }
    return s;
}

/* Adds s to the mesh's list and publishes a table with it (mesh lock held). 0 or -ENOMEM. */
static int service_publish(struct sluice_mesh *mesh, struct mesh_service *s)
{
    if (mesh->n_services == mesh->cap_services) {
        size_t cap = mesh->cap_services > 0 ? mesh->cap_services * 2 : 8;
        struct mesh_service **grown = realloc(mesh->services, cap * sizeof(*grown));
        if (grown == NULL)
            return -ENOMEM;
        mesh->services = grown;
        mesh->cap_services = cap;
    }
    mesh->services[mesh->n_services] = s;
    struct mesh_table *t = table_build(mesh->services, mesh->n_services + 1);
    if (t == NULL)
        return -ENOMEM;
    mesh->n_services++;
    struct mesh_table *old = snapshot_ptr_swap(&mesh->table, t);
    if (old != NULL) {
        snapshot_grace(); /* a picker may still be probing the old table */
        free(old);
    }
    return 0;
}

/* The first lookup of s, on the calling thread (s's first_lock held): Consul's answer is in
 * the owner before anyone picks from it, and the watch goes on in the background. */
static int service_first_lookup(struct sluice_mesh *mesh, struct mesh_service *s)
{
    struct discovery_target target = {
        .name = s->name, .watch = &s->watch, .owner = s->owner, .synced = &s->synced};
    struct health_target ticks = {.name = s->name, .owner = s->owner, .check = NULL};
    char why[640] = "";
    int rc = health_add(mesh->health, &ticks);

    if (rc == 0)
        rc = discovery_add(mesh->discovery, &target, mesh->lookup_timeout_ms, why, sizeof(why));
    int code = rc == 0               ? SLUICE_OK
               : rc == -ENOMEM       ? SLUICE_ERR_NO_MEMORY
               : rc == -EHOSTUNREACH ? SLUICE_ERR_UNREACHABLE
                                     : SLUICE_ERR_REJECTED;
    atomic_store(&s->cold_error, code);
    return code == SLUICE_OK ? 0 : mesh_fail(code, "service \"%s\": %s", s->name, why);
}

int mesh_service_get(struct sluice_mesh *mesh, const char *name, struct mesh_service **out)
{
    const char *bad = ini_name_check(name);

    if (bad != NULL)
        return mesh_fail(SLUICE_ERR_INVALID, "service name \"%s\": %s", name, bad);
    pthread_mutex_lock(&mesh->lock);
    snapshot_read_lock();
    struct mesh_service *s = mesh_table_find(mesh, name); /* another thread may have added it */
    snapshot_read_unlock();
    int created = s == NULL;
    if (created && (s = service_new(mesh, name)) != NULL) {
        pthread_mutex_lock(&s->first_lock); /* pickers wait for the first lookup */
        if (service_publish(mesh, s) != 0) {
            pthread_mutex_unlock(&s->first_lock);
            service_free(s);
            s = NULL;
        }
    }
    pthread_mutex_unlock(&mesh->lock);
    if (s == NULL)
        return mesh_fail(SLUICE_ERR_NO_MEMORY, "out of memory");
    *out = s;
    if (!created) {
        pthread_mutex_lock(&s->first_lock); /* wait for the thread doing the first lookup */
        pthread_mutex_unlock(&s->first_lock);
        return 0;
    }
    int rc = service_first_lookup(mesh, s);
    atomic_store(&s->ready, 1);
    pthread_mutex_unlock(&s->first_lock);
    return rc;
}

void mesh_services_free(struct sluice_mesh *mesh)
{
    for (size_t i = 0; i < mesh->n_services; i++)
        service_free(mesh->services[i]);
    free(mesh->services);
    free(mesh->table);
}
