/* Timer wheel: nothing fires early, everything due fires, far deadlines survive revolutions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "wheel.h"

static struct wheel w;

static size_t expire_all(uint64_t now, struct wheel_entry **out, size_t max)
{
    size_t n = 0;
    struct wheel_entry *e;
    while ((e = wheel_expire_next(&w, now)) != NULL && n < max)
        out[n++] = e;
    return n;
}

static void test_fires_at_due_never_before(void **state)
{
    (void)state;
    struct wheel_entry a = {0}, b = {0};
    struct wheel_entry *got[4];
    wheel_init(&w, 10, 1000);
    wheel_add(&w, &a, 1055);
    wheel_add(&w, &b, 1100);
    assert_int_equal(expire_all(1054, got, 4), 0);
    assert_int_equal(expire_all(1060, got, 4), 1);
    assert_ptr_equal(got[0], &a);
    assert_false(wheel_scheduled(&a));
    assert_int_equal(expire_all(1099, got, 4), 0);
    assert_int_equal(expire_all(1100, got, 4), 1);
    assert_ptr_equal(got[0], &b);
    assert_int_equal(w.n, 0);
}

static void test_remove_and_reschedule(void **state)
{
    (void)state;
    struct wheel_entry a = {0}, b = {0};
    struct wheel_entry *got[4];
    wheel_init(&w, 5, 0);
    wheel_add(&w, &a, 50);
    wheel_add(&w, &b, 50);
    wheel_remove(&w, &a);
    wheel_remove(&w, &a);   /* harmless twice */
    wheel_add(&w, &b, 500); /* moved later */
    assert_int_equal(expire_all(100, got, 4), 0);
    assert_int_equal(expire_all(500, got, 4), 1);
    assert_ptr_equal(got[0], &b);
}

/* A deadline many revolutions away, and a long stall of the clock, still fire exactly once. */
static void test_far_deadlines_and_stalls(void **state)
{
    (void)state;
    struct wheel_entry far = {0}, near = {0};
    struct wheel_entry *got[4];
    wheel_init(&w, 10, 0);
    wheel_add(&w, &far, 10 * WHEEL_SLOTS * 3 + 7);
    wheel_add(&w, &near, 25);
    for (uint64_t t = 0; t < 10 * WHEEL_SLOTS * 3; t += 10) {
        /* near (due 25) fires at the first look at or after 25, far never in this loop */
        assert_int_equal(expire_all(t, got, 4), t == 30 ? 1 : 0);
    }
    assert_true(wheel_scheduled(&far));
    assert_int_equal(expire_all(10ULL * WHEEL_SLOTS * 100, got, 4), 1); /* after a stall */
    assert_ptr_equal(got[0], &far);
}

static void test_past_deadline_fires_next_tick(void **state)
{
    (void)state;
    struct wheel_entry a = {0};
    struct wheel_entry *got[2];
    wheel_init(&w, 10, 1000);
    assert_int_equal(expire_all(2000, got, 2), 0);
    wheel_add(&w, &a, 1500); /* already past */
    assert_int_equal(expire_all(2010, got, 2), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fires_at_due_never_before),
        cmocka_unit_test(test_remove_and_reschedule),
        cmocka_unit_test(test_far_deadlines_and_stalls),
        cmocka_unit_test(test_past_deadline_fires_next_tick),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
