"""An optional status LED, and the translation of GPIO errors into one line.

``StatusLed(27).set_mode("waiting")`` blinks slowly while a person is
expected to enter the code; ``"signed_in"`` is steady, ``"error"`` blinks
fast, ``"off"`` is off. gpiozero's ``LED`` blinks on its own background
thread, so nothing here polls.
"""

from __future__ import annotations

import errno
import logging
import threading
from typing import Any

from hardware.errors import HardwareError

__all__ = ["StatusLed", "LED_MODES", "gpio_error"]

log = logging.getLogger(__name__)

# mode -> (seconds on, seconds off); None: steady on; (0, 0): off
LED_MODES: dict[str, tuple[float, float] | None] = {
    "off": (0.0, 0.0),
    "waiting": (1.0, 1.0),      # slow blink: someone should act
    "signed_in": None,          # steady: all is well
    "error": (0.1, 0.1),        # fast blink: look at the screen
}


def pin_name(pin: int | str) -> str:
    """``GPIO17`` for BCM number 17; a gpiozero pin name (``"BOARD11"``) as given."""
    return f"GPIO{pin}" if isinstance(pin, int) else pin


def gpio_error(exc: BaseException, what: str, pin: int | str) -> HardwareError:
    """One line for why *what* (``"button"``, ``"LED"``) on *pin* cannot be used."""
    import gpiozero.exc as gz

    name = f"{what} on {pin_name(pin)}"
    if isinstance(exc, gz.GPIOPinInUse):
        return HardwareError(f"{name}: the pin is already in use",
                             f"choose another pin in the config, or stop what uses {pin_name(pin)}")
    if isinstance(exc, gz.BadPinFactory):
        from hardware.packages import install_hint

        return HardwareError(
            f"{name}: no GPIO library could drive the pins",
            f"on the board install lgpio: {install_hint('lgpio')}; "
            "off the board set GPIOZERO_PIN_FACTORY=mock")
    if isinstance(exc, (gz.PinInvalidPin, gz.PinNoPins, gz.PinUnsupported, gz.PinFixedPull)):
        return HardwareError(f"{name}: not a usable pin ({exc})",
                             "give a BCM GPIO number, e.g. 17 for physical pin 11")
    os_error = exc if isinstance(exc, OSError) else None
    if os_error is not None and os_error.errno in (errno.EACCES, errno.EPERM):
        return HardwareError(f"{name}: {os_error.strerror or 'permission denied'}",
                             "add the user to the gpio group: sudo usermod -aG gpio $USER")
    if "permission" in str(exc).lower():
        return HardwareError(f"{name}: {exc}",
                             "add the user to the gpio group: sudo usermod -aG gpio $USER")
    return HardwareError(f"{name} not available: {type(exc).__name__}: {exc}",
                         "check the pin number and that the GPIO library works (pinout)")


class StatusLed:
    """An LED (through a resistor to ground) on *pin* (a BCM number or a gpiozero
    pin name) showing the agent's state."""

    def __init__(self, pin: int | str, *, pin_factory: Any = None) -> None:
        try:
            from gpiozero import LED
        except ImportError as exc:
            raise HardwareError("LED: gpiozero is not installed",
                                "install the gpio extra: pip install 'entra-device-agent[gpio]'"
                                ) from exc
        try:
            self._led = LED(pin, pin_factory=pin_factory)
        except Exception as exc:
            raise gpio_error(exc, "LED", pin) from exc
        self.pin = pin
        self._lock = threading.Lock()
        self._mode = "off"

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def is_lit(self) -> bool:
        """Whether the LED is on at this instant (it may be blinking)."""
        return bool(self._led.is_lit)

    def set_mode(self, mode: str) -> None:
        """Show *mode*: ``"off"``, ``"waiting"``, ``"signed_in"`` or ``"error"``."""
        if mode not in LED_MODES:
            raise ValueError(f"LED mode must be one of {', '.join(LED_MODES)}, not {mode!r}")
        with self._lock:
            if mode == self._mode:
                return  # re-starting a blink would make it stutter
            self._mode = mode
            timing = LED_MODES[mode]
            if timing is None:
                self._led.on()
            elif timing == (0.0, 0.0):
                self._led.off()
            else:
                self._led.blink(on_time=timing[0], off_time=timing[1], background=True)

    def close(self) -> None:
        with self._lock:
            self._led.close()
