/* Consul health/service JSON -> instance list (cJSON); pure functions, no I/O. */
#include "consul_parse.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WEIGHT_MAX 1000000 /* same cap as static backends; Consul itself stops at 65535 */

static const char *const health_names[CONSUL_HEALTH_COUNT] = {"passing", "warning", "critical",
                                                              "maintenance"};

const char *consul_health_name(enum consul_health h)
{
    return (unsigned)h < CONSUL_HEALTH_COUNT ? health_names[h] : "unknown";
}

enum consul_health consul_health_worse(enum consul_health a, enum consul_health b)
{
    return a > b ? a : b;
}

enum consul_health consul_check_health(const char *check_id, const char *status)
{
    static const char service_maint[] = "_service_maintenance:";

    if (check_id != NULL && (strcmp(check_id, "_node_maintenance") == 0 ||
                             strncmp(check_id, service_maint, sizeof(service_maint) - 1) == 0)) {
        return CONSUL_HEALTH_MAINTENANCE;
    }
    if (status != NULL && strcmp(status, "passing") == 0) {
        return CONSUL_HEALTH_PASSING;
    }
    if (status != NULL && strcmp(status, "warning") == 0) {
        return CONSUL_HEALTH_WARNING;
    }
    return CONSUL_HEALTH_CRITICAL; /* "critical", and whatever a future Consul may invent */
}

/* The string value of obj[key], or NULL when absent or not a string. */
static const char *json_str(const cJSON *obj, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsString(item) ? item->valuestring : NULL;
}

/* Every check of the entry that belongs to its node or to this service; no checks = passing,
 * as in Consul. Checks of another service id on the same node do not count. */
static enum consul_health entry_health(const cJSON *checks, const char *service_id)
{
    enum consul_health h = CONSUL_HEALTH_PASSING;
    const cJSON *check;

    if (checks != NULL && !cJSON_IsNull(checks) && !cJSON_IsArray(checks)) {
        return CONSUL_HEALTH_CRITICAL; /* health that cannot be read is no health */
    }
    cJSON_ArrayForEach(check, checks)
    {
        const char *owner;
        if (!cJSON_IsObject(check)) {
            h = consul_health_worse(h, CONSUL_HEALTH_CRITICAL);
            continue;
        }
        owner = json_str(check, "ServiceID");
        if (owner != NULL && owner[0] != '\0' && strcmp(owner, service_id) != 0) {
            continue;
        }
        h = consul_health_worse(
            h, consul_check_health(json_str(check, "CheckID"), json_str(check, "Status")));
    }
    return h;
}

/* Weights.Passing / Weights.Warning; 1 when absent (Consul's default). */
static uint32_t entry_weight(const cJSON *service, enum consul_health h)
{
    const cJSON *weights = cJSON_GetObjectItemCaseSensitive(service, "Weights");
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(
        weights, h == CONSUL_HEALTH_WARNING ? "Warning" : "Passing");

    if (!cJSON_IsNumber(w)) {
        return 1;
    }
    if (w->valuedouble <= 0) {
        return 0;
    }
    return w->valuedouble >= WEIGHT_MAX ? WEIGHT_MAX : (uint32_t)w->valuedouble;
}

/* "ip:port" or "[ip6]:port" from a bare IP and a JSON port. NULL or why not. */
static const char *entry_addr(const char *ip, const cJSON *port, struct net_addr *out)
{
    unsigned char buf[sizeof(struct in6_addr)];
    char text[NET_ADDR_MAX + 8];
    int v6;

    if (ip == NULL || ip[0] == '\0') {
        return "has neither Service.Address nor Node.Address";
    }
    v6 = inet_pton(AF_INET6, ip, buf) == 1;
    if (!v6 && inet_pton(AF_INET, ip, buf) != 1) {
        return "has an address that is not an IP (host names are not resolved)";
    }
    if (!cJSON_IsNumber(port) || port->valuedouble < 1 || port->valuedouble > 65535 ||
        port->valuedouble != (double)(int)port->valuedouble) {
        return "has no valid Service.Port";
    }
    snprintf(text, sizeof(text), v6 ? "[%s]:%d" : "%s:%d", ip, (int)port->valuedouble);
    return net_addr_parse(text, out) == NULL ? NULL : "has an unusable address";
}

/* Non-zero when the service's Tags hold every tag of the filter. */
static int entry_tagged(const cJSON *service, const struct consul_filter *f)
{
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(service, "Tags");

    for (size_t i = 0; i < f->n_tags; i++) {
        const cJSON *tag;
        int found = 0;
        cJSON_ArrayForEach(tag, tags)
        {
            found = found || (cJSON_IsString(tag) && strcmp(tag->valuestring, f->tags[i]) == 0);
        }
        if (!found) {
            return 0;
        }
    }
    return 1;
}

/* Id, address and health of one entry. NULL or why it cannot be used. */
static const char *entry_parse(const cJSON *entry, struct consul_instance *inst,
                               const cJSON **service_out)
{
    const cJSON *node = cJSON_GetObjectItemCaseSensitive(entry, "Node");
    const cJSON *service = cJSON_GetObjectItemCaseSensitive(entry, "Service");
    const char *node_name = json_str(node, "Node");
    const char *service_id = json_str(service, "ID");
    const char *address = json_str(service, "Address");

    if (!cJSON_IsObject(node) || !cJSON_IsObject(service)) {
        return "is not an object with Node and Service";
    }
    if (node_name == NULL || node_name[0] == '\0' || service_id == NULL || service_id[0] == '\0') {
        return "has no Node.Node or Service.ID";
    }
    if (strlen(node_name) + 1 + strlen(service_id) >= sizeof(inst->id)) {
        return "has a Node.Node + Service.ID longer than sluice keeps";
    }
    /* the length was checked above: build the id without snprintf's truncation games */
    size_t node_len = strlen(node_name);
    memcpy(inst->id, node_name, node_len);
    inst->id[node_len] = '/';
    memcpy(inst->id + node_len + 1, service_id, strlen(service_id) + 1);
    if (address == NULL || address[0] == '\0') {
        address = json_str(node, "Address");
    }
    *service_out = service;
    inst->health = entry_health(cJSON_GetObjectItemCaseSensitive(entry, "Checks"), service_id);
    return entry_addr(address, cJSON_GetObjectItemCaseSensitive(service, "Port"), &inst->addr);
}

static int instance_order(const void *a, const void *b)
{
    return strcmp(((const struct consul_instance *)a)->id, ((const struct consul_instance *)b)->id);
}

static int health_kept(enum consul_health h, enum consul_health_mode mode)
{
    if (h == CONSUL_HEALTH_PASSING) {
        return 1;
    }
    return h == CONSUL_HEALTH_WARNING && mode == CONSUL_HEALTH_MODE_PASSING_AND_WARNING;
}

/* Sorts by id and drops later duplicates (a broken answer listing one instance twice). */
static void instances_dedup(struct consul_parse_result *r)
{
    size_t kept = 0;

    qsort(r->inst, r->n, sizeof(*r->inst), instance_order);
    for (size_t i = 0; i < r->n; i++) {
        if (kept > 0 && strcmp(r->inst[kept - 1].id, r->inst[i].id) == 0) {
            if (r->invalid++ == 0) {
                snprintf(r->invalid_why, sizeof(r->invalid_why), "%.120s is listed twice",
                         r->inst[i].id);
            }
            continue;
        }
        r->inst[kept++] = r->inst[i];
    }
    r->n = kept;
}

/* Classifies one entry into r (the instance slot r->inst[r->n] is free). */
static void entry_take(const cJSON *entry, const struct consul_filter *f,
                       struct consul_parse_result *r)
{
    struct consul_instance *inst = &r->inst[r->n];
    const cJSON *service = NULL;
    const char *why = entry_parse(entry, inst, &service);

    if (why != NULL) {
        if (r->invalid++ == 0) {
            snprintf(r->invalid_why, sizeof(r->invalid_why), "entry %zu %s", r->entries, why);
        }
        return;
    }
    r->by_health[inst->health]++;
    if (!entry_tagged(service, f)) {
        r->untagged++;
        return;
    }
    if (health_kept(inst->health, f->mode)) {
        inst->weight = entry_weight(service, inst->health);
        r->n++;
    }
}

/* Non-zero when [from, to) holds only JSON whitespace. */
static int only_blanks(const char *from, const char *to)
{
    for (; from != NULL && from < to; from++) {
        if (*from != ' ' && *from != '\t' && *from != '\r' && *from != '\n') {
            return 0;
        }
    }
    return 1;
}

/* Why root (parsed from json up to end) is not an answer; NULL when it is one. */
static const char *answer_problem(const cJSON *root, const char *end, const char *json_end)
{
    if (root == NULL) {
        return "answer is not valid JSON";
    }
    if (!only_blanks(end, json_end)) {
        return "answer has data after its JSON value"; /* "[]]" is no answer */
    }
    return cJSON_IsArray(root) ? NULL : "answer is JSON but not an array";
}

int consul_parse_health(const char *json, size_t len, const struct consul_filter *filter,
                        struct consul_parse_result *out, char *err, size_t err_len)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    const char *why = answer_problem(root, end, json + len);
    const cJSON *entry;

    memset(out, 0, sizeof(*out));
    if (why != NULL) {
        snprintf(err, err_len, "%s (near byte %zu of %zu)", why,
                 end != NULL && end >= json ? (size_t)(end - json) : 0, len);
        cJSON_Delete(root);
        return -EBADMSG;
    }
    out->inst = calloc((size_t)cJSON_GetArraySize(root) + 1, sizeof(*out->inst));
    if (out->inst == NULL) {
        cJSON_Delete(root);
        return -ENOMEM;
    }
    cJSON_ArrayForEach(entry, root)
    {
        entry_take(entry, filter, out);
        out->entries++;
    }
    cJSON_Delete(root);
    instances_dedup(out);
    return 0;
}

void consul_parse_result_free(struct consul_parse_result *r)
{
    if (r == NULL) {
        return;
    }
    free(r->inst);
    r->inst = NULL;
    r->n = 0;
}

int consul_instances_equal(const struct consul_instance *a, size_t na,
                           const struct consul_instance *b, size_t nb)
{
    if (na != nb) {
        return 0;
    }
    for (size_t i = 0; i < na; i++) {
        if (a[i].weight != b[i].weight || strcmp(a[i].id, b[i].id) != 0 ||
            strcmp(a[i].addr.text, b[i].addr.text) != 0) {
            return 0;
        }
    }
    return 1;
}

int consul_parse_index(const char *text, size_t len, uint64_t *out)
{
    uint64_t n = 0;
    size_t i = 0, digits = 0;

    while (i < len && (text[i] == ' ' || text[i] == '\t')) {
        i++;
    }
    for (; i < len && text[i] >= '0' && text[i] <= '9'; i++, digits++) {
        uint64_t d = (uint64_t)(text[i] - '0');
        if (n > (UINT64_MAX - d) / 10) {
            return -EINVAL;
        }
        n = n * 10 + d;
    }
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n')) {
        i++;
    }
    if (digits == 0 || i != len) {
        return -EINVAL;
    }
    *out = n;
    return 0;
}

int consul_parse_checks_bound(const char *json, size_t len, const char *service_id,
                              const char *const *check_ids, size_t n, char *missing,
                              size_t missing_len)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    int ok = cJSON_IsObject(root);

    if (!ok) {
        snprintf(missing, missing_len, "(the check list is not a JSON object)");
    }
    for (size_t i = 0; ok && i < n; i++) {
        const cJSON *check = cJSON_GetObjectItemCaseSensitive(root, check_ids[i]);
        const cJSON *owner = cJSON_GetObjectItemCaseSensitive(check, "ServiceID");
        if (!cJSON_IsString(owner) || strcmp(owner->valuestring, service_id) != 0) {
            snprintf(missing, missing_len, "%s", check_ids[i]);
            ok = 0;
        }
    }
    cJSON_Delete(root);
    return ok;
}
