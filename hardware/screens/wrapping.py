"""Breaking text into lines that fit: at spaces, inside addresses, shortened.

Each function takes a ``fits(line) -> bool`` test, so the same rules serve a
pixel panel (ink width at a font size) and a character LCD (a column count).
"""

from __future__ import annotations

from typing import Callable

from hardware.screens.fonts import ELLIPSIS

__all__ = ["ellipsize", "shorten_account", "wrap"]

# Characters after which a long address or account may break across lines
# (and "@", before which it may break): "login.microsoftonline.us/" + "common".
_BREAK_AFTER = "/.-_?&="
_BREAK_BEFORE = "@"


def _tokens(text: str, mode: str) -> list[str]:
    """Split *text* at the places it may break, keeping every character."""
    if mode == "none":
        return [text]
    if mode == "words":
        words = text.split(" ")
        return [w + " " for w in words[:-1]] + [words[-1]]
    out, current = [], ""
    for ch in text:
        if ch in _BREAK_BEFORE and current:
            out.append(current)
            current = ""
        current += ch
        if ch in _BREAK_AFTER:
            out.append(current)
            current = ""
    if current:
        out.append(current)
    return out


def wrap(text: str, width: int, fits: Callable[[str], bool], mode: str) -> list[str] | None:
    """Break *text* into lines for which ``fits(line)`` holds.

    *mode* as in :class:`Block`, or ``"boundary"`` (like ``"path"`` but never
    inside a word) or ``"chars"`` (fill every line, breaking anywhere). Words
    too long for a line are broken at ``/ . -`` and then, if need be, between
    characters. Returns None when the text cannot be shown that way
    (``mode="none"`` and it does not fit, ``"boundary"`` and a piece does not).
    """
    if fits(text):
        return [text]
    if mode == "none":
        return None
    if mode == "boundary":
        # An address broken only at spaces, after "/ . - _ ? & =" or before
        # "@", never inside a word; None when a piece is wider than a line.
        tokens = [piece for word in _tokens(text, "words") for piece in _tokens(word, "path")]
        if not all(fits(token.rstrip(" ")) for token in tokens):
            return None
    elif mode == "chars":
        # Fill every line: the densest way to show an address on a tiny panel.
        out, chunk = [], ""
        for ch in text:
            if chunk and not fits(chunk + ch):
                out.append(chunk)
                chunk = ""
            chunk += ch
        return out + [chunk]
    else:
        tokens = []
        for token in _tokens(text, mode):
            if fits(token.rstrip(" ")):
                tokens.append(token)
                continue
            # Too long on its own: an address inside a sentence, then characters.
            for part in _tokens(token, "path"):
                if fits(part.rstrip(" ")):
                    tokens.append(part)
                    continue
                chunk = ""
                for ch in part:
                    if chunk and not fits(chunk + ch):
                        tokens.append(chunk)
                        chunk = ""
                    chunk += ch
                tokens.append(chunk)
    lines: list[str] = []
    current = ""
    for token in tokens:
        candidate = current + token
        if current and not fits(candidate.rstrip(" ")):
            lines.append(current.rstrip(" "))
            current = token
        else:
            current = candidate
    if current.strip(" "):
        lines.append(current.rstrip(" "))
    return lines


def ellipsize(lines: list[str], max_lines: int, fits: Callable[[str], bool],
              ellipsis: str = ELLIPSIS) -> list[str]:
    """Keep the first *max_lines* lines, the last ending in an ellipsis that fits."""
    if len(lines) <= max_lines:
        return lines
    kept = lines[:max_lines]
    last = kept[-1]
    while last and not fits(last + ellipsis):
        last = last[:-1]
    kept[-1] = last + ellipsis
    return kept


# An account shortened to one line keeps at least this many characters of
# its local part: fewer ("fi…") no longer says whose account it is.
_MIN_HEAD = 8


def shorten_account(text: str, fits: Callable[[str], bool], ellipsis: str = ELLIPSIS) -> str:
    """*text* (an account such as ``jane.doe@contoso.com``) as one line that fits.

    The rule, first that fits wins:

    1. the whole account;
    2. the start of the local part, an ellipsis, and the end of the domain
       in whole labels: as many trailing labels as leave room for at least
       :data:`_MIN_HEAD` characters of the local part, but never fewer than
       the last two (``firstname.lastn…onmicrosoft.com``), with as much of
       the local part as then fits;
    3. the local part alone (``firstname.lastname``), cut at its end with an
       ellipsis when even that is too wide.

    Without an ``@`` (not an email-style name) it is the start, an ellipsis
    and as much of the end as fits, else the start cut at its end.
    """
    if fits(text):
        return text
    local, at, domain = text.rpartition("@")
    if not at:
        local, domain = text, ""
        tails = [text[-n:] for n in range(len(text) // 2, 3, -1)]
    else:
        labels = domain.split(".")
        tails = [".".join(labels[i:]) for i in range(0, max(1, len(labels) - 1))]
    for tail in tails:
        if not fits(local[:_MIN_HEAD] + ellipsis + tail):
            continue
        head = local[:_MIN_HEAD]
        while len(head) < len(local) and fits(local[:len(head) + 1] + ellipsis + tail):
            head = local[:len(head) + 1]
        return head + ellipsis + tail
    if fits(local):
        return local
    head = local
    while head and not fits(head + ellipsis):
        head = head[:-1]
    return head + ellipsis
