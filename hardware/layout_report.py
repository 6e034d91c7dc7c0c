"""Every sample screen's layout at every pixel geometry, as JSON: ``python -m hardware.layout_report``.

What :func:`hardware.screens.plan` placed (each line's text, font size,
origin and ink box; the QR code's box and scale; the bar), keyed by
``<screen>-<width>x<height>-<mode>``. Two Pillow builds (Debian's 9.4 and
PyPI's newest), or two machines (x86 and an ARM board), draw the same
layout exactly when their reports are equal: tests/test_pillow_versions.py
and tools/arm-check.sh compare them. Pixels may still differ by a shade
where FreeType versions anti-alias differently; the layout may not.
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["layout_report", "main"]


def _box(box: Any) -> list[int] | None:
    return None if box is None else [box.left, box.top, box.right, box.bottom]


def layout_report() -> dict[str, Any]:
    """``{"font": ..., "pillow": ..., "screens": {name: layout}}`` for every sample and geometry."""
    import PIL

    from hardware.screens import GEOMETRIES, SAMPLES, plan
    from hardware.screens.fonts import font_source

    screens: dict[str, Any] = {}
    for name, view in SAMPLES.items():
        for geometry in GEOMETRIES:
            if geometry.mode == "text":
                continue
            p = plan(view, geometry.size, geometry.mode)
            screens[f"{name}-{geometry.name}-{geometry.mode}"] = {
                "lines": [[line.text, line.size, list(line.origin), _box(line.box)]
                          for line in p.lines],
                "qr": None if p.qr is None else [_box(p.qr.box), p.qr.scale],
                "bar": None if p.bar is None else _box(p.bar[0]),
                "text_mode": p.text_mode,
            }
    source = font_source()
    return {"pillow": PIL.__version__, "font": [source.kind, source.path], "screens": screens}


def main() -> int:
    json.dump(layout_report(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
