/* Structured event logging: one JSON or text line per event, built on the stack, one write(2). */
#include "log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Longest line written, newline included. Equal to PIPE_BUF so a line written to a pipe is
 * atomic even if write(2) were ever split. */
#define LOG_LINE_MAX 4096

/* Room kept at the end of every line for the truncation marker, the closing brace and the
 * newline, so a cut line stays valid JSON. */
#define LOG_TRUNCATED_JSON ",\"truncated\":true}\n"
#define LOG_TRUNCATED_TEXT " truncated=true\n"
#define LOG_RESERVE        (sizeof(LOG_TRUNCATED_JSON) + 1)

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const level_names_upper[] = {"DEBUG", "INFO", "WARN", "ERROR"};
static const char *const format_names[] = {"json", "text"};

/* A line under construction. Every append either fits entirely or sets truncated. */
struct log_line {
    char buf[LOG_LINE_MAX]; /* the line */
    size_t len;             /* bytes used */
    size_t limit;           /* appends stop here; the rest is reserved for the ending */
    int truncated;          /* an append did not fit; no more fields are added */
};

void log_init(struct logger *lg, int fd)
{
    atomic_init(&lg->min_level, LOG_LEVEL_INFO);
    atomic_init(&lg->format, LOG_FORMAT_JSON);
    lg->fd = fd;
}

void log_configure(struct logger *lg, enum log_level min_level, enum log_format format)
{
    if ((int)min_level >= LOG_LEVEL_DEBUG && min_level <= LOG_LEVEL_ERROR) {
        atomic_store_explicit(&lg->min_level, (int)min_level, memory_order_relaxed);
    }
    if ((int)format >= LOG_FORMAT_JSON && format <= LOG_FORMAT_TEXT) {
        atomic_store_explicit(&lg->format, (int)format, memory_order_relaxed);
    }
}

int log_enabled(const struct logger *lg, enum log_level level)
{
    /* relaxed: a level change may take a line or two to be seen, never a fence per event */
    return lg != NULL && lg->fd >= 0 &&
           (int)level >= atomic_load_explicit(&lg->min_level, memory_order_relaxed);
}

/* Appends n bytes or nothing at all, so a rollback point is never split. */
static int line_put(struct log_line *l, const char *s, size_t n)
{
    if (l->truncated || n > l->limit - l->len) {
        l->truncated = 1;
        return -1;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return 0;
}

static int line_puts(struct log_line *l, const char *s)
{
    return line_put(l, s, strlen(s));
}

/* The escape sequence JSON needs for byte c, or NULL when c goes out as it is. */
static const char *json_escape(unsigned char c, char tmp[8])
{
    switch (c) {
    case '"':
        return "\\\"";
    case '\\':
        return "\\\\";
    case '\n':
        return "\\n";
    case '\r':
        return "\\r";
    case '\t':
        return "\\t";
    default:
        break;
    }
    if (c < 0x20) {
        snprintf(tmp, 8, "\\u%04x", c);
        return tmp;
    }
    return NULL;
}

/* Length of the well-formed UTF-8 sequence at p (2 to 4 bytes), or 0 when the bytes there are
 * not one: a stray continuation byte, a truncated, overlong or surrogate sequence, or a code
 * point above U+10FFFF. Such bytes come from binary config files, Consul answers or clients. */
static size_t utf8_sequence(const unsigned char *p)
{
    size_t n = p[0] >= 0xF0 ? 4 : p[0] >= 0xE0 ? 3 : p[0] >= 0xC2 ? 2 : 0;
    uint32_t cp;

    if (n == 0 || p[0] > 0xF4)
        return 0;
    cp = p[0] & (0x7F >> n);
    for (size_t k = 1; k < n; k++) {
        if ((p[k] & 0xC0) != 0x80)
            return 0; /* also stops at the terminating NUL */
        cp = cp << 6 | (p[k] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* Appends s escaped, without quotes: JSON escapes for '"', '\\' and control characters, whole
 * UTF-8 sequences as they are, and every byte that is not valid UTF-8 as \u00XX, so the line
 * stays valid JSON whatever the value held. Stops early (and sets truncated) when the line is
 * full, never inside a sequence, keeping one byte for the closing quote the caller adds. */
static void line_put_escaped(struct log_line *l, const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    char tmp[8];

    for (size_t i = 0; u[i] != '\0';) {
        size_t seq = u[i] < 0x80 ? 1 : utf8_sequence(u + i);
        const char *esc = u[i] < 0x80 ? json_escape(u[i], tmp) : NULL;
        if (seq == 0) {
            snprintf(tmp, sizeof(tmp), "\\u%04x", u[i]);
            esc = tmp;
            seq = 1;
        }
        size_t n = esc != NULL ? strlen(esc) : seq;
        if (n + 1 > l->limit - l->len) {
            l->truncated = 1;
            return;
        }
        memcpy(l->buf + l->len, esc != NULL ? esc : s + i, n);
        l->len += n;
        i += seq;
    }
}

/* Appends "s" as a JSON string; a long value is cut but always closed. Returns -1 when not
 * even the opening quote fitted. */
static int line_put_quoted(struct log_line *l, const char *s)
{
    if (l->truncated || l->limit - l->len < 2) {
        l->truncated = 1;
        return -1;
    }
    l->buf[l->len++] = '"';
    line_put_escaped(l, s);
    l->buf[l->len++] = '"'; /* line_put_escaped kept room for it */
    return 0;
}

/* Ends the line, saying so when something was cut. The reserve past limit always holds the
 * longer ending. */
static void line_finish(struct log_line *l, const char *cut_ending, const char *ending)
{
    int cut = l->truncated;

    l->truncated = 0;
    l->limit = sizeof(l->buf);
    line_puts(l, cut ? cut_ending : ending);
}

/* ts as 2026-11-27T02:31:05.123Z (UTC, milliseconds). */
static void format_timestamp(char out[32])
{
    struct timespec now;
    struct tm tm;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(now.tv_nsec / 1000000) % 1000);
}

/* One ,"key":value pair; a pair that does not fit is removed whole unless its string value
 * could be cut, so the object stays valid either way. */
static void json_put_field(struct log_line *l, const struct log_field *f)
{
    size_t mark = l->len;
    char num[24];

    if (line_puts(l, ",") < 0 || line_put_quoted(l, f->key != NULL ? f->key : "") < 0 ||
        l->truncated || line_puts(l, ":") < 0) {
        l->len = mark;
        return;
    }
    if (f->str != NULL) {
        if (line_put_quoted(l, f->str) < 0) {
            l->len = mark;
        }
        return;
    }
    snprintf(num, sizeof(num), "%lld", f->num);
    if (line_puts(l, num) < 0) {
        l->len = mark;
    }
}

/* {"ts":...,"level":...,"event":..., fields in order} and a newline. */
static void json_build(struct log_line *l, const char *ts, enum log_level level, const char *event,
                       const struct log_field *fields, size_t n_fields)
{
    line_puts(l, "{\"ts\":\"");
    line_puts(l, ts);
    line_puts(l, "\",\"level\":\"");
    line_puts(l, level_names[level]);
    line_puts(l, "\",\"event\":");
    line_put_quoted(l, event);
    for (size_t i = 0; i < n_fields && !l->truncated; i++) {
        json_put_field(l, &fields[i]);
    }
    line_finish(l, LOG_TRUNCATED_JSON, "}\n");
}

/* Text values are quoted only when a reader could not tell where they end otherwise. */
static int text_needs_quotes(const char *s)
{
    if (*s == '\0') {
        return 1;
    }
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        /* bytes >= 0x80 too: an invalid one goes out escaped, which needs the quotes */
        if (c <= ' ' || c == '=' || c == '"' || c == '\\' || c >= 0x7f) {
            return 1;
        }
    }
    return 0;
}

/* A value as it is, or quoted and escaped like JSON when it needs quotes. */
static void text_put_value(struct log_line *l, const char *s)
{
    if (text_needs_quotes(s)) {
        line_put_quoted(l, s);
        return;
    }
    line_put_escaped(l, s); /* nothing in it needs escaping: it goes out as it is */
}

/* " key=value"; keys are identifiers and go out as they are. */
static void text_put_field(struct log_line *l, const struct log_field *f)
{
    size_t mark = l->len;
    char num[24];

    if (line_puts(l, " ") < 0 || line_puts(l, f->key != NULL ? f->key : "") < 0 ||
        line_puts(l, "=") < 0) {
        l->len = mark;
        return;
    }
    if (f->str != NULL) {
        text_put_value(l, f->str);
        return;
    }
    snprintf(num, sizeof(num), "%lld", f->num);
    if (line_puts(l, num) < 0) {
        l->len = mark;
    }
}

/* TS LEVEL event key=value ... and a newline. */
static void text_build(struct log_line *l, const char *ts, enum log_level level, const char *event,
                       const struct log_field *fields, size_t n_fields)
{
    line_puts(l, ts);
    line_puts(l, " ");
    line_puts(l, level_names_upper[level]);
    line_puts(l, " ");
    text_put_value(l, event);
    for (size_t i = 0; i < n_fields && !l->truncated; i++) {
        text_put_field(l, &fields[i]);
    }
    line_finish(l, LOG_TRUNCATED_TEXT, "\n");
}

/* Writes the whole line; a short write continues where it stopped, EINTR retries. Other
 * errors drop the line: there is nowhere left to report them. */
static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* Builds the line of one event into line (format and level as lg says). */
static void line_build(const struct logger *lg, struct log_line *line, enum log_level level,
                       const char *event, const struct log_field *fields, size_t n_fields)
{
    char ts[32];

    line->len = 0;
    line->limit = LOG_LINE_MAX - LOG_RESERVE;
    line->truncated = 0;
    if ((int)level > LOG_LEVEL_ERROR) {
        level = LOG_LEVEL_ERROR;
    }
    format_timestamp(ts);
    if (event == NULL) {
        event = "";
    }
    if (fields == NULL) {
        n_fields = 0;
    }
    if (atomic_load_explicit(&lg->format, memory_order_relaxed) == LOG_FORMAT_TEXT) {
        text_build(line, ts, level, event, fields, n_fields);
    } else {
        json_build(line, ts, level, event, fields, n_fields);
    }
}

void log_emit(const struct logger *lg, enum log_level level, const char *event,
              const struct log_field *fields, size_t n_fields)
{
    struct log_line line;    /* no initializer: zeroing 4 KiB per event would be wasted */
    int saved_errno = errno; /* callers often log and then look at errno */

    if (!log_enabled(lg, level)) {
        return;
    }
    line_build(lg, &line, level, event, fields, n_fields);
    write_all(lg->fd, line.buf, line.len);
    errno = saved_errno;
}

size_t log_format(const struct logger *lg, enum log_level level, const char *event,
                  const struct log_field *fields, size_t n_fields, char *out, size_t out_len)
{
    struct log_line line;

    line_build(lg, &line, level, event, fields, n_fields);
    if (line.len > out_len) {
        return 0;
    }
    memcpy(out, line.buf, line.len);
    return line.len;
}

/* Index of text in names, or -1. */
static int name_index(const char *const *names, size_t n, const char *text)
{
    for (size_t i = 0; text != NULL && i < n; i++) {
        if (strcmp(names[i], text) == 0) {
            return (int)i;
        }
    }
    return -1;
}

int log_level_parse(const char *text, enum log_level *out)
{
    int i = name_index(level_names, sizeof(level_names) / sizeof(level_names[0]), text);

    if (i < 0) {
        return -EINVAL;
    }
    *out = (enum log_level)i;
    return 0;
}

int log_format_parse(const char *text, enum log_format *out)
{
    int i = name_index(format_names, sizeof(format_names) / sizeof(format_names[0]), text);

    if (i < 0) {
        return -EINVAL;
    }
    *out = (enum log_format)i;
    return 0;
}
