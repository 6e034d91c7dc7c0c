"""Pure drawing: each view of :mod:`agent.ui` as a picture for a given size.

``render(view, (128, 64))`` returns a Pillow image for a pixel display
(mode ``"1"`` monochrome or ``"RGB"`` colour); ``render_text(view, 20, 4)``
returns the lines for a character LCD. Nothing here touches a device, a clock
or the network, so the same code draws the OLED, the terminal picture and
the README gallery, and the tests check it through luma's ``dummy`` device.

:func:`layout` returns the boxes a screen draws into (text, QR code, bar);
:func:`render` draws exactly those, so a test can check that every box is on
the canvas, no two overlap and no pixel is lit outside them.

The package, by concern (each imports only what comes before it):

- :mod:`~hardware.screens.fonts`: the font, its sizes and text widths;
- :mod:`~hardware.screens.wrapping`: breaking text into lines that fit;
- :mod:`~hardware.screens.column`: boxes, blocks, lines, :func:`fit_column`;
- :mod:`~hardware.screens.geometry`: the supported display sizes and margins;
- :mod:`~hardware.screens.content`: what each screen says (its blocks);
- :mod:`~hardware.screens.planner`: where everything goes (:func:`plan`);
- :mod:`~hardware.screens.drawing`: :func:`render`, :func:`render_plain`;
- :mod:`~hardware.screens.charlcd`: character LCD pages;
- :mod:`~hardware.screens.gallery`: sample screens and the README gallery.

Pillow and segno are imported only when something is drawn.

>>> from agent.ui import ExpiredView
>>> render(ExpiredView(), (128, 32)).size
(128, 32)
"""

from __future__ import annotations

from hardware.screens.charlcd import render_text, text_pages
from hardware.screens.content import display_address, display_code, qr_payload
from hardware.screens.drawing import render, render_plain
from hardware.screens.gallery import (
    LONG_ACCOUNT,
    SAMPLES,
    USGOV_DEVICE_URI,
    render_text_image,
    write_gallery,
)
from hardware.screens.geometry import GEOMETRIES, MARGIN, MIN_FONT, QR_BORDER, Geometry, LayoutError
from hardware.screens.planner import CRISP_BELOW, Plan, QrPlacement, layout, plan, text_mode

__all__ = [
    "Geometry", "GEOMETRIES", "Plan", "QrPlacement", "SAMPLES", "layout", "plan", "render",
    "render_text", "text_pages", "display_code", "display_address",
    "qr_payload", "write_gallery", "LayoutError", "render_plain", "text_mode",
    "render_text_image", "LONG_ACCOUNT", "USGOV_DEVICE_URI", "MARGIN", "MIN_FONT", "QR_BORDER",
    "CRISP_BELOW",
]
