/* libsluice's cost: sluice_get_service_instance + sluice_release_instance on a cache hit (ns
 * per pair, per thread), and the first lookup of a service (a cache miss, ms).
 *
 *   mesh-bench --consul HOST:PORT --service NAME [--threads N] [--seconds S]
 *   mesh-bench --consul HOST:PORT --miss PREFIX --count K
 *
 * Hit mode: N threads pick and release in a loop for S seconds after one warm-up pick each;
 * prints one JSON line with the pairs done, ns per pair per thread and in all. Miss mode: one
 * fresh mesh per name PREFIX0..PREFIX<K-1>, the first pick of each timed; prints the times. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sluice.h>

struct worker {
    struct sluice_mesh *mesh;
    const char *service;
    double seconds;
    unsigned long long pairs;
    int errors;
};

static atomic_int go;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Picks and releases until the time is up; checks the clock every 1024 pairs. */
static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct sluice_instance in;

    while (!atomic_load(&go))
        ;
    double end = now_s() + w->seconds;
    do {
        for (int i = 0; i < 1024; i++) {
            if (sluice_get_service_instance(w->mesh, w->service, NULL, &in) != 0) {
                w->errors++;
                continue;
            }
            sluice_release_instance(w->mesh, &in, SLUICE_CONNECTED);
            w->pairs++;
        }
    } while (now_s() < end);
    return NULL;
}

static struct sluice_mesh *mesh_or_die(const char *consul)
{
    char err[256];
    struct sluice_mesh_options o = {.consul = consul};
    struct sluice_mesh *m = sluice_mesh_create(&o, err, sizeof(err));

    if (m == NULL) {
        fprintf(stderr, "mesh-bench: %s\n", err);
        exit(1);
    }
    return m;
}

static int hits(const char *consul, const char *service, int threads, double seconds)
{
    struct sluice_mesh *m = mesh_or_die(consul);
    struct worker w[64];
    pthread_t t[64];
    struct sluice_instance in;

    if (sluice_get_service_instance(m, service, NULL, &in) != 0) {
        fprintf(stderr, "mesh-bench: %s\n", sluice_mesh_last_error());
        return 1;
    }
    sluice_release_instance(m, &in, SLUICE_CONNECTED);
    for (int i = 0; i < threads; i++) {
        w[i] = (struct worker){.mesh = m, .service = service, .seconds = seconds};
        pthread_create(&t[i], NULL, worker_main, &w[i]);
    }
    double t0 = now_s();
    atomic_store(&go, 1);
    unsigned long long pairs = 0;
    int errors = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        pairs += w[i].pairs;
        errors += w[i].errors;
    }
    double took = now_s() - t0;
    struct sluice_stats s;
    sluice_mesh_stats(m, &s);
    printf("{\"mode\":\"hit\",\"threads\":%d,\"seconds\":%.3f,\"pairs\":%llu,\"errors\":%d,"
           "\"ns_per_pair_per_thread\":%.1f,\"pairs_per_s\":%.0f,\"cache_hits\":%llu,"
           "\"cache_misses\":%llu}\n",
           threads, took, pairs, errors, took * 1e9 * threads / (double)pairs,
           (double)pairs / took, s.cache_hits, s.cache_misses);
    sluice_mesh_destroy(m);
    return errors != 0;
}

static int misses(const char *consul, const char *prefix, int count)
{
    char name[128];
    struct sluice_instance in;

    printf("{\"mode\":\"miss\",\"ms\":[");
    for (int i = 0; i < count; i++) {
        struct sluice_mesh *m = mesh_or_die(consul);
        snprintf(name, sizeof(name), "%s%d", prefix, i);
        double t0 = now_s();
        int rc = sluice_get_service_instance(m, name, NULL, &in);
        double ms = (now_s() - t0) * 1e3;
        if (rc != 0) {
            fprintf(stderr, "mesh-bench: %s: %s\n", name, sluice_mesh_last_error());
            return 1;
        }
        sluice_release_instance(m, &in, SLUICE_CONNECTED);
        printf(i ? ",%.3f" : "%.3f", ms);
        sluice_mesh_destroy(m);
    }
    printf("]}\n");
    return 0;
}

int main(int argc, char **argv)
{
    const char *consul = NULL, *service = NULL, *miss = NULL;
    int threads = 1, count = 20;
    double seconds = 3;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--consul") == 0)
            consul = argv[i + 1];
        else if (strcmp(argv[i], "--service") == 0)
            service = argv[i + 1];
        else if (strcmp(argv[i], "--threads") == 0)
            threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--miss") == 0)
            miss = argv[i + 1];
        else if (strcmp(argv[i], "--count") == 0)
            count = atoi(argv[i + 1]);
    }
    if (consul == NULL || (service == NULL && miss == NULL) || threads < 1 || threads > 64) {
        fprintf(stderr, "usage: mesh-bench --consul HOST:PORT (--service NAME [--threads N] "
                        "[--seconds S] | --miss PREFIX [--count K])\n");
        return 2;
    }
    return miss != NULL ? misses(consul, miss, count) : hits(consul, service, threads, seconds);
}
