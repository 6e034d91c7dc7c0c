"""Token sets, the refresh grant, and silent acquisition.

:class:`TokenClient` is the one stateful object over a profile, a token
store and a ``requests.Session``; the CLI and the service both use it:

>>> client = TokenClient(profile, store=TokenStore(paths.token_dir()))  # doctest: +SKIP
>>> token = client.acquire_silent()          # cached, or refreshed, or SignInRequired
"""

from __future__ import annotations

import base64
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests

from agent import __version__
from agent.auth.answers import token_fields
from agent.auth.devicecode import (
    DeviceAuthorization,
    poll_for_token,
    request_device_authorization,
)
from agent.auth.endpoints import CLOUDS, Endpoints, discover, entra_endpoints
from agent.auth.errors import (
    REAUTH_AADSTS,
    AuthError,
    InvalidGrant,
    OAuthError,
    ProviderUnavailable,
    SignInRequired,
    error_from_answer,
    origin,
)
from agent.auth.http import new_session, parse_json, request
from agent.clock import Clock, SystemClock
from agent.errors import StorageError
from agent.textsafe import clean

if TYPE_CHECKING:  # pragma: no cover
    from agent.profiles import Profile
    from agent.tokenstore import TokenStore

__all__ = [
    "REFRESH_MARGIN", "OIDC_SCOPES", "TokenSet", "TokenClient", "decode_id_token_claims",
    "fingerprint", "DamagedTokenFile", "SignedOut", "Revocation", "load_tokens",
]

log = logging.getLogger(__name__)

#: Refresh a token this many seconds before it expires.
REFRESH_MARGIN = 300.0
#: Scopes every request carries so the account name and a refresh token come back.
OIDC_SCOPES = ("openid", "profile")
OFFLINE_ACCESS = "offline_access"
#: Stored token file layout version.
TOKEN_FILE_VERSION = 1
#: ID token claims kept (to name the account and tenant), and their longest length.
CLAIMS_KEPT = ("preferred_username", "upn", "email", "unique_name", "name", "tid", "oid",
               "sub", "iss", "aud")
CLAIM_LIMIT = 256
#: Overall deadline of a revocation request, in seconds: a provider that
#: does not answer never holds up a local sign-out for longer.
REVOKE_DEADLINE = 5.0
#: What revokes a refresh token where the provider has no RFC 7009 endpoint.
ENTRA_REVOKE_HINT = ("revoke it with Revoke-MgUserSignInSession -UserId <account> (Microsoft Graph "
                     "PowerShell) or \"Revoke sessions\" on the user in the Entra admin center")


def fingerprint(secret: str | None) -> str:
    """A safe stand-in for a secret in logs: last 4 hex digits of its SHA-256."""
    if not secret:
        return "-"
    import hashlib
    return hashlib.sha256(secret.encode()).hexdigest()[-4:]


def decode_id_token_claims(id_token: str | None) -> dict[str, Any]:
    """The claims of an ID token, decoded but NOT verified.

    The token came straight from the token endpoint over TLS (RFC 6749
    §10.4 / OIDC Core §3.1.3.7 allow skipping the signature check then), and
    we use the claims only to name the account on a screen, never to
    authorize anything.

    Server text enters here: only text claims are kept, each cleaned of
    control and bidi characters and bounded (:func:`agent.textsafe.clean`),
    so the account name is safe on a terminal, a screen and MQTT.
    """
    if not isinstance(id_token, str) or id_token.count(".") < 1:
        return {}
    payload = id_token.split(".")[1]
    if len(payload) > 64 * 1024:
        return {}
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = parse_json(raw, "the ID token", "")
    except (ValueError, AuthError):
        return {}
    if not isinstance(claims, dict):
        return {}
    return {k: clean(claims[k], CLAIM_LIMIT) for k in CLAIMS_KEPT
            if isinstance(claims.get(k), str) and claims[k]}


class DamagedTokenFile(StorageError):
    """A token file whose fields are missing or of the wrong type (exit 6).

    Raised by :meth:`TokenSet.from_dict`; callers that know the profile
    (:class:`TokenClient`) replace it with the path and the fix.
    """

    def __init__(self, key: str) -> None:
        super().__init__(f"token file is damaged ({key} is missing or not valid)",
                         "sign in again: entra-auth-cli logout, then get-token")
        self.key = key


@dataclass
class TokenSet:
    """What the token endpoint gave us, plus when it expires.

    ``expires_at`` is wall-clock time (it must survive a restart); while the
    process runs, expiry is tracked on the monotonic clock too, so an NTP
    step on a board without a real-time clock does not expire it falsely.
    """

    access_token: str = field(repr=False)
    expires_at: float                       # wall-clock epoch seconds
    scope: list[str]
    token_type: str = "Bearer"
    refresh_token: str | None = field(default=None, repr=False)
    id_token_claims: dict[str, Any] = field(default_factory=dict)
    refresh_in: int | None = None           # Entra's hint, seconds after obtained_at
    obtained_at: float = 0.0                # wall-clock epoch seconds
    client_id: str = ""
    requested: list[str] = field(default_factory=list)   # the scopes asked for
    _deadline: float | None = field(default=None, repr=False, compare=False)
    _refresh_deadline: float | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_response(cls, body: dict[str, Any], *, clock: Clock, client_id: str,
                      requested: Sequence[str], previous: "TokenSet | None" = None,
                      what: str = "the token endpoint", url: str = "") -> "TokenSet":
        """Build from an RFC 6749 §5.1 response (kept refresh token if none came).

        Every field is checked first (:func:`agent.auth.answers.token_fields`):
        a wrong type or an absurd number is an
        :class:`~agent.auth.errors.InvalidAnswer`, and nothing is built, so
        nothing invalid can reach the token file.
        """
        fields = token_fields(body, what, url)
        expires_in = float(fields.expires_in)
        scope = list(fields.scope) if fields.scope else " ".join(requested).split()
        claims = decode_id_token_claims(fields.id_token)
        if not claims and previous is not None:
            claims = dict(previous.id_token_claims)
        now_wall, now_mono = clock.time(), clock.monotonic()
        tokens = cls(
            access_token=fields.access_token,
            expires_at=now_wall + expires_in,
            scope=scope,
            token_type=fields.token_type,
            # RFC 6749 §6: the provider MAY issue a new refresh token; keep the old one if not.
            refresh_token=fields.refresh_token or (previous.refresh_token if previous else None),
            id_token_claims=claims,
            refresh_in=fields.refresh_in,
            obtained_at=now_wall,
            client_id=client_id,
            requested=list(requested),
        )
        tokens._deadline = now_mono + expires_in
        if tokens.refresh_in is not None:
            tokens._refresh_deadline = now_mono + tokens.refresh_in
        return tokens

    @property
    def account(self) -> str:
        """The signed-in person's name as Entra shows it (may be empty)."""
        c = self.id_token_claims
        return str(c.get("preferred_username") or c.get("upn") or c.get("email")
                   or c.get("unique_name") or c.get("name") or "")

    @property
    def tenant_id(self) -> str:
        return str(self.id_token_claims.get("tid") or "")

    def anchor(self, clock: Clock) -> None:
        """Start tracking expiry on the monotonic clock (after loading from disk)."""
        if self._deadline is None:
            left = self.expires_at - clock.time()
            self._deadline = clock.monotonic() + left
            if self.refresh_in is not None:
                self._refresh_deadline = clock.monotonic() + (self.obtained_at + self.refresh_in - clock.time())

    def seconds_left(self, clock: Clock) -> float:
        """Seconds the access token is still valid (negative when expired)."""
        if self._deadline is not None:
            return self._deadline - clock.monotonic()
        return self.expires_at - clock.time()

    def refresh_due_in(self, clock: Clock, margin: float = REFRESH_MARGIN) -> float:
        """Seconds until a refresh should happen (0 when due now)."""
        due = self.seconds_left(clock) - margin
        if self._refresh_deadline is not None:
            due = min(due, self._refresh_deadline - clock.monotonic())
        elif self.refresh_in is not None:
            due = min(due, self.obtained_at + self.refresh_in - clock.time())
        return max(0.0, due)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": TOKEN_FILE_VERSION,
            "client_id": self.client_id,
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_at": self.expires_at,
            "scope": list(self.scope),
            "refresh_token": self.refresh_token,
            "id_token_claims": dict(self.id_token_claims),
            "refresh_in": self.refresh_in,
            "obtained_at": self.obtained_at,
            "requested_scopes": list(self.requested),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TokenSet":
        """Build from a token file's content; :class:`DamagedTokenFile` when a
        field is missing or has the wrong type (never a traceback)."""
        def text(key: str, required: bool = False) -> str | None:
            value = data.get(key)
            if value is None and not required:
                return None
            if not isinstance(value, str) or (required and not value) \
                    or not all(0x20 <= ord(c) < 0x7F for c in value):
                raise DamagedTokenFile(key)
            return value

        def number(key: str, required: bool = False) -> float | None:
            value = data.get(key)
            if value is None and not required:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or not 0 <= value < 1e11:
                raise DamagedTokenFile(key)
            return float(value)

        def texts(key: str) -> list[str]:
            value = data.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DamagedTokenFile(key)
            return list(value)

        claims = data.get("id_token_claims") or {}
        if not isinstance(claims, dict):
            raise DamagedTokenFile("id_token_claims")
        refresh_in = number("refresh_in")
        return cls(
            access_token=text("access_token", required=True) or "",
            expires_at=number("expires_at", required=True) or 0.0,
            scope=texts("scope"),
            token_type=text("token_type") or "Bearer",
            refresh_token=text("refresh_token") or None,
            # Cleaned again on the way in: the file may come from an older version.
            id_token_claims={k: clean(v, CLAIM_LIMIT) for k, v in claims.items()
                             if k in CLAIMS_KEPT and isinstance(v, str) and v},
            refresh_in=int(refresh_in) if refresh_in is not None else None,
            obtained_at=number("obtained_at") or 0.0,
            client_id=text("client_id") or "",
            requested=texts("requested_scopes"),
        )

    def covers(self, scopes: Sequence[str]) -> bool:
        """True when this token was asked for (at least) *scopes*.

        Compared with what we requested, not the provider's answer: Entra
        answers ``User.Read`` for ``https://graph.microsoft.com/User.Read``.
        """
        return _plain_scopes(scopes) <= _plain_scopes(self.requested or self.scope)


def _plain_scopes(scopes: Sequence[str]) -> set[str]:
    ignore = {*OIDC_SCOPES, OFFLINE_ACCESS}
    return {s.lower() for s in scopes if s.lower() not in ignore}


class TokenClient:
    """Sign-in and tokens for one profile: the object the CLI and service share."""

    def __init__(self, profile: "Profile", *, store: "TokenStore", clock: Clock | None = None,
                 session: requests.Session | None = None, timeout: float = 10.0) -> None:
        self.profile = profile
        self.store = store
        self.clock = clock or SystemClock()
        self.timeout = timeout
        self.session = session or _new_session()
        self._endpoints: Endpoints | None = None
        self._current: TokenSet | None = None
        self._requested: list[str] | None = None
        self._lock = threading.Lock()

    # -- endpoints and scopes -------------------------------------------------

    def endpoints(self) -> Endpoints:
        """The profile's endpoints (OIDC discovery happens once, on first use)."""
        if self._endpoints is None:
            p = self.profile
            if p.issuer:
                self._endpoints = discover(p.issuer, self.session, self.timeout)
            else:
                self._endpoints = entra_endpoints(p.tenant_id or "organizations", p.cloud,
                                                  p.authority_host)
        return self._endpoints

    def scopes(self, extra: Sequence[str] | None = None) -> list[str]:
        """The scopes to request: the profile's (or *extra*), OIDC ones, offline_access."""
        wanted = list(extra) if extra else list(self.profile.scopes)
        out: list[str] = []
        for scope in [*wanted, *OIDC_SCOPES] + ([OFFLINE_ACCESS] if self.profile.offline_access else []):
            if scope not in out:
                out.append(scope)
        return out

    # -- cached and silent ------------------------------------------------------

    def cached(self) -> TokenSet | None:
        """The saved token set for this profile, without any network call."""
        loaded = load_tokens(self.store, self.profile.name)
        if loaded is None:
            self._current = None
            return None
        if loaded.client_id and loaded.client_id != self.profile.client_id:
            log.info("saved token of profile %s belongs to another client id; ignoring it",
                     self.profile.name)
            return None
        current = self._current
        if current is not None and current.access_token == loaded.access_token \
                and current.refresh_token == loaded.refresh_token:
            return current      # keep its monotonic deadline
        loaded.anchor(self.clock)
        self._current = loaded
        return loaded

    def acquire_silent(self, min_validity: float = REFRESH_MARGIN,
                       scopes: Sequence[str] | None = None) -> TokenSet:
        """A token valid for more than *min_validity* seconds, without a person.

        A valid cached token comes back with no network call; otherwise the
        refresh grant runs (under the store's lock, so the CLI and the agent
        never spend the same rotating refresh token twice). Raises
        :class:`SignInRequired` or :class:`ProviderUnavailable`.

        A valid token is looked at without the lock (files are replaced
        whole, so a reader sees the old or the new one): another process
        holding the lock for a slow refresh does not hold up a token that
        is good as it is.
        """
        with self._lock:
            tokens = self.cached()
            if tokens is not None and self._good_enough(tokens, scopes, min_validity):
                return tokens
        with self._lock, self.store.locked(self.profile.name):
            tokens = self._require_cached()
            same_scopes = tokens.covers(scopes or self.profile.scopes)
            if self._good_enough(tokens, scopes, min_validity):
                return tokens
            try:
                return self._refresh_locked(tokens, scopes)
            except ProviderUnavailable as exc:
                # Keep the current token while it lasts; the caller retries later.
                if same_scopes and tokens.seconds_left(self.clock) > 0:
                    log.warning("refresh failed (%s); using the current token, valid for %.0f s",
                                exc.message, tokens.seconds_left(self.clock))
                    return tokens
                raise

    def _good_enough(self, tokens: TokenSet, scopes: Sequence[str] | None,
                     min_validity: float) -> bool:
        return (tokens.covers(scopes or self.profile.scopes)
                and tokens.seconds_left(self.clock) > min_validity
                and tokens.refresh_due_in(self.clock, 0.0) > 0)

    def refresh(self, scopes: Sequence[str] | None = None) -> TokenSet:
        """Refresh now (e.g. after the endpoint answered 401)."""
        with self._lock, self.store.locked(self.profile.name):
            return self._refresh_locked(self._require_cached(), scopes)

    def _require_cached(self) -> TokenSet:
        tokens = self.cached()
        if tokens is None:
            raise SignInRequired(
                f"no saved sign-in for profile '{self.profile.name}'",
                f"run: entra-auth-cli get-token --flow device-code --profile {self.profile.name}",
            )
        return tokens

    def _refresh_locked(self, tokens: TokenSet, scopes: Sequence[str] | None) -> TokenSet:
        if not tokens.refresh_token:
            raise SignInRequired(
                f"the saved token of profile '{self.profile.name}' cannot be refreshed "
                "(no refresh token was issued)",
                f"sign in again: entra-auth-cli get-token --profile {self.profile.name}",
            )
        requested = self.scopes(scopes)
        endpoints = self.endpoints()
        url = endpoints.token_endpoint
        answer = request(self.session, "POST", url, what="the token endpoint",
                         deadline=self.timeout, data={
                             "grant_type": "refresh_token",
                             "client_id": self.profile.client_id,
                             "refresh_token": tokens.refresh_token,
                             "scope": " ".join(requested),
                         })
        if answer.status != 200:
            error = error_from_answer(answer.status, answer.json_or_none(), url, "the token endpoint")
            if _refresh_rejected_for_good(error):
                # INFO: the SignInRequired raised below carries the same words to the caller.
                log.info("refresh for profile %s rejected: %s", self.profile.name, error.message)
                raise SignInRequired(
                    f"the saved sign-in of profile '{self.profile.name}' is no longer accepted: {error.message}",
                    f"sign in again: entra-auth-cli get-token --flow device-code --profile {self.profile.name}",
                ) from None
            raise error
        body = _token_answer(answer.json(), url)
        before = fingerprint(tokens.refresh_token)     # `tokens` may be updated below
        new = TokenSet.from_response(body, clock=self.clock, client_id=self.profile.client_id,
                                     requested=requested, previous=tokens, url=url)
        # Rotation: the new refresh token is on disk before anyone uses the access token.
        if new.covers(self.profile.scopes):
            self._save(new)
            self._current = new
        elif new.refresh_token != tokens.refresh_token:
            # A token for other scopes (get-token --scope): keep the profile's
            # own access token on disk, but never lose the rotated refresh token.
            tokens.refresh_token = new.refresh_token
            self._save(tokens)
        log.info("token refreshed for profile %s (refresh token %s -> %s)", self.profile.name,
                 before, fingerprint(new.refresh_token))
        return new

    # -- the device flow ------------------------------------------------------

    def request_code(self, scopes: Sequence[str] | None = None, *,
                     cancel: threading.Event | None = None) -> DeviceAuthorization:
        """Ask the provider for a user code (RFC 8628 §3.1)."""
        self._requested = self.scopes(scopes)
        return request_device_authorization(
            self.session, self.endpoints(), self.profile.client_id, self._requested,
            clock=self.clock, timeout=self.timeout, cancel=cancel,
        )

    def poll(self, authorization: DeviceAuthorization, *, cancel: threading.Event | None = None,
             on_wait: Callable[[float], None] | None = None, tick: float | None = None) -> TokenSet:
        """Poll until the person approves, then save and return the tokens."""
        body = poll_for_token(
            self.session, self.endpoints(), self.profile.client_id, authorization,
            clock=self.clock, cancel=cancel, timeout=self.timeout, on_wait=on_wait, tick=tick,
        )
        requested = self._requested or self.scopes()
        tokens = TokenSet.from_response(body, clock=self.clock, client_id=self.profile.client_id,
                                        requested=requested,
                                        url=self.endpoints().token_endpoint)
        with self._lock, self.store.locked(self.profile.name):
            self._save(tokens)
            self._current = tokens
        log.info("signed in to profile %s as %s", self.profile.name, tokens.account or "?")
        return tokens

    def _save(self, tokens: TokenSet) -> None:
        """Write *tokens* (caller holds the lock), checked the way they will be
        read back: nothing that would read as damaged is ever written."""
        data = tokens.to_dict()
        TokenSet.from_dict(data)
        self.store.save(self.profile.name, data)

    def sign_out(self) -> "SignedOut":
        """Forget this profile's tokens (delete the token file), with no network.

        Returns whether a file was removed and what it held, for
        :meth:`revoke`. A damaged or refused token file is removed too: a
        local sign-out never fails because of the file's content.
        """
        with self._lock, self.store.locked(self.profile.name):
            self._current = None
            try:
                tokens = load_tokens(self.store, self.profile.name)
            except StorageError as exc:
                log.info("profile %s: signing out without reading the token file (%s)",
                         self.profile.name, exc.message)
                tokens = None
            deleted = self.store.delete(self.profile.name)
        return SignedOut(deleted=deleted, tokens=tokens)

    def revoke(self, tokens: "TokenSet | None") -> "Revocation":
        """Ask the provider to revoke *tokens*' refresh token (RFC 7009 §2.1).

        Never raises for a provider problem and never takes longer than
        :data:`REVOKE_DEADLINE` per request (plus discovery): the local
        sign-out has already happened. Returns what became of it, as one
        line for people (:attr:`Revocation.line`).
        """
        secret = tokens.refresh_token if tokens is not None else None
        kind = "refresh_token"
        if not secret and tokens is not None and tokens.access_token:
            secret, kind = tokens.access_token, "access_token"
        if not secret:
            return Revocation("none", "no refresh token was saved: nothing to revoke")
        if self.profile.is_entra:
            # Entra's v2.0 endpoints have no RFC 7009 endpoint (discovery lists none).
            return Revocation("unsupported", "Entra ID offers no revocation endpoint for "
                              f"refresh tokens: {ENTRA_REVOKE_HINT}")
        try:
            endpoints = self._endpoints or discover(self.profile.issuer or "", self.session,
                                                    min(self.timeout, REVOKE_DEADLINE))
        except AuthError as exc:
            return Revocation("failed", "could not ask the provider to revoke the refresh "
                              f"token ({exc.message}); revoke the sign-in at the provider")
        url = endpoints.revocation_endpoint
        if not url:
            if _is_entra_issuer(self.profile.issuer):
                return Revocation("unsupported", "Entra ID offers no revocation endpoint for "
                                  f"refresh tokens: {ENTRA_REVOKE_HINT}")
            return Revocation("unsupported", "the provider lists no revocation_endpoint: "
                              "revoke the sign-in at the provider (its sessions or "
                              "consents page)")
        try:
            answer = request(self.session, "POST", url, what="the revocation endpoint",
                             deadline=min(self.timeout, REVOKE_DEADLINE), data={
                                 "token": secret, "token_type_hint": kind,
                                 "client_id": self.profile.client_id})
        except AuthError as exc:
            return Revocation("failed", f"could not revoke the refresh token: {exc.message}; "
                              "revoke the sign-in at the provider")
        if answer.status == 200:
            log.info("refresh token %s of profile %s revoked at %s", fingerprint(secret),
                     self.profile.name, origin(url))
            return Revocation("revoked", f"the refresh token was revoked at {origin(url)}")
        error = error_from_answer(answer.status, answer.json_or_none(), url,
                                  "the revocation endpoint")
        return Revocation("failed", f"could not revoke the refresh token: {error.message}; "
                          "revoke the sign-in at the provider")


@dataclass(frozen=True)
class SignedOut:
    """A local sign-out: whether a token file was removed, and what it held
    (None when it held nothing readable). True when a file was removed."""

    deleted: bool
    tokens: TokenSet | None = field(default=None, repr=False)

    def __bool__(self) -> bool:
        return self.deleted


@dataclass(frozen=True)
class Revocation:
    """What became of a revocation (RFC 7009): ``revoked``, ``unsupported``
    (no endpoint), ``failed`` (unreachable, refused) or ``none`` (nothing to
    revoke); *line* says it in one line for people."""

    outcome: str
    line: str


def load_tokens(store: "TokenStore", profile: str) -> TokenSet | None:
    """The saved token set of *profile* (None: not signed in).

    :raises StorageError: the file is refused (permissions) or damaged —
        not JSON, or a field missing or of the wrong type — naming the file
        and the fix (exit 6), never a traceback.
    """
    data = store.load(profile)
    if data is None:
        return None
    try:
        return TokenSet.from_dict(data)
    except DamagedTokenFile as exc:
        path = store.path(profile)
        raise StorageError(
            f"token file {path} is damaged ({exc.key} is missing or not valid)",
            f"sign in again: run `entra-auth-cli logout --profile {profile}` or delete {path}",
        ) from exc


def _refresh_rejected_for_good(error: AuthError) -> bool:
    if isinstance(error, ProviderUnavailable):
        return False
    if isinstance(error, InvalidGrant):
        return True
    return isinstance(error, OAuthError) and error.aadsts in REAUTH_AADSTS


def _is_entra_issuer(issuer: str | None) -> bool:
    from urllib.parse import urlsplit
    host = urlsplit(issuer or "").hostname or ""
    return any(host == urlsplit(base).hostname for base in CLOUDS.values())


def _token_answer(body: Any, url: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not body.get("access_token"):
        raise ProviderUnavailable(
            f"the token endpoint at {origin(url)} sent an unreadable answer",
            "check the network: a proxy or captive portal may be in the way",
        )
    return body


def _new_session() -> requests.Session:
    return new_session(f"entra-device-agent/{__version__}")
