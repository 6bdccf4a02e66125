/* Consul's configuration: [consul] (how to reach the agent), the Consul keys of a
 * [service:NAME] (what to watch) and [registration] (what to register). */
#ifndef SLUICE_CONSUL_CONF_H
#define SLUICE_CONSUL_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "inifile.h"

/* health = ...: which Consul instances a discovered service keeps. */
enum consul_health_mode {
    CONSUL_HEALTH_MODE_PASSING_AND_WARNING, /* passing (Weights.Passing), warning (Weights.Warning)
                                             */
    CONSUL_HEALTH_MODE_PASSING,             /* passing instances only */
};

/* [consul]: how to reach the Consul agent. NULL strings and INI_FLAG_UNSET mean "not in the
 * file": the consul module then falls back to the CONSUL_* environment variables. */
struct consul_conf {
    int line;                       /* line of the [consul] header; 0 = no such section */
    char *address;                  /* address: host:port, http://, https:// or unix:///path */
    char *token;                    /* token: ACL secret */
    char *token_file;               /* token_file: file holding the ACL secret */
    char *datacenter;               /* datacenter: default for every consul service */
    char *ca_file;                  /* ca_file: CA bundle to verify the agent with */
    char *ca_path;                  /* ca_path: directory of CA certificates */
    char *cert_file;                /* cert_file: client certificate (mutual TLS) */
    char *key_file;                 /* key_file: key of cert_file */
    char *tls_server_name;          /* tls_server_name: name to verify and send as SNI */
    enum ini_flag tls_skip_verify;  /* tls_skip_verify: do not verify the agent */
    uint64_t wait_ms;               /* wait: blocking-query wait, default 55 s */
    int stale;                      /* stale: allow any server to answer reads (0 or 1) */
    uint64_t max_stale_ms;          /* max_stale: a stale answer whose X-Consul-LastContact is
                                     * older fails the query; 0 = any age is accepted */
    uint64_t min_query_interval_ms; /* min_query_interval: least time between the starts of two
                                     * queries of one watch, default 1 s; 0 = no floor */
    uint64_t retry_min_ms;          /* retry_min: first backoff after an error, default 250 ms */
    uint64_t retry_max_ms;          /* retry_max: backoff cap, default 1 min */
    uint64_t timeout_ms;            /* timeout: bound of every non-blocking call, default 10 s */
};

/* The Consul keys of a [service:NAME] with discovery = consul. */
struct consul_watch_conf {
    char service[INI_NAME_MAX];     /* consul_service, default NAME (the composer fills it) */
    struct ini_list tags;           /* consul_tags: an instance must carry every one */
    char datacenter[INI_NAME_MAX];  /* consul_datacenter; "" = [consul] datacenter */
    enum consul_health_mode health; /* health = passing | passing_and_warning */
};

/* [registration]: sluice registers its listeners as Consul services, and with fleet itself as
 * one instance of a fleet of sluice processes (checked on its admin /healthz). */
struct registration_conf {
    int line;                     /* line of the header; 0 = no section, nothing registered */
    char name[INI_NAME_MAX];      /* name: service name; "" = each listener's NAME */
    struct ini_list tags;         /* tags */
    struct ini_list meta;         /* meta: "key=value" items (fleet registration too) */
    char address[NET_ADDR_MAX];   /* address: IP to advertise; "" = the listener's bind IP */
    struct ini_list listeners;    /* listeners: names to register; empty = all (none with fleet) */
    uint64_t check_interval_ms;   /* check_interval: check interval, default 10 s */
    uint64_t check_timeout_ms;    /* check_timeout: check timeout, default 5 s */
    uint64_t deregister_after_ms; /* deregister_critical_after, default 1 min; 0 = never */
    uint64_t anti_entropy_ms;     /* anti_entropy: confirmation period, default 30 s */
    char fleet[INI_NAME_MAX];     /* fleet: service name of the fleet of sluices; "" = off */
    char fleet_id[INI_NAME_MAX];  /* fleet_id; "" = <fleet>-<hostname>-<admin port> */
    char fleet_address[NET_ADDR_MAX]; /* fleet_address: IP to advertise; "" = address, else the
                                       * fleet listener's bind IP, else the agent's node address */
    int fleet_port;                   /* fleet_port; 0 = the fleet listener's port */
    struct ini_list fleet_tags;       /* fleet_tags: tags of the fleet registration */
};

#define CONSUL_TIMEOUT_DEFAULT_MS        10000ULL /* [consul] timeout when not set (or no file) */
#define CONSUL_WAIT_MAX_MS               (10ULL * 60ULL * 1000ULL) /* longest [consul] wait */
#define CONSUL_MIN_QUERY_INTERVAL_MS     1000ULL /* min_query_interval when not set (or no file) */
#define CONSUL_MIN_QUERY_INTERVAL_MAX_MS (60ULL * 1000ULL) /* longest min_query_interval */
#define REGISTRATION_INTERVAL_MIN_MS     1000ULL /* shortest check interval sluice registers */
#define REGISTRATION_DEREGISTER_MIN_MS   (60ULL * 1000ULL) /* Consul's minimum, 0 aside */

/* Rows and own-section checks, for the composer's schema. */
extern const struct ini_key consul_keys[];
extern const struct ini_key consul_watch_keys[];
extern const struct ini_key registration_keys[];
void consul_conf_check(struct ini_file *f, const struct ini_section *sec, void *conf);
void registration_conf_check(struct ini_file *f, const struct ini_section *sec, void *conf);

/* The checks of a [service:NAME] with discovery = consul, after its consul_service is known:
 * the longest query it can make (any index, the longest wait) must fit CONSUL_QUERY_PATH_MAX. */
void consul_watch_conf_check(struct ini_file *f, const struct ini_section *sec,
                             const struct consul_watch_conf *w);

/* The rules a registered check obeys, for [registration] and "sluice register" alike: NULL when
 * the value is fine, else a phrase such as "is shorter than 1s" for the caller to prefix. Pure. */
const char *registration_interval_error(uint64_t interval_ms);
const char *registration_deregister_error(uint64_t deregister_after_ms);

/* Whether [registration] registers listener NAME as a service of its own: listeners names it, or
 * listeners is left out and there is no fleet (a fleet registers the process instead). Pure. */
bool registration_conf_chooses(const struct registration_conf *r, const char *listener);

/* Name of a health mode as written in the file ("passing", "passing_and_warning"). */
const char *consul_health_mode_name(enum consul_health_mode mode);

#endif
