"""Stopping the service: stop asking, let jobs in flight land, close every part in order.

SIGTERM (or :meth:`Service.stop`) enters ``stopping``; the loop then gives a
reading or an upload in flight up to :data:`STOP_GRACE` seconds to land in
the outbox, closes the workers, the uploader, the outbox (spill: nothing read
is lost), MQTT (the retained state stays the last real one; availability
says offline), the button, LED and screen, and writes ``status.json`` as
stopped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agent import ui
from agent.service.timers import Timer
from agent.states import STARTING, STOPPING

if TYPE_CHECKING:  # pragma: no cover
    from agent.service.loop import Service

__all__ = ["Stopper", "STOP_GRACE"]

log = logging.getLogger(__name__)

#: Seconds SIGTERM waits for a job in flight (an upload) before closing anyway.
STOP_GRACE = 3.0


class Stopper:
    """From any state to stopped, once."""

    def __init__(self, service: "Service") -> None:
        self._svc = service
        self.finished = False
        self._before_stop: tuple[str, float] = (STARTING, service.since)

    def begin(self) -> None:
        svc = self._svc
        if svc.state == STOPPING:
            return
        log.info("stopping")
        # What MQTT keeps (retained) after the stop: the last real state.
        self._before_stop = (svc.state, svc.since)
        svc.notifier.stopping()
        svc.signin.cancel()
        svc.timers.clear(Timer.TICK, Timer.DISPLAY, Timer.REFRESH, Timer.RETRY_SIGN_IN, Timer.READ)
        svc.timers.set(Timer.STOP_GRACE, svc.clock.monotonic() + STOP_GRACE)
        svc.enter(STOPPING, view=ui.ProgressView("Stopping"))

    def blocked(self) -> bool:
        """Give a reading or an upload in flight a moment to land in the outbox."""
        svc = self._svc
        return svc.jobs.any_busy() and not svc.timers.due(Timer.STOP_GRACE, svc.clock.monotonic())

    def close(self) -> None:
        """A started service stops; one never started only closes its parts."""
        if self._svc.started:
            self.shutdown()
            return
        if self.finished:
            return
        self.finished = True
        svc = self._svc
        for part in (svc.uploader, svc.outbox, svc.publisher):
            try:
                if part is not None and hasattr(part, "close"):
                    part.close()
            except Exception:  # noqa: BLE001 - keep closing the rest
                log.exception("closing %s failed", type(part).__name__)
        self._close_devices()

    def shutdown(self) -> None:
        if self.finished:
            return
        self.finished = True
        svc = self._svc
        if svc.state != STOPPING:
            self.begin()
        if svc.token_service is not None:
            svc.token_service.stop()
        for worker in svc.jobs.workers():
            if not worker.stop(STOP_GRACE):
                log.warning("%s thread still busy at shutdown; leaving it", worker.name)
        if svc.uploader is not None and hasattr(svc.uploader, "close"):
            svc.uploader.close()
        try:
            if svc.outbox is not None:
                svc.outbox.close()            # spill: nothing read is lost
        except Exception:  # noqa: BLE001 - keep closing the rest
            log.exception("closing the outbox failed")
        svc.reporter.final_publish(self._before_stop)
        self._close_devices()
        svc.reporter.final_write()
        svc.notifier.close()
        log.info("stopped")

    def _close_devices(self) -> None:
        svc = self._svc
        for part in (svc.button, svc.led):
            if part is not None:
                try:
                    if part is svc.led:
                        part.set_mode("off")
                    part.close()
                except Exception:  # noqa: BLE001
                    log.exception("closing %s failed", type(part).__name__)
        try:
            svc.presenter.close()
        except Exception:  # noqa: BLE001
            log.exception("closing the display failed")
