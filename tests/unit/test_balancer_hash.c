/* Unit tests for random_two, maglev and source_hash, on instance sets built as plain tables. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"

#define MAX_INST 16     /* instances a fixture can hold */
#define KEYS     100000 /* client keys per distribution test */

/* A hand-built instance set with its own states and table, and one caller's scratch. */
struct fixture {
    struct instance_set set;                /* what the balancer sees */
    struct instance inst[MAX_INST];         /* set.inst points here (NULL when n == 0) */
    struct instance_state states[MAX_INST]; /* inst[i].state == &states[i] */
    struct instance_shard shards[MAX_INST]; /* states[i]'s one shard (shard 0) */
    unsigned id_num[MAX_INST];              /* instance i's id is "10.0.0.<id_num[i]>:80" */
    struct lb_scratch sc;                   /* the caller's scratch */
    uint64_t rng;                           /* the caller's random source (seeded: repeatable) */
};

/* A set of n instances for lb; instance i has weights[i] and the id numbered id_nums[i] (i + 1
 * when id_nums is NULL). Builds the balancer's table as snapshot_set_seal would. */
static struct fixture *fixture_new(const struct lb_ops *lb, const uint32_t *weights,
                                   const unsigned *id_nums, size_t n)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_true(n <= MAX_INST);
    for (size_t i = 0; i < n; i++) {
        struct instance_state *st = &f->states[i];
        f->id_num[i] = id_nums != NULL ? id_nums[i] : (unsigned)i + 1;
        snprintf(st->id, sizeof(st->id), "10.0.0.%u:80", f->id_num[i]);
        st->shards = &f->shards[i];
        st->n_shards = 1;
        atomic_init(&st->refs, 1);
        atomic_init(&st->failures, 0);
        f->inst[i].weight = weights[i];
        f->inst[i].state = st;
        f->set.total_weight += weights[i];
    }
    f->set.lb = lb;
    f->set.n = n;
    f->set.inst = n > 0 ? f->inst : NULL;
    f->set.version = 1;
    if (lb->table_size != NULL) {
        f->set.lb_table = malloc(lb->table_size(n));
        assert_non_null(f->set.lb_table);
        lb->table_build(f->set.lb_table, &f->set);
    }
    f->rng = 0x9E3779B97F4A7C15ULL;
    lb_scratch_init(&f->sc, 0);
    return f;
}

static void fixture_free(struct fixture *f)
{
    lb_scratch_free(&f->sc);
    free(f->set.lb_table);
    free(f);
}

/* Picks for key (NULL allowed) excluding the first n_tried of tried; -1 when nothing. */
static long pick_key(struct fixture *f, const void *key, size_t key_len,
                     struct instance_state *const *tried, size_t n_tried)
{
    struct lb_ctx ctx = {
        .rng = &f->rng, .key = key, .key_len = key_len, .tried = tried, .n_tried = n_tried};
    const long i = lb_pick(&f->set, &f->sc, &ctx);
    return i >= 0 ? i : -1;
}

/* Client key number k: the IPv4 address 10.x.y.z, as a session passes it. */
static void key_of(unsigned k, unsigned char key[4])
{
    key[0] = 10;
    key[1] = (unsigned char)(k >> 16);
    key[2] = (unsigned char)(k >> 8);
    key[3] = (unsigned char)k;
}

/* The id number of the instance key k goes to on a first attempt. */
static unsigned pick_id(struct fixture *f, unsigned k)
{
    unsigned char key[4];

    key_of(k, key);
    const long i = pick_key(f, key, sizeof(key), NULL, 0);
    assert_in_range(i, 0, (long)f->set.n - 1);
    return f->id_num[i];
}

/* Counts first attempts of the KEYS keys per instance index. */
static void count_keys(struct fixture *f, unsigned *counts)
{
    unsigned char key[4];

    memset(counts, 0, f->set.n * sizeof(*counts));
    for (unsigned k = 0; k < KEYS; k++) {
        key_of(k, key);
        const long i = pick_key(f, key, sizeof(key), NULL, 0);
        assert_in_range(i, 0, (long)f->set.n - 1);
        counts[i]++;
    }
}

/* Asserts every instance's share of KEYS is within ±10% (relative) of weight / total. */
static void assert_shares(const char *what, const uint32_t *weights, size_t n,
                          const unsigned *counts)
{
    uint64_t total = 0;

    for (size_t i = 0; i < n; i++)
        total += weights[i];
    for (size_t i = 0; i < n; i++) {
        const double expected = (double)KEYS * weights[i] / (double)total;
        print_message("%s: instance %zu (weight %u): %u keys, %.4f of all (expected %.4f)\n", what,
                      i, weights[i], counts[i], (double)counts[i] / KEYS, expected / KEYS);
        assert_true((double)counts[i] >= 0.9 * expected);
        assert_true((double)counts[i] <= 1.1 * expected);
    }
}

/* ---- every new balancer (the state is the ops table) --------------------------------------- */

static void test_registered(void **state)
{
    const struct lb_ops *lb = *state;

    assert_ptr_equal(balancer_find(lb->name), lb);
    assert_non_null(lb->pick);
    /* Hashing balancers must be given the client; random_two must not cost one. */
    assert_int_equal(lb->needs_client, lb != &lb_random_two);
}

static void test_empty_set(void **state)
{
    const struct lb_ops *lb = *state;
    struct fixture *f = fixture_new(lb, NULL, NULL, 0);
    const unsigned char key[4] = {10, 0, 0, 1};
    struct lb_ctx ctx = {.rng = &f->rng, .key = key, .key_len = sizeof(key)};

    assert_int_equal(pick_key(f, key, sizeof(key), NULL, 0), -1);
    assert_int_equal(pick_key(f, NULL, 0, NULL, 0), -1);
    /* The ops themselves, not only lb_pick's guard. */
    assert_int_equal(lb->pick(&f->set, &ctx), -1);
    fixture_free(f);
}

static void test_single_instance(void **state)
{
    const struct lb_ops *lb = *state;
    const uint32_t weights[] = {3};
    struct fixture *f = fixture_new(lb, weights, NULL, 1);
    unsigned char key[4];

    atomic_store(&f->states[0].shards[0].active, 7);
    for (unsigned k = 0; k < 1000; k++) {
        key_of(k * 7919, key);
        assert_int_equal(pick_key(f, key, sizeof(key), NULL, 0), 0);
    }
    assert_int_equal(pick_key(f, NULL, 0, NULL, 0), 0);
    fixture_free(f);
}

static void test_weight_zero_never_picked(void **state)
{
    const struct lb_ops *lb = *state;
    const uint32_t weights[] = {2, 0, 1, 0, 3};
    struct fixture *f = fixture_new(lb, weights, NULL, 5);
    unsigned counts[5];

    count_keys(f, counts);
    assert_int_equal(counts[1], 0);
    assert_int_equal(counts[3], 0);
    assert_true(counts[0] > 0 && counts[2] > 0 && counts[4] > 0);
    fixture_free(f);

    const uint32_t drained[] = {0, 0, 0};
    f = fixture_new(lb, drained, NULL, 3);
    for (unsigned k = 0; k < 100; k++) {
        const unsigned char key[4] = {10, 0, 0, (unsigned char)k};
        assert_int_equal(pick_key(f, key, sizeof(key), NULL, 0), -1);
    }
    fixture_free(f);
}

static void test_all_tried(void **state)
{
    const struct lb_ops *lb = *state;
    const uint32_t weights[] = {1, 0, 5};
    struct fixture *f = fixture_new(lb, weights, NULL, 3);
    /* Instance 1 is drained, the others are tried: nothing left. */
    struct instance_state *tried[] = {&f->states[0], &f->states[2]};
    unsigned char key[4];

    for (unsigned k = 0; k < 100; k++) {
        key_of(k, key);
        assert_int_equal(pick_key(f, key, sizeof(key), tried, 2), -1);
        /* One left untried: that one, whatever the key. */
        assert_int_equal(pick_key(f, key, sizeof(key), tried, 1), 2);
    }
    fixture_free(f);
}

/* ---- maglev -------------------------------------------------------------------------------- */

/* Removes each instance of n in turn and counts the keys that change instance. Maglev moves the
 * removed instance's keys (1/n of them) and almost nothing else: at most 1/n + 2% may move. */
static void maglev_disruption(size_t n)
{
    uint32_t weights[MAX_INST];
    unsigned ids[MAX_INST];
    unsigned *before = malloc(KEYS * sizeof(*before));
    double worst = 0;

    assert_non_null(before);
    for (size_t i = 0; i < n; i++)
        weights[i] = 1;
    struct fixture *full = fixture_new(&lb_maglev, weights, NULL, n);
    for (unsigned k = 0; k < KEYS; k++)
        before[k] = pick_id(full, k);
    for (size_t removed = 0; removed < n; removed++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (i != removed)
                ids[m++] = full->id_num[i];
        }
        struct fixture *less = fixture_new(&lb_maglev, weights, ids, n - 1);
        unsigned moved = 0, orphaned = 0;
        for (unsigned k = 0; k < KEYS; k++) {
            const unsigned now = pick_id(less, k);
            assert_int_not_equal(now, full->id_num[removed]);
            if (before[k] == full->id_num[removed])
                orphaned++;
            if (now != before[k])
                moved++;
        }
        const double fraction = (double)moved / KEYS;
        print_message("maglev n=%zu, without instance %zu: %.4f of keys moved (%.4f were on it; "
                      "bound %.4f)\n",
                      n, removed, fraction, (double)orphaned / KEYS, 1.0 / (double)n + 0.02);
        assert_true(moved >= orphaned);
        assert_true(fraction <= 1.0 / (double)n + 0.02);
        worst = fraction > worst ? fraction : worst;
        fixture_free(less);
    }
    print_message("maglev n=%zu: worst fraction moved %.4f, ideal %.4f\n", n, worst,
                  1.0 / (double)n);
    fixture_free(full);
    free(before);
}

static void test_maglev_disruption_5(void **state)
{
    (void)state;
    maglev_disruption(5);
}

static void test_maglev_disruption_10(void **state)
{
    (void)state;
    maglev_disruption(10);
}

/* Equal weights: each of 10 instances gets KEYS / 10 keys, ±10%. */
static void test_maglev_spread_equal(void **state)
{
    (void)state;
    const uint32_t weights[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    struct fixture *f = fixture_new(&lb_maglev, weights, NULL, 10);
    unsigned counts[10];

    count_keys(f, counts);
    assert_shares("maglev equal", weights, 10, counts);
    fixture_free(f);
}

/* Weights 1,2,3: shares 1/6, 2/6, 3/6, ±10% relative. Scaling every weight (weights are
 * relative) gives the very same table. */
static void test_maglev_spread_weighted(void **state)
{
    (void)state;
    const uint32_t weights[] = {1, 2, 3};
    const uint32_t scaled[] = {1000000, 2000000, 3000000};
    struct fixture *f = fixture_new(&lb_maglev, weights, NULL, 3);
    struct fixture *g = fixture_new(&lb_maglev, scaled, NULL, 3);
    unsigned counts[3];

    count_keys(f, counts);
    assert_shares("maglev weighted", weights, 3, counts);
    for (unsigned k = 0; k < KEYS; k++)
        assert_int_equal(pick_id(f, k), pick_id(g, k));
    fixture_free(g);
    fixture_free(f);
}

/* Same ids and weights in another order, with other state pointers: every key goes to the
 * instance with the same id. The weight follows the id, so unequal weights are covered too. */
static void test_maglev_order_independent(void **state)
{
    (void)state;
    const unsigned ids_a[] = {1, 2, 3, 4, 5, 6, 7};
    const unsigned ids_b[] = {5, 2, 7, 1, 3, 6, 4};
    uint32_t w_a[7], w_b[7];

    for (size_t i = 0; i < 7; i++) {
        w_a[i] = ids_a[i] % 3 + 1;
        w_b[i] = ids_b[i] % 3 + 1;
    }
    struct fixture *a = fixture_new(&lb_maglev, w_a, ids_a, 7);
    struct fixture *b = fixture_new(&lb_maglev, w_b, ids_b, 7);
    struct fixture *again = fixture_new(&lb_maglev, w_a, ids_a, 7);
    assert_ptr_not_equal(a->inst[0].state, again->inst[0].state);
    for (unsigned k = 0; k < KEYS; k++) {
        const unsigned id = pick_id(a, k);
        assert_int_equal(pick_id(b, k), id);
        assert_int_equal(pick_id(again, k), id);
    }
    fixture_free(again);
    fixture_free(b);
    fixture_free(a);
}

/* The same key always maps to the same instance; a NULL key is the empty key. Retries skip the
 * tried instances, are deterministic too, and leave first attempts as they were. */
static void test_maglev_deterministic_and_retry(void **state)
{
    (void)state;
    const uint32_t weights[] = {1, 1, 1, 1};
    struct fixture *f = fixture_new(&lb_maglev, weights, NULL, 4);
    unsigned char key[4];
    unsigned retried_to[4] = {0};

    assert_int_equal(pick_key(f, NULL, 0, NULL, 0), pick_key(f, "", 0, NULL, 0));
    for (unsigned k = 0; k < 10000; k++) {
        key_of(k, key);
        const long first = pick_key(f, key, sizeof(key), NULL, 0);
        assert_in_range(first, 0, 3);
        assert_int_equal(pick_key(f, key, sizeof(key), NULL, 0), first);
        struct instance_state *tried[4] = {&f->states[first]};
        const long second = pick_key(f, key, sizeof(key), tried, 1);
        assert_in_range(second, 0, 3);
        assert_int_not_equal(second, first);
        assert_int_equal(pick_key(f, key, sizeof(key), tried, 1), second);
        retried_to[second]++;
        tried[1] = &f->states[second];
        const long third = pick_key(f, key, sizeof(key), tried, 2);
        assert_in_range(third, 0, 3);
        assert_true(third != first && third != second);
        for (size_t i = 0, m = 2; i < 4; i++) {
            if (i != (size_t)first && i != (size_t)second)
                tried[m++] = &f->states[i];
        }
        assert_int_equal(pick_key(f, key, sizeof(key), tried, 4), -1);
        assert_int_equal(pick_key(f, key, sizeof(key), NULL, 0), first);
    }
    /* Retries of one instance's keys spread over all the others, not onto one neighbour. */
    for (size_t i = 0; i < 4; i++)
        assert_true(retried_to[i] > 10000 / 8);
    fixture_free(f);
}

/* Weights 4e9 to 1: the light instance takes no slot (its first turn would come in round 4e9),
 * yet a retry after the heavy one failed must still reach it rather than be refused. */
static void test_maglev_retry_to_slotless_instance(void **state)
{
    (void)state;
    const uint32_t weights[] = {4000000000u, 1};
    struct fixture *f = fixture_new(&lb_maglev, weights, NULL, 2);
    struct instance_state *tried[] = {&f->states[0]};
    unsigned counts[2];

    count_keys(f, counts);
    assert_int_equal(counts[0], KEYS);
    for (unsigned k = 0; k < 100; k++) {
        const unsigned char key[4] = {10, 0, 0, (unsigned char)k};
        assert_int_equal(pick_key(f, key, sizeof(key), tried, 1), 1);
    }
    fixture_free(f);
}

/* ---- source_hash --------------------------------------------------------------------------- */

/* Same key, same instance (also after rebuilding the set); weights 1,1,2 give 1/4, 1/4, 1/2
 * of the keys, ±10% relative. */
static void test_sh_deterministic_and_weighted(void **state)
{
    (void)state;
    const uint32_t weights[] = {1, 1, 2};
    struct fixture *f = fixture_new(&lb_source_hash, weights, NULL, 3);
    struct fixture *g = fixture_new(&lb_source_hash, weights, NULL, 3);
    unsigned counts[3];

    for (unsigned k = 0; k < KEYS; k += 7) {
        const unsigned id = pick_id(f, k);
        assert_int_equal(pick_id(f, k), id);
        assert_int_equal(pick_id(g, k), id);
    }
    assert_int_equal(pick_key(f, NULL, 0, NULL, 0), pick_key(f, "", 0, NULL, 0));
    count_keys(f, counts);
    assert_shares("source_hash", weights, 3, counts);
    fixture_free(g);
    fixture_free(f);
}

/* A retry excluding the first choice never returns it, gives the same answer each time, and
 * spreads one instance's keys over the others. */
static void test_sh_retry(void **state)
{
    (void)state;
    const uint32_t weights[] = {1, 1, 1, 1};
    struct fixture *f = fixture_new(&lb_source_hash, weights, NULL, 4);
    unsigned char key[4];
    unsigned retried_to[4] = {0};

    for (unsigned k = 0; k < 10000; k++) {
        key_of(k, key);
        const long first = pick_key(f, key, sizeof(key), NULL, 0);
        assert_in_range(first, 0, 3);
        struct instance_state *tried[] = {&f->states[first]};
        const long retry = pick_key(f, key, sizeof(key), tried, 1);
        assert_in_range(retry, 0, 3);
        assert_int_not_equal(retry, first);
        assert_int_equal(pick_key(f, key, sizeof(key), tried, 1), retry);
        assert_int_equal(pick_key(f, key, sizeof(key), NULL, 0), first);
        retried_to[retry]++;
    }
    for (size_t i = 0; i < 4; i++)
        assert_true(retried_to[i] > 10000 / 8);
    fixture_free(f);
}

/* ---- random_two ---------------------------------------------------------------------------- */

#define SIM_INST     8      /* instances, equal weights */
#define SIM_ARRIVALS 100000 /* one new session per tick */
#define SIM_XM       40     /* Pareto scale: the shortest session, in ticks */
#define SIM_MAX_LIFE 100000 /* sessions are cut at this many ticks */
#define SIM_WARMUP   1000   /* ticks before the measurement starts */

/* Load imbalance over one simulation, measured after every arrival past the warm-up. */
struct sim_result {
    double mean_variance; /* time average of the variance of the active counts */
    double mean_spread;   /* time average of max active - min active */
    unsigned max_spread;  /* largest max active - min active seen */
};

/* Deterministic pseudo-random numbers for the simulation: 24 bits. */
static uint32_t lcg_next(uint32_t *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return *seed >> 8;
}

/* A session length, Pareto with shape 2 (mean 2 * SIM_XM, infinite variance): the scale over
 * the larger of two uniforms, since P(max(u1, u2) < x) = x^2. */
static unsigned sim_duration(uint32_t *seed)
{
    const uint64_t u1 = lcg_next(seed) + 1, u2 = lcg_next(seed) + 1; /* in [1, 2^24] */
    const uint64_t d = (uint64_t)SIM_XM * (1u << 24) / (u1 > u2 ? u1 : u2);
    return (unsigned)(d < SIM_MAX_LIFE ? d : SIM_MAX_LIFE);
}

/* Adds the current imbalance of f's active counts to out's sums. */
static void sim_measure(struct fixture *f, struct sim_result *out)
{
    unsigned lo = UINT32_MAX, hi = 0;
    double sum = 0, sum_sq = 0;

    for (size_t i = 0; i < SIM_INST; i++) {
        const unsigned a = atomic_load(&f->states[i].shards[0].active);
        lo = a < lo ? a : lo;
        hi = a > hi ? a : hi;
        sum += a;
        sum_sq += (double)a * a;
    }
    out->mean_variance += sum_sq / SIM_INST - (sum / SIM_INST) * (sum / SIM_INST);
    out->mean_spread += hi - lo;
    out->max_spread = hi - lo > out->max_spread ? hi - lo : out->max_spread;
}

/* Sessions arrive one per tick, go where lb picks (active + 1) and close after a heavy-tailed
 * duration (active - 1). The durations come from a fixed seed, the same for every lb. */
static struct sim_result simulate(const struct lb_ops *lb)
{
    const uint32_t weights[SIM_INST] = {1, 1, 1, 1, 1, 1, 1, 1};
    struct fixture *f = fixture_new(lb, weights, NULL, SIM_INST);
    enum { TICKS = SIM_ARRIVALS + SIM_MAX_LIFE + 1 };
    int *ending = malloc(TICKS * sizeof(*ending));       /* first session ending at tick t, or -1 */
    int *next = malloc(SIM_ARRIVALS * sizeof(*next));    /* next session ending at the same tick */
    long *where = malloc(SIM_ARRIVALS * sizeof(*where)); /* instance of session s */
    struct sim_result r = {0};
    uint32_t seed = 20240601;

    assert_true(ending != NULL && next != NULL && where != NULL);
    memset(ending, 0xff, TICKS * sizeof(*ending));
    for (int t = 0; t < SIM_ARRIVALS; t++) {
        for (int s = ending[t]; s >= 0; s = next[s])
            atomic_fetch_sub(&f->states[where[s]].shards[0].active, 1);
        where[t] = pick_key(f, NULL, 0, NULL, 0);
        assert_in_range(where[t], 0, SIM_INST - 1);
        atomic_fetch_add(&f->states[where[t]].shards[0].active, 1);
        const int end = t + (int)sim_duration(&seed);
        next[t] = ending[end];
        ending[end] = t;
        if (t >= SIM_WARMUP)
            sim_measure(f, &r);
    }
    r.mean_variance /= SIM_ARRIVALS - SIM_WARMUP;
    r.mean_spread /= SIM_ARRIVALS - SIM_WARMUP;
    /* Sessions still open would trip instance_state_release's check in a real set. */
    for (size_t i = 0; i < SIM_INST; i++)
        atomic_store(&f->states[i].shards[0].active, 0);
    free(where);
    free(next);
    free(ending);
    fixture_free(f);
    return r;
}

/* Round robin sends every instance the same number of sessions whatever their lengths, so the
 * long ones pile up; two random choices look at the counts and keep them closer. */
static void test_r2_beats_round_robin(void **state)
{
    (void)state;
    const struct sim_result rr = simulate(&lb_round_robin);
    const struct sim_result r2 = simulate(&lb_random_two);
    const struct sim_result lc = simulate(&lb_least_connections);

    print_message("round_robin:       variance %.2f, mean spread %.2f, max spread %u\n",
                  rr.mean_variance, rr.mean_spread, rr.max_spread);
    print_message("random_two:        variance %.2f, mean spread %.2f, max spread %u\n",
                  r2.mean_variance, r2.mean_spread, r2.max_spread);
    print_message("least_connections: variance %.2f, mean spread %.2f, max spread %u "
                  "(reference)\n",
                  lc.mean_variance, lc.mean_spread, lc.max_spread);
    assert_true(r2.mean_variance < rr.mean_variance);
    assert_true(r2.mean_spread < rr.mean_spread);
}

/* Uniform choices, the emptier of the two kept: with instance 0 far busier than the others it
 * is chosen only when both draws fall on it, which they never do (the draws are distinct). */
static void test_r2_avoids_busiest(void **state)
{
    (void)state;
    const uint32_t weights[] = {1, 1, 1, 1};
    struct fixture *f = fixture_new(&lb_random_two, weights, NULL, 4);
    unsigned counts[4] = {0};

    atomic_store(&f->states[0].shards[0].active, 100);
    for (int k = 0; k < 10000; k++)
        counts[pick_key(f, NULL, 0, NULL, 0)]++;
    assert_int_equal(counts[0], 0);
    /* The three idle ones tie and share: 3,333 each, ±300 (over 6 standard deviations). */
    for (size_t i = 1; i < 4; i++)
        assert_in_range(counts[i], 3033, 3633);
    atomic_store(&f->states[0].shards[0].active, 0);
    fixture_free(f);
}

/* active / weight decides: 4 sessions on weight 4 beat 2 on weight 1. With two instances both
 * are always the two choices, so the answer is exact. Retries exclude the tried one. */
static void test_r2_uses_weight_and_retries(void **state)
{
    (void)state;
    const uint32_t weights[] = {4, 1, 1};
    struct fixture *f = fixture_new(&lb_random_two, weights, NULL, 3);
    struct instance_state *tried[] = {&f->states[2]};

    atomic_store(&f->states[0].shards[0].active, 4);
    atomic_store(&f->states[1].shards[0].active, 2);
    atomic_store(&f->states[2].shards[0].active, 0);
    for (int k = 0; k < 1000; k++)
        assert_int_equal(pick_key(f, NULL, 0, tried, 1), 0);
    for (int k = 0; k < 1000; k++)
        assert_int_not_equal(pick_key(f, NULL, 0, NULL, 0), 1);
    for (size_t i = 0; i < 3; i++)
        atomic_store(&f->states[i].shards[0].active, 0);
    fixture_free(f);
}

#define LB_TEST(f, lb)                                                                             \
    {                                                                                              \
        .name = #f "(" #lb ")", .test_func = f, .initial_state = (void *)&lb                       \
    }
#define LB_TESTS(f) LB_TEST(f, lb_random_two), LB_TEST(f, lb_maglev), LB_TEST(f, lb_source_hash)

int main(void)
{
    const struct CMUnitTest tests[] = {
        LB_TESTS(test_registered),
        LB_TESTS(test_empty_set),
        LB_TESTS(test_single_instance),
        LB_TESTS(test_weight_zero_never_picked),
        LB_TESTS(test_all_tried),
        cmocka_unit_test(test_maglev_disruption_5),
        cmocka_unit_test(test_maglev_disruption_10),
        cmocka_unit_test(test_maglev_spread_equal),
        cmocka_unit_test(test_maglev_spread_weighted),
        cmocka_unit_test(test_maglev_order_independent),
        cmocka_unit_test(test_maglev_deterministic_and_retry),
        cmocka_unit_test(test_maglev_retry_to_slotless_instance),
        cmocka_unit_test(test_sh_deterministic_and_weighted),
        cmocka_unit_test(test_sh_retry),
        cmocka_unit_test(test_r2_beats_round_robin),
        cmocka_unit_test(test_r2_avoids_busiest),
        cmocka_unit_test(test_r2_uses_weight_and_retries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
