"""The /_emu/ control API tests use to steer the emulator (documented in ../README.md).

Bodies are JSON; PUT and POST are interchangeable. Errors answer 400 {"error": "..."}.
Control requests are never logged and never hit by faults.
"""

import re

from .acl import RuleError
from .api_catalog import apply_registration, validate_register
from .decode import REGISTER_REQUEST, DecodeError, decode_struct, load_json
from .durations import DurationError, parse_duration, to_seconds
from .errors import HTTPError
from .faults import FaultError
from .model import CatalogError
from .web import json_response

_WRITE = ("PUT", "POST")


def _fail(message, status=400):
    raise HTTPError(status, message)


def _number(body, key, default, low, high):
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        _fail("%s must be a number in [%s, %s]" % (key, low, high))
    return value


class Control:
    """Routes /_emu/ requests to small handlers."""

    def __init__(self, app):
        self.app = app
        self.routes = [
            ("GET", r"/health", self.health),
            (_WRITE, r"/reset", self.reset),
            (_WRITE, r"/restart", self.restart),
            ("GET", r"/faults", self.faults_list),
            (_WRITE, r"/faults", self.faults_add),
            ("DELETE", r"/faults", self.faults_clear),
            ("DELETE", r"/faults/(\d+)", self.faults_remove),
            ("GET", r"/settings", self.settings_get),
            (_WRITE, r"/settings", self.settings_set),
            ("GET", r"/index", self.index_get),
            (_WRITE, r"/index", self.index_set),
            ("GET", r"/acl", self.acl_get),
            (_WRITE, r"/acl", self.acl_set),
            (_WRITE, r"/acl/tokens", self.acl_token_set),
            ("DELETE", r"/acl/tokens/(.+)", self.acl_token_delete),
            (_WRITE, r"/check", self.check_set),
            (_WRITE, r"/check/run", self.check_run),
            (_WRITE, r"/reap", self.reap),
            ("GET", r"/requests", self.requests_get),
            ("DELETE", r"/requests", self.requests_clear),
            ("GET", r"/state", self.state_get),
            (_WRITE, r"/catalog/register", self.catalog_register),
            (_WRITE, r"/datacenters", self.datacenter_add),
        ]

    def handle(self, req):
        path = req.path[len("/_emu"):] or "/"
        try:
            for methods, pattern, handler in self.routes:
                match = re.fullmatch(pattern, path)
                if match and req.method in (methods if isinstance(methods, tuple) else (methods,)):
                    return handler(req, self._body(req), *match.groups())
            return json_response({"error": "unknown control endpoint %s %s"
                                  % (req.method, req.path)}, 404)
        except HTTPError as err:
            return json_response({"error": err.message}, err.status)
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            return json_response({"error": "bad request: %s" % err}, 400)

    @staticmethod
    def _body(req):
        if not req.body.strip():
            return {}
        try:
            return load_json(req.body)
        except ValueError as err:
            _fail("body is not JSON: %s" % err)

    @staticmethod
    def _object(body):
        if not isinstance(body, dict):
            _fail("expected a JSON object")
        return body

    # ---- lifecycle -----------------------------------------------------------

    def health(self, _req, _body):
        state = self.app.state
        return json_response({"ok": True, "index": state.index, "generation": state.generation,
                              "port": self.app.listeners.port})

    def reset(self, req, _body):
        self.app.reset(keep=req.connection)
        return self._closing({"ok": True})

    def restart(self, req, body):
        down = _number(self._object(body), "down_seconds", 0, 0, 3600)
        self.app.restart(down, keep=req.connection)
        return self._closing({"ok": True, "down_seconds": down})

    @staticmethod
    def _closing(obj):
        # The client must not reuse this connection: the listener may be closed now.
        response = json_response(obj)
        response.close = True
        return response

    # ---- faults and settings ---------------------------------------------------

    def faults_list(self, _req, _body):
        return json_response(self.app.faults.to_json())

    def faults_add(self, _req, body):
        try:
            fault = self.app.faults.add(body)
        except FaultError as err:
            _fail(str(err))
        return json_response(fault.to_json())

    def faults_clear(self, _req, _body):
        self.app.faults.clear()
        return json_response({"ok": True})

    def faults_remove(self, _req, _body, fault_id):
        if not self.app.faults.remove(int(fault_id)):
            _fail("no fault %s" % fault_id, 404)
        return json_response({"ok": True})

    def settings_get(self, _req, _body):
        return json_response(self.app.settings.to_json())

    def settings_set(self, _req, body):
        self.app.settings.update(self._object(body))
        with self.app.state.cond:
            self.app.state.cond.notify_all()
        return json_response(self.app.settings.to_json())

    def index_get(self, _req, _body):
        return json_response({"index": self.app.state.index})

    def index_set(self, _req, body):
        index = _number(self._object(body), "index", None, 1, 2**63)
        self.app.state.set_index(int(index))
        return json_response({"index": self.app.state.index})

    # ---- ACL -----------------------------------------------------------------

    def acl_get(self, _req, _body):
        acl = self.app.acl
        return json_response({"default_policy": acl.default_policy,
                              "tokens": [t.to_json() for t in acl.tokens.values()]})

    def acl_set(self, _req, body):
        policy = self._object(body).get("default_policy")
        if policy not in (None, "allow", "deny"):
            _fail("default_policy must be allow, deny or null (ACLs off)")
        self.app.acl.default_policy = policy
        return self.acl_get(None, None)

    def acl_token_set(self, _req, body):
        try:
            token = self.app.acl.set_token(self._object(body))
        except RuleError as err:
            _fail(str(err))
        return json_response(token.to_json())

    def acl_token_delete(self, _req, _body, secret):
        if self.app.acl.tokens.pop(secret, None) is None:
            _fail("no token %s" % secret, 404)
        return json_response({"ok": True})

    # ---- checks ----------------------------------------------------------------

    def check_set(self, _req, body):
        body = self._object(body)
        status = body.get("status")
        if not isinstance(status, str) or not status:
            # Any non-empty string is accepted so tests can feed clients an unknown status.
            _fail("status must be a non-empty string (passing, warning, critical, ...)")
        output = body.get("output", "")
        if not isinstance(output, str):
            _fail("output must be a string")
        state = self.app.state
        with state.write() as txn:
            catalog = state.catalog(body.get("datacenter"))
            if catalog is None:
                _fail("unknown datacenter")
            node = body.get("node") or self.app.agent.node
            check = catalog.update_check(txn, node, body.get("check_id"), status, output)
            if check is None:
                _fail("no check %r on node %r" % (body.get("check_id"), node), 404)
            return json_response(check.to_json())

    def check_run(self, _req, body):
        check_id = self._object(body).get("check_id")
        status = self.app.agent.run_check_now(check_id)
        if status is None:
            _fail("no HTTP/TCP check %r on this agent" % (check_id,), 404)
        with self.app.state.cond:
            check = self.app.agent.local_check(check_id)
            return json_response({"probe": status,
                                  "check": check.to_json() if check else None})

    def reap(self, _req, _body):
        return json_response({"reaped": self.app.agent.reap()})

    # ---- request log -------------------------------------------------------------

    def requests_get(self, req, _body):
        wait = req.param("wait")
        try:
            wait_s = to_seconds(parse_duration(wait)) if wait else 0.0
        except DurationError as err:
            _fail(str(err))
        entries = self.app.reqlog.query(int(req.param("since", "0")), req.param("path"),
                                        req.param("method"), min(max(wait_s, 0.0), 600.0))
        return json_response(entries)

    def requests_clear(self, _req, _body):
        self.app.reqlog.clear()
        return json_response({"ok": True})

    # ---- state -------------------------------------------------------------------

    def state_get(self, _req, _body):
        state = self.app.state
        with state.cond:
            catalogs = {}
            for name, catalog in state.catalogs.items():
                catalogs[name] = {
                    "nodes": [n.to_json() for n in catalog.nodes.values()],
                    "services": [s.to_json() for per in catalog.services.values()
                                 for s in per.values()],
                    "checks": [c.to_json() for per in catalog.checks.values()
                               for c in per.values()],
                    "service_index": dict(catalog.service_index),
                    "extinction_index": catalog.extinction_index,
                }
            return json_response({"index": state.index, "generation": state.generation,
                                  "catalogs": catalogs,
                                  "agent": {"services": sorted(self.app.agent.service_ids),
                                            "checks": sorted(self.app.agent.checks)}})

    def catalog_register(self, _req, body):
        """Bulk /v1/catalog/register in one raft index, without ACL checks."""
        items = body if isinstance(body, list) else [self._object(body)]
        state = self.app.state
        prepared = []
        for item in items:
            try:
                args = decode_struct(self._object(item), REGISTER_REQUEST)
            except DecodeError as err:
                _fail(str(err))
            catalog = state.catalog(args.get("Datacenter"))
            if catalog is None:
                _fail("No path to datacenter", 500)
            prepared.append((catalog, args, validate_register(args)))
        with state.write() as txn:
            for catalog, args, checks in prepared:
                try:
                    apply_registration(txn, catalog, args, checks)
                except CatalogError as err:
                    _fail(str(err), 500)
        return json_response({"registered": len(prepared), "index": state.index})

    def datacenter_add(self, _req, body):
        name = self._object(body).get("name")
        if not isinstance(name, str) or not name:
            _fail("name is required")
        self.app.state.add_datacenter(name)
        return json_response({"datacenters": sorted(self.app.state.catalogs)})
