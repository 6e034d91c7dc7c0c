"""Which pin library gpiozero will drive the button and LED with, here, said in one line.

gpiozero picks the first pin factory that loads: lgpio, RPi.GPIO, pigpio,
then its pure-Python "native" fallback (``GPIOZERO_PIN_FACTORY`` overrides).
:func:`pin_backend` tells which without opening anything (``check-config``
starts nothing) and where the library came from: Debian's package
(``/usr/lib/python3/dist-packages``) or a pip wheel in the venv. On plain
Debian for ARM there is no ``python3-lgpio`` (it is in Raspberry Pi OS's
archive); install.sh then takes PyPI's ``lgpio`` wheel (aarch64, armv7l).
"""

from __future__ import annotations

import glob
import importlib.util
import os
from dataclasses import dataclass

__all__ = ["PinBackend", "pin_backend", "FACTORIES"]

# gpiozero's preferred order: (factory name, the module it needs).
FACTORIES = (("lgpio", "lgpio"), ("rpigpio", "RPi.GPIO"), ("pigpio", "pigpio"))


@dataclass(frozen=True)
class PinBackend:
    """The pin factory gpiozero would use: ``name`` (``lgpio``, ``rpigpio``,
    ``pigpio``, ``native``, ``mock``, or ``""`` without gpiozero), the module
    and where it comes from, and ``problem``: why it will not work here, with
    the fix (``""`` when nothing is known to be wrong)."""

    name: str
    module: str = ""
    origin: str = ""
    problem: str = ""

    def describe(self) -> str:
        if not self.name:
            return self.problem
        text = self.name
        if self.module and self.module != self.name:
            text += f" ({self.module}"
            text += f", {self.origin})" if self.origin else ")"
        elif self.origin:
            text += f" ({self.origin})"
        return text + (f"; {self.problem}" if self.problem else "")


def _origin(module: str) -> str:
    spec = importlib.util.find_spec(module.split(".")[0])
    where = (spec.origin or "") if spec is not None else ""
    if not where and spec is not None and spec.submodule_search_locations:
        where = list(spec.submodule_search_locations)[0]
    if "/dist-packages/" in where:
        return "Debian package"
    if "/site-packages/" in where:
        return "pip"
    return where


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def pin_backend() -> PinBackend:
    """The pin library the button and LED would use here (nothing is opened)."""
    from hardware.packages import install_hint

    if not _present("gpiozero"):
        return PinBackend("", problem="gpiozero not installed: no button or LED "
                                      f"(install the gpio extra: {install_hint('gpiozero')})")
    chosen = os.environ.get("GPIOZERO_PIN_FACTORY", "").strip().lower()
    if chosen:
        module = dict(FACTORIES).get(chosen, "")
        return PinBackend(chosen, module, "GPIOZERO_PIN_FACTORY",
                          "" if not module or _present(module)
                          else f"{module} is not installed ({install_hint(module.split('.')[0])})")
    chips = sorted(glob.glob("/dev/gpiochip*"))
    for name, module in FACTORIES:
        if not _present(module):
            continue
        problem = ""
        if name in ("lgpio", "rpigpio") and not chips:
            problem = "no /dev/gpiochip* here (not a Raspberry Pi, or a container without its devices)"
        return PinBackend(name, module, _origin(module), problem)
    return PinBackend("native", "", "gpiozero's own fallback",
                      f"no pin library: install lgpio ({install_hint('lgpio')})")
