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
    atomic_store(&one->active, 7);
    atomic_store(&two->active, 1);
    snapshot_read_unlock();

    struct owner_member b[] = {member("127.0.0.1:3", 1), member("127.0.0.1:1", 2)};
    assert_int_equal(owner_set_members(o, b, 2), 1);
    snapshot_read_lock();
    const struct instance_set *set = owner_current(o);
    assert_ptr_equal(set->inst[1].state, one);
    assert_int_equal(atomic_load(&set->inst[1].state->active), 7);
    assert_int_equal(atomic_load(&set->inst[0].state->active), 0);
    assert_int_equal(set->inst[1].weight, 2 * OWNER_WEIGHT_SCALE);
    /* least-connections now prefers the new, empty instance */
    assert_int_equal(pick_once(set), 0);
    snapshot_read_unlock();
    snapshot_reader_unregister();
    assert_string_equal(two->id, "127.0.0.1:2"); /* still valid: we hold it */
    atomic_store(&two->active, 0);
    atomic_store(&one->active, 0);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_service_has_no_instances),
        cmocka_unit_test(test_publish_copies_instances),
        cmocka_unit_test(test_unchanged_input_publishes_nothing),
        cmocka_unit_test(test_state_survives_swap),
        cmocka_unit_test(test_swaps_under_concurrent_readers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
