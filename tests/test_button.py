"""The button and the LED through gpiozero's MockFactory, driven as the wiring would."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from hardware.button import ButtonControl
from hardware.errors import HardwareError
from hardware.led import LED_MODES, StatusLed

PIN = 17
WAIT = 5.0          # seconds to wait for an event before calling it lost


class Recorder:
    """Collects callbacks in order; tests wait for the one they expect."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._cond = threading.Condition()

    def __getattr__(self, name: str):
        if not name.startswith("on_"):
            raise AttributeError(name)

        def callback() -> None:
            with self._cond:
                self.calls.append(name[3:])
                self._cond.notify_all()
        return callback

    def wait_for(self, count: int) -> list[str]:
        """Wait until *count* callbacks have come (or WAIT seconds), return them all."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.calls) >= count, timeout=WAIT)
            return list(self.calls)


def _button(factory, recorder: Recorder, **kw) -> ButtonControl:
    options = dict(hold_seconds=0.3, confirm_after=0.1, bounce_time=0.05)
    options.update(kw)
    return ButtonControl(PIN, on_press=recorder.on_press, on_hold_start=recorder.on_hold_start,
                         on_hold_cancel=recorder.on_hold_cancel, on_hold=recorder.on_hold,
                         pin_factory=factory, **options)


def _press(pin, seconds: float) -> None:
    """Hold the button down for at least *seconds*, then let go for as long.

    The sleeps only put the edges far enough apart to count as a real press
    and release (longer than the bounce time); nothing asserts on them.
    """
    pin.drive_low()
    time.sleep(seconds)
    pin.drive_high()
    time.sleep(seconds)


def test_short_press(mock_factory):
    recorder = Recorder()
    with _button(mock_factory, recorder, confirm_after=1.0, hold_seconds=5.0) as button:
        pin = mock_factory.pin(PIN)
        assert not button.is_pressed
        _press(pin, 0.1)
        assert recorder.wait_for(1) == ["press"]


def test_hold_asks_for_confirmation_then_acts(mock_factory):
    recorder = Recorder()
    with _button(mock_factory, recorder):
        pin = mock_factory.pin(PIN)
        pin.drive_low()
        assert recorder.wait_for(2) == ["hold_start", "hold"]
        pin.drive_high()
        time.sleep(0.1)
        # Letting go after the hold completed does nothing more; a later
        # press is a press again.
        _press(pin, 0.08)
        assert recorder.wait_for(3) == ["hold_start", "hold", "press"]


def test_releasing_during_the_confirmation_cancels(mock_factory):
    recorder = Recorder()
    with _button(mock_factory, recorder, confirm_after=0.1, hold_seconds=30.0):
        pin = mock_factory.pin(PIN)
        pin.drive_low()
        assert recorder.wait_for(1) == ["hold_start"]
        pin.drive_high()
        assert recorder.wait_for(2) == ["hold_start", "hold_cancel"]


def test_bounce_makes_one_press(mock_factory):
    recorder = Recorder()
    # A generous bounce time: the test thread must toggle within it even on
    # a busy machine.
    with _button(mock_factory, recorder, bounce_time=0.3, confirm_after=2.0, hold_seconds=5.0):
        pin = mock_factory.pin(PIN)
        for _ in range(5):                      # contact chatter: one press, one release
            pin.drive_low()
            pin.drive_high()
        pin.drive_low()
        pin.drive_high()
        _press(pin, 0.5)                        # then one clean press
        # Callbacks arrive in order, so any press made of the chatter would
        # come before the clean one.
        assert recorder.wait_for(1) == ["press"]
        time.sleep(0.4)                         # let a stray second press show itself
        assert recorder.calls == ["press"]


def test_chatter_while_pressed_is_still_one_press(mock_factory):
    recorder = Recorder()
    with _button(mock_factory, recorder, bounce_time=0.3, confirm_after=2.0, hold_seconds=5.0):
        pin = mock_factory.pin(PIN)
        pin.drive_low()                         # contact closes, bounces, then stays closed
        pin.drive_high()
        pin.drive_low()
        time.sleep(0.5)
        pin.drive_high()                        # and bounces open
        pin.drive_low()
        pin.drive_high()
        assert recorder.wait_for(1) == ["press"]
        _press(pin, 0.5)
        assert recorder.wait_for(2) == ["press", "press"]


def test_a_callback_that_fails_does_not_stop_the_button(mock_factory, caplog):
    calls = []
    done = threading.Event()

    def bad() -> None:
        calls.append("bad")
        raise RuntimeError("service bug")

    def hold() -> None:
        done.set()

    with ButtonControl(PIN, hold_seconds=0.2, confirm_after=0.1, bounce_time=0.01,
                       on_press=bad, on_hold=hold, pin_factory=mock_factory):
        pin = mock_factory.pin(PIN)
        _press(pin, 0.05)
        pin.drive_low()
        assert done.wait(WAIT)
    assert calls == ["bad"]
    assert "callback failed" in caplog.text


def test_pin_in_use_is_one_line_with_the_fix(mock_factory):
    recorder = Recorder()
    with _button(mock_factory, recorder):
        with pytest.raises(HardwareError) as caught:
            _button(mock_factory, recorder)
    message = str(caught.value)
    assert message.startswith("button on GPIO17: the pin is already in use (")
    assert "\n" not in message
    assert isinstance(caught.value, OSError)


def test_invalid_pin(mock_factory):
    with pytest.raises(HardwareError, match=r"^button on GPIO99: not a usable pin .*BCM"):
        ButtonControl(99, on_press=lambda: None, on_hold=lambda: None, pin_factory=mock_factory)


def test_missing_gpiozero(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpiozero", None)      # as if not installed
    with pytest.raises(HardwareError) as caught:
        ButtonControl(PIN, on_press=lambda: None, on_hold=lambda: None)
    assert str(caught.value) == ("button: gpiozero is not installed (install the gpio extra: "
                                 "pip install 'entra-device-agent[gpio]')")


def test_mock_factory_from_the_environment():
    # GPIOZERO_PIN_FACTORY=mock, as off the board; a fresh process so
    # gpiozero's global factory starts clean.
    code = """
import threading
from gpiozero import Device
from hardware.button import ButtonControl
pressed = threading.Event()
b = ButtonControl(17, on_press=pressed.set, on_hold=lambda: None, bounce_time=0.01)
pin = Device.pin_factory.pin(17)
pin.drive_low()
import time; time.sleep(0.05)
pin.drive_high()
print(type(Device.pin_factory).__name__, pressed.wait(5))
b.close()
"""
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["MockFactory", "True"]


# -- the LED -------------------------------------------------------------------

def _wait_until(predicate, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_led_modes(mock_factory):
    led = StatusLed(27, pin_factory=mock_factory)
    pin = mock_factory.pin(27)
    try:
        assert pin.state is False
        led.set_mode("signed_in")
        assert pin.state is True and led.mode == "signed_in"
        led.set_mode("off")
        assert pin.state is False
        led.set_mode("error")
        pin.clear_states()
        # Blinking: the pin goes on and off by itself.
        assert _wait_until(lambda: len(pin.states) >= 5)
        assert {s.state for s in pin.states} == {True, False}
        led.set_mode("signed_in")
        assert pin.state is True
        with pytest.raises(ValueError):
            led.set_mode("disco")
    finally:
        led.close()


def test_led_blink_rates_differ():
    on_waiting, off_waiting = LED_MODES["waiting"]
    on_error, off_error = LED_MODES["error"]
    assert on_error < on_waiting and off_error < off_waiting


def test_led_pin_in_use(mock_factory):
    recorder = Recorder()
    with _button(mock_factory, recorder):
        with pytest.raises(HardwareError, match="^LED on GPIO17: the pin is already in use"):
            StatusLed(PIN, pin_factory=mock_factory)
