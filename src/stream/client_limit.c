/* Per-client limits: a set-associative table of client entries under one small lock per group.
 *
 * Why this shape: every worker admits and releases clients of the same listener, so the state is
 * shared; a global lock would serialise every accept of every worker. A client's 16-byte key, its
 * open count and its bucket must change together with the choice of a free or evictable entry,
 * which lock-free slots (a 128-bit key CAS, then the counters) make hard to get right. So the
 * table is split into groups of CLIENT_LIMIT_WAYS entries, the seeded hash of the key picks a
 * group, and each group has its own spinlock: two workers contend only when their clients fall
 * into the same group (1 in n_groups), and the critical section is a scan of 8 entries with no
 * syscall in it. The probe is the group, so it is bounded. Entries are never deleted, only
 * replaced, so a slot handed to a session names the same client until that session releases it.
 *
 * The token bucket is GCRA (the generic cell rate algorithm): one "theoretical arrival time" per
 * entry instead of a token count and a timestamp; a connection at t is allowed when
 * max(tat, t) + T - t <= burst * T (T = 1 s / rate), and the bucket is full when tat <= t. */
#include "client_limit.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "clock.h"

#define NS_PER_S         1000000000ULL
#define LOCK_SPINS       64 /* pauses before a waiter yields its CPU (the holder may be preempted) */
#define CACHE_LINE_BYTES 64

/* One client: 32 bytes, two per cache line. */
struct client_entry {
    uint8_t key[16]; /* IPv6 form: ::ffff:a.b.c.d for IPv4, else the masked prefix */
    uint64_t tat_ns; /* GCRA's theoretical arrival time; <= now: the bucket is full */
    uint32_t conns;  /* connections open (counted only with a max_conns) */
    uint32_t used;   /* 1 once a client took this entry */
};

struct client_limit {
    atomic_uint refs;             /* listener versions sharing the table */
    uint32_t n_groups;            /* groups of CLIENT_LIMIT_WAYS entries */
    uint32_t size;                /* client_table_size as configured (for client_limit_same) */
    unsigned prefix;              /* client_ipv6_prefix */
    uint64_t k0, k1;              /* SipHash key, random per table */
    uint8_t mask[16];             /* IPv6 prefix mask */
    struct client_entry *entries; /* n_groups * CLIENT_LIMIT_WAYS */
    atomic_uint *locks;           /* one per group: 0 free, 1 held */
    /* rare events, on their own line so they do not bounce with refs */
    _Alignas(CACHE_LINE_BYTES) atomic_ullong used; /* entries in use */
    atomic_ullong evictions;                       /* idle entries replaced */
    atomic_ullong full;                            /* admitted untracked */
};

/* --- the hash: SipHash-1-3 of the 16-byte key, so clients cannot choose colliding groups ---- */

static inline uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

/* One SipHash round over the state v[0..3]. */
static inline void sip_round(uint64_t v[4])
{
    v[0] += v[1], v[1] = rotl(v[1], 13), v[1] ^= v[0], v[0] = rotl(v[0], 32);
    v[2] += v[3], v[3] = rotl(v[3], 16), v[3] ^= v[2];
    v[0] += v[3], v[3] = rotl(v[3], 21), v[3] ^= v[0];
    v[2] += v[1], v[1] = rotl(v[1], 17), v[1] ^= v[2], v[2] = rotl(v[2], 32);
}

static uint64_t key_hash(const struct client_limit *t, const uint8_t key[16])
{
    uint64_t v[4] = {t->k0 ^ 0x736f6d6570736575ULL, t->k1 ^ 0x646f72616e646f6dULL,
                     t->k0 ^ 0x6c7967656e657261ULL, t->k1 ^ 0x7465646279746573ULL};
    uint64_t m[3];

    memcpy(&m[0], key, 8);
    memcpy(&m[1], key + 8, 8);
    m[2] = 16ULL << 56; /* the length block */
    for (int i = 0; i < 3; i++) {
        v[3] ^= m[i];
        sip_round(v);
        v[0] ^= m[i];
    }
    v[2] ^= 0xff;
    for (int i = 0; i < 3; i++)
        sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* --- group locks ------------------------------------------------------------------------ */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void group_lock(atomic_uint *l)
{
    for (unsigned spins = 0;; spins++) {
        if (atomic_load_explicit(l, memory_order_relaxed) == 0 &&
            atomic_exchange_explicit(l, 1, memory_order_acquire) == 0)
            return;
        if (spins < LOCK_SPINS) {
            cpu_relax();
        } else {
            sched_yield();
            spins = 0;
        }
    }
}

static void group_unlock(atomic_uint *l)
{
    atomic_store_explicit(l, 0, memory_order_release);
}

/* --- table ------------------------------------------------------------------------------ */

static void prefix_mask(uint8_t mask[16], unsigned prefix)
{
    for (unsigned i = 0; i < 16; i++) {
        unsigned keep = prefix >= 8 * (i + 1) ? 8 : (prefix > 8 * i ? prefix - 8 * i : 0);
        mask[i] = (uint8_t)(0xff00u >> keep);
    }
}

static void random_seed(uint64_t out[2])
{
    if (getrandom(out, 2 * sizeof(out[0]), 0) == (ssize_t)(2 * sizeof(out[0])))
        return;
    /* no entropy source (a very old kernel, a seccomp filter): still differs per process */
    uint64_t s = rng_seed();
    out[0] = rng_next(&s);
    out[1] = rng_next(&s);
}

struct client_limit *client_limit_create(uint32_t size, unsigned ipv6_prefix,
                                         const uint64_t seed[2])
{
    assert(ipv6_prefix >= 1 && ipv6_prefix <= 128);
    assert(size >= 1 && size <= CLIENT_LIMIT_SIZE_MAX);
    struct client_limit *t = aligned_alloc(CACHE_LINE_BYTES, sizeof(*t));
    uint64_t k[2];

    if (t == NULL)
        return NULL;
    memset(t, 0, sizeof(*t));
    t->n_groups = (size + CLIENT_LIMIT_WAYS - 1) / CLIENT_LIMIT_WAYS;
    /* calloc: untouched pages of a large table cost no resident memory */
    t->entries = calloc((size_t)t->n_groups * CLIENT_LIMIT_WAYS, sizeof(*t->entries));
    t->locks = calloc(t->n_groups, sizeof(*t->locks));
    if (t->entries == NULL || t->locks == NULL) {
        free(t->entries);
        free(t->locks);
        free(t);
        return NULL;
    }
    if (seed != NULL)
        memcpy(k, seed, sizeof(k));
    else
        random_seed(k);
    t->k0 = k[0];
    t->k1 = k[1];
    t->size = size;
    t->prefix = ipv6_prefix;
    prefix_mask(t->mask, ipv6_prefix);
    atomic_init(&t->refs, 1);
    return t;
}

void client_limit_hold(struct client_limit *t)
{
    unsigned before = atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    assert(before > 0);
    (void)before;
}

void client_limit_drop(struct client_limit *t)
{
    if (t == NULL)
        return;
    unsigned before = atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel);
    assert(before > 0);
    if (before == 1) {
        free(t->entries);
        free(t->locks);
        free(t);
    }
}

bool client_limit_same(const struct client_limit *t, uint32_t size, unsigned ipv6_prefix)
{
    return t->size == size && t->prefix == ipv6_prefix;
}

/* The key of a client: IPv4 as ::ffff:a.b.c.d (so a mapped IPv6 address is the same client),
 * IPv6 masked to the prefix. false for another family. */
static bool client_key(const struct client_limit *t, const struct sockaddr *sa, uint8_t key[16])
{
    if (sa->sa_family == AF_INET) {
        memset(key, 0, 10);
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->sa_family != AF_INET6)
        return false;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    memcpy(key, a, 16);
    if (!IN6_IS_ADDR_V4MAPPED(a))
        for (int i = 0; i < 16; i++)
            key[i] &= t->mask[i];
    return true;
}

static uint32_t group_of(const struct client_limit *t, const uint8_t key[16])
{
    /* the high 32 bits scaled onto [0, n_groups): no power-of-two size needed */
    return (uint32_t)(((key_hash(t, key) >> 32) * t->n_groups) >> 32);
}

/* Idle: nothing open and a full bucket, so forgetting it changes no limit. */
static bool entry_idle(const struct client_entry *e, uint64_t now_ns)
{
    return e->conns == 0 && e->tat_ns <= now_ns;
}

/* The way of key in group g: its own, else a free one, else the idle one with the oldest
 * bucket (reset for key); -1 when every way is busy. Group lock held. */
static int group_find(struct client_limit *t, uint32_t g, const uint8_t key[16], uint64_t now_ns)
{
    struct client_entry *ways = &t->entries[(size_t)g * CLIENT_LIMIT_WAYS];
    int free_way = -1, idle_way = -1;

    for (int i = 0; i < CLIENT_LIMIT_WAYS; i++) {
        if (!ways[i].used) {
            free_way = free_way < 0 ? i : free_way;
        } else if (memcmp(ways[i].key, key, 16) == 0) {
            return i;
        } else if (entry_idle(&ways[i], now_ns) &&
                   (idle_way < 0 || ways[i].tat_ns < ways[idle_way].tat_ns)) {
            idle_way = i;
        }
    }
    int way = free_way >= 0 ? free_way : idle_way;
    if (way < 0)
        return -1;
    atomic_fetch_add_explicit(free_way >= 0 ? &t->used : &t->evictions, 1, memory_order_relaxed);
    memcpy(ways[way].key, key, 16);
    ways[way].tat_ns = 0;
    ways[way].conns = 0;
    ways[way].used = 1;
    return way;
}

/* GCRA: takes a token at now_ns if the bucket has one. */
static bool bucket_take(struct client_entry *e, const struct client_limits *lim, uint64_t now_ns)
{
    uint64_t interval = NS_PER_S / lim->rate; /* rate <= 1e6: at least 1000 ns */
    uint64_t base = e->tat_ns > now_ns ? e->tat_ns : now_ns;

    if (base + interval - now_ns > (uint64_t)lim->burst * interval)
        return false;
    e->tat_ns = base + interval;
    return true;
}

enum client_verdict client_limit_admit(struct client_limit *t, const struct client_limits *lim,
                                       const struct sockaddr *client, uint64_t now_ns,
                                       uint32_t *slot)
{
    uint8_t key[16];
    enum client_verdict v = CLIENT_PASS;

    *slot = CLIENT_LIMIT_NONE;
    if (!client_limits_on(lim) || !client_key(t, client, key))
        return CLIENT_PASS;
    assert(lim->rate == 0 || lim->burst >= 1);
    uint32_t g = group_of(t, key);
    group_lock(&t->locks[g]);
    int way = group_find(t, g, key, now_ns);
    if (way < 0) {
        /* every entry of the group has connections open or tokens owed: a flood of distinct
         * addresses, each of which is under its own limit; admitting it untracked keeps the
         * limits of every tracked client (none of them is evicted) and refuses no one unfairly */
        group_unlock(&t->locks[g]);
        atomic_fetch_add_explicit(&t->full, 1, memory_order_relaxed);
        return CLIENT_PASS;
    }
    struct client_entry *e = &t->entries[(size_t)g * CLIENT_LIMIT_WAYS + (unsigned)way];
    /* the cap first: a client at its cap spends no token on connections it cannot open */
    if (lim->max_conns > 0 && e->conns >= lim->max_conns)
        v = CLIENT_OVER_CONNS;
    else if (lim->rate > 0 && !bucket_take(e, lim, now_ns))
        v = CLIENT_OVER_RATE;
    else if (lim->max_conns > 0) {
        e->conns++;
        *slot = g * CLIENT_LIMIT_WAYS + (unsigned)way;
    }
    group_unlock(&t->locks[g]);
    return v;
}

void client_limit_release(struct client_limit *t, uint32_t slot)
{
    if (slot == CLIENT_LIMIT_NONE)
        return;
    assert(slot < t->n_groups * CLIENT_LIMIT_WAYS);
    atomic_uint *l = &t->locks[slot / CLIENT_LIMIT_WAYS];
    group_lock(l);
    assert(t->entries[slot].used && t->entries[slot].conns > 0);
    t->entries[slot].conns--;
    group_unlock(l);
}

uint32_t client_limit_open(struct client_limit *t, const struct sockaddr *client)
{
    uint8_t key[16];
    uint32_t open = 0;

    if (!client_key(t, client, key))
        return 0;
    uint32_t g = group_of(t, key);
    const struct client_entry *ways = &t->entries[(size_t)g * CLIENT_LIMIT_WAYS];
    group_lock(&t->locks[g]);
    for (int i = 0; i < CLIENT_LIMIT_WAYS; i++)
        if (ways[i].used && memcmp(ways[i].key, key, 16) == 0)
            open = ways[i].conns;
    group_unlock(&t->locks[g]);
    return open;
}

void client_limit_stats(const struct client_limit *t, struct client_limit_stats *out)
{
    out->capacity = t->n_groups * CLIENT_LIMIT_WAYS;
    out->entries = atomic_load_explicit(&t->used, memory_order_relaxed);
    out->evictions = atomic_load_explicit(&t->evictions, memory_order_relaxed);
    out->table_full = atomic_load_explicit(&t->full, memory_order_relaxed);
}
