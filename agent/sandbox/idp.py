"""A local identity provider that speaks Entra ID's device-code flow over HTTP.

Tests, benchmarks and ``entra-agent demo`` sign in against this server on
127.0.0.1 instead of login.microsoftonline.com. It follows RFC 8628 (OAuth 2.0
Device Authorization Grant) and the shapes Entra ID really sends:

* §3.1/§3.2 device authorization request and response
  (``POST /{tenant}/oauth2/v2.0/devicecode``);
* §3.3 user interaction: a sign-in page at ``/devicelogin`` that works in a
  real browser (type the code, Approve or Decline);
* §3.4/§3.5 device access token request and its error responses
  (``POST /{tenant}/oauth2/v2.0/token``): ``authorization_pending``,
  ``slow_down``, ``access_denied``/Entra's ``authorization_declined``,
  ``expired_token``;
* RFC 6749 §6 refresh grant, with rotation and revocation; as Entra, an
  access token is for one resource (its audience, ``aud``): the resource of
  the requested scopes (``https://storage.azure.com/.default`` ->
  ``https://storage.azure.com``; bare scopes such as ``User.Read`` and
  OpenID-only requests are Microsoft Graph's), and a request naming two
  resources is refused with AADSTS28000;
* OpenID Connect discovery (``/{tenant}/v2.0/.well-known/openid-configuration``);
* RFC 7009 token revocation (``POST /{tenant}/oauth2/v2.0/revoke``), listed
  as ``revocation_endpoint`` unless ``revocation=False`` (Entra's v2.0
  endpoints offer none for refresh tokens: that option plays Entra).

Entra errors carry ``AADSTSnnnnn:`` in ``error_description`` (with Trace ID,
Correlation ID and Timestamp on further ``\\r\\n``-separated lines, as Entra
does) and the number in ``error_codes``. Tokens are random strings, not
signed JWTs: nothing here is a security boundary, it is a test double that
speaks the real protocol.

Example::

    with IdentityProvider(clock=FakeClock()) as idp:
        r = requests.post(f"{idp.base_url}/organizations/oauth2/v2.0/devicecode",
                          data={"client_id": "x", "scope": "openid offline_access"})
        idp.approve()                      # the person approves on their phone
        ...                                # the client polls /token and gets tokens

Time: code expiry and token lifetimes run on ``clock.monotonic()`` (seconds),
so a test with a :class:`agent.clock.FakeClock` moves time with
``clock.advance()``; ``iat``/``exp`` claims and error timestamps use
``clock.time()``.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import html
import json
import logging
import re
import secrets
import threading
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

from agent.clock import Clock, SystemClock
from agent.sandbox._http import QuietHandler, SandboxServer, SandboxService, is_loopback

__all__ = [
    "DEVICE_CODE_GRANT_TYPE",
    "DIALECTS",
    "SANDBOX_TENANT_ID",
    "Fault",
    "GRAPH_RESOURCE",
    "IdentityProvider",
    "scope_resources",
]

logger = logging.getLogger(__name__)

DEVICE_CODE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
REFRESH_TOKEN_GRANT_TYPE = "refresh_token"

#: ``entra_v2``: Entra's v2.0 endpoint; ``entra_v1``: Entra's older endpoint
#: (``verification_url``, numbers as strings); ``oidc``: a plain RFC 8628
#: provider (``verification_uri_complete``, ``WDJB-MJHT`` codes, RFC error bodies).
DIALECTS = ("entra_v2", "entra_v1", "oidc")

#: The ``tid`` of every account in the sandbox (a fixed, obviously fake GUID).
SANDBOX_TENANT_ID = "5a4d0b00-0000-4000-8000-000000000000"

# Seconds; the documented defaults (Entra's own: 5 s polling, 15 min codes, 1 h tokens).
DEFAULT_INTERVAL = 5
DEFAULT_CODE_LIFETIME = 900
DEFAULT_ACCESS_TOKEN_LIFETIME = 3600

# Entra's user codes: 9 characters of upper-case letters and digits ("FJ8ZK3ZUS").
_ENTRA_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
# RFC 8628 §6.1: base-20 consonants, no vowels (no words), shown as "WDJB-MJHT".
_RFC_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"

# What Entra says for each situation (error, AADSTS number, description).
_PENDING = ("authorization_pending", 70016, "OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
_DECLINED = ("authorization_declined", 70000, "The user has declined the authorization request.")
_EXPIRED = ("expired_token", 70020, "The provided value for the input parameter 'device_code' is not valid. This device code has expired.")
_BAD_CODE = ("bad_verification_code", 70019, "The provided value for the input parameter 'device_code' is not valid.")
_REDEEMED = ("invalid_grant", 70000, "The provided value for the 'device_code' is not valid. It has already been redeemed.")
_NO_CLIENT = ("invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
_NO_DEVICE_CODE = ("invalid_request", 900144, "The request body must contain the following parameter: 'device_code'.")
_NO_REFRESH = ("invalid_request", 900144, "The request body must contain the following parameter: 'refresh_token'.")
_BAD_SCOPE = ("invalid_scope", 70011, "The provided request must include a 'scope' input parameter.")
_PUBLIC_CLIENT = ("invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
_REFRESH_UNKNOWN = ("invalid_grant", 70000, "Provided grant is invalid or malformed.")
_REFRESH_ROTATED = ("invalid_grant", 70000, "The refresh token has already been used to obtain a new one.")
_REFRESH_REVOKED = ("invalid_grant", 50173, "The provided grant has expired due to it being revoked, a fresh auth token is needed.")
_REFRESH_EXPIRED = ("invalid_grant", 700082, "The refresh token has expired due to inactivity.")
_BAD_GRANT = ("unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
_TWO_RESOURCES = ("invalid_scope", 28000, "Provided value for the input parameter scope is not valid because it contains more than one resource.")

#: The audience of tokens for bare scopes (``User.Read``) and OpenID-only requests.
GRAPH_RESOURCE = "https://graph.microsoft.com"
_OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})


def scope_resources(scope: str) -> set[str]:
    """The resources (audiences) a scope string asks for, as Entra reads it.

    ``https://storage.azure.com/.default`` and ``https://storage.azure.com/user_impersonation``
    are ``https://storage.azure.com``; ``api://app/Read`` is ``api://app``;
    a bare ``User.Read`` is Microsoft Graph's; OpenID scopes name none.
    """
    resources = set()
    for item in scope.split():
        if item.lower() in _OIDC_SCOPES:
            continue
        if "://" in item:
            head, _, _ = item.rpartition("/")
            resources.add(head if "://" in head and not head.endswith(":/") else item)
        else:
            resources.add(GRAPH_RESOURCE)
    return resources

_PENDING_STATES = ("pending",)


@dataclasses.dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, consumed by the next matching request.

    Build them with the constructors: ``Fault.error("invalid_client",
    aadsts=7000218)``, ``Fault.slow_down()``, ``Fault.status(503)``,
    ``Fault.malformed()``, ``Fault.drop()``, ``Fault.delay(2.5)``.
    """

    # Field names differ from the constructors (error(), status()): a field
    # named like a classmethod would take the method as its default.
    kind: str                                   # "error" | "status" | "malformed" | "drop" | "delay"
    http_status: int = 400
    error_code: str = ""
    description: str = ""
    aadsts: int | None = None
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0                        # for "delay", in seconds of real time

    @classmethod
    def error(cls, error: str, description: str = "", *, status: int = 400, aadsts: int | None = None) -> "Fault":
        """An OAuth error body; *aadsts* adds ``AADSTS{n}: `` and ``error_codes: [n]``."""
        return cls("error", http_status=status, error_code=error, description=description, aadsts=aadsts)

    @classmethod
    def slow_down(cls) -> "Fault":
        """RFC 8628 §3.5 ``slow_down``: the client must add 5 s to its interval."""
        return cls.error("slow_down", "Polling too fast. Increase the polling interval by 5 seconds.")

    @classmethod
    def status(cls, code: int, body: str = "<html>Service unavailable</html>", headers: Mapping[str, str] | None = None) -> "Fault":
        """A bare HTTP status with *body* (HTML, text or JSON by its first character)."""
        return cls("status", http_status=code, body=body, headers=tuple((headers or {}).items()))

    @classmethod
    def malformed(cls, body: str = "{not json") -> "Fault":
        """200 OK with a body that is not the JSON the client expects."""
        return cls("malformed", http_status=200, body=body)

    @classmethod
    def drop(cls) -> "Fault":
        """Close the connection with no answer at all (a ConnectionError for the client)."""
        return cls("drop", http_status=0)

    @classmethod
    def delay(cls, seconds: float) -> "Fault":
        """Wait *seconds* of real time, then answer normally (to trip client timeouts)."""
        return cls("delay", http_status=0, seconds=float(seconds))


@dataclasses.dataclass
class _DeviceCode:
    device_code: str
    user_code: str
    client_id: str
    scope: str
    tenant: str
    issued_at: float            # clock.monotonic()
    expires_at: float           # clock.monotonic()
    interval: int               # seconds; raised by 5 on each enforced slow_down
    state: str = "pending"      # pending | approved | declined | expired | redeemed
    account: str | None = None
    polls: int = 0              # authorization_pending answers given so far
    last_poll: float | None = None


@dataclasses.dataclass
class _RefreshToken:
    client_id: str
    scope: str
    account: str
    tenant: str
    state: str = "valid"        # valid | rotated | revoked | expired


def _normalize_code(code: str) -> str:
    """User codes are compared case-insensitively and without dashes or spaces."""
    return re.sub(r"[\s-]", "", code).upper()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class IdentityProvider(SandboxService):
    """An Entra-shaped OAuth 2.0 device-code identity provider on loopback.

    All times are in seconds. See the module docstring for the endpoints;
    everything a test needs to script lives on this object (``approve``,
    ``decline``, ``expire``, ``queue_token_faults``, ``revoke_refresh_tokens``,
    ``counts``...), and the same controls are served over HTTP under
    ``/_sandbox/`` for tests that run the client in a subprocess.

    ``auto_approve_after_polls=N`` approves a code after it has answered
    ``authorization_pending`` N times, so the (N+1)-th poll gets the tokens
    (``0``: the first poll does).

    ``rotate_refresh_tokens=False`` answers a refresh grant without a
    ``refresh_token`` field and keeps the old one valid (RFC 6749 §6: the
    client must then keep using the one it has).

    ``enforce_interval=True`` makes the server police RFC 8628 §3.5: a poll
    that comes sooner than the code's interval (by ``clock.monotonic()``)
    gets ``slow_down`` and the interval for that code grows by 5 seconds.

    ``known_tenants`` (None: any) answers other tenants with AADSTS90002.

    ``verification_base_url`` changes only the address shown to the person
    (``verification_uri``, the QR code), e.g. ``http://192.168.1.20:8765``
    when the server listens on ``host="0.0.0.0"`` so a phone on the LAN can
    open the sign-in page; the agent keeps talking to ``base_url`` on
    loopback. The ``/_sandbox/`` controls answer loopback clients only.

    ``revocation=False`` lists no ``revocation_endpoint`` in discovery and
    answers the revocation path with 404, as Entra ID does.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        interval: int = DEFAULT_INTERVAL,
        code_lifetime: int = DEFAULT_CODE_LIFETIME,
        access_token_lifetime: int = DEFAULT_ACCESS_TOKEN_LIFETIME,
        refresh_in: int | None = None,
        dialect: str = "entra_v2",
        rotate_refresh_tokens: bool = True,
        auto_approve_after_polls: int | None = None,
        account: str = "ada@contoso.example",
        public_client_flows: bool = True,
        known_client_ids: set[str] | None = None,
        enforce_interval: bool = False,
        known_tenants: set[str] | None = None,
        verification_base_url: str | None = None,
        revocation: bool = True,
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, not {dialect!r}")
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.interval = interval
        self.code_lifetime = code_lifetime
        self.access_token_lifetime = access_token_lifetime
        self.refresh_in = refresh_in
        self.dialect = dialect
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.auto_approve_after_polls = auto_approve_after_polls
        self.account = account
        self.public_client_flows = public_client_flows
        self.known_client_ids = set(known_client_ids) if known_client_ids is not None else None
        self.enforce_interval = enforce_interval
        self.known_tenants = {t.lower() for t in known_tenants} if known_tenants is not None else None
        self.verification_base_url = verification_base_url.rstrip("/") if verification_base_url else None
        self.revocation = revocation
        self._revoked: list[str] = []

        # One lock guards every piece of state below; handler threads and the
        # test thread both touch it. The condition shares it (wait_for_code).
        self._lock = threading.RLock()
        self._issued = threading.Condition(self._lock)
        self._codes: list[_DeviceCode] = []
        self._by_device_code: dict[str, _DeviceCode] = {}
        self._refresh_tokens: dict[str, _RefreshToken] = {}
        self._access_tokens: dict[str, tuple[str, float]] = {}   # token -> (account, expires monotonic)
        self._audiences: dict[str, str] = {}                     # access token -> aud
        self._secrets: list[str] = []
        self._counts: collections.Counter[str] = collections.Counter()
        self._token_requests: list[dict[str, object]] = []
        self._token_faults: collections.deque[Fault] = collections.deque()
        self._devicecode_faults: collections.deque[Fault] = collections.deque()
        self._last_scope: str | None = None
        self._server = SandboxServer(_IdpHandler, host, port, self)

    # -- lifecycle ---------------------------------------------------------

    _thread_name = "sandbox-idp"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: use as the Entra authority host."""
        return self.origin

    def issuer(self, tenant: str = "organizations") -> str:
        """The OpenID issuer for *tenant*: ``{base_url}/{tenant}/v2.0``."""
        return f"{self.base_url}/{tenant}/v2.0"

    @property
    def verification_uri(self) -> str:
        """Where the person signs in: ``{base_url}/devicelogin``."""
        return f"{self.verification_base_url or self.base_url}/devicelogin"

    # -- scripting (in-process) ---------------------------------------------

    def approve(self, user_code: str | None = None, account: str | None = None) -> str:
        """Approve a pending code (None: the newest) as *account*; returns its user code.

        Raises LookupError when no such pending code exists.
        """
        with self._lock:
            code = self._find_pending(user_code)
            code.state = "approved"
            code.account = account or self.account
            return code.user_code

    def decline(self, user_code: str | None = None) -> str:
        """Decline a pending code (None: the newest); raises LookupError if none."""
        with self._lock:
            code = self._find_pending(user_code)
            code.state = "declined"
            return code.user_code

    def expire(self, user_code: str | None = None) -> str:
        """Expire a pending code now (None: the newest); raises LookupError if none."""
        with self._lock:
            code = self._find_pending(user_code)
            code.state = "expired"
            return code.user_code

    def pending_user_codes(self) -> list[str]:
        """User codes still waiting for a person, oldest first."""
        with self._lock:
            return [c.user_code for c in self._codes if self._is_pending(c)]

    def wait_for_code(self, timeout: float = 5.0) -> str:
        """Block (real time, up to *timeout* seconds) until a code is pending; return the newest.

        Raises TimeoutError when none shows up in time.
        """
        with self._issued:
            if not self._issued.wait_for(lambda: any(self._is_pending(c) for c in self._codes), timeout):
                raise TimeoutError(f"no device code was requested from the sandbox within {timeout} s")
            return next(c.user_code for c in reversed(self._codes) if self._is_pending(c))

    def queue_token_faults(self, *faults: Fault) -> None:
        """The next token requests answer with these, one each, in order."""
        with self._lock:
            self._token_faults.extend(faults)

    def queue_devicecode_faults(self, *faults: Fault) -> None:
        """The next device authorization requests answer with these, one each, in order."""
        with self._lock:
            self._devicecode_faults.extend(faults)

    def revoke_refresh_tokens(self) -> int:
        """Every refresh token issued so far now fails with AADSTS50173; returns how many."""
        return self._mark_refresh_tokens("revoked")

    def expire_refresh_tokens(self) -> int:
        """Every refresh token issued so far now fails with AADSTS700082; returns how many."""
        return self._mark_refresh_tokens("expired")

    @property
    def revoked(self) -> list[str]:
        """Tokens revoked over RFC 7009, in order (a copy)."""
        with self._lock:
            return list(self._revoked)

    def refresh_token_state(self, refresh_token: str) -> str | None:
        """``valid``, ``rotated``, ``revoked``, ``expired``, or None when unknown."""
        with self._lock:
            entry = self._refresh_tokens.get(refresh_token)
            return entry.state if entry is not None else None

    @property
    def counts(self) -> collections.Counter[str]:
        """Requests per endpoint (a copy): ``discovery``, ``devicecode``,
        ``token.device_code``, ``token.refresh_token``, ``token.other``, ``signin_page``."""
        with self._lock:
            return collections.Counter(self._counts)

    @property
    def token_requests(self) -> list[dict[str, object]]:
        """Every token request (a copy): ``{"grant_type", "at": clock.monotonic(), "status", "scope"}``.

        ``status`` is 0 for a dropped connection.
        """
        with self._lock:
            return [dict(r) for r in self._token_requests]

    @property
    def last_scope(self) -> str | None:
        """The scope string of the last device-code or token request that sent one."""
        with self._lock:
            return self._last_scope

    def validate_access_token(self, token: str) -> str | None:
        """The account behind *token* if this server issued it and it has not expired."""
        with self._lock:
            entry = self._access_tokens.get(token)
            if entry is None:
                return None
            account, expires_at = entry
            return account if self.clock.monotonic() < expires_at else None

    def audience(self, token: str) -> str | None:
        """The resource (``aud``) an access token of this server was issued for."""
        with self._lock:
            return self._audiences.get(token)

    def issued_secrets(self) -> list[str]:
        """Every access, refresh and id token and device code issued (to scan output for leaks)."""
        with self._lock:
            return list(self._secrets)

    def state(self) -> dict[str, object]:
        """A JSON-able summary, as served at ``GET /_sandbox/state``."""
        with self._lock:
            return {
                "counts": dict(self._counts),
                "pending": self.pending_user_codes(),
                "approved": sum(1 for c in self._codes if c.account is not None and c.state in ("approved", "redeemed")),
                "issued_codes": len(self._codes),
                "redeemed": sum(1 for c in self._codes if c.state == "redeemed"),
                "refresh_tokens_valid": sum(1 for r in self._refresh_tokens.values() if r.state == "valid"),
                "dialect": self.dialect,
                "verification_uri": self.verification_uri,
            }

    # -- internals (call with the lock held) ---------------------------------

    def _is_pending(self, code: _DeviceCode) -> bool:
        if code.state == "pending" and self.clock.monotonic() >= code.expires_at:
            code.state = "expired"
        return code.state in _PENDING_STATES

    def _find_pending(self, user_code: str | None) -> _DeviceCode:
        wanted = _normalize_code(user_code) if user_code else None
        for code in reversed(self._codes):
            if wanted is not None and _normalize_code(code.user_code) != wanted:
                continue
            if self._is_pending(code):
                return code
            if wanted is not None:
                break
        if wanted is None:
            raise LookupError("no device code is waiting for approval")
        raise LookupError(f"the code {user_code!r} is not waiting for approval (unknown, used or expired)")

    def _mark_refresh_tokens(self, state: str) -> int:
        with self._lock:
            changed = 0
            for entry in self._refresh_tokens.values():
                if entry.state == "valid":
                    entry.state = state
                    changed += 1
            return changed

    def _new_user_code(self) -> str:
        existing = {c.user_code for c in self._codes}
        while True:
            if self.dialect == "oidc":
                raw = "".join(secrets.choice(_RFC_CODE_ALPHABET) for _ in range(8))
                code = f"{raw[:4]}-{raw[4:]}"
            else:
                code = "".join(secrets.choice(_ENTRA_CODE_ALPHABET) for _ in range(9))
            if code not in existing:
                return code

    def _remember(self, secret: str) -> str:
        self._secrets.append(secret)
        return secret

    def _error(
        self, error: str, aadsts: int | None, description: str, status: int = 400
    ) -> tuple[int, dict[str, object]]:
        """An error body: RFC 6749 §5.2 shape, plus Entra's fields in Entra dialects."""
        if self.dialect == "oidc" and aadsts is None:
            body: dict[str, object] = {"error": error}
            if description:
                body["error_description"] = description
            return status, body
        trace_id = str(uuid.uuid4())
        correlation_id = str(uuid.uuid4())
        stamp = datetime.fromtimestamp(self.clock.time(), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        text = f"AADSTS{aadsts}: {description}" if aadsts is not None else description
        text += f"\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {stamp}"
        body = {
            "error": error,
            "error_description": text,
            "error_codes": [aadsts] if aadsts is not None else [],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
        }
        if aadsts is not None:
            body["error_uri"] = f"https://login.microsoftonline.com/error?code={aadsts}"
        return status, body

    def _wire_error(self, spec: tuple[str, int, str], status: int = 400) -> tuple[int, dict[str, object]]:
        error, aadsts, description = spec
        if self.dialect == "oidc":
            if error == "authorization_declined":
                error = "access_denied"
            return self._error(error, None, description, status)
        return self._error(error, aadsts, description, status)

    def _check_tenant(self, tenant: str) -> tuple[int, dict[str, object]] | None:
        if self.known_tenants is None or tenant.lower() in self.known_tenants:
            return None
        return self._error(
            "invalid_request", 90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
            "into the correct cloud.",
        )

    def _check_client(self, client_id: str) -> tuple[int, dict[str, object]] | None:
        if not client_id:
            return self._wire_error(_NO_CLIENT)
        if self.known_client_ids is not None and client_id not in self.known_client_ids:
            return self._error(
                "unauthorized_client", 700016,
                f"Application with identifier '{client_id}' was not found in the directory 'Sandbox'.",
            )
        return None

    def _numbers(self, value: int) -> int | str:
        # Entra's v1 endpoint sends expires_in and interval as numeric strings.
        return str(value) if self.dialect == "entra_v1" else value

    # -- endpoint logic (return status and JSON body) ------------------------

    def _discovery(self, tenant: str) -> tuple[int, dict[str, object]]:
        bad = self._check_tenant(tenant)
        if bad:
            return bad
        base = self.base_url
        return 200, {
            "issuer": self.issuer(tenant),
            "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
            "userinfo_endpoint": f"{base}/oidc/userinfo",
            "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
            **({"revocation_endpoint": f"{base}/{tenant}/oauth2/v2.0/revoke"} if self.revocation else {}),
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_CODE_GRANT_TYPE],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "name", "oid", "tid", "preferred_username", "ver"],
            "tenant_region_scope": None,
            "cloud_instance_name": "sandbox.invalid",
        }

    def _devicecode(self, tenant: str, form: Mapping[str, str]) -> tuple[int, dict[str, object]]:
        """RFC 8628 §3.1 request, §3.2 response."""
        bad = self._check_tenant(tenant)
        if bad:
            return bad
        client_id = form.get("client_id", "")
        scope = " ".join(form.get("scope", "").split())
        if scope:
            self._last_scope = scope
        bad = self._check_client(client_id)
        if bad:
            return bad
        if not scope:
            return self._wire_error(_BAD_SCOPE)
        now = self.clock.monotonic()
        code = _DeviceCode(
            device_code=self._remember(secrets.token_urlsafe(48)),
            user_code=self._new_user_code(),
            client_id=client_id,
            scope=scope,
            tenant=tenant,
            issued_at=now,
            expires_at=now + self.code_lifetime,
            interval=self.interval,
        )
        self._codes.append(code)
        self._by_device_code[code.device_code] = code
        self._issued.notify_all()
        verification_uri = self.verification_uri
        body: dict[str, object] = {
            "user_code": code.user_code,
            "device_code": code.device_code,
        }
        if self.dialect == "entra_v1":
            body["verification_url"] = verification_uri
        else:
            body["verification_uri"] = verification_uri
        if self.dialect == "oidc":
            body["verification_uri_complete"] = f"{verification_uri}?code={code.user_code}"
        body["expires_in"] = self._numbers(self.code_lifetime)
        body["interval"] = self._numbers(self.interval)
        body["message"] = (
            f"To sign in, use a web browser to open the page {verification_uri} "
            f"and enter the code {code.user_code} to authenticate."
        )
        return 200, body

    def _token(self, tenant: str, form: Mapping[str, str]) -> tuple[str, int, dict[str, object]]:
        """RFC 8628 §3.4/§3.5 and RFC 6749 §6; returns (count key, status, body)."""
        grant_type = form.get("grant_type", "")
        key = {
            DEVICE_CODE_GRANT_TYPE: "token.device_code",
            REFRESH_TOKEN_GRANT_TYPE: "token.refresh_token",
        }.get(grant_type, "token.other")
        bad = self._check_tenant(tenant)
        if bad:
            return key, *bad
        if key == "token.other":
            return key, *self._wire_error(_BAD_GRANT)
        client_id = form.get("client_id", "")
        bad = self._check_client(client_id)
        if bad:
            return key, *bad
        if not self.public_client_flows:
            # What Entra says when "Allow public client flows" is off.
            return key, *self._wire_error(_PUBLIC_CLIENT, status=401)
        if key == "token.device_code":
            return key, *self._poll(client_id, form.get("device_code", ""))
        return key, *self._refresh(client_id, form.get("refresh_token", ""), form.get("scope", ""))

    def _poll(self, client_id: str, device_code: str) -> tuple[int, dict[str, object]]:
        if not device_code:
            return self._wire_error(_NO_DEVICE_CODE)
        code = self._by_device_code.get(device_code)
        if code is None or code.client_id != client_id:
            return self._wire_error(_BAD_CODE)
        now = self.clock.monotonic()
        self._is_pending(code)          # turns a timed-out code into "expired"
        if code.state == "expired":
            return self._wire_error(_EXPIRED)
        if code.state == "declined":
            return self._wire_error(_DECLINED)
        if code.state == "redeemed":
            return self._wire_error(_REDEEMED)
        if code.state == "pending":
            too_soon = (
                self.enforce_interval
                and code.last_poll is not None
                and now - code.last_poll < code.interval
            )
            code.last_poll = now
            if too_soon:
                code.interval += 5      # RFC 8628 §3.5: "MUST be increased by 5 seconds"
                return self._error("slow_down", None,
                                   "Polling too fast. Increase the polling interval by 5 seconds.")
            if self.auto_approve_after_polls is not None and code.polls >= self.auto_approve_after_polls:
                code.state = "approved"
                code.account = self.account
            else:
                code.polls += 1
                return self._wire_error(_PENDING)
        code.state = "redeemed"
        return 200, self._issue_tokens(client_id, code.scope, code.account or self.account, code.tenant)

    def _revoke(self, tenant: str, form: Mapping[str, str]) -> tuple[int, dict[str, object]]:
        """RFC 7009 §2.1-2.2: 200 for a revoked *or unknown* token (so the
        answer tells nothing); the client must be the token's own."""
        bad = self._check_tenant(tenant)
        if bad:
            return bad
        token = form.get("token", "")
        if not token:
            return 400, {"error": "invalid_request", "error_description": "The request must include 'token'."}
        entry = self._refresh_tokens.get(token)
        if entry is not None:
            if entry.client_id != form.get("client_id", ""):
                return 400, {"error": "invalid_client", "error_description": "The token belongs to another client."}
            entry.state = "revoked"
        self._access_tokens.pop(token, None)
        self._revoked.append(token)
        return 200, {}

    def _refresh(self, client_id: str, refresh_token: str, scope: str) -> tuple[int, dict[str, object]]:
        if not refresh_token:
            return self._wire_error(_NO_REFRESH)
        entry = self._refresh_tokens.get(refresh_token)
        if entry is None or entry.client_id != client_id:
            return self._wire_error(_REFRESH_UNKNOWN)
        if entry.state == "rotated":
            return self._wire_error(_REFRESH_ROTATED)
        if entry.state == "revoked":
            return self._wire_error(_REFRESH_REVOKED)
        if entry.state == "expired":
            return self._wire_error(_REFRESH_EXPIRED)
        scope = " ".join(scope.split()) or entry.scope
        self._last_scope = scope
        if self.dialect != "oidc" and len(scope_resources(scope)) > 1:
            return self._wire_error(_TWO_RESOURCES)
        if self.rotate_refresh_tokens:
            entry.state = "rotated"
            return 200, self._issue_tokens(client_id, scope, entry.account, entry.tenant)
        body = self._issue_tokens(client_id, scope, entry.account, entry.tenant, with_refresh=False)
        return 200, body

    def _issue_tokens(
        self, client_id: str, scope: str, account: str, tenant: str, *, with_refresh: bool = True
    ) -> dict[str, object]:
        scopes = scope.split()
        access_token = self._remember(secrets.token_urlsafe(32))
        self._access_tokens[access_token] = (account, self.clock.monotonic() + self.access_token_lifetime)
        self._audiences[access_token] = min(scope_resources(scope) or {GRAPH_RESOURCE})
        body: dict[str, object] = {
            "token_type": "Bearer",
            "scope": scope,
            "expires_in": self._numbers(self.access_token_lifetime),
            "ext_expires_in": self._numbers(self.access_token_lifetime),
            "access_token": access_token,
        }
        if self.refresh_in is not None:
            body["refresh_in"] = self._numbers(self.refresh_in)
        if with_refresh and "offline_access" in scopes:
            refresh_token = self._remember(secrets.token_urlsafe(64))
            self._refresh_tokens[refresh_token] = _RefreshToken(client_id, scope, account, tenant)
            body["refresh_token"] = refresh_token
        if "openid" in scopes:
            body["id_token"] = self._remember(self._id_token(client_id, account))
        return body

    def _id_token(self, client_id: str, account: str) -> str:
        """An unsigned JWT-shaped id token (``alg: none``): clients decode, never trust, it."""
        now = int(self.clock.time())
        local = account.split("@", 1)[0]
        claims = {
            "aud": client_id,
            "iss": self.issuer(SANDBOX_TENANT_ID),
            "iat": now,
            "nbf": now,
            "exp": now + self.access_token_lifetime,
            "name": local.replace(".", " ").title(),
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-oid:{account}")),
            "preferred_username": account,
            "sub": _b64url(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-sub:{client_id}:{account}").bytes),
            "tid": SANDBOX_TENANT_ID,
            "ver": "2.0",
        }
        header = {"alg": "none", "typ": "JWT"}
        return ".".join([
            _b64url(json.dumps(header, separators=(",", ":")).encode()),
            _b64url(json.dumps(claims, separators=(",", ":")).encode()),
            "",
        ])

    # -- the person's sign-in page (RFC 8628 §3.3) ---------------------------

    def _signin(self, code_text: str, account: str, action: str) -> tuple[int, str]:
        wanted = _normalize_code(code_text)
        code = next((c for c in reversed(self._codes) if _normalize_code(c.user_code) == wanted), None) if wanted else None
        if code is None or not self._is_pending(code):
            return 400, _page(
                "Code not accepted",
                "<p>That code is not valid or has expired. Check the code on your device and try again.</p>"
                '<p><a href="/devicelogin">Enter a code</a></p>',
            )
        if action == "decline":
            code.state = "declined"
            return 200, _page("Sign-in declined", "<p>You declined to sign in to the application on your device.</p>"
                              "<p>You can close this window.</p>")
        code.state = "approved"
        code.account = account.strip() or self.account
        return 200, _page(
            "You're signed in",
            f"<p>You have signed in to the application on your device as <b>{html.escape(code.account)}</b>.</p>"
            "<p>You may now close this window.</p>",
        )


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#f3f3f3;margin:0;color:#1b1b1b}
main{max-width:26rem;margin:4rem auto;background:#fff;padding:2rem 2.5rem;box-shadow:0 2px 6px rgba(0,0,0,.2)}
h1{font-size:1.5rem;font-weight:600;margin:0 0 1rem}
label{display:block;margin:1rem 0 .3rem;font-size:.9rem}
input{width:100%;box-sizing:border-box;padding:.5rem;font-size:1.1rem;border:1px solid #888}
input[name=code]{font-family:ui-monospace,monospace;letter-spacing:.15em;text-transform:uppercase}
.buttons{margin-top:1.5rem;display:flex;gap:.75rem;justify-content:flex-end}
button{padding:.5rem 1.5rem;font-size:1rem;border:0;cursor:pointer}
button[value=approve]{background:#0067b8;color:#fff}
button[value=decline]{background:#ccc}
.note{color:#666;font-size:.8rem;margin-top:1.5rem}
"""


def _page(title: str, body_html: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body_html}"
        '<p class=note>Local sign-in sandbox for entra-device-agent. No real account is involved.</p>'
        "</main></body></html>"
    )


def _signin_form(code: str, account: str) -> str:
    return _page(
        "Enter code",
        "<p>Enter the code displayed on your device to allow it to sign in.</p>"
        '<form method=post action="/devicelogin">'
        f'<label for=code>Code</label><input id=code name=code value="{html.escape(code, quote=True)}" '
        'autocomplete=off autofocus required>'
        f'<label for=account>Account</label><input id=account name=account value="{html.escape(account, quote=True)}">'
        '<div class=buttons><button name=action value=decline>Decline</button>'
        "<button name=action value=approve>Approve</button></div></form>",
    )


_DISCOVERY = re.compile(r"^/([^/]+)(?:/v2\.0)?/\.well-known/openid-configuration$")
_DEVICECODE = re.compile(r"^/([^/]+)/oauth2/(?:v2\.0/)?devicecode$")
_TOKEN = re.compile(r"^/([^/]+)/oauth2/(?:v2\.0/)?token$")
_KEYS = re.compile(r"^/([^/]+)/discovery/(?:v2\.0/)?keys$")
_REVOKE = re.compile(r"^/([^/]+)/oauth2/(?:v2\.0/)?revoke$")


def _form(body: bytes) -> dict[str, str]:
    """application/x-www-form-urlencoded, first value of each field."""
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


class _IdpHandler(QuietHandler):
    @property
    def idp(self) -> IdentityProvider:
        return self.server.owner  # type: ignore[attr-defined]

    def _json(self, status: int, body: Mapping[str, object], headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(body).encode(), "application/json; charset=utf-8", headers)

    def _html(self, status: int, text: str) -> None:
        self.send_bytes(status, text.encode(), "text/html; charset=utf-8")

    def _apply_fault(self, fault: Fault) -> bool:
        """Answer per *fault*; False means "now answer normally" (a delay)."""
        if fault.kind == "delay":
            self.idp._server.stopping.wait(fault.seconds)
            return False
        if fault.kind == "drop":
            self.drop()
        elif fault.kind == "error":
            with self.idp._lock:
                status, body = self.idp._error(fault.error_code, fault.aadsts, fault.description, fault.http_status)
            self._json(status, body)
        else:
            text = fault.body
            kind = "application/json" if text[:1] in "{[" or fault.kind == "malformed" else (
                "text/html" if text[:1] == "<" else "text/plain")
            self.send_bytes(fault.http_status, text.encode(), f"{kind}; charset=utf-8", dict(fault.headers))
        return True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        try:
            self._route(method)
        except ConnectionError:
            return      # the client gave up (its timeout): nobody to answer
        except Exception:
            logger.exception("sandbox identity provider failed on %s %s", method, urlsplit(self.path).path)
            self._json(500, {"error": "server_error", "error_description": "The sandbox failed; see its log."})

    def _route(self, method: str) -> None:
        idp = self.idp
        url = urlsplit(self.path)
        path = url.path
        body = self.read_body() if method == "POST" else b""

        if path.startswith("/_sandbox/"):
            self._control(method, path, body)
            return
        if path in ("/", "/devicelogin"):
            with idp._lock:
                idp._counts["signin_page"] += 1
            if path == "/":
                self.send_bytes(302, b"", "text/plain", {"Location": "/devicelogin"})
            elif method == "GET":
                query = _form(url.query.encode())
                self._html(200, _signin_form(query.get("code", ""), idp.account))
            else:
                form = _form(body)
                with idp._lock:
                    status, text = idp._signin(form.get("code", ""), form.get("account", ""), form.get("action", "approve"))
                self._html(status, text)
            return
        match = _DISCOVERY.match(path)
        if match and method == "GET":
            with idp._lock:
                idp._counts["discovery"] += 1
                status, doc = idp._discovery(match.group(1))
            self._json(status, doc)
            return
        if path == "/v1.0/me" and method == "GET":
            self._me()
            return
        match = _KEYS.match(path)
        if match and method == "GET":
            self._json(200, {"keys": []})
            return
        match = _DEVICECODE.match(path)
        if match and method == "POST":
            with idp._lock:
                idp._counts["devicecode"] += 1
                fault = idp._devicecode_faults.popleft() if idp._devicecode_faults else None
            if fault is not None and self._apply_fault(fault):
                return
            with idp._lock:
                status, doc = idp._devicecode(match.group(1), _form(body))
            self._json(status, doc)
            return
        match = _TOKEN.match(path)
        if match and method == "POST":
            self._token(match.group(1), _form(body))
            return
        match = _REVOKE.match(path)
        if match and method == "POST" and idp.revocation:
            with idp._lock:
                idp._counts["revoke"] += 1
                status, doc = idp._revoke(match.group(1), _form(body))
            self._json(status, doc)
            return
        self._json(404, {"error": "not_found", "error_description": f"No such endpoint: {method} {path}"})

    def _me(self) -> None:
        """A Graph-shaped ``GET /v1.0/me``: a protected resource to try a token on."""
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        account = self.idp.validate_access_token(token.strip()) if scheme.lower() == "bearer" else None
        with self.idp._lock:
            self.idp._counts["resource"] += 1
        if account is None:
            self._json(401, {"error": {"code": "InvalidAuthenticationToken",
                                       "message": "Access token is empty, invalid or expired."}},
                       {"WWW-Authenticate": 'Bearer error="invalid_token"'})
            return
        self._json(200, {"userPrincipalName": account, "displayName": account.split("@")[0].title(),
                         "mail": account})

    def _token(self, tenant: str, form: dict[str, str]) -> None:
        idp = self.idp
        grant_type = form.get("grant_type", "")
        with idp._lock:
            record: dict[str, object] = {"grant_type": grant_type, "at": idp.clock.monotonic(), "status": 0,
                                         "scope": " ".join(form.get("scope", "").split())}
            idp._token_requests.append(record)
            fault = idp._token_faults.popleft() if idp._token_faults else None
            if fault is not None and fault.kind != "delay":
                key = {DEVICE_CODE_GRANT_TYPE: "token.device_code",
                       REFRESH_TOKEN_GRANT_TYPE: "token.refresh_token"}.get(grant_type, "token.other")
                idp._counts[key] += 1
                record["status"] = fault.http_status
        if fault is not None and self._apply_fault(fault):
            return
        with idp._lock:
            key, status, doc = idp._token(tenant, form)
            idp._counts[key] += 1
            record["status"] = status
        self._json(status, doc)

    def _control(self, method: str, path: str, body: bytes) -> None:
        """``/_sandbox/*``: scripting over HTTP, for clients run in a subprocess."""
        idp = self.idp
        if not is_loopback(self.client_address[0]):
            # The sign-in page may be served on a LAN for a phone; the switches never are.
            self._json(403, {"error": "forbidden", "error_description": "sandbox controls are for loopback clients only"})
            return
        action = path[len("/_sandbox/"):]
        if action == "state" and method == "GET":
            self._json(200, idp.state())
            return
        if method != "POST":
            self._json(405, {"error": "method_not_allowed", "error_description": f"use POST {path}"},
                       {"Allow": "POST"})
            return
        form = _form(body)
        user_code = form.get("user_code") or None
        try:
            if action == "approve":
                self._json(200, {"approved": idp.approve(user_code, form.get("account") or None)})
            elif action == "decline":
                self._json(200, {"declined": idp.decline(user_code)})
            elif action == "expire":
                self._json(200, {"expired": idp.expire(user_code)})
            elif action == "revoke":
                self._json(200, {"revoked": idp.revoke_refresh_tokens()})
            else:
                self._json(404, {"error": "not_found", "error_description": f"no sandbox control {action!r}"})
        except LookupError as error:
            self._json(404, {"error": "not_found", "error_description": str(error)})
