/* Value grammar and the setters every subsystem's key rows share: numbers, durations, sizes,
 * booleans, strings, paths, names, lists and addresses. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "inifile.h"

#define STRING_MAX 4096 /* longest string value (paths, tokens, addresses) */
#define KIB        1024ULL
#define MIB        (1024ULL * 1024ULL)

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

int ini_digits(const char *text, uint64_t *out, const char **end)
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
const char *ini_parse_duration(const char *text, uint64_t *ms)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 60 * 60 * 1000}};
    const char *end;
    uint64_t n;
    int rc = ini_digits(text, &n, &end);

    if (rc == -ERANGE) {
        return "is too large";
    }
    if (rc < 0) {
        return "is not a duration (use ms, s, m, h)";
    }
    if (*end == '\0') {
        if (n != 0) {
            return "needs a unit (ms, s, m, h)";
        }
        *ms = 0;
        return NULL;
    }
    for (size_t i = 0; i < N_OF(units); i++) {
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

int ini_name_index(const char *const *names, size_t n, const char *text)
{
    for (size_t i = 0; text != NULL && i < n; i++) {
        if (strcmp(names[i], text) == 0) {
            return (int)i;
        }
    }
    return -1;
}

int ini_bool(const char *value)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};

    if (ini_name_index(yes, N_OF(yes), value) >= 0) {
        return 1;
    }
    return ini_name_index(no, N_OF(no), value) >= 0 ? 0 : -1;
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
static const char *number_parse(const struct ini_key *key, const char *value, uint64_t *n,
                                char *msg)
{
    const char *end;
    int rc = ini_digits(value, n, &end);

    if (rc == -EINVAL || *end != '\0') {
        return ini_phrase(msg, "\"%s\" is not a number", value);
    }
    if (rc == -ERANGE || *n < key->min || *n > key->max) {
        return ini_phrase(msg, "\"%s\" is out of range (%llu..%llu)", value,
                          (unsigned long long)key->min, (unsigned long long)key->max);
    }
    return NULL;
}

const char *ini_set_u32(void *field, const struct ini_key *key, const char *value, char *msg)
{
    uint64_t n;
    const char *why = number_parse(key, value, &n, msg);

    if (why == NULL) {
        *(uint32_t *)field = (uint32_t)n;
    }
    return why;
}

const char *ini_set_int(void *field, const struct ini_key *key, const char *value, char *msg)
{
    uint64_t n;
    const char *why = number_parse(key, value, &n, msg);

    if (why == NULL) {
        *(int *)field = (int)n;
    }
    return why;
}

const char *ini_set_duration(void *field, const struct ini_key *key, const char *value, char *msg)
{
    uint64_t ms;
    const char *why = ini_parse_duration(value, &ms);

    if (why != NULL) {
        return ini_phrase(msg, "\"%s\" %s", value, why);
    }
    if (ms < key->min) {
        return ini_phrase(msg, "\"%s\" is too short (at least %llums)", value,
                          (unsigned long long)key->min);
    }
    if (ms > key->max) {
        return ini_phrase(msg, "\"%s\" is too long (at most %llums)", value,
                          (unsigned long long)key->max);
    }
    *(uint64_t *)field = ms;
    return NULL;
}

/* Bytes, or a k / m suffix (either case) for KiB / MiB. */
const char *ini_set_size(void *field, const struct ini_key *key, const char *value, char *msg)
{
    char lo[24], hi[24];
    const char *end;
    uint64_t n, unit = 1;
    int rc = ini_digits(value, &n, &end);

    if (*end == 'k' || *end == 'K') {
        unit = KIB;
    } else if (*end == 'm' || *end == 'M') {
        unit = MIB;
    }
    if (rc == -EINVAL || end[unit == 1 ? 0 : 1] != '\0') {
        return ini_phrase(msg, "\"%s\" is not a size (bytes, or a k or m suffix)", value);
    }
    if (rc == -ERANGE || n > UINT64_MAX / unit || n * unit < key->min || n * unit > key->max) {
        return ini_phrase(msg, "\"%s\" is out of range (%s..%s)", value, size_text(key->min, lo),
                          size_text(key->max, hi));
    }
    *(uint32_t *)field = (uint32_t)(n * unit);
    return NULL;
}

const char *ini_set_bool(void *field, const struct ini_key *key, const char *value, char *msg)
{
    int b = ini_bool(value);

    (void)key;
    if (b < 0) {
        return ini_phrase(msg, "\"%s\" is not a boolean (use true or false)", value);
    }
    *(int *)field = b;
    return NULL;
}

const char *ini_set_flag(void *field, const struct ini_key *key, const char *value, char *msg)
{
    int b = ini_bool(value);

    (void)key;
    if (b < 0) {
        return ini_phrase(msg, "\"%s\" is not a boolean (use true or false)", value);
    }
    *(enum ini_flag *)field = b ? INI_FLAG_ON : INI_FLAG_OFF;
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

const char *ini_set_string(void *field, const struct ini_key *key, const char *value, char *msg)
{
    const char *why = key->check != NULL ? key->check(value) : NULL;
    char *copy;

    if (why != NULL) {
        return ini_phrase(msg, "\"%s\" %s", value, why);
    }
    if ((why = string_check(value)) != NULL) {
        return ini_phrase(msg, "%s", why);
    }
    copy = strdup(value);
    if (copy == NULL) {
        return ini_phrase_oom;
    }
    *(char **)field = copy;
    return NULL;
}

void ini_release_string(void *field)
{
    free(*(char **)field);
    *(char **)field = NULL;
}

/* Opens path for reading without blocking (a FIFO with no writer would hang open() and read())
 * and fills *st. Returns the fd, or -1 with a phrase in msg. */
static int path_open(const char *path, struct stat *st, char *msg)
{
    char why[128];
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);

    if (fd < 0 || fstat(fd, st) != 0) {
        ini_phrase(msg, "cannot be read: %s", strerror_r(errno, why, sizeof(why)));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

/* Reads exactly len bytes of a regular file; EOF before that means it shrank while read. */
static const char *read_all(int fd, char *buf, size_t len, char *msg)
{
    char why[128];
    size_t got = 0;

    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return ini_phrase(msg, "cannot be read: %s",
                              n == 0 ? "it changed while being read"
                                     : strerror_r(errno, why, sizeof(why)));
        }
        got += (size_t)n;
    }
    return NULL;
}

const char *ini_read_file(const char *path, size_t max, char **data, size_t *len, unsigned *mode,
                          char *msg)
{
    struct stat st;
    const char *why = NULL;
    int fd = path_open(path, &st, msg), err = errno;

    *data = NULL;
    if (fd < 0) {
        errno = err;
        return msg;
    }
    if (!S_ISREG(st.st_mode)) {
        err = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        why = ini_phrase(msg, "is not a regular file");
    } else if ((uint64_t)st.st_size > max) {
        err = EFBIG;
        why = ini_phrase(msg, "is larger than %zu bytes", max);
    } else if ((*data = malloc((size_t)st.st_size + 1)) == NULL) {
        err = ENOMEM;
        why = ini_phrase(msg, "cannot be read: %s", "out of memory");
    } else if ((why = read_all(fd, *data, (size_t)st.st_size, msg)) != NULL) {
        err = EIO;
    } else {
        (*data)[st.st_size] = '\0';
        *len = (size_t)st.st_size;
        if (mode != NULL) {
            *mode = (unsigned)st.st_mode & 07777;
        }
    }
    close(fd);
    if (why != NULL) {
        free(*data);
        *data = NULL;
    }
    errno = err;
    return why;
}

/* A regular file (or, with key->max set, a directory) that must be readable now. */
const char *ini_set_path(void *field, const struct ini_key *key, const char *value, char *msg)
{
    char why[INI_PHRASE_MAX];
    struct stat st;
    int fd = path_open(value, &st, why);

    if (fd < 0) {
        return ini_phrase(msg, "\"%s\" %s", value, why);
    }
    close(fd);
    if (key->max != 0 && !S_ISDIR(st.st_mode)) {
        return ini_phrase(msg, "\"%s\" is not a directory", value);
    }
    if (key->max == 0 && S_ISDIR(st.st_mode)) {
        return ini_phrase(msg, "\"%s\" is a directory, not a file", value);
    }
    if (key->max == 0 && !S_ISREG(st.st_mode)) {
        return ini_phrase(msg, "\"%s\" is not a regular file", value);
    }
    return ini_set_string(field, key, value, msg);
}

/* A reference to a named section; whether it exists is checked once the file is read. */
const char *ini_set_name(void *field, const struct ini_key *key, const char *value, char *msg)
{
    const char *why = ini_name_check(value);

    (void)key;
    if (why != NULL) {
        return ini_phrase(msg, "\"%s\" is not a service name: %s", value, why);
    }
    memcpy(field, value, strlen(value) + 1);
    return NULL;
}

/* A name such as a datacenter's: same rules as section names. */
const char *ini_set_label(void *field, const struct ini_key *key, const char *value, char *msg)
{
    const char *why = ini_name_check(value);

    (void)key;
    if (why != NULL) {
        return ini_phrase(msg, "\"%s\" is not valid: %s", value, why);
    }
    memcpy(field, value, strlen(value) + 1);
    return NULL;
}

void ini_list_free(struct ini_list *list)
{
    for (size_t i = 0; i < list->n; i++) {
        free(list->items[i]);
    }
    free(list->items);
    list->items = NULL;
    list->n = 0;
}

void ini_release_list(void *field)
{
    ini_list_free(field);
}

/* Appends a copy of the n bytes at text. */
static const char *list_push(struct ini_list *list, const char *text, size_t n)
{
    char **grown = realloc(list->items, (list->n + 1) * sizeof(*grown));

    if (grown == NULL) {
        return ini_phrase_oom;
    }
    list->items = grown;
    list->items[list->n] = strndup(text, n);
    if (list->items[list->n] == NULL) {
        return ini_phrase_oom;
    }
    list->n++;
    return NULL;
}

/* Fills list from "a, b, c"; items are trimmed, non-empty, unique and pass key->check. */
static const char *list_parse(const struct ini_key *key, const char *value, struct ini_list *list,
                              char *msg)
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
            return ini_phrase(msg, "entry %zu is empty", list->n + 1);
        }
        if ((why = list_push(list, start, n)) != NULL) {
            return why;
        }
        const char *item = list->items[list->n - 1];
        why = key->check != NULL ? key->check(item) : string_check(item);
        if (why != NULL) {
            return ini_phrase(msg, "entry \"%s\" %s", item, why);
        }
        for (size_t i = 0; i + 1 < list->n; i++) {
            if (strcmp(list->items[i], item) == 0) {
                return ini_phrase(msg, "\"%s\" is listed twice", list->items[i]);
            }
        }
        s += len;
        if (*s == '\0') {
            return NULL;
        }
    }
}

const char *ini_set_list(void *field, const struct ini_key *key, const char *value, char *msg)
{
    struct ini_list list = {0};
    const char *why = list_parse(key, value, &list, msg);

    if (why == NULL && key->max != 0 && list.n > key->max) {
        why =
            ini_phrase(msg, "has %zu entries (at most %llu)", list.n, (unsigned long long)key->max);
    }
    if (why != NULL) {
        ini_list_free(&list);
        return why;
    }
    *(struct ini_list *)field = list;
    return NULL;
}

const char *ini_set_addr(void *field, const struct ini_key *key, const char *value, char *msg)
{
    const char *why = net_addr_parse(value, field);

    (void)key;
    return why != NULL ? ini_phrase(msg, "\"%s\": %s", value, why) : NULL;
}

/* A numeric IPv4 or IPv6 address without a port, stored as text (char[NET_ADDR_MAX]). */
const char *ini_set_ip(void *field, const struct ini_key *key, const char *value, char *msg)
{
    unsigned char buf[sizeof(struct in6_addr)];

    (void)key;
    if (inet_pton(AF_INET, value, buf) != 1 && inet_pton(AF_INET6, value, buf) != 1) {
        return ini_phrase(msg, "\"%s\" is not an IP address (host names are not resolved)", value);
    }
    if (strcmp(value, "0.0.0.0") == 0 || strcmp(value, "::") == 0) {
        return ini_phrase(msg, "\"%s\" cannot be reached by anyone; name the address to advertise",
                          value);
    }
    snprintf(field, NET_ADDR_MAX, "%s", value);
    return NULL;
}

const char *ini_set_enum(void *field, const struct ini_key *key, const char *value, char *msg)
{
    char words[256];
    size_t used = 0;

    for (const struct ini_choice *c = key->choices; c->word != NULL; c++) {
        if (strcmp(c->word, value) == 0) {
            *(int *)field = c->value;
            return NULL;
        }
    }
    words[0] = '\0';
    for (const struct ini_choice *c = key->choices; c->word != NULL && used < sizeof(words); c++)
        used += (size_t)snprintf(words + used, sizeof(words) - used, "%s%s",
                                 c == key->choices ? "" : ", ", c->word);
    return ini_phrase(msg, "\"%s\" is not a %s (use %s)", value, key->noun, words);
}

/* --- values as text, for messages about what changed -------------------------------------- */

/* A duration the way a config writes it: "2s", "5m", "1500ms", "0"; only the units
 * ini_parse_duration reads, so the text can be pasted back ("24h", never "1d"). */
static void duration_text(uint64_t ms, char *out, size_t len)
{
    static const struct {
        uint64_t ms;
        const char *unit;
    } units[] = {{3600000, "h"}, {60000, "m"}, {1000, "s"}};

    for (size_t i = 0; i < N_OF(units); i++) {
        if (ms != 0 && ms % units[i].ms == 0) {
            snprintf(out, len, "%llu%s", (unsigned long long)(ms / units[i].ms), units[i].unit);
            return;
        }
    }
    snprintf(out, len, ms == 0 ? "0" : "%llums", (unsigned long long)ms);
}

/* "a, b, c", cut at len; "(none)" when empty. */
static void list_text(const struct ini_list *list, char *out, size_t len)
{
    size_t used = 0;

    snprintf(out, len, "%s", list->n == 0 ? "(none)" : "");
    for (size_t i = 0; i < list->n && used < len; i++)
        used +=
            (size_t)snprintf(out + used, len - used, "%s%s", i == 0 ? "" : ", ", list->items[i]);
}

static const char *enum_word(const struct ini_key *key, int value)
{
    for (const struct ini_choice *c = key->choices; c->word != NULL; c++)
        if (c->value == value)
            return c->word;
    return "?";
}

int ini_value_text(const struct ini_key *key, const void *conf, char *out, size_t len)
{
    const char *f = (const char *)conf + key->offset;
    char buf[24];

    if (key->secret)
        snprintf(out, len, "(secret)");
    else if (key->set == ini_set_u32)
        snprintf(out, len, "%u", *(const uint32_t *)f);
    else if (key->set == ini_set_int)
        snprintf(out, len, "%d", *(const int *)f);
    else if (key->set == ini_set_size)
        snprintf(out, len, "%s", size_text(*(const uint32_t *)f, buf));
    else if (key->set == ini_set_duration)
        duration_text(*(const uint64_t *)f, out, len);
    else if (key->set == ini_set_bool)
        snprintf(out, len, "%s", *(const int *)f ? "on" : "off");
    else if (key->set == ini_set_flag)
        snprintf(out, len, "%s", *(const enum ini_flag *)f == INI_FLAG_ON ? "on" : "off");
    else if (key->set == ini_set_string || key->set == ini_set_path)
        snprintf(out, len, "%s", *(char *const *)f != NULL ? *(char *const *)f : "(none)");
    else if (key->set == ini_set_name || key->set == ini_set_label || key->set == ini_set_ip)
        snprintf(out, len, "%s", f);
    else if (key->set == ini_set_addr)
        snprintf(out, len, "%s", ((const struct net_addr *)f)->text);
    else if (key->set == ini_set_enum)
        snprintf(out, len, "%s", enum_word(key, *(const int *)f));
    else if (key->set == ini_set_list)
        list_text((const struct ini_list *)f, out, len);
    else
        return -ENOTSUP;
    return 0;
}

size_t ini_keys_diff(const struct ini_key *keys, const void *a, const void *b,
                     ini_change_fn changed, void *ctx)
{
    char from[256], to[256];
    size_t n = 0;

    for (const struct ini_key *k = keys; k->name != NULL; k++) {
        if (ini_value_text(k, a, from, sizeof(from)) != 0 ||
            ini_value_text(k, b, to, sizeof(to)) != 0 || strcmp(from, to) == 0)
            continue;
        changed(ctx, k->name, from, to);
        n++;
    }
    return n;
}
