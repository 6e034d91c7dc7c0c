"""Sockets a watchdog can reach: how a request's overall deadline and cancel work.

:func:`new_session` mounts an adapter whose connections register their
socket with the current request's :class:`Watch` (a thread-local set by
:func:`agent.auth.http.request`) when they are made or taken from the pool;
:func:`watchdog` shuts those sockets down when the deadline passes or the
cancel event is set, which wakes a blocked read in the requesting thread.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["CANCEL_CHECK", "Watch", "current", "new_session", "watchdog"]

#: How often the watchdog looks at a cancel event during a request, in seconds.
CANCEL_CHECK = 0.1


class Watch:
    """The sockets one request uses, so a watchdog can shut them down."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self.fired: str | None = None       # "deadline" or "cancel"
        self.lock = threading.Lock()

    def add(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self.lock:
            self.sockets.append(sock)
            fired = self.fired
        if fired is not None:
            _shutdown(sock)

    def shut(self, why: str) -> None:
        with self.lock:
            if self.fired is None:
                self.fired = why
            sockets = list(self.sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        # The plain-socket shutdown, also under TLS: it wakes a blocked recv
        # in the other thread without touching the TLS object it is using.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


current = threading.local()


def _register(sock: socket.socket | None) -> None:
    watch: Watch | None = getattr(current, "watch", None)
    if watch is not None:
        watch.add(sock)


# The socket is recorded when it is made (or taken from the pool), not looked
# up when the deadline passes: http.client drops conn.sock as soon as an
# answer says it will close, while the answer is still being read from it.
class WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _register(self.sock)


class WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _register(self.sock)


class WatchedPoolMixin:
    def _get_conn(self, timeout: float | None = None) -> Any:  # urllib3 internal hook
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        _register(getattr(conn, "sock", None))     # a kept-alive connection
        return conn


class WatchedHTTPPool(WatchedPoolMixin, HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class WatchedHTTPSPool(WatchedPoolMixin, HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


class WatchedAdapter(HTTPAdapter):
    """An adapter whose connections register with the current request's watch."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": WatchedHTTPPool,
                                                   "https": WatchedHTTPSPool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = {"http": WatchedHTTPPool, "https": WatchedHTTPSPool}
        return manager


def new_session(user_agent: str) -> requests.Session:
    """A ``requests.Session`` for identity-provider requests (watched sockets)."""
    session = requests.Session()
    session.headers["User-Agent"] = user_agent
    # Small JSON answers: compression saves nothing worth a decompressor's risk;
    # a server that compresses anyway is inflated here, bounded.
    session.headers["Accept-Encoding"] = "identity"
    adapter = WatchedAdapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session



def watchdog(watch: Watch, done: threading.Event, end: float,
              cancel: threading.Event | None) -> None:
    while True:
        left = end - time.monotonic()
        if left <= 0:
            watch.shut("deadline")
            return
        # Without a cancel event this is one wait to the deadline; with one,
        # it looks every CANCEL_CHECK seconds while the request is in flight.
        if done.wait(left if cancel is None else min(left, CANCEL_CHECK)):
            return
        if cancel is not None and cancel.is_set():
            watch.shut("cancel")
            return
