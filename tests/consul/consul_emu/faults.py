"""Fault injection rules for /v1 requests, set through the control API.

Each rule matches a path prefix (and optionally a method) and applies to every matching
request, or only to the next `count` ones. Latency rules add up; of the other rules the
first match in insertion order wins.
"""

import threading

# Presets name Consul's real failure answers.
PRESETS = {
    "no_leader": (500, "No cluster leader"),
    "no_servers": (500, "No known Consul servers"),
    "rate_limit": (429, "RPC rate limit exceeded"),
}
KINDS = ("hang", "error", "latency", "garbage", "oversize", "truncate", "drop") + tuple(PRESETS)
MAX_OVERSIZE_MIB = 1024


class FaultError(ValueError):
    """An invalid rule; the message says which field is wrong."""


def _number(spec, key, default, low, high):
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise FaultError("%s must be a number in [%s, %s]" % (key, low, high))
    return value


class Fault:
    """One fault rule."""

    def __init__(self, fault_id, spec):
        kind = spec.get("kind")
        if kind not in KINDS:
            raise FaultError("kind must be one of " + ", ".join(KINDS))
        self.id = fault_id                                  # handle for DELETE
        self.kind = kind                                    # see KINDS
        self.path = spec.get("path", "/v1/")                # path prefix to match
        self.method = spec.get("method")                    # None matches any method
        count = spec.get("count")
        self.remaining = None if count is None else int(_number(spec, "count", 1, 1, 1 << 30))
        status, body = PRESETS.get(kind, (500, "No cluster leader"))
        self.status = int(_number(spec, "status", status, 100, 599))   # for "error"
        self.body = spec.get("body", body)                  # for "error"
        self.ms = _number(spec, "ms", 0, 0, 3_600_000)      # for "latency"
        self.mib = _number(spec, "mib", 1, 0, MAX_OVERSIZE_MIB)  # for "oversize"
        self.hits = 0                                       # requests it applied to
        self.released = False                               # hang: set when cleared
        if not isinstance(self.path, str) or (self.method is not None
                                              and not isinstance(self.method, str)):
            raise FaultError("path and method must be strings")
        if not isinstance(self.body, str):
            raise FaultError("body must be a string")

    def matches(self, method, path):
        return path.startswith(self.path) and (self.method is None
                                               or self.method.upper() == method)

    def to_json(self):
        return {"id": self.id, "kind": self.kind, "path": self.path, "method": self.method,
                "remaining": self.remaining, "status": self.status, "body": self.body,
                "ms": self.ms, "mib": self.mib, "hits": self.hits}


class FaultTable:
    """Active fault rules; `cond` wakes requests hung by a rule when it is cleared."""

    def __init__(self):
        self.cond = threading.Condition()
        self.rules = []
        self._next_id = 1

    def add(self, spec):
        if not isinstance(spec, dict):
            raise FaultError("expected a JSON object")
        with self.cond:
            fault = Fault(self._next_id, spec)
            self._next_id += 1
            self.rules.append(fault)
            return fault

    def remove(self, fault_id):
        with self.cond:
            for fault in self.rules:
                if fault.id == fault_id:
                    self.rules.remove(fault)
                    fault.released = True
                    self.cond.notify_all()
                    return True
            return False

    def clear(self):
        with self.cond:
            for fault in self.rules:
                fault.released = True
            self.rules = []
            self.cond.notify_all()

    def take(self, method, path):
        """Consume matching rules: returns (added latency in seconds, fault or None)."""
        with self.cond:
            latency_ms = 0
            chosen = None
            for fault in list(self.rules):
                if not fault.matches(method, path):
                    continue
                if fault.kind == "latency":
                    latency_ms += fault.ms
                elif chosen is None:
                    chosen = fault
                else:
                    continue
                self._consume(fault)
            return latency_ms / 1000.0, chosen

    def _consume(self, fault):
        fault.hits += 1
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                # The rule stops matching, but requests it hung stay hung until cleared.
                self.rules.remove(fault)

    def wait_released(self, fault, still_valid):
        """Block until the hang rule is cleared or still_valid() turns false."""
        with self.cond:
            while not fault.released and still_valid():
                self.cond.wait(0.5)

    def to_json(self):
        with self.cond:
            return [fault.to_json() for fault in self.rules]


def oversize_chunks(mib):
    """(length, chunk iterator) for a valid JSON array of fake instances of about mib MiB."""
    entry = (b'{"Node":{"ID":"","Node":"bulk-node","Address":"192.0.2.1","Datacenter":"dc1",'
             b'"TaggedAddresses":null,"Meta":null,"CreateIndex":1,"ModifyIndex":1},'
             b'"Service":{"ID":"bulk","Service":"bulk","Tags":[],"Address":"192.0.2.1",'
             b'"Meta":null,"Port":1,"Weights":{"Passing":1,"Warning":1},'
             b'"EnableTagOverride":false,"CreateIndex":1,"ModifyIndex":1},"Checks":[],'
             b'"Padding":"' + b"x" * 700 + b'"}')
    count = max(1, int(mib * (1 << 20)) // (len(entry) + 1))
    length = 2 + count * len(entry) + (count - 1)

    def chunks():
        yield b"["
        per_chunk = 64
        written = 0
        while written < count:
            batch = min(per_chunk, count - written)
            body = b",".join([entry] * batch)
            yield body if written == 0 else b"," + body
            written += batch
        yield b"]"
    return length, chunks()
