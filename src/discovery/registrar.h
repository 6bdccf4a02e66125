/* Consul registration: register and deregister calls (used by the daemon and by the
 * "sluice register / deregister" commands), and the daemon's registrations: its listeners as
 * Consul services (checked on the admin /healthz with [admin], else with a TCP check through the
 * listener) and, with [registration] fleet, the process itself as one member of a fleet of
 * sluices (with an HTTP check on its admin /healthz); all with anti-entropy
 * and deregistration at shutdown. No call ever leaves a half-registered service behind: a failure
 * after the agent may have added it rolls the registration back. */
#ifndef SLUICE_REGISTRAR_H
#define SLUICE_REGISTRAR_H

#include <stddef.h>
#include <stdint.h>

#include <stdatomic.h>

#include "addr.h"
#include "consul.h"
#include "consul_conf.h"
#include "log.h"

#define REGISTRAR_ID_MAX  256 /* longest service id + 1 */
#define REGISTRAR_MSG_MAX 768 /* one message line */

/* What to register: one service and up to two checks. */
struct registrar_spec {
    const char *id;               /* service ID, unique on the agent */
    const char *name;             /* service name */
    const char *address;          /* address to advertise; NULL or "" = the agent's node address */
    int port;                     /* port; 0 = none */
    char *const *tags;            /* tags (n_tags entries) */
    size_t n_tags;                /* entries in tags */
    char *const *meta;            /* "key=value" items (n_meta entries) */
    size_t n_meta;                /* entries in meta */
    const char *http_check;       /* URL for an HTTP check, or NULL */
    const char *tcp_check;        /* host:port for a TCP check, or NULL */
    uint64_t interval_ms;         /* check interval */
    uint64_t timeout_ms;          /* check timeout; 0 = the agent's default (10 s) */
    uint64_t deregister_after_ms; /* DeregisterCriticalServiceAfter; 0 = never */
};

/* How a registration call ended; the values are the CLI's exit codes. */
enum registrar_result {
    REGISTRAR_DONE = 0,        /* done */
    REGISTRAR_REJECTED = 1,    /* the agent refused (its reason is in the message) */
    REGISTRAR_UNREACHABLE = 2, /* Consul could not be reached */
};

/* Registers spec: (1) PUT /v1/agent/service/register with the checks inline, so that the agent
 * validates them before it adds anything and the service is never listed without them; (2) reads
 * the agent's checks (or the service) back to confirm the registration is complete. When step 2
 * fails, or step 1 fails in a way that may have left the service behind, the service is
 * deregistered again. msg receives one line for humans: what was done or what went wrong, with
 * the agent's own error text. cancel (may be NULL) aborts calls in flight; *rolled_back (may be
 * NULL) is set to 1 when a half-made registration was deregistered again, else 0. Any thread. */
enum registrar_result registrar_register(const struct consul_client *c,
                                         const struct registrar_spec *spec,
                                         const atomic_int *cancel, int *rolled_back, char *msg,
                                         size_t msg_len);

/* PUT /v1/agent/service/deregister/<id>; an unknown id (404) counts as done. timeout_ms bounds
 * the call. Any thread. */
enum registrar_result registrar_deregister(const struct consul_client *c, const char *id,
                                           uint64_t timeout_ms, char *msg, size_t msg_len);

/* The JSON body of step (1) for spec; free() the result. NULL on ENOMEM. Pure. */
char *registrar_body(const struct registrar_spec *spec);

/* Check id of check number i (0-based) of n: "service:<id>" or "service:<id>:<i+1>", the way
 * the agent names them itself. 0 or -ENOSPC. */
int registrar_check_id(char *out, size_t len, const char *service_id, size_t i, size_t n);

/* The daemon's registrations; opaque. */
struct registrar;

/* One of the daemon's registrations as status shows it. */
struct registrar_status {
    char id[REGISTRAR_ID_MAX]; /* service ID */
    char service[64];          /* service name */
    int registered;            /* the agent confirmed it last time */
    unsigned failures;         /* failed attempts in a row */
    char last_error[256];      /* the last failure, "" since a success */
};

/* Fills at most cap registrations and returns how many there are; successes and failures get
 * the totals (either may be NULL). NULL r: 0. Any thread. */
size_t registrar_status(struct registrar *r, struct registrar_status *out, size_t cap,
                        unsigned long long *successes, unsigned long long *failures);

/* A listener the daemon may register: its NAME and bind address. */
struct registrar_listener {
    const char *name;            /* [listener:NAME] */
    const struct net_addr *bind; /* where it accepts */
};

/* Prepares one registration per listener chosen by rcfg (registration_conf_chooses: the
 * [registration] listeners, default all, or none with a fleet), then with rcfg->fleet one for the
 * process: service rcfg->fleet, port fleet_port or that of the first listener registered (else
 * the first listener). admin is the admin server's bind address, NULL without [admin]. Every
 * registration is then checked with HTTP on http://<admin>/healthz (for a wildcard bind the
 * advertised IP, else loopback); without admin the listeners get a TCP check on their advertised
 * address and a fleet fails with -EINVAL. *out is NULL when rcfg->line
 * is 0 (no [registration]). ccfg, rcfg and the addresses must outlive it; the listener array is
 * copied. 0 or -errno with a reason in err. Main thread. */
int registrar_create(const struct consul_conf *ccfg, const struct registration_conf *rcfg,
                     const struct registrar_listener *listeners, size_t n_listeners,
                     const struct net_addr *admin, struct logger *log, struct registrar **out,
                     char *err, size_t err_len);

/* Starts the thread that registers, then confirms every anti_entropy period that the agent
 * still knows each service (GET /v1/agent/service/<id>) and registers again what it forgot.
 * 0 or -errno. */
int registrar_start(struct registrar *r);

/* Stops the thread and deregisters every service (each call bounded by a few seconds), so that
 * clients stop picking this instance before it drains. Main thread, at the start of a shutdown.
 * Idempotent; NULL is fine. */
void registrar_stop(struct registrar *r);

/* Stops (if needed) and frees; NULL is fine. */
void registrar_destroy(struct registrar *r);

#endif
