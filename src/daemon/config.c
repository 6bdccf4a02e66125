/* The daemon's INI schema: which subsystem's rows make up which section, the daemon's own keys
 * ([sluice] workers and logging, a service's discovery) and the rules across sections. */
#include "config.h"
#include "privileges.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cpus.h"
#include "registry.h"

#define WORKERS_MAX 256 /* upper limit of workers, also the cap of "auto" */

/* Kinds in the order messages list them; indexes for the checks below. */
enum { KIND_SLUICE, KIND_LISTENER, KIND_SERVICE, KIND_CONSUL, KIND_REGISTRATION, KIND_ADMIN };

/* "auto" is stored as 0 and counted once the whole file is read (check_file): the count needs
 * the CPUs this process may use, which no other key changes, and the daemon logs why. */
static const char *set_workers(void *field, const struct ini_key *key, const char *value, char *msg)
{
    if (strcmp(value, "auto") != 0) {
        return ini_set_u32(field, key, value, msg);
    }
    *(uint32_t *)field = 0;
    return NULL;
}

static const char *set_log_level(void *field, const struct ini_key *key, const char *value,
                                 char *msg)
{
    (void)key;
    if (log_level_parse(value, field) < 0) {
        return ini_phrase(msg, "\"%s\" is not a level (use debug, info, warn, error)", value);
    }
    return NULL;
}

static const char *set_log_format(void *field, const struct ini_key *key, const char *value,
                                  char *msg)
{
    (void)key;
    if (log_format_parse(value, field) < 0) {
        return ini_phrase(msg, "\"%s\" is not a format (use json, text)", value);
    }
    return NULL;
}

_Static_assert(sizeof(enum config_discovery) == sizeof(int), "ini_set_enum stores an int");

static const struct ini_choice discovery_words[] = {{"static", CONFIG_DISCOVERY_STATIC},
                                                    {"consul", CONFIG_DISCOVERY_CONSUL},
                                                    {"dns", CONFIG_DISCOVERY_DNS},
                                                    {"file", CONFIG_DISCOVERY_FILE},
                                                    {NULL, 0}};

const char *config_discovery_name(enum config_discovery discovery)
{
    for (const struct ini_choice *c = discovery_words; c->word != NULL; c++)
        if (c->value == (int)discovery)
            return c->word;
    return "unknown";
}

#define GLOBAL(field)  offsetof(struct config, field)
#define SERVICE(field) offsetof(struct config_service, field)

static const struct ini_key daemon_keys[] = {
    INI_KEY("workers", GLOBAL(workers), set_workers, 1, WORKERS_MAX, "auto", false),
    INI_KEY("log_level", GLOBAL(log_level), set_log_level, 0, 0, "info", false),
    INI_KEY("log_format", GLOBAL(log_format), set_log_format, 0, 0, "json", false),
    INI_KEY("shutdown_timeout", GLOBAL(shutdown_timeout_ms), ini_set_duration, 0,
            7 * 24 * 3600000ULL, "30s", false),
    INI_KEY("pid_file", GLOBAL(pid_file), ini_set_string, 0, 0, NULL, false,
            .release = ini_release_string),
    INI_KEY("user", GLOBAL(user), ini_set_string, 0, 0, NULL, false, .release = ini_release_string,
            .check = privileges_user_check),
    INI_KEY("group", GLOBAL(group), ini_set_string, 0, 0, NULL, false,
            .release = ini_release_string, .check = privileges_group_check),
    {.name = NULL},
};

const struct ini_key config_service_keys[] = {
    INI_KEY("discovery", SERVICE(discovery), ini_set_enum, 0, 0, "static", false,
            .choices = discovery_words, .noun = "discovery method"),
    {.name = NULL},
};

/* --- rules across sections ---------------------------------------------------------------- */

/* What load() hands the checks. */
struct load_mode {
    // cppcheck-suppress unusedStructMember ; read through ini_user()'s void pointer
    struct config *cfg; /* being loaded */
    // cppcheck-suppress unusedStructMember ; read through ini_user()'s void pointer
    bool consul_only; /* config_load_consul: a file without listeners is fine */
};

static struct config *file_config(const struct ini_file *f)
{
    return ((const struct load_mode *)ini_user(f))->cfg;
}

static void check_listener(struct ini_file *f, const struct ini_section *sec, void *section)
{
    struct config *cfg = file_config(f);
    struct listener_conf *l = section;
    size_t i;

    for (i = 0; l->service[0] != '\0' && i < cfg->n_services; i++) {
        if (strcmp(cfg->services[i].name, l->service) == 0) {
            break;
        }
    }
    l->service_index = i;
    l->bind_line = ini_key_line(sec, "bind");
    listener_conf_check(f, sec, l);
    if (l->service[0] != '\0' && i == cfg->n_services) {
        ini_error(f, ini_key_line(sec, "service"), "service",
                  "there is no [service:%s] in this file", l->service);
    }
    for (i = 0; l->bind.len != 0 && i < ini_section_index(sec); i++) {
        if (strcmp(cfg->listeners[i].bind.text, l->bind.text) == 0) {
            ini_error(f, ini_key_line(sec, "bind"), "bind",
                      "%s is already bound by [listener:%s] (line %d)", l->bind.text,
                      cfg->listeners[i].name, cfg->listeners[i].line);
            break;
        }
    }
}

/* strict_dns = on: every host name of backends must resolve now, or the file is refused. */
static void check_hosts_resolve(struct ini_file *f, const struct ini_section *sec,
                                const struct config_service *svc)
{
    char err[512];

    if (registry_resolve_check(&svc->registry, &svc->lb.backends, err, sizeof(err)) != 0)
        ini_error(f, ini_key_line(sec, "backends"), "backends", "%s (strict_dns = on)", err);
}

/* dns_* keys only with discovery = dns (some also with host names in backends), file only with
 * discovery = file. */
static void check_registry_keys(struct ini_file *f, const struct ini_section *sec,
                                const struct config_service *svc)
{
    bool hosts = svc->discovery == CONFIG_DISCOVERY_STATIC && svc->lb.backends.n_hosts > 0;

    for (const struct ini_key *k = registry_dns_keys; k->name != NULL; k++) {
        int line = ini_key_line(sec, k->name);
        bool for_hosts = registry_key_for_hosts(k->name);
        if (line == 0 || (hosts && for_hosts) ||
            (svc->discovery == CONFIG_DISCOVERY_DNS && strcmp(k->name, "strict_dns") != 0))
            continue;
        if (strcmp(k->name, "strict_dns") == 0)
            ini_error(f, line, k->name, "only applies to host names in backends");
        else
            ini_error(f, line, k->name, "only applies to discovery = dns%s",
                      for_hosts ? " or to host names in backends" : "");
    }
    if (hosts && svc->registry.strict_dns)
        check_hosts_resolve(f, sec, svc);
    int file_line = ini_key_line(sec, "file");
    if (svc->discovery != CONFIG_DISCOVERY_FILE && file_line != 0)
        ini_error(f, file_line, "file", "only applies to discovery = file");
    if (svc->discovery == CONFIG_DISCOVERY_DNS || svc->discovery == CONFIG_DISCOVERY_FILE)
        registry_conf_check(f, sec, &svc->registry,
                            svc->discovery == CONFIG_DISCOVERY_DNS ? 'd' : 'f');
}

static void check_service(struct ini_file *f, const struct ini_section *sec, void *section)
{
    static const char *const consul_only[] = {"consul_service", "consul_tags", "consul_datacenter",
                                              "health"};
    struct config_service *svc = section;
    int backends_line = ini_key_line(sec, "backends");

    lb_service_check(f, sec, &svc->lb);
    health_conf_check(f, sec, &svc->check);
    if (svc->discovery == CONFIG_DISCOVERY_STATIC && backends_line == 0) {
        ini_error(f, ini_section_line(sec), ini_section_header(sec),
                  "static discovery needs backends = ADDRESS, ...");
    }
    if (svc->discovery != CONFIG_DISCOVERY_STATIC && backends_line != 0) {
        ini_error(f, backends_line, "backends", "only applies to discovery = static");
    }
    for (size_t i = 0; i < sizeof(consul_only) / sizeof(consul_only[0]); i++) {
        int line = ini_key_line(sec, consul_only[i]);
        if (svc->discovery != CONFIG_DISCOVERY_CONSUL && line != 0) {
            ini_error(f, line, consul_only[i], "only applies to discovery = consul");
        }
    }
    if (svc->discovery == CONFIG_DISCOVERY_CONSUL && svc->consul.service[0] == '\0') {
        memcpy(svc->consul.service, svc->name, sizeof(svc->name)); /* same size, both valid */
    }
    if (svc->discovery == CONFIG_DISCOVERY_CONSUL) {
        consul_watch_conf_check(f, sec, &svc->consul);
    }
    check_registry_keys(f, sec, svc);
}

static long listener_find(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (strcmp(cfg->listeners[i].name, name) == 0) {
            return (long)i;
        }
    }
    return -1;
}

static bool registration_chooses(const struct registration_conf *r, const char *listener)
{
    for (size_t j = 0; j < r->listeners.n; j++) {
        if (strcmp(r->listeners.items[j], listener) == 0) {
            return true;
        }
    }
    return r->listeners.n == 0;
}

/* [registration] names listeners, and needs an address to advertise for wildcard binds. */
static void check_registration(struct ini_file *f, const struct ini_section *sec, void *section)
{
    const struct config *cfg = file_config(f);
    const struct registration_conf *r = section;

    registration_conf_check(f, sec, section);
    for (size_t i = 0; i < r->listeners.n; i++) {
        if (listener_find(cfg, r->listeners.items[i]) < 0) {
            ini_error(f, ini_key_line(sec, "listeners"), "listeners",
                      "there is no [listener:%s] in this file", r->listeners.items[i]);
        }
    }
    for (size_t i = 0; r->address[0] == '\0' && i < cfg->n_listeners; i++) {
        const struct listener_conf *l = &cfg->listeners[i];
        if (registration_chooses(r, l->name) && l->bind.len != 0 &&
            net_addr_is_wildcard(&l->bind)) {
            ini_error(f, ini_section_line(sec), ini_section_header(sec),
                      "[listener:%s] binds %s: set address = IP to advertise", l->name,
                      l->bind.text);
        }
    }
}

/* group needs user; a uid without a user database entry needs group (no primary group). The
 * names themselves were checked by their rows. */
static void check_privileges(struct ini_file *f, const struct ini_section *sluice,
                             const struct config *cfg)
{
    struct privileges p;
    char why[256];

    if (cfg->group != NULL && cfg->user == NULL && ini_key_line(sluice, "user") == 0) {
        ini_error(f, ini_key_line(sluice, "group"), "group",
                  "only applies with user = NAME (the user to run as)");
    } else if (cfg->user != NULL &&
               privileges_resolve(cfg->user, cfg->group, &p, why, sizeof(why)) != 0) {
        const char *key = strncmp(why, "group", 5) == 0 ? "group" : "user";
        const char *detail = strstr(why, ": "); /* "user 123: why": the key names it already */
        ini_error(f, ini_key_line(sluice, key), key, "%s", detail != NULL ? detail + 2 : why);
    }
}

static void check_file(struct ini_file *f, void *root)
{
    struct config *cfg = root;

    if (cfg->workers == 0) {
        cpus_usable(&cfg->workers_auto, WORKERS_MAX);
        cfg->workers = cfg->workers_auto.count;
    }
    const struct ini_section *sluice = ini_section_of_kind(f, KIND_SLUICE);
    cfg->pid_file_line = sluice != NULL ? ini_key_line(sluice, "pid_file") : 0;
    check_privileges(f, sluice, cfg);

    if (cfg->n_listeners == 0 && !((const struct load_mode *)ini_user(f))->consul_only) {
        ini_error(f, 0, "[listener:NAME]", "the file defines no listener; add one");
    }
}

/* --- the schema --------------------------------------------------------------------------- */

static const struct ini_table sluice_tables[] = {
    {daemon_keys, 0},
    {stream_keys, offsetof(struct config, stream)},
};
static const struct ini_table listener_tables[] = {{listener_keys, 0}};
static const struct ini_table service_tables[] = {
    {config_service_keys, 0},
    {lb_service_keys, offsetof(struct config_service, lb)},
    {stream_service_keys, offsetof(struct config_service, stream)},
    {health_keys, offsetof(struct config_service, check)},
    {consul_watch_keys, offsetof(struct config_service, consul)},
    {registry_dns_keys, offsetof(struct config_service, registry)},
    {registry_file_keys, offsetof(struct config_service, registry)},
};
static const struct ini_table consul_tables[] = {{consul_keys, 0}};
static const struct ini_table registration_tables[] = {{registration_keys, 0}};
static const struct ini_table admin_tables[] = {{admin_keys, 0}};

#define TABLES(t) t, sizeof(t) / sizeof((t)[0])

static const struct ini_kind kinds[] = {
    [KIND_SLUICE] = {"sluice", false, TABLES(sluice_tables), 0, 0, 0, 0, SIZE_MAX, NULL},
    [KIND_LISTENER] = {"listener", true, TABLES(listener_tables),
                       offsetof(struct config, listeners), offsetof(struct config, n_listeners),
                       sizeof(struct listener_conf), offsetof(struct listener_conf, name),
                       offsetof(struct listener_conf, line), check_listener},
    [KIND_SERVICE] = {"service", true, TABLES(service_tables), offsetof(struct config, services),
                      offsetof(struct config, n_services), sizeof(struct config_service),
                      offsetof(struct config_service, name), offsetof(struct config_service, line),
                      check_service},
    [KIND_CONSUL] = {"consul", false, TABLES(consul_tables), offsetof(struct config, consul), 0, 0,
                     0, offsetof(struct consul_conf, line), consul_conf_check},
    [KIND_REGISTRATION] = {"registration", false, TABLES(registration_tables),
                           offsetof(struct config, registration), 0, 0, 0,
                           offsetof(struct registration_conf, line), check_registration},
    [KIND_ADMIN] = {"admin", false, TABLES(admin_tables), offsetof(struct config, admin), 0, 0, 0,
                    offsetof(struct admin_conf, line), admin_conf_check},
};

static const struct ini_schema schema = {
    .kinds = kinds,
    .n_kinds = sizeof(kinds) / sizeof(kinds[0]),
    .check = check_file,
};

static int load(const char *path, bool consul_only, struct config **out, struct ini_errors *errs)
{
    struct config *cfg = calloc(1, sizeof(*cfg));
    int rc;

    *out = NULL;
    if (cfg == NULL || (cfg->path = strdup(path)) == NULL) {
        free(cfg);
        return -ENOMEM;
    }
    struct load_mode mode = {.cfg = cfg, .consul_only = consul_only};
    rc = ini_load(&schema, path, cfg, &mode, errs);
    if (rc != 0) {
        config_destroy(cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

int config_load(const char *path, struct config **out, struct ini_errors *errs)
{
    return load(path, false, out, errs);
}

int config_load_consul(const char *path, struct config **out, struct ini_errors *errs)
{
    return load(path, true, out, errs);
}

void config_destroy(struct config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    ini_release_all(&schema, cfg);
    free(cfg->path);
    free(cfg);
}
