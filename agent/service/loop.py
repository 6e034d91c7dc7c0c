"""The agent service's loop: one thread owns the state; events and named timers drive it.

One thread (the one calling :meth:`Service.run`) owns the state. Everything
else arrives as a typed event (:mod:`agent.service.events`): button presses
(gpiozero's threads), MQTT connection changes (paho's thread), and the
results of the jobs that block on I/O, which run on two workers (``sensors``
and ``network``, :mod:`agent.service.workers`) and one sign-in poller
thread. Every deadline is a named timer (:mod:`agent.service.timers`) on
``clock.monotonic()``; the loop sleeps until the earliest one that can fire,
so an idle agent wakes only for its work.

The work itself is in flows that run on this thread: :mod:`~agent.service.signin`
(code, polling, stopped), :mod:`~agent.service.account` (the saved sign-in,
refresh, sign-out, the token service's gate), :mod:`~agent.service.telemetry`
(read, keep, upload), :mod:`~agent.service.controls` (the button, Home
Assistant's buttons) and :mod:`~agent.service.reporter` (status dict,
status.json, MQTT state, the status screen, LED, sd_notify). Every change of
state goes through :meth:`Service.enter`, which checks it against
:data:`agent.states.TRANSITIONS`.

Time only passes through the injected clock: with :class:`~agent.clock.FakeClock`
the loop jumps to its next deadline when nothing is in flight, so tests run
hours of agent time in milliseconds, through the real loop (:meth:`Service.run_until`).

>>> service = agent.assembly.build_service(config)       # the parts, then Service(config, parts, clock=...)
>>> service.run()        # until SIGTERM / SIGINT / service.stop(); returns 0
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent import ui
from agent.clock import Clock
from agent.report import show
from agent.service.account import AccountFlow
from agent.service.controls import Controls
from agent.service.events import NETWORK_JOBS, Event, Kind
from agent.service.parts import Parts
from agent.service.reporter import Reporter
from agent.service.signin import SIGN_IN_RETRY_DELAY, SignInFlow
from agent.service.telemetry import TelemetryFlow
from agent.service.timers import Timer, Timers
from agent.service.workers import Worker
from agent.signals import install_stop_handlers, restore_handlers
from agent.states import SIGN_IN_STOPPED, SIGNED_IN, STARTING, STOPPING, check_transition

if TYPE_CHECKING:  # pragma: no cover
    from agent.auth.devicecode import DeviceAuthorization
    from agent.auth.tokens import TokenSet
    from agent.config import AgentConfig

__all__ = ["Service", "STOP_GRACE", "MAX_INFLIGHT_WAIT", "HISTORY_MAX"]

log = logging.getLogger(__name__)

#: Seconds SIGTERM waits for a job in flight (an upload) before closing anyway.
STOP_GRACE = 3.0
#: Longest real wait while a job is in flight (jobs post an event when done).
MAX_INFLIGHT_WAIT = 1.0
#: States remembered in Service.history (for tests, the demo and debugging).
HISTORY_MAX = 200
#: Seconds between WATCHDOG=1 when systemd asks without saying how often.
WATCHDOG_DEFAULT = 30.0

#: The timers that wake the loop by themselves (the others end windows).
_ALWAYS = (Timer.RETRY_SIGN_IN, Timer.TICK, Timer.DISPLAY, Timer.WATCHDOG)


class Service:
    """The running agent: ``Service(config, parts, clock=...)``, then :meth:`run`
    (or drive it with :meth:`run_until`). :mod:`agent.assembly` builds the *parts*."""

    def __init__(self, config: "AgentConfig", parts: Parts, *, clock: Clock,
                 sign_in_retry_delay: float = SIGN_IN_RETRY_DELAY,
                 rng: random.Random | None = None) -> None:
        from agent.notify import watchdog_interval

        self.config = config
        self.clock = clock
        self.parts = parts
        self.rng = rng or random.Random()
        self.token_client = parts.token_client
        self.presenter = parts.presenter
        self.notifier = parts.notifier
        self.status_path = parts.status_path
        self.events = parts.events
        self.tokens = parts.tokens
        self.sensors = parts.sensors
        self.outbox = parts.outbox
        self.uploader = parts.uploader
        self.publisher = parts.publisher
        self.button = parts.button
        self.led = parts.led
        self.token_service: Any = None                   # agent.tokenservice, when enabled

        self.state = STARTING
        self.history: list[str] = [STARTING]             # every state entered, in order
        self.since = clock.time()
        self.last_error: str | None = None               # the last problem worth telling
        self.mqtt_connected: bool | None = None          # None without MQTT
        self.loop_iterations = 0
        self.timers = Timers()
        self._busy: dict[str, int] = {}                  # jobs queued or running, per worker
        self._set_up = False
        self._finished = False
        self._before_stop: tuple[str, float] = (STARTING, self.since)
        self._watchdog_every = watchdog_interval()
        if self._watchdog_every:
            self.timers.set(Timer.WATCHDOG, clock.monotonic())
        self._sensor_worker: Worker | None = None
        self._net_worker: Worker | None = None

        self.reporter = Reporter(self)
        self.signin = SignInFlow(self, retry_delay=sign_in_retry_delay)
        self.account = AccountFlow(self)
        self.telemetry = TelemetryFlow(self)
        self.controls = Controls(self)
        self._handlers: dict[Kind, Callable[[Event], None]] = {
            Kind.PRESS: self.controls.on_press,
            Kind.HOLD_START: self.controls.on_hold_start,
            Kind.HOLD_CANCEL: self.controls.on_hold_cancel,
            Kind.HOLD: self.controls.on_hold,
            Kind.HA_COMMAND: self.controls.on_ha_command,
            Kind.MQTT: self._on_mqtt,
            Kind.TOKEN_ASKED: self.account.on_token_asked,
            Kind.TOKEN_REFUSED: self.account.on_token_refused,
            Kind.TOKENS: self.account.on_tokens,
            Kind.SIGNIN: self.signin.on_signin,
            Kind.READINGS: self.telemetry.on_readings,
            Kind.UPLOAD: self.telemetry.on_upload,
            Kind.REFRESH: self.account.on_refresh,
            Kind.CODE: self.signin.on_code,
            Kind.SIGN_OUT: self.account.on_sign_out,
            Kind.REVOKE: self.account.on_revoke,
        }

    # -- from other threads ----------------------------------------------------------

    def post(self, kind: Kind | str, value: Any = None) -> None:
        """Queue an event for the loop thread (thread-safe; e.g. ``Kind.PRESS``)."""
        self.events.post(kind, value)

    def stop(self) -> None:
        """Ask the service to stop (thread-safe; what SIGTERM does)."""
        self.events.post(Kind.STOP)

    # -- what tests, the demo and benches look at ------------------------------------

    @property
    def finished(self) -> bool:
        """True once the service has stopped and released everything."""
        return self._finished

    @property
    def last_upload(self) -> float | None:
        """Wall-clock time (epoch s) of the last accepted upload, None before any."""
        return self.telemetry.last_upload

    @property
    def readings_taken(self) -> int:
        return self.telemetry.readings_taken

    @property
    def _tokens(self) -> "TokenSet | None":
        return self.tokens.get()

    @property
    def _authorization(self) -> "DeviceAuthorization | None":
        return self.signin.authorization

    @property
    def _sign_in_thread(self) -> threading.Thread | None:
        return self.signin.thread

    def _status(self) -> dict[str, Any]:
        """The status dict (MQTT, status.json)."""
        return self.reporter.status()

    def _is_busy(self, worker: str) -> bool:
        return self._busy.get(worker, 0) > 0

    # -- running ---------------------------------------------------------------------

    def run(self, stop_requested: threading.Event | None = None) -> int:
        """Run until stopped (SIGTERM, SIGINT, :meth:`stop`); return the exit code (0).

        *stop_requested*: set by whoever caught a SIGTERM before the service
        could (it is checked once our own handlers are in place).
        """
        handlers = install_stop_handlers(self.stop)
        if stop_requested is not None and stop_requested.is_set():
            self.stop()
        try:
            self.start()
            while not self._finished:
                self.step()
        finally:
            restore_handlers(handlers)
            if not self._finished:
                self._shutdown()
        return 0

    def run_until(self, predicate: Callable[["Service"], bool], max_steps: int = 10_000) -> bool:
        """Test hook: run the real loop until ``predicate(self)`` or *max_steps* steps.

        Returns whether the predicate came true. Call :meth:`stop` and
        ``run_until(lambda s: s.finished)`` to end.
        """
        if not self._set_up:
            self.start()
        for _ in range(max_steps):
            if predicate(self):
                return True
            if self._finished:
                return predicate(self)
            self.step()
        return predicate(self)

    def start(self) -> None:
        """Start the workers and parts, look at the saved sign-in, tell systemd we are up."""
        if self._set_up:
            return
        self._set_up = True
        self.token_service = self.account.start_token_service()
        self._sensor_worker = Worker("sensors", self.events.put)
        self._net_worker = Worker("network", self.events.put)
        now = self.clock.monotonic()
        self.telemetry.start(now)
        if self.publisher is not None:
            self.mqtt_connected = False
            self.publisher.start()
        show(self.presenter, ui.ProgressView("Starting"))
        self.enter(STARTING)
        self.account.start(now, self.telemetry.not_before)
        self.notifier.ready()
        log.info("agent running: device %s, profile %s", self.config.device_id,
                 self.config.profile)

    def step(self) -> None:
        """One turn of the loop: handle an event, or run due timers, or wait."""
        if self._finished:
            return
        self.loop_iterations += 1
        event = self.events.get()
        if event is not None:
            self._handle(event)
        else:
            now = self.clock.monotonic()
            if not self._run_timers(now):
                self._idle(now)
        if self.state == STOPPING and not self._shutting_down_blocked():
            self._shutdown()
        else:
            self.reporter.after_turn()

    def _idle(self, now: float) -> None:
        deadline = self._next_deadline()
        timeout = max(0.0, deadline - now) if deadline is not None else 3600.0
        wakeup = self.events.wakeup
        wakeup.clear()
        if not self.events.empty():
            return
        if self._busy or self.signin.thread is not None:
            # Someone is working: wait for their event in real time. Agent
            # time (a FakeClock in tests) does not run ahead meanwhile.
            wakeup.wait(min(timeout, MAX_INFLIGHT_WAIT))
        else:
            self.clock.wait(timeout, wakeup)

    def _next_deadline(self) -> float | None:
        # A timer whose worker is busy is not a deadline: the job's event
        # wakes the loop (counting it would spin on a zero timeout).
        names = list(_ALWAYS)
        if self.state == STOPPING:
            names = [Timer.WATCHDOG, Timer.STOP_GRACE]
        else:
            if not self._is_busy("readings"):
                names.append(Timer.READ)
            if not self._is_busy("network"):
                if self.state in (SIGNED_IN, STARTING):
                    names.append(Timer.REFRESH)
                if self.telemetry.can_upload():
                    names.append(Timer.UPLOAD)
        return self.timers.earliest(names)

    def _run_timers(self, now: float) -> bool:
        """Run every due timer; True when something was done."""
        timers, did = self.timers, False
        if timers.due(Timer.WATCHDOG, now):
            self.notifier.watchdog()
            timers.set(Timer.WATCHDOG, now + (self._watchdog_every or WATCHDOG_DEFAULT))
            did = True
        if self.state == STOPPING:
            return did
        if timers.due(Timer.READ, now) and not self._is_busy("readings"):
            self.telemetry.read_due(now)
            did = True
        if self.state in (SIGNED_IN, STARTING) and timers.due(Timer.REFRESH, now) \
                and not self._is_busy("network"):
            self.account.refresh_due()
            did = True
        if self.telemetry.can_upload() and timers.due(Timer.UPLOAD, now) \
                and not self._is_busy("network"):
            self.telemetry.upload_due()
            did = True
        if timers.due(Timer.RETRY_SIGN_IN, now) and self.state == SIGN_IN_STOPPED:
            timers.clear(Timer.RETRY_SIGN_IN)
            self.signin.retry_due()
            did = True
        if timers.due(Timer.TICK, now):
            timers.set(Timer.TICK, now + 1.0)
            if not (self.controls.tick() or self.signin.tick()):
                timers.clear(Timer.TICK)
            did = True
        if timers.due(Timer.DISPLAY, now):
            timers.clear(Timer.DISPLAY)
            if self.state == SIGNED_IN:
                self.reporter.show_status()
            did = True
        return did

    # -- jobs ---------------------------------------------------------------------------

    def _mark_busy(self, worker: str, delta: int) -> None:
        count = self._busy.get(worker, 0) + delta
        if count > 0:
            self._busy[worker] = count
        else:
            self._busy.pop(worker, None)

    def submit_sensors(self, job: Callable[[], Any]) -> None:
        """Run *job* on the sensors worker; its result comes back as a READINGS event."""
        self._mark_busy("readings", +1)
        assert self._sensor_worker is not None
        self._sensor_worker.submit(Kind.READINGS, job)

    def submit_net(self, kind: Kind, job: Callable[[], Any]) -> None:
        """Run *job* on the network worker (in order); its result comes back as *kind*."""
        self._mark_busy("network", +1)
        assert self._net_worker is not None
        self._net_worker.submit(kind, job)

    # -- events ---------------------------------------------------------------------------

    def _handle(self, event: Event) -> None:
        kind = event.kind
        if kind is Kind.READINGS:
            self._mark_busy("readings", -1)
        elif kind in NETWORK_JOBS:
            self._mark_busy("network", -1)
        if kind is Kind.STOP:
            self._begin_stop()
            return
        if self.state == STOPPING and kind not in (Kind.READINGS, Kind.UPLOAD):
            return
        self._handlers[kind](event)

    def _on_mqtt(self, event: Event) -> None:
        self.mqtt_connected = bool(event.value)
        self.reporter.dirty = True
        if self.state == SIGNED_IN and self.timers.get(Timer.SIGNED_IN_SCREEN) is None:
            self.reporter.show_status()

    # -- state changes ---------------------------------------------------------------------

    def enter(self, state: str, view: ui.View | None = None) -> None:
        """Enter *state* (checked against :data:`agent.states.TRANSITIONS`), show
        *view*, and tell: LED, systemd, MQTT, status.json."""
        if state != self.state:
            check_transition(self.state, state)
            log.info("state: %s -> %s", self.state, state)
            self.state = state
            self.history.append(state)
            if len(self.history) > HISTORY_MAX:
                del self.history[: len(self.history) - HISTORY_MAX]
            self.since = self.clock.time()
        elif self.history[-1] != state:
            self.history.append(state)
        if view is not None:
            show(self.presenter, view)
        self.reporter.entered()

    # -- stopping ---------------------------------------------------------------------------

    def _begin_stop(self) -> None:
        if self.state == STOPPING:
            return
        log.info("stopping")
        # What MQTT keeps (retained) after the stop: the last real state.
        self._before_stop = (self.state, self.since)
        self.notifier.stopping()
        self.signin.cancel()
        self.timers.clear(Timer.TICK, Timer.DISPLAY, Timer.REFRESH, Timer.RETRY_SIGN_IN, Timer.READ)
        self.timers.set(Timer.STOP_GRACE, self.clock.monotonic() + STOP_GRACE)
        self.enter(STOPPING, view=ui.ProgressView("Stopping"))

    def _shutting_down_blocked(self) -> bool:
        # Give a reading or an upload in flight a moment to land in the outbox.
        return bool(self._busy) and not self.timers.due(Timer.STOP_GRACE, self.clock.monotonic())

    def close(self) -> None:
        """Release everything: a started service stops first; one never started
        only closes its parts."""
        if self._set_up:
            if not self._finished:
                self._shutdown()
            return
        self._finished = True
        self._close_parts()

    def _shutdown(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self.state != STOPPING:
            self._begin_stop()
        if self.token_service is not None:
            self.token_service.stop()
        for worker in (self._sensor_worker, self._net_worker):
            if worker is not None and not worker.stop(STOP_GRACE):
                log.warning("%s thread still busy at shutdown; leaving it", worker.name)
        if self.uploader is not None and hasattr(self.uploader, "close"):
            self.uploader.close()
        try:
            if self.outbox is not None:
                self.outbox.close()            # spill: nothing read is lost
        except Exception:  # noqa: BLE001 - keep closing the rest
            log.exception("closing the outbox failed")
        self.reporter.final_publish(self._before_stop)
        self._close_devices()
        self.reporter.final_write()
        self.notifier.close()
        log.info("stopped")

    def _close_parts(self) -> None:
        for part in (self.uploader, self.outbox, self.publisher):
            try:
                if part is not None and hasattr(part, "close"):
                    part.close()
            except Exception:  # noqa: BLE001 - keep closing the rest
                log.exception("closing %s failed", type(part).__name__)
        self._close_devices()

    def _close_devices(self) -> None:
        for part in (self.button, self.led):
            if part is not None:
                try:
                    if part is self.led:
                        part.set_mode("off")
                    part.close()
                except Exception:  # noqa: BLE001
                    log.exception("closing %s failed", type(part).__name__)
        try:
            self.presenter.close()
        except Exception:  # noqa: BLE001
            log.exception("closing the display failed")
