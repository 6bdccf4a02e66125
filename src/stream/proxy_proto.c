/* PROXY protocol v1 and v2: strict parser, header builders. */
#include "proxy_proto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_sig[6] = "PROXY ";

#define V2_CMD_LOCAL 0x20 /* version 2, LOCAL */
#define V2_CMD_PROXY 0x21 /* version 2, PROXY */
#define V2_TCP4      0x11 /* AF_INET, STREAM */
#define V2_TCP6      0x21 /* AF_INET6, STREAM */
#define V2_UNIX      0x31 /* AF_UNIX, STREAM */
#define V2_UNSPEC    0x00 /* AF_UNSPEC */
#define V2_INET_LEN  12   /* two IPv4 addresses and two ports */
#define V2_INET6_LEN 36   /* two IPv6 addresses and two ports */
#define V2_UNIX_LEN  216  /* two 108-byte paths */

static enum proxy_parse_status fail(struct proxy_header *out, const char *why)
{
    out->reason = why;
    return PROXY_PARSE_ERROR;
}

static enum proxy_parse_status more(struct proxy_header *out, size_t need)
{
    out->need = need;
    return PROXY_PARSE_MORE;
}

/* --- version 1 ------------------------------------------------------------------------------ */

/* One space-separated token of a v1 line: [p, p + n). */
struct token {
    const char *p; /* first byte */
    size_t n;      /* length */
};

/* A decimal number of at most digits digits, no sign, no leading zero but "0", at most max.
 * 0, or -1. */
static int decimal(const struct token *t, size_t digits, unsigned max, unsigned *out)
{
    unsigned v = 0;

    if (t->n == 0 || t->n > digits || (t->p[0] == '0' && t->n > 1))
        return -1;
    for (size_t i = 0; i < t->n; i++) {
        if (t->p[i] < '0' || t->p[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(t->p[i] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

/* Dotted quad, each part a decimal 0..255 without leading zeros. 0, or -1. */
static int ipv4_token(const struct token *t, uint8_t ip[4])
{
    const char *p = t->p, *end = t->p + t->n;

    for (int i = 0; i < 4; i++) {
        const char *dot = i < 3 ? memchr(p, '.', (size_t)(end - p)) : end;
        unsigned v;
        if (dot == NULL)
            return -1;
        struct token part = {p, (size_t)(dot - p)};
        if (decimal(&part, 3, 255, &v) != 0)
            return -1;
        ip[i] = (uint8_t)v;
        p = dot + 1;
    }
    return 0;
}

/* An IPv6 address as inet_pton reads it, checked for its alphabet first (the token is not
 * NUL-terminated and must not be read past). 0, or -1. */
static int ipv6_token(const struct token *t, uint8_t ip[16])
{
    char text[INET6_ADDRSTRLEN];

    if (t->n < 2 || t->n >= sizeof(text))
        return -1;
    for (size_t i = 0; i < t->n; i++) {
        char c = t->p[i];
        int ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
                 c == ':' || c == '.';
        if (!ok)
            return -1;
    }
    memcpy(text, t->p, t->n);
    text[t->n] = '\0';
    return inet_pton(AF_INET6, text, ip) == 1 ? 0 : -1;
}

/* Splits line[0..n) at single spaces into at most max tokens; the count, or -1 for an empty
 * token (two spaces in a row, a space at either end) or more than max. */
static int split(const char *line, size_t n, struct token *tok, int max)
{
    int k = 0;
    size_t start = 0;

    for (size_t i = 0; i <= n; i++) {
        if (i < n && line[i] != ' ')
            continue;
        if (i == start || k == max)
            return -1;
        tok[k++] = (struct token){line + start, i - start};
        start = i + 1;
    }
    return k;
}

static int token_is(const struct token *t, const char *word)
{
    return t->n == strlen(word) && memcmp(t->p, word, t->n) == 0;
}

/* The tokens after "PROXY" of a complete line (CRLF excluded). */
static enum proxy_parse_status v1_fields(const char *line, size_t n, struct proxy_header *out)
{
    struct token t[6];
    unsigned sport, dport;

    /* UNKNOWN: whatever follows up to CRLF is ignored, as the spec says */
    if (n >= 13 && memcmp(line, "PROXY UNKNOWN", 13) == 0 && (n == 13 || line[13] == ' ')) {
        out->local = 1;
        out->family = AF_UNSPEC;
        return PROXY_PARSE_DONE;
    }
    if (split(line, n, t, 6) != 6)
        return fail(out, "v1 line is not PROXY TCP4|TCP6 SRC DST SPORT DPORT");
    if (token_is(&t[1], "TCP4")) {
        out->family = AF_INET;
        if (ipv4_token(&t[2], out->src_ip) != 0 || ipv4_token(&t[3], out->dst_ip) != 0)
            return fail(out, "bad v1 IPv4 address");
    } else if (token_is(&t[1], "TCP6")) {
        out->family = AF_INET6;
        if (ipv6_token(&t[2], out->src_ip) != 0 || ipv6_token(&t[3], out->dst_ip) != 0)
            return fail(out, "bad v1 IPv6 address");
    } else {
        return fail(out, "v1 protocol is not TCP4, TCP6 or UNKNOWN");
    }
    if (decimal(&t[4], 5, 65535, &sport) != 0 || decimal(&t[5], 5, 65535, &dport) != 0)
        return fail(out, "bad v1 port");
    out->src_port = (uint16_t)sport;
    out->dst_port = (uint16_t)dport;
    return PROXY_PARSE_DONE;
}

/* buf starts with "PROXY ": find CRLF within PROXY_V1_MAX bytes, then read the fields. The CR
 * may stand at most at PROXY_V1_MAX - 2, so that its LF is the line's last allowed byte. */
static enum proxy_parse_status v1_parse(const uint8_t *buf, size_t len, struct proxy_header *out)
{
    size_t scan = len < PROXY_V1_MAX - 1 ? len : PROXY_V1_MAX - 1;

    out->version = 1;
    /* cppcheck 2.10 takes scan for at most sizeof(v1_sig): callers pass len >= it, and more */
    // cppcheck-suppress knownConditionTrueFalse
    for (size_t i = sizeof(v1_sig); i < scan; i++) {
        if (buf[i] == '\r') {
            if (i + 1 == len)
                return more(out, len + 1);
            if (buf[i + 1] != '\n')
                return fail(out, "v1 line has CR without LF");
            out->len = i + 2;
            return v1_fields((const char *)buf, i, out);
        }
        if (buf[i] < 0x20 || buf[i] > 0x7e)
            return fail(out, "v1 line holds a control or non-ASCII byte");
    }
    if (len >= PROXY_V1_MAX - 1) /* no CR where one could still end the line in time */
        return fail(out, "v1 line is longer than 107 bytes");
    return more(out, len + 1);
}

/* --- version 2 ------------------------------------------------------------------------------ */

/* Walks the TLVs of body[off..end) without acting on any: each must fit whole. */
static enum proxy_parse_status v2_tlvs(const uint8_t *p, size_t n, struct proxy_header *out)
{
    size_t off = 0;

    while (off < n) {
        if (n - off < 3)
            return fail(out, "v2 TLV header is truncated");
        size_t tlen = (size_t)p[off + 1] << 8 | p[off + 2];
        if (tlen > n - off - 3)
            return fail(out, "v2 TLV overruns the header");
        off += 3 + tlen;
        out->tlv_count++;
    }
    return PROXY_PARSE_DONE;
}

/* The address block of a PROXY command: family byte fam, body[0..n). */
static enum proxy_parse_status v2_addresses(uint8_t fam, const uint8_t *body, size_t n,
                                            struct proxy_header *out)
{
    size_t alen;

    if (fam == V2_TCP4) {
        alen = V2_INET_LEN;
        out->family = AF_INET;
    } else if (fam == V2_TCP6) {
        alen = V2_INET6_LEN;
        out->family = AF_INET6;
    } else if (fam == V2_UNIX || fam == V2_UNSPEC) {
        alen = fam == V2_UNIX ? V2_UNIX_LEN : 0;
        out->local = 1; /* no IP to take: the connection's own addresses stand */
        out->family = AF_UNSPEC;
    } else {
        return fail(out, "v2 family or transport is not supported (TCP over IPv4/IPv6)");
    }
    if (n < alen)
        return fail(out, "v2 length is too short for its address family");
    if (out->family != AF_UNSPEC) {
        size_t ip = out->family == AF_INET ? 4 : 16;
        memcpy(out->src_ip, body, ip);
        memcpy(out->dst_ip, body + ip, ip);
        out->src_port = (uint16_t)(body[2 * ip] << 8 | body[2 * ip + 1]);
        out->dst_port = (uint16_t)(body[2 * ip + 2] << 8 | body[2 * ip + 3]);
    }
    return v2_tlvs(body + alen, n - alen, out);
}

/* buf starts with the whole v2 signature. */
static enum proxy_parse_status v2_parse(const uint8_t *buf, size_t len, struct proxy_header *out)
{
    out->version = 2;
    if (len < PROXY_V2_FIXED)
        return more(out, PROXY_V2_FIXED);
    if ((buf[12] & 0xF0) != 0x20)
        return fail(out, "v2 version is not 2");
    if (buf[12] != V2_CMD_LOCAL && buf[12] != V2_CMD_PROXY)
        return fail(out, "v2 command is neither LOCAL nor PROXY");
    size_t body = (size_t)buf[14] << 8 | buf[15];
    if (body > PROXY_V2_BODY_MAX)
        return fail(out, "v2 length is over 512 bytes");
    if (len < PROXY_V2_FIXED + body)
        return more(out, PROXY_V2_FIXED + body);
    out->len = PROXY_V2_FIXED + body;
    if (buf[12] == V2_CMD_LOCAL) { /* the block is discarded, family and all (the spec's rule) */
        out->local = 1;
        out->family = AF_UNSPEC;
        return PROXY_PARSE_DONE;
    }
    return v2_addresses(buf[13], buf + PROXY_V2_FIXED, body, out);
}

enum proxy_parse_status proxy_parse(const uint8_t *buf, size_t len, struct proxy_header *out)
{
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return more(out, 1);
    if (buf[0] == (uint8_t)v1_sig[0]) {
        size_t n = len < sizeof(v1_sig) ? len : sizeof(v1_sig);
        if (memcmp(buf, v1_sig, n) != 0)
            return fail(out, "no PROXY signature");
        return len < sizeof(v1_sig) ? more(out, sizeof(v1_sig)) : v1_parse(buf, len, out);
    }
    size_t n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
    if (memcmp(buf, v2_sig, n) != 0)
        return fail(out, "no PROXY signature");
    return len < sizeof(v2_sig) ? more(out, sizeof(v2_sig)) : v2_parse(buf, len, out);
}

/* --- builders --------------------------------------------------------------------------------- */

/* An address as the header carries it: 16 bytes (IPv4 mapped when the other end is IPv6) and
 * a port. */
struct endpoint {
    uint8_t ip[16]; /* network order; 4 bytes used for IPv4 */
    uint16_t port;  /* host order */
    int family;     /* AF_INET or AF_INET6 */
};

static int endpoint_of(const struct sockaddr *sa, struct endpoint *e)
{
    memset(e, 0, sizeof(*e));
    if (sa == NULL)
        return -1;
    e->family = sa->sa_family;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        memcpy(e->ip, &s4->sin_addr, 4);
        e->port = ntohs(s4->sin_port);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
        memcpy(e->ip, &s6->sin6_addr, 16);
        e->port = ntohs(s6->sin6_port);
        return 0;
    }
    return -1;
}

/* ::ffff:a.b.c.d for an IPv4 endpoint. */
static void endpoint_map6(struct endpoint *e)
{
    if (e->family != AF_INET)
        return;
    memmove(e->ip + 12, e->ip, 4);
    memset(e->ip, 0, 10);
    e->ip[10] = e->ip[11] = 0xff;
    e->family = AF_INET6;
}

/* Both endpoints in one family; -1 when either has no IP. */
static int endpoints(const struct sockaddr *src, const struct sockaddr *dst, struct endpoint *s,
                     struct endpoint *d)
{
    if (endpoint_of(src, s) != 0 || endpoint_of(dst, d) != 0)
        return -1;
    if (s->family != d->family) {
        endpoint_map6(s);
        endpoint_map6(d);
    }
    return 0;
}

size_t proxy_build_v1(char *buf, const struct sockaddr *src, const struct sockaddr *dst)
{
    struct endpoint s, d;
    char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];

    if (endpoints(src, dst, &s, &d) != 0) {
        /* bytes for the wire, not a C string */
        memcpy(buf, "PROXY UNKNOWN\r\n", 15); // NOLINT(bugprone-not-null-terminated-result)
        return 15;
    }
    inet_ntop(s.family, s.ip, a, sizeof(a));
    inet_ntop(d.family, d.ip, b, sizeof(b));
    /* "PROXY TCP6 " 11 + two 39-character IPv6 and two ports with spaces 90 + CRLF 2 = 103 */
    int n = snprintf(buf, PROXY_BUILD_MAX, "PROXY %s %s %s %u %u\r\n",
                     s.family == AF_INET ? "TCP4" : "TCP6", a, b, s.port, d.port);
    return n > 0 && n < PROXY_BUILD_MAX ? (size_t)n : 0;
}

size_t proxy_build_v2(uint8_t *buf, const struct sockaddr *src, const struct sockaddr *dst)
{
    struct endpoint s, d;

    memcpy(buf, v2_sig, sizeof(v2_sig));
    if (endpoints(src, dst, &s, &d) != 0) {
        buf[12] = V2_CMD_LOCAL;
        buf[13] = V2_UNSPEC;
        buf[14] = buf[15] = 0;
        return PROXY_V2_FIXED;
    }
    size_t ip = s.family == AF_INET ? 4 : 16;
    size_t body = 2 * ip + 4;
    buf[12] = V2_CMD_PROXY;
    buf[13] = s.family == AF_INET ? V2_TCP4 : V2_TCP6;
    buf[14] = 0;
    buf[15] = (uint8_t)body;
    uint8_t *p = buf + PROXY_V2_FIXED;
    memcpy(p, s.ip, ip);
    memcpy(p + ip, d.ip, ip);
    p[2 * ip] = (uint8_t)(s.port >> 8);
    p[2 * ip + 1] = (uint8_t)s.port;
    p[2 * ip + 2] = (uint8_t)(d.port >> 8);
    p[2 * ip + 3] = (uint8_t)d.port;
    return PROXY_V2_FIXED + body;
}
