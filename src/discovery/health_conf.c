/* Key rows and rules of the active health checks of a [service:NAME]. */
#include "health_conf.h"

#include <stddef.h>
#include <string.h>

#define MINUTE_MS (60ULL * 1000ULL)

_Static_assert(sizeof(enum health_check_kind) == sizeof(int), "ini_set_enum stores an int");

static const struct ini_choice check_words[] = {
    {"none", HEALTH_CHECK_NONE}, {"tcp", HEALTH_CHECK_TCP}, {"http", HEALTH_CHECK_HTTP}, {NULL, 0}};

const char *health_check_name(enum health_check_kind kind)
{
    for (const struct ini_choice *c = check_words; c->word != NULL; c++)
        if (c->value == (int)kind)
            return c->word;
    return "unknown";
}

/* One "200" or "200-399" item into r; NULL or why not. */
static const char *expect_item(const char *item, struct health_status_range *r)
{
    const char *end;
    uint64_t lo, hi;

    if (ini_digits(item, &lo, &end) != 0)
        return "is not a status or a range (as in 200-399)";
    hi = lo;
    if (*end == '-' && ini_digits(end + 1, &hi, &end) != 0)
        return "is not a status or a range (as in 200-399)";
    if (*end != '\0')
        return "is not a status or a range (as in 200-399)";
    if (lo < 100 || hi > 599 || lo > hi)
        return "is not within 100-599, low to high";
    *r = (struct health_status_range){.lo = (uint16_t)lo, .hi = (uint16_t)hi};
    return NULL;
}

/* check_http_expect = 200-399 | 200,204 | 200-299,301: into the struct's expect array. */
static const char *set_expect(void *field, const struct ini_key *key, const char *value, char *msg)
{
    struct health_conf *c =
        (struct health_conf *)((char *)field - offsetof(struct health_conf, expect));
    struct ini_list items = {0};
    const char *why = ini_set_list(&items, key, value, msg);

    if (why != NULL)
        return why;
    if (items.n > HEALTH_EXPECT_MAX) {
        ini_list_free(&items);
        return ini_phrase(msg, "lists more than %d ranges", HEALTH_EXPECT_MAX);
    }
    for (size_t i = 0; i < items.n && why == NULL; i++) {
        why = expect_item(items.items[i], &c->expect[i]);
        if (why != NULL)
            why = ini_phrase(msg, "\"%s\" %s", items.items[i], why);
    }
    c->n_expect = why == NULL ? items.n : 0;
    ini_list_free(&items);
    return why;
}

static const char *path_check(const char *value)
{
    return value[0] == '/' && strpbrk(value, " \t") == NULL
               ? NULL
               : "is not an absolute URL path without blanks (as in /health)";
}

static const char *host_check(const char *value)
{
    return strpbrk(value, " \t/") == NULL ? NULL : "is not a host name (no blanks or slashes)";
}

#define HC(field) offsetof(struct health_conf, field)
#define STR       .release = ini_release_string

const struct ini_key health_keys[] = {
    INI_KEY("check", HC(kind), ini_set_enum, 0, 0, "none", false, .choices = check_words,
            .noun = "check kind"),
    INI_KEY("check_interval", HC(interval_ms), ini_set_duration, 100, 60 * MINUTE_MS, "2s", false),
    INI_KEY("check_timeout", HC(timeout_ms), ini_set_duration, 10, MINUTE_MS, "1s", false),
    INI_KEY("check_rise", HC(rise), ini_set_u32, 1, 100, "2", false),
    INI_KEY("check_fall", HC(fall), ini_set_u32, 1, 100, "3", false),
    INI_KEY("check_jitter", HC(jitter_ms), ini_set_duration, 0, 60 * MINUTE_MS, NULL, false),
    INI_KEY("check_port", HC(port), ini_set_u32, 1, 65535, NULL, false),
    INI_KEY("check_http_path", HC(http_path), ini_set_string, 0, 0, "/", false, STR,
            .check = path_check),
    INI_KEY("check_http_host", HC(http_host), ini_set_string, 0, 0, NULL, false, STR,
            .check = host_check),
    INI_KEY("check_http_expect", HC(expect), set_expect, 0, 0, "200-399", false),
    {.name = NULL},
};

/* Keys that mean something only with a check, or only with an HTTP one. */
static void check_applies(struct ini_file *f, const struct ini_section *sec,
                          const struct health_conf *c)
{
    static const char *const any[] = {"check_interval", "check_timeout", "check_rise",
                                      "check_fall",     "check_jitter",  "check_port"};
    static const char *const http[] = {"check_http_path", "check_http_host", "check_http_expect"};

    for (size_t i = 0; c->kind == HEALTH_CHECK_NONE && i < sizeof(any) / sizeof(any[0]); i++) {
        int line = ini_key_line(sec, any[i]);
        if (line != 0)
            ini_error(f, line, any[i], "only applies with check = tcp or http");
    }
    for (size_t i = 0; c->kind != HEALTH_CHECK_HTTP && i < sizeof(http) / sizeof(http[0]); i++) {
        int line = ini_key_line(sec, http[i]);
        if (line != 0)
            ini_error(f, line, http[i], "only applies with check = http");
    }
}

void health_conf_check(struct ini_file *f, const struct ini_section *sec, void *conf)
{
    struct health_conf *c = conf;

    check_applies(f, sec, c);
    if (ini_key_line(sec, "check_jitter") == 0)
        c->jitter_ms = c->interval_ms / 10;
    else if (c->jitter_ms >= c->interval_ms)
        ini_error(f, ini_key_line(sec, "check_jitter"), "check_jitter",
                  "must be shorter than check_interval");
}

int health_status_expected(const struct health_conf *c, long status)
{
    for (size_t i = 0; i < c->n_expect; i++)
        if (status >= c->expect[i].lo && status <= c->expect[i].hi)
            return 1;
    return 0;
}

int health_expect_equal(const struct health_conf *a, const struct health_conf *b)
{
    return a->n_expect == b->n_expect &&
           memcmp(a->expect, b->expect, a->n_expect * sizeof(a->expect[0])) == 0;
}
