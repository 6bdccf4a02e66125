/* libFuzzer target: the value parsers every config key and the ACLs use. The input, cut at its
 * first NUL, is read as a duration, a size, an address, a port and a comma-separated list of
 * CIDRs, and each result is checked against what the parser promises:
 *  - a duration or size is what a plain reading of its digits and unit gives, stays within the
 *    row's limits, and its text form (ini_value_text, what reload messages print) parses back to
 *    the same value;
 *  - an address round-trips through its canonical text and through the kernel's sockaddr;
 *  - an ACL built from the CIDRs gives, for the edges of every range and their neighbours, the
 *    verdict a linear scan of the same rules gives. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "acl.h"
#include "addr.h"
#include "fuzz_check.h"
#include "inifile.h"

typedef unsigned __int128 u128;

#define DURATION_MAX (7 * 24 * 3600000ULL) /* shutdown_timeout's limit, the longest of any row */
#define CIDRS_MAX    16                    /* CIDRs of one input that are looked at */

/* --- durations and sizes --------------------------------------------------------------------- */

/* digits + one of units (multipliers in mult), the plain way; 0 or -1 (not the grammar) or -2
 * (does not fit 64 bits). */
static int reference_number(const char *text, const char *const *units, const uint64_t *mult,
                            size_t n_units, int bare_ok, uint64_t *out)
{
    size_t digits = strspn(text, "0123456789");
    u128 v = 0;
    int big = 0;

    if (digits == 0) {
        return -1;
    }
    for (size_t i = 0; i < digits; i++) {
        v = v * 10 + (u128)(text[i] - '0');
        big = big || v > UINT64_MAX;
        v = big ? 0 : v;
    }
    const char *unit = text + digits;
    uint64_t m = 0;
    if (*unit == '\0' && bare_ok) {
        m = 1;
    }
    for (size_t i = 0; i < n_units && m == 0; i++) {
        m = strcmp(unit, units[i]) == 0 ? mult[i] : 0;
    }
    if (m == 0) {
        return -1;
    }
    if (big || v * m > UINT64_MAX) {
        return -2;
    }
    *out = (uint64_t)(v * m);
    return 0;
}

static void duration_check(const char *text)
{
    static const char *const units[] = {"ms", "s", "m", "h"};
    static const uint64_t mult[] = {1, 1000, 60000, 3600000};
    const struct ini_key key = INI_KEY("d", 0, ini_set_duration, 0, DURATION_MAX, NULL, false);
    char msg[INI_PHRASE_MAX], shown[64];
    uint64_t ms = 0, want = 0, stored = 0, again = 0;
    int ref = reference_number(text, units, mult, 4, 0, &want);

    if (ref == -1 && text[0] != '\0' && strspn(text, "0") == strlen(text)) {
        ref = 0; /* zero ("0", "00") is the one bare number that needs no unit */
        want = 0;
    }
    const char *why = ini_parse_duration(text, &ms);
    FUZZ_CHECK((why == NULL) == (ref == 0));
    FUZZ_CHECK(why == NULL ? ms == want : strlen(why) > 0);
    why = ini_set_duration(&stored, &key, text, msg);
    FUZZ_CHECK((why == NULL) == (ref == 0 && want <= DURATION_MAX));
    if (why != NULL) {
        return;
    }
    FUZZ_CHECK(stored == want);
    FUZZ_CHECK(ini_value_text(&key, &stored, shown, sizeof(shown)) == 0);
    FUZZ_CHECK(ini_parse_duration(shown, &again) == NULL && again == stored);
}

static void size_check(const char *text)
{
    static const char *const units[] = {"k", "K", "m", "M"};
    static const uint64_t mult[] = {1024, 1024, 1024 * 1024, 1024 * 1024};
    const struct ini_key key = INI_KEY("z", 0, ini_set_size, 1, UINT32_MAX, NULL, false);
    char msg[INI_PHRASE_MAX], shown[64];
    uint32_t stored = 0, again = 0;
    uint64_t want = 0;
    int ref = reference_number(text, units, mult, 4, 1, &want);

    const char *why = ini_set_size(&stored, &key, text, msg);
    FUZZ_CHECK((why == NULL) == (ref == 0 && want >= 1 && want <= UINT32_MAX));
    if (why != NULL) {
        return;
    }
    FUZZ_CHECK(stored == want);
    FUZZ_CHECK(ini_value_text(&key, &stored, shown, sizeof(shown)) == 0);
    FUZZ_CHECK(ini_set_size(&again, &key, shown, msg) == NULL && again == stored);
}

/* --- addresses ------------------------------------------------------------------------------- */

static void addr_check(const char *text)
{
    struct net_addr a, b, c;
    char ip[NET_ADDR_MAX], rebuilt[NET_ADDR_MAX + 8];
    uint16_t port = 0;

    memset(&a, 0x5a, sizeof(a));
    if (net_addr_parse(text, &a) != NULL) {
        struct net_addr untouched;
        memset(&untouched, 0x5a, sizeof(untouched));
        FUZZ_CHECK(memcmp(&a, &untouched, sizeof(a)) == 0); /* "out is then untouched" */
        return;
    }
    FUZZ_CHECK(strlen(a.text) < sizeof(a.text) && net_addr_port(&a) != 0);
    FUZZ_CHECK(net_addr_parse(a.text, &b) == NULL && strcmp(a.text, b.text) == 0);
    FUZZ_CHECK(a.len == b.len && memcmp(&a.sa, &b.sa, a.len) == 0);
    FUZZ_CHECK(net_addr_from_sockaddr(&c, (const struct sockaddr *)&a.sa, a.len) == 0);
    FUZZ_CHECK(strcmp(c.text, a.text) == 0);
    net_addr_ip_text(&a, ip, sizeof(ip));
    snprintf(rebuilt, sizeof(rebuilt), a.sa.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip,
             (unsigned)net_addr_port(&a));
    FUZZ_CHECK(strcmp(rebuilt, a.text) == 0);
    FUZZ_CHECK(net_port_parse(strrchr(a.text, ':') + 1, &port) == NULL &&
               port == net_addr_port(&a));
}

/* --- CIDRs ----------------------------------------------------------------------------------- */

/* One rule the plain way: family (4 or 6) and its first and last address. */
struct rule {
    int family;
    u128 lo, hi;
};

static u128 bytes_value(const unsigned char *b, size_t n)
{
    u128 v = 0;
    for (size_t i = 0; i < n; i++) {
        v = v << 8 | b[i];
    }
    return v;
}

/* The rule of a CIDR that acl_cidr_check accepted. */
static struct rule rule_of(const char *text)
{
    char buf[INET6_ADDRSTRLEN + 8];
    unsigned char b[16];
    struct rule r;
    const char *slash = strchr(text, '/');
    size_t len = slash != NULL ? (size_t)(slash - text) : strlen(text);

    FUZZ_CHECK(len < sizeof(buf));
    memcpy(buf, text, len);
    buf[len] = '\0';
    int v4 = inet_pton(AF_INET, buf, b) == 1;
    FUZZ_CHECK(v4 || inet_pton(AF_INET6, buf, b) == 1);
    int bits = v4 ? 32 : 128;
    int prefix = slash != NULL ? atoi(slash + 1) : bits;
    FUZZ_CHECK(prefix >= 0 && prefix <= bits);
    r.family = v4 ? 4 : 6;
    r.lo = bytes_value(b, v4 ? 4 : 16);
    u128 host =
        prefix == 0 ? (v4 ? (u128)UINT32_MAX : ~(u128)0) : (((u128)1 << (bits - prefix)) - 1);
    FUZZ_CHECK((r.lo & host) == 0);
    r.hi = r.lo | host;
    if (!v4 && prefix >= 96 && (r.lo >> 32) == 0xffff) { /* ::ffff:a.b.c.d/96+ is IPv4 */
        r.family = 4;
        r.lo &= UINT32_MAX;
        r.hi &= UINT32_MAX;
    }
    return r;
}

static int rules_hold(const struct rule *r, size_t n, int family, u128 x)
{
    for (size_t i = 0; i < n; i++) {
        if (r[i].family == family && r[i].lo <= x && x <= r[i].hi) {
            return 1;
        }
    }
    return 0;
}

/* acl_check on family/x (IPv4 also as ::ffff:a.b.c.d) against the linear scan. */
static void verdict_check(const struct acl *acl, const struct rule *allow, size_t n_allow,
                          const struct rule *deny, size_t n_deny, int family, u128 x)
{
    if (family == 6 && (x >> 32) == 0xffff) { /* ::ffff:a.b.c.d is the IPv4 client a.b.c.d */
        family = 4;
        x &= UINT32_MAX;
    }
    enum acl_verdict want = rules_hold(deny, n_deny, family, x) ? ACL_DENY
                            : n_allow > 0 && !rules_hold(allow, n_allow, family, x)
                                ? ACL_NOT_ALLOWED
                                : ACL_PASS;
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};

    if (family == 4) {
        struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl((uint32_t)x)};
        FUZZ_CHECK(acl_check(acl, (const struct sockaddr *)&s4) == want);
        x |= (u128)0xffff << 32; /* the same client as a v4-mapped IPv6 address */
    }
    for (int i = 15; i >= 0; i--, x >>= 8) {
        s6.sin6_addr.s6_addr[i] = (unsigned char)x;
    }
    FUZZ_CHECK(acl_check(acl, (const struct sockaddr *)&s6) == want);
}

static void cidrs_check(const char *text)
{
    char *copy = strdup(text), *save = NULL;
    const char *items[CIDRS_MAX];
    struct rule rules[CIDRS_MAX];
    size_t n = 0;

    FUZZ_CHECK(copy != NULL);
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL && n < CIDRS_MAX;
         tok = strtok_r(NULL, ",", &save)) {
        if (acl_cidr_check(tok) == NULL) {
            rules[n] = rule_of(tok);
            items[n++] = tok;
        }
    }
    /* the first half allows, the rest denies */
    size_t n_allow = n / 2;
    struct acl *acl = NULL;
    int rc = acl_create(&acl, items, n_allow, items + n_allow, n - n_allow);
    FUZZ_CHECK(rc == 0 || rc == -ENOMEM);
    FUZZ_CHECK((acl == NULL) == (n == 0 || rc != 0));
    for (size_t i = 0; acl != NULL && i < n; i++) {
        u128 max = rules[i].family == 4 ? UINT32_MAX : ~(u128)0;
        const u128 probes[] = {rules[i].lo, rules[i].hi, rules[i].lo - 1, rules[i].hi + 1};
        for (size_t p = 0; p < 4; p++) {
            if ((p == 2 && rules[i].lo == 0) || (p == 3 && rules[i].hi == max)) {
                continue;
            }
            verdict_check(acl, rules, n_allow, rules + n_allow, n - n_allow, rules[i].family,
                          probes[p]);
        }
    }
    acl_destroy(acl);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = strndup((const char *)data, size); /* up to the first NUL, as a config line */

    FUZZ_CHECK(text != NULL);
    duration_check(text);
    size_check(text);
    addr_check(text);
    cidrs_check(text);
    free(text);
    return 0;
}
