/* pick-bench: ns of the per-connection shared accounting a worker does, without any I/O: the
 * open-connection budget (take, give), a pick in a read section, the instance's use (begin,
 * connected, the session's bytes, end). By 1 and 2 threads, each pinned to its own CPU, for
 * round_robin and least_connections over 1 and 4 instances. With 2 threads every write to a
 * line the other thread also writes moves that line between the cores: the figure this bench
 * exists for (README, "Scaling past two cores"). Prints one JSON line per case. */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "balancer.h"
#include "instance_use.h"
#include "session.h"
#include "snapshot.h"

struct run {
    struct instance_set *slot; /* the published set */
    struct conn_budget *budget;
    size_t ops;      /* per thread */
    unsigned worker; /* first thread's worker number; thread t uses worker + t */
    uint64_t wall_ns[2];
};

static uint64_t clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

struct thread_arg {
    struct run *r;
    unsigned t;
};

/* One connection's accounting, as session.c and worker.c do it. */
static void one_connection(struct run *r, struct instance_user *u, struct lb_scratch *sc,
                           uint64_t *rng)
{
    struct lb_ctx ctx = {.rng = rng, .shard = u->shard};

    if (!conn_budget_take(r->budget, u->shard))
        abort();
    snapshot_read_lock();
    const struct instance_set *set = snapshot_load(&r->slot);
    long i = lb_pick(set, sc, &ctx);
    if (i < 0)
        abort();
    struct instance_state *st = set->inst[i].state;
    instance_use_begin(st, u);
    snapshot_read_unlock();
    instance_use_connected(st, u);
    instance_use_bytes(st, u, 100, 200);
    instance_use_end(st, u);
    conn_budget_give(r->budget, u->shard);
}

static void *hammer(void *arg)
{
    struct thread_arg *a = arg;
    struct run *r = a->r;
    struct instance_user u;
    struct lb_scratch sc;
    uint64_t rng = 0x9e3779b97f4a7c15ULL + a->t;
    cpu_set_t cpus;

    CPU_ZERO(&cpus);
    CPU_SET(a->t, &cpus);
    (void)pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
    snapshot_reader_register();
    instance_user_init(&u, r->worker + a->t);
    lb_scratch_init(&sc, a->t);
    uint64_t t0 = clock_ns();
    for (size_t k = 0; k < r->ops; k++)
        one_connection(r, &u, &sc, &rng);
    r->wall_ns[a->t] = clock_ns() - t0;
    instance_user_finish(&u);
    lb_scratch_free(&sc);
    snapshot_reader_unregister();
    return NULL;
}

static struct instance_set *make_set(const struct lb_ops *lb, size_t n)
{
    struct instance_set *set = snapshot_set_create(lb, n);
    for (size_t i = 0; i < n; i++) {
        struct net_addr addr;
        char id[32];
        snprintf(id, sizeof(id), "127.0.0.1:%zu", 10000 + i);
        if (net_addr_parse(id, &addr) != NULL)
            abort();
        set->inst[i].addr = addr;
        set->inst[i].weight = 1;
        set->inst[i].state = instance_state_create(id, &addr);
    }
    if (set == NULL || snapshot_set_seal(set) != 0)
        abort();
    return set;
}

static double run_case(const struct lb_ops *lb, size_t n, unsigned threads, size_t ops)
{
    struct conn_budget budget;
    struct run r = {.ops = ops, .worker = 1, .budget = &budget};
    pthread_t th[2];
    struct thread_arg args[2];

    if (conn_budget_init(&budget, 100000, 3) != 0)
        abort();
    r.slot = make_set(lb, n);
    for (unsigned t = 0; t < threads; t++) {
        args[t] = (struct thread_arg){.r = &r, .t = t};
        pthread_create(&th[t], NULL, hammer, &args[t]);
    }
    uint64_t wall = 0;
    for (unsigned t = 0; t < threads; t++) {
        pthread_join(th[t], NULL);
        wall = r.wall_ns[t] > wall ? r.wall_ns[t] : wall;
    }
    if (conn_budget_open(&budget) != 0)
        abort();
    snapshot_set_free(r.slot);
    conn_budget_destroy(&budget);
    /* per connection and thread: what one worker pays for each of its connections */
    return (double)wall / (double)ops;
}

int main(int argc, char **argv)
{
    instance_shards_set_workers(2);
    size_t ops = argc > 1 ? strtoull(argv[1], NULL, 10) : 5000000;
    const struct lb_ops *lbs[] = {&lb_round_robin, &lb_least_connections};
    const size_t sizes[] = {1, 4};

    for (size_t b = 0; b < 2; b++)
        for (size_t s = 0; s < 2; s++)
            for (unsigned threads = 1; threads <= 2; threads++)
                printf(
                    "{\"balance\":\"%s\",\"instances\":%zu,\"threads\":%u,\"ns_per_conn\":%.1f}\n",
                    lbs[b]->name, sizes[s], threads, run_case(lbs[b], sizes[s], threads, ops));
    return 0;
}
