/* Immutable instance sets, swapped in with one atomic pointer store and read by workers without
 * locks (RCU, liburcu's memb flavour), and the per-instance state that outlives the sets. Only
 * the service owner (owner.h) builds and swaps sets; everyone else reads them. */
#ifndef SLUICE_SNAPSHOT_H
#define SLUICE_SNAPSHOT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"

struct lb_ops;

#define SNAPSHOT_ID_MAX 192 /* longest instance id + 1 */

/* Health of an instance as its active checks see it. */
enum instance_health {
    INSTANCE_HEALTH_UNKNOWN, /* no verdict yet (or no check): counts as healthy */
    INSTANCE_HEALTH_UP,      /* the check passes */
    INSTANCE_HEALTH_DOWN,    /* the check failed check_fall times in a row */
};

/* One user's share of an instance's per-connection counts, on a cache line of its own. A user
 * is a worker thread (shards 1..n, each written by its worker only, with plain load and store)
 * or anyone else (shard 0: the library's callers, with atomic read-modify-writes). So a
 * worker's connection writes no line another core writes; readers sum the shards. */
struct instance_shard {
    atomic_uint active;       /* this user's sessions connecting to or connected to it */
    atomic_uint held;         /* this user's sessions holding the state (active or retrying) */
    atomic_ullong connects;   /* sessions that connected, for metrics */
    atomic_ullong bytes_up;   /* bytes sent to it by sessions that ended */
    atomic_ullong bytes_down; /* bytes received from it by sessions that ended */
    struct instance_state *next_held; /* the worker's list of states it holds a reference on */
    uint8_t has_ref;                  /* the worker holds one reference for all its sessions */
} __attribute__((aligned(64)));

/* What must outlive a snapshot swap for one instance: found again by id in the next set, so a
 * swap never resets balancing. Shared by all threads. The atomics are written by workers and
 * the owner; the fields below them are the owner's own, under its lock. */
struct instance_state {
    char id[SNAPSHOT_ID_MAX];      /* stable identity ("ip:port", or Consul node + service id) */
    struct net_addr addr;          /* where it is: fixed, a new address is a new state */
    struct instance_shard *shards; /* n_shards of them: the per-connection counts */
    unsigned n_shards;             /* 1 + the workers when it was created */
    atomic_uint refs;              /* one for "known to the owner" + one per set or holder */
    atomic_uint fails_in_row;      /* failed connects since the last good one (passive health) */
    atomic_ullong failures;        /* failed connect attempts, for metrics */
    atomic_ullong ejections;       /* times passive health ejected it, for metrics */
    atomic_ullong timeouts;        /* connect attempts that timed out, for metrics */
    atomic_ullong removed_ms;      /* clock_ms when it left the set (draining); 0 while listed */
    uint8_t health;                /* enum instance_health; owner only */
    uint8_t ejected;               /* passive health keeps it out until ejected_until; owner only */
    atomic_int last_check;      /* 0 none yet, 1 passed, 2 failed (written by the health thread) */
    atomic_int last_check_code; /* HTTP status of the last HTTP check, 0 otherwise */
    uint8_t admin;              /* OWNER_ADMIN_DRAIN / _DISABLE in force, 0 none; owner only */
    uint8_t warning;            /* the source says warning (Consul); owner only */
    uint8_t has_override;       /* an admin weight is in force; owner only */
    uint32_t override_weight;   /* that weight; owner only */
    uint32_t override_src;      /* the source's weight when it was set: a change ends it */
    uint32_t src_weight;        /* the source's weight in the newest set; owner only */
    uint8_t announce;        /* 1 ejected, 2 returned: logged once the set shows it; owner only */
    uint32_t ejected_in_row; /* ejections without a good connect in between; owner only */
    uint64_t ejected_until;  /* clock_ms when an ejection ends; owner only */
    uint64_t connects_at_return; /* connects when it last came back; owner only */
    uint64_t ramp_since;         /* clock_ms a slow start began, 0 = none; owner only */
    uint64_t listed_in;          /* version of the newest set listing it; owner only */
    struct instance_state *next; /* chain in the owner's table; owner only */
};

/* One instance as a balancer and a session see it. */
struct instance {
    struct net_addr addr;         /* address to dial */
    uint32_t weight;              /* effective weight; 0 = never picked */
    struct instance_state *state; /* shared state; the set holds a reference */
};

/* An immutable instance set. Readers may use it only inside a read section. */
struct instance_set {
    const struct lb_ops *lb; /* balancer that picks from this set */
    size_t n;                /* number of instances */
    struct instance *inst;   /* the instances, n entries */
    uint64_t total_weight;   /* sum of weights */
    uint64_t version;        /* increases with every publish of this service; 0 = empty start */
    void *lb_table;          /* the balancer's read-only table for this set, or NULL */
    uint32_t max_conns;      /* per-instance connection limit, 0 = none (balancers skip full) */
    uint32_t eject_after;    /* failed connects in a row that eject (passive health), 0 = off */
    uint8_t hash_with_port;  /* hashing balancers hash the client's port too */
};

/* A set of n instances for lb, its instances zeroed for the caller to fill (each state held
 * once for the set). NULL on ENOMEM. Owner only. */
struct instance_set *snapshot_set_create(const struct lb_ops *lb, size_t n);

/* Finishes a filled set: sums the weights and builds the balancer's table. 0 or -ENOMEM. */
int snapshot_set_seal(struct instance_set *set);

/* Frees a set that no reader can see (never published, or retired), releasing its states. */
void snapshot_set_free(struct instance_set *set);

/* The set a service starts with: empty, never freed. */
struct instance_set *snapshot_empty(void);

/* Publishes set in *slot and returns the set it replaces; readers switch at once. Publishers of
 * one slot must be serialised by the caller. */
struct instance_set *snapshot_swap(struct instance_set **slot, struct instance_set *set);

/* Waits until no reader can still see old (a grace period), then frees it. Must not be called
 * from inside a read section. */
void snapshot_retire(struct instance_set *old);

/* The set in *slot; never NULL. Registered reader threads only, inside a read section. */
const struct instance_set *snapshot_load(struct instance_set *const *slot);

/* Any other read-mostly pointer, published and read the same way (a library's table of
 * services): swap returns the old pointer, which may be freed after snapshot_grace. */
void *snapshot_ptr_swap(void **slot, void *p);
void *snapshot_ptr_load(void *const *slot);

/* Waits until no reader can still see what was swapped out before the call. Never from inside
 * a read section. */
void snapshot_grace(void);

/* How many worker threads account per connection (instance_use.h): states created from now on
 * get a shard for each of them besides shard 0. Set once, before the first state is created
 * (the daemon, at start); 0 until then, so the library and the tests use shard 0 only. */
void instance_shards_set_workers(unsigned workers);

/* A new state with one reference. NULL on ENOMEM. */
struct instance_state *instance_state_create(const char *id, const struct net_addr *addr);

/* Takes / drops a reference on an instance state so it outlives the sets that list it.
 * Any thread; the last release frees it. */
void instance_state_hold(struct instance_state *st);
void instance_state_release(struct instance_state *st);

/* Read-side registration for threads that read sets (workers, and any other picker), once per
 * thread before the first read section and after the last one. */
void snapshot_reader_register(void);
void snapshot_reader_unregister(void);

/* A read section: a set from snapshot_load stays valid until snapshot_read_unlock. Keep it
 * short (a pick and a copy of what the caller needs); never block inside. Registered threads. */
void snapshot_read_lock(void);
void snapshot_read_unlock(void);

/* Sums over the shards. Relaxed: a count a few sessions stale only makes a choice slightly
 * worse, and metrics are a moment's view anyway. The pick path reads active: inline. */
static inline unsigned instance_state_active(const struct instance_state *st)
{
    unsigned sum = 0;
    for (unsigned i = 0; i < st->n_shards; i++)
        sum += atomic_load_explicit(&st->shards[i].active, memory_order_relaxed);
    return sum;
}

/* The metrics' counters, summed over the shards. */
struct instance_totals {
    uint64_t connects;   /* sessions that connected */
    uint64_t bytes_up;   /* bytes sent to it by sessions that ended */
    uint64_t bytes_down; /* bytes received from it by sessions that ended */
};

struct instance_totals instance_state_totals(const struct instance_state *st);

#endif
