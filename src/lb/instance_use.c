/* A worker's references on the states its sessions use (instance_use.h). */
#include "instance_use.h"

void instance_user_sweep(struct instance_user *u)
{
    struct instance_state **link = &u->held;

    while (*link != NULL) {
        struct instance_state *st = *link;
        struct instance_shard *sh = instance_shard_of(st, u);
        if (atomic_load_explicit(&sh->held, memory_order_relaxed) != 0) {
            link = &sh->next_held;
            continue;
        }
        *link = sh->next_held; /* unlinked before the release: it may free st */
        sh->next_held = NULL;
        sh->has_ref = 0;
        instance_state_release(st);
    }
}

void instance_user_finish(struct instance_user *u)
{
    instance_user_sweep(u);
    assert(u->held == NULL); /* a session still holds a state */
}
