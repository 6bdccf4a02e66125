/* The balancer interface: each algorithm is one ops table in its own lb_*.c file. */
#ifndef SLUICE_BALANCER_H
#define SLUICE_BALANCER_H

#include <stddef.h>

#include "config.h"
#include "snapshot.h"

/* Instances a pick must skip (already tried by this session), by state identity so that the
 * list stays valid when the set is swapped between two tries. */
struct lb_exclude {
    struct instance_state *const *states; /* tried instances */
    size_t n;                             /* entries in states */
};

/* One balancing algorithm. pick() is pure: no I/O, no clock, no allocation, no locks; it may
 * write only the calling worker's scratch and read the instances' shared atomics. */
struct lb_ops {
    const char *name; /* as written in the config: "round_robin", ... */
    /* Bytes of per-worker scratch this algorithm needs for a set of n instances. */
    size_t (*scratch_size)(size_t n);
    /* Prepares one worker's scratch for set (called once per worker when a set is built). */
    void (*scratch_init)(void *scratch, const struct instance_set *set, unsigned worker);
    /* Index of the instance to use, or -1 when every instance is excluded or has weight 0.
     * ex may be NULL (nothing excluded). */
    long (*pick)(const struct instance_set *set, void *scratch, const struct lb_exclude *ex);
};

extern const struct lb_ops lb_round_robin;
extern const struct lb_ops lb_least_connections;
extern const struct lb_ops lb_weighted;

/* The ops table for a configured balance kind; NULL for an unknown value. */
const struct lb_ops *balancer_for(enum config_balance balance);

/* Non-zero when instance i of set may be picked: weight > 0 and not in ex. For lb_*.c. */
int balancer_eligible(const struct instance_set *set, size_t i, const struct lb_exclude *ex);

#endif
