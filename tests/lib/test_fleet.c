/* A fleet of sluice processes against the Consul emulator: three sluices in front of one echo
 * backend register themselves as service "edge" (each its own ID, an HTTP check on its own admin
 * /healthz that the emulator really runs); all serve; a SIGKILLed one turns critical and leaves
 * the ?passing answers while the other two keep serving and stay passing; a SIGTERMed one
 * deregisters itself; a libsluice client of the fleet (sluice_get_service_instance) picks every
 * member while all live and never the dead one once its check failed. Also: fleet next to a
 * listener registration, and fleet without [admin] refused with FILE:LINE, by -t and at start. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "consul_fixture.h"
#include "sluice.h"

#define N_MEMBERS   3
#define FLEET       "edge"
#define ECHO_BYTES  (256 * 1024) /* per connection, in ECHO_CHUNK pieces */
#define ECHO_CHUNK  (16 * 1024)
#define POLL_MS     50
#define SERVICE_URL "/v1/health/service/" FLEET

/* One sluice of the fleet. */
struct member {
    struct proc proc;   /* the process */
    int port;           /* its listener, in front of the echo backend */
    int admin_port;     /* its admin server, 127.0.0.1 */
    char id[300];       /* the service ID it should register: edge-<hostname>-<admin port> */
    char check[128];    /* the check URL it should register */
    char check_id[320]; /* "service:<id>" */
};

static struct member members[N_MEMBERS];
static struct proc echo;
static int echo_port;

static int setup(void **state)
{
    /* the first check run at once, so that a member turns passing without waiting an interval */
    const char *fast[] = {"--fast-checks", NULL};
    (void)state;
    echo_port = backend_start(&echo, "echo", NULL);
    return echo_port > 0 ? consul_fixture_start(0, fast) : -1;
}

static int teardown(void **state)
{
    proc_stop(&echo, SIGTERM);
    return consul_fixture_stop(state);
}

/* Per-test teardown: no member outlives a failed test. */
static int kill_members(void **state)
{
    (void)state;
    for (int i = 0; i < N_MEMBERS; i++)
        if (members[i].proc.pid > 0)
            proc_stop(&members[i].proc, SIGKILL);
    return 0;
}

/* The host name as the registrar reads it, for the default fleet IDs. */
static void host_name(char *out, size_t len)
{
    if (gethostname(out, len - 1) != 0 || out[0] == '\0')
        snprintf(out, len, "localhost");
    out[len - 1] = '\0';
}

/* Member i's config: a listener in front of the echo backend, [admin] on its own port and
 * [registration] with only the fleet (so no listener registration: the fleet-only rule). */
static void member_config(char *out, size_t len, int i)
{
    struct member *m = &members[i];
    int n = snprintf(out, len,
                     "[sluice]\nworkers = 1\nshutdown_timeout = 3s\n"
                     "[consul]\naddress = 127.0.0.1:%d\nretry_min = 50ms\nretry_max = 500ms\n"
                     "[listener:web]\nbind = 127.0.0.1:%d\nservice = echo\n"
                     "[service:echo]\nbackends = 127.0.0.1:%d\n"
                     "[admin]\nbind = 127.0.0.1:%d\n"
                     "[registration]\nfleet = " FLEET "\nfleet_tags = l4\n"
                     "check_interval = 1s\ncheck_timeout = 1s\nanti_entropy = 1s\n",
                     consul_fx.emu_port, m->port, echo_port, m->admin_port);
    assert_true(n > 0 && (size_t)n < len);
}

static void member_start(int i)
{
    struct member *m = &members[i];
    char conf[2048], host[128];

    memset(m, 0, sizeof(*m));
    m->port = harness_free_port();
    do
        m->admin_port = harness_free_port();
    while (m->admin_port == m->port);
    host_name(host, sizeof(host));
    snprintf(m->id, sizeof(m->id), FLEET "-%s-%d", host, m->admin_port);
    snprintf(m->check, sizeof(m->check), "http://127.0.0.1:%d/healthz", m->admin_port);
    snprintf(m->check_id, sizeof(m->check_id), "service:" FLEET "-%s-%d", host, m->admin_port);
    member_config(conf, sizeof(conf), i);
    assert_int_equal(sluice_start(&m->proc, conf), 0);
}

/* --- reading the emulator ------------------------------------------------------------------ */

static cJSON *emu_json(const char *path)
{
    char *body = consul_emu_get(path);
    cJSON *json = cJSON_Parse(body);
    free(body);
    assert_non_null(json);
    return json;
}

/* The entry of a health answer whose Service.ID is id, or NULL. */
static const cJSON *entry_of(const cJSON *list, const char *id)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        const cJSON *sid = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "Service"), "ID");
        if (cJSON_IsString(sid) && strcmp(sid->valuestring, id) == 0)
            return e;
    }
    return NULL;
}

/* The check check_id of a health entry, or NULL. */
static const cJSON *check_of(const cJSON *entry, const char *check_id)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(entry, "Checks"))
    {
        const cJSON *cid = cJSON_GetObjectItem(c, "CheckID");
        if (cJSON_IsString(cid) && strcmp(cid->valuestring, check_id) == 0)
            return c;
    }
    return NULL;
}

static const char *str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* Member m's own check in a health answer: "" when it is not listed, else its Status. */
static const char *status_in(const cJSON *list, const struct member *m)
{
    const cJSON *e = entry_of(list, m->id);
    return e == NULL ? "" : str_of(check_of(e, m->check_id), "Status");
}

/* Whether the ?passing answer lists exactly the members whose bit is set in want. */
static int passing_are(unsigned want)
{
    cJSON *list = emu_json(SERVICE_URL "?passing");
    int ok = cJSON_GetArraySize(list) == __builtin_popcount(want);
    for (int i = 0; ok && i < N_MEMBERS; i++)
        ok = (entry_of(list, members[i].id) != NULL) == ((want >> i) & 1u);
    cJSON_Delete(list);
    return ok;
}

/* Polls until passing_are(want); fails the test when the bound runs out. */
static void wait_passing_are(unsigned want)
{
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    while (!passing_are(want)) {
        if (harness_now_ms() > deadline)
            fail_msg("?passing never listed exactly the members of mask 0x%x", want);
        sleep_ms(POLL_MS);
    }
}

/* Member m as listed in ?passing: the ID, address and port clients dial, the fleet tag, and the
 * check on its admin /healthz passing with the emulator's real probe output. */
static void assert_listed_passing(const cJSON *list, const struct member *m)
{
    const cJSON *e = entry_of(list, m->id), *svc, *chk;

    assert_non_null(e);
    svc = cJSON_GetObjectItem(e, "Service");
    assert_string_equal(str_of(svc, "Service"), FLEET);
    assert_string_equal(str_of(svc, "Address"), "127.0.0.1");
    assert_int_equal(cJSON_GetObjectItem(svc, "Port")->valueint, m->port);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(svc, "Tags")), 1);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(svc, "Tags"), 0)->valuestring, "l4");
    chk = check_of(e, m->check_id);
    assert_non_null(chk);
    assert_string_equal(str_of(chk, "Status"), "passing");
    assert_string_equal(str_of(chk, "Type"), "http");
    assert_string_equal(str_of(cJSON_GetObjectItem(chk, "Definition"), "HTTP"), m->check);
    assert_non_null(strstr(str_of(chk, "Output"), "200 OK"));
}

/* Whether the agent still holds a registration with this ID. */
static int agent_has(const char *id)
{
    cJSON *services = emu_json("/v1/agent/services");
    int has = cJSON_GetObjectItem(services, id) != NULL;
    cJSON_Delete(services);
    return has;
}

/* --- traffic ------------------------------------------------------------------------------- */

/* ECHO_BYTES of a per-connection pattern through port and back, compared byte for byte; then a
 * half-close that must come back as a clean EOF with nothing more. */
static void echo_through(int port, uint32_t seed)
{
    static unsigned char out[ECHO_CHUNK], in[ECHO_CHUNK];
    uint32_t x = seed | 1u;
    size_t moved = 0;
    int fd = tcp_connect(port);

    assert_true(fd >= 0);
    while (moved < ECHO_BYTES) {
        for (size_t i = 0; i < sizeof(out); i++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            out[i] = (unsigned char)x;
        }
        assert_int_equal(write_all(fd, out, sizeof(out)), 0);
        assert_int_equal(read_exact(fd, in, sizeof(in)), 0);
        assert_memory_equal(in, out, sizeof(out));
        moved += sizeof(out);
    }
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    assert_int_equal(read_to_eof(fd, in, sizeof(in)), 0);
    close(fd);
}

/* /status of member m lists exactly one registration: its fleet ID, confirmed. */
static int status_shows_fleet(const struct member *m)
{
    static char body[1 << 20];
    const cJSON *regs, *r;
    cJSON *st;
    int ok;

    if (http_request(m->admin_port, "GET", "/status", NULL, body, sizeof(body)) != 200)
        return 0;
    st = cJSON_Parse(body);
    regs = cJSON_GetObjectItem(st, "registrations");
    r = cJSON_GetArrayItem(regs, 0);
    ok = cJSON_GetArraySize(regs) == 1 && strcmp(str_of(r, "id"), m->id) == 0 &&
         strcmp(str_of(r, "service"), FLEET) == 0 &&
         cJSON_IsTrue(cJSON_GetObjectItem(r, "registered"));
    cJSON_Delete(st);
    return ok;
}

/* A library client of the fleet: the way a program would find a sluice to dial. */
static struct sluice_mesh *fleet_client(void)
{
    char consul[64], err[256];
    snprintf(consul, sizeof(consul), "127.0.0.1:%d", consul_fx.emu_port);
    struct sluice_mesh_options o = {.consul = consul, .wait_ms = 1000, .passing_only = 1};
    struct sluice_mesh *mesh = sluice_mesh_create(&o, err, sizeof(err));
    if (mesh == NULL)
        fail_msg("mesh: %s", err);
    return mesh;
}

/* Which members n picks of the fleet returned (bit i: member i); fails on anything else. */
static unsigned fleet_picks(struct sluice_mesh *mesh, int n)
{
    unsigned seen = 0;
    for (int k = 0; k < n; k++) {
        struct sluice_instance in;
        int rc = sluice_get_service_instance(mesh, FLEET, NULL, &in);
        if (rc != 0)
            fail_msg("pick %d: %s", k, sluice_mesh_last_error());
        int who = -1;
        for (int i = 0; i < N_MEMBERS; i++)
            if (strstr(in.id, members[i].id) != NULL && in.port == members[i].port)
                who = i;
        if (who < 0)
            fail_msg("pick %d: %s (port %u) is no member", k, in.id, (unsigned)in.port);
        seen |= 1u << who;
        sluice_release_instance(mesh, &in, SLUICE_CONNECTED);
    }
    return seen;
}

/* Waits until n picks return exactly the members in mask (the client's watch caught up). */
static void wait_client_picks(struct sluice_mesh *mesh, unsigned mask)
{
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    unsigned seen;
    while ((seen = fleet_picks(mesh, 30)) != mask && harness_now_ms() < deadline)
        sleep_ms(POLL_MS);
    if (seen != mask)
        fail_msg("the client picks members 0x%x, not 0x%x", seen, mask);
}

/* --- tests --------------------------------------------------------------------------------- */

static void test_fleet_registers_serves_and_survives_a_dead_member(void **state)
{
    (void)state;
    cJSON *list;

    for (int i = 0; i < N_MEMBERS; i++)
        member_start(i);

    /* all three passing, each under its own ID, checked on its own /healthz */
    wait_passing_are(0x7);
    list = emu_json(SERVICE_URL "?passing");
    for (int i = 0; i < N_MEMBERS; i++)
        assert_listed_passing(list, &members[i]);
    cJSON_Delete(list);
    /* fleet alone registers the processes, not their listeners */
    cJSON *services = emu_json("/v1/agent/services");
    assert_int_equal(cJSON_GetArraySize(services), N_MEMBERS);
    for (int i = 0; i < N_MEMBERS; i++)
        assert_string_equal(str_of(cJSON_GetObjectItem(services, members[i].id), "Service"), FLEET);
    cJSON_Delete(services);
    for (int i = 0; i < N_MEMBERS; i++) {
        uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
        while (!status_shows_fleet(&members[i]) && harness_now_ms() < deadline)
            sleep_ms(POLL_MS);
        assert_true(status_shows_fleet(&members[i]));
    }

    /* every member serves, and a library client of the fleet picks each of them */
    for (int i = 0; i < N_MEMBERS; i++)
        echo_through(members[i].port, 100u + (uint32_t)i);
    struct sluice_mesh *client = fleet_client();
    wait_client_picks(client, 0x7);

    /* a crash: nobody deregisters member 0, its real HTTP check must notice */
    uint64_t killed = harness_now_ms(); /* the figures below are printed, never asserted */
    assert_int_equal(proc_stop(&members[0].proc, SIGKILL), 128 + SIGKILL);
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    for (;;) {
        list = emu_json(SERVICE_URL);
        int critical = strcmp(status_in(list, &members[0]), "critical") == 0;
        cJSON_Delete(list);
        if (critical)
            break;
        if (harness_now_ms() > deadline)
            fail_msg("the killed member's check never turned critical");
        sleep_ms(POLL_MS);
    }
    print_message("SIGKILL -> check critical: %llu ms\n",
                  (unsigned long long)(harness_now_ms() - killed));
    wait_passing_are(0x6);
    print_message("SIGKILL -> out of ?passing: %llu ms\n",
                  (unsigned long long)(harness_now_ms() - killed));
    /* the client's blocking query saw the check fail: from then on never the dead member */
    wait_client_picks(client, 0x6);
    print_message("SIGKILL -> the library client never picks it: %llu ms\n",
                  (unsigned long long)(harness_now_ms() - killed));
    assert_int_equal(fleet_picks(client, 300), 0x6);
    struct sluice_stats cs;
    assert_int_equal(sluice_mesh_stats(client, &cs), 0);
    assert_int_equal(cs.cache_misses, 1); /* one lookup, then the watch */
    sluice_mesh_destroy(client);
    list = emu_json(SERVICE_URL);
    assert_int_equal(cJSON_GetArraySize(list), N_MEMBERS); /* still registered, just critical */
    assert_string_equal(status_in(list, &members[1]), "passing");
    assert_string_equal(status_in(list, &members[2]), "passing");
    cJSON_Delete(list);

    /* the other two keep serving, and stay passing while they do */
    for (int round = 0; round < 3; round++) {
        echo_through(members[1].port, 200u + (uint32_t)round);
        echo_through(members[2].port, 300u + (uint32_t)round);
    }
    list = emu_json(SERVICE_URL "?passing");
    assert_listed_passing(list, &members[1]);
    assert_listed_passing(list, &members[2]);
    assert_null(entry_of(list, members[0].id));
    cJSON_Delete(list);

    /* a clean stop: member 1 deregisters itself before it drains */
    size_t from = log_size(&members[1].proc);
    uint64_t stopped = harness_now_ms();
    assert_int_equal(proc_stop(&members[1].proc, SIGTERM), 0);
    print_message("SIGTERM -> deregistered and exited: %llu ms\n",
                  (unsigned long long)(harness_now_ms() - stopped));
    const char *removed[] = {"\"event\":\"registration_removed\"", members[1].id, NULL};
    assert_int_equal(log_wait(&members[1].proc, &from, NULL, 0, removed), 0);
    assert_false(agent_has(members[1].id));
    assert_true(agent_has(members[0].id)); /* the crashed one stays until Consul reaps it */
    assert_true(agent_has(members[2].id));
    wait_passing_are(0x4);
    echo_through(members[2].port, 400u);

    assert_int_equal(proc_stop(&members[2].proc, SIGTERM), 0);
    assert_false(agent_has(members[2].id));
}

/* fleet with listeners = web registers both, each with its own check; fleet_id, fleet_address,
 * fleet_port and meta are what the fleet registration carries. */
static void test_fleet_with_listener_registration(void **state)
{
    (void)state;
    struct member *m = &members[0];
    char conf[2048], host[128], listener_id[300], body[1 << 16];
    const cJSON *svc, *chk;

    memset(m, 0, sizeof(*m));
    m->port = harness_free_port();
    do
        m->admin_port = harness_free_port();
    while (m->admin_port == m->port);
    snprintf(m->id, sizeof(m->id), "edge-a");
    snprintf(m->check_id, sizeof(m->check_id), "service:edge-a");
    host_name(host, sizeof(host));
    snprintf(listener_id, sizeof(listener_id), "web-%s-%d", host, m->port);
    int n = snprintf(conf, sizeof(conf),
                     "[sluice]\nworkers = 1\nshutdown_timeout = 3s\n"
                     "[consul]\naddress = 127.0.0.1:%d\n"
                     "[listener:web]\nbind = 127.0.0.1:%d\nservice = echo\n"
                     "[service:echo]\nbackends = 127.0.0.1:%d\n"
                     "[admin]\nbind = 127.0.0.1:%d\n"
                     "[registration]\nlisteners = web\nmeta = version=1\ntags = direct\n"
                     "fleet = " FLEET "\nfleet_id = edge-a\nfleet_address = 127.0.0.2\n"
                     "fleet_port = 4443\ncheck_interval = 1s\n",
                     consul_fx.emu_port, m->port, echo_port, m->admin_port);
    assert_true(n > 0 && (size_t)n < sizeof(conf));
    assert_int_equal(sluice_start(&m->proc, conf), 0);

    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    cJSON *services = NULL;
    for (;;) {
        services = emu_json("/v1/agent/services");
        if (cJSON_GetArraySize(services) == 2 || harness_now_ms() > deadline)
            break;
        cJSON_Delete(services);
        sleep_ms(POLL_MS);
    }
    assert_int_equal(cJSON_GetArraySize(services), 2);
    svc = cJSON_GetObjectItem(services, "edge-a");
    assert_string_equal(str_of(svc, "Service"), FLEET);
    assert_string_equal(str_of(svc, "Address"), "127.0.0.2");
    assert_int_equal(cJSON_GetObjectItem(svc, "Port")->valueint, 4443);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(svc, "Tags")), 0);
    assert_string_equal(str_of(cJSON_GetObjectItem(svc, "Meta"), "version"), "1");
    svc = cJSON_GetObjectItem(services, listener_id);
    assert_string_equal(str_of(svc, "Service"), "web");
    assert_int_equal(cJSON_GetObjectItem(svc, "Port")->valueint, m->port);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(svc, "Tags"), 0)->valuestring,
                        "direct");
    cJSON_Delete(services);

    cJSON *checks = emu_json("/v1/agent/checks");
    chk = cJSON_GetObjectItem(checks, "service:edge-a");
    assert_string_equal(str_of(chk, "Type"), "http");
    snprintf(m->check, sizeof(m->check), "http://127.0.0.1:%d/healthz", m->admin_port);
    assert_string_equal(str_of(cJSON_GetObjectItem(chk, "Definition"), "HTTP"), m->check);
    char listener_check[320];
    snprintf(listener_check, sizeof(listener_check), "service:%s", listener_id);
    chk = cJSON_GetObjectItem(checks, listener_check); /* with [admin], on /healthz too */
    assert_string_equal(str_of(chk, "Type"), "http");
    assert_string_equal(str_of(cJSON_GetObjectItem(chk, "Definition"), "HTTP"), m->check);
    cJSON_Delete(checks);

    assert_int_equal(http_request(m->admin_port, "GET", "/status", NULL, body, sizeof(body)), 200);
    cJSON *st = cJSON_Parse(body);
    const cJSON *regs = cJSON_GetObjectItem(st, "registrations");
    assert_int_equal(cJSON_GetArraySize(regs), 2);
    assert_string_equal(str_of(cJSON_GetArrayItem(regs, 0), "id"), listener_id);
    assert_string_equal(str_of(cJSON_GetArrayItem(regs, 1), "id"), "edge-a");
    assert_string_equal(str_of(cJSON_GetArrayItem(regs, 1), "service"), FLEET);
    cJSON_Delete(st);

    assert_int_equal(proc_stop(&m->proc, SIGTERM), 0);
    services = emu_json("/v1/agent/services");
    assert_int_equal(cJSON_GetArraySize(services), 0); /* both deregistered at shutdown */
    cJSON_Delete(services);
}

/* fleet without [admin] (nothing to check) is a FILE:LINE error from -t and at start. */
static void test_fleet_needs_admin(void **state)
{
    (void)state;
    char path[512], out[4096], want[1024];
    const char *text = "[listener:web]\n"
                       "bind = 127.0.0.1:18080\n"
                       "service = echo\n"
                       "[service:echo]\n"
                       "backends = 127.0.0.1:9\n"
                       "[registration]\n"
                       "fleet = " FLEET "\n"; /* line 7 */
    FILE *f;

    snprintf(path, sizeof(path), "%s/fleet-no-admin-%d.ini", harness_tmpdir(), getpid());
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    snprintf(want, sizeof(want),
             "%s:7: fleet: needs an [admin] section: its /healthz is the fleet's health check\n",
             path);
    char *check[] = {(char *)harness_bin("SLUICE_BIN"), "-t", "-c", path, NULL};
    assert_int_equal(run_capture(check, out, sizeof(out)), 1);
    assert_string_equal(out, want);
    char *run[] = {(char *)harness_bin("SLUICE_BIN"), "-c", path, NULL};
    assert_int_equal(run_capture(run, out, sizeof(out)), 1);
    assert_string_equal(out, want);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fleet_registers_serves_and_survives_a_dead_member,
                                        consul_fixture_reset, kill_members),
        cmocka_unit_test_setup_teardown(test_fleet_with_listener_registration, consul_fixture_reset,
                                        kill_members),
        cmocka_unit_test(test_fleet_needs_admin),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
