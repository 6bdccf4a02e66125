/* round_robin: plain rotation over the eligible instances; weights only matter when 0. */
#include <stdint.h>

#include "balancer.h"

/* The scratch is one cursor (balancer_cursor_*): the index the next first attempt tries first,
 * < set->n when n > 0. */

static long rr_pick(const struct instance_set *set, const struct lb_ctx *ctx)
{
    uint64_t *next = ctx->scratch;
    const size_t n = set->n;

    if (n == 0) {
        return -1;
    }
    /* A retry leaves the rotation alone and goes anywhere else at random: advancing the cursor
     * would make the instance after a dead one the next first choice and send it every retry. */
    if (ctx->n_tried > 0) {
        return balancer_pick_random(set, ctx, 0);
    }
    size_t i = (size_t)(*next % n);
    for (size_t tried = 0; tried < n; tried++) {
        if (balancer_eligible(set, i, ctx)) {
            *next = (i + 1) % n;
            return (long)i;
        }
        i = (i + 1) % n;
    }
    return -1;
}

const struct lb_ops lb_round_robin = {
    .name = "round_robin",
    .scratch_size = balancer_cursor_size,
    .scratch_init = balancer_cursor_init,
    .pick = rr_pick,
};
