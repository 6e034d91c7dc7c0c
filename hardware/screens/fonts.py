"""The screens' font: which one, at what size, and how wide text is in it.

The font is DejaVu Sans from Debian's ``fonts-dejavu-core`` (on Raspberry Pi
OS too; the installer puts it there), opened with
:func:`PIL.ImageFont.truetype` and its basic layout engine: that call and
that file work the same in Debian bookworm's Pillow 9.4 and in the newest
Pillow from PyPI, so both draw the same layout (see :func:`font_source` for
what happens without it). Nothing is downloaded. All sizes are in pixels.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Pillow is imported lazily: the agent runs without it.
    from PIL import ImageFont

__all__ = [
    "ELLIPSIS", "FONT_FILES", "FontSource", "MIN_SPACE", "drawn", "font", "font_source",
    "ink_bbox", "scalable_fonts", "text_width",
]

log = logging.getLogger(__name__)

ELLIPSIS = "…"


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
        ImageFont.load_default(size=10)
    except TypeError:  # Pillow before 10.1: no scalable font of its own
        log.warning("screens: no font file %s: using Pillow's small bitmap font (%s)",
                    FONT_FILES[0], fix)
        return FontSource("bitmap")
    log.warning("screens: no font file %s: using Pillow's built-in font (%s)", FONT_FILES[0], fix)
    return FontSource("pillow")


def _basic_layout() -> "ImageFont.Layout":
    """Pillow's basic layout engine (no HarfBuzz: less memory, same advances everywhere)."""
    from PIL import ImageFont

    return ImageFont.Layout.BASIC  # Pillow >= 9.1 (Debian bookworm has 9.4)


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
        return ImageFont.load_default(
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
def ink_bbox(text: str, size: int, mode: str) -> tuple[int, int, int, int]:
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
    left, _, right, _ = ink_bbox(text, size, mode)
    return right - left
