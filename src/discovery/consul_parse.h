/* Pure parsing of Consul answers: GET /v1/health/service/<name> JSON -> a sorted instance list,
 * health aggregation, X-Consul-Index, and GET /v1/agent/checks (is a registration's every check
 * there). No I/O, no clock, no globals: safe to fuzz. */
#ifndef SLUICE_CONSUL_PARSE_H
#define SLUICE_CONSUL_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "consul_conf.h"
#include "snapshot.h"

/* Aggregated health of one instance, in rising severity: the worst check wins. */
enum consul_health {
    CONSUL_HEALTH_PASSING,
    CONSUL_HEALTH_WARNING,
    CONSUL_HEALTH_CRITICAL,    /* also any status Consul does not define */
    CONSUL_HEALTH_MAINTENANCE, /* _node_maintenance or _service_maintenance:<id> present */
};

#define CONSUL_HEALTH_COUNT 4

/* One usable instance. */
struct consul_instance {
    char id[SNAPSHOT_ID_MAX];  /* Node.Node + "/" + Service.ID: stable across answers */
    struct net_addr addr;      /* Service.Address, or Node.Address when that is empty */
    uint32_t weight;           /* Weights.Passing or Weights.Warning by health (default 1) */
    enum consul_health health; /* aggregated over the node's and the service's checks */
};

/* Which entries to keep. */
struct consul_filter {
    enum consul_health_mode mode; /* passing only, or passing and warning */
    char *const *tags; /* tags an instance must all carry; may be NULL when n_tags is 0 */
    size_t n_tags;     /* entries in tags */
};

/* What one answer held. */
struct consul_parse_result {
    struct consul_instance *inst;          /* kept instances sorted by id, owned */
    size_t n;                              /* entries in inst */
    size_t entries;                        /* entries in the JSON array */
    size_t by_health[CONSUL_HEALTH_COUNT]; /* valid entries per aggregated health */
    size_t untagged;                       /* valid entries dropped by the tag filter */
    size_t invalid;                        /* entries without a usable id or address */
    char invalid_why[160];                 /* why the first invalid entry was skipped */
};

/* Parses a health/service answer of len bytes (need not be NUL-terminated). On success returns 0
 * and fills *out (free with consul_parse_result_free). Returns -EBADMSG when the text is not a
 * JSON array (err receives a short reason), -ENOMEM. Any thread. */
int consul_parse_health(const char *json, size_t len, const struct consul_filter *filter,
                        struct consul_parse_result *out, char *err, size_t err_len);

/* Frees what consul_parse_health stored; r may be zeroed or NULL. */
void consul_parse_result_free(struct consul_parse_result *r);

/* Health that one check contributes: maintenance checks by id, otherwise its status (NULL or an
 * unknown status is critical). */
enum consul_health consul_check_health(const char *check_id, const char *status);

/* The worse of two healths. */
enum consul_health consul_health_worse(enum consul_health a, enum consul_health b);

/* "passing", "warning", "critical", "maintenance". */
const char *consul_health_name(enum consul_health h);

/* Non-zero when two sorted lists would publish the same set (ids, addresses, weights). */
int consul_instances_equal(const struct consul_instance *a, size_t na,
                           const struct consul_instance *b, size_t nb);

/* Value of an X-Consul-Index header (digits, surrounding blanks allowed); 0 or -EINVAL. */
int consul_parse_index(const char *text, size_t len, uint64_t *out);

/* Whether a GET /v1/agent/checks answer (len bytes, a JSON object keyed by check id) lists each of
 * the n check_ids, each bound to service_id (its ServiceID). 1 yes; 0 with the first missing id,
 * or "(the check list is not a JSON object)", written into missing. Any thread. */
int consul_parse_checks_bound(const char *json, size_t len, const char *service_id,
                              const char *const *check_ids, size_t n, char *missing,
                              size_t missing_len);

#endif
