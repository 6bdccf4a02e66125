"""Catalog, health and status endpoints (the reads sluice's discovery depends on).

Each handler is (api, req, rest) -> web.Response; `rest` is the path after the route.
"""

import re

from .checks import CheckSpec
from .decode import DEREGISTER_REQUEST, REGISTER_REQUEST, DecodeError, parse_body
from .errors import HTTPError
from .model import CONSUL_SERVICE, PASSING, CatalogError, Check, Node, Service
from .params import bool_param
from .web import json_response

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
HEALTH_FIELDS = ("Node", "Service", "Checks")


def _pretty(req):
    return req.has("pretty")


def _node_meta_filters(req):
    filters = {}
    for pair in req.params.get("node-meta", []):
        key, _, value = pair.partition(":")
        filters[key] = value
    return filters


def _node_meta_ok(node, filters):
    meta = node.meta or {}
    return all(meta.get(key) == value for key, value in filters.items())


def _has_tags(svc, tags):
    # Consul matches tags case-insensitively and requires every requested tag.
    have = {t.lower() for t in svc.tags}
    return all(tag.lower() in have for tag in tags)


def filter_non_passing(entries):
    """Consul's filterNonPassing, including its swap-with-last reordering."""
    out = list(entries)
    count = len(out)
    i = 0
    while i < count:
        if any(check["Status"] != PASSING for check in out[i]["Checks"]):
            out[i] = out[count - 1]
            count -= 1
            continue
        i += 1
    return out[:count]


# ---- health ------------------------------------------------------------------

def health_service(api, req, name):
    """GET /v1/health/service/<name>."""
    opts = api.query_options(req)
    tags = req.params.get("tag", [])
    if name == "":
        raise HTTPError(400, "Missing service name")
    authz, catalog = api.rpc_prelude(opts)
    predicate = api.compile_filter(opts.filter, HEALTH_FIELDS)
    meta_filters = _node_meta_filters(req)

    def compute():
        entries, filtered = [], False
        for node, svc, checks in catalog.service_instances(name):
            if tags and not _has_tags(svc, tags):
                continue
            if meta_filters and not _node_meta_ok(node, meta_filters):
                continue
            if not (authz.allowed("node", node.name, "read")
                    and authz.allowed("service", svc.name, "read")):
                filtered = True
                continue
            entries.append({"Node": node.to_json(), "Service": svc.to_json(),
                            "Checks": [check.to_json() for check in checks]})
        if predicate is not None:
            entries = [entry for entry in entries if predicate(entry)]
        return catalog.index_for_service(name), (entries, filtered)

    index, (entries, filtered) = api.blocking_query(req, opts, compute)
    # Consul parses ?passing only after the RPC returned (a FIXME in its handler).
    try:
        passing = bool_param(req, "passing")
    except ValueError:
        raise HTTPError(400, "Invalid value for ?passing") from None
    if passing:
        entries = filter_non_passing(entries)
    return json_response(entries, headers=api.meta_headers(index, opts, filtered),
                         pretty=_pretty(req))


def health_checks(api, req, name):
    """GET /v1/health/checks/<service>: the service's checks on every node."""
    opts = api.query_options(req)
    if name == "":
        raise HTTPError(400, "Missing service name")
    authz, catalog = api.rpc_prelude(opts)

    def compute():
        out, filtered = [], False
        for _node, svc, checks in catalog.service_instances(name):
            if not authz.allowed("service", svc.name, "read"):
                filtered = True
                continue
            out.extend(c.to_json() for c in checks if c.service_id == svc.id)
        return catalog.index_for_service(name), (out, filtered)

    index, (out, filtered) = api.blocking_query(req, opts, compute)
    return json_response(out, headers=api.meta_headers(index, opts, filtered),
                         pretty=_pretty(req))


def health_node(api, req, node_name):
    """GET /v1/health/node/<node>: every check on one node."""
    opts = api.query_options(req)
    if node_name == "":
        raise HTTPError(400, "Missing node name")
    authz, catalog = api.rpc_prelude(opts)

    def compute():
        if not authz.allowed("node", node_name, "read"):
            return catalog.table_index["checks"], ([], True)
        checks = [c.to_json() for c in catalog.node_checks(node_name)
                  if not c.service_id or authz.allowed("service", c.service_name, "read")]
        return catalog.table_index["checks"], (checks, False)

    index, (out, filtered) = api.blocking_query(req, opts, compute)
    return json_response(out, headers=api.meta_headers(index, opts, filtered),
                         pretty=_pretty(req))


# ---- catalog reads -----------------------------------------------------------

def _reject_filter(opts):
    if opts.filter:
        raise HTTPError(500, "consul emulator: ?filter is not supported on this endpoint")


def catalog_services(api, req, _rest):
    """GET /v1/catalog/services: {name: [tags]} (blocking on the services table)."""
    opts = api.query_options(req)
    _reject_filter(opts)
    authz, catalog = api.rpc_prelude(opts)

    def compute():
        summary = catalog.services_summary()
        allowed = {name: tags for name, tags in summary.items()
                   if authz.allowed("service", name, "read")}
        return catalog.table_index["services"], (allowed, len(allowed) != len(summary))

    index, (out, filtered) = api.blocking_query(req, opts, compute)
    return json_response(out, headers=api.meta_headers(index, opts, filtered),
                         pretty=_pretty(req))


def _service_node_json(node, svc):
    return {
        "ID": node.id, "Node": node.name, "Address": node.address,
        "Datacenter": node.datacenter, "TaggedAddresses": node.tagged_addresses,
        "NodeMeta": node.meta, "ServiceKind": svc.kind, "ServiceID": svc.id,
        "ServiceName": svc.name, "ServiceTags": list(svc.tags), "ServiceAddress": svc.address,
        "ServiceTaggedAddresses": svc.tagged_addresses or None,
        "ServiceWeights": dict(svc.weights), "ServiceMeta": svc.meta or {},
        "ServicePort": svc.port, "ServiceEnableTagOverride": svc.enable_tag_override,
        "ServiceProxy": {"Mode": "", "MeshGateway": {}, "Expose": {}}, "ServiceConnect": {},
        "CreateIndex": svc.create_index, "ModifyIndex": svc.modify_index,
    }


def catalog_service(api, req, name):
    """GET /v1/catalog/service/<name>: ServiceNode list, no health."""
    opts = api.query_options(req)
    tags = req.params.get("tag", [])
    if name == "":
        raise HTTPError(400, "Missing service name")
    authz, catalog = api.rpc_prelude(opts)
    predicate = api.compile_filter(opts.filter, tuple(_service_node_json(
        Node("", "", ""), Service("", "", "")).keys()))

    def compute():
        out, filtered = [], False
        for node, svc, _checks in catalog.service_instances(name):
            if tags and not _has_tags(svc, tags):
                continue
            if not (authz.allowed("node", node.name, "read")
                    and authz.allowed("service", svc.name, "read")):
                filtered = True
                continue
            out.append(_service_node_json(node, svc))
        if predicate is not None:
            out = [item for item in out if predicate(item)]
        return catalog.index_for_service(name), (out, filtered)

    index, (out, filtered) = api.blocking_query(req, opts, compute)
    return json_response(out, headers=api.meta_headers(index, opts, filtered),
                         pretty=_pretty(req))


def catalog_nodes(api, req, _rest):
    """GET /v1/catalog/nodes."""
    opts = api.query_options(req)
    _reject_filter(opts)
    authz, catalog = api.rpc_prelude(opts)

    def compute():
        nodes = [n for _, n in sorted(catalog.nodes.items())]
        allowed = [n.to_json() for n in nodes if authz.allowed("node", n.name, "read")]
        return catalog.table_index["nodes"], (allowed, len(allowed) != len(nodes))

    index, (out, filtered) = api.blocking_query(req, opts, compute)
    return json_response(out, headers=api.meta_headers(index, opts, filtered),
                         pretty=_pretty(req))


def catalog_datacenters(api, req, _rest):
    """GET /v1/catalog/datacenters: local first, as sorted by distance."""
    return json_response([api.state.local_dc] + sorted(api.state.extra_dcs))


# ---- catalog writes ------------------------------------------------------------

def _is_any_address(address):
    return address in ("0.0.0.0", "::", "[::]")


def _valid_weights(weights):
    return (weights is not None and weights.get("Passing", 0) >= 1
            and 0 <= weights.get("Warning", 0) <= 65535 and weights.get("Passing", 0) <= 65535)


def _service_from_catalog(node_name, spec):
    weights = spec.get("Weights")
    tagged = {k: {"Address": v.get("Address", ""), "Port": v.get("Port", 0)}
              for k, v in (spec.get("TaggedAddresses") or {}).items()}
    return Service(node_name, spec["ID"], spec.get("Service", ""), spec.get("Tags"),
                   spec.get("Address", ""), spec.get("Port", 0), spec.get("Meta"),
                   # ToServiceNode silently replaces missing or invalid weights with 1/1.
                   {"Passing": weights["Passing"], "Warning": weights.get("Warning", 0)}
                   if _valid_weights(weights) else None,
                   tagged, spec.get("EnableTagOverride", False), spec.get("Kind", ""))


def _check_from_catalog(spec):
    definition = spec.get("Definition") or {}
    kind = spec.get("Type") or CheckSpec(definition).kind()
    return Check(spec["Node"], spec["CheckID"], spec.get("Name", ""), spec.get("Status", ""),
                 spec.get("Notes", ""), spec.get("Output", ""), spec.get("ServiceID", ""),
                 check_type=kind)


def validate_register(args):
    """Catalog.Register's argument checks; errors are plain RPC errors (HTTP 500)."""
    if not args.get("Node"):
        raise HTTPError(500, "Must provide node")
    node_id = args.get("ID", "")
    if node_id and not _UUID.fullmatch(node_id):
        raise HTTPError(500, "Bad node ID: uuid string is wrong length")
    if not args.get("Address") and not args.get("SkipNodeUpdate"):
        raise HTTPError(500, "Must provide address if SkipNodeUpdate is not set")
    svc = args.get("Service")
    if svc is not None and not svc.get("ID") and not svc.get("Service"):
        args["Service"] = svc = None  # an empty Service object registers nothing
    if svc is not None:
        if not svc.get("ID") and svc.get("Service"):
            svc["ID"] = svc["Service"]
        if svc.get("ID") and not svc.get("Service"):
            raise HTTPError(500, "Must provide service name (Service.Service) when service "
                                 "ID is provided")
        if _is_any_address(svc.get("Address", "")):
            raise HTTPError(500, "Invalid service address")
    checks = list(args.get("Checks") or [])
    if args.get("Check") is not None:
        checks.append(args["Check"])
    for check in checks:
        if not check.get("Node"):
            check["Node"] = args["Node"]
        if not check.get("CheckID") and check.get("Name"):
            check["CheckID"] = check["Name"]
    return checks


def _vet_register(authz, catalog, args, checks):
    """vetRegisterWithACL: node:write when the node changes, service:write per service."""
    node_name = args["Node"]
    existing = catalog.nodes.get(node_name)
    node_services = catalog.services.get(node_name, {})
    changes_node = existing is None or (not args.get("SkipNodeUpdate") and (
        existing.address != args.get("Address", "") or existing.id != args.get("ID", "")
        or (args.get("TaggedAddresses") or None) != existing.tagged_addresses
        or (args.get("NodeMeta") or None) != existing.meta))
    if changes_node:
        authz.require("node", node_name, "write")
    svc = args.get("Service")
    if svc is not None:
        if svc["Service"] != CONSUL_SERVICE:
            authz.require("service", svc["Service"], "write")
        other = node_services.get(svc["ID"])
        if other is not None:
            authz.require("service", other.name, "write")
    for check in checks:
        if check["Node"].lower() != node_name.lower():
            raise HTTPError(500, "Node '%s' for check '%s' doesn't match register request "
                                 "node '%s'" % (check["Node"], check.get("CheckID", ""),
                                                node_name))
        service_id = check.get("ServiceID", "")
        if not service_id:
            authz.require("node", node_name, "write")
        elif svc is None or svc["ID"] != service_id:
            other = node_services.get(service_id)
            if other is None:
                raise HTTPError(500, "Unknown service ID '%s' for check ID '%s'"
                                % (service_id, check.get("CheckID", "")))
            authz.require("service", other.name, "write")


def apply_registration(txn, catalog, args, checks):
    """The state store's EnsureRegistration (shared with the control API's bulk load)."""
    node_name = args["Node"]
    if not args.get("SkipNodeUpdate"):
        tagged = args.get("TaggedAddresses") or None
        catalog.ensure_node(txn, Node(node_name, args.get("Address", ""), catalog.name,
                                      args.get("ID", ""), tagged, args.get("NodeMeta") or None))
    svc = args.get("Service")
    if svc is not None:
        catalog.ensure_service(txn, _service_from_catalog(node_name, svc))
    for check in checks:
        catalog.ensure_check(txn, _check_from_catalog(check))


def decode_register(body):
    try:
        return parse_body(body, REGISTER_REQUEST)
    except DecodeError as err:
        raise HTTPError(400, "Request decode failed: %s" % err) from None


def catalog_register(api, req, _rest):
    """PUT /v1/catalog/register: add a node, a service and checks (any node)."""
    args = decode_register(req.body)
    opts = api.write_options(req, args.get("Datacenter"))
    authz, catalog = api.rpc_prelude(opts, write=True)
    checks = validate_register(args)
    with api.state.write() as txn:
        _vet_register(authz, catalog, args, checks)
        try:
            apply_registration(txn, catalog, args, checks)
        except CatalogError as err:
            raise HTTPError(500, str(err)) from None
    return json_response(True)


def catalog_deregister(api, req, _rest):
    """PUT /v1/catalog/deregister: remove a service, a check or a whole node."""
    try:
        args = parse_body(req.body, DEREGISTER_REQUEST)
    except DecodeError as err:
        raise HTTPError(400, "Request decode failed: %s" % err) from None
    opts = api.write_options(req, args.get("Datacenter"))
    authz, catalog = api.rpc_prelude(opts, write=True)
    node_name = args.get("Node", "")
    if not node_name:
        raise HTTPError(500, "Must provide node")
    with api.state.write() as txn:
        _vet_deregister(authz, catalog, args)
        if args.get("ServiceID"):
            catalog.delete_service(txn, node_name, args["ServiceID"])
        elif args.get("CheckID"):
            catalog.delete_check(txn, node_name, args["CheckID"])
        else:
            catalog.delete_node(txn, node_name)
    return json_response(True)


def _vet_deregister(authz, catalog, args):
    node_name = args["Node"]
    if authz.allowed("node", node_name, "write"):
        return
    if args.get("ServiceID"):
        svc = catalog.services.get(node_name, {}).get(args["ServiceID"])
        if svc is None:
            raise HTTPError(500, "Unknown service ID '%s'" % args["ServiceID"])
        authz.require("service", svc.name, "write")
    elif args.get("CheckID"):
        check = catalog.checks.get(node_name, {}).get(args["CheckID"])
        if check is None:
            raise HTTPError(500, "Unknown check ID '%s'" % args["CheckID"])
        if check.service_id:
            authz.require("service", check.service_name, "write")
        else:
            authz.require("node", node_name, "write")
    else:
        authz.require("node", node_name, "write")


# ---- status ------------------------------------------------------------------

def _status_dc(api, req):
    dc = req.param("dc") or api.state.local_dc
    if api.state.catalog(dc) is None:
        raise HTTPError(500, "No path to datacenter")


def status_leader(api, req, _rest):
    """GET /v1/status/leader: "ip:port", or "" without a leader."""
    _status_dc(api, req)
    return json_response("" if api.settings.leaderless else api.settings.leader_address)


def status_peers(api, req, _rest):
    """GET /v1/status/peers."""
    _status_dc(api, req)
    return json_response([api.settings.leader_address])
