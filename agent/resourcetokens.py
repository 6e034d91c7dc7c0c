"""Access tokens for other resources, from the profile's refresh token, cached in memory.

Entra ID issues an access token for any resource the app registration may
use from the one refresh token a sign-in gave (scope ``<resource>/.default``
with the refresh grant). :class:`ResourceTokens` asks for them through
:meth:`agent.auth.tokens.TokenClient.refresh` (so a rotated refresh token is
saved through the token store, under its lock, before the access token is
handed out) and keeps each one in memory only, until shortly before it
expires. Nothing here is ever written to disk.

Other OpenID providers have no such thing: only the profile's own scopes are
served, and any other resource is a :class:`ResourceNotAllowed`.

>>> tokens = ResourceTokens(client)                       # doctest: +SKIP
>>> tokens.get("https://storage.azure.com").access_token  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.auth.errors import AuthError
from agent.clock import Clock
from agent.errors import EXIT_USAGE

if TYPE_CHECKING:  # pragma: no cover
    from agent.auth.tokens import TokenClient, TokenSet

__all__ = ["DEFAULT_SUFFIX", "SERVE_MARGIN", "MAX_RESOURCES", "ResourceToken", "ResourceTokens",
           "ResourceNotAllowed", "check_resource", "scopes_for"]

log = logging.getLogger(__name__)

#: Entra's scope for "every permission the app registration has on a resource".
DEFAULT_SUFFIX = "/.default"
#: A cached token is handed out while it has more than this many seconds left
#: (capped at half its lifetime). The Azure SDKs treat a token with less than
#: 5 minutes left as expired and ask again, so serving one that close to its
#: end would only bring them back.
SERVE_MARGIN = 600.0
#: Resources kept at most; past that the one expiring soonest is dropped.
MAX_RESOURCES = 64
#: Longest resource (or scope) accepted, in characters.
MAX_RESOURCE_LENGTH = 512

_RESOURCE_RE = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")   # RFC 6749 §3.3 scope-token characters


class ResourceNotAllowed(AuthError, ValueError):
    """A resource this profile's provider cannot issue tokens for."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class ResourceToken:
    """An access token for one resource, with when it expires."""

    resource: str
    access_token: str = field(repr=False)
    token_type: str
    expires_on: float           # wall-clock epoch seconds (what the SDKs read)
    seconds_left: float
    from_cache: bool


def check_resource(resource: str) -> str | None:
    """Why *resource* is not acceptable, or None when it is (a URI or scope token)."""
    if not resource:
        return "is empty"
    if len(resource) > MAX_RESOURCE_LENGTH:
        return f"is longer than {MAX_RESOURCE_LENGTH} characters"
    if not _RESOURCE_RE.match(resource):
        return "has spaces, quotes or control characters"
    return None


def scopes_for(resource: str, *, entra: bool, profile_scopes: tuple[str, ...]) -> list[str] | None:
    """The scopes to request for *resource*, or None when it cannot be served.

    Entra: a scope of the profile or a ``.../.default`` scope as it is, any
    other resource as ``<resource>/.default`` (``https://management.azure.com/``
    becomes ``https://management.azure.com//.default``, as Entra wants).
    Other providers: the profile's scopes, when *resource* is one of them.
    """
    if resource in profile_scopes:
        return [resource] if entra else list(profile_scopes)
    if not entra:
        return None
    if resource.endswith(DEFAULT_SUFFIX):
        return [resource]
    return [resource + DEFAULT_SUFFIX]


class ResourceTokens:
    """Per-resource access tokens for one profile, cached in memory.

    Thread-safe: two programs asking for the same new resource at once make
    one token request; different resources do not wait for each other
    (beyond the token store's lock around each refresh grant).
    """

    def __init__(self, client: "TokenClient", *, clock: Clock | None = None,
                 margin: float = SERVE_MARGIN, max_resources: int = MAX_RESOURCES) -> None:
        self.client = client
        self.clock = clock or client.clock
        self.margin = margin
        self.max_resources = max_resources
        self._lock = threading.Lock()
        self._entries: dict[str, "TokenSet"] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._seen: set[str] = set()

    def get(self, resource: str) -> ResourceToken:
        """A token for *resource* valid for a while yet: from memory, or refreshed.

        :raises ResourceNotAllowed: for a resource this provider cannot serve.
        :raises SignInRequired: when the refresh token is no longer accepted.
        :raises ProviderUnavailable: when the provider cannot be reached.
        """
        reason = check_resource(resource)
        if reason is not None:
            raise ResourceNotAllowed(f"the resource {reason}",
                                     "give a resource URI such as https://storage.azure.com")
        profile = self.client.profile
        scopes = scopes_for(resource, entra=profile.is_entra, profile_scopes=tuple(profile.scopes))
        if scopes is None:
            raise ResourceNotAllowed(
                f"profile '{profile.name}' signs in with {profile.authority}, which is not Entra ID: "
                f"only its own scopes can be served ({', '.join(profile.scopes)}), not {resource}",
                "ask for one of those, or use an Entra ID profile for other resources")
        cached = self._fresh(resource)
        if cached is not None:
            return cached
        with self._resource_lock(resource):
            cached = self._fresh(resource)          # another thread got it meanwhile
            if cached is not None:
                return cached
            tokens = self.client.refresh(scopes)
            with self._lock:
                self._entries[resource] = tokens
                self._evict()
                first = resource not in self._seen
                self._seen.add(resource)
        if first:
            log.info("token service: first token for %s (profile %s, valid %.0f s)",
                     resource, profile.name, tokens.seconds_left(self.clock))
        else:
            log.debug("token service: refreshed the token for %s", resource)
        return self._token(resource, tokens, from_cache=False)

    def forget(self) -> None:
        """Drop every cached token (after a sign-out or a new sign-in)."""
        with self._lock:
            self._entries.clear()

    def resources(self) -> list[str]:
        """The resources with a cached token, sorted (no tokens)."""
        with self._lock:
            return sorted(self._entries)

    # -- internals -----------------------------------------------------------

    def _margin(self, tokens: "TokenSet") -> float:
        lifetime = max(1.0, tokens.expires_at - (tokens.obtained_at or tokens.expires_at))
        return min(self.margin, lifetime / 2)

    def _fresh(self, resource: str) -> ResourceToken | None:
        with self._lock:
            tokens = self._entries.get(resource)
        if tokens is None:
            return None
        if tokens.refresh_due_in(self.clock, self._margin(tokens)) <= 0:
            return None
        return self._token(resource, tokens, from_cache=True)

    def _token(self, resource: str, tokens: "TokenSet", *, from_cache: bool) -> ResourceToken:
        left = tokens.seconds_left(self.clock)
        return ResourceToken(resource=resource, access_token=tokens.access_token,
                             token_type=tokens.token_type or "Bearer",
                             expires_on=self.clock.time() + left, seconds_left=left,
                             from_cache=from_cache)

    def _resource_lock(self, resource: str) -> threading.Lock:
        with self._lock:
            lock = self._locks.get(resource)
            if lock is None:
                if len(self._locks) > 4 * self.max_resources:
                    # Only locks nobody holds can go; they are made again on demand.
                    self._locks = {k: v for k, v in self._locks.items() if v.locked()}
                lock = self._locks[resource] = threading.Lock()
            return lock

    def _evict(self) -> None:
        while len(self._entries) > self.max_resources:
            soonest = min(self._entries, key=lambda k: self._entries[k].seconds_left(self.clock))
            del self._entries[soonest]
