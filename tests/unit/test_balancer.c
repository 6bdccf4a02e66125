/* Unit tests for balancer.c and the lb_*.c algorithms, on instance sets built as plain tables. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"

#define MAX_INST    8     /* instances a fixture can hold */
#define MAX_WORKERS 4     /* callers a fixture can hold */
#define PICKS       10000 /* picks per distribution test */

/* Instances a pick must skip: the states a session tried already. */
struct exclude {
    struct instance_state *const *states; /* tried instances */
    size_t n;                             /* entries in states */
};

/* A hand-built instance set with its own states, and one balancer scratch per caller. */
struct fixture {
    struct instance_set set;                /* what the balancer sees */
    struct instance inst[MAX_INST];         /* set.inst points here (NULL when n == 0) */
    struct instance_state states[MAX_INST]; /* inst[i].state == &states[i] */
    struct instance_shard shards[MAX_INST]; /* states[i]'s one shard (shard 0) */
    struct lb_scratch sc[MAX_WORKERS];      /* caller w's scratch */
    uint64_t rng;                           /* the callers' random source (seeded: repeatable) */
};

static struct fixture *fixture_new(const struct lb_ops *lb, const uint32_t *weights, size_t n,
                                   unsigned n_workers)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_true(n <= MAX_INST && n_workers <= MAX_WORKERS);
    for (size_t i = 0; i < n; i++) {
        struct instance_state *st = &f->states[i];
        snprintf(st->id, sizeof(st->id), "10.0.0.%zu:80", i + 1);
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
    f->rng = 0x9E3779B97F4A7C15ULL;
    for (unsigned w = 0; w < n_workers; w++) {
        lb_scratch_init(&f->sc[w], w);
        /* uneven garbage, so that a pick relying on something init did not set goes wrong
         * (larger areas are allocated: AddressSanitizer fills and guards those) */
        memset(f->sc[w].inline_area, 0x5b + (int)w, sizeof(f->sc[w].inline_area));
    }
    return f;
}

static void fixture_free(struct fixture *f)
{
    for (unsigned w = 0; w < MAX_WORKERS; w++)
        lb_scratch_free(&f->sc[w]);
    free(f);
}

/* Caller w's scratch area, once its first pick prepared it. */
static void *scratch_of(struct fixture *f, unsigned worker)
{
    return f->sc[worker].area;
}

static struct lb_ctx ctx_of(struct fixture *f, const struct exclude *ex)
{
    return (struct lb_ctx){
        .rng = &f->rng, .tried = ex != NULL ? ex->states : NULL, .n_tried = ex != NULL ? ex->n : 0};
}

static long pick(struct fixture *f, unsigned worker, const struct exclude *ex)
{
    struct lb_ctx ctx = ctx_of(f, ex);
    const long i = lb_pick(&f->set, &f->sc[worker], &ctx);
    return i >= 0 ? i : -1;
}

static void set_active(struct fixture *f, size_t i, unsigned active)
{
    atomic_store(&f->states[i].shards[0].active, active);
}

static unsigned get_active(struct fixture *f, size_t i)
{
    return atomic_load(&f->states[i].shards[0].active);
}

/* Picks `picks` times on worker 0 and counts the choices; every pick must succeed. */
static void count_picks(struct fixture *f, const struct exclude *ex, int picks, unsigned *counts)
{
    memset(counts, 0, f->set.n * sizeof(*counts));
    for (int k = 0; k < picks; k++) {
        const long i = pick(f, 0, ex);
        assert_in_range(i, 0, (long)f->set.n - 1);
        counts[i]++;
    }
}

/* Deterministic pseudo-random numbers for the session simulations. */
static uint32_t lcg_next(uint32_t *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return *seed >> 8;
}

/* ---- balancer.c ---------------------------------------------------------------------------- */

static void test_balancer_registry(void **state)
{
    char names[256];

    (void)state;
    assert_ptr_equal(balancer_find("round_robin"), &lb_round_robin);
    assert_ptr_equal(balancer_find("least_connections"), &lb_least_connections);
    assert_ptr_equal(balancer_find("weighted"), &lb_weighted);
    assert_null(balancer_find("Round_Robin"));
    assert_null(balancer_find(""));
    assert_null(balancer_find(NULL));
    /* The names are what the config file says, and the registry lists each once. */
    assert_string_equal(lb_round_robin.name, "round_robin");
    assert_string_equal(lb_least_connections.name, "least_connections");
    assert_string_equal(lb_weighted.name, "weighted");
    balancer_names(names, sizeof(names));
    assert_string_equal(
        names, "round_robin, least_connections, weighted, random_two, maglev, source_hash");
    assert_ptr_equal(balancer_find("random_two"), &lb_random_two);
    assert_ptr_equal(balancer_find("maglev"), &lb_maglev);
    assert_ptr_equal(balancer_find("source_hash"), &lb_source_hash);
}

static void test_balancer_eligible(void **state)
{
    (void)state;
    const uint32_t weights[] = {1, 0, 1};
    struct fixture *f = fixture_new(&lb_round_robin, weights, 3, 1);

    /* Nothing tried: only weight decides. */
    const struct exclude none = {.states = NULL, .n = 0};
    struct lb_ctx ctx = ctx_of(f, &none);
    assert_true(balancer_eligible(&f->set, 0, &ctx));
    assert_false(balancer_eligible(&f->set, 1, &ctx));
    assert_true(balancer_eligible(&f->set, 2, &ctx));

    struct instance_state *tried[] = {&f->states[2], &f->states[1]};
    const struct exclude ex = {.states = tried, .n = 2};
    ctx = ctx_of(f, &ex);
    assert_true(balancer_eligible(&f->set, 0, &ctx));
    assert_false(balancer_eligible(&f->set, 1, &ctx));
    assert_false(balancer_eligible(&f->set, 2, &ctx));

    /* Exclusion is by state identity: another state with the same id does not exclude. */
    struct instance_state *twin = calloc(1, sizeof(*twin));
    assert_non_null(twin);
    memcpy(twin->id, f->states[0].id, sizeof(twin->id));
    struct instance_state *tried_twin[] = {twin};
    const struct exclude ex_twin = {.states = tried_twin, .n = 1};
    ctx = ctx_of(f, &ex_twin);
    assert_true(balancer_eligible(&f->set, 0, &ctx));
    free(twin);

    fixture_free(f);
}

/* ---- every balancer (the state is the ops table) ------------------------------------------- */

static void test_ops_complete(void **state)
{
    const struct lb_ops *lb = *state;
    assert_non_null(lb->name);
    assert_non_null(lb->scratch_size);
    assert_non_null(lb->scratch_init);
    assert_non_null(lb->pick);
}

static void test_scratch_size_aligned(void **state)
{
    const struct lb_ops *lb = *state;
    const size_t sizes[] = {0, 1, 2, 3, 5, 7, 8, 1000};

    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        const size_t bytes = lb->scratch_size(sizes[k]);
        assert_true(bytes >= 8);
        assert_int_equal(bytes % 8, 0);
    }
}

static void test_empty_set(void **state)
{
    const struct lb_ops *lb = *state;
    struct fixture *f = fixture_new(lb, NULL, 0, 2);
    const struct exclude none = {.states = NULL, .n = 0};

    for (int k = 0; k < 10; k++) {
        assert_int_equal(pick(f, 0, NULL), -1);
        assert_int_equal(pick(f, 1, &none), -1);
    }
    fixture_free(f);
}

static void test_single_instance(void **state)
{
    const struct lb_ops *lb = *state;
    const uint32_t weights[] = {3};
    struct fixture *f = fixture_new(lb, weights, 1, 3);

    set_active(f, 0, 7);
    for (int k = 0; k < 1000; k++)
        assert_int_equal(pick(f, (unsigned)k % 3, NULL), 0);

    struct instance_state *tried[] = {&f->states[0]};
    const struct exclude ex = {.states = tried, .n = 1};
    assert_int_equal(pick(f, 0, &ex), -1);
    /* ...and the exclusion did not break the next pick. */
    assert_int_equal(pick(f, 0, NULL), 0);
    fixture_free(f);

    const uint32_t drained[] = {0};
    f = fixture_new(lb, drained, 1, 1);
    assert_int_equal(pick(f, 0, NULL), -1);
    fixture_free(f);
}

/* Equal weights, idle instances: every algorithm must share exactly evenly. Expected share
 * PICKS / n each; tolerance ±1 (10,000 is not a multiple of 3). */
static void test_equal_weights_share_evenly(void **state)
{
    const struct lb_ops *lb = *state;
    const uint32_t weights[] = {2, 2, 2};
    struct fixture *f = fixture_new(lb, weights, 3, 1);
    unsigned counts[3];

    count_picks(f, NULL, PICKS, counts);
    for (size_t i = 0; i < 3; i++)
        assert_in_range(counts[i], PICKS / 3 - 1, PICKS / 3 + 1);
    assert_int_equal(counts[0] + counts[1] + counts[2], PICKS);
    fixture_free(f);
}

static void test_weight_zero_never_picked(void **state)
{
    const struct lb_ops *lb = *state;
    const uint32_t weights[] = {2, 0, 1, 0, 3};
    struct fixture *f = fixture_new(lb, weights, 5, 1);
    unsigned counts[5];

    /* Drained instances look the emptiest to least_connections; they must still be skipped.
     * The others are equally loaded for their weight (10 per unit), so all of them get picks. */
    set_active(f, 0, 20);
    set_active(f, 2, 10);
    set_active(f, 4, 30);
    count_picks(f, NULL, PICKS, counts);
    assert_int_equal(counts[1], 0);
    assert_int_equal(counts[3], 0);
    assert_true(counts[0] > 0);
    assert_true(counts[2] > 0);
    assert_true(counts[4] > 0);
    fixture_free(f);

    const uint32_t all_drained[] = {0, 0, 0};
    f = fixture_new(lb, all_drained, 3, 1);
    for (int k = 0; k < 10; k++)
        assert_int_equal(pick(f, 0, NULL), -1);
    fixture_free(f);
}

/* Tried instances are skipped. A retry goes to a random untried instance (uniform, or by weight
 * for weighted): 1,000 retries between two equal instances give 500 each, and with this seed
 * every count stays within ±80 (5 standard deviations). */
static void test_exclusion_skips_tried(void **state)
{
    const struct lb_ops *lb = *state;
    const uint32_t weights[] = {1, 1, 1, 1};
    struct fixture *f = fixture_new(lb, weights, 4, 1);
    unsigned counts[4];

    struct instance_state *tried[] = {&f->states[2], &f->states[0]};
    const struct exclude ex = {.states = tried, .n = 2};
    count_picks(f, &ex, 1000, counts);
    assert_int_equal(counts[0], 0);
    assert_int_equal(counts[2], 0);
    assert_in_range(counts[1], 420, 580);
    assert_in_range(counts[3], 420, 580);
    assert_int_equal(counts[1] + counts[3], 1000);

    /* Even the emptiest instance is skipped once tried. */
    set_active(f, 0, 0);
    set_active(f, 1, 9);
    set_active(f, 2, 9);
    set_active(f, 3, 9);
    struct instance_state *tried_empty[] = {&f->states[0]};
    const struct exclude ex_empty = {.states = tried_empty, .n = 1};
    for (int k = 0; k < 100; k++)
        assert_int_not_equal(pick(f, 0, &ex_empty), 0);
    fixture_free(f);
}

/* A retry leaves the rotation of first attempts as it was: first picks interleaved with retries
 * follow exactly the sequence of first picks alone. */
static void test_retry_keeps_rotation(void **state)
{
    const struct lb_ops *lb = *state;
    const uint32_t weights[] = {3, 1, 2};
    enum { N = 60 };
    long alone[N];

    struct fixture *f = fixture_new(lb, weights, 3, 1);
    for (int k = 0; k < N; k++)
        alone[k] = pick(f, 0, NULL);
    fixture_free(f);

    f = fixture_new(lb, weights, 3, 1);
    for (int k = 0; k < N; k++) {
        const long first = pick(f, 0, NULL);
        assert_int_equal(first, alone[k]);
        struct instance_state *tried[] = {&f->states[first]};
        const struct exclude ex = {.states = tried, .n = 1};
        const long retry = pick(f, 0, &ex);
        assert_in_range(retry, 0, 2);
        assert_int_not_equal(retry, first);
    }
    fixture_free(f);
}

/* Behind a dead instance the retries spread over the live ones instead of all landing on the
 * next one in the rotation: with a, dead, b and 300 sessions each live instance takes at least
 * a third of the 100 retries. */
static void test_retry_spreads(void **state)
{
    const struct lb_ops *lb = *state;
    const uint32_t weights[] = {1, 1, 1};
    struct fixture *f = fixture_new(lb, weights, 3, 1);
    unsigned retries[3] = {0}, dead_first = 0;

    for (int k = 0; k < 300; k++) {
        if (pick(f, 0, NULL) != 1)
            continue;
        dead_first++;
        struct instance_state *tried[] = {&f->states[1]};
        const struct exclude ex = {.states = tried, .n = 1};
        retries[pick(f, 0, &ex)]++;
    }
    assert_int_equal(retries[1], 0);
    assert_true(dead_first > 0);
    assert_true(retries[0] >= dead_first / 3);
    assert_true(retries[2] >= dead_first / 3);
    fixture_free(f);
}

static void test_all_excluded(void **state)
{
    const struct lb_ops *lb = *state;
    const uint32_t weights[] = {1, 0, 5};
    struct fixture *f = fixture_new(lb, weights, 3, 1);

    /* Instance 1 is drained, the others are tried: nothing left. */
    struct instance_state *tried[] = {&f->states[0], &f->states[2]};
    const struct exclude ex = {.states = tried, .n = 2};
    for (int k = 0; k < 10; k++)
        assert_int_equal(pick(f, 0, &ex), -1);
    fixture_free(f);
}

/* Worker w's scratch is written by worker w's picks only, and interleaving two workers gives
 * each the sequence it would have got alone. */
static void test_workers_independent(void **state)
{
    const struct lb_ops *lb = *state;
    const uint32_t weights[] = {3, 2, 1};
    enum { N = 30 };
    long alone[2][N];
    long mixed[2][N];

    for (unsigned w = 0; w < 2; w++) {
        struct fixture *f = fixture_new(lb, weights, 3, 2);
        for (int k = 0; k < N; k++)
            alone[w][k] = pick(f, w, NULL);
        fixture_free(f);
    }

    struct fixture *f = fixture_new(lb, weights, 3, 2);
    const size_t stride = lb->scratch_size(3);
    unsigned char *before = malloc(stride);
    assert_non_null(before);
    (void)pick(f, 1, NULL); /* prepares caller 1's scratch; its sequence starts over below */
    f->sc[1].version = 0;
    (void)pick(f, 0, NULL);
    f->sc[0].version = 0;
    memcpy(before, scratch_of(f, 1), stride);
    for (int k = 0; k < 5; k++)
        mixed[0][k] = pick(f, 0, NULL);
    assert_memory_equal(scratch_of(f, 1), before, stride);
    for (int k = 0; k < N; k++) {
        mixed[1][k] = pick(f, 1, NULL);
        if (k + 5 < N)
            mixed[0][k + 5] = pick(f, 0, NULL);
    }
    for (int k = 0; k < N; k++) {
        assert_int_equal(mixed[0][k], alone[0][k]);
        assert_int_equal(mixed[1][k], alone[1][k]);
    }
    free(before);
    fixture_free(f);
}

/* Workers do not all send their first session to the same instance. */
static void test_workers_start_apart(void **state)
{
    const struct lb_ops *lb = *state;
    const uint32_t weights[] = {1, 1, 1, 1};
    struct fixture *f = fixture_new(lb, weights, 4, 4);
    int seen[4] = {0};

    for (unsigned w = 0; w < 4; w++) {
        const long i = pick(f, w, NULL);
        assert_in_range(i, 0, 3);
        seen[i]++;
    }
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(seen[i], 1);
    fixture_free(f);
}

/* ---- round_robin --------------------------------------------------------------------------- */

/* Weights other than 0 are ignored: strict rotation, exactly PICKS / 4 each (tolerance ±1). */
static void test_rr_rotates_ignoring_weights(void **state)
{
    (void)state;
    const uint32_t weights[] = {1, 5, 2, 3};
    struct fixture *f = fixture_new(&lb_round_robin, weights, 4, 1);
    unsigned counts[4] = {0};
    long prev = pick(f, 0, NULL);

    counts[prev]++;
    for (int k = 1; k < PICKS; k++) {
        const long i = pick(f, 0, NULL);
        assert_int_equal(i, (prev + 1) % 4);
        counts[i]++;
        prev = i;
    }
    for (size_t i = 0; i < 4; i++)
        assert_in_range(counts[i], PICKS / 4 - 1, PICKS / 4 + 1);
    fixture_free(f);
}

/* A skipped instance does not break the rotation order of the others. */
static void test_rr_rotation_skips_drained(void **state)
{
    (void)state;
    const uint32_t weights[] = {1, 0, 1, 1};
    struct fixture *f = fixture_new(&lb_round_robin, weights, 4, 1);
    const long expected[] = {0, 2, 3, 0, 2, 3, 0};

    for (size_t k = 0; k < sizeof(expected) / sizeof(expected[0]); k++)
        assert_int_equal(pick(f, 0, NULL), expected[k]);
    fixture_free(f);
}

/* ---- least_connections --------------------------------------------------------------------- */

static void test_lc_prefers_emptiest(void **state)
{
    (void)state;
    const uint32_t weights[] = {1, 1, 1};
    struct fixture *f = fixture_new(&lb_least_connections, weights, 3, 3);

    set_active(f, 0, 5);
    set_active(f, 1, 0);
    set_active(f, 2, 3);
    for (int k = 0; k < 100; k++)
        assert_int_equal(pick(f, (unsigned)k % 3, NULL), 1);
    /* pick() does not count the session; the caller does. */
    assert_int_equal(get_active(f, 0), 5);
    assert_int_equal(get_active(f, 1), 0);
    assert_int_equal(get_active(f, 2), 3);

    /* Excluding the emptiest falls back to the next emptiest. */
    struct instance_state *tried[] = {&f->states[1]};
    const struct exclude ex = {.states = tried, .n = 1};
    assert_int_equal(pick(f, 0, &ex), 2);
    fixture_free(f);
}

/* active / weight decides, not active alone. */
static void test_lc_uses_weight(void **state)
{
    (void)state;
    const uint32_t w_4_1[] = {4, 1};
    struct fixture *f = fixture_new(&lb_least_connections, w_4_1, 2, 2);
    set_active(f, 0, 4); /* 4/4 = 1 */
    set_active(f, 1, 2); /* 2/1 = 2 */
    for (unsigned w = 0; w < 2; w++)
        assert_int_equal(pick(f, w, NULL), 0);
    fixture_free(f);

    /* Same case with the order reversed, so that "always the first" fails. */
    const uint32_t w_1_4[] = {1, 4};
    f = fixture_new(&lb_least_connections, w_1_4, 2, 2);
    set_active(f, 0, 2);
    set_active(f, 1, 4);
    for (unsigned w = 0; w < 2; w++)
        assert_int_equal(pick(f, w, NULL), 1);
    fixture_free(f);

    /* Equal ratios (1/1 and 2/2) are a tie, and ties take turns. */
    const uint32_t w_1_2[] = {1, 2};
    f = fixture_new(&lb_least_connections, w_1_2, 2, 1);
    set_active(f, 0, 1);
    set_active(f, 1, 2);
    unsigned counts[2];
    count_picks(f, NULL, 100, counts);
    assert_int_equal(counts[0], 50);
    assert_int_equal(counts[1], 50);
    fixture_free(f);
}

/* Ratios compared in 64 bits: 5000 / 1 against 4,000,000,000 / 1,000,000 = 4000. The product
 * 5000 * 1,000,000 does not fit in 32 bits; truncated, it would make instance 0 look emptier. */
static void test_lc_large_counts(void **state)
{
    (void)state;
    const uint32_t weights[] = {1, 1000000};
    struct fixture *f = fixture_new(&lb_least_connections, weights, 2, 1);

    set_active(f, 0, 5000);
    set_active(f, 1, 4000000000u);
    assert_int_equal(pick(f, 0, NULL), 1);
    set_active(f, 0, 4300); /* 4300 > 4200, both products overflow 32 bits */
    set_active(f, 1, 4200000000u);
    assert_int_equal(pick(f, 0, NULL), 1);
    set_active(f, 0, 4100); /* 4100 < 4200 */
    assert_int_equal(pick(f, 0, NULL), 0);
    fixture_free(f);
}

/* Sessions open on the picked instance and close at random, two workers sharing the counts.
 * With equal weights the counts never differ by more than one after a close + open. */
static void test_lc_sessions_stay_balanced(void **state)
{
    (void)state;
    const uint32_t weights[] = {1, 1, 1};
    struct fixture *f = fixture_new(&lb_least_connections, weights, 3, 2);
    enum { OPEN = 30 };
    long open[OPEN];
    uint32_t seed = 12345;
    unsigned opened[3] = {0};

    for (int s = 0; s < OPEN; s++) {
        open[s] = pick(f, (unsigned)s % 2, NULL);
        assert_in_range(open[s], 0, 2);
        atomic_fetch_add(&f->states[open[s]].shards[0].active, 1);
    }
    for (int step = 0; step < PICKS; step++) {
        const int s = (int)(lcg_next(&seed) % OPEN);
        atomic_fetch_sub(&f->states[open[s]].shards[0].active, 1);
        open[s] = pick(f, (unsigned)step % 2, NULL);
        assert_in_range(open[s], 0, 2);
        atomic_fetch_add(&f->states[open[s]].shards[0].active, 1);
        opened[open[s]]++;

        unsigned lo = UINT_MAX, hi = 0, sum = 0;
        for (size_t i = 0; i < 3; i++) {
            const unsigned a = get_active(f, i);
            lo = a < lo ? a : lo;
            hi = a > hi ? a : hi;
            sum += a;
        }
        assert_int_equal(sum, OPEN);
        assert_true(hi - lo <= 1);
    }
    /* Every instance took a real share of the new sessions. */
    for (size_t i = 0; i < 3; i++)
        assert_true(opened[i] > PICKS / 6);
    fixture_free(f);
}

/* Weights 1,2,1 and 40 sessions: exactly 10,20,10 (the only split where no instance could give
 * a session to another and lower its ratio). Closing instance 1's sessions sends all the next
 * 20 there. */
static void test_lc_sessions_follow_weights(void **state)
{
    (void)state;
    const uint32_t weights[] = {1, 2, 1};
    struct fixture *f = fixture_new(&lb_least_connections, weights, 3, 1);

    for (int s = 0; s < 40; s++) {
        const long i = pick(f, 0, NULL);
        assert_in_range(i, 0, 2);
        atomic_fetch_add(&f->states[i].shards[0].active, 1);
    }
    assert_int_equal(get_active(f, 0), 10);
    assert_int_equal(get_active(f, 1), 20);
    assert_int_equal(get_active(f, 2), 10);

    set_active(f, 1, 0);
    for (int s = 0; s < 20; s++) {
        const long i = pick(f, 0, NULL);
        assert_int_equal(i, 1);
        atomic_fetch_add(&f->states[i].shards[0].active, 1);
    }
    fixture_free(f);
}

/* ---- weighted ------------------------------------------------------------------------------ */

/* nginx's documented sequence for weights 5,1,1: a a b a c a a, repeating. Over a multiple of the
 * total weight the shares are exact (tolerance 0). */
static void test_wrr_nginx_sequence(void **state)
{
    (void)state;
    const uint32_t weights[] = {5, 1, 1};
    struct fixture *f = fixture_new(&lb_weighted, weights, 3, 1);
    const long expected[7] = {0, 0, 1, 0, 2, 0, 0};
    enum { ROUNDS = PICKS / 7 };
    unsigned counts[3] = {0};

    for (int r = 0; r < ROUNDS; r++) {
        for (int k = 0; k < 7; k++) {
            const long i = pick(f, 0, NULL);
            assert_int_equal(i, expected[k]);
            counts[i]++;
        }
    }
    assert_int_equal(counts[0], 5 * ROUNDS);
    assert_int_equal(counts[1], ROUNDS);
    assert_int_equal(counts[2], ROUNDS);
    fixture_free(f);
}

/* Weights 3,2,0,5 (total 10): 10,000 picks give exactly 3000, 2000, 0, 5000, and every run of
 * 10 consecutive picks (aligned to the cycle) already has the exact 3:2:5 split. */
static void test_wrr_proportional_and_smooth(void **state)
{
    (void)state;
    const uint32_t weights[] = {3, 2, 0, 5};
    struct fixture *f = fixture_new(&lb_weighted, weights, 4, 1);
    unsigned total[4] = {0};

    for (int r = 0; r < PICKS / 10; r++) {
        unsigned window[4];
        count_picks(f, NULL, 10, window);
        for (size_t i = 0; i < 4; i++) {
            assert_int_equal(window[i], weights[i]);
            total[i] += window[i];
        }
    }
    assert_int_equal(total[0], 3000);
    assert_int_equal(total[1], 2000);
    assert_int_equal(total[2], 0);
    assert_int_equal(total[3], 5000);
    fixture_free(f);
}

/* A retry excludes the tried instance and picks among the others by weight (1:1 here: 500 each
 * of 1,000, within ±80 with this seed), without touching the current weights: the first picks
 * that follow give nginx's shares exactly, 5000, 1000, 1000 of 7,000. */
static void test_wrr_exclusion(void **state)
{
    (void)state;
    const uint32_t weights[] = {5, 1, 1};
    struct fixture *f = fixture_new(&lb_weighted, weights, 3, 1);
    unsigned counts[3];

    struct instance_state *tried[] = {&f->states[0]};
    const struct exclude ex = {.states = tried, .n = 1};
    count_picks(f, &ex, 1000, counts);
    assert_int_equal(counts[0], 0);
    assert_in_range(counts[1], 420, 580);
    assert_in_range(counts[2], 420, 580);

    count_picks(f, NULL, 7000, counts);
    assert_int_equal(counts[0], 5000);
    assert_int_equal(counts[1], 1000);
    assert_int_equal(counts[2], 1000);
    fixture_free(f);
}

/* Worker w starts w rounds into the same sequence, so workers' first picks differ while each
 * still follows nginx's order. */
static void test_wrr_workers_phase_shifted(void **state)
{
    (void)state;
    const uint32_t weights[] = {5, 1, 1};
    struct fixture *f = fixture_new(&lb_weighted, weights, 3, 2);
    long seq[2][15];

    for (int k = 0; k < 15; k++) {
        seq[0][k] = pick(f, 0, NULL);
        seq[1][k] = pick(f, 1, NULL);
    }
    for (int k = 0; k < 14; k++)
        assert_int_equal(seq[1][k], seq[0][k + 1]);
    fixture_free(f);
}

#define LB_TEST(f, lb)                                                                             \
    {                                                                                              \
        .name = #f "(" #lb ")", .test_func = f, .initial_state = (void *)&lb                       \
    }
#define LB_TESTS(f)                                                                                \
    LB_TEST(f, lb_round_robin), LB_TEST(f, lb_least_connections), LB_TEST(f, lb_weighted)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_balancer_registry),
        cmocka_unit_test(test_balancer_eligible),
        LB_TESTS(test_ops_complete),
        LB_TESTS(test_scratch_size_aligned),
        LB_TESTS(test_empty_set),
        LB_TESTS(test_single_instance),
        LB_TESTS(test_equal_weights_share_evenly),
        LB_TESTS(test_weight_zero_never_picked),
        LB_TESTS(test_exclusion_skips_tried),
        LB_TESTS(test_retry_keeps_rotation),
        LB_TESTS(test_retry_spreads),
        LB_TESTS(test_all_excluded),
        LB_TESTS(test_workers_independent),
        LB_TESTS(test_workers_start_apart),
        cmocka_unit_test(test_rr_rotates_ignoring_weights),
        cmocka_unit_test(test_rr_rotation_skips_drained),
        cmocka_unit_test(test_lc_prefers_emptiest),
        cmocka_unit_test(test_lc_uses_weight),
        cmocka_unit_test(test_lc_large_counts),
        cmocka_unit_test(test_lc_sessions_stay_balanced),
        cmocka_unit_test(test_lc_sessions_follow_weights),
        cmocka_unit_test(test_wrr_nginx_sequence),
        cmocka_unit_test(test_wrr_proportional_and_smooth),
        cmocka_unit_test(test_wrr_exclusion),
        cmocka_unit_test(test_wrr_workers_phase_shifted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
