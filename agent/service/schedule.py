"""Which timers can fire now, and running the due ones (on the loop thread).

A timer whose worker is busy is no deadline: the job's event wakes the loop
(counting it would spin on a zero timeout). While stopping only the
watchdog and the stop grace count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.service.timers import Timer
from agent.states import SIGN_IN_STOPPED, SIGNED_IN, STARTING, STOPPING

if TYPE_CHECKING:  # pragma: no cover
    from agent.service.loop import Service

__all__ = ["Schedule", "WATCHDOG_DEFAULT"]

#: Seconds between WATCHDOG=1 when systemd asks without saying how often.
WATCHDOG_DEFAULT = 30.0

#: The timers that wake the loop whatever the workers do (the window ends never do).
_ALWAYS = (Timer.RETRY_SIGN_IN, Timer.TICK, Timer.DISPLAY, Timer.WATCHDOG)


class Schedule:
    """The loop's next deadline, and the due timers' work, by name."""

    def __init__(self, service: "Service", watchdog_every: float | None) -> None:
        self._svc = service
        self._watchdog_every = watchdog_every
        if watchdog_every:
            service.timers.set(Timer.WATCHDOG, service.clock.monotonic())

    def next_deadline(self) -> float | None:
        svc = self._svc
        if svc.state == STOPPING:
            return svc.timers.earliest([Timer.WATCHDOG, Timer.STOP_GRACE])
        names = list(_ALWAYS)
        if not svc.jobs.is_busy("readings"):
            names.append(Timer.READ)
        if not svc.jobs.is_busy("network"):
            if svc.state in (SIGNED_IN, STARTING):
                names.append(Timer.REFRESH)
            if svc.telemetry.can_upload():
                names.append(Timer.UPLOAD)
        return svc.timers.earliest(names)

    def run_due(self, now: float) -> bool:
        """Run every due timer; True when something was done."""
        svc = self._svc
        timers, did = svc.timers, False
        if timers.due(Timer.WATCHDOG, now):
            svc.notifier.watchdog()
            timers.set(Timer.WATCHDOG, now + (self._watchdog_every or WATCHDOG_DEFAULT))
            did = True
        if svc.state == STOPPING:
            return did
        if timers.due(Timer.READ, now) and not svc.jobs.is_busy("readings"):
            svc.telemetry.read_due(now)
            did = True
        if svc.state in (SIGNED_IN, STARTING) and timers.due(Timer.REFRESH, now) \
                and not svc.jobs.is_busy("network"):
            svc.account.refresh_due()
            did = True
        if svc.telemetry.can_upload() and timers.due(Timer.UPLOAD, now) \
                and not svc.jobs.is_busy("network"):
            svc.telemetry.upload_due()
            did = True
        if timers.due(Timer.RETRY_SIGN_IN, now) and svc.state == SIGN_IN_STOPPED:
            timers.clear(Timer.RETRY_SIGN_IN)
            svc.signin.retry_due()
            did = True
        if timers.due(Timer.TICK, now):
            timers.set(Timer.TICK, now + 1.0)
            if not (svc.controls.tick() or svc.signin.tick()):
                timers.clear(Timer.TICK)
            did = True
        if timers.due(Timer.DISPLAY, now):
            timers.clear(Timer.DISPLAY)
            if svc.state == SIGNED_IN:
                svc.reporter.show_status()
            did = True
        return did
