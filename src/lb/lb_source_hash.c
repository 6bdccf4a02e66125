/* source_hash: the client key hashed onto the weighted instances (modulo, not consistent). */
#include <stdint.h>

#include "balancer.h"

#define SH_RETRY_MIX 0x9e3779b97f4a7c15ULL /* golden ratio: decorrelates retry n from retry n-1 */

static long sh_pick(const struct instance_set *set, const struct lb_ctx *ctx)
{
    uint64_t total = 0;
    /* A NULL key hashes as zero bytes, so the answer stays deterministic. */
    uint64_t h = balancer_hash(ctx->key != NULL ? ctx->key : "",
                               ctx->key != NULL ? ctx->key_len : 0, BALANCER_HASH_SEED);

    for (size_t i = 0; i < set->n; i++) {
        if (balancer_eligible(set, i, ctx)) {
            total += set->inst[i].weight;
        }
    }
    if (total == 0) {
        return -1;
    }
    /* A retry rehashes with its number: the tried instances are out of the walk already, and
     * without the rehash the key would land on the neighbour of the failed instance, the same
     * for every key of it. Same key and same tried list: same answer. */
    if (ctx->n_tried > 0) {
        h = balancer_mix(h ^ (uint64_t)ctx->n_tried * SH_RETRY_MIX);
    }
    uint64_t r = h % total;
    for (size_t i = 0; i < set->n; i++) {
        if (!balancer_eligible(set, i, ctx)) {
            continue;
        }
        if (r < set->inst[i].weight) {
            return (long)i;
        }
        r -= set->inst[i].weight;
    }
    return -1; /* not reached: the weights sum to total */
}

const struct lb_ops lb_source_hash = {
    .name = "source_hash",
    .needs_client = 1,
    .pick = sh_pick,
};
