/* How a user of an instance (a worker's session, a library caller) accounts for it: taking and
 * dropping it (least_connections reads active), a good connect, a failed one (passive health).
 * One definition for every user; inline, because a worker does this on every connection. */
#ifndef SLUICE_INSTANCE_USE_H
#define SLUICE_INSTANCE_USE_H

#include <stdatomic.h>

#include "owner.h"
#include "snapshot.h"

/* The caller uses st from now on: it holds it (st outlives the sets) and counts as active. */
static inline void instance_use_begin(struct instance_state *st)
{
    instance_state_hold(st);
    atomic_fetch_add_explicit(&st->active, 1, memory_order_relaxed);
}

/* The use of st ended. */
static inline void instance_use_end(struct instance_state *st)
{
    atomic_fetch_sub_explicit(&st->active, 1, memory_order_relaxed);
    instance_state_release(st);
}

/* A connect to st succeeded: counted, and a run of failures ends. */
static inline void instance_use_connected(struct instance_state *st)
{
    atomic_fetch_add_explicit(&st->connects, 1, memory_order_relaxed);
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
