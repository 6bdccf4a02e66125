/* The admin HTTP server end to end: token rules, JSON errors, /status, /metrics (promtool and a
 * real Prometheus scrape), drain, enable and weight overrides, /v1/reload and /healthz. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "pattern.h"

#define N_BACKENDS 2

/* A failed test may leave clients open: sluice must not wait its default 30 s for them. */
#define SLUICE_EXTRA "shutdown_timeout = 3s\n"

#define TOKEN        "s3cret"
#define BEARER       "Authorization: Bearer " TOKEN "\r\n"
#define BEARER_WRONG "Authorization: Bearer s3creT\r\n"
#define BASIC        "Authorization: Basic YWRtaW46czNjcmV0\r\n" /* admin:s3cret */
#define BASIC_WRONG  "Authorization: Basic YWRtaW46d3Jvbmc=\r\n" /* admin:wrong */

#define PROMETHEUS "/usr/bin/prometheus"
#define PROMTOOL   "/usr/bin/promtool"

/* One answer of an HTTP server, as received. */
struct answer {
    int status;         /* HTTP status, -1 without an answer */
    char head[8192];    /* status line and header lines */
    char body[1 << 20]; /* the body, NUL-terminated (cut at the size) */
    size_t len;         /* bytes in body */
    char raw[1 << 21];  /* the whole answer while it is split */
    char what[1024];    /* "METHOD PATH" of the request, for messages */
};

static struct answer ans;
static struct proc sluice;
static struct proc backends[N_BACKENDS];
static int backend_ports[N_BACKENDS];
static int admin_port;
static pid_t prom_pid;     /* a Prometheus of the test, 0 when none */
static char prom_dir[512]; /* its storage directory, "" when none */

static int setup(void **state)
{
    (void)state;
    memset(&sluice, 0, sizeof(sluice));
    memset(backends, 0, sizeof(backends));
    memset(backend_ports, 0, sizeof(backend_ports));
    admin_port = 0;
    prom_pid = 0;
    prom_dir[0] = '\0';
    return 0;
}

/* Stops a child of fork_logged: SIGTERM, then SIGKILL when it is still there after the bound. */
static void child_stop(pid_t *pid)
{
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    int status;

    if (*pid <= 0)
        return;
    kill(*pid, SIGTERM);
    while (waitpid(*pid, &status, WNOHANG) == 0) {
        if (harness_now_ms() > deadline) {
            kill(*pid, SIGKILL);
            waitpid(*pid, &status, 0);
            break;
        }
        sleep_ms(10);
    }
    *pid = 0;
}

/* Whatever a test started is stopped here, also when an assertion left the test early. */
static int teardown(void **state)
{
    (void)state;
    char out[256];
    proc_stop(&sluice, SIGTERM);
    for (int i = 0; i < N_BACKENDS; i++)
        proc_stop(&backends[i], SIGTERM);
    child_stop(&prom_pid);
    if (prom_dir[0] != '\0') {
        char *const rm[] = {"/bin/rm", "-rf", prom_dir, NULL};
        run_capture(rm, out, sizeof(out));
    }
    return 0;
}

/* --- HTTP --------------------------------------------------------------------------------- */

/* One request to 127.0.0.1:port with Connection: close; headers are whole lines (may be NULL),
 * body blen bytes. The answer goes to ans; returns its status, or -1. */
static int call_port(int port, const char *method, const char *path, const char *headers,
                     const char *body, size_t blen)
{
    char req[8192];
    int fd = tcp_connect(port);

    ans.status = -1;
    ans.head[0] = ans.body[0] = '\0';
    ans.len = 0;
    snprintf(ans.what, sizeof(ans.what), "%s %s", method, path);
    if (fd < 0)
        return -1;
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s"
                     "Content-Length: %zu\r\n\r\n",
                     method, path, headers != NULL ? headers : "",
                     blen > 0 ? "Content-Type: application/json\r\n" : "", blen);
    ssize_t got = -1;
    if (n > 0 && (size_t)n < sizeof(req) && write_all(fd, req, (size_t)n) == 0 &&
        (blen == 0 || write_all(fd, body, blen) == 0))
        got = read_to_eof(fd, ans.raw, sizeof(ans.raw) - 1);
    close(fd);
    if (got < 12)
        return -1;
    ans.raw[got] = '\0';
    char *sep = strstr(ans.raw, "\r\n\r\n");
    if (strncmp(ans.raw, "HTTP/1.", 7) != 0 || sep == NULL)
        return -1;
    size_t head_len = (size_t)(sep - ans.raw);
    snprintf(ans.head, sizeof(ans.head), "%.*s", (int)head_len, ans.raw);
    ans.len = (size_t)got - head_len - 4;
    if (ans.len >= sizeof(ans.body))
        ans.len = sizeof(ans.body) - 1;
    memcpy(ans.body, sep + 4, ans.len);
    ans.body[ans.len] = '\0';
    ans.status = atoi(ans.raw + 9);
    return ans.status;
}

/* A request to sluice's admin server with a C-string body (may be NULL). */
static int call(const char *method, const char *path, const char *headers, const char *body)
{
    return call_port(admin_port, method, path, headers, body, body != NULL ? strlen(body) : 0);
}

/* 1 when the last answer has header name (any case) with a value that holds needle. */
static int header_has(const char *name, const char *needle)
{
    size_t nlen = strlen(name);
    for (const char *line = strstr(ans.head, "\r\n"); line != NULL;
         line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        const char *end = strstr(h, "\r\n");
        size_t len = end != NULL ? (size_t)(end - h) : strlen(h);
        if (len > nlen && strncasecmp(h, name, nlen) == 0 && h[nlen] == ':') {
            char value[1024];
            snprintf(value, sizeof(value), "%.*s", (int)(len - nlen - 1), h + nlen + 1);
            if (strstr(value, needle) != NULL)
                return 1;
        }
    }
    return 0;
}

/* The last answer is status with a JSON body {"error": "..."} whose text holds needle (NULL: any
 * text that is not empty). */
static void expect_error(int status, const char *needle)
{
    if (ans.status != status)
        fail_msg("%s answered %d (%s), expected %d", ans.what, ans.status, ans.body, status);
    cJSON *o = cJSON_Parse(ans.body);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    if (!cJSON_IsString(e) || e->valuestring[0] == '\0')
        fail_msg("%d answer is not a JSON error: '%s'", status, ans.body);
    if (needle != NULL && strstr(e->valuestring, needle) == NULL)
        fail_msg("error '%s' does not say '%s'", e->valuestring, needle);
    assert_true(header_has("Content-Type", "application/json"));
    cJSON_Delete(o);
}

/* Makes the call and expects a JSON error with that status (needle as in expect_error). */
static void call_error(const char *method, const char *path, const char *headers, const char *body,
                       int status, const char *needle)
{
    call(method, path, headers, body);
    expect_error(status, needle);
}

/* "/v1/services/SVC/instances/127.0.0.1:PORT/ACTION" into out. */
static const char *instance_path(char *out, size_t len, const char *svc, int port,
                                 const char *action)
{
    snprintf(out, len, "/v1/services/%s/instances/127.0.0.1:%d/%s", svc, port, action);
    return out;
}

/* A change call that must succeed: 200 {"ok":true,"instance":{...}} with the given state. Returns
 * the instance's "weight" from the answer. */
static double change_ok(const char *method, const char *svc, int port, const char *action,
                        const char *headers, const char *body, const char *state)
{
    char path[128];
    int status = call(method, instance_path(path, sizeof(path), svc, port, action), headers, body);
    if (status != 200)
        fail_msg("%s %s answered %d: %s", method, path, status, ans.body);
    cJSON *o = cJSON_Parse(ans.body);
    const cJSON *inst = cJSON_GetObjectItemCaseSensitive(o, "instance");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(inst, "state");
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(inst, "weight");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "ok")));
    assert_true(cJSON_IsString(st) && cJSON_IsNumber(w));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(inst, "effective_weight")));
    if (strcmp(st->valuestring, state) != 0)
        fail_msg("%s %s: state %s, expected %s", method, path, st->valuestring, state);
    double weight = w->valuedouble;
    cJSON_Delete(o);
    return weight;
}

/* GET /status (headers may be NULL), parsed; the caller deletes it. */
static cJSON *get_status(const char *headers)
{
    int status = call("GET", "/status", headers, NULL);
    if (status != 200)
        fail_msg("/status answered %d: %s", status, ans.body);
    cJSON *o = cJSON_Parse(ans.body);
    assert_non_null(o);
    return o;
}

/* Instance 127.0.0.1:port of service svc in a /status document, or NULL. */
static const cJSON *status_instance(const cJSON *st, const char *svc, int port)
{
    char id[64];
    const cJSON *s, *i;

    snprintf(id, sizeof(id), "127.0.0.1:%d", port);
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(st, "services"))
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "name");
        if (!cJSON_IsString(name) || strcmp(name->valuestring, svc) != 0)
            continue;
        cJSON_ArrayForEach(i, cJSON_GetObjectItemCaseSensitive(s, "instances"))
        {
            const cJSON *iid = cJSON_GetObjectItemCaseSensitive(i, "id");
            if (cJSON_IsString(iid) && strcmp(iid->valuestring, id) == 0)
                return i;
        }
    }
    return NULL;
}

/* A number of instance 127.0.0.1:port in service "api" from a fresh /status. */
static double inst_num(int port, const char *key)
{
    cJSON *st = get_status(NULL);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(status_instance(st, "api", port), key);
    if (!cJSON_IsNumber(v))
        fail_msg("/status has no number %s for 127.0.0.1:%d: %s", key, port, ans.body);
    double d = v->valuedouble;
    cJSON_Delete(st);
    return d;
}

/* The state word of instance 127.0.0.1:port in service "api" from a fresh /status, in out. */
static const char *inst_state(int port, char *out, size_t len)
{
    cJSON *st = get_status(NULL);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(status_instance(st, "api", port), "state");
    if (!cJSON_IsString(v))
        fail_msg("/status has no state for 127.0.0.1:%d: %s", port, ans.body);
    snprintf(out, len, "%s", v->valuestring);
    cJSON_Delete(st);
    return out;
}

/* The value of the sample whose series text (name and labels) is exactly series in a metrics
 * body; fails the test when there is none. */
static double metric(const char *body, const char *series)
{
    double v = metrics_sample(body, series);
    if (v < 0)
        fail_msg("no sample %s in /metrics", series);
    return v;
}

/* 1 when a client of port gets a clean EOF without a byte before it (nobody to serve it). */
static int eof_without_bytes(int port)
{
    char c;
    ssize_t n;
    int fd = tcp_connect(port);
    assert_true(fd >= 0);
    while ((n = recv(fd, &c, 1, 0)) < 0 && errno == EINTR)
        ;
    close(fd);
    return n == 0;
}

/* --- sluice ------------------------------------------------------------------------------- */

/* Starts sluice with one listener "web" in front of backend_line and an [admin] section on a
 * free loopback port with the given extra lines; returns the listener port. */
static int start_admin(const char *backend_line, const char *sluice_extra,
                       const char *service_extra, const char *admin_extra)
{
    int port = harness_free_port();
    char conf[4096];
    admin_port = harness_free_port();
    config_simple(conf, sizeof(conf), port, backend_line, sluice_extra, "", service_extra);
    size_t used = strlen(conf);
    snprintf(conf + used, sizeof(conf) - used, "[admin]\nbind = 127.0.0.1:%d\n%s", admin_port,
             admin_extra);
    assert_int_equal(sluice_start(&sluice, conf), 0);
    return port;
}

/* Starts n hello backends and sluice in front of them with a token; returns the listener port. */
static int start_hello(int n, const char *sluice_extra, const char *service_extra,
                       const char *admin_extra)
{
    char line[256] = "";
    assert_int_equal(hello_backends_start(backends, backend_ports, n), 0);
    for (int i = 0; i < n; i++)
        snprintf(line + strlen(line), sizeof(line) - strlen(line), "%s127.0.0.1:%d",
                 i > 0 ? ", " : "", backend_ports[i]);
    return start_admin(line, sluice_extra, service_extra, admin_extra);
}

/* One connection through port: reads the hello, has "ping" echoed, closes. Returns the hello's
 * backend index (as hello_index). */
static int echo_once(int port)
{
    char hello[32], back[4];
    int fd = tcp_connect(port);
    assert_true(fd >= 0);
    assert_true(read_line(fd, hello, sizeof(hello)) > 0);
    assert_int_equal(write_all(fd, "ping", 4), 0);
    assert_int_equal(read_exact(fd, back, 4), 0);
    assert_memory_equal(back, "ping", 4);
    close(fd);
    assert_true(hello[0] == 'b' && hello[1] >= '0' && hello[1] < '0' + N_BACKENDS);
    return hello[1] - '0';
}

/* Writes text to a new file of the test directory named after tag; returns its path. */
static const char *write_file(char *path, size_t len, const char *tag, const char *text)
{
    snprintf(path, len, "%s/%d-admin-%s", harness_tmpdir(), getpid(), tag);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* 1-based number of the line of text that starts with prefix, or 0. */
static int line_of(const char *text, const char *prefix)
{
    int line = 1;
    for (const char *p = text; *p != '\0'; line++) {
        if (strncmp(p, prefix, strlen(prefix)) == 0)
            return line;
        p = strchr(p, '\n');
        if (p == NULL)
            break;
        p++;
    }
    return 0;
}

/* --- tests -------------------------------------------------------------------------------- */

/* Loopback bind with a token, read_auth at its default (off there): /healthz 200 "ok", /status
 * 200 JSON without a token (version, state "ok", our pid, 1 worker, listener web with its bind
 * and service, service api round_robin static with instance 127.0.0.1:B0 healthy weight 1),
 * /metrics 200 text 0.0.4 and / 200 text/html without any external URL or script. A change
 * without Authorization is 401 with WWW-Authenticate: Basic, a wrong Bearer or Basic token 403,
 * the right one by Basic disables b0 and by Bearer enables it, and /status shows each at once. */
static void test_reads_open_changes_need_token(void **state)
{
    (void)state;
    char path[128], want[64], st[32];
    int port = start_hello(1, SLUICE_EXTRA, "", "token = " TOKEN "\n");

    assert_int_equal(call("GET", "/healthz", NULL, NULL), 200);
    assert_string_equal(ans.body, "ok");
    cJSON *s = get_status(NULL);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(s, "state")->valuestring, "ok");
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(s, "version")));
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(s, "pid")->valueint, sluice.pid);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(s, "workers")->valueint, 1);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(s, "uptime_s")));
    const cJSON *l = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(s, "listeners"), 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(l, "name")->valuestring, "web");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(l, "service")->valuestring, "api");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(l, "log_access")));
    const cJSON *svc = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(s, "services"), 0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(svc, "balance")->valuestring,
                        "round_robin");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(svc, "discovery")->valuestring, "static");
    const cJSON *in = status_instance(s, "api", backend_ports[0]);
    assert_non_null(in);
    snprintf(want, sizeof(want), "127.0.0.1:%d", backend_ports[0]);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(in, "address")->valuestring, want);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(in, "state")->valuestring, "healthy");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(in, "last_check")->valuestring, "none");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(in, "weight")->valueint, 1);
    assert_true(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(s, "consul")));
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(s, "registrations")));
    assert_true(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(s, "counters")));
    cJSON_Delete(s);

    assert_int_equal(call("GET", "/metrics", NULL, NULL), 200);
    assert_true(header_has("Content-Type", "text/plain; version=0.0.4"));
    assert_non_null(
        strstr(ans.body, "sluice_listener_connections_accepted_total{listener=\"web\"}"));
    assert_int_equal(call("GET", "/", NULL, NULL), 200);
    assert_true(header_has("Content-Type", "text/html"));
    print_message("status page: %zu bytes\n", ans.len);
    assert_non_null(strstr(ans.body, "<html"));
    assert_null(strstr(ans.body, "http://"));
    assert_null(strstr(ans.body, "https://"));
    assert_null(strstr(ans.body, "<script src"));

    instance_path(path, sizeof(path), "api", backend_ports[0], "disable");
    call_error("POST", path, NULL, NULL, 401, "token");
    assert_true(header_has("WWW-Authenticate", "Basic"));
    call_error("POST", path, BEARER_WRONG, NULL, 403, "wrong");
    call_error("POST", path, BASIC_WRONG, NULL, 403, "wrong");
    call_error("POST", "/v1/reload", NULL, NULL, 401, NULL);
    assert_string_equal(inst_state(backend_ports[0], st, sizeof(st)), "healthy");
    change_ok("POST", "api", backend_ports[0], "disable", BASIC, NULL, "disabled");
    assert_string_equal(inst_state(backend_ports[0], st, sizeof(st)), "disabled");
    assert_true(eof_without_bytes(port)); /* its only instance is out */
    change_ok("POST", "api", backend_ports[0], "enable", BEARER, NULL, "healthy");
    assert_string_equal(inst_state(backend_ports[0], st, sizeof(st)), "healthy");
    assert_int_equal(echo_once(port), 0); /* enabled again: it serves */
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* read_auth = on: /status, /metrics and / answer 401 without Authorization (with
 * WWW-Authenticate: Basic) and 403 with a wrong token, 200 with the token by Bearer or Basic;
 * /healthz stays 200 "ok" without one. */
static void test_read_auth_on_guards_reads(void **state)
{
    (void)state;
    static const char *const reads[] = {"/status", "/metrics", "/"};
    start_hello(1, SLUICE_EXTRA, "", "token = " TOKEN "\nread_auth = on\n");
    for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
        call_error("GET", reads[i], NULL, NULL, 401, "token");
        assert_true(header_has("WWW-Authenticate", "Basic"));
        call_error("GET", reads[i], BEARER_WRONG, NULL, 403, "wrong");
        call_error("GET", reads[i], BASIC_WRONG, NULL, 403, "wrong");
        assert_int_equal(call("GET", reads[i], BEARER, NULL), 200);
        assert_int_equal(call("GET", reads[i], BASIC, NULL), 200);
    }
    cJSON *s = get_status(BASIC);
    assert_non_null(status_instance(s, "api", backend_ports[0]));
    cJSON_Delete(s);
    assert_int_equal(call("GET", "/healthz", NULL, NULL), 200);
    assert_string_equal(ans.body, "ok");
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* No token configured: reads are open, but every change answers 403 (also with an Authorization
 * header, also /v1/reload) and leaves the instance healthy. */
static void test_without_token_changes_are_refused(void **state)
{
    (void)state;
    char path[128], st[32];
    start_hello(1, SLUICE_EXTRA, "", "");
    assert_int_equal(call("GET", "/status", NULL, NULL), 200);
    assert_int_equal(call("GET", "/metrics", NULL, NULL), 200);
    assert_int_equal(call("GET", "/healthz", NULL, NULL), 200);
    instance_path(path, sizeof(path), "api", backend_ports[0], "drain");
    call_error("POST", path, NULL, NULL, 403, "token");
    call_error("POST", path, BEARER, NULL, 403, "token");
    call_error("POST", "/v1/reload", BASIC, NULL, 403, "token");
    instance_path(path, sizeof(path), "api", backend_ports[0], "weight");
    call_error("PUT", path, BEARER, "{\"weight\": 5}", 403, "token");
    assert_string_equal(inst_state(backend_ports[0], st, sizeof(st)), "healthy");
    assert_int_equal(inst_num(backend_ports[0], "weight"), 1);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* With the token, every bad request is a JSON error naming it: malformed JSON, an empty body and
 * {} are 400, weight 1000001, -1, "3" and 2.5 are 400 (0 and 1000000 are accepted), unknown
 * service, unknown instance and unknown action are 404, a 70 KiB body is 413, an unknown path is
 * 404, and GET on /v1/reload or drain, POST on /status or weight, PUT on drain are 405. The
 * instance's weight is 1 again after enable. */
static void test_bad_requests_are_json_errors(void **state)
{
    (void)state;
    char path[128], other[128];
    start_hello(1, SLUICE_EXTRA, "", "token = " TOKEN "\n");
    int b0 = backend_ports[0];
    instance_path(path, sizeof(path), "api", b0, "weight");
    call_error("PUT", path, BEARER, "{\"weight\": ", 400, "JSON");
    call_error("PUT", path, BEARER, NULL, 400, NULL);
    call_error("PUT", path, BEARER, "{}", 400, "weight");
    call_error("PUT", path, BEARER, "{\"weight\": 1000001}", 400, "between 0 and 1000000");
    call_error("PUT", path, BEARER, "{\"weight\": -1}", 400, "weight");
    call_error("PUT", path, BEARER, "{\"weight\": \"3\"}", 400, "number");
    call_error("PUT", path, BEARER, "{\"weight\": 2.5}", 400, "number");
    call_error("PUT", path, BEARER, "{\"weight\": 1e20}", 400, "weight");
    assert_int_equal(change_ok("PUT", "api", b0, "weight", BEARER, "{\"weight\": 0}", "healthy"),
                     0);
    assert_int_equal(
        change_ok("PUT", "api", b0, "weight", BEARER, "{\"weight\": 1000000}", "healthy"), 1000000);
    assert_int_equal(inst_num(b0, "weight"), 1000000);

    call_error("POST", instance_path(other, sizeof(other), "nosuch", b0, "drain"), BEARER, NULL,
               404, "service");
    call_error("POST", instance_path(other, sizeof(other), "api", harness_free_port(), "drain"),
               BEARER, NULL, 404, "instance");
    call_error("POST", instance_path(other, sizeof(other), "api", b0, "explode"), BEARER, NULL, 404,
               "action");

    size_t big = 70 * 1024;
    char *body = malloc(big);
    assert_non_null(body);
    memset(body, ' ', big);
    memcpy(body, "{\"weight\": 2", 12);
    body[big - 1] = '}';
    call_port(admin_port, "PUT", path, BEARER, body, big);
    free(body);
    expect_error(413, "64 KiB");

    call_error("GET", "/nosuch", NULL, NULL, 404, NULL);
    call_error("GET", "/v1/nosuch", BEARER, NULL, 404, NULL);
    call_error("GET", "/v1/reload", BEARER, NULL, 405, "POST");
    call_error("GET", instance_path(other, sizeof(other), "api", b0, "drain"), BEARER, NULL, 405,
               "POST");
    call_error("PUT", instance_path(other, sizeof(other), "api", b0, "drain"), BEARER, NULL, 405,
               "POST");
    call_error("POST", path, BEARER, "{\"weight\": 2}", 405, "PUT");
    call_error("POST", "/status", NULL, NULL, 405, "GET");
    call_error("DELETE", "/metrics", NULL, NULL, 405, "GET");
    assert_int_equal(change_ok("POST", "api", b0, "enable", BEARER, NULL, "healthy"), 1);
    assert_int_equal(inst_num(b0, "weight"), 1);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* sluice -t on a config whose [admin] binds host:aport with extra lines; returns the exit status
 * with the output in out. */
static int admin_check(int lport, const char *host, int aport, const char *extra, char *out,
                       size_t out_len)
{
    char conf[4096], path[512];
    config_simple(conf, sizeof(conf), lport, "127.0.0.1:1", SLUICE_EXTRA, "", "");
    size_t used = strlen(conf);
    snprintf(conf + used, sizeof(conf) - used, "[admin]\nbind = %s:%d\n%s", host, aport, extra);
    write_file(path, sizeof(path), "check.ini", conf);
    char *const argv[] = {(char *)harness_bin("SLUICE_BIN"), "-t", "-c", path, NULL};
    return run_capture(argv, out, out_len);
}

/* [admin] bind = 0.0.0.0:PORT without a token: sluice -t exits 1 with "FILE:LINE: bind: ... can
 * be reached from other hosts: set token or token_file", and so does starting it (exit 1, the
 * same line). With a token it is accepted (-t exit 0), 127.0.0.2 and [::1] count as loopback
 * (exit 0), [::] does not (exit 1), read_auth = on without a token is a read_auth error (exit 1),
 * token and token_file together are "FILE:LINE: token_file: ..." (exit 1). A token_file holding
 * "filetok3n\n" is the token: a drain with it succeeds, the key's s3cret is 403. */
static void test_public_bind_needs_token_and_token_file(void **state)
{
    (void)state;
    char conf[4096], path[512], tok_path[512], out[8192], want[1024], inst[128];
    const char *bin = harness_bin("SLUICE_BIN");
    int lport = harness_free_port(), aport = harness_free_port();

    config_simple(conf, sizeof(conf), lport, "127.0.0.1:1", SLUICE_EXTRA, "", "");
    size_t used = strlen(conf);
    snprintf(conf + used, sizeof(conf) - used, "[admin]\nbind = 0.0.0.0:%d\n", aport);
    write_file(path, sizeof(path), "public.ini", conf);
    snprintf(want, sizeof(want),
             "%s:%d: bind: 0.0.0.0:%d can be reached from other hosts: set token or token_file",
             path, line_of(conf, "bind = 0.0.0.0"), aport);
    char *const check[] = {(char *)bin, "-t", "-c", path, NULL};
    int rc = run_capture(check, out, sizeof(out));
    print_message("sluice -t: exit %d: %s", rc, out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, want));
    char *const run[] = {"/usr/bin/timeout", "20", (char *)bin, "-c", path, NULL};
    rc = run_capture(run, out, sizeof(out));
    print_message("sluice start: exit %d: %s", rc, out);
    assert_int_equal(rc, 1);
    assert_true(strstr(out, want) != NULL || strstr(out, "startup_failed") != NULL);

    write_file(path, sizeof(path), "public-token.ini", strcat(conf, "token = " TOKEN "\n"));
    assert_int_equal(run_capture(check, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "configuration OK"));
    config_simple(conf, sizeof(conf), lport, "127.0.0.1:1", SLUICE_EXTRA, "", "");
    used = strlen(conf);
    snprintf(conf + used, sizeof(conf) - used, "[admin]\nbind = 127.0.0.2:%d\n", aport);
    write_file(path, sizeof(path), "loopback2.ini", conf);
    assert_int_equal(run_capture(check, out, sizeof(out)), 0);
    assert_int_equal(admin_check(lport, "[::1]", aport, "", out, sizeof(out)), 0);
    assert_int_equal(admin_check(lport, "[::]", aport, "", out, sizeof(out)), 1);
    assert_non_null(strstr(out, "bind: [::]"));
    assert_int_equal(admin_check(lport, "127.0.0.1", aport, "read_auth = on\n", out, sizeof(out)),
                     1);
    assert_non_null(strstr(out, ": read_auth: "));

    write_file(tok_path, sizeof(tok_path), "token", "filetok3n\n");
    used = strlen(conf);
    snprintf(conf + used, sizeof(conf) - used, "token = x\ntoken_file = %s\n", tok_path);
    write_file(path, sizeof(path), "both.ini", conf);
    snprintf(want, sizeof(want), "%s:%d: token_file: ", path, line_of(conf, "token_file ="));
    rc = run_capture(check, out, sizeof(out));
    print_message("token and token_file: exit %d: %s", rc, out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, want));

    snprintf(conf, sizeof(conf), "token_file = %s\n", tok_path);
    start_hello(1, SLUICE_EXTRA, "", conf);
    instance_path(inst, sizeof(inst), "api", backend_ports[0], "drain");
    call_error("POST", inst, BEARER, NULL, 403, "wrong");
    change_ok("POST", "api", backend_ports[0], "drain", "Authorization: Bearer filetok3n\r\n", NULL,
              "draining");
    change_ok("POST", "api", backend_ports[0], "enable",
              "Authorization: Basic b3BzOmZpbGV0b2szbg==\r\n", NULL, "healthy"); /* ops:filetok3n */
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* /healthz takes GET (and HEAD) like the other reads: POST and DELETE on it are 405 with a JSON
 * error, as every wrong method is. */
static void test_healthz_wrong_method_is_405(void **state)
{
    (void)state;
    start_hello(1, SLUICE_EXTRA, "", "token = " TOKEN "\n");
    assert_int_equal(call("GET", "/healthz", NULL, NULL), 200);
    assert_int_equal(call("HEAD", "/healthz", NULL, NULL), 200);
    call_error("POST", "/healthz", NULL, NULL, 405, NULL);
    call_error("DELETE", "/healthz", BEARER, NULL, 405, NULL);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* After 3 connections through b0 (each "ping" echoed after the 3-byte hello), /metrics counts
 * them: accepted 3, open 0, closed client_fin 3, connects 3, sent 12 and received 21 bytes,
 * instance state healthy 1 and draining 0, dropped log lines 0, both histograms count 3, and
 * every family the README lists is declared with # TYPE. */
static void test_metrics_count_sessions(void **state)
{
    (void)state;
    static const char *const families[] = {
        "sluice_listener_connections_accepted_total counter",
        "sluice_listener_connections_open gauge",
        "sluice_listener_connections_closed_total counter",
        "sluice_connections_open gauge",
        "sluice_instance_active_connections gauge",
        "sluice_instance_connects_total counter",
        "sluice_instance_connect_failures_total counter",
        "sluice_instance_connect_timeouts_total counter",
        "sluice_instance_sent_bytes_total counter",
        "sluice_instance_received_bytes_total counter",
        "sluice_instance_ejections_total counter",
        "sluice_instance_effective_weight gauge",
        "sluice_instance_state gauge",
        "sluice_retries_total counter",
        "sluice_bytes_total counter",
        "sluice_queue_depth gauge",
        "sluice_connect_duration_seconds histogram",
        "sluice_session_duration_seconds histogram",
        "sluice_consul_request_duration_seconds histogram",
        "sluice_consul_errors_total counter",
        "sluice_registrations_total counter",
        "sluice_registry_errors_total counter",
        "sluice_registry_outages_total counter",
        "sluice_registry_failing gauge",
        "sluice_registry_instances gauge",
        "sluice_log_lines_dropped_total counter",
        "process_open_fds gauge",
        "process_resident_memory_bytes gauge",
        "process_start_time_seconds gauge",
    };
    char series[256], type[128];
    int port = start_hello(1, SLUICE_EXTRA, "", "token = " TOKEN "\n");
    for (int i = 0; i < 3; i++)
        assert_int_equal(echo_once(port), 0);
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    for (;;) { /* the last session ends on sluice's side a moment after our close */
        assert_int_equal(call("GET", "/metrics", NULL, NULL), 200);
        /* the listener's gauge and the process-wide one are given back one after the other */
        if ((metric(ans.body, "sluice_listener_connections_open{listener=\"web\"}") == 0 &&
             metric(ans.body, "sluice_connections_open") == 0) ||
            harness_now_ms() > deadline)
            break;
        sleep_ms(10);
    }
    const char *m = ans.body;
    print_message("/metrics: %zu bytes\n", ans.len);
    assert_int_equal(metric(m, "sluice_listener_connections_accepted_total{listener=\"web\"}"), 3);
    assert_int_equal(metric(m, "sluice_listener_connections_open{listener=\"web\"}"), 0);
    assert_int_equal(
        metric(m,
               "sluice_listener_connections_closed_total{listener=\"web\",reason=\"client_fin\"}"),
        3);
    assert_int_equal(metric(m, "sluice_connections_open"), 0);
    snprintf(series, sizeof(series), "{service=\"api\",instance=\"127.0.0.1:%d\"}",
             backend_ports[0]);
    char name[512];
    snprintf(name, sizeof(name), "sluice_instance_connects_total%s", series);
    assert_int_equal(metric(m, name), 3);
    snprintf(name, sizeof(name), "sluice_instance_sent_bytes_total%s", series);
    assert_int_equal(metric(m, name), 12);
    snprintf(name, sizeof(name), "sluice_instance_received_bytes_total%s", series);
    assert_int_equal(metric(m, name), 21);
    snprintf(name, sizeof(name), "sluice_instance_active_connections%s", series);
    assert_int_equal(metric(m, name), 0);
    snprintf(name, sizeof(name),
             "sluice_instance_state{service=\"api\",instance=\"127.0.0.1:%d\",state=\"healthy\"}",
             backend_ports[0]);
    assert_int_equal(metric(m, name), 1);
    snprintf(name, sizeof(name),
             "sluice_instance_state{service=\"api\",instance=\"127.0.0.1:%d\",state=\"draining\"}",
             backend_ports[0]);
    assert_int_equal(metric(m, name), 0);
    assert_int_equal(metric(m, "sluice_log_lines_dropped_total"), 0);
    assert_int_equal(metric(m, "sluice_connect_duration_seconds_count"), 3);
    assert_int_equal(metric(m, "sluice_session_duration_seconds_count"), 3);
    assert_int_equal(metric(m, "sluice_session_duration_seconds_bucket{le=\"+Inf\"}"), 3);
    assert_int_equal(metric(m, "sluice_bytes_total{direction=\"up\",how=\"splice\"}") +
                         metric(m, "sluice_bytes_total{direction=\"up\",how=\"copy\"}"),
                     12);
    assert_true(metric(m, "process_open_fds") > 0);
    assert_true(metric(m, "process_resident_memory_bytes") > 0);
    double started = metric(m, "process_start_time_seconds");
    assert_true(started > harness_wall_time() - 3600 && started <= harness_wall_time());
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        snprintf(type, sizeof(type), "# TYPE %s\n", families[i]);
        if (strstr(m, type) == NULL)
            fail_msg("/metrics lacks '# TYPE %s'", families[i]);
    }
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* `promtool check metrics` accepts the /metrics body (exit 0) after some traffic: two instances,
 * one of them drained so every state and histogram bucket line is filled in. */
static void test_metrics_pass_promtool(void **state)
{
    (void)state;
    char file[512], cmd[1024], out[16384];
    if (access(PROMTOOL, X_OK) != 0) {
        print_message("%s is missing (Debian package prometheus): skipped\n", PROMTOOL);
        skip();
    }
    int port = start_hello(2, SLUICE_EXTRA, "", "token = " TOKEN "\n");
    for (int i = 0; i < 4; i++)
        echo_once(port);
    change_ok("POST", "api", backend_ports[1], "drain", BEARER, NULL, "draining");
    assert_int_equal(call("GET", "/metrics", NULL, NULL), 200);
    snprintf(file, sizeof(file), "%s/%d-admin-metrics.txt", harness_tmpdir(), getpid());
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(ans.body, 1, ans.len, f), ans.len);
    fclose(f);
    snprintf(cmd, sizeof(cmd), PROMTOOL " check metrics < %s", file);
    char *const argv[] = {"/bin/sh", "-c", cmd, NULL};
    int rc = run_capture(argv, out, sizeof(out));
    if (rc != 0)
        print_message("promtool check metrics: exit %d\n%s\n", rc, out);
    assert_int_equal(rc, 0);
    print_message("promtool accepts %zu bytes of /metrics\n", ans.len);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* Starts argv with stdin from /dev/null and stdout and stderr to log_path; the child dies with
 * the test process. Returns its pid. */
static pid_t fork_logged(char *const argv[], const char *log_path)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int devnull = open("/dev/null", O_RDONLY);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(devnull, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* The value of the first result of a Prometheus instant query answer (data.result[0].value[1]),
 * in out; "" when there is none yet. */
static const char *prom_value(const char *body, char *out, size_t len)
{
    cJSON *o = cJSON_Parse(body);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(o, "data");
    const cJSON *r0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(data, "result"), 0);
    const cJSON *v = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r0, "value"), 1);
    snprintf(out, len, "%s", cJSON_IsString(v) ? v->valuestring : "");
    cJSON_Delete(o);
    return out;
}

/* A real Prometheus scraping the admin /metrics every second: after exactly 7 echoed connections
 * through sluice, its query API answers sluice_listener_connections_accepted_total = "7" (the
 * series with listener="web" and the job's instance label 127.0.0.1:ADMIN). */
static void test_prometheus_scrapes_metrics(void **state)
{
    (void)state;
    char cfg[1024], cfg_path[512], log_path[512], flag[4][640], value[64];
    if (access(PROMETHEUS, X_OK) != 0) {
        print_message("%s is missing (Debian package prometheus): skipped\n", PROMETHEUS);
        skip();
    }
    int port = start_hello(1, SLUICE_EXTRA, "", "token = " TOKEN "\n");
    int prom_port = harness_free_port();
    snprintf(cfg, sizeof(cfg),
             "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
             "scrape_configs:\n  - job_name: sluice\n    scrape_interval: 1s\n"
             "    static_configs:\n      - targets: [\"127.0.0.1:%d\"]\n",
             admin_port);
    write_file(cfg_path, sizeof(cfg_path), "prometheus.yml", cfg);
    snprintf(prom_dir, sizeof(prom_dir), "%s/%d-admin-prometheus-data", harness_tmpdir(), getpid());
    mkdir(prom_dir, 0755);
    snprintf(log_path, sizeof(log_path), "%s/%d-admin-prometheus.log", harness_tmpdir(), getpid());
    snprintf(flag[0], sizeof(flag[0]), "--config.file=%s", cfg_path);
    snprintf(flag[1], sizeof(flag[1]), "--storage.tsdb.path=%s", prom_dir);
    snprintf(flag[2], sizeof(flag[2]), "--web.listen-address=127.0.0.1:%d", prom_port);
    snprintf(flag[3], sizeof(flag[3]), "--log.level=warn");
    char *const argv[] = {PROMETHEUS, flag[0], flag[1], flag[2], flag[3], NULL};
    prom_pid = fork_logged(argv, log_path);
    assert_true(prom_pid > 0);

    uint64_t t0 = harness_now_ms(), deadline = t0 + HARNESS_WAIT_MS;
    while (call_port(prom_port, "GET", "/-/ready", NULL, NULL, 0) != 200 &&
           harness_now_ms() < deadline)
        sleep_ms(100);
    if (ans.status != 200)
        fail_msg("prometheus not ready after %d ms (log %s)", HARNESS_WAIT_MS, log_path);
    print_message("prometheus ready after %llu ms\n", (unsigned long long)(harness_now_ms() - t0));
    for (int i = 0; i < 7; i++)
        assert_int_equal(echo_once(port), 0);

    const char *query = "/api/v1/query?query=sluice_listener_connections_accepted_total";
    t0 = harness_now_ms();
    deadline = t0 + HARNESS_WAIT_MS;
    do {
        if (call_port(prom_port, "GET", query, NULL, NULL, 0) == 200 &&
            strcmp(prom_value(ans.body, value, sizeof(value)), "7") == 0)
            break;
        sleep_ms(200);
    } while (harness_now_ms() < deadline);
    print_message("prometheus says %s after %llu ms: %s\n", value,
                  (unsigned long long)(harness_now_ms() - t0), ans.body);
    assert_string_equal(value, "7");
    char label[64];
    snprintf(label, sizeof(label), "\"instance\":\"127.0.0.1:%d\"", admin_port);
    assert_non_null(strstr(ans.body, "\"listener\":\"web\""));
    assert_non_null(strstr(ans.body, label));
    child_stop(&prom_pid);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* Two source instances, drain_timeout = 0: a 64 MiB download (scaled under sanitizers) runs on
 * the instance X it got; draining X by the API answers state "draining" and /status says so at
 * once, with X active 1. Ten new 4 KiB downloads are all served by the other one (its connects
 * +10, X's still 1), the first download then completes byte-exact, and X's bytes_down is its
 * total. After enable X is healthy again and gets 2 of 4 new connections. */
static void test_drain_moves_new_connections_keeps_transfer(void **state)
{
    (void)state;
    static unsigned char buf[65536];
    char line[128], st[32];
    for (int i = 0; i < 2; i++) {
        backend_ports[i] = backend_start(&backends[i], "source", NULL);
        assert_true(backend_ports[i] > 0);
    }
    snprintf(line, sizeof(line), "127.0.0.1:%d, 127.0.0.1:%d", backend_ports[0], backend_ports[1]);
    int port = start_admin(line, SLUICE_EXTRA, "drain_timeout = 0\n", "token = " TOKEN "\n");

    uint64_t total = harness_scale(64ULL << 20), seed = 31;
    int fd = tcp_connect(port);
    assert_true(fd >= 0);
    assert_int_equal(source_request(fd, total, seed), 0);
    assert_int_equal(read_exact(fd, buf, sizeof(buf)), 0);
    assert_int_equal(pattern_check(seed, 0, buf, sizeof(buf)), -1);
    int x = inst_num(backend_ports[0], "active") == 1 ? 0 : 1, other = 1 - x;
    assert_int_equal(inst_num(backend_ports[x], "active"), 1);
    assert_int_equal(inst_num(backend_ports[other], "active"), 0);
    change_ok("POST", "api", backend_ports[x], "drain", BEARER, NULL, "draining");
    assert_string_equal(inst_state(backend_ports[x], st, sizeof(st)), "draining");

    double other_before = inst_num(backend_ports[other], "connects");
    for (int i = 0; i < 10; i++) {
        int c = tcp_connect(port);
        assert_true(c >= 0);
        assert_int_equal(source_request(c, 4096, 100 + (uint64_t)i), 0);
        assert_int_equal(read_pattern_to_eof(c, 100 + (uint64_t)i, 0), 4096);
        close(c);
    }
    double x_connects = inst_num(backend_ports[x], "connects");
    double other_connects = inst_num(backend_ports[other], "connects") - other_before;
    print_message("while X drains: X connects %.0f, the other +%.0f of 10\n", x_connects,
                  other_connects);
    assert_int_equal(x_connects, 1);
    assert_int_equal(other_connects, 10);
    assert_int_equal(inst_num(backend_ports[x], "active"), 1);
    assert_string_equal(inst_state(backend_ports[x], st, sizeof(st)), "draining");

    assert_int_equal(read_pattern_to_eof(fd, seed, sizeof(buf)), (int64_t)total);
    close(fd);
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    while (inst_num(backend_ports[x], "active") != 0 && harness_now_ms() < deadline)
        sleep_ms(10);
    assert_int_equal(inst_num(backend_ports[x], "bytes_down"), (double)total);

    change_ok("POST", "api", backend_ports[x], "enable", BEARER, NULL, "healthy");
    assert_string_equal(inst_state(backend_ports[x], st, sizeof(st)), "healthy");
    for (int i = 0; i < 4; i++) {
        int c = tcp_connect(port);
        assert_true(c >= 0);
        assert_int_equal(source_request(c, 4096, 200 + (uint64_t)i), 0);
        assert_int_equal(read_pattern_to_eof(c, 200 + (uint64_t)i, 0), 4096);
        close(c);
    }
    double back = inst_num(backend_ports[x], "connects") - x_connects;
    print_message("after enable: X got %.0f of 4\n", back);
    assert_int_equal(back, 2);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* balance = weighted, b0 and b1 at weight 1, one worker: PUT weight 3 on b0 answers weight 3 and
 * /status shows 3 at once; 40 sequential connections split 30 / 10 (+-1: the smooth cycle of 4
 * may start mid-way). enable ends the override (weight 1): 40 more split 20 / 20 (+-1). */
static void test_weight_override_changes_split(void **state)
{
    (void)state;
    int counts[N_BACKENDS];
    int port = start_hello(2, SLUICE_EXTRA, "balance = weighted\n", "token = " TOKEN "\n");
    assert_int_equal(
        change_ok("PUT", "api", backend_ports[0], "weight", BEARER, "{\"weight\": 3}", "healthy"),
        3);
    assert_int_equal(inst_num(backend_ports[0], "weight"), 3);
    assert_int_equal(inst_num(backend_ports[1], "weight"), 1);
    assert_int_equal(count_hellos(port, 40, counts, N_BACKENDS), 0);
    print_message("b0 at weight 3: %d / %d of 40\n", counts[0], counts[1]);
    assert_in_range(counts[0], 29, 31);
    assert_int_equal(counts[0] + counts[1], 40);

    assert_int_equal(change_ok("POST", "api", backend_ports[0], "enable", BEARER, NULL, "healthy"),
                     1);
    assert_int_equal(inst_num(backend_ports[0], "weight"), 1);
    assert_int_equal(count_hellos(port, 40, counts, N_BACKENDS), 0);
    print_message("after enable: %d / %d of 40\n", counts[0], counts[1]);
    assert_in_range(counts[0], 19, 21);
    assert_int_equal(counts[0] + counts[1], 40);
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* Rewrites the running sluice's config: one listener in front of backends, the [admin] section
 * as started, and "workers = 1" replaced by workers_line. */
static void rewrite_config(int port, const char *backend_line, const char *workers_line)
{
    char conf[4096], out[4096];
    config_simple(conf, sizeof(conf), port, backend_line, SLUICE_EXTRA, "", "");
    const char *w = strstr(conf, "workers = 1\n");
    assert_non_null(w);
    snprintf(out, sizeof(out), "%.*s%s%s[admin]\nbind = 127.0.0.1:%d\ntoken = " TOKEN "\n",
             (int)(w - conf), conf, workers_line, w + strlen("workers = 1\n"), admin_port);
    FILE *f = fopen(sluice.conf_path, "w");
    assert_non_null(f);
    fputs(out, f);
    fclose(f);
}

/* Number of instances of service "api" in a fresh /status. */
static int api_instances(void)
{
    cJSON *st = get_status(NULL);
    const cJSON *svc = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(st, "services"), 0);
    int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(svc, "instances"));
    cJSON_Delete(st);
    return n;
}

/* POST /v1/reload: a file that adds b1 answers 200 {"ok":true,"errors":[]} and /status lists 2
 * instances; a file with "workers = many" on line 2 answers 400 {"ok":false,"error":"the
 * configuration was rejected","errors":["FILE:2: workers: ..."]} and the running config stays (2
 * instances, both serve); the good file again answers 200. */
static void test_reload_reports_errors(void **state)
{
    (void)state;
    char one[64], two[128], want[600];
    int counts[N_BACKENDS];
    assert_int_equal(hello_backends_start(backends, backend_ports, 2), 0);
    snprintf(one, sizeof(one), "127.0.0.1:%d", backend_ports[0]);
    snprintf(two, sizeof(two), "127.0.0.1:%d, 127.0.0.1:%d", backend_ports[0], backend_ports[1]);
    int port = start_admin(one, SLUICE_EXTRA, "", "token = " TOKEN "\n");
    assert_int_equal(api_instances(), 1);

    rewrite_config(port, two, "workers = 1\n");
    assert_int_equal(call("POST", "/v1/reload", BEARER, NULL), 200);
    print_message("good reload: %s\n", ans.body);
    cJSON *o = cJSON_Parse(ans.body);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "ok")));
    const cJSON *errs = cJSON_GetObjectItemCaseSensitive(o, "errors");
    assert_true(cJSON_IsArray(errs) && cJSON_GetArraySize(errs) == 0);
    cJSON_Delete(o);
    assert_int_equal(api_instances(), 2);

    rewrite_config(port, two, "workers = many\n");
    assert_int_equal(call("POST", "/v1/reload", BASIC, NULL), 400);
    print_message("broken reload: %s\n", ans.body);
    o = cJSON_Parse(ans.body);
    assert_non_null(o);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(o, "ok")));
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    assert_true(cJSON_IsString(e));
    assert_string_equal(e->valuestring, "the configuration was rejected");
    errs = cJSON_GetObjectItemCaseSensitive(o, "errors");
    assert_true(cJSON_IsArray(errs) && cJSON_GetArraySize(errs) >= 1);
    const cJSON *first = cJSON_GetArrayItem(errs, 0);
    assert_true(cJSON_IsString(first));
    snprintf(want, sizeof(want), "%s:2: workers: ", sluice.conf_path);
    if (strncmp(first->valuestring, want, strlen(want)) != 0)
        fail_msg("first error '%s' does not start with '%s'", first->valuestring, want);
    cJSON_Delete(o);
    assert_int_equal(api_instances(), 2);
    assert_int_equal(count_hellos(port, 4, counts, N_BACKENDS), 0);
    assert_int_equal(counts[0], 2);
    assert_int_equal(counts[1], 2);

    rewrite_config(port, two, "workers = 1\n");
    assert_int_equal(call("POST", "/v1/reload", BEARER, NULL), 200);
    assert_non_null(strstr(ans.body, "\"ok\":true"));
    assert_int_equal(proc_stop(&sluice, SIGTERM), 0);
}

/* shutdown_timeout = 5s and one client held open: /healthz is 200 "ok" before SIGTERM, then 503
 * "draining" (and /status state "draining") while the client is still served (its "ping" is
 * echoed), five answers in a row; once the client closes sluice exits 0. */
static void test_healthz_draining_during_shutdown(void **state)
{
    (void)state;
    char hello[32], back[4];
    int port = start_hello(1, "shutdown_timeout = 5s\n", "", "token = " TOKEN "\n");
    int held = tcp_connect(port);
    assert_true(held >= 0);
    assert_true(read_line(held, hello, sizeof(hello)) > 0);
    assert_int_equal(call("GET", "/healthz", NULL, NULL), 200);
    assert_string_equal(ans.body, "ok");

    proc_signal(&sluice, SIGTERM);
    uint64_t deadline = harness_now_ms() + HARNESS_WAIT_MS;
    while (call("GET", "/healthz", NULL, NULL) == 200 && harness_now_ms() < deadline)
        sleep_ms(10);
    assert_int_equal(ans.status, 503);
    assert_string_equal(ans.body, "draining");
    for (int i = 0; i < 5; i++) {
        assert_int_equal(call("GET", "/healthz", NULL, NULL), 503);
        assert_string_equal(ans.body, "draining");
    }
    cJSON *st = get_status(NULL);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(st, "state")->valuestring, "draining");
    cJSON_Delete(st);
    assert_int_equal(write_all(held, "ping", 4), 0);
    assert_int_equal(read_exact(held, back, 4), 0);
    assert_memory_equal(back, "ping", 4);
    assert_int_equal(proc_wait(&sluice, 500), -1); /* it still waits for the client */
    close(held);
    assert_int_equal(proc_wait(&sluice, HARNESS_WAIT_MS), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reads_open_changes_need_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_auth_on_guards_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_without_token_changes_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests_are_json_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_healthz_wrong_method_is_405, setup, teardown),
        cmocka_unit_test_setup_teardown(test_public_bind_needs_token_and_token_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_metrics_count_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_pass_promtool, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prometheus_scrapes_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain_moves_new_connections_keeps_transfer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_weight_override_changes_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_reports_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_healthz_draining_during_shutdown, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
