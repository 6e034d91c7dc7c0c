"""Pure drawing: each view of :mod:`agent.ui` as a picture for a given size.

``render(view, (128, 64))`` returns a Pillow image for a pixel display
(mode ``"1"`` monochrome or ``"RGB"`` colour); ``render_text(view, 20, 4)``
returns the lines for a character LCD. Nothing here touches a device, a clock
or the network, so the same code draws the OLED, the terminal picture and
the README gallery, and the tests check it through luma's ``dummy`` device.

:func:`layout` returns the boxes a screen draws into (text, QR code, bar);
:func:`render` draws exactly those, so a test can check that every box is on
the canvas, no two overlap and no pixel is lit outside them.

>>> from agent.ui import ExpiredView
>>> render(ExpiredView(), (128, 32)).size
(128, 32)
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from agent.ui import (
    CancelledView,
    ConfirmSignOutView,
    DeclinedView,
    ErrorView,
    ExpiredView,
    OfflineView,
    ProgressView,
    SignedInView,
    SignInView,
    StatusView,
    View,
)
from agent.ui import (
    format_duration as _format_duration,
)
from hardware.layout import (
    ELLIPSIS,
    Block,
    Box,
    Line,
    drawn,
    ellipsize,
    fit_column,
    font,
    wrap,
)
from hardware.layout import _bbox as _ink

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "Geometry", "GEOMETRIES", "Plan", "SAMPLES", "layout", "plan", "render",
    "render_text", "text_pages", "display_code", "display_address",
    "qr_payload", "write_gallery", "LayoutError", "render_plain", "text_mode",
]

log = logging.getLogger(__name__)

# One pixel of margin on every side: room for the burn-in shift (a pixel
# either way) without anything leaving the panel.
MARGIN = 1
# Smallest legible size of Pillow's default font on a 1-bit panel, in pixels:
# at 7 px "f" and "t" melt together on an SSD1306.
MIN_FONT = 8
# QR quiet zone in modules (ISO/IEC 18004 asks for 4; scanners need it).
QR_BORDER = 4


class LayoutError(ValueError):
    """A view does not fit a geometry even at the smallest font (a bug)."""


@dataclass(frozen=True)
class Geometry:
    """A supported display size: pixels (``mode`` "1" or "RGB") or characters."""

    width: int          # pixels, or characters per line for mode "text"
    height: int         # pixels, or lines for mode "text"
    mode: str           # "1", "RGB" or "text"

    @property
    def name(self) -> str:
        return f"{self.width}x{self.height}" + ("" if self.mode != "text" else "-chars")

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


GEOMETRIES: list[Geometry] = [
    Geometry(84, 48, "1"),          # PCD8544 (Nokia 5110)
    Geometry(128, 32, "1"),         # SSD1306 0.91"
    Geometry(128, 64, "1"),         # SSD1306 / SH1106 0.96" and 1.3"
    Geometry(96, 64, "RGB"),        # SSD1331 0.95"
    Geometry(128, 128, "RGB"),      # SSD1351 1.5"
    Geometry(160, 128, "RGB"),      # ST7735 1.8"
    Geometry(240, 240, "RGB"),      # ST7789 1.3"/1.54"
    Geometry(320, 240, "RGB"),      # ILI9341 2.4"-3.2", most LCD HATs
    Geometry(16, 2, "text"),        # HD44780 1602
    Geometry(20, 4, "text"),        # HD44780 2004
]

# Colours for RGB panels, by the role of a piece of text.
_COLOURS = {
    "title": (79, 195, 247),
    "big": (255, 255, 255),
    "body": (224, 224, 224),
    "note": (158, 158, 158),
    "good": (102, 187, 106),
    "bad": (239, 83, 80),
    "warn": (255, 179, 0),
}
_BAR_TRACK = (60, 60, 60)
# Crisp text on a small colour panel has no anti-aliasing to soften it, and a
# 1 px grey stroke reads dim: body and note text are white there.
_CRISP_COLOURS = {**_COLOURS, "body": (255, 255, 255), "note": (255, 255, 255)}


def _colour(role: str, tmode: str) -> tuple[int, int, int]:
    return (_CRISP_COLOURS if tmode == "1" else _COLOURS)[role]


# -- what each screen says -------------------------------------------------

def display_code(user_code: str) -> str:
    """The user code as a person should read it.

    An 8-character code with no separator is grouped in fours
    (``WDJBMJHT`` -> ``WDJB-MJHT``, RFC 8628 §6.1); any other code, such as
    Entra's 9 characters, is shown exactly as issued.
    """
    if len(user_code) == 8 and user_code.isalnum():
        return f"{user_code[:4]}-{user_code[4:]}"
    return user_code


def display_address(uri: str) -> str:
    """The verification address as typed into a browser: without ``https://``.

    Browsers add ``https://`` themselves, and the five saved characters keep
    the address whole on a 128x32 panel. Other schemes stay as they are.
    """
    return uri[len("https://"):] if uri.lower().startswith("https://") else uri


def qr_payload(view: SignInView) -> str:
    """What the QR code carries: the complete address when the provider sent one."""
    return view.verification_uri_complete or view.verification_uri


def _real_count(n: int) -> str:
    return f"{n:,}"


# Stand-ins for values that tick every second, as wide and as tall as they
# get: a screen is laid out once with these and the real text is put in the
# same place (see plan()), so a countdown does not cost a layout a second.
# Lines with a ticking duration never wrap, so the stand-in is one line too.
_WIDEST_DURATION = "88dm 88m"   # wider and taller than any format_duration() text


def _blocks(view: View, stand_in: bool = False) -> list[Block]:
    """The text of a screen (sign-in's QR code and bar are added by :func:`plan`).

    With *stand_in*, durations and counts are replaced by the widest text of
    their kind (same number of digits for counts).
    """
    if stand_in:
        def format_duration(seconds: float | None) -> str:
            return _WIDEST_DURATION

        def _count(n: int) -> str:
            return re.sub(r"\d", "8", f"{n:,}")
    else:
        format_duration, _count = _format_duration, _real_count
    match view:
        case SignInView():
            return [
                Block("Sign in at", "note", required=False, priority=2),
                Block(display_address(view.verification_uri), "body", wrap="path", max_lines=6),
                Block(display_code(view.user_code), "big", scale=3.0, wrap="none", grow=True),
                Block(f"expires in {format_duration(view.seconds_left)}", "note",
                      wrap="none", required=False, priority=1),
            ]
        case ProgressView():
            return [Block(view.message, "title", scale=1.3, ellipsize=True, max_lines=3),
                    Block("please wait", "note", required=False)]
        case SignedInView():
            return [Block("Signed in", "good", scale=1.5, wrap="none"),
                    Block(view.account or "this device's account", "body", wrap="path",
                          ellipsize=True, max_lines=3)]
        case StatusView():
            last = ("never" if view.last_upload_age is None
                    else f"{format_duration(view.last_upload_age)} ago")
            blocks = [
                Block(view.device_id, "title", required=False, priority=1,
                      ellipsize=True, max_lines=1, align="left"),
                # Every row below matters more on the steady screen than the
                # whole account: when it does not fit as wrapped, it is one
                # line shortened by layout.shorten_account (start of the local
                # part + end of the domain, else the local part) before any
                # optional row is dropped.
                Block(view.account or "?", "body", wrap="path", ellipsize=True,
                      max_lines=3, align="left", shorten=True),
                Block(f"Sent {last}", "good" if view.last_upload_age is not None else "warn",
                      wrap="none", align="left"),
                Block(f"{_count(view.outbox_depth)} waiting",
                      "body" if view.outbox_depth < 1000 else "warn",
                      required=False, priority=4, align="left"),
            ]
            if view.mqtt_connected is not None:
                blocks.append(Block("MQTT " + ("connected" if view.mqtt_connected else "offline"),
                                    "good" if view.mqtt_connected else "bad",
                                    required=False, priority=3, align="left"))
            blocks.append(Block(f"Token {format_duration(view.token_valid_for)}", "note",
                                wrap="none", required=False, priority=2, align="left"))
            return blocks
        case OfflineView():
            blocks = [Block("Offline", "bad", scale=1.4, wrap="none"),
                      Block(view.reason, "body", ellipsize=True, max_lines=3),
                      Block(f"{_count(view.outbox_depth)} readings kept", "body")]
            if view.retry_in is not None:
                blocks.append(Block(f"retry in {format_duration(view.retry_in)}", "note",
                                    wrap="none", required=False))
            return blocks
        case ExpiredView():
            return [Block("Code expired", "warn", scale=1.4),
                    *_next_code(view.button, view.retry_in, format_duration)]
        case DeclinedView():
            return [Block("Sign-in declined", "bad", scale=1.4),
                    *_next_code(view.button, view.retry_in, format_duration, again=True)]
        case CancelledView():
            return [Block("Sign-in cancelled", "warn", scale=1.4),
                    *_next_code(view.button, view.retry_in, format_duration)]
        case ErrorView():
            return [Block("Error", "bad", scale=1.4, wrap="none"),
                    Block(view.message, "body", ellipsize=True, max_lines=4),
                    *_next_code(view.button, view.retry_in, format_duration, optional=True)]
        case ConfirmSignOutView():
            return [Block("Sign out?", "warn", scale=1.5, wrap="none"),
                    Block(f"Keep holding {max(0, round(view.seconds_left))}s", "body"),
                    Block("Release to cancel", "note", required=False)]
    raise TypeError(f"not a view: {view!r}")


def _next_code(button: bool, retry_in: float | None, format_duration, *,
               again: bool = False, optional: bool = False) -> list[Block]:
    """How a new code comes, as a stopped screen says it: only what is true.

    The button line is what to do now; the timer line a note. With
    *optional* (under an error message) both may be dropped for room.
    """
    blocks = []
    if button:
        blocks.append(Block("Press the button " + ("to try again" if again else "for a new code"),
                            "body", required=not optional, priority=2))
    if retry_in is not None:
        blocks.append(Block(f"new code in {format_duration(retry_in)}", "note",
                            required=not (optional or button), priority=1))
    return blocks


# -- layout ----------------------------------------------------------------

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
def _qr_rows(payload: str) -> tuple[tuple[int, ...], ...]:
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
    real = _blocks(view)
    template = _blocks(view, stand_in=True)
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
        left, top, right, bottom = _ink(block.text, line.size, mode)
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
    modules = len(_qr_rows(payload))
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


def render_plain(view: View, size: tuple[int, int], mode: str = "1") -> "Image.Image":
    """A last-resort picture for a panel too small for :func:`render`.

    The text of :func:`agent.ui.describe` (the code first on a sign-in
    screen) at the smallest size, filling each line, cut off at the bottom.
    """
    from PIL import Image, ImageDraw

    from agent.ui import describe

    if isinstance(view, SignInView):
        lines = [display_code(view.user_code), display_address(view.verification_uri)]
    else:
        lines = describe(view)
    image = Image.new(mode, size, 0)
    draw = ImageDraw.Draw(image)
    f = font(MIN_FONT, mode)
    y = 0
    for text in lines:
        for part in wrap(text, size[0],
                         lambda t: draw.textlength(drawn(t, MIN_FONT, mode), font=f) <= size[0],
                         "chars") or []:
            draw.text((0, y), drawn(part, MIN_FONT, mode), font=f,
                      fill=1 if mode == "1" else (255, 255, 255))
            y += MIN_FONT + 2
    return image


def layout(view: View, size: tuple[int, int], mode: str = "1") -> list[Box]:
    """The boxes :func:`render` draws into for *view* at *size*.

    *mode* is the image mode the boxes are for (text is wider in "1").
    """
    return plan(view, size, mode).boxes


# -- drawing ---------------------------------------------------------------

def render(view: View, size: tuple[int, int], mode: str = "1") -> "Image.Image":
    """Draw *view* on a new image of *size* (width, height) and *mode* ("1" or "RGB")."""
    from PIL import Image, ImageDraw

    if mode not in ("1", "RGB"):
        raise ValueError(f"mode must be '1' or 'RGB', not {mode!r}")
    p = plan(view, size, mode)
    image = Image.new(mode, size, 0)
    draw = ImageDraw.Draw(image)
    tmode = p.text_mode
    if tmode == "1":
        draw.fontmode = "1"         # crisp text, as the layout measured it
    colour = ((lambda role: 1) if mode == "1" else (lambda role: _colour(role, tmode)))
    white = 1 if mode == "1" else (255, 255, 255)
    black = 0 if mode == "1" else (0, 0, 0)
    for line in p.lines:
        draw.text(line.origin, drawn(line.text, line.size, tmode), font=font(line.size, tmode),
                  fill=colour(line.role))
    if p.qr is not None:
        box, scale = p.qr.box, p.qr.scale
        # Dark modules on a light ground, as scanners expect.
        draw.rectangle((box.left, box.top, box.right - 1, box.bottom - 1), fill=white)
        for y, row in enumerate(_qr_rows(p.qr.payload)):
            for x, dark in enumerate(row):
                if dark:
                    x0, y0 = box.left + x * scale, box.top + y * scale
                    draw.rectangle((x0, y0, x0 + scale - 1, y0 + scale - 1), fill=black)
    if p.bar is not None:
        track, fraction = p.bar
        if mode == "RGB":
            draw.rectangle((track.left, track.top, track.right - 1, track.bottom - 1),
                           fill=_BAR_TRACK)
        filled = round(track.width * fraction)
        if filled > 0:
            draw.rectangle((track.left, track.top, track.left + filled - 1, track.bottom - 1),
                           fill=colour("title"))
    return image


# -- character LCDs ----------------------------------------------------------

def _text_segments(view: View) -> list[Block]:
    """The blocks of a screen as a character LCD shows them (ASCII: the HD44780 ROM)."""
    segments: list[Block] = []
    for block in _blocks(view):
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


# -- gallery -----------------------------------------------------------------

LONG_ACCOUNT = "firstname.lastname-consultant@subsidiary.contoso.onmicrosoft.com"
USGOV_DEVICE_URI = "https://login.microsoftonline.us/common/oauth2/deviceauth"

# The longest realistic values, so the gallery and the tests show the worst case.
SAMPLES: dict[str, View] = {
    "sign-in": SignInView("FJ8ZK3ZUS", USGOV_DEVICE_URI, None, 899, 900),
    "sign-in-rfc": SignInView(
        "WDJBMJHT", "https://auth.example.com/device",
        "https://auth.example.com/device?user_code=WDJBMJHT", 1799, 1800),
    "progress": ProgressView("Requesting a code"),
    "signed-in": SignedInView(LONG_ACCOUNT),
    "status": StatusView("greenhouse-sensor-north-01", LONG_ACCOUNT, 185.0, 1_234_567, True, 3599.0),
    "offline": OfflineView("endpoint unreachable: api.example.com", 1_234_567, 298.0),
    "expired": ExpiredView(),
    "declined": DeclinedView(),
    "cancelled": CancelledView(),
    "error": ErrorView("Token file readable by others (run: chmod 600 the file)"),
    "confirm-sign-out": ConfirmSignOutView(4.0),
}


def render_text_image(lines: list[str], cols: int, rows: int) -> "Image.Image":
    """A picture of a character LCD showing *lines* (white on blue, 5x8 cells)."""
    from PIL import Image, ImageDraw, ImageFont

    bitmap = ImageFont.load_default_imagefont() if hasattr(ImageFont, "load_default_imagefont") \
        else ImageFont.load_default()
    cell_w, cell_h, pad = 8, 14, 6
    image = Image.new("RGB", (cols * cell_w + 2 * pad, rows * cell_h + 2 * pad), (24, 64, 200))
    draw = ImageDraw.Draw(image)
    for r in range(rows):
        text = lines[r] if r < len(lines) else ""
        for c in range(cols):
            x, y = pad + c * cell_w, pad + r * cell_h
            draw.rectangle((x, y, x + cell_w - 2, y + cell_h - 2), fill=(34, 84, 230))
            if c < len(text):
                draw.text((x + 1, y + 1), text[c], font=bitmap, fill=(240, 240, 255))
    return image.resize((image.width * 2, image.height * 2), Image.NEAREST)


def write_gallery(out_dir: Path, *, scale_to: int = 256) -> list[Path]:
    """Write every sample screen at every geometry to *out_dir* as PNG.

    Pixel screens are enlarged (nearest neighbour, whole multiples) to about
    *scale_to* pixels wide so they can be looked at; names are
    ``<screen>-<width>x<height>.png`` and ``<screen>-<cols>x<rows>-chars.png``
    (one file per page when a character LCD pages). Returns the paths.
    """
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, view in SAMPLES.items():
        for geometry in GEOMETRIES:
            if geometry.mode == "text":
                pages = text_pages(view, geometry.width, geometry.height)
                for index, lines in enumerate(pages):
                    suffix = "" if len(pages) == 1 else f"-page{index + 1}"
                    image = render_text_image(lines, geometry.width, geometry.height)
                    path = out_dir / f"{name}-{geometry.name}{suffix}.png"
                    image.save(path, optimize=True)
                    written.append(path)
                continue
            try:
                image = render(view, geometry.size, geometry.mode)
            except LayoutError:
                # What the panel shows then (LumaPresenter does the same):
                # only with Pillow's small bitmap font, when no font file is there.
                image = render_plain(view, geometry.size, geometry.mode)
            factor = max(1, scale_to // geometry.width)
            if factor > 1:
                image = image.resize((geometry.width * factor, geometry.height * factor),
                                     Image.NEAREST)
            if image.mode == "RGB":
                # A palette keeps the files a few KB (anti-aliasing needs few shades).
                image = image.convert("P", palette=Image.ADAPTIVE, colors=64)
            path = out_dir / f"{name}-{geometry.name}.png"
            image.save(path, optimize=True)
            written.append(path)
    return written
