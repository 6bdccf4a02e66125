/* round_robin: plain rotation over the eligible instances; weights only matter when 0. */
#include <stdint.h>

#include "balancer.h"

/* One caller's rotation position. */
struct rr_scratch {
    uint64_t next; /* index the next first attempt tries first, < set->n when n > 0 */
};

static size_t rr_scratch_size(size_t n)
{
    (void)n;
    return sizeof(struct rr_scratch);
}

static void rr_scratch_init(void *scratch, const struct instance_set *set, unsigned ordinal)
{
    struct rr_scratch *rr = scratch;

    /* Spread the callers' starting points so they do not all send their first session to
     * instance 0. */
    rr->next = set->n > 0 ? ordinal % set->n : 0;
}

static long rr_pick(const struct instance_set *set, const struct lb_ctx *ctx)
{
    struct rr_scratch *rr = ctx->scratch;
    const size_t n = set->n;

    if (n == 0) {
        return -1;
    }
    /* A retry leaves the rotation alone and goes anywhere else at random: advancing the cursor
     * would make the instance after a dead one the next first choice and send it every retry. */
    if (ctx->n_tried > 0) {
        return balancer_pick_random(set, ctx, 0);
    }
    size_t i = (size_t)(rr->next % n);
    for (size_t tried = 0; tried < n; tried++) {
        if (balancer_eligible(set, i, ctx)) {
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
