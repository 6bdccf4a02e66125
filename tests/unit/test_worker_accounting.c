/* The per-connection accounting that touches no line another worker writes: the
 * open-connection cap taken in chunks per host, and a worker's instance counts and references
 * (instance_use.h). The cap holds across hosts and is reached by each of them alone; what is
 * open is exact at rest; a state a worker's session held outlives its sets until the worker
 * sweeps (AddressSanitizer sees any use after free). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "balancer.h"
#include "owner.h"
#include "session.h"

static void take_n(struct conn_budget *b, unsigned host, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        assert_true(conn_budget_take(b, host));
}

/* 100 slots, 2 worker hosts (1 and 2): together never more than 100; either one alone gets all
 * 100 even while the other keeps spare slots from an earlier burst. */
static void test_cap_holds_across_hosts(void **state)
{
    (void)state;
    struct conn_budget b;
    assert_int_equal(conn_budget_init(&b, 100, 3), 0);

    take_n(&b, 1, 60);
    take_n(&b, 2, 40);
    assert_int_equal(conn_budget_open(&b), 100);
    assert_false(conn_budget_take(&b, 1));
    assert_false(conn_budget_take(&b, 2));
    for (int i = 0; i < 60; i++)
        conn_budget_give(&b, 1);
    assert_int_equal(conn_budget_open(&b), 40);
    for (int i = 0; i < 40; i++)
        conn_budget_give(&b, 2);
    assert_int_equal(conn_budget_open(&b), 0);

    take_n(&b, 2, 100); /* host 1's spare slots are taken too */
    assert_false(conn_budget_take(&b, 2));
    assert_false(conn_budget_take(&b, 1));
    for (int i = 0; i < 100; i++)
        conn_budget_give(&b, 2);
    assert_int_equal(conn_budget_open(&b), 0);
    conn_budget_destroy(&b);
}

/* A forced slot (a retiring listener's queue) goes past the cap and comes back. */
static void test_force_beyond_cap(void **state)
{
    (void)state;
    struct conn_budget b;
    assert_int_equal(conn_budget_init(&b, 2, 3), 0);
    take_n(&b, 1, 2);
    conn_budget_force(&b);
    assert_int_equal(conn_budget_open(&b), 3);
    assert_false(conn_budget_take(&b, 2));
    for (int i = 0; i < 3; i++)
        conn_budget_give(&b, 1);
    assert_int_equal(conn_budget_open(&b), 0);
    take_n(&b, 2, 2);
    assert_false(conn_budget_take(&b, 2));
    conn_budget_give(&b, 2);
    conn_budget_give(&b, 2);
    conn_budget_destroy(&b);
}

static struct owner_member member(const char *addr)
{
    struct owner_member m = {.weight = 1};
    assert_null(net_addr_parse(addr, &m.addr));
    return m;
}

/* Two workers' sessions on one instance: active and connects sum over the workers; the state
 * outlives the set that listed it while a session holds it, and the worker's one reference
 * goes at its sweep once no session holds it. */
static void test_worker_shards_and_references(void **state)
{
    (void)state;
    struct owner *o = owner_create("api", &lb_least_connections, NULL, NULL);
    struct owner_member a = member("127.0.0.1:1"), b = member("127.0.0.1:2");
    struct instance_user w1, w2;
    instance_user_init(&w1, 1);
    instance_user_init(&w2, 2);

    assert_int_equal(owner_set_members(o, &a, 1), 1);
    snapshot_reader_register();
    snapshot_read_lock();
    struct instance_state *st = owner_current(o)->inst[0].state;
    instance_use_begin(st, &w1);
    instance_use_begin(st, &w1);
    instance_use_begin(st, &w2);
    snapshot_read_unlock();
    assert_int_equal(instance_state_active(st), 3);
    instance_use_connected(st, &w1);
    instance_use_connected(st, &w2);
    assert_int_equal(instance_state_totals(st).connects, 2);
    instance_use_bytes(st, &w2, 10, 20);
    assert_int_equal(instance_state_totals(st).bytes_up, 10);
    assert_int_equal(instance_state_totals(st).bytes_down, 20);

    assert_int_equal(owner_set_members(o, &b, 1), 1); /* st leaves the set */
    instance_use_end(st, &w1);
    instance_user_sweep(&w1); /* one of w1's sessions still holds it */
    assert_int_equal(instance_state_active(st), 2);
    instance_use_end(st, &w1);
    instance_use_inactive(st, &w2); /* a failed connect: w2's session keeps its hold */
    instance_user_sweep(&w1);       /* w1's reference goes; w2's keeps st alive */
    assert_null(w1.held);
    assert_int_equal(instance_state_active(st), 0);
    assert_string_equal(st->id, "127.0.0.1:1");
    instance_use_unhold(st, &w2);
    instance_user_finish(&w2); /* the last reference: st is freed here */
    assert_null(w2.held);
    snapshot_reader_unregister();
    owner_destroy(o);
}

/* least_connections balances each worker's own sessions: worker 1's three sessions on one
 * instance send its next pick to the other, while worker 2, with its own session on that
 * other one, picks the first. */
static void test_least_connections_per_worker_view(void **state)
{
    (void)state;
    struct owner *o = owner_create("api", &lb_least_connections, NULL, NULL);
    struct owner_member m[] = {member("127.0.0.1:1"), member("127.0.0.1:2")};
    struct instance_user w1, w2;
    struct lb_scratch sc1, sc2;
    uint64_t rng = 7;
    instance_user_init(&w1, 1);
    instance_user_init(&w2, 2);
    lb_scratch_init(&sc1, 0);
    lb_scratch_init(&sc2, 1);

    assert_int_equal(owner_set_members(o, m, 2), 1);
    snapshot_reader_register();
    snapshot_read_lock();
    const struct instance_set *set = owner_current(o);
    for (int i = 0; i < 3; i++)
        instance_use_begin(set->inst[0].state, &w1);
    instance_use_begin(set->inst[1].state, &w2);
    struct lb_ctx c1 = {.rng = &rng, .shard = 1}, c2 = {.rng = &rng, .shard = 2};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(lb_pick(set, &sc1, &c1), 1);
        assert_int_equal(lb_pick(set, &sc2, &c2), 0);
    }
    assert_int_equal(instance_state_active(set->inst[0].state), 3); /* the sum stays exact */
    for (int i = 0; i < 3; i++)
        instance_use_end(set->inst[0].state, &w1);
    instance_use_end(set->inst[1].state, &w2);
    snapshot_read_unlock();
    instance_user_finish(&w1);
    instance_user_finish(&w2);
    snapshot_reader_unregister();
    lb_scratch_free(&sc1);
    lb_scratch_free(&sc2);
    owner_destroy(o);
}

int main(void)
{
    instance_shards_set_workers(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_holds_across_hosts),
        cmocka_unit_test(test_force_beyond_cap),
        cmocka_unit_test(test_worker_shards_and_references),
        cmocka_unit_test(test_least_connections_per_worker_view),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
