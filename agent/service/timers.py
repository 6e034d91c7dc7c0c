"""The service's deadlines, by name, on the monotonic clock.

One :class:`Timers` holds every deadline the loop keeps (instead of a field
each), so the loop sleeps until the earliest one that can fire and a
wall-clock step (NTP after boot) moves none of them.

>>> timers = Timers()
>>> timers.set(Timer.READ, 60.0)
>>> timers.earliest([Timer.READ, Timer.TICK])
60.0
>>> timers.due(Timer.READ, 59.0), timers.due(Timer.READ, 60.0)
(False, True)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

__all__ = ["Timer", "Timers"]


class Timer(enum.Enum):
    """A named deadline. The first seven fire (the loop wakes for them); the
    others are ends of windows the loop looks at when it runs anyway."""

    READ = "read"                      # the next sensor reading
    UPLOAD = "upload"                  # the next upload (the uploader's own gate comes on top)
    REFRESH = "refresh"                # the next token refresh
    RETRY_SIGN_IN = "retry_sign_in"    # a new code by itself (sign_in_stopped)
    TICK = "tick"                      # once a second while a countdown is on screen
    DISPLAY = "display"                # redraw the status screen (ages tick)
    WATCHDOG = "watchdog"              # systemd WATCHDOG=1
    HOLD = "hold"                      # the button hold completes (the countdown's end)
    SIGN_OUT_ARMED = "sign_out_armed"  # Home Assistant "Sign out" pressed once: until then
    SIGNED_IN_SCREEN = "signed_in_screen"  # the "Signed in" screen stays until then
    STOP_GRACE = "stop_grace"          # stopping waits for jobs in flight until then


class Timers:
    """Named monotonic deadlines; an absent name is off."""

    def __init__(self) -> None:
        self._at: dict[Timer, float] = {}

    def set(self, timer: Timer, at: float | None) -> None:
        """Set *timer* to fire at *at* (monotonic s); None turns it off."""
        if at is None:
            self._at.pop(timer, None)
        else:
            self._at[timer] = at

    def get(self, timer: Timer) -> float | None:
        return self._at.get(timer)

    def clear(self, *timers: Timer) -> None:
        for timer in timers:
            self._at.pop(timer, None)

    def due(self, timer: Timer, now: float) -> bool:
        at = self._at.get(timer)
        return at is not None and now >= at

    def earliest(self, timers: Iterable[Timer]) -> float | None:
        found = [self._at[t] for t in timers if t in self._at]
        return min(found) if found else None
