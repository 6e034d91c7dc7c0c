"""Drawing a planned screen on a Pillow image (mode ``"1"`` or ``"RGB"``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.ui import SignInView, View
from hardware.screens.content import display_address, display_code
from hardware.screens.fonts import drawn, font
from hardware.screens.geometry import MIN_FONT
from hardware.screens.planner import plan, qr_rows
from hardware.screens.wrapping import wrap

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["colour", "render", "render_plain"]

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


def colour(role: str, tmode: str) -> tuple[int, int, int]:
    return (_CRISP_COLOURS if tmode == "1" else _COLOURS)[role]



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
    paint = ((lambda role: 1) if mode == "1" else (lambda role: colour(role, tmode)))
    white = 1 if mode == "1" else (255, 255, 255)
    black = 0 if mode == "1" else (0, 0, 0)
    for line in p.lines:
        draw.text(line.origin, drawn(line.text, line.size, tmode), font=font(line.size, tmode),
                  fill=paint(line.role))
    if p.qr is not None:
        box, scale = p.qr.box, p.qr.scale
        # Dark modules on a light ground, as scanners expect.
        draw.rectangle((box.left, box.top, box.right - 1, box.bottom - 1), fill=white)
        for y, row in enumerate(qr_rows(p.qr.payload)):
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
                           fill=paint("title"))
    return image



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
