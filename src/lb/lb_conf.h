/* The load-balancing keys of a [service:NAME] section: which balancer, and the static instance
 * list (backends). */
#ifndef SLUICE_LB_CONF_H
#define SLUICE_LB_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "inifile.h"
#include "owner.h"

struct lb_ops;

#define LB_WEIGHT_MAX 1000000 /* largest weight of one instance */

/* One statically configured upstream instance. */
struct lb_backend {
    struct net_addr addr; /* where to connect; for a host name only its text "host:port" is set */
    uint32_t weight;      /* relative weight, 0..LB_WEIGHT_MAX, default 1; 0 = drained */
    char *host;           /* a host name to resolve (owned), NULL for an IP address */
    uint16_t port;        /* the host name's port */
};

/* backends = ...: the static list, in file order. */
struct lb_backends {
    struct lb_backend *items; /* owned */
    size_t n;                 /* entries in items */
    size_t n_hosts;           /* of which host names (resolved by the registry thread) */
};

/* What lb reads from a [service:NAME] section. */
struct lb_service_conf {
    const struct lb_ops *balance; /* balance = ...; never NULL once loaded */
    struct lb_backends backends;  /* backends = ... (static discovery) */
    struct owner_policy policy;   /* eject_*, max_ejection_percent, slow_start, max_connections,
                                   * hash_key */
};

/* The rows of lb_service_conf and its own rules, for the composer's [service:NAME] kind. */
extern const struct ini_key lb_service_keys[];
void lb_service_check(struct ini_file *f, const struct ini_section *sec, void *conf);

#endif
