/* Time, randomness and retry pacing shared by the background threads: a monotonic clock, a
 * small per-owner random generator and capped exponential backoff with jitter. No state of its
 * own: every generator is its owner's. Any thread. */
#ifndef SLUICE_CLOCK_H
#define SLUICE_CLOCK_H

#include <stdint.h>

/* Monotonic time in milliseconds / microseconds. */
uint64_t clock_ms(void);
uint64_t clock_us(void);

/* now + ms, saturated at UINT64_MAX: a deadline never wraps into the past, whatever ms is. Pure. */
uint64_t clock_deadline(uint64_t now, uint64_t ms);

/* A non-zero seed for rng_next, different per call site and process. */
uint64_t rng_seed(void);

/* Next value of a xorshift64 generator (*state must not be 0). Not for secrets. */
uint64_t rng_next(uint64_t *state);

/* Delay before retry number failures (1 = first retry): min_ms * 2^(failures-1) capped at max_ms,
 * then "equal jitter": a value in [d/2, d] picked by random. 0 for failures == 0. */
uint64_t backoff_ms(unsigned failures, uint64_t min_ms, uint64_t max_ms, uint64_t random);

#endif
