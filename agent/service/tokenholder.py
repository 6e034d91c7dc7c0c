"""The one owner of the service's current token set, shared by the loop and the uploader.

The loop thread sets and clears it (sign-in, refresh, sign-out); the
uploader, on the network thread, reads the access token and, after a 401,
refreshes through :meth:`TokenHolder.refresh_after_401`. A lock guards the
value only, never a network call, and a generation counter keeps a refresh
that finishes after a sign-out from bringing the old tokens back.

>>> holder = TokenHolder(client)
>>> holder.set(tokens); holder.access_token()
'eyJ...'
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from agent.auth.tokens import TokenClient, TokenSet

__all__ = ["TokenHolder"]

log = logging.getLogger(__name__)


class TokenHolder:
    """The current :class:`~agent.auth.tokens.TokenSet` (None when signed out), locked."""

    def __init__(self, client: "TokenClient", *,
                 on_refreshed: Callable[["TokenSet"], None] | None = None) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._tokens: "TokenSet | None" = None
        self._generation = 0
        #: Called (on the refreshing thread) with the new set after a 401 refresh.
        self.on_refreshed = on_refreshed

    def get(self) -> "TokenSet | None":
        with self._lock:
            return self._tokens

    def set(self, tokens: "TokenSet | None") -> None:
        with self._lock:
            if tokens is None or tokens is not self._tokens:
                self._generation += 1
            self._tokens = tokens

    def clear(self) -> None:
        self.set(None)

    def access_token(self) -> str | None:
        """The bearer token for an upload (any thread); None when signed out."""
        tokens = self.get()
        return tokens.access_token if tokens is not None else None

    def refresh_after_401(self) -> str | None:
        """Refresh now (the network thread, after a 401) and keep the new set,
        unless the loop signed out or signed in again meanwhile. Raises what
        :meth:`TokenClient.refresh` raises (the sign-in errors included)."""
        with self._lock:
            generation = self._generation
        tokens = self._client.refresh()          # HTTP, outside the lock
        with self._lock:
            if generation != self._generation:
                log.info("the tokens changed while refreshing after a 401; the new set is not kept")
                return self._tokens.access_token if self._tokens is not None else None
            self._tokens = tokens
            self._generation += 1
        if self.on_refreshed is not None:
            self.on_refreshed(tokens)
        return tokens.access_token
