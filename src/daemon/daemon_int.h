/* The daemon's state, shared by its own files: daemon.c (start, signals, drain) uses reload.c
 * (applying a configuration: at start for the static services, then on every SIGHUP). Main
 * thread only. */
#ifndef SLUICE_DAEMON_INT_H
#define SLUICE_DAEMON_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <pthread.h>
#include <uv.h>

#include "config.h"
#include "discovery.h"
#include "health.h"
#include "listener.h"
#include "log.h"
#include "owner.h"
#include "registrar.h"
#include "registry.h"
#include "worker.h"

#define DAEMON_SIGNALS 4 /* TERM, INT, HUP, USR1 */

/* A listener being served: its current version and the section it came from. */
struct listener_entry {
    struct listener_rt *rt;    /* current version; the table holds a reference */
    struct listener_conf conf; /* as configured: what the next reload compares with */
};

/* A listener's claim on its bind address (listen_lock.h), held while it accepts, and the poll
 * that drains the connections of refused starters. */
struct listen_claim {
    int fd;                /* the claim; -1 once released */
    uv_poll_t poll;        /* readable when a starter connected to learn our pid, or a takeover */
    struct daemon *daemon; /* whose claim */
    size_t index;          /* the cfg listener it claims for */
};

struct takeover_peer;

/* one per process, members grouped by what they are for: the padding does not matter */
struct daemon {                          // NOLINT(clang-analyzer-optin.performance.Padding)
    struct config *cfg;                  /* running configuration, owned */
    struct logger log;                   /* every event of this daemon */
    const char *fault;                   /* start-up step made to fail (test hook), or NULL */
    char step_error[512];                /* detail of a failed start-up step, "" if none */
    uv_loop_t loop;                      /* the main thread's loop */
    int loop_ready;                      /* loop initialised */
    uv_signal_t signals[DAEMON_SIGNALS]; /* TERM, INT, HUP, USR1 */
    unsigned n_signals;                  /* signal handles initialised */
    uv_timer_t shutdown_timer;           /* shutdown_timeout */
    uv_async_t worker_exited;            /* a worker ended */
    uv_async_t unlistened;               /* a worker closed its listening sockets */
    unsigned n_handles;                  /* of the loop handles (timer, asyncs), initialised */
    struct owner **services;             /* one per cfg service, same order */
    size_t n_services;                   /* owners created */
    struct service_rt *service_rts;      /* one per cfg service: what sessions see of it */
    struct listener_entry *listeners;    /* the listeners served now (reload replaces it) */
    size_t n_listeners;                  /* entries in listeners */
    pthread_mutex_t table_lock;          /* held by reload while it replaces listeners, and by
                                            the admin thread while it reads them */
    struct listener_rt **start_rts;      /* the start-up versions, for worker_init */
    char (*slot_names)[INI_NAME_MAX];    /* listener name of each per-listener counter slot */
    size_t n_slots;                      /* slots named so far (at most lstats_cap) */
    size_t lstats_cap;                   /* counter slots each worker has */
    pthread_mutex_t change_lock;         /* with change_cond: workers applied a listener change */
    pthread_cond_t change_cond;          /* signalled by each worker that applied one */
    struct worker_shared shared;         /* what workers share */
    struct worker *workers;              /* n_workers */
    unsigned n_workers;                  /* workers */
    unsigned n_inited;                   /* workers whose worker_init succeeded */
    unsigned n_started;                  /* workers whose thread runs */
    atomic_uint n_exited;                /* workers whose loop ended */
    atomic_uint n_unlistened;            /* workers whose listening sockets are closed */
    atomic_int draining;                 /* shutdown under way (the admin thread reads it) */
    atomic_int serving;                  /* start-up finished */
    uint64_t started_ms;                 /* clock_ms at start */
    double started_wall;                 /* seconds since the epoch at start */
    uv_async_t reload_async;             /* the admin thread asks for a reload */
    pthread_mutex_t reload_lock;         /* guards the reload_* request below */
    pthread_cond_t reload_cond;          /* signalled when the main thread has reloaded */
    int reload_pending;                  /* asked, not yet done */
    int reload_done;                     /* done: reload_rc and reload_errs are the answer */
    int reload_rc;                       /* its result */
    struct ini_errors reload_errs;       /* a broken file's errors */
    uv_async_t reload_finished;          /* the reload thread is done with its part */
    pthread_t reload_thread;             /* reads the file and feeds the owners (reload.c) */
    int reload_running;                  /* reload_thread runs or awaits its join (main) */
    int reload_for_admin;                /* the running reload answers the admin thread (main) */
    int reload_again;                    /* SIGHUP during a reload: one more after it (main) */
    int reload_admin_again;              /* admin ask during a reload: one more for it (main) */
    struct config *reload_next;          /* the thread's loaded file; NULL when it failed */
    int reload_load_rc;                  /* the thread's config_load result */
    struct ini_errors reload_load_errs;  /* and its errors */
    struct admin *admin;                 /* the admin server; NULL without [admin] */
    int said_unlistened;                 /* listeners_closed was logged */
    struct discovery *discovery;         /* Consul watches; NULL without consul services */
    struct registrar *registrar;         /* Consul registrations; NULL without [registration].
                                          * Set after the admin server starts: other threads
                                          * read it with daemon_registrar */
    struct registry *registry;           /* DNS and file sources; NULL without such services */
    struct log_writer access;            /* access-log rings and their writer thread */
    int access_on;                       /* some listener logs access; access is set up */
    struct health *health;               /* checks and owner ticks; NULL without services */
    struct listen_claim *claims;         /* one per cfg listener, freed after the loop closes */
    size_t n_claims;                     /* claims whose poll handle is initialised */
    int pid_written;                     /* cfg->pid_file is ours to remove */
    int takeover;                        /* --takeover: take the listeners of a running sluice */
    struct takeover_in *takeovers;       /* per cfg listener: who it was taken from (takeover.h) */
    struct worker_inherited *inherited;  /* per cfg listener: the sockets received with it */
    struct takeover_peer *peers;         /* takeovers asked of this process, being answered */
    size_t n_peers;                      /* in peers */
};

/* Stops accepting and lets open sessions finish (SIGTERM, SIGINT, or a successor's DRAIN after
 * a takeover: why says which); a second call cuts the wait short. */
void daemon_drain(struct daemon *d, const char *why);

/* The registrar as another thread (the admin server's) may see it: NULL until the start-up
 * step "registrar" published it whole. */
static inline struct registrar *daemon_registrar(const struct daemon *d)
{
    return __atomic_load_n(&d->registrar, __ATOMIC_ACQUIRE);
}

/* Publishes the static backends of service cs into its owner (start and reload). 0 or -ENOMEM. */
int reload_static_service(struct daemon *d, struct owner *o, const struct config_service *cs);

/* The counter slot of listener NAME: its own if it had one, else a new one; SIZE_MAX when all
 * lstats_cap are taken. */
size_t reload_listener_slot(struct daemon *d, const char *name);

/* Fills the version template t from section cl of the file conf_path (its errors name it),
 * serving svc, counted in slot, with acls (from reload_listener_acl; t takes them over). */
void reload_listener_fill(struct listener_rt *t, const struct listener_conf *cl,
                          const char *conf_path, struct service_rt *svc, size_t slot,
                          const struct listener_acls *acls);

/* The allow/deny ranges of cl and its proxy_trusted ranges into *acls (NULL without lists): 0 or
 * -ENOMEM (nothing left to free). Built once per version, so the accept path only searches. */
int reload_listener_acl(const struct listener_conf *cl, struct listener_acls *acls);

/* The per-client limits of cl into t, and its table: the running version's (a new reference)
 * when running (may be NULL) has one of the same size and IPv6 prefix, else a new one; none
 * without limits. 0 or -ENOMEM (t has no table then). */
int reload_listener_clients(struct listener_rt *t, const struct listener_conf *cl,
                            const struct listener_rt *running);

/* cl as the listener table keeps it: without its allow/deny/proxy_trusted lists, which belong to a
 * config that a reload frees; the version's acl and trusted stand for them in later comparisons. */
struct listener_conf reload_listener_kept(const struct listener_conf *cl);

/* Starts a reload (main thread): a thread reads the file and hands static services their new
 * instances (the slow part with many backends: parsing, building and publishing the sets), then
 * the main thread applies the rest in reload_finish, so signals are handled meanwhile. A reload
 * asked while one runs (for_admin: by the admin thread) runs once the current one is done. */
void reload_begin(struct daemon *d, int for_admin);

/* reload_finished's callback (main thread): joins the thread, applies globals and listeners (or
 * logs the broken file), answers the admin thread when it asked, and starts a queued reload. */
void reload_finish(struct daemon *d);

/* Shutdown (main thread): waits for a reload thread still running and drops its result. */
void reload_abandon(struct daemon *d);

/* From the admin thread: has the main thread reload, waits up to timeout_ms for it. 0, the
 * loader's error (errs holds the file's problems), -ETIMEDOUT or -EBUSY (shutting down). */
int daemon_reload_from_admin(struct daemon *d, struct ini_errors *errs, uint64_t timeout_ms);

#endif
