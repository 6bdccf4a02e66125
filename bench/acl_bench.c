/* acl-bench: builds allow/deny from N random CIDRs (half IPv4, half IPv6; half allow, half deny)
 * and times the build and acl_check on random client addresses. Prints one JSON line. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "acl.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    uint64_t x = rng_state; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Clears the bits of b (len bytes) beyond prefix p, so the CIDR is a network address. */
static void mask_bytes(unsigned char *b, size_t len, unsigned p)
{
    for (size_t i = 0; i < len; i++) {
        unsigned keep = p >= 8 * (i + 1) ? 8 : (p > 8 * i ? p - 8 * (unsigned)i : 0);
        b[i] &= (unsigned char)(0xff00u >> keep);
    }
}

/* One random CIDR text: IPv4 /8../32 or IPv6 /16../128. */
static char *random_cidr(int v6)
{
    unsigned char b[16];
    char ip[INET6_ADDRSTRLEN], *out = malloc(INET6_ADDRSTRLEN + 5);
    uint64_t hi = rng(), lo = rng();
    memcpy(b, &hi, 8);
    memcpy(b + 8, &lo, 8);
    unsigned p = v6 ? 16 + (unsigned)(rng() % 113) : 8 + (unsigned)(rng() % 25);
    mask_bytes(b, v6 ? 16 : 4, p);
    inet_ntop(v6 ? AF_INET6 : AF_INET, b, ip, sizeof(ip));
    snprintf(out, INET6_ADDRSTRLEN + 5, "%s/%u", ip, p);
    return out;
}

static void random_client(struct sockaddr_storage *ss, int v6)
{
    memset(ss, 0, sizeof(*ss));
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        uint64_t hi = rng(), lo = rng();
        a->sin6_family = AF_INET6;
        memcpy(a->sin6_addr.s6_addr, &hi, 8);
        memcpy(a->sin6_addr.s6_addr + 8, &lo, 8);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = (uint32_t)rng();
    }
}

int main(int argc, char **argv)
{
    size_t rules = argc > 1 ? strtoul(argv[1], NULL, 10) : 10000;
    size_t lookups = argc > 2 ? strtoul(argv[2], NULL, 10) : 20000000;
    size_t half = rules / 2,
           n_clients = 1 << 14; /* 2 MiB of addresses: the ACL, not the input, is measured */
    char **cidrs = malloc(rules * sizeof(*cidrs));
    struct sockaddr_storage *clients = malloc(n_clients * sizeof(*clients));

    if (cidrs == NULL || clients == NULL)
        return 1;
    for (size_t i = 0; i < rules; i++)
        cidrs[i] = random_cidr((int)(i & 1)); /* alternate families: each list gets half of both */
    for (size_t i = 0; i < n_clients; i++)
        random_client(&clients[i], (int)(i & 1));

    struct acl *acl = NULL;
    double best_build = 1e9;
    for (int rep = 0; rep < 5; rep++) { /* best of 5: the machine is shared */
        acl_destroy(acl);
        double t0 = now_s();
        if (acl_create(&acl, (const char *const *)cidrs, half, (const char *const *)cidrs + half,
                       rules - half) != 0)
            return 1;
        double t = now_s() - t0;
        best_build = t < best_build ? t : best_build;
    }

    size_t verdicts[3] = {0};
    double t0 = now_s();
    for (size_t i = 0; i < lookups; i++)
        verdicts[acl_check(acl, (const struct sockaddr *)&clients[i & (n_clients - 1)])]++;
    double secs = now_s() - t0;

    printf("{\"rules\":%zu,\"ranges\":%zu,\"build_ms\":%.3f,\"lookups\":%zu,"
           "\"ns_per_lookup\":%.2f,\"lookups_per_sec\":%.0f,\"pass\":%zu,\"deny\":%zu,"
           "\"not_allowed\":%zu}\n",
           rules, acl_ranges(acl), best_build * 1e3, lookups, secs * 1e9 / (double)lookups,
           (double)lookups / secs, verdicts[ACL_PASS], verdicts[ACL_DENY],
           verdicts[ACL_NOT_ALLOWED]);
    acl_destroy(acl);
    for (size_t i = 0; i < rules; i++)
        free(cidrs[i]);
    free(cidrs);
    free(clients);
    return 0;
}
