#!/usr/bin/env python3
"""Tests for the Consul agent emulator, run against real emulator processes on 127.0.0.1.

Every behaviour sluice's integration tests lean on is checked here: response shapes and
headers, the passing filter, blocking queries, registration, real HTTP/TCP/TTL checks,
the reaper, maintenance, ACLs, every fault the control API can inject, restarts.
Standard library only; run with `python3 tests/consul/test_emulator.py`.
"""

import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "emulator")
START_TIMEOUT_S = 10
NODE = "node-a"
PERMISSION_DENIED = "Permission denied"


# ---- harness ---------------------------------------------------------------------

class Reply:
    """A complete HTTP response."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8")

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        return self.headers.get(name)


class EmulatorProcess:
    """One emulator process on a free port; stderr goes to a file for post-mortems."""

    def __init__(self, *args):
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, EMULATOR, "--port", "0", "--node", NODE] + list(args),
            stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else ""
        match = re.fullmatch(r"listening 127\.0\.0\.1:(\d+)\n", line)
        if not match:
            self.proc.kill()
            raise RuntimeError("emulator did not start: %r %s" % (line, self.stderr_text()))
        self.port = int(match.group(1))

    def stderr_text(self):
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def connection(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=10):
        conn = self.connection(timeout)
        try:
            if isinstance(body, (dict, list, bool)):
                body = json.dumps(body)
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def put(self, path, body=None, **kwargs):
        return self.request("PUT", path, body, **kwargs)

    def control(self, method, path, body=None):
        reply = self.request(method, "/_emu" + path, body)
        if reply.status != 200:
            raise AssertionError("control %s %s: %d %s" % (method, path, reply.status,
                                                           reply.text))
        return reply.json()

    def stop(self):
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        return self.proc.returncode

    def close(self):
        self.stderr.close()


def wait_until(probe, timeout=5.0, what="condition"):
    """Poll probe() until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


class Background:
    """Run a request on a thread; result() returns the Reply or the exception."""

    def __init__(self, func):
        self.value = None
        self.started = time.monotonic()
        self.elapsed = None
        self.thread = threading.Thread(target=self._run, args=(func,), daemon=True)
        self.thread.start()

    def _run(self, func):
        try:
            self.value = func()
        except Exception as err:  # noqa: BLE001 - the test inspects it
            self.value = err
        self.elapsed = time.monotonic() - self.started

    def result(self, timeout=10):
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError("background request still running")
        return self.value


class TargetServer:
    """A local HTTP server for the emulator's HTTP checks; its status code is settable."""

    def __init__(self):
        target = self
        self.status = 200
        self.seen = []            # (method, headers) of every probe
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with target.lock:
                    target.seen.append((self.command, dict(self.headers.items())))
                    status = target.status
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_PUT = do_POST = do_HEAD = _answer

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d/health" % self.server.server_address[1]

    def hits(self):
        with self.lock:
            return len(self.seen)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def free_port():
    """A port nothing listens on (bound then released)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


class EmulatorTestCase(unittest.TestCase):
    """Starts one emulator per class and resets it before every test."""

    ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.emu = EmulatorProcess(*cls.ARGS)

    @classmethod
    def tearDownClass(cls):
        code = cls.emu.stop()
        errors = cls.emu.stderr_text()
        cls.emu.close()
        if code != 0 or "Traceback" in errors:
            raise AssertionError("emulator exit %s, stderr:\n%s" % (code, errors))

    def setUp(self):
        self.emu.control("POST", "/reset")

    # helpers

    def register(self, body, query="", headers=None, expect=200):
        reply = self.emu.put("/v1/agent/service/register" + query, body, headers=headers)
        self.assertEqual(reply.status, expect, reply.text)
        return reply

    def catalog_register(self, node, address="10.0.0.1", service=None, checks=None, **extra):
        body = {"Node": node, "Address": address}
        if service is not None:
            body["Service"] = service
        if checks is not None:
            body["Checks"] = checks
        body.update(extra)
        reply = self.emu.put("/v1/catalog/register", body)
        self.assertEqual(reply.status, 200, reply.text)
        self.assertEqual(reply.json(), True)

    def health(self, name, query="", **kwargs):
        reply = self.emu.get("/v1/health/service/%s%s" % (name, query), **kwargs)
        self.assertEqual(reply.status, 200, reply.text)
        return reply

    def index(self, name):
        return int(self.health(name).header("X-Consul-Index"))

    def check_status(self, service, check_id):
        for entry in self.health(service).json():
            for check in entry["Checks"]:
                if check["CheckID"] == check_id:
                    return check["Status"]
        return None

    def wait_status(self, service, check_id, status, timeout=5.0):
        wait_until(lambda: self.check_status(service, check_id) == status, timeout,
                   "%s to become %s" % (check_id, status))

    def nodes_of(self, reply):
        return sorted(entry["Node"]["Node"] for entry in reply.json())


# ---- health/service ----------------------------------------------------------------

class HealthServiceTest(EmulatorTestCase):
    ARGS = ("--extra-datacenter", "dc2")

    def test_unknown_service_is_empty_list_with_read_headers(self):
        reply = self.health("nope")
        self.assertEqual(reply.json(), [])
        self.assertGreaterEqual(int(reply.header("X-Consul-Index")), 1)
        self.assertEqual(reply.header("X-Consul-KnownLeader"), "true")
        self.assertEqual(reply.header("X-Consul-LastContact"), "0")
        self.assertEqual(reply.header("X-Consul-Effective-Consistency"), "leader")
        self.assertEqual(reply.header("Content-Type"), "application/json")
        # Consul sends the default policy on every response, "allow" with ACLs off.
        self.assertEqual(reply.header("X-Consul-Default-ACL-Policy"), "allow")

    def test_index_is_never_zero(self):
        for name in ("a", "b"):
            self.assertGreaterEqual(self.index(name), 1)
        self.assertEqual(self.emu.control("GET", "/health")["index"], 1)

    def test_entry_shape_includes_node_check(self):
        self.register({"Name": "web", "ID": "web-1", "Port": 8080, "Check": {"TTL": "30s"}})
        entries = self.health("web").json()
        self.assertEqual(len(entries), 1)
        node, svc, checks = entries[0]["Node"], entries[0]["Service"], entries[0]["Checks"]
        for key in ("ID", "Node", "Address", "Datacenter", "TaggedAddresses", "Meta",
                    "CreateIndex", "ModifyIndex"):
            self.assertIn(key, node)
        self.assertEqual((node["Node"], node["Address"], node["Datacenter"]),
                         (NODE, "127.0.0.1", "dc1"))
        self.assertEqual(svc["ID"], "web-1")
        self.assertEqual(svc["Service"], "web")
        self.assertEqual(svc["Tags"], [])
        self.assertEqual(svc["Address"], "")
        self.assertEqual(svc["Port"], 8080)
        self.assertEqual(svc["Weights"], {"Passing": 1, "Warning": 1})
        for key in ("Meta", "EnableTagOverride", "CreateIndex", "ModifyIndex"):
            self.assertIn(key, svc)
        by_id = {c["CheckID"]: c for c in checks}
        self.assertEqual(set(by_id), {"serfHealth", "service:web-1"})
        self.assertEqual(by_id["serfHealth"]["ServiceID"], "")
        self.assertEqual(by_id["serfHealth"]["Status"], "passing")
        self.assertEqual(by_id["service:web-1"]["ServiceID"], "web-1")
        self.assertEqual(by_id["service:web-1"]["ServiceName"], "web")
        for check in checks:
            for key in ("Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID",
                        "ServiceName", "ServiceTags", "Type", "CreateIndex", "ModifyIndex"):
                self.assertIn(key, check)

    def test_service_address_empty_or_set(self):
        self.register({"Name": "svc", "ID": "no-addr", "Port": 1})
        self.register({"Name": "svc", "ID": "with-addr", "Address": "10.1.2.3", "Port": 2})
        services = {e["Service"]["ID"]: e["Service"] for e in self.health("svc").json()}
        self.assertEqual(services["no-addr"]["Address"], "")
        self.assertNotIn("TaggedAddresses", services["no-addr"])
        self.assertEqual(services["with-addr"]["Address"], "10.1.2.3")
        self.assertEqual(services["with-addr"]["TaggedAddresses"]["lan_ipv4"],
                         {"Address": "10.1.2.3", "Port": 2})

    def test_weights_meta_and_tags_are_reported(self):
        self.register({"Name": "w", "Tags": ["x"], "Meta": {"version": "2"},
                       "Weights": {"Passing": 10, "Warning": 3}})
        svc = self.health("w").json()[0]["Service"]
        self.assertEqual(svc["Weights"], {"Passing": 10, "Warning": 3})
        self.assertEqual(svc["Meta"], {"version": "2"})
        self.assertEqual(svc["Tags"], ["x"])

    def _three_health_states(self):
        self.catalog_register("n-pass", "10.0.0.1", {"Service": "db", "Port": 1},
                              [{"CheckID": "c", "ServiceID": "db", "Status": "passing"}])
        self.catalog_register("n-warn", "10.0.0.2", {"Service": "db", "Port": 1},
                              [{"CheckID": "c", "ServiceID": "db", "Status": "warning"}])
        self.catalog_register("n-nodecrit", "10.0.0.3", {"Service": "db", "Port": 1},
                              [{"CheckID": "c", "ServiceID": "db", "Status": "passing"},
                               {"CheckID": "node-health", "Status": "critical"}])

    def test_passing_filter_drops_warning_and_node_check_failures(self):
        self._three_health_states()
        self.assertEqual(self.nodes_of(self.health("db")), ["n-nodecrit", "n-pass", "n-warn"])
        self.assertEqual(self.nodes_of(self.health("db", "?passing")), ["n-pass"])

    def test_passing_value_parsing(self):
        self._three_health_states()
        for query in ("?passing", "?passing=1", "?passing=true", "?passing=True", "?passing=t"):
            self.assertEqual(self.nodes_of(self.health("db", query)), ["n-pass"], query)
        for query in ("?passing=0", "?passing=false", "?passing=F"):
            self.assertEqual(len(self.health("db", query).json()), 3, query)
        for query in ("?passing=yes", "?passing=2", "?passing=on"):
            reply = self.emu.get("/v1/health/service/db" + query)
            self.assertEqual((reply.status, reply.text), (400, "Invalid value for ?passing"))

    def test_tags_must_all_match_case_insensitively(self):
        self.register({"Name": "t", "ID": "t1", "Tags": ["primary", "v1"]})
        self.register({"Name": "t", "ID": "t2", "Tags": ["v1"]})
        ids = lambda q: sorted(e["Service"]["ID"] for e in self.health("t", q).json())
        self.assertEqual(ids("?tag=v1"), ["t1", "t2"])
        self.assertEqual(ids("?tag=v1&tag=primary"), ["t1"])
        self.assertEqual(ids("?tag=PRIMARY"), ["t1"])
        self.assertEqual(ids("?tag=v1&tag=missing"), [])

    def test_datacenter_parameter(self):
        self.catalog_register("remote", "10.9.0.1", {"Service": "far", "Port": 5},
                              Datacenter="dc2")
        self.assertEqual(self.health("far").json(), [])
        self.assertEqual(self.nodes_of(self.health("far", "?dc=dc2")), ["remote"])
        reply = self.emu.get("/v1/health/service/far?dc=mars")
        self.assertEqual((reply.status, reply.text), (500, "No path to datacenter"))
        self.assertEqual(self.emu.get("/v1/catalog/datacenters").json(), ["dc1", "dc2"])

    def test_consistency_modes(self):
        self.assertEqual(self.health("x", "?stale").header("X-Consul-Effective-Consistency"),
                         "stale")
        self.assertEqual(self.health("x", "?consistent")
                         .header("X-Consul-Effective-Consistency"), "consistent")
        reply = self.emu.get("/v1/health/service/x?stale&consistent")
        self.assertEqual((reply.status, reply.text),
                         (400, "Cannot specify ?stale with ?consistent, conflicting semantics."))

    def test_bad_wait_and_index_are_400(self):
        for query, body in (("?wait=abc&index=1", "Invalid wait time"),
                            ("?index=-1", "Invalid index"), ("?index=x", "Invalid index")):
            reply = self.emu.get("/v1/health/service/x" + query)
            self.assertEqual((reply.status, reply.text), (400, body), query)

    def test_missing_service_name(self):
        reply = self.emu.get("/v1/health/service/")
        self.assertEqual((reply.status, reply.text), (400, "Missing service name"))

    def test_filter_expression(self):
        self.register({"Name": "f", "ID": "f1", "Meta": {"version": "1"}, "Tags": ["a"]})
        self.register({"Name": "f", "ID": "f2", "Meta": {"version": "2"}, "Tags": ["b"]})
        query = "?filter=" + urllib.parse.quote('Service.Meta.version == "2"')
        self.assertEqual([e["Service"]["ID"] for e in self.health("f", query).json()], ["f2"])
        query = "?filter=" + urllib.parse.quote('"a" in Service.Tags or Service.ID == f2')
        self.assertEqual(len(self.health("f", query).json()), 2)
        reply = self.emu.get("/v1/health/service/f?filter=" + urllib.parse.quote("Bogus == 1"))
        self.assertEqual(reply.status, 500)
        self.assertTrue(reply.text.startswith("Failed to create boolean expression evaluator"))

    def test_node_meta_filter_and_catalog_views(self):
        self.catalog_register("m1", "10.0.0.1", {"Service": "m", "Tags": ["t1"]},
                              NodeMeta={"rack": "r1"})
        self.catalog_register("m2", "10.0.0.2", {"Service": "m", "Tags": ["t2"]},
                              NodeMeta={"rack": "r2"})
        self.assertEqual(self.nodes_of(self.health("m", "?node-meta=rack:r2")), ["m2"])
        services = self.emu.get("/v1/catalog/services").json()
        self.assertEqual(services, {"consul": [], "m": ["t1", "t2"]})
        nodes = [n["ServiceAddress"] for n in self.emu.get("/v1/catalog/service/m").json()]
        self.assertEqual(len(nodes), 2)


# ---- blocking queries ----------------------------------------------------------------

class BlockingTest(EmulatorTestCase):

    def blocking(self, name, index, wait, timeout=15):
        return self.emu.get("/v1/health/service/%s?index=%d&wait=%s" % (name, index, wait),
                            timeout=timeout)

    def test_returns_when_service_changes(self):
        self.register({"Name": "b", "Check": {"TTL": "30s"}})
        index = self.index("b")
        waiter = Background(lambda: self.blocking("b", index, "10s"))
        time.sleep(0.3)
        self.assertIsNone(waiter.value, "returned before any change")
        self.emu.put("/v1/agent/check/pass/service:b")
        reply = waiter.result()
        self.assertLess(waiter.elapsed, 5)
        self.assertGreater(int(reply.header("X-Consul-Index")), index)
        self.assertEqual(reply.json()[0]["Checks"][-1]["Status"], "passing")

    def test_wait_expires_with_unchanged_index(self):
        self.register({"Name": "quiet"})
        index = self.index("quiet")
        started = time.monotonic()
        reply = self.blocking("quiet", index, "1s")
        elapsed = time.monotonic() - started
        self.assertEqual(int(reply.header("X-Consul-Index")), index)
        self.assertGreaterEqual(elapsed, 0.95)
        self.assertLess(elapsed, 1 + 1 / 16 + 1.0)

    def test_jitter_stays_within_wait_over_16(self):
        self.register({"Name": "j"})
        index = self.index("j")
        waiters = [Background(lambda: self.blocking("j", index, "400ms")) for _ in range(6)]
        for waiter in waiters:
            self.assertEqual(waiter.result().status, 200)
            self.assertGreaterEqual(waiter.elapsed, 0.39)
        entries = self.emu.control("GET", "/requests?path=/v1/health/service/j")
        timeouts = [e["timeout_ms"] for e in entries if e["wait_ms"] is not None]
        self.assertEqual(len(timeouts), 6)
        for timeout_ms in timeouts:
            self.assertGreaterEqual(timeout_ms, 400)
            self.assertLessEqual(timeout_ms, 400 * (1 + 1 / 16))

    def _effective_wait(self, query):
        """Start a blocking query, read the wait the emulator chose, then let it go."""
        future_index = self.index("cap") + 100
        before = self.emu.control("GET", "/requests")
        since = before[-1]["seq"] if before else 0
        waiter = Background(lambda: self.emu.get("/v1/health/service/cap?index=%d%s"
                                                  % (future_index, query)))
        entry = wait_until(lambda: [e for e in self.emu.control(
            "GET", "/requests?since=%d&path=/v1/health/service/cap" % since)
            if e["wait_ms"] is not None], what="blocking query to start")[0]
        self.emu.control("POST", "/reset")  # drops the blocked connection
        waiter.result()
        return entry["wait_ms"], entry["timeout_ms"]

    def test_wait_is_capped_at_ten_minutes(self):
        wait_ms, timeout_ms = self._effective_wait("&wait=1h")
        self.assertEqual(wait_ms, 600000)
        self.assertGreaterEqual(timeout_ms, 600000)
        self.assertLessEqual(timeout_ms, 600000 * (1 + 1 / 16))

    def test_default_wait_is_five_minutes(self):
        wait_ms, timeout_ms = self._effective_wait("")
        self.assertEqual(wait_ms, 300000)
        self.assertLessEqual(timeout_ms, 300000 * (1 + 1 / 16))

    def test_index_zero_does_not_block(self):
        started = time.monotonic()
        self.assertEqual(self.blocking("x", 0, "5s").status, 200)
        self.assertLess(time.monotonic() - started, 2)

    def test_unrelated_change_does_not_wake(self):
        self.register({"Name": "mine"})
        index = self.index("mine")
        waiter = Background(lambda: self.blocking("mine", index, "1s"))
        time.sleep(0.2)
        self.register({"Name": "other"})
        reply = waiter.result()
        self.assertGreaterEqual(waiter.elapsed, 0.95)
        self.assertEqual(int(reply.header("X-Consul-Index")), index)

    def test_node_check_change_wakes_services_on_that_node(self):
        self.catalog_register("n1", "10.0.0.1", {"Service": "api", "Port": 80},
                              [{"CheckID": "nodecheck", "Status": "passing"}])
        index = self.index("api")
        waiter = Background(lambda: self.blocking("api", index, "10s"))
        time.sleep(0.2)
        self.emu.control("PUT", "/check", {"node": "n1", "check_id": "nodecheck",
                                           "status": "critical"})
        reply = waiter.result()
        self.assertLess(waiter.elapsed, 5)
        self.assertGreater(int(reply.header("X-Consul-Index")), index)
        self.assertEqual(self.health("api", "?passing").json(), [])

    def test_identical_reregistration_keeps_index(self):
        body = {"Name": "same", "Port": 1, "Tags": ["a"]}
        self.register(body)
        index = self.index("same")
        self.register(body)
        self.assertEqual(self.index("same"), index)
        self.register(dict(body, Port=2))
        self.assertGreater(self.index("same"), index)

    def test_catalog_services_blocks(self):
        reply = self.emu.get("/v1/catalog/services")
        index = int(reply.header("X-Consul-Index"))
        waiter = Background(lambda: self.emu.get("/v1/catalog/services?index=%d&wait=10s"
                                                 % index, timeout=15))
        time.sleep(0.2)
        self.register({"Name": "newcomer", "Tags": ["t"]})
        reply = waiter.result()
        self.assertLess(waiter.elapsed, 5)
        self.assertEqual(reply.json()["newcomer"], ["t"])
        self.assertGreater(int(reply.header("X-Consul-Index")), index)

    def test_extinct_service_reports_extinction_index(self):
        self.register({"Name": "gone"})
        self.emu.put("/v1/agent/service/deregister/gone")
        index = self.index("gone")
        self.assertGreater(index, 1)
        self.register({"Name": "elsewhere"})
        self.assertEqual(self.index("gone"), index)


# ---- registration ---------------------------------------------------------------------

class RegistrationTest(EmulatorTestCase):

    def test_register_defaults_and_empty_200(self):
        reply = self.register({"Name": "api", "Port": 9000})
        self.assertEqual(reply.body, b"")
        self.assertEqual(reply.header("Content-Length"), "0")
        svc = self.emu.get("/v1/agent/service/api").json()
        self.assertEqual((svc["ID"], svc["Service"], svc["Port"]), ("api", "api", 9000))
        self.assertEqual(svc["Tags"], [])
        self.assertEqual(svc["Meta"], {})
        self.assertEqual(svc["Weights"], {"Passing": 1, "Warning": 1})
        self.assertRegex(svc["ContentHash"], r"^[0-9a-f]{16}$")

    def test_register_errors(self):
        cases = [
            (b"{", "Request decode failed: "),
            (b"", "Request decode failed: EOF"),
            (b"[1]", "Request decode failed: "),
            (b'{"Name": "x", "Port": "80"}', "Request decode failed: json: cannot unmarshal"),
            (b"\xff\xfe", "Request decode failed: "),
            (b'{"Port": 1}', "Missing service name"),
            (b'{"Name": "x", "Address": "0.0.0.0"}', "Invalid service address"),
            (b'{"Name": "x", "Address": "::"}', "Invalid service address"),
            (b'{"Name": "x", "Check": {"HTTP": "http://127.0.0.1/"}}',
             "Invalid check: Interval must be > 0"),
            (b'{"Name": "x", "Check": {"TCP": "127.0.0.1:1"}}', "Invalid check: Interval"),
            (b'{"Name": "x", "Checks": [{"Name": "nothing"}]}',
             "Invalid check: TTL must be > 0 for TTL checks"),
            (b'{"Name": "x", "Check": {"TTL": "10s", "Interval": "10s"}}',
             "Invalid check: Interval and TTL cannot both be specified"),
            (b'{"Name": "x", "Check": {"TTL": "bogus"}}',
             'Request decode failed: time: invalid duration "bogus"'),
            (b'{"Name": "x", "Check": {"TTL": "10s", "Status": "fine"}}',
             "Status for checks must 'passing', 'warning', 'critical'"),
            (b'{"Name": "x", "Weights": {"Passing": 0}}',
             "Invalid Weights: Passing must be greater than 0"),
            (b'{"Name": "x", "Meta": {"bad key": "v"}}', "Invalid Service Meta: "),
            (b'{"Name": "x", "Port": NaN}', "Request decode failed: "),
            (b'{"Name": "x", "Port": 1.5}', "Request decode failed: json: cannot unmarshal"),
            (b"[" * 100000, "Request decode failed: "),
        ]
        for body, prefix in cases:
            reply = self.emu.put("/v1/agent/service/register", body)
            self.assertEqual(reply.status, 400, body)
            self.assertTrue(reply.text.startswith(prefix), (body, reply.text))
        self.assertEqual(self.emu.get("/v1/agent/services").json(), {})

    def test_field_names_are_case_insensitive_and_snake_case_works(self):
        self.register({"name": "lower", "port": 7, "check": {"ttl": "10s", "status": "passing"},
                       "enable_tag_override": True})
        svc = self.health("lower").json()[0]["Service"]
        self.assertEqual((svc["Port"], svc["EnableTagOverride"]), (7, True))
        self.assertEqual(self.check_status("lower", "service:lower"), "passing")

    def test_deregister_and_unknown_id(self):
        self.register({"Name": "api", "ID": "api-1"})
        reply = self.emu.put("/v1/agent/service/deregister/api-1")
        self.assertEqual((reply.status, reply.body), (200, b""))
        self.assertEqual(self.health("api").json(), [])
        reply = self.emu.put("/v1/agent/service/deregister/api-1")
        self.assertEqual(reply.status, 404)
        self.assertEqual(reply.text, 'Unknown service ID "api-1". Ensure that the service ID '
                                     'is passed, not the service name.')
        reply = self.emu.get("/v1/agent/service/api-1")
        self.assertEqual((reply.status, reply.text), (404, "unknown service ID: api-1"))

    def test_agent_service_hash_blocking(self):
        self.register({"Name": "hb", "Port": 1})
        reply = self.emu.get("/v1/agent/service/hb")
        content_hash = reply.header("X-Consul-ContentHash")
        self.assertEqual(content_hash, reply.json()["ContentHash"])
        waiter = Background(lambda: self.emu.get("/v1/agent/service/hb?hash=%s&wait=10s"
                                                 % content_hash, timeout=15))
        time.sleep(0.3)
        self.assertIsNone(waiter.value, "returned while the hash was unchanged")
        self.register({"Name": "hb", "Port": 2})
        reply = waiter.result()
        self.assertLess(waiter.elapsed, 5)
        self.assertEqual(reply.json()["Port"], 2)
        self.assertNotEqual(reply.header("X-Consul-ContentHash"), content_hash)

    def test_agent_lists(self):
        self.register({"Name": "a", "ID": "a1", "Checks": [{"TTL": "10s"}, {"TTL": "20s"}]})
        services = self.emu.get("/v1/agent/services").json()
        self.assertEqual(list(services), ["a1"])
        self.assertNotIn("consul", services)
        checks = self.emu.get("/v1/agent/checks").json()
        self.assertEqual(sorted(checks), ["service:a1:1", "service:a1:2"])
        self.assertNotIn("serfHealth", checks)
        self.assertEqual(checks["service:a1:1"]["Name"], "Service 'a' check")

    def test_reregistering_replaces_service(self):
        self.register({"Name": "r", "Tags": ["old"], "Port": 1})
        self.register({"Name": "r", "Tags": ["new"], "Port": 2})
        entries = self.health("r").json()
        self.assertEqual(len(entries), 1)
        self.assertEqual((entries[0]["Service"]["Tags"], entries[0]["Service"]["Port"]),
                         (["new"], 2))

    def test_replace_existing_checks(self):
        body = {"Name": "rc", "Checks": [{"CheckID": "keep", "TTL": "30s"},
                                         {"CheckID": "drop", "TTL": "30s"}]}
        self.register(body)
        self.emu.put("/v1/agent/check/pass/keep")
        only_keep = {"Name": "rc", "Checks": [{"CheckID": "keep", "TTL": "30s"}]}
        self.register(only_keep)
        self.assertEqual(sorted(self.emu.get("/v1/agent/checks").json()), ["drop", "keep"])
        # Status of an unchanged check survives re-registration, as in Consul.
        self.assertEqual(self.check_status("rc", "keep"), "passing")
        self.register(only_keep, query="?replace-existing-checks")
        self.assertEqual(sorted(self.emu.get("/v1/agent/checks").json()), ["keep"])
        self.register(body)
        self.register(only_keep, query="?replace-existing-checks=true")
        self.assertEqual(sorted(self.emu.get("/v1/agent/checks").json()), ["keep"])

    def test_new_checks_start_critical_unless_status_given(self):
        self.register({"Name": "s", "Checks": [{"CheckID": "c1", "TTL": "30s"},
                                               {"CheckID": "c2", "TTL": "30s",
                                                "Status": "warning"}]})
        self.assertEqual(self.check_status("s", "c1"), "critical")
        self.assertEqual(self.check_status("s", "c2"), "warning")
        self.assertEqual(self.health("s", "?passing").json(), [])

    def test_ttl_update_endpoints(self):
        self.register({"Name": "ttl", "Check": {"TTL": "30s"}})
        for verb, status in (("pass", "passing"), ("warn", "warning"), ("fail", "critical")):
            reply = self.emu.put("/v1/agent/check/%s/service:ttl?note=n-%s" % (verb, verb))
            self.assertEqual((reply.status, reply.body), (200, b""))
            check = self.emu.get("/v1/agent/checks").json()["service:ttl"]
            self.assertEqual((check["Status"], check["Output"]), (status, "n-" + verb))
        reply = self.emu.put("/v1/agent/check/update/service:ttl",
                             {"Status": "passing", "Output": "all good"})
        self.assertEqual(reply.status, 200, reply.text)
        self.assertEqual(self.emu.get("/v1/agent/checks").json()["service:ttl"]["Output"],
                         "all good")
        reply = self.emu.put("/v1/agent/check/update/service:ttl", {"Status": "fine"})
        self.assertEqual((reply.status, reply.text), (400, "Invalid check status: 'fine'"))
        reply = self.emu.put("/v1/agent/check/pass/nope")
        self.assertEqual(reply.status, 404)
        self.assertTrue(reply.text.startswith('Unknown check ID "nope"'))

    def test_non_ttl_check_cannot_be_updated(self):
        self.register({"Name": "h", "Check": {"TCP": "127.0.0.1:%d" % free_port(),
                                              "Interval": "1h"}})
        reply = self.emu.put("/v1/agent/check/pass/service:h")
        self.assertEqual((reply.status, reply.text),
                         (500, 'CheckID "service:h" does not have associated TTL'))

    def test_standalone_check_register_and_deregister(self):
        self.register({"Name": "svc"})
        reply = self.emu.put("/v1/agent/check/register",
                             {"Name": "node-ttl", "TTL": "30s", "Status": "passing"})
        self.assertEqual(reply.status, 200, reply.text)
        reply = self.emu.put("/v1/agent/check/register",
                             {"Name": "x", "TTL": "30s", "ServiceID": "missing"})
        self.assertEqual((reply.status, reply.text), (404, 'ServiceID "missing" does not exist'))
        self.emu.put("/v1/agent/check/fail/node-ttl")
        self.assertEqual(self.health("svc", "?passing").json(), [])
        self.assertEqual(self.emu.put("/v1/agent/check/deregister/node-ttl").status, 200)
        self.assertEqual(len(self.health("svc", "?passing").json()), 1)

    def test_service_maintenance(self):
        self.register({"Name": "m", "ID": "m1", "Check": {"TTL": "30s", "Status": "passing"}})
        reply = self.emu.put("/v1/agent/service/maintenance/m1?enable=true&reason=deploying")
        self.assertEqual(reply.status, 200, reply.text)
        checks = {c["CheckID"]: c for c in self.health("m").json()[0]["Checks"]}
        maint = checks["_service_maintenance:m1"]
        self.assertEqual((maint["Status"], maint["Notes"], maint["ServiceID"]),
                         ("critical", "deploying", "m1"))
        self.assertEqual(self.health("m", "?passing").json(), [])
        reply = self.emu.get("/v1/agent/health/service/name/m?format=text")
        self.assertEqual((reply.status, reply.text), (503, "maintenance"))
        self.emu.put("/v1/agent/service/maintenance/m1?enable=false")
        self.assertEqual(len(self.health("m", "?passing").json()), 1)
        for query, body in (("", "Missing value for enable"),
                            ("?enable=maybe", 'Invalid value for enable: "maybe"')):
            reply = self.emu.put("/v1/agent/service/maintenance/m1" + query)
            self.assertEqual((reply.status, reply.text), (400, body))
        reply = self.emu.put("/v1/agent/service/maintenance/nope?enable=true")
        self.assertEqual(reply.status, 404)

    def test_node_maintenance(self):
        self.register({"Name": "nm", "Check": {"TTL": "30s", "Status": "passing"}})
        self.assertEqual(self.emu.put("/v1/agent/maintenance?enable=true").status, 200)
        checks = {c["CheckID"]: c for c in self.health("nm").json()[0]["Checks"]}
        self.assertEqual(checks["_node_maintenance"]["ServiceID"], "")
        self.assertIn("no reason was provided", checks["_node_maintenance"]["Notes"])
        self.assertEqual(self.health("nm", "?passing").json(), [])
        self.emu.put("/v1/agent/maintenance?enable=false")
        self.assertEqual(len(self.health("nm", "?passing").json()), 1)

    def test_agent_health_by_name(self):
        self.register({"Name": "ah", "ID": "ah1", "Check": {"TTL": "30s", "Status": "passing"}})
        reply = self.emu.get("/v1/agent/health/service/name/ah")
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.json()[0]["AggregatedStatus"], "passing")
        self.emu.put("/v1/agent/check/warn/service:ah1")
        self.assertEqual(self.emu.get("/v1/agent/health/service/name/ah").status, 429)
        self.emu.put("/v1/agent/check/fail/service:ah1")
        self.assertEqual(self.emu.get("/v1/agent/health/service/name/ah").status, 503)
        reply = self.emu.get("/v1/agent/health/service/name/unknown")
        self.assertEqual((reply.status, reply.json()), (404, []))
        reply = self.emu.get("/v1/agent/health/service/id/ah1")
        self.assertEqual((reply.status, reply.json()["AggregatedStatus"]), (503, "critical"))
        self.assertEqual(reply.header("X-Consul-Reason"), "critical")
        reply = self.emu.get("/v1/agent/health/service/id/nope?format=text")
        self.assertEqual((reply.status, reply.text), (404, "ServiceId nope not found"))

    def test_catalog_register_and_deregister_other_nodes(self):
        self.catalog_register("far", "10.2.0.1", {"ID": "db-1", "Service": "db", "Port": 5432,
                                                  "Address": ""},
                              [{"CheckID": "db-ok", "ServiceID": "db-1", "Status": "passing"}])
        entry = self.health("db").json()[0]
        self.assertEqual((entry["Node"]["Address"], entry["Service"]["Address"]),
                         ("10.2.0.1", ""))
        self.assertEqual(entry["Service"]["Weights"], {"Passing": 1, "Warning": 1})
        reply = self.emu.put("/v1/catalog/deregister", {"Node": "far", "ServiceID": "db-1"})
        self.assertEqual((reply.status, reply.json()), (200, True))
        self.assertEqual(self.health("db").json(), [])
        self.emu.put("/v1/catalog/deregister", {"Node": "far"})
        self.assertNotIn("far", [n["Node"] for n in self.emu.get("/v1/catalog/nodes").json()])
        reply = self.emu.put("/v1/catalog/register", {"Address": "10.0.0.1"})
        self.assertEqual((reply.status, reply.text), (500, "Must provide node"))
        reply = self.emu.put("/v1/catalog/register",
                             {"Node": "x", "Address": "1.1.1.1",
                              "Checks": [{"CheckID": "c", "ServiceID": "nope"}]})
        self.assertEqual(reply.status, 500)

    def test_thousand_instances(self):
        conn = self.emu.connection()
        try:
            for number in range(1000):
                body = json.dumps({"Node": "bulk-%d" % (number // 10),
                                   "Address": "10.3.%d.%d" % (number // 250, number % 250),
                                   "Service": {"ID": "big-%d" % number, "Service": "big",
                                               "Port": 10000 + number},
                                   "Check": {"CheckID": "c-%d" % number,
                                             "ServiceID": "big-%d" % number,
                                             "Status": "passing"}})
                conn.request("PUT", "/v1/catalog/register", body)
                reply = conn.getresponse()
                reply.read()
                self.assertEqual(reply.status, 200)
        finally:
            conn.close()
        self.assertEqual(len(self.health("big", "?passing").json()), 1000)
        # The control API can load many instances in one index as well.
        bulk = [{"Node": "n%d" % i, "Address": "10.4.0.%d" % (i % 250),
                 "Service": {"ID": "s%d" % i, "Service": "bulk"}} for i in range(500)]
        result = self.emu.control("POST", "/catalog/register", bulk)
        self.assertEqual(result["registered"], 500)
        self.assertEqual(int(self.health("bulk").header("X-Consul-Index")), result["index"])

    def test_deregister_minimum_is_one_minute_by_default(self):
        self.register({"Name": "keep", "Check": {"TTL": "30s",
                                                 "DeregisterCriticalServiceAfter": "10ms"}})
        time.sleep(0.1)
        self.assertEqual(self.emu.control("POST", "/reap")["reaped"], [])
        self.assertEqual(self.emu.get("/v1/agent/service/keep").status, 200)


# ---- checks really run ------------------------------------------------------------------

class CheckExecutionTest(EmulatorTestCase):
    ARGS = ("--fast-checks",)

    def setUp(self):
        super().setUp()
        self.target = TargetServer()
        self.addCleanup(self.target.close)

    def test_http_check_maps_status_codes(self):
        self.register({"Name": "web", "Check": {"HTTP": self.target.url, "Interval": "100ms"}})
        self.wait_status("web", "service:web", "passing")
        self.target.status = 429
        self.wait_status("web", "service:web", "warning")
        self.target.status = 500
        self.wait_status("web", "service:web", "critical")
        check = self.emu.get("/v1/agent/checks").json()["service:web"]
        self.assertEqual(check["Output"], "HTTP GET %s: 500 Internal Server Error Output: ok"
                         % self.target.url)
        self.assertEqual((check["Type"], check["Interval"]), ("http", "100ms"))

    def test_http_check_sends_method_and_headers(self):
        self.register({"Name": "hdr", "Check": {"HTTP": self.target.url, "Interval": "1h",
                                                "Method": "PUT", "Timeout": "2s",
                                                "Header": {"X-Probe": ["yes"]}}})
        wait_until(lambda: self.target.hits() >= 1, what="the first probe")
        method, headers = self.target.seen[0]
        self.assertEqual(method, "PUT")
        self.assertEqual(headers.get("X-Probe"), "yes")
        self.assertEqual(headers.get("User-Agent"), "Consul Health Check")

    def test_http_check_fails_when_target_is_down(self):
        url = "http://127.0.0.1:%d/health" % free_port()
        self.register({"Name": "down", "Check": {"HTTP": url, "Interval": "100ms",
                                                 "Status": "passing"}})
        self.wait_status("down", "service:down", "critical")
        output = self.emu.get("/v1/agent/checks").json()["service:down"]["Output"]
        self.assertIn("connection refused", output)

    def test_first_run_is_immediate_with_fast_checks(self):
        self.register({"Name": "fast", "Check": {"HTTP": self.target.url, "Interval": "1h"}})
        self.wait_status("fast", "service:fast", "passing", timeout=3)

    def test_tcp_check(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        self.addCleanup(listener.close)
        address = "127.0.0.1:%d" % listener.getsockname()[1]
        self.register({"Name": "tcp-up", "Check": {"TCP": address, "Interval": "100ms"}})
        self.wait_status("tcp-up", "service:tcp-up", "passing")
        self.assertEqual(self.emu.get("/v1/agent/checks").json()["service:tcp-up"]["Output"],
                         "TCP connect %s: Success" % address)
        closed = "127.0.0.1:%d" % free_port()
        self.register({"Name": "tcp-down", "Check": {"TCP": closed, "Interval": "100ms",
                                                     "Status": "passing"}})
        self.wait_status("tcp-down", "service:tcp-down", "critical")

    def run_check(self, check_id):
        return self.emu.control("POST", "/check/run", {"check_id": check_id})

    def test_success_before_passing_and_failures_before_critical(self):
        self.register({"Name": "gate", "Check": {"HTTP": self.target.url, "Interval": "1h",
                                                 "SuccessBeforePassing": 2,
                                                 "FailuresBeforeCritical": 2}})
        # Counters start at their thresholds (as in Consul): the first success counts.
        self.wait_status("gate", "service:gate", "passing")
        self.target.status = 500
        self.assertEqual(self.run_check("service:gate")["check"]["Status"], "passing")
        self.assertEqual(self.run_check("service:gate")["check"]["Status"], "critical")
        self.target.status = 200
        self.assertEqual(self.run_check("service:gate")["check"]["Status"], "critical")
        self.assertEqual(self.run_check("service:gate")["check"]["Status"], "passing")

    def test_failures_before_warning(self):
        self.register({"Name": "warn", "Check": {"HTTP": self.target.url, "Interval": "1h",
                                                 "FailuresBeforeWarning": 1,
                                                 "FailuresBeforeCritical": 3}})
        self.wait_status("warn", "service:warn", "passing")
        self.target.status = 503
        statuses = [self.run_check("service:warn")["check"]["Status"] for _ in range(3)]
        self.assertEqual(statuses, ["warning", "warning", "critical"])

    def test_ttl_expires_to_critical(self):
        self.register({"Name": "ttl", "Check": {"TTL": "300ms"}})
        self.emu.put("/v1/agent/check/pass/service:ttl?note=last-words")
        self.assertEqual(self.check_status("ttl", "service:ttl"), "passing")
        self.wait_status("ttl", "service:ttl", "critical", timeout=3)
        output = self.emu.get("/v1/agent/checks").json()["service:ttl"]["Output"]
        self.assertEqual(output, "TTL expired (last output before timeout follows): last-words")


class ReaperTest(EmulatorTestCase):
    ARGS = ("--fast-checks", "--reap-interval", "100ms", "--deregister-min", "0s")

    def test_deregister_critical_service_after(self):
        self.register({"Name": "doomed", "Check": {"TTL": "30s",
                                                   "DeregisterCriticalServiceAfter": "300ms"}})
        self.register({"Name": "fine", "Check": {"TTL": "30s", "Status": "passing",
                                                 "DeregisterCriticalServiceAfter": "300ms"}})
        self.assertEqual(self.emu.get("/v1/agent/service/doomed").status, 200)
        wait_until(lambda: self.emu.get("/v1/agent/service/doomed").status == 404,
                   what="the reaper")
        self.assertEqual(self.health("doomed").json(), [])
        self.assertEqual(self.emu.get("/v1/agent/service/fine").status, 200)


# ---- ACLs -------------------------------------------------------------------------------

class ACLDenyTest(EmulatorTestCase):
    ARGS = ("--acl-default-policy", "deny", "--acl-master-token", "root")
    ROOT = {"X-Consul-Token": "root"}

    def setUp(self):
        super().setUp()
        tokens = [
            {"SecretID": "reader", "AccessorID": "acc-reader",
             "Rules": {"service_prefix": {"": "read"}, "node_prefix": {"": "read"}}},
            {"SecretID": "svc-only", "Rules": {"service_prefix": {"": "read"}}},
            {"SecretID": "api-writer", "AccessorID": "acc-writer",
             "Rules": {"service": {"api": "write"}, "service_prefix": {"": "read"},
                       "node_prefix": {"": "read"}}},
            {"SecretID": "hcl", "Rules": 'service_prefix "" { policy = "read" }\n'
                                         'node_prefix "" { policy = "read" }'},
        ]
        for token in tokens:
            self.emu.control("PUT", "/acl/tokens", token)
        self.register({"Name": "api"}, headers=self.ROOT)

    def test_default_policy_header_on_every_response(self):
        for reply in (self.emu.get("/v1/health/service/api"),
                      self.emu.get("/v1/nowhere"),
                      self.emu.put("/v1/agent/service/register", {"Name": "x"})):
            self.assertEqual(reply.header("X-Consul-Default-ACL-Policy"), "deny")

    def test_unknown_token_is_acl_not_found(self):
        for headers, query in (({"X-Consul-Token": "bogus"}, ""),
                               ({"Authorization": "Bearer bogus"}, ""), ({}, "?token=bogus")):
            reply = self.emu.get("/v1/health/service/api" + query, headers=headers)
            self.assertEqual((reply.status, reply.text), (403, "ACL not found"))

    def test_anonymous_list_read_is_filtered_not_refused(self):
        reply = self.health("api")
        self.assertEqual(reply.json(), [])
        self.assertIsNone(reply.header("X-Consul-Results-Filtered-By-ACLs"))

    def test_token_in_header_or_bearer(self):
        for headers in ({"X-Consul-Token": "reader"}, {"Authorization": "Bearer reader"},
                        {"X-Consul-Token": "hcl"}):
            self.assertEqual(len(self.health("api", headers=headers).json()), 1, headers)

    def test_health_needs_node_read_too(self):
        reply = self.health("api", headers={"X-Consul-Token": "svc-only"})
        self.assertEqual(reply.json(), [])
        self.assertEqual(reply.header("X-Consul-Results-Filtered-By-ACLs"), "true")

    def test_denied_write(self):
        reply = self.register({"Name": "api"}, headers={"X-Consul-Token": "reader"}, expect=403)
        self.assertEqual(reply.text, "Permission denied: token with AccessorID 'acc-reader' "
                                     "lacks permission 'service:write' on \"api\"")
        reply = self.emu.put("/v1/agent/service/deregister/api",
                             headers={"X-Consul-Token": "reader"})
        self.assertEqual(reply.status, 403)
        self.assertTrue(reply.text.startswith(PERMISSION_DENIED))

    def test_scoped_write(self):
        self.register({"Name": "api", "ID": "api-2"}, headers={"X-Consul-Token": "api-writer"})
        reply = self.register({"Name": "web"}, headers={"X-Consul-Token": "api-writer"},
                              expect=403)
        self.assertTrue(reply.text.startswith(PERMISSION_DENIED))

    def test_single_object_read_is_refused(self):
        reply = self.emu.get("/v1/agent/service/api")
        self.assertEqual(reply.status, 403)
        self.assertTrue(reply.text.startswith(PERMISSION_DENIED))
        reply = self.emu.get("/v1/agent/service/api", headers={"X-Consul-Token": "reader"})
        self.assertEqual(reply.status, 200)

    def test_catalog_services_filtered(self):
        self.assertEqual(self.emu.get("/v1/catalog/services").json(), {})
        services = self.emu.get("/v1/catalog/services",
                                headers={"X-Consul-Token": "reader"}).json()
        self.assertEqual(sorted(services), ["api", "consul"])


class ACLAllowTest(EmulatorTestCase):
    ARGS = ("--acl-default-policy", "allow")

    def test_allow_policy_and_explicit_deny(self):
        self.register({"Name": "open"})
        self.register({"Name": "secret"})
        self.emu.control("PUT", "/acl/tokens", {"SecretID": "limited",
                                                "Rules": {"service": {"secret": "deny"}}})
        reply = self.health("secret")
        self.assertEqual(len(reply.json()), 1)
        self.assertEqual(reply.header("X-Consul-Default-ACL-Policy"), "allow")
        limited = {"X-Consul-Token": "limited"}
        self.assertEqual(self.health("secret", headers=limited).json(), [])
        self.assertEqual(len(self.health("open", headers=limited).json()), 1)


# ---- faults and control API ----------------------------------------------------------------

class FaultTest(EmulatorTestCase):

    def add_fault(self, **spec):
        return self.emu.control("POST", "/faults", spec)

    def test_hang_until_cleared_only_on_matching_paths(self):
        self.add_fault(kind="hang", path="/v1/health/")
        waiter = Background(lambda: self.emu.get("/v1/health/service/x", timeout=15))
        time.sleep(0.5)
        self.assertIsNone(waiter.value, "hung request answered")
        self.assertEqual(self.emu.get("/v1/status/leader").status, 200)
        self.emu.control("DELETE", "/faults")
        self.assertEqual(waiter.result().status, 200)

    def test_error_presets_and_count(self):
        self.add_fault(kind="no_leader", count=2)
        for _ in range(2):
            reply = self.emu.get("/v1/health/service/x")
            self.assertEqual((reply.status, reply.text), (500, "No cluster leader"))
        self.assertEqual(self.emu.get("/v1/health/service/x").status, 200)
        self.add_fault(kind="no_servers", count=1)
        reply = self.emu.get("/v1/health/service/x")
        self.assertEqual((reply.status, reply.text), (500, "No known Consul servers"))
        self.add_fault(kind="rate_limit", count=1)
        self.assertEqual(self.emu.get("/v1/health/service/x").status, 429)
        self.add_fault(kind="error", status=503, body="custom", count=1, method="PUT")
        self.assertEqual(self.emu.get("/v1/health/service/x").status, 200)
        reply = self.emu.put("/v1/agent/service/register", {"Name": "x"})
        self.assertEqual((reply.status, reply.text), (503, "custom"))

    def test_fault_can_be_removed_by_id(self):
        fault = self.add_fault(kind="no_leader")
        self.assertEqual(len(self.emu.control("GET", "/faults")), 1)
        self.emu.control("DELETE", "/faults/%d" % fault["id"])
        self.assertEqual(self.emu.get("/v1/health/service/x").status, 200)

    def test_invalid_fault_is_rejected(self):
        reply = self.emu.request("POST", "/_emu/faults", {"kind": "explode"})
        self.assertEqual(reply.status, 400)

    def test_index_goes_backwards(self):
        for name in ("a", "b", "c"):
            self.register({"Name": name})
        high = self.index("c")
        self.assertGreaterEqual(high, 4)
        self.emu.control("PUT", "/index", {"index": 2})
        low = self.index("c")
        self.assertLess(low, high)
        self.assertGreaterEqual(low, 1)
        reply = self.emu.get("/v1/health/service/c?index=%d&wait=300ms" % high)
        self.assertEqual(int(reply.header("X-Consul-Index")), low)

    def test_restart_wipes_state_and_refuses_connections(self):
        self.register({"Name": "gone", "Check": {"TTL": "30s"}})
        index = self.index("gone")
        waiter = Background(lambda: self.emu.get(
            "/v1/health/service/gone?index=%d&wait=30s" % index, timeout=30))
        time.sleep(0.2)
        started = time.monotonic()
        self.emu.control("POST", "/restart", {"down_seconds": 1})
        self.assertIsInstance(waiter.result(), (http.client.HTTPException, OSError))
        with self.assertRaises(ConnectionRefusedError):
            self.emu.get("/v1/status/leader", timeout=2)
        wait_until(self._reachable, timeout=10, what="the emulator to come back")
        self.assertGreaterEqual(time.monotonic() - started, 0.9)
        reply = self.health("gone")
        self.assertEqual((reply.json(), reply.header("X-Consul-Index")), ([], "1"))
        self.assertEqual(self.emu.get("/v1/agent/service/gone").status, 404)
        self.assertEqual(self.emu.get("/v1/catalog/services").json(), {"consul": []})
        self.register({"Name": "fresh"})
        self.assertEqual(self.index("fresh"), 2)

    def _reachable(self):
        try:
            return self.emu.get("/v1/status/leader", timeout=2).status == 200
        except OSError:
            return False

    def test_restart_without_downtime(self):
        self.register({"Name": "gone"})
        self.emu.control("POST", "/restart", {})
        self.assertEqual(self.health("gone").json(), [])
        self.assertEqual(self.emu.control("GET", "/health")["index"], 1)

    def test_latency(self):
        self.add_fault(kind="latency", ms=300)
        started = time.monotonic()
        self.assertEqual(self.emu.get("/v1/status/leader").status, 200)
        self.assertGreaterEqual(time.monotonic() - started, 0.29)

    def test_garbage_body(self):
        self.add_fault(kind="garbage", count=1)
        reply = self.emu.get("/v1/health/service/x")
        self.assertEqual(reply.status, 200)
        self.assertIsNotNone(reply.header("X-Consul-Index"))
        with self.assertRaises(ValueError):
            json.loads(reply.body)

    def test_oversized_body(self):
        self.add_fault(kind="oversize", mib=3, count=1)
        reply = self.emu.get("/v1/health/service/x")
        self.assertEqual(reply.status, 200)
        self.assertEqual(int(reply.header("Content-Length")), len(reply.body))
        self.assertGreater(len(reply.body), 3 * (1 << 20) * 0.99)
        self.assertIsInstance(reply.json(), list)

    def test_truncated_body(self):
        self.register({"Name": "t"})
        self.add_fault(kind="truncate", count=1)
        with self.assertRaises(http.client.IncompleteRead):
            self.emu.get("/v1/health/service/t")

    def test_dropped_connection(self):
        self.add_fault(kind="drop", count=1)
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionResetError)):
            self.emu.get("/v1/health/service/x")

    def test_known_leader_false(self):
        self.emu.control("PUT", "/settings", {"known_leader": False})
        self.assertEqual(self.health("x").header("X-Consul-KnownLeader"), "false")

    def test_leaderless_cluster(self):
        self.emu.control("PUT", "/settings", {"leaderless": True, "last_contact_ms": 1234})
        self.assertEqual(self.emu.get("/v1/status/leader").json(), "")
        reply = self.emu.get("/v1/health/service/x")
        self.assertEqual((reply.status, reply.text), (500, "No cluster leader"))
        reply = self.health("x", "?stale")
        self.assertEqual(reply.header("X-Consul-KnownLeader"), "false")
        self.assertEqual(reply.header("X-Consul-LastContact"), "1234")

    def test_request_log(self):
        self.emu.get("/v1/health/service/logged?passing&index=0",
                     headers={"X-Consul-Token": "tok-1"})
        entries = self.emu.control("GET", "/requests?path=/v1/health/service/logged")
        self.assertEqual(len(entries), 1)
        entry = entries[0]
        self.assertEqual((entry["method"], entry["path"], entry["query"], entry["token"],
                          entry["status"]),
                         ("GET", "/v1/health/service/logged", "passing&index=0", "tok-1", 200))
        self.assertEqual(entry["headers"]["X-Consul-Token"], "tok-1")
        self.assertEqual(entry["params"], {"passing": [""], "index": ["0"]})
        waiter = Background(lambda: self.emu.control(
            "GET", "/requests?since=%d&path=/v1/agent&wait=5s" % entry["seq"]))
        time.sleep(0.2)
        self.emu.get("/v1/agent/services")
        self.assertEqual([e["path"] for e in waiter.result()], ["/v1/agent/services"])
        self.emu.control("DELETE", "/requests")
        self.assertEqual(self.emu.control("GET", "/requests"), [])

    def test_set_check_status_directly(self):
        self.catalog_register("n1", "10.0.0.1", {"Service": "s"},
                              [{"CheckID": "c", "ServiceID": "s", "Status": "passing"}])
        index = self.index("s")
        self.emu.control("PUT", "/check", {"node": "n1", "check_id": "c", "status": "warning",
                                           "output": "slow"})
        self.assertEqual(self.check_status("s", "c"), "warning")
        self.assertGreater(self.index("s"), index)
        # Unknown statuses are allowed so clients can be tested against them.
        self.emu.control("PUT", "/check", {"node": "n1", "check_id": "c", "status": "weird"})
        self.assertEqual(self.check_status("s", "c"), "weird")
        self.assertEqual(self.health("s", "?passing").json(), [])
        reply = self.emu.request("PUT", "/_emu/check", {"check_id": "nope", "status": "passing"})
        self.assertEqual(reply.status, 404)
        reply = self.emu.request("PUT", "/_emu/check", {"check_id": "c", "status": 3})
        self.assertEqual(reply.status, 400)

    def test_reset_clears_everything(self):
        self.register({"Name": "r"})
        self.add_fault(kind="no_leader")
        self.emu.control("PUT", "/settings", {"known_leader": False})
        self.emu.control("POST", "/reset")
        reply = self.health("r")
        self.assertEqual((reply.json(), reply.header("X-Consul-KnownLeader")), ([], "true"))
        self.assertEqual(self.emu.control("GET", "/faults"), [])


# ---- HTTP protocol and robustness ---------------------------------------------------------

class ProtocolTest(EmulatorTestCase):

    def test_keep_alive(self):
        conn = self.emu.connection()
        try:
            conn.request("GET", "/v1/status/leader")
            conn.getresponse().read()
            sock = conn.sock
            for path in ("/v1/health/service/x", "/v1/agent/services", "/v1/catalog/services"):
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                self.assertEqual(response.status, 200)
                self.assertIs(conn.sock, sock, "connection was not kept alive")
        finally:
            conn.close()

    def test_unknown_path_and_wrong_method(self):
        reply = self.emu.get("/v1/nope")
        self.assertEqual((reply.status, reply.text),
                         (404, "Invalid URL path: not a recognized HTTP API endpoint\n"))
        reply = self.emu.request("POST", "/v1/health/service/x")
        self.assertEqual((reply.status, reply.text), (405, "method POST not allowed"))
        self.assertEqual(reply.header("Allow"), "OPTIONS,GET")

    def test_content_length_always_present(self):
        for reply in (self.emu.get("/v1/health/service/x"), self.register({"Name": "cl"}),
                      self.emu.get("/v1/nope")):
            self.assertEqual(int(reply.header("Content-Length")), len(reply.body))

    def test_chunked_request_body(self):
        conn = self.emu.connection()
        try:
            conn.request("PUT", "/v1/agent/service/register",
                         body=iter([b'{"Name": ', b'"chunked"}']), encode_chunked=True)
            response = conn.getresponse()
            response.read()
            self.assertEqual(response.status, 200)
        finally:
            conn.close()
        self.assertEqual(len(self.health("chunked").json()), 1)

    def test_garbage_requests_get_answers_and_do_not_crash(self):
        with socket.create_connection(("127.0.0.1", self.emu.port), timeout=5) as sock:
            sock.sendall(b"\x00\x01 / NOT-HTTP\r\n\r\n")
            self.assertTrue(sock.recv(100).startswith(b"HTTP/1."))
        odd = ["/v1/health/service/%zz", "/v1/health/service/a?index=99999999999999999999999",
               "/v1/health/service/a?wait=-5s&index=0", "/v1/agent/service/",
               "/v1/health/service/a?filter=((", "/v1/catalog/service/a?tag=&tag=%00",
               "/_emu/nothing", "/v1/agent/health/service/name/", "/"]
        for path in odd:
            reply = self.emu.get(path)
            self.assertLess(reply.status, 600, path)
        reply = self.emu.request("PUT", "/v1/agent/service/register", "x" * 10,
                                 headers={"Content-Length": str(1 << 30)})
        self.assertEqual(reply.status, 413)
        self.assertEqual(self.emu.get("/v1/status/leader").status, 200)


class ProcessTest(unittest.TestCase):

    def test_sigterm_exits_cleanly(self):
        emu = EmulatorProcess()
        self.assertEqual(emu.get("/v1/status/leader").json(), "127.0.0.1:8300")
        self.assertEqual(emu.stop(), 0)

    def test_unix_socket(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "consul.sock")
            emu = EmulatorProcess("--unix", path)
            try:
                sock = socket.socket(socket.AF_UNIX)
                sock.settimeout(5)
                sock.connect(path)
                conn = http.client.HTTPConnection("localhost")
                conn.sock = sock
                conn.request("GET", "/v1/status/leader")
                response = conn.getresponse()
                self.assertEqual((response.status, json.loads(response.read())),
                                 (200, "127.0.0.1:8300"))
                conn.close()
            finally:
                self.assertEqual(emu.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
