"""The one GPIO button: a short press, and a long hold with a confirmation.

A short press (released before ``confirm_after`` seconds) calls ``on_press``:
the service cancels a waiting sign-in, or starts a new code after a cancel,
expiry, decline or error. Held past ``confirm_after``, ``on_hold_start`` lets
the service show "Sign out?"; released before ``hold_seconds`` it calls
``on_hold_cancel``; held for ``hold_seconds`` it calls ``on_hold`` (sign out
and start a fresh sign-in).

The button is a gpiozero ``Button`` (pull-up: wire it between the pin and
ground). Debouncing happens here, and only here: gpiozero's own
``bounce_time`` is left off, because pin libraries implement it
differently (lgpio filters in the driver, RPi.GPIO drops every edge after
the first one for the bounce time, which can leave the last level wrong,
the mock factory does nothing). A worker thread reads the timestamped edges
and treats a level as real only once it has held for ``bounce_time``
seconds, so every factory behaves the same, and a slow thread never turns a
bounce into a press. Press and hold times are ours too, so gpiozero's
``hold_time`` is not used.

Time comes from an injectable *clock* (anything with ``monotonic()``, such
as :class:`agent.clock.FakeClock`): tests advance it and call
:meth:`ButtonControl.wake` instead of sleeping.

>>> from gpiozero.pins.mock import MockFactory
>>> button = ButtonControl(17, on_press=print, on_hold=print, pin_factory=MockFactory())
>>> button.close()
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Protocol

from agent.config.values import ButtonConfig
from hardware.errors import HardwareError
from hardware.led import StatusLed, gpio_error

__all__ = ["ButtonControl", "StatusLed"]

log = logging.getLogger(__name__)


class MonotonicClock(Protocol):
    """The part of a clock the button needs."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps."""


class _SystemMonotonic:
    def monotonic(self) -> float:
        return time.monotonic()


class ButtonControl:
    """Calls back on a short press and on a long hold of the button on *pin* (BCM or a name).

    All times are in seconds. Callbacks run on the button's own thread, one
    at a time, in the order things happened; they should only post an event
    to the service (never block). Raises :class:`HardwareError` when
    gpiozero is missing or the pin cannot be used.
    """

    def __init__(self, pin: int | str, *, hold_seconds: float = ButtonConfig.hold_seconds,
                 confirm_after: float = 1.0,
                 bounce_time: float | None = 0.05, on_press: Callable[[], None],
                 on_hold_start: Callable[[], None] | None = None,
                 on_hold_cancel: Callable[[], None] | None = None,
                 on_hold: Callable[[], None], pin_factory: Any = None,
                 clock: MonotonicClock | None = None) -> None:
        if hold_seconds <= 0 or confirm_after < 0:
            raise ValueError("hold_seconds must be > 0 and confirm_after >= 0")
        self.pin = pin
        self.hold_seconds = hold_seconds
        self.confirm_after = min(confirm_after, hold_seconds)
        self.bounce_time = bounce_time or 0.0
        self._on_press = on_press
        self._on_hold_start = on_hold_start
        self._on_hold_cancel = on_hold_cancel
        self._on_hold = on_hold
        self._clock: MonotonicClock = clock or _SystemMonotonic()
        try:
            from gpiozero import Button
        except ImportError as exc:
            raise HardwareError("button: gpiozero is not installed",
                                "install the gpio extra: pip install 'entra-device-agent[gpio]'"
                                ) from exc
        try:
            # bounce_time=None: the debouncing is ours (see the module docstring).
            self._button = Button(pin, pull_up=True, bounce_time=None, pin_factory=pin_factory)
        except Exception as exc:  # gpiozero's errors, PermissionError, lgpio's
            raise gpio_error(exc, "button", pin) from exc
        self._cond = threading.Condition()
        self._edges: deque[tuple[float, bool]] = deque()     # (monotonic time, pressed)
        self._pressed = False                                # the debounced level
        self._pressed_at = 0.0
        self._stage = "idle"     # idle -> pressed -> confirming -> held
        self._closed = False
        self._button.when_pressed = lambda: self._edge(True)
        self._button.when_released = lambda: self._edge(False)
        self._thread = threading.Thread(target=self._run, name=f"button-{pin}", daemon=True)
        self._thread.start()

    @property
    def is_pressed(self) -> bool:
        """The debounced state of the button."""
        with self._cond:
            return self._pressed

    def wake(self) -> None:
        """Make the worker read the clock again now.

        Only an injected clock needs this (after it was advanced); with the
        system clock the worker wakes by itself when something is due.
        """
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the thread and release the pin (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)
        self._button.close()

    def __enter__(self) -> "ButtonControl":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- edges and timers, all on the worker thread -------------------------

    def _edge(self, pressed: bool) -> None:
        # Runs on gpiozero's callback thread: stamp the edge, nothing more.
        with self._cond:
            self._edges.append((self._clock.monotonic(), pressed))
            self._cond.notify_all()

    def _next(self, now: float) -> tuple[float | None, Callable[[], Callable[[], None] | None] | None]:
        """(when the next thing is due, what to do then); called under the lock."""
        # Drop edges that a later edge cut short: bounce.
        while len(self._edges) >= 2 and self._edges[1][0] - self._edges[0][0] < self.bounce_time:
            self._edges.popleft()
            self._edges.popleft()
        candidates: list[tuple[float, Callable[[], Callable[[], None] | None]]] = []
        if self._edges:
            # The first edge is real once it has lasted bounce_time (any edge
            # after it came at least that much later, or it would be gone).
            candidates.append((self._edges[0][0] + self.bounce_time, self._settle))
        pending_edge = self._edges[0][0] if self._edges else None
        if self._pressed and self._stage == "pressed":
            due = self._pressed_at + self.confirm_after
            # An unsettled edge before the deadline decides first.
            if pending_edge is None or pending_edge >= due:
                candidates.append((due, self._confirm))
        if self._pressed and self._stage == "confirming":
            due = self._pressed_at + self.hold_seconds
            if pending_edge is None or pending_edge >= due:
                candidates.append((due, self._held))
        if not candidates:
            return None, None
        return min(candidates, key=lambda c: c[0])

    def _settle(self) -> Callable[[], None] | None:
        t, pressed = self._edges.popleft()
        if pressed == self._pressed:
            return None
        self._pressed = pressed
        if pressed:
            self._pressed_at, self._stage = t, "pressed"
            return None
        stage, self._stage = self._stage, "idle"
        if stage == "pressed":
            return self._on_press
        if stage == "confirming":
            return self._on_hold_cancel
        return None  # released after the hold completed

    def _confirm(self) -> Callable[[], None] | None:
        self._stage = "confirming"
        return self._on_hold_start

    def _held(self) -> Callable[[], None] | None:
        self._stage = "held"
        return self._on_hold

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = self._clock.monotonic()
                    due, action = self._next(now)
                    if action is not None and due is not None and due <= now:
                        callback = action()
                        break
                    self._cond.wait(None if due is None else due - now)
            if callback is not None:
                try:
                    callback()
                except Exception:  # a bug in a callback must not kill the button
                    log.exception("button on pin %s: callback failed", self.pin)
