/* The service owner: the one publisher of a service's instance sets. Its sources hand it inputs
 * — the source's instance list (static backends at start and on reload, a Consul answer) and the
 * balancer — and it merges them by instance id into one immutable set, published only when the
 * result changed. Per-instance state that must survive swaps (active connections, failures) is
 * kept by id here, so a new answer never resets balancing. Inputs may come from any thread that
 * is not inside a read section; they are serialised. */
#ifndef SLUICE_OWNER_H
#define SLUICE_OWNER_H

#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "log.h"
#include "snapshot.h"

struct lb_ops;

/* One instance as a source lists it. */
struct owner_member {
    const char *id;       /* stable identity; NULL = addr.text */
    struct net_addr addr; /* address to dial */
    uint32_t weight;      /* the source's weight; 0 = listed but drained */
};

/* A service's owner; opaque. */
struct owner;

/* An owner for service name with balancer lb and an empty set. log (may be NULL) receives
 * service_published events. NULL on ENOMEM. */
struct owner *owner_create(const char *name, const struct lb_ops *lb, struct logger *log);

/* Frees the owner, its set and its states. Only once no reader or source uses it. NULL is fine. */
void owner_destroy(struct owner *o);

/* Service name given at creation. */
const char *owner_name(const struct owner *o);

/* Replaces the source's list (copied). Publishes when the merged set differs from the current one
 * in ids, addresses, weights or order. Returns 1 when it published, 0 when nothing changed,
 * -ENOMEM (the current set stays). */
int owner_set_members(struct owner *o, const struct owner_member *members, size_t n);

/* Changes the balancer; publishes when it differs. Same returns as owner_set_members. */
int owner_set_balancer(struct owner *o, const struct lb_ops *lb);

/* The current set; never NULL. Registered reader threads only, inside a read section. */
const struct instance_set *owner_current(const struct owner *o);

/* Sets published so far. Any thread. */
uint64_t owner_publishes(const struct owner *o);

#endif
