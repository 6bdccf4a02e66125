/* Access control lists: CIDRs parsed, merged into sorted disjoint ranges, binary search. */
#include "acl.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Both families live in one 128-bit space per set so that parse, merge and search are written
 * once; an IPv4 address is its 32-bit value there. */
typedef unsigned __int128 acl_u128;

/* One range of addresses, both ends included. */
struct acl_range {
    acl_u128 lo; /* first address */
    acl_u128 hi; /* last address */
};

/* Sorted, disjoint, non-adjacent ranges of one family. */
struct acl_set {
    struct acl_range *r; /* ranges, ascending */
    size_t n;            /* entries in r */
};

enum { ACL_V4, ACL_V6, ACL_FAMILIES };

struct acl {
    struct acl_set allow[ACL_FAMILIES]; /* allow list per family */
    struct acl_set deny[ACL_FAMILIES];  /* deny list per family */
    bool has_allow;                     /* an allow list exists: everyone else is refused */
};

/* One parsed CIDR. */
struct acl_cidr {
    int family;            /* ACL_V4 or ACL_V6 */
    struct acl_range span; /* the addresses it covers */
};

static acl_u128 family_max(int family)
{
    return family == ACL_V4 ? (acl_u128)UINT32_MAX : ~(acl_u128)0;
}

static acl_u128 bytes_value(const unsigned char *b, size_t n)
{
    acl_u128 v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | b[i];
    return v;
}

/* "24" -> 24 when at most max; -2 for a larger number, -1 for anything else (no sign, no
 * spaces, no leading zeros but "0"). */
static int prefix_parse(const char *s, int max)
{
    int p = 0;

    if (*s == '\0' || (s[0] == '0' && s[1] != '\0'))
        return -1;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        if (p <= max) /* stops growing once too large: no overflow */
            p = p * 10 + (*s - '0');
    }
    return p <= max ? p : -2;
}

/* The address part of text into c (lo only); bits of its family, or -1. */
static int address_parse(const char *text, size_t len, struct acl_cidr *c)
{
    char buf[INET6_ADDRSTRLEN];
    unsigned char b[16];

    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, b) == 1) {
        c->family = ACL_V4;
        c->span.lo = bytes_value(b, 4);
        return 32;
    }
    if (inet_pton(AF_INET6, buf, b) != 1)
        return -1;
    c->family = ACL_V6;
    c->span.lo = bytes_value(b, 16);
    return 128;
}

/* Parses text into c: NULL, or why not (acl_cidr_check's phrases). */
static const char *cidr_parse(const char *text, struct acl_cidr *c)
{
    const char *slash = strchr(text, '/');
    size_t len = slash != NULL ? (size_t)(slash - text) : strlen(text);
    int bits = address_parse(text, len, c);

    if (bits < 0)
        return "is not a CIDR";
    int p = slash != NULL ? prefix_parse(slash + 1, bits) : bits;
    if (p == -1)
        return "is not a CIDR";
    if (p == -2)
        return "has a prefix longer than its family's (32 for IPv4, 128 for IPv6)";
    acl_u128 host = p == 0 ? family_max(c->family) : (((acl_u128)1 << (bits - p)) - 1);
    /* rejected rather than masked: 10.0.0.5/8 is more often a typo than a wish for 10/8 */
    if ((c->span.lo & host) != 0)
        return "has bits set beyond its prefix (write the network address)";
    c->span.hi = c->span.lo | host;
    /* ::ffff:a.b.c.d/96+ is an IPv4 rule: clients are looked up as IPv4 once unmapped */
    if (c->family == ACL_V6 && p >= 96 && (c->span.lo >> 32) == 0xffff) {
        c->family = ACL_V4;
        c->span.lo &= UINT32_MAX;
        c->span.hi &= UINT32_MAX;
    }
    return NULL;
}

const char *acl_cidr_check(const char *text)
{
    struct acl_cidr c;
    return cidr_parse(text, &c);
}

static int range_cmp(const void *a, const void *b)
{
    const struct acl_range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Sorts set and merges overlapping and adjacent ranges in place. */
static void set_merge(struct acl_set *set, int family)
{
    size_t out = 0;

    if (set->n == 0)
        return;
    qsort(set->r, set->n, sizeof(set->r[0]), range_cmp);
    for (size_t i = 1; i < set->n; i++) {
        struct acl_range *last = &set->r[out];
        if (last->hi == family_max(family) || set->r[i].lo <= last->hi + 1) {
            if (set->r[i].hi > last->hi)
                last->hi = set->r[i].hi;
        } else {
            set->r[++out] = set->r[i];
        }
    }
    set->n = out + 1;
}

/* Fills the two family sets of one list from n CIDR texts. */
static int list_build(struct acl_set sets[ACL_FAMILIES], const char *const *items, size_t n)
{
    for (int f = 0; f < ACL_FAMILIES; f++) {
        sets[f].r = malloc((n ? n : 1) * sizeof(struct acl_range));
        if (sets[f].r == NULL)
            return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct acl_cidr c;
        if (cidr_parse(items[i], &c) != NULL)
            return -EINVAL;
        assert(c.family == ACL_V4 || c.family == ACL_V6); /* the index below stays in sets */
        sets[c.family].r[sets[c.family].n++] = c.span;
    }
    for (int f = 0; f < ACL_FAMILIES; f++)
        set_merge(&sets[f], f);
    return 0;
}

int acl_create(struct acl **out, const char *const *allow, size_t n_allow, const char *const *deny,
               size_t n_deny)
{
    *out = NULL;
    if (n_allow == 0 && n_deny == 0)
        return 0;
    struct acl *acl = calloc(1, sizeof(*acl));
    if (acl == NULL)
        return -ENOMEM;
    acl->has_allow = n_allow > 0;
    int rc = list_build(acl->allow, allow, n_allow);
    if (rc == 0)
        rc = list_build(acl->deny, deny, n_deny);
    if (rc != 0) {
        acl_destroy(acl);
        return rc;
    }
    *out = acl;
    return 0;
}

void acl_destroy(struct acl *acl)
{
    if (acl == NULL)
        return;
    for (int f = 0; f < ACL_FAMILIES; f++) {
        free(acl->allow[f].r);
        free(acl->deny[f].r);
    }
    free(acl);
}

static bool set_equal(const struct acl_set *a, const struct acl_set *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->r, b->r, a->n * sizeof(a->r[0])) == 0);
}

bool acl_equal(const struct acl *a, const struct acl *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    if (a->has_allow != b->has_allow)
        return false;
    for (int f = 0; f < ACL_FAMILIES; f++)
        if (!set_equal(&a->allow[f], &b->allow[f]) || !set_equal(&a->deny[f], &b->deny[f]))
            return false;
    return true;
}

size_t acl_ranges(const struct acl *acl)
{
    size_t n = 0;
    for (int f = 0; acl != NULL && f < ACL_FAMILIES; f++)
        n += acl->allow[f].n + acl->deny[f].n;
    return n;
}

/* Whether a range of set holds x: the last range starting at or below x must end at or above.
 * Branch-free halving (the step is a conditional move): random client addresses make the
 * branches of a textbook binary search mispredict about half the time. */
static bool set_holds(const struct acl_set *set, acl_u128 x)
{
    const struct acl_range *base = set->r;
    size_t n = set->n;

    if (n == 0)
        return false;
    while (n > 1) {
        size_t half = n / 2;
        base = base[half].lo <= x ? base + half : base;
        n -= half;
    }
    return base->lo <= x && x <= base->hi;
}

enum acl_verdict acl_check(const struct acl *acl, const struct sockaddr *sa)
{
    acl_u128 x;
    int f;

    assert(acl != NULL); /* a listener without lists never calls: one branch at accept */
    if (sa->sa_family == AF_INET) {
        f = ACL_V4;
        x = ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        int mapped = IN6_IS_ADDR_V4MAPPED(a6);
        f = mapped ? ACL_V4 : ACL_V6;
        x = mapped ? bytes_value(a6->s6_addr + 12, 4) : bytes_value(a6->s6_addr, 16);
    } else {
        return ACL_PASS;
    }
    if (set_holds(&acl->deny[f], x))
        return ACL_DENY;
    if (acl->has_allow && !set_holds(&acl->allow[f], x))
        return ACL_NOT_ALLOWED;
    return ACL_PASS;
}
