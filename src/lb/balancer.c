/* The registry of balancing algorithms, and the eligibility rule every lb_*.c shares. */
#include "balancer.h"

#include <assert.h>
#include <stdatomic.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

/* Every algorithm, in the order messages list them. Its name lives in its ops table only. */
static const struct lb_ops *const balancers[] = {
    &lb_round_robin, &lb_least_connections, &lb_weighted, &lb_random_two,
    &lb_maglev,      &lb_source_hash,
};

#define N_BALANCERS (sizeof(balancers) / sizeof(balancers[0]))

const struct lb_ops *balancer_find(const char *name)
{
    for (size_t i = 0; name != NULL && i < N_BALANCERS; i++) {
        if (strcmp(balancers[i]->name, name) == 0) {
            return balancers[i];
        }
    }
    return NULL;
}

void balancer_names(char *out, size_t len)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < N_BALANCERS && used < len; i++) {
        used += (size_t)snprintf(out + used, len - used, "%s%s", i ? ", " : "", balancers[i]->name);
    }
}

int lb_tried(const struct instance_set *set, size_t i, const struct lb_ctx *ctx)
{
    for (size_t k = 0; k < ctx->n_tried; k++) {
        if (ctx->tried[k] == set->inst[i].state) {
            return 1;
        }
    }
    return 0;
}

int balancer_eligible(const struct instance_set *set, size_t i, const struct lb_ctx *ctx)
{
    const struct instance *inst = &set->inst[i];

    if (inst->weight == 0) {
        return 0;
    }
    /* at its connection limit: skipped like a tried one (the caller may queue) */
    if (set->max_conns != 0 && instance_state_active(inst->state) >= set->max_conns) {
        return 0;
    }
    /* By state identity, not by index: the set may have been swapped since the last try. */
    return !lb_tried(set, i, ctx);
}

long balancer_pick_random(const struct instance_set *set, const struct lb_ctx *ctx, int weighted)
{
    uint64_t total = 0, r;

    for (size_t i = 0; i < set->n; i++) {
        if (balancer_eligible(set, i, ctx)) {
            total += weighted ? set->inst[i].weight : 1;
        }
    }
    if (total == 0) {
        return -1;
    }
    r = rng_next(ctx->rng) % total;
    for (size_t i = 0; i < set->n; i++) {
        if (!balancer_eligible(set, i, ctx)) {
            continue;
        }
        uint64_t share = weighted ? set->inst[i].weight : 1;
        if (r < share) {
            return (long)i;
        }
        r -= share;
    }
    return -1; /* not reached: the shares sum to total */
}

uint64_t balancer_mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

uint64_t balancer_hash(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = seed;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return balancer_mix(h);
}

size_t balancer_cursor_size(size_t n)
{
    (void)n;
    return sizeof(uint64_t);
}

void balancer_cursor_init(void *scratch, const struct instance_set *set, unsigned ordinal)
{
    *(uint64_t *)scratch = set->n > 0 ? ordinal % set->n : 0;
}

void lb_scratch_init(struct lb_scratch *sc, unsigned ordinal)
{
    memset(sc, 0, sizeof(*sc));
    sc->ordinal = ordinal;
    sc->area = sc->inline_area;
    sc->cap = sizeof(sc->inline_area);
}

void lb_scratch_free(struct lb_scratch *sc)
{
    if (sc->area != sc->inline_area) {
        free(sc->area);
    }
    lb_scratch_init(sc, sc->ordinal);
}

/* Makes the area fit and initialises it for set. */
static int scratch_prepare(struct lb_scratch *sc, const struct instance_set *set)
{
    size_t need = set->lb->scratch_size != NULL ? set->lb->scratch_size(set->n) : 0;

    if (need > sc->cap) {
        void *grown = malloc(need);
        if (grown == NULL) {
            return -ENOMEM;
        }
        if (sc->area != sc->inline_area) {
            free(sc->area);
        }
        sc->area = grown;
        sc->cap = need;
    }
    if (need > 0) {
        set->lb->scratch_init(sc->area, set, sc->ordinal);
    }
    sc->version = set->version;
    return 0;
}

long lb_pick(const struct instance_set *set, struct lb_scratch *sc, struct lb_ctx *ctx)
{
    long i;

    if (set->n == 0) {
        return -ENOENT;
    }
    if (sc->version != set->version && scratch_prepare(sc, set) != 0) {
        return -ENOMEM;
    }
    assert(*ctx->rng != 0);
    ctx->scratch = sc->area;
    i = set->lb->pick(set, ctx);
    assert(i < (long)set->n);
    return i >= 0 ? i : lb_all_full(set, ctx) ? -EBUSY : -ENOENT;
}

int lb_all_full(const struct instance_set *set, const struct lb_ctx *ctx)
{
    if (set->max_conns == 0)
        return 0;
    /* something would be eligible but for the limit: at least one untried, weighted instance */
    for (size_t i = 0; i < set->n; i++) {
        if (set->inst[i].weight > 0 && !lb_tried(set, i, ctx))
            return 1;
    }
    return 0;
}
