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

/* Returns the state for id; a new one starts with the table's own reference. NULL on ENOMEM. */
static struct instance_state *table_get(struct state_table *t, const char *id)
{
    struct instance_state *st = table_find(t, id);

    if (st != NULL)
        return st;
    if (t->n >= t->n_buckets && table_grow(t) != 0)
        return NULL;
    st = instance_state_create(id);
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
            instance_state_release(st);
        }
    }
}

/* --- merging and publishing ---------------------------------------------------------------- */

/* The weight an instance gets in the next set: for now the source's own. Health verdicts,
 * ejection, slow start and admin overrides are further inputs merged here. */
static uint32_t merged_weight(const struct member *m)
{
    return m->weight;
}

/* Whether publishing the merged members would give the set already current. */
static int merged_equals_current(const struct owner *o)
{
    const struct instance_set *cur = o->current;

    if (cur->version == 0 || cur->lb != o->lb || cur->n != o->n_members)
        return 0;
    for (size_t i = 0; i < o->n_members; i++) {
        const struct member *m = &o->members[i];
        const struct instance *inst = &cur->inst[i];
        if (strcmp(inst->state->id, m->id) != 0 || strcmp(inst->addr.text, m->addr.text) != 0 ||
            inst->weight != merged_weight(m))
            return 0;
    }
    return 1;
}

/* Builds the merged set; states are matched (or made) by id. NULL on ENOMEM. */
static struct instance_set *merged_build(struct owner *o, uint64_t version)
{
    struct instance_set *set = snapshot_set_create(o->lb, o->n_members);

    if (set == NULL)
        return NULL;
    for (size_t i = 0; i < o->n_members; i++) {
        const struct member *m = &o->members[i];
        struct instance_state *st = table_get(&o->table, m->id);
        if (st == NULL) {
            set->n = i; /* snapshot_set_free releases only what was held */
            snapshot_set_free(set);
            return NULL;
        }
        instance_state_hold(st);
        set->inst[i] = (struct instance){.addr = m->addr, .weight = merged_weight(m), .state = st};
    }
    set->version = version;
    if (snapshot_set_seal(set) != 0) {
        snapshot_set_free(set);
        return NULL;
    }
    return set;
}

/* Publishes the merged set unless it equals the current one. Under o->lock; the set it replaces
 * goes to *old, for unlock_and_retire (the grace period is waited for without the lock). */
static int publish_locked(struct owner *o, struct instance_set **old)
{
    *old = NULL;
    if (merged_equals_current(o))
        return 0;
    uint64_t version = o->version + 1;
    struct instance_set *set = merged_build(o, version);
    if (set == NULL) {
        table_prune(&o->table, o->version); /* states made for the failed set are listed nowhere */
        return -ENOMEM;
    }
    for (size_t i = 0; i < set->n; i++)
        set->inst[i].state->listed_in = version;
    o->version = version;
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
        rc = publish_locked(o, &old);
    unlock_and_retire(o, old);
    return rc;
}

int owner_set_balancer(struct owner *o, const struct lb_ops *lb)
{
    struct instance_set *old = NULL;

    assert(lb != NULL);
    pthread_mutex_lock(&o->lock);
    o->lb = lb;
    int rc = publish_locked(o, &old);
    unlock_and_retire(o, old);
    return rc;
}

/* --- lifecycle and readers ----------------------------------------------------------------- */

struct owner *owner_create(const char *name, const struct lb_ops *lb, struct logger *log)
{
    struct owner *o = calloc(1, sizeof(*o));

    if (o == NULL)
        return NULL;
    snprintf(o->name, sizeof(o->name), "%s", name);
    o->log = log;
    o->lb = lb;
    o->current = snapshot_empty();
    o->version = 1; /* new states start at listed_in 0: never mistaken for listed ones */
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

uint64_t owner_publishes(const struct owner *o)
{
    return atomic_load_explicit(&o->publishes, memory_order_relaxed);
}
