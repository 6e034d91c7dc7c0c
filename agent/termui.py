"""What a terminal can show, and text that fits it.

The sign-in box and the spinner must survive a phone's 40-column SSH
client, ``TERM=dumb``, a pipe, and a Latin-1 locale. :func:`terminal`
looks at a stream once (width, whether ``\\r`` can overwrite a line,
whether box-drawing characters can be encoded); :func:`sign_in_box` and
:func:`spinner_line` build text that fits it. The user code is never split
across lines (a person types it); the address may be, at ``/`` where it can.

>>> term = Terminal(width=40, overwrite=True, unicode=False)
>>> print(spinner_line(term, 0, 899))
| Waiting... 14m 59s left
"""

from __future__ import annotations

import contextlib
import os
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TextIO

__all__ = [
    "Terminal", "terminal", "sign_in_box", "spinner_line", "check_mark", "fit_lines", "split_address",
    "notice_after", "NOTICE_AFTER", "MIN_BOX_WIDTH",
]

#: Seconds of silence before a wait is explained ("Waiting for ...").
NOTICE_AFTER = 1.5
#: Narrower than this (columns), the box is left out: plain lines only.
MIN_BOX_WIDTH = 24

_UNICODE_SAMPLE = "┌─┐│├┤└┘⠋✓▀▄█"
_SPINNER_UNICODE = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_SPINNER_ASCII = "|/-\\"


@dataclass(frozen=True)
class Terminal:
    """What a stream can show.

    ``width``: columns, None when unknown (a pipe, a terminal reporting 0);
    ``overwrite``: ``\\r`` returns to the start of the line and ``ESC [K``
    clears it (a terminal that is not ``TERM=dumb`` and has a width);
    ``unicode``: box-drawing and braille characters can be encoded.
    """

    width: int | None
    overwrite: bool
    unicode: bool

    @property
    def tty(self) -> bool:
        """A person is reading as it happens (a spinner is worth it)."""
        return self.overwrite


def _encodes(stream: TextIO, sample: str) -> bool:
    encoding = getattr(stream, "encoding", None)
    if not encoding:
        return True             # an in-memory stream (StringIO) takes any text
    try:
        sample.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _width(stream: TextIO) -> int | None:
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        width = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None
    return width if width > 0 else None


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):      # replaced or closed
        return False


def terminal(stream: TextIO) -> Terminal:
    """Look at *stream* (stderr, usually) once: its width, ``\\r``, its encoding."""
    tty = _isatty(stream)
    width = _width(stream) if tty else None
    dumb = os.environ.get("TERM", "") == "dumb"
    return Terminal(width=width, overwrite=tty and not dumb and width is not None,
                    unicode=_encodes(stream, _UNICODE_SAMPLE))


def check_mark(term: Terminal) -> str:
    """``✓``, or ``OK:`` where it cannot be encoded."""
    return "✓" if term.unicode else "OK:"


def spinner_line(term: Terminal, frame: int, seconds_left: float) -> str:
    """The spinner and time left, shortened to fit one line of *term*.

    Never as wide as the terminal: a line that fills the last column wraps
    on some terminals, and ``\\r`` then no longer returns to its start.
    """
    from agent.ui import format_duration

    frames = _SPINNER_UNICODE if term.unicode else _SPINNER_ASCII
    mark = frames[frame % len(frames)]
    left = format_duration(seconds_left)
    candidates = [f"{mark} Waiting for authentication... {left} left",
                  f"{mark} Waiting... {left} left", f"{mark} {left} left", f"{mark} {left}"]
    room = (term.width or 80) - 1
    for line in candidates:
        if len(line) <= room:
            return line
    return candidates[-1][:max(1, room)]


def split_address(text: str, width: int) -> list[str]:
    """*text* (an address: no spaces) in pieces of at most *width*, cut after
    a ``/``, ``?``, ``&`` or ``.`` when one is near enough."""
    pieces = []
    while len(text) > width:
        cut = width
        for seps in ("/", "?&=", "."):          # a path step first, a dot last
            at = max(text.rfind(sep, 0, width) for sep in seps)
            if at >= width // 2:
                cut = at + 1
                break
        pieces.append(text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces


def fit_lines(label: str, value: str, width: int, *, keep_whole: bool) -> list[str]:
    """``label + value`` in lines of at most *width* columns.

    *keep_whole* (a code): *value* moves to a line of its own, indented, and
    is never split. Otherwise (an address) it is split at ``/`` and the like.
    """
    if len(label) + len(value) <= width:
        return [label + value]
    indent = "   "
    if keep_whole:
        head = textwrap.wrap(label.rstrip(), width) or [""]
        return [*head, (indent + value) if len(indent) + len(value) <= width else value]
    room = width - len(label)
    if room >= 12:
        # Start on the label's line, cut where split_address would cut.
        first = split_address(value, room)[0]
        if first.endswith("/"):
            rest = value[len(first):]
            return [label + first, *(indent + piece for piece in split_address(rest, width - len(indent)))]
    lines = textwrap.wrap(label.rstrip(), width) or [""]
    return [*lines, *(indent + piece for piece in split_address(value, width - len(indent)))]


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def sign_in_box(rows: list[tuple[str, str, str] | None], term: Terminal, code: str) -> list[str]:
    """The boxed rows, fitted to *term*; ``[]`` when no box fits.

    *rows*: ``(kind, label, value)`` with *kind* ``"text"`` (wrapped at
    words), ``"address"`` (value split where it must) or ``"code"`` (value
    never split), or None for a rule. The box is as wide as its widest row
    and never wider than the terminal.
    """
    h, v, tl, tr, bl, br, lj, rj = ("─", "│", "┌", "┐", "└", "┘", "├", "┤") if term.unicode \
        else ("-", "|", "+", "+", "+", "+", "+", "+")
    natural = max(len(label) + len(value) for row in rows if row for _, label, value in [row])
    inner = natural + 1                     # text columns inside "│ " ... "│"
    if term.width is not None:
        inner = min(inner, term.width - 3)
    if inner < max(len(code) + 1, MIN_BOX_WIDTH - 3):
        return []
    text_width = inner - 1
    out = [tl + h * (inner + 1) + tr]
    for row in rows:
        if row is None:
            out.append(lj + h * (inner + 1) + rj)
            continue
        kind, label, value = row
        if kind == "text":
            lines = _wrap(label + value, text_width)
        else:
            lines = fit_lines(label, value, text_width, keep_whole=kind == "code")
        out.extend(f"{v} {line.ljust(inner)}{v}" for line in lines)
    out.append(bl + h * (inner + 1) + br)
    return out


@contextlib.contextmanager
def notice_after(say: Callable[[], None], seconds: float = NOTICE_AFTER) -> Iterator[None]:
    """Call *say* once if the block is still running after *seconds*.

    For waits a person would otherwise meet in silence (a slow provider, a
    lock held by another process). *say* runs on a timer thread; the block
    itself is untouched, so Ctrl+C stops it as before.
    """
    timer = threading.Timer(seconds, say)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
