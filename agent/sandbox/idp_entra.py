"""The sandbox identity provider's vocabulary: what Entra ID (and a plain
RFC 8628 provider) says on the wire.

Constants (grant types, dialects, lifetimes), the error table, the scope ->
resource rule, scripted :class:`Fault` s, error bodies in each dialect and the
unsigned id token. No state and no HTTP here: :mod:`agent.sandbox.idp_grants`
decides, :mod:`agent.sandbox.idp_http` serves.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone

__all__ = [
    "DEVICE_CODE_GRANT_TYPE",
    "DIALECTS",
    "GRAPH_RESOURCE",
    "REFRESH_TOKEN_GRANT_TYPE",
    "SANDBOX_TENANT_ID",
    "ErrorSpec",
    "Errors",
    "Fault",
    "id_token",
    "new_user_code",
    "normalize_code",
    "scope_resources",
]

#: One Entra answer: (OAuth error, AADSTS number, description).
ErrorSpec = tuple[str, int, str]
#: A status and JSON body, as every endpoint returns them.
Answer = tuple[int, dict[str, object]]

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
ENTRA_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
# RFC 8628 §6.1: base-20 consonants, no vowels (no words), shown as "WDJB-MJHT".
RFC_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"

# What Entra says for each situation (error, AADSTS number, description).
PENDING: ErrorSpec = ("authorization_pending", 70016, "OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
DECLINED: ErrorSpec = ("authorization_declined", 70000, "The user has declined the authorization request.")
EXPIRED: ErrorSpec = ("expired_token", 70020, "The provided value for the input parameter 'device_code' is not valid. This device code has expired.")
BAD_CODE: ErrorSpec = ("bad_verification_code", 70019, "The provided value for the input parameter 'device_code' is not valid.")
REDEEMED: ErrorSpec = ("invalid_grant", 70000, "The provided value for the 'device_code' is not valid. It has already been redeemed.")
NO_CLIENT: ErrorSpec = ("invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
NO_DEVICE_CODE: ErrorSpec = ("invalid_request", 900144, "The request body must contain the following parameter: 'device_code'.")
NO_REFRESH: ErrorSpec = ("invalid_request", 900144, "The request body must contain the following parameter: 'refresh_token'.")
BAD_SCOPE: ErrorSpec = ("invalid_scope", 70011, "The provided request must include a 'scope' input parameter.")
PUBLIC_CLIENT: ErrorSpec = ("invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
REFRESH_UNKNOWN: ErrorSpec = ("invalid_grant", 70000, "Provided grant is invalid or malformed.")
REFRESH_ROTATED: ErrorSpec = ("invalid_grant", 70000, "The refresh token has already been used to obtain a new one.")
REFRESH_REVOKED: ErrorSpec = ("invalid_grant", 50173, "The provided grant has expired due to it being revoked, a fresh auth token is needed.")
REFRESH_EXPIRED: ErrorSpec = ("invalid_grant", 700082, "The refresh token has expired due to inactivity.")
BAD_GRANT: ErrorSpec = ("unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
TWO_RESOURCES: ErrorSpec = ("invalid_scope", 28000, "Provided value for the input parameter scope is not valid because it contains more than one resource.")

#: The audience of tokens for bare scopes (``User.Read``) and OpenID-only requests.
GRAPH_RESOURCE = "https://graph.microsoft.com"
OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})


def scope_resources(scope: str) -> set[str]:
    """The resources (audiences) a scope string asks for, as Entra reads it.

    ``https://storage.azure.com/.default`` and ``https://storage.azure.com/user_impersonation``
    are ``https://storage.azure.com``; ``api://app/Read`` is ``api://app``;
    a bare ``User.Read`` is Microsoft Graph's; OpenID scopes name none.
    """
    resources = set()
    for item in scope.split():
        if item.lower() in OIDC_SCOPES:
            continue
        if "://" in item:
            head, _, _ = item.rpartition("/")
            resources.add(head if "://" in head and not head.endswith(":/") else item)
        else:
            resources.add(GRAPH_RESOURCE)
    return resources


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


def normalize_code(code: str) -> str:
    """User codes are compared case-insensitively and without dashes or spaces."""
    return re.sub(r"[\s-]", "", code).upper()


def new_user_code(dialect: str, taken: set[str]) -> str:
    """A fresh user code not in *taken*: Entra's 9 characters, or RFC 8628's ``WDJB-MJHT``."""
    while True:
        if dialect == "oidc":
            raw = "".join(secrets.choice(RFC_CODE_ALPHABET) for _ in range(8))
            code = f"{raw[:4]}-{raw[4:]}"
        else:
            code = "".join(secrets.choice(ENTRA_CODE_ALPHABET) for _ in range(9))
        if code not in taken:
            return code


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def id_token(issuer: str, client_id: str, account: str, now: int, lifetime: int) -> str:
    """An unsigned JWT-shaped id token (``alg: none``): clients decode, never trust, it."""
    local = account.split("@", 1)[0]
    claims = {
        "aud": client_id,
        "iss": issuer,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
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


class Errors:
    """Error bodies in the provider's current dialect, stamped with *now* (``clock.time()``)."""

    def __init__(self, dialect: Callable[[], str], now: Callable[[], float]) -> None:
        self._dialect = dialect
        self._now = now

    def error(self, error: str, aadsts: int | None, description: str, status: int = 400) -> Answer:
        """An error body: RFC 6749 §5.2 shape, plus Entra's fields in Entra dialects."""
        if self._dialect() == "oidc" and aadsts is None:
            body: dict[str, object] = {"error": error}
            if description:
                body["error_description"] = description
            return status, body
        trace_id = str(uuid.uuid4())
        correlation_id = str(uuid.uuid4())
        stamp = datetime.fromtimestamp(self._now(), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
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

    def wire(self, spec: ErrorSpec, status: int = 400) -> Answer:
        """*spec* as this dialect says it (a plain provider: no AADSTS, ``access_denied``)."""
        error, aadsts, description = spec
        if self._dialect() == "oidc":
            if error == "authorization_declined":
                error = "access_denied"
            return self.error(error, None, description, status)
        return self.error(error, aadsts, description, status)
