"""Screens on a character LCD (HD44780): lines of ASCII, paged when need be."""

from __future__ import annotations

from dataclasses import replace

from agent.ui import SignInView, View
from hardware.screens.column import Block
from hardware.screens.content import view_blocks
from hardware.screens.fonts import ELLIPSIS
from hardware.screens.wrapping import ellipsize, wrap

__all__ = ["render_text", "text_pages"]


def _text_segments(view: View) -> list[Block]:
    """The blocks of a screen as a character LCD shows them (ASCII: the HD44780 ROM)."""
    segments: list[Block] = []
    for block in view_blocks(view):
        text = block.text.replace(ELLIPSIS, "...")
        if isinstance(view, SignInView) and block.role == "big":
            text = f"Code {text}"
        segments.append(replace(block, text=text))
    if isinstance(view, SignInView):
        # "Sign in at <address>" reads as one sentence on a character LCD.
        segments[0:2] = [replace(segments[1], text=f"Go to {segments[1].text}")]
    return segments


def text_pages(view: View, cols: int, rows: int) -> list[list[str]]:
    """The pages a *cols* x *rows* character LCD shows for *view*, in turn.

    Most views fit one page. When the code and the address cannot share
    16x2 characters they get pages of their own (the presenter turns them
    every few seconds); neither is ever cut short.
    """
    def fits(line: str) -> bool:
        return len(line) <= cols

    segments = _text_segments(view)
    optional = sorted((s for s in segments if not s.required), key=lambda s: s.priority)
    # One page if at all possible: drop optional lines (lowest priority
    # first), then break addresses anywhere, then cut an ellipsizable line.
    for clip in (False, True):
        for mode_override in (None, "chars"):
            for dropped in range(len(optional) + 1):
                gone = {id(s) for s in optional[:dropped]}
                lines: list[str] = []
                for seg in segments:
                    if id(seg) in gone:
                        continue
                    mode = "chars" if mode_override and seg.wrap == "path" else seg.wrap
                    wrapped = _wrap_chars(seg.text, cols, mode)
                    if clip and seg.ellipsize and seg.wrap == "path":
                        # An account: its start says whose it is; a message
                        # is better paged than cut.
                        wrapped = ellipsize(_wrap_chars(seg.text, cols, "chars"), 1, fits, "...")
                    lines += wrapped
                if len(lines) <= rows:
                    return [lines]
    # Several pages: whole segments packed in order; a segment taller than a
    # page (the address on 16x2) continues on the next page.
    pages: list[list[str]] = [[]]
    for seg in segments:
        if not seg.required:
            continue
        text, mode = seg.text, seg.wrap
        if mode == "none" and not fits(text):
            text = text.removeprefix("Code ")
        wrapped = _wrap_chars(text, cols, "path" if mode == "path" else "words")
        if len(wrapped) > rows and mode == "path":
            wrapped = _wrap_chars(text, cols, "chars")
        if pages[-1] and len(pages[-1]) + len(wrapped) > rows:
            pages.append([])
        for line in wrapped:
            if len(pages[-1]) == rows:
                pages.append([])
            pages[-1].append(line)
    return pages


def _wrap_chars(text: str, cols: int, mode: str) -> list[str]:
    if mode == "chars":
        return [text[i:i + cols] for i in range(0, len(text), cols)] or [""]
    lines = wrap(text, cols, lambda line: len(line) <= cols, mode)
    if lines is None:
        return [text[i:i + cols] for i in range(0, len(text), cols)]
    return lines


def render_text(view: View, cols: int, rows: int, page: int = 0) -> list[str]:
    """The lines (at most *rows*, each at most *cols* characters) of page *page*."""
    pages = text_pages(view, cols, rows)
    return pages[page % len(pages)]
