/* The JSON instance file, DNS answer TTLs and instance-list order, as pure functions. */
#include "registry_parse.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

static int fail(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

unsigned registry_line_of(const char *text, size_t len, size_t pos)
{
    unsigned line = 1;

    for (size_t i = 0; i < pos && i < len; i++) {
        line += text[i] == '\n';
    }
    return line;
}

/* One {"address", "weight", "id"} object into e; k is its 1-based position for messages. */
static int entry_parse(const cJSON *item, size_t k, struct registry_entry *e, char *err,
                       size_t err_len)
{
    const cJSON *addr = cJSON_GetObjectItemCaseSensitive(item, "address");
    const cJSON *weight = cJSON_GetObjectItemCaseSensitive(item, "weight");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(item, "id");
    const char *why;

    if (!cJSON_IsObject(item)) {
        return fail(err, err_len, "entry %zu: is not an object", k);
    }
    if (!cJSON_IsString(addr)) {
        return fail(err, err_len, "entry %zu: needs \"address\": \"IP:PORT\"", k);
    }
    if ((why = net_addr_parse(addr->valuestring, &e->addr)) != NULL) {
        return fail(err, err_len, "entry %zu: address \"%.64s\": %s", k, addr->valuestring, why);
    }
    e->weight = 1;
    if (weight != NULL) {
        double w = cJSON_IsNumber(weight) ? weight->valuedouble : -1;
        if (w < 0 || w > REGISTRY_WEIGHT_MAX || (double)(uint32_t)w != w) { /* whole numbers */
            return fail(err, err_len, "entry %zu: weight is not a whole number 0..%d", k,
                        REGISTRY_WEIGHT_MAX);
        }
        e->weight = (uint32_t)w;
    }
    if (id != NULL && (!cJSON_IsString(id) || id->valuestring[0] == '\0' ||
                       strlen(id->valuestring) >= sizeof(e->id))) {
        return fail(err, err_len, "entry %zu: id is not a string of 1..%zu characters", k,
                    sizeof(e->id) - 1);
    }
    snprintf(e->id, sizeof(e->id), "%s", id != NULL ? id->valuestring : e->addr.text);
    return 0;
}

static int entries_parse(const cJSON *root, struct registry_entry **out, size_t *n, char *err,
                         size_t err_len)
{
    size_t count = (size_t)cJSON_GetArraySize(root), k = 0;
    struct registry_entry *list = calloc(count ? count : 1, sizeof(*list));
    const cJSON *item;
    int rc = 0;

    if (list == NULL) {
        return -ENOMEM;
    }
    cJSON_ArrayForEach(item, root)
    {
        if ((rc = entry_parse(item, k + 1, &list[k], err, err_len)) != 0) {
            free(list);
            return rc;
        }
        k++;
    }
    if ((rc = registry_entries_sort(list, k, err, err_len)) != 0) {
        free(list);
        return rc;
    }
    *out = list;
    *n = k;
    return 0;
}

int registry_file_parse(const char *text, size_t len, struct registry_entry **out, size_t *n,
                        char *err, size_t err_len)
{
    const char *end = NULL;
    cJSON *root;
    int rc;

    *out = NULL;
    *n = 0;
    if (len == 0) {
        return fail(err, err_len, "line 1: the file is empty");
    }
    root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (root == NULL) {
        size_t pos = end != NULL && end >= text ? (size_t)(end - text) : 0;
        return fail(err, err_len, "line %u: not valid JSON", registry_line_of(text, len, pos));
    }
    if (!cJSON_IsArray(root)) {
        cJSON_Delete(root);
        return fail(err, err_len, "line 1: is not a JSON list of instances");
    }
    rc = entries_parse(root, out, n, err, err_len);
    cJSON_Delete(root);
    return rc;
}

static int by_id(const void *a, const void *b)
{
    return strcmp(((const struct registry_entry *)a)->id, ((const struct registry_entry *)b)->id);
}

int registry_entries_sort(struct registry_entry *list, size_t n, char *err, size_t err_len)
{
    if (n > 1) {
        qsort(list, n, sizeof(*list), by_id);
    }
    for (size_t i = 0; i + 1 < n; i++) {
        if (strcmp(list[i].id, list[i + 1].id) == 0) {
            return fail(err, err_len, "id \"%.64s\" is listed twice", list[i].id);
        }
    }
    return 0;
}

/* Skips a (possibly compressed) name at *pos; 0, or -1 past the end. */
static int skip_name(const unsigned char *msg, size_t len, size_t *pos)
{
    while (*pos < len) {
        unsigned char c = msg[*pos];
        if (c == 0) {
            *pos += 1;
            return 0;
        }
        if ((c & 0xC0) == 0xC0) {
            *pos += 2; /* a pointer ends the name */
            return *pos <= len ? 0 : -1;
        }
        *pos += 1u + c;
    }
    return -1;
}

static unsigned get16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

uint32_t registry_dns_answer_ttl(const unsigned char *msg, size_t len)
{
    uint32_t ttl = UINT32_MAX;
    size_t pos = 12;

    if (len < 12) {
        return ttl;
    }
    unsigned qd = get16(msg + 4), an = get16(msg + 6);
    for (unsigned i = 0; i < qd; i++) {
        if (skip_name(msg, len, &pos) != 0 || (pos += 4) > len) {
            return UINT32_MAX;
        }
    }
    for (unsigned i = 0; i < an; i++) {
        if (skip_name(msg, len, &pos) != 0 || pos + 10 > len) {
            return ttl;
        }
        uint32_t t = (uint32_t)get16(msg + pos + 4) << 16 | get16(msg + pos + 6);
        ttl = t < ttl ? t : ttl;
        pos += 10 + get16(msg + pos + 8);
    }
    return ttl;
}
