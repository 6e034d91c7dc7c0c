"""A misbehaving identity provider on loopback, and a second server that
records whatever reaches it ("elsewhere").

:class:`HostileProvider` answers each path with scripted :class:`Reply`
objects, byte for byte as given: any status, any headers (a ``Location``
to elsewhere, ``Content-Encoding: gzip`` on a bomb), any body; and, over
real sockets, slowly (``trickle`` seconds between bytes of the headers or
the body) to test deadlines. It records every request that arrives, and how
many bytes of a trickled answer went out before the client hung up.

Paths: ``/.well-known/openid-configuration``, ``/devicecode``, ``/token``,
``/revoke``. When a path's queue is empty its default reply answers (set
with :meth:`HostileProvider.default`).
"""

from __future__ import annotations

import collections
import gzip
import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from agent.sandbox._http import QuietHandler, SandboxServer, SandboxService

DISCOVERY = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class Reply:
    """One scripted answer. *body*: bytes as is, anything else as JSON text
    (``allow_nan``: ``NaN`` and ``Infinity`` go out as written)."""

    status: int = 200
    body: Any = b""
    headers: tuple[tuple[str, str], ...] = ()
    trickle: float = 0.0              # seconds between bytes, real time
    trickle_headers: bool = False     # trickle the status line and headers too
    length: bool = True               # send Content-Length

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode("utf-8", "surrogatepass")
        return json.dumps(self.body, allow_nan=True).encode("utf-8", "surrogatepass")


def gzip_bomb(inflated: int = 256 * 1024 * 1024) -> bytes:
    """A gzip stream of zeros that inflates to *inflated* bytes (~256 KB per 256 MB)."""
    compressor = gzip.compress(b"\0" * (1024 * 1024), compresslevel=9)
    # Concatenated gzip members are one valid stream; build it cheaply.
    return compressor * (inflated // (1024 * 1024))


@dataclass
class Arrival:
    method: str
    path: str
    form: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class _Handler(QuietHandler):
    protocol_version = "HTTP/1.0"

    @property
    def owner(self) -> "HostileProvider":
        return self.server.owner  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def _answer(self, method: str) -> None:
        owner = self.owner
        body = self.read_body(1024 * 1024) if method == "POST" else b""
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"),
                                             keep_blank_values=True).items()}
        path = self.path.split("?", 1)[0]
        with owner.lock:
            owner.arrivals.append(Arrival(method, path, form, body))
            queue = owner.queues.get(path)
            reply = queue.popleft() if queue else owner.defaults.get(path)
        if reply is None:
            reply = Reply(404, {"error": "not_found"})
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        payload = reply.payload()
        head = [f"HTTP/1.0 {reply.status} Hostile\r\n"]
        names = {name.lower() for name, _ in reply.headers}
        if "content-type" not in names:
            head.append("Content-Type: application/json\r\n")
        if reply.length and "content-length" not in names:
            head.append(f"Content-Length: {len(payload)}\r\n")
        head += [f"{name}: {value}\r\n" for name, value in reply.headers]
        head.append("\r\n")
        raw_head = "".join(head).encode("latin-1", "replace")
        sent = 0
        stopping = self.owner._server.stopping
        try:
            if reply.trickle and reply.trickle_headers:
                for i in range(len(raw_head)):
                    self.wfile.write(raw_head[i:i + 1])
                    self.wfile.flush()
                    sent += 1
                    if stopping.wait(reply.trickle):
                        return
            else:
                self.wfile.write(raw_head)
                sent += len(raw_head)
            if reply.trickle:
                for i in range(len(payload)):
                    self.wfile.write(payload[i:i + 1])
                    self.wfile.flush()
                    sent += 1
                    if stopping.wait(reply.trickle):
                        return
            else:
                self.wfile.write(payload)
                sent += len(payload)
            self.wfile.flush()
            with self.owner.lock:
                self.owner.finished += 1
        except OSError:
            with self.owner.lock:
                self.owner.hung_up.append(sent)    # the client went away mid-answer


class HostileProvider(SandboxService):
    """Scripted answers per path; every arrival recorded (see module docstring)."""

    _thread_name = "hostile-idp"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queues: dict[str, collections.deque[Reply]] = {}
        self.defaults: dict[str, Reply] = {}
        self.arrivals: list[Arrival] = []
        self.hung_up: list[int] = []
        self.finished = 0
        self._server = SandboxServer(_Handler, "127.0.0.1", 0, self)

    @property
    def issuer(self) -> str:
        return self.origin

    def discovery_document(self, **changes: Any) -> dict[str, Any]:
        """A valid OpenID configuration of this server, with *changes*
        (a value of ``...`` removes the key)."""
        base = self.origin
        doc: dict[str, Any] = {
            "issuer": base,
            "device_authorization_endpoint": f"{base}/devicecode",
            "token_endpoint": f"{base}/token",
            "revocation_endpoint": f"{base}/revoke",
        }
        for key, value in changes.items():
            if value is ...:
                doc.pop(key, None)
            else:
                doc[key] = value
        return doc

    def script(self, path: str, *replies: Reply) -> None:
        """The next requests to *path* get *replies*, one each, in order."""
        with self.lock:
            self.queues.setdefault(path, collections.deque()).extend(replies)

    def default(self, path: str, reply: Reply | None) -> None:
        with self.lock:
            if reply is None:
                self.defaults.pop(path, None)
            else:
                self.defaults[path] = reply

    def reset(self) -> None:
        """Forget scripts, defaults and records (between generated cases)."""
        with self.lock:
            self.queues.clear()
            self.defaults.clear()
            self.arrivals.clear()
            self.hung_up.clear()
            self.finished = 0

    def took(self, path: str) -> list[Arrival]:
        with self.lock:
            return [a for a in self.arrivals if a.path == path]
