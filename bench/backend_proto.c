/* The backend's protocols: one step function per mode, picked through a table. */
#include "backend.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pattern.h"

/* Echo reads at most this much at once, which bounds what a slow reader can make us hold. */
#define ECHO_CHUNK ((size_t)64 * 1024)
/* Largest single send of the source: big sends keep the syscall count per GB low. */
#define SOURCE_CHUNK ((size_t)1024 * 1024)
/* Longest HTTP request head read before answering anyway. */
#define HTTP_HEAD_MAX 16384

typedef enum backend_step (*proto_step_fn)(struct backend_worker *w, struct backend_conn *c);

/* One row per mode. */
struct proto {
    const char *name;   /* --mode value */
    proto_step_fn step; /* advances one connection */
};

/* Receives into the worker's scratch buffer, mapping the outcome onto a step result. */
static enum backend_step recv_scratch(struct backend_worker *w, struct backend_conn *c, size_t max,
                                      size_t *got)
{
    *got = 0;
    if (!c->readable)
        return BACKEND_BLOCKED;
    ssize_t n = backend_recv(c, w->scratch, max);
    if (n == -EAGAIN)
        return BACKEND_BLOCKED;
    if (n < 0)
        return BACKEND_CLOSE;
    *got = (size_t)n;
    return BACKEND_PROGRESS;
}

/* Queues the final reply and asks for FIN once it is out. */
static enum backend_step reply_and_finish(struct backend_conn *c, const char *text, size_t len)
{
    c->fin = 1;
    return backend_send(c, text, len) < 0 ? BACKEND_CLOSE : BACKEND_PROGRESS;
}

static enum backend_step echo_step(struct backend_worker *w, struct backend_conn *c)
{
    size_t got;
    enum backend_step r;

    if (c->rd_eof) {
        c->fin = 1; /* everything read has been sent: propagate the half-close */
        return BACKEND_PROGRESS;
    }
    r = recv_scratch(w, c, ECHO_CHUNK, &got);
    if (r != BACKEND_PROGRESS || got == 0)
        return r;
    return backend_send(c, w->scratch, got) < 0 ? BACKEND_CLOSE : BACKEND_PROGRESS;
}

static enum backend_step sink_step(struct backend_worker *w, struct backend_conn *c)
{
    size_t got;
    enum backend_step r;

    if (c->rd_eof) {
        char line[64];
        int len = snprintf(line, sizeof(line), "%" PRIu64 " %016" PRIx64 "\n", c->bytes, c->hash);
        return reply_and_finish(c, line, (size_t)len);
    }
    r = recv_scratch(w, c, BACKEND_SCRATCH, &got);
    if (r != BACKEND_PROGRESS)
        return r;
    c->bytes += got;
    c->hash = fnv1a64_update(c->hash, w->scratch, got);
    return BACKEND_PROGRESS;
}

/* Appends input up to and including '\n' to the request line; returns bytes taken or -1. */
static ssize_t line_take(struct backend_conn *c, const unsigned char *p, size_t n)
{
    const unsigned char *nl = memchr(p, '\n', n);
    size_t take = nl != NULL ? (size_t)(nl - p) + 1 : n;

    if (c->line_len + take >= sizeof(c->line))
        return -1;
    memcpy(c->line + c->line_len, p, take);
    c->line_len += take;
    c->line[c->line_len] = '\0';
    c->head_done = nl != NULL;
    return (ssize_t)take;
}

/* Parses "<a>\n" (want == 1) or "<a> <b>\n" (want == 2) from the request line; 0 or -1. */
static int line_numbers(const struct backend_conn *c, int want, uint64_t *a, uint64_t *b)
{
    char *end = NULL;

    if (c->line[0] < '0' || c->line[0] > '9')
        return -1;
    *a = strtoull(c->line, &end, 10);
    if (want == 2) {
        if (*end != ' ' || end[1] < '0' || end[1] > '9')
            return -1;
        *b = strtoull(end + 1, &end, 10);
    }
    if (*end == '\r')
        end++;
    return *end == '\n' ? 0 : -1;
}

static enum backend_step verify_finish(struct backend_conn *c)
{
    char line[64];
    int len;

    if (!c->head_done)
        return BACKEND_CLOSE;
    len = snprintf(line, sizeof(line), "%" PRIu64 " %" PRId64 "\n", c->bytes, c->bad);
    return reply_and_finish(c, line, (size_t)len);
}

static enum backend_step verify_step(struct backend_worker *w, struct backend_conn *c)
{
    size_t got, off = 0;
    enum backend_step r;

    if (c->rd_eof)
        return verify_finish(c);
    r = recv_scratch(w, c, BACKEND_SCRATCH, &got);
    if (r != BACKEND_PROGRESS || got == 0)
        return r;
    if (!c->head_done) {
        ssize_t took = line_take(c, w->scratch, got);
        uint64_t unused;
        if (took < 0 || (c->head_done && line_numbers(c, 1, &c->seed, &unused) < 0))
            return BACKEND_CLOSE;
        off = (size_t)took;
    }
    if (c->bad < 0 && got > off) {
        int64_t bad = pattern_check(c->seed, c->bytes, w->scratch + off, got - off);
        c->bad = bad;
    }
    c->bytes += got - off;
    return BACKEND_PROGRESS;
}

static enum backend_step source_head(struct backend_worker *w, struct backend_conn *c)
{
    size_t got;
    enum backend_step r;

    if (c->rd_eof)
        return BACKEND_CLOSE;
    r = recv_scratch(w, c, sizeof(c->line), &got);
    if (r != BACKEND_PROGRESS || got == 0)
        return r;
    /* Anything after the request line is ignored: the client has nothing else to say. */
    if (line_take(c, w->scratch, got) < 0)
        return BACKEND_CLOSE;
    if (c->head_done) {
        if (line_numbers(c, 2, &c->remaining, &c->seed) < 0)
            return BACKEND_CLOSE;
        c->unlimited = c->remaining == 0;
    }
    return BACKEND_PROGRESS;
}

static enum backend_step source_step(struct backend_worker *w, struct backend_conn *c)
{
    size_t avail, len;
    const unsigned char *p;

    if (!c->head_done)
        return source_head(w, c);
    if (!c->unlimited && c->remaining == 0) {
        c->fin = 1;
        return BACKEND_PROGRESS;
    }
    if (!c->writable)
        return BACKEND_BLOCKED;
    p = pattern_view(c->seed, c->bytes, &avail);
    len = avail < SOURCE_CHUNK ? avail : SOURCE_CHUNK;
    if (!c->unlimited && c->remaining < len)
        len = (size_t)c->remaining;
    ssize_t n = backend_send_raw(c, p, len);
    if (n == -EAGAIN)
        return BACKEND_BLOCKED;
    if (n < 0)
        return BACKEND_CLOSE;
    c->bytes += (uint64_t)n;
    if (!c->unlimited)
        c->remaining -= (uint64_t)n;
    return BACKEND_PROGRESS;
}

static const char *http_reason(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

static enum backend_step http_answer(struct backend_worker *w, struct backend_conn *c)
{
    int code = atomic_load(&w->conf->http_down) ? 503 : w->conf->http_status;
    const char *reason = http_reason(code);
    char text[512], body[200];
    int len;

    /* the body names the backend (--hello), so a client can tell who answered */
    snprintf(body, sizeof(body), "%d %s%s%.*s\n", code, reason, w->conf->hello ? " " : "",
             w->conf->hello ? (int)w->conf->hello_len - 1 : 0, w->conf->hello ? w->conf->hello : "");
    if (code == 204 || code == 304 || code < 200) /* these carry no body */
        len = snprintf(text, sizeof(text), "HTTP/1.1 %d %s\r\nConnection: close\r\n\r\n", code,
                       reason);
    else
        len = snprintf(text, sizeof(text),
                       "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                       "Connection: close\r\n\r\n%s",
                       code, reason, strlen(body), body);
    return reply_and_finish(c, text, (size_t)len);
}

/* Scans for the blank line ending the head; bare '\n' line ends are accepted too. */
static int http_head_ends(struct backend_conn *c, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            if (c->http_nl)
                return 1;
            c->http_nl = 1;
        } else if (p[i] != '\r') {
            c->http_nl = 0;
        }
    }
    return 0;
}

static enum backend_step http_step(struct backend_worker *w, struct backend_conn *c)
{
    size_t got;
    enum backend_step r;

    if (c->rd_eof)
        return c->bytes > 0 ? http_answer(w, c) : BACKEND_CLOSE;
    r = recv_scratch(w, c, BACKEND_SCRATCH, &got);
    if (r != BACKEND_PROGRESS || got == 0)
        return r;
    c->bytes += got;
    if (http_head_ends(c, w->scratch, got) || c->bytes > HTTP_HEAD_MAX)
        return http_answer(w, c);
    return BACKEND_PROGRESS;
}

static const struct proto protos[] = {
    [BACKEND_ECHO] = {.name = "echo", .step = echo_step},
    [BACKEND_SINK] = {.name = "sink", .step = sink_step},
    [BACKEND_VERIFY] = {.name = "verify", .step = verify_step},
    [BACKEND_SOURCE] = {.name = "source", .step = source_step},
    [BACKEND_HTTP] = {.name = "http", .step = http_step},
};

int backend_mode_parse(const char *name, enum backend_mode *mode)
{
    for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]); i++) {
        if (strcmp(protos[i].name, name) == 0) {
            *mode = (enum backend_mode)i;
            return 0;
        }
    }
    return -EINVAL;
}

enum backend_step backend_proto_open(struct backend_worker *w, struct backend_conn *c)
{
    const struct backend_conf *conf = w->conf;

    c->hash = FNV1A64_INIT;
    c->bad = -1;
    if (conf->mode == BACKEND_ECHO && conf->hello != NULL &&
        backend_send(c, conf->hello, conf->hello_len) < 0)
        return BACKEND_CLOSE;
    return BACKEND_PROGRESS;
}

enum backend_step backend_proto_step(struct backend_worker *w, struct backend_conn *c)
{
    return protos[w->conf->mode].step(w, c);
}
