"""The upload's HTTP details: the bearer credential, a network failure's cause, the server's reason.

Causes come from the exception types requests and urllib3 raise (and the
``OSError`` underneath), never from their message text.

>>> network_reason(requests.ConnectionError(...ConnectionRefusedError...))
'the connection was refused'
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Iterator
from http.client import RemoteDisconnected
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import requests

__all__ = ["Bearer", "network_reason", "server_reason"]

#: Characters of a server's error text quoted in a result.
DESCRIPTION_MAX = 120


class Bearer:
    """``requests`` auth that sets ``Authorization: Bearer``; its repr never shows the token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: "requests.PreparedRequest") -> "requests.PreparedRequest":
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "Bearer(<token>)"


def _causes(exc: BaseException, depth: int = 0) -> Iterator[BaseException]:
    """*exc* and what it wraps: urllib3's ``reason``, exceptions in ``args``,
    ``__cause__``/``__context__`` (bounded)."""
    yield exc
    if depth >= 6:
        return
    inner: list[object] = [getattr(exc, "reason", None), exc.__cause__, exc.__context__, *exc.args]
    for item in inner:
        if isinstance(item, BaseException) and item is not exc:
            yield from _causes(item, depth + 1)


def _any(chain: Iterable[BaseException], *types: type[BaseException]) -> bool:
    return any(isinstance(e, types) for e in chain)


def network_reason(exc: Exception) -> str:
    """A short cause for a requests exception (its text can be very long)."""
    import requests
    from urllib3.exceptions import NameResolutionError, ProtocolError

    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed (is the certificate valid for this host?)"
    if isinstance(exc, requests.exceptions.ProxyError):
        return "the proxy refused the connection"
    chain = list(_causes(exc))
    if _any(chain, NameResolutionError, socket.gaierror):
        return "the DNS lookup failed"
    if _any(chain, ConnectionRefusedError):
        return "the connection was refused"
    codes = {getattr(e, "errno", None) for e in chain if isinstance(e, OSError)}
    if errno.ENETUNREACH in codes:
        return "the network is unreachable"
    if errno.EHOSTUNREACH in codes:
        return "there is no route to the host"
    if _any(chain, RemoteDisconnected):          # before ConnectionResetError: it is one
        return "the connection closed without an answer"
    if _any(chain, ConnectionResetError):
        return "the connection was reset"
    if _any(chain, ProtocolError):               # urllib3's "Connection aborted."
        return "the connection closed without an answer"
    return f"the request failed ({type(exc).__name__})"


def server_reason(response: "requests.Response", secrets: Iterable[str]) -> str:
    """The server's own short reason: ``error_description``/``error`` or a text line,
    one line, bounded, with any of *secrets* replaced."""
    text = ""
    try:
        data = response.json()
        if isinstance(data, dict):
            text = str(data.get("error_description") or data.get("error") or data.get("message") or "")
    except ValueError:
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("text/plain"):
            text = response.text
    text = " ".join(text.split())[:DESCRIPTION_MAX]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[token]")
    return text
