"""The display sizes the screens are drawn for, and the margins every screen keeps."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GEOMETRIES", "Geometry", "LayoutError", "MARGIN", "MIN_FONT", "QR_BORDER"]


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
