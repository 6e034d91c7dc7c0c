"""Signing out: what a local sign-out removed, and revoking at the provider (RFC 7009).

A local sign-out (:meth:`agent.auth.tokens.TokenClient.sign_out`) never
needs the network; :func:`revoke` then asks the provider to revoke the
refresh token it held, within :data:`REVOKE_DEADLINE`, and says in one line
what became of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import requests

from agent.auth.endpoints import CLOUDS, Endpoints, discover
from agent.auth.errors import AuthError, error_from_answer, origin
from agent.auth.http import request
from agent.auth.tokenset import TokenSet, fingerprint

if TYPE_CHECKING:  # pragma: no cover
    from agent.profiles import Profile

__all__ = ["ENTRA_REVOKE_HINT", "REVOKE_DEADLINE", "Revocation", "SignedOut", "revoke"]

log = logging.getLogger(__name__)

#: does not answer never holds up a local sign-out for longer.
REVOKE_DEADLINE = 5.0
#: What revokes a refresh token where the provider has no RFC 7009 endpoint.
ENTRA_REVOKE_HINT = ("revoke it with Revoke-MgUserSignInSession -UserId <account> (Microsoft Graph "
                     "PowerShell) or \"Revoke sessions\" on the user in the Entra admin center")



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


def revoke(session: requests.Session, profile: "Profile", tokens: TokenSet | None, *,
           endpoints: Endpoints | None, timeout: float) -> Revocation:
    """Ask the provider to revoke *tokens*' refresh token (RFC 7009 §2.1).

    Never raises for a provider problem and never takes longer than
    :data:`REVOKE_DEADLINE` per request (plus discovery): the local
    sign-out has already happened. Returns what became of it, as one
    line for people (:attr:`Revocation.line`). *endpoints* are the
    profile's when already discovered (else discovery runs first).
    """
    secret = tokens.refresh_token if tokens is not None else None
    kind = "refresh_token"
    if not secret and tokens is not None and tokens.access_token:
        secret, kind = tokens.access_token, "access_token"
    if not secret:
        return Revocation("none", "no refresh token was saved: nothing to revoke")
    if profile.is_entra:
        # Entra's v2.0 endpoints have no RFC 7009 endpoint (discovery lists none).
        return Revocation("unsupported", "Entra ID offers no revocation endpoint for "
                          f"refresh tokens: {ENTRA_REVOKE_HINT}")
    try:
        endpoints = endpoints or discover(profile.issuer or "", session, min(timeout, REVOKE_DEADLINE))
    except AuthError as exc:
        return Revocation("failed", "could not ask the provider to revoke the refresh "
                          f"token ({exc.message}); revoke the sign-in at the provider")
    url = endpoints.revocation_endpoint
    if not url:
        if _is_entra_issuer(profile.issuer):
            return Revocation("unsupported", "Entra ID offers no revocation endpoint for "
                              f"refresh tokens: {ENTRA_REVOKE_HINT}")
        return Revocation("unsupported", "the provider lists no revocation_endpoint: "
                          "revoke the sign-in at the provider (its sessions or "
                          "consents page)")
    try:
        answer = request(session, "POST", url, what="the revocation endpoint",
                         deadline=min(timeout, REVOKE_DEADLINE), data={
                             "token": secret, "token_type_hint": kind,
                             "client_id": profile.client_id})
    except AuthError as exc:
        return Revocation("failed", f"could not revoke the refresh token: {exc.message}; "
                          "revoke the sign-in at the provider")
    if answer.status == 200:
        log.info("refresh token %s of profile %s revoked at %s", fingerprint(secret),
                 profile.name, origin(url))
        return Revocation("revoked", f"the refresh token was revoked at {origin(url)}")
    error = error_from_answer(answer.status, answer.json_or_none(), url,
                              "the revocation endpoint")
    return Revocation("failed", f"could not revoke the refresh token: {error.message}; "
                      "revoke the sign-in at the provider")


def _is_entra_issuer(issuer: str | None) -> bool:
    from urllib.parse import urlsplit
    host = urlsplit(issuer or "").hostname or ""
    return any(host == urlsplit(base).hostname for base in CLOUDS.values())
