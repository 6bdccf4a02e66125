/* [service:NAME] keys owned by lb: balance (by the balancer's own name) and backends. */
#include "lb_conf.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"

#define ENTRY_MAX 256 /* longest single entry of a backends list */

static const char *set_balance(void *field, const struct ini_key *key, const char *value, char *msg)
{
    const struct lb_ops *lb = balancer_find(value);
    char names[256];

    (void)key;
    if (lb == NULL) {
        balancer_names(names, sizeof(names));
        return ini_phrase(msg, "\"%s\" is not a balance method (use %s)", value, names);
    }
    *(const struct lb_ops **)field = lb;
    return NULL;
}

/* Options after a backend's address: only weight=N, limited by the row. */
static const char *backend_options(char *opts, const struct ini_key *key, struct lb_backend *b)
{
    bool weight_seen = false;

    for (char *save = NULL, *opt = strtok_r(opts, " \t", &save); opt != NULL;
         opt = strtok_r(NULL, " \t", &save)) {
        const char *end;
        uint64_t w;
        int rc;

        if (strncmp(opt, "weight=", 7) != 0) {
            return "has an unknown option (only weight=N)";
        }
        if (weight_seen) {
            return "sets weight twice";
        }
        weight_seen = true;
        rc = ini_digits(opt + 7, &w, &end);
        if (rc == -EINVAL || *end != '\0') {
            return "has a weight that is not a number";
        }
        if (rc == -ERANGE || w < key->min || w > key->max) {
            return "has a weight out of range (0..1000000)";
        }
        b->weight = (uint32_t)w;
    }
    return NULL;
}

/* "name.example:9001": a DNS name (letters, digits, '-', '_', dots; not all digits and dots,
 * which is a mistyped IP address) and a port. Stores a copy of the name; NULL or a phrase. */
static const char *backend_host(const char *entry, struct lb_backend *b)
{
    const char *colon = strrchr(entry, ':');
    size_t len = colon != NULL ? (size_t)(colon - entry) : 0;
    uint16_t port;

    if (len == 0 || len > 253 || net_port_parse(colon + 1, &port) != NULL ||
        strspn(entry, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != len ||
        strspn(entry, "0123456789.") == len || strstr(entry, "..") != NULL || entry[0] == '.') {
        return "is not an address";
    }
    if (strlen(entry) >= sizeof(b->addr.text)) {
        return "is a host name too long for a backend (at most 63 characters with the port)";
    }
    b->host = strndup(entry, len);
    if (b->host == NULL) {
        return ini_phrase_oom;
    }
    memset(&b->addr, 0, sizeof(b->addr));
    snprintf(b->addr.text, sizeof(b->addr.text), "%s", entry);
    b->port = port;
    return NULL;
}

/* One entry of a backends list: "ADDRESS [weight=N]", already trimmed. */
static const char *backend_parse(char *entry, const struct ini_key *key, struct lb_backend *b)
{
    size_t addr_len = strcspn(entry, " \t");
    char *opts = entry + addr_len;
    const char *why;

    b->weight = 1;
    if (*opts != '\0') {
        *opts++ = '\0';
    }
    why = net_addr_parse(entry, &b->addr);
    if (why != NULL && backend_host(entry, b) == NULL) {
        why = NULL; /* a host name with a port: the registry thread resolves it */
    }
    return why != NULL ? why : backend_options(opts, key, b);
}

/* Copies one comma-separated entry of list (trimmed) into out. */
static const char *backend_entry(const char *list, size_t len, char *out)
{
    while (len > 0 && (*list == ' ' || *list == '\t')) {
        list++;
        len--;
    }
    while (len > 0 && (list[len - 1] == ' ' || list[len - 1] == '\t')) {
        len--;
    }
    if (len == 0) {
        return "is empty";
    }
    if (len >= ENTRY_MAX) {
        return "is too long";
    }
    memcpy(out, list, len);
    out[len] = '\0';
    return NULL;
}

/* Orders indexes into list by address text, then by position, so duplicates sit side by side
 * (for qsort_r: config loading may run on any thread). */
static int by_address(const void *a, const void *b, void *list_)
{
    const struct lb_backend *list = list_;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int c = strcmp(list[x].addr.text, list[y].addr.text);

    return c != 0 ? c : x < y ? -1 : x > y;
}

/* The first address listed twice, as a sequential scan would meet it: O(n log n), so a list of
 * 100,000 entries is checked in milliseconds. NULL when every address is unique. */
static const char *backends_unique(const struct lb_backend *list, size_t n, char *msg)
{
    size_t *order = malloc((n ? n : 1) * sizeof(*order));
    size_t first = 0, second = SIZE_MAX;

    if (order == NULL) {
        return ini_phrase_oom;
    }
    for (size_t i = 0; i < n; i++) {
        order[i] = i;
    }
    qsort_r(order, n, sizeof(*order), by_address, (void *)list);
    for (size_t i = 0; i + 1 < n; i++) {
        /* within a run of equal addresses, the run's first two entries are its earliest pair */
        if (strcmp(list[order[i]].addr.text, list[order[i + 1]].addr.text) == 0 &&
            (i == 0 || strcmp(list[order[i - 1]].addr.text, list[order[i]].addr.text) != 0) &&
            order[i + 1] < second) {
            first = order[i];
            second = order[i + 1];
        }
    }
    free(order);
    if (second == SIZE_MAX) {
        return NULL;
    }
    return ini_phrase(msg, "%s is listed twice (backends %zu and %zu)", list[first].addr.text,
                      first + 1, second + 1);
}

/* Parses the whole list; stops at the first bad entry. */
static const char *backends_parse(const char *value, const struct ini_key *key,
                                  struct lb_backend *list, size_t *n, char *msg)
{
    char entry[ENTRY_MAX], text[ENTRY_MAX];
    const char *why;

    for (const char *s = value;; s++) {
        size_t len = strcspn(s, ",");
        if ((why = backend_entry(s, len, entry)) != NULL) {
            return ini_phrase(msg, "backend %zu %s", *n + 1, why);
        }
        memcpy(text, entry, sizeof(text));
        if ((why = backend_parse(entry, key, &list[*n])) != NULL) {
            free(list[*n].host); /* a host name whose options were refused */
            list[*n].host = NULL;
            return ini_phrase(msg, "backend %zu \"%s\": %s", *n + 1, text, why);
        }
        ++*n;
        s += len;
        if (*s == '\0') {
            return backends_unique(list, *n, msg);
        }
    }
}

static void release_backends(void *field);

/* "ADDRESS [weight=N], ADDRESS [weight=N], ..." */
static const char *set_backends(void *field, const struct ini_key *key, const char *value,
                                char *msg)
{
    struct lb_backends *out = field;
    struct lb_backend *list;
    size_t n = 0, cap = 1;
    const char *why;

    for (const char *s = value; *s != '\0'; s++) {
        cap += *s == ',';
    }
    list = calloc(cap, sizeof(*list));
    if (list == NULL) {
        return ini_phrase_oom;
    }
    why = backends_parse(value, key, list, &n, msg);
    out->items = list;
    out->n = n;
    out->n_hosts = 0;
    for (size_t i = 0; i < n; i++) {
        out->n_hosts += list[i].host != NULL;
    }
    if (why != NULL) {
        release_backends(out);
        return why;
    }
    return NULL;
}

static void release_backends(void *field)
{
    struct lb_backends *b = field;

    for (size_t i = 0; i < b->n; i++) {
        free(b->items[i].host);
    }
    free(b->items);
    b->n_hosts = 0;
    b->items = NULL;
    b->n = 0;
}

#define LB(field) offsetof(struct lb_service_conf, field)
#define MINUTE_MS (60ULL * 1000ULL)
#define HOUR_MS   (60ULL * MINUTE_MS)

_Static_assert(sizeof(int) == sizeof(((struct owner_policy *)0)->hash_with_port), "an int");

static const struct ini_choice hash_words[] = {{"client_ip", 0}, {"client_ip_port", 1}, {NULL, 0}};

/* For backends, min and max limit each weight. */
const struct ini_key lb_service_keys[] = {
    {.name = "balance", .offset = LB(balance), .set = set_balance, .def = "round_robin"},
    {.name = "backends",
     .offset = LB(backends),
     .set = set_backends,
     .max = LB_WEIGHT_MAX,
     .release = release_backends},
    INI_KEY("hash_key", LB(policy.hash_with_port), ini_set_enum, 0, 0, "client_ip", false,
            .choices = hash_words, .noun = "hash key"),
    INI_KEY("max_connections", LB(policy.max_conns), ini_set_u32, 0, 10000000, "0", false),
    INI_KEY("eject_after", LB(policy.eject_after), ini_set_u32, 0, 1000, "3", false),
    INI_KEY("eject_time", LB(policy.eject_time_ms), ini_set_duration, 100, HOUR_MS, "10s", false),
    INI_KEY("eject_max_time", LB(policy.eject_max_time_ms), ini_set_duration, 100, 24 * HOUR_MS,
            "5m", false),
    INI_KEY("max_ejection_percent", LB(policy.max_ejection_percent), ini_set_u32, 0, 100, "50",
            false),
    INI_KEY("slow_start", LB(policy.slow_start_ms), ini_set_duration, 0, HOUR_MS, "0", false),
    {.name = NULL},
};

void lb_service_check(struct ini_file *f, const struct ini_section *sec, void *conf)
{
    const struct lb_service_conf *c = conf;

    if (c->policy.eject_max_time_ms < c->policy.eject_time_ms) {
        int line = ini_key_line(sec, "eject_max_time");
        const char *key = line != 0 ? "eject_max_time" : "eject_time";
        ini_error(f, line != 0 ? line : ini_key_line(sec, "eject_time"), key, "%s",
                  line != 0 ? "is shorter than eject_time" : "is longer than eject_max_time");
    }
}
