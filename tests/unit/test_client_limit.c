/* client_limit: the token bucket with an injected clock, open counts and their release, which
 * entries may be evicted, a full table, IPv6 prefixes and ::ffff: mapping, two threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "acl.h"
#include "admit.h"
#include "client_limit.h"

#define S 1000000000ULL /* one second in ns */

static const uint64_t seed[2] = {0x0123456789abcdefULL, 0xfedcba9876543210ULL};

/* An IPv4 or IPv6 address text as a sockaddr. */
static struct sockaddr_storage addr(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
    } else {
        assert_int_equal(inet_pton(AF_INET6, text, &a6->sin6_addr), 1);
        a6->sin6_family = AF_INET6;
    }
    return ss;
}

/* 10.x.y.z for i */
static struct sockaddr_storage nth(uint32_t i)
{
    char text[32];
    snprintf(text, sizeof(text), "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    return addr(text);
}

static enum client_verdict admit(struct client_limit *t, const struct client_limits *lim,
                                 const char *client, uint64_t now, uint32_t *slot)
{
    struct sockaddr_storage ss = addr(client);
    return client_limit_admit(t, lim, (const struct sockaddr *)&ss, now, slot);
}

static uint32_t open_of(struct client_limit *t, const char *client)
{
    struct sockaddr_storage ss = addr(client);
    return client_limit_open(t, (const struct sockaddr *)&ss);
}

static void test_bucket_math(void **state)
{
    (void)state;
    struct client_limit *t = client_limit_create(1024, 64, seed);
    struct client_limits lim = {.rate = 10, .burst = 3}; /* one token per 100 ms */
    uint32_t slot;
    uint64_t now = 5 * S;

    assert_non_null(t);
    for (int i = 0; i < 3; i++)
        assert_int_equal(admit(t, &lim, "192.0.2.1", now, &slot), CLIENT_PASS);
    assert_int_equal(slot, CLIENT_LIMIT_NONE); /* no cap: nothing to release */
    assert_int_equal(admit(t, &lim, "192.0.2.1", now, &slot), CLIENT_OVER_RATE);
    /* another client has its own bucket */
    assert_int_equal(admit(t, &lim, "192.0.2.2", now, &slot), CLIENT_PASS);
    /* 99 ms on: still nothing; 100 ms: one token, and only one */
    assert_int_equal(admit(t, &lim, "192.0.2.1", now + S / 10 - 1000000, &slot), CLIENT_OVER_RATE);
    assert_int_equal(admit(t, &lim, "192.0.2.1", now + S / 10, &slot), CLIENT_PASS);
    assert_int_equal(admit(t, &lim, "192.0.2.1", now + S / 10, &slot), CLIENT_OVER_RATE);
    /* a long pause refills to the burst, not beyond */
    now += 60 * S;
    for (int i = 0; i < 3; i++)
        assert_int_equal(admit(t, &lim, "192.0.2.1", now, &slot), CLIENT_PASS);
    assert_int_equal(admit(t, &lim, "192.0.2.1", now, &slot), CLIENT_OVER_RATE);
    /* a refusal takes no token: 250 ms later exactly two more (at 100 and 200 ms) */
    for (int i = 0; i < 10; i++)
        (void)admit(t, &lim, "192.0.2.1", now + S / 20, &slot);
    assert_int_equal(admit(t, &lim, "192.0.2.1", now + S / 4, &slot), CLIENT_PASS);
    assert_int_equal(admit(t, &lim, "192.0.2.1", now + S / 4, &slot), CLIENT_PASS);
    assert_int_equal(admit(t, &lim, "192.0.2.1", now + S / 4, &slot), CLIENT_OVER_RATE);
    /* the rate may change under the table (a reload): burst 1 at 1/s */
    struct client_limits slow = {.rate = 1, .burst = 1};
    assert_int_equal(admit(t, &slow, "192.0.2.9", now, &slot), CLIENT_PASS);
    assert_int_equal(admit(t, &slow, "192.0.2.9", now + S / 2, &slot), CLIENT_OVER_RATE);
    assert_int_equal(admit(t, &slow, "192.0.2.9", now + S, &slot), CLIENT_PASS);
    client_limit_drop(t);
}

static void test_connections_and_release(void **state)
{
    (void)state;
    struct client_limit *t = client_limit_create(1024, 64, seed);
    struct client_limits lim = {.max_conns = 2};
    uint32_t a, b, c;

    assert_int_equal(admit(t, &lim, "198.51.100.7", 0, &a), CLIENT_PASS);
    assert_int_equal(admit(t, &lim, "198.51.100.7", 0, &b), CLIENT_PASS);
    assert_int_not_equal(a, CLIENT_LIMIT_NONE);
    assert_int_equal(a, b); /* one entry per client */
    assert_int_equal(open_of(t, "198.51.100.7"), 2);
    assert_int_equal(admit(t, &lim, "198.51.100.7", 0, &c), CLIENT_OVER_CONNS);
    assert_int_equal(c, CLIENT_LIMIT_NONE);
    assert_int_equal(open_of(t, "198.51.100.7"), 2); /* a refusal counts nothing */
    assert_int_equal(admit(t, &lim, "198.51.100.8", 0, &c), CLIENT_PASS);
    client_limit_release(t, a);
    assert_int_equal(open_of(t, "198.51.100.7"), 1);
    assert_int_equal(admit(t, &lim, "198.51.100.7", 0, &a), CLIENT_PASS);
    client_limit_release(t, a);
    client_limit_release(t, b);
    client_limit_release(t, c);
    client_limit_release(t, CLIENT_LIMIT_NONE);
    assert_int_equal(open_of(t, "198.51.100.7"), 0);
    assert_int_equal(open_of(t, "198.51.100.8"), 0);
    assert_int_equal(open_of(t, "198.51.100.99"), 0); /* never seen */

    /* at its cap a client spends no token: cap 1, rate 1/s, burst 2 */
    struct client_limits both = {.max_conns = 1, .rate = 1, .burst = 2};
    assert_int_equal(admit(t, &both, "203.0.113.1", 0, &a), CLIENT_PASS);       /* token 1 */
    assert_int_equal(admit(t, &both, "203.0.113.1", 0, &b), CLIENT_OVER_CONNS); /* none spent */
    client_limit_release(t, a);
    assert_int_equal(admit(t, &both, "203.0.113.1", 0, &a), CLIENT_PASS); /* token 2 */
    client_limit_release(t, a);
    assert_int_equal(admit(t, &both, "203.0.113.1", 0, &a), CLIENT_OVER_RATE);
    client_limit_drop(t);
}

/* More clients than entries, each keeping a connection open: the first ones take every entry,
 * the rest are admitted untracked, no entry with a connection open is evicted. Once they close,
 * new clients evict idle entries. */
static void test_full_table_and_eviction(void **state)
{
    (void)state;
    struct client_limit *t = client_limit_create(CLIENT_LIMIT_SIZE_MIN, 64, seed);
    struct client_limits lim = {.max_conns = 1};
    struct client_limit_stats st;
    uint32_t slots[1000], tracked = 0;

    for (uint32_t i = 0; i < 1000; i++) {
        struct sockaddr_storage ss = nth(i);
        assert_int_equal(client_limit_admit(t, &lim, (struct sockaddr *)&ss, 0, &slots[i]),
                         CLIENT_PASS);
        tracked += slots[i] != CLIENT_LIMIT_NONE;
    }
    client_limit_stats(t, &st);
    assert_int_equal(st.capacity, CLIENT_LIMIT_SIZE_MIN);
    assert_int_equal(tracked, CLIENT_LIMIT_SIZE_MIN);
    assert_int_equal(st.entries, CLIENT_LIMIT_SIZE_MIN);
    assert_int_equal(st.evictions, 0);
    assert_int_equal(st.table_full, 1000 - CLIENT_LIMIT_SIZE_MIN);
    /* every tracked client still has its connection and its cap */
    for (uint32_t i = 0; i < 1000; i++) {
        struct sockaddr_storage ss = nth(i);
        uint32_t again;
        if (slots[i] == CLIENT_LIMIT_NONE)
            continue;
        assert_int_equal(client_limit_open(t, (struct sockaddr *)&ss), 1);
        assert_int_equal(client_limit_admit(t, &lim, (struct sockaddr *)&ss, 0, &again),
                         CLIENT_OVER_CONNS);
    }
    for (uint32_t i = 0; i < 1000; i++)
        client_limit_release(t, slots[i]);
    /* all idle now: new clients take their entries, none goes untracked */
    for (uint32_t i = 1000; i < 1200; i++) {
        struct sockaddr_storage ss = nth(i);
        uint32_t slot;
        assert_int_equal(client_limit_admit(t, &lim, (struct sockaddr *)&ss, 0, &slot),
                         CLIENT_PASS);
        assert_int_not_equal(slot, CLIENT_LIMIT_NONE);
        client_limit_release(t, slot);
    }
    client_limit_stats(t, &st);
    assert_int_equal(st.entries, CLIENT_LIMIT_SIZE_MIN);
    assert_int_equal(st.evictions, 200);
    assert_int_equal(st.table_full, 1000 - CLIENT_LIMIT_SIZE_MIN);
    client_limit_drop(t);
}

/* An entry owed tokens is not idle: evicting it would hand its client a fresh burst. */
static void test_partial_bucket_is_kept(void **state)
{
    (void)state;
    struct client_limit *t = client_limit_create(CLIENT_LIMIT_SIZE_MIN, 64, seed);
    struct client_limits lim = {.rate = 1, .burst = 1};
    struct client_limit_stats st;
    uint32_t slot;
    uint64_t now = 100 * S;

    for (uint32_t i = 0; i < 500; i++) {
        struct sockaddr_storage ss = nth(i);
        assert_int_equal(client_limit_admit(t, &lim, (struct sockaddr *)&ss, now, &slot),
                         CLIENT_PASS);
    }
    client_limit_stats(t, &st);
    assert_int_equal(st.evictions, 0);
    assert_int_equal(st.table_full, 500 - CLIENT_LIMIT_SIZE_MIN);
    /* the tracked ones are still limited: exactly 64 of the 500 are refused a second time */
    unsigned refused = 0;
    for (uint32_t i = 0; i < 500; i++) {
        struct sockaddr_storage ss = nth(i);
        refused +=
            client_limit_admit(t, &lim, (struct sockaddr *)&ss, now, &slot) == CLIENT_OVER_RATE;
    }
    assert_int_equal(refused, CLIENT_LIMIT_SIZE_MIN);
    /* a second later every bucket is full again: new clients evict them, until a group holds
     * only new clients, themselves owed a token */
    uint64_t full_before = st.table_full + (500 - CLIENT_LIMIT_SIZE_MIN); /* the second pass */
    for (uint32_t i = 500; i < 600; i++) {
        struct sockaddr_storage ss = nth(i);
        assert_int_equal(client_limit_admit(t, &lim, (struct sockaddr *)&ss, now + S, &slot),
                         CLIENT_PASS);
    }
    client_limit_stats(t, &st);
    assert_true(st.evictions > 0 && st.evictions <= CLIENT_LIMIT_SIZE_MIN);
    assert_int_equal(st.evictions + (st.table_full - full_before), 100);
    client_limit_drop(t);
}

static void test_ipv6_prefix(void **state)
{
    (void)state;
    struct client_limits lim = {.max_conns = 1};
    uint32_t a, b;
    struct client_limit *t = client_limit_create(1024, 64, seed);

    assert_int_equal(admit(t, &lim, "2001:db8:1:2::1", 0, &a), CLIENT_PASS);
    /* same /64: the same client */
    assert_int_equal(admit(t, &lim, "2001:db8:1:2:ffff:eeee:dddd:5", 0, &b), CLIENT_OVER_CONNS);
    assert_int_equal(open_of(t, "2001:db8:1:2:abcd::9"), 1);
    /* the next /64 is another */
    assert_int_equal(admit(t, &lim, "2001:db8:1:3::1", 0, &b), CLIENT_PASS);
    client_limit_release(t, a);
    client_limit_release(t, b);
    client_limit_drop(t);

    t = client_limit_create(1024, 48, seed);
    assert_true(client_limit_same(t, 1024, 48));
    assert_false(client_limit_same(t, 1024, 64));
    assert_false(client_limit_same(t, 2048, 48));
    assert_int_equal(admit(t, &lim, "2001:db8:1:2::1", 0, &a), CLIENT_PASS);
    assert_int_equal(admit(t, &lim, "2001:db8:1:3::1", 0, &b), CLIENT_OVER_CONNS);
    assert_int_equal(admit(t, &lim, "2001:db8:2::1", 0, &b), CLIENT_PASS);
    client_limit_release(t, a);
    client_limit_release(t, b);
    client_limit_drop(t);

    t = client_limit_create(1024, 128, seed);
    assert_int_equal(admit(t, &lim, "2001:db8::1", 0, &a), CLIENT_PASS);
    assert_int_equal(admit(t, &lim, "2001:db8::2", 0, &b), CLIENT_PASS);
    client_limit_release(t, a);
    client_limit_release(t, b);
    client_limit_drop(t);

    /* a prefix that ends inside a byte: /60 keeps the high nibble of the 8th byte */
    t = client_limit_create(1024, 60, seed);
    assert_int_equal(admit(t, &lim, "2001:db8:1:20::1", 0, &a), CLIENT_PASS);
    assert_int_equal(admit(t, &lim, "2001:db8:1:2f::1", 0, &b), CLIENT_OVER_CONNS);
    assert_int_equal(admit(t, &lim, "2001:db8:1:30::1", 0, &b), CLIENT_PASS);
    client_limit_release(t, a);
    client_limit_release(t, b);
    client_limit_drop(t);
}

static void test_mapped_ipv4_and_other_families(void **state)
{
    (void)state;
    struct client_limit *t = client_limit_create(1024, 32, seed); /* even a short IPv6 prefix */
    struct client_limits lim = {.max_conns = 1};
    uint32_t a, b;

    assert_int_equal(admit(t, &lim, "10.1.2.3", 0, &a), CLIENT_PASS);
    assert_int_equal(admit(t, &lim, "::ffff:10.1.2.3", 0, &b), CLIENT_OVER_CONNS);
    assert_int_equal(admit(t, &lim, "::ffff:10.1.2.4", 0, &b), CLIENT_PASS); /* IPv4 is /32 */
    client_limit_release(t, a);
    assert_int_equal(open_of(t, "::ffff:10.1.2.3"), 0);
    assert_int_equal(open_of(t, "10.1.2.4"), 1);
    client_limit_release(t, b);

    struct sockaddr unix_sa = {.sa_family = AF_UNIX};
    assert_int_equal(client_limit_admit(t, &lim, &unix_sa, 0, &a), CLIENT_PASS);
    assert_int_equal(a, CLIENT_LIMIT_NONE);
    /* no limit on: nothing tracked */
    struct client_limits off = {0};
    assert_int_equal(admit(t, &off, "10.9.9.9", 0, &a), CLIENT_PASS);
    assert_int_equal(a, CLIENT_LIMIT_NONE);
    client_limit_hold(t);
    client_limit_drop(t);
    client_limit_drop(t);
    client_limit_drop(NULL);
}

/* admit_check: allow/deny first (a denied client takes nothing from the table), then the cap
 * and the rate, each with its reason; admit_release gives back what it took. */
static void test_admit_check(void **state)
{
    (void)state;
    const char *deny[] = {"192.0.2.0/24"};
    struct listener_rt rt;
    enum listener_reject why;
    uint32_t a, b;

    memset(&rt, 0, sizeof(rt));
    assert_int_equal(acl_create(&rt.acl, NULL, 0, deny, 1), 0);
    rt.clients = client_limit_create(1024, 64, seed);
    rt.client_limits = (struct client_limits){.max_conns = 1};
    struct sockaddr_storage denied = addr("192.0.2.5"), ok = addr("198.51.100.5");

    assert_false(admit_check(&rt, (struct sockaddr *)&denied, &a, &why));
    assert_int_equal(why, LISTENER_REJECT_DENY);
    assert_int_equal(a, CLIENT_LIMIT_NONE);
    assert_int_equal(client_limit_open(rt.clients, (struct sockaddr *)&denied), 0);
    assert_true(admit_check(&rt, (struct sockaddr *)&ok, &a, &why));
    assert_int_not_equal(a, CLIENT_LIMIT_NONE);
    assert_false(admit_check(&rt, (struct sockaddr *)&ok, &b, &why));
    assert_int_equal(why, LISTENER_REJECT_CLIENT_CONNECTIONS);
    assert_string_equal(listener_reject_name(why), "client_connections");
    admit_release(&rt, a);
    admit_release(&rt, CLIENT_LIMIT_NONE);
    assert_int_equal(client_limit_open(rt.clients, (struct sockaddr *)&ok), 0);

    /* a rate of 1 with a burst of 1, on the real clock: of 1,000 tries in a row at most one
     * per second passes (no timing assumed: 1,000 tries would need over 999 s to all pass) */
    rt.client_limits = (struct client_limits){.rate = 1, .burst = 1};
    struct sockaddr_storage other = addr("198.51.100.6");
    int passed = 0, tries = 0;
    while (tries++ < 1000 && admit_check(&rt, (struct sockaddr *)&other, &a, &why)) {
        assert_int_equal(a, CLIENT_LIMIT_NONE);
        passed++;
    }
    assert_true(passed >= 1 && tries <= 1000);
    assert_int_equal(why, LISTENER_REJECT_CLIENT_RATE);
    assert_string_equal(listener_reject_name(why), "client_rate");
    acl_destroy(rt.acl);
    client_limit_drop(rt.clients);
}

/* --- two threads ------------------------------------------------------------------------- */

#define HAMMER_CLIENTS 4
#define HAMMER_ROUNDS  200000

struct hammer {
    struct client_limit *t;
    struct client_limits lim;
    atomic_int holders[HAMMER_CLIENTS]; /* connections held now, per client, by both threads */
    atomic_int over;                    /* a client seen above its cap */
    atomic_long passed;                 /* admissions */
};

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;
    uint32_t rng = (uint32_t)(uintptr_t)&rng;
    for (int i = 0; i < HAMMER_ROUNDS; i++) {
        rng = rng * 1103515245u + 12345u;
        unsigned c = (rng >> 16) % HAMMER_CLIENTS;
        struct sockaddr_storage ss = nth(c);
        uint32_t slot;
        if (client_limit_admit(h->t, &h->lim, (struct sockaddr *)&ss, 0, &slot) != CLIENT_PASS)
            continue;
        atomic_fetch_add(&h->passed, 1);
        if (atomic_fetch_add(&h->holders[c], 1) + 1 > (int)h->lim.max_conns)
            atomic_store(&h->over, 1);
        atomic_fetch_sub(&h->holders[c], 1);
        client_limit_release(h->t, slot);
    }
    return NULL;
}

static void hammer(uint32_t max_conns)
{
    static struct hammer h;
    pthread_t th[2];

    memset(&h, 0, sizeof(h));
    h.t = client_limit_create(1024, 64, NULL); /* a random seed, as the daemon uses */
    h.lim.max_conns = max_conns;
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer_run, &h), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(atomic_load(&h.over), 0);
    assert_true(atomic_load(&h.passed) > 0);
    for (uint32_t c = 0; c < HAMMER_CLIENTS; c++) {
        struct sockaddr_storage ss = nth(c);
        assert_int_equal(client_limit_open(h.t, (struct sockaddr *)&ss), 0);
    }
    client_limit_drop(h.t);
}

static void test_two_threads_cap_one(void **state)
{
    (void)state;
    hammer(1); /* never two holders of one client at once, counts back at zero */
}

static void test_two_threads_high_cap(void **state)
{
    (void)state;
    hammer(1000); /* nothing refused in practice: every admission released */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_math),
        cmocka_unit_test(test_connections_and_release),
        cmocka_unit_test(test_full_table_and_eviction),
        cmocka_unit_test(test_partial_bucket_is_kept),
        cmocka_unit_test(test_ipv6_prefix),
        cmocka_unit_test(test_mapped_ipv4_and_other_families),
        cmocka_unit_test(test_admit_check),
        cmocka_unit_test(test_two_threads_cap_one),
        cmocka_unit_test(test_two_threads_high_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
