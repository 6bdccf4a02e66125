#!/usr/bin/env python3
"""A small authoritative DNS server for the tests (stdlib only): UDP and TCP on 127.0.0.1, SRV, A
and AAAA records from a JSON zone file that the test rewrites while it runs.

Zone file (read again for every query, so a rename into place takes effect at once):
  {"ttl": 1, "mode": "ok",
   "records": {"_api._tcp.test.": {"SRV": [[priority, weight, port, "target."], ...]},
               "api-1.test.": {"A": ["127.0.0.1"], "AAAA": ["::1"]}}}
mode: "ok" (answer from records: NXDOMAIN for a name not listed, no answer records for a type
not listed), "servfail" (SERVFAIL to everything), "timeout" (no reply at all), "nxdomain".
A UDP answer longer than 512 bytes is truncated (TC), as a server without EDNS does, so that
big answers (1,000 SRV records) go over TCP. Every query is appended to --log as "TYPE NAME".

Why our own server rather than dnsmasq: the tests need SERVFAIL and silence on demand, a TTL
and answers changed mid-test without restarting or signalling anything, and nothing to install.
"""
import argparse
import json
import os
import socket
import struct
import sys
import threading

TYPES = {1: "A", 28: "AAAA", 33: "SRV"}


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def parse_question(msg):
    pos, labels = 12, []
    while msg[pos] != 0:
        n = msg[pos]
        labels.append(msg[pos + 1:pos + 1 + n].decode(errors="replace"))
        pos += 1 + n
    qtype, qclass = struct.unpack("!HH", msg[pos + 1:pos + 5])
    return (".".join(labels) + ".").lower(), qtype, msg[12:pos + 5]


_cache = {"key": None, "zone": None}


def load_zone(path):
    """The zone, parsed again only when the file changed (a rename gives a new inode), so that
    1,000 target lookups do not parse 1,000 records each."""
    try:
        st = os.stat(path)
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != _cache["key"]:
            with open(path) as f:
                _cache["zone"] = json.load(f)
            _cache["key"] = key
        return _cache["zone"]
    except (OSError, ValueError):
        _cache["key"] = None
        return {"mode": "servfail"}


def rdata(rtype, value):
    if rtype == "A":
        return socket.inet_pton(socket.AF_INET, value)
    if rtype == "AAAA":
        return socket.inet_pton(socket.AF_INET6, value)
    prio, weight, port, target = value
    return struct.pack("!HHH", prio, weight, port) + encode_name(target)


def answer(msg, zone_path, log_path):
    """The reply to one query, or None for silence."""
    if len(msg) < 17:
        return None
    qid, = struct.unpack("!H", msg[:2])
    name, qtype, question = parse_question(msg)
    if log_path:
        with open(log_path, "a") as f:
            f.write("%s %s\n" % (TYPES.get(qtype, str(qtype)), name))
    zone = load_zone(zone_path)
    mode = zone.get("mode", "ok")
    if mode == "timeout":
        return None
    records = zone.setdefault("_lower", {k.lower(): v for k, v in zone.get("records", {}).items()})
    rcode, answers = 0, []
    if mode == "servfail":
        rcode = 2
    elif mode == "nxdomain" or name not in records:
        rcode = 3
    else:
        rtype = TYPES.get(qtype)
        for value in records[name].get(rtype, []) if rtype else []:
            data = rdata(rtype, value)
            answers.append(struct.pack("!HHHIH", 0xC00C, qtype, 1, int(zone.get("ttl", 1)),
                                       len(data)) + data)
    flags = 0x8400 | 0x0100 * ((struct.unpack("!H", msg[2:4])[0] >> 8) & 1) | rcode  # QR AA RD
    header = struct.pack("!HHHHHH", qid, flags, 1, len(answers), 0, 0)
    return header + question + b"".join(answers)


def truncated(reply):
    qid, flags = struct.unpack("!HH", reply[:4])
    _, _, question = parse_question(reply)
    return struct.pack("!HHHHHH", qid, flags | 0x0200, 1, 0, 0, 0) + question


def serve_udp(sock, args):
    while True:
        msg, peer = sock.recvfrom(4096)
        try:
            reply = answer(msg, args.zone, args.log)
        except Exception as e:  # a broken query must not stop the server
            print("bad query: %r" % e, file=sys.stderr)
            continue
        if reply is not None:
            sock.sendto(reply if len(reply) <= 512 else truncated(reply), peer)


def serve_tcp_client(conn, args):
    with conn:
        while True:
            head = conn.recv(2, socket.MSG_WAITALL)
            if len(head) < 2:
                return
            n, = struct.unpack("!H", head)
            msg = conn.recv(n, socket.MSG_WAITALL)
            reply = answer(msg, args.zone, args.log)
            if reply is None:
                continue
            conn.sendall(struct.pack("!H", len(reply)) + reply)


def serve_tcp(sock, args):
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve_tcp_client, args=(conn, args), daemon=True).start()


def bind_both(port):
    """A UDP and a TCP socket on the same port of 127.0.0.1 (port 0: any free one)."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", port))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
            tcp.listen(64)
            return udp, tcp
        except OSError:
            udp.close()
            tcp.close()
            if port != 0:
                raise
    raise OSError("no port free for both UDP and TCP")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--zone", required=True)
    p.add_argument("--port-file", help="written with the port once both sockets listen")
    p.add_argument("--log", help="every query appended as TYPE NAME")
    args = p.parse_args()
    udp, tcp = bind_both(args.port)
    port = udp.getsockname()[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.port_file)
    threading.Thread(target=serve_tcp, args=(tcp, args), daemon=True).start()
    print("listening 127.0.0.1:%d" % port, flush=True)  # what the test harness waits for
    serve_udp(udp, args)


if __name__ == "__main__":
    main()
