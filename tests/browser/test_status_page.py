#!/usr/bin/env python3
"""The status page in a real browser: Debian's chromium, headless, driven over the DevTools
protocol on a pipe (--remote-debugging-pipe: no websocket, no extra package). It loads / from a
running sluice, and the test reads the rendered DOM: one row per instance with its state, and a
drained instance changes its row after the page's next refresh. It also saves a screenshot.

Environment (set by ctest): SLUICE_BIN, SLUICE_BACKEND_BIN, SLUICE_TEST_TMP; CHROMIUM (default
/usr/bin/chromium).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

WAIT_S = 30  # upper bound for anything the test waits for
TOKEN = "browser-test-token"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_backend(name, tmp):
    p = subprocess.Popen([os.environ["SLUICE_BACKEND_BIN"], "--listen", "127.0.0.1:0",
                          "--mode", "echo", "--hello", name],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening "):
        raise RuntimeError(f"backend {name} did not start: {line!r}")
    return p, int(line.rsplit(":", 1)[1])


def start_sluice(tmp, ports, admin_port, web_port):
    conf = os.path.join(tmp, "sluice.ini")
    with open(conf, "w") as f:
        f.write(f"[sluice]\nworkers = 1\nlog_level = info\n"
                f"[listener:web]\nbind = 127.0.0.1:{web_port}\nservice = api\n"
                f"[service:api]\nbackends = 127.0.0.1:{ports[0]}, 127.0.0.1:{ports[1]}\n"
                f"[admin]\nbind = 127.0.0.1:{admin_port}\ntoken = {TOKEN}\n")
    log = open(os.path.join(tmp, "sluice.log"), "w")
    p = subprocess.Popen([os.environ["SLUICE_BIN"], "-c", conf], stderr=log)
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return p
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("sluice's admin server did not come up")


class Browser:
    """Headless chromium and a DevTools session on one page, over fds 3 and 4."""

    def __init__(self, tmp):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def child_fds():
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        binary = os.environ.get("CHROMIUM", "/usr/bin/chromium")
        # The flags the machine notes give for a closed network: no background connections.
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--remote-debugging-pipe", f"--user-data-dir={tmp}/chrome",
             "--window-size=1200,800", "about:blank"],
            # close_fds runs after preexec_fn: 3 and 4 must be kept as well
            preexec_fn=child_fds, pass_fds=(3, 4, to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buf = b""
        self.next_id = 0
        self.session = None

    def call(self, method, params=None, session=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + WAIT_S
        while time.time() < deadline:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            chunk = os.read(self.from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buf += chunk
        raise RuntimeError(f"{method}: no answer")

    def open(self, url):
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.call("Target.attachToTarget",
                             {"targetId": target["targetId"], "flatten": True}, session=False)
        self.session = attached["sessionId"]
        self.call("Page.enable")
        self.call("Page.navigate", {"url": url})

    def eval(self, expression):
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return r.get("result", {}).get("value")

    def screenshot(self, path):
        import base64
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            os.close(self.to_chrome)
        except OSError:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


ROWS = ("JSON.stringify(Array.from(document.querySelectorAll('tr[data-instance]'))"
        ".map(r => [r.dataset.service, r.dataset.instance, r.dataset.state,"
        " r.querySelector('.state').textContent]))")
REFRESHED = "document.body.getAttribute('data-refreshed')"


def wait_rows(browser, want):
    """Polls the rendered DOM until want(rows) holds; returns the rows."""
    deadline = time.time() + WAIT_S
    rows = None
    while time.time() < deadline:
        text = browser.eval(ROWS)
        rows = json.loads(text) if text else []
        if want(rows):
            return rows
        time.sleep(0.1)
    raise AssertionError(f"the page never showed what was expected; it showed {rows}")


def drain(admin_port, instance):
    req = urllib.request.Request(
        f"http://127.0.0.1:{admin_port}/v1/services/api/instances/{instance}/drain",
        method="POST", headers={"Authorization": f"Bearer {TOKEN}"}, data=b"")
    with urllib.request.urlopen(req, timeout=5) as r:
        body = json.loads(r.read())
        assert body["ok"] and body["instance"]["state"] == "draining", body


def main():
    tmp = tempfile.mkdtemp(dir=os.environ.get("SLUICE_TEST_TMP", "/tmp"))
    procs = []
    browser = None
    try:
        b0, p0 = start_backend("b0", tmp)
        b1, p1 = start_backend("b1", tmp)
        procs += [b0, b1]
        admin_port, web_port = free_port(), free_port()
        sluice = start_sluice(tmp, (p0, p1), admin_port, web_port)
        procs.append(sluice)
        browser = Browser(tmp)
        browser.open(f"http://127.0.0.1:{admin_port}/")

        # one row per instance, both healthy, the state shown as text too
        rows = wait_rows(browser, lambda r: len(r) == 2)
        assert sorted(r[1] for r in rows) == sorted([f"127.0.0.1:{p0}", f"127.0.0.1:{p1}"]), rows
        assert all(r[0] == "api" and r[2] == "healthy" and r[3] == "healthy" for r in rows), rows
        first = int(browser.eval(REFRESHED))

        # a drained instance changes its row after the page's next refresh (every 2 s)
        drain(admin_port, f"127.0.0.1:{p1}")
        rows = wait_rows(browser, lambda r: any(x[1].endswith(f":{p1}") and x[2] == "draining"
                                                for x in r))
        assert int(browser.eval(REFRESHED)) > first, "the row changed without a refresh"
        states = {r[1]: r[2] for r in rows}
        assert states[f"127.0.0.1:{p0}"] == "healthy", states
        assert len(rows) == 2, rows
        colour = browser.eval("getComputedStyle(document.querySelector("
                              "'tr[data-state=draining] .state')).backgroundColor")
        assert colour and colour != "rgba(0, 0, 0, 0)", colour  # colour-coded
        shot = os.path.join(os.environ.get("SLUICE_TEST_TMP", tmp), "status-page.png")
        browser.screenshot(shot)
        print(f"status page rows: {rows}; screenshot {shot}")
        return 0
    finally:
        if browser is not None:
            browser.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
