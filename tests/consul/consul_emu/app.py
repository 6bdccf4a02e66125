"""The emulator as one object: components, request entry point, restart and reset."""

import socket
import sys
import threading
import time

from .acl import ACL
from .agent import Agent, AgentConfig
from .api import API
from .control import Control
from .errors import AbortConnection, HTTPError
from .faults import FaultTable, oversize_chunks
from .model import State
from .reqlog import RequestLog
from .server import Listeners, tls_context
from .web import JSON_TYPE, Response, text_response

GARBAGE_BODY = b'[{"Node":{"ID":"\x00\xff not json at all <<<'


class Settings:
    """Cluster conditions tests can change at run time (PUT /_emu/settings)."""

    FIELDS = {"known_leader": bool, "leaderless": bool, "last_contact_ms": int}

    def __init__(self, leader_address):
        self.leader_address = leader_address  # what /v1/status/leader answers
        self.known_leader = True              # X-Consul-KnownLeader
        self.leaderless = False               # no leader: default reads and writes fail
        self.last_contact_ms = 0              # X-Consul-LastContact on stale reads

    def reset(self):
        self.known_leader, self.leaderless, self.last_contact_ms = True, False, 0

    def update(self, spec):
        for key, value in spec.items():
            kind = self.FIELDS.get(key)
            if kind is None:
                raise ValueError("unknown setting %r" % key)
            if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
                raise ValueError("%s must be %s" % (key, kind.__name__))
            if kind is int and value < 0:
                raise ValueError("%s must not be negative" % key)
        for key, value in spec.items():
            setattr(self, key, value)

    def to_json(self):
        return {"known_leader": self.known_leader, "leaderless": self.leaderless,
                "last_contact_ms": self.last_contact_ms, "leader_address": self.leader_address}


class App:
    """Owns every component; the HTTP handler calls handle() for each request."""

    def __init__(self, options):
        self.options = options
        self.state = State(options.datacenter, options.extra_datacenter)
        self.agent = Agent(self.state, AgentConfig(
            options.node, options.node_id, options.advertise, options.datacenter,
            options.fast_checks, options.min_check_interval, options.deregister_min,
            options.reap_interval))
        self.acl = ACL(options.acl_default_policy, options.acl_master_token)
        self.faults = FaultTable()
        self.reqlog = RequestLog(options.request_log_size)
        self.settings = Settings("%s:8300" % options.advertise)
        self.api = API(self)
        self.control = Control(self)
        tls = None
        if getattr(options, "tls_cert", None):
            tls = tls_context(options.tls_cert, options.tls_key, options.tls_client_ca)
        self.listeners = Listeners(self, options.bind, options.port, options.unix, tls)
        self.connections = set()                # open client sockets
        self._connections_lock = threading.Lock()
        self._lifecycle = threading.Lock()      # one restart/reset at a time

    # ---- lifecycle -----------------------------------------------------------

    def start(self):
        """Bootstrap the agent and listen; returns the TCP port."""
        self.agent.start()
        return self.listeners.open()

    def shutdown(self):
        self.listeners.close()
        self.agent.shutdown()
        self.drop_connections()

    def track(self, sock):
        with self._connections_lock:
            self.connections.add(sock)

    def untrack(self, sock):
        with self._connections_lock:
            self.connections.discard(sock)

    def drop_connections(self, keep=None):
        """Shut down every client connection except `keep` (the control request's own)."""
        with self._connections_lock:
            victims = [s for s in self.connections if s is not keep]
        for sock in victims:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def restart(self, down_s=0.0, keep=None):
        """Emulate an agent restart: connections drop, state and index start over, and with
        down_s > 0 the port refuses connections for that long."""
        with self._lifecycle:
            if down_s > 0:
                self.listeners.close()
            self.agent.wipe()
            self.state.wipe()
            self.agent.bootstrap()
            with self.faults.cond:
                self.faults.cond.notify_all()
            self.drop_connections(keep)
            if down_s > 0:
                timer = threading.Timer(down_s, self._reopen)
                timer.daemon = True
                timer.start()

    def _reopen(self):
        for _attempt in range(100):
            try:
                with self._lifecycle:
                    self.listeners.open()
                return
            except OSError as err:
                print("emulator: reopening listener failed: %s" % err, file=sys.stderr)
                time.sleep(0.1)

    def reset(self, keep=None):
        """Back to the state right after start-up, including faults, ACLs and settings."""
        self.faults.clear()
        self.reqlog.clear()
        self.acl.default_policy = self.options.acl_default_policy
        self.acl.reset()
        self.settings.reset()
        self.restart(0, keep)

    # ---- requests -----------------------------------------------------------

    def handle(self, req):
        """Answer one request (raises AbortConnection to drop it instead)."""
        if req.path == "/_emu" or req.path.startswith("/_emu/"):
            return self.control.handle(req)
        started = time.monotonic()
        entry = self.reqlog.start(req, self.api.token(req))
        req.log_entry = entry
        status = "aborted"
        try:
            response = self._serve(req)
            status = response.status
            return response
        finally:
            self.reqlog.finish(entry, status, started)

    def _serve(self, req):
        generation = self.state.generation
        delay_s, fault = self.faults.take(req.method, req.path)
        if delay_s:
            self._sleep(delay_s, generation)
        response = None
        if fault is not None:
            response = self._fault_response(fault, generation)
        if response is None:
            try:
                response = self.api.dispatch(req)
            except HTTPError as err:
                response = text_response(err.status, err.message, err.headers)
            if fault is not None and fault.kind == "truncate":
                response.truncate = True
        # Consul sets these on every response, with ACLs enabled or not.
        response.headers.setdefault("X-Consul-Default-ACL-Policy", self.acl.header_policy())
        response.headers.setdefault("Vary", "Accept-Encoding")
        return response

    def _sleep(self, seconds, generation):
        deadline = time.monotonic() + seconds
        with self.faults.cond:
            while self.state.generation == generation:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.faults.cond.wait(left)
        raise AbortConnection()

    def _fault_response(self, fault, generation):
        """The response a fault rule dictates, or None to answer normally."""
        if fault.kind == "hang":
            self.faults.wait_released(fault, lambda: self.state.generation == generation)
            if self.state.generation != generation:
                raise AbortConnection()
            return None
        if fault.kind == "drop":
            raise AbortConnection()
        if fault.kind in ("garbage", "oversize"):
            response = Response(200, GARBAGE_BODY, JSON_TYPE, self._fake_meta())
            if fault.kind == "oversize":
                response.length, response.chunks = oversize_chunks(fault.mib)
            return response
        if fault.kind in ("truncate", "latency"):
            return None
        return text_response(fault.status, fault.body)

    def _fake_meta(self):
        return {"X-Consul-Index": str(max(self.state.index, 1)), "X-Consul-KnownLeader": "true",
                "X-Consul-LastContact": "0", "X-Consul-Effective-Consistency": "leader"}
