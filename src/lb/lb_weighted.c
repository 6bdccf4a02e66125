/* weighted: nginx's smooth weighted round-robin (ngx_http_upstream_get_peer), per worker. */
#include <stdint.h>

#include "balancer.h"

/* One caller's scratch is an array of n int64_t: each instance's current weight. Their sum over
 * the instances that took part in a round is unchanged by the round, so they stay bounded. */

static size_t wrr_scratch_size(size_t n)
{
    /* At least 8 bytes so that every worker's area is distinct even for an empty set. */
    return n > 0 ? n * sizeof(int64_t) : sizeof(int64_t);
}

/* One round: every eligible instance gains its weight, the one with the highest current weight
 * wins (the first on ties) and gives back the round's total. */
static long wrr_round(const struct instance_set *set, int64_t *current, const struct lb_ctx *ctx)
{
    long best = -1;
    int64_t total = 0;

    for (size_t i = 0; i < set->n; i++) {
        /* Drained and tried instances sit this round out, like peers nginx already tried. */
        if (!balancer_eligible(set, i, ctx))
            continue;
        current[i] += set->inst[i].weight;
        total += set->inst[i].weight;
        if (best < 0 || current[i] > current[best])
            best = (long)i;
    }
    if (best >= 0)
        current[best] -= total;
    return best;
}

static void wrr_scratch_init(void *scratch, const struct instance_set *set, unsigned ordinal)
{
    const struct lb_ctx first_attempt = {0};
    int64_t *current = scratch;
    uint64_t total = 0;

    for (size_t i = 0; i < set->n; i++) {
        current[i] = 0;
        total += set->inst[i].weight;
    }
    if (total == 0)
        return;
    /* Start caller w at round w of the same sequence (nginx starts every process at round 0),
     * so the heaviest instance does not receive every worker's first session. The sequence
     * repeats every total rounds, hence the modulo. */
    const uint64_t skip = ordinal % total;
    for (uint64_t r = 0; r < skip; r++)
        (void)wrr_round(set, current, &first_attempt);
}

static long wrr_pick(const struct instance_set *set, const struct lb_ctx *ctx)
{
    /* A retry picks among the untried in proportion to weight and leaves the sequence of first
     * attempts as it was. */
    if (ctx->n_tried > 0) {
        return balancer_pick_random(set, ctx, 1);
    }
    return wrr_round(set, ctx->scratch, ctx);
}

const struct lb_ops lb_weighted = {
    .name = "weighted",
    .scratch_size = wrr_scratch_size,
    .scratch_init = wrr_scratch_init,
    .pick = wrr_pick,
};
