"""Which ``[display] driver`` names exist: the one place that decides.

``console``, ``none``, ``framebuffer`` and ``dummy`` are the agent's own; every
other name must be a device luma knows (luma.oled, luma.lcd...), asked of
luma itself, never a table of ours. The config loader checks only the shape
of a name (luma may be absent on a box without a screen); ``check-config``
(through :func:`agent.assembly.luma_display_drivers`) and the display opener
(:func:`hardware.display.luma_drivers`) ask :func:`driver_problem`, handing it
luma's list. This module imports no display library.
"""

from __future__ import annotations

import re

__all__ = ["OWN_DRIVERS", "DRIVER_RE", "driver_problem", "driver_expected"]

#: The drivers that are not luma devices.
OWN_DRIVERS = ("console", "none", "framebuffer", "dummy")

#: The shape of a driver name: luma's device names are Python identifiers in lower case.
DRIVER_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def driver_expected() -> str:
    """What a driver must be, for "display.driver must be ..." messages."""
    return 'a display driver: "console", "none", "framebuffer" or a luma device name such as "ssd1306"'


def driver_problem(driver: str, known: list[str] | None) -> list[str] | None:
    """None when *driver* names a display that can be opened here (an own driver,
    or one of *known*, the device names luma has); else *known*, for the hint.

    Also None when *known* is None: luma is not installed (opening the display
    says so).
    """
    name = driver.strip().lower()
    if name in OWN_DRIVERS:
        return None
    if known is None or name in known:
        return None
    return known
