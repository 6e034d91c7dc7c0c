"""The button and the LED through gpiozero's MockFactory, driven as the wiring would."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from agent.clock import FakeClock
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


def _button(factory, recorder: Recorder, clock: FakeClock, **kw) -> ButtonControl:
    options = dict(hold_seconds=0.3, confirm_after=0.1, bounce_time=0.05)
    options.update(kw)
    return ButtonControl(PIN, on_press=recorder.on_press, on_hold_start=recorder.on_hold_start,
                         on_hold_cancel=recorder.on_hold_cancel, on_hold=recorder.on_hold,
                         pin_factory=factory, clock=clock, **options)


def _later(clock: FakeClock, button: ButtonControl, seconds: float) -> None:
    """Let *seconds* pass on the button's clock (no real sleep)."""
    clock.advance(seconds)
    button.wake()


def _press(pin, clock: FakeClock, button: ButtonControl, seconds: float) -> None:
    """Hold the button down for *seconds*, then let go for as long (on the fake clock)."""
    pin.drive_low()
    _later(clock, button, seconds)
    pin.drive_high()
    _later(clock, button, seconds)


def test_short_press(mock_factory):
    recorder, clock = Recorder(), FakeClock()
    with _button(mock_factory, recorder, clock, confirm_after=1.0, hold_seconds=5.0) as button:
        pin = mock_factory.pin(PIN)
        assert not button.is_pressed
        _press(pin, clock, button, 0.1)
        assert recorder.wait_for(1) == ["press"]
        assert not button.is_pressed


def test_gpiozero_does_no_debouncing_of_its_own(mock_factory):
    # One debouncer (ours): gpiozero's bounce_time would drop edges on
    # RPi.GPIO, and its hold_time is unused.
    recorder, clock = Recorder(), FakeClock()
    with _button(mock_factory, recorder, clock) as button:
        assert button._button.pin.bounce is None
        assert button._button.when_held is None


def test_hold_asks_for_confirmation_then_acts(mock_factory):
    recorder, clock = Recorder(), FakeClock()
    with _button(mock_factory, recorder, clock) as button:
        pin = mock_factory.pin(PIN)
        pin.drive_low()
        _later(clock, button, 0.1)
        assert recorder.wait_for(1) == ["hold_start"]
        _later(clock, button, 0.2)
        assert recorder.wait_for(2) == ["hold_start", "hold"]
        pin.drive_high()
        _later(clock, button, 0.1)
        # Letting go after the hold completed does nothing more; a later
        # press is a press again.
        _press(pin, clock, button, 0.08)
        assert recorder.wait_for(3) == ["hold_start", "hold", "press"]


def test_nothing_happens_before_its_time(mock_factory):
    recorder, clock = Recorder(), FakeClock()
    with _button(mock_factory, recorder, clock, confirm_after=1.0, hold_seconds=5.0) as button:
        pin = mock_factory.pin(PIN)
        pin.drive_low()
        _later(clock, button, 0.99)             # just short of the confirmation
        pin.drive_high()                        # so it is a press, not a hold
        _later(clock, button, 0.1)
        assert recorder.wait_for(1) == ["press"]


def test_releasing_during_the_confirmation_cancels(mock_factory):
    recorder, clock = Recorder(), FakeClock()
    with _button(mock_factory, recorder, clock, confirm_after=0.1, hold_seconds=30.0) as button:
        pin = mock_factory.pin(PIN)
        pin.drive_low()
        _later(clock, button, 0.1)
        assert recorder.wait_for(1) == ["hold_start"]
        pin.drive_high()
        _later(clock, button, 0.1)
        assert recorder.wait_for(2) == ["hold_start", "hold_cancel"]


def test_bounce_makes_one_press(mock_factory):
    recorder, clock = Recorder(), FakeClock()
    with _button(mock_factory, recorder, clock, bounce_time=0.3, confirm_after=2.0,
                 hold_seconds=5.0) as button:
        pin = mock_factory.pin(PIN)
        for _ in range(5):                      # contact chatter: one press, one release
            pin.drive_low()
            _later(clock, button, 0.01)
            pin.drive_high()
            _later(clock, button, 0.01)
        _later(clock, button, 0.5)
        _press(pin, clock, button, 0.5)         # then one clean press
        _press(pin, clock, button, 0.5)         # and another
        # Callbacks arrive in order: a press made of the chatter would come
        # before the clean ones and make three.
        assert recorder.wait_for(2) == ["press", "press"]
        _later(clock, button, 1.0)
        _press(pin, clock, button, 0.5)
        assert recorder.wait_for(3) == ["press", "press", "press"]


def test_chatter_while_pressed_is_still_one_press(mock_factory):
    recorder, clock = Recorder(), FakeClock()
    with _button(mock_factory, recorder, clock, bounce_time=0.3, confirm_after=2.0,
                 hold_seconds=5.0) as button:
        pin = mock_factory.pin(PIN)
        pin.drive_low()                         # contact closes, bounces, then stays closed
        pin.drive_high()
        pin.drive_low()
        _later(clock, button, 0.5)
        pin.drive_high()                        # and bounces open
        pin.drive_low()
        pin.drive_high()
        _later(clock, button, 0.5)
        assert recorder.wait_for(1) == ["press"]
        _press(pin, clock, button, 0.5)
        assert recorder.wait_for(2) == ["press", "press"]


def test_a_callback_that_fails_does_not_stop_the_button(mock_factory, caplog):
    calls = []
    done = threading.Event()
    clock = FakeClock()

    def bad() -> None:
        calls.append("bad")
        raise RuntimeError("service bug")

    def hold() -> None:
        done.set()

    with ButtonControl(PIN, hold_seconds=0.2, confirm_after=0.1, bounce_time=0.01,
                       on_press=bad, on_hold=hold, pin_factory=mock_factory,
                       clock=clock) as button:
        pin = mock_factory.pin(PIN)
        _press(pin, clock, button, 0.05)
        pin.drive_low()
        _later(clock, button, 0.3)
        assert done.wait(WAIT)
    assert calls == ["bad"]
    assert "callback failed" in caplog.text


def test_pin_in_use_is_one_line_with_the_fix(mock_factory):
    recorder = Recorder()
    with _button(mock_factory, recorder, FakeClock()):
        with pytest.raises(HardwareError) as caught:
            _button(mock_factory, recorder, FakeClock())
    message = str(caught.value)
    assert message.startswith("button on GPIO17: the pin is already in use (")
    assert "\n" not in message
    assert isinstance(caught.value, OSError)


def test_a_pin_name_from_the_config_is_used_and_named_as_given(mock_factory):
    # [button] pin = "BOARD11" (ButtonConfig.pin is int | str): the same pin as GPIO17.
    led = StatusLed("BOARD11", pin_factory=mock_factory)
    try:
        with pytest.raises(HardwareError) as caught:
            StatusLed("GPIO17", pin_factory=mock_factory)
    finally:
        led.close()
    message = str(caught.value)
    assert message.startswith("LED on GPIO17: the pin is already in use (choose another pin in the "
                              "config, or stop what uses GPIO17")
    with pytest.raises(HardwareError, match=r"^button on BOARD99: not a usable pin"):
        ButtonControl("BOARD99", on_press=lambda: None, on_hold=lambda: None,
                      pin_factory=mock_factory)


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
from agent.clock import FakeClock
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
    with _button(mock_factory, recorder, FakeClock()):
        with pytest.raises(HardwareError, match="^LED on GPIO17: the pin is already in use"):
            StatusLed(PIN, pin_factory=mock_factory)
