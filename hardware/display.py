"""A presenter from the ``[display]`` settings: an OLED/LCD, a framebuffer, the console.

``open_presenter({"driver": "ssd1306", "interface": "i2c", "i2c_port": 1,
"i2c_address": "0x3C"})`` builds the luma device with luma's own
command-line helpers (:mod:`luma.core.cmdline`: the same option names and
defaults as every luma example), so any device luma.oled or luma.lcd knows
works without a table of ours. ``driver`` may also be ``"console"``,
``"none"``, ``"framebuffer"`` (a Linux ``/dev/fbN``, for LCD HATs) or
``"dummy"`` (luma's in-memory device: tests and the gallery).

A display that cannot be opened never stops the agent: one WARNING line
names the device, the cause and the fix, and the console takes over.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from typing import Any, Mapping, TextIO, cast

from agent.clock import Clock
from agent.config.drivers import driver_problem
from agent.config.values import BLANK_AFTER, DIM_AFTER, DisplayConfig
from agent.ui import ConsolePresenter, NullPresenter, Presenter
from hardware.errors import HardwareError

__all__ = ["open_presenter", "open_device", "DEFAULT_DIM_AFTER", "DEFAULT_BLANK_AFTER",
           "PASS_THROUGH"]

log = logging.getLogger(__name__)

# Seconds of an unchanged status screen before dimming, and blanking (0 disables):
# the config's defaults, written once in agent.config.values.
DEFAULT_DIM_AFTER = DIM_AFTER
DEFAULT_BLANK_AFTER = BLANK_AFTER

# [display] keys handed to luma's parser as --key-with-dashes VALUE.
PASS_THROUGH = (
    "interface", "width", "height", "rotate", "i2c_port", "i2c_address", "spi_port",
    "spi_device", "spi_bus_speed", "spi_mode", "gpio_data_command", "gpio_reset",
    "gpio_backlight", "gpio_chip_select", "backlight_active", "framebuffer_device",
    "h_offset", "v_offset", "mode",
)
# Boolean luma flags ([display] bgr = true -> --bgr).
FLAGS = ("bgr", "inverse")


class _Parser(argparse.ArgumentParser):
    """luma's parser, raising instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise HardwareError(f"display settings not understood: {message}",
                            "check the [display] table in the config file")


def open_presenter(settings: Mapping[str, object], *, clock: Clock | None = None,
                   stream: TextIO | None = None) -> Presenter:
    """The presenter for a ``[display]`` table (as parsed from TOML).

    Never raises for a device that cannot be opened: it logs one WARNING
    line (device, cause, fix) and returns a console presenter on *stream*.
    ``dim_after`` and ``blank_after`` (seconds, 0 disables) set the burn-in
    care of an OLED; *clock* drives it (tests pass a FakeClock).
    """
    stream = stream if stream is not None else sys.stderr
    driver = str(_setting(settings, "driver")).strip().lower()
    if driver == "none":
        return NullPresenter()
    if driver == "console":
        return _console(stream)
    try:
        device = open_device(settings)
    except HardwareError as exc:
        log.warning("%s", exc)
        return _console(stream)
    from hardware.presenter import CharacterPresenter, LumaPresenter, ScreenCare

    name = _name(driver, settings)
    from luma.core.virtual import character

    if isinstance(device, character):
        # A character LCD (hd44780, ws0010): text in 5x8-pixel cells.
        return CharacterPresenter(device, cols=device.width // 5, rows=device.height // 8,
                                  clock=clock, name=name)
    care = ScreenCare(
        dim_after=_seconds(settings, "dim_after", DEFAULT_DIM_AFTER),
        blank_after=_seconds(settings, "blank_after", DEFAULT_BLANK_AFTER),
    )
    log.info("%s: %dx%d %s", name, device.width, device.height, device.mode)
    return LumaPresenter(device, clock=clock, care=care, name=name)


#: What a key left out of a partial settings mapping means: the config's default.
_DEFAULTS: dict[str, Any] = DisplayConfig().as_settings()


def _setting(settings: Mapping[str, object], key: str) -> object:
    return settings.get(key, _DEFAULTS[key])


def _int(settings: Mapping[str, object], key: str) -> int:
    return int(cast(Any, _setting(settings, key)))


def _console(stream: TextIO) -> Presenter:
    if stream.isatty():
        from hardware.console import HalfBlockPresenter

        return HalfBlockPresenter(stream)
    return ConsolePresenter(stream)


def _seconds(settings: Mapping[str, object], key: str, default: float) -> float:
    value = settings.get(key, default)
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        log.warning("display: %s = %r is not a number of seconds; using %s", key, value, default)
        return default
    return max(0.0, seconds)


def _name(driver: str, settings: Mapping[str, object]) -> str:
    """``ssd1306 on /dev/i2c-1``: the device as a person finds it on the board."""
    interface = str(_setting(settings, "interface"))
    if driver == "framebuffer":
        return f"framebuffer {_setting(settings, 'framebuffer_device')}"
    if driver == "dummy":
        return "dummy display"
    if interface in ("i2c", "pcf8574"):
        return f"{driver} on /dev/i2c-{_setting(settings, 'i2c_port')}"
    if interface in ("spi", "gpio_cs_spi"):
        return f"{driver} on /dev/spidev{_setting(settings, 'spi_port')}.{_setting(settings, 'spi_device')}"
    return f"{driver} on {interface}"


def open_device(settings: Mapping[str, object]) -> Any:
    """The luma device for a ``[display]`` table; :class:`HardwareError` if it cannot be used."""
    driver = str(settings.get("driver", "")).strip().lower()
    name = _name(driver, settings)
    try:
        import luma.core.cmdline as cmdline
    except ImportError as exc:
        raise HardwareError(f"display {name} not available: luma is not installed",
                            "install the display extra: pip install 'entra-device-agent[display]'"
                            ) from exc
    if driver == "dummy":
        from luma.core.device import dummy

        return dummy(width=_int(settings, "width"), height=_int(settings, "height"),
                     rotate=_int(settings, "rotate"), mode=str(settings.get("mode", "1")))
    display = "linux_framebuffer" if driver == "framebuffer" else driver
    known = driver_problem(driver, luma_drivers())
    if known is not None:
        raise HardwareError(
            f"display {driver!r} is not a known driver",
            "use console, none, framebuffer or a luma device: " + ", ".join(known))
    settings = dict(settings)
    if _is_character_display(display) and int(cast(Any, settings.get("width", 16))) > 40:
        # luma counts an HD44780's width and height in characters; 128x64 is
        # the pixel default of the config, not a character LCD (at most 40x4).
        log.info("display %s: width/height are characters; using 16x2", driver)
        settings["width"], settings["height"] = 16, 2
    argv = ["--display", display]
    for key in PASS_THROUGH:
        if key in settings and settings[key] is not None:
            value = settings[key]
            if key == "i2c_address" and isinstance(value, int):
                value = hex(value)
            argv += ["--" + key.replace("_", "-"), str(value)]
    for key in FLAGS:
        if settings.get(key):
            argv.append("--" + key)
    parser = cmdline.create_parser(description="entra-agent display", parser=_Parser(),
                                   autocomplete=False)
    args = parser.parse_args(argv)
    try:
        device = cmdline.create_device(args)
    except Exception as exc:  # luma, smbus2, spidev and GPIO libraries raise all sorts
        raise _explain(exc, name, driver, settings) from exc
    if device is None:  # pragma: no cover - every known display makes a device
        raise HardwareError(f"display {name} not available: luma made no device",
                            "check [display] driver")
    return device


def _is_character_display(display: str) -> bool:
    """True for luma's character LCDs (hd44780, ws0010, winstar_weh)."""
    import importlib

    from luma.core.virtual import character

    for module in ("luma.lcd.device", "luma.oled.device"):
        try:
            cls = getattr(importlib.import_module(module), display, None)
        except ImportError:
            continue
        if isinstance(cls, type) and issubclass(cls, character):
            return True
    return False


def _os_error(exc: BaseException) -> OSError | None:
    """The operating-system error under a luma error, if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _explain(exc: Exception, name: str, driver: str,
             settings: Mapping[str, object]) -> HardwareError:
    """Translate what luma raised into one line: device, cause, fix."""
    interface = str(_setting(settings, "interface"))
    bus = "i2c" if interface in ("i2c", "pcf8574") else "spi" if "spi" in interface else interface
    os_error = _os_error(exc)
    text = str(exc)
    if isinstance(exc, ImportError):
        from hardware.packages import install_hint

        # luma imports RPi.GPIO, spidev, smbus2, pyftdi on demand; the hint
        # names a package this system has (Debian's, else pip's).
        module = (exc.name or text).split(".")[0]
        return HardwareError(f"display {name} not available: the Python module {module} is missing",
                             f"install it with: {install_hint(module)}")
    if os_error is not None:
        cause = os_error.strerror or text
        if os_error.errno == errno.ENOENT:
            if driver == "framebuffer":
                fix = "enable the LCD overlay in /boot/firmware/config.txt and reboot"
            elif bus == "spi":
                fix = "enable SPI with: sudo raspi-config nonint do_spi 0"
            else:
                fix = "enable I2C with: sudo raspi-config nonint do_i2c 0"
            return HardwareError(f"display {name} not available: {cause}", fix)
        if os_error.errno in (errno.EACCES, errno.EPERM):
            group = {"i2c": "i2c", "spi": "spi"}.get(bus, "video" if driver == "framebuffer" else "gpio")
            return HardwareError(f"display {name} not available: {cause}",
                                 f"add the user to the {group} group: sudo usermod -aG {group} $USER")
        if os_error.errno in (errno.EREMOTEIO, errno.EIO, errno.ENXIO):
            address = _setting(settings, "i2c_address")
            return HardwareError(
                f"display {name} not available: no answer at address {address} ({cause})",
                f"check the wiring and the address with: i2cdetect -y {_setting(settings, 'i2c_port')}")
        return HardwareError(f"display {name} not available: {cause}",
                             "check the wiring and the [display] settings")
    # luma's own errors without an OS error under them: told apart by type, not by text.
    from luma.core.error import DeviceNotFoundError, DevicePermissionError

    if isinstance(exc, DevicePermissionError):
        return HardwareError(f"display {name} not available: {text}",
                             f"add the user to the {bus} group: sudo usermod -aG {bus} $USER")
    if isinstance(exc, DeviceNotFoundError) and bus == "i2c":
        return HardwareError(
            f"display {name} not available: {text}",
            f"check the wiring and the address with: i2cdetect -y {_setting(settings, 'i2c_port')}")
    kind = type(exc).__name__
    return HardwareError(f"display {name} not available: {kind}: {text or 'no details'}",
                         "check [display] driver, interface, width, height and rotate")


def luma_drivers() -> list[str] | None:
    """Every device name luma knows here, sorted; None when luma is not installed."""
    try:
        import luma.core.cmdline as cmdline
    except ImportError:
        return None
    return sorted({d for kind in cmdline.get_display_types().values() for d in kind})
