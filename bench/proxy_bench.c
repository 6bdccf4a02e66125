/* proxy-bench: ns per PROXY protocol header parsed (src/stream/proxy_proto.c), for typical v1
 * TCP4 and TCP6 lines and v2 TCP4 and TCP6 headers (the v2 ones with and without two TLVs), best
 * of 5 runs of N parses each. Prints one JSON line. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy_proto.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Best of 5: ns per proxy_parse of buf[0..len) (with 64 payload bytes after it, as a peek sees). */
static double ns_per_parse(const uint8_t *hdr, size_t len, long n)
{
    uint8_t buf[PROXY_HEADER_MAX + 64];
    struct proxy_header h;
    double best = 1e30;
    volatile size_t sink = 0;

    memcpy(buf, hdr, len);
    memset(buf + len, 'x', 64);
    for (int run = 0; run < 5; run++) {
        double t0 = now_s();
        for (long i = 0; i < n; i++) {
            if (proxy_parse(buf, len + 64, &h) != PROXY_PARSE_DONE || h.len != len) {
                fprintf(stderr, "proxy-bench: header not parsed\n");
                exit(1);
            }
            sink += h.src_port;
        }
        double ns = (now_s() - t0) * 1e9 / (double)n;
        best = ns < best ? ns : best;
    }
    (void)sink;
    return best;
}

static size_t v2_header(uint8_t *out, int v6, int tlvs)
{
    static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    static const uint8_t tlv[] = {0x01, 0,   2,   'h', '2', 0x02, 0,   11,  'e', 'x',
                                  'a',  'm', 'p', 'l', 'e', '.',  'c', 'o', 'm'};
    size_t alen = v6 ? 36 : 12, body = alen + (tlvs ? sizeof(tlv) : 0);
    memcpy(out, sig, 12);
    out[12] = 0x21;
    out[13] = v6 ? 0x21 : 0x11;
    out[14] = 0;
    out[15] = (uint8_t)body;
    for (size_t i = 0; i < alen; i++)
        out[16 + i] = (uint8_t)(i * 37 + 1);
    if (tlvs)
        memcpy(out + 16 + alen, tlv, sizeof(tlv));
    return 16 + body;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 10000000;
    const char *v1_4 = "PROXY TCP4 192.168.100.200 10.0.0.1 56324 443\r\n";
    const char *v1_6 = "PROXY TCP6 2001:db8:85a3::8a2e:370:7334 2001:db8::1 56324 443\r\n";
    uint8_t a[128], b[128], c[128];
    size_t la = v2_header(a, 0, 0), lb = v2_header(b, 1, 0), lc = v2_header(c, 0, 1);

    printf("{\"parses\":%ld,\"v1_tcp4_ns\":%.1f,\"v1_tcp6_ns\":%.1f,\"v2_tcp4_ns\":%.1f,"
           "\"v2_tcp6_ns\":%.1f,\"v2_tcp4_tlvs_ns\":%.1f}\n",
           n, ns_per_parse((const uint8_t *)v1_4, strlen(v1_4), n),
           ns_per_parse((const uint8_t *)v1_6, strlen(v1_6), n), ns_per_parse(a, la, n),
           ns_per_parse(b, lb, n), ns_per_parse(c, lc, n));
    return 0;
}
