"""Child processes of the benchmark harness, free ports, and /proc readers.

Every child runs in its own session (so a Ctrl-C in the terminal reaches only the
harness, which then stops the children in order), gets SIGKILL if the harness dies
(PR_SET_PDEATHSIG), and is registered so that stop_all() can stop its whole process
group at exit. Nothing here waits without a timeout.
"""

import ctypes
import os
import re
import signal
import socket
import subprocess
import time

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_children = []  # every Proc started and not yet stopped
_used_ports = set()


class ProcError(RuntimeError):
    """A child failed to start or to become ready."""


def _die_with_parent():
    # Runs in the child between fork and exec.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def preexec(cpus=None):
    """The preexec_fn of a child: die with the harness and, when cpus is a set, run only on
    those CPUs (set before exec, so every thread and process the child starts inherits it)."""
    if not cpus:
        return _die_with_parent

    def run():
        os.sched_setaffinity(0, cpus)
        _die_with_parent()
    return run


class Proc:
    """One long-running child (backend, proxy); stdout/stderr go to files in logdir."""

    def __init__(self, name, argv, logdir, stdin=subprocess.DEVNULL, cpus=None):
        self.name = name
        self.argv = argv
        self.cpus = cpus  # CPUs it was started on (None: not pinned)
        self.out_path = os.path.join(logdir, name + ".out")
        self.err_path = os.path.join(logdir, name + ".err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(
                argv, stdin=stdin, stdout=out, stderr=err, start_new_session=True,
                preexec_fn=preexec(cpus))
        self.pid = self.popen.pid
        _children.append(self)

    def alive(self):
        return self.popen.poll() is None

    def wait_line(self, prefix, timeout):
        """Waits for a stdout line starting with prefix; returns the rest of it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.out_path, "r", errors="replace") as f:
                for line in f:
                    if line.startswith(prefix) and line.endswith("\n"):
                        return line[len(prefix):].strip()
            if not self.alive():
                raise ProcError(f"{self.name} exited with {self.popen.returncode} "
                                f"before printing '{prefix}': {self.log_tail()}")
            time.sleep(0.02)
        raise ProcError(f"{self.name}: no '{prefix}' line within {timeout} s")

    def wait_listening(self, addrs, timeout):
        """Waits until a TCP connect to every HOST:PORT in addrs succeeds."""
        deadline = time.monotonic() + timeout
        pending = list(addrs)
        while pending:
            if not self.alive():
                raise ProcError(f"{self.name} exited with {self.popen.returncode} "
                                f"during startup: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise ProcError(f"{self.name}: {pending[0]} not accepting within "
                                f"{timeout} s: {self.log_tail()}")
            host, port = split_addr(pending[0])
            try:
                with socket.create_connection((host, port), timeout=1):
                    pending.pop(0)
            except OSError:
                time.sleep(0.05)

    def log_tail(self, n=600):
        try:
            with open(self.err_path, "r", errors="replace") as f:
                text = f.read()
        except OSError:
            return ""
        return " ".join(text[-n:].split())

    def pids(self):
        """The process and its live descendants (nginx workers, for instance)."""
        return [self.pid] + descendants(self.pid)

    def stop(self, timeout=5.0):
        """SIGTERM to the process group, SIGKILL after timeout; idempotent."""
        if self in _children:
            _children.remove(self)
        _signal_group(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        # The group may outlive its leader (nginx workers): always finish it off.
        _signal_group(self.pid, signal.SIGKILL)
        try:
            self.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass


def _signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all():
    """Stops every child still registered (newest first)."""
    for p in list(reversed(_children)):
        p.stop(timeout=3.0)


PROBE_DELAY = 0.3  # seconds after a tool's start when probe() looks at it (threads are up)


def run_tool(argv, timeout, stdin=subprocess.DEVNULL, cpus=None, probe=None):
    """Runs a short-lived tool; returns (exit status or None on timeout, stdout, stderr).

    cpus: run it only on these CPUs. probe(pid): called once PROBE_DELAY s after the start if
    the tool still runs then (to read /proc while it works).
    """
    p = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True, preexec_fn=preexec(cpus), text=True)
    try:
        if probe is not None:
            try:
                out, err = p.communicate(timeout=min(PROBE_DELAY, timeout))
                return p.returncode, out, err
            except subprocess.TimeoutExpired:
                probe(p.pid)  # communicate() again below loses no output
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err
    except subprocess.TimeoutExpired:
        p.terminate()
        try:
            out, err = p.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        return None, out, err + f"\n[harness] killed after {timeout} s timeout"
    except BaseException:
        p.kill()
        p.wait()
        raise


def free_port():
    """A port on 127.0.0.1 that nothing listens on now and that this run has not used."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return port
    raise ProcError("no free port")


def split_addr(addr):
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def descendants(pid):
    """Live descendants of pid, found by scanning /proc for parent links."""
    parent = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            parent[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        frontier += kids
    return found


def cpu_seconds(pids):
    """utime + stime of the processes (all their threads, live and exited), seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
        except (OSError, IndexError, ValueError):
            continue
    return total / ticks


def split_cpus(allowed, proxy_cpu=None):
    """--pin: (the proxy's CPU set, the set left to the load client and the backends) out of
    the CPUs `allowed`; the proxy gets proxy_cpu, by default the highest. ValueError with the
    reason when that cannot be done."""
    allowed = set(allowed)
    if len(allowed) < 2:
        raise ValueError(f"--pin needs 2 CPUs or more, but bench/run may use {len(allowed)} "
                         f"(CPU {','.join(map(str, sorted(allowed)))}): the proxy would share "
                         "its CPU with the load client and the backends")
    if proxy_cpu is None:
        proxy_cpu = max(allowed)
    if proxy_cpu not in allowed:
        raise ValueError(f"--proxy-cpu {proxy_cpu}: not one of the CPUs bench/run may use "
                         f"({','.join(map(str, sorted(allowed)))})")
    return {proxy_cpu}, allowed - {proxy_cpu}


def affinity(pids):
    """{thread id: sorted CPU list} for every thread of the processes (exited ones skipped)."""
    found = {}
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                found[tid] = sorted(os.sched_getaffinity(tid))
            except OSError:
                continue
    return found


def rss_bytes(pids):
    """Sum of VmRSS of the processes, bytes."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return total


def pipes_held(pids):
    """Distinct pipes that the processes hold a descriptor of."""
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("pipe:"):
                inodes.add(target)
    return len(inodes)


def sockstat_tcp_mem_bytes():
    """The 'mem' field of the TCP line of /proc/net/sockstat (pages), in bytes."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def slab_bytes():
    """Slab: from /proc/meminfo (system-wide kernel object caches), bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1]) * 1024
    return 0


_SS_ENTRY = re.compile(r"users:\(\((.*?)\)\)\s+skmem:\(([^)]*)\)", re.S)


def socket_mem(pids):
    """Kernel memory charged to the TCP sockets the processes hold, from ss -tm.

    Returns (bytes, sockets): per socket, receive queue (r) + send queue (w) +
    forward-allocated (f) + option memory (o) -- the per-socket counters whose sums
    /proc/net/sockstat reports system-wide -- or (None, None) if ss is unavailable.
    """
    try:
        r = subprocess.run(["ss", "-tmnpH", "state", "connected", "exclude", "time-wait"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    if r.returncode != 0:
        return None, None
    wanted = {str(p) for p in pids}
    total = count = 0
    for users, skmem in _SS_ENTRY.findall(r.stdout):
        if not wanted.intersection(re.findall(r"pid=(\d+)", users)):
            continue
        fields = {m[0]: int(m[1]) for m in re.findall(r"([a-z]+)(\d+)", skmem)}
        total += sum(fields.get(k, 0) for k in ("r", "w", "f", "o"))
        count += 1
    return total, count
