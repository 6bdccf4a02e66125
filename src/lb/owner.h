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

#define OWNER_WEIGHT_SCALE                                                                         \
    100 /* set weights are the source's times this, so slow start can ramp                         \
         * even a weight of 1 in steps of a tenth */

/* How a service treats failing, returning and full instances ([service:NAME] keys). */
struct owner_policy {
    uint32_t eject_after;          /* failed connects in a row that eject; 0 = passive health off */
    uint64_t eject_time_ms;        /* first ejection's length; doubles with each one in a row */
    uint64_t eject_max_time_ms;    /* cap of an ejection's length */
    uint32_t max_ejection_percent; /* never more than this share of the instances out at once */
    uint64_t slow_start_ms;        /* weight ramps 10 % -> 100 % over this after a (re)join */
    uint32_t max_conns;            /* per-instance connection limit, 0 = none */
    int hash_with_port;            /* hash_key = client_ip_port (else client_ip) */
};

/* A verdict of the active checks on one instance. */
struct owner_verdict {
    const char *id;              /* the instance */
    enum instance_health health; /* INSTANCE_HEALTH_UP or INSTANCE_HEALTH_DOWN */
};

/* One instance as a source lists it. */
struct owner_member {
    const char *id;       /* stable identity; NULL = addr.text */
    struct net_addr addr; /* address to dial */
    uint32_t weight;      /* the source's weight; 0 = listed but drained */
    int warning;          /* the source rates it "warning" (Consul); only shown in status */
};

/* An operator's decision on one instance (admin API). */
enum owner_admin {
    OWNER_ADMIN_NONE,    /* none: the instance follows its sources */
    OWNER_ADMIN_DRAIN,   /* no new connections; open ones end after drain_timeout */
    OWNER_ADMIN_DISABLE, /* no new connections; open ones stay */
};

/* One instance as the status endpoint shows it. */
struct owner_instance_info {
    char id[SNAPSHOT_ID_MAX];      /* stable identity */
    char addr[NET_ADDR_MAX];       /* address */
    uint32_t weight;               /* the source's weight (or the admin's while one is set) */
    uint32_t effective;            /* weight in the set, OWNER_WEIGHT_SCALE = the configured 1 */
    const char *state;             /* healthy | warning | unhealthy | ejected | draining |
                                    * disabled | slow_start */
    unsigned active;               /* connections now */
    unsigned long long connects;   /* connected sessions */
    unsigned long long failures;   /* failed connect attempts */
    unsigned long long timeouts;   /* of which timed out */
    unsigned long long ejections;  /* passive-health ejections */
    unsigned long long bytes_up;   /* bytes sent to it (ended sessions) */
    unsigned long long bytes_down; /* bytes received from it (ended sessions) */
    const char *check;             /* last active check: none | passed | failed */
    int check_code;                /* its HTTP status, 0 for TCP or none */
    unsigned long long ejected_ms; /* ejection time left, 0 when not ejected */
};

/* A service's owner; opaque. */
struct owner;

/* An owner for service name with balancer lb, policy (copied; NULL = no ejection, no slow start,
 * no limits) and an empty set. log (may be NULL) receives ejection and "nothing left" events.
 * NULL on ENOMEM. */
struct owner *owner_create(const char *name, const struct lb_ops *lb,
                           const struct owner_policy *policy, struct logger *log);

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

/* Replaces the policy (reload); the next tick or input applies it. */
void owner_set_policy(struct owner *o, const struct owner_policy *policy);

/* Active-check verdicts (ids the current set lists; others are ignored). Publishes when an
 * instance's eligibility changes. Same returns as owner_set_members. */
int owner_set_health(struct owner *o, const struct owner_verdict *v, size_t n);

/* Passive health, from a worker: an instance of this owner's set has just failed eject_after
 * connects in a row (its fails_in_row says so). Never blocks: it wakes whoever ticks. */
void owner_report_failing(struct owner *o);

/* Who ticks this owner (the health thread): wake(arg) is called after a report. Set once,
 * before workers run. */
void owner_set_waker(struct owner *o, void (*wake)(void *), void *arg);

/* Applies what time and failure counts decide: ejections (within max_ejection_percent),
 * ejections that ended, slow-start ramps; publishes when a weight changed. Returns the clock_ms at
 * which it wants the next tick (UINT64_MAX: only on a report). One thread. */
uint64_t owner_tick(struct owner *o, uint64_t now_ms);

/* Logs at most once a second per service (warn) that a connection found nothing to use; why is
 * "no_instances", "all_failed" or "all_full". Any thread, lock-free. */
void owner_warn_nothing_left(struct owner *o, const char *why, uint64_t now_ms);

/* An operator's drain, disable or enable (which also ends a weight override) of instance id.
 * Publishes at once. 0, -ENOENT for an id the current set does not list, -ENOMEM. */
int owner_admin(struct owner *o, const char *id, enum owner_admin action);

/* An operator's weight for instance id (0..LB_WEIGHT_MAX), until the source changes the
 * instance's weight or enable. Same returns. */
int owner_admin_weight(struct owner *o, const char *id, uint32_t weight);

/* The instances of the current set as status shows them: fills at most cap entries of out and
 * returns how many there are. Any thread; takes the owner's lock briefly. */
size_t owner_instances(struct owner *o, struct owner_instance_info *out, size_t cap);

/* The current set's version and size, for metrics. Any thread. */
void owner_summary(struct owner *o, uint64_t *version, size_t *n);

/* The current set; never NULL. Registered reader threads only, inside a read section. */
const struct instance_set *owner_current(const struct owner *o);

/* Sets published so far. Any thread. */
uint64_t owner_publishes(const struct owner *o);

#endif
