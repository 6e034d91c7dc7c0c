"""The one way this program talks HTTP to an identity provider.

Discovery, device authorization, token, refresh and revocation requests all
go through :func:`request`, which treats the provider as a hostile peer:

* **No redirects.** ``allow_redirects=False``: a 3xx is
  :class:`~agent.auth.errors.RedirectRefused` naming where it pointed, so a
  device code or refresh token is never re-sent to another origin (RFC 9700
  §4.11) and a ``Location: http://…`` never downgrades to plain http.
* **https only** (http on loopback), checked before anything is sent.
* **An overall deadline per request**, not only per read: connecting,
  headers and body together end by ``deadline`` seconds. A watchdog shuts
  the socket down when it passes (a server that trickles one byte a second
  cannot hold the client), or as soon as *cancel* is set (the button, a
  stop), so cancelling stays immediate.
* **A cap on the body** (:data:`MAX_BODY`), counted after decompression:
  gzip/deflate are inflated here in bounded steps, so a 256 KB bomb that
  inflates to 256 MB costs at most the cap in memory and is refused.
* **Safe JSON**: UTF-8 only, ``NaN``/``Infinity``/``1e999`` refused, nesting
  bounded (:data:`MAX_DEPTH`), ``RecursionError`` caught.

>>> answer = request(session, "POST", url, data=form, what="the token endpoint",
...                  deadline=10.0)                                  # doctest: +SKIP
>>> answer.status, answer.json()                                     # doctest: +SKIP
(200, {'access_token': ...})
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from agent.auth.errors import (
    AnswerTooLarge,
    AnswerTooSlow,
    InsecureEndpoint,
    ProviderUnavailable,
    RedirectRefused,
    UnusableAnswer,
    origin,
    unavailable,
)
from agent.auth.safejson import MAX_DEPTH, not_json, parse_json
from agent.auth.watch import Watch, current, new_session, watchdog
from agent.errors import CancelledError
from agent.net import is_loopback

__all__ = [
    "MAX_BODY", "MAX_DEPTH", "CONNECT_TIMEOUT", "DEFAULT_DEADLINE", "Answer", "request",
    "parse_json", "new_session", "require_secure",
]

log = logging.getLogger(__name__)

#: Largest answer body read, in bytes after decompression. Discovery
#: documents are a few KB, token answers (with an ID token) under 16 KB.
MAX_BODY = 256 * 1024
#: Longest wait for a TCP (and TLS) connection, in seconds, within the deadline.
CONNECT_TIMEOUT = 10.0
#: Overall deadline of one request when the caller gives none, in seconds.
DEFAULT_DEADLINE = 30.0
#: Bytes read from the socket per step (compressed bytes when encoded).
READ_CHUNK = 16 * 1024


@dataclass(frozen=True)
class Answer:
    """One whole answer: status, headers (lower-case names), decoded body."""

    status: int
    url: str
    body: bytes = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    what: str = "the identity provider"

    def json(self) -> Any:
        """The body as JSON, or raise :class:`ProviderUnavailable` (not JSON)
        or :class:`InvalidAnswer` (non-finite numbers, too deep)."""
        return parse_json(self.body, self.what, self.url)

    def json_or_none(self) -> Any:
        """The body as JSON, or None when it is not usable JSON."""
        try:
            return self.json()
        except ProviderUnavailable:
            return None


def require_secure(url: str, what: str = "endpoint") -> str:
    """Return *url* if it is https, or http on loopback; else raise
    :class:`InsecureEndpoint`.

    >>> require_secure("http://127.0.0.1:8400/token")
    'http://127.0.0.1:8400/token'
    """
    from agent.textsafe import clean
    if not isinstance(url, str) or not all(0x21 <= ord(ch) < 0x7F for ch in url):
        raise InsecureEndpoint(f"{what} {clean(url if isinstance(url, str) else '', 200)!r} is not "
                               "a valid URL (spaces, control or non-ASCII characters)",
                               "give a full https:// address")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port
    except (ValueError, AttributeError, TypeError):
        raise InsecureEndpoint(f"{what} {clean(str(url), 200)!r} is not a valid URL",
                               "give a full https:// address") from None
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and is_loopback(host):
        return url
    shown = clean(url, 200)
    if parts.scheme == "http":
        raise InsecureEndpoint(
            f"{what} {shown} uses plain http on a non-loopback host",
            "use https://; plain http is allowed only for 127.0.0.1, ::1 and localhost",
        )
    raise InsecureEndpoint(f"{what} {shown!r} is not an https:// URL",
                           "give a full https:// address")



# -- the request ----------------------------------------------------------------------

def request(session: requests.Session, method: str, url: str, *, what: str,
            deadline: float = DEFAULT_DEADLINE, data: dict[str, str] | None = None,
            cancel: threading.Event | None = None, max_bytes: int = MAX_BODY) -> Answer:
    """Send one request to an identity provider and read its whole answer.

    *deadline* is the overall budget in seconds (connect, headers, body).
    *what* names the endpoint in messages ("the token endpoint").

    :raises InsecureEndpoint: *url* is not https (nor http on loopback).
    :raises RedirectRefused: the answer is a 3xx.
    :raises AnswerTooLarge: the body is (or inflates to) more than *max_bytes*.
    :raises AnswerTooSlow: the answer was not whole within *deadline*.
    :raises ProviderUnavailable: the connection failed.
    :raises CancelledError: *cancel* was set meanwhile.
    """
    require_secure(url, what)
    if cancel is not None and cancel.is_set():
        raise CancelledError("Authentication cancelled by user")
    deadline = max(0.05, float(deadline))
    end = time.monotonic() + deadline
    watch = Watch()
    done = threading.Event()
    guard = threading.Thread(target=watchdog, args=(watch, done, end, cancel),
                             name="idp-request-deadline", daemon=True)
    current.watch = watch
    guard.start()
    response: requests.Response | None = None
    try:
        try:
            response = session.request(
                method, url, data=data, headers={"Accept": "application/json"},
                allow_redirects=False, stream=True,
                timeout=(min(CONNECT_TIMEOUT, deadline), deadline),
            )
            current.watch = None
            if 300 <= response.status_code < 400:
                raise _redirect(response, what)
            body = _read_body(response, what, url, end, max_bytes, watch)
        except (requests.RequestException, urllib3.exceptions.HTTPError,
                http.client.HTTPException, OSError, _Interrupted) as exc:
            _raise_for(watch, exc, what, url, deadline)
            raise  # pragma: no cover - _raise_for always raises
        # Headers are kept for callers that need one (Retry-After); the body is whole.
        headers = {k.lower(): v for k, v in response.headers.items()}
        return Answer(status=response.status_code, url=url, body=body, headers=headers, what=what)
    finally:
        current.watch = None
        done.set()
        if response is not None:
            response.close()


class _Interrupted(Exception):
    """Raised inside the read loop when the watchdog fired."""





def _raise_for(watch: Watch, exc: BaseException, what: str, url: str, deadline: float) -> None:
    if isinstance(exc, (RedirectRefused, AnswerTooLarge, UnusableAnswer)):
        raise exc
    if watch.fired == "cancel":
        raise CancelledError("Authentication cancelled by user") from None
    if watch.fired == "deadline" or isinstance(exc, requests.Timeout):
        raise AnswerTooSlow(
            f"{what} did not answer within {deadline:.3g} s, at {origin(url)}",
            "check the network connection; retrying may help",
        ) from None
    raise unavailable(f"cannot reach {what} ({type(exc).__name__})", url) from None


def _redirect(response: requests.Response, what: str) -> RedirectRefused:
    location = response.headers.get("Location") or ""
    try:
        target = urljoin(response.url, location) if location else ""
        parts = urlsplit(target)
        where = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "?"
    except ValueError:
        where = "?"
    return RedirectRefused(
        f"{what} answered HTTP {response.status_code}, a redirect to {origin(where)}; "
        "sign-in requests never follow redirects",
        "check the profile's issuer or authority host: it must be the provider's own address",
    )


def _decoder(encoding: str, what: str, url: str) -> Any:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise UnusableAnswer(f"{what} sent an answer in an unsupported encoding "
                         f"({encoding[:20]!r}), from {origin(url)}", "report this to the provider")


def _too_large(what: str, url: str, max_bytes: int) -> AnswerTooLarge:
    return AnswerTooLarge(
        f"{what} sent an answer larger than {max_bytes // 1024} KB, from {origin(url)}",
        "no sign-in answer is that large: check the issuer or authority host, or the network",
    )


def _read_body(response: requests.Response, what: str, url: str, end: float,
               max_bytes: int, watch: Watch) -> bytes:
    """Read the body in chunks against the deadline; inflate, bounded."""
    length = response.headers.get("Content-Length", "")
    if length.strip().isdigit() and int(length) > max_bytes and \
            not response.headers.get("Content-Encoding"):
        raise _too_large(what, url, max_bytes)
    decoder = _decoder(response.headers.get("Content-Encoding", ""), what, url)
    out = bytearray()
    raw = response.raw
    while True:
        if watch.fired is not None or time.monotonic() >= end:
            raise _Interrupted()
        chunk = raw.read(READ_CHUNK, decode_content=False)
        if not chunk:
            break
        if decoder is None:
            out += chunk
        else:
            _inflate(decoder, chunk, out, max_bytes, what, url)
        if len(out) > max_bytes:
            raise _too_large(what, url, max_bytes)
    if watch.fired is not None:
        raise _Interrupted()
    return bytes(out)


def _inflate(decoder: Any, chunk: bytes, out: bytearray, max_bytes: int, what: str,
             url: str) -> None:
    """Append what *chunk* inflates to, never more than the cap (+1 to tell)."""
    try:
        # max_length bounds each step's output: a bomb never inflates past the cap.
        out += decoder.decompress(chunk, max_bytes + 1 - len(out))
        while decoder.unconsumed_tail and len(out) <= max_bytes:
            out += decoder.decompress(decoder.unconsumed_tail, max_bytes + 1 - len(out))
    except zlib.error:
        raise not_json(what, url) from None
