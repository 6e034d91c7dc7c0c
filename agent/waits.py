"""What ``entra-auth-cli`` says while it waits, so no wait passes in silence.

Three waits a person can meet: a provider slow to answer (named by host,
after :data:`agent.termui.NOTICE_AFTER` seconds), the token file locked by
another process (named by pid, from ``/proc/locks``), and another sign-in
of the same profile waiting for a person (said at once: it can take
minutes). Each is one line on stderr; Ctrl+C stops every one of them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING

from agent import termui
from agent.lockinfo import LockHolder, lock_holder

if TYPE_CHECKING:  # pragma: no cover
    from agent.auth.tokens import TokenClient

__all__ = ["say", "token_file_busy", "sign_in_busy", "provider_slow"]


def say(line: str) -> None:
    """One line of what is going on, on stderr."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _who(holder: LockHolder | None) -> str:
    return holder.describe() if holder else "another process"


def token_file_busy(profile: str, holder: LockHolder | None) -> None:
    """For :attr:`agent.tokenstore.TokenStore.on_lock_wait`."""
    say(f"Waiting for the token file of profile '{profile}': {_who(holder)} is using it "
        "(Ctrl+C to stop)...")


def sign_in_busy(profile: str, holder: LockHolder | None) -> None:
    """Another sign-in of *profile* holds its turn."""
    say(f"A sign-in of profile '{profile}' is already waiting for a person ({_who(holder)}); "
        "waiting for it to finish (Ctrl+C to stop)...")


def _provider_host(client: "TokenClient") -> str:
    from urllib.parse import urlsplit

    from agent.auth.endpoints import CLOUDS

    p = client.profile
    url = p.issuer or p.authority_host or CLOUDS.get(p.cloud, "")
    return urlsplit(url).hostname or "the identity provider"


def provider_slow(client: "TokenClient", what: str) -> "contextlib.AbstractContextManager[None]":
    """A block that says ``Waiting for <host> to answer (<what>...)`` when the
    provider takes more than a second or two."""
    host = _provider_host(client)

    def notice() -> None:
        # Still waiting for the token file's lock? Its own notice speaks then.
        holder = lock_holder(client.store.lock_path(client.profile.name))
        if holder is not None and holder.pid != os.getpid():
            return
        say(f"Waiting for {host} to answer ({what}; Ctrl+C to stop)...")

    return termui.notice_after(notice)
