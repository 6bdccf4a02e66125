"""HTTP/1.1 server plumbing: keep-alive handler, TCP and Unix listeners that can be closed
and reopened on the same port (agent restart), request body reading, response writing.
"""

import os
import socket
import socketserver
import ssl
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .errors import AbortConnection
from .web import Request, Response, text_response

MAX_BODY = 16 << 20        # bodies above this get 413 (Consul has no lower general cap)
IDLE_TIMEOUT_S = 600       # a keep-alive connection idle this long is closed
WRITE_CHUNK = 64 << 10


class BodyError(Exception):
    """The request body cannot be read; answer `status` and close the connection."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Handler(BaseHTTPRequestHandler):
    """One client connection; every request goes to server.app.handle()."""

    protocol_version = "HTTP/1.1"   # keep-alive, as libcurl expects
    timeout = IDLE_TIMEOUT_S

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            # The handshake runs here, on the connection's own thread, not in the accept loop.
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            # Go disables Nagle on every connection; without this, keep-alive clients that
            # send headers and body in two writes stall ~40 ms per request (delayed ACK).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.app.track(self.connection)

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.app.untrack(self.connection)

    def log_message(self, fmt, *args):
        if self.server.app.options.verbose:
            super().log_message(fmt, *args)

    def version_string(self):
        return "consul-emulator"

    def _dispatch(self):
        try:
            body = self._read_body()
        except BodyError as err:
            self.close_connection = True
            self._send(text_response(err.status, str(err)))
            return
        req = Request(self.command, self.path, self.headers, body, self.connection)
        try:
            response = self.server.app.handle(req)
        except AbortConnection:
            self._abort()
            return
        except Exception as err:  # noqa: BLE001 - every request gets a well-formed answer
            traceback.print_exc()
            response = text_response(500, "consul emulator internal error: %s" % err)
        try:
            self._send(response)
        except AbortConnection:
            self._abort()
        except OSError:
            self.close_connection = True

    def __getattr__(self, name):
        # Every verb reaches the router, which answers 405/404 as Consul does.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def send_error(self, code, message=None, explain=None):
        """Answer a malformed request like Go's server: plain text, HTTP/1.1, then close."""
        self.request_version = "HTTP/1.1"  # never fall back to a status-less HTTP/0.9 reply
        self.close_connection = True
        body = ("%d %s" % (code, self.responses.get(code, ("Error",))[0])).encode("utf-8")
        try:
            self.send_response_only(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            pass

    # ---- body ----------------------------------------------------------------

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            raise BodyError(400, "invalid Content-Length") from None
        if length < 0:
            raise BodyError(400, "invalid Content-Length")
        if length > MAX_BODY:
            raise BodyError(413, "http: request body too large")
        return self.rfile.read(length)

    def _read_chunked(self):
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise BodyError(400, "malformed chunked encoding") from None
            if size == 0:
                break
            total += size
            if total > MAX_BODY:
                raise BodyError(413, "http: request body too large")
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(parts)

    # ---- response --------------------------------------------------------------

    def _send(self, response: Response):
        length = response.length if response.chunks is not None else len(response.body)
        self.send_response_only(response.status)
        self.send_header("Date", self.date_time_string())
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(length))
        if response.close:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")
        if self.command == "HEAD":
            self.flush_headers()
            return
        if response.chunks is None and not response.truncate and length <= WRITE_CHUNK:
            # Headers and a small body leave in one segment.
            self._headers_buffer.append(response.body)
            self.flush_headers()
            return
        self.flush_headers()
        if response.truncate:
            self.wfile.write(response.body[:len(response.body) // 2])
            self.wfile.flush()
            raise AbortConnection()
        if response.chunks is not None:
            for chunk in response.chunks:
                self.wfile.write(chunk)
        else:
            for start in range(0, len(response.body), WRITE_CHUNK):
                self.wfile.write(response.body[start:start + WRITE_CHUNK])
        self.wfile.flush()

    def _abort(self):
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class QuietErrors:
    """Mixin: clients that vanish mid-request (restarts, killed tests) are not bugs."""

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            return  # a client that fails the TLS handshake is a test case, not a bug
        super().handle_error(request, client_address)


class TCPServer(QuietErrors, ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False      # server_close() must not wait for blocked handlers
    request_queue_size = 1024   # sluice opens many blocking queries at once
    allow_reuse_address = True  # rebind the same port after an emulated restart

    def server_bind(self):
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall
        # on machines without DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class TCPServer6(TCPServer):
    address_family = socket.AF_INET6


def tls_context(cert, key, client_ca=None):
    """Server-side TLS (--tls-cert/--tls-key); with client_ca, clients must show a certificate
    signed by it (Consul's verify_incoming)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class TLSMixin:
    """Wraps accepted TCP connections in TLS (handshake deferred to Handler.setup)."""

    tls = None

    def get_request(self):
        sock, addr = super().get_request()
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


class TLSServer(TLSMixin, TCPServer):
    pass


class TLSServer6(TLSMixin, TCPServer6):
    pass


class UnixServer(QuietErrors, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024

    def get_request(self):
        sock, _addr = super().get_request()
        return sock, ("unix", 0)  # handlers log client_address[0]


class Listeners:
    """The TCP listener (and optional Unix socket); can be closed and reopened."""

    def __init__(self, app, bind, port, unix_path=None, tls=None):
        self.app = app
        self.tls = tls              # ssl.SSLContext: the TCP listener speaks HTTPS
        self.bind = bind
        self.port = port            # 0 until first open picks one
        self.unix_path = unix_path
        self.servers = []
        self.threads = []

    def open(self):
        """Listen (on the same port as before, after a restart); returns the port."""
        if self.tls is not None:
            server_class = TLSServer6 if ":" in self.bind else TLSServer
        else:
            server_class = TCPServer6 if ":" in self.bind else TCPServer
        tcp = server_class((self.bind, self.port), Handler)
        tcp.app = self.app
        tcp.tls = self.tls
        self.port = tcp.server_address[1]
        servers = [tcp]
        if self.unix_path:
            if os.path.exists(self.unix_path):
                os.unlink(self.unix_path)
            unix = UnixServer(self.unix_path, Handler)
            unix.app = self.app
            servers.append(unix)
        for server in servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                      name="listener", daemon=True)
            thread.start()
            self.threads.append(thread)
        self.servers = servers
        return self.port

    def close(self):
        for server in self.servers:
            server.shutdown()
            server.server_close()
        self.servers = []
        self.threads = []
        if self.unix_path and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)
