/* Deterministic, seekable byte stream and FNV-1a checksums shared by the bench tools and tests. */
#ifndef SLUICE_BENCH_PATTERN_H
#define SLUICE_BENCH_PATTERN_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * The stream for seed S is byte (rot(S) + off) mod PATTERN_PERIOD of one table of splitmix64
 * words. The period is 1 MiB + 8 so that a forwarder that repeats, drops or reorders any
 * power-of-two sized block is caught, and the table is stored twice so that any window of up
 * to one period is contiguous: senders hand it straight to send() and receivers memcmp() it.
 */
#define PATTERN_PERIOD (((size_t)1 << 20) + 8)

/* FNV-1a 64-bit offset basis: the checksum of the empty string. */
#define FNV1A64_INIT 0xcbf29ce484222325ULL

/* One splitmix64 step: advances *state and returns the next well-mixed word. */
static inline uint64_t pattern_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Fills the doubled table: two copies of PATTERN_PERIOD bytes of little-endian words. */
static inline void pattern_table_build(unsigned char *table)
{
    uint64_t state = 0x736c75696365ULL; /* "sluice": fixed so every process agrees */
    for (size_t i = 0; i < PATTERN_PERIOD; i += 8) {
        uint64_t w = pattern_splitmix64(&state);
        for (size_t b = 0; b < 8; b++)
            table[i + b] = (unsigned char)(w >> (8 * b));
    }
    memcpy(table + PATTERN_PERIOD, table, PATTERN_PERIOD);
}

/* Returns the doubled table, building it on first use; safe to call from any thread. */
static inline const unsigned char *pattern_table(void)
{
    static unsigned char table[2 * PATTERN_PERIOD];
    static int state; /* 0 empty, 1 being built, 2 ready */
    int expected = 0;

    if (__atomic_load_n(&state, __ATOMIC_ACQUIRE) == 2)
        return table;
    if (__atomic_compare_exchange_n(&state, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        pattern_table_build(table);
        __atomic_store_n(&state, 2, __ATOMIC_RELEASE);
    }
    while (__atomic_load_n(&state, __ATOMIC_ACQUIRE) != 2)
        sched_yield();
    return table;
}

/*
 * Returns a pointer to the stream of `seed` at absolute offset `off`; *avail receives how many
 * bytes are contiguous there (always more than PATTERN_PERIOD). The memory is static and
 * read-only; any thread may call this.
 */
static inline const unsigned char *pattern_view(uint64_t seed, uint64_t off, size_t *avail)
{
    uint64_t mix = seed;
    size_t start = (size_t)((pattern_splitmix64(&mix) % PATTERN_PERIOD + off % PATTERN_PERIOD) %
                            PATTERN_PERIOD);
    *avail = 2 * PATTERN_PERIOD - start;
    return pattern_table() + start;
}

/* Writes `len` bytes of the stream of `seed`, starting at stream offset `off`, into buf. */
static inline void pattern_fill(uint64_t seed, uint64_t off, void *buf, size_t len)
{
    unsigned char *out = (unsigned char *)buf;
    while (len > 0) {
        size_t avail;
        const unsigned char *src = pattern_view(seed, off, &avail);
        size_t n = len < avail ? len : avail;
        memcpy(out, src, n);
        out += n;
        off += n;
        len -= n;
    }
}

/* Returns the index of the first differing byte of two equal-length buffers known to differ. */
static inline size_t pattern_first_diff(const unsigned char *a, const unsigned char *b, size_t n)
{
    size_t i = 0;
    while (i + 64 <= n && memcmp(a + i, b + i, 64) == 0)
        i += 64;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/*
 * Checks that buf holds `len` bytes of the stream of `seed` starting at stream offset `off`.
 * Returns -1 if it does, else the absolute stream offset (off + index) of the first wrong byte.
 */
static inline int64_t pattern_check(uint64_t seed, uint64_t off, const void *buf, size_t len)
{
    const unsigned char *in = (const unsigned char *)buf;
    while (len > 0) {
        size_t avail;
        const unsigned char *want = pattern_view(seed, off, &avail);
        size_t n = len < avail ? len : avail;
        if (memcmp(in, want, n) != 0)
            return (int64_t)(off + pattern_first_diff(in, want, n));
        in += n;
        off += n;
        len -= n;
    }
    return -1;
}

/* Folds `len` bytes into the running FNV-1a 64 checksum `hash` (start from FNV1A64_INIT). */
static inline uint64_t fnv1a64_update(uint64_t hash, const void *buf, size_t len)
{
    const unsigned char *p = (const unsigned char *)buf;
    for (size_t i = 0; i < len; i++) {
        hash ^= p[i];
        hash *= 0x100000001b3ULL;
    }
    return hash;
}

/* Returns the FNV-1a 64 checksum of one buffer. */
static inline uint64_t fnv1a64(const void *buf, size_t len)
{
    return fnv1a64_update(FNV1A64_INIT, buf, len);
}

#endif
