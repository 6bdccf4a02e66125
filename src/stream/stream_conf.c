/* Key rows of the stream layer: [sluice] data-path settings and [listener:NAME]. */
#include "stream_conf.h"

#include "acl.h"
#include "client_limit.h"

#include <stddef.h>
#include <stdint.h>

#define KIB 1024ULL
#define MIB (1024ULL * 1024ULL)

_Static_assert(sizeof(enum splice_policy) == sizeof(int), "ini_set_enum stores an int");

static const struct ini_choice splice_words[] = {
    {"auto", SPLICE_AUTO}, {"off", SPLICE_OFF}, {"always", SPLICE_ALWAYS}, {NULL, 0}};

_Static_assert(sizeof(enum proxy_send) == sizeof(int), "ini_set_enum stores an int");

static const struct ini_choice proxy_words[] = {
    {"off", PROXY_SEND_OFF}, {"v1", PROXY_SEND_V1}, {"v2", PROXY_SEND_V2}, {NULL, 0}};

#define STREAM(field)   offsetof(struct stream_conf, field)
#define SERVICE(field)  offsetof(struct stream_service_conf, field)
#define HOUR_MS         (60ULL * 60ULL * 1000ULL)
#define LISTENER(field) offsetof(struct listener_conf, field)

const struct ini_key stream_keys[] = {
    INI_KEY("max_connections", STREAM(max_connections), ini_set_u32, 1, 10000000, "10000", false),
    INI_KEY("splice", STREAM(splice), ini_set_enum, 0, 0, "auto", false, .choices = splice_words,
            .noun = "splice mode"),
    INI_KEY("pipe_size", STREAM(pipe_size), ini_set_size, 4 * KIB, 16 * MIB, "1m", false),
    INI_KEY("buffer_size", STREAM(buffer_size), ini_set_size, 1 * KIB, 1 * MIB, "16k", false),
    {.name = NULL},
};

const struct ini_key listener_keys[] = {
    INI_KEY("bind", LISTENER(bind), ini_set_addr, 0, 0, NULL, true),
    INI_KEY("service", LISTENER(service), ini_set_name, 0, 0, NULL, true),
    INI_KEY("connect_timeout", LISTENER(connect_timeout_ms), ini_set_duration, 1, HOUR_MS, "2s",
            false),
    INI_KEY("idle_timeout", LISTENER(idle_timeout_ms), ini_set_duration, 0, 7 * 24 * HOUR_MS, "5m",
            false),
    INI_KEY("retries", LISTENER(retries), ini_set_u32, 0, 100, "2", false),
    INI_KEY("backlog", LISTENER(backlog), ini_set_int, 1, 65535, "4096", false),
    INI_KEY("log_access", LISTENER(log_access), ini_set_bool, 0, 0, "off", false),
    INI_KEY("allow", LISTENER(allow), ini_set_list, 0, 0, NULL, false, .release = ini_release_list,
            .check = acl_cidr_check),
    INI_KEY("deny", LISTENER(deny), ini_set_list, 0, 0, NULL, false, .release = ini_release_list,
            .check = acl_cidr_check),
    INI_KEY("max_connections_per_client", LISTENER(max_conns_per_client), ini_set_u32, 0,
            CLIENT_LIMIT_CONNS_MAX, "0", false),
    INI_KEY("connection_rate_per_client", LISTENER(rate_per_client), ini_set_u32, 0,
            CLIENT_LIMIT_RATE_MAX, "0", false),
    /* no default row: unset means "the rate", settled by listener_conf_check */
    INI_KEY("connection_burst_per_client", LISTENER(burst_per_client), ini_set_u32, 1,
            CLIENT_LIMIT_BURST_MAX, NULL, false),
    INI_KEY("client_ipv6_prefix", LISTENER(client_ipv6_prefix), ini_set_u32, 1, 128, "64", false),
    INI_KEY("client_table_size", LISTENER(client_table_size), ini_set_u32, CLIENT_LIMIT_SIZE_MIN,
            CLIENT_LIMIT_SIZE_MAX, "65536", false),
    INI_KEY("accept_proxy", LISTENER(accept_proxy), ini_set_bool, 0, 0, "off", false),
    INI_KEY("proxy_trusted", LISTENER(proxy_trusted), ini_set_list, 0, 0, NULL, false,
            .release = ini_release_list, .check = acl_cidr_check),
    INI_KEY("proxy_header_timeout", LISTENER(proxy_header_timeout_ms), ini_set_duration, 1,
            60 * 1000, "3s", false),
    {.name = NULL},
};

static void client_limits_check(struct ini_file *f, const struct ini_section *sec,
                                struct listener_conf *l)
{
    static const char *const table_keys[] = {"client_ipv6_prefix", "client_table_size"};
    int burst_line = ini_key_line(sec, "connection_burst_per_client");
    /* by line, not value: a limit key with a bad value has its own error already */
    int rate_line = ini_key_line(sec, "connection_rate_per_client");
    int max_line = ini_key_line(sec, "max_connections_per_client");

    if (burst_line == 0)
        l->burst_per_client = l->rate_per_client;
    else if (rate_line == 0)
        ini_error(f, burst_line, "connection_burst_per_client",
                  "only applies with connection_rate_per_client");
    for (size_t i = 0; i < sizeof(table_keys) / sizeof(table_keys[0]); i++) {
        int line = ini_key_line(sec, table_keys[i]);
        if (line != 0 && rate_line == 0 && max_line == 0)
            ini_error(f, line, table_keys[i],
                      "only applies with max_connections_per_client or "
                      "connection_rate_per_client");
    }
}

const struct ini_key stream_service_keys[] = {
    INI_KEY("queue_size", SERVICE(queue_size), ini_set_u32, 0, 1000000, "0", false),
    INI_KEY("queue_timeout", SERVICE(queue_timeout_ms), ini_set_duration, 1, HOUR_MS, "5s", false),
    INI_KEY("drain_timeout", SERVICE(drain_timeout_ms), ini_set_duration, 0, 7 * 24 * HOUR_MS, "0",
            false),
    INI_KEY("max_connection_lifetime", SERVICE(lifetime_ms), ini_set_duration, 0, 7 * 24 * HOUR_MS,
            "0", false),
    INI_KEY("proxy_protocol", SERVICE(proxy_protocol), ini_set_enum, 0, 0, "off", false,
            .choices = proxy_words, .noun = "PROXY protocol version"),
    {.name = NULL},
};

static void accept_proxy_check(struct ini_file *f, const struct ini_section *sec,
                               const struct listener_conf *l)
{
    int line = ini_key_line(sec, "accept_proxy");

    if (l->accept_proxy && l->proxy_trusted.n == 0)
        ini_error(f, line, "accept_proxy",
                  "needs proxy_trusted = CIDR, ...: the proxies whose headers are believed");
    if (!l->accept_proxy && ini_key_line(sec, "proxy_trusted") != 0)
        ini_error(f, ini_key_line(sec, "proxy_trusted"), "proxy_trusted",
                  "only applies to accept_proxy = on");
}

void listener_conf_check(struct ini_file *f, const struct ini_section *sec, struct listener_conf *l)
{
    client_limits_check(f, sec, l);
    accept_proxy_check(f, sec, l);
}
