/* Monotonic clock, xorshift random numbers and backoff with jitter. */
#include "clock.h"

#include <time.h>
#include <unistd.h>

uint64_t clock_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t clock_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

uint64_t rng_seed(void)
{
    struct timespec ts;
    uint64_t seed;

    clock_gettime(CLOCK_REALTIME, &ts);
    seed = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL ^ (uint64_t)ts.tv_sec ^
           ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&ts;
    return seed != 0 ? seed : 0x2545F4914F6CDD1DULL;
}

uint64_t rng_next(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

uint64_t backoff_ms(unsigned failures, uint64_t min_ms, uint64_t max_ms, uint64_t random)
{
    uint64_t d = min_ms;

    if (failures == 0) {
        return 0;
    }
    for (unsigned i = 1; i < failures && d < max_ms; i++) {
        d = d > max_ms / 2 ? max_ms : d * 2;
    }
    d = d < max_ms ? d : max_ms;
    return d / 2 + random % (d - d / 2 + 1);
}

uint64_t clock_deadline(uint64_t now, uint64_t ms)
{
    return ms > UINT64_MAX - now ? UINT64_MAX : now + ms;
}
