"""Interactive answers for ``create-profile``: each checked at its prompt.

A wrong answer is said at once, with what is expected, and the question is
asked again (nothing typed so far is lost); Ctrl+D (end of input) is one
line naming the flag that gives the value instead.

>>> ask("Client ID", flag="--client-id", check=check_client_id(entra=True))   # doctest: +SKIP
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from agent.profiles import ProfileStore

__all__ = ["ask", "new_profile_name", "check_tenant", "check_client_id", "check_scopes"]

Check = Callable[[str], object]


def ask(label: str, default: str | None = None, *, flag: str, check: Check | None = None) -> str:
    """Ask on the terminal until *check* accepts the answer (it raises
    :class:`UsageError` to refuse); *default* when the answer is empty."""
    suffix = f" [{default}]" if default else ""
    while True:
        try:
            value = input(f"{label}{suffix}: ").strip() or (default or "")
        except EOFError:
            sys.stderr.write("\n")
            raise UsageError(f"no answer for {label.split(' (')[0]} (input ended): no profile was saved",
                             f"answer the prompt, or give {flag}") from None
        if check is None:
            return value
        try:
            check(value)
        except UsageError as exc:
            sys.stderr.write(f"  {exc}; try again\n")
            sys.stderr.flush()
            continue
        return value


def new_profile_name(store: "ProfileStore", *, replace_existing: bool) -> Check:
    """A valid name, not taken yet (unless *replace_existing*: ``--force``)."""
    from agent.profiles import validate_profile_name

    def check(value: str) -> None:
        validate_profile_name(value)
        if not replace_existing and value in store.names():
            raise UsageError(f"profile '{value}' already exists",
                             "pick another name, or run again with --force to replace it")
    return check


def check_tenant(value: str) -> None:
    """A tenant (GUID, domain, organizations...) or an https:// issuer URL."""
    from agent.auth.endpoints import require_secure, validate_tenant

    if value.startswith(("https://", "http://")):
        require_secure(value, "issuer")
    else:
        validate_tenant(value)


def check_client_id(*, entra: bool) -> Check:
    """A client id: a GUID for Entra, any token without spaces elsewhere."""
    from agent.profiles import validate_client_id

    return lambda value: validate_client_id(value, entra=entra)


def check_scopes(value: str) -> None:
    """At least one valid scope (comma- or space-separated)."""
    from agent.profiles import validate_scopes

    if not validate_scopes([value]):
        raise UsageError("no scope given", "e.g. https://graph.microsoft.com/User.Read")
