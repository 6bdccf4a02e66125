/* The daemon's configuration: the INI schema composed from every subsystem's key rows, loaded
 * into one immutable struct; errors carry FILE:LINE. */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "admin_conf.h"
#include "consul_conf.h"
#include "cpus.h"
#include "health_conf.h"
#include "inifile.h"
#include "lb_conf.h"
#include "log.h"
#include "registry_conf.h"
#include "stream_conf.h"

enum config_discovery {
    CONFIG_DISCOVERY_STATIC, /* the backends list */
    CONFIG_DISCOVERY_CONSUL, /* a Consul service (consul_* keys) */
    CONFIG_DISCOVERY_DNS,    /* DNS SRV or A/AAAA records (dns_* keys) */
    CONFIG_DISCOVERY_FILE,   /* a watched JSON file (file) */
};

/* [service:NAME]: where a service's instances come from and how they are balanced. */
struct config_service {
    char name[INI_NAME_MAX];           /* NAME from the section header */
    int line;                          /* line of the section header */
    enum config_discovery discovery;   /* discovery = ... */
    struct lb_service_conf lb;         /* balance, backends, passive health, slow start, limits */
    struct stream_service_conf stream; /* queue_size, queue_timeout, drain_timeout, lifetime */
    struct health_conf check;          /* check, check_* (active health checks) */
    struct consul_watch_conf consul;   /* consul_service, consul_tags, consul_datacenter, health */
    struct registry_conf registry;     /* dns_* (discovery = dns), file (discovery = file) */
};

/* "static", "consul", "dns" or "file". */
const char *config_discovery_name(enum config_discovery discovery);

/* The [service:NAME] rows of the daemon itself (discovery), for reload's comparisons. */
extern const struct ini_key config_service_keys[];

/* The whole file. Owned by whoever called config_load; read-only once loaded. */
struct config {
    char *path;                            /* file it was read from, owned */
    uint32_t workers;                      /* worker threads; "auto" resolved to the CPU count */
    struct cpus_usable workers_auto;       /* how "auto" was counted; count 0 = a number was set */
    enum log_level log_level;              /* log_level */
    enum log_format log_format;            /* log_format */
    uint64_t shutdown_timeout_ms;          /* shutdown_timeout */
    char *pid_file;                        /* pid_file, owned; NULL = none */
    int pid_file_line;                     /* its line, for start-up errors */
    char *user;                            /* user: drop to it after start-up, owned; NULL = stay */
    char *group;                           /* group, owned; NULL = the user's primary group */
    struct stream_conf stream;             /* max_connections, splice, pipe_size, buffer_size */
    struct listener_conf *listeners;       /* [listener:*] in file order, owned */
    size_t n_listeners;                    /* entries in listeners */
    struct config_service *services;       /* [service:*] in file order, owned */
    size_t n_services;                     /* entries in services */
    struct consul_conf consul;             /* [consul] */
    struct registration_conf registration; /* [registration] */
    struct admin_conf admin;               /* [admin] */
};

/* Reads and validates FILE. On success returns 0 and *out owns a new config. On problems
 * returns -EINVAL with every problem appended to errs (never stops at the first one); when
 * the file cannot be read returns -errno with one error line. Any thread; no globals. */
int config_load(const char *path, struct config **out, struct ini_errors *errs);

/* Like config_load, for commands that only talk to Consul (sluice register / deregister): the
 * file needs no listener. Every other rule applies. */
int config_load_consul(const char *path, struct config **out, struct ini_errors *errs);

/* Frees a config from config_load; NULL is fine. */
void config_destroy(struct config *cfg);

#endif
