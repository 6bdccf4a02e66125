"""Many instances behind one proxy, shared by bench/health and bench/observe.

  Fleet        N listening sockets in one bench/multi-listen process (accept, http or echo),
               commanded through its stdin (close / stall / reopen / stats).
  ManySluice   sluice with one listener and one service over every fleet address; the caller
               gives the config lines, and optionally an [admin] section on a free port.
  ManyHAProxy  HAProxy 'listen' with one server line per fleet address; optional TCP checks,
               optional Prometheus exporter frontend.
  LoadCtx      the scenarios.Context that scenarios.measure_rr / measure_connrate need.
  load_summary / load_rows
               per contender median (min-max) of a set of load records and the medians of
               per-round ratios between pairs of contenders, and their Markdown rows.
Plus small /proc and statistics helpers (schedstat of a process or of one thread, nearest-rank
percentiles).
"""

import datetime
import math
import os
import socket
import statistics
import subprocess
import time

from . import contenders, procs, report, scenarios

BASE_PORT = 20001  # instances bind the first free ports from here, below the ephemeral range
START_TIMEOUT = 20


def multi_listen(bindir):
    return os.path.join(bindir, "bench", "multi-listen")


def max_port():
    """The highest port below the ephemeral range, so no client's connect() can take one."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        lo = 32768
    return max(BASE_PORT, lo - 1)


# ---- the instances ----

class Fleet:
    """N listening sockets in one multi-listen process, commanded through its stdin."""

    def __init__(self, ctx, n, mode, tag):
        self.n, self.mode = n, mode
        self.proc = procs.Proc(f"fleet-{tag}", [multi_listen(ctx.bindir), "--count", str(n),
                                                "--mode", mode, "--base-port", str(BASE_PORT),
                                                "--max-port", str(max_port())],
                               ctx.tmpdir, stdin=subprocess.PIPE)
        self.proc.wait_line("listening ", START_TIMEOUT)
        self.ports = [int(p) for p in self.proc.wait_line("ports", 1).split()]
        if len(self.ports) != n:
            raise procs.ProcError(f"multi-listen: {len(self.ports)} ports, want {n}")
        self.seq = 0
        self.tail = Tail(self.proc.out_path)

    def addrs(self):
        return [f"127.0.0.1:{p}" for p in self.ports]

    def command(self, verb, ports=(), timeout=5.0):
        """Sends one command; returns its answer's words (after verb and sequence number)."""
        self.seq += 1
        want = f"{verb} {self.seq} "
        try:
            self.proc.popen.stdin.write((" ".join([verb] + [str(p) for p in ports]) + "\n")
                                        .encode())
            self.proc.popen.stdin.flush()
        except OSError as e:
            raise procs.ProcError(f"multi-listen: cannot send '{verb}': {e}: "
                                  f"{self.proc.log_tail()}") from e
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.tail.lines():
                if line.startswith(want):
                    return line[len(want):].split()
            if not self.proc.alive():
                raise procs.ProcError(f"multi-listen died: {self.proc.log_tail()}")
            time.sleep(0.002)
        raise procs.ProcError(f"multi-listen: no answer to '{verb}' within {timeout} s")

    def act(self, verb, ports):
        """close / stall / reopen; returns the wall-clock ms when every port was done."""
        words = self.command(verb, ports)
        done = int(words[2].split("=")[1])
        if done != len(ports):
            raise procs.ProcError(f"multi-listen: {verb} did {done} of {len(ports)}: {words}")
        return float(words[1])

    def stats(self):
        """Counters; "phase" = accepts per 50 ms slot of the wall-clock second since the last
        stats call."""
        words = self.command("stats")
        out = {}
        for k, v in (w.split("=") for w in words):
            out[k] = [int(x) for x in v.split(",")] if k == "phase" else int(v)
        return out

    def stop(self):
        self.proc.stop()


class Tail:
    """Complete lines appended to a file since the last call."""

    def __init__(self, path):
        self.path, self.off, self.rest = path, 0, ""

    def lines(self):
        try:
            with open(self.path, "r", errors="replace") as f:
                f.seek(self.off)
                data = f.read()
                self.off = f.tell()
        except OSError:
            return []
        data = self.rest + data
        parts = data.split("\n")
        self.rest = parts.pop()
        return parts


# ---- /proc ----

def sched_ns(pid):
    """On-CPU ns of every live thread of pid (schedstat: sum_exec_runtime), or None."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def threads_named(pid, prefix):
    """Thread ids of pid whose comm starts with prefix."""
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip().startswith(prefix):
                    out.append(int(tid))
        except OSError:
            continue
    return sorted(out)


def threads_exactly(pid, comm, but=()):
    """Thread ids of pid whose comm is comm, except those in but."""
    out = []
    for tid in threads_named(pid, comm):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() == comm and tid not in but:
                    out.append(tid)
        except OSError:
            continue
    return out


def thread_schedstat(pid, tids):
    """(on-CPU ns, run-queue wait ns) summed over the threads (schedstat), or None."""
    run = wait = 0
    try:
        for tid in tids:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
            run += int(fields[0])
            wait += int(fields[1])
    except (OSError, ValueError, IndexError):
        return None
    return run, wait


def thread_sched_ns(pid, tids):
    """Sum of the schedstat on-CPU ns of the given threads of pid, or None if one is gone."""
    total = 0
    try:
        for tid in tids:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def ts_ms(text):
    """sluice's log ts (2026-12-01T20:31:05.123Z, UTC) as ms since the epoch."""
    dt = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000.0


# ---- proxies over a fleet ----

class ManySluice(contenders.Contender):
    """sluice with the config lines_for(listen) returns (one listener on listen); with
    admin=True an [admin] section binding a free loopback port (self.admin_addr) is added and
    waited for too."""

    def __init__(self, ctx, label, lines_for, admin=False):
        super().__init__(ctx.bindir, ctx.tmpdir, ctx.threads)
        self.name, self.lines_for, self.admin = label, lines_for, admin
        self.threads_note = f"workers = {ctx.threads}"
        self.admin_addr = self.listen = None

    def _start(self, backends):
        d = self._workdir()
        listen = f"127.0.0.1:{procs.free_port()}"
        lines = list(self.lines_for(listen))
        wait = [listen]
        if self.admin:
            self.admin_addr = f"127.0.0.1:{procs.free_port()}"
            lines += ["", "[admin]", f"bind = {self.admin_addr}"]
            wait.append(self.admin_addr)
        cfg = os.path.join(d, "sluice.ini")
        with open(cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        p = procs.Proc(f"{self.name}-{self.starts}",
                       [os.path.join(self.bindir, "sluice"), "-c", cfg], d)
        self.procs.append(p)
        p.wait_listening(wait, START_TIMEOUT)
        self.listen = listen
        return {"echo": listen}


class ManyHAProxy(contenders.Contender):
    """HAProxy 'listen' with one server line per fleet address; 'check inter ...' when check;
    with prometheus=True also an HTTP frontend on a free port (self.admin_addr) serving the
    built-in Prometheus exporter at /metrics."""

    def __init__(self, ctx, label, addrs, check=False, check_inter_ms=1000, check_timeout_ms=1000,
                 prometheus=False):
        super().__init__(ctx.bindir, ctx.tmpdir, ctx.threads)
        self.name, self.addrs, self.check = label, addrs, check
        self.check_inter_ms, self.check_timeout_ms = check_inter_ms, check_timeout_ms
        self.prometheus = prometheus
        self.threads_note = f"nbthread {ctx.threads}"
        self.sock = self.admin_addr = None

    def _start(self, backends):
        d = self._workdir()
        listen = f"127.0.0.1:{procs.free_port()}"
        self.sock = os.path.join(d, "stats.sock")
        chk = f" check inter {self.check_inter_ms:.0f}ms" if self.check else ""
        lines = ["global", f"    nbthread {self.threads}",
                 f"    maxconn {contenders.HAPROXY_MAXCONN}",
                 f"    stats socket {self.sock} mode 600 level user", "",
                 "defaults", "    mode tcp", "    option splice-auto",
                 f"    maxconn {contenders.HAPROXY_MAXCONN}", "    timeout connect 5s",
                 "    timeout client 10m", "    timeout server 10m",
                 f"    timeout check {self.check_timeout_ms:.0f}ms", "",
                 "listen api", f"    bind {listen}", "    balance roundrobin"]
        lines += [f"    server s{i} {a}{chk}" for i, a in enumerate(self.addrs)]
        wait = [listen]
        if self.prometheus:
            self.admin_addr = f"127.0.0.1:{procs.free_port()}"
            lines += ["", "frontend metrics", "    mode http", f"    bind {self.admin_addr}",
                      "    timeout client 10s",
                      "    http-request use-service prometheus-exporter if { path /metrics }",
                      "    http-request return status 404"]
            wait.append(self.admin_addr)
        cfg = os.path.join(d, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        p = procs.Proc(f"{self.name}-{self.starts}", ["haproxy", "-db", "-f", cfg], d)
        self.procs.append(p)
        p.wait_listening(wait, START_TIMEOUT)
        return {"echo": listen}

    def show_stat(self):
        """{status: servers} from 'show stat' on the stats socket, or None."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(self.sock)
                s.sendall(b"show stat\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            return None
        rows = data.decode(errors="replace").splitlines()
        if not rows or not rows[0].startswith("# "):
            return None
        head = rows[0][2:].split(",")
        out = {}
        for row in rows[1:]:
            f = dict(zip(head, row.split(",")))
            if f.get("svname", "") in ("FRONTEND", "BACKEND", ""):
                continue
            # "* L4OK": a check of that server is running right now, the last one passed
            key = f"{f.get('status')}/{(f.get('check_status') or '-').lstrip('* ')}"
            out[key] = out.get(key, 0) + 1
        return out


class LoadCtx(scenarios.Context):
    """scenarios.Context for measure_rr / measure_connrate."""

    def __init__(self, ctx, order):  # noqa: super() wants bench/run's args; set what is used
        self.bindir, self.tmpdir, self.threads = ctx.bindir, ctx.tmpdir, ctx.threads
        self.rounds, self.duration, self.log = ctx.rounds, ctx.duration, ctx.log
        self.contenders, self.scenarios, self.idle_connections = order, ["rr"], 0
        self.records = []


# ---- statistics ----

def new_record(ctx, part, rnd, config):
    """A record of one measurement, added to ctx.records; valid once its caller says so."""
    rec = {"part": part, "round": rnd, "config": config, "metrics": {}, "problems": [],
           "valid": False, "extra": {}}
    ctx.records.append(rec)
    return rec


def spread(values):
    values = [v for v in values if v is not None]
    return report._spread(values) if values else None


def pct(sorted_values, p):
    """Nearest-rank percentile: the smallest value with at least p % of samples at or below."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(p / 100.0 * len(sorted_values)) - 1)]


def dist(values):
    v = sorted(values)
    if not v:
        return None
    return {"n": len(v), "p50": pct(v, 50), "p90": pct(v, 90), "p99": pct(v, 99),
            "min": v[0], "max": v[-1], "mean": statistics.fmean(v)}


def cell(sp, dec):
    if not sp:
        return "—"
    f = report.fmt
    return f"{f(sp['median'], dec)} ({f(sp['min'], dec)}–{f(sp['max'], dec)})"


def round_value(recs, scen, rnd, name, mid):
    for r in recs:
        if (r["scenario"] == scen and r["round"] == rnd and r["contender"] == name
                and r["valid"] and r["metrics"].get(mid) is not None):
            return r["metrics"][mid]
    return None


def load_summary(recs, order, mids, pairs, rounds):
    """{mid: {"cells": {name: {"spread", "runs", "invalid", "problems"}},
    "ratios": {label: spread of the per-round a/b}}} for the metric ids mids (the scenario is
    the first word of the id: "rr ..." or else "connrate"); pairs = [(label, a, b)]."""
    out = {}
    for mid in () if not recs else mids:
        scen = "rr" if mid.startswith("rr") else "connrate"
        cells = {}
        for name in order:
            rs = [r for r in recs if r["scenario"] == scen and r["contender"] == name]
            vals = [r["metrics"].get(mid) for r in rs if r["valid"]]
            cells[name] = {"spread": spread(vals), "runs": len(rs),
                           "invalid": sum(not r["valid"] for r in rs),
                           "problems": sorted({p for r in rs for p in r["problems"]})}
        ratios = {}
        for label, a, b in pairs:
            per = []
            for rnd in range(rounds):
                va = round_value(recs, scen, rnd, a, mid)
                vb = round_value(recs, scen, rnd, b, mid)
                if va is not None and vb:
                    per.append(va / vb)
            ratios[label] = spread(per)
        out[mid] = {"cells": cells, "ratios": ratios}
    return out


def load_rows(summary, order, labels, na):
    """Markdown rows of load_summary: labels = {mid: (row label, decimals)}; na(name, mid) is
    true where a cell does not apply."""
    out = []
    for mid, v in summary.items():
        label, dec = labels[mid]
        cells = []
        for name in order:
            cl = v["cells"][name]
            if na(name, mid):
                cells.append("n/a")
                continue
            txt = cell(cl["spread"], dec)
            if cl["invalid"]:
                txt = f"**INVALID** {cl['invalid']}/{cl['runs']}; valid: {txt}"
            cells.append(txt)
        rat = [report.fmt_ratio(v["ratios"][k]) for k in v["ratios"]]
        out.append(f"| {label} | " + " | ".join(cells + rat) + " |")
    return out
