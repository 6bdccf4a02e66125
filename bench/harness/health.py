"""The health-check benchmark of bench/health: what sluice's active checks cost and how fast
they see an instance go away, and whether they cost the data path anything.

Three parts, each a list of records like bench/run's ({"part", "round", "config", "metrics",
"problems", "valid", "extra"}):
  checks    N instances (multi-listen: accept-and-close for tcp, a fixed 200 answer for http),
            one sluice service over them with check_interval = 1s, check_fall = 1: the
            "sluice-health" thread's CPU time over a window (utime+stime of its
            /proc/PID/task/TID/stat, schedstat as a cross-check), the checks done in the window
            (two health_stats lines, SIGUSR1 at each end), then the detection delay, --kills
            times per mode: at a random moment close K random listeners (http: also stall K),
            health_down ts - close time; reopen them and wait for their health_up (recovery).
  fall3     the same detection with the default check_fall = 3, no CPU window.
  datapath  1000 echo instances (multi-listen --mode echo); sluice and HAProxy with and without
            TCP checks (interval 1s), each started fresh for each measurement; the rr and
            connrate runs of bench/run (scenarios.measure_rr / measure_connrate).
"""

import json
import os
import random
import signal
import time

from . import fleet, procs, scenarios
# shared with bench/observe; kept under their old names for bench/health
from .fleet import (BASE_PORT, START_TIMEOUT, Fleet, Tail, cell, dist, max_port,  # noqa: F401
                    new_record, sched_ns, spread, ts_ms)

COUNTS = [100, 1000, 5000]
KINDS = ["tcp", "http"]
INTERVAL_S = 1.0   # check_interval
TIMEOUT_S = 1.0    # check_timeout
JITTER_S = 0.1     # sluice's default check_jitter: 10 % of the interval, either way
RISE = 2           # check_rise (default)
DATAPATH_COUNT = 1000
DATAPATH_ORDER = ["direct", "sluice", "sluice+check", "haproxy", "haproxy+check"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
STATS_TIMEOUT = 5


# ---- sluice with checks ----

class SluiceRun:
    """One sluice process over a fleet, its JSON log followed as events."""

    def __init__(self, ctx, tag, listen, lines):
        d = os.path.join(ctx.tmpdir, tag)
        os.makedirs(d, exist_ok=True)
        self.cfg = os.path.join(d, "sluice.ini")
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = procs.Proc(tag, [os.path.join(ctx.bindir, "sluice"), "-c", self.cfg], d)
        self.proc.wait_listening([listen], START_TIMEOUT)
        self.tail = Tail(self.proc.err_path)
        self.events = []
        self.tid = None

    def poll(self):
        for line in self.tail.lines():
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "unparsed", "raw": line[:300]}
            self.events.append(ev)
        return self.events

    def wait(self, pred, timeout, start=0):
        """Polls the log until pred(events[start:]) is true; returns it (or False at timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            got = pred(self.poll()[start:])
            if got or time.monotonic() >= deadline:
                return got
            if not self.proc.alive():
                raise procs.ProcError(f"sluice died: {self.proc.log_tail()}")
            time.sleep(0.01)

    def health_tid(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
                try:
                    with open(f"/proc/{self.proc.pid}/task/{tid}/comm") as f:
                        if f.read().strip() == "sluice-health":
                            self.tid = int(tid)
                            return self.tid
                except OSError:
                    continue
            time.sleep(0.05)
        raise procs.ProcError("no task named sluice-health in "
                              f"/proc/{self.proc.pid}/task within {timeout} s")

    def health_cpu(self):
        """(utime+stime ticks, schedstat on-CPU ns) of the health thread."""
        base = f"/proc/{self.proc.pid}/task/{self.tid}"
        with open(base + "/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
        try:
            with open(base + "/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            ns = None
        return ticks, ns

    def stats(self, timeout=STATS_TIMEOUT):
        """SIGUSR1, then the health_stats line it produced."""
        before = sum(1 for e in self.poll() if e.get("event") == "health_stats")
        os.kill(self.proc.pid, signal.SIGUSR1)
        found = self.wait(lambda evs: [e for e in evs if e.get("event") == "health_stats"]
                          [before:] or None, timeout)
        if not found:
            raise procs.ProcError(f"no health_stats line within {timeout} s of SIGUSR1")
        return found[0]

    def stop(self):
        alive = self.proc.alive()
        self.proc.stop()
        return alive, self.proc.popen.returncode


def sluice_lines(listen, addrs, kind, fall, log_level="info", eject_after=0, threads=1):
    lines = ["[sluice]", f"workers = {threads}", f"log_level = {log_level}",
             "log_format = json", "shutdown_timeout = 1s", "",
             "[listener:web]", f"bind = {listen}", "service = api", "",
             "[service:api]", "backends = " + ", ".join(addrs)]
    if kind != "none":
        lines += [f"check = {kind}", f"check_interval = {INTERVAL_S:g}s",
                  f"check_timeout = {TIMEOUT_S:g}s"]
        if fall is not None:
            lines.append(f"check_fall = {fall}")
    if eject_after is not None:
        lines.append(f"eject_after = {eject_after}")
    return lines


# ---- records ----

def config_label(c):
    return f"N={c['n']} {c['kind']} fall={c['fall']}"


# ---- checks + fall3 ----

def measure_checks(ctx, part, rnd, n, kind, fall, rng):
    """One sluice over one fleet: CPU window (checks only), then the detection rounds."""
    config = {"n": n, "kind": kind, "fall": fall, "interval_s": INTERVAL_S,
              "timeout_s": TIMEOUT_S, "jitter_s": JITTER_S, "rise": RISE}
    rec = new_record(ctx, part, rnd, config)
    tag = f"{part}-r{rnd + 1}-{kind}-{n}-fall{fall}"
    fleet = run = None
    try:
        fleet = Fleet(ctx, n, "accept" if kind == "tcp" else "http", tag)
        listen = f"127.0.0.1:{procs.free_port()}"
        run = SluiceRun(ctx, "sluice-" + tag, listen,
                        sluice_lines(listen, fleet.addrs(), kind, fall))
        run.health_tid()
        time.sleep(ctx.warmup)
        ups = sum(1 for e in run.poll() if e.get("event") == "health_up")
        downs = [e for e in run.events if e.get("event") == "health_down"]
        rec["extra"]["warmup"] = {"health_up": ups, "health_down": len(downs)}
        if ups != n or downs:
            rec["problems"].append(f"after the {ctx.warmup:g} s warm-up: {ups} health_up "
                                   f"(want {n}), {len(downs)} health_down (want 0)")
        if part == "checks":
            cpu_window(ctx, rec, run, fleet)
        for _ in range(ctx.kills):
            for mode in (["refuse"] if kind == "tcp" else ["refuse", "stall"]):
                detect(ctx, rec, run, fleet, mode, fall, rng)
    except (procs.ProcError, OSError, ValueError, KeyError) as e:
        # OSError: /proc of a sluice that died; ValueError/KeyError: a log line not as expected
        rec["problems"].append(f"{type(e).__name__}: {e}")
    finally:
        if run is not None:
            alive, code = run.stop()
            if not alive:
                rec["problems"].append(f"sluice died (exit {code}): {run.proc.log_tail()}")
            elif code not in (0, None):
                rec["problems"].append(f"sluice exited {code} at SIGTERM")
            rec["extra"]["sluice_log_tail"] = run.proc.log_tail(1500)
        if fleet is not None:
            fleet.stop()
    rec["valid"] = not rec["problems"]
    say(ctx, rec)


def cpu_window(ctx, rec, run, fleet):
    pid, fpid = run.proc.pid, fleet.proc.pid
    cpu0, proc0, fleet0 = run.health_cpu(), sched_ns(pid), sched_ns(fpid)
    t0 = time.monotonic()
    s0 = run.stats()
    fs0 = fleet.stats()
    time.sleep(ctx.window)
    cpu1, proc1, fleet1 = run.health_cpu(), sched_ns(pid), sched_ns(fpid)
    t1 = time.monotonic()
    s1 = run.stats()
    fs1 = fleet.stats()
    wall = t1 - t0
    stats_wall = (ts_ms(s1["ts"]) - ts_ms(s0["ts"])) / 1000.0
    checks = s1["checks"] - s0["checks"]
    cpu_s = (cpu1[0] - cpu0[0]) / CLK_TCK
    m = rec["metrics"]
    m["checks/s"] = checks / stats_wall if stats_wall > 0 else None
    m["cpu ms/s"] = cpu_s * 1000.0 / wall
    m["cpu %"] = cpu_s * 100.0 / wall
    m["us/check"] = cpu_s * 1e6 / checks if checks > 0 else None
    if cpu0[1] is not None and cpu1[1] is not None:
        sched_s = (cpu1[1] - cpu0[1]) / 1e9
        m["sched ms/s"] = sched_s * 1000.0 / wall
        m["sched us/check"] = sched_s * 1e6 / checks if checks > 0 else None
    if None not in (proc0, proc1, fleet0, fleet1):  # schedstat: ticks are too coarse here
        m["sluice ms/s"] = (proc1 - proc0) / 1e6 / wall
        m["fleet ms/s"] = (fleet1 - fleet0) / 1e6 / wall
    m["failures"] = s1["failures"] - s0["failures"]
    phase = fs1.get("phase") or []
    if sum(phase) > 0:
        # 20 slots of 50 ms: 5 % each if the probes were spread evenly over the second
        m["busiest 50ms %"] = max(phase) * 100.0 / sum(phase)
    downs = [e for e in run.poll() if e.get("event") == "health_down"]
    errors = {}
    for e in downs:
        errors[e.get("error", "?")] = errors.get(e.get("error", "?"), 0) + 1
    rec["extra"]["window"] = {"wall_s": round(wall, 3), "stats_wall_s": round(stats_wall, 3),
                              "ticks": cpu1[0] - cpu0[0], "clk_tck": CLK_TCK,
                              "health_stats": [s0, s1], "fleet_stats": [fs0, fs1],
                              "health_down_errors": errors}
    if checks <= 0:
        rec["problems"].append(f"no checks counted in the window: {s0} -> {s1}")
    if m["failures"] or s1["downs"] != s0["downs"]:
        rec["problems"].append(f"{m['failures']} check failures / {s1['downs'] - s0['downs']} "
                               "downs in the window, with every instance up")
    expect = fleet.n / INTERVAL_S
    if m["checks/s"] and not 0.9 * expect <= m["checks/s"] <= 1.1 * expect:
        rec["problems"].append(f"{m['checks/s']:.0f} checks/s, expected about {expect:.0f} "
                               f"({fleet.n} instances, check_interval {INTERVAL_S:g}s)")


def detect(ctx, rec, run, fleet, mode, fall, rng):
    """Takes K random instances away (close: refused; stall: never answered), reads their
    health_down, brings them back and reads their health_up."""
    k = min(ctx.kill, fleet.n)
    ports = sorted(rng.sample(fleet.ports, k))
    # A random moment within the interval: the kill must not keep the same phase relative to
    # the probes in every round (their phases start together and spread out only slowly).
    time.sleep(rng.uniform(0, INTERVAL_S + JITTER_S))
    ids = {f"127.0.0.1:{p}": p for p in ports}
    cycle = INTERVAL_S + JITTER_S + (TIMEOUT_S if mode == "stall" else 0.05)
    start = len(run.poll())
    t_kill = fleet.act("close" if mode == "refuse" else "stall", ports)

    def downs(evs):
        got = {e["instance"]: e for e in evs if e.get("event") == "health_down"
               and e.get("instance") in ids}
        return got if len(got) == len(ids) else None
    down_wait = fall * cycle + TIMEOUT_S + 3.0
    run.wait(downs, down_wait, start)
    evs = run.events[start:]
    got = {e["instance"]: e for e in evs if e.get("event") == "health_down"
           and e.get("instance") in ids}
    others = [e.get("instance") for e in evs if e.get("event") == "health_down"
              and e.get("instance") not in ids]
    delays = sorted(ts_ms(e["ts"]) - t_kill for e in got.values())
    pre = f"{mode}"
    rec["extra"].setdefault("detect", []).append(
        {"mode": mode, "ports": ports, "kill_ms": t_kill, "delays_ms": delays,
         "missed": sorted(set(ids) - set(got)), "other_downs": others,
         "errors": sorted({e.get("error", "") for e in got.values()}),
         "other_down_errors": sorted({e.get("error", "") for e in evs
                                      if e.get("event") == "health_down"
                                      and e.get("instance") not in ids}),
         "failures_field": sorted({e.get("failures") for e in got.values()}, key=str)})
    rec["metrics"].setdefault(f"{pre} delays", []).extend(delays)
    if len(got) != k:
        rec["problems"].append(f"{mode}: {k - len(got)} of {k} killed instances got no "
                               f"health_down within {down_wait:.1f} s "
                               f"({sorted(set(ids) - set(got))[:5]})")
    if others:
        rec["problems"].append(f"{mode}: health_down for {len(others)} instances that were "
                               f"not killed: {others[:5]}")
    # Back up: every one must come back (rise successes), or the next kill cannot be timed.
    start = len(run.poll())
    t_back = fleet.act("reopen", ports)

    def ups(evs):
        got_up = {e["instance"]: e for e in evs if e.get("event") == "health_up"
                  and e.get("instance") in ids}
        return got_up if len(got_up) == len(ids) else None
    up_wait = RISE * (INTERVAL_S + JITTER_S + TIMEOUT_S) + 3.0
    got_up = run.wait(ups, up_wait, start) or {}
    if not got_up:
        got_up = {e["instance"]: e for e in run.events[start:]
                  if e.get("event") == "health_up" and e.get("instance") in ids}
    back = sorted(ts_ms(e["ts"]) - t_back for e in got_up.values())
    rec["extra"]["detect"][-1].update({"reopen_ms": t_back, "recovery_ms": back})
    rec["metrics"].setdefault(f"{pre} recovery", []).extend(back)
    if len(got_up) != k:
        rec["problems"].append(f"{mode}: {k - len(got_up)} of {k} reopened instances got no "
                               f"health_up within {up_wait:.1f} s")


# ---- datapath ----

class ManySluice(fleet.ManySluice):
    """sluice, one listener, one service over every fleet address; TCP checks or none."""

    def __init__(self, ctx, label, addrs, check):
        super().__init__(ctx, label, lambda listen: sluice_lines(
            listen, addrs, "tcp" if check else "none", None, log_level="info",
            eject_after=None, threads=ctx.threads))
        self.addrs, self.check = addrs, check


class ManyHAProxy(fleet.ManyHAProxy):
    """HAProxy 'listen' with one server line per fleet address; 'check inter 1s' or none."""

    def __init__(self, ctx, label, addrs, check):
        super().__init__(ctx, label, addrs, check, check_inter_ms=INTERVAL_S * 1000,
                         check_timeout_ms=TIMEOUT_S * 1000)


def health_ns(run):
    """On-CPU ns of the sluice-health thread of run (schedstat), or None."""
    if run is None or run.tid is None:
        return None
    try:
        return run.health_cpu()[1]
    except (OSError, ValueError, IndexError):
        return None


def measure_datapath(ctx, rnd, label, fleet, sctx):
    check = label.endswith("+check")
    if label == "direct":
        targets = {"echo": fleet.addrs()[rnd % fleet.n]}
        c = None
    else:
        cls = ManySluice if label.startswith("sluice") else ManyHAProxy
        c = cls(ctx, f"{label.replace('+', '-')}-r{rnd + 1}", fleet.addrs(), check)
        try:
            targets = c.start({"echo": None})
        except procs.ProcError as e:
            rec = scenarios.fail_record(sctx, "rr", rnd, label, "-", str(e))
            scenarios.report(sctx, rec)
            return
    pids = c.pids if c else (lambda: [])
    try:
        time.sleep(ctx.warmup)  # the first checks of 1000 instances go out at start
        sluice_run = None
        if c is not None and label.startswith("sluice"):
            sluice_run = SluiceRun.__new__(SluiceRun)
            sluice_run.proc, sluice_run.events = c.procs[0], []
            sluice_run.tail = Tail(c.procs[0].err_path)
            s0 = sluice_run.stats() if check else None
            try:
                sluice_run.health_tid(timeout=1.0)
            except procs.ProcError:
                sluice_run.tid = None  # no health thread: nothing to subtract
        first = len(sctx.records)
        t0 = time.monotonic()
        for scen, fn, count_key in (("rr", scenarios.measure_rr, "requests"),
                                    ("connrate", scenarios.measure_connrate, "connections")):
            h0 = health_ns(sluice_run)
            fn(sctx, scen, rnd, label, targets, pids)
            h1 = health_ns(sluice_run)
            r = sctx.records[-1]
            count = (r["tool"] or {}).get(count_key) if isinstance(r["tool"], dict) else None
            cpu = r["extra"].get("proxy_cpu_s")
            if h0 is not None and h1 is not None and cpu is not None and count:
                # the proxy's CPU per operation without the health thread's: what the checks
                # cost the workers, apart from the thread that runs them
                r["extra"]["health_thread_cpu_s"] = round((h1 - h0) / 1e9, 4)
                r["metrics"][f"{scen} cpu excl health"] = (cpu - (h1 - h0) / 1e9) * 1e6 / count
        wall = time.monotonic() - t0
        recs = sctx.records[first:]
        extra, problems = {}, []
        if sluice_run is not None:
            if check:
                s1 = sluice_run.stats()
                extra["checks_during_load"] = s1["checks"] - s0["checks"]
                extra["checks_per_s"] = round(extra["checks_during_load"] / wall, 1)
                if s1["failures"] != s0["failures"] or s1["downs"] != s0["downs"]:
                    problems.append(f"check failures during the load: {s0} -> {s1}")
                if extra["checks_during_load"] < 0.8 * fleet.n * wall / INTERVAL_S:
                    problems.append(f"only {extra['checks_during_load']} checks in {wall:.1f} s")
            bad = [e.get("event") for e in sluice_run.poll()
                   if e.get("event") in ("health_down", "instance_ejected")]
            if bad:
                problems.append(f"sluice logged {len(bad)} {sorted(set(bad))}")
        elif c is not None:
            st = c.show_stat()
            extra["haproxy_servers"] = st
            want = "UP/L4OK" if check else "no check/-"
            if st is None or st.get(want, 0) != fleet.n:
                problems.append(f"HAProxy servers {st}, want {fleet.n} {want}")
        for r in recs:
            r["extra"].update(extra)
            if problems:
                r["problems"] += problems
                r["valid"] = False
                ctx.log(f"    INVALID: {'; '.join(problems)}")
        if c is not None and not c.alive():
            for r in recs:
                r["problems"].append(f"{label} died: {c.log_tail()}")
                r["valid"] = False
    except procs.ProcError as e:
        rec = scenarios.fail_record(sctx, "rr", rnd, label, "-", str(e))
        scenarios.report(sctx, rec)
    finally:
        if c is not None:
            c.stop()


class LoadCtx(fleet.LoadCtx):
    """scenarios.Context for measure_rr / measure_connrate."""

    def __init__(self, ctx):
        super().__init__(ctx, DATAPATH_ORDER)


# ---- the run ----

class Context:
    def __init__(self, args, log):
        self.bindir, self.tmpdir, self.log = args.build_dir, args.tmpdir, log
        self.rounds, self.window, self.warmup = args.rounds, args.window, args.warmup
        self.kill, self.kills = args.kill, args.kills
        self.duration, self.threads = args.duration, 1
        self.counts, self.kinds, self.parts = args.counts, args.kinds, args.only
        self.fall3_count, self.seed = args.fall3_count, args.seed
        self.records = []
        self.load_records = []


def say(ctx, rec):
    c, m = rec["config"], rec["metrics"]
    bits = []
    for key in ("checks/s", "cpu ms/s", "us/check", "sched ms/s", "fleet ms/s"):
        if m.get(key) is not None:
            bits.append(f"{key} {m[key]:.4g}")
    for key, v in m.items():
        if isinstance(v, list) and v:
            bits.append(f"{key} {min(v):.0f}..{max(v):.0f} ms (n={len(v)})")
    status = "ok" if rec["valid"] else "INVALID: " + "; ".join(rec["problems"])[:600]
    ctx.log(f"  round {rec['round'] + 1} {rec['part']:8} {config_label(c):22} "
            f"{', '.join(bits)}  [{status}]")


def run(ctx):
    rng = random.Random(ctx.seed)
    order = []
    if "checks" in ctx.parts:
        order += [("checks", n, kind, 1) for n in ctx.counts for kind in ctx.kinds]
    if "fall3" in ctx.parts:
        order += [("fall3", ctx.fall3_count, kind, 3) for kind in ctx.kinds]
    if order:
        ctx.log(f"checks: {ctx.rounds} rounds of "
                + ", ".join(f"{p}:{k}/{n}" for p, n, k, _ in order)
                + f"; warm-up {ctx.warmup:g} s, window {ctx.window:g} s, K = {ctx.kill}")
    for rnd in range(ctx.rounds):
        for part, n, kind, fall in order:
            measure_checks(ctx, part, rnd, n, kind, fall, rng)
    if "datapath" in ctx.parts:
        sctx = LoadCtx(ctx)
        ctx.log(f"datapath: {DATAPATH_COUNT} echo instances; {ctx.rounds} rounds of "
                f"{' '.join(DATAPATH_ORDER)}; rr + connrate, {ctx.duration:g} s each")
        fleet = Fleet(ctx, DATAPATH_COUNT, "echo", "datapath")
        try:
            for rnd in range(ctx.rounds):
                for label in DATAPATH_ORDER:
                    measure_datapath(ctx, rnd, label, fleet, sctx)
            ctx.fleet_stats = fleet.stats()
        finally:
            fleet.stop()
        ctx.load_records = sctx.records


# ---- summary and tables ----

CPU_ROWS = ["checks/s", "cpu ms/s", "cpu %", "us/check", "sched ms/s", "sched us/check",
            "sluice ms/s", "fleet ms/s", "failures", "busiest 50ms %"]


def summarize(ctx):
    s = {"cpu": {}, "detect": {}, "datapath": {}}
    groups = {}
    for r in ctx.records:
        c = r["config"]
        groups.setdefault((r["part"], c["n"], c["kind"], c["fall"]), []).append(r)
    for (part, n, kind, fall), recs in groups.items():
        key = f"N={n} {kind}"
        if part == "checks":
            # every window that was measured counts, valid or not: when the checks fall behind
            # (an invalid run) what the thread did is the figure; the row says so
            s["cpu"][key] = {m: spread([r["metrics"].get(m) for r in recs]) for m in CPU_ROWS}
            s["cpu"][key]["runs"] = len(recs)
            s["cpu"][key]["invalid"] = sum(not r["valid"] for r in recs)
        for mode in ("refuse", "stall"):
            delays = [d for r in recs for d in r["metrics"].get(f"{mode} delays", [])]
            if not any(f"{mode} delays" in r["metrics"] for r in recs):
                continue
            back = [d for r in recs for d in r["metrics"].get(f"{mode} recovery", [])]
            missed = sum(len(x["missed"]) for r in recs for x in r["extra"].get("detect", [])
                         if x["mode"] == mode)
            false_downs = sum(len(x["other_downs"]) for r in recs
                              for x in r["extra"].get("detect", []) if x["mode"] == mode)
            s["detect"][f"{kind} {mode} fall={fall} N={n}"] = {
                "kind": kind, "mode": mode, "fall": fall, "n_instances": n,
                "delay_ms": dist(delays), "recovery_ms": dist(back), "missed": missed,
                "false_downs": false_downs, "invalid_runs": sum(not r["valid"] for r in recs)}
    # pooled over N
    pooled = {}
    for v in s["detect"].values():
        pooled.setdefault((v["kind"], v["mode"], v["fall"]), []).append(v)
    for (kind, mode, fall), vs in pooled.items():
        # pooled over the instance counts, valid runs only (a run whose checks fell behind
        # measures the overload, not the check)
        use = [r for r in ctx.records if r["valid"] and r["config"]["kind"] == kind
               and r["config"]["fall"] == fall and f"{mode} delays" in r["metrics"]]
        counts = sorted({r["config"]["n"] for r in use})
        if len(counts) < 2:
            continue
        s["detect"][f"{kind} {mode} fall={fall} all N"] = {
            "kind": kind, "mode": mode, "fall": fall, "n_instances": "all",
            "pooled_counts": counts,
            "delay_ms": dist([d for r in use for d in r["metrics"][f"{mode} delays"]]),
            "recovery_ms": dist([d for r in use for d in r["metrics"].get(f"{mode} recovery",
                                                                          [])]),
            "missed": sum(len(x["missed"]) for r in use for x in r["extra"].get("detect", [])
                          if x["mode"] == mode),
            "false_downs": sum(len(x["other_downs"]) for r in use
                               for x in r["extra"].get("detect", []) if x["mode"] == mode),
            "invalid_runs": 0}
    # datapath: cells per contender, per-round ratios
    s["datapath"] = fleet.load_summary(
        ctx.load_records, DATAPATH_ORDER,
        ("rr req/s", "connrate", "rr cpu", "rr cpu excl health", "connrate cpu",
         "connrate cpu excl health", "rr p50", "rr p99"),
        (("sluice/haproxy, no checks", "sluice", "haproxy"),
         ("sluice/haproxy, checks", "sluice+check", "haproxy+check"),
         ("sluice checks/none", "sluice+check", "sluice"),
         ("haproxy checks/none", "haproxy+check", "haproxy")), ctx.rounds)
    return s


scenarios_round = fleet.round_value


def tables(ctx, s):
    out = []
    if s["cpu"]:
        out += [f"### Health-thread CPU (check_interval {INTERVAL_S:g}s, check_timeout "
                f"{TIMEOUT_S:g}s, jitter ±{JITTER_S * 1000:.0f} ms; {ctx.window:g} s window after "
                f"{ctx.warmup:g} s warm-up; median (min–max) of {ctx.rounds} rounds)", "",
                "| instances | check | checks/s | health thread CPU, ms per s | % of one core "
                "| CPU per check, µs | schedstat: ms per s / µs per check "
                "| whole sluice (schedstat), ms per s "
                "| instances' process (multi-listen, schedstat), ms per s "
                "| failed checks (all instances up) | busiest 50 ms of the second, % of accepts "
                "(even = 5) |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for key, v in s["cpu"].items():
            n, kind = key.split()
            sched = (f"{cell(v['sched ms/s'], 1)} / {cell(v['sched us/check'], 1)}"
                     if v.get("sched ms/s") else "—")
            inval = (f" **{v['invalid']}/{v['runs']} runs fell behind or failed (notes)**"
                     if v["invalid"] else "")
            out.append(f"| {n[2:]} | {kind}{inval} | {cell(v['checks/s'], 0)} | "
                       f"{cell(v['cpu ms/s'], 1)} | {cell(v['cpu %'], 2)} | "
                       f"{cell(v['us/check'], 1)} | {sched} | {cell(v['sluice ms/s'], 1)} | "
                       f"{cell(v['fleet ms/s'], 1)} | {cell(v['failures'], 0)} | "
                       f"{cell(v['busiest 50ms %'], 1)} |")
        out.append("")
    if s["detect"]:
        out += [f"### Detection delay: health_down ts − kill time (K = {ctx.kill} random "
                f"instances per kill, {ctx.kills} kill(s) per mode per round at a random moment, "
                f"{ctx.rounds} rounds; "
                f"check_interval {INTERVAL_S:g}s, check_timeout {TIMEOUT_S:g}s, jitter "
                f"±{JITTER_S * 1000:.0f} ms, check_rise {RISE}, eject_after 0)", "",
                "| check | kill | check_fall | instances | samples | p50 ms | p90 ms | p99 ms "
                "| max ms | min ms | missed | false downs | recovery (reopen → health_up) p50 / "
                "max ms |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        kill_text = {"refuse": "close (refused)", "stall": "stall (never answered)"}
        for key, v in sorted(s["detect"].items(), key=lambda kv: (
                kv[1]["fall"], kv[1]["kind"] != "tcp", kv[1]["mode"],
                kv[1]["n_instances"] == "all", str(kv[1]["n_instances"]).zfill(6))):
            d, b = v["delay_ms"], v["recovery_ms"]
            f0 = lambda x: "—" if x is None else f"{x:,.0f}"  # noqa: E731
            if v["n_instances"] == "all":
                inst = "**" + " + ".join(map(str, v["pooled_counts"])) + "** (valid runs)"
            else:
                inst = str(v["n_instances"])
            if v["invalid_runs"]:
                inst += f" (**{v['invalid_runs']} run(s) invalid**)"
            out.append(f"| {v['kind']} | {kill_text[v['mode']]} | {v['fall']} | {inst} | "
                       f"{d['n'] if d else 0} | {f0(d and d['p50'])} | {f0(d and d['p90'])} | "
                       f"{f0(d and d['p99'])} | {f0(d and d['max'])} | {f0(d and d['min'])} | "
                       f"{v['missed']} | {v['false_downs']} | {f0(b and b['p50'])} / "
                       f"{f0(b and b['max'])} |")
        out.append("")
    if s["datapath"]:
        out += [f"### Data path with {DATAPATH_COUNT} instances (multi-listen echo), TCP checks "
                f"every {INTERVAL_S:g}s vs none; 1 thread per proxy; {ctx.duration:g} s runs, "
                f"{ctx.rounds} rounds, each proxy started fresh per measurement", "",
                "| metric | " + " | ".join(DATAPATH_ORDER) + " | sluice/haproxy, no checks "
                "| sluice/haproxy, checks | sluice checks/none | haproxy checks/none |",
                "|---|" + "---|" * (len(DATAPATH_ORDER) + 4)]
        labels = {"rr req/s": ("rr (50 conns, 64 B), req/s", 0),
                  "connrate": ("connrate (C=50, 64 B echo), conn/s", 0),
                  "rr p50": ("rr latency p50, µs", 0), "rr p99": ("rr latency p99, µs", 0),
                  "rr cpu": ("rr: proxy CPU µs per request", 2),
                  "connrate cpu": ("connrate: proxy CPU µs per connection", 1),
                  "rr cpu excl health": ("rr: sluice CPU µs per request without the "
                                         "sluice-health thread", 2),
                  "connrate cpu excl health": ("connrate: sluice CPU µs per connection without "
                                               "the sluice-health thread", 1)}
        out += fleet.load_rows(
            s["datapath"], DATAPATH_ORDER, labels,
            lambda name, mid: (name == "direct" and "cpu" in mid)
            or (name.startswith("haproxy") and mid.endswith("excl health")))
        out.append("")
    return "\n".join(out)
