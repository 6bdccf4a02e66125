/* The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): a strict parser of the
 * header a trusted proxy puts in front of a connection, and the builders of the header sluice
 * sends to its upstreams. Pure functions: no I/O, no allocation, any thread. */
#ifndef SLUICE_PROXY_PROTO_H
#define SLUICE_PROXY_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXY_V1_MAX      107 /* the longest v1 line, "PROXY" to CRLF included (the spec's) */
#define PROXY_V2_FIXED    16  /* v2 signature, version/command, family, length */
#define PROXY_V2_BODY_MAX 512 /* sluice's cap on the v2 length field (addresses + TLVs) */
/* The most a header can be: what one peek must read to decide. */
#define PROXY_HEADER_MAX (PROXY_V2_FIXED + PROXY_V2_BODY_MAX)
/* The most proxy_build_v1 or proxy_build_v2 writes. */
#define PROXY_BUILD_MAX PROXY_V1_MAX

/* What proxy_parse says of the bytes it was given. */
enum proxy_parse_status {
    PROXY_PARSE_MORE,  /* a valid prefix of a header: read more (need says how much at least) */
    PROXY_PARSE_DONE,  /* a whole header of len bytes; what follows is the payload */
    PROXY_PARSE_ERROR, /* not a valid header (reason says why) */
};

/* A parsed header. */
struct proxy_header {
    size_t len;         /* DONE: the header's bytes, to consume */
    size_t need;        /* MORE: bytes the input must hold at least before it can decide */
    const char *reason; /* ERROR: a short phrase such as "bad v1 source port" */
    uint8_t version;    /* 1 or 2 */
    uint8_t local;      /* v2 LOCAL or v1 UNKNOWN, or an address family without IP: keep the
                           connection's own addresses */
    int family;         /* AF_INET or AF_INET6 when addresses are carried, else AF_UNSPEC */
    uint8_t src_ip[16]; /* source address, network order (4 bytes used for IPv4) */
    uint8_t dst_ip[16]; /* destination address */
    uint16_t src_port;  /* source port, host order */
    uint16_t dst_port;  /* destination port, host order */
    uint16_t tlv_count; /* v2 TLVs walked (skipped: sluice acts on none) */
};

/* Parses the start of a connection's bytes, buf[0..len). MORE when len is too short to decide
 * (a prefix that could still be a header), DONE with out->len <= len, or ERROR with out->reason.
 * Bytes after the header are never read beyond what decides. */
enum proxy_parse_status proxy_parse(const uint8_t *buf, size_t len, struct proxy_header *out);

/* Writes a v1 line for a connection from src to dst (AF_INET or AF_INET6; one of each is sent as
 * TCP6 with the IPv4 one mapped; any other family: "PROXY UNKNOWN\r\n") into buf (at least
 * PROXY_BUILD_MAX bytes). Returns its length. */
size_t proxy_build_v1(char *buf, const struct sockaddr *src, const struct sockaddr *dst);

/* The same as a v2 header: PROXY with TCP over IPv4 or IPv6, or LOCAL (no address block) for
 * another family. Returns its length. */
size_t proxy_build_v2(uint8_t *buf, const struct sockaddr *src, const struct sockaddr *dst);

#endif
