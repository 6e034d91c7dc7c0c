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

Where things are: this module is the server and its scripting API;
:mod:`agent.sandbox.idp_grants` decides each answer (codes in
:mod:`~agent.sandbox.idp_codes`, tokens in :mod:`~agent.sandbox.idp_tokens`,
Entra's vocabulary and error bodies in :mod:`~agent.sandbox.idp_entra`);
:mod:`agent.sandbox.idp_http` routes requests and :mod:`agent.sandbox.idp_pages`
draws the sign-in page.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Generic, TypeVar

from agent.clock import Clock, SystemClock
from agent.sandbox._http import SandboxServer, SandboxService
from agent.sandbox.idp_entra import (
    DEFAULT_ACCESS_TOKEN_LIFETIME,
    DEFAULT_CODE_LIFETIME,
    DEFAULT_INTERVAL,
    DEVICE_CODE_GRANT_TYPE,
    DIALECTS,
    GRAPH_RESOURCE,
    REFRESH_TOKEN_GRANT_TYPE,
    SANDBOX_TENANT_ID,
    Fault,
    scope_resources,
)
from agent.sandbox.idp_grants import Grants, Policy
from agent.sandbox.idp_http import IdpHandler

__all__ = [
    "DEVICE_CODE_GRANT_TYPE",
    "DIALECTS",
    "SANDBOX_TENANT_ID",
    "Fault",
    "GRAPH_RESOURCE",
    "IdentityProvider",
    "scope_resources",
]

# Re-exported for callers of the old single module (all live in idp_entra).
_REEXPORTED = (DEFAULT_ACCESS_TOKEN_LIFETIME, DEFAULT_CODE_LIFETIME, DEFAULT_INTERVAL, REFRESH_TOKEN_GRANT_TYPE)

T = TypeVar("T")


class _PolicyField(Generic[T]):
    """``idp.<name>`` reads and sets ``idp.grants.policy.<name>`` (tests change them between requests)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: IdentityProvider | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(obj.grants.policy, self.name)

    def __set__(self, obj: IdentityProvider, value: T) -> None:
        with obj.grants.lock:
            setattr(obj.grants.policy, self.name, value)


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

    interval: _PolicyField[int] = _PolicyField()
    code_lifetime: _PolicyField[int] = _PolicyField()
    access_token_lifetime: _PolicyField[int] = _PolicyField()
    refresh_in: _PolicyField[int | None] = _PolicyField()
    dialect: _PolicyField[str] = _PolicyField()
    rotate_refresh_tokens: _PolicyField[bool] = _PolicyField()
    auto_approve_after_polls: _PolicyField[int | None] = _PolicyField()
    account: _PolicyField[str] = _PolicyField()
    public_client_flows: _PolicyField[bool] = _PolicyField()
    known_client_ids: _PolicyField[set[str] | None] = _PolicyField()
    enforce_interval: _PolicyField[bool] = _PolicyField()
    known_tenants: _PolicyField[set[str] | None] = _PolicyField()
    verification_base_url: _PolicyField[str | None] = _PolicyField()
    revocation: _PolicyField[bool] = _PolicyField()

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
        policy = Policy(
            interval=interval, code_lifetime=code_lifetime, access_token_lifetime=access_token_lifetime,
            refresh_in=refresh_in, dialect=dialect, rotate_refresh_tokens=rotate_refresh_tokens,
            auto_approve_after_polls=auto_approve_after_polls, account=account,
            public_client_flows=public_client_flows,
            known_client_ids=set(known_client_ids) if known_client_ids is not None else None,
            enforce_interval=enforce_interval,
            known_tenants={t.lower() for t in known_tenants} if known_tenants is not None else None,
            verification_base_url=verification_base_url.rstrip("/") if verification_base_url else None,
            revocation=revocation,
        )
        #: Every code and token, and each endpoint's answer (one lock guards it all).
        self.grants = Grants(policy, self.clock)
        self._server = SandboxServer(IdpHandler, host, port, self)

    # -- lifecycle ---------------------------------------------------------

    _thread_name = "sandbox-idp"

    @property
    def stopping(self) -> threading.Event:
        """Set while the server stops (a scripted delay ends early then)."""
        return self._server.stopping

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: use as the Entra authority host."""
        return self.origin

    def issuer(self, tenant: str = "organizations") -> str:
        """The OpenID issuer for *tenant*: ``{base_url}/{tenant}/v2.0``."""
        return self.grants.issuer(self.base_url, tenant)

    @property
    def verification_uri(self) -> str:
        """Where the person signs in: ``{base_url}/devicelogin``."""
        return f"{self.verification_base_url or self.base_url}/devicelogin"

    # -- scripting (in-process) ---------------------------------------------

    def approve(self, user_code: str | None = None, account: str | None = None) -> str:
        """Approve a pending code (None: the newest) as *account*; returns its user code.

        Raises LookupError when no such pending code exists.
        """
        with self.grants.lock:
            code = self.grants.codes.find_pending(user_code, self.clock.monotonic())
            code.state = "approved"
            code.account = account or self.account
            return code.user_code

    def decline(self, user_code: str | None = None) -> str:
        """Decline a pending code (None: the newest); raises LookupError if none."""
        with self.grants.lock:
            code = self.grants.codes.find_pending(user_code, self.clock.monotonic())
            code.state = "declined"
            return code.user_code

    def expire(self, user_code: str | None = None) -> str:
        """Expire a pending code now (None: the newest); raises LookupError if none."""
        with self.grants.lock:
            code = self.grants.codes.find_pending(user_code, self.clock.monotonic())
            code.state = "expired"
            return code.user_code

    def pending_user_codes(self) -> list[str]:
        """User codes still waiting for a person, oldest first."""
        with self.grants.lock:
            return [c.user_code for c in self.grants.codes.pending(self.clock.monotonic())]

    def wait_for_code(self, timeout: float = 5.0) -> str:
        """Block (real time, up to *timeout* seconds) until a code is pending; return the newest.

        Raises TimeoutError when none shows up in time.
        """
        codes = self.grants.codes
        with codes.issued:
            if not codes.issued.wait_for(lambda: bool(codes.pending(self.clock.monotonic())), timeout):
                raise TimeoutError(f"no device code was requested from the sandbox within {timeout} s")
            return codes.pending(self.clock.monotonic())[-1].user_code

    def queue_token_faults(self, *faults: Fault) -> None:
        """The next token requests answer with these, one each, in order."""
        with self.grants.lock:
            self.grants.token_faults.extend(faults)

    def queue_devicecode_faults(self, *faults: Fault) -> None:
        """The next device authorization requests answer with these, one each, in order."""
        with self.grants.lock:
            self.grants.devicecode_faults.extend(faults)

    def revoke_refresh_tokens(self) -> int:
        """Every refresh token issued so far now fails with AADSTS50173; returns how many."""
        with self.grants.lock:
            return self.grants.tokens.mark_refresh_tokens("revoked")

    def expire_refresh_tokens(self) -> int:
        """Every refresh token issued so far now fails with AADSTS700082; returns how many."""
        with self.grants.lock:
            return self.grants.tokens.mark_refresh_tokens("expired")

    @property
    def revoked(self) -> list[str]:
        """Tokens revoked over RFC 7009, in order (a copy)."""
        with self.grants.lock:
            return list(self.grants.tokens.revoked)

    def refresh_token_state(self, refresh_token: str) -> str | None:
        """``valid``, ``rotated``, ``revoked``, ``expired``, or None when unknown."""
        with self.grants.lock:
            entry = self.grants.tokens.refresh_tokens.get(refresh_token)
            return entry.state if entry is not None else None

    @property
    def counts(self) -> collections.Counter[str]:
        """Requests per endpoint (a copy): ``discovery``, ``devicecode``,
        ``token.device_code``, ``token.refresh_token``, ``token.other``, ``signin_page``."""
        with self.grants.lock:
            return collections.Counter(self.grants.counts)

    @property
    def token_requests(self) -> list[dict[str, object]]:
        """Every token request (a copy): ``{"grant_type", "at": clock.monotonic(), "status", "scope"}``.

        ``status`` is 0 for a dropped connection.
        """
        with self.grants.lock:
            return [dict(r) for r in self.grants.token_requests]

    @property
    def last_scope(self) -> str | None:
        """The scope string of the last device-code or token request that sent one."""
        with self.grants.lock:
            return self.grants.last_scope

    def validate_access_token(self, token: str) -> str | None:
        """The account behind *token* if this server issued it and it has not expired."""
        with self.grants.lock:
            return self.grants.tokens.account_of(token, self.clock.monotonic())

    def audience(self, token: str) -> str | None:
        """The resource (``aud``) an access token of this server was issued for."""
        with self.grants.lock:
            return self.grants.tokens.audiences.get(token)

    def issued_secrets(self) -> list[str]:
        """Every access, refresh and id token and device code issued (to scan output for leaks)."""
        with self.grants.lock:
            return list(self.grants.secrets)

    def state(self) -> dict[str, object]:
        """A JSON-able summary, as served at ``GET /_sandbox/state``."""
        grants = self.grants
        with grants.lock:
            codes = grants.codes.codes
            return {
                "counts": dict(grants.counts),
                "pending": self.pending_user_codes(),
                "approved": sum(1 for c in codes if c.account is not None and c.state in ("approved", "redeemed")),
                "issued_codes": len(codes),
                "redeemed": sum(1 for c in codes if c.state == "redeemed"),
                "refresh_tokens_valid": sum(1 for r in grants.tokens.refresh_tokens.values() if r.state == "valid"),
                "dialect": self.dialect,
                "verification_uri": self.verification_uri,
            }
