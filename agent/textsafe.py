"""Text from outside is data: one sanitiser for what servers and files send.

Anything an identity provider (or a token file) says that reaches a
terminal, a screen, a log or MQTT passes through here where it *enters* the
program, so every display path downstream gets clean text:

* :func:`clean` neutralises what a terminal would obey — C0 controls
  (``ESC``, backspace, ``NUL``), ``DEL``, C1 controls
  (``\\x9b`` is CSI on some terminals), Unicode bidi overrides and isolates
  (Trojan Source), zero-width and other format characters, line and
  paragraph separators — and bounds the length. Each neutralised character
  becomes a visible ``\\xNN``/``\\uNNNN`` escape and each line break or tab
  one space, so nothing is hidden and nothing forges a line such as
  ``entra-auth-cli: error: … run: curl …|sh``.
* :func:`user_code` and :func:`verification_uri` validate the values that
  have a grammar (RFC 8628 §3.2, §6.1) and refuse the rest.

>>> clean("AADSTS50173:\\x1b]52;c;ZWNobw==\\x07 revoked\\r\\nline")
'AADSTS50173:\\\\x1b]52;c;ZWNobw==\\\\x07 revoked  line'
>>> verification_uri("javascript:alert(1)") is None
True
"""

from __future__ import annotations

import unicodedata
from urllib.parse import urlsplit

from agent.net import is_loopback

__all__ = [
    "MAX_TEXT", "MAX_USER_CODE", "MAX_URI", "clean", "is_clean", "user_code",
    "verification_uri",
]

#: Longest server text kept (error descriptions, issuers, names), in characters.
MAX_TEXT = 300
#: Longest user code accepted; RFC 8628 §6.1 suggests 8 characters, Entra sends 9.
MAX_USER_CODE = 32
#: Longest verification URI accepted, in characters (it goes into a QR code).
MAX_URI = 512

# Bidi embeddings/overrides/isolates and marks (Unicode TR 9), zero-width
# characters, line/paragraph separators: all reorder or hide text.
_INVISIBLE = frozenset(
    "\u061c\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2028\u2029\u2060\u2066\u2067\u2068\u2069\ufeff"
)


# Line breaks and tabs become one space: the text stays one line.
_SPACES = frozenset("\t\n\v\f\r\x85\u2028\u2029")


def _is_unsafe(ch: str) -> bool:
    code = ord(ch)
    if code < 0x20 or 0x7F <= code <= 0x9F:      # C0, DEL, C1
        return True
    if ch in _INVISIBLE:
        return True
    # Cc (controls), Cf (format: bidi, soft hyphen, tags), Cs (lone
    # surrogates), Co/Cn (private use, unassigned: may render as anything).
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn")


def _escape(ch: str) -> str:
    if ch in _SPACES:
        return " "
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def is_clean(text: str) -> bool:
    """True when *text* holds no character a terminal or bidi layout would obey."""
    return not any(_is_unsafe(ch) for ch in text)


def clean(value: object, limit: int = MAX_TEXT) -> str:
    """*value* as one line of at most *limit* characters, safe for any terminal.

    Non-strings are refused as text (``""``): a number or an object where a
    text belongs says nothing a person needs. Unsafe characters become
    visible escapes; longer text is cut and ends with ``…``.
    """
    if not isinstance(value, str):
        return ""
    # Cut first (bounded work for a megabyte), then escape, then cut again.
    text = value[: limit * 2]
    out: list[str] = []
    size = 0
    for ch in text:
        piece = _escape(ch) if _is_unsafe(ch) else ch
        if size + len(piece) > limit:
            return "".join(out).rstrip() + "…"
        out.append(piece)
        size += len(piece)
    if len(value) > len(text):
        return "".join(out).rstrip() + "…"
    return "".join(out)


def user_code(value: object) -> str | None:
    """The user code when it is printable ASCII without spaces at the ends
    (RFC 8628 §6.1: short, case-insensitive, easy to type) and at most
    :data:`MAX_USER_CODE` characters; otherwise None."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_USER_CODE:
        return None
    if value != value.strip() or not all(0x20 <= ord(ch) < 0x7F for ch in value):
        return None
    return value


def verification_uri(value: object) -> str | None:
    """*value* when it is an absolute ``https`` URL (``http`` only on loopback),
    printable ASCII, without credentials, at most :data:`MAX_URI` long;
    otherwise None (``javascript:``, ``data:``, ``file:``, relative paths…).
    """
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_URI:
        return None
    if not all(0x21 <= ord(ch) < 0x7F for ch in value):
        return None     # spaces, controls, non-ASCII (IDN homographs): not shown raw
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port      # raises ValueError for a bad port
    except ValueError:
        return None
    if not host or parts.username or parts.password:
        return None
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback(host)):
        return value
    return None
