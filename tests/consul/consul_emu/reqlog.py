"""Bounded log of the /v1 requests the emulator received, for tests to assert on."""

import collections
import threading
import time

MAX_BODY_LOGGED = 8192


class RequestLog:
    """Ring buffer of request records; waiters can block until a matching one arrives."""

    def __init__(self, capacity=5000):
        self.cond = threading.Condition()
        self.entries = collections.deque(maxlen=capacity)
        self.next_seq = 1

    def start(self, req, token):
        """Record a request as it arrives; returns the record to finish() later."""
        body = req.body[:MAX_BODY_LOGGED].decode("utf-8", "replace")
        entry = {
            "seq": 0,
            "time": time.time(),
            "method": req.method,
            "path": req.path,
            "query": req.raw_query,
            "params": req.params,
            "headers": dict(req.headers.items()),
            "token": token,
            "body": body,
            "status": None,
            "duration_ms": None,
            "wait_ms": None,      # blocking reads: the wait after default and cap
            "timeout_ms": None,   # blocking reads: wait plus the jitter drawn
        }
        with self.cond:
            entry["seq"] = self.next_seq
            self.next_seq += 1
            self.entries.append(entry)
            self.cond.notify_all()
        return entry

    def finish(self, entry, status, started):
        with self.cond:
            entry["status"] = status
            entry["duration_ms"] = round((time.monotonic() - started) * 1000, 3)

    def clear(self):
        with self.cond:
            self.entries.clear()

    def query(self, since=0, path=None, method=None, wait_s=0.0):
        """Records with seq > since matching path prefix and method, waiting up to wait_s."""
        deadline = time.monotonic() + wait_s
        with self.cond:
            while True:
                found = [dict(e) for e in self.entries
                         if e["seq"] > since
                         and (path is None or e["path"].startswith(path))
                         and (method is None or e["method"] == method.upper())]
                left = deadline - time.monotonic()
                if found or left <= 0:
                    return found
                self.cond.wait(left)
