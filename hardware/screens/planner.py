"""Where everything on a pixel screen goes: the QR code, the bar and each line.

:func:`plan` returns a :class:`Plan` (every box a screen draws into);
:func:`hardware.screens.drawing.render` draws exactly those, so a test can
check that every box is on the canvas, no two overlap and no pixel is lit
outside them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from agent.ui import SignInView, View
from hardware.screens.column import Block, Box, Line, fit_column
from hardware.screens.content import qr_payload, view_blocks
from hardware.screens.fonts import ink_bbox
from hardware.screens.geometry import MARGIN, MIN_FONT, QR_BORDER, LayoutError

__all__ = ["CRISP_BELOW", "Plan", "QrPlacement", "layout", "plan", "qr_rows", "text_mode"]


@dataclass(frozen=True)
class QrPlacement:
    box: Box
    scale: int                              # pixels per module
    payload: str


@dataclass(frozen=True)
class Plan:
    """Everything a screen draws, with its box."""

    size: tuple[int, int]
    lines: tuple[Line, ...]
    qr: QrPlacement | None = None
    bar: tuple[Box, float] | None = None    # track, fraction of time left (0..1)
    text_mode: str = "1"                    # "1": crisp text; "RGB": anti-aliased

    @property
    def boxes(self) -> list[Box]:
        out = [line.box for line in self.lines]
        if self.qr is not None:
            out.append(self.qr.box)
        if self.bar is not None:
            out.append(self.bar[0])
        return out


@functools.lru_cache(maxsize=8)
def qr_rows(payload: str) -> tuple[tuple[int, ...], ...]:
    """QR modules with the quiet zone, 1 = dark. Cached: sign-in redraws each second."""
    import segno  # lazily: only a sign-in screen needs it

    qr = segno.make(payload, error="l", micro=False)  # error level is boosted when free
    return tuple(tuple(row) for row in qr.matrix_iter(scale=1, border=QR_BORDER))


def _font_range(size: tuple[int, int], mode: str) -> tuple[int, int, int]:
    """(min, preferred min, max) body font sizes for a canvas, in pixels."""
    width, height = size
    short = min(width, height)
    # On a 1-bit panel 9 px reads clearly better than 8 px; 8 px is the fallback.
    comfortable = MIN_FONT + 1 if mode == "1" else MIN_FONT
    return MIN_FONT, max(comfortable, short // 12), max(comfortable, short // 7)


def _inner(size: tuple[int, int]) -> Box:
    return Box(MARGIN, MARGIN, size[0] - MARGIN, size[1] - MARGIN, "region")


def _bar_height(size: tuple[int, int]) -> int:
    return 2 if size[1] <= 64 else max(3, size[1] // 48)


# Colour panels this short (the 96x64 SSD1331) draw text like a monochrome
# one: crisp, without anti-aliasing. At 8-9 px anti-aliased glyphs are grey
# smudges a pixel wide; hinted 1-bit glyphs stay sharp.
CRISP_BELOW = 65


def text_mode(size: tuple[int, int], mode: str) -> str:
    """How text is preferably rendered on an image of *size* and *mode*: ``"1"``
    (crisp, not anti-aliased: every monochrome panel and colour panels under
    CRISP_BELOW pixels high) or ``"RGB"`` (anti-aliased)."""
    return "1" if mode == "1" or min(size) < CRISP_BELOW else mode


def plan(view: View, size: tuple[int, int], mode: str = "1") -> Plan:
    """Where everything on the screen for *view* goes at *size* (width, height).

    *mode* ("1" or "RGB") matters: Pillow draws wider text without
    anti-aliasing, so a layout is only valid for the mode it was made for.
    A small colour panel gets crisp text (:func:`text_mode`) unless that
    costs the sign-in screen its QR code (crisp glyphs are wider); the
    plan's ``text_mode`` says which.
    """
    size = (int(size[0]), int(size[1]))
    tmode = text_mode(size, mode)
    if tmode == mode:
        return _plan_view(view, size, mode)
    try:
        crisp = _plan_view(view, size, tmode)
    except LayoutError:
        return _plan_view(view, size, mode)
    if crisp.qr is None and isinstance(view, SignInView):
        smooth = _plan_view(view, size, mode)
        if smooth.qr is not None:
            return smooth
    return crisp


def _plan_view(view: View, size: tuple[int, int], mode: str) -> Plan:
    payload = qr_payload(view) if isinstance(view, SignInView) else None
    real = view_blocks(view)
    template = view_blocks(view, stand_in=True)
    try:
        base = _plan_blocks(tuple(template), payload, size, mode)
        p = _substitute(base, template, real, mode)
    except LayoutError:  # the stand-ins are wider than the real text
        p = None
    if p is None:  # lay the real text out for itself
        p = _plan_blocks.__wrapped__(tuple(real), payload, size, mode)
    if p.bar is not None and isinstance(view, SignInView):
        left = view.seconds_left / view.lifetime if view.lifetime > 0 else 0.0
        p = replace(p, bar=(p.bar[0], max(0.0, min(1.0, left))))
    if p.text_mode != mode:
        p = replace(p, text_mode=mode)
    return p


def _substitute(base: Plan, template: list[Block], real: list[Block], mode: str) -> Plan | None:
    """*base* with each stand-in line replaced by its real text, in the same box."""
    lines = list(base.lines)
    for index, (stand_in, block) in enumerate(zip(template, real)):
        if stand_in.text == block.text:
            continue
        found = [i for i, line in enumerate(lines) if line.block == index]
        if not found:
            continue  # not shown at this size
        if len(found) > 1 or lines[found[0]].text != stand_in.text:
            return None  # wrapped or cut: lay the real text out properly
        line = lines[found[0]]
        left, top, right, bottom = ink_bbox(block.text, line.size, mode)
        old = line.box
        if right - left > old.width:
            return None
        x = old.left if block.align == "left" else old.left + (old.width - (right - left)) // 2
        y = line.origin[1]
        box = Box(x, y + top, x + right - left, y + bottom, "text", block.text)
        if box.top < old.top or box.bottom > old.bottom:
            return None
        lines[found[0]] = Line(block.text, line.size, line.role, (x - left, y), box, index)
    return replace(base, lines=tuple(lines))


@functools.lru_cache(maxsize=32)
def _plan_blocks(blocks: tuple[Block, ...], payload: str | None, size: tuple[int, int],
                 mode: str) -> Plan:
    lo, pref, hi = _font_range(size, mode)
    inner = _inner(size)
    if payload is not None:
        return _plan_sign_in(payload, size, mode, list(blocks))
    # First at a comfortable size (dropping optional lines if need be), then
    # down to the smallest legible size.
    # Addresses and accounts break only between words at every size first;
    # inside a word, and cut short, only after that.
    tries = ((pref, False, "boundary"), (lo, False, "boundary"),
             (pref, False, "any"), (lo, False, "any"), (lo, True, "any"))
    for min_size, clip, breaks in dict.fromkeys(tries):
        lines = fit_column(blocks, inner, min_size=min_size, max_size=hi, mode=mode, clip=clip,
                           breaks=breaks)
        if lines is not None:
            return Plan(size, tuple(lines))
    raise LayoutError(f"{blocks[0].text!r} screen does not fit {size[0]}x{size[1]}")


def _plan_sign_in(payload: str, size: tuple[int, int], mode: str,
                  blocks: list[Block]) -> Plan:
    lo, pref, hi = _font_range(size, mode)
    inner = _inner(size)
    fraction = 1.0      # plan() puts in the time actually left
    bar_h = _bar_height(size)
    gap = max(2, min(size) // 32)
    modules = len(qr_rows(payload))
    # Pixels per QR module worth aiming for: a phone reads 1 px/module on a
    # 0.96" OLED held close, but on a 2.4" LCD a bigger code reads from afar.
    target = max(1, min(size) // 80)

    def with_bar(region: Box) -> tuple[Box, tuple[Box, float]]:
        track = Box(region.left, region.bottom - bar_h, region.right, region.bottom, "bar")
        return Box(region.left, region.top, region.right, track.top - gap, "region"), (track, fraction)

    def sizes(lines: list[Line]) -> tuple[int, int]:
        code = max(line.size for line in lines if line.role == "big")
        body = min(line.size for line in lines if line.role == "body")
        return code, body

    # The address breaks only between words (after "/ . -", before "@") at
    # every font size down to the smallest legible one before it may break
    # inside a word; the QR code stays wherever it fits either way.
    best: tuple[tuple[int, ...], Plan] | None = None
    tiers = ((pref, target), (lo, target), (lo, 1))
    for min_size, min_scale, breaks in dict.fromkeys(
            (size, scale, breaks) for breaks in ("boundary", "any") for size, scale in tiers):
        for bar in (True, False):
            area, bar_spec = with_bar(inner) if bar else (inner, None)
            for arrangement in ("side", "stack"):
                for scale in range(min_scale, max(1, min(area.width, area.height) // modules) + 1):
                    px = modules * scale
                    if arrangement == "side":
                        if px > area.height or px + gap >= area.width:
                            break
                        top = area.top + (area.height - px) // 2
                        qr_box = Box(area.right - px, top, area.right, top + px, "qr", payload)
                        text = Box(area.left, area.top, qr_box.left - gap, area.bottom, "region")
                    else:
                        if px > area.width or px + gap >= area.height:
                            break
                        left = area.left + (area.width - px) // 2
                        qr_box = Box(left, area.top, left + px, area.top + px, "qr", payload)
                        text = Box(area.left, qr_box.bottom + gap, area.right, area.bottom, "region")
                    lines = fit_column(blocks, text, min_size=min_size, max_size=hi, mode=mode,
                                       breaks=breaks)
                    if lines is None:
                        break  # a bigger QR code only leaves less room
                    code, body = sizes(lines)
                    shown_bar = bar_spec
                    if shown_bar is None and arrangement == "side" \
                            and area.bottom - qr_box.bottom >= bar_h + gap:
                        # No room for a full-width bar under the text: the time
                        # left still shows, as a bar under the QR code.
                        track = Box(qr_box.left, area.bottom - bar_h, qr_box.right, area.bottom, "bar")
                        shown_bar = (track, fraction)
                    # The time left first (the countdown or bar, and
                    # a person's only warning), then the biggest code (it is
                    # what people type), then the address, then the QR code.
                    score = (int(shown_bar is not None), code, body, scale)
                    candidate = Plan(size, tuple(lines), QrPlacement(qr_box, scale, payload), shown_bar)
                    if best is None or score > best[0]:
                        best = (score, candidate)
        if best is not None:
            return best[1]
    # No QR code: on a 128x32 panel even one pixel per module (41 px with the
    # quiet zone for a typical address) is taller than the screen, and the
    # code and address as text are what RFC 8628 requires anyway.
    for breaks, min_size in dict.fromkeys(
            (breaks, size) for breaks in ("boundary", "any") for size in (pref, lo)):
        for bar in (True, False):
            area, bar_spec = with_bar(inner) if bar else (inner, None)
            lines = fit_column(blocks, area, min_size=min_size, max_size=hi, mode=mode,
                               breaks=breaks)
            if lines is not None:
                return Plan(size, tuple(lines), None, bar_spec)
    raise LayoutError(f"sign-in screen does not fit {size[0]}x{size[1]}")


def layout(view: View, size: tuple[int, int], mode: str = "1") -> list[Box]:
    """The boxes :func:`render` draws into for *view* at *size*.

    *mode* is the image mode the boxes are for (text is wider in "1").
    """
    return plan(view, size, mode).boxes
