/* round_robin: plain rotation over the eligible instances; weights only matter when 0. */
#include <stdint.h>

#include "balancer.h"

/* One worker's rotation position. */
struct rr_scratch {
    uint64_t next; /* index the next pick tries first, < set->n when n > 0 */
};

_Static_assert(sizeof(struct rr_scratch) % 8 == 0, "scratch sizes are multiples of 8");

static size_t rr_scratch_size(size_t n)
{
    (void)n;
    return sizeof(struct rr_scratch);
}

static void rr_scratch_init(void *scratch, const struct instance_set *set, unsigned worker)
{
    struct rr_scratch *rr = scratch;

    /* Spread the workers' starting points so they do not all send their first session to
     * instance 0. */
    rr->next = set->n > 0 ? worker % set->n : 0;
}

static long rr_pick(const struct instance_set *set, void *scratch, const struct lb_exclude *ex)
{
    struct rr_scratch *rr = scratch;
    const size_t n = set->n;

    if (n == 0)
        return -1;
    size_t i = (size_t)(rr->next % n);
    for (size_t tried = 0; tried < n; tried++) {
        if (balancer_eligible(set, i, ex)) {
            rr->next = (i + 1) % n;
            return (long)i;
        }
        i = (i + 1) % n;
    }
    return -1;
}

const struct lb_ops lb_round_robin = {
    .name = "round_robin",
    .scratch_size = rr_scratch_size,
    .scratch_init = rr_scratch_init,
    .pick = rr_pick,
};
