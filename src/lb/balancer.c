/* Maps a configured balance kind to its ops table, and the eligibility rule every lb_*.c shares. */
#include "balancer.h"

const struct lb_ops *balancer_for(enum config_balance balance)
{
    switch (balance) {
    case CONFIG_BALANCE_ROUND_ROBIN:
        return &lb_round_robin;
    case CONFIG_BALANCE_LEAST_CONNECTIONS:
        return &lb_least_connections;
    case CONFIG_BALANCE_WEIGHTED:
        return &lb_weighted;
    }
    /* Only reachable with a value config_load never produces. */
    return NULL;
}

int balancer_eligible(const struct instance_set *set, size_t i, const struct lb_exclude *ex)
{
    const struct instance *inst = &set->inst[i];

    if (inst->weight == 0)
        return 0;
    if (ex == NULL)
        return 1;
    /* By state identity, not by index: the set may have been swapped since the last try. */
    for (size_t k = 0; k < ex->n; k++) {
        if (ex->states[k] == inst->state)
            return 0;
    }
    return 1;
}
