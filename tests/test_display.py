"""Displays from [display] settings, the console fallback, and burn-in care."""

from __future__ import annotations

import errno
import io
import logging
import os
import pty

import pytest
from luma.core.device import dummy
from luma.lcd.device import hd44780
from PIL import Image

from agent.clock import FakeClock
from agent.ui import (
    ConsolePresenter,
    ErrorView,
    ExpiredView,
    NullPresenter,
    StatusView,
)
from hardware import display, screens
from hardware.console import HalfBlockPresenter
from hardware.display import open_presenter
from hardware.presenter import CharacterPresenter, LumaPresenter, ScreenCare
from hardware.screens import SAMPLES, render

DISPLAYOFF, DISPLAYON, SETCONTRAST = 0xAE, 0xAF, 0x81   # luma.core.const.common


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "hardware.display" and r.levelno == logging.WARNING]


def test_missing_i2c_bus_falls_back_to_the_console_with_the_fix(caplog):
    stream = io.StringIO()
    caplog.set_level(logging.INFO)
    presenter = open_presenter({"driver": "ssd1306", "interface": "i2c", "i2c_port": 99,
                                "i2c_address": "0x3C"}, stream=stream)
    assert isinstance(presenter, ConsolePresenter)
    assert _warnings(caplog) == [
        "display ssd1306 on /dev/i2c-99 not available: No such file or directory "
        "(enable I2C with: sudo raspi-config nonint do_i2c 0)"]
    presenter.show(ExpiredView())
    assert "Device code expired" in stream.getvalue()


def test_unknown_driver_falls_back_and_lists_the_known_ones(caplog):
    presenter = open_presenter({"driver": "ssd9999"}, stream=io.StringIO())
    assert isinstance(presenter, ConsolePresenter)
    (line,) = _warnings(caplog)
    assert line.startswith("display 'ssd9999' is not a known driver (use console, none, framebuffer")
    assert "ssd1306" in line and "st7789" in line and "hd44780" in line
    assert "\n" not in line


def test_missing_framebuffer_falls_back(caplog):
    presenter = open_presenter({"driver": "framebuffer", "framebuffer_device": "/dev/fb9"},
                               stream=io.StringIO())
    assert isinstance(presenter, ConsolePresenter)
    (line,) = _warnings(caplog)
    assert line.startswith("display framebuffer /dev/fb9 not available: No such file or directory")


def test_bad_luma_option_is_a_warning_not_an_exit(caplog):
    presenter = open_presenter({"driver": "ssd1306", "interface": "carrier-pigeon"},
                               stream=io.StringIO())
    assert isinstance(presenter, ConsolePresenter)
    (line,) = _warnings(caplog)
    assert "display settings not understood" in line and "carrier-pigeon" in line


@pytest.mark.parametrize("errno_, expected", [
    (errno.EACCES, "(add the user to the i2c group: sudo usermod -aG i2c $USER)"),
    (errno.EREMOTEIO, "no answer at address 0x3D (Remote I/O error) "
                      "(check the wiring and the address with: i2cdetect -y 1)"),
])
def test_luma_errors_are_explained_in_one_line(errno_, expected):
    # luma raises its own error from the OSError of the bus (as in
    # luma.core.interface.serial.i2c); the message comes from the OSError.
    from luma.core.error import DeviceNotFoundError

    try:
        try:
            raise OSError(errno_, os.strerror(errno_))
        except OSError:
            raise DeviceNotFoundError("I2C device not found")
    except DeviceNotFoundError as exc:
        error = display._explain(exc, "ssd1306 on /dev/i2c-1", "ssd1306",
                                 {"interface": "i2c", "i2c_port": 1, "i2c_address": "0x3D"})
    assert str(error).startswith("display ssd1306 on /dev/i2c-1 not available: ")
    assert str(error).endswith(expected)
    assert isinstance(error, OSError)


@pytest.mark.parametrize("error, expected", [
    ("DevicePermissionError", "(add the user to the i2c group: sudo usermod -aG i2c $USER)"),
    ("DeviceNotFoundError", "(check the wiring and the address with: i2cdetect -y 1)"),
])
def test_luma_errors_without_an_os_error_are_told_apart_by_type(error, expected):
    # No OSError under it (a platform or library that raises luma's error
    # directly): the type decides the fix, whatever the message says.
    import luma.core.error

    exc = getattr(luma.core.error, error)("it went wrong")
    line = str(display._explain(exc, "ssd1306 on /dev/i2c-1", "ssd1306",
                                {"interface": "i2c", "i2c_port": 1}))
    assert line == f"display ssd1306 on /dev/i2c-1 not available: it went wrong {expected}"


def test_a_luma_error_of_another_kind_gets_the_general_fix():
    import luma.core.error

    line = str(display._explain(luma.core.error.DeviceDisplayModeError("mode 'RGB' not supported"),
                                "ssd1306 on /dev/i2c-1", "ssd1306", {"interface": "i2c"}))
    assert line.startswith("display ssd1306 on /dev/i2c-1 not available: DeviceDisplayModeError: "
                           "mode 'RGB' not supported")
    assert "check [display] driver" in line


def test_none_and_console_drivers():
    assert isinstance(open_presenter({"driver": "none"}), NullPresenter)
    assert type(open_presenter({"driver": "console"}, stream=io.StringIO())) is ConsolePresenter


def test_console_on_a_terminal_draws_the_oled_picture(monkeypatch):
    import fcntl
    import struct
    import termios

    monkeypatch.delenv("COLUMNS", raising=False)
    leader, follower = pty.openpty()
    # Wide enough for the 128-pixel picture and its frame (narrower: text only,
    # see tests/test_terminal.py).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 140, 0, 0))
    try:
        with open(follower, "w", encoding="utf-8", closefd=False) as stream:
            presenter = open_presenter({"driver": "console"}, stream=stream)
            assert isinstance(presenter, HalfBlockPresenter)
            presenter.show(SAMPLES["sign-in"])
        output = b""
        while b"Sign in with your credentials" not in output:   # the box after the picture
            output += os.read(leader, 65536)
    finally:
        os.close(leader)
        os.close(follower)
    text = output.decode("utf-8", errors="replace")  # a read may end mid-character
    assert "█" in text and "▀" in text
    assert "FJ8ZK3ZUS" in text                      # the text lines follow the picture


def test_dummy_driver_shows_what_screens_render():
    presenter = open_presenter({"driver": "dummy", "width": 128, "height": 64},
                               clock=FakeClock())
    assert isinstance(presenter, LumaPresenter)
    for view in SAMPLES.values():
        presenter.show(view)
        assert presenter.device.image.tobytes() == render(view, (128, 64), "1").tobytes()
    presenter.close()


def test_dummy_colour_with_rotation():
    presenter = open_presenter({"driver": "dummy", "width": 240, "height": 320, "rotate": 1,
                                "mode": "RGB"}, clock=FakeClock())
    presenter.show(SAMPLES["sign-in"])
    assert presenter.device.size == (320, 240)
    assert presenter.device.image.mode == "RGB"


def test_burn_in_settings_come_from_the_table():
    presenter = open_presenter({"driver": "dummy", "dim_after": 60, "blank_after": 0},
                               clock=FakeClock())
    assert presenter._care.dim_after == 60 and presenter._care.blank_after == 0


# -- burn-in care -----------------------------------------------------------

def _status(age: float = 5.0, mqtt: bool | None = True) -> StatusView:
    return StatusView("pi", "ada@contoso.onmicrosoft.com", age, 3, mqtt, 3000.0)


@pytest.fixture
def oled(recording_serial):
    clock = FakeClock()
    device = dummy(width=128, height=64, mode="1", serial_interface=recording_serial)
    presenter = LumaPresenter(device, clock=clock,
                              care=ScreenCare(dim_after=10, blank_after=20, shift_every=0))
    return presenter, device, clock, recording_serial


def test_status_screen_dims_then_blanks_and_wakes(oled):
    presenter, device, clock, serial = oled
    care = presenter._care
    assert serial.commands == [(SETCONTRAST, care.contrast)]
    for second in range(10):
        presenter.show(_status(age=second))       # ages tick: not a change
        clock.advance(1)
    presenter.show(_status(age=10))
    assert presenter.phase == "dim"
    assert serial.commands[-1] == (SETCONTRAST, care.dim_contrast)
    assert device.image.getbbox() is not None     # dimmed, still showing
    clock.advance(10)
    presenter.show(_status(age=20))
    assert presenter.phase == "blank"
    assert serial.commands[-1] == (DISPLAYOFF,)
    assert device.image.getbbox() is None         # all black
    clock.advance(100)
    presenter.show(_status(age=120))
    assert device.image.getbbox() is None         # stays dark, no redraw
    presenter.wake()                              # the button
    assert presenter.phase == "on"
    assert serial.commands[-2:] == [(DISPLAYON,), (SETCONTRAST, care.contrast)]
    assert device.image.tobytes() == render(_status(age=120), (128, 64), "1").tobytes()


def test_a_state_change_wakes_the_screen(oled):
    presenter, device, clock, serial = oled
    presenter.show(_status())
    clock.advance(25)
    presenter.show(_status())
    assert presenter.phase == "blank"
    presenter.show(_status(mqtt=False))           # the broker went away
    assert presenter.phase == "on"
    assert (DISPLAYON,) in serial.commands
    assert device.image.getbbox() is not None
    clock.advance(25)
    presenter.show(_status(mqtt=False))
    assert presenter.phase == "blank"
    presenter.show(ErrorView("token refresh failed"))
    assert presenter.phase == "on"
    assert device.image.tobytes() == render(ErrorView("token refresh failed"), (128, 64), "1").tobytes()


def test_other_screens_never_dim(oled):
    presenter, device, clock, serial = oled
    for _ in range(4):
        presenter.show(SAMPLES["sign-in"])
        clock.advance(30)
    presenter.show(SAMPLES["sign-in"])
    assert presenter.phase == "on"
    assert serial.commands == [(SETCONTRAST, presenter._care.contrast)]


def test_blank_after_zero_only_dims(recording_serial):
    clock = FakeClock()
    device = dummy(width=128, height=32, mode="1", serial_interface=recording_serial)
    presenter = LumaPresenter(device, clock=clock, care=ScreenCare(dim_after=5, blank_after=0))
    presenter.show(_status())
    clock.advance(100000)
    presenter.show(_status())
    assert presenter.phase == "dim"
    assert (DISPLAYOFF,) not in recording_serial.commands


def test_status_picture_shifts_a_pixel_now_and_then(recording_serial):
    clock = FakeClock()
    device = dummy(width=128, height=64, mode="1", serial_interface=recording_serial)
    presenter = LumaPresenter(device, clock=clock,
                              care=ScreenCare(dim_after=0, blank_after=0, shift_every=60))
    view = _status()
    presenter.show(view)
    still = render(view, (128, 64), "1")
    assert device.image.tobytes() == still.tobytes()
    clock.advance(60)
    presenter.show(view)
    moved = Image.new("1", (128, 64), 0)
    moved.paste(still, (1, 0))
    assert device.image.tobytes() == moved.tobytes()
    left, top, right, bottom = still.getbbox()
    assert device.image.getbbox() == (left + 1, top, right + 1, bottom)


def test_colour_panel_dims_the_picture(recording_serial):
    clock = FakeClock()
    device = dummy(width=160, height=128, mode="RGB", serial_interface=recording_serial)
    care = ScreenCare(dim_after=5, blank_after=0, shift_every=0)
    presenter = LumaPresenter(device, clock=clock, care=care)
    presenter.show(_status())
    bright = max(v for band in device.image.getextrema() for v in band)
    clock.advance(5)
    presenter.show(_status())
    dimmed = max(v for band in device.image.getextrema() for v in band)
    assert bright > 200 and dimmed <= int(bright * care.dim_brightness)


def test_unchanged_frames_are_not_sent_again(recording_serial):
    device = dummy(width=128, height=64, mode="1", serial_interface=recording_serial)
    presenter = LumaPresenter(device, clock=FakeClock(), care=ScreenCare(shift_every=0))
    presenter.show(ExpiredView())
    first = device.image
    presenter.show(ExpiredView())
    assert device.image is first                  # display() was not called again


# -- character LCD ------------------------------------------------------------

def test_character_lcd_pages_through_the_sign_in(recording_serial):
    clock = FakeClock()
    device = hd44780(recording_serial, width=16, height=2, backlight=recording_serial.backlight)
    presenter = CharacterPresenter(device, cols=16, rows=2, clock=clock, page_seconds=3)
    view = SAMPLES["sign-in"]
    pages = screens.text_pages(view, 16, 2)
    assert len(pages) > 1
    seen = []
    for _ in range(len(pages)):
        presenter.show(view)
        seen.append(str(device.text))
        clock.advance(3)
    assert seen == ["\n".join(page) for page in pages]
    presenter.show(view)
    assert str(device.text) == "\n".join(pages[0])
    presenter.show(ExpiredView())                  # a new screen starts on its first page
    assert str(device.text) == "\n".join(screens.text_pages(ExpiredView(), 16, 2)[0])


def test_character_lcd_on_an_i2c_backpack_names_the_bus(caplog):
    presenter = open_presenter({"driver": "hd44780", "interface": "pcf8574", "i2c_port": 98,
                                "i2c_address": 0x27, "width": 128, "height": 64},
                               stream=io.StringIO())
    assert isinstance(presenter, ConsolePresenter)
    assert _warnings(caplog) == [
        "display hd44780 on /dev/i2c-98 not available: No such file or directory "
        "(enable I2C with: sudo raspi-config nonint do_i2c 0)"]


def test_a_panel_too_small_for_any_layout_still_shows_the_text(caplog):
    presenter = open_presenter({"driver": "dummy", "width": 64, "height": 32}, clock=FakeClock())
    presenter.show(SAMPLES["sign-in"])
    image = presenter.device.image
    assert image.getbbox() is not None
    assert any("showing plain text" in r.getMessage() for r in caplog.records)
    presenter.show(SAMPLES["sign-in"])
    assert sum("showing plain text" in r.getMessage() for r in caplog.records) == 1
