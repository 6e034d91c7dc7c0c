"""Fitting a column of text blocks into a rectangle, as large as they fit.

:mod:`hardware.screens.content` says *what* a screen shows as a list of
:class:`Block` values; :func:`fit_column` finds the largest font size at
which those blocks fit a rectangle, wrapping where sensible (an address
between words at every size before inside a word), shortening an account to
one line before dropping optional blocks and, as the very last resort,
ellipsizing a block that allows it. Every line it places is returned as a
:class:`Line` whose ``box`` is the exact ink bounding box, so tests (and
:func:`hardware.screens.render`) can check that nothing leaves the canvas or
overlaps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from hardware.screens.fonts import ink_bbox, scalable_fonts, text_width
from hardware.screens.wrapping import ellipsize, shorten_account, wrap

__all__ = ["Block", "Box", "Line", "fit_column"]


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
    tops = [ink_bbox(line, size, mode)[1] for line in lines]
    bottoms = [ink_bbox(line, size, mode)[3] for line in lines]
    top, bottom = min(tops), max(bottoms)
    return _Placed(block, size, lines, top, bottom - top, gap=max(1, size // 6))


def _grow_size(block: Block, body: int, width: int, height: int, mode: str) -> int:
    """The largest size up to ``scale * body`` at which *block* fits one line."""
    best = body
    for size in range(body, int(body * block.scale) + 1):
        left, top, right, bottom = ink_bbox(block.text, size, mode)
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
            left, top, right, bottom = ink_bbox(line, p.size, mode)
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
