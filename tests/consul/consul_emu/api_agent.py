"""Agent endpoints: local service and check registration, TTL updates, maintenance,
the agent's own views of its services and checks, and agent-local health.

Each handler is (api, req, rest) -> web.Response; `rest` is the path after the route.
"""

import hashlib
import ipaddress
import re
import time

from .agent import CONSUL_VERSION
from .checks import CheckSpec
from .decode import CHECK_TYPE, CHECK_UPDATE, SERVICE_DEFINITION, DecodeError, parse_body
from .errors import AbortConnection, HTTPError
from .model import CRITICAL, PASSING, VALID_STATUSES, WARNING, Service, aggregate_status
from .params import go_quote, parse_go_bool
from .web import JSON_TYPE, Response, empty_response, encode_json, json_response

_META_KEY = re.compile(r"[a-zA-Z0-9_-]+")
SCRIPTS_DISABLED = ("Scripts are disabled on this agent from remote calls; to enable, "
                    "configure 'enable_script_checks' to true")


# ---- JSON shapes -------------------------------------------------------------

def agent_service_json(svc, dc):
    """api.AgentService as buildAgentService makes it (Tags [] and Meta {} when unset)."""
    out = {}
    if svc.kind:
        out["Kind"] = svc.kind
    out.update({"ID": svc.id, "Service": svc.name, "Tags": list(svc.tags),
                "Meta": dict(svc.meta or {}), "Port": svc.port, "Address": svc.address})
    if svc.tagged_addresses:
        out["TaggedAddresses"] = svc.tagged_addresses
    passing = svc.weights.get("Passing", 0)
    out["Weights"] = {"Passing": passing if passing > 0 else 1,
                      "Warning": svc.weights.get("Warning", 0)}
    out["EnableTagOverride"] = svc.enable_tag_override
    out["Datacenter"] = dc
    return out


def content_hash(obj):
    """Stand-in for hashstructure: a stable 16-hex-digit hash of the response."""
    return hashlib.sha256(encode_json(obj)).hexdigest()[:16]


def _decode(body, struct):
    try:
        return parse_body(body, struct)
    except DecodeError as err:
        raise HTTPError(400, "Request decode failed: %s" % err) from None


def _unknown_service(service_id):
    return HTTPError(404, "Unknown service ID %s. Ensure that the service ID is passed, not the "
                          "service name." % go_quote(service_id))


# ---- reads ---------------------------------------------------------------------

def agent_self(api, req, _rest):
    """GET /v1/agent/self: enough of Config and Member to identify the agent."""
    authz = api.acl.resolve(api.token(req))
    cfg = api.agent.config
    authz.require("agent", cfg.node_name, "read")
    return json_response({
        "Config": {"Datacenter": cfg.datacenter, "PrimaryDatacenter": cfg.datacenter,
                   "NodeName": cfg.node_name, "NodeID": cfg.node_id, "Revision": "emulator",
                   "Server": True, "Version": CONSUL_VERSION},
        "Coord": None,
        "Member": {"Name": cfg.node_name, "Addr": cfg.address, "Port": 8301,
                   "Tags": {"dc": cfg.datacenter, "role": "consul", "id": cfg.node_id},
                   "Status": 1},
        "Meta": {"consul-network-segment": ""},
        "Stats": {},
    }, pretty=req.has("pretty"))


def _filtered_header(token, total, kept):
    # Agent-local endpoints only reveal ACL filtering to requests that sent a token.
    return {"X-Consul-Results-Filtered-By-ACLs": "true"} if token and total != kept else {}


def agent_services(api, req, _rest):
    """GET /v1/agent/services: {ID: AgentService} for services registered here."""
    token = api.token(req)
    authz = api.acl.resolve(token)
    predicate = _agent_filter(api, req, ("ID", "Service", "Tags", "Meta", "Port", "Address",
                                         "TaggedAddresses", "Weights", "Kind",
                                         "EnableTagOverride", "Datacenter"))
    with api.state.cond:
        services = api.agent.local_services()
        out = {s.id: agent_service_json(s, api.state.local_dc) for s in services
               if authz.allowed("service", s.name, "read")}
    headers = _filtered_header(token, len(services), len(out))
    if predicate is not None:
        out = {k: v for k, v in out.items() if predicate(v)}
    return json_response(out, headers=headers, pretty=req.has("pretty"))


def agent_checks(api, req, _rest):
    """GET /v1/agent/checks: {CheckID: HealthCheck} for checks registered here."""
    token = api.token(req)
    authz = api.acl.resolve(token)
    predicate = _agent_filter(api, req, ("Node", "CheckID", "Name", "Status", "Notes",
                                         "Output", "ServiceID", "ServiceName", "ServiceTags",
                                         "Type"))
    with api.state.cond:
        checks = api.agent.local_checks()
        out = {cid: c.to_json() for cid, c in checks.items() if _check_readable(authz, c)}
    headers = _filtered_header(token, len(checks), len(out))
    if predicate is not None:
        out = {k: v for k, v in out.items() if predicate(v)}
    return json_response(out, headers=headers, pretty=req.has("pretty"))


def _agent_filter(api, req, fields):
    return api.compile_filter(req.param("filter") or "", fields)


def _check_readable(authz, check):
    if check.service_id:
        return authz.allowed("service", check.service_name, "read")
    return authz.allowed("node", check.node, "read")


def agent_service(api, req, service_id):
    """GET /v1/agent/service/<id>: one local service, hash-blocking with ?hash= and ?wait=."""
    opts = api.wait_options(req)
    token = api.token(req)
    api.acl.resolve(token)
    wanted = req.param("hash") or ""
    deadline = api.blocking_deadline(req, opts.wait) if wanted else None
    with api.state.cond:
        generation = api.state.generation
        while True:
            current, body = _agent_service_snapshot(api, token, service_id)
            left = (deadline - time.monotonic()) if deadline is not None else 0
            if not wanted or current != wanted or left <= 0:
                return json_response(body, headers={"X-Consul-ContentHash": current},
                                     pretty=req.has("pretty"))
            api.state.cond.wait(left)
            if api.state.generation != generation:
                raise AbortConnection()


def _agent_service_snapshot(api, token, service_id):
    svc = api.agent.local_service(service_id)
    if svc is None:
        raise HTTPError(404, "unknown service ID: %s" % service_id)
    api.acl.resolve(token).require("service", svc.name, "read")
    body = agent_service_json(svc, api.state.local_dc)
    body["ContentHash"] = content_hash(body)
    return body["ContentHash"], body


def _health_payload(api, svc):
    checks = sorted(api.agent.checks_for_service(svc.id), key=lambda c: c.check_id)
    status = aggregate_status(checks)
    code = {PASSING: 200, WARNING: 429}.get(status, 503)
    return code, status, {"AggregatedStatus": status,
                          "Service": agent_service_json(svc, api.state.local_dc),
                          "Checks": [c.to_json() for c in checks]}


def _wants_text(req):
    if (req.headers.get("Accept") or "").startswith("text/plain"):
        return True
    return req.param("format") == "text"


def _health_response(req, code, status, payload):
    headers = {"X-Consul-Reason": status} if status else {}
    if _wants_text(req):
        return Response(code, status.encode("utf-8"), "text/plain", headers)
    return Response(code, encode_json(payload), JSON_TYPE, headers)


def health_by_name(api, req, name):
    """GET /v1/agent/health/service/name/<name>: 200 passing, 429 warning, 503 otherwise."""
    if name == "":
        raise HTTPError(400, "Missing service Name")
    api.acl.resolve(api.token(req)).require("service", name, "read")
    code, status, results = 404, "ServiceName %s Not Found" % name, []
    with api.state.cond:
        for svc in api.agent.local_services():
            if svc.name != name:
                continue
            scode, sstatus, payload = _health_payload(api, svc)
            results.append(payload)
            # Keep the worst status: passing 200 < warning 429 < critical 503.
            if code == 404 or code < scode:
                code, status = scode, sstatus
    return _health_response(req, code, status, results)


def health_by_id(api, req, service_id):
    """GET /v1/agent/health/service/id/<id>."""
    if service_id == "":
        raise HTTPError(400, "Missing serviceID")
    authz = api.acl.resolve(api.token(req))
    with api.state.cond:
        svc = api.agent.local_service(service_id)
        if svc is not None:
            authz.require("service", svc.name, "read")
            code, status, payload = _health_payload(api, svc)
            return _health_response(req, code, status, payload)
    reason = "ServiceId %s not found" % service_id
    return _health_response(req, 404, reason, {"AggregatedStatus": CRITICAL, "Checks": None,
                                               "Service": None})


# ---- service registration -------------------------------------------------------

def _validate_weights(weights):
    if weights is None:
        return
    if weights.get("Passing", 0) < 1:
        raise HTTPError(400, "Invalid Weights: Passing must be greater than 0")
    if weights.get("Warning", 0) < 0:
        raise HTTPError(400, "Invalid Weights: Warning must be greater or equal than 0")
    if weights.get("Passing", 0) > 65535 or weights.get("Warning", 0) > 65535:
        raise HTTPError(400, "Invalid Weights: DNS Weight must be between 0 and 65535")


def _meta_pair_error(key, value):
    if key == "":
        return "Key cannot be blank"
    if not _META_KEY.fullmatch(key):
        return "Key contains invalid characters"
    if len(key) > 128:
        return "Key is too long (limit: 128 characters)"
    if key.startswith("consul-"):
        return "Key prefix 'consul-' is reserved for internal use"
    if len(value) > 512:
        return "Value is too long (limit: 512 characters)"
    return None


def _validate_meta(meta):
    if not meta:
        return
    if len(meta) > 64:
        raise HTTPError(400, "Invalid Service Meta: Node metadata cannot contain more than 64 "
                             "key/value pairs")
    for key in sorted(meta):
        problem = _meta_pair_error(key, meta[key])
        if problem:
            raise HTTPError(400, "Invalid Service Meta: Couldn't load metadata pair('%s', '%s'): "
                                 "%s" % (key, meta[key], problem))


def _check_specs(definition):
    """ServiceDefinition.CheckTypes(): an empty Check is skipped, every Checks item counts."""
    raw = []
    if definition.get("Check"):
        raw.append(definition["Check"])
    raw.extend(definition.get("Checks") or [])
    specs = []
    for fields in raw:
        spec = CheckSpec(fields)
        problem = spec.validate()
        if problem:
            raise HTTPError(400, "Invalid check: %s" % problem)
        specs.append(spec)
    for spec in specs:
        if spec.status and spec.status not in VALID_STATUSES:
            raise HTTPError(400, "Status for checks must 'passing', 'warning', 'critical'")
    return specs


def _default_tagged_addresses(address, port):
    # The agent tags an IP service address as lan/wan for its family (Consul >= 1.5).
    try:
        family = "ipv4" if ipaddress.ip_address(address).version == 4 else "ipv6"
    except ValueError:
        return {}
    entry = {"Address": address, "Port": port}
    return {"lan_" + family: dict(entry), "wan_" + family: dict(entry)}


def _service_from_definition(node, definition):
    address = definition.get("Address", "")
    port = definition.get("Port", 0)
    tagged = _default_tagged_addresses(address, port)
    for key, value in (definition.get("TaggedAddresses") or {}).items():
        tagged[key] = {"Address": value.get("Address", ""), "Port": value.get("Port", 0)}
    weights = definition.get("Weights")
    return Service(node, definition.get("ID") or definition["Name"], definition["Name"],
                   definition.get("Tags"), address, port, definition.get("Meta"),
                   {"Passing": weights.get("Passing", 0), "Warning": weights.get("Warning", 0)}
                   if weights is not None else None,
                   tagged, definition.get("EnableTagOverride", False), definition.get("Kind", ""))


def service_register(api, req, _rest):
    """PUT /v1/agent/service/register."""
    definition = _decode(req.body, SERVICE_DEFINITION)
    if not definition.get("Name"):
        raise HTTPError(400, "Missing service name")
    if definition.get("Address", "") in ("0.0.0.0", "::", "[::]"):
        raise HTTPError(400, "Invalid service address")
    authz = api.acl.resolve(api.token(req))
    _validate_weights(definition.get("Weights"))
    _validate_meta(definition.get("Meta"))
    specs = _check_specs(definition)
    svc = _service_from_definition(api.agent.node, definition)
    with api.state.cond:
        authz.require("service", svc.name, "write")
        existing = api.agent.local_service(svc.id)
        if existing is not None and existing.name != svc.name:
            authz.require("service", existing.name, "write")
    if any(spec.kind() == "script" for spec in specs):
        raise HTTPError(500, SCRIPTS_DISABLED)
    replace = req.has("replace-existing-checks") and \
        req.param("replace-existing-checks") in ("", "true")
    api.agent.add_service(svc, specs, replace)
    return empty_response()


def _vet_service_update(api, authz, service_id):
    svc = api.agent.local_service(service_id)
    if svc is None:
        raise _unknown_service(service_id)
    authz.require("service", svc.name, "write")
    return svc


def service_deregister(api, req, service_id):
    """PUT /v1/agent/service/deregister/<id>; 404 for an unknown ID."""
    authz = api.acl.resolve(api.token(req))
    with api.state.cond:
        _vet_service_update(api, authz, service_id)
        api.agent.remove_service(service_id)
    return empty_response()


def _enable_param(req):
    if not req.has("enable"):
        raise HTTPError(400, "Missing value for enable")
    raw = req.param("enable")
    try:
        return parse_go_bool(raw)
    except ValueError:
        raise HTTPError(400, "Invalid value for enable: %s" % go_quote(raw)) from None


def service_maintenance(api, req, service_id):
    """PUT /v1/agent/service/maintenance/<id>?enable=true|false&reason=..."""
    if service_id == "":
        raise HTTPError(400, "Missing service ID")
    enable = _enable_param(req)
    authz = api.acl.resolve(api.token(req))
    with api.state.cond:
        _vet_service_update(api, authz, service_id)
        if enable:
            api.agent.enable_service_maintenance(service_id, req.param("reason", ""))
        else:
            api.agent.disable_service_maintenance(service_id)
    return empty_response()


def node_maintenance(api, req, _rest):
    """PUT /v1/agent/maintenance?enable=true|false&reason=..."""
    enable = _enable_param(req)
    authz = api.acl.resolve(api.token(req))
    authz.require("node", api.agent.node, "write")
    if enable:
        api.agent.enable_node_maintenance(req.param("reason", ""))
    else:
        api.agent.disable_node_maintenance()
    return empty_response()


# ---- checks -------------------------------------------------------------------------

def _vet_check_update(api, authz, check_id):
    check = api.agent.local_check(check_id)
    if check is None:
        raise HTTPError(404, "Unknown check ID %s. Ensure that the check ID is passed, not the "
                             "check name." % go_quote(check_id))
    if check.service_id:
        authz.require("service", check.service_name, "write")
    else:
        authz.require("node", api.agent.node, "write")


def _check_status_update(api, req, check_id, status, output):
    authz = api.acl.resolve(api.token(req))
    with api.state.cond:
        _vet_check_update(api, authz, check_id)
        api.agent.update_ttl(check_id, status, output)
    return empty_response()


def check_pass(api, req, check_id):
    return _check_status_update(api, req, check_id, PASSING, req.param("note", ""))


def check_warn(api, req, check_id):
    return _check_status_update(api, req, check_id, WARNING, req.param("note", ""))


def check_fail(api, req, check_id):
    return _check_status_update(api, req, check_id, CRITICAL, req.param("note", ""))


def check_update(api, req, check_id):
    """PUT /v1/agent/check/update/<id> with {"Status", "Output"}."""
    update = _decode(req.body, CHECK_UPDATE)
    status = update.get("Status", "")
    if status not in VALID_STATUSES:
        raise HTTPError(400, "Invalid check status: '%s'" % status)
    return _check_status_update(api, req, check_id, status, update.get("Output", ""))


def check_register(api, req, _rest):
    """PUT /v1/agent/check/register: a node check, or a check on a local service."""
    fields = _decode(req.body, CHECK_TYPE)
    if not fields.get("Name"):
        raise HTTPError(400, "Missing check name")
    spec = CheckSpec(fields)
    if spec.status and spec.status not in VALID_STATUSES:
        raise HTTPError(400, "Bad check status")
    authz = api.acl.resolve(api.token(req))
    problem = spec.validate()
    if problem:
        raise HTTPError(400, "Invalid check: %s" % problem)
    with api.state.cond:
        if spec.service_id:
            svc = api.agent.local_service(spec.service_id)
            if svc is None:
                raise HTTPError(404, "ServiceID %s does not exist" % go_quote(spec.service_id))
            authz.require("service", svc.name, "write")
        else:
            authz.require("node", api.agent.node, "write")
        if spec.kind() == "script":
            raise HTTPError(500, SCRIPTS_DISABLED)
        api.agent.add_check(spec.check_id or spec.name, spec.name, spec, spec.service_id)
    return empty_response()


def check_deregister(api, req, check_id):
    """PUT /v1/agent/check/deregister/<id>."""
    authz = api.acl.resolve(api.token(req))
    with api.state.cond:
        _vet_check_update(api, authz, check_id)
        api.agent.remove_check(check_id)
    return empty_response()

