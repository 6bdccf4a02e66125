/* allow/deny: CIDR parsing, merged ranges, v4/v6 hits and misses, mapped v4, deny wins. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "acl.h"

/* The verdict for the textual address ip (IPv4 or IPv6). */
static enum acl_verdict verdict(const struct acl *acl, const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
    } else {
        assert_int_equal(inet_pton(AF_INET6, ip, &v6->sin6_addr), 1);
        v6->sin6_family = AF_INET6;
    }
    return acl_check(acl, (const struct sockaddr *)&ss);
}

static struct acl *build(const char *const *allow, size_t na, const char *const *deny, size_t nd)
{
    struct acl *acl = NULL;
    assert_int_equal(acl_create(&acl, allow, na, deny, nd), 0);
    assert_non_null(acl);
    return acl;
}

static void test_cidr_check(void **state)
{
    (void)state;
    assert_null(acl_cidr_check("10.0.0.0/8"));
    assert_null(acl_cidr_check("127.0.0.3"));
    assert_null(acl_cidr_check("0.0.0.0/0"));
    assert_null(acl_cidr_check("::/0"));
    assert_null(acl_cidr_check("2001:db8::/32"));
    assert_null(acl_cidr_check("::1"));
    assert_string_equal(acl_cidr_check("10.0.0.300/8"), "is not a CIDR");
    assert_string_equal(acl_cidr_check("10.0.0.0/"), "is not a CIDR");
    assert_string_equal(acl_cidr_check("10.0.0.0/08"), "is not a CIDR");
    assert_string_equal(acl_cidr_check("10.0.0.0/-1"), "is not a CIDR");
    assert_string_equal(acl_cidr_check("/8"), "is not a CIDR");
    assert_string_equal(acl_cidr_check("example.com"), "is not a CIDR");
    assert_non_null(strstr(acl_cidr_check("10.0.0.0/99999999999"), "prefix longer"));
    assert_non_null(strstr(acl_cidr_check("10.0.0.0/33"), "prefix longer"));
    assert_non_null(strstr(acl_cidr_check("::/129"), "prefix longer"));
    assert_non_null(strstr(acl_cidr_check("10.0.0.5/8"), "bits set beyond"));
    assert_non_null(strstr(acl_cidr_check("2001:db8::1/64"), "bits set beyond"));
}

static void test_empty_lists_mean_no_acl(void **state)
{
    (void)state;
    struct acl *acl = (struct acl *)1;
    assert_int_equal(acl_create(&acl, NULL, 0, NULL, 0), 0);
    assert_null(acl);
    assert_true(acl_equal(NULL, NULL));
    assert_int_equal(acl_ranges(NULL), 0);
    acl_destroy(NULL);
}

static void test_deny_v4_v6(void **state)
{
    (void)state;
    const char *deny[] = {"10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "::1"};
    struct acl *acl = build(NULL, 0, deny, 4);
    assert_int_equal(verdict(acl, "10.0.0.0"), ACL_DENY);
    assert_int_equal(verdict(acl, "10.255.255.255"), ACL_DENY);
    assert_int_equal(verdict(acl, "11.0.0.0"), ACL_PASS);
    assert_int_equal(verdict(acl, "9.255.255.255"), ACL_PASS);
    assert_int_equal(verdict(acl, "192.168.1.7"), ACL_DENY);
    assert_int_equal(verdict(acl, "192.168.1.8"), ACL_PASS);
    assert_int_equal(verdict(acl, "192.168.1.6"), ACL_PASS);
    assert_int_equal(verdict(acl, "2001:db8:ffff::1"), ACL_DENY);
    assert_int_equal(verdict(acl, "2001:db9::"), ACL_PASS);
    assert_int_equal(verdict(acl, "::1"), ACL_DENY);
    assert_int_equal(verdict(acl, "::2"), ACL_PASS);
    assert_int_equal(verdict(acl, "::"), ACL_PASS);
    acl_destroy(acl);
}

static void test_allow_only_those(void **state)
{
    (void)state;
    const char *allow[] = {"127.0.0.3"};
    struct acl *acl = build(allow, 1, NULL, 0);
    assert_int_equal(verdict(acl, "127.0.0.3"), ACL_PASS);
    assert_int_equal(verdict(acl, "127.0.0.1"), ACL_NOT_ALLOWED);
    assert_int_equal(verdict(acl, "127.0.0.4"), ACL_NOT_ALLOWED);
    /* an IPv4-only allow list admits no IPv6 client */
    assert_int_equal(verdict(acl, "::1"), ACL_NOT_ALLOWED);
    acl_destroy(acl);
}

static void test_slash_zero_and_full_length(void **state)
{
    (void)state;
    const char *allow[] = {"0.0.0.0/0", "::/0"};
    const char *deny[] = {"255.255.255.255/32", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"};
    struct acl *acl = build(allow, 2, deny, 2);
    assert_int_equal(verdict(acl, "0.0.0.0"), ACL_PASS);
    assert_int_equal(verdict(acl, "255.255.255.254"), ACL_PASS);
    assert_int_equal(verdict(acl, "255.255.255.255"), ACL_DENY);
    assert_int_equal(verdict(acl, "::"), ACL_PASS);
    assert_int_equal(verdict(acl, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"), ACL_PASS);
    assert_int_equal(verdict(acl, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ACL_DENY);
    acl_destroy(acl);
}

static void test_overlapping_and_adjacent_merge(void **state)
{
    (void)state;
    /* 10.0.0.0/24 + 10.0.1.0/24 adjacent; 10.0.0.128/25 inside; 10.0.3.0/24 apart;
     * 2001:db8::/33 + 2001:db8:8000::/33 adjacent = 2001:db8::/32 */
    const char *deny[] = {"10.0.1.0/24", "10.0.0.0/24",        "10.0.0.128/25",
                          "10.0.3.0/24", "2001:db8:8000::/33", "2001:db8::/33"};
    struct acl *acl = build(NULL, 0, deny, 6);
    assert_int_equal(acl_ranges(acl), 3);
    assert_int_equal(verdict(acl, "10.0.1.255"), ACL_DENY);
    assert_int_equal(verdict(acl, "10.0.2.0"), ACL_PASS);
    assert_int_equal(verdict(acl, "10.0.3.1"), ACL_DENY);
    assert_int_equal(verdict(acl, "2001:db8:ffff:ffff::"), ACL_DENY);
    const char *same[] = {"10.0.0.0/23", "10.0.3.0/24", "2001:db8::/32"};
    struct acl *b = build(NULL, 0, same, 3);
    assert_true(acl_equal(acl, b));
    const char *other[] = {"10.0.0.0/23", "10.0.3.0/25", "2001:db8::/32"};
    struct acl *c = build(NULL, 0, other, 3);
    assert_false(acl_equal(acl, c));
    struct acl *d = build(same, 3, NULL, 0); /* same ranges, but as allow */
    assert_false(acl_equal(acl, d));
    acl_destroy(acl);
    acl_destroy(b);
    acl_destroy(c);
    acl_destroy(d);
}

static void test_mapped_v4(void **state)
{
    (void)state;
    const char *deny[] = {"127.0.0.2/32", "::ffff:192.0.2.0/120"};
    struct acl *acl = build(NULL, 0, deny, 2);
    assert_int_equal(verdict(acl, "::ffff:127.0.0.2"), ACL_DENY);
    assert_int_equal(verdict(acl, "::ffff:127.0.0.1"), ACL_PASS);
    /* a mapped rule is an IPv4 rule */
    assert_int_equal(verdict(acl, "192.0.2.77"), ACL_DENY);
    assert_int_equal(verdict(acl, "::ffff:192.0.2.77"), ACL_DENY);
    assert_int_equal(verdict(acl, "192.0.3.0"), ACL_PASS);
    acl_destroy(acl);
}

static void test_deny_wins(void **state)
{
    (void)state;
    const char *allow[] = {"10.0.0.0/8", "2001:db8::/32"};
    const char *deny[] = {"10.1.0.0/16", "2001:db8:1::/48"};
    struct acl *acl = build(allow, 2, deny, 2);
    assert_int_equal(verdict(acl, "10.2.0.1"), ACL_PASS);
    assert_int_equal(verdict(acl, "10.1.0.1"), ACL_DENY);
    assert_int_equal(verdict(acl, "11.0.0.1"), ACL_NOT_ALLOWED);
    assert_int_equal(verdict(acl, "2001:db8:1::5"), ACL_DENY);
    assert_int_equal(verdict(acl, "2001:db8:2::5"), ACL_PASS);
    assert_int_equal(verdict(acl, "2001:db9::"), ACL_NOT_ALLOWED);
    acl_destroy(acl);
}

static void test_bad_cidr_refused_by_create(void **state)
{
    (void)state;
    const char *deny[] = {"10.0.0.0/8", "nope"};
    struct acl *acl = NULL;
    assert_int_equal(acl_create(&acl, NULL, 0, deny, 2), -22);
    assert_null(acl);
}

/* --- against a linear scan ---------------------------------------------------------------- */

static uint64_t rng_state = 88172645463325252ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* A rule as the linear scan keeps it: family bytes and prefix. */
struct plain_rule {
    int v6;
    unsigned char b[16];
    unsigned p;
};

static int prefix_match(const unsigned char *a, const unsigned char *net, unsigned p)
{
    for (unsigned i = 0; i < p; i++)
        if (((a[i / 8] ^ net[i / 8]) >> (7 - i % 8)) & 1)
            return 0;
    return 1;
}

/* Random rules in a narrow space (10.0.0.0/16, 2001:db8::/112) so that hits, overlaps and
 * adjacency are common; random prefixes, host bits cleared. */
static void plain_random(struct plain_rule *r, char *text, size_t len)
{
    char ip[INET6_ADDRSTRLEN];
    memset(r, 0, sizeof(*r));
    r->v6 = (int)(rng() & 1);
    unsigned bits = r->v6 ? 128 : 32;
    if (r->v6) {
        assert_int_equal(inet_pton(AF_INET6, "2001:db8::", r->b), 1);
        r->b[14] = (unsigned char)rng();
        r->b[15] = (unsigned char)rng();
    } else {
        r->b[0] = 10;
        r->b[2] = (unsigned char)rng();
        r->b[3] = (unsigned char)rng();
    }
    r->p = bits - (unsigned)(rng() % 12);
    for (unsigned i = r->p; i < bits; i++)
        r->b[i / 8] &= (unsigned char)~(0x80u >> (i % 8));
    inet_ntop(r->v6 ? AF_INET6 : AF_INET, r->b, ip, sizeof(ip));
    snprintf(text, len, "%s/%u", ip, r->p);
}

static int plain_holds(const struct plain_rule *rules, size_t n, int v6, const unsigned char *a)
{
    for (size_t i = 0; i < n; i++)
        if (rules[i].v6 == v6 && prefix_match(a, rules[i].b, rules[i].p))
            return 1;
    return 0;
}

static void test_matches_linear_scan(void **state)
{
    (void)state;
    enum { RULES = 400, PROBES = 20000 };
    static struct plain_rule rules[RULES];
    static char texts[RULES][64];
    const char *items[RULES];
    for (size_t i = 0; i < RULES; i++) {
        plain_random(&rules[i], texts[i], sizeof(texts[i]));
        items[i] = texts[i];
    }
    /* first half allow, second half deny */
    struct acl *acl = build(items, RULES / 2, items + RULES / 2, RULES - RULES / 2);
    for (int i = 0; i < PROBES; i++) {
        struct plain_rule probe;
        char text[64], ip[INET6_ADDRSTRLEN];
        plain_random(&probe, text, sizeof(text));
        probe.b[probe.v6 ? 15 : 3] = (unsigned char)rng(); /* any host, not a network address */
        inet_ntop(probe.v6 ? AF_INET6 : AF_INET, probe.b, ip, sizeof(ip));
        enum acl_verdict want = ACL_PASS;
        if (plain_holds(rules + RULES / 2, RULES - RULES / 2, probe.v6, probe.b))
            want = ACL_DENY;
        else if (!plain_holds(rules, RULES / 2, probe.v6, probe.b))
            want = ACL_NOT_ALLOWED;
        assert_int_equal(verdict(acl, ip), want);
    }
    acl_destroy(acl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cidr_check),
        cmocka_unit_test(test_empty_lists_mean_no_acl),
        cmocka_unit_test(test_deny_v4_v6),
        cmocka_unit_test(test_allow_only_those),
        cmocka_unit_test(test_slash_zero_and_full_length),
        cmocka_unit_test(test_overlapping_and_adjacent_merge),
        cmocka_unit_test(test_mapped_v4),
        cmocka_unit_test(test_deny_wins),
        cmocka_unit_test(test_bad_cidr_refused_by_create),
        cmocka_unit_test(test_matches_linear_scan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
