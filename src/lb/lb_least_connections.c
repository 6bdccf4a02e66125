/* least_connections: the eligible instance with the fewest active sessions per unit of weight. */
#include <stdatomic.h>
#include <stdint.h>

#include "balancer.h"

/* One worker's tie-breaking position. */
struct lc_scratch {
    uint64_t next; /* index scanned first by the next pick, < set->n when n > 0 */
};

_Static_assert(sizeof(struct lc_scratch) % 8 == 0, "scratch sizes are multiples of 8");

static size_t lc_scratch_size(size_t n)
{
    (void)n;
    return sizeof(struct lc_scratch);
}

static void lc_scratch_init(void *scratch, const struct instance_set *set, unsigned worker)
{
    struct lc_scratch *lc = scratch;

    lc->next = set->n > 0 ? worker % set->n : 0;
}

static unsigned lc_active(const struct instance *inst)
{
    /* Relaxed: a count that is a few sessions stale only makes the choice slightly worse. */
    return atomic_load_explicit(&inst->state->active, memory_order_relaxed);
}

static long lc_pick(const struct instance_set *set, void *scratch, const struct lb_exclude *ex)
{
    struct lc_scratch *lc = scratch;
    const size_t n = set->n;
    long best = -1;
    uint64_t best_active = 0;
    uint64_t best_weight = 0;

    if (n == 0)
        return -1;
    /* Scanning from the cursor and keeping only strictly better candidates makes equal
     * instances take turns instead of the lowest index winning every tie. */
    size_t i = (size_t)(lc->next % n);
    for (size_t scanned = 0; scanned < n; scanned++, i = (i + 1) % n) {
        if (!balancer_eligible(set, i, ex))
            continue;
        const uint64_t active = lc_active(&set->inst[i]);
        const uint64_t weight = set->inst[i].weight;
        /* active/weight < best_active/best_weight without dividing; both products fit in
         * 64 bits since each factor fits in 32. */
        if (best < 0 || active * best_weight < best_active * weight) {
            best = (long)i;
            best_active = active;
            best_weight = weight;
        }
    }
    if (best >= 0)
        lc->next = ((size_t)best + 1) % n;
    return best;
}

const struct lb_ops lb_least_connections = {
    .name = "least_connections",
    .scratch_size = lc_scratch_size,
    .scratch_init = lc_scratch_init,
    .pick = lc_pick,
};
