/* Configuration loader: INI text (inih) -> one validated struct config; problems as FILE:LINE. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * How the pieces fit:
 *  - inih splits "key = value" lines and calls on_key(). It does not report section headers
 *    without keys, line numbers (INI_HANDLER_LINENO is 0 in Debian's build) or lines longer
 *    than its 200-byte buffer, so inih reads through read_line(), which counts physical lines,
 *    strips comments (";" or "#" at the start or after a blank: Debian's inih only knows
 *    inline ";"), tracks sections itself and reports malformed lines.
 *  - Every key is a row of config_keys: section kind, name, setter, offset, limits, default.
 *    Defaults go through the same setters before the file is read.
 *  - A setter returns NULL or a phrase such as "\"5x\" is not a duration (use ms, s, m, h)";
 *    add_error() prefixes it with "FILE:LINE: key: ". Section-level problems use the header
 *    text ("[listener:web]") as key; problems with the whole file use line 0 (no listener at
 *    all: "FILE:0: [listener:NAME]: ...", unreadable file: "FILE:0: file: ...").
 *  - Cross-section rules (service names, duplicate binds, required keys) run after the whole
 *    file is read. Errors are sorted by line before they are handed back.
 */

#define PHRASE_MAX  512  /* longest phrase a setter builds */
#define WORKERS_MAX 256  /* upper limit of workers, also the cap of "auto" */
#define ENTRY_MAX   256  /* longest single entry of a backends list */
#define STRING_MAX  4096 /* longest string value (paths, tokens, addresses) */
#define META_MAX    64   /* Consul accepts at most 64 meta pairs */
#define KIB         1024ULL
#define MIB         (1024ULL * 1024ULL)

/* Order matters: unknown_key() names a key's home section by this index. */
enum section_kind {
    SECTION_GLOBAL,
    SECTION_LISTENER,
    SECTION_SERVICE,
    SECTION_CONSUL,
    SECTION_REGISTRATION,
};

struct config_key;

/* Parses value into the field at base + key->offset. Returns NULL, or a phrase (static or
 * written into msg, which holds PHRASE_MAX bytes) that reads well after "key: ". */
typedef const char *(*config_setter)(void *base, const struct config_key *key, const char *value,
                                     char *msg);

/* One row of the key table. */
struct config_key {
    enum section_kind kind; /* section the key belongs in */
    size_t offset;          /* field in struct config, config_listener or config_service */
    const char *name;       /* key as written in the file */
    config_setter set;      /* parses and stores the value */
    uint64_t min;           /* smallest number, duration (ms), size or weight accepted */
    uint64_t max;           /* largest one */
    const char *def;        /* default, stored through set before the file is read; or NULL */
    bool required;          /* the section is incomplete without it */
};

/* Returned by setters when an allocation failed, so the loader can answer -ENOMEM. */
static const char phrase_oom[] = "cannot be stored: out of memory";

static const char *const balance_names[] = {"round_robin", "least_connections", "weighted"};
static const char *const discovery_names[] = {"static", "consul"};
static const char *const splice_names[] = {"auto", "off", "always"};
static const char *const health_names[] = {"passing_and_warning", "passing"};

#define N_NAMES(a) (sizeof(a) / sizeof((a)[0]))

__attribute__((format(printf, 2, 3))) static const char *phrase(char *msg, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, PHRASE_MAX, fmt, ap);
    va_end(ap);
    return msg;
}

/* Leading decimal digits of text; *end points past all of them even on overflow. -ERANGE when
 * they overflow, -EINVAL when there are none (no signs: every value we read is unsigned). */
static int digits_parse(const char *text, uint64_t *out, const char **end)
{
    uint64_t n = 0;
    const char *s = text;
    bool overflow = false;

    for (; *s >= '0' && *s <= '9'; s++) {
        uint64_t d = (uint64_t)(*s - '0');
        overflow = overflow || n > (UINT64_MAX - d) / 10;
        n = n * 10 + d;
    }
    *end = s;
    *out = n;
    if (s == text) {
        return -EINVAL;
    }
    return overflow ? -ERANGE : 0;
}

/* The duration grammar: digits and one of ms, s, m, h; a bare "0" needs no unit. */
static const char *duration_parse(const char *text, uint64_t *ms)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 60 * 60 * 1000}};
    const char *end;
    uint64_t n;
    int rc = digits_parse(text, &n, &end);

    if (rc == -ERANGE) {
        return "is too large";
    }
    if (rc < 0) {
        return "is not a duration (use ms, s, m, h)";
    }
    if (*end == '\0') {
        *ms = 0;
        return n == 0 ? NULL : "needs a unit (ms, s, m, h)";
    }
    for (size_t i = 0; i < N_NAMES(units); i++) {
        if (strcmp(end, units[i].unit) == 0) {
            if (n > UINT64_MAX / units[i].ms) {
                return "is too large";
            }
            *ms = n * units[i].ms;
            return NULL;
        }
    }
    return "is not a duration (use ms, s, m, h)";
}

int config_parse_duration(const char *text, uint64_t *ms)
{
    uint64_t v;

    if (text == NULL || duration_parse(text, &v) != NULL) {
        return -EINVAL;
    }
    *ms = v;
    return 0;
}

/* Why host (already split from its port) is not an address of the given family. */
static const char *host_phrase(const char *host, int family)
{
    const char *hex = "0123456789abcdefABCDEF:.";

    for (const char *s = host; *s != '\0'; s++) {
        bool letter = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z');
        if ((family == AF_INET && letter) || (family == AF_INET6 && !strchr(hex, *s))) {
            return "host names are not resolved; use an IP address";
        }
    }
    return family == AF_INET ? "host is not an IPv4 address" : "host is not an IPv6 address";
}

/* Splits "ip:port" or "[ip6]:port" into host and port text. */
static const char *addr_split(const char *text, char *host, size_t size, const char **port,
                              bool *v6)
{
    const char *host_start = text, *host_end;

    *v6 = text[0] == '[';
    if (*v6) {
        host_start = text + 1;
        host_end = strchr(text, ']');
        if (host_end == NULL) {
            return "\"]\" is missing after the IPv6 address";
        }
        if (host_end[1] != ':') {
            return host_end[1] == '\0' ? "port is missing (use [IPv6]:PORT)"
                                       : "expected \":PORT\" after \"]\"";
        }
    } else {
        host_end = strrchr(text, ':');
        if (host_end == NULL) {
            return "port is missing (use IP:PORT)";
        }
        if (memchr(text, ':', (size_t)(host_end - text)) != NULL) {
            return "IPv6 addresses need brackets, as in [::1]:80";
        }
    }
    if (host_end == host_start) {
        return "host is missing (use 0.0.0.0 or [::] for every interface)";
    }
    if ((size_t)(host_end - host_start) >= size) {
        return "host is too long";
    }
    memcpy(host, host_start, (size_t)(host_end - host_start));
    host[host_end - host_start] = '\0';
    *port = host_end + (*v6 ? 2 : 1);
    return NULL;
}

static const char *port_parse(const char *text, uint16_t *port)
{
    const char *end;
    uint64_t n;
    int rc = digits_parse(text, &n, &end);

    if (*text == '\0') {
        return "port is missing";
    }
    if (rc == -EINVAL || *end != '\0') {
        return "port is not a number";
    }
    if (rc == -ERANGE || n == 0 || n > 65535) {
        return "port must be between 1 and 65535";
    }
    *port = (uint16_t)n;
    return NULL;
}

/* Fills sa, len and the canonical text of out from a numeric host and a port. */
static const char *addr_fill(const char *host, bool v6, uint16_t port, struct config_addr *out)
{
    char ip[INET6_ADDRSTRLEN];

    memset(out, 0, sizeof(*out));
    if (v6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->sa;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
            return host_phrase(host, AF_INET6);
        }
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        out->len = sizeof(*sin6);
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
        snprintf(out->text, sizeof(out->text), "[%s]:%u", ip, (unsigned)port);
        return NULL;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)&out->sa;
    if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
        return host_phrase(host, AF_INET);
    }
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    out->len = sizeof(*sin);
    inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
    snprintf(out->text, sizeof(out->text), "%s:%u", ip, (unsigned)port);
    return NULL;
}

static const char *addr_parse(const char *text, struct config_addr *out)
{
    char host[CONFIG_ADDR_MAX];
    const char *port_text, *why;
    uint16_t port;
    bool v6;

    if (*text == '\0') {
        return "address is empty";
    }
    why = addr_split(text, host, sizeof(host), &port_text, &v6);
    if (why == NULL) {
        why = port_parse(port_text, &port);
    }
    return why != NULL ? why : addr_fill(host, v6, port, out);
}

int config_parse_addr(const char *text, struct config_addr *out, const char **err)
{
    struct config_addr addr;
    const char *why = text != NULL ? addr_parse(text, &addr) : "address is empty";

    if (err != NULL) {
        *err = why;
    }
    if (why != NULL) {
        return -EINVAL;
    }
    *out = addr;
    return 0;
}

const char *config_balance_name(enum config_balance balance)
{
    if ((size_t)balance >= N_NAMES(balance_names)) {
        return "unknown";
    }
    return balance_names[balance];
}

const char *config_health_name(enum config_health health)
{
    if ((size_t)health >= N_NAMES(health_names)) {
        return "unknown";
    }
    return health_names[health];
}

/* Section and service names: [A-Za-z0-9_.-], 1 to CONFIG_NAME_MAX - 1 characters. */
static const char *name_check(const char *name)
{
    size_t len = strlen(name);

    if (len == 0) {
        return "name is empty";
    }
    if (len >= CONFIG_NAME_MAX) {
        return "name is longer than 63 characters";
    }
    if (strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != len) {
        return "name may only use letters, digits, '_', '.' and '-'";
    }
    return NULL;
}

/* Index of text in names, or -1. */
static int name_index(const char *const *names, size_t n, const char *text)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i], text) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* Text of a size for messages: "4k", "16m" or plain bytes. */
static const char *size_text(uint64_t n, char buf[24])
{
    if (n != 0 && n % MIB == 0) {
        snprintf(buf, 24, "%llum", (unsigned long long)(n / MIB));
    } else if (n != 0 && n % KIB == 0) {
        snprintf(buf, 24, "%lluk", (unsigned long long)(n / KIB));
    } else {
        snprintf(buf, 24, "%llu", (unsigned long long)n);
    }
    return buf;
}

/* A plain number within the row's limits. */
static const char *number_parse(const struct config_key *key, const char *value, uint64_t *n,
                                char *msg)
{
    const char *end;
    int rc = digits_parse(value, n, &end);

    if (rc == -EINVAL || *end != '\0') {
        return phrase(msg, "\"%s\" is not a number", value);
    }
    if (rc == -ERANGE || *n < key->min || *n > key->max) {
        return phrase(msg, "\"%s\" is out of range (%llu..%llu)", value,
                      (unsigned long long)key->min, (unsigned long long)key->max);
    }
    return NULL;
}

static const char *set_u32(void *base, const struct config_key *key, const char *value, char *msg)
{
    uint64_t n;
    const char *why = number_parse(key, value, &n, msg);

    if (why == NULL) {
        *(uint32_t *)((char *)base + key->offset) = (uint32_t)n;
    }
    return why;
}

static const char *set_int(void *base, const struct config_key *key, const char *value, char *msg)
{
    uint64_t n;
    const char *why = number_parse(key, value, &n, msg);

    if (why == NULL) {
        *(int *)((char *)base + key->offset) = (int)n;
    }
    return why;
}

/* "auto" follows the CPUs online now; capped by the row's limit. */
static const char *set_workers(void *base, const struct config_key *key, const char *value,
                               char *msg)
{
    long cpus;

    if (strcmp(value, "auto") != 0) {
        return set_u32(base, key, value, msg);
    }
    cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1) {
        cpus = 1;
    }
    if ((uint64_t)cpus > key->max) {
        cpus = (long)key->max;
    }
    *(uint32_t *)((char *)base + key->offset) = (uint32_t)cpus;
    return NULL;
}

static const char *set_duration(void *base, const struct config_key *key, const char *value,
                                char *msg)
{
    uint64_t ms;
    const char *why = duration_parse(value, &ms);

    if (why != NULL) {
        return phrase(msg, "\"%s\" %s", value, why);
    }
    if (ms < key->min) {
        return phrase(msg, "\"%s\" is too short (at least %llums)", value,
                      (unsigned long long)key->min);
    }
    if (ms > key->max) {
        return phrase(msg, "\"%s\" is too long (at most %llums)", value,
                      (unsigned long long)key->max);
    }
    *(uint64_t *)((char *)base + key->offset) = ms;
    return NULL;
}

/* Bytes, or a k / m suffix (either case) for KiB / MiB. */
static const char *set_size(void *base, const struct config_key *key, const char *value, char *msg)
{
    char lo[24], hi[24];
    const char *end;
    uint64_t n, unit = 1;
    int rc = digits_parse(value, &n, &end);

    if (*end == 'k' || *end == 'K') {
        unit = KIB;
    } else if (*end == 'm' || *end == 'M') {
        unit = MIB;
    }
    if (rc == -EINVAL || end[unit == 1 ? 0 : 1] != '\0') {
        return phrase(msg, "\"%s\" is not a size (bytes, or a k or m suffix)", value);
    }
    if (rc == -ERANGE || n > UINT64_MAX / unit || n * unit < key->min || n * unit > key->max) {
        return phrase(msg, "\"%s\" is out of range (%s..%s)", value, size_text(key->min, lo),
                      size_text(key->max, hi));
    }
    *(uint32_t *)((char *)base + key->offset) = (uint32_t)(n * unit);
    return NULL;
}

static const char *set_log_level(void *base, const struct config_key *key, const char *value,
                                 char *msg)
{
    if (log_level_parse(value, (enum log_level *)((char *)base + key->offset)) < 0) {
        return phrase(msg, "\"%s\" is not a level (use debug, info, warn, error)", value);
    }
    return NULL;
}

static const char *set_log_format(void *base, const struct config_key *key, const char *value,
                                  char *msg)
{
    if (log_format_parse(value, (enum log_format *)((char *)base + key->offset)) < 0) {
        return phrase(msg, "\"%s\" is not a format (use json, text)", value);
    }
    return NULL;
}

static const char *set_splice(void *base, const struct config_key *key, const char *value,
                              char *msg)
{
    int i = name_index(splice_names, N_NAMES(splice_names), value);

    if (i < 0) {
        return phrase(msg, "\"%s\" is not a splice mode (use auto, off, always)", value);
    }
    *(enum config_splice *)((char *)base + key->offset) = (enum config_splice)i;
    return NULL;
}

static const char *set_balance(void *base, const struct config_key *key, const char *value,
                               char *msg)
{
    int i = name_index(balance_names, N_NAMES(balance_names), value);

    if (i < 0) {
        return phrase(msg,
                      "\"%s\" is not a balance method (use round_robin, least_connections, "
                      "weighted)",
                      value);
    }
    *(enum config_balance *)((char *)base + key->offset) = (enum config_balance)i;
    return NULL;
}

static const char *set_discovery(void *base, const struct config_key *key, const char *value,
                                 char *msg)
{
    int i = name_index(discovery_names, N_NAMES(discovery_names), value);

    if (i < 0) {
        return phrase(msg, "\"%s\" is not a discovery method (use static, consul)", value);
    }
    *(enum config_discovery *)((char *)base + key->offset) = (enum config_discovery)i;
    return NULL;
}

static const char *set_addr(void *base, const struct config_key *key, const char *value, char *msg)
{
    const char *why = addr_parse(value, (struct config_addr *)((char *)base + key->offset));

    return why != NULL ? phrase(msg, "\"%s\": %s", value, why) : NULL;
}

/* A reference to a [service:NAME]; whether it exists is checked once the file is read. */
static const char *set_name(void *base, const struct config_key *key, const char *value, char *msg)
{
    const char *why = name_check(value);

    if (why != NULL) {
        return phrase(msg, "\"%s\" is not a service name: %s", value, why);
    }
    memcpy((char *)base + key->offset, value, strlen(value) + 1);
    return NULL;
}

/* Options after a backend's address: only weight=N, limited by the row. */
static const char *backend_options(char *opts, const struct config_key *key,
                                   struct config_backend *b)
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
        rc = digits_parse(opt + 7, &w, &end);
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

/* One entry of a backends list: "ADDRESS [weight=N]", already trimmed. */
static const char *backend_parse(char *entry, const struct config_key *key,
                                 struct config_backend *b)
{
    size_t addr_len = strcspn(entry, " \t");
    char *opts = entry + addr_len;
    const char *why;

    b->weight = 1;
    if (*opts != '\0') {
        *opts++ = '\0';
    }
    why = addr_parse(entry, &b->addr);
    return why != NULL ? why : backend_options(opts, key, b);
}

/* Copies the n-th comma-separated entry of list (trimmed) into out. */
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

/* Parses the whole list into fresh storage; stops at the first bad entry. */
static const char *backends_parse(const char *value, const struct config_key *key,
                                  struct config_backend *list, size_t *n, char *msg)
{
    char entry[ENTRY_MAX], text[ENTRY_MAX];
    const char *why;

    for (const char *s = value;; s++) {
        size_t len = strcspn(s, ",");
        if ((why = backend_entry(s, len, entry)) != NULL) {
            return phrase(msg, "backend %zu %s", *n + 1, why);
        }
        memcpy(text, entry, sizeof(text));
        if ((why = backend_parse(entry, key, &list[*n])) != NULL) {
            return phrase(msg, "backend %zu \"%s\": %s", *n + 1, text, why);
        }
        for (size_t i = 0; i < *n; i++) {
            if (strcmp(list[i].addr.text, list[*n].addr.text) == 0) {
                return phrase(msg, "%s is listed twice (backends %zu and %zu)", list[i].addr.text,
                              i + 1, *n + 1);
            }
        }
        ++*n;
        s += len;
        if (*s == '\0') {
            return NULL;
        }
    }
}

/* "ADDRESS [weight=N], ADDRESS [weight=N], ..." */
static const char *set_backends(void *base, const struct config_key *key, const char *value,
                                char *msg)
{
    struct config_service *svc = base;
    struct config_backend *list;
    size_t n = 0, cap = 1;
    const char *why;

    for (const char *s = value; *s != '\0'; s++) {
        cap += *s == ',';
    }
    list = calloc(cap, sizeof(*list));
    if (list == NULL) {
        return phrase_oom;
    }
    why = backends_parse(value, key, list, &n, msg);
    if (why != NULL) {
        free(list);
        return why;
    }
    svc->backends = list;
    svc->n_backends = n;
    return NULL;
}

static const char *set_health(void *base, const struct config_key *key, const char *value,
                              char *msg)
{
    int i = name_index(health_names, N_NAMES(health_names), value);

    if (i < 0) {
        return phrase(msg, "\"%s\" is not a health mode (use passing, passing_and_warning)", value);
    }
    *(enum config_health *)((char *)base + key->offset) = (enum config_health)i;
    return NULL;
}

/* true/yes/on/1 or false/no/off/0; 1 or 0. */
static int bool_parse(const char *value)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};

    if (name_index(yes, N_NAMES(yes), value) >= 0) {
        return 1;
    }
    return name_index(no, N_NAMES(no), value) >= 0 ? 0 : -1;
}

static const char *set_bool(void *base, const struct config_key *key, const char *value, char *msg)
{
    int b = bool_parse(value);

    if (b < 0) {
        return phrase(msg, "\"%s\" is not a boolean (use true or false)", value);
    }
    *(int *)((char *)base + key->offset) = b;
    return NULL;
}

/* Like set_bool, into an enum config_flag, so that "not set" stays distinguishable. */
static const char *set_flag(void *base, const struct config_key *key, const char *value, char *msg)
{
    int b = bool_parse(value);

    if (b < 0) {
        return phrase(msg, "\"%s\" is not a boolean (use true or false)", value);
    }
    *(enum config_flag *)((char *)base + key->offset) = b ? CONFIG_FLAG_ON : CONFIG_FLAG_OFF;
    return NULL;
}

/* Why text cannot be a string value: control characters would break headers and logs. */
static const char *string_check(const char *value)
{
    if (strlen(value) >= STRING_MAX) {
        return "is too long";
    }
    for (const unsigned char *c = (const unsigned char *)value; *c != '\0'; c++) {
        if (*c < 0x20 || *c == 0x7f) {
            return "contains a control character";
        }
    }
    return NULL;
}

/* An owned string (char * field). The loader rejects a key set twice, so the field is empty. */
static const char *set_string(void *base, const struct config_key *key, const char *value,
                              char *msg)
{
    const char *why = string_check(value);
    char *copy;

    if (why != NULL) {
        return phrase(msg, "%s", why);
    }
    copy = strdup(value);
    if (copy == NULL) {
        return phrase_oom;
    }
    *(char **)((char *)base + key->offset) = copy;
    return NULL;
}

/* A file (or, with key->max set, a directory) that must be readable now. */
static const char *set_path(void *base, const struct config_key *key, const char *value, char *msg)
{
    char why[128];
    struct stat st;

    if (stat(value, &st) != 0 || access(value, R_OK) != 0) {
        return phrase(msg, "\"%s\" cannot be read: %s", value, strerror_r(errno, why, sizeof(why)));
    }
    if (key->max != 0 && !S_ISDIR(st.st_mode)) {
        return phrase(msg, "\"%s\" is not a directory", value);
    }
    if (key->max == 0 && S_ISDIR(st.st_mode)) {
        return phrase(msg, "\"%s\" is a directory, not a file", value);
    }
    return set_string(base, key, value, msg);
}

/* host:port with an optional http://, https:// or unix:// prefix; host names are fine here
 * (libcurl resolves them), but the parts must be there. */
static const char *consul_address_check(const char *value)
{
    const char *rest = value, *colon;

    if (strncmp(value, "unix://", 7) == 0) {
        return value[7] == '/' ? NULL
                               : "needs an absolute socket path, as in unix:///run/consul.sock";
    }
    if (strncmp(value, "http://", 7) == 0) {
        rest = value + 7;
    } else if (strncmp(value, "https://", 8) == 0) {
        rest = value + 8;
    } else if (strstr(value, "://") != NULL) {
        return "has an unknown scheme (use http://, https:// or unix://)";
    }
    if (*rest == '\0' || *rest == ':' || strchr(rest, '/') != NULL || strchr(rest, ' ') != NULL) {
        return "is not HOST:PORT (with an optional http://, https:// or unix:// prefix)";
    }
    colon = strrchr(rest, ':');
    if (colon != NULL && (rest[0] != '[' || colon > strchr(rest, ']'))) {
        uint16_t port;
        return port_parse(colon + 1, &port);
    }
    return NULL;
}

static const char *set_consul_address(void *base, const struct config_key *key, const char *value,
                                      char *msg)
{
    const char *why = consul_address_check(value);

    if (why != NULL) {
        return phrase(msg, "\"%s\" %s", value, why);
    }
    return set_string(base, key, value, msg);
}

/* A numeric IPv4 or IPv6 address without a port, stored as text (char[CONFIG_ADDR_MAX]). */
static const char *set_ip(void *base, const struct config_key *key, const char *value, char *msg)
{
    unsigned char buf[sizeof(struct in6_addr)];

    if (inet_pton(AF_INET, value, buf) != 1 && inet_pton(AF_INET6, value, buf) != 1) {
        return phrase(msg, "\"%s\" is not an IP address (host names are not resolved)", value);
    }
    if (strcmp(value, "0.0.0.0") == 0 || strcmp(value, "::") == 0) {
        return phrase(msg, "\"%s\" cannot be reached by anyone; name the address to advertise",
                      value);
    }
    snprintf((char *)base + key->offset, CONFIG_ADDR_MAX, "%s", value);
    return NULL;
}

/* A name such as a datacenter's: same rules as section names. */
static const char *set_label(void *base, const struct config_key *key, const char *value, char *msg)
{
    const char *why = name_check(value);

    if (why != NULL) {
        return phrase(msg, "\"%s\" is not valid: %s", value, why);
    }
    memcpy((char *)base + key->offset, value, strlen(value) + 1);
    return NULL;
}

/* Why one Consul meta pair is refused, with Consul's own limits. */
static const char *meta_check(const char *item)
{
    const char *eq = strchr(item, '=');
    size_t key_len = eq != NULL ? (size_t)(eq - item) : 0;

    if (eq == NULL || key_len == 0) {
        return "is not KEY=VALUE";
    }
    if (strspn(item, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
        key_len) {
        return "has a key with characters other than letters, digits, '_' and '-'";
    }
    if (key_len > 128) {
        return "has a key longer than 128 characters";
    }
    if (strncmp(item, "consul-", 7) == 0) {
        return "uses the reserved key prefix \"consul-\"";
    }
    return strlen(eq + 1) > 512 ? "has a value longer than 512 characters" : NULL;
}

/* Checks one list item by the row's kind of list (key->min: 0 tags, 1 meta, 2 names). */
static const char *list_item_check(const struct config_key *key, const char *item)
{
    if (key->min == 1) {
        return meta_check(item);
    }
    if (key->min == 2) {
        return name_check(item);
    }
    return string_check(item);
}

static void list_free(struct config_list *list)
{
    for (size_t i = 0; i < list->n; i++) {
        free(list->items[i]);
    }
    free(list->items);
    list->items = NULL;
    list->n = 0;
}

/* Appends a copy of the n bytes at text. */
static const char *list_push(struct config_list *list, const char *text, size_t n)
{
    char **grown = realloc(list->items, (list->n + 1) * sizeof(*grown));

    if (grown == NULL) {
        return phrase_oom;
    }
    list->items = grown;
    list->items[list->n] = strndup(text, n);
    if (list->items[list->n] == NULL) {
        return phrase_oom;
    }
    list->n++;
    return NULL;
}

/* Fills list from "a, b, c"; items are trimmed, non-empty, unique. */
static const char *list_parse(const struct config_key *key, const char *value,
                              struct config_list *list, char *msg)
{
    for (const char *s = value;; s++) {
        size_t len = strcspn(s, ",");
        const char *start = s, *why;
        size_t n = len;
        while (n > 0 && (*start == ' ' || *start == '\t')) {
            start++;
            n--;
        }
        while (n > 0 && (start[n - 1] == ' ' || start[n - 1] == '\t')) {
            n--;
        }
        if (n == 0) {
            return phrase(msg, "entry %zu is empty", list->n + 1);
        }
        if ((why = list_push(list, start, n)) != NULL) {
            return why;
        }
        if ((why = list_item_check(key, list->items[list->n - 1])) != NULL) {
            return phrase(msg, "entry \"%s\" %s", list->items[list->n - 1], why);
        }
        for (size_t i = 0; i + 1 < list->n; i++) {
            if (strcmp(list->items[i], list->items[list->n - 1]) == 0) {
                return phrase(msg, "\"%s\" is listed twice", list->items[i]);
            }
        }
        s += len;
        if (*s == '\0') {
            return NULL;
        }
    }
}

static const char *set_list(void *base, const struct config_key *key, const char *value, char *msg)
{
    struct config_list list = {0};
    const char *why = list_parse(key, value, &list, msg);

    if (why == NULL && key->max != 0 && list.n > key->max) {
        why = phrase(msg, "has %zu entries (at most %llu)", list.n, (unsigned long long)key->max);
    }
    if (why != NULL) {
        list_free(&list);
        return why;
    }
    *(struct config_list *)((char *)base + key->offset) = list;
    return NULL;
}

/* Kind and offset of a row, side by side as struct config_key wants them. */
#define GLOBAL(field)   SECTION_GLOBAL, offsetof(struct config, field)
#define LISTENER(field) SECTION_LISTENER, offsetof(struct config_listener, field)
#define SERVICE(field)  SECTION_SERVICE, offsetof(struct config_service, field)
#define CONSUL(field)   SECTION_CONSUL, offsetof(struct config_consul, field)
#define REG(field)      SECTION_REGISTRATION, offsetof(struct config_registration, field)
#define MINUTE_MS       (60ULL * 1000ULL)

/* Kinds of list for set_list, in the min column; max caps the entries (0 = no cap). */
#define LIST_STRINGS 0
#define LIST_META    1
#define LIST_NAMES   2

/* Every key of every section, with its limits and default. For backends, min and max limit
 * each weight; for set_path, max 1 asks for a directory. */
static const struct config_key config_keys[] = {
    {GLOBAL(workers), "workers", set_workers, 1, WORKERS_MAX, "auto", false},
    {GLOBAL(max_connections), "max_connections", set_u32, 1, 10000000, "10000", false},
    {GLOBAL(log_level), "log_level", set_log_level, 0, 0, "info", false},
    {GLOBAL(log_format), "log_format", set_log_format, 0, 0, "json", false},
    {GLOBAL(shutdown_timeout_ms), "shutdown_timeout", set_duration, 0, UINT64_MAX, "30s", false},
    {GLOBAL(splice), "splice", set_splice, 0, 0, "auto", false},
    {GLOBAL(pipe_size), "pipe_size", set_size, 4 * KIB, 16 * MIB, "1m", false},
    {GLOBAL(buffer_size), "buffer_size", set_size, 1 * KIB, 1 * MIB, "16k", false},
    {LISTENER(bind), "bind", set_addr, 0, 0, NULL, true},
    {LISTENER(service), "service", set_name, 0, 0, NULL, true},
    {LISTENER(connect_timeout_ms), "connect_timeout", set_duration, 1, UINT64_MAX, "2s", false},
    {LISTENER(idle_timeout_ms), "idle_timeout", set_duration, 0, UINT64_MAX, "5m", false},
    {LISTENER(retries), "retries", set_u32, 0, 100, "2", false},
    {LISTENER(backlog), "backlog", set_int, 1, 65535, "4096", false},
    {SERVICE(balance), "balance", set_balance, 0, 0, "round_robin", false},
    {SERVICE(discovery), "discovery", set_discovery, 0, 0, "static", false},
    {SERVICE(backends), "backends", set_backends, 0, 1000000, NULL, false},
    {SERVICE(consul_service), "consul_service", set_name, 0, 0, NULL, false},
    {SERVICE(consul_tags), "consul_tags", set_list, LIST_STRINGS, 64, NULL, false},
    {SERVICE(consul_datacenter), "consul_datacenter", set_label, 0, 0, NULL, false},
    {SERVICE(health), "health", set_health, 0, 0, "passing_and_warning", false},
    {CONSUL(address), "address", set_consul_address, 0, 0, NULL, false},
    {CONSUL(token), "token", set_string, 0, 0, NULL, false},
    {CONSUL(token_file), "token_file", set_path, 0, 0, NULL, false},
    {CONSUL(datacenter), "datacenter", set_string, 0, 0, NULL, false},
    {CONSUL(ca_file), "ca_file", set_path, 0, 0, NULL, false},
    {CONSUL(ca_path), "ca_path", set_path, 0, 1, NULL, false},
    {CONSUL(cert_file), "cert_file", set_path, 0, 0, NULL, false},
    {CONSUL(key_file), "key_file", set_path, 0, 0, NULL, false},
    {CONSUL(tls_server_name), "tls_server_name", set_string, 0, 0, NULL, false},
    {CONSUL(tls_skip_verify), "tls_skip_verify", set_flag, 0, 0, NULL, false},
    {CONSUL(wait_ms), "wait", set_duration, 1000, 10 * MINUTE_MS, "55s", false},
    {CONSUL(stale), "stale", set_bool, 0, 0, "false", false},
    {CONSUL(retry_min_ms), "retry_min", set_duration, 10, 10 * MINUTE_MS, "250ms", false},
    {CONSUL(retry_max_ms), "retry_max", set_duration, 10, 60 * MINUTE_MS, "1m", false},
    {REG(name), "name", set_name, 0, 0, NULL, false},
    {REG(tags), "tags", set_list, LIST_STRINGS, 64, NULL, false},
    {REG(meta), "meta", set_list, LIST_META, META_MAX, NULL, false},
    {REG(address), "address", set_ip, 0, 0, NULL, false},
    {REG(listeners), "listeners", set_list, LIST_NAMES, 0, NULL, false},
    {REG(check_interval_ms), "check_interval", set_duration, 1000, UINT64_MAX, "10s", false},
    {REG(check_timeout_ms), "check_timeout", set_duration, 1, UINT64_MAX, "5s", false},
    {REG(deregister_after_ms), "deregister_critical_after", set_duration, 0, UINT64_MAX, "1m",
     false},
    {REG(anti_entropy_ms), "anti_entropy", set_duration, 1000, UINT64_MAX, "30s", false},
};

#define N_KEYS N_NAMES(config_keys)

/* A section header that was accepted. */
struct section {
    enum section_kind kind;            /* which table rows apply */
    size_t index;                      /* into cfg->listeners or cfg->services */
    int line;                          /* line of the header */
    char header[CONFIG_NAME_MAX + 16]; /* "[listener:web]", the key of section-level errors */
    int key_lines[N_KEYS];             /* line each key was set on; 0 = not set */
};

/* One problem, kept with its line so the list can be sorted. */
struct error {
    int line;   /* line it refers to; 0 = the whole file */
    size_t seq; /* order found, keeps the sort stable */
    char *text; /* "FILE:LINE: key: what", owned */
};

/* Where the reader is, between inih's calls to read_line() and on_key(). */
enum current { CURRENT_NONE, CURRENT_SKIP, CURRENT_SECTION };

/* Everything one config_load() call works on; nothing global. */
struct parser {
    const char *path;         /* file name for messages */
    FILE *file;               /* being read */
    struct config *cfg;       /* being filled */
    int line;                 /* physical line last handed to inih */
    char *buf;                /* getline() buffer, owned */
    size_t cap;               /* bytes of buf */
    const char *long_value;   /* value of this line when it did not fit inih's buffer */
    struct section *sections; /* accepted headers in file order, owned */
    size_t n_sections;        /* entries in sections */
    enum current current;     /* no section yet, a rejected one (keys ignored) or sections[] */
    size_t section;           /* index into sections when current == CURRENT_SECTION */
    struct error *errors;     /* problems found, owned */
    size_t n_errors;          /* entries in errors */
    bool oom;                 /* an allocation failed: the result is -ENOMEM */
    bool consul_only;         /* config_load_consul: a file without listeners is fine */
    int read_errno;           /* errno of a failed read, 0 if none */
};

__attribute__((format(printf, 4, 5))) static void add_error(struct parser *p, int line,
                                                            const char *key, const char *fmt, ...)
{
    struct error *grown;
    char what[PHRASE_MAX];
    char *text;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    grown = realloc(p->errors, (p->n_errors + 1) * sizeof(*grown));
    if (grown == NULL || asprintf(&text, "%s:%d: %s: %s", p->path, line, key, what) < 0) {
        p->errors = grown != NULL ? grown : p->errors;
        p->oom = true;
        return;
    }
    p->errors = grown;
    p->errors[p->n_errors] = (struct error){.line = line, .seq = p->n_errors, .text = text};
    p->n_errors++;
}

static void *section_base(struct parser *p, const struct section *sec)
{
    switch (sec->kind) {
    case SECTION_LISTENER:
        return &p->cfg->listeners[sec->index];
    case SECTION_SERVICE:
        return &p->cfg->services[sec->index];
    case SECTION_CONSUL:
        return &p->cfg->consul;
    case SECTION_REGISTRATION:
        return &p->cfg->registration;
    default:
        return p->cfg;
    }
}

/* Stores every default of a kind; a failure here is a bug in the table. */
static void apply_defaults(struct parser *p, enum section_kind kind, void *base)
{
    char msg[PHRASE_MAX];

    for (size_t i = 0; i < N_KEYS; i++) {
        const struct config_key *key = &config_keys[i];
        const char *why;
        if (key->kind != kind || key->def == NULL) {
            continue;
        }
        why = key->set(base, key, key->def, msg);
        if (why != NULL) {
            add_error(p, 0, key->name, "built-in default %s", why);
        }
    }
}

/* Appends a zeroed listener with its defaults; returns its index or -1. */
static long listener_add(struct parser *p, const char *name)
{
    struct config *cfg = p->cfg;
    struct config_listener *grown, *l;

    grown = realloc(cfg->listeners, (cfg->n_listeners + 1) * sizeof(*grown));
    if (grown == NULL) {
        p->oom = true;
        return -1;
    }
    cfg->listeners = grown;
    l = &grown[cfg->n_listeners];
    memset(l, 0, sizeof(*l));
    snprintf(l->name, sizeof(l->name), "%s", name);
    l->line = p->line;
    apply_defaults(p, SECTION_LISTENER, l);
    return (long)cfg->n_listeners++;
}

/* Appends a zeroed service with its defaults; returns its index or -1. */
static long service_add(struct parser *p, const char *name)
{
    struct config *cfg = p->cfg;
    struct config_service *grown, *svc;

    grown = realloc(cfg->services, (cfg->n_services + 1) * sizeof(*grown));
    if (grown == NULL) {
        p->oom = true;
        return -1;
    }
    cfg->services = grown;
    svc = &grown[cfg->n_services];
    memset(svc, 0, sizeof(*svc));
    snprintf(svc->name, sizeof(svc->name), "%s", name);
    svc->line = p->line;
    apply_defaults(p, SECTION_SERVICE, svc);
    return (long)cfg->n_services++;
}

/* What kind of section inner ("listener:web") is, and its NAME; NULL or why not. */
static const char *section_classify(const char *inner, enum section_kind *kind, const char **name)
{
    static const struct {
        const char *prefix;
        enum section_kind kind;
        const char *unnamed;
    } named[] = {
        {"listener", SECTION_LISTENER, "needs a name, as in [listener:NAME]"},
        {"service", SECTION_SERVICE, "needs a name, as in [service:NAME]"},
    };

    static const struct {
        const char *name;
        enum section_kind kind;
    } single[] = {
        {"sluice", SECTION_GLOBAL},
        {"consul", SECTION_CONSUL},
        {"registration", SECTION_REGISTRATION},
    };

    *name = "";
    for (size_t i = 0; i < N_NAMES(single); i++) {
        if (strcmp(inner, single[i].name) == 0) {
            *kind = single[i].kind;
            return NULL;
        }
    }
    for (size_t i = 0; i < N_NAMES(named); i++) {
        size_t len = strlen(named[i].prefix);
        if (strncmp(inner, named[i].prefix, len) != 0 || (inner[len] != ':' && inner[len])) {
            continue;
        }
        *kind = named[i].kind;
        if (inner[len] == '\0' || inner[len + 1] == '\0') {
            return named[i].unnamed;
        }
        *name = inner + len + 1;
        return name_check(*name);
    }
    return "is not a known section (use [sluice], [listener:NAME], [service:NAME], [consul] or "
           "[registration])";
}

static struct section *section_find(struct parser *p, const char *header)
{
    for (size_t i = 0; i < p->n_sections; i++) {
        struct section *sec = &p->sections[i];
        if (strcmp(sec->header, header) == 0) {
            return sec;
        }
    }
    return NULL;
}

/* Records an accepted header and makes it the current section. */
static void section_open(struct parser *p, enum section_kind kind, const char *name,
                         const char *header)
{
    struct section *grown = realloc(p->sections, (p->n_sections + 1) * sizeof(*grown));
    long index = 0;

    if (grown == NULL) {
        p->oom = true;
        return;
    }
    p->sections = grown;
    if (kind == SECTION_LISTENER) {
        index = listener_add(p, name);
    } else if (kind == SECTION_SERVICE) {
        index = service_add(p, name);
    } else if (kind == SECTION_CONSUL) {
        p->cfg->consul.line = p->line;
    } else if (kind == SECTION_REGISTRATION) {
        p->cfg->registration.line = p->line;
    }
    if (index < 0) {
        return;
    }
    grown = &p->sections[p->n_sections];
    memset(grown, 0, sizeof(*grown));
    grown->kind = kind;
    grown->index = (size_t)index;
    grown->line = p->line;
    snprintf(grown->header, sizeof(grown->header), "%s", header);
    p->section = p->n_sections++;
    p->current = CURRENT_SECTION;
}

/* text is a trimmed line starting with '['. Keys of a rejected section are ignored: their
 * section is already reported, and errors about them would only be noise. */
static void on_header(struct parser *p, char *text, char *out, size_t size)
{
    char header[CONFIG_NAME_MAX + 16];
    char *close = strchr(text, ']');
    enum section_kind kind;
    const char *name, *why;
    struct section *first;

    p->current = CURRENT_SKIP;
    if (close == NULL || close[1] != '\0') {
        add_error(p, p->line, text,
                  close == NULL ? "is missing the closing \"]\""
                                : "has text after the closing \"]\"");
        return;
    }
    *close = '\0'; /* name points into text, so the ']' stays cut off */
    why = section_classify(text + 1, &kind, &name);
    snprintf(header, sizeof(header), "[%.*s]", (int)(sizeof(header) - 3), text + 1);
    if (why != NULL) {
        add_error(p, p->line, header, "%s", why);
        return;
    }
    if ((first = section_find(p, header)) != NULL) {
        add_error(p, p->line, header, "is defined twice (first at line %d)", first->line);
        return;
    }
    section_open(p, kind, name, header);
    if (strlen(header) < size) {
        memcpy(out, header, strlen(header) + 1);
    }
}

/* Strips a UTF-8 byte order mark (line 1), comments and surrounding blanks, in place. A ';' or
 * '#' starts a comment at the start of a line or after a blank. */
static char *line_clean(char *s, bool first)
{
    size_t len;

    if (first && strncmp(s, "\xEF\xBB\xBF", 3) == 0) {
        s += 3;
    }
    for (size_t i = 0; s[i] != '\0'; i++) {
        if ((s[i] == ';' || s[i] == '#') && (i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t')) {
            s[i] = '\0';
            break;
        }
    }
    s += strspn(s, " \t\r\n\f\v");
    len = strlen(s);
    while (len > 0 && strchr(" \t\r\n\f\v", s[len - 1]) != NULL) {
        s[--len] = '\0';
    }
    return s;
}

/* text is a trimmed line that is not a header. Hands inih "key=value"; a value too long for
 * inih's buffer is kept in long_value and on_key() uses it instead. */
static void on_key_line(struct parser *p, char *text, char *out, size_t size)
{
    char *eq = strchr(text, '=');
    char *name = text, *value;
    size_t name_len;

    if (eq == NULL) {
        add_error(p, p->line, text, "is not a \"key = value\" line");
        return;
    }
    value = eq + 1 + strspn(eq + 1, " \t");
    name_len = (size_t)(eq - text);
    while (name_len > 0 && (name[name_len - 1] == ' ' || name[name_len - 1] == '\t')) {
        name_len--;
    }
    name[name_len] = '\0';
    if (name_len == 0 || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != name_len) {
        add_error(p, p->line, name_len == 0 ? "=" : name,
                  name_len == 0 ? "a key name is missing before \"=\"" : "is not a key name");
        return;
    }
    if (name_len + 2 + strlen(value) < size) {
        snprintf(out, size, "%s=%s", name, value);
    } else if (name_len + 2 < size) {
        snprintf(out, size, "%s=", name);
        p->long_value = value;
    } else {
        add_error(p, p->line, name, "is not a known key");
    }
}

/* inih's reader: one physical line per call, so p->line is the line on_key() sees. */
static char *read_line(char *out, int size, void *stream)
{
    struct parser *p = stream;
    ssize_t n;
    char *text;

    errno = 0;
    n = getline(&p->buf, &p->cap, p->file);
    if (n < 0) {
        if (ferror(p->file)) {
            p->read_errno = errno != 0 ? errno : EIO;
        }
        return NULL;
    }
    p->line++;
    p->long_value = NULL;
    out[0] = '\0';
    text = line_clean(p->buf, p->line == 1);
    if (*text == '[') {
        on_header(p, text, out, (size_t)size);
    } else if (*text != '\0') {
        on_key_line(p, text, out, (size_t)size);
    }
    return out;
}

static long key_find(enum section_kind kind, const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        if (config_keys[i].kind == kind && strcmp(config_keys[i].name, name) == 0) {
            return (long)i;
        }
    }
    return -1;
}

static void unknown_key(struct parser *p, const struct section *sec, const char *name)
{
    static const char *const homes[] = {"[sluice]", "[listener:NAME]", "[service:NAME]", "[consul]",
                                        "[registration]"};

    for (size_t i = 0; i < N_NAMES(homes); i++) {
        if (key_find((enum section_kind)i, name) >= 0) {
            add_error(p, p->line, name, "does not belong in %s (it goes in %s)", sec->header,
                      homes[i]);
            return;
        }
    }
    add_error(p, p->line, name, "is not a known key in %s", sec->header);
}

/* Checks and stores one key of the current section. */
static void key_apply(struct parser *p, struct section *sec, const char *name, const char *value)
{
    char msg[PHRASE_MAX];
    const char *why;
    long row = key_find(sec->kind, name);

    if (row < 0) {
        unknown_key(p, sec, name);
        return;
    }
    if (sec->key_lines[row] != 0) {
        add_error(p, p->line, name, "is set twice in %s (first at line %d)", sec->header,
                  sec->key_lines[row]);
        return;
    }
    sec->key_lines[row] = p->line;
    if (*value == '\0') {
        add_error(p, p->line, name, "has no value");
        return;
    }
    why = config_keys[row].set(section_base(p, sec), &config_keys[row], value, msg);
    if (why != NULL) {
        p->oom = p->oom || why == phrase_oom;
        add_error(p, p->line, name, "%s", why);
    }
}

/* inih's handler. The section argument is ignored: read_line() tracks sections, including
 * rejected ones and ones without keys, which inih never reports. */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct parser *p = user;

    (void)section;
    if (p->current == CURRENT_SECTION) {
        key_apply(p, &p->sections[p->section], name, p->long_value ? p->long_value : value);
    } else if (p->current == CURRENT_NONE) {
        add_error(p, p->line, name,
                  "is outside any section (put it under [sluice], [listener:NAME] or "
                  "[service:NAME])");
    }
    return 1; /* problems are collected here; inih's own error count is not used */
}

static int key_line(const struct section *sec, const char *name)
{
    long row = key_find(sec->kind, name);

    return row < 0 ? 0 : sec->key_lines[row];
}

static void check_required(struct parser *p, const struct section *sec)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        if (config_keys[i].kind == sec->kind && config_keys[i].required && sec->key_lines[i] == 0) {
            add_error(p, sec->line, sec->header, "%s is required", config_keys[i].name);
        }
    }
}

static void check_listener(struct parser *p, const struct section *sec)
{
    struct config *cfg = p->cfg;
    struct config_listener *l = &cfg->listeners[sec->index];
    size_t i;

    for (i = 0; l->service[0] != '\0' && i < cfg->n_services; i++) {
        if (strcmp(cfg->services[i].name, l->service) == 0) {
            break;
        }
    }
    l->service_index = i;
    if (l->service[0] != '\0' && i == cfg->n_services) {
        add_error(p, key_line(sec, "service"), "service", "there is no [service:%s] in this file",
                  l->service);
    }
    for (i = 0; l->bind.len != 0 && i < sec->index; i++) {
        if (strcmp(cfg->listeners[i].bind.text, l->bind.text) == 0) {
            add_error(p, key_line(sec, "bind"), "bind",
                      "%s is already bound by [listener:%s] "
                      "(line %d)",
                      l->bind.text, cfg->listeners[i].name, cfg->listeners[i].line);
            break;
        }
    }
}

static void check_service(struct parser *p, const struct section *sec)
{
    static const char *const consul_keys[] = {"consul_service", "consul_tags", "consul_datacenter",
                                              "health"};
    struct config_service *svc = &p->cfg->services[sec->index];
    int backends_line = key_line(sec, "backends");

    if (svc->discovery == CONFIG_DISCOVERY_STATIC && backends_line == 0) {
        add_error(p, sec->line, sec->header, "static discovery needs backends = ADDRESS, ...");
    }
    if (svc->discovery != CONFIG_DISCOVERY_STATIC && backends_line != 0) {
        add_error(p, backends_line, "backends", "only applies to discovery = static");
    }
    for (size_t i = 0; i < N_NAMES(consul_keys); i++) {
        int line = key_line(sec, consul_keys[i]);
        if (svc->discovery != CONFIG_DISCOVERY_CONSUL && line != 0) {
            add_error(p, line, consul_keys[i], "only applies to discovery = consul");
        }
    }
    if (svc->discovery == CONFIG_DISCOVERY_CONSUL && svc->consul_service[0] == '\0') {
        memcpy(svc->consul_service, svc->name, sizeof(svc->name)); /* same size, both valid */
    }
}

static void check_consul(struct parser *p, const struct section *sec)
{
    const struct config_consul *c = &p->cfg->consul;

    if (c->token != NULL && c->token_file != NULL) {
        add_error(p, key_line(sec, "token_file"), "token_file",
                  "token is already set (line %d); use one of them", key_line(sec, "token"));
    }
    if (c->retry_min_ms > c->retry_max_ms) {
        bool max_set = key_line(sec, "retry_max") != 0;
        add_error(p, key_line(sec, max_set ? "retry_max" : "retry_min"),
                  max_set ? "retry_max" : "retry_min",
                  max_set ? "is shorter than retry_min" : "is longer than retry_max");
    }
    if ((c->cert_file == NULL) != (c->key_file == NULL)) {
        const char *set = c->cert_file != NULL ? "cert_file" : "key_file";
        add_error(p, key_line(sec, set), set, "needs %s as well (mutual TLS takes both)",
                  c->cert_file != NULL ? "key_file" : "cert_file");
    }
}

/* Index of the listener called name, or -1. */
static long listener_find(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (strcmp(cfg->listeners[i].name, name) == 0) {
            return (long)i;
        }
    }
    return -1;
}

/* A wildcard bind address is no address to advertise. */
static bool bind_is_wildcard(const struct config_addr *a)
{
    if (a->sa.ss_family == AF_INET6) {
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&a->sa)->sin6_addr);
    }
    return ((const struct sockaddr_in *)&a->sa)->sin_addr.s_addr == htonl(INADDR_ANY);
}

static void check_registration(struct parser *p, const struct section *sec)
{
    const struct config_registration *r = &p->cfg->registration;
    int line = key_line(sec, "deregister_critical_after");

    for (size_t i = 0; i < r->listeners.n; i++) {
        if (listener_find(p->cfg, r->listeners.items[i]) < 0) {
            add_error(p, key_line(sec, "listeners"), "listeners",
                      "there is no [listener:%s] in this file", r->listeners.items[i]);
        }
    }
    for (size_t i = 0; r->address[0] == '\0' && i < p->cfg->n_listeners; i++) {
        const struct config_listener *l = &p->cfg->listeners[i];
        bool chosen = r->listeners.n == 0;
        for (size_t j = 0; j < r->listeners.n; j++) {
            chosen = chosen || strcmp(r->listeners.items[j], l->name) == 0;
        }
        if (chosen && l->bind.len != 0 && bind_is_wildcard(&l->bind)) {
            add_error(p, sec->line, sec->header,
                      "[listener:%s] binds %s: set address = IP to advertise", l->name,
                      l->bind.text);
        }
    }
    if (r->deregister_after_ms != 0 && r->deregister_after_ms < MINUTE_MS) {
        add_error(p, line, "deregister_critical_after", "is shorter than Consul's minimum of 1m");
    }
}

/* The rules that need the whole file: required keys, references, uniqueness. */
static void validate(struct parser *p)
{
    for (size_t i = 0; i < p->n_sections; i++) {
        const struct section *sec = &p->sections[i];
        check_required(p, sec);
        if (sec->kind == SECTION_LISTENER) {
            check_listener(p, sec);
        } else if (sec->kind == SECTION_SERVICE) {
            check_service(p, sec);
        } else if (sec->kind == SECTION_CONSUL) {
            check_consul(p, sec);
        } else if (sec->kind == SECTION_REGISTRATION) {
            check_registration(p, sec);
        }
    }
    if (p->cfg->n_listeners == 0 && !p->consul_only) {
        add_error(p, 0, "[listener:NAME]", "the file defines no listener; add one");
    }
}

static int error_order(const void *a, const void *b)
{
    const struct error *x = a, *y = b;

    if (x->line != y->line) {
        return x->line < y->line ? -1 : 1;
    }
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Moves the collected lines, sorted by line, to the end of errs. Without memory for them the
 * lines are dropped (and freed with the parser); the return code still says what happened. */
static void errors_hand_over(struct parser *p, struct config_errors *errs)
{
    char **grown;

    if (p->n_errors == 0 || errs == NULL) {
        return;
    }
    qsort(p->errors, p->n_errors, sizeof(*p->errors), error_order);
    grown = realloc(errs->lines, (errs->n + p->n_errors) * sizeof(*grown));
    if (grown == NULL) {
        return;
    }
    errs->lines = grown;
    for (size_t i = 0; i < p->n_errors; i++) {
        errs->lines[errs->n++] = p->errors[i].text;
        p->errors[i].text = NULL;
    }
}

static void parser_free(struct parser *p)
{
    for (size_t i = 0; i < p->n_errors; i++) {
        free(p->errors[i].text);
    }
    free(p->errors);
    free(p->sections);
    free(p->buf);
    if (p->file != NULL) {
        fclose(p->file);
    }
}

/* Reads the file through inih; returns 0 or -errno when it could not be read. */
static int parse_file(struct parser *p)
{
    char why[128]; /* strerror_r (GNU): strerror is not thread-safe, config_load must be */
    int rc;

    p->file = fopen(p->path, "re");
    if (p->file == NULL) {
        rc = -errno;
        add_error(p, 0, "file", "cannot be opened: %s", strerror_r(-rc, why, sizeof(why)));
        return rc;
    }
    rc = ini_parse_stream(read_line, p, on_key, p);
    if (p->read_errno != 0) {
        /* Whatever was parsed before a read error is incomplete: report the one cause. */
        for (size_t i = 0; i < p->n_errors; i++) {
            free(p->errors[i].text);
        }
        p->n_errors = 0;
        add_error(p, 0, "file", "cannot be read: %s", strerror_r(p->read_errno, why, sizeof(why)));
        return -p->read_errno;
    }
    if (rc == -2) {
        p->oom = true;
    } else if (rc > 0 && p->n_errors == 0) {
        add_error(p, rc, "line", "cannot be parsed"); /* read_line() should have caught it */
    }
    return 0;
}

static int load(const char *path, bool consul_only, struct config **out, struct config_errors *errs)
{
    struct parser p = {.path = path, .current = CURRENT_NONE, .consul_only = consul_only};
    int rc;

    *out = NULL;
    p.cfg = calloc(1, sizeof(*p.cfg));
    if (p.cfg == NULL || (p.cfg->path = strdup(path)) == NULL) {
        free(p.cfg);
        return -ENOMEM;
    }
    apply_defaults(&p, SECTION_GLOBAL, p.cfg);
    apply_defaults(&p, SECTION_CONSUL, &p.cfg->consul);
    apply_defaults(&p, SECTION_REGISTRATION, &p.cfg->registration);
    rc = parse_file(&p);
    if (rc == 0) {
        validate(&p);
        rc = p.oom ? -ENOMEM : p.n_errors != 0 ? -EINVAL : 0;
    }
    errors_hand_over(&p, errs); /* rc is not 0 whenever there is anything to hand over */
    if (rc == 0) {
        *out = p.cfg;
    } else {
        config_destroy(p.cfg);
    }
    parser_free(&p);
    return rc;
}

int config_load(const char *path, struct config **out, struct config_errors *errs)
{
    return load(path, false, out, errs);
}

int config_load_consul(const char *path, struct config **out, struct config_errors *errs)
{
    return load(path, true, out, errs);
}

static void consul_free(struct config_consul *c)
{
    char *const strings[] = {c->address, c->token,     c->token_file, c->datacenter,     c->ca_file,
                             c->ca_path, c->cert_file, c->key_file,   c->tls_server_name};

    for (size_t i = 0; i < N_NAMES(strings); i++) {
        free(strings[i]);
    }
}

void config_destroy(struct config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    consul_free(&cfg->consul);
    list_free(&cfg->registration.tags);
    list_free(&cfg->registration.meta);
    list_free(&cfg->registration.listeners);
    for (size_t i = 0; i < cfg->n_services; i++) {
        free(cfg->services[i].backends);
        list_free(&cfg->services[i].consul_tags);
    }
    free(cfg->services);
    free(cfg->listeners);
    free(cfg->path);
    free(cfg);
}

void config_errors_clear(struct config_errors *errs)
{
    if (errs == NULL) {
        return;
    }
    for (size_t i = 0; i < errs->n; i++) {
        free(errs->lines[i]);
    }
    free(errs->lines);
    errs->lines = NULL;
    errs->n = 0;
}
