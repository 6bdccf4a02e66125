/* random_two: the power of two random choices, keeping the one with fewer sessions per weight. */
#include <stdatomic.h>
#include <stdint.h>

#include "balancer.h"
#include "clock.h"

/* Random indexes tried before counting the eligible instances: with most instances eligible a
 * draw costs O(1) instead of O(n); counting keeps it exact when few are. */
#define R2_DRAWS 8

/* A uniformly random eligible instance other than `other` (-1 for none), or -1 when there is
 * none. Draws first, then picks the nth of the remaining ones: conditioned on succeeding, a
 * draw is uniform, and so is the count, so the mixture is too. */
static long r2_draw(const struct instance_set *set, const struct lb_ctx *ctx, long other)
{
    size_t m = 0;

    for (int d = 0; d < R2_DRAWS; d++) {
        const long i = (long)(rng_next(ctx->rng) % set->n);
        if (i != other && balancer_eligible(set, (size_t)i, ctx)) {
            return i;
        }
    }
    for (size_t i = 0; i < set->n; i++) {
        if ((long)i != other && balancer_eligible(set, i, ctx)) {
            m++;
        }
    }
    if (m == 0) {
        return -1;
    }
    size_t nth = (size_t)(rng_next(ctx->rng) % m);
    for (size_t i = 0; i < set->n; i++) {
        if ((long)i != other && balancer_eligible(set, i, ctx) && nth-- == 0) {
            return (long)i;
        }
    }
    return -1; /* not reached: m instances qualify */
}

/* Tried instances are not eligible, so a retry is the same two choices among the untried; the
 * only state is the caller's random source. */
static long r2_pick(const struct instance_set *set, const struct lb_ctx *ctx)
{
    if (set->n == 0) {
        return -1;
    }
    const long a = r2_draw(set, ctx, -1);
    const long b = a >= 0 ? r2_draw(set, ctx, a) : -1;
    if (b < 0) {
        return a; /* one eligible instance, or none */
    }
    /* active/weight compared without dividing; each factor fits in 32 bits, so 64 suffice. */
    const uint64_t lhs = (uint64_t)balancer_active(&set->inst[a], ctx) * set->inst[b].weight;
    const uint64_t rhs = (uint64_t)balancer_active(&set->inst[b], ctx) * set->inst[a].weight;
    if (lhs != rhs) {
        return lhs < rhs ? a : b;
    }
    return (rng_next(ctx->rng) >> 63) ? a : b; /* xorshift's top bit is its best */
}

const struct lb_ops lb_random_two = {
    .name = "random_two",
    .pick = r2_pick,
};
