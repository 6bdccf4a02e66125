"""Health checks the agent really runs: HTTP and TCP probes on an interval, TTL timers.

Mirrors Consul's agent/checks package: HTTP 2xx → passing, 429 → warning, anything else
or an error → critical; TCP connect → passing; the StatusHandler's SuccessBeforePassing /
FailuresBeforeWarning / FailuresBeforeCritical counters; TTL expiry → critical.
"""

import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from .durations import SECOND, format_duration
from .model import CRITICAL, PASSING, WARNING

DEFAULT_TIMEOUT = 10 * SECOND      # Consul's default for HTTP and TCP checks
DEFAULT_OUTPUT_MAX = 4096          # checks.DefaultBufSize
USER_AGENT = "Consul Health Check"
_MAX_BODY_READ = 1 << 20           # stop draining a probe body after 1 MiB


class CheckSpec:
    """One check definition from a registration (Consul's CheckType)."""

    def __init__(self, fields):
        get = fields.get
        self.check_id = get("CheckID") or get("ID") or ""    # requested CheckID
        self.name = get("Name", "")                          # requested Name
        self.notes = get("Notes", "")                        # operator notes
        self.status = get("Status", "")                      # initial status, "" = critical
        self.service_id = get("ServiceID", "")               # only for /agent/check/register
        self.http = get("HTTP", "")                          # URL for HTTP checks
        self.header = get("Header") or {}                    # {name: [values]}
        self.method = get("Method", "")                      # default GET
        self.body = get("Body", "")                          # request body for HTTP checks
        self.tls_skip_verify = get("TLSSkipVerify", False)   # skip certificate checks
        self.tcp = get("TCP", "")                            # host:port for TCP checks
        self.ttl = get("TTL", 0)                             # ns, TTL checks
        self.interval = get("Interval", 0)                   # ns between probes
        self.timeout = get("Timeout", 0)                     # ns, 0 means 10 s
        self.deregister_after = get("DeregisterCriticalServiceAfter", 0)  # ns, reaper
        self.success_before_passing = max(get("SuccessBeforePassing", 0), 0)
        self.failures_before_critical = max(get("FailuresBeforeCritical", 0), 0)
        self.failures_before_warning = (max(get("FailuresBeforeWarning", 0), 0)
                                        or self.failures_before_critical)
        self.output_max_size = get("OutputMaxSize", 0)
        self.script = get("Script", "") or bool(get("Args"))  # script checks (refused)
        self.grpc = get("GRPC", "")
        self.udp = get("UDP", "")
        self.alias = get("AliasService", "") or get("AliasNode", "")

    def kind(self):
        """Consul's CheckType.Type(): the check's "Type" field."""
        for kind, present in (("script", self.script), ("http", self.http), ("tcp", self.tcp),
                              ("udp", self.udp), ("grpc", self.grpc), ("ttl", self.ttl),
                              ("alias", self.alias)):
            if present:
                return kind
        return ""

    def validate(self):
        """Return Consul's CheckType.Validate() message, or None when valid."""
        interval_check = bool(self.script or self.http or self.tcp or self.udp or self.grpc)
        if self.interval > 0 and self.ttl > 0:
            return "Interval and TTL cannot both be specified"
        if interval_check and self.interval <= 0:
            return "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks"
        if interval_check and self.alias:
            return "Interval cannot be set for Alias checks"
        if self.alias and self.ttl > 0:
            return "TTL must be not be set for Alias checks"
        if not interval_check and not self.alias and self.ttl <= 0:
            return "TTL must be > 0 for TTL checks"
        if self.output_max_size < 0:
            return "MaxOutputMaxSize must be positive"
        return None

    def output_limit(self):
        return self.output_max_size or DEFAULT_OUTPUT_MAX

    def effective_timeout(self):
        return self.timeout if self.timeout > 0 else DEFAULT_TIMEOUT

    def definition(self):
        """The HealthCheckDefinition fields shown with the check."""
        out = {}
        if self.http:
            out.update({"HTTP": self.http, "Header": self.header, "Method": self.method,
                        "TLSSkipVerify": self.tls_skip_verify})
        if self.tcp:
            out["TCP"] = self.tcp
        if self.interval:
            out["Interval"] = format_duration(self.interval)
        if self.timeout:
            out["Timeout"] = format_duration(self.timeout)
        if self.deregister_after:
            out["DeregisterCriticalServiceAfter"] = format_duration(self.deregister_after)
        return out


def truncate_output(output, limit):
    """Consul's TTL output cap: keep `limit` bytes and say how much was captured."""
    if len(output) <= limit:
        return output
    return "%s ... (captured %d of %d bytes)" % (output[:limit], limit, len(output))


# ---- probes ----------------------------------------------------------------

def _describe_error(err, target):
    # Phrase Python's errors like Go's net/http so outputs look like a real agent's.
    reason = getattr(err, "reason", err)
    if isinstance(reason, ConnectionRefusedError):
        return "dial tcp %s: connect: connection refused" % target
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    return str(reason)


def _http_target(url):
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return url
    return "%s:%d" % (parts.hostname or "", port)


def _http_opener(spec):
    context = ssl.create_default_context()
    if spec.tls_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    # An empty ProxyHandler keeps http_proxy settings in the test environment out of it.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                       urllib.request.HTTPSHandler(context=context))


def _read_tail(response, limit, deadline):
    # Go copies the body into a ring buffer: the output keeps the LAST `limit` bytes.
    kept = b""
    total = 0
    while total < _MAX_BODY_READ and time.monotonic() < deadline:
        chunk = response.read(8192)
        if not chunk:
            break
        total += len(chunk)
        kept = (kept + chunk)[-limit:]
    return kept.decode("utf-8", "replace")


def probe_http(spec):
    """Run one HTTP check; returns (status, output) like Consul's CheckHTTP.check."""
    method = spec.method or "GET"
    timeout = spec.effective_timeout() / SECOND
    data = spec.body.encode("utf-8") if spec.body else None
    request = urllib.request.Request(spec.http, data=data, method=method)
    for name, values in spec.header.items():
        request.add_header(name, ", ".join(values))
    if not request.has_header("User-agent"):
        request.add_header("User-Agent", USER_AGENT)
    if not request.has_header("Accept"):
        request.add_header("Accept", "text/plain, text/*, */*")
    deadline = time.monotonic() + timeout
    try:
        response = _http_opener(spec).open(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        response = err
    except Exception as err:  # noqa: BLE001 - any failure is a critical check
        return CRITICAL, '%s "%s": %s' % (method.capitalize(), spec.http,
                                          _describe_error(err, _http_target(spec.http)))
    try:
        body = _read_tail(response, spec.output_limit(), deadline)
    except Exception:  # noqa: BLE001 - a body that breaks off still has a status line
        body = ""
    finally:
        response.close()
    code = response.status if hasattr(response, "status") else response.code
    output = "HTTP %s %s: %d %s Output: %s" % (method, spec.http, code, response.reason, body)
    if 200 <= code <= 299:
        return PASSING, output
    if code == 429:
        return WARNING, output
    return CRITICAL, output


def split_host_port(address):
    """Split "host:port" or "[v6]:port"; raises ValueError like net.SplitHostPort."""
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("address %s: missing port in address" % address)
        return host, int(rest[1:])
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError("address %s: missing port in address" % address)
    return host, int(port)


def probe_tcp(spec):
    """Run one TCP check: a successful connect is passing."""
    try:
        host, port = split_host_port(spec.tcp)
        conn = socket.create_connection((host, port), timeout=spec.effective_timeout() / SECOND)
        conn.close()
    except ConnectionRefusedError:
        return CRITICAL, "dial tcp %s: connect: connection refused" % spec.tcp
    except Exception as err:  # noqa: BLE001 - any failure is a critical check
        return CRITICAL, "dial tcp %s: %s" % (spec.tcp, err)
    return PASSING, "TCP connect %s: Success" % spec.tcp


# ---- status gating and scheduling ------------------------------------------

class StatusGate:
    """Consul's StatusHandler: publish only after enough consecutive results.

    The counters start AT their thresholds (as in Consul), so the very first result is
    published immediately; thresholds matter after the status has flipped once.
    """

    def __init__(self, success_before_passing, failures_before_warning, failures_before_critical):
        self.success_before_passing = success_before_passing
        self.failures_before_warning = failures_before_warning
        self.failures_before_critical = failures_before_critical
        self.successes = success_before_passing
        self.failures = failures_before_critical

    def admit(self, status):
        """The status to publish for a probe result, or None to keep the current one."""
        if status in (PASSING, WARNING):
            self.successes += 1
            self.failures = 0
            return status if self.successes >= self.success_before_passing else None
        self.failures += 1
        self.successes = 0
        if self.failures >= self.failures_before_critical:
            return status
        if self.failures >= self.failures_before_warning:
            return WARNING
        return None


class IntervalRunner:
    """Runs a probe every interval on its own daemon thread and publishes gated results."""

    def __init__(self, name, probe, gate, interval_s, first_delay_s, publish):
        self.probe = probe                  # () -> (status, output)
        self.gate = gate                    # StatusGate
        self.interval_s = interval_s        # seconds between the end of a run and the next
        self.first_delay_s = first_delay_s  # Consul staggers the first run inside the interval
        self.publish = publish              # (runner, status, output) -> None
        self.runs = 0                       # completed probes, for the control API
        self._stop = threading.Event()
        self._lock = threading.Lock()       # one probe at a time (thread vs. /_emu run)
        self._thread = threading.Thread(target=self._loop, name="check " + name, daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()

    def run_once(self):
        """Probe now and publish; returns the raw probe status (None once stopped)."""
        with self._lock:
            if self._stop.is_set():
                return None
            status, output = self.probe()
            self.runs += 1
            admitted = self.gate.admit(status)
            if admitted is not None:
                self.publish(self, admitted, output)
            return status

    def _loop(self):
        delay = self.first_delay_s
        while not self._stop.wait(delay):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - a failing probe must not kill the schedule
                pass
            delay = self.interval_s


class TTLTimer:
    """Turns a TTL check critical when no update arrives within the TTL."""

    def __init__(self, name, ttl_s, expire):
        self.ttl_s = ttl_s          # seconds a status stays valid
        self.expire = expire        # (timer, epoch, output) -> None, called without our lock
        self.epoch = 0              # bumped by renew(); stale expiries are ignored
        self.last_output = ""       # kept for the "TTL expired" message
        self._deadline = time.monotonic() + ttl_s
        self._fired = False
        self._stopped = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="ttl " + name, daemon=True)

    def start(self):
        self._thread.start()

    def renew(self, output):
        with self._cond:
            self.epoch += 1
            self.last_output = output
            self._deadline = time.monotonic() + self.ttl_s
            self._fired = False
            self._cond.notify_all()

    def stop(self):
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _next_expiry(self):
        """Wait until the TTL runs out; returns (epoch, output) or None when stopped."""
        with self._cond:
            while not self._stopped:
                left = self._deadline - time.monotonic()
                if self._fired or left > 0:
                    self._cond.wait(None if self._fired else left)
                    continue
                self._fired = True
                output = "TTL expired"
                if self.last_output:
                    output += " (last output before timeout follows): " + self.last_output
                return self.epoch, output
        return None

    def _loop(self):
        while True:
            expiry = self._next_expiry()
            if expiry is None:
                return
            self.expire(self, expiry[0], expiry[1])
