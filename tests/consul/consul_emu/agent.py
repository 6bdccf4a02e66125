"""The local agent: services and checks registered through /v1/agent, their check runners,
maintenance mode and the critical-service reaper.

Registrations land in the local catalog at once (a real agent syncs them within moments).
All methods take the state lock; runner threads report back through _publish/_ttl_expired,
which ignore results from runners that were replaced or stopped in the meantime.
"""

import random
import threading
import time

from .checks import (IntervalRunner, StatusGate, TTLTimer, probe_http, probe_tcp,
                     truncate_output)
from .durations import SECOND, format_duration
from .errors import HTTPError
from .model import (CONSUL_SERVICE, CRITICAL, NODE_MAINT_CHECK_ID, PASSING,
                    SERF_CHECK_ID, SERVICE_MAINT_PREFIX, Check, Node, Service)

DEFAULT_SERVICE_MAINT_REASON = ("Maintenance mode is enabled for this service, but no reason "
                                "was provided. This is a default message.")
DEFAULT_NODE_MAINT_REASON = ("Maintenance mode is enabled for this node, but no reason was "
                             "provided. This is a default message.")
CONSUL_VERSION = "1.15.4"


class AgentConfig:
    """Agent settings from the command line."""

    def __init__(self, node_name, node_id, address, datacenter, fast_checks=False,
                 min_interval_s=1.0, deregister_min_s=60.0, reap_interval_s=30.0):
        self.node_name = node_name              # this agent's node
        self.node_id = node_id                  # its UUID
        self.address = address                  # its advertise address
        self.datacenter = datacenter            # local datacenter
        self.fast_checks = fast_checks          # first check run immediately
        self.min_interval_s = min_interval_s    # floor for check intervals (Consul: 1 s)
        self.deregister_min_s = deregister_min_s  # floor for DeregisterCriticalServiceAfter
        self.reap_interval_s = reap_interval_s  # how often the reaper looks (Consul: 30 s)


class AgentCheck:
    """Agent-side state of one check the agent owns."""

    __slots__ = ("check_id", "service_id", "spec", "runner", "ttl", "reap_after_s")

    def __init__(self, check_id, service_id, spec=None):
        self.check_id = check_id      # check ID on the local node
        self.service_id = service_id  # "" for node checks
        self.spec = spec              # CheckSpec, None for maintenance checks
        self.runner = None            # IntervalRunner for HTTP/TCP checks
        self.ttl = None               # TTLTimer for TTL checks
        self.reap_after_s = 0.0       # DeregisterCriticalServiceAfter, 0 = never

    def stop(self):
        if self.runner is not None:
            self.runner.stop()
        if self.ttl is not None:
            self.ttl.stop()


class Agent:
    """State owned by the emulated local agent."""

    def __init__(self, state, config):
        self.state = state
        self.config = config
        self.service_ids = set()   # services registered through this agent
        self.checks = {}           # check ID -> AgentCheck
        self._reaper_stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="reaper", daemon=True)

    @property
    def node(self):
        return self.config.node_name

    @property
    def catalog(self):
        return self.state.catalog()

    def start(self):
        self.bootstrap()
        self._reaper.start()

    def shutdown(self):
        self._reaper_stop.set()
        with self.state.cond:
            for check in self.checks.values():
                check.stop()

    # ---- bootstrap and wipe ------------------------------------------------

    def bootstrap(self):
        """Register this node, its serfHealth check and the consul service (index 1)."""
        addr = self.config.address
        with self.state.write() as txn:
            node = Node(self.node, addr, self.config.datacenter, self.config.node_id,
                        {"lan": addr, "lan_ipv4": addr, "wan": addr, "wan_ipv4": addr},
                        {"consul-network-segment": ""})
            self.catalog.ensure_node(txn, node)
            self.catalog.ensure_check(txn, Check(self.node, SERF_CHECK_ID, "Serf Health Status",
                                                 PASSING, output="Agent alive and reachable"))
            meta = {"raft_version": "3", "serf_protocol_current": "2",
                    "serf_protocol_max": "5", "serf_protocol_min": "1",
                    "version": CONSUL_VERSION}
            self.catalog.ensure_service(txn, Service(self.node, CONSUL_SERVICE, CONSUL_SERVICE,
                                                     port=8300, meta=meta))

    def wipe(self):
        """Stop every check runner and forget local registrations (agent restart)."""
        with self.state.cond:
            for check in self.checks.values():
                check.stop()
            self.checks.clear()
            self.service_ids.clear()

    # ---- local views -------------------------------------------------------

    def local_services(self):
        node_services = self.catalog.services.get(self.node, {})
        return [node_services[sid] for sid in sorted(self.service_ids) if sid in node_services]

    def local_service(self, service_id):
        if service_id not in self.service_ids:
            return None
        return self.catalog.services.get(self.node, {}).get(service_id)

    def local_check(self, check_id):
        if check_id not in self.checks:
            return None
        return self.catalog.checks.get(self.node, {}).get(check_id)

    def local_checks(self):
        node_checks = self.catalog.checks.get(self.node, {})
        return {cid: node_checks[cid] for cid in sorted(self.checks) if cid in node_checks}

    def checks_for_service(self, service_id):
        """Agent checks of a service plus the agent's node checks (ChecksForService(id, true))."""
        return [c for c in self.local_checks().values() if c.service_id in ("", service_id)]

    # ---- services ----------------------------------------------------------

    def add_service(self, svc, specs, replace_existing_checks):
        """Register or replace a local service with its checks (one raft write)."""
        with self.state.write() as txn:
            node_checks = self.catalog.checks[self.node]
            existing = {cid for cid, c in node_checks.items() if c.service_id == svc.id}
            self.catalog.ensure_service(txn, svc)
            self.service_ids.add(svc.id)
            kept = set()
            for number, spec in enumerate(specs, start=1):
                check_id = spec.check_id or "service:" + svc.id
                if not spec.check_id and len(specs) > 1:
                    check_id = "service:%s:%d" % (svc.id, number)
                kept.add(check_id)
                name = spec.name or "Service '%s' check" % svc.name
                self._add_check(txn, check_id, name, spec, svc.id)
            if replace_existing_checks:
                for check_id in existing - kept:
                    self._remove_check(txn, check_id)

    def remove_service(self, service_id):
        with self.state.write() as txn:
            for check_id in [cid for cid, c in self.checks.items() if c.service_id == service_id]:
                self.checks.pop(check_id).stop()
            self.catalog.delete_service(txn, self.node, service_id)
            self.service_ids.discard(service_id)

    # ---- checks ------------------------------------------------------------

    def add_check(self, check_id, name, spec, service_id):
        """Register a standalone check (/v1/agent/check/register)."""
        with self.state.write() as txn:
            self._add_check(txn, check_id, name, spec, service_id)

    def remove_check(self, check_id):
        with self.state.write() as txn:
            self._remove_check(txn, check_id)

    def _add_check(self, txn, check_id, name, spec, service_id):
        interval = format_duration(spec.interval) if spec.interval else ""
        timeout = format_duration(spec.timeout) if spec.timeout else ""
        check = Check(self.node, check_id, name, spec.status or CRITICAL, spec.notes,
                      service_id=service_id, check_type=spec.kind(), interval=interval,
                      timeout=timeout, definition=spec.definition())
        previous = self.catalog.checks[self.node].get(check_id)
        if previous is not None and check_id in self.checks:
            # Consul restores status and output of a check re-registered under the same ID.
            check.status, check.output = previous.status, previous.output
        old = self.checks.pop(check_id, None)
        if old is not None:
            old.stop()
        self.catalog.ensure_check(txn, check)
        agent_check = AgentCheck(check_id, service_id, spec)
        if spec.deregister_after > 0:
            agent_check.reap_after_s = max(spec.deregister_after / SECOND,
                                           self.config.deregister_min_s)
        self.checks[check_id] = agent_check
        self._start_runtime(agent_check)

    def _remove_check(self, txn, check_id):
        agent_check = self.checks.pop(check_id, None)
        if agent_check is not None:
            agent_check.stop()
        self.catalog.delete_check(txn, self.node, check_id)

    def _start_runtime(self, agent_check):
        spec = agent_check.spec
        kind = spec.kind()
        if kind in ("http", "tcp"):
            interval_s = max(spec.interval / SECOND, self.config.min_interval_s)
            first_s = 0.0 if self.config.fast_checks else random.uniform(0, interval_s)
            probe = (lambda: probe_http(spec)) if kind == "http" else (lambda: probe_tcp(spec))
            gate = StatusGate(spec.success_before_passing, spec.failures_before_warning,
                              spec.failures_before_critical)
            agent_check.runner = IntervalRunner(agent_check.check_id, probe, gate, interval_s,
                                                first_s, self._publish_for(agent_check.check_id))
            agent_check.runner.start()
        elif kind == "ttl":
            agent_check.ttl = TTLTimer(agent_check.check_id, spec.ttl / SECOND,
                                       self._expire_for(agent_check.check_id))
            agent_check.ttl.start()

    def _publish_for(self, check_id):
        def publish(runner, status, output):
            with self.state.write() as txn:
                agent_check = self.checks.get(check_id)
                if agent_check is None or agent_check.runner is not runner:
                    return
                self.catalog.update_check(txn, self.node, check_id, status, output,
                                          defer_output=True)
        return publish

    def _expire_for(self, check_id):
        def expire(timer, epoch, output):
            with self.state.write() as txn:
                agent_check = self.checks.get(check_id)
                if agent_check is None or agent_check.ttl is not timer or timer.epoch != epoch:
                    return
                self.catalog.update_check(txn, self.node, check_id, CRITICAL, output)
        return expire

    def update_ttl(self, check_id, status, output):
        """pass/warn/fail/update on a TTL check; 500 when the check has no TTL."""
        with self.state.write() as txn:
            agent_check = self.checks.get(check_id)
            if agent_check is None or agent_check.ttl is None:
                raise HTTPError(500, 'CheckID "%s" does not have associated TTL' % check_id)
            output = truncate_output(output, agent_check.spec.output_limit())
            self.catalog.update_check(txn, self.node, check_id, status, output,
                                      defer_output=True)
            agent_check.ttl.renew(output)

    def run_check_now(self, check_id):
        """Run an HTTP/TCP check immediately (control API); returns the raw probe status."""
        with self.state.cond:
            agent_check = self.checks.get(check_id)
            runner = agent_check.runner if agent_check is not None else None
        if runner is None:
            return None
        return runner.run_once()

    # ---- maintenance -------------------------------------------------------

    def enable_service_maintenance(self, service_id, reason):
        with self.state.write() as txn:
            svc = self.local_service(service_id)
            if svc is None:
                raise HTTPError(404, 'No service registered with ID "%s"' % service_id)
            check_id = SERVICE_MAINT_PREFIX + service_id
            if check_id in self.checks:
                return
            check = Check(self.node, check_id, "Service Maintenance Mode", CRITICAL,
                          reason or DEFAULT_SERVICE_MAINT_REASON, service_id=service_id,
                          check_type="maintenance")
            self.catalog.ensure_check(txn, check)
            self.checks[check_id] = AgentCheck(check_id, service_id)

    def disable_service_maintenance(self, service_id):
        with self.state.write() as txn:
            if self.local_service(service_id) is None:
                raise HTTPError(404, 'No service registered with ID "%s"' % service_id)
            if SERVICE_MAINT_PREFIX + service_id in self.checks:
                self._remove_check(txn, SERVICE_MAINT_PREFIX + service_id)

    def enable_node_maintenance(self, reason):
        with self.state.write() as txn:
            if NODE_MAINT_CHECK_ID in self.checks:
                return
            check = Check(self.node, NODE_MAINT_CHECK_ID, "Node Maintenance Mode", CRITICAL,
                          reason or DEFAULT_NODE_MAINT_REASON, check_type="maintenance")
            self.catalog.ensure_check(txn, check)
            self.checks[NODE_MAINT_CHECK_ID] = AgentCheck(NODE_MAINT_CHECK_ID, "")

    def disable_node_maintenance(self):
        with self.state.write() as txn:
            if NODE_MAINT_CHECK_ID in self.checks:
                self._remove_check(txn, NODE_MAINT_CHECK_ID)

    # ---- reaper ------------------------------------------------------------

    def _reap_loop(self):
        while not self._reaper_stop.wait(self.config.reap_interval_s):
            try:
                self.reap()
            except Exception:  # noqa: BLE001 - the reaper must keep running
                pass

    def reap(self):
        """Deregister services whose check stayed critical longer than its reap timeout."""
        with self.state.cond:
            now = time.monotonic()
            doomed = set()
            for check_id, agent_check in self.checks.items():
                if not agent_check.reap_after_s or not agent_check.service_id:
                    continue
                check = self.catalog.checks.get(self.node, {}).get(check_id)
                if check is None or check.status != CRITICAL or check.critical_since is None:
                    continue
                if now - check.critical_since > agent_check.reap_after_s:
                    doomed.add(agent_check.service_id)
            for service_id in doomed:
                self.remove_service(service_id)
            return sorted(doomed)
