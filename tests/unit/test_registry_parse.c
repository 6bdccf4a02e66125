/* The pure parts of the DNS and file registries: the JSON instance file (entries, defaults, the
 * line of a syntax error, every reason an entry is refused), id order and uniqueness, and the TTL
 * of a DNS answer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "registry_parse.h"

static struct registry_entry *parse_ok(const char *text, size_t *n)
{
    struct registry_entry *e = NULL;
    char err[256] = "";
    int rc = registry_file_parse(text, strlen(text), &e, n, err, sizeof(err));
    if (rc != 0)
        fail_msg("rc %d: %s", rc, err);
    return e;
}

static void expect_error(const char *text, const char *phrase)
{
    struct registry_entry *e = NULL;
    size_t n = 99;
    char err[256] = "";
    assert_int_equal(registry_file_parse(text, strlen(text), &e, &n, err, sizeof(err)), -EINVAL);
    assert_null(e);
    assert_int_equal(n, 0);
    if (strstr(err, phrase) == NULL)
        fail_msg("'%s' lacks '%s'", err, phrase);
}

static void test_file_entries_and_defaults(void **state)
{
    (void)state;
    size_t n;
    struct registry_entry *e =
        parse_ok("[{\"address\": \"10.0.0.2:80\", \"weight\": 5, \"id\": \"b\"},"
                 " {\"address\": \"[::1]:81\"},"
                 " {\"address\": \"10.0.0.1:80\", \"weight\": 0, \"id\": \"a\"}]",
                 &n);
    assert_int_equal(n, 3);
    /* sorted by id: "[::1]:81" < "a" < "b" */
    assert_string_equal(e[0].id, "[::1]:81");
    assert_int_equal(e[0].weight, 1);
    assert_string_equal(e[1].id, "a");
    assert_string_equal(e[1].addr.text, "10.0.0.1:80");
    assert_int_equal(e[1].weight, 0);
    assert_string_equal(e[2].id, "b");
    assert_int_equal(e[2].weight, 5);
    free(e);
    e = parse_ok("[]", &n); /* an explicit empty list is a valid answer */
    assert_int_equal(n, 0);
    free(e);
}

static void test_file_errors(void **state)
{
    (void)state;
    expect_error("", "line 1: the file is empty");
    expect_error("[\n {\"address\": \"10.0.0.1:80\"},\n {\"address\": ", "line 3: not valid JSON");
    expect_error("[\n\n\n {\"address\" \"x\"}]", "line 4: not valid JSON");
    expect_error("{\"address\": \"10.0.0.1:80\"}", "is not a JSON list");
    expect_error("[1]", "entry 1: is not an object");
    expect_error("[{\"weight\": 1}]", "entry 1: needs \"address\"");
    expect_error("[{\"address\": \"10.0.0.1:80\"}, {\"address\": \"db.internal:5432\"}]",
                 "entry 2: address \"db.internal:5432\"");
    expect_error("[{\"address\": \"10.0.0.1:80\", \"weight\": -1}]", "entry 1: weight");
    expect_error("[{\"address\": \"10.0.0.1:80\", \"weight\": 1.5}]", "entry 1: weight");
    expect_error("[{\"address\": \"10.0.0.1:80\", \"weight\": 1000001}]", "entry 1: weight");
    expect_error("[{\"address\": \"10.0.0.1:80\", \"weight\": \"2\"}]", "entry 1: weight");
    expect_error("[{\"address\": \"10.0.0.1:80\", \"id\": \"\"}]", "entry 1: id");
    expect_error("[{\"address\": \"10.0.0.1:80\", \"id\": 7}]", "entry 1: id");
    expect_error("[{\"address\": \"10.0.0.1:80\", \"id\": \"x\"}, {\"address\": \"10.0.0.2:80\", "
                 "\"id\": \"x\"}]",
                 "id \"x\" is listed twice");
    expect_error("[{\"address\": \"10.0.0.1:80\"}, {\"address\": \"10.0.0.1:80\"}]",
                 "id \"10.0.0.1:80\" is listed twice");
}

static void test_line_of(void **state)
{
    (void)state;
    const char *t = "a\nb\nc";
    assert_int_equal(registry_line_of(t, 5, 0), 1);
    assert_int_equal(registry_line_of(t, 5, 2), 2);
    assert_int_equal(registry_line_of(t, 5, 4), 3);
    assert_int_equal(registry_line_of(t, 5, 100), 3);
}

/* Header, question "_a._tcp.t." SRV IN, then answers with TTLs 300 and 60 (the first named by a
 * pointer to the question, the second in full). */
static void test_answer_ttl(void **state)
{
    (void)state;
    static const unsigned char msg[] = {
        0x12, 0x34, 0x84, 0x00, 0,   1,   0,   2,   0,    0,    0,  0, /* header: 1 question, 2
                                                                          answers */
        2,    '_',  'a',  4,    '_', 't', 'c', 'p', 1,    't',  0,  0, 33,   0,    1, /* question */
        0xC0, 12,   0,    33,   0,   1,   0,   0,   0x01, 0x2C, 0,  2, 0xAA, 0xBB,    /* TTL 300, 2
                                                                                         bytes */
        1,    'x',  0,    0,    1,   0,   1,   0,   0,    0,    60, 0, 4,    127,  0,
        0,    1, /* TTL 60 */
    };
    assert_int_equal(registry_dns_answer_ttl(msg, sizeof(msg)), 60);
    assert_int_equal(registry_dns_answer_ttl(msg, 44), 300);        /* cut in the second answer */
    assert_int_equal(registry_dns_answer_ttl(msg, 20), UINT32_MAX); /* cut in the question */
    assert_int_equal(registry_dns_answer_ttl(msg, 5), UINT32_MAX);
    unsigned char none[sizeof(msg)];
    memcpy(none, msg, sizeof(msg));
    none[7] = 0; /* no answer record */
    assert_int_equal(registry_dns_answer_ttl(none, sizeof(none)), UINT32_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_entries_and_defaults),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_line_of),
        cmocka_unit_test(test_answer_ttl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
