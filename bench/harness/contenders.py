"""The contenders: direct, sluice, HAProxy, nginx stream and the splice-fwd ceiling.

Each one is started with one listener per backend kind ({"echo": "127.0.0.1:9001", ...})
on free 127.0.0.1 ports, with its configuration written into the run's temp dir, in the
foreground as a child of the harness. start() returns {kind: "HOST:PORT"} to aim the load at.
"""

import os
import shutil
import subprocess
import time

from . import procs

ORDER = ["direct", "sluice", "haproxy", "nginx", "splice-fwd"]
PROXIES = ["sluice", "haproxy", "nginx", "splice-fwd"]

# HAProxy needs about 2 descriptors per connection plus 2 per pipe (maxpipes defaults to
# maxconn/4): 2.5 x 6000 = 15000 fits ulimit -n 20000 and leaves room for 4000 idle sessions.
HAPROXY_MAXCONN = 6000
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
START_TIMEOUT = 10


def _free_addr():
    return f"127.0.0.1:{procs.free_port()}"


class Contender:
    """Base: a set of child processes that forwards each kind to its backend."""

    name = "?"

    def __init__(self, bindir, tmpdir, threads):
        self.bindir = bindir
        self.tmpdir = tmpdir
        self.threads = threads
        self.procs = []
        self.starts = 0
        self.workdir = tmpdir

    def start(self, backends):
        """Starts with one listener per kind; retries with new ports if startup fails."""
        last = None
        for _ in range(3):
            self.starts += 1
            try:
                return self._start(backends)
            except procs.ProcError as e:
                last = e
                self.stop()
        raise procs.ProcError(f"{self.name}: could not start: {last}")

    def _start(self, backends):
        raise NotImplementedError

    def pids(self):
        return [pid for p in self.procs for pid in p.pids()]

    def alive(self):
        return all(p.alive() for p in self.procs)

    def log_tail(self):
        return " | ".join(p.log_tail() for p in self.procs if p.log_tail())

    def stop(self):
        for p in self.procs:
            p.stop()
        self.procs = []

    def _workdir(self):
        d = os.path.join(self.tmpdir, f"{self.name}-{self.starts}")
        os.makedirs(d, exist_ok=True)
        self.workdir = d
        return d


class Direct(Contender):
    name = "direct"
    threads_note = "no proxy"

    def _start(self, backends):
        return dict(backends)


class Sluice(Contender):
    name = "sluice"

    @property
    def threads_note(self):
        return f"workers = {self.threads}"

    def _start(self, backends):
        d = self._workdir()
        listen = {kind: _free_addr() for kind in backends}
        lines = ["[sluice]", f"workers = {self.threads}", "log_level = warn",
                 "shutdown_timeout = 1s", ""]
        for kind, addr in backends.items():
            lines += [f"[listener:{kind}]", f"bind = {listen[kind]}", f"service = {kind}", "",
                      f"[service:{kind}]", f"backends = {addr}", ""]
        cfg = os.path.join(d, "sluice.ini")
        with open(cfg, "w") as f:
            f.write("\n".join(lines))
        p = procs.Proc(f"sluice-{self.starts}", [os.path.join(self.bindir, "sluice"), "-c", cfg],
                       d)
        self.procs.append(p)
        p.wait_listening(listen.values(), START_TIMEOUT)
        return listen


class HAProxy(Contender):
    name = "haproxy"

    @property
    def threads_note(self):
        return f"nbthread {self.threads}"

    def _start(self, backends):
        d = self._workdir()
        listen = {kind: _free_addr() for kind in backends}
        lines = ["global", f"    nbthread {self.threads}", f"    maxconn {HAPROXY_MAXCONN}", "",
                 "defaults", "    mode tcp", "    option splice-auto",
                 f"    maxconn {HAPROXY_MAXCONN}", "    timeout connect 5s",
                 "    timeout client 10m", "    timeout server 10m", ""]
        for kind, addr in backends.items():
            lines += [f"listen {kind}", f"    bind {listen[kind]}", f"    server {kind}0 {addr}",
                      ""]
        cfg = os.path.join(d, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write("\n".join(lines))
        # -db: stay in the foreground, no master-worker: one process, nbthread threads.
        p = procs.Proc(f"haproxy-{self.starts}", ["haproxy", "-db", "-f", cfg], d)
        self.procs.append(p)
        p.wait_listening(listen.values(), START_TIMEOUT)
        return listen


class Nginx(Contender):
    name = "nginx"

    @property
    def threads_note(self):
        return f"worker_processes {self.threads}"

    def _start(self, backends):
        d = self._workdir()
        listen = {kind: _free_addr() for kind in backends}
        # proxy_half_close: pass a client's FIN on and keep the other direction open (off by
        # default; the bulk-up protocol needs it, as any request-then-FIN protocol does).
        servers = "".join(f"    server {{ listen {listen[k]}; proxy_pass {a}; "
                          "proxy_half_close on; }\n" for k, a in backends.items())
        conf = (f"load_module {NGINX_STREAM_MODULE};\n"
                "daemon off;\n"
                "master_process on;\n"
                f"worker_processes {self.threads};\n"
                "worker_rlimit_nofile 20000;\n"
                f"pid {d}/nginx.pid;\n"
                f"error_log {d}/error.log warn;\n"
                "events { worker_connections 9500; }\n"
                "stream {\n" + servers + "}\n")
        cfg = os.path.join(d, "nginx.conf")
        with open(cfg, "w") as f:
            f.write(conf)
        # -p/-e keep every path (prefix, startup error log) inside the temp dir.
        p = procs.Proc(f"nginx-{self.starts}",
                       ["nginx", "-p", d + "/", "-e", f"{d}/error.log", "-c", cfg], d)
        self.procs.append(p)
        p.wait_listening(listen.values(), START_TIMEOUT)
        # The master listens before it forks the workers: wait for them, or the first
        # /proc readings would miss the process that does the work.
        deadline = time.monotonic() + START_TIMEOUT
        while len(procs.descendants(p.pid)) < self.threads:
            if time.monotonic() > deadline or not p.alive():
                raise procs.ProcError(f"nginx: {self.threads} worker(s) not up: "
                                      f"{self.log_tail()}")
            time.sleep(0.02)
        return listen

    def log_tail(self):
        tail = super().log_tail()
        try:
            with open(os.path.join(self.workdir, "error.log"), errors="replace") as f:
                tail += " " + " ".join(f.read()[-600:].split())
        except OSError:
            pass
        return tail


class SpliceFwd(Contender):
    name = "splice-fwd"
    threads_note = "thread per direction (2 threads per connection, by design)"

    def _start(self, backends):
        d = self._workdir()
        listen = {}
        for kind, addr in backends.items():
            p = procs.Proc(f"splice-fwd-{kind}-{self.starts}",
                           [os.path.join(self.bindir, "bench", "splice-fwd"),
                            "--listen", "127.0.0.1:0", "--to", addr], d)
            self.procs.append(p)
            listen[kind] = p.wait_line("listening ", START_TIMEOUT)
        return listen


CLASSES = {"direct": Direct, "sluice": Sluice, "haproxy": HAProxy, "nginx": Nginx,
           "splice-fwd": SpliceFwd}


def make(name, bindir, tmpdir, threads):
    return CLASSES[name](bindir, tmpdir, threads)


def missing_requirement(name, bindir):
    """Why a contender cannot run here, or None."""
    if name == "sluice" and not os.access(os.path.join(bindir, "sluice"), os.X_OK):
        return f"{bindir}/sluice not built"
    if name == "splice-fwd" and not os.access(os.path.join(bindir, "bench", "splice-fwd"),
                                              os.X_OK):
        return f"{bindir}/bench/splice-fwd not built"
    if name == "haproxy" and not shutil.which("haproxy"):
        return "haproxy not installed"
    if name == "nginx":
        if not shutil.which("nginx"):
            return "nginx not installed"
        if not os.path.exists(NGINX_STREAM_MODULE):
            return f"{NGINX_STREAM_MODULE} missing (libnginx-mod-stream)"
    return None


def version(name, bindir):
    """One-line version string of a contender, or None."""
    argv = {"sluice": [os.path.join(bindir, "sluice"), "--version"],
            "haproxy": ["haproxy", "-v"], "nginx": ["nginx", "-v"]}.get(name)
    if not argv:
        return None
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (r.stdout + r.stderr).strip().splitlines()
    # "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://..." -> keep the first part
    return text[0].split(" - ")[0].replace("nginx version: ", "") if text else None
