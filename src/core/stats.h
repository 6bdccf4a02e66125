/* Counters, declared once in a macro list that generates the fields, the names and the help. Each
 * worker owns one struct stats and is its only writer; other threads read it with relaxed loads. */
#ifndef SLUICE_STATS_H
#define SLUICE_STATS_H

#include <stdatomic.h>
#include <stdint.h>

/* X(name, help) */
#define STATS_LIST(X)                                                                              \
    X(accepted, "client connections accepted")                                                     \
    X(accept_paused, "times accepting paused (max_connections, EMFILE, ENFILE)")                   \
    X(accept_errors, "accept(2) failures other than EAGAIN")                                       \
    X(no_instance, "sessions closed because the service had no instance to use")                   \
    X(all_failed, "sessions closed because every instance tried failed to connect")                \
    X(all_full, "sessions closed because every instance was full and the queue off or full")       \
    X(queued, "sessions that waited in a service queue")                                           \
    X(queue_timeouts, "queued sessions closed by queue_timeout")                                   \
    X(drained, "sessions closed by drain_timeout after their instance left the set")               \
    X(lifetime_closed, "sessions closed by max_connection_lifetime")                               \
    X(connect_attempts, "upstream connect attempts")                                               \
    X(connect_failures, "upstream connects refused, failed or timed out")                          \
    X(connect_timeouts, "upstream connects that timed out")                                        \
    X(retries, "connect attempts on another instance after a failure")                             \
    X(sessions_established, "sessions whose upstream connected")                                   \
    X(sessions_closed, "sessions ended, for any reason")                                           \
    X(idle_timeouts, "sessions closed by idle_timeout")                                            \
    X(resets, "sessions ended by a reset or socket error")                                         \
    X(alloc_failures, "sessions closed because a buffer or pipe could not be had")                 \
    X(bytes_up, "bytes from clients to upstreams")                                                 \
    X(bytes_down, "bytes from upstreams to clients")                                               \
    X(spliced_up, "bytes from clients to upstreams moved by splice(2)")                            \
    X(spliced_down, "bytes from upstreams to clients moved by splice(2)")                          \
    X(splice_switches, "directions that switched to splice(2)")

#define STATS_FIELD(name, help) atomic_ullong name;
struct stats {
    STATS_LIST(STATS_FIELD)
};
#undef STATS_FIELD

/* Adds n to a counter of the calling thread's own struct: a plain load and store, no lock. */
#define STATS_ADD(st, field, n)                                                                    \
    atomic_store_explicit(&(st)->field,                                                            \
                          atomic_load_explicit(&(st)->field, memory_order_relaxed) +               \
                              (unsigned long long)(n),                                             \
                          memory_order_relaxed)

/* Adds every counter of from into to (to is the caller's private total). */
void stats_accumulate(struct stats *to, const struct stats *from);

/* Number of counters, and the name, help and value of counter i. */
unsigned stats_count(void);
const char *stats_name(unsigned i);
const char *stats_help(unsigned i);
unsigned long long stats_value(const struct stats *st, unsigned i);

#endif
