/* Consul discovery: one background thread runs one blocking health query per watched service
 * through a libcurl multi handle and hands each changed instance list to the service's owner.
 * While Consul fails, the last known good set stays in service and the discovery is "degraded". */
#ifndef SLUICE_DISCOVERY_H
#define SLUICE_DISCOVERY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "consul_conf.h"
#include "log.h"

#define DISCOVERY_SLACK_MS       5000 /* added to wait + wait/16 for the HTTP timeout */
#define DISCOVERY_WATCHDOG_GRACE 1000 /* the watchdog fires this long after the HTTP timeout */
#define DISCOVERY_BURST          1    /* [consul] min_query_interval is a floor between starts */

/* State of one discovery, for health endpoints. */
enum discovery_state {
    DISCOVERY_OFF,      /* no discovery running (no service uses discovery = consul) */
    DISCOVERY_STARTING, /* running; some watch has not had its first answer yet */
    DISCOVERY_OK,       /* every watch's last query succeeded */
    DISCOVERY_DEGRADED, /* some watch is failing and serves its last known good set */
};

/* A copy of one discovery's state and counters. */
struct discovery_status {
    enum discovery_state state;      /* see above */
    unsigned watches;                /* watched services */
    unsigned synced;                 /* watches that have had a good answer */
    unsigned failing;                /* watches whose last query failed */
    uint64_t degraded_ms;            /* age of the current degraded period; 0 when not degraded */
    unsigned long long requests;     /* queries started */
    unsigned long long errors;       /* queries that failed (any reason) */
    unsigned long long publishes;    /* snapshots published */
    unsigned long long unchanged;    /* answers whose instance set equalled the current one */
    unsigned long long watchdog;     /* queries aborted by the watchdog */
    unsigned long long degraded;     /* times the discovery entered the degraded state */
    unsigned long long acl_denied;   /* 403 answers */
    unsigned long long rate_limited; /* query starts delayed by the token bucket */
    char last_error[256];            /* last failure, "" before any */
};

#define DISCOVERY_HIST_BUCKETS 10 /* finite buckets of the request-duration histogram */

/* Bounds (ms) of the request-duration buckets (blocking queries last up to wait). */
extern const uint64_t discovery_duration_bounds_ms[DISCOVERY_HIST_BUCKETS];

/* Totals across watches, for metrics. */
struct discovery_totals {
    unsigned long long index_resets; /* X-Consul-Index went backwards */
    unsigned long long unreachable;  /* errors: no answer */
    unsigned long long rejected;     /* errors: an error status */
    unsigned long long invalid;      /* errors: an answer not understood */
    unsigned long long too_stale;    /* errors: a stale answer older than [consul] max_stale */
    unsigned long long duration_le[DISCOVERY_HIST_BUCKETS]; /* requests per bucket (cumulative) */
    unsigned long long duration_count;                      /* requests that ended */
    unsigned long long duration_sum_ms;                     /* their total duration */
};

/* One watch as status shows it. */
struct discovery_watch_status {
    char service[64];         /* the service's NAME */
    char consul_service[64];  /* what it watches */
    uint64_t index;           /* index sent next (0: a full read is due) */
    int synced;               /* a good answer was published */
    int failing;              /* the last query failed */
    size_t instances;         /* in the last good answer */
    uint64_t contact_ago_ms;  /* since the agent last answered anything; UINT64_MAX: never */
    uint64_t stale_ms;        /* since the last good answer; UINT64_MAX: never */
    int known_leader;         /* X-Consul-KnownLeader of the last answer: 1, 0; -1 none yet */
    uint64_t last_contact_ms; /* X-Consul-LastContact of the last answer; UINT64_MAX: none yet */
    char last_error[256];     /* last failure, "" when none since the last success */
};

/* The running discovery; opaque. */
struct discovery;
struct owner;

/* One service to watch. */
struct discovery_target {
    const char *name;                      /* the service's NAME, for logs */
    const struct consul_watch_conf *watch; /* what to ask Consul for */
    struct owner *owner;                   /* where its instance lists go */
    atomic_int *synced;                    /* set to 1 after the first good answer; may be NULL */
};

/* Prepares one watch per target (copied; what they point to must outlive the discovery) on the
 * agent of ccfg (which must outlive it too); n may be 0 (watches come with discovery_add).
 * Returns 0 with *out, or -errno with a reason in err (for example an unreadable token file).
 * Any thread, before discovery_start; several discoveries may live in one process. */
int discovery_create(const struct consul_conf *ccfg, const struct discovery_target *targets,
                     size_t n, struct logger *log, struct discovery **out, char *err,
                     size_t err_len);

/* One more watch (target copied; what it points to must outlive d), before or after
 * discovery_start. With sync_ms > 0 its first query runs on the calling thread, bounded by
 * sync_ms, and a good answer is published to the owner before this returns; the discovery
 * thread then goes on from that answer's index. Returns 0 (a good first answer, or sync_ms 0),
 * -EHOSTUNREACH (no answer from the agent), -EPROTO (the agent refused, or answered something
 * unusable) with the reason in err, or -ENOMEM (nothing added). Except for -ENOMEM the watch
 * stays and keeps retrying with backoff. Any thread, never with discovery_stop or _destroy. */
int discovery_add(struct discovery *d, const struct discovery_target *t, uint64_t sync_ms,
                  char *err, size_t err_len);

/* Starts the thread. 0 or -errno. */
int discovery_start(struct discovery *d);

/* Stops the thread promptly (wakes its poll, aborts queries in flight) and joins it. The sets it
 * published stay. Idempotent; NULL is fine. */
void discovery_stop(struct discovery *d);

/* Stops (if needed) and frees; NULL is fine. */
void discovery_destroy(struct discovery *d);

/* The state and counters of d (NULL: DISCOVERY_OFF, all zero). Any thread. */
void discovery_status_get(struct discovery *d, struct discovery_status *out);

/* Every watch's status: fills at most cap entries and returns how many watches there are. */
size_t discovery_watches(struct discovery *d, struct discovery_watch_status *out, size_t cap);

/* The totals (zero for NULL). Any thread. */
void discovery_totals_get(struct discovery *d, struct discovery_totals *out);

/* Just the state (NULL: DISCOVERY_OFF). Any thread, lock-free. */
enum discovery_state discovery_state_get(const struct discovery *d);

/* "off", "starting", "ok", "degraded". */
const char *discovery_state_name(enum discovery_state state);

/* --- the rules, as pure functions (no clock, no randomness of their own) ------------------- */

/* The index to send next, given the one sent and the X-Consul-Index received: 0 (a full,
 * non-blocking resync) when the index went backwards, otherwise at least 1. */
uint64_t discovery_index_next(uint64_t sent, uint64_t received);

/* A token bucket: burst tokens, one more every period_ms. Zero-initialise; it starts full. */
struct discovery_bucket {
    uint64_t credit_ms; /* stored time credit; one token = period_ms */
    uint64_t last_ms;   /* clock of the previous take */
    int primed;         /* credit_ms holds a value */
};

/* Takes a token at now_ms: returns 0 when there was one, otherwise how many ms until there is
 * one (nothing taken). now_ms must not go backwards. */
uint64_t discovery_bucket_take(struct discovery_bucket *b, uint64_t now_ms, uint64_t period_ms,
                               unsigned burst);

/* HTTP timeout of a blocking query: wait + wait/16 (the server's jitter) + DISCOVERY_SLACK_MS. */
uint64_t discovery_http_timeout_ms(uint64_t wait_ms);

/* When the watchdog aborts a query that neither returned nor failed. */
uint64_t discovery_watchdog_ms(uint64_t wait_ms);

#endif
