/* allow/deny, then per-client limits, as one verdict. */
#include "admit.h"

#include "acl.h"
#include "client_limit.h"

#include <time.h>

/* The token buckets' clock. Coarse (the kernel tick, 1 to 4 ms): its read costs ~10 ns where a
 * precise CLOCK_MONOTONIC costs ~230 ns on this project's kvm-clock machines (measured,
 * bench/README.md). A bucket only refills once per tick then, so the rate holds on average and
 * a burst is never more than the bucket. */
static uint64_t admit_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

bool admit_check(const struct listener_rt *rt, const struct sockaddr *client, uint32_t *slot,
                 enum listener_reject *why)
{
    *slot = CLIENT_LIMIT_NONE;
    if (rt->acl != NULL) {
        enum acl_verdict v = acl_check(rt->acl, client);
        if (v != ACL_PASS) {
            *why = v == ACL_DENY ? LISTENER_REJECT_DENY : LISTENER_REJECT_NOT_ALLOWED;
            return false;
        }
    }
    if (rt->clients == NULL)
        return true;
    uint64_t now_ns = rt->client_limits.rate > 0 ? admit_now_ns() : 0;
    switch (client_limit_admit(rt->clients, &rt->client_limits, client, now_ns, slot)) {
    case CLIENT_OVER_CONNS:
        *why = LISTENER_REJECT_CLIENT_CONNECTIONS;
        return false;
    case CLIENT_OVER_RATE:
        *why = LISTENER_REJECT_CLIENT_RATE;
        return false;
    default:
        return true;
    }
}

void admit_release(const struct listener_rt *rt, uint32_t slot)
{
    if (slot != CLIENT_LIMIT_NONE)
        client_limit_release(rt->clients, slot);
}
