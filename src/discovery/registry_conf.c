/* Key rows and checks of the DNS and file registries' [service:NAME] keys. */
#include "registry_conf.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"

#define MINUTE_MS (60ULL * 1000ULL)
#define HOUR_MS   (60ULL * MINUTE_MS)

/* A DNS name: letters, digits, '-', '_' and dots, labels of 1..63 characters, 253 in all. */
static const char *dns_name_check(const char *value)
{
    size_t len = strlen(value), label = 0;

    if (len == 0 || len > 253) {
        return "is not a DNS name (1 to 253 characters)";
    }
    for (const char *p = value; *p != '\0'; p++) {
        if (*p == '.') {
            if (label == 0) {
                return "has an empty label";
            }
            label = 0;
        } else if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", *p) ==
                   NULL) {
            return "is not a DNS name (letters, digits, '-', '_' and dots only)";
        } else if (++label > 63) {
            return "has a label longer than 63 characters";
        }
    }
    return NULL;
}

/* A name server: an IP address with an optional port ("10.0.0.2", "127.0.0.1:5353", "[::1]:53"). */
static const char *dns_server_check(const char *item)
{
    struct net_addr a;
    char text[NET_ADDR_MAX + 8];

    if (net_addr_parse(item, &a) == NULL) {
        return NULL;
    }
    /* no port: try it with the default one */
    snprintf(text, sizeof(text), strchr(item, ':') != NULL ? "[%s]:53" : "%s:53", item);
    return net_addr_parse(text, &a) == NULL ? NULL : "is not IP or IP:PORT";
}

static const char *file_check(const char *value)
{
    return value[0] == '/' ? NULL : "must be an absolute path";
}

#define REG(field) offsetof(struct registry_conf, field)
#define STR        .release = ini_release_string

const struct ini_key registry_dns_keys[] = {
    INI_KEY("dns_name", REG(dns_name), ini_set_string, 0, 0, NULL, false, STR,
            .check = dns_name_check),
    INI_KEY("dns_port", REG(dns_port), ini_set_int, 1, 65535, NULL, false),
    INI_KEY("dns_servers", REG(dns_servers), ini_set_list, 0, 16, NULL, false,
            .release = ini_release_list, .check = dns_server_check),
    INI_KEY("dns_min_interval", REG(dns_min_interval_ms), ini_set_duration, 100, HOUR_MS, "1s",
            false),
    INI_KEY("dns_max_interval", REG(dns_max_interval_ms), ini_set_duration, 100, 24 * HOUR_MS, "5m",
            false),
    INI_KEY("dns_timeout", REG(dns_timeout_ms), ini_set_duration, 100, MINUTE_MS, "2s", false),
    INI_KEY("dns_empty_is_valid", REG(dns_empty_is_valid), ini_set_bool, 0, 0, "off", false),
    INI_KEY("strict_dns", REG(strict_dns), ini_set_bool, 0, 0, "off", false),
    {.name = NULL},
};

const struct ini_key registry_file_keys[] = {
    INI_KEY("file", REG(file), ini_set_string, 0, 0, NULL, false, STR, .check = file_check),
    {.name = NULL},
};

bool registry_key_for_hosts(const char *key)
{
    static const char *const keys[] = {"dns_servers", "dns_min_interval", "dns_max_interval",
                                       "dns_timeout", "strict_dns"};

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (strcmp(keys[i], key) == 0) {
            return true;
        }
    }
    return false;
}

bool registry_dns_is_srv(const char *name)
{
    return name != NULL && name[0] == '_';
}

static void dns_check(struct ini_file *f, const struct ini_section *sec,
                      const struct registry_conf *c)
{
    int port_line = ini_key_line(sec, "dns_port");

    if (c->dns_name == NULL && ini_key_line(sec, "dns_name") != 0) {
        /* the name was refused already */
    } else if (c->dns_name == NULL) {
        ini_error(f, ini_section_line(sec), ini_section_header(sec),
                  "discovery = dns needs dns_name = _service._tcp.domain (SRV) or a host name");
    } else if (registry_dns_is_srv(c->dns_name) && port_line != 0) {
        ini_error(f, port_line, "dns_port",
                  "does not apply to an SRV name (its records give ports)");
    } else if (!registry_dns_is_srv(c->dns_name) && port_line == 0) {
        ini_error(f, ini_key_line(sec, "dns_name"), "dns_name",
                  "names A/AAAA records: add dns_port = PORT (or use an SRV name, _svc._tcp...)");
    }
    if (c->dns_min_interval_ms > c->dns_max_interval_ms) {
        int max_line = ini_key_line(sec, "dns_max_interval");
        ini_error(f, max_line != 0 ? max_line : ini_key_line(sec, "dns_min_interval"),
                  max_line != 0 ? "dns_max_interval" : "dns_min_interval", "%s",
                  max_line != 0 ? "is shorter than dns_min_interval"
                                : "is longer than dns_max_interval");
    }
}

void registry_conf_check(struct ini_file *f, const struct ini_section *sec,
                         const struct registry_conf *c, char kind)
{
    if (kind == 'd') {
        dns_check(f, sec, c);
    } else if (c->file == NULL && ini_key_line(sec, "file") == 0) {
        ini_error(f, ini_section_line(sec), ini_section_header(sec),
                  "discovery = file needs file = /PATH/TO/INSTANCES.json");
    }
}
