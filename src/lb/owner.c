/* The service owner: inputs merged by instance id, one publisher per service, states kept by id. */
#include "owner.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"
#include "clock.h"
#include "inifile.h"

#define TABLE_MIN 64 /* buckets of a fresh state table */

/* Id -> state for every instance the current set lists; the owner's own reference. */
struct state_table {
    struct instance_state **buckets; /* chains */
    size_t n_buckets;                /* power of two */
    size_t n;                        /* states in the table */
};

/* One instance as the source listed it last. */
struct member {
    char id[SNAPSHOT_ID_MAX]; /* stable identity */
    struct net_addr addr;     /* address to dial */
    uint32_t weight;          /* the source's weight */
    int warning;              /* the source rates it warning */
};

struct owner {
    char name[INI_NAME_MAX];      /* service name */
    struct logger *log;           /* events; may be NULL */
    pthread_mutex_t lock;         /* serialises inputs, the table and publishing */
    const struct lb_ops *lb;      /* balancer of the next set */
    struct member *members;       /* the source's list, in its order, owned */
    size_t n_members;             /* entries in members */
    struct instance_set *current; /* published set; snapshot_swap / snapshot_load only */
    struct state_table table;     /* states by id */
    uint64_t version;             /* version of the newest set */
    atomic_ullong publishes;      /* sets published */
    struct owner_policy policy;   /* ejection, slow start, limits */
    int had_instances;            /* a non-empty set was published: newcomers ramp up */
    void (*wake)(void *);         /* called after a report, to get a tick */
    void *wake_arg;               /* for wake */
    atomic_ullong warned_ms;      /* clock of the last "nothing left" warning */
};

/* --- state table --------------------------------------------------------------------------- */

static uint64_t hash_id(const char *id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a: ids are short, this is plenty */
    for (; *id != '\0'; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ULL;
    return h;
}

static int table_grow(struct state_table *t)
{
    size_t n_buckets = t->n_buckets ? t->n_buckets * 2 : TABLE_MIN;
    struct instance_state **buckets = calloc(n_buckets, sizeof(*buckets));

    if (buckets == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < t->n_buckets; i++) {
        struct instance_state *st = t->buckets[i];
        while (st != NULL) {
            struct instance_state *next = st->next;
            size_t b = hash_id(st->id) & (n_buckets - 1);
            st->next = buckets[b];
            buckets[b] = st;
            st = next;
        }
    }
    free(t->buckets);
    t->buckets = buckets;
    t->n_buckets = n_buckets;
    return 0;
}

static struct instance_state *table_find(const struct state_table *t, const char *id)
{
    if (t->n_buckets == 0)
        return NULL;
    struct instance_state *st = t->buckets[hash_id(id) & (t->n_buckets - 1)];
    while (st != NULL && strcmp(st->id, id) != 0)
        st = st->next;
    return st;
}

/* Takes st out of the table (it drains: the newest set does not list it as it is). */
static void table_unlink(struct state_table *t, struct instance_state *st)
{
    struct instance_state **link = &t->buckets[hash_id(st->id) & (t->n_buckets - 1)];

    while (*link != st)
        link = &(*link)->next;
    *link = st->next;
    st->next = NULL;
    t->n--;
    atomic_store_explicit(&st->removed_ms, clock_ms(), memory_order_relaxed);
    instance_state_release(st);
}

/* Returns the state for id at addr; a new one starts with the table's own reference (an id at
 * a new address is a new instance: its counters start over, the old one drains). NULL on
 * ENOMEM. */
static struct instance_state *table_get(struct state_table *t, const char *id,
                                        const struct net_addr *addr)
{
    struct instance_state *st = table_find(t, id);

    if (st != NULL && strcmp(st->addr.text, addr->text) == 0)
        return st;
    if (st != NULL)
        table_unlink(t, st);
    if (t->n >= t->n_buckets && table_grow(t) != 0)
        return NULL;
    st = instance_state_create(id, addr);
    if (st == NULL)
        return NULL;
    size_t b = hash_id(id) & (t->n_buckets - 1);
    st->next = t->buckets[b];
    t->buckets[b] = st;
    t->n++;
    return st;
}

/* Unlinks states the newest set (version) no longer lists and drops the table's reference;
 * their memory lives on while sessions or older sets still hold them. */
static void table_prune(struct state_table *t, uint64_t version)
{
    for (size_t i = 0; i < t->n_buckets; i++) {
        struct instance_state **link = &t->buckets[i];
        while (*link != NULL) {
            struct instance_state *st = *link;
            if (st->listed_in == version) {
                link = &st->next;
                continue;
            }
            *link = st->next;
            st->next = NULL;
            t->n--;
            /* sessions still on it drain from now on (drain_timeout) */
            atomic_store_explicit(&st->removed_ms, clock_ms(), memory_order_relaxed);
            instance_state_release(st);
        }
    }
}

/* --- merging and publishing ---------------------------------------------------------------- */

/* The weight an instance gets in the next set: the source's, scaled; 0 while its check says
 * down or passive health ejected it; ramping during a slow start. */
static uint32_t merged_weight(const struct owner *o, const struct member *m,
                              const struct instance_state *st, uint64_t now)
{
    uint64_t w = (uint64_t)(st != NULL && st->has_override ? st->override_weight : m->weight) *
                 OWNER_WEIGHT_SCALE;
    uint64_t ramp = o->policy.slow_start_ms;

    if (st != NULL && (st->health == INSTANCE_HEALTH_DOWN || st->ejected || st->admin))
        return 0;
    if (st != NULL && st->ramp_since != 0 && ramp > 0 && now - st->ramp_since < ramp) {
        /* linear from 10 % to 100 %, never 0 for a listed weight */
        w = w * (10 + 90 * (now - st->ramp_since) / ramp) / 100;
        w = w > 0 ? w : 1;
    }
    return (uint32_t)w;
}

/* Whether publishing the merged members would give the set already current. */
static int merged_equals_current(const struct owner *o, uint64_t now)
{
    const struct instance_set *cur = o->current;

    if (cur->version == 0 || cur->lb != o->lb || cur->n != o->n_members ||
        cur->max_conns != o->policy.max_conns || cur->eject_after != o->policy.eject_after ||
        cur->hash_with_port != (o->policy.hash_with_port != 0))
        return 0;
    for (size_t i = 0; i < o->n_members; i++) {
        const struct member *m = &o->members[i];
        const struct instance *inst = &cur->inst[i];
        const struct instance_state *st = inst->state;
        if (strcmp(st->id, m->id) != 0 || strcmp(inst->addr.text, m->addr.text) != 0 ||
            inst->weight != merged_weight(o, m, st, now) || st->warning != (m->warning != 0) ||
            (st->has_override && st->override_src != m->weight))
            return 0;
    }
    return 1;
}

/* The state of member m for a new set; a newcomer to a service that had instances ramps up. */
static struct instance_state *member_state(struct owner *o, const struct member *m, uint64_t now)
{
    struct instance_state *st = table_find(&o->table, m->id);

    if (st != NULL && strcmp(st->addr.text, m->addr.text) == 0)
        return st;
    st = table_get(&o->table, m->id, &m->addr);
    if (st != NULL && o->had_instances && o->policy.slow_start_ms > 0)
        st->ramp_since = now;
    return st;
}

/* What the owner keeps of the source's view of an instance; a source change of its weight or
 * address ends an admin weight override. */
static void member_note(struct instance_state *st, const struct member *m)
{
    if (st->has_override && st->override_src != m->weight)
        st->has_override = 0; /* an address change makes a new state: no override to end */
    st->src_weight = m->weight;
    st->warning = (uint8_t)(m->warning != 0);
}

/* Builds the merged set; states are matched (or made) by id. NULL on ENOMEM. */
static struct instance_set *merged_build(struct owner *o, uint64_t version, uint64_t now)
{
    struct instance_set *set = snapshot_set_create(o->lb, o->n_members);

    if (set == NULL)
        return NULL;
    for (size_t i = 0; i < o->n_members; i++) {
        const struct member *m = &o->members[i];
        struct instance_state *st = member_state(o, m, now);
        if (st == NULL) {
            set->n = i; /* snapshot_set_free releases only what was held */
            snapshot_set_free(set);
            return NULL;
        }
        instance_state_hold(st);
        member_note(st, m);
        set->inst[i] =
            (struct instance){.addr = m->addr, .weight = merged_weight(o, m, st, now), .state = st};
    }
    set->version = version;
    set->max_conns = o->policy.max_conns;
    set->eject_after = o->policy.eject_after;
    set->hash_with_port = o->policy.hash_with_port != 0;
    if (snapshot_set_seal(set) != 0) {
        snapshot_set_free(set);
        return NULL;
    }
    return set;
}

/* Publishes the merged set (weights as of now, clock_ms) unless it equals the current one. Under
 * o->lock; the set it replaces goes to *old, for unlock_and_retire (the grace period is waited
 * for without the lock). */
static int publish_locked(struct owner *o, uint64_t now, struct instance_set **old)
{
    *old = NULL;
    if (merged_equals_current(o, now))
        return 0;
    uint64_t version = o->version + 1;
    struct instance_set *set = merged_build(o, version, now);
    if (set == NULL) {
        table_prune(&o->table, o->version); /* states made for the failed set are listed nowhere */
        return -ENOMEM;
    }
    for (size_t i = 0; i < set->n; i++)
        set->inst[i].state->listed_in = version;
    o->version = version;
    o->had_instances = o->had_instances || set->n > 0;
    *old = snapshot_swap(&o->current, set);
    table_prune(&o->table, version);
    atomic_fetch_add_explicit(&o->publishes, 1, memory_order_relaxed);
    return 1;
}

/* Drops the lock, then waits for readers of the replaced set and frees it. */
static void unlock_and_retire(struct owner *o, struct instance_set *old)
{
    pthread_mutex_unlock(&o->lock);
    snapshot_retire(old);
}

/* --- active and passive health ------------------------------------------------------------- */

/* A returning instance starts over: no failures counted, and a slow start when configured. */
static void state_comes_back(struct owner *o, struct instance_state *st, uint64_t now)
{
    atomic_store_explicit(&st->fails_in_row, 0, memory_order_relaxed);
    if (o->policy.slow_start_ms > 0)
        st->ramp_since = now;
}

int owner_set_health(struct owner *o, const struct owner_verdict *v, size_t n)
{
    struct instance_set *old = NULL;
    uint64_t now = clock_ms();

    pthread_mutex_lock(&o->lock);
    for (size_t i = 0; i < n; i++) {
        struct instance_state *st = table_find(&o->table, v[i].id);
        if (st == NULL || st->health == v[i].health)
            continue;
        if (st->health == INSTANCE_HEALTH_DOWN && v[i].health == INSTANCE_HEALTH_UP)
            state_comes_back(o, st, now);
        st->health = (uint8_t)v[i].health;
    }
    int rc = publish_locked(o, now, &old);
    unlock_and_retire(o, old);
    return rc;
}

void owner_report_failing(struct owner *o)
{
    /* the tick looks at every instance's failure count: nothing to queue, only to wake */
    if (o->wake != NULL)
        o->wake(o->wake_arg);
}

void owner_set_waker(struct owner *o, void (*wake)(void *), void *arg)
{
    o->wake = wake;
    o->wake_arg = arg;
}

/* How many instances passive health may have out at once: max_ejection_percent of them, and at
 * least one (as Envoy does) unless the percentage is 0. */
static size_t ejection_cap(const struct owner *o)
{
    size_t pct = o->policy.max_ejection_percent;
    size_t cap = o->current->n * pct / 100;

    return pct > 0 && cap == 0 ? 1 : cap;
}

/* Ejects st for eject_time * 2^(k-1), capped at eject_max_time; a good connect since its last
 * return resets k. */
static void eject(struct owner *o, struct instance_state *st, uint64_t now)
{
    const struct owner_policy *p = &o->policy;

    if (instance_state_totals(st).connects > st->connects_at_return)
        st->ejected_in_row = 0;
    st->ejected_in_row++;
    uint64_t len = p->eject_time_ms;
    for (uint32_t k = 1; k < st->ejected_in_row && len < p->eject_max_time_ms; k++)
        len *= 2;
    len = len < p->eject_max_time_ms ? len : p->eject_max_time_ms;
    st->ejected = 1;
    st->ejected_until = now + len;
    st->announce = 1;
    atomic_fetch_add_explicit(&st->ejections, 1, memory_order_relaxed);
}

/* Logs the ejections and returns of the last tick, once the published set shows them: a client
 * that connects after reading the line gets the new set. */
static void announce(struct owner *o, uint64_t now)
{
    const struct instance_set *cur = o->current;

    for (size_t i = 0; i < cur->n; i++) {
        struct instance_state *st = cur->inst[i].state;
        if (st->announce == 1)
            log_event(o->log, LOG_LEVEL_WARN, "instance_ejected", LOG_STR("service", o->name),
                      LOG_STR("instance", st->id),
                      LOG_INT("failures", atomic_load(&st->fails_in_row)),
                      LOG_INT("for_ms", st->ejected_until - now),
                      LOG_INT("ejections_in_row", st->ejected_in_row));
        else if (st->announce == 2)
            log_event(o->log, LOG_LEVEL_INFO, "instance_returned", LOG_STR("service", o->name),
                      LOG_STR("instance", st->id), LOG_INT("ejections_in_row", st->ejected_in_row));
        st->announce = 0;
    }
}

/* An ejection that is over: the instance comes back, its failures forgotten. */
static void unject(struct owner *o, struct instance_state *st, uint64_t now)
{
    st->ejected = 0;
    st->connects_at_return = instance_state_totals(st).connects;
    state_comes_back(o, st, now);
    st->announce = 2;
}

/* Passive health over the listed instances: returns the ejections that ended, ejects those that
 * failed eject_after connects in a row while the cap allows. 1 when anything changed. */
static int tick_ejections(struct owner *o, uint64_t now, uint64_t *next)
{
    const struct instance_set *cur = o->current;
    size_t out = 0, cap = ejection_cap(o);
    int changed = 0;

    for (size_t i = 0; i < cur->n; i++) {
        struct instance_state *st = cur->inst[i].state;
        if (st->ejected && now >= st->ejected_until) {
            unject(o, st, now);
            changed = 1;
        }
        out += st->ejected;
    }
    for (size_t i = 0; i < cur->n && o->policy.eject_after > 0; i++) {
        struct instance_state *st = cur->inst[i].state;
        if (!st->ejected && out < cap && atomic_load(&st->fails_in_row) >= o->policy.eject_after) {
            eject(o, st, now);
            out++;
            changed = 1;
        }
        if (st->ejected && st->ejected_until < *next)
            *next = st->ejected_until;
    }
    return changed;
}

/* Slow starts: a ramp is due a new weight every twentieth of slow_start (at most 10 a second). */
static int tick_ramps(struct owner *o, uint64_t now, uint64_t *next)
{
    const struct instance_set *cur = o->current;
    uint64_t step = o->policy.slow_start_ms / 20 > 100 ? o->policy.slow_start_ms / 20 : 100;
    int changed = 0;

    for (size_t i = 0; i < cur->n; i++) {
        struct instance_state *st = cur->inst[i].state;
        if (st->ramp_since == 0)
            continue;
        changed = 1;
        if (now - st->ramp_since >= o->policy.slow_start_ms)
            st->ramp_since = 0; /* this publish gives the full weight */
        else if (now + step < *next)
            *next = now + step;
    }
    return changed;
}

uint64_t owner_tick(struct owner *o, uint64_t now_ms)
{
    struct instance_set *old = NULL;
    uint64_t next = UINT64_MAX;

    pthread_mutex_lock(&o->lock);
    int changed = tick_ejections(o, now_ms, &next);
    changed |= tick_ramps(o, now_ms, &next);
    if (changed)
        (void)publish_locked(o, now_ms, &old); /* publishes only when a weight really moved */
    announce(o, now_ms);
    unlock_and_retire(o, old);
    return next;
}

void owner_warn_nothing_left(struct owner *o, const char *why, uint64_t now_ms)
{
    unsigned long long last = atomic_load_explicit(&o->warned_ms, memory_order_relaxed);

    if (last != 0 && now_ms - last < 1000)
        return;
    if (!atomic_compare_exchange_strong(&o->warned_ms, &last, now_ms))
        return; /* another worker warns this second */
    log_event(o->log, LOG_LEVEL_WARN, "no_instance_available", LOG_STR("service", o->name),
              LOG_STR("reason", why));
}

/* Copies the source's list; the old copy stays when memory runs out. */
static int members_replace(struct owner *o, const struct owner_member *in, size_t n)
{
    struct member *copy = calloc(n ? n : 1, sizeof(*copy));

    if (copy == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *id = in[i].id != NULL ? in[i].id : in[i].addr.text;
        snprintf(copy[i].id, sizeof(copy[i].id), "%s", id);
        copy[i].addr = in[i].addr;
        copy[i].weight = in[i].weight;
        copy[i].warning = in[i].warning;
    }
    free(o->members);
    o->members = copy;
    o->n_members = n;
    return 0;
}

int owner_set_members(struct owner *o, const struct owner_member *members, size_t n)
{
    struct instance_set *old = NULL;

    pthread_mutex_lock(&o->lock);
    int rc = members_replace(o, members, n);
    if (rc == 0)
        rc = publish_locked(o, clock_ms(), &old);
    unlock_and_retire(o, old);
    return rc;
}

int owner_set_balancer(struct owner *o, const struct lb_ops *lb)
{
    struct instance_set *old = NULL;

    assert(lb != NULL);
    pthread_mutex_lock(&o->lock);
    o->lb = lb;
    int rc = publish_locked(o, clock_ms(), &old);
    unlock_and_retire(o, old);
    return rc;
}

/* --- lifecycle and readers ----------------------------------------------------------------- */

void owner_set_policy(struct owner *o, const struct owner_policy *policy)
{
    pthread_mutex_lock(&o->lock);
    o->policy = *policy;
    pthread_mutex_unlock(&o->lock);
}

struct owner *owner_create(const char *name, const struct lb_ops *lb,
                           const struct owner_policy *policy, struct logger *log)
{
    struct owner *o = calloc(1, sizeof(*o));

    if (o == NULL)
        return NULL;
    snprintf(o->name, sizeof(o->name), "%s", name);
    o->log = log;
    o->lb = lb;
    o->current = snapshot_empty();
    o->version = 1; /* new states start at listed_in 0: never mistaken for listed ones */
    if (policy != NULL)
        o->policy = *policy;
    pthread_mutex_init(&o->lock, NULL);
    return o;
}

void owner_destroy(struct owner *o)
{
    if (o == NULL)
        return;
    snapshot_set_free(o->current);
    table_prune(&o->table, (uint64_t)-1); /* no state is listed in version -1: drop them all */
    free(o->table.buckets);
    free(o->members);
    pthread_mutex_destroy(&o->lock);
    free(o);
}

const char *owner_name(const struct owner *o)
{
    return o->name;
}

const struct instance_set *owner_current(const struct owner *o)
{
    return snapshot_load(&o->current);
}

/* --- the admin API and status ------------------------------------------------------------- */

/* The state of id in the current set, under o->lock; NULL when it lists no such instance. */
static struct instance_state *listed_state(struct owner *o, const char *id)
{
    struct instance_state *st = table_find(&o->table, id);
    return st != NULL && st->listed_in == o->version ? st : NULL;
}

int owner_admin(struct owner *o, const char *id, enum owner_admin action)
{
    struct instance_set *old = NULL;
    uint64_t now = clock_ms();
    int rc = -ENOENT;

    pthread_mutex_lock(&o->lock);
    struct instance_state *st = listed_state(o, id);
    if (st != NULL) {
        st->admin = (uint8_t)action;
        if (action == OWNER_ADMIN_NONE)
            st->has_override = 0; /* enable ends a weight override too */
        /* a drained instance's sessions end after drain_timeout, as when it leaves the set */
        atomic_store_explicit(&st->removed_ms, action == OWNER_ADMIN_DRAIN ? now : 0,
                              memory_order_relaxed);
        rc = publish_locked(o, now, &old);
        rc = rc < 0 ? rc : 0;
    }
    unlock_and_retire(o, old);
    return rc;
}

int owner_admin_weight(struct owner *o, const char *id, uint32_t weight)
{
    struct instance_set *old = NULL;
    uint64_t now = clock_ms();
    int rc = -ENOENT;

    pthread_mutex_lock(&o->lock);
    struct instance_state *st = listed_state(o, id);
    if (st != NULL) {
        st->has_override = 1;
        st->override_weight = weight;
        st->override_src = st->src_weight;
        rc = publish_locked(o, now, &old);
        rc = rc < 0 ? rc : 0;
    }
    unlock_and_retire(o, old);
    return rc;
}

/* The one word status gives an instance, the most important first. */
static const char *state_word(const struct owner *o, const struct instance_state *st, uint64_t now)
{
    if (st->admin == OWNER_ADMIN_DISABLE)
        return "disabled";
    if (st->admin == OWNER_ADMIN_DRAIN)
        return "draining";
    if (st->ejected)
        return "ejected";
    if (st->health == INSTANCE_HEALTH_DOWN)
        return "unhealthy";
    if (st->ramp_since != 0 && now - st->ramp_since < o->policy.slow_start_ms)
        return "slow_start";
    return st->warning ? "warning" : "healthy";
}

static void instance_info(const struct owner *o, const struct instance *inst, uint64_t now,
                          struct owner_instance_info *out)
{
    const struct instance_state *st = inst->state;
    int check = atomic_load_explicit(&st->last_check, memory_order_relaxed);
    const struct instance_totals totals = instance_state_totals(st);

    *out = (struct owner_instance_info){
        .effective = inst->weight,
        .state = state_word(o, st, now),
        .active = instance_state_active(st),
        .connects = totals.connects,
        .failures = atomic_load_explicit(&st->failures, memory_order_relaxed),
        .timeouts = atomic_load_explicit(&st->timeouts, memory_order_relaxed),
        .ejections = atomic_load_explicit(&st->ejections, memory_order_relaxed),
        .bytes_up = totals.bytes_up,
        .bytes_down = totals.bytes_down,
        .check = check == 1   ? "passed"
                 : check == 2 ? "failed"
                              : "none",
        .check_code = atomic_load_explicit(&st->last_check_code, memory_order_relaxed),
        .ejected_ms = st->ejected && st->ejected_until > now ? st->ejected_until - now : 0,
    };
    snprintf(out->id, sizeof(out->id), "%s", st->id);
    snprintf(out->addr, sizeof(out->addr), "%s", inst->addr.text);
}

size_t owner_instances(struct owner *o, struct owner_instance_info *out, size_t cap)
{
    uint64_t now = clock_ms();

    pthread_mutex_lock(&o->lock);
    /* the current set cannot be swapped or freed while the lock is held */
    const struct instance_set *cur = o->current;
    size_t n = cur->n;
    for (size_t i = 0; i < n && i < cap; i++) {
        instance_info(o, &cur->inst[i], now, &out[i]);
        const struct instance_state *st = cur->inst[i].state;
        out[i].weight = st->has_override ? st->override_weight : st->src_weight;
    }
    pthread_mutex_unlock(&o->lock);
    return n;
}

void owner_summary(struct owner *o, uint64_t *version, size_t *n)
{
    pthread_mutex_lock(&o->lock);
    *version = o->current->version;
    *n = o->current->n;
    pthread_mutex_unlock(&o->lock);
}

uint64_t owner_publishes(const struct owner *o)
{
    return atomic_load_explicit(&o->publishes, memory_order_relaxed);
}
