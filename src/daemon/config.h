/* The validated configuration: INI file (inih) -> one immutable struct; errors carry file:line. */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "log.h"

#define CONFIG_NAME_MAX 64 /* longest section name (listener:NAME, service:NAME) + 1 */
#define CONFIG_ADDR_MAX 64 /* longest "host:port" / "[v6]:port" text + 1 */

enum config_balance {
    CONFIG_BALANCE_ROUND_ROBIN,
    CONFIG_BALANCE_LEAST_CONNECTIONS,
    CONFIG_BALANCE_WEIGHTED,
};

enum config_discovery {
    CONFIG_DISCOVERY_STATIC,
    CONFIG_DISCOVERY_CONSUL,
};

/* health = ...: which Consul instances a discovered service keeps. */
enum config_health {
    CONFIG_HEALTH_PASSING_AND_WARNING, /* passing (Weights.Passing) and warning (Weights.Warning) */
    CONFIG_HEALTH_PASSING,             /* passing instances only */
};

/* A yes/no key that may be left unset, so that an environment variable can decide instead. */
enum config_flag {
    CONFIG_FLAG_UNSET, /* not in the file */
    CONFIG_FLAG_OFF,   /* false, no, off, 0 */
    CONFIG_FLAG_ON,    /* true, yes, on, 1 */
};

enum config_splice {
    CONFIG_SPLICE_AUTO,   /* streaming directions switch to splice(2) */
    CONFIG_SPLICE_OFF,    /* always copy through a user-space buffer */
    CONFIG_SPLICE_ALWAYS, /* every direction splices from the first byte */
};

/* A numeric socket address and the text it was written as. */
struct config_addr {
    struct sockaddr_storage sa; /* IPv4 or IPv6 address with port */
    socklen_t len;              /* bytes of sa in use */
    char text[CONFIG_ADDR_MAX]; /* canonical "ip:port" or "[ip6]:port" */
};

/* A comma-separated list of non-empty strings, in file order. */
struct config_list {
    char **items; /* owned strings */
    size_t n;     /* entries in items */
};

/* One statically configured upstream instance. */
struct config_backend {
    struct config_addr addr; /* where to connect */
    uint32_t weight;         /* relative weight, 0..1000000, default 1; 0 = drained */
};

/* [service:NAME]: where a service's instances come from and how they are balanced. */
struct config_service {
    char name[CONFIG_NAME_MAX];              /* NAME from the section header */
    int line;                                /* line of the section header */
    enum config_balance balance;             /* balance = ... */
    enum config_discovery discovery;         /* discovery = ... */
    struct config_backend *backends;         /* backends = ... (static discovery), owned */
    size_t n_backends;                       /* entries in backends */
    char consul_service[CONFIG_NAME_MAX];    /* consul_service, default NAME (consul discovery) */
    struct config_list consul_tags;          /* consul_tags: an instance must carry every one */
    char consul_datacenter[CONFIG_NAME_MAX]; /* consul_datacenter; "" = [consul] datacenter */
    enum config_health health;               /* health = passing | passing_and_warning */
};

/* [consul]: how to reach the Consul agent. NULL strings and CONFIG_FLAG_UNSET mean "not in the
 * file": the consul module then falls back to the CONSUL_* environment variables. */
struct config_consul {
    int line;                         /* line of the [consul] header; 0 = no such section */
    char *address;                    /* address: host:port, http://, https:// or unix:///path */
    char *token;                      /* token: ACL secret */
    char *token_file;                 /* token_file: file holding the ACL secret */
    char *datacenter;                 /* datacenter: default for every consul service */
    char *ca_file;                    /* ca_file: CA bundle to verify the agent with */
    char *ca_path;                    /* ca_path: directory of CA certificates */
    char *cert_file;                  /* cert_file: client certificate (mutual TLS) */
    char *key_file;                   /* key_file: key of cert_file */
    char *tls_server_name;            /* tls_server_name: name to verify and send as SNI */
    enum config_flag tls_skip_verify; /* tls_skip_verify: do not verify the agent */
    uint64_t wait_ms;                 /* wait: blocking-query wait, default 55 s */
    int stale;                        /* stale: allow any server to answer reads (0 or 1) */
    uint64_t retry_min_ms;            /* retry_min: first backoff after an error, default 250 ms */
    uint64_t retry_max_ms;            /* retry_max: backoff cap, default 1 min */
};

/* [registration]: sluice registers its listeners as Consul services. */
struct config_registration {
    int line;                      /* line of the header; 0 = no section, nothing registered */
    char name[CONFIG_NAME_MAX];    /* name: service name; "" = each listener's NAME */
    struct config_list tags;       /* tags */
    struct config_list meta;       /* meta: "key=value" items */
    char address[CONFIG_ADDR_MAX]; /* address: IP to advertise; "" = the listener's bind IP */
    struct config_list listeners;  /* listeners: names to register; empty = all */
    uint64_t check_interval_ms;    /* check_interval: TCP check interval, default 10 s */
    uint64_t check_timeout_ms;     /* check_timeout: TCP check timeout, default 5 s */
    uint64_t deregister_after_ms;  /* deregister_critical_after, default 1 min; 0 = never */
    uint64_t anti_entropy_ms;      /* anti_entropy: confirmation period, default 30 s */
};

/* [listener:NAME]: one bind address proxied to one service. */
struct config_listener {
    char name[CONFIG_NAME_MAX];    /* NAME from the section header */
    int line;                      /* line of the section header */
    struct config_addr bind;       /* bind = ... */
    char service[CONFIG_NAME_MAX]; /* service = ... */
    size_t service_index;          /* index of that service in config.services */
    uint64_t connect_timeout_ms;   /* connect_timeout, default 2 s */
    uint64_t idle_timeout_ms;      /* idle_timeout, default 5 min; 0 = never */
    uint32_t retries;              /* retries, other instances tried after a failed connect */
    int backlog;                   /* backlog for listen(2), default 4096 */
};

/* The whole file. Owned by whoever called config_load; read-only once loaded. */
struct config {
    char *path;                        /* file it was read from, owned */
    uint32_t workers;                  /* worker threads; "auto" resolved to the CPU count */
    uint32_t max_connections;          /* global cap on open client connections */
    enum log_level log_level;          /* log_level */
    enum log_format log_format;        /* log_format */
    uint64_t shutdown_timeout_ms;      /* shutdown_timeout */
    enum config_splice splice;         /* splice = auto | off | always */
    uint32_t pipe_size;                /* pipe_size: bytes per splice pipe, default 1 MiB */
    uint32_t buffer_size;              /* buffer_size: bytes per copy buffer, default 16 KiB */
    struct config_listener *listeners; /* [listener:*] in file order, owned */
    size_t n_listeners;                /* entries in listeners */
    struct config_service *services;   /* [service:*] in file order, owned */
    size_t n_services;                 /* entries in services */
    struct config_consul consul;       /* [consul] */
    struct config_registration registration; /* [registration] */
};

/* Every problem found in one file, each "FILE:LINE: key: what is wrong". */
struct config_errors {
    char **lines; /* owned strings */
    size_t n;     /* entries in lines */
};

/* Reads and validates FILE. On success returns 0 and *out owns a new config. On problems
 * returns -EINVAL with every problem appended to errs (never stops at the first one); when
 * the file cannot be read returns -errno with one error line. Any thread; no globals. */
int config_load(const char *path, struct config **out, struct config_errors *errs);

/* Like config_load, for commands that only talk to Consul (sluice register / deregister): the
 * file needs no listener. Every other rule applies. */
int config_load_consul(const char *path, struct config **out, struct config_errors *errs);

/* Frees a config from config_load; NULL is fine. */
void config_destroy(struct config *cfg);

/* Frees the lines of errs and empties it. */
void config_errors_clear(struct config_errors *errs);

/* "250ms", "2s", "5m", "1h", "0" -> milliseconds. Returns 0 or -EINVAL (also on overflow). */
int config_parse_duration(const char *text, uint64_t *ms);

/* "127.0.0.1:80", "[::1]:80" -> address. Host names are not resolved. Returns 0 or -EINVAL.
 * When err is not NULL it receives a short phrase such as "port is not a number". */
int config_parse_addr(const char *text, struct config_addr *out, const char **err);

/* Name of a health mode as written in the file ("passing", "passing_and_warning"). */
const char *config_health_name(enum config_health health);

/* Name of a balance kind as written in the file ("round_robin", ...). */
const char *config_balance_name(enum config_balance balance);

#endif
