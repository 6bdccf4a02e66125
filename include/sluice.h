/* libsluice: service registration and client-side load balancing over Consul, for any C
 * program. A mesh is one connection to one Consul agent: it registers services (one PUT with
 * the check inline, confirmed, rolled back on a partial failure) and picks instances of the
 * services it is asked for from a local cache that a blocking query keeps current, with the
 * same balancers, passive ejection and counters as the sluice daemon.
 *
 * Threads: every function may be called from any number of threads at once, on any number of
 * meshes; meshes are independent. The library never installs a signal handler and never
 * changes process-wide state (it initialises libcurl once, reference counted). A thread that
 * picks is registered with liburcu on its first pick and unregistered when it exits.
 *
 * Errors: functions that can fail return 0 or a negative enum sluice_error;
 * sluice_strerror() names it and sluice_mesh_last_error() gives this thread's last detail. */
#ifndef SLUICE_H
#define SLUICE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SLUICE_API __attribute__((visibility("default")))

#define SLUICE_ID_MAX   192 /* longest service or instance id + 1 */
#define SLUICE_HOST_MAX 64  /* longest host (an IPv6 address in text) + 1 */

enum sluice_error {
    SLUICE_OK = 0,
    SLUICE_ERR_INVALID = -1,     /* a bad argument; the detail names it */
    SLUICE_ERR_NO_MEMORY = -2,   /* out of memory */
    SLUICE_ERR_NO_INSTANCE = -3, /* the service is known, no healthy instance can be picked */
    SLUICE_ERR_UNREACHABLE = -4, /* Consul did not answer (in time) and nothing is cached, or
                                  * it answered 429 or 5xx: temporary, try again */
    SLUICE_ERR_REJECTED = -5,    /* Consul refused: ACL, invalid check, bad answer */
};

/* A constant English name of a return code ("no healthy instance", ...). */
SLUICE_API const char *sluice_strerror(int code);

/* --- the mesh ---------------------------------------------------------------------------- */

/* How a mesh reaches Consul and balances. Zero-initialise: every zero or NULL is the default. */
struct sluice_mesh_options {
    const char *consul;         /* "127.0.0.1:8500", "http://..", "https://..", "unix:///path";
                                 * NULL: CONSUL_HTTP_ADDR, else 127.0.0.1:8500 */
    const char *token;          /* ACL token; NULL: token_file, else CONSUL_HTTP_TOKEN(_FILE) */
    const char *token_file;     /* file holding the token */
    const char *datacenter;     /* NULL: the agent's */
    const char *ca_file;        /* TLS: CA bundle (NULL: CONSUL_CACERT, else the system's) */
    const char *cert_file;      /* TLS: client certificate (mutual TLS) */
    const char *key_file;       /* TLS: its key */
    const char *balance;        /* balancer of every service: round_robin (default),
                                 * least_connections, weighted, random_two, maglev, source_hash */
    int passing_only;           /* 1: only passing instances; 0: passing and warning (weighted
                                 * by Consul's Weights, like the daemon) */
    uint32_t lookup_timeout_ms; /* bound of a cache miss (the first lookup of a service);
                                 * default 2000 */
    uint32_t wait_ms;           /* blocking-query wait; default 55000 */
    int eject_after;            /* failed connects in a row that eject an instance; 0: 3;
                                 * negative: passive ejection off */
    uint32_t eject_time_ms;     /* the first ejection's length, doubling; default 10000 */
    int log_fd;                 /* with log_level set: where JSON event lines go */
    const char *log_level;      /* "debug", "info", "warn", "error"; NULL: no logging */
};

/* One connection to a Consul agent; opaque. */
struct sluice_mesh;

/* A mesh with opts (NULL: every default). No request is made yet. NULL on failure with the
 * reason in err (errlen bytes, may be 0). */
SLUICE_API struct sluice_mesh *sluice_mesh_create(const struct sluice_mesh_options *opts, char *err,
                                                  size_t errlen);

/* Stops the mesh's threads and frees it. Only once no other thread is inside a call on it;
 * threads that used it may live on. Registered services stay registered (deregister them
 * first when they should go). NULL is fine. */
SLUICE_API void sluice_mesh_destroy(struct sluice_mesh *mesh);

/* This thread's detail of its last failed call on any mesh ("" after a success). */
SLUICE_API const char *sluice_mesh_last_error(void);

/* --- registration ------------------------------------------------------------------------ */

struct sluice_kv {
    const char *key;
    const char *value;
};

enum sluice_check_kind { SLUICE_CHECK_NONE, SLUICE_CHECK_HTTP, SLUICE_CHECK_TCP };

/* The health check Consul runs for a registered service. */
struct sluice_check {
    enum sluice_check_kind kind;
    const char *target;           /* HTTP: the URL; TCP: host:port; NULL: built from the
                                   * service's host and port (http://host:port/ for HTTP) */
    uint32_t interval_ms;         /* default 10000 */
    uint32_t timeout_ms;          /* 0: the agent's default */
    uint32_t deregister_after_ms; /* DeregisterCriticalServiceAfter; 0: never */
};

struct sluice_service_config {
    const char *name;        /* service name (required) */
    const char *id;          /* NULL: "<name>-<host>-<port>", see the README */
    const char *host;        /* address to advertise; NULL: the agent's node address */
    uint16_t port;           /* port (required unless the check needs none) */
    const char *const *tags; /* n_tags tags */
    size_t n_tags;
    const struct sluice_kv *meta; /* n_meta metadata pairs */
    size_t n_meta;
    const struct sluice_check *check; /* NULL: no check (Consul then lists it as passing) */
};

/* Registers cfg with the agent and writes the service id to id_out (id_len bytes, at least
 * SLUICE_ID_MAX for any id). Consul validates the check before it adds anything; a failure
 * after the agent may have added the service deregisters it again (a rollback, counted).
 * When the mesh watches this service name, its cache follows the change as soon as Consul
 * reports it. 0, SLUICE_ERR_INVALID, _UNREACHABLE, _REJECTED (detail: the agent's text). */
SLUICE_API int sluice_register_service(struct sluice_mesh *mesh,
                                       const struct sluice_service_config *cfg, char *id_out,
                                       size_t id_len);

/* Deregisters service_id (an id the agent does not know counts as done). 0, _UNREACHABLE,
 * _REJECTED. */
SLUICE_API int sluice_deregister_service(struct sluice_mesh *mesh, const char *service_id);

/* --- picking ----------------------------------------------------------------------------- */

/* What a pick may look at besides the set. Zero-initialise; NULL hints are fine. */
struct sluice_pick_hints {
    const void *key; /* maglev / source_hash: bytes to hash (a user id, a key) */
    size_t key_len;
    const struct sockaddr *client; /* ... or the client's address (when key is NULL) */
};

/* An instance to use: copy what you need, then release it exactly once. */
struct sluice_instance {
    char id[SLUICE_ID_MAX];       /* Consul node + service id */
    char host[SLUICE_HOST_MAX];   /* its address in text ("10.0.0.7", "fd00::7") */
    uint16_t port;                /* its port */
    struct sockaddr_storage addr; /* ready for connect(2) */
    socklen_t addr_len;           /* bytes of addr */
    uint32_t weight;              /* its weight in the set */
    void *handle[2];              /* the library's; do not touch */
};

/* Picks an instance of service_name with the mesh's balancer. The first call for a name that
 * is not watched yet asks Consul (a cache miss, bounded by lookup_timeout_ms) and starts a
 * blocking-query watch; every later call is served from the cache without I/O or a lock (a
 * cache hit). Only healthy instances that passive health has not ejected are returned.
 * 0 with *out, or SLUICE_ERR_NO_INSTANCE (none healthy), _UNREACHABLE (Consul did not answer
 * and nothing is cached), _REJECTED, _INVALID, _NO_MEMORY. */
SLUICE_API int sluice_get_service_instance(struct sluice_mesh *mesh, const char *service_name,
                                           const struct sluice_pick_hints *hints,
                                           struct sluice_instance *out);

/* How the use of a picked instance went. */
enum sluice_outcome {
    SLUICE_CONNECTED,      /* connected and served: resets its failure count */
    SLUICE_CONNECT_FAILED, /* the connect failed: counts towards passive ejection */
    SLUICE_REQUEST_FAILED, /* connected, then the request failed: counted, no ejection */
};

/* Ends the use of inst (least_connections counts it until then) and reports how it went. Once
 * per successful sluice_get_service_instance. */
SLUICE_API void sluice_release_instance(struct sluice_mesh *mesh,
                                        const struct sluice_instance *inst,
                                        enum sluice_outcome outcome);

/* --- numbers ----------------------------------------------------------------------------- */

#define SLUICE_LATENCY_BUCKETS 10 /* finite buckets of the Consul request-duration histogram */

struct sluice_stats {
    unsigned long long registrations;     /* sluice_register_service calls */
    unsigned long long registered;        /* ... that succeeded */
    unsigned long long register_failures; /* ... that failed */
    unsigned long long rollbacks;         /* failed ones whose service was deregistered again */
    unsigned long long deregistrations;   /* sluice_deregister_service calls that succeeded */
    unsigned long long cache_hits;        /* picks served from the cache */
    unsigned long long cache_misses;      /* picks that had to ask Consul first */
    unsigned long long picks;             /* picks that returned an instance */
    unsigned long long no_instance;       /* picks that found none */
    unsigned long long connect_failures;  /* releases with SLUICE_CONNECT_FAILED */
    unsigned long long request_failures;  /* releases with SLUICE_REQUEST_FAILED */
    unsigned long long services;          /* services watched */
    unsigned long long consul_requests;   /* Consul queries ended (discovery latency below) */
    unsigned long long consul_errors;     /* ... that failed */
    unsigned long long latency_le[SLUICE_LATENCY_BUCKETS]; /* queries <= bound (cumulative) */
    uint64_t latency_bound_ms[SLUICE_LATENCY_BUCKETS];     /* those bounds */
    unsigned long long latency_sum_ms;                     /* total duration of the queries */
};

/* The mesh's counters, summed over its threads. 0 or SLUICE_ERR_INVALID. */
SLUICE_API int sluice_mesh_stats(struct sluice_mesh *mesh, struct sluice_stats *out);

/* One instance of a watched service, as the daemon's /status shows it. */
struct sluice_instance_stats {
    char id[SLUICE_ID_MAX];
    char host[SLUICE_HOST_MAX];
    uint16_t port;
    const char *state;            /* healthy, warning, ejected, ... (a constant string) */
    unsigned active;              /* picked and not yet released */
    unsigned long long connects;  /* releases with SLUICE_CONNECTED or _REQUEST_FAILED */
    unsigned long long failures;  /* releases with SLUICE_CONNECT_FAILED */
    unsigned long long ejections; /* times passive health ejected it */
};

/* The instances of a watched service: fills at most cap entries and returns how many there
 * are, or a negative error (SLUICE_ERR_INVALID for a service the mesh does not watch). */
SLUICE_API long sluice_service_instances(struct sluice_mesh *mesh, const char *service_name,
                                         struct sluice_instance_stats *out, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
