/* Two independent discoveries in one process, each against its own Consul emulator and feeding
 * its own service owner: nothing of one leaks into the other (no process globals), one agent
 * failing degrades only its own discovery, and both are destroyed cleanly (LeakSanitizer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "balancer.h"
#include "discovery.h"
#include "harness.h"
#include "owner.h"
#include "snapshot.h"

/* One agent and everything that watches it. */
struct side {
    struct proc emulator;           /* its Consul emulator */
    int port;                       /* the emulator's port */
    char address[64];               /* "127.0.0.1:port" */
    struct consul_conf consul;      /* [consul] of this side */
    struct consul_watch_conf watch; /* service "api" */
    struct owner *owner;            /* where its lists go */
    struct discovery *discovery;    /* the watch */
};

static void side_start(struct side *s, struct logger *log)
{
    char err[256] = "";

    s->port = emulator_start(&s->emulator, NULL);
    assert_true(s->port > 0);
    snprintf(s->address, sizeof(s->address), "127.0.0.1:%d", s->port);
    s->consul = (struct consul_conf){
        .address = s->address, .wait_ms = 2000, .retry_min_ms = 50, .retry_max_ms = 200};
    s->watch = (struct consul_watch_conf){.service = "api"};
    s->owner = owner_create("api", &lb_round_robin, NULL, log);
    assert_non_null(s->owner);
    const struct discovery_target t = {.name = "api", .watch = &s->watch, .owner = s->owner};
    assert_int_equal(discovery_create(&s->consul, &t, 1, log, &s->discovery, err, sizeof(err)), 0);
    assert_non_null(s->discovery);
    assert_int_equal(discovery_start(s->discovery), 0);
}

/* Registers instance i of "api" on this side's agent, at 127.0.0.1:port. */
static void side_register(struct side *s, int i, int port)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"Node\":\"n%d\",\"Address\":\"127.0.0.1\",\"Service\":{\"ID\":\"api-%d\","
             "\"Service\":\"api\",\"Port\":%d}}",
             i, i, port);
    assert_int_equal(http_request(s->port, "PUT", "/v1/catalog/register", body, NULL, 0), 200);
}

/* The ports of the owner's current set, in order, as "p1,p2,"; waits until it has n. */
static void side_wait_set(struct side *s, size_t n, char *out, size_t len)
{
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    size_t have = 0;

    while (harness_now_ms() < deadline) {
        size_t used = 0;
        out[0] = '\0';
        snapshot_read_lock();
        const struct instance_set *set = owner_current(s->owner);
        have = set->n;
        for (size_t i = 0; i < set->n && used < len; i++)
            used += (size_t)snprintf(out + used, len - used, "%u,",
                                     (unsigned)net_addr_port(&set->inst[i].addr));
        snapshot_read_unlock();
        if (have == n)
            return;
        sleep_ms(20);
    }
    fail_msg("owner has %zu instances, want %zu", have, n);
}

static void wait_state(const struct side *s, enum discovery_state want)
{
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    while (discovery_state_get(s->discovery) != want && harness_now_ms() < deadline)
        sleep_ms(20);
    assert_int_equal(discovery_state_get(s->discovery), want);
}

static void side_destroy(struct side *s)
{
    discovery_destroy(s->discovery);
    owner_destroy(s->owner);
    if (s->emulator.pid > 0)
        proc_stop(&s->emulator, SIGTERM);
}

static void test_two_discoveries_in_one_process(void **state)
{
    struct logger log;
    struct side a = {0}, b = {0};
    char ports[128];

    (void)state;
    log_init(&log, STDERR_FILENO);
    log_configure(&log, LOG_LEVEL_WARN, LOG_FORMAT_JSON);
    snapshot_reader_register();
    side_start(&a, &log);
    side_start(&b, &log);
    side_register(&a, 1, 1111);
    side_register(&b, 1, 2221);
    side_register(&b, 2, 2222);

    side_wait_set(&a, 1, ports, sizeof(ports));
    assert_string_equal(ports, "1111,");
    side_wait_set(&b, 2, ports, sizeof(ports));
    assert_string_equal(ports, "2221,2222,");
    wait_state(&a, DISCOVERY_OK);
    wait_state(&b, DISCOVERY_OK);

    /* b's agent goes away: b degrades and keeps its last known good set; a is untouched */
    proc_stop(&b.emulator, SIGTERM);
    b.emulator.pid = 0;
    wait_state(&b, DISCOVERY_DEGRADED);
    assert_int_equal(discovery_state_get(a.discovery), DISCOVERY_OK);
    side_wait_set(&b, 2, ports, sizeof(ports));
    side_register(&a, 2, 1112);
    side_wait_set(&a, 2, ports, sizeof(ports));
    assert_string_equal(ports, "1111,1112,");

    struct discovery_status sa, sb;
    discovery_status_get(a.discovery, &sa);
    discovery_status_get(b.discovery, &sb);
    assert_int_equal(sa.watches, 1);
    assert_int_equal(sa.failing, 0);
    assert_int_equal(sb.failing, 1);
    assert_true(sb.errors > 0);
    assert_int_equal(sa.errors, 0);
    snapshot_reader_unregister();
    side_destroy(&a);
    side_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_discoveries_in_one_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
