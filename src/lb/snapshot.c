/* Immutable instance sets published by pointer swap and reclaimed after an RCU grace period. */
#include "snapshot.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu.h>

#include "balancer.h"
#include "tsan.h"

/* ThreadSanitizer cannot see inside liburcu that synchronize_rcu waits for every read section
 * that began before it: each read section's end releases one token, and the end of a grace
 * period acquires it, so a reader's last use of a set happens before the set is freed. (No
 * call_rcu here: every reclaim waits in snapshot_retire or snapshot_grace.) The publication
 * itself needs no annotation: snapshot_swap and snapshot_load are atomics TSan sees.
 * Compiled only under TSan (tsan.h). */
#ifdef SLUICE_TSAN
static char grace_token;
#endif
#define READ_SECTION_ENDED() SLUICE_TSAN_RELEASE(&grace_token)
#define GRACE_ENDED()        SLUICE_TSAN_ACQUIRE(&grace_token)

/* Every service starts with this set: nothing to pick, nothing to free. */
static struct instance_set empty_set;

struct instance_set *snapshot_empty(void)
{
    return &empty_set;
}

/* Written once at start, before any state exists (and before any worker starts). */
static unsigned shard_workers;

void instance_shards_set_workers(unsigned workers)
{
    shard_workers = workers;
}

struct instance_state *instance_state_create(const char *id, const struct net_addr *addr)
{
    struct instance_state *st = calloc(1, sizeof(*st));
    const unsigned n = 1 + shard_workers;

    if (st == NULL)
        return NULL;
    st->shards = aligned_alloc(sizeof(struct instance_shard), n * sizeof(struct instance_shard));
    if (st->shards == NULL) {
        free(st);
        return NULL;
    }
    memset(st->shards, 0, n * sizeof(struct instance_shard));
    st->n_shards = n;
    snprintf(st->id, sizeof(st->id), "%s", id);
    st->addr = *addr;
    atomic_init(&st->refs, 1);
    return st;
}

struct instance_totals instance_state_totals(const struct instance_state *st)
{
    struct instance_totals t = {0};

    for (unsigned i = 0; i < st->n_shards; i++) {
        const struct instance_shard *sh = &st->shards[i];
        t.connects += atomic_load_explicit(&sh->connects, memory_order_relaxed);
        t.bytes_up += atomic_load_explicit(&sh->bytes_up, memory_order_relaxed);
        t.bytes_down += atomic_load_explicit(&sh->bytes_down, memory_order_relaxed);
    }
    return t;
}

void instance_state_hold(struct instance_state *st)
{
    unsigned before = atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);

    assert(before > 0); /* a holder must already hold one to hand out another */
    (void)before;
}

void instance_state_release(struct instance_state *st)
{
    unsigned before = atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel);

    assert(before > 0);
    if (before == 1) {
        assert(instance_state_active(st) == 0); /* a session still counted in it holds a ref */
        free(st->shards);
        free(st);
    }
}

/* One allocation: header then instances; the balancer's table separately. */
struct instance_set *snapshot_set_create(const struct lb_ops *lb, size_t n)
{
    struct instance_set *set = calloc(1, sizeof(*set) + n * sizeof(struct instance));

    if (set == NULL) {
        return NULL;
    }
    set->lb = lb;
    set->n = n;
    set->inst = (struct instance *)(set + 1);
    return set;
}

int snapshot_set_seal(struct instance_set *set)
{
    set->total_weight = 0;
    for (size_t i = 0; i < set->n; i++) {
        assert(set->inst[i].state != NULL);
        set->total_weight += set->inst[i].weight;
    }
    if (set->lb->table_size == NULL) {
        return 0;
    }
    set->lb_table = malloc(set->lb->table_size(set->n));
    if (set->lb_table == NULL) {
        return -ENOMEM;
    }
    set->lb->table_build(set->lb_table, set);
    return 0;
}

void snapshot_set_free(struct instance_set *set)
{
    if (set == NULL || set == &empty_set) {
        return;
    }
    for (size_t i = 0; i < set->n; i++) {
        if (set->inst[i].state != NULL) {
            instance_state_release(set->inst[i].state);
        }
    }
    free(set->lb_table);
    free(set);
}

/* The pointer itself moves with GCC's atomics rather than rcu_xchg_pointer/rcu_dereference:
 * the same instructions on x86-64 (an xchg, a plain load), and ThreadSanitizer sees the
 * release/acquire pair that orders a set's construction before its readers. */
struct instance_set *snapshot_swap(struct instance_set **slot, struct instance_set *set)
{
    return __atomic_exchange_n(slot, set, __ATOMIC_ACQ_REL);
}

void snapshot_retire(struct instance_set *old)
{
    if (old == NULL || old == &empty_set) {
        return;
    }
    synchronize_rcu(); /* no reader can still see old after this */
    GRACE_ENDED();
    snapshot_set_free(old);
}

const struct instance_set *snapshot_load(struct instance_set *const *slot)
{
    return __atomic_load_n(slot, __ATOMIC_ACQUIRE);
}

void *snapshot_ptr_swap(void **slot, void *p)
{
    return __atomic_exchange_n(slot, p, __ATOMIC_ACQ_REL);
}

void *snapshot_ptr_load(void *const *slot)
{
    return __atomic_load_n(slot, __ATOMIC_ACQUIRE);
}

void snapshot_grace(void)
{
    synchronize_rcu();
    GRACE_ENDED();
}

void snapshot_reader_register(void)
{
    rcu_register_thread();
}

void snapshot_reader_unregister(void)
{
    rcu_unregister_thread();
}

void snapshot_read_lock(void)
{
    rcu_read_lock();
}

void snapshot_read_unlock(void)
{
    READ_SECTION_ENDED();
    rcu_read_unlock();
}
