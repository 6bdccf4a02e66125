/* How a user of an instance (a worker's session, a library caller) accounts for it: taking and
 * dropping it (least_connections reads active), a good connect, a failed one (passive health),
 * the bytes a session moved. One definition for every user; inline, because a worker does this
 * on every connection.
 *
 * A worker writes only its own shard of each instance (snapshot.h): plain loads and stores on
 * a line no other core writes. It holds one reference on a state for all its sessions (taken
 * at the first, dropped by instance_user_sweep once none holds it), so a connection does not
 * touch the shared reference count either. Shard 0 is for everyone else: atomic
 * read-modify-writes and a reference per use, as any thread may share it. */
#ifndef SLUICE_INSTANCE_USE_H
#define SLUICE_INSTANCE_USE_H

#include <assert.h>
#include <stdatomic.h>

#include "owner.h"
#include "snapshot.h"

/* One user of instances: a worker (shard >= 1, one thread) or shard 0 (any thread). */
struct instance_user {
    unsigned shard;              /* its shard in every state */
    struct instance_state *held; /* states it holds a reference on (shard >= 1) */
};

#define INSTANCE_USER_SHARED ((struct instance_user){.shard = 0})

static inline void instance_user_init(struct instance_user *u, unsigned shard)
{
    *u = (struct instance_user){.shard = shard};
}

/* Drops the references on states none of u's sessions holds any more; a state a later session
 * takes is held again then. A worker calls it now and then (once a second) and at its end. */
void instance_user_sweep(struct instance_user *u);

/* At the end of a user whose sessions are all gone: every reference dropped. */
void instance_user_finish(struct instance_user *u);

static inline struct instance_shard *instance_shard_of(struct instance_state *st,
                                                       const struct instance_user *u)
{
    assert(u->shard < st->n_shards); /* a worker beyond instance_shards_set_workers */
    return &st->shards[u->shard];
}

/* *c += d on a shard's counter (atomic_uint or atomic_ullong; d may be (unsigned)-1): a
 * read-modify-write on shard 0, which any thread may share; a plain load and store on a
 * worker's shard, which only that worker writes. */
#define INSTANCE_SHARD_ADD(u, c, d)                                                                \
    ((u)->shard == 0                                                                               \
         ? (void)atomic_fetch_add_explicit((c), (d), memory_order_relaxed)                         \
         : atomic_store_explicit((c), atomic_load_explicit((c), memory_order_relaxed) + (d),       \
                                 memory_order_relaxed))

/* u holds st from now on (st outlives the sets) without counting it active: the part of a use
 * a retrying session keeps for an instance it tried. Inside the read section st was found in. */
static inline void instance_use_hold(struct instance_state *st, struct instance_user *u)
{
    struct instance_shard *sh = instance_shard_of(st, u);

    if (u->shard == 0) {
        instance_state_hold(st);
        return;
    }
    if (!sh->has_ref) {
        instance_state_hold(st);
        sh->has_ref = 1;
        sh->next_held = u->held;
        u->held = st;
    }
    INSTANCE_SHARD_ADD(u, &sh->held, 1);
}

/* The hold ends (the last use of st by this session). */
static inline void instance_use_unhold(struct instance_state *st, struct instance_user *u)
{
    if (u->shard == 0)
        instance_state_release(st);
    else
        INSTANCE_SHARD_ADD(u, &instance_shard_of(st, u)->held, (unsigned)-1);
}

/* The caller uses st from now on: it holds it and counts as active. */
static inline void instance_use_begin(struct instance_state *st, struct instance_user *u)
{
    instance_use_hold(st, u);
    INSTANCE_SHARD_ADD(u, &instance_shard_of(st, u)->active, 1);
}

/* No longer active on st (a failed connect: the session may retry elsewhere); still held. */
static inline void instance_use_inactive(struct instance_state *st, struct instance_user *u)
{
    INSTANCE_SHARD_ADD(u, &instance_shard_of(st, u)->active, (unsigned)-1);
}

/* The use of st ended. */
static inline void instance_use_end(struct instance_state *st, struct instance_user *u)
{
    instance_use_inactive(st, u);
    instance_use_unhold(st, u);
}

/* What a session moved to and from st, counted when it ends. */
static inline void instance_use_bytes(struct instance_state *st, const struct instance_user *u,
                                      uint64_t up, uint64_t down)
{
    struct instance_shard *sh = instance_shard_of(st, u);
    INSTANCE_SHARD_ADD(u, &sh->bytes_up, up);
    INSTANCE_SHARD_ADD(u, &sh->bytes_down, down);
}

/* A connect to st succeeded: counted, and a run of failures ends. */
static inline void instance_use_connected(struct instance_state *st, const struct instance_user *u)
{
    INSTANCE_SHARD_ADD(u, &instance_shard_of(st, u)->connects, 1);
    /* read first, so the usual case writes nothing */
    if (atomic_load_explicit(&st->fails_in_row, memory_order_relaxed) != 0)
        atomic_store_explicit(&st->fails_in_row, 0, memory_order_relaxed);
}

/* A connect to st (an instance of o's service) failed: one more failure in a row; the one that
 * reaches the service's eject_after wakes the owner's ticker, which ejects. Only failures pay
 * for the read section. */
static inline void instance_use_failed(struct owner *o, struct instance_state *st)
{
    unsigned fails = atomic_fetch_add_explicit(&st->fails_in_row, 1, memory_order_relaxed) + 1;
    uint32_t eject_after;

    atomic_fetch_add_explicit(&st->failures, 1, memory_order_relaxed);
    snapshot_read_lock();
    eject_after = owner_current(o)->eject_after;
    snapshot_read_unlock();
    if (eject_after != 0 && fails == eject_after)
        owner_report_failing(o);
}

#endif
