/* Log-linear latency histogram in fixed memory: 32 buckets per power of two (~3% error). */
#ifndef SLUICE_BENCH_HIST_H
#define SLUICE_BENCH_HIST_H

#include <stdint.h>
#include <string.h>

#define HIST_SUB_BITS 5
#define HIST_SUB      (1u << HIST_SUB_BITS)
/* Values at or above 2^(HIST_MAX_EXP + 1) ns (~36 min) land in the last bucket. */
#define HIST_MAX_EXP 41
#define HIST_BUCKETS ((HIST_MAX_EXP - HIST_SUB_BITS + 2) * HIST_SUB)

/* Recorded values, in nanoseconds. */
struct hist {
    uint64_t count;                 /* values recorded */
    uint64_t sum;                   /* their sum, for the mean */
    uint64_t min;                   /* smallest value (valid when count > 0) */
    uint64_t max;                   /* largest value */
    uint64_t buckets[HIST_BUCKETS]; /* counts per log-linear bucket */
};

/* Bucket of a value: exact below 2*HIST_SUB, then HIST_SUB linear steps per power of two. */
static inline unsigned hist_index(uint64_t v)
{
    unsigned e, shift;

    if (v < HIST_SUB)
        return (unsigned)v;
    e = 63u - (unsigned)__builtin_clzll(v);
    if (e > HIST_MAX_EXP)
        return HIST_BUCKETS - 1;
    shift = e - HIST_SUB_BITS;
    return (e - HIST_SUB_BITS + 1) * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
}

/* Smallest value that falls in bucket `i`. */
static inline uint64_t hist_bucket_low(unsigned i)
{
    unsigned group = i / HIST_SUB;

    if (group < 2)
        return i;
    return (uint64_t)(i % HIST_SUB + HIST_SUB) << (group - 1);
}

static inline void hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

static inline void hist_add(struct hist *h, uint64_t v)
{
    h->count++;
    h->sum += v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->buckets[hist_index(v)]++;
}

static inline void hist_merge(struct hist *to, const struct hist *from)
{
    to->count += from->count;
    to->sum += from->sum;
    if (from->min < to->min)
        to->min = from->min;
    if (from->max > to->max)
        to->max = from->max;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        to->buckets[i] += from->buckets[i];
}

/* Value at quantile q (0..1): the middle of its bucket, clamped to the observed range. */
static inline uint64_t hist_quantile(const struct hist *h, double q)
{
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999), seen = 0;

    if (h->count == 0)
        return 0;
    if (rank == 0)
        rank = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen < rank)
            continue;
        uint64_t low = hist_bucket_low(i);
        uint64_t high = i + 1 < HIST_BUCKETS ? hist_bucket_low(i + 1) : low + 1;
        uint64_t mid = low + (high - low) / 2;
        return mid < h->min ? h->min : mid > h->max ? h->max : mid;
    }
    return h->max;
}

#endif
