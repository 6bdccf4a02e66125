#!/usr/bin/env python3
"""Tests for bench/run's pinning, proxy CPU utilisation and client-bound flags.

No proxy runs here: the affinity tests pin `sleep` processes and a short Python child the
way bench/run pins the proxy, the load client and the backends, then read them back; the
report tests feed hand-made records to bench/harness/report.py. Standard library only; run
with `python3 tests/bench/test_harness.py`.
"""

import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(ROOT, "bench"))

from harness import procs, report, scenarios  # noqa: E402

CPUS = sorted(os.sched_getaffinity(0))
TWO_CPUS = len(CPUS) >= 2


class SplitCpus(unittest.TestCase):
    def test_one_cpu_is_refused_with_the_reason(self):
        with self.assertRaisesRegex(ValueError, "needs 2 CPUs or more.*may use 1 \\(CPU 3\\)"):
            procs.split_cpus({3})

    def test_default_proxy_cpu_is_the_last(self):
        self.assertEqual(procs.split_cpus({0, 1, 2, 3}), ({3}, {0, 1, 2}))

    def test_chosen_proxy_cpu(self):
        self.assertEqual(procs.split_cpus({0, 1}, 0), ({0}, {1}))

    def test_proxy_cpu_outside_the_mask_is_refused(self):
        with self.assertRaisesRegex(ValueError, "--proxy-cpu 7: not one of.*\\(0,1\\)"):
            procs.split_cpus({0, 1}, 7)


class RunRefusesPin(unittest.TestCase):
    def run_bench(self, *args, cpus=None):
        pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        return subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run"), *args,
                               "--no-build", "--no-deps", "--out", tempfile.gettempdir()],
                              capture_output=True, text=True, timeout=60, preexec_fn=pre)

    def test_pin_on_one_cpu_exits_2_before_measuring(self):
        r = self.run_bench("--pin", cpus={CPUS[0]})
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--pin needs 2 CPUs or more", r.stderr)
        self.assertEqual(r.stdout, "")  # nothing started, nothing measured

    def test_proxy_cpu_needs_pin(self):
        r = self.run_bench("--proxy-cpu", str(CPUS[0]))
        self.assertEqual(r.returncode, 2)
        self.assertIn("--proxy-cpu needs --pin", r.stderr)


class FakeCtx:
    """The parts of scenarios.Context that run_load and probe_affinity use."""

    def __init__(self, proxy_cpus, other_cpus, backends=()):
        self.proxy_cpus, self.other_cpus = proxy_cpus, other_cpus
        self.proxy_cores, self.backends = 1, list(backends)


def new_rec(contender="sluice"):
    return {"scenario": "rr", "round": 0, "contender": contender, "what": "-", "argv": None,
            "exit": None, "tool": None, "valid": False, "problems": [], "metrics": {},
            "extra": {}}


# A stand-in for sluice-load: alive past PROBE_DELAY, then prints a JSON report.
TOOL = [sys.executable, "-c", "import time; time.sleep(0.7); print('{\"tool\": \"fake\"}')"]


@unittest.skipUnless(TWO_CPUS, "needs 2 CPUs")
class Affinity(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.proxy_cpu, self.other = {CPUS[-1]}, set(CPUS[:-1])
        self.started = []

    def tearDown(self):
        for p in self.started:
            p.stop()
        self.tmp.cleanup()

    def sleeper(self, name, cpus):
        p = procs.Proc(name, ["sleep", "30"], self.tmp.name, cpus=cpus)
        self.started.append(p)
        return p

    def test_pinned_children_read_back_on_their_cpus(self):
        proxy = self.sleeper("proxy", self.proxy_cpu)
        backend = self.sleeper("backend", self.other)
        ctx = FakeCtx(self.proxy_cpu, self.other, [backend])
        rec = new_rec()
        scenarios.run_load(ctx, rec, TOOL, 10, proxy.pids)
        self.assertEqual(rec["exit"], 0)
        self.assertEqual(rec["tool"], {"tool": "fake"})
        self.assertEqual(rec["problems"], [])
        seen = rec["extra"]["affinity"]
        self.assertEqual(seen["proxy"]["cpus"], [tuple(sorted(self.proxy_cpu))])
        self.assertEqual(seen["client"]["cpus"], [tuple(sorted(self.other))])
        self.assertEqual(seen["backends"]["cpus"], [tuple(sorted(self.other))])
        self.assertEqual(rec["extra"]["affinity_off"], 0)
        # sleep uses no CPU: far below the client-bound line, over about 0.7 s of wall time
        self.assertGreater(rec["extra"]["wall_s"], 0.6)
        self.assertLess(rec["extra"]["proxy_util"], report.CLIENT_BOUND)

    def test_a_thread_off_its_cpus_makes_the_run_invalid(self):
        stray = self.sleeper("proxy", self.other)  # should have been on the proxy CPU
        ctx = FakeCtx(self.proxy_cpu, self.other)
        rec = new_rec()
        scenarios.run_load(ctx, rec, TOOL, 10, stray.pids)
        scenarios.check_tool(rec, {})
        self.assertFalse(rec["valid"])
        self.assertEqual(rec["extra"]["affinity_off"], 1)
        self.assertRegex(rec["problems"][0], "proxy: 1 of 1 threads not on CPUs")

    def test_a_tool_gone_before_the_probe_is_not_verified(self):
        ctx = FakeCtx(self.proxy_cpu, self.other)
        rec = new_rec("direct")
        scenarios.run_load(ctx, rec, [sys.executable, "-c", "print('{}')"], 10, lambda: [])
        self.assertIn("CPU affinity not verified", " ".join(rec["problems"]))

    def test_unpinned_runs_record_but_do_not_judge(self):
        proxy = self.sleeper("proxy", self.proxy_cpu)
        rec = new_rec()
        scenarios.run_load(FakeCtx(None, None), rec, TOOL, 10, proxy.pids)
        self.assertEqual(rec["problems"], [])
        self.assertEqual(rec["extra"]["affinity"]["proxy"]["cpus"],
                         [tuple(sorted(self.proxy_cpu))])


class Utilisation(unittest.TestCase):
    def test_cpu_over_wall_over_cores(self):
        self.assertAlmostEqual(scenarios.utilisation(1.8, 2.0, 1), 0.9)
        self.assertAlmostEqual(scenarios.utilisation(1.8, 2.0, 2), 0.45)
        self.assertEqual(scenarios.utilisation(1.0, 0.0, 1), 0.0)

    def test_bulk_seconds_per_gb(self):
        rec = new_rec()
        rec["extra"].update(proxy_cpu_s=0.5, proxy_util=0.4)
        scenarios.add_cpu_metrics(rec, "bulk-1 down", 2.0)  # 2 GB moved
        self.assertEqual(rec["metrics"], {"bulk-1 down cpu": 0.25, "bulk-1 down util": 0.4})


def record(scenario, rnd, name, metrics, what="-"):
    rec = new_rec(name)
    rec.update(scenario=scenario, round=rnd, what=what, valid=True, metrics=metrics)
    return rec


class ClientBound(unittest.TestCase):
    NAMES = ["direct", "sluice", "haproxy"]

    def records(self, sluice_util, haproxy_util):
        recs = []
        for rnd in range(2):
            recs += [record("connrate", rnd, "direct", {"connrate": 100.0}),
                     record("connrate", rnd, "sluice", {"connrate": 90.0, "connrate cpu": 50.0,
                                                        "connrate util": sluice_util[rnd]}),
                     record("connrate", rnd, "haproxy", {"connrate": 80.0, "connrate cpu": 60.0,
                                                         "connrate util": haproxy_util[rnd]})]
        return recs

    def test_below_90_percent_is_flagged_with_its_utilisation(self):
        summary = report.summarize(self.records([0.95, 0.97], [0.5, 0.6]), self.NAMES, 2)
        cells = summary["connrate"]["cells"]
        self.assertFalse(cells["sluice"]["client_bound"])
        self.assertTrue(cells["haproxy"]["client_bound"])
        self.assertAlmostEqual(cells["haproxy"]["proxy_util"]["median"], 0.55)
        self.assertNotIn("client_bound", cells["direct"])  # no proxy, no utilisation
        self.assertEqual(summary["connrate util"]["cells"]["direct"]["state"], "na")
        md = report.table(summary, self.NAMES)
        row = next(line for line in md.splitlines() if line.startswith("| connrate (C=50"))
        self.assertIn("80 (80–80) †", row)
        self.assertNotIn("90 (90–90) †", row)
        self.assertIn("connrate haproxy 55.0 %", md.split("†")[-1])

    def test_utilisation_row_in_percent_without_ratios(self):
        summary = report.summarize(self.records([0.95, 0.97], [0.5, 0.6]), self.NAMES, 2)
        self.assertEqual(summary["connrate util"]["ratios"], {})
        md = report.table(summary, self.NAMES)
        row = next(line for line in md.splitlines() if "connrate: proxy CPU use" in line)
        self.assertIn("| 96.0 (95.0–97.0) | 55.0 (50.0–60.0) | — |", row)
        cpu = next(line for line in md.splitlines() if "proxy CPU µs per connection" in line)
        self.assertIn("0.83 (0.83–0.83)", cpu)  # sluice/haproxy of the CPU per connection

    def test_judged_as_shown_to_a_tenth_of_a_percent(self):
        summary = report.summarize(self.records([0.8996, 0.8996], [0.8994, 0.8994]), self.NAMES,
                                   2)
        self.assertFalse(summary["connrate"]["cells"]["sluice"]["client_bound"])  # 90.0 %
        self.assertTrue(summary["connrate"]["cells"]["haproxy"]["client_bound"])  # 89.9 %
        self.assertIn("connrate haproxy 89.9 %", report.table(summary, self.NAMES))

    def test_exactly_90_percent_is_not_client_bound(self):
        summary = report.summarize(self.records([0.9, 0.9], [0.9, 0.9]), self.NAMES, 2)
        self.assertFalse(summary["connrate"]["cells"]["haproxy"]["client_bound"])
        self.assertNotIn("†", report.table(summary, self.NAMES))

    def test_bulk_direction_rows_keep_their_own_utilisation(self):
        recs = [record("bulk-1", 0, "sluice", {"bulk-1 down": 10.0, "bulk-1 down cpu": 0.3,
                                               "bulk-1 down util": 0.95}, "down"),
                record("bulk-1", 0, "sluice", {"bulk-1 up": 9.0, "bulk-1 up cpu": 0.4,
                                               "bulk-1 up util": 0.4}, "up")]
        summary = report.summarize(recs, ["sluice"], 1)
        self.assertFalse(summary["bulk-1 down"]["cells"]["sluice"]["client_bound"])
        self.assertTrue(summary["bulk-1 up"]["cells"]["sluice"]["client_bound"])
        self.assertEqual(summary["bulk-1 up cpu"]["cells"]["sluice"]["median"], 0.4)


if __name__ == "__main__":
    unittest.main(verbosity=2)
