/* Integration-test fixture for Consul discovery: the emulator, hello backends and sluice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "consul_fixture.h"

struct consul_fixture consul_fx;

int consul_fixture_start(int n_backends, const char *const *emulator_args)
{
    if (n_backends > CONSUL_FIXTURE_MAX_BACKENDS)
        return -1;
    consul_fx.n_backends = n_backends;
    consul_fx.emu_port = emulator_start(&consul_fx.emulator, emulator_args);
    if (hello_backends_start(consul_fx.backends, consul_fx.backend_ports, n_backends) != 0)
        return -1;
    return consul_fx.emu_port > 0 ? 0 : -1;
}

int consul_fixture_stop(void **state)
{
    (void)state;
    hello_backends_stop(consul_fx.backends, consul_fx.n_backends);
    proc_stop(&consul_fx.emulator, SIGTERM);
    return 0;
}

int consul_fixture_reset(void **state)
{
    (void)state;
    return http_request(consul_fx.emu_port, "POST", "/_emu/reset", NULL, NULL, 0) == 200 ? 0 : -1;
}

int consul_fixture_kill_sluice(void **state)
{
    (void)state;
    if (consul_fx.sluice.pid > 0)
        proc_stop(&consul_fx.sluice, SIGKILL);
    return 0;
}

int consul_sluice_start_with(const char *sluice_lines, const char *consul_lines,
                             const char *service_extra)
{
    int port = harness_free_port();
    char conf[8192];
    int n = snprintf(conf, sizeof(conf),
                     "[sluice]\n%s[consul]\n%s"
                     "[listener:web]\nbind = 127.0.0.1:%d\nservice = api\n"
                     "[service:api]\ndiscovery = consul\n%s",
                     sluice_lines, consul_lines, port, service_extra);
    assert_true(n > 0 && (size_t)n < sizeof(conf));
    assert_int_equal(sluice_start(&consul_fx.sluice, conf), 0);
    return port;
}

int consul_sluice_start(int emu_port, const char *sluice_extra, const char *consul_extra,
                        const char *service_extra)
{
    char sluice_lines[1024], consul_lines[4096];
    int n = snprintf(sluice_lines, sizeof(sluice_lines), "workers = 1\nlog_level = debug\n%s",
                     sluice_extra);
    assert_true(n > 0 && (size_t)n < sizeof(sluice_lines));
    n = snprintf(consul_lines, sizeof(consul_lines),
                 "address = 127.0.0.1:%d\nretry_min = 50ms\nretry_max = 500ms\n%s", emu_port,
                 consul_extra);
    assert_true(n > 0 && (size_t)n < sizeof(consul_lines));
    return consul_sluice_start_with(sluice_lines, consul_lines, service_extra);
}

void consul_instance_body(char *out, size_t out_len, int i, const char *node_addr,
                          const char *svc_addr, const char *status, const char *extra)
{
    char svc_addr_field[300] = "";
    assert_true(i >= 0 && i < consul_fx.n_backends);
    if (svc_addr != NULL)
        snprintf(svc_addr_field, sizeof(svc_addr_field), "\"Address\":\"%s\",", svc_addr);
    int n =
        snprintf(out, out_len,
                 "{\"Node\":\"n%d\",\"Address\":\"%s\",\"Service\":{\"ID\":\"api-%d\","
                 "\"Service\":\"api\",%s\"Port\":%d%s},\"Check\":{\"CheckID\":\"chk-%d\","
                 "\"Name\":\"chk\",\"Status\":\"%s\",\"ServiceID\":\"api-%d\"}}",
                 i, node_addr, i, svc_addr_field, consul_fx.backend_ports[i], extra, i, status, i);
    assert_true(n > 0 && (size_t)n < out_len);
}

void consul_wait_event(size_t *from, const char *event, const char *extra)
{
    const char *needles[] = {event, extra, NULL};
    assert_int_equal(log_wait(&consul_fx.sluice, from, NULL, 0, needles), 0);
}

void consul_wait_published(size_t *from, int n, const char *extra)
{
    char count[64];
    snprintf(count, sizeof(count), "\"instances\":%d,", n);
    const char *needles[] = {"\"event\":\"discovery_published\"", count, extra, NULL};
    assert_int_equal(log_wait(&consul_fx.sluice, from, NULL, 0, needles), 0);
}

void consul_emu_send(const char *method, const char *path, const char *body)
{
    assert_int_equal(http_request(consul_fx.emu_port, method, path, body, NULL, 0), 200);
}

char *consul_emu_get(const char *path)
{
    char *body = malloc(CONSUL_FIXTURE_BODY_MAX);
    assert_non_null(body);
    assert_int_equal(
        http_request(consul_fx.emu_port, "GET", path, NULL, body, CONSUL_FIXTURE_BODY_MAX), 200);
    return body;
}
