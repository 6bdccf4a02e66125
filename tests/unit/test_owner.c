/* The service owner and its snapshots: contents, state kept by id across swaps, unchanged inputs
 * publishing nothing, and swaps under concurrent readers (run under ASan, a reader touching a
 * freed set fails the test). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "balancer.h"
#include "clock.h"
#include "owner.h"
#include "snapshot.h"

static struct owner_member member(const char *text, uint32_t weight)
{
    struct owner_member m = {.weight = weight};
    assert_null(net_addr_parse(text, &m.addr));
    return m;
}

/* A one-off pick from the current set, as a worker would do it. */
static long pick_once(const struct instance_set *set)
{
    struct lb_scratch sc;
    uint64_t rng = 1;
    struct lb_ctx ctx = {.rng = &rng};

    lb_scratch_init(&sc, 0);
    long i = lb_pick(set, &sc, &ctx);
    lb_scratch_free(&sc);
    return i;
}

static void test_empty_service_has_no_instances(void **state)
{
    (void)state;
    struct owner *o = owner_create("api", &lb_round_robin, NULL, NULL);
    snapshot_reader_register();
    snapshot_read_lock();
    const struct instance_set *set = owner_current(o);
    assert_non_null(set);
    assert_int_equal(set->n, 0);
    assert_true(pick_once(set) < 0);
    snapshot_read_unlock();
    snapshot_reader_unregister();
    assert_string_equal(owner_name(o), "api");
    assert_int_equal(owner_publishes(o), 0);
    owner_destroy(o);
}

static void test_publish_copies_instances(void **state)
{
    (void)state;
    struct owner *o = owner_create("api", &lb_weighted, NULL, NULL);
    struct owner_member m[] = {member("127.0.0.1:9001", 3), member("[::1]:9002", 1)};
    assert_int_equal(owner_set_members(o, m, 2), 1);
    snapshot_reader_register();
    snapshot_read_lock();
    const struct instance_set *set = owner_current(o);
    assert_int_equal(set->n, 2);
    assert_ptr_equal(set->lb, &lb_weighted);
    assert_int_equal(set->total_weight, 4 * OWNER_WEIGHT_SCALE);
    assert_string_equal(set->inst[0].addr.text, "127.0.0.1:9001");
    assert_string_equal(set->inst[1].addr.text, "[::1]:9002");
    assert_string_equal(set->inst[0].state->id, "127.0.0.1:9001");
    assert_int_equal(set->inst[0].weight, 3 * OWNER_WEIGHT_SCALE);
    assert_int_equal(pick_once(set), 0); /* weight 3 first */
    snapshot_read_unlock();
    snapshot_reader_unregister();
    owner_destroy(o);
}

/* The same input again, from any source, publishes nothing; a changed weight, address, order or
 * balancer does. */
static void test_unchanged_input_publishes_nothing(void **state)
{
    (void)state;
    struct owner *o = owner_create("api", &lb_round_robin, NULL, NULL);
    struct owner_member a[] = {member("127.0.0.1:1", 1), member("127.0.0.1:2", 1)};
    assert_int_equal(owner_set_members(o, a, 2), 1);
    assert_int_equal(owner_set_members(o, a, 2), 0);
    assert_int_equal(owner_set_balancer(o, &lb_round_robin), 0);
    assert_int_equal(owner_publishes(o), 1);
    a[1].weight = 2;
    assert_int_equal(owner_set_members(o, a, 2), 1);
    struct owner_member swapped[] = {a[1], a[0]};
    assert_int_equal(owner_set_members(o, swapped, 2), 1);
    assert_int_equal(owner_set_balancer(o, &lb_least_connections), 1);
    /* an id is the address unless the source names one: same address, new id, new instance */
    swapped[0].id = "node-a/api-1";
    assert_int_equal(owner_set_members(o, swapped, 2), 1);
    assert_int_equal(owner_publishes(o), 5);
    /* an empty list is a real answer: published once */
    assert_int_equal(owner_set_members(o, NULL, 0), 1);
    assert_int_equal(owner_set_members(o, NULL, 0), 0);
    owner_destroy(o);
}

/* Active counts live in the owner's state table: a swap that keeps an instance keeps its count,
 * and a session's reference keeps a removed instance's state alive. */
static void test_state_survives_swap(void **state)
{
    (void)state;
    struct owner *o = owner_create("api", &lb_least_connections, NULL, NULL);
    struct owner_member a[] = {member("127.0.0.1:1", 1), member("127.0.0.1:2", 1)};
    assert_int_equal(owner_set_members(o, a, 2), 1);
    snapshot_reader_register();
    snapshot_read_lock();
    struct instance_state *one = owner_current(o)->inst[0].state;
    struct instance_state *two = owner_current(o)->inst[1].state;
    instance_state_hold(two); /* as a session would */
    atomic_store(&one->shards[0].active, 7);
    atomic_store(&two->shards[0].active, 1);
    snapshot_read_unlock();

    struct owner_member b[] = {member("127.0.0.1:3", 1), member("127.0.0.1:1", 2)};
    assert_int_equal(owner_set_members(o, b, 2), 1);
    snapshot_read_lock();
    const struct instance_set *set = owner_current(o);
    assert_ptr_equal(set->inst[1].state, one);
    assert_int_equal(atomic_load(&set->inst[1].state->shards[0].active), 7);
    assert_int_equal(atomic_load(&set->inst[0].state->shards[0].active), 0);
    assert_int_equal(set->inst[1].weight, 2 * OWNER_WEIGHT_SCALE);
    /* least-connections now prefers the new, empty instance */
    assert_int_equal(pick_once(set), 0);
    snapshot_read_unlock();
    snapshot_reader_unregister();
    assert_string_equal(two->id, "127.0.0.1:2"); /* still valid: we hold it */
    atomic_store(&two->shards[0].active, 0);
    atomic_store(&one->shards[0].active, 0);
    instance_state_release(two);
    owner_destroy(o);
}

struct reader_arg {
    struct owner *o;
    atomic_int *stop;
    unsigned long picks;
    unsigned long bad;
};

/* Picks as fast as it can while the owner swaps; every pick must land on a sane instance. */
static void *reader(void *p)
{
    struct reader_arg *arg = p;
    struct lb_scratch sc;
    uint64_t rng = 7;

    lb_scratch_init(&sc, 0);
    snapshot_reader_register();
    while (!atomic_load(arg->stop)) {
        struct lb_ctx ctx = {.rng = &rng};
        snapshot_read_lock();
        const struct instance_set *set = owner_current(arg->o);
        if (set->n > 0) {
            long i = lb_pick(set, &sc, &ctx);
            if (i < 0 || (size_t)i >= set->n || strncmp(set->inst[i].addr.text, "127.0.0.1:", 10))
                arg->bad++;
            arg->picks++;
        }
        snapshot_read_unlock();
    }
    snapshot_reader_unregister();
    lb_scratch_free(&sc);
    return NULL;
}

static void test_swaps_under_concurrent_readers(void **state)
{
    (void)state;
    struct owner *o = owner_create("api", &lb_weighted, NULL, NULL);
    atomic_int stop = 0;
    struct reader_arg arg = {.o = o, .stop = &stop};
    pthread_t th;
    pthread_create(&th, NULL, reader, &arg);
    struct owner_member m[8];
    char text[8][32];
    for (int round = 0; round < 2000; round++) {
        size_t n = (size_t)(round % 8) + 1;
        for (size_t i = 0; i < n; i++) {
            snprintf(text[i], sizeof(text[i]), "127.0.0.1:%zu", 1000 + (size_t)round % 13 + i);
            m[i] = member(text[i], (uint32_t)(i + 1));
        }
        assert_true(owner_set_balancer(o, round % 2 ? &lb_round_robin : &lb_weighted) >= 0);
        assert_true(owner_set_members(o, m, n) >= 0);
    }
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    assert_int_equal(arg.bad, 0);
    print_message("reader made %lu picks during %llu swaps\n", arg.picks,
                  (unsigned long long)owner_publishes(o));
    owner_destroy(o);
}

/* The weights of the current set, read as a worker would. */
static void current_weights(struct owner *o, uint32_t *w, size_t n)
{
    snapshot_read_lock();
    const struct instance_set *set = owner_current(o);
    assert_int_equal(set->n, n);
    for (size_t i = 0; i < n; i++)
        w[i] = set->inst[i].weight;
    snapshot_read_unlock();
}

static struct instance_state *state_of(struct owner *o, size_t i)
{
    snapshot_read_lock();
    struct instance_state *st = owner_current(o)->inst[i].state;
    snapshot_read_unlock();
    return st;
}

/* Passive health: eject_after failures in a row eject (weight 0) for eject_time, doubling with
 * each ejection in a row up to eject_max_time; a good connect since the return resets the
 * doubling; max_ejection_percent caps how many are out (50 % of 4 = 2). */
static void test_ejection_policy(void **state)
{
    (void)state;
    const struct owner_policy p = {.eject_after = 3,
                                   .eject_time_ms = 1000,
                                   .eject_max_time_ms = 3000,
                                   .max_ejection_percent = 50};
    struct owner *o = owner_create("api", &lb_round_robin, &p, NULL);
    struct owner_member m[] = {member("127.0.0.1:1", 1), member("127.0.0.1:2", 1),
                               member("127.0.0.1:3", 1), member("127.0.0.1:4", 1)};
    uint32_t w[4];
    uint64_t t = clock_ms();

    snapshot_reader_register();
    assert_int_equal(owner_set_members(o, m, 4), 1);
    atomic_store(&state_of(o, 0)->fails_in_row, 2);
    assert_int_equal(owner_tick(o, t), UINT64_MAX); /* 2 < eject_after: nothing */
    for (size_t i = 0; i < 4; i++)
        atomic_store(&state_of(o, i)->fails_in_row, 3);
    assert_int_equal(owner_tick(o, t), t + 1000);
    current_weights(o, w, 4);
    assert_int_equal(w[0] + w[1] + w[2] + w[3], 2 * OWNER_WEIGHT_SCALE); /* only 2 of 4 out */
    assert_int_equal(w[0], 0);
    assert_int_equal(w[1], 0);
    /* the ejection ends: back with its failures forgotten; the next two may go now */
    owner_tick(o, t + 1000);
    current_weights(o, w, 4);
    assert_int_equal(w[0], OWNER_WEIGHT_SCALE);
    assert_int_equal(atomic_load(&state_of(o, 0)->fails_in_row), 0);
    assert_int_equal(w[2] + w[3], 0);
    /* failing again without a good connect: twice as long, then capped */
    atomic_store(&state_of(o, 0)->fails_in_row, 3);
    owner_tick(o, t + 2000); /* 2 and 3 return, 0 goes for 2 s */
    assert_int_equal(state_of(o, 0)->ejected_until, t + 2000 + 2000);
    atomic_store(&state_of(o, 0)->fails_in_row, 3);
    owner_tick(o, t + 4000);
    atomic_store(&state_of(o, 0)->fails_in_row, 3);
    owner_tick(o, t + 4000);
    assert_int_equal(state_of(o, 0)->ejected_until, t + 4000 + 3000); /* 4 s capped at 3 s */
    /* a good connect since it came back resets the doubling */
    owner_tick(o, t + 7000);
    atomic_fetch_add(&state_of(o, 0)->shards[0].connects, 1);
    atomic_store(&state_of(o, 0)->fails_in_row, 3);
    owner_tick(o, t + 7000);
    assert_int_equal(state_of(o, 0)->ejected_until, t + 7000 + 1000);
    assert_int_equal(atomic_load(&state_of(o, 0)->ejections), 4);
    snapshot_reader_unregister();
    owner_destroy(o);
}

/* Active checks: a down verdict takes the instance out (weight 0), up brings it back; only a
 * change of eligibility publishes. */
static void test_health_verdicts(void **state)
{
    (void)state;
    struct owner *o = owner_create("api", &lb_round_robin, NULL, NULL);
    struct owner_member m[] = {member("127.0.0.1:1", 1), member("127.0.0.1:2", 1)};
    uint32_t w[2];

    snapshot_reader_register();
    assert_int_equal(owner_set_members(o, m, 2), 1);
    struct owner_verdict up = {.id = "127.0.0.1:2", .health = INSTANCE_HEALTH_UP};
    assert_int_equal(owner_set_health(o, &up, 1), 0); /* unknown counts as up: no change */
    struct owner_verdict down = {.id = "127.0.0.1:2", .health = INSTANCE_HEALTH_DOWN};
    assert_int_equal(owner_set_health(o, &down, 1), 1);
    current_weights(o, w, 2);
    assert_int_equal(w[1], 0);
    assert_int_equal(owner_set_health(o, &down, 1), 0);
    struct owner_verdict unknown_id = {.id = "10.9.9.9:9", .health = INSTANCE_HEALTH_DOWN};
    assert_int_equal(owner_set_health(o, &unknown_id, 1), 0);
    assert_int_equal(owner_set_health(o, &up, 1), 1);
    current_weights(o, w, 2);
    assert_int_equal(w[1], OWNER_WEIGHT_SCALE);
    snapshot_reader_unregister();
    owner_destroy(o);
}

/* Slow start: a newcomer to a service that had instances, and one returning to health, ramp
 * 10 % -> 100 % of their weight over slow_start (here 1,000 ms; weight 2 = 200 full). The
 * first set does not ramp. */
static void test_slow_start_ramp(void **state)
{
    (void)state;
    const struct owner_policy p = {.slow_start_ms = 1000};
    struct owner *o = owner_create("api", &lb_weighted, &p, NULL);
    struct owner_member m[] = {member("127.0.0.1:1", 2), member("127.0.0.1:2", 2)};
    uint32_t w[2];

    snapshot_reader_register();
    assert_int_equal(owner_set_members(o, m, 1), 1);
    current_weights(o, w, 1);
    assert_int_equal(w[0], 200);
    assert_int_equal(owner_set_members(o, m, 2), 1);
    uint64_t t0 = state_of(o, 1)->ramp_since;
    assert_true(t0 != 0);
    current_weights(o, w, 2);
    assert_int_equal(w[0], 200);
    assert_true(w[1] >= 20 && w[1] <= 40); /* 10 %, plus what a few ms of ramp add */
    uint64_t next = owner_tick(o, t0 + 500);
    assert_true(next > t0 + 500 && next <= t0 + 600); /* the next step is due soon */
    current_weights(o, w, 2);
    assert_int_equal(w[1], 2 * (10 + 90 * 500 / 1000)); /* 55 % */
    owner_tick(o, t0 + 1000);
    current_weights(o, w, 2);
    assert_int_equal(w[1], 200);
    assert_int_equal(state_of(o, 1)->ramp_since, 0);
    snapshot_reader_unregister();
    owner_destroy(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_service_has_no_instances),
        cmocka_unit_test(test_publish_copies_instances),
        cmocka_unit_test(test_unchanged_input_publishes_nothing),
        cmocka_unit_test(test_state_survives_swap),
        cmocka_unit_test(test_swaps_under_concurrent_readers),
        cmocka_unit_test(test_ejection_policy),
        cmocka_unit_test(test_health_verdicts),
        cmocka_unit_test(test_slow_start_ramp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
