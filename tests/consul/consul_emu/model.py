"""Catalog model: nodes, services and checks per datacenter, with Consul's raft-style indexes.

Every mutation runs inside State.write(), which hands out the next raft index and wakes
blocking readers only when a table really changed (Consul skips no-op writes the same way,
so an idempotent re-registration does not churn X-Consul-Index).
"""

import contextlib
import threading
import time

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
MAINTENANCE = "maintenance"
VALID_STATUSES = (PASSING, WARNING, CRITICAL)

NODE_MAINT_CHECK_ID = "_node_maintenance"
SERVICE_MAINT_PREFIX = "_service_maintenance:"
SERF_CHECK_ID = "serfHealth"
CONSUL_SERVICE = "consul"


class CatalogError(Exception):
    """A write the state store refuses; the HTTP layer answers 500 with str(self)."""


class Node:
    """A catalog node, serialised with Consul's field names."""

    __slots__ = ("id", "name", "address", "datacenter", "tagged_addresses", "meta",
                 "create_index", "modify_index")

    def __init__(self, name, address, datacenter, node_id="", tagged_addresses=None, meta=None):
        self.id = node_id                          # node UUID, "" when registered without one
        self.name = name                           # node name, unique per datacenter
        self.address = address                     # address clients dial when Service.Address is ""
        self.datacenter = datacenter               # datacenter the node lives in
        self.tagged_addresses = tagged_addresses   # {"lan": ..., "wan": ...} or None (JSON null)
        self.meta = meta                           # node metadata or None (JSON null)
        self.create_index = 0                      # raft index of the first registration
        self.modify_index = 0                      # raft index of the last change

    def content(self):
        """Everything a re-registration could change; equal content means a no-op write."""
        return (self.id, self.address, self.tagged_addresses, self.meta)

    def to_json(self):
        return {
            "ID": self.id,
            "Node": self.name,
            "Address": self.address,
            "Datacenter": self.datacenter,
            "TaggedAddresses": self.tagged_addresses,
            "Meta": self.meta,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


class Service:
    """One service instance on a node (Consul's NodeService)."""

    __slots__ = ("node", "id", "name", "tags", "address", "port", "meta", "weights",
                 "tagged_addresses", "enable_tag_override", "kind", "create_index",
                 "modify_index")

    def __init__(self, node, service_id, name, tags=None, address="", port=0, meta=None,
                 weights=None, tagged_addresses=None, enable_tag_override=False, kind=""):
        self.node = node                            # name of the node hosting the instance
        self.id = service_id                        # instance ID, unique per node
        self.name = name                            # service name (what health/service looks up)
        self.tags = list(tags or [])                # tags, never None
        self.address = address                      # "" means "use the node's address"
        self.port = port                            # port to dial
        self.meta = meta                            # string map or None (Consul emits null)
        self.weights = weights or {"Passing": 1, "Warning": 1}  # DNS/LB weights
        self.tagged_addresses = tagged_addresses or {}  # {"lan_ipv4": {"Address","Port"}, ...}
        self.enable_tag_override = enable_tag_override  # Consul's anti-entropy tag flag
        self.kind = kind                            # "" for typical services
        self.create_index = 0                       # raft index of the first registration
        self.modify_index = 0                       # raft index of the last change

    def content(self):
        return (self.name, tuple(self.tags), self.address, self.port, self.meta,
                self.weights, self.tagged_addresses, self.enable_tag_override, self.kind)

    def to_json(self):
        """The NodeService object as /v1/health/service returns it (Tags never null)."""
        out = {}
        if self.kind:
            out["Kind"] = self.kind
        out.update({
            "ID": self.id,
            "Service": self.name,
            "Tags": list(self.tags),
            "Address": self.address,
        })
        if self.tagged_addresses:
            out["TaggedAddresses"] = self.tagged_addresses
        out.update({
            "Meta": self.meta,
            "Port": self.port,
            "Weights": dict(self.weights),
            "EnableTagOverride": self.enable_tag_override,
            "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
            "Connect": {},
            "PeerName": "",
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        })
        return out


class Check:
    """A health check on a node; ServiceID "" makes it a node check such as serfHealth."""

    __slots__ = ("node", "check_id", "name", "status", "notes", "output", "service_id",
                 "service_name", "service_tags", "type", "interval", "timeout", "definition",
                 "create_index", "modify_index", "critical_since")

    def __init__(self, node, check_id, name="", status=CRITICAL, notes="", output="",
                 service_id="", check_type="", interval="", timeout="", definition=None):
        self.node = node                  # node name
        self.check_id = check_id          # unique per node
        self.name = name                  # human-readable name
        self.status = status              # passing | warning | critical
        self.notes = notes                # operator notes (maintenance reason)
        self.output = output              # last probe output
        self.service_id = service_id      # "" for node checks
        self.service_name = ""            # filled from the service on write
        self.service_tags = []            # copy of the service's tags
        self.type = check_type            # "http", "tcp", "ttl", "maintenance" or ""
        self.interval = interval          # Go duration string, "" when not periodic
        self.timeout = timeout            # Go duration string, "" when not applicable
        self.definition = definition or {}  # HealthCheckDefinition subset for display
        self.create_index = 0             # raft index of the first registration
        self.modify_index = 0             # raft index of the last change
        self.critical_since = None        # monotonic time it turned critical (reaper input)

    def content(self):
        return (self.name, self.status, self.notes, self.output, self.service_id, self.type,
                self.interval, self.timeout, self.definition)

    def to_json(self):
        return {
            "Node": self.node,
            "CheckID": self.check_id,
            "Name": self.name,
            "Status": self.status,
            "Notes": self.notes,
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "ServiceTags": list(self.service_tags),
            "Type": self.type,
            "Interval": self.interval,
            "Timeout": self.timeout,
            "ExposedPort": 0,
            "Definition": dict(self.definition),
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


def aggregate_status(checks):
    """Consul's HealthChecks.AggregatedStatus: maintenance > critical > warning > passing.

    An unknown status yields "" (unhealthy), exactly like the Go API client.
    """
    seen = set()
    maintenance = False
    for check in checks:
        if check.check_id == NODE_MAINT_CHECK_ID or check.check_id.startswith(SERVICE_MAINT_PREFIX):
            maintenance = True
            continue
        if check.status not in VALID_STATUSES:
            return ""
        seen.add(check.status)
    if maintenance:
        return MAINTENANCE
    for status in (CRITICAL, WARNING):
        if status in seen:
            return status
    return PASSING


class Txn:
    """One raft apply: every change inside it shares one index."""

    __slots__ = ("index", "changed")

    def __init__(self, index):
        self.index = index      # the index this write will commit at
        self.changed = False    # set by any table change; a no-op write commits nothing


class Catalog:
    """The catalog of one datacenter."""

    def __init__(self, name):
        self.name = name
        self.nodes = {}             # node name -> Node
        self.services = {}          # node name -> {service ID -> Service}
        self.checks = {}            # node name -> {check ID -> Check}
        self.instances = {}         # service name -> set of (node name, service ID)
        self.service_index = {}     # service name -> raft index of the last change touching it
        self.extinction_index = 0   # raft index at which some service lost its last instance
        self.table_index = {"nodes": 0, "services": 0, "checks": 0}  # max index per table

    # ---- index bookkeeping -------------------------------------------------

    def _touch_table(self, txn, table):
        self.table_index[table] = txn.index
        txn.changed = True

    def _touch_service_name(self, txn, name):
        self.service_index[name] = txn.index

    def _touch_node_services(self, txn, node):
        # A node or node-check change alters the health of every instance on the node.
        for svc in self.services.get(node, {}).values():
            self._touch_service_name(txn, svc.name)

    def _touch_for_check(self, txn, check):
        if check.service_id:
            svc = self.services.get(check.node, {}).get(check.service_id)
            if svc is not None:
                self._touch_service_name(txn, svc.name)
        else:
            self._touch_node_services(txn, check.node)

    def max_index(self):
        return max(self.table_index.values())

    def index_for_service(self, name):
        """The index health/service reports, following Consul's maxIndexForService."""
        if self.instances.get(name):
            return self.service_index.get(name, self.max_index())
        if self.extinction_index:
            return self.extinction_index
        return self.service_index.get(name) or self.max_index()

    # ---- writes ------------------------------------------------------------

    def ensure_node(self, txn, node):
        old = self.nodes.get(node.name)
        if old is not None and old.content() == node.content():
            return old
        node.create_index = old.create_index if old else txn.index
        node.modify_index = txn.index
        self.nodes[node.name] = node
        self.services.setdefault(node.name, {})
        self.checks.setdefault(node.name, {})
        self._touch_table(txn, "nodes")
        self._touch_node_services(txn, node.name)
        return node

    def ensure_service(self, txn, svc):
        if svc.node not in self.nodes:
            raise CatalogError("Missing node registration")
        old = self.services[svc.node].get(svc.id)
        if old is not None and old.content() == svc.content():
            return old
        svc.create_index = old.create_index if old else txn.index
        svc.modify_index = txn.index
        self.services[svc.node][svc.id] = svc
        if old is not None and old.name != svc.name:
            self._unlink_instance(txn, old)
        self.instances.setdefault(svc.name, set()).add((svc.node, svc.id))
        self._touch_service_name(txn, svc.name)
        self._touch_table(txn, "services")
        for check in self.checks[svc.node].values():
            if check.service_id == svc.id:
                check.service_name = svc.name
                check.service_tags = list(svc.tags)
        return svc

    def _unlink_instance(self, txn, svc):
        members = self.instances.get(svc.name)
        if members is not None:
            members.discard((svc.node, svc.id))
            if not members:
                del self.instances[svc.name]
                self.extinction_index = txn.index
        self._touch_service_name(txn, svc.name)

    def delete_service(self, txn, node, service_id):
        svc = self.services.get(node, {}).pop(service_id, None)
        if svc is None:
            return False
        for check_id in [c.check_id for c in self.checks[node].values()
                         if c.service_id == service_id]:
            del self.checks[node][check_id]
            self._touch_table(txn, "checks")
        self._unlink_instance(txn, svc)
        self._touch_table(txn, "services")
        return True

    def ensure_check(self, txn, check):
        if check.node not in self.nodes:
            raise CatalogError("Missing node registration")
        if check.service_id:
            svc = self.services[check.node].get(check.service_id)
            if svc is None:
                raise CatalogError("Missing service registration")
            check.service_name = svc.name
            check.service_tags = list(svc.tags)
        if not check.status:
            check.status = CRITICAL
        old = self.checks[check.node].get(check.check_id)
        if old is not None and old.content() == check.content():
            return old
        check.create_index = old.create_index if old else txn.index
        check.modify_index = txn.index
        check.critical_since = _critical_since(old, check.status)
        self.checks[check.node][check.check_id] = check
        if old is not None and old.service_id != check.service_id:
            self._touch_for_check(txn, old)
        self._touch_for_check(txn, check)
        self._touch_table(txn, "checks")
        return check

    def update_check(self, txn, node, check_id, status, output, defer_output=False):
        """Set a check's status and output; returns the check or None if it is unknown.

        With defer_output, an output-only change is stored without a new index, the way
        Consul's agent holds such changes back for check_update_interval.
        """
        check = self.checks.get(node, {}).get(check_id)
        if check is None:
            return None
        if check.status == status and (defer_output or check.output == output):
            check.output = output
            return check
        check.critical_since = _critical_since(check, status)
        check.status = status
        check.output = output
        check.modify_index = txn.index
        self._touch_for_check(txn, check)
        self._touch_table(txn, "checks")
        return check

    def delete_check(self, txn, node, check_id):
        check = self.checks.get(node, {}).pop(check_id, None)
        if check is None:
            return False
        self._touch_for_check(txn, check)
        self._touch_table(txn, "checks")
        return True

    def delete_node(self, txn, node):
        if node not in self.nodes:
            return False
        for service_id in list(self.services.get(node, {})):
            self.delete_service(txn, node, service_id)
        for check_id in list(self.checks.get(node, {})):
            self.delete_check(txn, node, check_id)
        del self.nodes[node]
        self.services.pop(node, None)
        self.checks.pop(node, None)
        self._touch_table(txn, "nodes")
        return True

    def clamp_indexes(self, ceiling):
        """Lower every stored index to at most ceiling (a snapshot restore's effect)."""
        for table in self.table_index:
            self.table_index[table] = min(self.table_index[table], ceiling)
        for name in self.service_index:
            self.service_index[name] = min(self.service_index[name], ceiling)
        self.extinction_index = min(self.extinction_index, ceiling)
        objects = list(self.nodes.values())
        for per_node in self.services.values():
            objects.extend(per_node.values())
        for per_node in self.checks.values():
            objects.extend(per_node.values())
        for obj in objects:
            obj.create_index = min(obj.create_index, ceiling)
            obj.modify_index = min(obj.modify_index, ceiling)

    # ---- reads -------------------------------------------------------------

    def service_instances(self, name):
        """[(Node, Service, [Check...])] for a service name, in Consul's (node, ID) order."""
        out = []
        grouped = {}  # node -> {service ID or "": [checks]}, built once per node
        for node_name, service_id in sorted(self.instances.get(name, ())):
            if node_name not in grouped:
                grouped[node_name] = by_service = {}
                for check in self.checks[node_name].values():
                    by_service.setdefault(check.service_id, []).append(check)
            by_service = grouped[node_name]
            checks = by_service.get("", []) + by_service.get(service_id, [])
            checks.sort(key=lambda c: c.check_id)
            out.append((self.nodes[node_name], self.services[node_name][service_id], checks))
        return out

    def services_summary(self):
        """{service name: sorted union of tags} as /v1/catalog/services returns it."""
        out = {}
        for name, members in self.instances.items():
            tags = set()
            for node_name, service_id in members:
                tags.update(self.services[node_name][service_id].tags)
            out[name] = sorted(tags)
        return out

    def node_checks(self, node):
        return sorted(self.checks.get(node, {}).values(), key=lambda c: c.check_id)


def _critical_since(old, new_status):
    if new_status != CRITICAL:
        return None
    if old is not None and old.status == CRITICAL and old.critical_since is not None:
        return old.critical_since
    return time.monotonic()


class State:
    """All catalogs plus the global raft index, guarded by one condition variable.

    Blocking readers wait on `cond`; every committed write notifies them. `generation`
    changes on an emulated agent restart so waiters know to drop their connection.
    """

    def __init__(self, local_dc, extra_dcs=()):
        self.cond = threading.Condition(threading.RLock())
        self.local_dc = local_dc
        self.extra_dcs = list(extra_dcs)
        self.index = 0
        self.generation = 0
        self.catalogs = {}
        self._reset_catalogs()

    def _reset_catalogs(self):
        self.catalogs = {dc: Catalog(dc) for dc in [self.local_dc] + self.extra_dcs}

    @contextlib.contextmanager
    def write(self):
        """Run one raft-like write; commits the next index only if something changed."""
        with self.cond:
            txn = Txn(self.index + 1)
            try:
                yield txn
            finally:
                # Commit even when the write failed half-way so indexes stay monotonic.
                if txn.changed:
                    self.index = txn.index
                    self.cond.notify_all()

    def catalog(self, dc=None):
        """The catalog for dc (default local) or None when no such datacenter exists."""
        return self.catalogs.get(dc or self.local_dc)

    def add_datacenter(self, dc):
        with self.cond:
            if dc not in self.catalogs:
                self.extra_dcs.append(dc)
                self.catalogs[dc] = Catalog(dc)

    def wipe(self):
        """Forget everything, as a dev agent does on restart; the index starts over."""
        with self.cond:
            self._reset_catalogs()
            self.index = 0
            self.generation += 1
            self.cond.notify_all()

    def set_index(self, index):
        """Move the raft index to `index`, lowering every stored index (snapshot restore)."""
        with self.cond:
            self.index = index
            for catalog in self.catalogs.values():
                catalog.clamp_indexes(index)
            self.cond.notify_all()
