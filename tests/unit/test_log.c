/* Unit tests for log: exact JSON and text lines on fd 2, escaping, filtering, truncation. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LINE_MAX_BYTES 4096 /* the longest line log.c promises to write */
#define TS_LEN         24   /* "2026-11-27T02:31:05.123Z" */

/* The logger under test: writes to fd 2, which a capture redirects. */
static struct logger lg;

/* fd 2 while a capture runs, and what it replaced. */
struct capture {
    int fd;    /* temporary file that receives the lines */
    int saved; /* the real fd 2 */
};

/* Sends fd 2 to a fresh temporary file (O_APPEND, so concurrent writers never overwrite). */
static void capture_start(struct capture *c)
{
    char path[] = "/tmp/sluice_test_log_XXXXXX";

    c->fd = mkstemp(path);
    assert_true(c->fd >= 0);
    unlink(path);
    assert_int_equal(fcntl(c->fd, F_SETFL, O_APPEND), 0);
    fflush(stderr);
    c->saved = dup(STDERR_FILENO);
    assert_true(c->saved >= 0);
    assert_int_equal(dup2(c->fd, STDERR_FILENO), STDERR_FILENO);
}

/* Restores fd 2 (before any assertion can print) and returns what was written; free() it. */
static char *capture_end(struct capture *c)
{
    off_t size;
    char *out;

    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    size = lseek(c->fd, 0, SEEK_END);
    assert_true(size >= 0);
    out = calloc(1, (size_t)size + 1);
    assert_non_null(out);
    assert_int_equal(pread(c->fd, out, (size_t)size, 0), size);
    close(c->fd);
    return out;
}

/* Checks the shape of a timestamp and that it is within a few seconds of now. */
static void assert_timestamp(const char *ts)
{
    struct tm tm = {0};
    int ms = -1;
    char z = 0;

    if (sscanf(ts, "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &z) != 8 ||
        z != 'Z' || ts[4] != '-' || ts[7] != '-' || ts[10] != 'T' || ts[19] != '.') {
        print_message("bad timestamp: %.*s\n", TS_LEN, ts);
        fail();
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    assert_in_range(ms, 0, 999);
    assert_in_range(timegm(&tm), time(NULL) - 5, time(NULL) + 5);
}

/* out must be one JSON line {"ts":"<now>"<rest>; rest starts after the timestamp's quote. */
static void assert_json_line(const char *out, const char *rest)
{
    assert_int_equal(strncmp(out, "{\"ts\":\"", 7), 0);
    assert_timestamp(out + 7);
    assert_int_equal(out[7 + TS_LEN], '"');
    assert_string_equal(out + 7 + TS_LEN + 1, rest);
}

/* out must be one text line "<now><rest>". */
static void assert_text_line(const char *out, const char *rest)
{
    assert_timestamp(out);
    assert_string_equal(out + TS_LEN, rest);
}

static void test_defaults_before_configure(void **state)
{
    (void)state;
    struct capture c;

    assert_false(log_enabled(&lg, LOG_LEVEL_DEBUG));
    assert_true(log_enabled(&lg, LOG_LEVEL_INFO));
    assert_true(log_enabled(&lg, LOG_LEVEL_ERROR));
    capture_start(&c);
    log_event(&lg, LOG_LEVEL_DEBUG, "hidden", LOG_INT("n", 1));
    log_event(&lg, LOG_LEVEL_INFO, "shown", LOG_INT("n", 2));
    char *out = capture_end(&c);
    assert_json_line(out, ",\"level\":\"info\",\"event\":\"shown\",\"n\":2}\n");
    free(out);
}

static void test_json_line(void **state)
{
    (void)state;
    struct capture c;

    log_configure(&lg, LOG_LEVEL_DEBUG, LOG_FORMAT_JSON);
    capture_start(&c);
    log_event(&lg, LOG_LEVEL_INFO, "listener_started", LOG_STR("listener", "web"),
              LOG_STR("bind", "127.0.0.1:8080"), LOG_INT("backlog", 4096));
    char *out = capture_end(&c);
    assert_json_line(out, ",\"level\":\"info\",\"event\":\"listener_started\",\"listener\":\"web\","
                          "\"bind\":\"127.0.0.1:8080\",\"backlog\":4096}\n");
    free(out);
}

static void test_text_line(void **state)
{
    (void)state;
    struct capture c;

    log_configure(&lg, LOG_LEVEL_DEBUG, LOG_FORMAT_TEXT);
    capture_start(&c);
    log_event(&lg, LOG_LEVEL_INFO, "listener_started", LOG_STR("listener", "web"),
              LOG_STR("bind", "127.0.0.1:8080"), LOG_INT("backlog", 4096));
    log_event(&lg, LOG_LEVEL_DEBUG, "d", LOG_INT("n", 1));
    log_event(&lg, LOG_LEVEL_WARN, "w", LOG_INT("n", 2));
    log_event(&lg, LOG_LEVEL_ERROR, "e", LOG_INT("n", 3));
    char *out = capture_end(&c);
    char *lines[4], *save = NULL;
    lines[0] = strtok_r(out, "\n", &save);
    for (int i = 1; i < 4; i++) {
        lines[i] = strtok_r(NULL, "\n", &save);
        assert_non_null(lines[i]);
    }
    assert_null(strtok_r(NULL, "\n", &save));
    assert_text_line(lines[0],
                     " INFO listener_started listener=web bind=127.0.0.1:8080 backlog=4096");
    assert_text_line(lines[1], " DEBUG d n=1");
    assert_text_line(lines[2], " WARN w n=2");
    assert_text_line(lines[3], " ERROR e n=3");
    free(out);
}

static void test_json_levels(void **state)
{
    (void)state;
    static const char *const names[] = {"debug", "info", "warn", "error"};
    char want[128];

    log_configure(&lg, LOG_LEVEL_DEBUG, LOG_FORMAT_JSON);
    for (int level = LOG_LEVEL_DEBUG; level <= LOG_LEVEL_ERROR; level++) {
        struct capture c;
        capture_start(&c);
        log_event(&lg, (enum log_level)level, "e");
        char *out = capture_end(&c);
        snprintf(want, sizeof(want), ",\"level\":\"%s\",\"event\":\"e\"}\n", names[level]);
        assert_json_line(out, want);
        free(out);
    }
}

static void test_json_escaping(void **state)
{
    (void)state;
    const char *value = "a\"b\\c\n\r\t\x01\x1f\x7f/\xc3\xa9";
    struct capture c;

    log_configure(&lg, LOG_LEVEL_DEBUG, LOG_FORMAT_JSON);
    capture_start(&c);
    log_event(&lg, LOG_LEVEL_WARN, "ev\"il", LOG_STR("v", value), LOG_STR("k\"ey", "x"),
              LOG_STR("empty", NULL));
    char *out = capture_end(&c);
    assert_json_line(out, ",\"level\":\"warn\",\"event\":\"ev\\\"il\","
                          "\"v\":\"a\\\"b\\\\c\\n\\r\\t\\u0001\\u001f\x7f/\xc3\xa9\","
                          "\"k\\\"ey\":\"x\",\"empty\":\"\"}\n");
    cJSON *json = cJSON_Parse(out);
    assert_non_null(json);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(json, "v")->valuestring, value);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(json, "event")->valuestring, "ev\"il");
    cJSON_Delete(json);
    free(out);
}

static int utf8_valid(const unsigned char *s);

/* Bytes that are not valid UTF-8 (from a binary config file, a Consul answer, a client) go out
 * as \u00XX, never raw: every line stays valid JSON, in both formats; valid sequences (2, 3 and 4
 * bytes) go out as they are. */
static void test_invalid_utf8_is_escaped(void **state)
{
    static const struct {
        const char *raw;     /* the value logged */
        const char *decoded; /* what a JSON parser reads back (UTF-8) */
    } cases[] = {
        {"ok \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "ok \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"},
        {"\xff\xfe", "\xc3\xbf\xc3\xbe"},                         /* never valid: U+00FF U+00FE */
        {"cut \xc3", "cut \xc3\x83"},                             /* a lead byte without its tail */
        {"\x80stray", "\xc2\x80stray"},                           /* a lone continuation byte */
        {"\xc0\xaf", "\xc3\x80\xc2\xaf"},                         /* an overlong '/' */
        {"\xed\xa0\x80", "\xc3\xad\xc2\xa0\xc2\x80"},             /* a UTF-16 surrogate */
        {"\xf4\x90\x80\x80", "\xc3\xb4\xc2\x90\xc2\x80\xc2\x80"}, /* above U+10FFFF */
    };

    (void)state;
    for (int format = LOG_FORMAT_JSON; format <= LOG_FORMAT_TEXT; format++) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            struct capture c;
            log_configure(&lg, LOG_LEVEL_DEBUG, (enum log_format)format);
            capture_start(&c);
            log_event(&lg, LOG_LEVEL_INFO, "bytes", LOG_STR("v", cases[i].raw));
            char *out = capture_end(&c);
            if (format == LOG_FORMAT_JSON) {
                cJSON *json = cJSON_Parse(out);
                assert_non_null(json);
                assert_string_equal(cJSON_GetObjectItemCaseSensitive(json, "v")->valuestring,
                                    cases[i].decoded);
                cJSON_Delete(json);
            } else {
                /* the value is quoted and JSON-escaped: parse the quoted part */
                char *q = strstr(out, "v=\"");
                assert_non_null(q);
                q[strlen(q) - 1] = '\0'; /* the newline */
                cJSON *json = cJSON_Parse(q + 2);
                assert_non_null(json);
                assert_string_equal(json->valuestring, cases[i].decoded);
                cJSON_Delete(json);
            }
            assert_true(utf8_valid((const unsigned char *)out));
            free(out);
        }
    }
}

static void test_text_quoting(void **state)
{
    (void)state;
    struct capture c;

    log_configure(&lg, LOG_LEVEL_DEBUG, LOG_FORMAT_TEXT);
    capture_start(&c);
    log_event(&lg, LOG_LEVEL_INFO, "quoting", LOG_STR("plain", "a/b:c"), LOG_STR("space", "a b"),
              LOG_STR("eq", "a=b"), LOG_STR("quote", "say \"hi\""), LOG_STR("empty", ""),
              LOG_STR("nl", "x\ny"), LOG_STR("bs", "c:\\d"), LOG_INT("n", -7));
    char *out = capture_end(&c);
    assert_text_line(out, " INFO quoting plain=a/b:c space=\"a b\" eq=\"a=b\" "
                          "quote=\"say \\\"hi\\\"\" empty=\"\" nl=\"x\\ny\" bs=\"c:\\\\d\" n=-7\n");
    free(out);
}

static void test_numbers(void **state)
{
    (void)state;
    struct capture c;

    log_configure(&lg, LOG_LEVEL_DEBUG, LOG_FORMAT_JSON);
    capture_start(&c);
    log_event(&lg, LOG_LEVEL_INFO, "n", LOG_INT("zero", 0), LOG_INT("neg", -42),
              LOG_INT("min", LLONG_MIN), LOG_INT("max", LLONG_MAX), LOG_INT("u", 4294967295U));
    char *out = capture_end(&c);
    assert_json_line(out, ",\"level\":\"info\",\"event\":\"n\",\"zero\":0,\"neg\":-42,"
                          "\"min\":-9223372036854775808,\"max\":9223372036854775807,"
                          "\"u\":4294967295}\n");
    free(out);
}

static void test_level_filtering(void **state)
{
    (void)state;
    struct capture c;
    const struct log_field f = LOG_INT("n", 1);

    log_configure(&lg, LOG_LEVEL_WARN, LOG_FORMAT_JSON);
    assert_false(log_enabled(&lg, LOG_LEVEL_DEBUG));
    assert_false(log_enabled(&lg, LOG_LEVEL_INFO));
    assert_true(log_enabled(&lg, LOG_LEVEL_WARN));
    assert_true(log_enabled(&lg, LOG_LEVEL_ERROR));
    capture_start(&c);
    log_event(&lg, LOG_LEVEL_DEBUG, "d");
    log_event(&lg, LOG_LEVEL_INFO, "i");
    log_emit(&lg, LOG_LEVEL_INFO, "direct", &f, 1); /* log_emit filters too */
    log_event(&lg, LOG_LEVEL_WARN, "w");
    log_event(&lg, LOG_LEVEL_ERROR, "e");
    char *out = capture_end(&c);
    char *second = strchr(out, '\n');
    assert_non_null(second);
    *second++ = '\0';
    assert_json_line(out, ",\"level\":\"warn\",\"event\":\"w\"}");
    assert_json_line(second, ",\"level\":\"error\",\"event\":\"e\"}\n");
    free(out);

    log_configure(&lg, LOG_LEVEL_ERROR, LOG_FORMAT_JSON);
    assert_false(log_enabled(&lg, LOG_LEVEL_WARN));
    assert_true(log_enabled(&lg, LOG_LEVEL_ERROR));
    log_configure(&lg, LOG_LEVEL_DEBUG, LOG_FORMAT_JSON);
    assert_true(log_enabled(&lg, LOG_LEVEL_DEBUG));
}

static void test_no_fields_and_nulls(void **state)
{
    (void)state;
    struct capture c;
    const struct log_field nulls[] = {{.key = NULL, .str = "v", .num = 0}};

    log_configure(&lg, LOG_LEVEL_DEBUG, LOG_FORMAT_JSON);
    capture_start(&c);
    log_emit(&lg, LOG_LEVEL_INFO, "bare", NULL, 0);
    log_emit(&lg, LOG_LEVEL_INFO, NULL, nulls, 1);
    char *out = capture_end(&c);
    char *second = strchr(out, '\n') + 1;
    second[-1] = '\0';
    assert_json_line(out, ",\"level\":\"info\",\"event\":\"bare\"}");
    assert_json_line(second, ",\"level\":\"info\",\"event\":\"\",\"\":\"v\"}\n");
    free(out);
}

/* True when s is well-formed UTF-8 (enough of a check for cut multi-byte sequences). */
static int utf8_valid(const unsigned char *s)
{
    while (*s != '\0') {
        int n = *s < 0x80             ? 0
                : (*s & 0xE0) == 0xC0 ? 1
                : (*s & 0xF0) == 0xE0 ? 2
                : (*s & 0xF8) == 0xF0 ? 3
                                      : -1;
        if (n < 0) {
            return 0;
        }
        for (s++; n > 0; n--, s++) {
            if ((*s & 0xC0) != 0x80) {
                return 0;
            }
        }
    }
    return 1;
}

/* Logs one huge string field after a short prefix and checks the cut line. */
static void check_json_truncation(const char *big, size_t prefix_len)
{
    char prefix[16];
    struct capture c;

    memset(prefix, 'p', prefix_len);
    prefix[prefix_len] = '\0';
    capture_start(&c);
    log_event(&lg, LOG_LEVEL_INFO, "big", LOG_STR("prefix", prefix), LOG_STR("value", big),
              LOG_INT("after", 1));
    char *out = capture_end(&c);
    size_t len = strlen(out);
    assert_true(len <= LINE_MAX_BYTES);
    assert_true(len > LINE_MAX_BYTES - 64); /* cut near the end, not dropped */
    assert_int_equal(strcmp(out + len - 19, ",\"truncated\":true}\n"), 0);
    assert_int_equal(strchr(out, '\n'), out + len - 1);
    assert_true(utf8_valid((const unsigned char *)out));
    cJSON *json = cJSON_Parse(out);
    assert_non_null(json);
    const char *v = cJSON_GetObjectItemCaseSensitive(json, "value")->valuestring;
    assert_true(strlen(v) > 3000);
    assert_int_equal(strncmp(v, big, strlen(v)), 0);
    assert_null(cJSON_GetObjectItemCaseSensitive(json, "after"));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(json, "truncated")));
    cJSON_Delete(json);
    free(out);
}

static void test_json_truncation(void **state)
{
    (void)state;
    char *big = malloc(10001);
    char *euro = malloc(3 * 3000 + 1);

    assert_non_null(big);
    assert_non_null(euro);
    memset(big, 'x', 10000);
    big[10000] = '\0';
    for (size_t i = 0; i < 3000; i++) {
        memcpy(euro + 3 * i, "\xe2\x82\xac", 3); /* U+20AC, three bytes */
    }
    euro[9000] = '\0';
    log_configure(&lg, LOG_LEVEL_DEBUG, LOG_FORMAT_JSON);
    check_json_truncation(big, 0);
    /* Shift the cut across every byte of a multi-byte character. */
    for (size_t shift = 0; shift < 4; shift++) {
        check_json_truncation(euro, shift);
    }
    free(big);
    free(euro);
}

static void test_json_truncation_by_field_count(void **state)
{
    (void)state;
    struct log_field fields[600];
    char keys[600][16];
    struct capture c;

    for (size_t i = 0; i < 600; i++) {
        snprintf(keys[i], sizeof(keys[i]), "field_%zu", i);
        fields[i] = LOG_STR(keys[i], "value");
    }
    log_configure(&lg, LOG_LEVEL_DEBUG, LOG_FORMAT_JSON);
    capture_start(&c);
    log_emit(&lg, LOG_LEVEL_INFO, "many", fields, 600);
    char *out = capture_end(&c);
    assert_true(strlen(out) <= LINE_MAX_BYTES);
    cJSON *json = cJSON_Parse(out);
    assert_non_null(json);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(json, "truncated")));
    int n = cJSON_GetArraySize(json) - 4; /* ts, level, event, truncated */
    assert_true(n > 100 && n < 600);
    /* Whole fields only, in order. */
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(json, keys[n - 1])->valuestring, "value");
    assert_null(cJSON_GetObjectItemCaseSensitive(json, keys[n]));
    cJSON_Delete(json);
    free(out);
}

static void test_text_truncation(void **state)
{
    (void)state;
    char *big = malloc(10001);
    struct capture c;

    assert_non_null(big);
    memset(big, 'y', 10000);
    big[10000] = '\0';
    log_configure(&lg, LOG_LEVEL_DEBUG, LOG_FORMAT_TEXT);
    capture_start(&c);
    log_event(&lg, LOG_LEVEL_INFO, "big", LOG_STR("value", big), LOG_INT("after", 1));
    char *out = capture_end(&c);
    size_t len = strlen(out);
    assert_true(len <= LINE_MAX_BYTES && len > LINE_MAX_BYTES - 64);
    assert_string_equal(out + len - 16, " truncated=true\n");
    assert_non_null(strstr(out, " INFO big value=yyy"));
    assert_null(strstr(out, "after="));
    free(big);
    free(out);
}

static void test_errno_is_preserved(void **state)
{
    (void)state;
    struct capture c;

    log_configure(&lg, LOG_LEVEL_DEBUG, LOG_FORMAT_JSON);
    capture_start(&c);
    errno = EADDRINUSE;
    log_event(&lg, LOG_LEVEL_ERROR, "bind_failed", LOG_INT("errno", errno));
    int after = errno;
    free(capture_end(&c));
    assert_int_equal(after, EADDRINUSE);
}

enum { THREADS = 4, LINES_PER_THREAD = 300 };

static void *log_from_thread(void *arg)
{
    char value[1500];

    memset(value, 'a' + (int)(intptr_t)arg, sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    for (int i = 0; i < LINES_PER_THREAD; i++) {
        log_event(&lg, LOG_LEVEL_INFO, "t", LOG_INT("thread", (intptr_t)arg), LOG_INT("i", i),
                  LOG_STR("v", value));
    }
    return NULL;
}

static void test_threads_never_interleave(void **state)
{
    (void)state;
    pthread_t threads[THREADS];
    struct capture c;
    int count = 0;

    log_configure(&lg, LOG_LEVEL_DEBUG, LOG_FORMAT_JSON);
    capture_start(&c);
    for (intptr_t i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_create(&threads[i], NULL, log_from_thread, (void *)i), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
    }
    char *out = capture_end(&c);
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *json = cJSON_Parse(line);
        if (json == NULL) {
            print_message("mangled line: %.80s...\n", line);
            fail();
        }
        int t = cJSON_GetObjectItemCaseSensitive(json, "thread")->valueint;
        const char *v = cJSON_GetObjectItemCaseSensitive(json, "v")->valuestring;
        assert_int_equal(strlen(v), 1499);
        assert_int_equal(v[0], 'a' + t);
        assert_int_equal(v[1498], 'a' + t);
        cJSON_Delete(json);
        count++;
    }
    assert_int_equal(count, THREADS * LINES_PER_THREAD);
    free(out);
}

static void test_parse(void **state)
{
    (void)state;
    enum log_level level = LOG_LEVEL_ERROR;
    enum log_format format = LOG_FORMAT_TEXT;

    assert_int_equal(log_level_parse("debug", &level), 0);
    assert_int_equal(level, LOG_LEVEL_DEBUG);
    assert_int_equal(log_level_parse("info", &level), 0);
    assert_int_equal(level, LOG_LEVEL_INFO);
    assert_int_equal(log_level_parse("warn", &level), 0);
    assert_int_equal(level, LOG_LEVEL_WARN);
    assert_int_equal(log_level_parse("error", &level), 0);
    assert_int_equal(level, LOG_LEVEL_ERROR);
    assert_int_equal(log_level_parse("warning", &level), -EINVAL);
    assert_int_equal(log_level_parse("INFO", &level), -EINVAL);
    assert_int_equal(log_level_parse("", &level), -EINVAL);
    assert_int_equal(log_level_parse(NULL, &level), -EINVAL);
    assert_int_equal(level, LOG_LEVEL_ERROR); /* untouched on failure */

    assert_int_equal(log_format_parse("json", &format), 0);
    assert_int_equal(format, LOG_FORMAT_JSON);
    assert_int_equal(log_format_parse("text", &format), 0);
    assert_int_equal(format, LOG_FORMAT_TEXT);
    assert_int_equal(log_format_parse("yaml", &format), -EINVAL);
    assert_int_equal(log_format_parse(NULL, &format), -EINVAL);
    assert_int_equal(format, LOG_FORMAT_TEXT);
}

/* Two loggers are independent: each keeps its own level, format and descriptor. */
static void test_loggers_independent(void **state)
{
    struct logger a, b;
    char pa[] = "/tmp/sluice_test_log_a_XXXXXX", pb[] = "/tmp/sluice_test_log_b_XXXXXX";
    char out[512];
    int fa = mkstemp(pa), fb = mkstemp(pb);

    (void)state;
    assert_true(fa >= 0 && fb >= 0);
    unlink(pa);
    unlink(pb);
    log_init(&a, fa);
    log_init(&b, fb);
    log_configure(&a, LOG_LEVEL_DEBUG, LOG_FORMAT_TEXT);
    log_configure(&b, LOG_LEVEL_ERROR, LOG_FORMAT_JSON);
    log_event(&a, LOG_LEVEL_DEBUG, "to_a", LOG_INT("n", 1));
    log_event(&b, LOG_LEVEL_DEBUG, "dropped_by_b", LOG_INT("n", 2));
    log_event(&b, LOG_LEVEL_ERROR, "to_b", LOG_INT("n", 3));
    log_event(NULL, LOG_LEVEL_ERROR, "nowhere", LOG_INT("n", 4));
    ssize_t na = pread(fa, out, sizeof(out) - 1, 0);
    assert_true(na > 0);
    out[na] = '\0';
    assert_non_null(strstr(out, " DEBUG to_a n=1\n"));
    assert_null(strstr(out, "to_b"));
    ssize_t nb = pread(fb, out, sizeof(out) - 1, 0);
    assert_true(nb > 0);
    out[nb] = '\0';
    assert_non_null(strstr(out, "\"event\":\"to_b\",\"n\":3}\n"));
    assert_null(strstr(out, "dropped_by_b"));
    assert_false(log_enabled(NULL, LOG_LEVEL_ERROR));
    close(fa);
    close(fb);
}

int main(void)
{
    log_init(&lg, STDERR_FILENO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loggers_independent),
        cmocka_unit_test(test_defaults_before_configure), /* must run first */
        cmocka_unit_test(test_json_line),
        cmocka_unit_test(test_text_line),
        cmocka_unit_test(test_json_levels),
        cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_text_quoting),
        cmocka_unit_test(test_invalid_utf8_is_escaped),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_level_filtering),
        cmocka_unit_test(test_no_fields_and_nulls),
        cmocka_unit_test(test_json_truncation),
        cmocka_unit_test(test_json_truncation_by_field_count),
        cmocka_unit_test(test_text_truncation),
        cmocka_unit_test(test_errno_is_preserved),
        cmocka_unit_test(test_threads_never_interleave),
        cmocka_unit_test(test_parse),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
