/* Consul over HTTPS against the emulator (--tls-cert, client certificates required): CA file,
 * tls_server_name, mutual TLS, tls_skip_verify, verification failures reported as errors, and
 * the CONSUL_* TLS variables. Certificates are made with openssl(1) for each run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consul_fixture.h"

static char dir[256];

/* A CA, a server certificate for DNS name consul.test only, a client certificate. */
static int make_certs(void)
{
    char script[4096], out[8192];
    snprintf(script, sizeof(script),
             "set -e; cd '%s'; "
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca "
             "  -keyout ca.key -out ca.pem 2>/dev/null; "
             "printf 'subjectAltName=DNS:consul.test\\n' > san.ext; "
             "for who in server client; do "
             "  openssl req -newkey rsa:2048 -nodes -subj /CN=$who -keyout $who.key "
             "    -out $who.csr 2>/dev/null; "
             "  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
             "    -extfile san.ext -out $who.pem 2>/dev/null; "
             "done",
             dir);
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    return run_capture((char *const *)argv, out, sizeof(out));
}

static int setup(void **state)
{
    (void)state;
    char cert[600], key[600], ca[600];
    snprintf(dir, sizeof(dir), "%s/tls-%d", harness_tmpdir(), getpid());
    char mk[600];
    snprintf(mk, sizeof(mk), "mkdir -p '%s'", dir);
    if (system(mk) != 0 || make_certs() != 0)
        return -1;
    snprintf(cert, sizeof(cert), "%s/server.pem", dir);
    snprintf(key, sizeof(key), "%s/server.key", dir);
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    const char *args[] = {"--tls-cert", cert, "--tls-key", key, "--tls-client-ca", ca, NULL};
    return consul_fixture_start(1, args);
}

/* The emulator speaks only HTTPS here, which the harness's plain HTTP client cannot: b0 is
 * registered as an agent service with sluice's own CLI, over mutual TLS. */
static void register_backend(void)
{
    char out[4096], conf[600], port[16];
    snprintf(conf, sizeof(conf), "%s/cli.ini", dir);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f,
            "[consul]\naddress = https://127.0.0.1:%d\nca_file = %s/ca.pem\n"
            "tls_server_name = consul.test\ncert_file = %s/client.pem\nkey_file = %s/client.key\n",
            consul_fx.emu_port, dir, dir, dir);
    fclose(f);
    snprintf(port, sizeof(port), "%d", consul_fx.backend_ports[0]);
    const char *argv[] = {harness_bin("SLUICE_BIN"),
                          "register",
                          "-c",
                          conf,
                          "--name",
                          "api",
                          "--id",
                          "api-0",
                          "--address",
                          "127.0.0.1",
                          "--port",
                          port,
                          NULL};
    int status = run_capture((char *const *)argv, out, sizeof(out));
    print_message("register over TLS -> %d: %s", status, out);
    assert_int_equal(status, 0);
}

/* Starts sluice with [consul] lines tls (address and TLS keys); returns the listener port. */
static int start_sluice(const char *tls)
{
    char consul[3072];
    snprintf(consul, sizeof(consul), "%sretry_min = 50ms\nretry_max = 500ms\n", tls);
    return consul_sluice_start_with("workers = 1\n", consul, "");
}

static void test_mutual_tls_with_server_name(void **state)
{
    (void)state;
    char tls[2048], hello[32];
    register_backend();
    snprintf(tls, sizeof(tls),
             "address = https://127.0.0.1:%d\nca_file = %s/ca.pem\ntls_server_name = consul.test\n"
             "cert_file = %s/client.pem\nkey_file = %s/client.key\n",
             consul_fx.emu_port, dir, dir, dir);
    int port = start_sluice(tls);
    consul_wait_published(NULL, 1, NULL);
    assert_int_equal(hello_of(port, hello, sizeof(hello)), 0);
    assert_string_equal(hello, "b0");
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* The certificate names consul.test, not 127.0.0.1: without tls_server_name verification
 * fails and is reported; tls_skip_verify accepts it; no client certificate fails the
 * handshake. */
static void test_verification_failures(void **state)
{
    (void)state;
    char tls[2048];
    snprintf(tls, sizeof(tls),
             "address = https://127.0.0.1:%d\nca_file = %s/ca.pem\n"
             "cert_file = %s/client.pem\nkey_file = %s/client.key\n",
             consul_fx.emu_port, dir, dir, dir);
    start_sluice(tls);
    consul_wait_event(NULL, "\"event\":\"discovery_degraded\"", "127.0.0.1");
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);

    snprintf(tls, sizeof(tls),
             "address = https://127.0.0.1:%d\ntls_skip_verify = true\n"
             "cert_file = %s/client.pem\nkey_file = %s/client.key\n",
             consul_fx.emu_port, dir, dir);
    start_sluice(tls);
    consul_wait_event(NULL, "\"event\":\"discovery_published\"", NULL);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);

    snprintf(tls, sizeof(tls),
             "address = https://127.0.0.1:%d\nca_file = %s/ca.pem\ntls_server_name = consul.test\n",
             consul_fx.emu_port, dir);
    start_sluice(tls);
    consul_wait_event(NULL, "\"event\":\"discovery_degraded\"", NULL);
    assert_int_equal(proc_stop(&consul_fx.sluice, SIGTERM), 0);
}

/* The same settings from CONSUL_HTTP_SSL, CONSUL_CACERT, CONSUL_TLS_SERVER_NAME,
 * CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY, with no [consul] section at all. */
static void test_tls_from_environment(void **state)
{
    (void)state;
    char addr[64], path[600], out[4096];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", consul_fx.emu_port);
    setenv("CONSUL_HTTP_ADDR", addr, 1);
    setenv("CONSUL_HTTP_SSL", "true", 1);
    setenv("CONSUL_TLS_SERVER_NAME", "consul.test", 1);
    snprintf(path, sizeof(path), "%s/ca.pem", dir);
    setenv("CONSUL_CACERT", path, 1);
    snprintf(path, sizeof(path), "%s/client.pem", dir);
    setenv("CONSUL_CLIENT_CERT", path, 1);
    snprintf(path, sizeof(path), "%s/client.key", dir);
    setenv("CONSUL_CLIENT_KEY", path, 1);
    const char *reg[] = {harness_bin("SLUICE_BIN"), "register", "--name", "envtls", NULL};
    int status = run_capture((char *const *)reg, out, sizeof(out));
    print_message("register from the environment -> %d: %s", status, out);
    assert_int_equal(status, 0);
    unsetenv("CONSUL_CLIENT_KEY");
    status = run_capture((char *const *)reg, out, sizeof(out));
    assert_int_equal(status, 2); /* no client key: the handshake fails, Consul is unreachable */
    unsetenv("CONSUL_HTTP_ADDR");
    unsetenv("CONSUL_HTTP_SSL");
    unsetenv("CONSUL_TLS_SERVER_NAME");
    unsetenv("CONSUL_CACERT");
    unsetenv("CONSUL_CLIENT_CERT");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_mutual_tls_with_server_name, consul_fixture_kill_sluice),
        cmocka_unit_test_teardown(test_verification_failures, consul_fixture_kill_sluice),
        cmocka_unit_test_teardown(test_tls_from_environment, consul_fixture_kill_sluice),
    };
    return cmocka_run_group_tests(tests, setup, consul_fixture_stop);
}
