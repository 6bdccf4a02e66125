/* libFuzzer target for the PROXY protocol parser (src/stream/proxy_proto.c): any bytes, as a
 * client would send them to an accept_proxy listener. Invariants: a DONE header is no longer than
 * the input and than the protocol allows, its addresses are those of its family; every prefix of
 * a DONE input asks for more (never decides differently on less); MORE asks for more than it
 * had; ERROR says why. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy_proto.h"

static void check_done(const struct proxy_header *h, size_t size)
{
    assert(h->len > 0 && h->len <= size);
    assert(h->version == 1 || h->version == 2);
    assert(h->len <= (h->version == 1 ? (size_t)PROXY_V1_MAX : (size_t)PROXY_HEADER_MAX));
    if (h->local) {
        assert(h->family == AF_UNSPEC);
        return;
    }
    assert(h->family == AF_INET || h->family == AF_INET6);
    if (h->family == AF_INET) { /* nothing beyond the 4 bytes of an IPv4 address */
        static const uint8_t zero[12];
        assert(memcmp(h->src_ip + 4, zero, 12) == 0 && memcmp(h->dst_ip + 4, zero, 12) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxy_header h, p;
    enum proxy_parse_status st = proxy_parse(data, size, &h);

    if (st == PROXY_PARSE_ERROR) {
        assert(h.reason != NULL && h.reason[0] != '\0');
        return 0;
    }
    if (st == PROXY_PARSE_MORE) {
        assert(h.need > size && h.need <= PROXY_HEADER_MAX);
        return 0;
    }
    assert(st == PROXY_PARSE_DONE);
    check_done(&h, size);
    /* the header alone decides the same; one byte less never decides */
    assert(proxy_parse(data, h.len, &p) == PROXY_PARSE_DONE && p.len == h.len);
    assert(memcmp(p.src_ip, h.src_ip, 16) == 0 && p.src_port == h.src_port);
    assert(proxy_parse(data, h.len - 1, &p) == PROXY_PARSE_MORE);
    return 0;
}
