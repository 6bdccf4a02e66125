"""The observability benchmark of bench/observe: what reading sluice's metrics and writing its
access log cost, at 1000 instances, next to HAProxy's Prometheus exporter.

Three parts; the load records are bench/run's ({"scenario", "round", "contender", ...}), the
scrape records {"part": "scrape", "round", "config", "metrics", "problems", "valid", "extra"}:
  datapath   1000 echo instances (bench/multi-listen --mode echo); contenders direct, sluice,
             sluice+scrape, haproxy, haproxy+scrape, each started fresh per measurement (sluice
             always with an [admin] section, HAProxy always with a Prometheus exporter
             frontend); the rr and connrate runs of bench/run, with the scraper (a separate
             process, below) reading /metrics every 100 ms during both in the +scrape runs.
  scrape     the scraper alone against an idle proxy over the same 1000 instances: sluice
             /metrics, sluice /status, HAProxy /metrics; wall time per scrape, body bytes,
             sample lines, and the proxy's CPU per scrape.
  accesslog  connrate through sluice with log_access = off and on (stderr to a file), then
             /metrics (sluice_log_lines_dropped_total, accepted and closed connections) and
             the access lines counted in the file.

The scraper is scraper_main(), run as its own Python process (scraper_argv()): one HTTP/1.1 GET
per tick over a fresh connection (Connection: close) unless --keepalive, one JSON line per scrape
on stdout: {"t": wall-clock start, "ms": connect to last body byte, "status", "bytes": body bytes
(chunked encoding decoded), "samples": non-comment non-empty lines or null, "late_ms": start
minus its tick, "err"}.
"""

import json
import os
import signal
import socket
import sys
import time

from . import fleet, procs, scenarios
from .fleet import cell, dist, new_record, spread

COUNT = 1000
INTERVAL_S = 0.1
PARTS = ["datapath", "scrape", "accesslog"]
DATAPATH_ORDER = ["direct", "sluice", "sluice+scrape", "haproxy", "haproxy+scrape"]
LOG_ORDER = ["sluice", "sluice+log"]
SCRAPE_TARGETS = [("sluice", "/metrics"), ("sluice", "/status"), ("haproxy", "/metrics")]
SETTLE_S = 1.0     # after a load run, before counters and log lines are read
FETCH_TIMEOUT = 10
BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the HTTP client (scraper and one-shot fetches) ----

class HttpError(Exception):
    pass


class Client:
    """GET over a fresh connection per request, or one kept alive. Reads with recv_into into
    one growing buffer, so a multi-megabyte answer costs few copies."""

    def __init__(self, addr, keepalive=False, timeout=5.0):
        self.host, self.port = procs.split_addr(addr)
        self.keepalive, self.timeout = keepalive, timeout
        self.sock, self.buf, self.n = None, bytearray(1 << 20), 0

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock, self.n = None, 0

    def _fill(self):
        if self.n == len(self.buf):
            self.buf.extend(bytes(len(self.buf)))
        with memoryview(self.buf) as mv:
            k = self.sock.recv_into(mv[self.n:])
        if k == 0:
            raise EOFError
        self.n += k

    def get(self, path, want_body=True):
        """Returns (status, body bytes or None, body length, reused connection); the body is
        copied out only with want_body (the scraper skips the copy on most scrapes)."""
        reused = self.sock is not None
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.n = 0
        conn = "keep-alive" if self.keepalive else "close"
        try:
            self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                              f"Connection: {conn}\r\n\r\n".encode())
            while (end := self.buf.find(b"\r\n\r\n", 0, self.n)) < 0:
                self._fill()
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            pos = end + 4
            status = int(head[0].split()[1])
            hdr = {}
            for line in head[1:]:
                k, _, v = line.partition(":")
                hdr[k.strip().lower()] = v.strip().lower()
            if "chunked" in hdr.get("transfer-encoding", ""):
                while (got := self._chunked(pos, want_body)) is None:
                    self._fill()
                body, length, pos = got
            else:
                if "content-length" in hdr:
                    length = int(hdr["content-length"])
                    while self.n < pos + length:
                        self._fill()
                else:
                    try:
                        while True:
                            self._fill()
                    except EOFError:
                        pass
                    length = self.n - pos
                    hdr["connection"] = "close"
                body = bytes(self.buf[pos:pos + length]) if want_body else None
                pos += length
            rest = self.n - pos  # bytes after this answer (none expected)
            self.buf[:rest] = self.buf[pos:self.n]
            self.n = rest
        except EOFError:
            self.close()
            if reused:  # the server closed the idle connection: once more, on a new one
                return self.get(path, want_body)
            raise HttpError("connection closed before the whole answer")
        except (OSError, ValueError, IndexError) as e:
            self.close()
            raise HttpError(f"{type(e).__name__}: {e}") from e
        if not self.keepalive or hdr.get("connection") == "close":
            self.close()
        return status, body, length, reused

    def _chunked(self, pos, want_body):
        """(body or None, body length, end) once the buffer holds the whole chunked body from
        pos, else None."""
        if not self.buf.endswith(b"0\r\n\r\n", 0, self.n):
            return None
        parts, length, buf, n = [], 0, self.buf, self.n
        mv = memoryview(buf)  # dropped on return: the buffer can grow again
        while True:
            i = buf.find(b"\r\n", pos, n)
            if i < 0:
                return None
            size = int(bytes(buf[pos:i]).split(b";")[0], 16)
            pos = i + 2
            if size == 0:
                if buf[pos:pos + 2] != b"\r\n":  # trailers: none expected
                    j = buf.find(b"\r\n\r\n", pos, n)
                    if j < 0:
                        return None
                    pos = j + 2
                return (b"".join(parts) if want_body else None), length, pos + 2
            if pos + size + 2 > n:
                return None
            if want_body:
                parts.append(mv[pos:pos + size])
            length += size
            pos += size + 2


def sample_lines(body):
    """Lines that are neither comments nor empty (Prometheus text: one sample each)."""
    if not body:
        return 0
    lines = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
    comments = body.count(b"\n#") + body.startswith(b"#")
    empty = body.count(b"\n\n") + body.startswith(b"\n")
    return lines - comments - empty


def fetch(addr, path):
    """One GET on a fresh connection: (status, body)."""
    status, body, _, _ = Client(addr, timeout=FETCH_TIMEOUT).get(path)
    return status, body


def parse_metrics(text):
    """{name: {labels text: value}} of Prometheus text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        name, _, labels = key.partition("{")
        try:
            out.setdefault(name, {})[labels.rstrip("}")] = float(value)
        except ValueError:
            out.setdefault("_unparsed", {})[line[:100]] = 0
    return out


def total(m, name):
    return sum(m.get(name, {}).values()) if name in m else None


# ---- the scraper process ----

def scraper_main(argv):
    import argparse
    p = argparse.ArgumentParser(prog="observe-scraper")
    p.add_argument("--target", required=True, help="HOST:PORT")
    p.add_argument("--path", default="/metrics")
    p.add_argument("--interval", type=float, default=INTERVAL_S)
    p.add_argument("--keepalive", action="store_true")
    p.add_argument("--samples", action="store_true",
                   help="count the sample lines of the first answer (the count is structural: "
                   "it changes only with the instance set; counting 3 MB costs ~8 ms)")
    p.add_argument("--timeout", type=float, default=5.0)
    a = p.parse_args(argv)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    client = Client(a.target, a.keepalive, a.timeout)
    out = sys.stdout
    tick = time.monotonic()
    counted = False
    while not stop:
        now = time.monotonic()
        if now < tick:
            time.sleep(tick - now)
            if stop:
                break
        start = time.monotonic()
        rec = {"t": round(time.time(), 4), "late_ms": round((start - tick) * 1000, 3)}
        first = a.samples and not counted
        try:
            status, body, length, reused = client.get(a.path, want_body=first)
            rec.update({"ms": round((time.monotonic() - start) * 1000, 3), "status": status,
                        "bytes": length, "reused": reused,
                        "samples": sample_lines(body) if first else None})
            counted = counted or (first and status == 200)
        except HttpError as e:
            rec.update({"ms": round((time.monotonic() - start) * 1000, 3), "err": str(e)})
        out.write(json.dumps(rec) + "\n")
        out.flush()
        # fixed rate; a scrape that overran its tick starts the next one at once, no catch-up
        tick = max(tick + a.interval, time.monotonic())
    client.close()
    return 0


def scraper_argv(addr, path, interval, keepalive):
    boot = ("import sys; sys.dont_write_bytecode = True; sys.path.insert(0, %r); "
            "from harness import observe; sys.exit(observe.scraper_main(sys.argv[1:]))"
            % BENCH_DIR)
    argv = [sys.executable, "-c", boot, "--target", addr, "--path", path,
            "--interval", str(interval)]
    if path == "/metrics":
        argv.append("--samples")
    if keepalive:
        argv.append("--keepalive")
    return argv


class Scraper:
    """The scraper as a child process; its records are read from its stdout file."""

    def __init__(self, ctx, tag, addr, path):
        self.proc = procs.Proc(f"scraper-{tag}", scraper_argv(addr, path, ctx.interval,
                                                             ctx.keepalive), ctx.tmpdir)
        self.cpu_s = self.sched_s = None
        self.t_started = time.monotonic()
        deadline = time.monotonic() + 10
        while not self.records():  # the first scrape is done: the rate is on
            if not self.proc.alive() or time.monotonic() > deadline:
                self.proc.stop()
                raise procs.ProcError(f"scraper: no first scrape: {self.proc.log_tail()}")
            time.sleep(0.02)
        self.cpu0 = procs.cpu_seconds([self.proc.pid])
        self.sched0 = fleet.sched_ns(self.proc.pid)
        self.t0 = time.monotonic()

    def records(self):
        out = []
        try:
            with open(self.proc.out_path) as f:
                for line in f:
                    if line.endswith("\n"):
                        out.append(json.loads(line))
        except (OSError, ValueError):
            pass
        return out

    def stop(self):
        """Stops it; returns every record. cpu_s / sched_s / wall_s cover the time after the
        first scrape (ticks and schedstat of the process, read just before SIGTERM)."""
        self.wall_s = time.monotonic() - self.t0
        cpu1 = procs.cpu_seconds([self.proc.pid])
        sched1 = fleet.sched_ns(self.proc.pid)
        alive = self.proc.alive()
        self.proc.stop()
        self.cpu_s = cpu1 - self.cpu0
        if sched1 is not None and self.sched0 is not None:
            self.sched_s = (sched1 - self.sched0) / 1e9
        recs = self.records()
        if recs:
            recs[0]["first"] = True  # the first answer of a fresh proxy: cold, kept apart
        if not alive:
            raise procs.ProcError(f"scraper died: {self.proc.log_tail()}")
        return recs


def scrape_stats(recs, interval, t_from=None, t_to=None):
    """Figures of the scrapes that started within [t_from, t_to) (wall clock). The first
    scrape of a scraper (the first answer of a freshly started proxy, much slower: first-time
    allocations) is left out of the wall-time figures and reported as first_ms."""
    first = [r for r in recs if r.get("first")]
    rs = [r for r in recs if (t_from is None or r["t"] >= t_from)
          and (t_to is None or r["t"] < t_to)]
    ok = [r for r in rs if not r.get("err") and r.get("status") == 200]
    ms = sorted(r["ms"] for r in ok if not r.get("first"))
    out = {"scrapes": len(rs), "ok": len(ok), "failed": len(rs) - len(ok),
           "errors": sorted({r.get("err") or f"status {r.get('status')}"
                             for r in rs if r not in ok})[:5],
           "ms": dist(ms), "over_interval": sum(1 for x in ms if x > interval * 1000),
           "late": sum(1 for r in rs if r.get("late_ms", 0) > interval * 1000 / 2),
           "all_ms": [r["ms"] for r in ok],
           "first_ms": first[0].get("ms") if first and first[0] in rs else None}
    if ok:
        out["bytes"] = spread([r["bytes"] for r in ok])
        samples = [r["samples"] for r in ok if r.get("samples") is not None]
        out["samples"] = spread(samples) if samples else None
    if len(rs) >= 2:
        span = rs[-1]["t"] - rs[0]["t"]
        out["per_s"] = (len(rs) - 1) / span if span > 0 else None
    return out


# ---- configurations ----

def sluice_lines(listen, addrs, threads, log_access=False):
    lines = ["[sluice]", f"workers = {threads}", "log_level = info", "log_format = json",
             "shutdown_timeout = 1s", "",
             "[listener:web]", f"bind = {listen}", "service = api"]
    if log_access:
        lines.append("log_access = on")
    lines += ["", "[service:api]", "backends = " + ", ".join(addrs)]
    return lines


def make_sluice(ctx, tag, addrs, log_access=False):
    return fleet.ManySluice(ctx, tag, lambda listen: sluice_lines(listen, addrs, ctx.threads,
                                                                  log_access), admin=True)


def admin_threads(c):
    """sluice: the admin server's thread(s) (libmicrohttpd names them MHD-...)."""
    return fleet.threads_named(c.procs[0].pid, "MHD")


def data_threads(c):
    """The threads that forward: sluice's workers (comm "sluice-wN"); HAProxy's one thread
    (nbthread 1: the process itself)."""
    pid = c.procs[0].pid
    if c.name.startswith("haproxy") or "haproxy" in c.procs[0].argv[0]:
        return [pid]
    return fleet.threads_named(pid, "sluice-w")


def data_thread_metrics(r, scen, pid, tids, s0, s1, wall):
    """On-CPU % of one core and run-queue wait (runnable, not running) per second of the
    forwarding thread(s) over one load run: whether the proxy was the bottleneck, and how
    much it waited for a CPU."""
    if s0 is None or s1 is None or wall <= 0:
        return
    r["extra"]["data_threads"] = {"tids": tids, "run_ns": s1[0] - s0[0],
                                  "wait_ns": s1[1] - s0[1], "wall_s": round(wall, 3)}
    r["metrics"][f"{scen} data cpu %"] = (s1[0] - s0[0]) / 1e7 / wall
    r["metrics"][f"{scen} data wait ms/s"] = (s1[1] - s0[1]) / 1e6 / wall


# ---- datapath ----

def measure_datapath(ctx, rnd, label, fl, sctx):
    scrape = label.endswith("+scrape")
    tag = f"{label.replace('+', '-')}-r{rnd + 1}"
    if label == "direct":
        targets, c = {"echo": fl.addrs()[rnd % fl.n]}, None
    else:
        c = (make_sluice(ctx, tag, fl.addrs()) if label.startswith("sluice")
             else fleet.ManyHAProxy(ctx, tag, fl.addrs(), prometheus=True))
        try:
            targets = c.start({"echo": None})
        except procs.ProcError as e:
            scenarios.report(sctx, scenarios.fail_record(sctx, "rr", rnd, label, "-", str(e)))
            return
    pids = c.pids if c else (lambda: [])
    sc = None
    first = len(sctx.records)
    try:
        time.sleep(ctx.warmup)
        pid = c.procs[0].pid if c else None
        tids = admin_threads(c) if c and label.startswith("sluice") else []
        if c and label.startswith("sluice") and not tids:
            raise procs.ProcError("no MHD-* thread in sluice: is the admin server running?")
        dtids = data_threads(c) if c else []
        if scrape:
            sc = Scraper(ctx, tag, c.admin_addr, "/metrics")
        windows = {}
        for scen, fn, count_key in (("rr", scenarios.measure_rr, "requests"),
                                    ("connrate", scenarios.measure_connrate, "connections")):
            a0 = fleet.thread_sched_ns(pid, tids) if tids else None
            d0 = fleet.thread_schedstat(pid, dtids) if dtids else None
            w0, m0 = time.time(), time.monotonic()
            fn(sctx, scen, rnd, label, targets, pids)
            windows[scen] = (w0, time.time())
            wall = time.monotonic() - m0
            a1 = fleet.thread_sched_ns(pid, tids) if tids else None
            d1 = fleet.thread_schedstat(pid, dtids) if dtids else None
            r = sctx.records[-1]
            data_thread_metrics(r, scen, pid, dtids, d0, d1, wall)
            count = (r["tool"] or {}).get(count_key) if isinstance(r["tool"], dict) else None
            cpu = r["extra"].get("proxy_cpu_s")
            if a0 is not None and a1 is not None:
                r["extra"]["admin_thread_cpu_s"] = round((a1 - a0) / 1e9, 4)
                r["metrics"][f"{scen} admin ms/s"] = (a1 - a0) / 1e6 / wall
                if cpu is not None and count:
                    r["metrics"][f"{scen} cpu excl admin"] = (cpu - (a1 - a0) / 1e9) * 1e6 / count
        recs = sctx.records[first:]
        problems = []
        if sc is not None:
            srecs = sc.stop()
            whole = scrape_stats(srecs, ctx.interval)
            whole.update({"scraper_cpu_s": round(sc.cpu_s, 3),
                          "scraper_sched_s": sc.sched_s and round(sc.sched_s, 4),
                          "wall_s": round(sc.wall_s, 3)})
            want = sc.wall_s / ctx.interval
            if whole["failed"]:
                problems.append(f"{whole['failed']} failed scrapes: {whole['errors']}")
            if whole["scrapes"] < 0.9 * want:
                problems.append(f"{whole['scrapes']} scrapes in {sc.wall_s:.1f} s, want about "
                                f"{want:.0f} (every {ctx.interval * 1000:.0f} ms)")
            for r in recs:
                st = scrape_stats(srecs, ctx.interval, *windows.get(r["scenario"], (0, 0)))
                r["extra"]["scrapes"] = st
                r["extra"]["scraper"] = whole
                if r["scenario"] == "rr" and whole["first_ms"] is not None:
                    # before rr's start (the scraper's first answer): one figure per run
                    r["metrics"]["rr scrape first ms"] = whole["first_ms"]
                if st["ms"]:
                    r["metrics"][f"{r['scenario']} scrape p50 ms"] = st["ms"]["p50"]
                    r["metrics"][f"{r['scenario']} scrape p99 ms"] = st["ms"]["p99"]
                    r["metrics"][f"{r['scenario']} scrape max ms"] = st["ms"]["max"]
                if r["scenario"] == "rr":  # one figure for the scraper's whole run
                    r["metrics"]["rr scraper cpu %"] = (
                        (sc.sched_s if sc.sched_s is not None else sc.cpu_s) * 100 / sc.wall_s)
            ctx.log(f"    scraper: {whole['scrapes']} scrapes, {whole['per_s'] or 0:.1f}/s, "
                    f"{cell_ms(whole['ms'])}, {whole['over_interval']} over "
                    f"{ctx.interval * 1000:.0f} ms, scraper CPU {sc.cpu_s:.2f} s in "
                    f"{sc.wall_s:.1f} s")
        if c is not None and label.startswith("sluice"):
            problems += check_counters(c, recs)
        if c is not None and not c.alive():
            problems.append(f"{label} died: {c.log_tail()}")
        for r in recs:
            if problems:
                r["problems"] += problems
                r["valid"] = False
        if problems:
            ctx.log(f"    INVALID: {'; '.join(problems)[:800]}")
    except procs.ProcError as e:
        scenarios.report(sctx, scenarios.fail_record(sctx, "rr", rnd, label, "-", str(e)))
    finally:
        if sc is not None and sc.proc.alive():
            sc.proc.stop()
        if c is not None:
            c.stop()


def cell_ms(d):
    if not d:
        return "no scrape"
    return f"p50 {d['p50']:.1f} / p99 {d['p99']:.1f} / max {d['max']:.1f} ms"


def check_counters(c, recs):
    """After the load: sluice's /metrics must count what the load did (accepted connections =
    rr's 50 + connrate's completed + the harness's startup probe + at most 50 in flight at the
    end; every one closed; the instances' connects sum to the accepted)."""
    time.sleep(SETTLE_S)
    try:
        status, body = fetch(c.admin_addr, "/metrics")
    except HttpError as e:
        return [f"/metrics after the load: {e}"]
    if status != 200:
        return [f"/metrics after the load: status {status}"]
    m = parse_metrics(body.decode(errors="replace"))
    done = sum((r["tool"] or {}).get("connections", 0) if r["scenario"] == "connrate"
               else (r["tool"] or {}).get("established", 0)
               for r in recs if isinstance(r["tool"], dict))
    accepted = total(m, "sluice_listener_connections_accepted_total")
    closed = total(m, "sluice_listener_connections_closed_total")
    connects = total(m, "sluice_instance_connects_total")
    open_now = total(m, "sluice_connections_open")
    series = len(m.get("sluice_instance_connects_total", {}))
    for r in recs:
        r["extra"]["counters"] = {"load_connections": done, "accepted": accepted,
                                  "closed": closed, "instance_connects": connects,
                                  "open": open_now, "instance_series": series,
                                  "samples": sample_lines(body), "unparsed":
                                  len(m.get("_unparsed", {}))}
    problems = []
    if accepted is None or not done + 1 <= accepted <= done + 1 + 50 + 5:
        problems.append(f"sluice_listener_connections_accepted_total {accepted}, load made "
                        f"{done} (+1 probe, + up to 50 in flight)")
    if closed != accepted or open_now != 0:
        problems.append(f"closed {closed} / open {open_now} of {accepted} accepted, "
                        f"{SETTLE_S:g} s after the load")
    if connects != accepted:
        problems.append(f"instance connects sum {connects} != accepted {accepted}")
    if series != COUNT:
        problems.append(f"{series} sluice_instance_connects_total series, want {COUNT}")
    if m.get("_unparsed"):
        problems.append(f"unparsed /metrics lines: {list(m['_unparsed'])[:3]}")
    return problems


# ---- scrape (idle) ----

def measure_scrapes(ctx, rnd, proxy, paths, fl):
    """One fresh idle proxy; the scraper on each path for ctx.window seconds in turn."""
    tag = f"scrape-{proxy}-r{rnd + 1}"
    c = (make_sluice(ctx, tag, fl.addrs()) if proxy == "sluice"
         else fleet.ManyHAProxy(ctx, tag, fl.addrs(), prometheus=True))
    recs = [new_record(ctx, "scrape", rnd, {"proxy": proxy, "path": p}) for p in paths]
    try:
        c.start({"echo": None})
        time.sleep(ctx.warmup)
        pid = c.procs[0].pid
        tids = admin_threads(c) if proxy == "sluice" else []
        for rec, path in zip(recs, paths):
            t0 = time.monotonic()
            status, body = fetch(c.admin_addr, path)
            first_ms = (time.monotonic() - t0) * 1000  # the path's first answer after start
            rec["extra"]["content"] = content_check(proxy, path, status, body, rec["problems"])
            p0, a0 = fleet.sched_ns(pid), fleet.thread_sched_ns(pid, tids) if tids else None
            sc = Scraper(ctx, f"{tag}{path.replace('/', '-')}", c.admin_addr, path)
            time.sleep(ctx.window)
            srecs = sc.stop()
            p1, a1 = fleet.sched_ns(pid), fleet.thread_sched_ns(pid, tids) if tids else None
            st = scrape_stats(srecs, ctx.interval)
            st.update({"scraper_cpu_s": round(sc.cpu_s, 3), "wall_s": round(sc.wall_s, 3),
                       "scraper_sched_s": sc.sched_s and round(sc.sched_s, 4)})
            rec["extra"]["scrapes"] = st
            m = rec["metrics"]
            n = st["ok"]
            if st["ms"]:
                m.update({"p50 ms": st["ms"]["p50"], "p99 ms": st["ms"]["p99"],
                          "max ms": st["ms"]["max"], "mean ms": st["ms"]["mean"],
                          "first ms": first_ms})
                rec["extra"]["scraper_first_ms"] = st["first_ms"]
            if st.get("bytes"):
                m["bytes"] = st["bytes"]["median"]
                if st["bytes"]["min"] != st["bytes"]["max"]:
                    rec["extra"]["bytes_range"] = [st["bytes"]["min"], st["bytes"]["max"]]
            if st.get("samples"):
                m["samples"] = st["samples"]["median"]
            m["scrapes/s"] = st.get("per_s")
            if n and None not in (p0, p1):
                m["proxy ms/scrape"] = (p1 - p0) / 1e6 / n
                m["proxy % core"] = (p1 - p0) / 1e7 / sc.wall_s
            if n and None not in (a0, a1):
                m["admin ms/scrape"] = (a1 - a0) / 1e6 / n
            m["scraper % core"] = ((sc.sched_s if sc.sched_s is not None else sc.cpu_s) * 100
                                   / sc.wall_s)
            if st["failed"]:
                rec["problems"].append(f"{st['failed']} failed scrapes: {st['errors']}")
            if st["scrapes"] < 0.9 * sc.wall_s / ctx.interval:
                rec["problems"].append(f"{st['scrapes']} scrapes in {sc.wall_s:.1f} s")
        if not c.alive():
            for rec in recs:
                rec["problems"].append(f"{proxy} died: {c.log_tail()}")
    except (procs.ProcError, HttpError, OSError) as e:
        for rec in recs:
            rec["problems"].append(f"{type(e).__name__}: {e}")
    finally:
        c.stop()
    for rec in recs:
        rec["valid"] = not rec["problems"]
        m = rec["metrics"]
        ctx.log(f"  round {rnd + 1} scrape   {proxy:8} {rec['config']['path']:9} "
                + ", ".join(f"{k} {scenarios.fmt_num(v)}" for k, v in m.items() if v is not None)
                + ("  [ok]" if rec["valid"] else "  [INVALID: " + "; ".join(rec["problems"])
                   + "]"))


def content_check(proxy, path, status, body, problems):
    """What one answer holds: sample lines / series per family, or the instances of /status."""
    out = {"status": status, "bytes": len(body)}
    if status != 200:
        problems.append(f"{path}: status {status}")
        return out
    text = body.decode(errors="replace")
    if path == "/status":
        try:
            st = json.loads(text)
            inst = [i for s in st.get("services", []) for i in s.get("instances", [])]
            out["instances"] = len(inst)
            out["keys"] = sorted(st)
            if len(inst) != COUNT:
                problems.append(f"/status lists {len(inst)} instances, want {COUNT}")
        except ValueError as e:
            problems.append(f"/status is not JSON: {e}")
        return out
    m = parse_metrics(text)
    out["samples"] = sample_lines(body)
    out["families"] = len(m)
    out["comment_lines"] = sum(1 for line in text.splitlines() if line.startswith("#"))
    per = {k: len(v) for k, v in m.items() if len(v) >= COUNT}
    out["families_per_instance"] = per
    if m.get("_unparsed"):
        problems.append(f"unparsed lines: {list(m['_unparsed'])[:3]}")
    if proxy == "sluice" and len(m.get("sluice_instance_connects_total", {})) != COUNT:
        problems.append(f"{len(m.get('sluice_instance_connects_total', {}))} "
                        f"sluice_instance_connects_total series, want {COUNT}")
    return out


# ---- accesslog ----

def count_access_lines(path):
    n = size = 0
    try:
        with open(path, "rb") as f:
            for line in f:
                size += len(line)
                if b'"event":"access"' in line:
                    n += 1
    except OSError:
        return None, None
    return n, size


def measure_accesslog(ctx, rnd, label, fl, lctx):
    on = label.endswith("+log")
    tag = f"{label.replace('+', '-')}-access-r{rnd + 1}"
    c = make_sluice(ctx, tag, fl.addrs(), log_access=on)
    try:
        targets = c.start({"echo": None})
    except procs.ProcError as e:
        scenarios.report(lctx, scenarios.fail_record(lctx, "connrate", rnd, label, "-", str(e)))
        return
    try:
        time.sleep(ctx.warmup)
        pid = c.procs[0].pid
        ltids = fleet.threads_named(pid, "sluice-logs")
        dtids = data_threads(c)
        l0 = fleet.thread_sched_ns(pid, ltids) if ltids else None
        d0, m0 = fleet.thread_schedstat(pid, dtids), time.monotonic()
        scenarios.measure_connrate(lctx, "connrate", rnd, label, targets, c.pids)
        wall = time.monotonic() - m0
        l1 = fleet.thread_sched_ns(pid, ltids) if ltids else None
        r = lctx.records[-1]
        data_thread_metrics(r, "connrate", pid, dtids, d0, fleet.thread_schedstat(pid, dtids),
                            wall)
        tool = r["tool"] if isinstance(r["tool"], dict) else {}
        made = tool.get("connections")
        cpu = r["extra"].get("proxy_cpu_s")
        if not ltids:  # no access log configured: sluice starts no writer thread
            l0 = l1 = 0
        if l0 is not None and l1 is not None:
            r["metrics"]["logs thread ms/s"] = (l1 - l0) / 1e6 / wall
            if cpu is not None and made:
                r["metrics"]["connrate cpu excl logs"] = (cpu - (l1 - l0) / 1e9) * 1e6 / made
        time.sleep(SETTLE_S)  # sessions closed, the writer has drained its rings
        status, body = fetch(c.admin_addr, "/metrics")
        m = parse_metrics(body.decode(errors="replace")) if status == 200 else {}
        accepted = total(m, "sluice_listener_connections_accepted_total")
        closed = total(m, "sluice_listener_connections_closed_total")
        dropped = total(m, "sluice_log_lines_dropped_total")
        err = c.procs[0].err_path
        lines, size = count_access_lines(err)
        alive, tail = c.alive(), c.log_tail()
        c.stop()
        lines_after, size_after = count_access_lines(err)
        acc = {"load_connections": made, "accepted": accepted, "closed": closed,
               "dropped": dropped, "access_lines": lines, "access_lines_after_stop": lines_after,
               "stderr_bytes": size_after, "logs_thread_tids": ltids,
               "metrics_status": status}
        r["extra"]["access"] = acc
        r["metrics"].update({"dropped": dropped, "access lines": lines_after,
                             "accepted": accepted})
        if on and lines_after and size_after:
            r["extra"]["access"]["bytes_per_line"] = round(size_after / max(lines_after, 1))
        problems = []
        if status != 200 or accepted is None or dropped is None:
            problems.append(f"/metrics after the run: status {status}, accepted {accepted}, "
                            f"dropped {dropped}")
        elif on:
            if lines + dropped != closed:
                problems.append(f"access lines {lines} + dropped {dropped:.0f} != closed "
                                f"{closed:.0f} ({SETTLE_S:g} s after the load)")
            if lines_after != lines:
                problems.append(f"{lines_after - lines} access lines appeared only at stop")
        elif lines or dropped:
            problems.append(f"log_access = off, yet {lines} access lines, {dropped} dropped")
        if made is not None and accepted is not None and not made + 1 <= accepted <= made + 56:
            problems.append(f"accepted {accepted:.0f}, load made {made} (+1 probe, + <= 50 in "
                            "flight)")
        if not alive:
            problems.append(f"sluice died: {tail}")
        if problems:
            r["problems"] += problems
            r["valid"] = False
        ctx.log(f"    access log {'on' if on else 'off'}: {lines_after} lines, dropped "
                f"{dropped}, accepted {accepted}, closed {closed}, load {made}"
                + (f"  INVALID: {'; '.join(problems)}" if problems else ""))
    except (procs.ProcError, HttpError, OSError) as e:
        scenarios.report(lctx, scenarios.fail_record(lctx, "connrate", rnd, label, "-",
                                                     f"{type(e).__name__}: {e}"))
    finally:
        c.stop()


# ---- the run ----

class Context:
    def __init__(self, args, log):
        self.bindir, self.tmpdir, self.log = args.build_dir, args.tmpdir, log
        self.rounds, self.window, self.warmup = args.rounds, args.window, args.warmup
        self.duration, self.threads = args.duration, 1
        self.interval, self.keepalive = args.interval, args.keepalive
        self.parts = args.only
        self.records = []          # scrape part
        self.load_records = []     # datapath part (bench/run records)
        self.log_records = []      # accesslog part (bench/run records)


def run(ctx):
    fl = fleet.Fleet(ctx, COUNT, "echo", "observe")
    try:
        if "datapath" in ctx.parts:
            sctx = fleet.LoadCtx(ctx, DATAPATH_ORDER)
            ctx.log(f"datapath: {COUNT} echo instances; {ctx.rounds} rounds of "
                    f"{' '.join(DATAPATH_ORDER)}; rr + connrate, {ctx.duration:g} s each; "
                    f"scraper GET /metrics every {ctx.interval * 1000:.0f} ms")
            ctx.load_records = sctx.records
            for rnd in range(ctx.rounds):
                for label in DATAPATH_ORDER:
                    measure_datapath(ctx, rnd, label, fl, sctx)
        if "scrape" in ctx.parts:
            ctx.log(f"scrape: idle proxies over {COUNT} instances; {ctx.rounds} rounds; "
                    f"{ctx.window:g} s per endpoint, every {ctx.interval * 1000:.0f} ms")
            for rnd in range(ctx.rounds):
                measure_scrapes(ctx, rnd, "sluice", ["/metrics", "/status"], fl)
                measure_scrapes(ctx, rnd, "haproxy", ["/metrics"], fl)
        if "accesslog" in ctx.parts:
            lctx = fleet.LoadCtx(ctx, LOG_ORDER)
            ctx.log(f"accesslog: {ctx.rounds} rounds of {' '.join(LOG_ORDER)}; connrate "
                    f"{ctx.duration:g} s")
            ctx.log_records = lctx.records
            for rnd in range(ctx.rounds):
                for label in LOG_ORDER:
                    measure_accesslog(ctx, rnd, label, fl, lctx)
        ctx.fleet_stats = fl.stats()
    finally:
        fl.stop()


# ---- summary and tables ----

DP_MIDS = ("rr req/s", "connrate", "rr p50", "rr p99", "rr cpu", "rr cpu excl admin",
           "connrate cpu", "connrate cpu excl admin", "rr data cpu %", "rr data wait ms/s",
           "connrate data cpu %", "connrate data wait ms/s", "rr admin ms/s",
           "connrate admin ms/s",
           "rr scrape p50 ms", "rr scrape p99 ms", "rr scrape max ms", "connrate scrape p50 ms",
           "connrate scrape p99 ms", "connrate scrape max ms", "rr scrape first ms",
           "rr scraper cpu %")
DP_PAIRS = (("sluice/haproxy, no scraping", "sluice", "haproxy"),
            ("sluice/haproxy, scraping", "sluice+scrape", "haproxy+scrape"),
            ("sluice scraping/none", "sluice+scrape", "sluice"),
            ("haproxy scraping/none", "haproxy+scrape", "haproxy"))
DP_LABELS = {"rr req/s": ("rr (50 conns, 64 B), req/s", 0),
             "connrate": ("connrate (C=50, 64 B echo), conn/s", 0),
             "rr p50": ("rr latency p50, µs", 0), "rr p99": ("rr latency p99, µs", 0),
             "rr cpu": ("rr: proxy CPU µs per request", 2),
             "rr cpu excl admin": ("rr: sluice CPU µs per request without the admin (MHD) "
                                   "thread", 2),
             "connrate cpu": ("connrate: proxy CPU µs per connection", 1),
             "connrate cpu excl admin": ("connrate: sluice CPU µs per connection without the "
                                         "admin (MHD) thread", 1),
             "rr data cpu %": ("rr: proxy forwarding thread on CPU, % of one core", 1),
             "rr data wait ms/s": ("rr: proxy forwarding thread runnable but waiting for a "
                                   "CPU, ms per s", 1),
             "connrate data cpu %": ("connrate: proxy forwarding thread on CPU, % of one core",
                                     1),
             "connrate data wait ms/s": ("connrate: proxy forwarding thread runnable but "
                                         "waiting for a CPU, ms per s", 1),
             "rr admin ms/s": ("rr: sluice admin thread, ms CPU per s", 1),
             "connrate admin ms/s": ("connrate: sluice admin thread, ms CPU per s", 1),
             "rr scrape p50 ms": ("scrape wall time during rr, p50 ms", 1),
             "rr scrape p99 ms": ("scrape wall time during rr, p99 ms", 1),
             "rr scrape max ms": ("scrape wall time during rr, max ms", 1),
             "connrate scrape p50 ms": ("scrape wall time during connrate, p50 ms", 1),
             "connrate scrape p99 ms": ("scrape wall time during connrate, p99 ms", 1),
             "connrate scrape max ms": ("scrape wall time during connrate, max ms", 1),
             "rr scrape first ms": ("the scraper's first scrape, just before rr (left out of "
                                    "the rows above), ms", 1),
             "rr scraper cpu %": ("scraper process CPU over rr + connrate, % of one core", 1)}
LOG_MIDS = ("connrate", "connrate cpu", "connrate cpu excl logs", "logs thread ms/s",
            "connrate data cpu %", "connrate data wait ms/s", "access lines", "dropped")
LOG_PAIRS = (("log on/off", "sluice+log", "sluice"),)
LOG_LABELS = {"connrate": ("connrate (C=50, 64 B echo), conn/s", 0),
              "connrate cpu": ("sluice CPU µs per connection", 1),
              "connrate cpu excl logs": ("sluice CPU µs per connection without the "
                                         "sluice-logs writer thread", 1),
              "logs thread ms/s": ("sluice-logs writer thread, ms CPU per s", 1),
              "connrate data cpu %": ("sluice worker thread on CPU, % of one core", 1),
              "connrate data wait ms/s": ("sluice worker runnable but waiting for a CPU, "
                                          "ms per s", 1),
              "access lines": ("access-log lines written (after stop)", 0),
              "dropped": ("sluice_log_lines_dropped_total after the run", 0)}
SCRAPE_ROWS = ["p50 ms", "p99 ms", "max ms", "mean ms", "first ms", "bytes", "samples",
               "scrapes/s",
               "proxy ms/scrape", "admin ms/scrape", "proxy % core", "scraper % core"]


def summarize(ctx):
    s = {"datapath": fleet.load_summary(ctx.load_records, DATAPATH_ORDER, DP_MIDS, DP_PAIRS,
                                        ctx.rounds),
         "accesslog": fleet.load_summary(ctx.log_records, LOG_ORDER, LOG_MIDS, LOG_PAIRS,
                                         ctx.rounds),
         "scrape": {}, "scrape_pooled": {}, "access_totals": {}}
    for proxy, path in SCRAPE_TARGETS:
        recs = [r for r in ctx.records if r["config"] == {"proxy": proxy, "path": path}]
        if not recs:
            continue
        key = f"{proxy} {path}"
        s["scrape"][key] = {m: spread([r["metrics"].get(m) for r in recs if r["valid"]])
                            for m in SCRAPE_ROWS}
        s["scrape"][key].update({"runs": len(recs),
                                 "invalid": sum(not r["valid"] for r in recs)})
    # pooled scrape wall times under load (every scrape of every +scrape run)
    for name in ("sluice+scrape", "haproxy+scrape"):
        for scen in ("rr", "connrate"):
            recs = [r for r in ctx.load_records if r["contender"] == name
                    and r["scenario"] == scen and r["valid"] and r["extra"].get("scrapes")]
            if recs:
                s["scrape_pooled"][f"{name} during {scen}"] = {
                    "scrapes": sum(r["extra"]["scrapes"]["scrapes"] for r in recs),
                    "over_interval": sum(r["extra"]["scrapes"]["over_interval"] for r in recs),
                    "p50_of_rounds": spread([r["extra"]["scrapes"]["ms"]["p50"] for r in recs]),
                    "max": max(r["extra"]["scrapes"]["ms"]["max"] for r in recs)}
    for name in LOG_ORDER:
        recs = [r for r in ctx.log_records if r["contender"] == name]
        acc = [r["extra"].get("access") for r in recs if r["extra"].get("access")]
        s["access_totals"][name] = {
            "runs": len(recs), "invalid": sum(not r["valid"] for r in recs),
            "load_connections": sum(a["load_connections"] or 0 for a in acc),
            "accepted": sum(a["accepted"] or 0 for a in acc),
            "closed": sum(a["closed"] or 0 for a in acc),
            "access_lines": sum(a["access_lines_after_stop"] or 0 for a in acc),
            "dropped": sum(a["dropped"] or 0 for a in acc),
            "bytes_per_line": spread([a.get("bytes_per_line") for a in acc])}
    return s


def tables(ctx, s):
    out = []
    if s["datapath"]:
        out += [f"### Data path with {COUNT} instances (multi-listen echo), scraping /metrics "
                f"every {ctx.interval * 1000:.0f} ms vs none; 1 thread per proxy; "
                f"{ctx.duration:g} s runs, {ctx.rounds} rounds, each proxy started fresh per "
                "measurement; median (min–max)", "",
                "| metric | " + " | ".join(DATAPATH_ORDER) + " | "
                + " | ".join(p[0] for p in DP_PAIRS) + " |",
                "|---|" + "---|" * (len(DATAPATH_ORDER) + len(DP_PAIRS))]

        def na(name, mid):
            if name == "direct" and ("cpu" in mid or "admin" in mid or "scrape" in mid
                                     or "data" in mid):
                return True
            if name.startswith("haproxy") and ("admin" in mid):
                return True
            return "scrape" in mid and not name.endswith("+scrape")
        out += fleet.load_rows(s["datapath"], DATAPATH_ORDER, DP_LABELS, na)
        for key, v in s["scrape_pooled"].items():
            out.append(f"\n{key}: {v['scrapes']:,} scrapes in all, {v['over_interval']} took "
                       f"longer than {ctx.interval * 1000:.0f} ms, the longest {v['max']:.1f} ms.")
        out.append("")
    if s["scrape"]:
        out += [f"### Scrape cost, idle proxy over {COUNT} instances (scraper alone, every "
                f"{ctx.interval * 1000:.0f} ms for {ctx.window:g} s, "
                f"{'keep-alive' if ctx.keepalive else 'a fresh connection per scrape'}); "
                f"median (min–max) of {ctx.rounds} rounds", "",
                "| endpoint | wall time p50 ms | p99 ms | max ms | first answer after start, ms "
                "| body bytes | sample lines "
                "| scrapes/s | proxy CPU ms per scrape | of which admin thread | proxy % of a core "
                "| scraper % of a core |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for key, v in s["scrape"].items():
            inval = f" **{v['invalid']}/{v['runs']} invalid**" if v["invalid"] else ""
            out.append(f"| {key}{inval} | {cell(v['p50 ms'], 1)} | {cell(v['p99 ms'], 1)} | "
                       f"{cell(v['max ms'], 1)} | {cell(v['first ms'], 1)} | "
                       f"{cell(v['bytes'], 0)} | "
                       f"{cell(v['samples'], 0) if v['samples'] else '—'} | "
                       f"{cell(v['scrapes/s'], 1)} | {cell(v['proxy ms/scrape'], 2)} | "
                       f"{cell(v['admin ms/scrape'], 2) if v['admin ms/scrape'] else 'n/a'} | "
                       f"{cell(v['proxy % core'], 1)} | {cell(v['scraper % core'], 1)} |")
        out.append("")
    if s["accesslog"]:
        out += [f"### Access log: connrate through sluice with log_access = off / on ({COUNT} "
                f"instances, JSON lines to stderr = a file; {ctx.duration:g} s runs, "
                f"{ctx.rounds} rounds); median (min–max)", "",
                "| metric | log_access = off | log_access = on | on/off |", "|---|---|---|---|"]
        out += fleet.load_rows(s["accesslog"], LOG_ORDER, LOG_LABELS, lambda name, mid: False)
        t = s["access_totals"].get("sluice+log")
        if t:
            out += ["", f"Summed over the {t['runs']} log_access = on runs: load completed "
                    f"{t['load_connections']:,} connections, sluice accepted "
                    f"{t['accepted']:,.0f} and closed {t['closed']:,.0f}, wrote "
                    f"{t['access_lines']:,} access lines and counted {t['dropped']:,.0f} "
                    f"dropped (lines + dropped − closed = "
                    f"{t['access_lines'] + t['dropped'] - t['closed']:,.0f}); "
                    + (f"{t['bytes_per_line']['median']:.0f} bytes per line."
                       if t["bytes_per_line"] else "")]
        out.append("")
    return "\n".join(out)

