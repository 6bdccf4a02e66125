/* The admin API without the HTTP server: one request (method, raw URL, Authorization, body) in,
 * one answer (status, content type, body) out. What it reads and changes goes through a table of
 * effects, so admin.c binds it to the daemon and tests or fuzzers to a stub. Any thread that the
 * effects allow; no globals. */
#ifndef SLUICE_ADMIN_ROUTE_H
#define SLUICE_ADMIN_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "inifile.h"
#include "owner.h"

#define ADMIN_BODY_MAX (64 * 1024) /* larger request bodies are refused with 413 */

/* One request as the server received it. */
struct admin_request {
    const char *method;        /* "GET", "POST", ... */
    const char *url;           /* path with its %-escapes kept (a %2F stays in its segment) */
    const char *authorization; /* the Authorization header; NULL = none */
    const char *body;          /* the body (need not be NUL-terminated); NULL when len is 0 */
    size_t len;                /* bytes of body */
    int too_big;               /* the body passed ADMIN_BODY_MAX and was not kept: 413 */
};

/* Who may call what. */
struct admin_auth {
    const char *token; /* the secret; NULL = none configured (then nothing may change) */
    int read_auth;     /* reads (/, /status, /metrics) need the token too */
};

/* What the API reads and changes; ctx is handed to every call. */
struct admin_ops {
    const char *(*health_word)(void *ctx);    /* /healthz: "ok", or why not */
    char *(*status_json)(void *ctx);          /* /status, malloc'd; NULL = out of memory */
    char *(*metrics)(void *ctx, size_t *len); /* /metrics, malloc'd; NULL = out of memory */
    long (*service_find)(void *ctx, const char *name); /* index of a service, or -1 */
    /* An operator's action on instance id of service svc: 0, -ENOENT (no such instance), or
     * another negative errno. */
    int (*instance_admin)(void *ctx, long svc, const char *id, enum owner_admin action);
    /* An operator's weight (0..LB_WEIGHT_MAX) for instance id: the same results. */
    int (*instance_weight)(void *ctx, long svc, const char *id, uint32_t weight);
    /* The instance as status shows it after a change, into out (a JSON object's members,
     * "\"state\":...,\"weight\":..."); 0, or -ENOENT when it is gone. */
    int (*instance_show)(void *ctx, long svc, const char *id, char *out, size_t len);
    /* Reloads the configuration: 0, -ETIMEDOUT, -EBUSY, or another code with errs filled. */
    int (*reload)(void *ctx, struct ini_errors *errs);
    /* Told each change that was made (for the log). */
    void (*changed)(void *ctx, const char *svc, const char *id, const char *action);
};

/* One answer. */
struct admin_reply {
    unsigned status;  /* HTTP status */
    const char *type; /* Content-Type */
    const char *body; /* len bytes: owned, or static text */
    size_t len;       /* bytes of body */
    char *owned;      /* what admin_reply_free frees; NULL when body is static */
};

/* Routes rq and fills *out (always: an allocation failure answers 500 with static text). A JSON
 * answer is {"error": "..."} for every refusal. Free out with admin_reply_free. */
void admin_route(const struct admin_auth *auth, const struct admin_ops *ops, void *ctx,
                 const struct admin_request *rq, struct admin_reply *out);

/* Frees what admin_route stored in r; r may be zeroed. */
void admin_reply_free(struct admin_reply *r);

/* Constant-time comparison of a secret with what a caller sent: the time taken does not depend
 * on where they differ. 1 when equal. */
int admin_secret_equal(const char *secret, const char *given, size_t given_len);

#endif
