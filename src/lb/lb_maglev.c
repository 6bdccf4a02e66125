/* maglev: Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights, on one table. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "balancer.h"

/* Slots of the lookup table: a prime, so that every skip in [1, M-1] makes a permutation. */
#define MAGLEV_M     65537u
#define MAGLEV_EMPTY UINT32_MAX /* a slot no instance owns (only when none has weight > 0) */

/* Seeds of the three hashes: the two that place an instance, and the one of client keys. They
 * are fixed so that every worker and every restart builds the same table. */
#define MAGLEV_SEED_OFFSET 0xcbf29ce484222325ULL /* FNV-1a's own offset basis */
#define MAGLEV_SEED_SKIP   0x84222325cbf29ce4ULL
#define MAGLEV_SEED_KEY    0x9e3779b97f4a7c15ULL

/* One instance with weight > 0 while the table is built. */
struct maglev_peer {
    uint64_t due;    /* it takes its next turn in the first round r with r * weight >= due */
    uint32_t idx;    /* its index in the set */
    uint32_t pos;    /* next slot of its permutation to try */
    uint32_t skip;   /* step of its permutation, in [1, M-1] */
    uint32_t weight; /* its weight, > 0 */
};

/* The table of one set. Only entry is read by pick; peer is table_build's working area, kept
 * in the same allocation because table_build must not allocate. */
struct maglev_table {
    size_t n;                  /* instances of the set it was built for */
    uint32_t entry[MAGLEV_M];  /* index of the instance owning each slot, or MAGLEV_EMPTY */
    struct maglev_peer peer[]; /* one per instance with weight > 0, sorted by id */
};

static size_t maglev_table_size(size_t n)
{
    return sizeof(struct maglev_table) + n * sizeof(struct maglev_peer);
}

/* Order of peers: by id, then weight, then index. Only instances with the same id and weight
 * depend on the set's order, and they are interchangeable: same permutation, same id. */
static int maglev_peer_cmp(const struct instance_set *set, const struct maglev_peer *a,
                           const struct maglev_peer *b)
{
    const int by_id = strcmp(set->inst[a->idx].state->id, set->inst[b->idx].state->id);

    if (by_id != 0) {
        return by_id;
    }
    if (a->weight != b->weight) {
        return a->weight < b->weight ? -1 : 1;
    }
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static void maglev_sift_down(const struct instance_set *set, struct maglev_peer *p, size_t root,
                             size_t n)
{
    for (size_t child; (child = 2 * root + 1) < n; root = child) {
        if (child + 1 < n && maglev_peer_cmp(set, &p[child], &p[child + 1]) < 0) {
            child++;
        }
        if (maglev_peer_cmp(set, &p[root], &p[child]) >= 0) {
            return;
        }
        const struct maglev_peer tmp = p[root];
        p[root] = p[child];
        p[child] = tmp;
    }
}

/* Heapsort: in place and O(n log n) for sets of thousands, where qsort may allocate. */
static void maglev_sort(const struct instance_set *set, struct maglev_peer *p, size_t n)
{
    for (size_t i = n / 2; i-- > 0;) {
        maglev_sift_down(set, p, i, n);
    }
    for (size_t end = n; end-- > 1;) {
        const struct maglev_peer tmp = p[0];
        p[0] = p[end];
        p[end] = tmp;
        maglev_sift_down(set, p, 0, end);
    }
}

/* Collects the instances with weight > 0 with their permutations; returns how many, and the
 * largest weight in *max_weight. */
static size_t maglev_peers(struct maglev_peer *p, const struct instance_set *set,
                           uint32_t *max_weight)
{
    size_t np = 0;

    *max_weight = 0;
    for (size_t i = 0; i < set->n; i++) {
        const struct instance *inst = &set->inst[i];
        if (inst->weight == 0) {
            continue;
        }
        const char *id = inst->state->id;
        const size_t len = strnlen(id, sizeof(inst->state->id));
        const uint64_t offset = balancer_hash(id, len, MAGLEV_SEED_OFFSET);
        const uint64_t skip = balancer_hash(id, len, MAGLEV_SEED_SKIP);
        p[np] = (struct maglev_peer){
            .idx = (uint32_t)i,
            .pos = (uint32_t)(offset % MAGLEV_M),
            .skip = (uint32_t)(skip % (MAGLEV_M - 1)) + 1,
            .weight = inst->weight,
        };
        *max_weight = inst->weight > *max_weight ? inst->weight : *max_weight;
        np++;
    }
    return np;
}

/* Weighted Maglev filling (the method of Envoy's maglev_lb.cc, in integers): rounds over the
 * peers in id order; a peer of the largest weight W takes a turn every round, one of weight w
 * takes its k-th turn in round ceil(k * W / w), so the slots are shared in proportion to weight
 * and scaling every weight by the same factor changes nothing. A turn claims the next free slot
 * of the peer's permutation, as in the paper. The heaviest peer claims a slot every round, so
 * at most M rounds run; round * weight and due stay below 2^17 * 2^32. */
static void maglev_fill(struct maglev_table *t, struct maglev_peer *p, size_t np, uint32_t max_w)
{
    size_t filled = 0;

    for (size_t k = 0; k < np; k++) {
        p[k].due = max_w;
    }
    for (uint64_t round = 1; filled < MAGLEV_M; round++) {
        for (size_t k = 0; k < np && filled < MAGLEV_M; k++) {
            if (round * p[k].weight < p[k].due) {
                continue;
            }
            p[k].due += max_w;
            /* Terminates: the permutation visits every slot and one is still free. */
            while (t->entry[p[k].pos] != MAGLEV_EMPTY) {
                p[k].pos = (p[k].pos + p[k].skip) % MAGLEV_M;
            }
            t->entry[p[k].pos] = p[k].idx;
            p[k].pos = (p[k].pos + p[k].skip) % MAGLEV_M;
            filled++;
        }
    }
}

/* Depends only on the ids and weights of the instances: the peers are sorted by id before the
 * filling, which is the only place where their order matters. */
static void maglev_table_build(void *table, const struct instance_set *set)
{
    struct maglev_table *t = table;
    uint32_t max_weight;

    assert(set->n < MAGLEV_EMPTY);
    t->n = set->n;
    for (size_t s = 0; s < MAGLEV_M; s++) {
        t->entry[s] = MAGLEV_EMPTY;
    }
    const size_t np = maglev_peers(t->peer, set, &max_weight);
    if (np == 0) {
        return; /* every slot stays empty: pick finds nothing */
    }
    maglev_sort(set, t->peer, np);
    maglev_fill(t, t->peer, np, max_weight);
}

/* Non-zero when some instance is still eligible, so that a retry after every instance failed
 * does not walk the whole table. */
static int maglev_any_eligible(const struct instance_set *set, const struct lb_ctx *ctx)
{
    for (size_t i = 0; i < set->n; i++) {
        if (balancer_eligible(set, i, ctx)) {
            return 1;
        }
    }
    return 0;
}

/* The key's slot, or the next slot forward whose instance this caller may use: a tried
 * instance's keys then spread over the others in table proportions, while first attempts (no
 * tried instance, and every instance in the table has weight > 0) find their slot at once.
 * -1 when no instance is eligible. */
static long maglev_pick(const struct instance_set *set, const struct lb_ctx *ctx)
{
    const struct maglev_table *t = set->lb_table;
    /* A NULL key hashes as zero bytes, so the answer stays deterministic. */
    const void *key = ctx->key != NULL ? ctx->key : "";
    const size_t key_len = ctx->key != NULL ? ctx->key_len : 0;

    if (t == NULL || set->n == 0 || (ctx->n_tried > 0 && !maglev_any_eligible(set, ctx))) {
        return -1;
    }
    assert(t->n == set->n);
    uint32_t slot = (uint32_t)(balancer_hash(key, key_len, MAGLEV_SEED_KEY) % MAGLEV_M);
    uint32_t rejected = MAGLEV_EMPTY; /* last instance found ineligible: skipped without a test */
    for (uint32_t step = 0; step < MAGLEV_M; step++, slot = (slot + 1) % MAGLEV_M) {
        const uint32_t e = t->entry[slot];
        if (e == MAGLEV_EMPTY || e == rejected) {
            continue;
        }
        if (balancer_eligible(set, e, ctx)) {
            return (long)e;
        }
        rejected = e;
    }
    /* Only when every eligible instance owns no slot (more instances than slots, or weights
     * a million to one): an untried instance is still better than a refusal. */
    return balancer_pick_random(set, ctx, 1);
}

const struct lb_ops lb_maglev = {
    .name = "maglev",
    .needs_client = 1,
    .table_size = maglev_table_size,
    .table_build = maglev_table_build,
    .pick = maglev_pick,
};
