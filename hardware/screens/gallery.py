"""Sample screens (the longest realistic values) and the README gallery of them."""

from __future__ import annotations

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
from hardware.screens.charlcd import text_pages
from hardware.screens.drawing import render, render_plain
from hardware.screens.geometry import GEOMETRIES, LayoutError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["LONG_ACCOUNT", "SAMPLES", "USGOV_DEVICE_URI", "render_text_image", "write_gallery"]


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
    return image.resize((image.width * 2, image.height * 2), Image.Resampling.NEAREST)


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
                                     Image.Resampling.NEAREST)
            if image.mode == "RGB":
                # (Resampling and Palette: Pillow >= 9.1, as Debian bookworm's 9.4.)
                # A palette keeps the files a few KB (anti-aliasing needs few shades).
                image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
            path = out_dir / f"{name}-{geometry.name}.png"
            image.save(path, optimize=True)
            written.append(path)
    return written
