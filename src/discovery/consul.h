/* HTTP calls to the Consul agent with libcurl: http, https and unix-socket addresses, the ACL
 * token header, TLS options and the CONSUL_* environment conventions (the INI file wins). */
#ifndef SLUICE_CONSUL_H
#define SLUICE_CONSUL_H

#include <curl/curl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "consul_conf.h"

#define CONSUL_BODY_MAX       (64u * 1024u * 1024u) /* larger answers are refused, not buffered */
#define CONSUL_QUERY_PATH_MAX 4096 /* longest watch query path (service name, tags, dc) */

/* Resolved connection settings; immutable once created, so any thread may use one client. */
struct consul_client;

/* Resolves cfg (NULL = environment only) against CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN(_FILE),
 * CONSUL_HTTP_SSL(_VERIFY), CONSUL_CACERT, CONSUL_CAPATH, CONSUL_CLIENT_CERT/KEY and
 * CONSUL_TLS_SERVER_NAME, reads the token file, and initialises libcurl (reference counted,
 * undone by the last consul_client_destroy). Returns 0 and *out, or -errno with a reason in err.
 * Call before starting threads that use libcurl. */
int consul_client_create(const struct consul_conf *cfg, struct consul_client **out, char *err,
                         size_t err_len);

/* libcurl's process-wide initialisation, counted: the first user initialises it, the last one
 * cleans it up (libcurl's global state is its own, not sluice's). 0 or -ENOMEM. Any thread. */
int consul_curl_use(void);
void consul_curl_unuse(void);

/* Makes the handle e talk to its URL directly: no proxy, whatever the environment says
 * (http_proxy, HTTPS_PROXY, ALL_PROXY...). Every handle sluice creates goes through it. */
void consul_curl_direct(CURL *e);

/* Frees a client; NULL is fine. No call made with it may still be running. */
void consul_client_destroy(struct consul_client *c);

/* "http://127.0.0.1:8500", "https://...", "unix:///path": where the client talks to, for logs. */
const char *consul_client_address(const struct consul_client *c);

/* [consul] timeout (CONSUL_TIMEOUT_DEFAULT_MS without one): how long a non-blocking call (a
 * registration, a first lookup, a CLI call) may take in all. Any thread. */
uint64_t consul_client_timeout_ms(const struct consul_client *c);

/* Whether the client sends an ACL token (logs say "no token" when a 403 has that cause). */
int consul_client_has_token(const struct consul_client *c);

/* One HTTP exchange with the agent. Initialise with consul_call_init, run it with
 * consul_call_perform or through a curl multi handle (then call consul_call_done with the
 * CURLMsg result), read the fields, and free with consul_call_cleanup. One thread at a time. */
struct consul_call {
    CURL *easy;                   /* the transfer; CURLOPT_PRIVATE points back to this call */
    struct curl_slist *headers;   /* request headers, owned */
    char *request;                /* request body copy, owned; NULL without one */
    char *body;                   /* answer body, NUL-terminated, owned; NULL before any byte */
    size_t len;                   /* bytes in body */
    size_t cap;                   /* bytes allocated for body */
    int too_big;                  /* the answer passed CONSUL_BODY_MAX and was cut off */
    uint64_t index;               /* X-Consul-Index, when has_index */
    int has_index;                /* the answer carried a parsable X-Consul-Index */
    int acl_deny;                 /* X-Consul-Default-ACL-Policy: deny */
    int known_leader;             /* X-Consul-KnownLeader: 1 true, 0 false, -1 absent */
    uint64_t last_contact_ms;     /* X-Consul-LastContact, when has_last_contact */
    int has_last_contact;         /* the answer carried a parsable X-Consul-LastContact */
    long status;                  /* HTTP status; 0 when there was no answer */
    CURLcode result;              /* transfer result */
    void *data;                   /* for the caller */
    char errbuf[CURL_ERROR_SIZE]; /* libcurl's detail on a failed transfer */
};

/* What became of a call. */
enum consul_outcome {
    CONSUL_OK,          /* 2xx with a complete body */
    CONSUL_UNREACHABLE, /* no complete answer: refused, timed out, reset, TLS failure */
    CONSUL_REJECTED,    /* the agent answered with an error status, or an oversized body */
};

/* Prepares call for METHOD (GET, PUT) on path (starting with "/v1/", query included, already
 * escaped) with an optional JSON body. timeout_ms bounds the whole exchange. 0 or -ENOMEM. */
int consul_call_init(struct consul_call *call, const struct consul_client *c, const char *method,
                     const char *path, const char *body, uint64_t timeout_ms);

/* Makes the call end early (as CONSUL_UNREACHABLE, CURLE_ABORTED_BY_CALLBACK) once *flag is
 * non-zero, so that a thread blocked in consul_call_perform can be stopped. flag must outlive
 * the call. */
void consul_call_cancel_on(struct consul_call *call, const atomic_int *flag);

/* Runs a prepared call to its end on the calling thread. */
enum consul_outcome consul_call_perform(struct consul_call *call);

/* Records the end of a call run by a multi handle (msg->data.result) and classifies it. */
enum consul_outcome consul_call_done(struct consul_call *call, CURLcode result);

/* Frees what the call holds (the easy handle must be out of any multi handle); may be called
 * on a zeroed call. */
void consul_call_cleanup(struct consul_call *call);

/* Classifies a finished call. */
enum consul_outcome consul_call_outcome(const struct consul_call *call);

/* One line on why a call failed: "cannot reach http://...: Connection refused", "HTTP 403:
 * Permission denied: ...". The agent's own text is kept (first line, cut at ~300 bytes). */
void consul_call_describe(const struct consul_call *call, char *out, size_t len);

/* How a log line starts a failure of call: "cannot reach Consul at", "incomplete answer from
 * Consul at" (the connection closed inside the body) or "Consul at" (it answered an error). */
const char *consul_call_failure_phrase(const struct consul_call *call);

/* 1 when the agent refused the token: 403 "Permission denied" (missing rule) or "ACL not found"
 * (unknown token), 0 otherwise. *unknown_token tells which. */
int consul_call_acl_denied(const struct consul_call *call, int *unknown_token);

/* Percent-encodes s for a path segment or query value (RFC 3986 unreserved kept). Returns the
 * length written, or -ENOSPC when out (len bytes, NUL included) is too small. */
int consul_escape(const char *s, char *out, size_t len);

/* "/v1/health/service/<svc>?dc=..&tag=..&stale&index=N&wait=Ns" for a watch. dc may be NULL
 * or ""; index 0 asks for an immediate answer (no index, no wait). 0 or -ENOSPC. */
int consul_health_path(char *out, size_t len, const char *service, const char *dc,
                       char *const *tags, size_t n_tags, int stale, uint64_t index,
                       uint64_t wait_ms);

#endif
