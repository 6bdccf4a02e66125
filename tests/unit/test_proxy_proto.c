/* PROXY protocol: every valid v1 and v2 form, every malformed class refused with its reason,
 * every prefix of a valid header asks for more, TLVs walked with bounds, the length cap, and the
 * builders (v1/v2, IPv4/IPv6/mixed/unknown) read back by the parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "proxy_proto.h"

static const uint8_t SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static enum proxy_parse_status parse_text(const char *text, struct proxy_header *h)
{
    return proxy_parse((const uint8_t *)text, strlen(text), h);
}

/* Every strict prefix of buf[0..len) is a MORE that needs more than it has, never an error. */
static void assert_prefixes_need_more(const uint8_t *buf, size_t len)
{
    struct proxy_header h;
    for (size_t i = 0; i < len; i++) {
        enum proxy_parse_status st = proxy_parse(buf, i, &h);
        if (st != PROXY_PARSE_MORE)
            fail_msg("prefix of %zu bytes: status %d (%s)", i, st, h.reason ? h.reason : "");
        assert_true(h.need > i);
        assert_true(h.need <= len);
    }
}

static void assert_ip(int family, const uint8_t *ip, const char *text)
{
    uint8_t want[16] = {0};
    assert_int_equal(inet_pton(family, text, want), 1);
    assert_memory_equal(ip, want, family == AF_INET ? 4 : 16);
}

static void assert_refused(const char *text, const char *reason_part)
{
    struct proxy_header h;
    if (parse_text(text, &h) != PROXY_PARSE_ERROR)
        fail_msg("accepted: %s", text);
    assert_non_null(h.reason);
    if (strstr(h.reason, reason_part) == NULL)
        fail_msg("%s: reason \"%s\" lacks \"%s\"", text, h.reason, reason_part);
}

/* --- v1 ------------------------------------------------------------------------------------ */

static void test_v1_tcp4(void **state)
{
    (void)state;
    const char *t = "PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\nGET /";
    struct proxy_header h;
    assert_int_equal(parse_text(t, &h), PROXY_PARSE_DONE);
    assert_int_equal(h.len, strlen(t) - 5); /* the payload is not the header's */
    assert_int_equal(h.version, 1);
    assert_int_equal(h.local, 0);
    assert_int_equal(h.family, AF_INET);
    assert_ip(AF_INET, h.src_ip, "192.168.0.1");
    assert_ip(AF_INET, h.dst_ip, "10.0.0.2");
    assert_int_equal(h.src_port, 56324);
    assert_int_equal(h.dst_port, 443);
    assert_prefixes_need_more((const uint8_t *)t, h.len);
}

static void test_v1_tcp6(void **state)
{
    (void)state;
    const char *t = "PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 0 65535\r\n";
    struct proxy_header h;
    assert_int_equal(parse_text(t, &h), PROXY_PARSE_DONE);
    assert_int_equal(h.len, strlen(t));
    assert_int_equal(h.family, AF_INET6);
    assert_ip(AF_INET6, h.src_ip, "2001:db8::1");
    assert_ip(AF_INET6, h.dst_ip, "::ffff:10.0.0.1");
    assert_int_equal(h.src_port, 0);
    assert_int_equal(h.dst_port, 65535);
    assert_prefixes_need_more((const uint8_t *)t, h.len);
}

static void test_v1_longest_line(void **state)
{
    (void)state;
    char t[200];
    struct proxy_header h;
    snprintf(t, sizeof(t), "PROXY TCP6 %s %s 65535 65535\r\n",
             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    assert_true(strlen(t) <= PROXY_V1_MAX);
    assert_int_equal(parse_text(t, &h), PROXY_PARSE_DONE);
    assert_int_equal(h.len, strlen(t));
}

static void test_v1_unknown(void **state)
{
    (void)state;
    struct proxy_header h;
    assert_int_equal(parse_text("PROXY UNKNOWN\r\nx", &h), PROXY_PARSE_DONE);
    assert_int_equal(h.len, 15);
    assert_int_equal(h.local, 1);
    assert_int_equal(h.family, AF_UNSPEC);
    /* the spec: whatever follows UNKNOWN up to CRLF is ignored */
    assert_int_equal(parse_text("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", &h), PROXY_PARSE_DONE);
    assert_int_equal(h.local, 1);
    assert_refused("PROXY UNKNOWNX\r\n", "v1 line is not");
}

static void test_v1_malformed(void **state)
{
    (void)state;
    /* signature and framing */
    assert_refused("GET / HTTP/1.1\r\n", "no PROXY signature");
    assert_refused("PROXY\tTCP4 1.2.3.4 1.2.3.4 1 2\r\n", "no PROXY signature");
    assert_refused("proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", "no PROXY signature");
    assert_refused("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX", "CR without LF");
    assert_refused("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "control");
    static const char nul[] = "PROXY TCP4 1.2.3.4\0001.2.3.4 1 2\r\n";
    struct proxy_header h;
    assert_int_equal(proxy_parse((const uint8_t *)nul, sizeof(nul) - 1, &h), PROXY_PARSE_ERROR);
    assert_non_null(strstr(h.reason, "control"));
    assert_refused("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\x80\r\n", "non-ASCII");
    /* tokens: count, spaces */
    assert_refused("PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", "v1 line is not");
    assert_refused("PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n", "v1 line is not");
    assert_refused("PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n", "v1 line is not");
    assert_refused("PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n", "v1 line is not");
    assert_refused("PROXY \r\n", "v1 line is not");
    /* protocol */
    assert_refused("PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n", "protocol");
    assert_refused("PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n", "protocol");
    assert_refused("PROXY tcp4 1.2.3.4 1.2.3.4 1 2\r\n", "protocol");
    /* IPv4: leading zeros, range, shape, family mismatch */
    assert_refused("PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n", "IPv4");
    assert_refused("PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n", "IPv4");
    assert_refused("PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", "IPv4");
    assert_refused("PROXY TCP4 1.2.3.4.5 1.2.3.4 1 2\r\n", "IPv4");
    assert_refused("PROXY TCP4 1.2..4 1.2.3.4 1 2\r\n", "IPv4");
    assert_refused("PROXY TCP4 +1.2.3.4 1.2.3.4 1 2\r\n", "IPv4");
    assert_refused("PROXY TCP4 ::1 1.2.3.4 1 2\r\n", "IPv4");
    assert_refused("PROXY TCP4 1.2.3.4 0x1.2.3.4 1 2\r\n", "IPv4");
    /* IPv6 */
    assert_refused("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "IPv6");
    assert_refused("PROXY TCP6 ::g ::1 1 2\r\n", "IPv6");
    assert_refused("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", "IPv6");
    assert_refused("PROXY TCP6 [::1] ::1 1 2\r\n", "IPv6");
    assert_refused("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "IPv6");
    /* ports */
    assert_refused("PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", "port");
    assert_refused("PROXY TCP4 1.2.3.4 1.2.3.4 080 2\r\n", "port");
    assert_refused("PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n", "port");
    assert_refused("PROXY TCP4 1.2.3.4 1.2.3.4 1 99999999999\r\n", "port");
    assert_refused("PROXY TCP4 1.2.3.4 1.2.3.4 1 2a\r\n", "port");
}

static void test_v1_too_long(void **state)
{
    (void)state;
    char t[300];
    struct proxy_header h;
    memset(t, 'a', sizeof(t));
    memcpy(t, "PROXY UNKNOWN ", 14);
    /* 106 bytes without CR: no CRLF can end the line within 107 any more */
    assert_int_equal(proxy_parse((const uint8_t *)t, PROXY_V1_MAX, &h), PROXY_PARSE_ERROR);
    assert_non_null(strstr(h.reason, "longer than 107"));
    assert_int_equal(proxy_parse((const uint8_t *)t, PROXY_V1_MAX - 1, &h), PROXY_PARSE_ERROR);
    assert_int_equal(proxy_parse((const uint8_t *)t, PROXY_V1_MAX - 2, &h), PROXY_PARSE_MORE);
    /* CR as the 107th byte: its LF would make 108 (found by fuzz_proxy) */
    memcpy(t + PROXY_V1_MAX - 1, "\r\n", 2);
    assert_int_equal(proxy_parse((const uint8_t *)t, sizeof(t), &h), PROXY_PARSE_ERROR);
    assert_non_null(strstr(h.reason, "longer than 107"));
    memset(t + PROXY_V1_MAX - 1, 'a', 2);
    /* exactly 107 with CRLF: the longest valid line */
    memcpy(t + PROXY_V1_MAX - 2, "\r\n", 2);
    assert_int_equal(proxy_parse((const uint8_t *)t, sizeof(t), &h), PROXY_PARSE_DONE);
    assert_int_equal(h.len, PROXY_V1_MAX);
    /* CR at byte 108 */
    memcpy(t + PROXY_V1_MAX - 2, "aa\r\n", 4);
    assert_int_equal(proxy_parse((const uint8_t *)t, sizeof(t), &h), PROXY_PARSE_ERROR);
}

/* --- v2 ------------------------------------------------------------------------------------ */

/* A v2 header: command byte, family byte, then body[0..n). Returns its length. */
static size_t v2(uint8_t *out, uint8_t cmd, uint8_t fam, const uint8_t *body, size_t n)
{
    memcpy(out, SIG, 12);
    out[12] = cmd;
    out[13] = fam;
    out[14] = (uint8_t)(n >> 8);
    out[15] = (uint8_t)n;
    if (n > 0)
        memcpy(out + 16, body, n);
    return 16 + n;
}

static const uint8_t INET_BODY[12] = {10, 0, 0, 1, 192, 168, 1, 2, 0x30, 0x39, 0x01, 0xBB};

static void test_v2_tcp4(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct proxy_header h;
    size_t n = v2(buf, 0x21, 0x11, INET_BODY, sizeof(INET_BODY));
    memcpy(buf + n, "payload", 7);
    assert_int_equal(proxy_parse(buf, n + 7, &h), PROXY_PARSE_DONE);
    assert_int_equal(h.len, 28);
    assert_int_equal(h.version, 2);
    assert_int_equal(h.local, 0);
    assert_int_equal(h.family, AF_INET);
    assert_ip(AF_INET, h.src_ip, "10.0.0.1");
    assert_ip(AF_INET, h.dst_ip, "192.168.1.2");
    assert_int_equal(h.src_port, 12345);
    assert_int_equal(h.dst_port, 443);
    assert_int_equal(h.tlv_count, 0);
    assert_prefixes_need_more(buf, n);
}

static void test_v2_tcp6(void **state)
{
    (void)state;
    uint8_t body[36] = {0}, buf[64];
    struct proxy_header h;
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::7", body), 1);
    assert_int_equal(inet_pton(AF_INET6, "::1", body + 16), 1);
    body[32] = 0xFF, body[33] = 0xFF, body[34] = 0, body[35] = 80;
    size_t n = v2(buf, 0x21, 0x21, body, sizeof(body));
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_DONE);
    assert_int_equal(h.len, 52);
    assert_int_equal(h.family, AF_INET6);
    assert_ip(AF_INET6, h.src_ip, "2001:db8::7");
    assert_ip(AF_INET6, h.dst_ip, "::1");
    assert_int_equal(h.src_port, 65535);
    assert_int_equal(h.dst_port, 80);
    assert_prefixes_need_more(buf, n);
}

static void test_v2_tlvs(void **state)
{
    (void)state;
    uint8_t body[64], buf[128];
    struct proxy_header h;
    memcpy(body, INET_BODY, 12);
    /* ALPN "h2", an empty NOOP, AUTHORITY "example.com" */
    const uint8_t tlvs[] = {0x01, 0,   2,   'h', '2', 0x04, 0,   0,   0x02, 0,   11,
                            'e',  'x', 'a', 'm', 'p', 'l',  'e', '.', 'c',  'o', 'm'};
    memcpy(body + 12, tlvs, sizeof(tlvs));
    size_t n = v2(buf, 0x21, 0x11, body, 12 + sizeof(tlvs));
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_DONE);
    assert_int_equal(h.len, n);
    assert_int_equal(h.tlv_count, 3);
    assert_ip(AF_INET, h.src_ip, "10.0.0.1");
    assert_prefixes_need_more(buf, n);

    /* a TLV whose length runs past the header, and one cut inside its own 3-byte head */
    const uint8_t over[] = {0x01, 0, 3, 'h', '2'};
    memcpy(body + 12, over, sizeof(over));
    n = v2(buf, 0x21, 0x11, body, 12 + sizeof(over));
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_ERROR);
    assert_non_null(strstr(h.reason, "overruns"));
    const uint8_t cut[] = {0x01, 0, 0, 0x02, 0};
    memcpy(body + 12, cut, sizeof(cut));
    n = v2(buf, 0x21, 0x11, body, 12 + sizeof(cut));
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_ERROR);
    assert_non_null(strstr(h.reason, "truncated"));
}

static void test_v2_local_and_unspec(void **state)
{
    (void)state;
    uint8_t buf[600], junk[40];
    struct proxy_header h;
    /* LOCAL: the block is discarded whatever it holds (health checks of the proxy itself) */
    size_t n = v2(buf, 0x20, 0x00, NULL, 0);
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_DONE);
    assert_int_equal(h.len, 16);
    assert_int_equal(h.local, 1);
    assert_int_equal(h.family, AF_UNSPEC);
    memset(junk, 0xEE, sizeof(junk));
    n = v2(buf, 0x20, 0x99, junk, sizeof(junk));
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_DONE);
    assert_int_equal(h.len, 56);
    assert_int_equal(h.local, 1);
    /* PROXY over UNSPEC or UNIX: no IP, the connection's own addresses stand */
    n = v2(buf, 0x21, 0x00, NULL, 0);
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_DONE);
    assert_int_equal(h.local, 1);
    uint8_t unix_body[216] = {'/', 't', 'm', 'p'};
    n = v2(buf, 0x21, 0x31, unix_body, sizeof(unix_body));
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_DONE);
    assert_int_equal(h.local, 1);
    assert_int_equal(h.len, 232);
}

static void test_v2_malformed(void **state)
{
    (void)state;
    uint8_t buf[700], body[600] = {0};
    struct proxy_header h;

    /* signature off by one byte */
    size_t n = v2(buf, 0x21, 0x11, INET_BODY, 12);
    buf[11] ^= 1;
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_ERROR);
    assert_non_null(strstr(h.reason, "signature"));
    /* version 1 or 3 in the v2 framing, unknown commands */
    const uint8_t bad_cmd[] = {0x11, 0x31, 0x22, 0x2F, 0x01};
    for (size_t i = 0; i < sizeof(bad_cmd); i++) {
        n = v2(buf, bad_cmd[i], 0x11, INET_BODY, 12);
        assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_ERROR);
    }
    /* UDP, unknown families and transports */
    const uint8_t bad_fam[] = {0x12, 0x22, 0x32, 0x41, 0x10, 0x13, 0x01};
    for (size_t i = 0; i < sizeof(bad_fam); i++) {
        n = v2(buf, 0x21, bad_fam[i], body, 216);
        assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_ERROR);
        assert_non_null(strstr(h.reason, "family"));
    }
    /* addresses longer than the length says */
    n = v2(buf, 0x21, 0x11, INET_BODY, 11);
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_ERROR);
    assert_non_null(strstr(h.reason, "too short"));
    n = v2(buf, 0x21, 0x21, body, 35);
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_ERROR);
    n = v2(buf, 0x21, 0x31, body, 215);
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_ERROR);
}

static void test_v2_length_cap(void **state)
{
    (void)state;
    uint8_t buf[PROXY_HEADER_MAX + 16], body[PROXY_V2_BODY_MAX + 1];
    struct proxy_header h;

    /* the cap itself: one TLV filling it */
    memcpy(body, INET_BODY, 12);
    size_t tl = PROXY_V2_BODY_MAX - 12 - 3;
    body[12] = 0xEE, body[13] = (uint8_t)(tl >> 8), body[14] = (uint8_t)tl;
    memset(body + 15, 'x', tl);
    size_t n = v2(buf, 0x21, 0x11, body, PROXY_V2_BODY_MAX);
    assert_int_equal(n, PROXY_HEADER_MAX);
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_DONE);
    assert_int_equal(h.len, PROXY_HEADER_MAX);
    /* one byte over: refused from the fixed part alone, without waiting for the body */
    n = v2(buf, 0x21, 0x11, body, PROXY_V2_BODY_MAX + 1);
    assert_int_equal(proxy_parse(buf, 16, &h), PROXY_PARSE_ERROR);
    assert_non_null(strstr(h.reason, "over 512"));
    buf[14] = 0xFF, buf[15] = 0xFF;
    assert_int_equal(proxy_parse(buf, 16, &h), PROXY_PARSE_ERROR);
}

static void test_empty_and_split(void **state)
{
    (void)state;
    struct proxy_header h;
    assert_int_equal(proxy_parse((const uint8_t *)"", 0, &h), PROXY_PARSE_MORE);
    assert_int_equal(h.need, 1);
    assert_int_equal(proxy_parse((const uint8_t *)"PRO", 3, &h), PROXY_PARSE_MORE);
    assert_int_equal(h.need, 6);
    assert_int_equal(proxy_parse(SIG, 5, &h), PROXY_PARSE_MORE);
    assert_int_equal(h.need, 12);
    assert_int_equal(proxy_parse(SIG, 12, &h), PROXY_PARSE_MORE);
    assert_int_equal(h.need, 16);
    /* a wrong byte inside the signature prefix is refused at once */
    assert_int_equal(proxy_parse((const uint8_t *)"PRX", 3, &h), PROXY_PARSE_ERROR);
    assert_int_equal(proxy_parse((const uint8_t *)"\r\n\r\n\r", 5, &h), PROXY_PARSE_ERROR);
    /* v2 with the fixed part known: it needs exactly the rest */
    uint8_t buf[64];
    size_t n = v2(buf, 0x21, 0x11, INET_BODY, 12);
    assert_int_equal(proxy_parse(buf, 20, &h), PROXY_PARSE_MORE);
    assert_int_equal(h.need, n);
}

/* --- builders ------------------------------------------------------------------------------ */

static struct sockaddr_storage sa(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
    } else {
        assert_int_equal(inet_pton(AF_INET6, ip, &v6->sin6_addr), 1);
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
    }
    return ss;
}

#define SA(x) ((const struct sockaddr *)&(x))

static void test_build_v1(void **state)
{
    (void)state;
    char buf[PROXY_BUILD_MAX + 1];
    struct proxy_header h;
    struct sockaddr_storage a = sa("127.0.0.7", 40000), b = sa("127.0.0.1", 8080);
    size_t n = proxy_build_v1(buf, SA(a), SA(b));
    buf[n] = '\0';
    assert_string_equal(buf, "PROXY TCP4 127.0.0.7 127.0.0.1 40000 8080\r\n");

    struct sockaddr_storage c = sa("2001:db8::1", 1), d = sa("::1", 65535);
    n = proxy_build_v1(buf, SA(c), SA(d));
    buf[n] = '\0';
    assert_string_equal(buf, "PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");

    /* one of each family: both as IPv6, the IPv4 one mapped */
    n = proxy_build_v1(buf, SA(a), SA(d));
    buf[n] = '\0';
    assert_string_equal(buf, "PROXY TCP6 ::ffff:127.0.0.7 ::1 40000 65535\r\n");
    assert_int_equal(proxy_parse((const uint8_t *)buf, n, &h), PROXY_PARSE_DONE);
    assert_int_equal(h.len, n);

    /* no address known */
    struct sockaddr_storage u = {.ss_family = AF_UNIX};
    n = proxy_build_v1(buf, SA(u), SA(b));
    buf[n] = '\0';
    assert_string_equal(buf, "PROXY UNKNOWN\r\n");

    /* the longest line fits and parses */
    struct sockaddr_storage e = sa("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535);
    n = proxy_build_v1(buf, SA(e), SA(e));
    assert_true(n > 90 && n <= PROXY_V1_MAX);
    assert_int_equal(proxy_parse((const uint8_t *)buf, n, &h), PROXY_PARSE_DONE);
    assert_int_equal(h.src_port, 65535);
}

static void test_build_v2(void **state)
{
    (void)state;
    uint8_t buf[PROXY_BUILD_MAX];
    struct proxy_header h;
    struct sockaddr_storage a = sa("127.0.0.7", 40000), b = sa("127.0.0.1", 8080);

    size_t n = proxy_build_v2(buf, SA(a), SA(b));
    assert_int_equal(n, 28);
    assert_memory_equal(buf, SIG, 12);
    assert_int_equal(buf[12], 0x21);
    assert_int_equal(buf[13], 0x11);
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_DONE);
    assert_int_equal(h.family, AF_INET);
    assert_ip(AF_INET, h.src_ip, "127.0.0.7");
    assert_ip(AF_INET, h.dst_ip, "127.0.0.1");
    assert_int_equal(h.src_port, 40000);
    assert_int_equal(h.dst_port, 8080);

    struct sockaddr_storage c = sa("2001:db8::1", 1), d = sa("::1", 443);
    n = proxy_build_v2(buf, SA(c), SA(d));
    assert_int_equal(n, 52);
    assert_int_equal(buf[13], 0x21);
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_DONE);
    assert_ip(AF_INET6, h.src_ip, "2001:db8::1");
    assert_ip(AF_INET6, h.dst_ip, "::1");
    assert_int_equal(h.dst_port, 443);

    n = proxy_build_v2(buf, SA(a), SA(d));
    assert_int_equal(n, 52);
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_DONE);
    assert_ip(AF_INET6, h.src_ip, "::ffff:127.0.0.7");

    struct sockaddr_storage u = {.ss_family = AF_UNIX};
    n = proxy_build_v2(buf, SA(b), SA(u));
    assert_int_equal(n, 16);
    assert_int_equal(buf[12], 0x20);
    assert_int_equal(proxy_parse(buf, n, &h), PROXY_PARSE_DONE);
    assert_int_equal(h.local, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4),         cmocka_unit_test(test_v1_tcp6),
        cmocka_unit_test(test_v1_longest_line), cmocka_unit_test(test_v1_unknown),
        cmocka_unit_test(test_v1_malformed),    cmocka_unit_test(test_v1_too_long),
        cmocka_unit_test(test_v2_tcp4),         cmocka_unit_test(test_v2_tcp6),
        cmocka_unit_test(test_v2_tlvs),         cmocka_unit_test(test_v2_local_and_unspec),
        cmocka_unit_test(test_v2_malformed),    cmocka_unit_test(test_v2_length_cap),
        cmocka_unit_test(test_empty_and_split), cmocka_unit_test(test_build_v1),
        cmocka_unit_test(test_build_v2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
