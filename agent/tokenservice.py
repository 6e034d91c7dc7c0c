"""The local token service: the signed-in identity's tokens for unmodified Azure SDKs.

It speaks the App Service managed-identity protocol, api-version 2019-08-01,
which every Azure SDK's ``ManagedIdentityCredential`` (and so
``DefaultAzureCredential``) uses when ``IDENTITY_ENDPOINT`` and
``IDENTITY_HEADER`` are set (and ``IDENTITY_SERVER_THUMBPRINT`` is not)::

    GET {IDENTITY_ENDPOINT}?resource=https://storage.azure.com&api-version=2019-08-01
    X-IDENTITY-HEADER: <the secret>

    200 {"access_token": "...", "expires_on": "1767225600",
         "resource": "https://storage.azure.com", "token_type": "Bearer", "client_id": "..."}

``expires_on`` is epoch seconds as a decimal string, as App Service sends it
(MSAL Python reads it with ``int()``: no fraction). Errors are App Service's
JSON shape, ``{"statusCode": 403, "message": "..."}`` (MSAL shows
``statusCode, message``; OAuth-style ``error``/``error_description`` are there
too). Status codes are chosen for what the SDKs do with them: azure-core
retries 408/429/5xx with backoff and MSAL throttles 429/5xx for
``Retry-After`` seconds, so only transient failures get those.

=======================================  ======  =====================================
situation                                status  notes
=======================================  ======  =====================================
token                                    200
bad or missing parameter                 400     only ``resource`` and ``api-version``
resource the provider will not issue     400     the provider's own words
missing or wrong ``X-IDENTITY-HEADER``   401     compared in constant time
not signed in / sign-in revoked          403     the device shows a sign-in code
peer or ``Host`` not loopback            403
other path                               404
other method than GET                    405     ``Allow: GET``
too many requests from one user          429     ``Retry-After``
provider unreachable                     503     ``Retry-After``
=======================================  ======  =====================================

Access control: the listening address must be loopback (refused otherwise),
peers must be loopback, and the secret lives in a file readable by root and
the group ``entra-agent-tokens`` (:mod:`agent.tokensecret`). Each local user
(the uid owning the client socket, from ``/proc/net/tcp``) has its own rate
limit. The log gets one line per new resource (:mod:`agent.resourcetokens`),
never a token or the secret; the HTTP access log is off.

>>> service = TokenService(ResourceTokens(client), secret, port=42424).start()  # doctest: +SKIP
>>> service.endpoint
'http://127.0.0.1:42424/msi/token'
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from agent.auth.errors import AuthError, ProviderUnavailable, SignInRequired
from agent.clock import Clock, SystemClock
from agent.config.values import TokenServiceConfig
from agent.errors import AgentError, UsageError
from agent.net import is_loopback
from agent.resourcetokens import ResourceNotAllowed, ResourceTokens

# The sandbox's server loop is a plain select() on the listening socket and a
# self-pipe: no idle wake-ups and an instant stop, which this service wants too.
from agent.sandbox._http import QuietHandler, SandboxServer, SandboxService

__all__ = ["API_VERSION", "ENDPOINT_PATH", "IDENTITY_HEADER", "RATE", "BURST", "RETRY_AFTER",
           "TokenService", "RateLimiter", "peer_uid"]

log = logging.getLogger(__name__)

#: The App Service managed-identity protocol version spoken here.
API_VERSION = "2019-08-01"
#: The path of the endpoint (``IDENTITY_ENDPOINT`` is ``http://ADDRESS:PORT`` + this).
ENDPOINT_PATH = "/msi/token"
#: The request header carrying the secret.
IDENTITY_HEADER = "X-IDENTITY-HEADER"
#: Requests per second each local user may make, on average...
RATE = 2.0
#: ...and at most this many at once (a burst after a quiet spell).
BURST = 20
#: Seconds a client is told to wait when the provider is unreachable.
RETRY_AFTER = 10
#: Seconds a connection may take to send its request.
REQUEST_TIMEOUT = 5.0

# Parameters of api-version 2019-08-01 that pick a user-assigned identity:
# this endpoint has one identity, the signed-in person's.
_IDENTITY_PARAMS = ("client_id", "principal_id", "object_id", "mi_res_id")
_MAX_RATE_KEYS = 1024


@dataclass(frozen=True)
class _Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def _error(status: int, message: str, *, error: str = "invalid_request",
           headers: dict[str, str] | None = None) -> _Answer:
    # App Service's error shape (statusCode, message) plus the OAuth one.
    return _Answer(status, {"statusCode": status, "message": message, "error": error,
                            "error_description": message,
                            "correlationId": str(uuid.uuid4())}, headers or {})


class RateLimiter:
    """A token bucket per client: *rate* requests per second, *burst* at once."""

    def __init__(self, clock: Clock, rate: float = RATE, burst: int = BURST) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self._lock = threading.Lock()
        self._buckets: dict[object, tuple[float, float]] = {}   # key -> (tokens, at monotonic)

    def allow(self, key: object) -> float:
        """0 when *key* may go ahead now; else the seconds until it may."""
        now = self.clock.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > _MAX_RATE_KEYS:
                    # Full buckets carry no information: drop them.
                    self._buckets = {k: v for k, v in self._buckets.items() if v[0] < self.burst - 1}
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


def peer_uid(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid owning the TCP socket *client* connected to *server* on loopback.

    Read from ``/proc/net/tcp`` (Linux); None when it cannot be told.
    """
    def hex_endpoint(host: str, port: int) -> str:
        import ipaddress
        packed = ipaddress.IPv4Address(host).packed
        return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"

    try:
        local, remote = hex_endpoint(*client), hex_endpoint(*server)
        with open("/proc/net/tcp", encoding="ascii") as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) > 7 and fields[1] == local and fields[2] == remote:
                    return int(fields[7])
    except (OSError, ValueError):
        return None
    return None


class TokenService(SandboxService):
    """The HTTP endpoint on loopback over a :class:`ResourceTokens` cache.

    *gate* says whether tokens may be served now: None for yes, else why not
    (one line, shown by the SDK). *on_asked* is called with the resource
    when a program asked while the gate was closed; *on_refused* when the
    provider no longer accepts the sign-in. Both run on the request's
    thread: keep them quick (the service posts an event).
    """

    _thread_name = "token-service"

    def __init__(self, tokens: ResourceTokens, secret: str, *, host: str = "127.0.0.1",
                 port: int = TokenServiceConfig.port, clock: Clock | None = None,
                 gate: Callable[[], str | None] | None = None,
                 on_asked: Callable[[str], None] | None = None,
                 on_refused: Callable[[str], None] | None = None,
                 rate: float = RATE, burst: int = BURST) -> None:
        if not _is_ipv4_loopback(host):
            # The endpoint hands out the signed-in person's tokens: never on a network.
            raise UsageError(f"refusing to serve tokens on {host}: the token service listens on "
                             "loopback only", 'set [token_service] address = "127.0.0.1"')
        if len(secret) < 32:
            raise ValueError("the token service's secret is too short")
        self.tokens = tokens
        self.clock = clock or SystemClock()
        self.gate = gate
        self.on_asked = on_asked
        self.on_refused = on_refused
        self.limiter = RateLimiter(self.clock, rate, burst)
        self._secret = secret.encode("ascii")
        self._host = host
        self._server = SandboxServer(_Handler, host, port, self)
        self._warned: set[object] = set()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> "TokenService":
        """Bind and serve from a daemon thread; returns self.

        :raises AgentError: when the port cannot be bound (in use, ...).
        """
        try:
            self._server.start(self._thread_name)
        except OSError as exc:
            raise AgentError(f"the token service cannot listen on {self._host}:{self._server._port}: "
                             f"{exc.strerror or exc}",
                             "pick another [token_service] port in agent.toml") from None
        log.info("token service listening on %s", self.endpoint)
        return self

    @property
    def endpoint(self) -> str:
        """What ``IDENTITY_ENDPOINT`` must be: ``http://127.0.0.1:PORT/msi/token``."""
        return f"{self.origin}{ENDPOINT_PATH}"

    # -- one request ------------------------------------------------------------

    def answer(self, method: str, target: str, headers: Any, client: tuple[str, int],
               server: tuple[str, int]) -> _Answer:
        """The answer to one request (the handler only writes it out)."""
        if not is_loopback(client[0]):
            return _error(403, "the token service answers programs on this device only")
        host = (headers.get("Host") or "").strip()
        if host and not is_loopback(urlsplit(f"//{host}").hostname):
            # A web page's script reaching us through a rebound DNS name.
            return _error(403, "the token service answers requests for 127.0.0.1 only")
        key: object = peer_uid(client, server)
        if key is None:
            key = client[0]
        wait = self.limiter.allow(key)
        if wait > 0:
            return _error(429, "too many token requests; retry later", error="temporarily_unavailable",
                          headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        url = urlsplit(target)
        if url.path.rstrip("/") != ENDPOINT_PATH:
            return _error(404, f"no such endpoint; the token endpoint is {ENDPOINT_PATH}")
        if method != "GET":
            return _error(405, "the token endpoint answers GET only", headers={"Allow": "GET"})
        if not self._secret_matches(headers.get(IDENTITY_HEADER)):
            if key not in self._warned and len(self._warned) < _MAX_RATE_KEYS:
                self._warned.add(key)
                log.warning("token service: refused a request without the right %s (local user %s)",
                            IDENTITY_HEADER, key)
            return _error(401, f"missing or wrong {IDENTITY_HEADER}: set IDENTITY_HEADER from "
                               "`entra-agent token-env` (the secret is readable by root and the "
                               "group entra-agent-tokens)", error="unauthorized_client")
        resource, problem = _parse_query(url.query)
        if problem is not None:
            return _error(400, problem)
        assert resource is not None
        closed = self.gate() if self.gate is not None else None
        if closed is not None:
            self._notify(self.on_asked, resource)
            return _error(403, closed, error="interaction_required")
        try:
            token = self.tokens.get(resource)
        except SignInRequired as exc:
            self._notify(self.on_refused, resource)
            # The agent checks its own sign-in next (on_refused): when that is
            # refused too, it asks for a new code on its screen.
            return _error(403, f"{exc.message} (the device now checks its own sign-in; if the "
                               "provider refuses that too, a person must sign in again on the "
                               "device, where a new code is shown)", error="interaction_required")
        except ProviderUnavailable as exc:
            return _error(503, str(exc), error="temporarily_unavailable",
                          headers={"Retry-After": str(RETRY_AFTER)})
        except ResourceNotAllowed as exc:
            return _error(400, str(exc), error="invalid_resource")
        except AuthError as exc:
            return _error(400, f"the identity provider refused a token for {resource}: {exc}",
                          error="invalid_scope")
        except AgentError as exc:
            log.error("token service: %s", exc)
            return _error(500, f"the agent cannot get tokens: {exc}", error="server_error")
        return _Answer(200, {
            "access_token": token.access_token,
            "expires_on": str(int(token.expires_on)),
            "resource": resource,
            "token_type": token.token_type,
            "client_id": self.tokens.client.profile.client_id,
        }, {})

    def _secret_matches(self, value: str | None) -> bool:
        given = (value or "").strip().encode("utf-8", "replace")
        return hmac.compare_digest(given, self._secret)

    def _notify(self, callback: Callable[[str], None] | None, resource: str) -> None:
        if callback is None:
            return
        try:
            callback(resource)
        except Exception:  # noqa: BLE001 - a callback must not break the answer
            log.exception("token service callback failed")


def _is_ipv4_loopback(host: str) -> bool:
    import ipaddress
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address) and is_loopback(host)
    except ValueError:
        return False


def _parse_query(query: str) -> tuple[str | None, str | None]:
    """(resource, None) for a good query, else (None, why not)."""
    from agent.resourcetokens import check_resource
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query),
                          max_num_fields=16)
    except ValueError:
        return None, "the query string is not valid"
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            return None, f"the parameter {name} is given twice"
        params[name] = value
    for name in params:
        if name in _IDENTITY_PARAMS:
            return None, (f"{name} is not supported: this endpoint serves one identity, the person "
                          "signed in on the device (leave client_id and the like out)")
        if name not in ("resource", "api-version"):
            return None, f"unknown parameter {_printable(name)!r} (give resource and api-version)"
    version = params.get("api-version")
    if version != API_VERSION:
        got = "none" if version is None else repr(_printable(version))
        return None, f"api-version must be {API_VERSION}, got {got}"
    resource = params.get("resource")
    if resource is None:
        return None, "the parameter resource is missing"
    reason = check_resource(resource)
    if reason is not None:
        return None, f"the resource {reason}"
    return resource, None


def _printable(text: str) -> str:
    text = text[:64]
    return "".join(c if c.isprintable() else "?" for c in text)


class _Handler(QuietHandler):
    server_version = "entra-agent-token-service"
    timeout = REQUEST_TIMEOUT

    def _serve(self) -> None:
        service: TokenService = self.server.owner  # type: ignore[attr-defined]
        local = self.server.server_address    # typed for every socket family; ours is TCP
        try:
            if not isinstance(local, tuple):
                raise TypeError(f"the token service listens on TCP, not on {local!r}")
            answer = service.answer(self.command, self.path, self.headers,
                                    self.client_address[:2], (str(local[0]), int(local[1])))
        except Exception:  # noqa: BLE001 - one bad request must not kill the thread quietly
            log.exception("token service failed on a request")
            answer = _error(500, "the token service failed; see the agent's log", error="server_error")
        body = json.dumps(answer.body).encode("utf-8")
        try:
            self.send_bytes(answer.status, body, "application/json; charset=utf-8", answer.headers)
        except ConnectionError:
            pass        # the client went away

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _serve


def serve(config: Any, client: Any, *, clock: Clock, gate: Callable[[], str | None],
          on_asked: Callable[[str], None], on_refused: Callable[[str], None]) -> TokenService:
    """Start the token service of ``[token_service]`` *config* for *client*'s profile.

    Reads (creating it on first use) the secret file of :mod:`agent.tokensecret`.
    """
    from agent.tokensecret import ensure_secret, secret_path

    secret = ensure_secret(secret_path())
    tokens = ResourceTokens(client, clock=clock)
    return TokenService(tokens, secret, host=config.address, port=config.port, clock=clock,
                        gate=gate, on_asked=on_asked, on_refused=on_refused).start()
