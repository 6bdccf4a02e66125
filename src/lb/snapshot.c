/* Immutable instance sets published by pointer swap and reclaimed after an RCU grace period. */
#include "snapshot.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu.h>

#include "balancer.h"

#define SNAPSHOT_TABLE_MIN 64 /* buckets of a fresh state table */
#define SNAPSHOT_ALIGN     64 /* scratch areas on their own cache lines: workers write them */

/* Id -> state for every instance some live set lists; touched by publishers only. */
struct state_table {
    struct instance_state **buckets; /* chains */
    size_t n_buckets;                /* power of two */
    size_t n;                        /* states in the table */
};

struct snapshot_service {
    char name[CONFIG_NAME_MAX];   /* service name */
    unsigned n_workers;           /* scratch areas per set */
    struct instance_set *current; /* rcu_dereference / rcu_xchg_pointer only */
    pthread_mutex_t publish_lock; /* serialises publishers and the table */
    struct state_table table;     /* states by id */
    uint64_t version;             /* version of the current set */
};

static struct instance_set empty_set_template;

static uint64_t hash_id(const char *id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a: ids are short, this is plenty */
    for (; *id != '\0'; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ULL;
    return h;
}

static int table_grow(struct state_table *t)
{
    size_t n_buckets = t->n_buckets ? t->n_buckets * 2 : SNAPSHOT_TABLE_MIN;
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
    st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    snprintf(st->id, sizeof(st->id), "%s", id);
    atomic_init(&st->refs, 1);
    size_t b = hash_id(id) & (t->n_buckets - 1);
    st->next = t->buckets[b];
    t->buckets[b] = st;
    t->n++;
    return st;
}

/* Unlinks states that the newest set (version) no longer lists and drops the table's reference;
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

void instance_state_hold(struct instance_state *st)
{
    atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
}

void instance_state_release(struct instance_state *st)
{
    if (atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) == 1)
        free(st);
}

static void set_free(struct instance_set *set)
{
    if (set == NULL || set == &empty_set_template)
        return;
    for (size_t i = 0; i < set->n; i++)
        instance_state_release(set->inst[i].state);
    free(set);
}

static size_t align_up(size_t n)
{
    return (n + SNAPSHOT_ALIGN - 1) & ~(size_t)(SNAPSHOT_ALIGN - 1);
}

/* One allocation: header, instances, then the workers' scratch areas. */
static struct instance_set *set_alloc(const struct lb_ops *lb, size_t n, unsigned n_workers)
{
    size_t head = align_up(sizeof(struct instance_set) + n * sizeof(struct instance));
    size_t stride = align_up(lb->scratch_size(n));
    struct instance_set *set = aligned_alloc(SNAPSHOT_ALIGN, head + stride * n_workers);
    if (set == NULL)
        return NULL;
    memset(set, 0, head);
    set->lb = lb;
    set->n = n;
    set->inst = (struct instance *)(set + 1);
    set->n_workers = n_workers;
    set->scratch_stride = stride;
    set->scratch = (unsigned char *)set + head;
    return set;
}

static int set_fill(struct snapshot_service *svc, struct instance_set *set,
                    const struct snapshot_spec *specs)
{
    for (size_t i = 0; i < set->n; i++) {
        const char *id = specs[i].id != NULL ? specs[i].id : specs[i].addr.text;
        struct instance_state *st = table_get(&svc->table, id);
        if (st == NULL) {
            set->n = i; /* set_free releases only what was held */
            return -ENOMEM;
        }
        instance_state_hold(st);
        set->inst[i].addr = specs[i].addr;
        set->inst[i].weight = specs[i].weight;
        set->inst[i].state = st;
        set->total_weight += specs[i].weight;
    }
    for (unsigned w = 0; w < set->n_workers; w++)
        set->lb->scratch_init(snapshot_scratch(set, w), set, w);
    return 0;
}

int snapshot_publish(struct snapshot_service *svc, const struct lb_ops *lb,
                     const struct snapshot_spec *specs, size_t n)
{
    pthread_mutex_lock(&svc->publish_lock);
    uint64_t version = svc->version + 1;
    struct instance_set *set = set_alloc(lb, n, svc->n_workers);
    int rc = set != NULL ? set_fill(svc, set, specs) : -ENOMEM;
    if (rc != 0) {
        set_free(set);
        /* states created for the failed set are listed nowhere: drop them again */
        table_prune(&svc->table, svc->version);
        pthread_mutex_unlock(&svc->publish_lock);
        return rc;
    }
    for (size_t i = 0; i < n; i++)
        set->inst[i].state->listed_in = version;
    set->version = version;
    svc->version = version;
    struct instance_set *old = rcu_xchg_pointer(&svc->current, set);
    table_prune(&svc->table, version);
    pthread_mutex_unlock(&svc->publish_lock);

    synchronize_rcu(); /* no reader can still see old after this */
    set_free(old);
    return 0;
}

struct snapshot_service *snapshot_service_create(const char *name, unsigned n_workers)
{
    struct snapshot_service *svc = calloc(1, sizeof(*svc));
    if (svc == NULL)
        return NULL;
    snprintf(svc->name, sizeof(svc->name), "%s", name);
    svc->n_workers = n_workers;
    svc->current = &empty_set_template;
    svc->version = 1; /* new states start at listed_in 0: never mistaken for listed ones */
    pthread_mutex_init(&svc->publish_lock, NULL);
    return svc;
}

void snapshot_service_destroy(struct snapshot_service *svc)
{
    if (svc == NULL)
        return;
    set_free(svc->current);
    table_prune(&svc->table, (uint64_t)-1); /* the table holds no references of its own */
    free(svc->table.buckets);
    pthread_mutex_destroy(&svc->publish_lock);
    free(svc);
}

const char *snapshot_service_name(const struct snapshot_service *svc)
{
    return svc->name;
}

const struct instance_set *snapshot_current(const struct snapshot_service *svc)
{
    return rcu_dereference(svc->current);
}

void *snapshot_scratch(const struct instance_set *set, unsigned worker)
{
    return set->scratch + (size_t)worker * set->scratch_stride;
}

void snapshot_reader_register(void)
{
    rcu_register_thread();
}

void snapshot_reader_unregister(void)
{
    rcu_unregister_thread();
}

void snapshot_read_lock(void)
{
    rcu_read_lock();
}

void snapshot_read_unlock(void)
{
    rcu_read_unlock();
}
