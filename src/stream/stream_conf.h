/* The stream layer's configuration: the data-path keys of [sluice] and every key of a
 * [listener:NAME] section. */
#ifndef SLUICE_STREAM_CONF_H
#define SLUICE_STREAM_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "inifile.h"
#include "pump.h"

/* Data-path keys of [sluice]. */
struct stream_conf {
    uint32_t max_connections;  /* global cap on open client connections */
    enum splice_policy splice; /* splice = auto | off | always */
    uint32_t pipe_size;        /* pipe_size: bytes per splice pipe, default 1 MiB */
    uint32_t buffer_size;      /* buffer_size: bytes per copy buffer, default 16 KiB */
};

/* [listener:NAME]: one bind address proxied to one service. */
struct listener_conf {
    char name[INI_NAME_MAX];     /* NAME from the section header */
    int line;                    /* line of the section header */
    int bind_line;               /* line of its bind key (composer), for start-up errors */
    struct net_addr bind;        /* bind = ... */
    char service[INI_NAME_MAX];  /* service = ... */
    size_t service_index;        /* index of that service in the file's services (composer) */
    uint64_t connect_timeout_ms; /* connect_timeout, default 2 s */
    uint64_t idle_timeout_ms;    /* idle_timeout, default 5 min; 0 = never */
    uint32_t retries;            /* retries, other instances tried after a failed connect */
    int backlog;                 /* backlog for listen(2), default 4096 */
    int log_access;              /* log_access: one line per closed connection (0 or 1) */
    struct ini_list allow;       /* allow: CIDRs let in (none: everyone); owned by the config */
    struct ini_list deny;        /* deny: CIDRs refused, over allow; owned by the config */
    /* per-client limits (client_limit.h) */
    uint32_t max_conns_per_client; /* max_connections_per_client: open at once; 0 = off */
    uint32_t rate_per_client;      /* connection_rate_per_client: new ones per second; 0 = off */
    uint32_t burst_per_client;     /* connection_burst_per_client; unset: the rate */
    uint32_t client_ipv6_prefix;   /* client_ipv6_prefix: IPv6 clients grouped by it, default 64 */
    uint32_t client_table_size;    /* client_table_size: clients tracked, default 65536 */
    int accept_proxy;              /* accept_proxy: clients come through a PROXY protocol proxy */
    struct ini_list proxy_trusted; /* proxy_trusted: CIDRs that may send a PROXY header */
    uint64_t proxy_header_timeout_ms; /* proxy_header_timeout: the header's deadline, 3 s */
};

/* proxy_protocol = off | v1 | v2: the header sent to upstreams. */
enum proxy_send {
    PROXY_SEND_OFF, /* none */
    PROXY_SEND_V1,  /* the text line */
    PROXY_SEND_V2,  /* the binary header */
};

/* The keys of a [service:NAME] that sessions enforce. */
struct stream_service_conf {
    uint32_t queue_size;       /* clients that may wait when every instance is full; 0 = none */
    uint64_t queue_timeout_ms; /* how long one may wait */
    uint64_t drain_timeout_ms; /* connections to an instance that left the set: 0 = unlimited */
    uint64_t lifetime_ms;      /* max_connection_lifetime (+ up to 10 % jitter); 0 = off */
    enum proxy_send proxy_protocol; /* proxy_protocol: header sent after each upstream connect */
};

/* Rules between a listener's keys, run once its section is read (the composer's check calls it):
 * connection_burst_per_client defaults to the rate and, like client_ipv6_prefix and
 * client_table_size, only applies with a per-client limit; accept_proxy = on needs
 * proxy_trusted, which only applies with it (FILE:LINE errors into f). */
void listener_conf_check(struct ini_file *f, const struct ini_section *sec,
                         struct listener_conf *l);

/* Rows of stream_conf (a [sluice] table), listener_conf and stream_service_conf. */
extern const struct ini_key stream_keys[];
extern const struct ini_key listener_keys[];
extern const struct ini_key stream_service_keys[];

#endif
