/* Key rows and checks of [consul], the Consul keys of [service:NAME] and [registration]. */
#include "consul_conf.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "consul.h"

#define META_MAX  64 /* Consul accepts at most 64 meta pairs */
#define MINUTE_MS (60ULL * 1000ULL)
#define DAY_MS    (24ULL * 60ULL * MINUTE_MS)

static const char *const health_names[] = {"passing_and_warning", "passing"};

const char *consul_health_mode_name(enum consul_health_mode mode)
{
    if ((size_t)mode >= sizeof(health_names) / sizeof(health_names[0])) {
        return "unknown";
    }
    return health_names[mode];
}

_Static_assert(sizeof(enum consul_health_mode) == sizeof(int), "ini_set_enum stores an int");

static const struct ini_choice health_words[] = {
    {"passing", CONSUL_HEALTH_MODE_PASSING},
    {"passing_and_warning", CONSUL_HEALTH_MODE_PASSING_AND_WARNING},
    {NULL, 0}};

/* host:port with an optional http://, https:// or unix:// prefix; host names are fine here
 * (libcurl resolves them), but the parts must be there. */
static const char *address_check(const char *value)
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
    if (strchr(rest, '@') != NULL) {
        /* Credentials in the URL would be sent and shown wherever the address is. */
        return "must not hold credentials (user:password@): use token or token_file";
    }
    if (*rest == '\0' || *rest == ':' || strchr(rest, '/') != NULL || strchr(rest, ' ') != NULL) {
        return "is not HOST:PORT (with an optional http://, https:// or unix:// prefix)";
    }
    colon = strrchr(rest, ':');
    if (colon != NULL && (rest[0] != '[' || colon > strchr(rest, ']'))) {
        uint16_t port;
        return net_port_parse(colon + 1, &port);
    }
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

#define CONSUL(field) offsetof(struct consul_conf, field)
#define WATCH(field)  offsetof(struct consul_watch_conf, field)
#define REG(field)    offsetof(struct registration_conf, field)
#define STR           .release = ini_release_string
#define LIST          .release = ini_release_list

/* For set_path, max 1 asks for a directory; for lists, max caps the entries. */
const struct ini_key consul_keys[] = {
    INI_KEY("address", CONSUL(address), ini_set_string, 0, 0, NULL, false, STR,
            .check = address_check),
    INI_KEY("token", CONSUL(token), ini_set_string, 0, 0, NULL, false, STR, .secret = true),
    INI_KEY("token_file", CONSUL(token_file), ini_set_path, 0, 0, NULL, false, STR),
    INI_KEY("datacenter", CONSUL(datacenter), ini_set_string, 0, 0, NULL, false, STR),
    INI_KEY("ca_file", CONSUL(ca_file), ini_set_path, 0, 0, NULL, false, STR),
    INI_KEY("ca_path", CONSUL(ca_path), ini_set_path, 0, 1, NULL, false, STR),
    INI_KEY("cert_file", CONSUL(cert_file), ini_set_path, 0, 0, NULL, false, STR),
    INI_KEY("key_file", CONSUL(key_file), ini_set_path, 0, 0, NULL, false, STR),
    INI_KEY("tls_server_name", CONSUL(tls_server_name), ini_set_string, 0, 0, NULL, false, STR),
    INI_KEY("tls_skip_verify", CONSUL(tls_skip_verify), ini_set_flag, 0, 0, NULL, false),
    INI_KEY("wait", CONSUL(wait_ms), ini_set_duration, 1000, CONSUL_WAIT_MAX_MS, "55s", false),
    INI_KEY("stale", CONSUL(stale), ini_set_bool, 0, 0, "false", false),
    INI_KEY("max_stale", CONSUL(max_stale_ms), ini_set_duration, 1, 24 * 60 * MINUTE_MS, NULL,
            false),
    INI_KEY("min_query_interval", CONSUL(min_query_interval_ms), ini_set_duration, 0,
            CONSUL_MIN_QUERY_INTERVAL_MAX_MS, "1s", false),
    INI_KEY("retry_min", CONSUL(retry_min_ms), ini_set_duration, 10, 10 * MINUTE_MS, "250ms",
            false),
    INI_KEY("retry_max", CONSUL(retry_max_ms), ini_set_duration, 10, 60 * MINUTE_MS, "1m", false),
    INI_KEY("timeout", CONSUL(timeout_ms), ini_set_duration, 1000, 10 * MINUTE_MS, "10s", false),
    {.name = NULL},
};

const struct ini_key consul_watch_keys[] = {
    INI_KEY("consul_service", WATCH(service), ini_set_name, 0, 0, NULL, false),
    INI_KEY("consul_tags", WATCH(tags), ini_set_list, 0, 64, NULL, false, LIST),
    INI_KEY("consul_datacenter", WATCH(datacenter), ini_set_label, 0, 0, NULL, false),
    INI_KEY("health", WATCH(health), ini_set_enum, 0, 0, "passing_and_warning", false,
            .choices = health_words, .noun = "health mode"),
    {.name = NULL},
};

const struct ini_key registration_keys[] = {
    INI_KEY("name", REG(name), ini_set_name, 0, 0, NULL, false),
    INI_KEY("tags", REG(tags), ini_set_list, 0, 64, NULL, false, LIST),
    INI_KEY("meta", REG(meta), ini_set_list, 0, META_MAX, NULL, false, LIST, .check = meta_check),
    INI_KEY("address", REG(address), ini_set_ip, 0, 0, NULL, false),
    INI_KEY("listeners", REG(listeners), ini_set_list, 0, 0, NULL, false, LIST,
            .check = ini_name_check),
    INI_KEY("check_interval", REG(check_interval_ms), ini_set_duration,
            REGISTRATION_INTERVAL_MIN_MS, DAY_MS, "10s", false),
    INI_KEY("check_timeout", REG(check_timeout_ms), ini_set_duration, 1, 60 * MINUTE_MS, "5s",
            false),
    INI_KEY("deregister_critical_after", REG(deregister_after_ms), ini_set_duration, 0, 7 * DAY_MS,
            "1m", false),
    INI_KEY("anti_entropy", REG(anti_entropy_ms), ini_set_duration, 1000, DAY_MS, "30s", false),
    INI_KEY("fleet", REG(fleet), ini_set_name, 0, 0, NULL, false),
    INI_KEY("fleet_id", REG(fleet_id), ini_set_label, 0, 0, NULL, false),
    INI_KEY("fleet_address", REG(fleet_address), ini_set_ip, 0, 0, NULL, false),
    INI_KEY("fleet_port", REG(fleet_port), ini_set_int, 1, 65535, NULL, false),
    INI_KEY("fleet_tags", REG(fleet_tags), ini_set_list, 0, 64, NULL, false, LIST),
    {.name = NULL},
};

bool registration_conf_chooses(const struct registration_conf *r, const char *listener)
{
    for (size_t i = 0; i < r->listeners.n; i++) {
        if (strcmp(r->listeners.items[i], listener) == 0) {
            return true;
        }
    }
    return r->listeners.n == 0 && r->fleet[0] == '\0';
}

/* The fleet's health check is the admin server's /healthz, so fleet needs [admin]. That section
 * belongs to the daemon; the INI engine lets us look for its header without knowing its keys. */
static bool file_has_admin(const struct ini_file *f)
{
    for (size_t i = 0; i < ini_section_count(f); i++) {
        if (strcmp(ini_section_header(ini_section_at(f, i)), "[admin]") == 0) {
            return true;
        }
    }
    return false;
}

static void fleet_check(struct ini_file *f, const struct ini_section *sec,
                        const struct registration_conf *r)
{
    static const char *const fleet_only[] = {"fleet_id", "fleet_address", "fleet_port",
                                             "fleet_tags"};

    for (size_t i = 0; r->fleet[0] == '\0' && i < sizeof(fleet_only) / sizeof(fleet_only[0]); i++) {
        int line = ini_key_line(sec, fleet_only[i]);
        if (line != 0) {
            ini_error(f, line, fleet_only[i], "only applies with fleet = NAME");
        }
    }
    if (r->fleet[0] != '\0' && !file_has_admin(f)) {
        ini_error(f, ini_key_line(sec, "fleet"), "fleet",
                  "needs an [admin] section: its /healthz is the fleet's health check");
    }
}

void consul_conf_check(struct ini_file *f, const struct ini_section *sec, void *conf)
{
    const struct consul_conf *c = conf;

    if (c->token != NULL && c->token_file != NULL) {
        ini_error(f, ini_key_line(sec, "token_file"), "token_file",
                  "token is already set (line %d); use one of them", ini_key_line(sec, "token"));
    }
    if (c->retry_min_ms > c->retry_max_ms) {
        bool max_set = ini_key_line(sec, "retry_max") != 0;
        ini_error(f, ini_key_line(sec, max_set ? "retry_max" : "retry_min"),
                  max_set ? "retry_max" : "retry_min", "%s",
                  max_set ? "is shorter than retry_min" : "is longer than retry_max");
    }
    if ((c->cert_file == NULL) != (c->key_file == NULL)) {
        const char *set = c->cert_file != NULL ? "cert_file" : "key_file";
        ini_error(f, ini_key_line(sec, set), set, "needs %s as well (mutual TLS takes both)",
                  c->cert_file != NULL ? "key_file" : "cert_file");
    }
    if (c->max_stale_ms != 0 && !c->stale) {
        /* without ?stale the leader answers and LastContact is always 0: the bound would be
         * silently useless */
        ini_error(f, ini_key_line(sec, "max_stale"), "max_stale",
                  "only applies to stale reads: set stale = true as well");
    }
}

const char *registration_interval_error(uint64_t interval_ms)
{
    return interval_ms < REGISTRATION_INTERVAL_MIN_MS ? "is shorter than 1s" : NULL;
}

const char *registration_deregister_error(uint64_t deregister_after_ms)
{
    return deregister_after_ms != 0 && deregister_after_ms < REGISTRATION_DEREGISTER_MIN_MS
               ? "is shorter than Consul's minimum of 1m (0 = never)"
               : NULL;
}

void consul_watch_conf_check(struct ini_file *f, const struct ini_section *sec,
                             const struct consul_watch_conf *w)
{
    char path[CONSUL_QUERY_PATH_MAX];

    /* the longest query this watch can send: stale, the largest index, the longest wait; a
     * query that does not fit would fail at every attempt and leave the service degraded */
    if (consul_health_path(path, sizeof(path), w->service, w->datacenter, w->tags.items, w->tags.n,
                           1, UINT64_MAX, CONSUL_WAIT_MAX_MS) != 0) {
        int line = ini_key_line(sec, "consul_tags");
        ini_error(f, line != 0 ? line : ini_section_line(sec),
                  line != 0 ? "consul_tags" : "consul_service",
                  "makes a Consul query longer than %d bytes (fewer or shorter tags)",
                  CONSUL_QUERY_PATH_MAX);
    }
}

void registration_conf_check(struct ini_file *f, const struct ini_section *sec, void *conf)
{
    const struct registration_conf *r = conf;

    /* check_interval's minimum is its row's, REGISTRATION_INTERVAL_MIN_MS */
    const char *why = registration_deregister_error(r->deregister_after_ms);

    if (why != NULL) {
        ini_error(f, ini_key_line(sec, "deregister_critical_after"), "deregister_critical_after",
                  "%s", why);
    }
    fleet_check(f, sec, r);
}
