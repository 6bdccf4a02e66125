"""The scenarios: start the backends, then measure every contender in alternating order.

Each measurement appends one record per load-tool run to ctx.records:
  {"scenario", "round", "contender", "what", "argv", "exit", "tool" (its JSON), "valid",
   "problems", "metrics" {metric id: value}, "extra" {raw /proc readings}}
All measuring is done by sluice-load; the harness only reads /proc around the runs.
"""

import json
import os
import subprocess
import select
import time

from . import contenders, procs

SCENARIOS = ["bulk-1", "bulk-8", "connrate", "rr", "idle", "cpu"]
BACKEND_KINDS = {"bulk-1": ["source", "verify"], "bulk-8": ["source", "verify"],
                 "connrate": ["echo"], "rr": ["echo"], "idle": ["echo"],
                 "cpu": ["source", "verify"]}
TOOL_SLACK = 30  # seconds allowed beyond --duration for setup and the final replies
IDLE_READY_TIMEOUT = 60
IDLE_SETTLE = 0.5

# Contenders that cannot take a scenario, and why (shown as n/a in the table).
NOT_APPLICABLE = {
    ("idle", "splice-fwd"): "thread-per-direction forwarder: 2 threads and 6 descriptors "
                            "per session, not meant for thousands of idle connections",
}


class Context:
    """Settings and state of one run."""

    # Defaults for the contexts of bench/health and bench/observe, which skip __init__.
    client_threads = 1  # sluice-load --threads in connrate and rr
    backend_threads = 1  # sluice-backend --threads
    proxy_cpus = None  # --pin: the CPUs of the proxy under test (a set); None: not pinned
    other_cpus = None  # --pin: the CPUs of the load client and the backends
    proxy_cores = None  # cores the contender being measured can use (utilisation's divisor)
    backends = ()  # the backend Procs of the scenario being measured

    def __init__(self, args, bindir, tmpdir, log):
        self.bindir = bindir
        self.tmpdir = tmpdir
        self.threads = args.threads
        self.client_threads = args.client_threads
        self.backend_threads = args.backend_threads
        self.proxy_cpus = args.proxy_cpus
        self.other_cpus = args.other_cpus
        # CPUs open to the proxy: its pinned set, else every CPU the harness may use.
        self.usable = len(args.proxy_cpus or os.sched_getaffinity(0))
        self.rounds = args.rounds
        self.duration = args.duration
        self.idle_connections = args.idle_connections
        self.contenders = args.contenders
        self.scenarios = args.only
        self.log = log
        self.records = []

    def load(self, target, *args, threads=1):
        return [os.path.join(self.bindir, "bench", "sluice-load"), "--target", target,
                "--threads", str(threads), *args]


def start_backends(ctx, kinds):
    backend = os.path.join(ctx.bindir, "bench", "sluice-backend")
    started, addrs = [], {}
    try:
        for kind in kinds:
            p = procs.Proc(f"backend-{kind}", [backend, "--listen", "127.0.0.1:0", "--mode", kind,
                                               "--threads", str(ctx.backend_threads)],
                           ctx.tmpdir, cpus=ctx.other_cpus)
            started.append(p)
            addrs[kind] = p.wait_line("listening ", 10)
    except BaseException:
        for p in started:
            p.stop()
        raise
    return started, addrs


def check_tool(rec, expect):
    """Fills rec["valid"]/["problems"] from the tool's exit status and JSON counters."""
    tool, problems = rec.get("tool"), []
    if rec["exit"] is None:
        problems.append("timed out")
    elif rec["exit"] != 0:
        problems.append(f"exit status {rec['exit']}")
    if not isinstance(tool, dict):
        problems.append("no JSON report")
    else:
        for key in ("errors", "connect_errors", "timeouts"):
            if tool.get(key, 0) != 0:
                problems.append(f"{key}={tool.get(key)}")
        for key, want in expect.items():
            if tool.get(key) != want:
                problems.append(f"{key}={tool.get(key)} (want {want})")
    rec["problems"] += problems
    rec["valid"] = not rec["problems"]


def parse_json(text):
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def new_record(ctx, scenario, rnd, name, what):
    rec = {"scenario": scenario, "round": rnd, "contender": name, "what": what, "argv": None,
           "exit": None, "tool": None, "valid": False, "problems": [], "metrics": {},
           "extra": {}}
    ctx.records.append(rec)
    return rec


def run_load(ctx, rec, argv, timeout, pids):
    """Runs sluice-load, reading the proxy's CPU time (pids() = its processes) around it and,
    while it runs, the CPU affinity of every thread of the proxy, the tool and the backends."""
    rec["argv"] = argv
    cpu0 = procs.cpu_seconds(pids()) if pids() else None
    t0 = time.monotonic()
    code, out, err = procs.run_tool(argv, timeout, cpus=ctx.other_cpus,
                                    probe=lambda pid: probe_affinity(ctx, rec, pid, pids))
    wall = time.monotonic() - t0
    if cpu0 is not None:
        cpu = procs.cpu_seconds(pids()) - cpu0
        rec["extra"].update(proxy_cpu_s=round(cpu, 4), wall_s=round(wall, 4))
        if ctx.proxy_cores:
            rec["extra"]["proxy_cores"] = ctx.proxy_cores
            rec["extra"]["proxy_util"] = round(utilisation(cpu, wall, ctx.proxy_cores), 4)
    rec["exit"], rec["tool"] = code, parse_json(out)
    if code != 0:
        rec["extra"]["stderr_tail"] = err[-1500:]
    if ctx.proxy_cpus is not None and "affinity" not in rec["extra"]:
        rec["problems"].append("CPU affinity not verified: the load tool ended within "
                               f"{procs.PROBE_DELAY} s")


def utilisation(cpu_s, wall_s, cores):
    """Share of its cores the proxy kept busy: CPU seconds / wall seconds / cores."""
    return cpu_s / wall_s / cores if wall_s > 0 and cores else 0.0


def probe_affinity(ctx, rec, client_pid, pids):
    """Reads the affinity of every thread of the proxy, the load tool and the backends into
    rec["extra"]["affinity"]; with --pin, a thread off its CPUs makes the record invalid."""
    seen = {"proxy": procs.affinity(pids()), "client": procs.affinity([client_pid]),
            "backends": procs.affinity([b.pid for b in ctx.backends])}
    want = {"proxy": ctx.proxy_cpus, "client": ctx.other_cpus, "backends": ctx.other_cpus}
    rec["extra"]["affinity"] = {}
    for role, tasks in seen.items():
        if not tasks:
            continue
        rec["extra"]["affinity"][role] = {
            "threads": len(tasks), "cpus": sorted({tuple(c) for c in tasks.values()})}
        if want[role] is None:
            continue
        off = [tid for tid, cpus in tasks.items() if set(cpus) != want[role]]
        rec["extra"]["affinity_off"] = rec["extra"].get("affinity_off", 0) + len(off)
        if off:
            rec["problems"].append(f"{role}: {len(off)} of {len(tasks)} threads not on CPUs "
                                   f"{sorted(want[role])} (thread {off[0]}: "
                                   f"{tasks[off[0]]})")


def affinity_summary(records):
    """{contender: {role: {"threads": most threads seen, "cpus": every CPU list seen}}} over
    the records' affinity readings, for results.json's config."""
    out = {}
    for r in records:
        for role, seen in r["extra"].get("affinity", {}).items():
            cur = out.setdefault(r["contender"], {}).setdefault(role, {"threads": 0, "cpus": []})
            cur["threads"] = max(cur["threads"], seen["threads"])
            for cpus in seen["cpus"]:
                if list(cpus) not in cur["cpus"]:
                    cur["cpus"].append(list(cpus))
    return out


def add_util_metric(rec, mid):
    """'<mid> util' = the proxy's utilisation during the run, when it was read."""
    if rec["extra"].get("proxy_util") is not None:
        rec["metrics"][f"{mid} util"] = rec["extra"]["proxy_util"]


def add_cpu_metrics(rec, mid, units):
    """Adds '<mid> cpu' = proxy CPU seconds per unit moved (`units` of them, e.g. GB) and
    '<mid> util'."""
    cpu = rec["extra"].get("proxy_cpu_s")
    if cpu is not None and units:
        rec["metrics"][f"{mid} cpu"] = cpu / units
    add_util_metric(rec, mid)


def fail_record(ctx, scenario, rnd, name, what, problem):
    rec = new_record(ctx, scenario, rnd, name, what)
    rec["problems"].append(problem)
    return rec


def report(ctx, rec):
    name, what = rec["contender"], rec["what"]
    text = ", ".join(f"{k} {fmt_num(v)}" for k, v in rec["metrics"].items())
    status = "ok" if rec["valid"] else "INVALID: " + "; ".join(rec["problems"])
    ctx.log(f"  round {rec['round'] + 1} {rec['scenario']:8} {what:5} {name:10} {text}  [{status}]")


def fmt_num(v):
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


# ---- per-scenario measurements ----

def measure_bulk(ctx, scenario, rnd, name, targets, pids):
    streams = 8 if scenario == "bulk-8" else 1
    recs = []
    for direction in ("down", "up"):
        rec = new_record(ctx, scenario, rnd, name, direction)
        args = ["--mode", "bulk", "--streams", str(streams), "--duration", str(ctx.duration),
                "--direction", direction]
        if direction == "up":
            args += ["--verify", "pattern"]
        kind = "source" if direction == "down" else "verify"
        run_load(ctx, rec, ctx.load(targets[kind], *args), ctx.duration + TOOL_SLACK, pids)
        check_tool(rec, {"established": streams, "streams_verified": streams})
        if isinstance(rec["tool"], dict):
            rec["metrics"][f"{scenario} {direction}"] = rec["tool"].get("gbit_per_s")
            if name != "direct":
                add_cpu_metrics(rec, f"{scenario} {direction}",
                                (rec["tool"].get("bytes") or 0) / 1e9)
        recs.append(rec)
        report(ctx, rec)
    if scenario == "bulk-1" and name != "direct" and "cpu" in ctx.scenarios:
        cpu_record(ctx, rnd, name, recs)


def cpu_record(ctx, rnd, name, bulk_recs):
    """CPU seconds per GB over the bulk-1 down and up transfers of one round."""
    rec = new_record(ctx, "cpu", rnd, name, "both")
    cpu = sum(r["extra"].get("proxy_cpu_s", 0) for r in bulk_recs)
    moved = sum((r["tool"] or {}).get("bytes", 0) for r in bulk_recs)
    rec["extra"] = {"proxy_cpu_s": round(cpu, 4), "bytes": moved,
                    "from": "bulk-1 down + up of the same round"}
    for r in bulk_recs:
        if not r["valid"]:
            rec["problems"].append(f"bulk-1 {r['what']} invalid")
    if moved <= 0:
        rec["problems"].append("no bytes moved")
    else:
        rec["metrics"]["cpu"] = cpu / (moved / 1e9)
    rec["valid"] = not rec["problems"]
    report(ctx, rec)


def cpu_per_op(rec, count_key):
    """Proxy CPU µs per completed operation: when the load client is the bottleneck, rates tie
    and this is what still tells the proxies apart."""
    count = (rec["tool"] or {}).get(count_key) if isinstance(rec["tool"], dict) else None
    cpu = rec["extra"].get("proxy_cpu_s")
    return cpu * 1e6 / count if cpu is not None and count else None


def add_op_metrics(rec, mid, count_key):
    """'<mid> cpu' = proxy CPU µs per operation, '<mid> util' = its utilisation."""
    rec["metrics"][f"{mid} cpu"] = cpu_per_op(rec, count_key)
    add_util_metric(rec, mid)


def measure_connrate(ctx, scenario, rnd, name, targets, pids):
    rec = new_record(ctx, scenario, rnd, name, "-")
    run_load(ctx, rec, ctx.load(targets["echo"], "--mode", "connrate", "--concurrency", "50",
                                "--duration", str(ctx.duration), threads=ctx.client_threads),
             ctx.duration + TOOL_SLACK, pids)
    check_tool(rec, {})
    if isinstance(rec["tool"], dict):
        if not rec["tool"].get("connections"):
            rec["problems"].append("no connection completed")
            rec["valid"] = False
        rec["metrics"]["connrate"] = rec["tool"].get("conn_per_s")
        if name != "direct":
            add_op_metrics(rec, "connrate", "connections")
    report(ctx, rec)


def measure_rr(ctx, scenario, rnd, name, targets, pids):
    rec = new_record(ctx, scenario, rnd, name, "-")
    run_load(ctx, rec, ctx.load(targets["echo"], "--mode", "rr", "--connections", "50",
                                "--duration", str(ctx.duration), threads=ctx.client_threads),
             ctx.duration + TOOL_SLACK, pids)
    check_tool(rec, {"established": 50})
    tool = rec["tool"]
    if isinstance(tool, dict):
        lat = tool.get("latency_us") or {}
        rec["metrics"].update({"rr req/s": tool.get("req_per_s"), "rr p50": lat.get("p50"),
                               "rr p99": lat.get("p99")})
        if name != "direct":
            add_op_metrics(rec, "rr", "requests")
    report(ctx, rec)


def kernel_snapshot(pids):
    cur = pids()
    snap = {"sockstat_tcp_mem_bytes": procs.sockstat_tcp_mem_bytes(),
            "slab_bytes": procs.slab_bytes(), "pids": cur,
            "rss_bytes": procs.rss_bytes(cur) if cur else None,
            "pipes": procs.pipes_held(cur) if cur else None,
            "socket_mem_bytes": None, "sockets": None}
    if cur:
        snap["socket_mem_bytes"], snap["sockets"] = procs.socket_mem(cur)
    return snap


def measure_idle(ctx, scenario, rnd, name, targets, pids):
    n = ctx.idle_connections
    rec = new_record(ctx, scenario, rnd, name, "-")
    argv = ctx.load(targets["echo"], "--mode", "idle", "--connections", str(n), "--hold", "0")
    rec["argv"] = argv
    time.sleep(IDLE_SETTLE)
    before = kernel_snapshot(pids)
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=procs.preexec(ctx.other_cpus))
    held, out, err = None, "", ""
    try:
        ready, early = read_ready_line(p, IDLE_READY_TIMEOUT)
        if ready is None:
            rec["problems"].append(f"no 'ready' line within {IDLE_READY_TIMEOUT} s")
        else:
            rec["extra"]["ready"] = ready
            probe_affinity(ctx, rec, p.pid, pids)
            time.sleep(IDLE_SETTLE)
            held = kernel_snapshot(pids)
        try:
            # communicate() closes stdin: the EOF ends the hold, the tool then re-verifies
            # every connection and prints its report.
            out, err = p.communicate(timeout=IDLE_READY_TIMEOUT)
            out = early + out
            rec["exit"] = p.returncode
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            rec["problems"].append("timed out after the hold")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    rec["tool"] = parse_json(out)
    if rec["exit"] != 0:
        rec["extra"]["stderr_tail"] = err[-1500:]
    rec["extra"]["before"], rec["extra"]["held"] = before, held
    check_tool(rec, {"established": n, "dropped": 0, "verified_after_hold": n})
    if held is not None and held["pids"]:
        if held["pids"] != before["pids"]:
            rec["problems"].append("the proxy's process set changed during the hold")
            rec["valid"] = False
        rec["metrics"]["idle user"] = (held["rss_bytes"] - before["rss_bytes"]) / n
        rec["extra"]["pipes_per_conn"] = (held["pipes"] - before["pipes"]) / n
    report(ctx, rec)


def read_ready_line(p, timeout):
    """Reads stdout until a 'ready N' line; returns (N or None on timeout/EOF, text read)."""
    deadline = time.monotonic() + timeout
    fd, buf = p.stdout.fileno(), b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        text = buf.decode(errors="replace")
        for line in text.splitlines(keepends=True):
            if line.startswith("ready ") and line.endswith("\n"):
                return int(line.split()[1]), text
    return None, buf.decode(errors="replace")


MEASURE = {"bulk-1": measure_bulk, "bulk-8": measure_bulk, "cpu": measure_bulk,
           "connrate": measure_connrate, "rr": measure_rr, "idle": measure_idle}


def na_record(ctx, scenario, rnd, name, reason):
    rec = new_record(ctx, scenario, rnd, name, "-")
    rec["na"] = reason
    rec["valid"] = True


def run_scenario(ctx, scenario):
    """Backends up, then rounds x contenders in the same alternating order."""
    # cpu is measured during the bulk-1 transfers; alone it runs them itself (as bulk-1).
    label = "bulk-1" if scenario == "cpu" else scenario
    ctx.log(f"{scenario}: backends {', '.join(BACKEND_KINDS[scenario])}; "
            f"{ctx.rounds} rounds of {' '.join(ctx.contenders)}")
    backends, addrs = start_backends(ctx, BACKEND_KINDS[scenario])
    ctx.backends = backends
    # idle restarts each proxy for every measurement so every round starts from a fresh
    # process (a warmed-up allocator would hide the per-connection cost in later rounds).
    fresh = scenario == "idle"
    live = {}
    try:
        for rnd in range(ctx.rounds):
            for name in ctx.contenders:
                why = NOT_APPLICABLE.get((scenario, name))
                if why:
                    na_record(ctx, scenario, rnd, name, why)
                    continue
                measure_one(ctx, label, rnd, name, addrs, live, fresh)
    finally:
        for c in live.values():
            c.stop()
        for p in backends:
            p.stop()


def measure_one(ctx, scenario, rnd, name, addrs, live, fresh):
    c = live.get(name)
    if c is not None and not c.alive():
        fail_record(ctx, scenario, rnd, name, "-",
                    f"{name} died before this measurement: {c.log_tail()}")
        c.stop()
        del live[name]
        c = None
    if c is None:
        c = contenders.make(name, ctx.bindir, ctx.tmpdir, ctx.threads, ctx.proxy_cpus)
        try:
            c.targets = c.start(addrs)
        except procs.ProcError as e:
            rec = fail_record(ctx, scenario, rnd, name, "-", str(e))
            report(ctx, rec)
            if scenario == "bulk-1" and name != "direct" and "cpu" in ctx.scenarios:
                fail_record(ctx, "cpu", rnd, name, "both", str(e))
            return
        live[name] = c
    ctx.proxy_cores = c.cores(ctx.usable) if name != "direct" else None
    try:
        MEASURE[scenario](ctx, scenario, rnd, name, c.targets, c.pids)
        if not c.alive():
            rec = ctx.records[-1]
            rec["problems"].append(f"{name} died during the measurement: {c.log_tail()}")
            rec["valid"] = False
            ctx.log(f"  {name} DIED: {c.log_tail()}")
    finally:
        if fresh or not c.alive():
            c.stop()
            live.pop(name, None)
