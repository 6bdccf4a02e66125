/* Soak load: one thread with one epoll set keeping N echo connections open through sluice, each
 * streaming its own pattern and checking every byte that comes back, reopening those that end.
 * A connection that ends early is a cut by an instance kill only when the instance it reached
 * (named by its backend's hello line) was being killed while it was open; anything else is
 * lost. */
#ifndef SLUICE_TEST_SOAK_LOAD_H
#define SLUICE_TEST_SOAK_LOAD_H

#include <stdint.h>

#define SOAK_MAX_INSTANCES 16 /* hello "a0".."a7" are instances 0..7, "s0".."s7" are 8..15 */
#define SOAK_MAX_PORTS     4  /* listeners the load spreads its connections over */

/* What the load saw so far; every counter only grows. */
struct soak_counts {
    uint64_t opened;           /* connections opened */
    uint64_t completed;        /* every byte sent came back intact, then a clean EOF */
    uint64_t cut_by_kill;      /* ended early on an instance killed while it was open */
    uint64_t cut_before_hello; /* ended before the hello while some instance was killed */
    uint64_t lost;             /* ended early on an instance nobody killed: a failure */
    uint64_t no_hello;         /* ended before the hello with no kill meanwhile: a failure */
    uint64_t corrupt;          /* a wrong or surplus byte came back: a failure */
    uint64_t connect_errors;   /* sluice refused or failed the connect: a failure */
    uint64_t stuck;            /* still open when the drain ran out of time: a failure */
    uint64_t bytes_verified;   /* echoed bytes checked against the pattern */
    uint64_t open_now;         /* connections open at this moment */
    char first_problem[256];   /* the first failure, in words ("" when none) */
};

struct soak_load;

/* Creates the load: conns connections spread round-robin over ports[n_ports] (listeners whose
 * backends are `sluice-backend --mode echo --hello a<i>|s<i>`), sending at most rate bytes a
 * second in all. NULL when out of memory or the arguments are wrong. Main thread. */
struct soak_load *soak_load_create(const int *ports, int n_ports, int conns, uint64_t rate);

/* Starts the load's thread. 0 or -errno. */
int soak_load_start(struct soak_load *l);

/* Stops opening connections, ends every open one where it stands (half-close, then the rest of
 * its echo is read and checked) and joins the thread once none is open or timeout_ms passed
 * (the rest count as stuck). Then counts are final. 0, or -1 when some were stuck. */
int soak_load_drain(struct soak_load *l, int timeout_ms);

/* Copies the counts (any thread; while running they are a moment's view). */
void soak_load_counts(struct soak_load *l, struct soak_counts *out);

/* To call around killing instance i (0..SOAK_MAX_INSTANCES-1): begin before the signal, done
 * once the process is reaped. A connection ended early counts as cut by a kill when a kill of
 * its instance (of any instance, before the hello) had begun when it ended and was not done
 * when it opened: its life and the kill overlapped. Any thread. */
void soak_load_kill_begin(struct soak_load *l, int instance);
void soak_load_kill_done(struct soak_load *l, int instance);

/* Frees a load that is not running (never started, or drained). Accepts NULL. */
void soak_load_destroy(struct soak_load *l);

/* Instance index of a hello line ("a3" -> 3, "s1" -> 9), or -1. */
int soak_instance_of_hello(const char *hello);

#endif
