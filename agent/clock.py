"""An injectable clock, so nothing in tests sleeps through real intervals.

Deadlines run on :meth:`Clock.monotonic` (immune to NTP steps on a board
without a real-time clock); wall time (:meth:`Clock.time`) is only for
timestamps shown to people or sent to servers.
"""

from __future__ import annotations

import threading
import time as _time
from typing import Protocol


class Clock(Protocol):
    """What the agent needs from time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (UTC)."""

    def wait(self, seconds: float, event: threading.Event | None = None) -> bool:
        """Wait up to *seconds*; return True at once if *event* is set."""


class SystemClock:
    """The real clock. ``wait`` blocks on the event, never busy-waits."""

    def monotonic(self) -> float:
        return _time.monotonic()

    def time(self) -> float:
        return _time.time()

    def wait(self, seconds: float, event: threading.Event | None = None) -> bool:
        seconds = max(0.0, seconds)
        if event is None:
            _time.sleep(seconds)
            return False
        return event.wait(seconds)


class FakeClock:
    """A clock for tests: ``wait`` advances time instead of sleeping.

    >>> clock = FakeClock(); clock.wait(5); clock.monotonic()
    False
    1005.0
    """

    def __init__(self, start: float = 1000.0, wall: float = 1_800_000_000.0) -> None:
        self._lock = threading.Lock()
        self._monotonic = start
        self._wall = wall
        self.waits: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def time(self) -> float:
        with self._lock:
            return self._wall

    def advance(self, seconds: float) -> None:
        """Let *seconds* pass on both clocks."""
        with self._lock:
            self._monotonic += seconds
            self._wall += seconds

    def jump_wall(self, seconds: float) -> None:
        """Step only the wall clock (an NTP sync after boot)."""
        with self._lock:
            self._wall += seconds

    def wait(self, seconds: float, event: threading.Event | None = None) -> bool:
        if event is not None and event.is_set():
            return True
        seconds = max(0.0, seconds)
        self.waits.append(seconds)
        self.advance(seconds)
        return event.is_set() if event is not None else False
