"""Presenters that draw views on a luma device, with burn-in care for OLEDs.

:class:`LumaPresenter` renders each view with :mod:`hardware.screens` and
hands the image to a luma device (an OLED, an LCD, a framebuffer or luma's
``dummy``). :class:`CharacterPresenter` does the same for character LCDs
(HD44780) through their ``text`` property.

Burn-in care (:class:`ScreenCare`): an OLED pixel that shows the same thing
for months wears out. On the steady status screen the presenter dims after
``dim_after`` seconds, blanks after ``blank_after`` seconds and moves the
picture by a pixel every ``shift_every`` seconds; a button press
(:meth:`LumaPresenter.wake`) or a change of state brings it back. Time comes
from an injected :class:`agent.clock.Clock`; no thread is needed because the
service calls :meth:`show` at least once a second.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from agent.clock import Clock, SystemClock
from agent.config.values import BLANK_AFTER, DIM_AFTER
from agent.ui import SignInView, StatusView, View
from hardware import screens

__all__ = ["ScreenCare", "LumaPresenter", "CharacterPresenter", "SHIFT_PATTERN"]

log = logging.getLogger(__name__)

# Where the picture sits in turn, in pixels (dx, dy). Layouts keep a pixel of
# margin (screens.MARGIN), so nothing leaves the panel.
SHIFT_PATTERN: tuple[tuple[int, int], ...] = ((0, 0), (1, 0), (1, 1), (0, 1),
                                              (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))


@dataclass(frozen=True)
class ScreenCare:
    """When the steady status screen dims, blanks and shifts (seconds; 0 disables)."""

    dim_after: float = DIM_AFTER
    blank_after: float = BLANK_AFTER
    shift_every: float = 180.0
    contrast: int = 0xCF            # normal contrast, 0-255 (the SSD1306's own default)
    dim_contrast: int = 0x08        # contrast when dimmed, 0-255
    dim_brightness: float = 0.35    # RGB panels (no contrast control worth the name) draw darker


def _steady_key(view: View) -> object | None:
    """What must stay the same for the screen to count as unchanged; None: never dims.

    Only the signed-in status screen is steady. Its ages and counts tick all
    the time, so they do not count as a change; the account and the MQTT
    link do (a drop is worth waking the screen for).
    """
    if isinstance(view, StatusView):
        return (view.device_id, view.account, view.mqtt_connected)
    return None


class LumaPresenter:
    """Shows views on a luma pixel device (``device.display(image)``)."""

    def __init__(self, device: Any, *, clock: Clock | None = None,
                 care: ScreenCare | None = None, name: str = "display") -> None:
        self.device = device
        self.name = name
        self._clock = clock or SystemClock()
        self._care = care or ScreenCare()
        self._lock = threading.Lock()
        self._view: View | None = None
        self._key: object | None = None
        self._since = self._clock.monotonic()
        self._phase = "on"          # "on", "dim" or "blank"
        self._last_frame: bytes | None = None
        self._warned: set[type] = set()
        mode = getattr(device, "mode", "1")
        self._mode = "1" if mode == "1" else "RGB"
        self._call("contrast", self._care.contrast)

    # -- Presenter -------------------------------------------------------

    def show(self, view: View) -> None:
        with self._lock:
            now = self._clock.monotonic()
            key = _steady_key(view)
            if key is None or key != self._key or self._view is None or \
                    type(view) is not type(self._view):
                self._since = now
                self._wake_locked()
            self._key = key
            self._view = view
            phase = self._phase_at(now, steady=key is not None)
            if phase != self._phase:
                self._enter(phase)
            if self._phase == "blank":
                return
            self._draw(view, now)

    def wake(self) -> None:
        with self._lock:
            self._since = self._clock.monotonic()
            self._wake_locked()
            if self._view is not None:
                self._draw(self._view, self._since)

    def close(self) -> None:
        with self._lock:
            try:
                self.device.cleanup()
            except Exception as exc:  # a device gone away must not stop a shutdown
                log.debug("%s: cleanup failed: %s", self.name, exc)

    # -- state -----------------------------------------------------------

    @property
    def phase(self) -> str:
        """``"on"``, ``"dim"`` or ``"blank"``."""
        return self._phase

    def _phase_at(self, now: float, *, steady: bool) -> str:
        if not steady:
            return "on"
        idle = now - self._since
        care = self._care
        if care.blank_after and idle >= care.blank_after:
            return "blank"
        if care.dim_after and idle >= care.dim_after:
            return "dim"
        return "on"

    def _enter(self, phase: str) -> None:
        log.debug("%s: %s -> %s", self.name, self._phase, phase)
        if phase == "dim":
            self._call("contrast", self._care.dim_contrast)
        elif phase == "blank":
            # Black first: a panel whose hide() does nothing still goes dark.
            from PIL import Image

            self.device.display(Image.new(self.device.mode, self.device.size, 0))
            self._last_frame = None
            self._call("hide")
        self._phase = phase

    def _wake_locked(self) -> None:
        if self._phase == "on":
            return
        if self._phase == "blank":
            self._call("show")
        self._call("contrast", self._care.contrast)
        self._phase = "on"

    def _offset(self, now: float) -> tuple[int, int]:
        if self._key is None or not self._care.shift_every:
            return (0, 0)
        step = int((now - self._since) // self._care.shift_every)
        return SHIFT_PATTERN[step % len(SHIFT_PATTERN)]

    def _draw(self, view: View, now: float) -> None:
        from PIL import Image

        width, height = self.device.size
        try:
            image = screens.render(view, (width, height), self._mode)
        except screens.LayoutError as exc:
            # A panel smaller than any we lay out (64x32): show the text anyway.
            if type(view) not in self._warned:
                self._warned.add(type(view))
                log.warning("%s: %s; showing plain text (use a panel of 84x48 or more)",
                            self.name, exc)
            image = screens.render_plain(view, (width, height), self._mode)
        dx, dy = self._offset(now)
        if dx or dy:
            moved = Image.new(image.mode, image.size, 0)
            moved.paste(image, (dx, dy))
            image = moved
        if self._phase == "dim" and image.mode == "RGB":
            factor = self._care.dim_brightness
            image = image.point(lambda v: int(v * factor))
        if image.mode != self.device.mode:
            image = image.convert(self.device.mode)
        frame = image.tobytes()
        if frame == self._last_frame:
            return  # nothing changed: no bus traffic, no redraw
        self._last_frame = frame
        self.device.display(image)

    def _call(self, method: str, *args: object) -> None:
        """Call a luma control that not every device has (contrast on an LCD)."""
        try:
            getattr(self.device, method)(*args)
        except (AttributeError, NotImplementedError, AssertionError) as exc:
            log.debug("%s: %s not supported: %s", self.name, method, exc)


class CharacterPresenter:
    """Shows views on a character LCD (luma's ``hd44780``, ``ws0010``: ``device.text``).

    A view that needs more than one page (the code and the address on a
    16x2) turns a page every ``page_seconds`` seconds as :meth:`show` is called.
    """

    def __init__(self, device: Any, *, cols: int, rows: int, clock: Clock | None = None,
                 page_seconds: float = 3.0, name: str = "display") -> None:
        self.device = device
        self.cols, self.rows = cols, rows
        self.name = name
        self._clock = clock or SystemClock()
        self._page_seconds = page_seconds
        self._lock = threading.Lock()
        self._kind: object = None
        self._since = self._clock.monotonic()
        self._text: str | None = None
        self._view: View | None = None

    def show(self, view: View) -> None:
        with self._lock:
            now = self._clock.monotonic()
            kind = (type(view), view.user_code) if isinstance(view, SignInView) else type(view)
            if kind != self._kind:
                self._kind, self._since = kind, now
            self._view = view
            pages = screens.text_pages(view, self.cols, self.rows)
            page = int((now - self._since) // self._page_seconds) % len(pages)
            text = "\n".join(pages[page])
            if text != self._text:
                self._text = text
                self.device.text = text

    def wake(self) -> None:
        pass  # an LCD has no burn-in; its backlight stays as configured

    def close(self) -> None:
        with self._lock:
            try:
                self.device.cleanup()
            except Exception as exc:
                log.debug("%s: cleanup failed: %s", self.name, exc)
