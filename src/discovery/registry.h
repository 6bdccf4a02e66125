/* The DNS and file registries: one background thread resolves the DNS names of the services with
 * discovery = dns (c-ares: SRV, or A/AAAA with a port) on their TTL, and reads the JSON files of
 * those with discovery = file when inotify says their directory changed; each good answer goes to
 * the service's owner like a Consul answer. A failed or (by default) empty answer keeps the last
 * good set: the source is "failing" until the next good one. */
#ifndef SLUICE_REGISTRY_H
#define SLUICE_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "lb_conf.h"
#include "log.h"
#include "registry_conf.h"

struct owner;

/* Where a source's instances come from. */
enum registry_kind {
    REGISTRY_DNS,   /* dns_name, re-resolved on its TTL */
    REGISTRY_FILE,  /* file, re-read when it changes */
    REGISTRY_HOSTS, /* the host names among a static service's backends, on their TTL */
};

/* One service fed by a registry. */
struct registry_target {
    const char *name;                   /* the service's NAME, for logs and status */
    enum registry_kind kind;            /* see above */
    const struct registry_conf *conf;   /* its keys; must outlive the registry */
    struct owner *owner;                /* where its instance lists go */
    const struct lb_backends *backends; /* REGISTRY_HOSTS: the static list (must outlive it) */
};

/* One source as status shows it. */
struct registry_source_status {
    char service[64];             /* the service's NAME */
    const char *kind;             /* "dns" or "file" */
    char source[256];             /* the dns_name or the file */
    int synced;                   /* a good answer was published */
    int failing;                  /* the last attempt failed: the last good set serves */
    size_t instances;             /* in the last good answer */
    uint32_t ttl_s;               /* TTL of the last good DNS answer (0 for a file) */
    uint64_t resolve_us;          /* how long the last good resolution or read took */
    uint64_t stale_ms;            /* since the last good answer; UINT64_MAX: never */
    unsigned long long attempts;  /* resolutions or reads started */
    unsigned long long errors;    /* of which failed (an empty answer counts) */
    unsigned long long outages;   /* times the source started failing */
    unsigned long long publishes; /* answers that changed the set */
    char last_error[256];         /* last failure, "" when none since the last success */
};

/* The running registry; opaque. */
struct registry;

/* Prepares the sources of targets (copied; n > 0): a resolver channel per DNS source (dns_servers,
 * else /etc/resolv.conf), one inotify descriptor. Returns 0 with *out, or -errno with a reason in
 * err. Main thread, before registry_start. */
int registry_create(const struct registry_target *targets, size_t n, struct logger *log,
                    struct registry **out, char *err, size_t err_len);

/* Starts the thread; every source resolves or reads at once. 0 or -errno. */
int registry_start(struct registry *r);

/* Stops the thread promptly and joins it; the published sets stay. Idempotent; NULL is fine. */
void registry_stop(struct registry *r);

/* Stops (if needed) and frees; NULL is fine. Before the owners it feeds are destroyed. */
void registry_destroy(struct registry *r);

/* Every source's status: fills at most cap entries, returns how many sources there are (0 for
 * NULL). Any thread. */
size_t registry_sources(struct registry *r, struct registry_source_status *out, size_t cap);

/* Resolves every host name of b once, through c's dns_servers and dns_timeout, on the calling
 * thread (strict_dns = on, at load time): 0, or -EHOSTUNREACH with the first failure in err
 * ("backend 2 \"api-1.test:9001\": Domain name not found"), or -ENOMEM. Any thread. */
int registry_resolve_check(const struct registry_conf *c, const struct lb_backends *b, char *err,
                           size_t err_len);

/* Sources failing now (0 for NULL). Any thread. */
unsigned registry_failing(struct registry *r);

#endif
