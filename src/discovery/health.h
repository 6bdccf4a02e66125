/* The health thread: active TCP and HTTP checks of every instance of the services that have one
 * (libcurl's multi interface for HTTP, non-blocking connects for TCP, all on one thread, never
 * on a worker), rise/fall verdicts handed to the service owners, and the owners' ticks that
 * eject, return and ramp instances (passive health, slow start). */
#ifndef SLUICE_HEALTH_H
#define SLUICE_HEALTH_H

#include <stddef.h>
#include <stdint.h>

#include "health_conf.h"
#include "log.h"

struct owner;

/* One service the thread looks after. */
struct health_target {
    const char *name;                /* the service's NAME, for logs */
    struct owner *owner;             /* its instances, and where verdicts go */
    const struct health_conf *check; /* its check; kind NONE: the owner is only ticked */
};

/* Counters, for logs and metrics. */
struct health_stats {
    unsigned long long checks;   /* probes finished */
    unsigned long long failures; /* probes that failed */
    unsigned long long downs;    /* verdicts that took an instance out */
    unsigned long long ups;      /* verdicts that brought one back */
};

/* The thread and its probes; opaque. */
struct health;

/* Prepares the thread for n targets (copied; what they point to must outlive it; n may be 0)
 * and makes it the waker of every target's owner. Returns 0 with *out, or -ENOMEM. */
int health_create(const struct health_target *targets, size_t n, struct logger *log,
                  struct health **out);

/* One more target (copied, same rules), before or after health_start: the thread becomes its
 * owner's waker at once (call before the owner is shared) and takes it on its next pass (woken
 * now). 0 or -ENOMEM. Any thread. */
int health_add(struct health *h, const struct health_target *t);

/* Starts the thread ("sluice-health"). 0 or -errno. */
int health_start(struct health *h);

/* Stops and joins the thread (in-flight probes are abandoned); idempotent, NULL is fine. */
void health_stop(struct health *h);

/* Stops (if needed) and frees; NULL is fine. */
void health_destroy(struct health *h);

/* Wakes the thread (an owner's waker: a worker saw failures). Any thread, never blocks. */
void health_wake(void *h);

/* A copy of the counters. Any thread. */
void health_stats_get(const struct health *h, struct health_stats *out);

#endif
