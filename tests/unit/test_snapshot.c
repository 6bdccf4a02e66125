/* Snapshot publishing: contents, state kept by id across swaps, and swaps under concurrent
 * readers (run under ASan, a reader touching a freed set fails the test). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "balancer.h"
#include "snapshot.h"

static struct snapshot_spec spec(const char *text, uint32_t weight)
{
    struct snapshot_spec s = {.weight = weight};
    assert_int_equal(config_parse_addr(text, &s.addr, NULL), 0);
    return s;
}

static void test_empty_service_has_no_instances(void **state)
{
    (void)state;
    struct snapshot_service *svc = snapshot_service_create("api", 2);
    snapshot_reader_register();
    snapshot_read_lock();
    const struct instance_set *set = snapshot_current(svc);
    assert_non_null(set);
    assert_int_equal(set->n, 0);
    snapshot_read_unlock();
    snapshot_reader_unregister();
    assert_string_equal(snapshot_service_name(svc), "api");
    snapshot_service_destroy(svc);
}

static void test_publish_copies_instances(void **state)
{
    (void)state;
    struct snapshot_service *svc = snapshot_service_create("api", 2);
    struct snapshot_spec specs[] = {spec("127.0.0.1:9001", 3), spec("[::1]:9002", 1)};
    assert_int_equal(snapshot_publish(svc, &lb_weighted, specs, 2), 0);
    snapshot_reader_register();
    snapshot_read_lock();
    const struct instance_set *set = snapshot_current(svc);
    assert_int_equal(set->n, 2);
    assert_ptr_equal(set->lb, &lb_weighted);
    assert_int_equal(set->total_weight, 4);
    assert_string_equal(set->inst[0].addr.text, "127.0.0.1:9001");
    assert_string_equal(set->inst[1].addr.text, "[::1]:9002");
    assert_string_equal(set->inst[0].state->id, "127.0.0.1:9001");
    assert_int_equal(set->inst[0].weight, 3);
    assert_int_equal((uintptr_t)snapshot_scratch(set, 1) % 8, 0);
    assert_true(set->lb->pick(set, snapshot_scratch(set, 0), NULL) == 0); /* weight 3 first */
    snapshot_read_unlock();
    snapshot_reader_unregister();
    snapshot_service_destroy(svc);
}

/* Active counts live in the state table: a swap that keeps an instance keeps its count, and a
 * session's reference keeps a removed instance's state alive. */
static void test_state_survives_swap(void **state)
{
    (void)state;
    struct snapshot_service *svc = snapshot_service_create("api", 1);
    struct snapshot_spec a[] = {spec("127.0.0.1:1", 1), spec("127.0.0.1:2", 1)};
    assert_int_equal(snapshot_publish(svc, &lb_least_connections, a, 2), 0);
    snapshot_reader_register();
    snapshot_read_lock();
    struct instance_state *one = snapshot_current(svc)->inst[0].state;
    struct instance_state *two = snapshot_current(svc)->inst[1].state;
    instance_state_hold(two); /* as a session would */
    atomic_store(&one->active, 7);
    atomic_store(&two->active, 1);
    snapshot_read_unlock();

    struct snapshot_spec b[] = {spec("127.0.0.1:3", 1), spec("127.0.0.1:1", 2)};
    assert_int_equal(snapshot_publish(svc, &lb_least_connections, b, 2), 0);
    snapshot_read_lock();
    const struct instance_set *set = snapshot_current(svc);
    assert_ptr_equal(set->inst[1].state, one);
    assert_int_equal(atomic_load(&set->inst[1].state->active), 7);
    assert_int_equal(atomic_load(&set->inst[0].state->active), 0);
    assert_int_equal(set->inst[1].weight, 2);
    /* least-connections now prefers the new, empty instance */
    assert_int_equal(set->lb->pick(set, snapshot_scratch(set, 0), NULL), 0);
    snapshot_read_unlock();
    snapshot_reader_unregister();
    assert_string_equal(two->id, "127.0.0.1:2"); /* still valid: we hold it */
    instance_state_release(two);
    snapshot_service_destroy(svc);
}

struct reader_arg {
    struct snapshot_service *svc;
    atomic_int *stop;
    unsigned long picks;
    unsigned long bad;
};

/* Picks as fast as it can while the publisher swaps; every pick must land on a sane instance. */
static void *reader(void *p)
{
    struct reader_arg *arg = p;
    snapshot_reader_register();
    while (!atomic_load(arg->stop)) {
        snapshot_read_lock();
        const struct instance_set *set = snapshot_current(arg->svc);
        if (set->n > 0) {
            long i = set->lb->pick(set, snapshot_scratch(set, 0), NULL);
            if (i < 0 || (size_t)i >= set->n || strncmp(set->inst[i].addr.text, "127.0.0.1:", 10))
                arg->bad++;
            arg->picks++;
        }
        snapshot_read_unlock();
    }
    snapshot_reader_unregister();
    return NULL;
}

static void test_swaps_under_concurrent_readers(void **state)
{
    (void)state;
    struct snapshot_service *svc = snapshot_service_create("api", 1);
    atomic_int stop = 0;
    struct reader_arg arg = {.svc = svc, .stop = &stop};
    pthread_t th;
    pthread_create(&th, NULL, reader, &arg);
    struct snapshot_spec specs[8];
    char text[8][32];
    for (int round = 0; round < 2000; round++) {
        size_t n = (size_t)(round % 8) + 1;
        for (size_t i = 0; i < n; i++) {
            snprintf(text[i], sizeof(text[i]), "127.0.0.1:%zu", 1000 + (size_t)round % 13 + i);
            specs[i] = spec(text[i], (uint32_t)(i + 1));
        }
        assert_int_equal(
            snapshot_publish(svc, round % 2 ? &lb_round_robin : &lb_weighted, specs, n), 0);
    }
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    assert_int_equal(arg.bad, 0);
    print_message("reader made %lu picks during 2000 swaps\n", arg.picks);
    snapshot_service_destroy(svc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_service_has_no_instances),
        cmocka_unit_test(test_publish_copies_instances),
        cmocka_unit_test(test_state_survives_swap),
        cmocka_unit_test(test_swaps_under_concurrent_readers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
