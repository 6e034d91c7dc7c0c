"""The reporter: what the service shows and tells, on the loop thread.

The status dict (MQTT's retained state and ``status.json``), the steady
status screen, the LED, and systemd's STATUS line, all built by
:mod:`agent.report` from the service's facts. ``status.json`` is written on a
state change and when something worth telling changed (:attr:`dirty`), never
for counters alone more than every :data:`STATUS_REFRESH` seconds.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from agent import ui
from agent.errors import AgentError
from agent.report import iso, outbox_depth, show, status_dict, status_line, status_view
from agent.service.timers import Timer
from agent.statefile import write_status
from agent.states import (
    AWAITING_USER,
    SIGN_IN_REQUIRED,
    SIGN_IN_STOPPED,
    SIGNED_IN,
    STARTING,
    STOPPING,
)

if TYPE_CHECKING:  # pragma: no cover
    from agent.service.loop import Service

__all__ = ["Reporter", "STATUS_REFRESH", "LED_MODES"]

log = logging.getLogger(__name__)

#: Seconds between redraws of the steady status screen (ages tick), and the
#: longest a counter change (outbox depth, last upload) waits to be told.
STATUS_REFRESH = 30.0

#: LED mode per state (hardware.button.StatusLed).
LED_MODES = {
    STARTING: "off", SIGNED_IN: "signed_in", SIGN_IN_REQUIRED: "waiting",
    AWAITING_USER: "waiting", SIGN_IN_STOPPED: "error", STOPPING: "off",
}


class Reporter:
    """Status dict, status.json, MQTT state, the status screen, LED and sd_notify."""

    def __init__(self, service: "Service") -> None:
        self._svc = service
        self.dirty = False                       # status.json is behind
        self.published_at = service.clock.monotonic()
        self._counters_at = float("-inf")
        self._counters: tuple[Any, ...] | None = None
        self._published_counters: tuple[Any, ...] | None = None

    def entered(self) -> None:
        """After a state (re)entry: LED, systemd's STATUS, MQTT and status.json."""
        svc = self._svc
        if svc.led is not None:
            try:
                svc.led.set_mode(LED_MODES.get(svc.state, "off"))
            except Exception:  # noqa: BLE001 - an LED must never stop the agent
                log.exception("LED failed")
        svc.notifier.status(status_line(
            state=svc.state, tokens=svc.tokens.get(), authorization=svc.signin.authorization,
            device_id=svc.config.device_id, button=svc.button is not None))
        self.publish()
        self.write()

    def status(self) -> dict[str, Any]:
        """The state as people and other programs see it (MQTT, status.json)."""
        svc = self._svc
        return status_dict(state=svc.state, since=svc.since, config=svc.config,
                           tokens=svc.tokens.get(), authorization=svc.signin.authorization,
                           outbox=svc.outbox, last_upload=svc.telemetry.last_upload,
                           last_error=svc.last_error, mqtt_connected=svc.mqtt_connected,
                           sensor_failures=svc.telemetry.sensor_failures, clock=svc.clock,
                           storage=svc.telemetry.storage_problem,
                           sign_out_confirm_until=svc.controls.sign_out_confirm_until(),
                           program_asked=svc.account.program_asked)

    def publish(self) -> None:
        svc = self._svc
        self.published_at = svc.clock.monotonic()
        if svc.publisher is not None:
            self._published_counters = self._counters_now()
            svc.publisher.publish_state(self.status())

    def _counters_now(self) -> tuple[Any, ...]:
        return (outbox_depth(self._svc.outbox), self._svc.telemetry.last_upload)

    def changed(self) -> None:
        """Something worth telling changed: MQTT now, status.json after this turn."""
        self.publish()
        self.dirty = True

    def write(self) -> None:
        """Write status.json (the user code stays off it)."""
        svc = self._svc
        self.dirty = False
        status = self.status()
        status.pop("user_code", None)
        status["pid"] = os.getpid()
        status["updated"] = iso(svc.clock.time())
        try:
            write_status(svc.status_path, status)
        except AgentError as exc:
            log.warning("%s", exc)

    def after_turn(self) -> None:
        """At the end of each loop turn: status.json when dirty, else the counters."""
        if self.dirty:
            self.write()
            return
        svc = self._svc
        now = svc.clock.monotonic()
        if now - self._counters_at < STATUS_REFRESH or svc.state == STOPPING:
            return
        self._counters_at = now
        counters = self._counters_now()
        if counters != self._counters:
            self._counters = counters
            if counters != self._published_counters:   # MQTT has them already otherwise
                self.publish()
            self.write()

    def show_status(self) -> None:
        """The steady status screen (and its redraw timer when there is a screen)."""
        svc = self._svc
        now = svc.clock.monotonic()
        svc.timers.clear(Timer.SIGNED_IN_SCREEN)
        if not isinstance(svc.presenter, ui.NullPresenter):
            # Ages on the screen tick; with no screen, no reason to wake up.
            svc.timers.set(Timer.DISPLAY, now + STATUS_REFRESH)
        last = svc.telemetry.last_upload_mono
        show(svc.presenter, status_view(
            device_id=svc.config.device_id,
            tokens=svc.tokens.get(),
            last_upload_age=(now - last) if last is not None else None,
            outbox_depth=outbox_depth(svc.outbox),
            mqtt_connected=svc.mqtt_connected,
            clock=svc.clock,
        ))

    def final_publish(self, before_stop: tuple[str, float]) -> None:
        """At shutdown: the retained state ends as the last thing the agent knew
        (with the outbox as close() left it), not "stopping"; availability says offline."""
        svc = self._svc
        if svc.publisher is not None:
            final = self.status()
            final["state"], since = before_stop
            final["since"] = iso(since)
            svc.publisher.publish_state(final)
            svc.publisher.close()

    def final_write(self) -> None:
        """At shutdown, last: status.json says stopped."""
        svc = self._svc
        status = self.status()
        status["state"] = "stopped"
        status["pid"] = None
        try:
            write_status(svc.status_path, status)
        except AgentError as exc:
            log.warning("%s", exc)
