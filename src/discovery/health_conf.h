/* The active health check keys of a [service:NAME] section: check = none | tcp | http and its
 * timing, target and HTTP expectations. */
#ifndef SLUICE_HEALTH_CONF_H
#define SLUICE_HEALTH_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "inifile.h"

#define HEALTH_EXPECT_MAX 8 /* status ranges one check_http_expect may list */

enum health_check_kind {
    HEALTH_CHECK_NONE, /* no active check: instances count as healthy */
    HEALTH_CHECK_TCP,  /* a TCP connect that completes within check_timeout */
    HEALTH_CHECK_HTTP, /* an HTTP GET answered with an expected status within check_timeout */
};

/* One range of accepted HTTP statuses. */
struct health_status_range {
    uint16_t lo; /* first accepted status */
    uint16_t hi; /* last accepted status */
};

/* check_* keys of one service. */
struct health_conf {
    enum health_check_kind kind; /* check */
    uint64_t interval_ms;        /* check_interval, default 2 s */
    uint64_t timeout_ms;         /* check_timeout, default 1 s */
    uint32_t rise;               /* check_rise: successes in a row that bring an instance back */
    uint32_t fall;               /* check_fall: failures in a row that take it out */
    uint64_t jitter_ms;          /* check_jitter: each probe moves by up to this, either way */
    uint32_t port;               /* check_port; 0 = the instance's own port */
    char *http_path;             /* check_http_path, default "/" */
    char *http_host;             /* check_http_host; NULL = the instance's address */
    struct health_status_range expect[HEALTH_EXPECT_MAX]; /* check_http_expect, default 200-399 */
    size_t n_expect;                                      /* entries in expect */
};

/* Rows and own rules, for the composer's [service:NAME] kind. */
extern const struct ini_key health_keys[];
void health_conf_check(struct ini_file *f, const struct ini_section *sec, void *conf);

/* Whether status is one check_http_expect accepts. */
int health_status_expected(const struct health_conf *c, long status);

/* Whether two services' check_http_expect lists are alike (the other check keys compare with
 * ini_keys_diff). */
int health_expect_equal(const struct health_conf *a, const struct health_conf *b);

/* "none", "tcp", "http". */
const char *health_check_name(enum health_check_kind kind);

#endif
