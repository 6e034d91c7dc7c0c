"""The sandbox identity provider's tokens: access tokens (one resource each,
as Entra), refresh tokens (RFC 6749 §6: rotation, revocation, expiry) and
RFC 7009 revocation. Call everything with the provider's lock held.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable

from agent.sandbox import idp_entra as entra
from agent.sandbox.idp_entra import GRAPH_RESOURCE, Answer, Errors, scope_resources

__all__ = ["RefreshToken", "Tokens"]


@dataclasses.dataclass
class RefreshToken:
    client_id: str
    scope: str
    account: str
    tenant: str
    state: str = "valid"        # valid | rotated | revoked | expired


class Tokens:
    """Every token issued, what each is for, and which are still good.

    *remember* is called with every secret issued (to scan output for leaks).
    """

    def __init__(self, errors: Errors, remember: Callable[[str], str]) -> None:
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.access_tokens: dict[str, tuple[str, float]] = {}   # token -> (account, expires monotonic)
        self.audiences: dict[str, str] = {}                     # access token -> aud
        self.revoked: list[str] = []                            # RFC 7009 revocations, in order
        self._errors = errors
        self._remember = remember

    def issue(self, client_id: str, scope: str, account: str, tenant: str, *, now: float, lifetime: int,
              numbers: Callable[[int], int | str], refresh_in: int | None, id_token: Callable[[], str],
              with_refresh: bool = True) -> dict[str, object]:
        """The token response body (RFC 6749 §5.1, with Entra's fields)."""
        scopes = scope.split()
        access_token = self._remember(secrets.token_urlsafe(32))
        self.access_tokens[access_token] = (account, now + lifetime)
        self.audiences[access_token] = min(scope_resources(scope) or {GRAPH_RESOURCE})
        body: dict[str, object] = {
            "token_type": "Bearer",
            "scope": scope,
            "expires_in": numbers(lifetime),
            "ext_expires_in": numbers(lifetime),
            "access_token": access_token,
        }
        if refresh_in is not None:
            body["refresh_in"] = numbers(refresh_in)
        if with_refresh and "offline_access" in scopes:
            refresh_token = self._remember(secrets.token_urlsafe(64))
            self.refresh_tokens[refresh_token] = RefreshToken(client_id, scope, account, tenant)
            body["refresh_token"] = refresh_token
        if "openid" in scopes:
            body["id_token"] = self._remember(id_token())
        return body

    def redeem_refresh(self, client_id: str, refresh_token: str) -> RefreshToken | Answer:
        """The valid refresh token *refresh_token* of *client_id*, or the error to answer."""
        errors = self._errors
        if not refresh_token:
            return errors.wire(entra.NO_REFRESH)
        entry = self.refresh_tokens.get(refresh_token)
        if entry is None or entry.client_id != client_id:
            return errors.wire(entra.REFRESH_UNKNOWN)
        if entry.state == "rotated":
            return errors.wire(entra.REFRESH_ROTATED)
        if entry.state == "revoked":
            return errors.wire(entra.REFRESH_REVOKED)
        if entry.state == "expired":
            return errors.wire(entra.REFRESH_EXPIRED)
        return entry

    def revoke(self, token: str, client_id: str) -> Answer:
        """RFC 7009 §2.1-2.2: 200 for a revoked *or unknown* token (so the
        answer tells nothing); the client must be the token's own."""
        if not token:
            return 400, {"error": "invalid_request", "error_description": "The request must include 'token'."}
        entry = self.refresh_tokens.get(token)
        if entry is not None:
            if entry.client_id != client_id:
                return 400, {"error": "invalid_client", "error_description": "The token belongs to another client."}
            entry.state = "revoked"
        self.access_tokens.pop(token, None)
        self.revoked.append(token)
        return 200, {}

    def mark_refresh_tokens(self, state: str) -> int:
        """Every valid refresh token is now *state*; returns how many changed."""
        changed = 0
        for entry in self.refresh_tokens.values():
            if entry.state == "valid":
                entry.state = state
                changed += 1
        return changed

    def account_of(self, token: str, now: float) -> str | None:
        """The account behind access token *token* if it was issued here and has not expired."""
        entry = self.access_tokens.get(token)
        if entry is None:
            return None
        account, expires_at = entry
        return account if now < expires_at else None
