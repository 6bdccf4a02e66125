/* Immutable per-service instance sets, published by atomic swap and read by workers without
 * locks (RCU, liburcu's memb flavour); per-instance state that survives swaps, keyed by id. */
#ifndef SLUICE_SNAPSHOT_H
#define SLUICE_SNAPSHOT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct lb_ops;

#define SNAPSHOT_ID_MAX 192 /* longest instance id + 1 */

/* What must outlive a snapshot swap for one instance: found again by id in the next set, so a
 * swap never resets balancing. Shared by all workers; only atomics are written after creation. */
struct instance_state {
    char id[SNAPSHOT_ID_MAX];    /* stable identity ("ip:port", or Consul service id + node) */
    atomic_uint active;          /* sessions connecting to or connected to it, all workers */
    atomic_uint refs;            /* one for "in the publisher's table" + one per holder */
    atomic_ullong connects;      /* sessions that connected, for metrics */
    atomic_ullong failures;      /* failed connect attempts, for metrics */
    uint64_t listed_in;          /* version of the newest set listing it; publisher only */
    struct instance_state *next; /* chain in the publisher's table; publisher only */
};

/* One instance as a balancer and a session see it. */
struct instance {
    struct config_addr addr;      /* address to dial */
    uint32_t weight;              /* effective weight; 0 = never picked */
    struct instance_state *state; /* shared state; the set holds a reference */
};

/* An immutable instance set plus each worker's private balancer scratch. Readers may use it
 * only inside a read section (snapshot_read_lock). */
struct instance_set {
    const struct lb_ops *lb; /* balancer that picks from this set */
    size_t n;                /* number of instances */
    struct instance *inst;   /* the instances, n entries */
    uint64_t total_weight;   /* sum of weights */
    uint64_t version;        /* increases with every publish of this service */
    unsigned n_workers;      /* scratch areas */
    size_t scratch_stride;   /* bytes between two workers' scratch areas */
    unsigned char *scratch;  /* n_workers areas, each initialised by lb->scratch_init */
};

/* Input for one instance of a new set. */
struct snapshot_spec {
    const char *id;          /* stable identity; NULL = use addr.text */
    struct config_addr addr; /* address to dial */
    uint32_t weight;         /* weight */
};

/* A service's current set; opaque. */
struct snapshot_service;

/* Creates a service with an empty set. n_workers: scratch areas per set. Returns NULL on ENOMEM.
 * Owned by the caller; any thread. */
struct snapshot_service *snapshot_service_create(const char *name, unsigned n_workers);

/* Frees the service, its set and its states. Only once no reader uses it anymore. NULL is fine. */
void snapshot_service_destroy(struct snapshot_service *svc);

/* Service name given at creation. */
const char *snapshot_service_name(const struct snapshot_service *svc);

/* Builds a new set from specs (copied) balanced by lb, swaps it in atomically, waits for a grace
 * period and frees the old set. Instance states are matched by id. Publishers are serialised
 * internally; must not be called from a registered reader thread (it would wait for itself).
 * Returns 0 or -ENOMEM (the old set stays). */
int snapshot_publish(struct snapshot_service *svc, const struct lb_ops *lb,
                     const struct snapshot_spec *specs, size_t n);

/* The current set; never NULL. Registered reader threads only, inside a read section. */
const struct instance_set *snapshot_current(const struct snapshot_service *svc);

/* The worker's own balancer scratch in a set. */
void *snapshot_scratch(const struct instance_set *set, unsigned worker);

/* Takes / drops a reference on an instance state so it outlives the sets that list it.
 * Any thread; the last release frees it. */
void instance_state_hold(struct instance_state *st);
void instance_state_release(struct instance_state *st);

/* Read-side registration for threads that call snapshot_current (the workers), once per thread
 * before the first read section and after the last one. */
void snapshot_reader_register(void);
void snapshot_reader_unregister(void);

/* A read section: a set from snapshot_current stays valid until snapshot_read_unlock. Keep it
 * short (a pick and a copy of what the caller needs); never block inside. Registered threads. */
void snapshot_read_lock(void);
void snapshot_read_unlock(void);

#endif
