/* Integration-test fixture for Consul discovery: one emulator and a few hello backends per test
 * executable, a fresh agent for each test, and a sluice that watches service "api" on it. Built
 * on harness.h; its functions fail the test (cmocka) instead of returning errors. */
#ifndef SLUICE_TEST_CONSUL_FIXTURE_H
#define SLUICE_TEST_CONSUL_FIXTURE_H

#include <stddef.h>

#include "harness.h"

#define CONSUL_FIXTURE_MAX_BACKENDS 8         /* hello backends one fixture can start */
#define CONSUL_FIXTURE_BODY_MAX     (1 << 20) /* bytes of an emulator answer consul_emu_get keeps */

/* The processes of one test executable. */
struct consul_fixture {
    struct proc emulator; /* the Consul emulator, up for the whole executable */
    int emu_port;         /* its HTTP port */
    struct proc sluice;   /* the sluice of the current test (consul_sluice_start) */
    struct proc backends[CONSUL_FIXTURE_MAX_BACKENDS]; /* echo backends saying "b<i>" */
    int backend_ports[CONSUL_FIXTURE_MAX_BACKENDS];    /* their ports */
    int n_backends;                                    /* entries of backends in use */
};

/* The one fixture of this executable; consul_fixture_start fills it. */
extern struct consul_fixture consul_fx;

/* Group setup: starts the emulator with extra arguments (NULL-terminated, may be NULL) and
 * n_backends (at most CONSUL_FIXTURE_MAX_BACKENDS) hello backends. 0, or -1 when one did not
 * come up. */
int consul_fixture_start(int n_backends, const char *const *emulator_args);

/* Group teardown (a cmocka fixture): stops the backends and the emulator. Returns 0. */
int consul_fixture_stop(void **state);

/* Per-test setup (a cmocka fixture): the emulator forgets everything, as a fresh agent. 0 or -1. */
int consul_fixture_reset(void **state);

/* Per-test teardown (a cmocka fixture): kills the sluice a failed test left behind. Returns 0. */
int consul_fixture_kill_sluice(void **state);

/* A cmocka test that runs on a fresh agent and leaves no sluice behind, even when it fails. */
#define CONSUL_FIXTURE_TEST(f)                                                                     \
    cmocka_unit_test_setup_teardown(f, consul_fixture_reset, consul_fixture_kill_sluice)

/* Starts consul_fx.sluice on this config and returns its listener port:
 *   [sluice] sluice_lines, [consul] consul_lines, [listener:web] on a free port for service
 *   "api", [service:api] discovery = consul, then service_extra (more keys or sections).
 * Each of the *_lines is whole lines ("" for none). Fails the test when sluice does not start. */
int consul_sluice_start_with(const char *sluice_lines, const char *consul_lines,
                             const char *service_extra);

/* consul_sluice_start_with for most tests: one worker, debug log (then sluice_extra), Consul at
 * 127.0.0.1:emu_port retried every 50 ms to 500 ms (then consul_extra), and service_extra. */
int consul_sluice_start(int emu_port, const char *sluice_extra, const char *consul_extra,
                        const char *service_extra);

/* Writes the catalog registration of instance "api-<i>" of service "api" on node "n<i>" at
 * node_addr, for hello backend i, with one check "chk-<i>" in status. svc_addr NULL leaves
 * Service.Address out; extra adds Service fields (",\"Tags\":[...]", or ""). */
void consul_instance_body(char *out, size_t out_len, int i, const char *node_addr,
                          const char *svc_addr, const char *status, const char *extra);

/* Waits in consul_fx.sluice's log, after *from (NULL: from the start; else moved past the line),
 * for a line holding event and extra (may be NULL). */
void consul_wait_event(size_t *from, const char *event, const char *extra);

/* Waits as consul_wait_event for a discovery_published line with exactly n instances. */
void consul_wait_published(size_t *from, int n, const char *extra);

/* Sends method path (with a JSON body, may be NULL) to the emulator, which must answer 200. */
void consul_emu_send(const char *method, const char *path, const char *body);

/* GETs path from the emulator, which must answer 200; returns the body (at most
 * CONSUL_FIXTURE_BODY_MAX - 1 bytes), owned by the caller (free). */
char *consul_emu_get(const char *path);

#endif
