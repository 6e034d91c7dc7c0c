"""Field checks for what the identity provider answers, by the RFCs' rules.

Every field the client uses is checked for its type and a sane range before
it is stored or shown; a bad field is one :class:`InvalidAnswer` line naming
the field and the endpoint, never a traceback:

* numbers of seconds (``expires_in``, ``interval``, ``refresh_in``): JSON
  integers, or decimal digit strings as Entra's v1 endpoint sends them —
  never booleans, ``"0x10"``, ``1e300``, 20-digit integers or objects;
* credentials (``device_code``, ``access_token``, ``refresh_token``): text
  of RFC 6749 Appendix A's VSCHAR (printable ASCII), bounded, so nothing
  can break an ``Authorization`` header or a form;
* ``scope``: RFC 6749 §3.3 scope tokens; ``token_type``: a plain word;
  ``id_token``: text (decoded later, claims cleaned).

>>> seconds("900", "expires_in", "the device authorization endpoint", "https://x", 1, 86400)
900
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from agent.auth.errors import InvalidAnswer, origin

__all__ = [
    "MAX_SECRET", "MAX_TOKEN_LIFETIME", "TokenFields", "seconds", "credential",
    "token_fields",
]

#: Longest credential accepted (an Entra access token is 1-4 KB), in characters.
MAX_SECRET = 32 * 1024
#: Longest access token lifetime accepted, in seconds (one year).
MAX_TOKEN_LIFETIME = 366 * 86400
#: Access token lifetime assumed when expires_in is absent (RFC 6749 §5.1: RECOMMENDED).
DEFAULT_TOKEN_LIFETIME = 3600

_DIGITS = re.compile(r"[0-9]{1,9}")
_VSCHAR = re.compile(r"[\x20-\x7E]+")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]{1,512}")
_TOKEN_TYPE = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def _bad(name: str, expected: str, what: str, url: str) -> InvalidAnswer:
    return InvalidAnswer(f"{what} sent an invalid {name} (expected {expected}), from {origin(url)}",
                         "report this to the provider; nothing was saved")


def seconds(value: Any, name: str, what: str, url: str, low: int, high: int) -> int:
    """*value* as whole seconds in ``[low, high]``, or :class:`InvalidAnswer`."""
    number: int | None = None
    if type(value) is int:
        number = value
    elif type(value) is float and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)       # Entra v1 sends "900"
    if number is None or not low <= number <= high:
        raise _bad(name, f"a whole number of seconds from {low} to {high}", what, url)
    return number


def credential(value: Any, name: str, what: str, url: str) -> str:
    """A device code, access or refresh token: printable ASCII, bounded."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_SECRET \
            or not _VSCHAR.fullmatch(value):
        raise _bad(name, "a text of printable ASCII", what, url)
    return value


@dataclass(frozen=True)
class TokenFields:
    """The checked fields of an RFC 6749 §5.1 token answer."""

    access_token: str = field(repr=False)
    expires_in: int
    token_type: str = "Bearer"
    scope: tuple[str, ...] | None = None       # None: the provider did not say
    refresh_token: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)
    refresh_in: int | None = None


def token_fields(body: dict[str, Any], what: str, url: str) -> TokenFields:
    """Check a successful token answer; :class:`InvalidAnswer` on any bad field."""
    access_token = credential(body.get("access_token"), "access_token", what, url)
    raw_expires = body.get("expires_in")
    expires_in = DEFAULT_TOKEN_LIFETIME if raw_expires is None else \
        seconds(raw_expires, "expires_in", what, url, 1, MAX_TOKEN_LIFETIME)
    token_type = body.get("token_type")
    if token_type is None or token_type == "":
        token_type = "Bearer"
    elif not isinstance(token_type, str) or not _TOKEN_TYPE.fullmatch(token_type):
        raise _bad("token_type", "a word such as Bearer", what, url)
    scope_value = body.get("scope")
    scope: tuple[str, ...] | None = None
    if scope_value is not None and scope_value != "":
        if not isinstance(scope_value, str) or len(scope_value) > 8192:
            raise _bad("scope", "a text of scopes", what, url)
        tokens = scope_value.split(" ")
        if not all(_SCOPE_TOKEN.fullmatch(t) for t in tokens if t):
            raise _bad("scope", "scope names separated by spaces", what, url)
        scope = tuple(t for t in tokens if t)
    refresh = body.get("refresh_token")
    refresh_token = None if refresh is None or refresh == "" else \
        credential(refresh, "refresh_token", what, url)
    id_value = body.get("id_token")
    if id_value is not None and not isinstance(id_value, str):
        raise _bad("id_token", "a text", what, url)
    refresh_in_value = body.get("refresh_in")
    refresh_in = None if refresh_in_value is None or refresh_in_value == "" else \
        seconds(refresh_in_value, "refresh_in", what, url, 0, MAX_TOKEN_LIFETIME)
    return TokenFields(access_token=access_token, expires_in=expires_in, token_type=token_type,
                       scope=scope, refresh_token=refresh_token, id_token=id_value or None,
                       refresh_in=refresh_in)
