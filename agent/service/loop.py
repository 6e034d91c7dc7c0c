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
from agent.service.schedule import Schedule
from agent.service.signin import SIGN_IN_RETRY_DELAY, SignInFlow
from agent.service.stopping import STOP_GRACE, Stopper
from agent.service.telemetry import TelemetryFlow
from agent.service.timers import Timer, Timers
from agent.service.workers import Jobs
from agent.signals import install_stop_handlers, restore_handlers
from agent.states import SIGNED_IN, STARTING, STOPPING, check_transition

if TYPE_CHECKING:  # pragma: no cover
    from agent.config import AgentConfig

__all__ = ["Service", "STOP_GRACE", "MAX_INFLIGHT_WAIT", "HISTORY_MAX"]

log = logging.getLogger(__name__)

#: Longest real wait while a job is in flight (jobs post an event when done).
MAX_INFLIGHT_WAIT = 1.0
#: States remembered in Service.history (for tests, the demo and debugging).
HISTORY_MAX = 200


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
        self._set_up = False
        self.jobs = Jobs(self.events.put)

        self.reporter = Reporter(self)
        self.signin = SignInFlow(self, retry_delay=sign_in_retry_delay)
        self.account = AccountFlow(self)
        self.telemetry = TelemetryFlow(self)
        self.controls = Controls(self)
        self.schedule = Schedule(self, watchdog_interval())
        self.stopper = Stopper(self)
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
        return self.stopper.finished

    @property
    def started(self) -> bool:
        return self._set_up

    @property
    def last_upload(self) -> float | None:
        """Wall-clock time (epoch s) of the last accepted upload, None before any."""
        return self.telemetry.last_upload

    @property
    def readings_taken(self) -> int:
        return self.telemetry.readings_taken

    def _status(self) -> dict[str, Any]:
        """The status dict (MQTT, status.json)."""
        return self.reporter.status()

    def is_busy(self, worker: str) -> bool:
        return self.jobs.is_busy(worker)

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
            while not self.stopper.finished:
                self.step()
        finally:
            restore_handlers(handlers)
            if not self.stopper.finished:
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
            if self.stopper.finished:
                return predicate(self)
            self.step()
        return predicate(self)

    def start(self) -> None:
        """Start the workers and parts, look at the saved sign-in, tell systemd we are up."""
        if self._set_up:
            return
        self._set_up = True
        self.token_service = self.account.start_token_service()
        self.jobs.start()
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
        if self.stopper.finished:
            return
        self.loop_iterations += 1
        event = self.events.get()
        if event is not None:
            self._handle(event)
        else:
            now = self.clock.monotonic()
            if not self.schedule.run_due(now):
                self._idle(now)
        if self.state == STOPPING and not self._shutting_down_blocked():
            self._shutdown()
        else:
            self.reporter.after_turn()

    def _idle(self, now: float) -> None:
        deadline = self.schedule.next_deadline()
        timeout = max(0.0, deadline - now) if deadline is not None else 3600.0
        wakeup = self.events.wakeup
        wakeup.clear()
        if not self.events.empty():
            return
        if self.jobs.any_busy() or self.signin.thread is not None:
            # Someone is working: wait for their event in real time. Agent
            # time (a FakeClock in tests) does not run ahead meanwhile.
            wakeup.wait(min(timeout, MAX_INFLIGHT_WAIT))
        else:
            self.clock.wait(timeout, wakeup)

    def submit_sensors(self, job: Callable[[], Any]) -> None:
        self.jobs.submit_sensors(job)

    def submit_net(self, kind: Kind, job: Callable[[], Any]) -> None:
        self.jobs.submit_net(kind, job)

    # -- events ---------------------------------------------------------------------------

    def _handle(self, event: Event) -> None:
        kind = event.kind
        self.jobs.done(kind, NETWORK_JOBS)
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
        self.stopper.begin()

    def _shutting_down_blocked(self) -> bool:
        return self.stopper.blocked()

    def close(self) -> None:
        """Release everything: a started service stops first; one never started
        only closes its parts."""
        self.stopper.close()

    def _shutdown(self) -> None:
        self.stopper.shutdown()
