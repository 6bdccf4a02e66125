/* Per-listener access control: allow and deny lists of IPv4 and IPv6 CIDRs, merged at load into
 * sorted disjoint ranges per family and looked up by binary search. Immutable once built; pure
 * functions, any thread. */
#ifndef SLUICE_ACL_H
#define SLUICE_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct acl;

/* What acl_check says of a client address. */
enum acl_verdict {
    ACL_PASS,        /* let it in */
    ACL_DENY,        /* a deny range holds it (deny wins over allow) */
    ACL_NOT_ALLOWED, /* there is an allow list and no range of it holds it */
};

/* Why one CIDR text ("10.0.0.0/8", "2001:db8::/32", a bare address = /32 or /128) is refused, or
 * NULL: "is not a CIDR", "has a prefix longer than its family's", "has bits set beyond its
 * prefix". An ini_check for the allow and deny list rows. */
const char *acl_cidr_check(const char *text);

/* Builds the ranges of n_allow allow and n_deny deny CIDRs (each passed acl_cidr_check). *out is
 * NULL when both lists are empty: no check at all. Returns 0, -EINVAL for a bad CIDR, -ENOMEM.
 * The caller owns *out (acl_destroy). */
int acl_create(struct acl **out, const char *const *allow, size_t n_allow, const char *const *deny,
               size_t n_deny);

/* Frees acl; NULL is fine. */
void acl_destroy(struct acl *acl);

/* Whether a and b hold the same ranges (NULL is the empty ACL): what a reload compares. */
bool acl_equal(const struct acl *a, const struct acl *b);

/* Disjoint ranges after merging, over both lists and families (for logs). 0 for NULL. */
size_t acl_ranges(const struct acl *acl);

/* The verdict for a client address (AF_INET, or AF_INET6 where ::ffff:a.b.c.d is looked up as
 * a.b.c.d); other families pass. acl must not be NULL. O(log n), no allocation. */
enum acl_verdict acl_check(const struct acl *acl, const struct sockaddr *sa);

#endif
