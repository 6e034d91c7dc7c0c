"""A quiet HTTP server on a daemon thread that starts and stops at once.

Both sandbox servers (the identity provider and the telemetry receiver) are
started many times per test run, so ``stop()`` must not wait out the 0.5 s
poll of :meth:`socketserver.BaseServer.serve_forever`, and an idle server in
``entra-agent demo`` must not wake the CPU 20 times a second. The loop here
blocks in ``select`` on the listening socket and a self-pipe, with no timeout:
zero idle wake-ups, and ``stop()`` returns as soon as the pipe is written.
"""

from __future__ import annotations

import logging
import selectors
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agent.net import is_loopback

__all__ = ["QuietHandler", "SandboxServer", "SandboxService", "is_loopback"]

logger = logging.getLogger(__name__)


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that never writes access logs to stderr.

    Request lines can carry user codes (``/devicelogin?code=...``), so the
    access log is dropped entirely rather than filtered.
    """

    # HTTP/1.0: one request per connection. A stopped server then really is
    # gone for its clients; with keep-alive, a handler thread could keep
    # answering on a pooled connection after stop().
    protocol_version = "HTTP/1.0"
    server_version = "entra-agent-sandbox"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        pass

    def read_body(self, limit: int = 16 * 1024 * 1024) -> bytes:
        """The request body (by Content-Length), at most *limit* bytes."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        length = max(0, min(length, limit))
        return self.rfile.read(length) if length else b""

    def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer with *body*; tokens are in these answers, so never cache them."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Pragma", "no-cache")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def drop(self) -> None:
        """Close the connection without any answer (the client sees a ConnectionError)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup
        # that can take seconds on a board without a resolver; we never need it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return      # a client that went away (timeout, dropped) is not a server fault
        logger.exception("sandbox request handler failed")


class SandboxServer:
    """Owns one :class:`ThreadingHTTPServer` served from a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str, port: int, owner: object) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self._owner = owner
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self.stopping = threading.Event()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the sandbox server is not running (call start() first)")
        return self._server.server_port

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self, name: str) -> None:
        if self._server is not None:
            return
        self.stopping.clear()
        server = _Server((self._host, self._port), self._handler)
        server.owner = self._owner  # type: ignore[attr-defined]
        self._wake_r, self._wake_w = socket.socketpair()
        self._server = server
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        server, wake = self._server, self._wake_r
        assert server is not None and wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(server, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not self.stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is server and not self.stopping.is_set():
                        # Accepts one connection and hands it to a new thread.
                        server._handle_request_noblock()  # type: ignore[attr-defined]  # socketserver's own, untyped

    def stop(self) -> None:
        if self._server is None:
            return
        self.stopping.set()
        assert self._wake_w is not None and self._thread is not None
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(timeout=5.0)
        self._server.server_close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._server = self._thread = self._wake_r = self._wake_w = None


class SandboxService:
    """Start, stop and address plumbing shared by the sandbox's servers.

    Subclasses set ``_server`` (a :class:`SandboxServer`) and ``_thread_name``.
    """

    _server: SandboxServer
    _thread_name = "sandbox"

    def start(self):  # -> Self
        """Bind and serve from a daemon thread; returns self."""
        self._server.start(self._thread_name)
        return self

    def stop(self) -> None:
        """Stop serving; returns at once."""
        self._server.stop()

    def __enter__(self):  # -> Self
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` (IPv6 hosts in brackets)."""
        host = self._server._host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"
