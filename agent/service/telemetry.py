"""The telemetry flow, on the loop thread: the read timer, the outbox, the upload timer.

Every ``telemetry.interval`` the sensors worker reads every sensor and puts
the readings in the outbox (in strict durability that is an fsync: off the
loop thread), then the loop sends what the outbox holds on the network
worker while signed in. The uploader's own answers carry their wait
(Retry-After, its backoff); an upload that raised waits by the shared policy.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import TYPE_CHECKING, Any

from agent import ui
from agent.auth.errors import SignInRequired
from agent.backoff import Retry
from agent.errors import AgentError
from agent.report import outbox_depth, show
from agent.service.events import Event, Kind
from agent.service.signin import screen_line
from agent.service.timers import Timer
from agent.states import SIGNED_IN

if TYPE_CHECKING:  # pragma: no cover
    from agent.service.loop import Service

__all__ = ["TelemetryFlow", "UPLOAD_RETRY_MIN", "UPLOAD_RETRY_MAX"]

log = logging.getLogger(__name__)

#: Upload backoff bounds when the upload itself raised (the uploader's own
#: answers carry their wait): agent.telemetry.uploader.upload_policy.
UPLOAD_RETRY_MIN = 1.0
UPLOAD_RETRY_MAX = 300.0


class TelemetryFlow:
    """Readings into the outbox, and the outbox to the endpoint."""

    def __init__(self, service: "Service") -> None:
        from agent.telemetry.uploader import upload_policy

        self._svc = service
        self._upload_retry = Retry(upload_policy(service.config.telemetry.interval), rng=service.rng)
        self.not_before = float("-inf")        # start-up jitter for uploads and the refresh
        self.upload_wanted = True
        self.upload_failures = 0
        self.last_upload: float | None = None        # wall epoch s, for people
        self.last_upload_mono: float | None = None
        self.storage_problem: str | None = None      # the outbox's "storage full: ...", told once
        self.sensor_failures: list[str] = []
        self.readings_taken = 0

    def start(self, now: float) -> None:
        """The first reading (and the start-up floor of uploads and the refresh)."""
        svc = self._svc
        jitter = 0.0
        if svc.config.telemetry.jitter:
            from agent.telemetry.uploader import start_jitter
            jitter = start_jitter(svc.config.device_id, svc.config.telemetry.interval)
        svc.timers.set(Timer.READ, now + jitter)
        # A fleet that boots together (a site-wide power cut) spreads its
        # first upload of a backlog and its start-up refresh the same way.
        self.not_before = now + jitter
        svc.timers.set(Timer.UPLOAD, max(svc.timers.get(Timer.UPLOAD) or now, self.not_before))

    def signed_in(self) -> None:
        self.upload_wanted = True
        self._svc.timers.set(Timer.UPLOAD, max(self._svc.clock.monotonic(), self.not_before))

    def can_upload(self) -> bool:
        svc = self._svc
        return (svc.state == SIGNED_IN and svc.uploader is not None and svc.tokens.get() is not None
                and self.upload_wanted)

    # -- reading -------------------------------------------------------------------------

    def read_due(self, now: float) -> None:
        svc = self._svc
        interval = svc.config.telemetry.interval
        at = (svc.timers.get(Timer.READ) or now) + interval
        if at <= now:                           # fell behind (suspend, slow sensor): no burst
            at = now + interval
        svc.timers.set(Timer.READ, at)
        from agent.telemetry.sensors import read_all
        sensors, clock, outbox = svc.sensors, svc.clock, svc.outbox

        def read_and_keep() -> tuple[Any, Any, BaseException | None]:
            readings, failures = read_all(sensors, clock)
            kept: BaseException | None = None
            if readings:
                try:
                    outbox.add(readings)
                except (AgentError, OSError, sqlite3.Error) as exc:
                    kept = exc
            return readings, failures, kept

        svc.submit_sensors(read_and_keep)

    def on_readings(self, event: Event) -> None:
        svc = self._svc
        if event.error is not None:
            log.error("reading sensors failed: %s", event.error)
            return
        readings, failures, not_kept = event.value
        if not_kept is not None:
            # Disk full, file removed...: say so, keep the agent alive.
            log.error("cannot keep %d readings: %s", len(readings), not_kept)
            error = f"outbox: {not_kept}"
            if error != svc.last_error:
                svc.last_error = error
                svc.reporter.changed()
            return
        if readings:
            self.readings_taken += len(readings)
            self.upload_wanted = True
            self.check_storage()
            if svc.publisher is not None:
                svc.publisher.publish_readings({r.sensor: r.value for r in readings},
                                               {r.sensor: r.unit for r in readings})
        # read_all reports failures as (sensor name, reason). Log a sensor when
        # it starts failing and when it recovers, not at every reading.
        reasons: dict[str, str] = dict(f if isinstance(f, tuple) else (str(f), "") for f in failures or ())
        names = sorted(reasons)
        if names != self.sensor_failures:
            for name in names:
                if name not in self.sensor_failures:
                    log.warning("sensor failing (skipped until it recovers): %s", reasons[name] or name)
            for name in self.sensor_failures:
                if name not in reasons:
                    log.info("sensor %s recovered", name)
            self.sensor_failures = names
            svc.reporter.dirty = True

    def check_storage(self) -> None:
        """Tell once (state, MQTT, status.json, screen) when the outbox's disk is
        full or read-only, and again when it takes writes again."""
        svc = self._svc
        problem = getattr(svc.outbox, "storage_problem", None)
        if not isinstance(problem, (str, type(None))) or problem == self.storage_problem:
            return
        before, self.storage_problem = self.storage_problem, problem
        if problem is not None:
            svc.last_error = problem
            show(svc.presenter, ui.ErrorView(screen_line(problem)))
            from agent.service.reporter import STATUS_REFRESH
            svc.timers.set(Timer.DISPLAY, svc.clock.monotonic() + STATUS_REFRESH)  # then the status
        elif svc.last_error == before:
            svc.last_error = None
        svc.reporter.changed()

    # -- uploading -----------------------------------------------------------------------

    def upload_due(self) -> None:
        svc = self._svc
        uploader, outbox, batch = svc.uploader, svc.outbox, svc.config.telemetry.batch_max
        assert uploader is not None
        svc.submit_net(Kind.UPLOAD, lambda: uploader.upload(outbox, batch))

    def on_upload(self, event: Event) -> None:
        from agent.service.reporter import STATUS_REFRESH

        svc = self._svc
        now = svc.clock.monotonic()
        if event.error is not None:
            # The token callables raise the sign-in errors (after a 401).
            if isinstance(event.error, SignInRequired):
                svc.last_error = str(event.error)
                if svc.state == SIGNED_IN:      # not once signed out, asking or stopping
                    svc.signin.require()
                return
            self._failed(str(event.error), None, permanent=False)
            return
        result = event.value
        self.check_storage()
        if result.accepted:
            self.last_upload = svc.clock.time()
            self.last_upload_mono = now
            self.upload_failures = 0
            self._upload_retry.reset()
            if svc.last_error and not result.error and svc.last_error != self.storage_problem:
                svc.last_error = self.storage_problem    # a full disk is still worth telling
                svc.reporter.dirty = True
            if now - svc.reporter.published_at >= STATUS_REFRESH:
                svc.reporter.publish()          # counters over MQTT, at most every STATUS_REFRESH s
            if not result.error and outbox_depth(svc.outbox) == 0:
                # All sent: no second upload just to hear "nothing to send"
                # (the next reading asks again). An idle minute wakes the
                # loop three times: the read, its readings, the upload.
                self.upload_wanted = False
        if result.error:
            self._failed(result.error, result.retry_after, permanent=result.permanent)
            return
        if not result.accepted and (result.attempted or result.retry_after is None):
            self.upload_wanted = False          # nothing (more) to send
        # The uploader's own gate (Retry-After, backoff) is in retry_after.
        svc.timers.set(Timer.UPLOAD, now + (result.retry_after or 0.0))
        if svc.state == SIGNED_IN and svc.timers.get(Timer.SIGNED_IN_SCREEN) is None \
                and (result.accepted or not result.attempted):
            svc.reporter.show_status()

    def _failed(self, error: str, retry_after: float | None, *, permanent: bool) -> None:
        svc = self._svc
        now = svc.clock.monotonic()
        self.upload_failures += 1
        if retry_after is None and not permanent:
            # The shared policy (full jitter): spreads a fleet's retries.
            retry_after = self._upload_retry.next_delay()
        svc.timers.set(Timer.UPLOAD, now + float(retry_after or 0.0))
        changed = error != svc.last_error
        svc.last_error = error
        if changed:
            svc.reporter.changed()
        if svc.state == SIGNED_IN:
            show(svc.presenter, ui.OfflineView(
                reason=error[:60], outbox_depth=outbox_depth(svc.outbox),
                retry_in=float(retry_after) if retry_after else None))
