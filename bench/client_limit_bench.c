/* client-limit-bench: ns per admit + release on a per-client table (src/stream/client_limit.c),
 * with both limits on (a cap and a rate, neither reached), by 1 and 2 threads over a pool of
 * random IPv4 clients, and 2 threads on one client with the cap only (every operation on the
 * same group lock). Each admission reads CLOCK_MONOTONIC_COARSE, as admit_check does on the
 * accept path. Prints one JSON line per case. */
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client_limit.h"

#define POOL_MAX 65536

struct run {
    struct client_limit *t;            /* shared by the threads */
    const struct sockaddr_in *clients; /* pool */
    size_t n_clients;                  /* entries in clients, a power of two */
    size_t ops;                        /* per thread */
    struct client_limits lim;          /* what is enforced */
    uint64_t refused;                  /* admissions refused (must stay 0) */
    uint64_t cpu_ns;                   /* CPU time of the threads, summed */
};

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void *hammer(void *arg)
{
    struct run *r = arg;
    uint64_t refused = 0, cpu0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    uint32_t slot;

    for (size_t i = 0; i < r->ops; i++) {
        const struct sockaddr *c = (const struct sockaddr *)&r->clients[i & (r->n_clients - 1)];
        if (client_limit_admit(r->t, &r->lim, c, clock_ns(CLOCK_MONOTONIC_COARSE), &slot) !=
            CLIENT_PASS)
            refused++;
        client_limit_release(r->t, slot);
    }
    __atomic_add_fetch(&r->refused, refused, __ATOMIC_RELAXED);
    __atomic_add_fetch(&r->cpu_ns, clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0, __ATOMIC_RELAXED);
    return NULL;
}

/* Runs n_threads threads over n_clients clients: wall ns per operation of one thread (what one
 * accept pays, contention included, but also time the machine gave to other processes) into
 * *wall_ns, CPU ns per operation (spinning included; what a shared machine cannot inflate) into
 * *cpu_ns. */
static void measure(struct sockaddr_in *pool, size_t n_clients, int n_threads, size_t ops,
                    double *wall_ns, double *cpu_ns, uint64_t *refused)
{
    pthread_t th[2];
    struct run r = {.t = client_limit_create(65536, 64, NULL),
                    .clients = pool,
                    .n_clients = n_clients,
                    .ops = ops,
                    .lim = {.max_conns = 1000}};

    if (r.t == NULL)
        exit(1);
    if (n_clients > 1) { /* 1 M/s per client: a pool of 4,096 never gets near it */
        r.lim.rate = 1000000;
        r.lim.burst = 1000000;
    }
    uint64_t t0 = clock_ns(CLOCK_MONOTONIC);
    for (int i = 0; i < n_threads; i++)
        if (pthread_create(&th[i], NULL, hammer, &r) != 0)
            exit(1);
    for (int i = 0; i < n_threads; i++)
        pthread_join(th[i], NULL);
    *wall_ns = (double)(clock_ns(CLOCK_MONOTONIC) - t0) / (double)ops;
    *cpu_ns = (double)r.cpu_ns / (double)(ops * (size_t)n_threads);
    client_limit_drop(r.t);
    *refused = r.refused;
}

int main(int argc, char **argv)
{
    size_t ops = argc > 1 ? strtoul(argv[1], NULL, 10) : 10000000;
    size_t n_clients = 4096; /* a power of two, below the table's 65,536 entries */
    static struct sockaddr_in pool[POOL_MAX];
    uint64_t x = 0x9e3779b97f4a7c15ULL;

    for (size_t i = 0; i < n_clients; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
        pool[i].sin_family = AF_INET;
        pool[i].sin_addr.s_addr = (uint32_t)x;
    }
    struct {
        const char *name;
        size_t clients;
        int threads;
    } cases[] = {{"pool_1_thread", n_clients, 1},
                 {"pool_2_threads", n_clients, 2},
                 {"one_client_2_threads", 1, 2}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t refused;
        double wall, cpu;
        measure(pool, cases[i].clients, cases[i].threads, ops, &wall, &cpu, &refused);
        printf("{\"case\":\"%s\",\"threads\":%d,\"clients\":%zu,\"ops_per_thread\":%zu,"
               "\"wall_ns_per_op\":%.1f,\"cpu_ns_per_op\":%.1f,\"refused\":%llu}\n",
               cases[i].name, cases[i].threads, cases[i].clients, ops, wall, cpu,
               (unsigned long long)refused);
    }
    return 0;
}
