/* Names, help and aggregation for the counters of stats.h. */
#include "stats.h"

#include <stddef.h>

#define STATS_NAME(name, help)   #name,
#define STATS_HELP(name, help)   help,
#define STATS_OFFSET(name, help) offsetof(struct stats, name),
static const char *const stats_names[] = {STATS_LIST(STATS_NAME)};
static const char *const stats_helps[] = {STATS_LIST(STATS_HELP)};
static const size_t stats_offsets[] = {STATS_LIST(STATS_OFFSET)};

unsigned stats_count(void)
{
    return (unsigned)(sizeof(stats_names) / sizeof(stats_names[0]));
}

const char *stats_name(unsigned i)
{
    return stats_names[i];
}

const char *stats_help(unsigned i)
{
    return stats_helps[i];
}

unsigned long long stats_value(const struct stats *st, unsigned i)
{
    const atomic_ullong *c = (const atomic_ullong *)((const char *)st + stats_offsets[i]);
    return atomic_load_explicit(c, memory_order_relaxed);
}

void stats_accumulate(struct stats *to, const struct stats *from)
{
    for (unsigned i = 0; i < stats_count(); i++) {
        atomic_ullong *c = (atomic_ullong *)((char *)to + stats_offsets[i]);
        atomic_store_explicit(c,
                              atomic_load_explicit(c, memory_order_relaxed) + stats_value(from, i),
                              memory_order_relaxed);
    }
}
