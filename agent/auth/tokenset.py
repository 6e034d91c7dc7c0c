"""A token set (what the token endpoint gave us) and reading it back from the store.

:class:`TokenSet` is a value: it knows when it expires (on the wall clock,
to survive a restart, and on the monotonic clock while the process runs),
which scopes it covers and how it is saved; :func:`load_tokens` reads a
profile's token file back, naming the file and the fix when it is damaged.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.auth.answers import token_fields
from agent.auth.errors import AuthError
from agent.auth.http import parse_json
from agent.clock import Clock
from agent.errors import StorageError
from agent.textsafe import clean

if TYPE_CHECKING:  # pragma: no cover
    from agent.tokenstore import TokenStore

__all__ = [
    "REFRESH_MARGIN", "OIDC_SCOPES", "OFFLINE_ACCESS", "TokenSet", "decode_id_token_claims",
    "fingerprint", "DamagedTokenFile", "load_tokens",
]

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
