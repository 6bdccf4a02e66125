/* The keys of a [service:NAME] whose instances come from DNS (discovery = dns) or from a watched
 * JSON file (discovery = file). */
#ifndef SLUICE_REGISTRY_CONF_H
#define SLUICE_REGISTRY_CONF_H

#include <stdbool.h>
#include <stdint.h>

#include "inifile.h"

/* What the registry thread reads from a [service:NAME] section. */
struct registry_conf {
    char *dns_name;               /* dns_name: "_svc._tcp.domain" (SRV) or a host name (A/AAAA) */
    int dns_port;                 /* dns_port: port of an A/AAAA name's instances; 0 = unset */
    struct ini_list dns_servers;  /* dns_servers: "IP" or "IP:PORT" items; empty = resolv.conf */
    uint64_t dns_min_interval_ms; /* dns_min_interval: shortest time between two resolutions */
    uint64_t dns_max_interval_ms; /* dns_max_interval: longest (an answer's TTL lies between) */
    uint64_t dns_timeout_ms;      /* dns_timeout: one query's wait for a server, per try */
    int dns_empty_is_valid;       /* dns_empty_is_valid: an empty answer empties the set */
    int strict_dns;               /* strict_dns: host names in backends must resolve at load */
    char *file;                   /* file: absolute path of the JSON instance list */
};

/* Rows of the dns_* keys and of file, over struct registry_conf. */
extern const struct ini_key registry_dns_keys[];
extern const struct ini_key registry_file_keys[];

/* Whether key (a row of registry_dns_keys) applies to host names in a static backends list. */
bool registry_key_for_hosts(const char *key);

/* Whether a dns_name asks for SRV records: its first label starts with '_'. Pure. */
bool registry_dns_is_srv(const char *name);

/* The checks of a section with discovery = dns (kind 'd') or discovery = file ('f'): required
 * keys, dns_port with A/AAAA names only, dns_min_interval <= dns_max_interval. */
void registry_conf_check(struct ini_file *f, const struct ini_section *sec,
                         const struct registry_conf *c, char kind);

#endif
