/* libsluice's insides, shared by its files: the mesh, its services and its caller threads. */
#ifndef SLUICE_MESH_INT_H
#define SLUICE_MESH_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "balancer.h"
#include "consul.h"
#include "consul_conf.h"
#include "discovery.h"
#include "health.h"
#include "log.h"
#include "owner.h"
#include "sluice.h"

/* One watched service. Created by the first pick of its name; lives as long as the mesh. */
struct mesh_service {
    char name[INI_NAME_MAX];        /* the Consul service name */
    size_t index;                   /* its slot in each caller thread's scratch */
    struct owner *owner;            /* its instance sets */
    struct consul_watch_conf watch; /* what discovery asks Consul */
    atomic_int synced;              /* Consul answered well once (set by discovery) */
    atomic_int cold_error;          /* the first lookup's error while not synced */
    atomic_int ready;               /* the first lookup ended (first_lock is free) */
    pthread_mutex_t first_lock;     /* held by the thread doing the first lookup */
};

/* The services by name: an immutable open-addressing table, replaced (RCU) when one is added. */
struct mesh_table {
    size_t mask;                 /* slots - 1 (a power of two minus one) */
    struct mesh_service *slot[]; /* NULL = free */
};

/* Counters of one caller thread: only it writes them, the stats read them. */
struct mesh_counters {
    atomic_ullong hits, misses, picks, no_instance, connect_failures, request_failures;
};

/* One caller thread's own state for one mesh. */
struct mesh_thread {
    struct sluice_mesh *mesh;   /* its mesh */
    struct lb_scratch *scratch; /* per service index */
    size_t n_scratch;           /* entries in scratch */
    uint64_t rng;               /* balancer randomness */
    struct mesh_counters count; /* its counters */
    struct mesh_thread *next;   /* the mesh's list (mesh lock) */
};

struct sluice_mesh {
    struct consul_conf ccfg;             /* how to reach the agent; strings owned */
    struct consul_client *client;        /* for registrations */
    struct discovery *discovery;         /* the watches */
    struct health *health;               /* ticks the owners: passive ejection */
    struct logger log;                   /* events (fd -1: none) */
    const struct lb_ops *lb;             /* every service's balancer */
    struct owner_policy policy;          /* every service's policy */
    enum consul_health_mode health_mode; /* passing, or passing and warning */
    uint64_t lookup_timeout_ms;          /* bound of a first lookup */
    void *table;                         /* struct mesh_table (RCU) */
    pthread_mutex_t lock;                /* services, threads, retired */
    struct mesh_service **services;      /* every service (mesh lock) */
    size_t n_services, cap_services;     /* entries and room */
    pthread_key_t key;                   /* the caller thread's struct mesh_thread */
    struct mesh_thread *threads;         /* every caller thread (mesh lock) */
    struct mesh_counters retired;        /* counters of threads that exited (mesh lock) */
    atomic_ullong registrations, registered, register_failures, rollbacks, deregistrations;
};

/* Records this thread's detail of a failure and returns code. */
int mesh_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clears this thread's detail. */
void mesh_ok(void);

/* Adds 1 to a counter only this thread writes: a plain load and store, no locked instruction. */
static inline void mesh_count(atomic_ullong *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* This thread's state for mesh, created (and the thread registered as a reader) on first use.
 * NULL on ENOMEM. */
struct mesh_thread *mesh_thread_get(struct sluice_mesh *mesh);

/* The service called name, or NULL. Inside a read section. */
struct mesh_service *mesh_table_find(const struct sluice_mesh *mesh, const char *name);

/* The service called name, created and looked up in Consul (the first lookup) when it is new.
 * 0 with *out, or a sluice_error. */
int mesh_service_get(struct sluice_mesh *mesh, const char *name, struct mesh_service **out);

/* Frees every service (the mesh's threads are stopped). */
void mesh_services_free(struct sluice_mesh *mesh);

#endif
