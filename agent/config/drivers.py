"""Which ``[display] driver`` names exist: the one place that decides.

``console``, ``none``, ``framebuffer`` and ``dummy`` are the agent's own; every
other name must be a device luma knows (luma.oled, luma.lcd...), asked of
luma itself (:func:`luma.core.cmdline.get_display_types`), never a table of
ours. The config loader checks only the shape of a name (luma may be absent
on a box without a screen); ``check-config`` and the display opener ask
:func:`driver_problem`.
"""

from __future__ import annotations

import re

__all__ = ["OWN_DRIVERS", "DRIVER_RE", "luma_drivers", "driver_problem", "driver_expected"]

#: The drivers that are not luma devices.
OWN_DRIVERS = ("console", "none", "framebuffer", "dummy")

#: The shape of a driver name: luma's device names are Python identifiers in lower case.
DRIVER_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def driver_expected() -> str:
    """What a driver must be, for "display.driver must be ..." messages."""
    return 'a display driver: "console", "none", "framebuffer" or a luma device name such as "ssd1306"'


def luma_drivers() -> list[str] | None:
    """Every device name luma knows here, sorted; None when luma is not installed."""
    try:
        import luma.core.cmdline as cmdline
    except ImportError:
        return None
    return sorted({d for kind in cmdline.get_display_types().values() for d in kind})


def driver_problem(driver: str) -> list[str] | None:
    """None when *driver* names a display that can be opened here (an own driver,
    or a device luma knows); else the luma device names, for the hint.

    Also None when luma is not installed (opening the display says so).
    """
    name = driver.strip().lower()
    if name in OWN_DRIVERS:
        return None
    known = luma_drivers()
    if known is None or name in known:
        return None
    return known
