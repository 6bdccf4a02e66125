/* libsluice against the Consul emulator: register, pick, release, deregister; cache misses and
 * hits; no healthy instance; Consul down with a warm and with a cold cache; picks from 8 threads
 * while the set changes; a registration rolled back; two meshes on two agents. Uses only the
 * public header, like any program. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sluice.h>

#include "consul_fixture.h"

#define N_BACKENDS 4
#define PICKERS    8

static char consul_addr[64];

static struct sluice_mesh *mesh_on(const char *addr, uint32_t lookup_ms)
{
    char err[256];
    struct sluice_mesh_options o = {
        .consul = addr, .lookup_timeout_ms = lookup_ms, .wait_ms = 2000};
    struct sluice_mesh *m = sluice_mesh_create(&o, err, sizeof(err));
    if (m == NULL)
        fail_msg("mesh: %s", err);
    return m;
}

static void instance_add(int i, const char *status)
{
    char body[1024];
    consul_instance_body(body, sizeof(body), i, "127.0.0.1", NULL, status, "");
    consul_emu_send("PUT", "/v1/catalog/register", body);
}

static void instance_remove(int i)
{
    char body[128];
    snprintf(body, sizeof(body), "{\"Node\":\"n%d\",\"ServiceID\":\"api-%d\"}", i, i);
    consul_emu_send("PUT", "/v1/catalog/deregister", body);
}

/* The backend index of a picked instance (by its port), or -1. */
static int backend_of(const struct sluice_instance *in)
{
    for (int i = 0; i < N_BACKENDS; i++)
        if (in->port == consul_fx.backend_ports[i])
            return i;
    return -1;
}

/* Picks until the result is rc_wanted (the watch follows Consul a moment later). */
static int pick_until(struct sluice_mesh *m, const char *svc, int rc_wanted,
                      struct sluice_instance *out)
{
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    int rc;
    while ((rc = sluice_get_service_instance(m, svc, NULL, out)) != rc_wanted &&
           harness_now_ms() < deadline) {
        if (rc == 0)
            sluice_release_instance(m, out, SLUICE_CONNECTED);
        sleep_ms(20);
    }
    return rc;
}

/* register -> in the agent -> picked -> connected (the hello backend names itself) -> released
 * and counted -> deregistered -> gone from the agent and, soon, from the picks. */
static void test_register_pick_release_deregister(void **state)
{
    (void)state;
    char id[SLUICE_ID_MAX], hello[32], path[256];
    struct sluice_instance in;
    struct sluice_mesh *m = mesh_on(consul_addr, 0);
    struct sluice_check check = {.kind = SLUICE_CHECK_TCP, .interval_ms = 100};
    const char *tags[] = {"v1"};
    struct sluice_kv meta[] = {{"team", "edge"}};
    struct sluice_service_config cfg = {.name = "web",
                                        .host = "127.0.0.1",
                                        .port = (uint16_t)consul_fx.backend_ports[2],
                                        .tags = tags,
                                        .n_tags = 1,
                                        .meta = meta,
                                        .n_meta = 1,
                                        .check = &check};

    assert_int_equal(sluice_register_service(m, &cfg, id, sizeof(id)), 0);
    snprintf(path, sizeof(path), "127.0.0.1:%d", consul_fx.backend_ports[2]);
    print_message("registered %s\n", id);
    assert_non_null(strstr(id, "web-127.0.0.1-"));
    char *services = consul_emu_get("/v1/agent/services");
    assert_non_null(strstr(services, id));
    assert_non_null(strstr(services, "edge")); /* the meta value */
    free(services);
    assert_int_equal(pick_until(m, "web", 0, &in), 0);
    assert_int_equal(in.port, consul_fx.backend_ports[2]);
    assert_string_equal(in.host, "127.0.0.1");
    int fd = socket(in.addr.ss_family, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (const struct sockaddr *)&in.addr, in.addr_len), 0);
    assert_int_equal(read_line(fd, hello, sizeof(hello)), 2);
    assert_string_equal(hello, "b2");
    close(fd);
    sluice_release_instance(m, &in, SLUICE_CONNECTED);
    struct sluice_instance_stats st[4];
    assert_int_equal(sluice_service_instances(m, "web", st, 4), 1);
    assert_int_equal(st[0].active, 0);
    assert_true(st[0].connects >= 1);
    assert_int_equal(sluice_deregister_service(m, id), 0);
    services = consul_emu_get("/v1/agent/services");
    assert_null(strstr(services, id));
    free(services);
    assert_int_equal(pick_until(m, "web", SLUICE_ERR_NO_INSTANCE, &in), SLUICE_ERR_NO_INSTANCE);
    struct sluice_stats s;
    assert_int_equal(sluice_mesh_stats(m, &s), 0);
    assert_int_equal(s.registrations, 1);
    assert_int_equal(s.registered, 1);
    assert_int_equal(s.deregistrations, 1);
    assert_true(s.consul_requests >= 1);
    sluice_mesh_destroy(m);
}

/* The first pick of a service asks Consul (a miss); the next 1000 come from the cache (hits),
 * and round_robin spreads them evenly over the two instances. */
static void test_cache_miss_then_hits(void **state)
{
    (void)state;
    struct sluice_instance in;
    struct sluice_stats s;
    int counts[N_BACKENDS] = {0};
    instance_add(0, "passing");
    instance_add(1, "passing");
    struct sluice_mesh *m = mesh_on(consul_addr, 0);

    assert_int_equal(sluice_get_service_instance(m, "api", NULL, &in), 0);
    sluice_release_instance(m, &in, SLUICE_CONNECTED);
    assert_int_equal(sluice_mesh_stats(m, &s), 0);
    assert_int_equal(s.cache_misses, 1);
    assert_int_equal(s.cache_hits, 0);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(sluice_get_service_instance(m, "api", NULL, &in), 0);
        int b = backend_of(&in);
        assert_true(b == 0 || b == 1);
        counts[b]++;
        sluice_release_instance(m, &in, SLUICE_CONNECTED);
    }
    assert_int_equal(sluice_mesh_stats(m, &s), 0);
    print_message("misses %llu, hits %llu, split %d/%d\n", s.cache_misses, s.cache_hits, counts[0],
                  counts[1]);
    assert_int_equal(s.cache_misses, 1);
    assert_int_equal(s.cache_hits, 1000);
    assert_int_equal(s.picks, 1001);
    assert_int_equal(counts[0], 500);
    assert_int_equal(counts[1], 500);
    assert_int_equal(s.services, 1);
    sluice_mesh_destroy(m);
}

/* Only critical instances, or none at all: SLUICE_ERR_NO_INSTANCE, which is not "unreachable".
 * An instance that fails three connects is ejected and not picked again. */
static void test_no_healthy_instance(void **state)
{
    (void)state;
    struct sluice_instance in;
    instance_add(0, "critical");
    struct sluice_mesh *m = mesh_on(consul_addr, 0);

    assert_int_equal(sluice_get_service_instance(m, "api", NULL, &in), SLUICE_ERR_NO_INSTANCE);
    print_message("critical only: %s: %s\n", sluice_strerror(SLUICE_ERR_NO_INSTANCE),
                  sluice_mesh_last_error());
    assert_non_null(strstr(sluice_mesh_last_error(), "api"));
    assert_int_equal(sluice_get_service_instance(m, "nothing", NULL, &in), SLUICE_ERR_NO_INSTANCE);
    instance_add(1, "passing");
    instance_add(2, "passing");
    assert_int_equal(pick_until(m, "api", 0, &in), 0);
    sluice_release_instance(m, &in, SLUICE_CONNECTED);
    struct sluice_instance_stats st[4];
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    while (sluice_service_instances(m, "api", st, 4) < 2 && harness_now_ms() < deadline)
        sleep_ms(20); /* the second answer may come a moment later */
    /* backend 1 "fails" three connects: passive health ejects it (on the mesh's own thread, a
     * moment later), and from then on only backend 2 is picked */
    int failed = 0;
    while (failed < 3) {
        assert_int_equal(sluice_get_service_instance(m, "api", NULL, &in), 0);
        int b = backend_of(&in);
        sluice_release_instance(m, &in, b == 1 ? SLUICE_CONNECT_FAILED : SLUICE_CONNECTED);
        failed += b == 1;
    }
    long n;
    deadline = harness_now_ms() + HARNESS_WAIT_MS;
    while ((n = sluice_service_instances(m, "api", st, 4)) == 2 &&
           strcmp(st[0].state, "ejected") != 0 && harness_now_ms() < deadline)
        sleep_ms(10);
    assert_int_equal(n, 2);
    for (long i = 0; i < n; i++)
        print_message("%s: %s, %llu failures, %llu ejections\n", st[i].id, st[i].state,
                      st[i].failures, st[i].ejections);
    assert_string_equal(st[0].state, "ejected");
    assert_int_equal(st[0].failures, 3);
    assert_int_equal(st[0].ejections, 1);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(sluice_get_service_instance(m, "api", NULL, &in), 0);
        assert_int_equal(backend_of(&in), 2);
        sluice_release_instance(m, &in, SLUICE_CONNECTED);
    }
    sluice_mesh_destroy(m);
}

/* Consul stops answering after the cache is warm: picks go on from the last known good set. */
static void test_consul_down_warm_cache(void **state)
{
    (void)state;
    struct sluice_instance in;
    struct sluice_stats s;
    instance_add(0, "passing");
    instance_add(1, "passing");
    struct sluice_mesh *m = mesh_on(consul_addr, 0);
    assert_int_equal(sluice_get_service_instance(m, "api", NULL, &in), 0);
    sluice_release_instance(m, &in, SLUICE_CONNECTED);
    /* the blocking query in flight ends with its wait (2 s); every query after it is dropped */
    consul_emu_send("POST", "/_emu/faults", "{\"kind\":\"drop\",\"path\":\"/v1/\"}");
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    do {
        sleep_ms(20);
        assert_int_equal(sluice_mesh_stats(m, &s), 0);
    } while (s.consul_errors == 0 && harness_now_ms() < deadline);
    print_message("Consul errors seen by the watch: %llu\n", s.consul_errors);
    assert_true(s.consul_errors > 0);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(sluice_get_service_instance(m, "api", NULL, &in), 0);
        assert_true(backend_of(&in) == 0 || backend_of(&in) == 1);
        sluice_release_instance(m, &in, SLUICE_CONNECTED);
    }
    consul_emu_send("DELETE", "/_emu/faults", NULL);
    sluice_mesh_destroy(m);
}

/* No agent at all, or one that never answers: SLUICE_ERR_UNREACHABLE, bounded by the lookup
 * timeout; later picks answer at once from what the background watch knows (still nothing). */
static void test_consul_down_cold_cache(void **state)
{
    (void)state;
    char nowhere[64];
    struct sluice_instance in;
    snprintf(nowhere, sizeof(nowhere), "127.0.0.1:%d", harness_free_port());
    struct sluice_mesh *m = mesh_on(nowhere, 300);
    assert_int_equal(sluice_get_service_instance(m, "api", NULL, &in), SLUICE_ERR_UNREACHABLE);
    print_message("refused: %s\n", sluice_mesh_last_error());
    assert_non_null(strstr(sluice_mesh_last_error(), "api"));
    assert_int_equal(sluice_get_service_instance(m, "api", NULL, &in), SLUICE_ERR_UNREACHABLE);
    sluice_mesh_destroy(m);

    consul_emu_send("POST", "/_emu/faults", "{\"kind\":\"hang\",\"path\":\"/v1/health/\"}");
    m = mesh_on(consul_addr, 300);
    uint64_t t0 = harness_now_ms();
    assert_int_equal(sluice_get_service_instance(m, "api", NULL, &in), SLUICE_ERR_UNREACHABLE);
    uint64_t took = harness_now_ms() - t0;
    print_message("hanging agent: %s after %llu ms (lookup_timeout_ms 300)\n",
                  sluice_mesh_last_error(), (unsigned long long)took);
    assert_true(took < HARNESS_WAIT_MS); /* bounded: it did not wait for the agent */
    consul_emu_send("DELETE", "/_emu/faults", NULL);
    sluice_mesh_destroy(m);
}

struct picker {
    struct sluice_mesh *mesh;
    int bad;   /* picks that failed or named no backend */
    int picks; /* picks that worked */
};

static atomic_int pickers_stop;

static void *picker_main(void *arg)
{
    struct picker *p = arg;
    struct sluice_instance in;
    while (!atomic_load(&pickers_stop)) {
        if (sluice_get_service_instance(p->mesh, "api", NULL, &in) != 0 || backend_of(&in) < 0) {
            p->bad++;
            continue;
        }
        p->picks++;
        sluice_release_instance(p->mesh, &in, SLUICE_CONNECTED);
    }
    return NULL;
}

/* 8 threads pick while instance 3 comes and goes in Consul (six published sets): every pick
 * names a backend, none fails (instances 0 and 1 never leave), and the mesh counted every pick
 * exactly. */
static void test_concurrent_picks_during_swaps(void **state)
{
    (void)state;
    struct picker pickers[PICKERS];
    pthread_t threads[PICKERS];
    struct sluice_stats s;
    instance_add(0, "passing");
    instance_add(1, "passing");
    struct sluice_mesh *m = mesh_on(consul_addr, 0);
    struct sluice_instance in;
    assert_int_equal(sluice_get_service_instance(m, "api", NULL, &in), 0);
    sluice_release_instance(m, &in, SLUICE_CONNECTED);
    for (int i = 0; i < PICKERS; i++) {
        pickers[i] = (struct picker){.mesh = m};
        assert_int_equal(pthread_create(&threads[i], NULL, picker_main, &pickers[i]), 0);
    }
    struct sluice_instance_stats st[4];
    int swaps = 0;
    for (int k = 0; k < 6; k++) { /* each change waits until the pickers' set shows it */
        int want = k % 2 == 0 ? 3 : 2;
        if (want == 3)
            instance_add(3, "passing");
        else
            instance_remove(3);
        uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
        while (sluice_service_instances(m, "api", st, 4) != want && harness_now_ms() < deadline)
            sleep_ms(10);
        swaps += sluice_service_instances(m, "api", st, 4) == want;
    }
    atomic_store(&pickers_stop, 1);
    int total = 1, bad = 0;
    for (int i = 0; i < PICKERS; i++) {
        pthread_join(threads[i], NULL);
        total += pickers[i].picks;
        bad += pickers[i].bad;
    }
    assert_int_equal(sluice_mesh_stats(m, &s), 0);
    print_message("%d picks from %d threads, %d bad, while the set changed %d times\n", total,
                  PICKERS, bad, swaps);
    assert_int_equal(swaps, 6); /* the set did change under them */
    assert_int_equal(bad, 0);
    assert_int_equal(s.picks, (unsigned long long)total);
    assert_int_equal(s.cache_hits + s.cache_misses, (unsigned long long)total);
    sluice_mesh_destroy(m);
}

/* The agent accepts the service but the confirmation fails (a 500: temporary, so unreachable):
 * the registration is rolled back (deregistered again) and counted; an address the agent
 * refuses is rejected with its words. */
static void test_rejected_registration_rolls_back(void **state)
{
    (void)state;
    char id[SLUICE_ID_MAX], body[1 << 14];
    struct sluice_stats s;
    struct sluice_mesh *m = mesh_on(consul_addr, 0);
    struct sluice_check check = {.kind = SLUICE_CHECK_TCP, .interval_ms = 1000};
    struct sluice_service_config cfg = {
        .name = "half", .id = "half-1", .host = "127.0.0.1", .port = 9, .check = &check};

    consul_emu_send("POST", "/_emu/faults",
                    "{\"kind\":\"error\",\"path\":\"/v1/agent/checks\",\"status\":500,"
                    "\"body\":\"rpc error: agent busy\",\"count\":1}");
    assert_int_equal(sluice_register_service(m, &cfg, id, sizeof(id)), SLUICE_ERR_UNREACHABLE);
    print_message("rolled back: %s\n", sluice_mesh_last_error());
    assert_non_null(strstr(sluice_mesh_last_error(), "rolled back"));
    assert_int_equal(http_request(consul_fx.emu_port, "GET", "/v1/agent/service/half-1", NULL, body,
                                  sizeof(body)),
                     404);
    cfg.host = "0.0.0.0";
    cfg.id = "bad-addr";
    assert_int_equal(sluice_register_service(m, &cfg, id, sizeof(id)), SLUICE_ERR_REJECTED);
    assert_non_null(strstr(sluice_mesh_last_error(), "Invalid service address"));
    assert_int_equal(sluice_mesh_stats(m, &s), 0);
    assert_int_equal(s.registrations, 2);
    assert_int_equal(s.register_failures, 2);
    assert_int_equal(s.rollbacks, 1); /* the second was refused before anything was made */
    sluice_mesh_destroy(m);
}

/* Two meshes on two agents in one process know nothing of each other. */
static void test_two_meshes_two_agents(void **state)
{
    (void)state;
    struct proc other = {0};
    char other_addr[64], body[1024];
    struct sluice_instance in;
    int port = emulator_start(&other, NULL);
    assert_true(port > 0);
    snprintf(other_addr, sizeof(other_addr), "127.0.0.1:%d", port);
    instance_add(0, "passing");
    consul_instance_body(body, sizeof(body), 1, "127.0.0.1", NULL, "passing", "");
    assert_int_equal(http_request(port, "PUT", "/v1/catalog/register", body, NULL, 0), 200);
    struct sluice_mesh *a = mesh_on(consul_addr, 0), *b = mesh_on(other_addr, 0);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(sluice_get_service_instance(a, "api", NULL, &in), 0);
        assert_int_equal(backend_of(&in), 0);
        sluice_release_instance(a, &in, SLUICE_CONNECTED);
        assert_int_equal(sluice_get_service_instance(b, "api", NULL, &in), 0);
        assert_int_equal(backend_of(&in), 1);
        sluice_release_instance(b, &in, SLUICE_CONNECTED);
    }
    sluice_mesh_destroy(a);
    sluice_mesh_destroy(b);
    assert_int_equal(proc_stop(&other, SIGTERM), 0);
}

static int group_setup(void **state)
{
    (void)state;
    const char *args[] = {"--fast-checks", NULL};
    if (consul_fixture_start(N_BACKENDS, args) != 0)
        return -1;
    snprintf(consul_addr, sizeof(consul_addr), "127.0.0.1:%d", consul_fx.emu_port);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        CONSUL_FIXTURE_TEST(test_register_pick_release_deregister),
        CONSUL_FIXTURE_TEST(test_cache_miss_then_hits),
        CONSUL_FIXTURE_TEST(test_no_healthy_instance),
        CONSUL_FIXTURE_TEST(test_consul_down_warm_cache),
        CONSUL_FIXTURE_TEST(test_consul_down_cold_cache),
        CONSUL_FIXTURE_TEST(test_concurrent_picks_during_swaps),
        CONSUL_FIXTURE_TEST(test_rejected_registration_rolls_back),
        CONSUL_FIXTURE_TEST(test_two_meshes_two_agents),
    };
    return cmocka_run_group_tests(tests, group_setup, consul_fixture_stop);
}
