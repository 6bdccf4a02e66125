/* The balancer interface: each algorithm is one ops table in its own lb_*.c file, found by its
 * name in one registry. A pick gets the set and a context owned by the caller (its scratch, its
 * random source, the client, what it already tried), so any thread can pick: a worker, a library
 * caller, a health thread. */
#ifndef SLUICE_BALANCER_H
#define SLUICE_BALANCER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "snapshot.h"

/* Everything a pick may look at besides the set. The caller owns all of it. */
struct lb_ctx {
    void *scratch;                       /* the caller's area for this set (lb_pick prepares it) */
    uint64_t *rng;                       /* the caller's xorshift64 state; never 0 */
    const struct sockaddr *client;       /* client address, or NULL when there is none */
    const void *key;                     /* hash key chosen by the caller, or NULL */
    size_t key_len;                      /* bytes of key */
    struct instance_state *const *tried; /* instances this caller tried already (retries) */
    size_t n_tried;                      /* entries in tried; > 0 makes the pick a retry */
    unsigned shard;                      /* the caller's shard of the states (instance_use.h) */
};

/* One balancing algorithm. pick() is pure: no I/O, no clock, no allocation, no locks; it may
 * write only ctx->scratch and *ctx->rng, and read the set, its table and the instances' shared
 * atomics. A retry (n_tried > 0) must leave the rotation of first attempts as it was. */
struct lb_ops {
    const char *name; /* as written in the config ("round_robin"): the only place it is written */
    int needs_client; /* pick reads ctx->client (hashing balancers); others skip building it */
    /* Bytes of caller scratch for a set of n instances; NULL = none. */
    size_t (*scratch_size)(size_t n);
    /* Prepares a caller's scratch for set; ordinal (a worker's id) spreads starting points. */
    void (*scratch_init)(void *scratch, const struct instance_set *set, unsigned ordinal);
    /* Bytes of the read-only table shared by every caller of one set; NULL = none. */
    size_t (*table_size)(size_t n);
    /* Builds that table when the set is published. */
    void (*table_build)(void *table, const struct instance_set *set);
    /* Index of the instance to use, or -1 when every instance is excluded or has weight 0. */
    long (*pick)(const struct instance_set *set, const struct lb_ctx *ctx);
};

extern const struct lb_ops lb_round_robin;
extern const struct lb_ops lb_least_connections;
extern const struct lb_ops lb_weighted;
extern const struct lb_ops lb_random_two;
extern const struct lb_ops lb_maglev;
extern const struct lb_ops lb_source_hash;

/* The algorithm called name (its ops table's own name, as the config writes it), or NULL. */
const struct lb_ops *balancer_find(const char *name);

/* "round_robin, least_connections, ..." for messages: every algorithm's name. */
void balancer_names(char *out, size_t len);

#define LB_SCRATCH_INLINE                                                                          \
    16 /* bytes kept inside struct lb_scratch, so small areas never allocate */

/* A caller's private balancer state for one service: prepared for one set version, prepared
 * again (possibly reallocated) when the set changes. Not shared between threads. */
struct lb_scratch {
    uint64_t version; /* set version the area is prepared for; 0 = none */
    unsigned ordinal; /* the caller's number, for scratch_init */
    size_t cap;       /* bytes of area */
    void *area;       /* inline_area or an allocation */
    uint64_t inline_area[LB_SCRATCH_INLINE / 8]; /* storage for small areas */
};

/* An empty scratch for the caller numbered ordinal. */
void lb_scratch_init(struct lb_scratch *sc, unsigned ordinal);

/* Frees what the scratch allocated. */
void lb_scratch_free(struct lb_scratch *sc);

/* Picks from set for a caller: prepares sc for the set when it changed (the only allocation,
 * outside pick), points ctx->scratch at it and runs the set's balancer. Returns the index,
 * -EBUSY when every instance that could be picked is at its connection limit, -ENOENT when
 * nothing can be picked, or -ENOMEM. Inside a read section. */
long lb_pick(const struct instance_set *set, struct lb_scratch *sc, struct lb_ctx *ctx);

/* Whether every instance that could take the caller is at the set's connection limit (so the
 * caller may queue instead of failing). After a failed pick. */
int lb_all_full(const struct instance_set *set, const struct lb_ctx *ctx);

/* Non-zero when the caller already tried instance i of set. */
int lb_tried(const struct instance_set *set, size_t i, const struct lb_ctx *ctx);

/* The caller's own sessions on inst (its shard), for the balancers that compare load: a worker
 * balances what it opened, as Envoy's workers do, so a pick reads no line another core writes
 * and costs O(n) at any number of workers. Workers get connections evenly (SO_REUSEPORT) and
 * each keeps its instances within one session of each other per unit of weight, so the
 * service-wide spread stays within one per worker. Relaxed: the library's shard 0 is shared,
 * and a count a few sessions stale only makes the choice slightly worse. For lb_*.c. */
static inline unsigned balancer_active(const struct instance *inst, const struct lb_ctx *ctx)
{
    return atomic_load_explicit(&inst->state->shards[ctx->shard].active, memory_order_relaxed);
}

/* Non-zero when instance i of set may be picked: weight > 0, under the connection limit and not
 * tried. For lb_*.c. */
int balancer_eligible(const struct instance_set *set, size_t i, const struct lb_ctx *ctx);

/* The hash every hashing balancer uses: 64-bit FNV-1a from seed, then murmur3's fmix64, so keys
 * that differ in one byte (the last octet of an address) spread over the whole range before a
 * modulo. Fixed: every worker and every restart maps a key the same way. For lb_*.c. */
uint64_t balancer_hash(const void *data, size_t len, uint64_t seed);

/* murmur3's 64-bit finaliser. */
uint64_t balancer_mix(uint64_t h);

#define BALANCER_HASH_SEED 0xcbf29ce484222325ULL /* FNV-1a's own offset basis */

/* A scratch that is one cursor (round_robin, least_connections): 8 bytes, starting at
 * ordinal % n so that callers do not all begin with instance 0. For lb_*.c. */
size_t balancer_cursor_size(size_t n);
void balancer_cursor_init(void *scratch, const struct instance_set *set, unsigned ordinal);

/* A random eligible instance: uniform, or in proportion to weight; -1 when none. Retries use
 * it, so that the instance after a dead one does not take every retry. For lb_*.c. */
long balancer_pick_random(const struct instance_set *set, const struct lb_ctx *ctx, int weighted);

#endif
