/* libFuzzer target: the Consul answer parser (consul_parse.c). The input is a
 * GET /v1/health/service/<name> body, parsed under every filter a service can set (passing only,
 * passing and warning, a tag), and an X-Consul-Index header value. Besides never crashing or
 * leaking, the result must be what discovery relies on: instances sorted by unique id, each with
 * an address that parses back to itself, a weight within bounds, a health the filter keeps, and
 * counters that add up. The same input is also read as a GET /v1/agent/checks answer, as the
 * registrar confirms a registration with it. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "consul_parse.h"
#include "fuzz_check.h"

#define WEIGHT_MAX 1000000 /* consul_parse.c's cap */

/* The kept instances of r, checked one by one and against each other. */
static void instances_check(const struct consul_parse_result *r, const struct consul_filter *f)
{
    for (size_t i = 0; i < r->n; i++) {
        const struct consul_instance *in = &r->inst[i];
        struct net_addr again;
        FUZZ_CHECK(strlen(in->id) < sizeof(in->id) && strchr(in->id, '/') != NULL);
        FUZZ_CHECK(i == 0 || strcmp(r->inst[i - 1].id, in->id) < 0);
        FUZZ_CHECK(net_addr_parse(in->addr.text, &again) == NULL);
        FUZZ_CHECK(strcmp(again.text, in->addr.text) == 0 && again.len == in->addr.len);
        FUZZ_CHECK(in->weight <= WEIGHT_MAX);
        FUZZ_CHECK(in->health == CONSUL_HEALTH_PASSING ||
                   (in->health == CONSUL_HEALTH_WARNING &&
                    f->mode == CONSUL_HEALTH_MODE_PASSING_AND_WARNING));
    }
}

/* One parse under f; returns the number of instances kept, or -1 when the answer is refused. */
static long parse_check(const uint8_t *data, size_t size, const struct consul_filter *f)
{
    struct consul_parse_result r;
    char err[160] = "";
    int rc = consul_parse_health((const char *)data, size, f, &r, err, sizeof(err));
    size_t valid = 0;

    if (rc != 0) {
        FUZZ_CHECK(rc == -EBADMSG || rc == -ENOMEM);
        FUZZ_CHECK(rc != -EBADMSG || err[0] != '\0');
        consul_parse_result_free(&r);
        return -1;
    }
    for (int h = 0; h < CONSUL_HEALTH_COUNT; h++) {
        valid += r.by_health[h];
    }
    /* invalid counts bad entries and then dropped duplicates */
    FUZZ_CHECK(valid <= r.entries && r.invalid >= r.entries - valid);
    size_t duplicates = r.invalid - (r.entries - valid);
    FUZZ_CHECK(r.untagged <= valid && r.n + duplicates <= valid - r.untagged);
    FUZZ_CHECK(r.invalid == 0 || r.invalid_why[0] != '\0');
    instances_check(&r, f);
    long n = (long)r.n;
    consul_parse_result_free(&r);
    return n;
}

/* consul_parse_index against a plain reading of the same text. */
static void index_check(const uint8_t *data, size_t size)
{
    uint64_t got = 0, want = 0;
    size_t i = 0;

    if (consul_parse_index((const char *)data, size, &got) != 0) {
        return;
    }
    while (i < size && (data[i] == ' ' || data[i] == '\t')) {
        i++;
    }
    FUZZ_CHECK(i < size && data[i] >= '0' && data[i] <= '9');
    for (; i < size && data[i] >= '0' && data[i] <= '9'; i++) {
        FUZZ_CHECK(want <= (UINT64_MAX - (uint64_t)(data[i] - '0')) / 10);
        want = want * 10 + (uint64_t)(data[i] - '0');
    }
    FUZZ_CHECK(got == want);
}

/* consul_parse_checks_bound for one check and for two (the ids registrar_check_id makes). */
static void checks_check(const uint8_t *data, size_t size)
{
    static const char *const one[] = {"service:web-3"};
    static const char *const two[] = {"service:web-4:1", "service:web-4:2"};
    char missing[96] = "", missing2[96] = "";

    int ok1 = consul_parse_checks_bound((const char *)data, size, "web-3", one, 1, missing,
                                        sizeof(missing));
    int ok2 = consul_parse_checks_bound((const char *)data, size, "web-4", two, 2, missing2,
                                        sizeof(missing2));
    FUZZ_CHECK((ok1 == 1 || ok1 == 0) && (ok2 == 1 || ok2 == 0));
    FUZZ_CHECK(ok1 || missing[0] != '\0');
    FUZZ_CHECK(ok2 || missing2[0] != '\0');
    /* no check asked for: only whether the answer is an object at all */
    int ok0 = consul_parse_checks_bound((const char *)data, size, "web-4", two, 0, missing,
                                        sizeof(missing));
    FUZZ_CHECK(ok0 || (!ok1 && !ok2));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char *const tags[] = {"v2", "primary"};
    const struct consul_filter passing = {.mode = CONSUL_HEALTH_MODE_PASSING};
    const struct consul_filter warning = {.mode = CONSUL_HEALTH_MODE_PASSING_AND_WARNING};
    const struct consul_filter tagged = {
        .mode = CONSUL_HEALTH_MODE_PASSING_AND_WARNING, .tags = tags, .n_tags = 2};

    long n_passing = parse_check(data, size, &passing);
    long n_warning = parse_check(data, size, &warning);
    long n_tagged = parse_check(data, size, &tagged);
    /* the same answer is refused under every filter or under none */
    FUZZ_CHECK((n_passing < 0) == (n_warning < 0) && (n_warning < 0) == (n_tagged < 0));
    /* more lenient health keeps at least as many, a tag filter at most as many */
    FUZZ_CHECK(n_passing <= n_warning && n_tagged <= n_warning);
    index_check(data, size);
    checks_check(data, size);
    return 0;
}
