"""The token client: the refresh grant, silent acquisition and the device flow.

:class:`TokenClient` is the one stateful object over a profile, a token
store and a ``requests.Session``; the CLI and the service both use it:

>>> client = TokenClient(profile, store=TokenStore(paths.token_dir()))  # doctest: +SKIP
>>> token = client.acquire_silent()          # cached, or refreshed, or SignInRequired

The token set itself is :mod:`agent.auth.tokenset`; signing out and
revocation :mod:`agent.auth.revocation` (their names are re-exported here).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import requests

from agent import __version__
from agent.auth.devicecode import (
    DeviceAuthorization,
    poll_for_token,
    request_device_authorization,
)
from agent.auth.endpoints import Endpoints, discover, entra_endpoints
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
from agent.auth.http import new_session, request
from agent.auth.revocation import REVOKE_DEADLINE, Revocation, SignedOut, revoke
from agent.auth.tokenset import (
    OFFLINE_ACCESS,
    OIDC_SCOPES,
    REFRESH_MARGIN,
    DamagedTokenFile,
    TokenSet,
    decode_id_token_claims,
    fingerprint,
    load_tokens,
)
from agent.clock import Clock, SystemClock
from agent.errors import StorageError

if TYPE_CHECKING:  # pragma: no cover
    from agent.profiles import Profile
    from agent.tokenstore import TokenStore

__all__ = [
    "REFRESH_MARGIN", "OIDC_SCOPES", "TokenSet", "TokenClient", "decode_id_token_claims",
    "fingerprint", "DamagedTokenFile", "SignedOut", "Revocation", "load_tokens", "REVOKE_DEADLINE",
]

log = logging.getLogger(__name__)


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
        return revoke(self.session, self.profile, tokens, endpoints=self._endpoints,
                      timeout=self.timeout)


def _refresh_rejected_for_good(error: AuthError) -> bool:
    if isinstance(error, ProviderUnavailable):
        return False
    if isinstance(error, InvalidGrant):
        return True
    return isinstance(error, OAuthError) and error.aadsts in REAUTH_AADSTS



def _token_answer(body: Any, url: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not body.get("access_token"):
        raise ProviderUnavailable(
            f"the token endpoint at {origin(url)} sent an unreadable answer",
            "check the network: a proxy or captive portal may be in the way",
        )
    return body


def _new_session() -> requests.Session:
    return new_session(f"entra-device-agent/{__version__}")
