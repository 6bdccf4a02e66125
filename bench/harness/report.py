"""From raw records to medians, ratios, the Markdown table and the gnuplot chart."""

import os
import statistics
import subprocess

from . import contenders

PAGE = os.sysconf("SC_PAGE_SIZE")

# id, scenario, label, better ("higher"/"lower"), decimals, compare with the ceiling
METRICS = [
    ("bulk-1 down", "bulk-1", "bulk-1 down (source → client), Gbit/s", "higher", 1, True),
    ("bulk-1 up", "bulk-1", "bulk-1 up (client → verify), Gbit/s", "higher", 1, True),
    ("bulk-8 down", "bulk-8", "bulk-8 down, Gbit/s (8 streams total)", "higher", 1, True),
    ("bulk-8 up", "bulk-8", "bulk-8 up, Gbit/s (8 streams total)", "higher", 1, True),
    ("connrate", "connrate", "connrate (C=50, 64 B echo), conn/s", "higher", 0, False),
    ("connrate cpu", "connrate", "connrate: proxy CPU µs per connection", "lower", 1, False),
    ("rr req/s", "rr", "rr (50 conns, 64 B), req/s", "higher", 0, False),
    ("rr cpu", "rr", "rr: proxy CPU µs per request", "lower", 2, False),
    ("rr p50", "rr", "rr latency p50, µs", "lower", 0, False),
    ("rr p99", "rr", "rr latency p99, µs", "lower", 0, False),
    ("rr added p50", "rr", "rr added p50 over direct, µs", "lower", 0, False),
    ("rr added p99", "rr", "rr added p99 over direct, µs", "lower", 0, False),
    ("idle user", "idle", "idle: user memory, bytes/conn (RSS delta)", "lower", 0, False),
    ("idle kernel", "idle", "idle: kernel socket buffers + pipes, bytes/conn", "lower", 0,
     False),
    ("cpu", "cpu", "cpu: proxy CPU s per GB moved (bulk-1 down+up)", "lower", 3, False),
]
METRIC_INFO = {m[0]: m for m in METRICS}


def derive(records):
    """Adds the metrics that pair a proxy with direct in the same round."""
    by_key = {(r["scenario"], r["round"], r["contender"]): r for r in records
              if r["what"] == "-" and not r.get("na")}
    for r in records:
        if r["scenario"] not in ("rr", "idle") or r.get("na") or r["contender"] == "direct":
            continue
        d = by_key.get((r["scenario"], r["round"], "direct"))
        if r["scenario"] == "rr":
            _derive_rr(r, d)
        else:
            _derive_idle(r, d)


def _derive_rr(r, d):
    if d is None or not d["valid"] or not r["valid"]:
        return
    for q in ("p50", "p99"):
        if r["metrics"].get(f"rr {q}") is not None and d["metrics"].get(f"rr {q}") is not None:
            r["metrics"][f"rr added {q}"] = r["metrics"][f"rr {q}"] - d["metrics"][f"rr {q}"]


def _delta(rec, key):
    b, h = rec["extra"].get("before"), rec["extra"].get("held")
    if not b or not h:
        return None
    return h[key] - b[key]


def _derive_idle(r, d):
    """Kernel memory of the proxy's own sockets and pipes, per connection.

    The system-wide deltas -- /proc/net/sockstat TCP mem and /proc/meminfo Slab, minus
    direct's in the same round -- are kept in extra for reference only: any other traffic
    on a shared machine swamps them.
    """
    if not r["valid"]:
        return
    n = (r["tool"] or {}).get("established") or 0
    if not n:
        return
    sock, pipes = _delta(r, "socket_mem_bytes"), _delta(r, "pipes") or 0
    if sock is not None:
        # An empty pipe keeps at most one page (its cached tmp_page): count one per pipe.
        r["metrics"]["idle kernel"] = (sock + pipes * PAGE) / n
    if d is None or not d["valid"]:
        return
    for key, out in (("sockstat_tcp_mem_bytes", "sockstat_per_conn"),
                     ("slab_bytes", "slab_per_conn")):
        a, b = _delta(r, key), _delta(d, key)
        if a is not None and b is not None:
            r["extra"][out] = round((a - b) / n)


def _spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "values": values}


def summarize(records, names, rounds):
    """{metric: {"cells": {contender: cell}, "ratios": {label: spread or None}}}."""
    summary = {}
    for mid, scenario, *_ in METRICS:
        cells, seen = {}, False
        for name in names:
            cell = _cell(records, mid, scenario, name)
            seen = seen or cell["state"] != "absent"
            cells[name] = cell
        if not seen or all(c["state"] in ("absent", "na", "missing") for c in cells.values()):
            continue
        summary[mid] = {"cells": cells, "ratios": _ratios(records, mid, scenario, names, rounds)}
    return summary


def _cell(records, mid, scenario, name):
    recs = [r for r in records if r["scenario"] == scenario and r["contender"] == name
            and _direction_matches(r, mid)]
    if not recs:
        if name == "direct" and mid == "cpu" and any(r["scenario"] == "cpu" for r in records):
            return {"state": "na", "reason": "no proxy"}
        return {"state": "absent"}
    na = [r["na"] for r in recs if r.get("na")]
    if na:
        return {"state": "na", "reason": na[0]}
    bad = [r for r in recs if not r["valid"]]
    if name == "direct" and not bad and (mid.startswith("idle") or "added" in mid
                                         or mid.endswith(" cpu")):
        return {"state": "na", "reason": "no proxy (its deltas are the baseline)"}
    values = [r["metrics"][mid] for r in recs if r["valid"] and
              r["metrics"].get(mid) is not None]
    cell = {"state": "invalid" if bad else "ok", "failed": len(bad), "runs": len(recs),
            "problems": sorted({p for r in bad for p in r["problems"]})}
    if values:
        cell.update(_spread(values))
    elif not bad:
        cell["state"] = "missing"
    return cell


def _direction_matches(r, mid):
    parts = mid.split()
    return (len(parts) < 2 or parts[1] not in ("down", "up") or r["what"] in (parts[1], "-"))


def _ratios(records, mid, scenario, names, rounds):
    ratios = {}
    compare = [("sluice/haproxy", "haproxy"), ("sluice/nginx", "nginx")]
    if METRIC_INFO[mid][5]:
        compare.append(("sluice/ceiling", "splice-fwd"))
    for label, other in compare:
        if "sluice" not in names or other not in names:
            continue
        per_round = []
        for rnd in range(rounds):
            a = _round_value(records, mid, scenario, rnd, "sluice")
            b = _round_value(records, mid, scenario, rnd, other)
            if a is not None and b is not None and b > 0 and a >= 0:
                per_round.append(a / b)
        ratios[label] = _spread(per_round) if per_round else None
    return ratios


def _round_value(records, mid, scenario, rnd, name):
    for r in records:
        if (r["scenario"] == scenario and r["round"] == rnd and r["contender"] == name
                and r["valid"] and _direction_matches(r, mid)
                and r["metrics"].get(mid) is not None):
            return r["metrics"][mid]
    return None


def fmt(v, decimals):
    if decimals == 0:
        return f"{v:,.0f}"
    return f"{v:,.{decimals}f}"


def fmt_cell(cell, decimals):
    state = cell["state"]
    if state == "absent":
        return "—"
    if state == "na":
        return "n/a"
    if state == "missing":
        return "?"
    text = ""
    if "median" in cell:
        text = (f"{fmt(cell['median'], decimals)} ({fmt(cell['min'], decimals)}–"
                f"{fmt(cell['max'], decimals)})")
    if state == "invalid":
        return f"**INVALID** {cell['failed']}/{cell['runs']} failed" + (
            f"; valid: {text}" if text else "")
    return text


def fmt_ratio(s):
    if not s:
        return "—"
    return f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})"


def table(summary, names):
    cols = [n if n != "splice-fwd" else "splice-fwd (ceiling)" for n in names]
    ratio_cols = [c for c in ("sluice/haproxy", "sluice/nginx", "sluice/ceiling")
                  if any(c in s["ratios"] for s in summary.values())]
    head = ["metric", "better"] + cols + ratio_cols
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mid, s in summary.items():
        _, _, label, better, dec, _ = METRIC_INFO[mid]
        row = [label, better] + [fmt_cell(s["cells"][n], dec) for n in names]
        row += [fmt_ratio(s["ratios"].get(c)) if c in s["ratios"] else "—" for c in ratio_cols]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def notes(summary, cfg):
    """Plain-language notes printed under the table."""
    ran = set(cfg["scenarios"])
    out = [
        "Cells: median (min–max) over the rounds. Ratios: median (min–max) of the per-round "
        "ratios, each sluice figure divided by the other contender's figure of the same "
        "round (for 'lower is better' rows a ratio below 1 favours sluice).",
        f"Threads: sluice `workers = {cfg['threads']}`, HAProxy `nbthread {cfg['threads']}`, "
        f"nginx `worker_processes {cfg['threads']}`; splice-fwd is thread-per-direction by "
        "design (2 threads per connection). Load client and backends: 1 thread each, on the "
        "same 2 cores.",
        "Configs (written by bench/run into a temp dir): sluice defaults (splice auto, 1 MiB "
        "pipes) + `log_level = warn`; HAProxy `mode tcp`, `option splice-auto`, `maxconn "
        f"{contenders.HAPROXY_MAXCONN}`; nginx `stream` `proxy_pass` with `proxy_half_close on` "
        "(off by default: nginx then closes both directions at the client's FIN and the "
        "upload check cannot get its reply); splice-fwd with its default 1 MiB pipes.",
        ("bulk-1", "bulk-8"),
        "bulk: one `sluice-load --mode bulk` run per direction; down = `source` backend → "
        "client, every byte checked against the pattern; up = client → `verify` backend "
        "(`--verify pattern`), byte count and first bad offset confirmed by the backend. "
        "Figures are per direction, not combined.",
        ("connrate",), "connrate: connect, 64 B echo, close, 50 in flight. Loopback with "
        f"net.ipv4.tcp_tw_reuse={cfg.get('tcp_tw_reuse', '?')} hides ephemeral-port "
        "exhaustion: a real client would run out of ports sooner.",
        ("rr",), "rr: 50 persistent connections, one 64 B request in flight each, echoed "
        "and checked. Added latency = proxy p50/p99 minus direct's p50/p99 in the same round.",
        ("idle",), f"idle: {cfg['idle_connections']} connections held (echo backend, each "
        "checked with an 8 B round trip before and after the hold); each proxy is started "
        "fresh for every idle measurement. user = (sum of VmRSS over the proxy's processes "
        "while held − before) / connections. kernel = (memory charged to the proxy's own TCP "
        "sockets, summed from `ss -tmp` per socket: receive queue + send queue + "
        "forward-allocated + option memory — the counters /proc/net/sockstat `mem` adds up "
        "system-wide — while held − before, + one page per pipe the proxy holds) / "
        "connections. The system-wide /proc/net/sockstat and Slab deltas (minus direct's) are "
        "in results.json only: other traffic on a shared machine swamps them, and sockstat "
        "moves in per-CPU batches of net.core.mem_pcpu_rsv = "
        f"{cfg.get('mem_pcpu_rsv') or '?'} pages. Not counted anywhere: the socket objects "
        "themselves (slab: about 2 × 4 KB per proxied connection, the same for every proxy). "
        "splice-fwd is n/a (2 threads and 6 descriptors per session).",
        ("cpu",), "cpu: utime+stime from /proc/PID/stat summed over all the proxy's processes and "
        "threads, read before and after the bulk-1 down and up runs of each round, divided "
        "by the verified payload bytes of those runs (GB = 10^9 bytes).",
    ]
    # Scenario-specific notes are preceded by the scenarios they belong to.
    kept, skip = [], False
    for item in out:
        if isinstance(item, tuple):
            skip = not ran.intersection(item)
        elif not skip:
            kept.append(item)
    out = kept
    if cfg.get("quick"):
        out.append(f"--quick: {cfg['rounds']} rounds of {cfg['duration']} s and "
                   f"{cfg['idle_connections']} idle connections instead of the full run's "
                   "3 rounds, longer runs and 4000 idle connections; indicative only.")
    bad = [(mid, n, c) for mid, s in summary.items() for n, c in s["cells"].items()
           if c["state"] == "invalid"]
    for mid, n, c in bad:
        out.append(f"INVALID {mid} / {n}: " + "; ".join(c["problems"])[:400])
    return out


# ---- chart ----

CHART_ROWS = {
    "higher": ["bulk-1 down", "bulk-1 up", "bulk-8 down", "bulk-8 up", "connrate", "rr req/s"],
    "lower": ["connrate cpu", "rr cpu", "rr p50", "rr p99", "rr added p50", "rr added p99",
              "idle user", "idle kernel", "cpu"],
}
SHORT = {"bulk-1 down": "bulk-1 down", "bulk-1 up": "bulk-1 up", "bulk-8 down": "bulk-8 down",
         "bulk-8 up": "bulk-8 up", "connrate": "conn/s", "rr req/s": "rr req/s",
         "rr p50": "rr p50", "rr p99": "rr p99", "rr added p50": "added p50",
         "rr added p99": "added p99", "idle user": "idle user B", "idle kernel": "idle kernel B",
         "cpu": "CPU s/GB", "connrate cpu": "CPU us/conn", "rr cpu": "CPU us/req"}
COLORS = {"direct": "#9e9e9e", "sluice": "#1f77b4", "haproxy": "#d62728", "nginx": "#2ca02c",
          "splice-fwd": "#ff7f0e"}


def chart(summary, names, outdir, title):
    """Writes chart.png (two panels, normalised to HAProxy = 1); returns an error or None."""
    base = next((b for b in ("haproxy", "nginx", "sluice") if b in names), None)
    if base is None:
        return "no proxy to normalise to"
    panels = []
    for better in ("higher", "lower"):
        rows = [m for m in CHART_ROWS[better] if m in summary]
        if rows:
            path = os.path.join(outdir, f"chart-{better}.dat")
            cap = _write_chart_data(path, summary, rows, names, base)
            panels.append((better, path, rows, cap))
    if not panels:
        return "nothing to plot"
    script = _gnuplot_script(panels, names, base, os.path.join(outdir, "chart.png"), title)
    gp = os.path.join(outdir, "chart.gp")
    with open(gp, "w") as f:
        f.write(script)
    try:
        r = subprocess.run(["gnuplot", gp], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"gnuplot failed: {e}"
    if r.returncode != 0:
        return "gnuplot failed: " + r.stderr[-800:]
    return None


CHART_CAP = 4.0  # bars taller than this many times the reference are clipped (value labelled)


def _slot(i, j, n):
    return i * (n + 1.5) + j


def _write_chart_data(path, summary, rows, names, base):
    """One data block per contender: x y ylow yhigh label; returns the y-axis top."""
    blocks, top = [], 0.0
    for j, n in enumerate(names):
        lines = []
        for i, mid in enumerate(rows):
            cells = summary[mid]["cells"]
            ref = cells.get(base, {})
            ref_v = ref.get("median") if ref.get("state") == "ok" else None
            c = cells[n]
            x = _slot(i, j, len(names))
            if c["state"] == "na":
                lines.append(f'{x} 0 0 0 "n/a"')
            elif c["state"] == "invalid":
                lines.append(f'{x} 0 0 0 "INVALID"')
            elif ref_v and ref_v > 0 and "median" in c:
                med, lo, hi = (c[k] / ref_v for k in ("median", "min", "max"))
                clip = lambda v: max(0.0, min(v, CHART_CAP))  # noqa: E731
                top = max(top, clip(hi))
                label = f"{med:.2f}" + ("↑" if med > CHART_CAP else "")
                lines.append(f'{x} {clip(med):.4f} {clip(lo):.4f} {clip(hi):.4f} "{label}"')
            elif "median" in c:  # reference is 0: nothing to normalise to, show the value
                lines.append(f'{x} 0 0 0 "{c["median"]:.0f}"')
        blocks.append("\n".join(lines) if lines else f'{_slot(0, j, len(names))} 0 0 0 ""')
    with open(path, "w") as f:
        f.write("# x y ylow yhigh label; one block per contender: " + " ".join(names) + "\n")
        f.write("\n\n\n".join(blocks) + "\n")
    return min(CHART_CAP, top) * 1.18 + 0.1


def _gnuplot_script(panels, names, base, png, title):
    n = len(names)
    lines = [
        f'set terminal pngcairo size 1400,{460 * len(panels) + 60} font "DejaVu Sans,11"',
        f"set output '{png}'",
        "set style fill solid 0.85 border rgb '#333333'",
        f"set boxwidth 0.9",
        "set grid ytics lc rgb '#dddddd'",
        "set key outside right top vertical",
        "set xtics nomirror scale 0",
        f"set multiplot layout {len(panels)},1 title \"{title}\" font \",13\"",
    ]
    for better, path, rows, top in panels:
        tics = ", ".join(f'"{SHORT[m]}" {_slot(i, (n - 1) / 2, n)}' for i, m in enumerate(rows))
        what = ("higher is better (throughput, rates)" if better == "higher" else
                "lower is better (latency, memory, CPU)")
        lines += [f"set xtics ({tics})",
                  f"set xrange [-1:{_slot(len(rows) - 1, n, n)}]",
                  f"set yrange [0:{top:.2f}]",
                  f"set ylabel 'relative to {base} = 1.0'",
                  f"set title '{what}; labels = median relative to {base}'"]
        plots = []
        for j, name in enumerate(names):
            plots.append(f"'{path}' index {j} using 1:2 with boxes lc rgb '{COLORS[name]}' "
                         f"title '{name}'")
            plots.append(f"'{path}' index {j} using 1:3:(0):($4-$3) with vectors nohead "
                         "lw 1.5 lc rgb '#222222' notitle")
            plots.append(f"'{path}' index {j} using 1:($4 > $2 ? $4 : $2):5 with labels "
                         "rotate by 90 left offset 0,0.4 font ',9' notitle")
        plots.append("1 with lines dt 2 lc rgb '#555555' notitle")
        lines.append("plot " + ", \\\n     ".join(plots))
    lines.append("unset multiplot")
    return "\n".join(lines) + "\n"
