/* libcurl client for the Consul agent's HTTP API: settings from the INI file or CONSUL_* vars. */
#include "consul.h"

#include "consul_parse.h"
#include "inifile.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_ADDRESS   "127.0.0.1:8500"
#define DEFAULT_PORT      "8500"
#define TOKEN_MAX         4096 /* longest token (file) accepted */
#define CONNECT_MAX_MS    5000 /* a loopback or LAN agent answers a SYN far sooner */
#define DESCRIBE_BODY_MAX 300  /* bytes of the agent's error text kept in messages */

struct consul_client {
    char base[1024];  /* "http://host:port" (or "http://localhost" for unix) */
    char shown[1024]; /* address for logs */
    char *unix_path;  /* socket path for unix:// addresses, owned */
    char *connect_to; /* CURLOPT_CONNECT_TO entry when tls_server_name is set, owned */
    struct curl_slist connect_list; /* one-entry list around connect_to; libcurl keeps a pointer
                                     * to it during transfers, so it lives in the client */
    char *token;                    /* ACL secret, owned; NULL = none */
    char *ca_file, *ca_path;        /* CA bundle / directory, owned */
    char *cert_file, *key_file;     /* client certificate and key, owned */
    int skip_verify;                /* do not verify the server's certificate */
    uint64_t timeout_ms;            /* [consul] timeout: bound of a non-blocking call */
    int curl_held;                  /* this client counts in curl_users */
};

static pthread_mutex_t curl_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned curl_users; /* live clients: libcurl is initialised while this is > 0 */

/* --- settings ----------------------------------------------------------------------------- */

/* The INI value when set, else the environment variable's (empty counts as unset). */
static const char *setting(const char *ini, const char *env)
{
    const char *v;

    if (ini != NULL) {
        return ini;
    }
    v = getenv(env);
    return v != NULL && *v != '\0' ? v : NULL;
}

/* Go's strconv.ParseBool, which the Consul CLI uses for these variables; -1 when unparsable. */
static int env_bool(const char *name)
{
    static const char *const yes[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const no[] = {"0", "f", "F", "FALSE", "false", "False"};
    const char *v = getenv(name);

    for (size_t i = 0; v != NULL && i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcmp(v, yes[i]) == 0) {
            return 1;
        }
        if (strcmp(v, no[i]) == 0) {
            return 0;
        }
    }
    return -1;
}

static int dup_opt(char **dst, const char *src)
{
    if (src == NULL) {
        return 0;
    }
    *dst = strdup(src);
    return *dst != NULL ? 0 : -ENOMEM;
}

/* Reads a token file: the secret is the file's text without surrounding blanks. Only a regular
 * file is read, without blocking (a FIFO would hang the thread that starts the client). */
static int token_read(const char *path, char **out, char *err, size_t err_len)
{
    char msg[INI_PHRASE_MAX], *data, *s;
    size_t n;
    const char *why = ini_read_file(path, TOKEN_MAX + 2, &data, &n, NULL, msg);

    if (why != NULL) {
        int rc = -errno;
        snprintf(err, err_len, "token file %s %s", path, why);
        return rc;
    }
    for (s = data; isspace((unsigned char)*s); s++) {
    }
    while (n > 0 && (isspace((unsigned char)data[n - 1]) || data[n - 1] == '\0')) {
        data[--n] = '\0';
    }
    if (*s == '\0' || strlen(s) > TOKEN_MAX || strpbrk(s, "\r\n") != NULL) {
        snprintf(err, err_len, "token file %s %s", path,
                 *s == '\0' ? "is empty" : "does not hold one token");
        free(data);
        return -EINVAL;
    }
    *out = strdup(s);
    free(data);
    return *out != NULL ? 0 : -ENOMEM;
}

/* INI token / token_file, else CONSUL_HTTP_TOKEN_FILE (which wins), else CONSUL_HTTP_TOKEN. */
static int token_resolve(struct consul_client *c, const struct consul_conf *cfg, char *err,
                         size_t err_len)
{
    const char *file;

    if (cfg != NULL && cfg->token != NULL) {
        return dup_opt(&c->token, cfg->token);
    }
    if (cfg != NULL && cfg->token_file != NULL) {
        return token_read(cfg->token_file, &c->token, err, err_len);
    }
    file = setting(NULL, "CONSUL_HTTP_TOKEN_FILE");
    if (file != NULL) {
        return token_read(file, &c->token, err, err_len);
    }
    return dup_opt(&c->token, setting(NULL, "CONSUL_HTTP_TOKEN"));
}

/* host:port (brackets kept for IPv6) with the default port added when there is none. */
static void host_port(const char *text, char *out, size_t len)
{
    const char *bracket = strchr(text, ']');
    const char *colon = strrchr(text, ':');
    int has_port = colon != NULL && (bracket == NULL || colon > bracket);

    snprintf(out, len, "%s%s%s", text, has_port ? "" : ":", has_port ? "" : DEFAULT_PORT);
}

/* Scheme and host from the address; tls_server_name turns into CURLOPT_CONNECT_TO so that
 * libcurl verifies (and sends as SNI) that name while connecting to the real address. */
static int address_resolve(struct consul_client *c, const struct consul_conf *cfg)
{
    const char *addr = setting(cfg != NULL ? cfg->address : NULL, "CONSUL_HTTP_ADDR");
    const char *sni = setting(cfg != NULL ? cfg->tls_server_name : NULL, "CONSUL_TLS_SERVER_NAME");
    int https = env_bool("CONSUL_HTTP_SSL") == 1;
    char hp[512];

    addr = addr != NULL ? addr : DEFAULT_ADDRESS;
    if (strncmp(addr, "unix://", 7) == 0) {
        snprintf(c->base, sizeof(c->base), "http://localhost");
        snprintf(c->shown, sizeof(c->shown), "%s", addr);
        return dup_opt(&c->unix_path, addr + 7);
    }
    if (strncmp(addr, "https://", 8) == 0 || strncmp(addr, "http://", 7) == 0) {
        https = addr[4] == 's';
        addr = strstr(addr, "://") + 3;
    }
    host_port(addr, hp, sizeof(hp));
    snprintf(c->shown, sizeof(c->shown), "%s://%s", https ? "https" : "http", hp);
    if (!https || sni == NULL) {
        snprintf(c->base, sizeof(c->base), "%s", c->shown);
        return 0;
    }
    const char *port = strrchr(hp, ':') + 1;
    snprintf(c->base, sizeof(c->base), "https://%s:%s", sni, port);
    if (asprintf(&c->connect_to, "%s:%s:%.*s", sni, port, (int)(port - 1 - hp), hp) < 0) {
        c->connect_to = NULL;
        return -ENOMEM;
    }
    c->connect_list.data = c->connect_to;
    return 0;
}

static int tls_resolve(struct consul_client *c, const struct consul_conf *cfg)
{
    const struct consul_conf none = {0};
    int verify;

    cfg = cfg != NULL ? cfg : &none;
    if (dup_opt(&c->ca_file, setting(cfg->ca_file, "CONSUL_CACERT")) != 0 ||
        dup_opt(&c->ca_path, setting(cfg->ca_path, "CONSUL_CAPATH")) != 0 ||
        dup_opt(&c->cert_file, setting(cfg->cert_file, "CONSUL_CLIENT_CERT")) != 0 ||
        dup_opt(&c->key_file, setting(cfg->key_file, "CONSUL_CLIENT_KEY")) != 0) {
        return -ENOMEM;
    }
    if (cfg->tls_skip_verify != INI_FLAG_UNSET) {
        c->skip_verify = cfg->tls_skip_verify == INI_FLAG_ON;
    } else {
        verify = env_bool("CONSUL_HTTP_SSL_VERIFY");
        c->skip_verify = verify == 0;
    }
    return 0;
}

int consul_curl_use(void)
{
    int rc = 0;

    pthread_mutex_lock(&curl_lock);
    if (curl_users == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        rc = -ENOMEM;
    } else {
        curl_users++;
    }
    pthread_mutex_unlock(&curl_lock);
    return rc;
}

void consul_curl_unuse(void)
{
    pthread_mutex_lock(&curl_lock);
    if (curl_users > 0 && --curl_users == 0) {
        curl_global_cleanup();
    }
    pthread_mutex_unlock(&curl_lock);
}

int consul_client_create(const struct consul_conf *cfg, struct consul_client **out, char *err,
                         size_t err_len)
{
    struct consul_client *c = calloc(1, sizeof(*c));
    int rc;

    *out = NULL;
    snprintf(err, err_len, "out of memory");
    if (c == NULL) {
        return -ENOMEM;
    }
    c->timeout_ms =
        cfg != NULL && cfg->timeout_ms != 0 ? cfg->timeout_ms : CONSUL_TIMEOUT_DEFAULT_MS;
    rc = address_resolve(c, cfg);
    if (rc == 0) {
        rc = tls_resolve(c, cfg);
    }
    if (rc == 0) {
        rc = token_resolve(c, cfg, err, err_len);
    }
    if (rc == 0 && (rc = consul_curl_use()) != 0) {
        snprintf(err, err_len, "libcurl cannot be initialised");
    }
    c->curl_held = rc == 0;
    if (rc != 0) {
        consul_client_destroy(c);
        return rc;
    }
    *out = c;
    return 0;
}

void consul_client_destroy(struct consul_client *c)
{
    if (c == NULL) {
        return;
    }
    if (c->token != NULL) {
        explicit_bzero(c->token, strlen(c->token)); /* secrets do not linger in freed memory */
    }
    free(c->token);
    free(c->unix_path);
    free(c->connect_to);
    free(c->ca_file);
    free(c->ca_path);
    free(c->cert_file);
    free(c->key_file);
    if (c->curl_held) {
        consul_curl_unuse();
    }
    free(c);
}

const char *consul_client_address(const struct consul_client *c)
{
    return c->shown;
}

uint64_t consul_client_timeout_ms(const struct consul_client *c)
{
    return c->timeout_ms;
}

int consul_client_has_token(const struct consul_client *c)
{
    return c->token != NULL;
}

/* --- calls -------------------------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t n, void *user)
{
    struct consul_call *call = user;
    size_t bytes = size * n;

    if (call->len + bytes > CONSUL_BODY_MAX) {
        call->too_big = 1;
        return 0; /* libcurl ends the transfer with CURLE_WRITE_ERROR */
    }
    if (call->len + bytes + 1 > call->cap) {
        size_t cap = call->cap != 0 ? call->cap : 4096;
        while (cap < call->len + bytes + 1) {
            cap *= 2;
        }
        char *grown = realloc(call->body, cap);
        if (grown == NULL) {
            return 0;
        }
        call->body = grown;
        call->cap = cap;
    }
    memcpy(call->body + call->len, data, bytes);
    call->len += bytes;
    call->body[call->len] = '\0';
    return bytes;
}

/* Value of "Name: value" when line is that header (case-insensitive name), else NULL. */
static const char *header_value(const char *line, size_t len, const char *name, size_t *vlen)
{
    size_t n = strlen(name);
    const char *v;

    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':') {
        return NULL;
    }
    v = line + n + 1;
    *vlen = len - n - 1;
    while (*vlen > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        (*vlen)--;
    }
    while (*vlen > 0 && (v[*vlen - 1] == '\r' || v[*vlen - 1] == '\n' || v[*vlen - 1] == ' ')) {
        (*vlen)--;
    }
    return v;
}

static size_t on_header(char *data, size_t size, size_t n, void *user)
{
    struct consul_call *call = user;
    size_t len = size * n, vlen;
    const char *v;

    if ((v = header_value(data, len, "X-Consul-Index", &vlen)) != NULL) {
        call->has_index = consul_parse_index(v, vlen, &call->index) == 0;
    } else if ((v = header_value(data, len, "X-Consul-Default-ACL-Policy", &vlen)) != NULL) {
        call->acl_deny = vlen == 4 && strncasecmp(v, "deny", 4) == 0;
    } else if ((v = header_value(data, len, "X-Consul-KnownLeader", &vlen)) != NULL) {
        call->known_leader = vlen == 4 && strncasecmp(v, "true", 4) == 0;
    } else if ((v = header_value(data, len, "X-Consul-LastContact", &vlen)) != NULL) {
        /* milliseconds, digits only like the index */
        call->has_last_contact = consul_parse_index(v, vlen, &call->last_contact_ms) == 0;
    }
    return len;
}

static int call_headers(struct consul_call *call, const struct consul_client *c, const char *body)
{
    char *auth = NULL;
    struct curl_slist *h = curl_slist_append(NULL, "Expect:"); /* no 100-continue round trip */

    if (h != NULL && body != NULL) {
        h = curl_slist_append(h, "Content-Type: application/json");
    }
    if (h != NULL && c->token != NULL) {
        if (asprintf(&auth, "X-Consul-Token: %s", c->token) < 0) {
            auth = NULL;
        }
        struct curl_slist *with = auth != NULL ? curl_slist_append(h, auth) : NULL;
        if (auth != NULL) {
            explicit_bzero(auth, strlen(auth));
        }
        free(auth);
        if (with == NULL) {
            curl_slist_free_all(h);
            h = NULL;
        }
    }
    call->headers = h;
    return h != NULL ? 0 : -ENOMEM;
}

static void call_tls(CURL *e, const struct consul_client *c)
{
    if (c->ca_file != NULL) {
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
    }
    if (c->ca_path != NULL) {
        curl_easy_setopt(e, CURLOPT_CAPATH, c->ca_path);
    }
    if (c->cert_file != NULL) {
        curl_easy_setopt(e, CURLOPT_SSLCERT, c->cert_file);
    }
    if (c->key_file != NULL) {
        curl_easy_setopt(e, CURLOPT_SSLKEY, c->key_file);
    }
    if (c->skip_verify) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (c->connect_to != NULL) {
        curl_easy_setopt(e, CURLOPT_CONNECT_TO, &c->connect_list);
    }
}

void consul_curl_direct(CURL *e)
{
    /* "" disables proxies, the http_proxy/ALL_PROXY environment included: a proxy named by the
     * environment would see the ACL token, and a health check must reach the instance itself */
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
}

static void call_options(struct consul_call *call, const struct consul_client *c,
                         const char *method, const char *url, uint64_t timeout_ms)
{
    CURL *e = call->easy;
    long connect_ms = timeout_ms < CONNECT_MAX_MS ? (long)timeout_ms : CONNECT_MAX_MS;

    curl_easy_setopt(e, CURLOPT_URL, url);
    consul_curl_direct(e);
    curl_easy_setopt(e, CURLOPT_PRIVATE, call);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM-based resolver timeouts */
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->errbuf);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L); /* blocking queries idle for minutes */
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, call);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, call);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, call->headers);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "sluice/" SLUICE_VERSION);
    /* "": every encoding libcurl decodes; a large catalog answer compresses ~10x, and
     * CONSUL_BODY_MAX still caps the decoded bytes in on_body */
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    if (c->unix_path != NULL) {
        curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, c->unix_path);
    }
    if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->request != NULL ? call->request : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE,
                         call->request != NULL ? (long)strlen(call->request) : 0L);
    }
    call_tls(e, c);
}

int consul_call_init(struct consul_call *call, const struct consul_client *c, const char *method,
                     const char *path, const char *body, uint64_t timeout_ms)
{
    char *url = NULL;

    memset(call, 0, sizeof(*call));
    call->known_leader = -1;
    call->result = CURLE_OK;
    call->easy = curl_easy_init();
    if (call->easy == NULL || call_headers(call, c, body) != 0 ||
        (body != NULL && (call->request = strdup(body)) == NULL) ||
        asprintf(&url, "%s%s", c->base, path) < 0) {
        consul_call_cleanup(call);
        return -ENOMEM;
    }
    call_options(call, c, method, url, timeout_ms);
    free(url); /* libcurl copies string options */
    return 0;
}

static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return atomic_load((const atomic_int *)user) != 0; /* non-zero aborts the transfer */
}

void consul_call_cancel_on(struct consul_call *call, const atomic_int *flag)
{
    curl_easy_setopt(call->easy, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(call->easy, CURLOPT_XFERINFODATA, (void *)flag);
    curl_easy_setopt(call->easy, CURLOPT_NOPROGRESS, 0L);
}

enum consul_outcome consul_call_done(struct consul_call *call, CURLcode result)
{
    call->result = result;
    curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &call->status);
    return consul_call_outcome(call);
}

enum consul_outcome consul_call_perform(struct consul_call *call)
{
    return consul_call_done(call, curl_easy_perform(call->easy));
}

void consul_call_cleanup(struct consul_call *call)
{
    if (call->easy != NULL) {
        curl_easy_cleanup(call->easy);
    }
    curl_slist_free_all(call->headers);
    free(call->request);
    free(call->body);
    call->easy = NULL;
    call->headers = NULL;
    call->request = NULL;
    call->body = NULL;
    call->len = call->cap = 0;
}

enum consul_outcome consul_call_outcome(const struct consul_call *call)
{
    if (call->too_big) {
        return CONSUL_REJECTED;
    }
    if (call->result != CURLE_OK) {
        return CONSUL_UNREACHABLE;
    }
    return call->status >= 200 && call->status < 300 ? CONSUL_OK : CONSUL_REJECTED;
}

void consul_call_describe(const struct consul_call *call, char *out, size_t len)
{
    const char *text = call->body != NULL ? call->body : "";
    size_t n = strcspn(text, "\r\n");

    if (call->too_big) {
        snprintf(out, len, "answer larger than %u MiB refused", CONSUL_BODY_MAX >> 20);
    } else if (call->result != CURLE_OK) {
        snprintf(out, len, "%s",
                 call->errbuf[0] != '\0' ? call->errbuf : curl_easy_strerror(call->result));
    } else if (call->status >= 200 && call->status < 300) {
        snprintf(out, len, "HTTP %ld", call->status);
    } else {
        snprintf(out, len, "HTTP %ld%s%.*s", call->status, n > 0 ? ": " : "",
                 (int)(n < DESCRIBE_BODY_MAX ? n : DESCRIBE_BODY_MAX), text);
    }
}

const char *consul_call_failure_phrase(const struct consul_call *call)
{
    if (call->result == CURLE_PARTIAL_FILE) {
        return "incomplete answer from Consul at"; /* it answered, then closed mid-body */
    }
    return consul_call_outcome(call) == CONSUL_UNREACHABLE ? "cannot reach Consul at" : "Consul at";
}

int consul_call_acl_denied(const struct consul_call *call, int *unknown_token)
{
    const char *text = call->body != NULL ? call->body : "";

    *unknown_token = call->status == 403 && strncmp(text, "ACL not found", 13) == 0;
    return call->status == 403;
}

/* --- paths -------------------------------------------------------------------------------- */

int consul_escape(const char *s, char *out, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t used = 0;

    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        int plain = isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~';
        if (used + (plain ? 1 : 3) >= len) {
            return -ENOSPC;
        }
        if (plain) {
            out[used++] = (char)ch;
        } else {
            out[used++] = '%';
            out[used++] = hex[ch >> 4];
            out[used++] = hex[ch & 15];
        }
    }
    if (used >= len) {
        return -ENOSPC;
    }
    out[used] = '\0';
    return (int)used;
}

/* Appends "<sep>name" or "<sep>name=escaped(value)" to out; sep is '?' first, then '&'. */
static int query_add(char *out, size_t len, size_t *used, const char *name, const char *value)
{
    char esc[1024];
    int n;

    if (value != NULL && consul_escape(value, esc, sizeof(esc)) < 0) {
        return -ENOSPC;
    }
    n = snprintf(out + *used, len - *used, "%c%s%s%s", strchr(out, '?') ? '&' : '?', name,
                 value != NULL ? "=" : "", value != NULL ? esc : "");
    if (n < 0 || (size_t)n >= len - *used) {
        return -ENOSPC;
    }
    *used += (size_t)n;
    return 0;
}

int consul_health_path(char *out, size_t len, const char *service, const char *dc,
                       char *const *tags, size_t n_tags, int stale, uint64_t index,
                       uint64_t wait_ms)
{
    char esc[512], num[48];
    size_t used;
    int rc = consul_escape(service, esc, sizeof(esc));
    int n = rc < 0 ? -1 : snprintf(out, len, "/v1/health/service/%s", esc);

    if (n < 0 || (size_t)n >= len) {
        return -ENOSPC;
    }
    used = (size_t)n;
    rc = dc != NULL && dc[0] != '\0' ? query_add(out, len, &used, "dc", dc) : 0;
    for (size_t i = 0; rc == 0 && i < n_tags; i++) {
        rc = query_add(out, len, &used, "tag", tags[i]);
    }
    if (rc == 0 && stale) {
        rc = query_add(out, len, &used, "stale", NULL);
    }
    if (rc == 0 && index > 0) {
        snprintf(num, sizeof(num), "%llu", (unsigned long long)index);
        rc = query_add(out, len, &used, "index", num);
        snprintf(num, sizeof(num), "%llums", (unsigned long long)wait_ms);
        rc = rc == 0 ? query_add(out, len, &used, "wait", num) : rc;
    }
    return rc;
}
