/* source_hash: the client key hashed onto the weighted instances (modulo, not consistent). */
#include <stdint.h>

#include "balancer.h"

/* Key hashing: 64-bit FNV-1a then murmur3's fmix64, so that keys differing in one byte (the
 * last octet of an address) spread over the whole range before the modulo. Fixed, so every
 * worker and every restart maps a key the same way. */
#define SH_FNV_BASIS 0xcbf29ce484222325ULL
#define SH_FNV_PRIME 0x100000001b3ULL
#define SH_RETRY_MIX 0x9e3779b97f4a7c15ULL /* golden ratio: decorrelates retry n from retry n-1 */

static uint64_t sh_fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static uint64_t sh_hash(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = SH_FNV_BASIS;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= SH_FNV_PRIME;
    }
    return sh_fmix64(h);
}

static long sh_pick(const struct instance_set *set, const struct lb_ctx *ctx)
{
    uint64_t total = 0;
    /* A NULL key hashes as zero bytes, so the answer stays deterministic. */
    uint64_t h = ctx->key != NULL ? sh_hash(ctx->key, ctx->key_len) : sh_hash("", 0);

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
        h = sh_fmix64(h ^ (uint64_t)ctx->n_tried * SH_RETRY_MIX);
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
