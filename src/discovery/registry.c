/* The registry thread: c-ares resolutions (SRV targets, A/AAAA names) and inotify-watched JSON
 * files, each good answer merged by the service's owner, each failure kept out of service. */
#include "registry.h"

#include <arpa/inet.h>
#include <ares.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "owner.h"
#include "registry_parse.h"

#define TARGET_ADDRS_MAX  16                  /* addresses kept per SRV target or host name */
#define FILE_SETTLE_MS    50                  /* a change is read this long after its last event */
#define FILE_SIZE_MAX     (16u * 1024 * 1024) /* a bigger instance file is refused */
#define WATCH_RETRY_MS    1000                /* a directory that cannot be watched, again */
#define FAIL_RETRY_MAX_MS 30000               /* failed resolutions retry at most this late */
#define DNS_TRIES         2                   /* c-ares tries per server and query */
#define INFLIGHT_MAX                                                                               \
    64 /* target lookups of one round at once: a burst of 2,000 datagrams                          \
        * overflows a server's socket buffer and then waits for timeouts */
#define INOTIFY_MASK                                                                               \
    (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE | IN_ATTRIB)

struct source;

/* One SRV record (or the A/AAAA name itself) being resolved to addresses. */
struct dns_target {
    struct dns_round *round;                 /* the resolution it belongs to */
    char host[256];                          /* target name, without the final dot */
    uint16_t port;                           /* port of its instances */
    uint32_t weight;                         /* their weight */
    struct net_addr addrs[TARGET_ADDRS_MAX]; /* what it resolved to */
    size_t n_addrs;                          /* entries in addrs */
    int status;                              /* c-ares status of its lookup */
};

/* One resolution in flight. */
struct dns_round {
    struct source *s;     /* whose */
    struct dns_target *t; /* targets, owned */
    size_t n;             /* entries in t */
    size_t pending;       /* lookups not finished (+1 while they are being started) */
    size_t next;          /* targets whose lookup was started */
    size_t inflight;      /* lookups running now, at most INFLIGHT_MAX */
    uint32_t ttl;         /* smallest TTL seen, seconds */
    uint64_t started_us;  /* clock_us at start */
    char error[128];      /* why the SRV query failed, "" if it did not */
    int empty;            /* the name exists with no record (or does not exist) */
};

struct registry;

/* One service's source. */
struct source {
    struct registry *r;               /* the registry */
    struct registry_target t;         /* what to read and where it goes */
    ares_channel ch;                  /* DNS: its resolver */
    int ch_ready;                     /* ch initialised */
    struct dns_round *round;          /* DNS: the resolution in flight, or NULL */
    int wd;                           /* file: watch of its directory, -1 = none */
    char dir[PATH_MAX];               /* file: its directory */
    char *content;                    /* file: bytes of the last read, owned */
    size_t content_len;               /* their length */
    int content_read;                 /* content holds a read */
    uint64_t next_ms;                 /* next resolution or read; UINT64_MAX = on an event */
    unsigned fails_in_row;            /* failed attempts since the last good one */
    uint64_t last_ok_ms;              /* clock_ms of the last good answer */
    struct registry_entry *last;      /* DNS: the last published set (sorted by id), owned */
    size_t n_last;                    /* entries in last */
    struct registry_source_status st; /* under r->lock */
};

struct registry {
    struct source *src;     /* n sources */
    size_t n;               /* entries in src */
    struct logger *log;     /* events */
    int wake_fd;            /* eventfd: stop */
    int ino_fd;             /* inotify, -1 without file sources */
    struct pollfd *fds;     /* poll set: wake, inotify, then c-ares sockets */
    struct source **fd_src; /* the source of each c-ares entry of fds */
    size_t fds_cap;         /* entries of fds */
    pthread_t thread;       /* the thread */
    int started;            /* thread running */
    atomic_int stop;        /* asked to stop */
    int destroying;         /* c-ares callbacks from ares_destroy publish nothing */
    pthread_mutex_t lock;   /* guards every source's st */
};

static const char *const kind_names[] = {"dns", "file", "hosts"};

static const char *source_name(const struct source *s)
{
    return s->t.kind == REGISTRY_DNS    ? s->t.conf->dns_name
           : s->t.kind == REGISTRY_FILE ? s->t.conf->file
                                        : "backends";
}

/* --- outcomes, shared by both kinds ------------------------------------------------------- */

static uint64_t clamp_u64(uint64_t v, uint64_t lo, uint64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* A failed attempt: counted every time, logged once per outage; the last good set stays. */
static void source_fail(struct source *s, const char *why)
{
    const struct registry_conf *c = s->t.conf;
    uint64_t now = clock_ms();
    int first;

    pthread_mutex_lock(&s->r->lock);
    first = !s->st.failing;
    s->st.failing = 1;
    s->st.errors++;
    s->st.outages += (unsigned long long)first;
    snprintf(s->st.last_error, sizeof(s->st.last_error), "%s", why);
    size_t kept = s->st.instances;
    pthread_mutex_unlock(&s->r->lock);
    if (first)
        log_event(s->r->log, LOG_LEVEL_WARN, "registry_failed", LOG_STR("service", s->t.name),
                  LOG_STR("kind", kind_names[s->t.kind]), LOG_STR("source", source_name(s)),
                  LOG_STR("error", why), LOG_INT("kept_instances", kept));
    s->fails_in_row++;
    if (s->t.kind != REGISTRY_FILE) {
        /* back off from dns_min_interval, doubling, so a dead server is not hammered */
        unsigned shift = s->fails_in_row - 1 < 10 ? s->fails_in_row - 1 : 10;
        uint64_t cap =
            c->dns_max_interval_ms < FAIL_RETRY_MAX_MS ? c->dns_max_interval_ms : FAIL_RETRY_MAX_MS;
        uint64_t ceiling = cap;
        if (ceiling < c->dns_min_interval_ms) /* a dns_max_interval below the retry cap */
            ceiling = c->dns_min_interval_ms;
        s->next_ms =
            now + clamp_u64(c->dns_min_interval_ms << shift, c->dns_min_interval_ms, ceiling);
    }
}

/* A good answer (entries sorted by id, unique): published when it changes the set. */
static int source_good(struct source *s, const struct registry_entry *e, size_t n, uint32_t ttl,
                       uint64_t resolve_us)
{
    struct owner_member *m = calloc(n ? n : 1, sizeof(*m));
    uint64_t t0 = clock_us();
    int rc, recovered;

    if (m == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        m[i] = (struct owner_member){.id = e[i].id, .addr = e[i].addr, .weight = e[i].weight};
    rc = owner_set_members(s->t.owner, m, n);
    free(m);
    if (rc < 0)
        return rc;
    uint64_t publish_us = clock_us() - t0;
    struct registry_entry *copy =
        s->t.kind == REGISTRY_FILE ? NULL : malloc((n ? n : 1) * sizeof(*e));
    if (copy != NULL) { /* without it, a failed target loses its instances in the next round */
        memcpy(copy, e, n * sizeof(*e));
        free(s->last);
        s->last = copy;
        s->n_last = n;
    }
    s->fails_in_row = 0;
    pthread_mutex_lock(&s->r->lock);
    s->last_ok_ms = clock_ms();
    recovered = s->st.failing;
    s->st.failing = 0;
    s->st.synced = 1;
    s->st.instances = n;
    s->st.ttl_s = ttl;
    s->st.resolve_us = resolve_us;
    s->st.publishes += rc > 0 ? 1u : 0u;
    s->st.last_error[0] = '\0';
    pthread_mutex_unlock(&s->r->lock);
    if (recovered)
        log_event(s->r->log, LOG_LEVEL_INFO, "registry_recovered", LOG_STR("service", s->t.name),
                  LOG_STR("kind", kind_names[s->t.kind]), LOG_STR("source", source_name(s)));
    if (rc > 0)
        log_event(s->r->log, LOG_LEVEL_INFO, "registry_published", LOG_STR("service", s->t.name),
                  LOG_STR("kind", kind_names[s->t.kind]), LOG_STR("source", source_name(s)),
                  LOG_INT("instances", n), LOG_INT("ttl", ttl), LOG_INT("resolve_us", resolve_us),
                  LOG_INT("publish_us", publish_us));
    return 0;
}

/* --- DNS ---------------------------------------------------------------------------------- */

static void round_free(struct dns_round *round)
{
    if (round == NULL)
        return;
    round->s->round = NULL;
    free(round->t);
    free(round);
}

/* A target whose lookup failed keeps the instances it had (ids "host:port" and
 * "host:port@IP"): copies them to out (NULL: only counts) and returns how many. */
static size_t target_kept(const struct source *s, const struct dns_target *t,
                          struct registry_entry *out)
{
    char id[SNAPSHOT_ID_MAX];
    size_t k = 0;

    if (t->n_addrs != 0 || t->status == ARES_SUCCESS || s->t.kind == REGISTRY_HOSTS ||
        !registry_dns_is_srv(s->t.conf->dns_name))
        return 0;
    int len = snprintf(id, sizeof(id), "%.180s:%u", t->host, t->port);
    for (size_t i = 0; len > 0 && i < s->n_last; i++) {
        const char *c = s->last[i].id;
        if (strncmp(c, id, (size_t)len) == 0 && (c[len] == '\0' || c[len] == '@')) {
            if (out != NULL)
                out[k] = s->last[i];
            k++;
        }
    }
    return k;
}

/* The instances of a finished round: SRV ids are "target:port" (with "@IP" when a target has
 * several addresses), so an instance keeps its state while its address changes; an A/AAAA
 * name's ids are the addresses. */
static struct registry_entry *round_entries(const struct dns_round *round, size_t *n)
{
    const struct lb_backends *b = round->s->t.backends;
    size_t total = 0, k = 0;
    int srv = round->s->t.kind == REGISTRY_HOSTS || registry_dns_is_srv(round->s->t.conf->dns_name);

    for (size_t i = 0; i < round->n; i++)
        total += round->t[i].n_addrs + target_kept(round->s, &round->t[i], NULL);
    total += b != NULL ? b->n : 0;
    struct registry_entry *e = calloc(total ? total : 1, sizeof(*e));
    if (e == NULL)
        return NULL;
    for (size_t i = 0; b != NULL && i < b->n; i++)
        if (b->items[i].host == NULL) { /* a static IP address keeps its id, its address */
            e[k].addr = b->items[i].addr;
            e[k].weight = b->items[i].weight;
            snprintf(e[k].id, sizeof(e[k].id), "%s", b->items[i].addr.text);
            k++;
        }
    for (size_t i = 0; i < round->n; i++) {
        const struct dns_target *t = &round->t[i];
        k += target_kept(round->s, t, e + k);
        for (size_t a = 0; a < t->n_addrs; a++, k++) {
            char ip[NET_ADDR_MAX];
            e[k].addr = t->addrs[a];
            e[k].weight = t->weight;
            net_addr_ip_text(&t->addrs[a], ip, sizeof(ip));
            if (!srv)
                snprintf(e[k].id, sizeof(e[k].id), "%s", t->addrs[a].text);
            else if (t->n_addrs == 1)
                snprintf(e[k].id, sizeof(e[k].id), "%.180s:%u", t->host, t->port);
            else
                snprintf(e[k].id, sizeof(e[k].id), "%.120s:%u@%s", t->host, t->port, ip);
        }
    }
    *n = k;
    return e;
}

/* Sorted by id, duplicates (a target listed twice) dropped. */
static size_t entries_unique(struct registry_entry *e, size_t n)
{
    char err[8];
    size_t k = 0;

    (void)registry_entries_sort(e, n, err, sizeof(err));
    for (size_t i = 0; i < n; i++)
        if (k == 0 || strcmp(e[k - 1].id, e[i].id) != 0)
            e[k++] = e[i];
    return k;
}

/* A static host name that resolved to nothing (no error, no address). */
static int hosts_unresolved(const struct dns_round *round)
{
    for (size_t i = 0; i < round->n; i++)
        if (round->t[i].n_addrs == 0)
            return 1;
    return 0;
}

/* Every host name must resolve: the first that did not is named, the last good set stays. */
static void hosts_fail(struct source *s, const struct dns_round *round)
{
    char why[320];

    for (size_t i = 0; i < round->n; i++)
        if (round->t[i].status != ARES_SUCCESS || round->t[i].n_addrs == 0) {
            snprintf(why, sizeof(why), "%.200s: %s", round->t[i].host,
                     round->t[i].status != ARES_SUCCESS ? ares_strerror(round->t[i].status)
                                                        : "no address");
            source_fail(s, why);
            return;
        }
}

static void round_finish(struct dns_round *round)
{
    struct source *s = round->s;
    size_t n = 0;
    struct registry_entry *e = round->error[0] != '\0' ? NULL : round_entries(round, &n);
    const char *first_error = NULL;
    char why[192];

    for (size_t i = 0; i < round->n && first_error == NULL; i++)
        if (round->t[i].status != ARES_SUCCESS)
            first_error = ares_strerror(round->t[i].status);
    n = e != NULL ? entries_unique(e, n) : 0;
    if (round->error[0] != '\0') {
        source_fail(s, round->error);
    } else if (s->t.kind == REGISTRY_HOSTS && (first_error != NULL || hosts_unresolved(round))) {
        hosts_fail(s, round);
    } else if (e == NULL) { // NOLINT(bugprone-branch-clone): the same words for two causes
        source_fail(s, "out of memory");
    } else if (n == 0 && !round->empty && first_error != NULL) {
        snprintf(why, sizeof(why), "no target resolved: %s", first_error);
        source_fail(s, why);
    } else if (n == 0 && !s->t.conf->dns_empty_is_valid) {
        source_fail(s, "empty answer (dns_empty_is_valid = off keeps the last set)");
    } else if (source_good(s, e, n, round->ttl, clock_us() - round->started_us) != 0) {
        source_fail(s, "out of memory");
    } else {
        const struct registry_conf *c = s->t.conf;
        uint64_t ttl_ms = round->ttl == UINT32_MAX ? c->dns_max_interval_ms : round->ttl * 1000ULL;
        s->next_ms = clock_ms() + clamp_u64(ttl_ms, c->dns_min_interval_ms, c->dns_max_interval_ms);
    }
    free(e);
    round_free(round);
}

/* One lookup of the round ended. */
static void round_step(struct dns_round *round)
{
    if (--round->pending != 0)
        return;
    if (round->s->r->destroying)
        round_free(round);
    else
        round_finish(round);
}

static void target_add_addr(struct dns_target *t, const struct sockaddr *sa)
{
    struct net_addr a;

    if (t->n_addrs == TARGET_ADDRS_MAX ||
        net_addr_from_sockaddr(&a, sa,
                               sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                         : sizeof(struct sockaddr_in)) != 0)
        return;
    struct sockaddr_storage with_port = a.sa;
    if (sa->sa_family == AF_INET6)
        ((struct sockaddr_in6 *)&with_port)->sin6_port = htons(t->port);
    else
        ((struct sockaddr_in *)&with_port)->sin_port = htons(t->port);
    (void)net_addr_from_sockaddr(&a, (const struct sockaddr *)&with_port, a.len);
    for (size_t i = 0; i < t->n_addrs; i++)
        if (strcmp(t->addrs[i].text, a.text) == 0)
            return;
    t->addrs[t->n_addrs++] = a;
}

static void round_launch(struct dns_round *round);

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct dns_target *t = arg;

    (void)timeouts;
    t->status = status;
    if ((status == ARES_ENOTFOUND || status == ARES_ENODATA) &&
        t->round->s->t.kind == REGISTRY_DNS && !registry_dns_is_srv(t->round->s->t.conf->dns_name))
        t->round->empty = 1; /* an A/AAAA name without address: an empty answer */
    for (struct ares_addrinfo_node *n = res != NULL ? res->nodes : NULL; n != NULL;
         n = n->ai_next) {
        if (n->ai_ttl >= 0 && (uint32_t)n->ai_ttl < t->round->ttl)
            t->round->ttl = (uint32_t)n->ai_ttl;
        target_add_addr(t, n->ai_addr);
    }
    if (res != NULL)
        ares_freeaddrinfo(res);
    t->round->inflight--;
    round_launch(t->round);
    round_step(t->round);
}

static void target_resolve(struct source *s, struct dns_target *t)
{
    struct ares_addrinfo_hints hints = {
        .ai_flags = ARES_AI_NOSORT, .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};

    t->round->pending++;
    t->round->inflight++;
    ares_getaddrinfo(s->ch, t->host, NULL, &hints, on_addrinfo, t);
}

/* Starts target lookups up to INFLIGHT_MAX at once; each one that ends starts the next. */
static void round_launch(struct dns_round *round)
{
    /* round->t is NULL only with n = 0 (out of memory): said here for the analyzer */
    while (round->t != NULL && !round->s->r->destroying && round->next < round->n &&
           round->inflight < INFLIGHT_MAX)
        target_resolve(round->s, &round->t[round->next++]);
}

/* The SRV records of the lowest priority (RFC 2782: higher ones are for when those fail). */
static int srv_targets(struct dns_round *round, struct ares_srv_reply *srv)
{
    unsigned short best = USHRT_MAX;
    size_t n = 0, k = 0;

    for (struct ares_srv_reply *r = srv; r != NULL; r = r->next)
        best = r->priority < best ? r->priority : best;
    for (struct ares_srv_reply *r = srv; r != NULL; r = r->next)
        n += r->priority == best;
    round->t = calloc(n ? n : 1, sizeof(*round->t));
    if (round->t == NULL)
        return -ENOMEM;
    for (struct ares_srv_reply *r = srv; r != NULL; r = r->next) {
        if (r->priority != best)
            continue;
        struct dns_target *t = &round->t[k++];
        t->round = round;
        snprintf(t->host, sizeof(t->host), "%s", r->host);
        t->port = r->port;
        t->weight = r->weight != 0 ? r->weight : 1; /* weight 0: "rarely", the least we have */
    }
    round->n = n;
    return 0;
}

static void on_srv(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_round *round = arg;
    struct ares_srv_reply *srv = NULL;

    (void)timeouts;
    if (status == ARES_SUCCESS)
        status = ares_parse_srv_reply(abuf, alen, &srv);
    if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
        round->empty = 1;
    } else if (status != ARES_SUCCESS) {
        snprintf(round->error, sizeof(round->error), "SRV query: %s", ares_strerror(status));
    } else if (srv_targets(round, srv) != 0) {
        snprintf(round->error, sizeof(round->error), "out of memory");
    } else {
        round->ttl = registry_dns_answer_ttl(abuf, (size_t)alen);
        round_launch(round);
    }
    if (srv != NULL)
        ares_free_data(srv);
    round_step(round); /* the SRV query's own share */
}

/* One lookup per host name of the static list. */
static void hosts_start(struct source *s, struct dns_round *round)
{
    const struct lb_backends *b = s->t.backends;

    round->t = calloc(b->n_hosts ? b->n_hosts : 1, sizeof(*round->t));
    if (round->t == NULL)
        snprintf(round->error, sizeof(round->error), "out of memory");
    for (size_t i = 0; round->t != NULL && i < b->n; i++) {
        if (b->items[i].host == NULL)
            continue;
        struct dns_target *t = &round->t[round->n++];
        *t = (struct dns_target){
            .round = round, .port = b->items[i].port, .weight = b->items[i].weight};
        snprintf(t->host, sizeof(t->host), "%s", b->items[i].host);
    }
    round_launch(round);
    round_step(round);
}

static void dns_start(struct source *s)
{
    const struct registry_conf *c = s->t.conf;
    struct dns_round *round = calloc(1, sizeof(*round));

    if (round == NULL) {
        source_fail(s, "out of memory");
        return;
    }
    pthread_mutex_lock(&s->r->lock);
    s->st.attempts++;
    pthread_mutex_unlock(&s->r->lock);
    *round = (struct dns_round){.s = s, .ttl = UINT32_MAX, .started_us = clock_us(), .pending = 1};
    s->round = round;
    s->next_ms = UINT64_MAX; /* set again when the round ends */
    if (s->t.kind == REGISTRY_HOSTS) {
        hosts_start(s, round);
        return;
    }
    if (registry_dns_is_srv(c->dns_name)) {
        ares_query(s->ch, c->dns_name, 1 /* C_IN */, 33 /* T_SRV */, on_srv, round);
        return;
    }
    round->t = calloc(1, sizeof(*round->t));
    if (round->t == NULL) {
        snprintf(round->error, sizeof(round->error), "out of memory");
    } else {
        round->n = 1;
        round->t[0] =
            (struct dns_target){.round = round, .port = (uint16_t)c->dns_port, .weight = 1};
        snprintf(round->t[0].host, sizeof(round->t[0].host), "%s", c->dns_name);
        round_launch(round);
    }
    round_step(round);
}

/* A resolver for c's servers (else /etc/resolv.conf), timeout and tries. 0, or -1 with err. */
static int channel_open(ares_channel *ch, const struct registry_conf *c, const char *service,
                        char *err, size_t err_len)
{
    struct ares_options o = {.timeout = (int)c->dns_timeout_ms, .tries = DNS_TRIES};
    char csv[16 * 64] = "";
    int rc = ares_init_options(ch, &o, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);

    if (rc != ARES_SUCCESS) {
        snprintf(err, err_len, "[service:%s]: DNS resolver: %s", service, ares_strerror(rc));
        return -1;
    }
    for (size_t i = 0; i < c->dns_servers.n; i++) {
        size_t len = strlen(csv);
        snprintf(csv + len, sizeof(csv) - len, "%s%s", i ? "," : "", c->dns_servers.items[i]);
    }
    if (c->dns_servers.n > 0 && (rc = ares_set_servers_ports_csv(*ch, csv)) != ARES_SUCCESS) {
        snprintf(err, err_len, "[service:%s]: dns_servers: %s", service, ares_strerror(rc));
        ares_destroy(*ch);
        return -1;
    }
    return 0;
}

/* --- files -------------------------------------------------------------------------------- */

/* The whole file into a new buffer: 0, or -errno (-EFBIG past FILE_SIZE_MAX). */
static int file_slurp(const char *path, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    ssize_t got = 0;
    size_t have = 0;

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) != 0 || st.st_size > (off_t)FILE_SIZE_MAX) {
        close(fd);
        return -EFBIG;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    while (buf != NULL && have < (size_t)st.st_size &&
           (got = read(fd, buf + have, (size_t)st.st_size - have)) > 0)
        have += (size_t)got;
    close(fd);
    if (buf == NULL || got < 0) {
        int e = buf == NULL ? -ENOMEM : -errno;
        free(buf);
        return e;
    }
    *out = buf;
    *len = have;
    return 0;
}

static void file_watch(struct source *s)
{
    if (s->wd >= 0 || s->r->ino_fd < 0)
        return;
    s->wd = inotify_add_watch(s->r->ino_fd, s->dir, INOTIFY_MASK | IN_ONLYDIR);
}

static void file_read(struct source *s)
{
    char why[512], err[256];
    struct registry_entry *e = NULL;
    char *text = NULL;
    size_t len = 0, n = 0;
    uint64_t t0 = clock_us();

    s->next_ms = UINT64_MAX; /* the next read comes with an event */
    file_watch(s);
    if (s->wd < 0) {
        snprintf(why, sizeof(why), "cannot watch directory %.200s: %s", s->dir, strerror(errno));
        s->next_ms = clock_ms() + WATCH_RETRY_MS;
    }
    int rc = file_slurp(s->t.conf->file, &text, &len);
    if (rc != 0) {
        if (s->wd >= 0)
            snprintf(why, sizeof(why), "cannot read: %s", strerror(-rc));
        source_fail(s, why);
        s->content_read = 0;
        return;
    }
    if (s->content_read && len == s->content_len &&
        (len == 0 || memcmp(text, s->content, len) == 0)) {
        free(text); /* an event that changed nothing (another file of the directory) */
        return;
    }
    free(s->content);
    s->content = text;
    s->content_len = len;
    s->content_read = 1;
    pthread_mutex_lock(&s->r->lock);
    s->st.attempts++;
    pthread_mutex_unlock(&s->r->lock);
    rc = registry_file_parse(text, len, &e, &n, err, sizeof(err));
    if (rc == 0 && (rc = source_good(s, e, n, 0, clock_us() - t0)) == 0) {
        free(e);
        return;
    }
    free(e);
    snprintf(why, sizeof(why), "%.200s: %s", s->t.conf->file,
             rc == -ENOMEM ? "out of memory" : err);
    source_fail(s, why);
}

/* Every event in a watched directory schedules a read of its sources' files, FILE_SETTLE_MS
 * later: editors write in several steps, and a rename into place comes as two events. */
static void inotify_drain(struct registry *r)
{
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    uint64_t now = clock_ms();
    ssize_t got;

    while ((got = read(r->ino_fd, buf, sizeof(buf))) > 0) {
        for (char *p = buf; p < buf + got;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            for (size_t i = 0; i < r->n; i++) {
                struct source *s = &r->src[i];
                if (s->t.kind != REGISTRY_FILE || (ev->wd != s->wd && !(ev->mask & IN_Q_OVERFLOW)))
                    continue;
                if (ev->mask & IN_IGNORED)
                    s->wd = -1; /* the directory went away: watch it again when it is back */
                s->next_ms = now + FILE_SETTLE_MS < s->next_ms ? now + FILE_SETTLE_MS : s->next_ms;
            }
            p += sizeof(*ev) + ev->len;
        }
    }
}

/* --- the thread --------------------------------------------------------------------------- */

/* poll(2) events of socket j of an ares_getsock() mask. Not ARES_GETSOCK_WRITABLE: it shifts a
 * signed 1 into the sign bit for the last sockets (undefined behaviour). */
static short sock_events(int bits, int j)
{
    unsigned mask = (unsigned)bits;

    return (short)(((mask & (1u << j)) ? POLLIN : 0) |
                   ((mask & (1u << (j + ARES_GETSOCK_MAXNUM))) ? POLLOUT : 0));
}

/* Starts what is due; returns the ms until the next source is. */
static uint64_t run_due(struct registry *r)
{
    uint64_t now = clock_ms(), wait = UINT64_MAX;

    for (size_t i = 0; i < r->n; i++) {
        struct source *s = &r->src[i];
        if (s->round == NULL && s->next_ms <= now) {
            if (s->t.kind != REGISTRY_FILE)
                dns_start(s);
            else
                file_read(s);
        }
        if (s->next_ms != UINT64_MAX) {
            uint64_t left = s->next_ms > now ? s->next_ms - now : 0;
            wait = left < wait ? left : wait;
        }
    }
    return wait;
}

/* The poll set: wake, inotify, every socket of a resolution in flight; *wait_ms shrinks to
 * c-ares' own timeouts. */
static nfds_t poll_set(struct registry *r, uint64_t *wait_ms)
{
    nfds_t k = 2;

    r->fds[0] = (struct pollfd){.fd = r->wake_fd, .events = POLLIN};
    r->fds[1] = (struct pollfd){.fd = r->ino_fd, .events = POLLIN};
    for (size_t i = 0; i < r->n; i++) {
        struct source *s = &r->src[i];
        ares_socket_t socks[ARES_GETSOCK_MAXNUM];
        struct timeval tv, *t;
        if (s->round == NULL)
            continue;
        int bits = ares_getsock(s->ch, socks, ARES_GETSOCK_MAXNUM);
        for (int j = 0; j < ARES_GETSOCK_MAXNUM && k < r->fds_cap; j++) {
            short ev = sock_events(bits, j);
            if (ev == 0)
                continue;
            r->fds[k] = (struct pollfd){.fd = socks[j], .events = ev};
            r->fd_src[k++] = s;
        }
        if ((t = ares_timeout(s->ch, NULL, &tv)) != NULL) {
            uint64_t ms = (uint64_t)t->tv_sec * 1000 + (uint64_t)(t->tv_usec + 999) / 1000;
            *wait_ms = ms < *wait_ms ? ms : *wait_ms;
        }
    }
    return k;
}

static void process_dns(struct registry *r, nfds_t k)
{
    for (nfds_t i = 2; i < k; i++) {
        struct source *s = r->fd_src[i];
        short rev = r->fds[i].revents;
        if (rev == 0 || s->round == NULL)
            continue;
        ares_process_fd(s->ch,
                        (rev & (POLLIN | POLLERR | POLLHUP)) ? r->fds[i].fd : ARES_SOCKET_BAD,
                        (rev & POLLOUT) ? r->fds[i].fd : ARES_SOCKET_BAD);
    }
    for (size_t i = 0; i < r->n; i++)
        if (r->src[i].round != NULL) /* timeouts */
            ares_process_fd(r->src[i].ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

static void *registry_main(void *arg)
{
    struct registry *r = arg;

    while (!atomic_load(&r->stop)) {
        uint64_t wait = run_due(r);
        nfds_t k = poll_set(r, &wait);
        int ms = wait > 60000 ? 60000 : (int)wait;
        if (poll(r->fds, k, ms) < 0 && errno != EINTR)
            break;
        if (r->fds[1].revents & POLLIN)
            inotify_drain(r);
        process_dns(r, k);
    }
    return NULL;
}

/* --- life cycle --------------------------------------------------------------------------- */

static int source_init(struct registry *r, struct source *s, const struct registry_target *t,
                       char *err, size_t err_len)
{
    *s = (struct source){.r = r, .t = *t, .wd = -1};
    snprintf(s->st.service, sizeof(s->st.service), "%s", t->name);
    s->st.kind = kind_names[t->kind];
    snprintf(s->st.source, sizeof(s->st.source), "%s", source_name(s));
    if (t->kind != REGISTRY_FILE)
        return channel_open(&s->ch, t->conf, t->name, err, err_len) == 0 ? (s->ch_ready = 1, 0)
                                                                         : -EINVAL;
    snprintf(s->dir, sizeof(s->dir), "%s", t->conf->file);
    char *slash = strrchr(s->dir, '/');
    slash[slash == s->dir] = '\0'; /* "/x.json" watches "/" */
    return 0;
}

int registry_create(const struct registry_target *targets, size_t n, struct logger *log,
                    struct registry **out, char *err, size_t err_len)
{
    struct registry *r = calloc(1, sizeof(*r));
    int rc = 0;

    *out = NULL;
    if (r == NULL || ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
        free(r);
        return -ENOMEM;
    }
    pthread_mutex_init(&r->lock, NULL);
    r->log = log;
    r->ino_fd = -1;
    r->fds_cap = 2 + n * ARES_GETSOCK_MAXNUM;
    r->src = calloc(n, sizeof(*r->src));
    r->fds = calloc(r->fds_cap, sizeof(*r->fds));
    r->fd_src = calloc(r->fds_cap, sizeof(*r->fd_src));
    r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->wake_fd < 0)
        rc = errno > 0 ? -errno : -EIO; /* never 0: a failed step must not read as success */
    if (r->src == NULL || r->fds == NULL || r->fd_src == NULL)
        rc = -ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = source_init(r, &r->src[i], &targets[i], err, err_len);
        r->n++;
        if (rc == 0 && targets[i].kind == REGISTRY_FILE && r->ino_fd < 0 &&
            (r->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0) {
            rc = -errno;
            snprintf(err, err_len, "inotify: %s", strerror(errno));
        }
    }
    if (rc != 0) {
        registry_destroy(r);
        return rc;
    }
    *out = r;
    return 0;
}

int registry_start(struct registry *r)
{
    int rc = pthread_create(&r->thread, NULL, registry_main, r);

    if (rc != 0)
        return -rc;
    r->started = 1;
    return 0;
}

void registry_stop(struct registry *r)
{
    uint64_t one = 1;

    if (r == NULL || !r->started)
        return;
    atomic_store(&r->stop, 1);
    if (write(r->wake_fd, &one, sizeof(one)) < 0) {
        /* an eventfd write fails only on overflow, and then the thread is awake anyway */
    }
    pthread_join(r->thread, NULL);
    r->started = 0;
}

void registry_destroy(struct registry *r)
{
    if (r == NULL)
        return;
    registry_stop(r);
    r->destroying = 1;
    for (size_t i = 0; r->src != NULL && i < r->n; i++) { /* src NULL: creation ran out */
        if (r->src[i].ch_ready)
            ares_destroy(r->src[i].ch); /* ends its round through the callbacks */
        round_free(r->src[i].round);
        free(r->src[i].content);
        free(r->src[i].last);
    }
    if (r->ino_fd >= 0)
        close(r->ino_fd);
    if (r->wake_fd >= 0)
        close(r->wake_fd);
    free(r->src);
    free(r->fds);
    free(r->fd_src);
    pthread_mutex_destroy(&r->lock);
    free(r);
    ares_library_cleanup();
}

/* --- strict_dns: one synchronous pass ----------------------------------------------------- */

/* One host name of a check: its c-ares status, or 1 while its lookup runs. */
struct check_one {
    int status;      /* ARES_SUCCESS, an ARES_E* code, or 1 while pending */
    size_t *pending; /* lookups still running */
};

static void on_check(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct check_one *one = arg;

    (void)timeouts;
    one->status =
        status == ARES_SUCCESS && (res == NULL || res->nodes == NULL) ? ARES_ENODATA : status;
    if (res != NULL)
        ares_freeaddrinfo(res);
    --*one->pending;
}

/* Runs ch until no lookup is pending (c-ares' own timeouts bound it). */
static void check_run(ares_channel ch, const size_t *pending)
{
    while (*pending > 0) {
        ares_socket_t socks[ARES_GETSOCK_MAXNUM];
        struct pollfd fds[ARES_GETSOCK_MAXNUM];
        struct timeval tv, *t;
        nfds_t k = 0;
        int bits = ares_getsock(ch, socks, ARES_GETSOCK_MAXNUM);
        for (int j = 0; j < ARES_GETSOCK_MAXNUM; j++) {
            short ev = sock_events(bits, j);
            if (ev != 0)
                fds[k++] = (struct pollfd){.fd = socks[j], .events = ev};
        }
        t = ares_timeout(ch, NULL, &tv);
        int ms = t != NULL ? (int)(t->tv_sec * 1000 + (t->tv_usec + 999) / 1000) : 1000;
        if (poll(fds, k, ms) < 0 && errno != EINTR)
            return;
        for (nfds_t i = 0; i < k; i++)
            if (fds[i].revents != 0)
                ares_process_fd(ch,
                                (fds[i].revents & (POLLIN | POLLERR | POLLHUP)) ? fds[i].fd
                                                                                : ARES_SOCKET_BAD,
                                (fds[i].revents & POLLOUT) ? fds[i].fd : ARES_SOCKET_BAD);
        ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    }
}

int registry_resolve_check(const struct registry_conf *c, const struct lb_backends *b, char *err,
                           size_t err_len)
{
    struct ares_addrinfo_hints hints = {
        .ai_flags = ARES_AI_NOSORT, .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    size_t pending = 0;
    ares_channel ch;
    int rc = 0;

    if (b->n_hosts == 0)
        return 0;
    struct check_one *one = calloc(b->n, sizeof(*one));
    if (one == NULL || ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
        free(one);
        return -ENOMEM;
    }
    if (channel_open(&ch, c, "check", err, err_len) != 0) {
        free(one);
        ares_library_cleanup();
        return -EHOSTUNREACH;
    }
    for (size_t i = 0; i < b->n; i++) {
        if (b->items[i].host == NULL)
            continue;
        one[i] = (struct check_one){.status = 1, .pending = &pending};
        pending++;
        ares_getaddrinfo(ch, b->items[i].host, NULL, &hints, on_check, &one[i]);
    }
    check_run(ch, &pending);
    ares_destroy(ch); /* ends what is left (EDESTRUCTION) */
    for (size_t i = 0; rc == 0 && i < b->n; i++)
        if (b->items[i].host != NULL && one[i].status != ARES_SUCCESS) {
            snprintf(err, err_len, "backend %zu \"%s\": %s", i + 1, b->items[i].addr.text,
                     one[i].status == 1 ? "no answer" : ares_strerror(one[i].status));
            rc = -EHOSTUNREACH;
        }
    free(one);
    ares_library_cleanup();
    return rc;
}

size_t registry_sources(struct registry *r, struct registry_source_status *out, size_t cap)
{
    uint64_t now = clock_ms();

    if (r == NULL)
        return 0;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n && i < cap; i++) {
        out[i] = r->src[i].st;
        out[i].stale_ms = out[i].synced ? now - r->src[i].last_ok_ms : UINT64_MAX;
    }
    pthread_mutex_unlock(&r->lock);
    return r->n;
}

unsigned registry_failing(struct registry *r)
{
    unsigned n = 0;

    if (r == NULL)
        return 0;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n; i++)
        n += r->src[i].st.failing != 0 ? 1u : 0u;
    pthread_mutex_unlock(&r->lock);
    return n;
}
