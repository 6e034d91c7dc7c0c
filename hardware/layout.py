"""Fitting text into a small rectangle: fonts, wrapping, shrinking, boxes.

The screens module says *what* a screen shows as a list of :class:`Block`
values; :func:`fit_column` finds the largest font size at which those blocks
fit a rectangle, wrapping where sensible (an address between words at every
size before inside a word), shortening an account to one line before
dropping optional blocks and, as the very last resort, ellipsizing a block
that allows it. Every line it places is
returned as a :class:`Line` whose ``box`` is the exact ink bounding box, so
tests (and :func:`hardware.screens.render`) can check that nothing leaves the
canvas or overlaps.

All sizes are in pixels. The font is DejaVu Sans from Debian's
``fonts-dejavu-core`` (on Raspberry Pi OS too; the installer puts it there),
opened with :func:`PIL.ImageFont.truetype` and its basic layout engine:
that call and that file work the same in Debian bookworm's Pillow 9.4 and in
the newest Pillow from PyPI, so both draw the same layout (see
:func:`font_source` for what happens without it). Nothing is downloaded.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:  # Pillow is imported lazily: the agent runs without it.
    from PIL import ImageFont

__all__ = [
    "Box", "Block", "Line", "font", "font_source", "FontSource", "scalable_fonts", "wrap",
    "fit_column", "drawn", "ELLIPSIS", "MIN_SPACE", "FONT_FILES", "shorten_account",
]

log = logging.getLogger(__name__)

ELLIPSIS = "…"

# Characters after which a long address or account may break across lines
# (and "@", before which it may break): "login.microsoftonline.us/" + "common".
_BREAK_AFTER = "/.-_?&="
_BREAK_BEFORE = "@"


@dataclass(frozen=True)
class Box:
    """A rectangle on the canvas; ``right`` and ``bottom`` are exclusive.

    ``kind`` is ``"text"``, ``"qr"`` or ``"bar"``; ``text`` is the text drawn
    in a text box (for tests and for reading a layout in a log).
    """

    left: int
    top: int
    right: int
    bottom: int
    kind: str = "text"
    text: str = ""

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def overlaps(self, other: "Box") -> bool:
        """True when the two rectangles share at least one pixel."""
        return (self.left < other.right and other.left < self.right
                and self.top < other.bottom and other.top < self.bottom)

    def inside(self, size: tuple[int, int]) -> bool:
        """True when the box lies wholly on a canvas of *size* (width, height)."""
        width, height = size
        return 0 <= self.left <= self.right <= width and 0 <= self.top <= self.bottom <= height

    def moved(self, dx: int, dy: int) -> "Box":
        return Box(self.left + dx, self.top + dy, self.right + dx, self.bottom + dy,
                   self.kind, self.text)


@dataclass(frozen=True)
class Block:
    """One piece of text a screen wants to show.

    ``role`` picks the colour (``title``, ``big``, ``body``, ``note``,
    ``good``, ``bad``, ``warn``). ``scale`` is the size relative to the body
    text; a ``grow`` block (the user code) instead takes the largest size up
    to ``scale`` times the body size at which it fits one line. ``wrap`` is
    ``"none"`` (one line, never broken: the user code), ``"words"`` (break
    at spaces) or ``"path"`` (an address or account: break after ``/ . -``
    and before ``@``). A block that is not ``required`` may be dropped when
    space runs out, lowest ``priority`` first; an ``ellipsize`` block may, as
    the last resort, be cut to ``max_lines`` lines ending in an ellipsis.
    A ``shorten`` block (an account on the status screen) may instead be
    shown as one line by :func:`shorten_account` *before* any optional block
    is dropped: the other rows matter more than the whole account.
    """

    text: str
    role: str = "body"
    scale: float = 1.0
    wrap: str = "words"
    required: bool = True
    priority: int = 0
    ellipsize: bool = False
    max_lines: int = 4
    grow: bool = False
    align: str = "center"           # "center" or "left"
    shorten: bool = False


@dataclass(frozen=True)
class Line:
    """A line of text placed on the canvas.

    Draw it with ``ImageDraw.text(origin, drawn(text, size, mode),
    font=font(size, mode))``: the ink then lies within ``box``.
    """

    text: str
    size: int                       # font size in pixels
    role: str
    origin: tuple[int, int]
    box: Box = field(compare=False)
    block: int = -1                 # index of the Block it shows, in fit_column's list


# The screens' font, first found wins. DejaVu Sans: in Debian and Raspberry
# Pi OS (fonts-dejavu-core, which install.sh installs with the display
# extra), legible at 8 px on a 1-bit panel thanks to its hinting, and read by
# every Pillow with FreeType. Pillow 10.1+ has a scalable font of its own
# (load_default(size=...)), but Debian bookworm's Pillow 9.4 has not, and the
# two fonts lay out differently; one file for both keeps the screens equal.
FONT_FILES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)


@dataclass(frozen=True)
class FontSource:
    """Where the screens' glyphs come from.

    ``kind`` is ``"truetype"`` (a file of :data:`FONT_FILES`, at any size),
    ``"pillow"`` (Pillow 10.1+'s built-in scalable font, when no file is
    there: a usable screen, laid out a little differently) or ``"bitmap"``
    (Pillow's fixed 11 px font: no FreeType, or an old Pillow without a
    font file; every screen at one size). ``path`` is the file, if any.
    """

    kind: str
    path: str = ""


@functools.cache
def font_source() -> FontSource:
    """The font the screens use here (decided once; see :data:`FONT_FILES`).

    The fallback is defined and logged once at WARNING with the fix: a
    missing font never blanks a screen.
    """
    from PIL import ImageFont, features

    if not features.check("freetype2"):
        log.warning("screens: this Pillow has no FreeType: using its small bitmap font "
                    "(install Debian's python3-pil)")
        return FontSource("bitmap")
    for path in FONT_FILES:
        if os.path.isfile(path):
            try:
                ImageFont.truetype(path, 10, layout_engine=_basic_layout())
            except OSError as exc:
                log.warning("screens: cannot read the font %s (%s)", path, exc)
                continue
            return FontSource("truetype", path)
    fix = "install it: sudo apt-get install fonts-dejavu-core"
    try:
        ImageFont.load_default(size=10)  # type: ignore[call-arg]
    except TypeError:  # Pillow before 10.1: no scalable font of its own
        log.warning("screens: no font file %s: using Pillow's small bitmap font (%s)",
                    FONT_FILES[0], fix)
        return FontSource("bitmap")
    log.warning("screens: no font file %s: using Pillow's built-in font (%s)", FONT_FILES[0], fix)
    return FontSource("pillow")


def _basic_layout() -> int:
    """Pillow's basic layout engine (no HarfBuzz: less memory, same advances everywhere)."""
    from PIL import ImageFont

    layout = getattr(ImageFont, "Layout", None)  # Pillow >= 9.1
    return int(layout.BASIC) if layout is not None else ImageFont.LAYOUT_BASIC  # type: ignore[attr-defined]


def scalable_fonts() -> bool:
    """True when the screens' font scales (a TrueType font through FreeType)."""
    return font_source().kind != "bitmap"


# Pillow's own default font hinted for 1-bit output at exactly 8 px loses the
# bars of "f" and "t" ("microsoftonline" reads "microsollonline"); at 8.25 px
# the glyphs keep them and are no wider. (Only that font: DejaVu is hinted
# for 8 px, and Pillow before 10.1 takes whole sizes only.)
_NUDGE = {8: 8.25}


# A FreeType face of DejaVu Sans holds ~130 KB; planning a 320x240 screen
# tries some 30 sizes. Eight kept faces cover what the screens then draw
# with (bench/display_memory.py: 33 MB peak for the LCD case, 42 MB with 64).
@functools.lru_cache(maxsize=8)
def font(size: int, mode: str = "RGB") -> "ImageFont.FreeTypeFont | ImageFont.ImageFont":
    """The screens' font at *size* pixels for an image of *mode* (see :func:`font_source`)."""
    from PIL import ImageFont

    source = font_source()
    if source.kind == "truetype":
        return ImageFont.truetype(source.path, size, layout_engine=_basic_layout())
    if source.kind == "pillow":
        return ImageFont.load_default(  # type: ignore[call-arg]
            size=_NUDGE.get(size, size) if mode == "1" else size)
    return ImageFont.load_default()


# Narrowest word space worth drawing, in pixels of advance. Pillow's default
# font has a 2 px space up to 11 px (3 px up to 16 px), and on a 1-bit panel
# hinting eats one of them: "chmod 600 the" read "chmod 600the" at 9 px.
MIN_SPACE = 4


@functools.lru_cache(maxsize=64)
def _space_repeat(size: int, mode: str) -> int:
    """How many spaces make one word space at least MIN_SPACE pixels wide."""
    f = font(size, mode)
    try:
        if scalable_fonts():
            advance = f.getlength(" ", mode="1" if mode == "1" else "L")
        else:
            advance = f.getlength(" ")
    except (AttributeError, TypeError):  # a Pillow without getlength: leave spaces alone
        return 1
    return max(1, math.ceil(MIN_SPACE / advance)) if advance > 0 else 1


def drawn(text: str, size: int, mode: str = "1") -> str:
    """*text* as drawn at *size* on an image of *mode*: each space widened to
    at least :data:`MIN_SPACE` pixels (by repeating it), so words stay apart."""
    if not scalable_fonts():
        # Pillow's bitmap font has Latin-1 glyphs only (9.4 raises on "…").
        text = text.replace(ELLIPSIS, "...").encode("latin-1", "replace").decode("latin-1")
    if " " not in text:
        return text
    n = _space_repeat(size, mode)
    return text if n == 1 else text.replace(" ", " " * n)


@functools.lru_cache(maxsize=4096)
def _bbox(text: str, size: int, mode: str) -> tuple[int, int, int, int]:
    # Mode matters: on a 1-bit image Pillow renders without anti-aliasing
    # and hinting makes the text up to a third wider than in "L"/"RGB".
    # Measured as drawn: with word spaces widened (drawn()).
    f = font(size, mode)
    text = drawn(text, size, mode)
    if scalable_fonts():
        box = f.getbbox(text, mode="1" if mode == "1" else "L")
    else:
        box = f.getbbox(text)
    return tuple(int(v) for v in box)  # type: ignore[return-value]


def text_width(text: str, size: int, mode: str = "1") -> int:
    """Ink width of *text* at *size* on an image of *mode*, in pixels."""
    left, _, right, _ = _bbox(text, size, mode)
    return right - left


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


def wrap(text: str, width: int, fits: "callable[[str], bool]", mode: str) -> list[str] | None:
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


def ellipsize(lines: list[str], max_lines: int, fits: "callable[[str], bool]",
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


def shorten_account(text: str, fits: "callable[[str], bool]", ellipsis: str = ELLIPSIS) -> str:
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


@dataclass
class _Placed:
    block: Block
    size: int
    lines: list[str]
    top: int            # ink top of the block's lines relative to the draw origin
    height: int         # ink height of one line (uniform within a block)
    gap: int            # pixels between this block's lines


# How an address or account ("path" block) may break, from best to worst:
# only between words ("boundary"), between words and inside a word too long
# for a line ("loose"), or anywhere, filling every line ("dense").
_PATH_WRAP = {"boundary": "boundary", "loose": "path", "dense": "chars"}


def _place_block(block: Block, size: int, width: int, clip: int, mode: str,
                 breaks: str = "loose", short: bool = False) -> _Placed | None:
    def fits(line: str) -> bool:
        return text_width(line, size, mode) <= width

    if short and block.shorten and not fits(block.text):
        lines: list[str] | None = [shorten_account(block.text, fits)]
    else:
        how = _PATH_WRAP[breaks] if block.wrap == "path" else block.wrap
        lines = wrap(block.text, width, fits, how)
    if lines is None:
        return None
    limit = min(block.max_lines, clip) if clip and block.ellipsize else block.max_lines
    if len(lines) > limit:
        if not (clip and block.ellipsize):
            return None
        lines = ellipsize(lines, limit, fits)
    tops = [_bbox(line, size, mode)[1] for line in lines]
    bottoms = [_bbox(line, size, mode)[3] for line in lines]
    top, bottom = min(tops), max(bottoms)
    return _Placed(block, size, lines, top, bottom - top, gap=max(1, size // 6))


def _grow_size(block: Block, body: int, width: int, height: int, mode: str) -> int:
    """The largest size up to ``scale * body`` at which *block* fits one line."""
    best = body
    for size in range(body, int(body * block.scale) + 1):
        left, top, right, bottom = _bbox(block.text, size, mode)
        if right - left > width or bottom - top > height:
            break
        best = size
    return best


def _try(blocks: Sequence[Block], body: int, width: int, height: int,
         clip: int, mode: str, breaks: str = "loose", short: bool = False) -> list[_Placed] | None:
    placed: list[_Placed] = []
    for block in blocks:
        if block.scale > 1 and scalable_fonts():
            size = _grow_size(block, body, width, height, mode)
        else:
            size = body
        p = _place_block(block, size, width, clip, mode, breaks, short)
        if p is None:
            return None
        placed.append(p)
    # A grown block (the user code) gives back size before the body shrinks.
    while _stack_height(placed, body) > height:
        grown = [i for i, p in enumerate(placed) if p.size > body]
        if not grown:
            return None
        for i in grown:
            p = _place_block(placed[i].block, placed[i].size - 1, width, clip, mode, breaks, short)
            assert p is not None  # smaller than a size that fitted one line
            placed[i] = p
    return placed


def _block_gap(body: int) -> int:
    return max(2, body // 3)


def _stack_height(placed: Sequence[_Placed], body: int) -> int:
    total = sum(p.height * len(p.lines) + p.gap * (len(p.lines) - 1) for p in placed)
    return total + _block_gap(body) * (len(placed) - 1)


def _sizes(min_size: int, max_size: int) -> Iterable[int]:
    if not scalable_fonts():
        return [min_size]
    return range(max_size, min_size - 1, -1)


def fit_column(blocks: Sequence[Block], region: Box, *, min_size: int,
               max_size: int, mode: str = "1", clip: bool = True,
               valign: str = "center", breaks: str = "any") -> list[Line] | None:
    """Lay *blocks* out top to bottom inside *region*, as large as they fit.

    Tries, in order: every block at the largest body size from *max_size*
    down to *min_size*; then with a ``shorten`` block on one line
    (:func:`shorten_account`); then the same with optional blocks dropped
    (lowest ``priority`` first); then with ``ellipsize`` blocks cut short.
    Returns the placed lines, or None when even that does not fit. With
    ``clip=False`` nothing is ellipsized (try a smaller *min_size* first).

    *breaks* says how addresses ("path" blocks) may break: ``"boundary"``
    only between words (``login.`` + ``microsoftonline.us/``), ``"any"``
    also inside a word and then anywhere. Callers try ``"boundary"`` at
    every size they allow before ``"any"``: a word broken in two reads far
    worse than a slightly smaller font.
    """
    optional = sorted((b for b in blocks if not b.required), key=lambda b: b.priority)
    has_path = any(b.wrap == "path" for b in blocks)
    has_short = any(b.shorten for b in blocks)
    phases = ["boundary"] if breaks == "boundary" or not has_path else ["loose", "dense"]
    attempts: list[tuple[list[Block], int, str, bool]] = []
    for phase in phases:
        for dropped in range(len(optional) + 1):
            gone = {id(b) for b in optional[:dropped]}
            active = [b for b in blocks if id(b) not in gone]
            attempts.append((active, 0, phase, False))
            if has_short:
                attempts.append((active, 0, phase, True))
    # Last resort: cut ellipsizable blocks (an account name) a line at a time.
    longest = max((b.max_lines for b in blocks if b.ellipsize), default=0) if clip else 0
    for limit in range(longest, 0, -1):
        for dropped in range(len(optional) + 1):
            gone = {id(b) for b in optional[:dropped]}
            attempts.append(([b for b in blocks if id(b) not in gone], limit, phases[0], False))
    for active, limit, phase, short in attempts:
        for body in _sizes(min_size, max_size):
            placed = _try(active, body, region.width, region.height, limit, mode, phase, short)
            if placed is not None:
                order = {id(b): i for i, b in enumerate(blocks)}
                return _arrange(placed, body, region, valign, mode, order)
    return None


def _arrange(placed: list[_Placed], body: int, region: Box, valign: str,
             mode: str, order: dict[int, int]) -> list[Line]:
    used = _stack_height(placed, body)
    spare = region.height - used
    # Spread spare room between blocks (up to a line's worth) so a short
    # screen does not huddle at the top, then centre what remains.
    between = min(spare // (len(placed) + 1), body) if len(placed) > 1 else 0
    used += between * (len(placed) - 1)
    y = region.top + ((region.height - used) // 2 if valign == "center" else 0)
    out: list[Line] = []
    for index, p in enumerate(placed):
        for line in p.lines:
            left, top, right, bottom = _bbox(line, p.size, mode)
            ink_w = right - left
            if p.block.align == "left":
                x = region.left
            else:
                x = region.left + (region.width - ink_w) // 2
            origin = (x - left, y - p.top)
            box = Box(x, y + (top - p.top), x + ink_w, y + (bottom - p.top), "text", line)
            out.append(Line(line, p.size, p.block.role, origin, box, order[id(p.block)]))
            y += p.height + p.gap
        y += _block_gap(body) + between - p.gap
    return out
