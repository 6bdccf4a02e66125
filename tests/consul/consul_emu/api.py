"""The /v1 API: routing plus what every endpoint shares (query options, blocking, headers).

Endpoint handlers live in api_catalog.py (health, catalog, status) and api_agent.py; each
takes (api, req, path_rest) and returns a web.Response or raises errors.HTTPError.
"""

import random
import re
import time

from . import api_agent, api_catalog
from .acl import request_token
from .bexpr import FilterError, compile_filter
from .durations import MINUTE, DurationError, parse_duration, to_seconds
from .errors import AbortConnection, HTTPError
from .web import text_response

DEFAULT_WAIT = 5 * MINUTE   # Consul's defaultQueryTime
MAX_WAIT = 10 * MINUTE      # Consul's maxQueryTime
JITTER_FRACTION = 16        # jitter is up to wait/16
_UINT = re.compile(r"[0-9]+")

# (path, is_prefix, methods, handler)
ROUTES = [
    ("/v1/health/service/", True, ("GET",), api_catalog.health_service),
    ("/v1/health/checks/", True, ("GET",), api_catalog.health_checks),
    ("/v1/health/node/", True, ("GET",), api_catalog.health_node),
    ("/v1/catalog/services", False, ("GET",), api_catalog.catalog_services),
    ("/v1/catalog/service/", True, ("GET",), api_catalog.catalog_service),
    ("/v1/catalog/nodes", False, ("GET",), api_catalog.catalog_nodes),
    ("/v1/catalog/datacenters", False, ("GET",), api_catalog.catalog_datacenters),
    ("/v1/catalog/register", False, ("PUT",), api_catalog.catalog_register),
    ("/v1/catalog/deregister", False, ("PUT",), api_catalog.catalog_deregister),
    ("/v1/status/leader", False, ("GET",), api_catalog.status_leader),
    ("/v1/status/peers", False, ("GET",), api_catalog.status_peers),
    ("/v1/agent/self", False, ("GET",), api_agent.agent_self),
    ("/v1/agent/services", False, ("GET",), api_agent.agent_services),
    ("/v1/agent/checks", False, ("GET",), api_agent.agent_checks),
    ("/v1/agent/service/register", False, ("PUT",), api_agent.service_register),
    ("/v1/agent/service/deregister/", True, ("PUT",), api_agent.service_deregister),
    ("/v1/agent/service/maintenance/", True, ("PUT",), api_agent.service_maintenance),
    ("/v1/agent/service/", True, ("GET",), api_agent.agent_service),
    ("/v1/agent/maintenance", False, ("PUT",), api_agent.node_maintenance),
    ("/v1/agent/check/register", False, ("PUT",), api_agent.check_register),
    ("/v1/agent/check/deregister/", True, ("PUT",), api_agent.check_deregister),
    ("/v1/agent/check/pass/", True, ("PUT",), api_agent.check_pass),
    ("/v1/agent/check/warn/", True, ("PUT",), api_agent.check_warn),
    ("/v1/agent/check/fail/", True, ("PUT",), api_agent.check_fail),
    ("/v1/agent/check/update/", True, ("PUT",), api_agent.check_update),
    ("/v1/agent/health/service/name/", True, ("GET",), api_agent.health_by_name),
    ("/v1/agent/health/service/id/", True, ("GET",), api_agent.health_by_id),
]


class QueryOptions:
    """Consul's QueryOptions as parsed from a read request."""

    def __init__(self):
        self.dc = ""              # target datacenter
        self.token = ""           # ACL secret, "" for anonymous
        self.filter = ""          # bexpr expression
        self.stale = False        # ?stale
        self.consistent = False   # ?consistent
        self.cached = False       # ?cached
        self.index = 0            # ?index (0: do not block)
        self.wait = 0             # ?wait in ns (0: default)

    def consistency(self):
        if self.consistent:
            return "consistent"
        return "stale" if self.stale else "leader"


class API:
    """Dispatches /v1 requests; holds references to the emulator's components."""

    def __init__(self, app):
        self.app = app
        self.state = app.state
        self.agent = app.agent
        self.acl = app.acl
        self.settings = app.settings

    # ---- routing -----------------------------------------------------------

    def dispatch(self, req):
        route = self._find_route(req.path)
        if route is None:
            return text_response(404, "Invalid URL path: not a recognized HTTP API endpoint\n")
        path, is_prefix, methods, handler = route
        allow = ",".join(("OPTIONS",) + methods)
        if req.method == "OPTIONS":
            return text_response(200, "", {"Allow": allow})
        if req.method not in methods:
            return text_response(405, "method %s not allowed" % req.method, {"Allow": allow})
        return handler(self, req, req.path[len(path):] if is_prefix else "")

    @staticmethod
    def _find_route(path):
        best = None
        for route in ROUTES:
            route_path, is_prefix = route[0], route[1]
            if path == route_path or (is_prefix and path.startswith(route_path)):
                if best is None or len(route_path) > len(best[0]):
                    best = route
        return best

    # ---- shared request parsing -------------------------------------------

    def token(self, req):
        return request_token(req.params, req.headers)

    def query_options(self, req):
        """Consul's parse(): dc, token, filter, consistency, Cache-Control, wait/index."""
        opts = QueryOptions()
        opts.dc = req.param("dc") or self.state.local_dc
        opts.token = self.token(req)
        opts.filter = req.param("filter") or ""
        opts.stale = req.has("stale")
        opts.consistent = req.has("consistent")
        opts.cached = req.has("cached")
        max_stale = req.param("max_stale")
        if max_stale:
            try:
                if parse_duration(max_stale) > 0:
                    opts.stale = True
            except DurationError:
                raise HTTPError(400, 'Invalid max_stale value "%s"' % max_stale) from None
        if opts.stale and opts.consistent:
            raise HTTPError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
        if opts.cached and opts.consistent:
            raise HTTPError(400, "Cannot specify ?cached with ?consistent, conflicting semantics.")
        self._check_cache_control(req)
        self._parse_wait(req, opts)
        return opts

    @staticmethod
    def _check_cache_control(req):
        for directive in (req.headers.get("Cache-Control") or "").lower().split(","):
            directive = directive.strip()
            for prefix in ("max-age=", "stale-if-error="):
                if directive.startswith(prefix) and not _UINT.fullmatch(directive[len(prefix):]):
                    raise HTTPError(400, "Invalid Cache-Control header.")

    @staticmethod
    def _parse_wait(req, opts):
        wait = req.param("wait")
        if wait:
            try:
                opts.wait = parse_duration(wait)
            except DurationError:
                raise HTTPError(400, "Invalid wait time") from None
        index = req.param("index")
        if index:
            if not _UINT.fullmatch(index) or int(index) >= 1 << 64:
                raise HTTPError(400, "Invalid index")
            opts.index = int(index)

    def wait_options(self, req):
        """Only ?wait and ?index (agent-local blocking endpoints)."""
        opts = QueryOptions()
        self._parse_wait(req, opts)
        return opts

    def write_options(self, req, dc=None):
        """Options of a write: the body's datacenter (or the agent's) and the token."""
        opts = QueryOptions()
        opts.dc = dc or self.state.local_dc
        opts.token = self.token(req)
        return opts

    def rpc_prelude(self, opts, write=False):
        """What a server does before answering: route the dc, need a leader, resolve the token.

        Returns (authorizer, catalog).
        """
        catalog = self.state.catalog(opts.dc)
        if catalog is None:
            raise HTTPError(500, "No path to datacenter")
        if self.settings.leaderless and (write or not opts.stale):
            raise HTTPError(500, "No cluster leader")
        return self.acl.resolve(opts.token), catalog

    def compile_filter(self, expression, top_fields):
        """A predicate for ?filter=, or None when there is none; bad syntax is a 500."""
        if not expression:
            return None
        try:
            return compile_filter(expression, top_fields)
        except FilterError as err:
            raise HTTPError(500, "Failed to create boolean expression evaluator: %s" % err) \
                from None

    # ---- blocking and headers ---------------------------------------------

    @staticmethod
    def blocking_deadline(req, wait):
        """Monotonic deadline for a blocking read: wait (0 = 5 min) capped at 10 min plus
        up to wait/16 jitter. Recorded in the request log so tests can check the cap."""
        wait = wait if wait > 0 else DEFAULT_WAIT
        wait = min(wait, MAX_WAIT)
        timeout_s = to_seconds(wait) * (1 + random.random() / JITTER_FRACTION)
        entry = getattr(req, "log_entry", None)
        if entry is not None:
            entry["wait_ms"] = to_seconds(wait) * 1000
            entry["timeout_ms"] = round(timeout_s * 1000, 3)
        return time.monotonic() + timeout_s

    def blocking_query(self, req, opts, compute):
        """Run compute() -> (index, result) under the state lock, blocking like Consul.

        With ?index > 0 the query waits until the index moves past it or the wait (see
        blocking_deadline) runs out. Returns (index >= 1, result). A restart while
        waiting drops the connection.
        """
        deadline = self.blocking_deadline(req, opts.wait) if opts.index > 0 else None
        cond = self.state.cond
        with cond:
            generation = self.state.generation
            while True:
                index, result = compute()
                index = max(index, 1)
                if deadline is None or index > opts.index:
                    return index, result
                left = deadline - time.monotonic()
                if left <= 0:
                    return index, result
                cond.wait(left)
                if self.state.generation != generation:
                    raise AbortConnection()

    def meta_headers(self, index, opts, filtered=False):
        """X-Consul-* headers of a catalog/health read (Consul's setMeta)."""
        known_leader = self.settings.known_leader and not self.settings.leaderless
        headers = {
            "X-Consul-Index": str(max(index, 1)),
            "X-Consul-KnownLeader": "true" if known_leader else "false",
            "X-Consul-LastContact": str(self.settings.last_contact_ms if opts.stale else 0),
            "X-Consul-Effective-Consistency": opts.consistency(),
            "X-Consul-Query-Backend": "blocking-query",
        }
        if filtered and opts.token:
            headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
        if opts.cached:
            headers["X-Cache"] = "MISS"
        return headers
