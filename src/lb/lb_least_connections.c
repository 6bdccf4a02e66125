/* least_connections: the eligible instance with the fewest active sessions per unit of weight. */
#include <stdatomic.h>
#include <stdint.h>

#include "balancer.h"
#include "clock.h"

/* The scratch is one cursor (balancer_cursor_*): the index a first attempt scans from. */

static long lc_pick(const struct instance_set *set, const struct lb_ctx *ctx)
{
    uint64_t *next = ctx->scratch;
    const size_t n = set->n;
    const int retry = ctx->n_tried > 0;
    long best = -1;
    uint64_t best_active = 0, best_weight = 0, ties = 0;

    if (n == 0)
        return -1;
    /* First attempts scan from the cursor and keep only strictly better candidates, so equal
     * instances take turns instead of the lowest index winning every tie. A retry leaves the
     * cursor alone and picks uniformly among the tied (reservoir sampling), so the instance
     * after a failed one does not take every retry. */
    size_t i = retry ? 0 : (size_t)(*next % n);
    for (size_t scanned = 0; scanned < n; scanned++, i = (i + 1) % n) {
        if (!balancer_eligible(set, i, ctx))
            continue;
        const uint64_t active = balancer_active(&set->inst[i], ctx);
        const uint64_t weight = set->inst[i].weight;
        /* active/weight against best_active/best_weight without dividing; both products fit
         * in 64 bits since each factor fits in 32. */
        const uint64_t lhs = active * best_weight, rhs = best_active * weight;
        if (best < 0 || lhs < rhs) {
            best = (long)i;
            best_active = active;
            best_weight = weight;
            ties = 1;
        } else if (retry && lhs == rhs && rng_next(ctx->rng) % ++ties == 0) {
            best = (long)i;
        }
    }
    if (best >= 0 && !retry)
        *next = ((size_t)best + 1) % n;
    return best;
}

const struct lb_ops lb_least_connections = {
    .name = "least_connections",
    .scratch_size = balancer_cursor_size,
    .scratch_init = balancer_cursor_init,
    .pick = lc_pick,
};
