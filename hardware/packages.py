"""How to install a Python module *on the system at hand*: a hint that names a package that exists.

luma and gpiozero import their C parts on demand (RPi.GPIO, spidev, lgpio,
...); when one is missing the fix depends on where we run. Debian has
``python3-spidev`` but no ``python3-lgpio`` or ``python3-rpi-lgpio`` (those
are in Raspberry Pi OS's archive), and a venv made without
``--system-site-packages`` does not see apt's packages at all. So
:func:`install_hint` asks this system's apt which candidate it knows, and
falls back to pip into the running environment.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Package", "PACKAGES", "install_hint", "apt_knows", "sees_system_packages"]


@dataclass(frozen=True)
class Package:
    """Where a Python module comes from: Debian packages (best first), and PyPI."""

    debian: tuple[str, ...]
    pypi: str


# Top-level module -> its packages. RPi.GPIO: rpi-lgpio first (same API,
# works on every Pi including the 5, through /dev/gpiochip*).
PACKAGES: dict[str, Package] = {
    "RPi": Package(("python3-rpi-lgpio", "python3-rpi.gpio"), "rpi-lgpio"),
    "lgpio": Package(("python3-lgpio",), "lgpio"),
    "spidev": Package(("python3-spidev",), "spidev"),
    "smbus2": Package(("python3-smbus2",), "smbus2"),
    "pyftdi": Package(("python3-pyftdi",), "pyftdi"),
    "PIL": Package(("python3-pil",), "pillow"),
    "cbor2": Package(("python3-cbor2",), "cbor2"),
    "luma": Package((), "entra-device-agent[display]"),
    "gpiozero": Package((), "entra-device-agent[gpio]"),
}


@functools.lru_cache(maxsize=32)
def apt_knows(package: str) -> bool:
    """True when this system's apt has *package* in its lists (installed or not)."""
    if shutil.which("apt-cache") is None:
        return False
    try:
        result = subprocess.run(["apt-cache", "show", "--no-all-versions", "--", package],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                timeout=15, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def sees_system_packages() -> bool:
    """True when this Python sees apt's modules: the system Python, or a venv
    made with ``--system-site-packages`` (as install.sh makes it)."""
    if sys.prefix == sys.base_prefix:
        return True
    cfg = Path(sys.prefix) / "pyvenv.cfg"
    try:
        text = cfg.read_text(encoding="utf-8")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "include-system-site-packages":
            return value.strip().lower() == "true"
    return False


def install_hint(module: str) -> str:
    """The command that installs *module* (a top-level name) for this Python, here."""
    package = PACKAGES.get(module, Package((f"python3-{module.lower()}",), module))
    if sees_system_packages():
        for name in package.debian:
            if apt_knows(name):
                return f"sudo apt-get install {name}"
    if sys.prefix != sys.base_prefix:
        return f"sudo {Path(sys.prefix) / 'bin' / 'pip'} install '{package.pypi}'"
    return f"pip install '{package.pypi}'"
