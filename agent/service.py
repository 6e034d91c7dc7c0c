"""The agent service: one state machine that ties sign-in, telemetry and status together.

States (DESIGN.md)::

    starting -> signed_in -> (telemetry loop) --refresh fails for good--> sign_in_required
    starting -> sign_in_required -> awaiting_user --approved--> signed_in
                                     awaiting_user --expired / declined / cancelled--> sign_in_stopped
    sign_in_stopped --button press or retry timer--> awaiting_user
    any --SIGTERM--> stopping (flush, publish offline, exit 0)

One thread (the one calling :meth:`Service.run`) owns the state. Everything
else arrives as an event on a :class:`queue.Queue`: button presses (gpiozero
threads), MQTT connection changes (paho's thread), and the results of the
jobs that block on I/O, which run on two worker threads (``sensors`` and
``network``) and one sign-in thread (RFC 8628 polling, cancellable). Every
blocking call has a timeout; every deadline is on ``clock.monotonic()``, so a
wall-clock step (NTP after boot on a board without an RTC) moves no timer.

Time only passes through the injected clock: with :class:`~agent.clock.FakeClock`
the loop jumps to its next deadline when nothing is in flight, so tests run
hours of agent time in milliseconds, through the real loop
(:meth:`Service.run_until`).

>>> service = Service(config, clock=SystemClock(), token_client=client, presenter=presenter)
>>> service.run()        # until SIGTERM / SIGINT / service.stop(); returns 0
"""

from __future__ import annotations

import logging
import os
import queue
import random
import signal
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__, paths, ui
from agent.auth.errors import (
    AuthorizationDeclined, CodeExpired, ProviderUnavailable, SignInRequired,
)
from agent.clock import Clock
from agent.errors import AgentError, CancelledError
from agent.notify import Notifier, watchdog_interval
from agent.statefile import write_status

if TYPE_CHECKING:  # pragma: no cover
    from agent.auth.devicecode import DeviceAuthorization
    from agent.auth.tokens import TokenClient, TokenSet
    from agent.config import AgentConfig
    from agent.status import StatusPublisher

__all__ = [
    "Service", "build_service", "open_face", "STATES", "STARTING", "SIGNED_IN", "SIGN_IN_REQUIRED", "AWAITING_USER",
    "SIGN_IN_STOPPED", "STOPPING", "SIGN_IN_RETRY_DELAY", "REFRESH_RETRY_MIN",
    "REFRESH_RETRY_MAX", "UPLOAD_RETRY_MIN", "UPLOAD_RETRY_MAX", "STOP_GRACE",
    "STATUS_REFRESH", "LED_MODES",
]

log = logging.getLogger(__name__)

STARTING = "starting"
SIGNED_IN = "signed_in"
SIGN_IN_REQUIRED = "sign_in_required"
AWAITING_USER = "awaiting_user"
SIGN_IN_STOPPED = "sign_in_stopped"
STOPPING = "stopping"
STATES = (STARTING, SIGNED_IN, SIGN_IN_REQUIRED, AWAITING_USER, SIGN_IN_STOPPED, STOPPING)

#: Seconds in sign_in_stopped before a new code is requested by itself
#: (a person away from the device gets a fresh code when they come back).
SIGN_IN_RETRY_DELAY = 15 * 60.0
#: Seconds before retrying a refresh (or a code request) that failed for a
#: transient reason; doubles up to REFRESH_RETRY_MAX.
REFRESH_RETRY_MIN = 15.0
REFRESH_RETRY_MAX = 300.0
#: Upload backoff when the uploader gives no Retry-After (full jitter), seconds.
UPLOAD_RETRY_MIN = 5.0
UPLOAD_RETRY_MAX = 600.0
#: Never refresh more often than this, in seconds, even for very short tokens.
MIN_REFRESH_SPACING = 5.0
#: Seconds SIGTERM waits for a job in flight (an upload) before closing anyway.
STOP_GRACE = 3.0
#: Seconds between redraws of the steady status screen (ages tick).
STATUS_REFRESH = 30.0
#: Longest real wait while a job is in flight (jobs post an event when done).
MAX_INFLIGHT_WAIT = 1.0
#: States remembered in Service.history (for tests, the demo and debugging).
HISTORY_MAX = 200
#: Seconds the "Signed in" screen stays before the status screen.
SIGNED_IN_SCREEN = 3.0

#: LED mode per state (hardware.button.StatusLed).
LED_MODES = {
    STARTING: "off", SIGNED_IN: "signed_in", SIGN_IN_REQUIRED: "waiting",
    AWAITING_USER: "waiting", SIGN_IN_STOPPED: "error", STOPPING: "off",
}


@dataclass
class _Event:
    """Something that happened off the main thread."""

    kind: str                       # "press", "hold", "readings", "upload", ...
    value: Any = None
    error: BaseException | None = None
    generation: int = 0


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


class _Worker:
    """One thread that runs jobs in order and posts each result as an event."""

    def __init__(self, name: str, post: Callable[[_Event], None]) -> None:
        self.name = name
        self._post = post
        self._jobs: queue.Queue[tuple[str, Callable[[], Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._main, name=f"agent-{name}", daemon=True)
        self._thread.start()

    def submit(self, kind: str, job: Callable[[], Any]) -> None:
        self._jobs.put((kind, job))

    def _main(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            kind, job = item
            try:
                self._post(_Event(kind, value=job()))
            except BaseException as exc:  # noqa: BLE001 - reported to the owner, never lost
                if not isinstance(exc, AgentError):
                    log.exception("%s job %s failed unexpectedly", self.name, kind)
                self._post(_Event(kind, error=exc))

    def stop(self, timeout: float) -> bool:
        """Ask the thread to end after its current job; True when it did in time."""
        self._jobs.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()


class Service:
    """The running agent. Build it, then :meth:`run` it (or drive it with :meth:`run_until`).

    Parts are built from *config* unless given (tests inject them):
    ``sensors`` (a list for ``read_all``), ``outbox``, ``uploader``,
    ``publisher`` (a :class:`~agent.status.StatusPublisher`; ``False`` for
    none), ``button``/``led`` pin factory through *pin_factory*, and the
    systemd *notifier*.
    """

    def __init__(
        self,
        config: "AgentConfig",
        *,
        clock: Clock,
        token_client: "TokenClient",
        presenter: ui.Presenter,
        session: Any = None,
        sensors: list[Any] | None = None,
        outbox: Any = None,
        uploader: Any = None,
        publisher: "StatusPublisher | None | bool" = None,
        pin_factory: Any = None,
        notifier: Notifier | None = None,
        status_path: Path | None = None,
        sign_in_retry_delay: float = SIGN_IN_RETRY_DELAY,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.token_client = token_client
        self.presenter = presenter
        self.session = session
        self.notifier = notifier if notifier is not None else Notifier.from_environment()
        self.status_path = status_path if status_path is not None else paths.status_file()
        self.sign_in_retry_delay = sign_in_retry_delay
        self._rng = rng or random.Random()

        self._events: queue.Queue[_Event] = queue.Queue()
        self._wakeup = threading.Event()
        self._busy: dict[str, int] = {}                  # jobs queued or running, per worker

        self.state = STARTING
        self.history: list[str] = [STARTING]      # every state entered, in order
        self._since = clock.time()
        self._tokens: "TokenSet | None" = None
        self._authorization: "DeviceAuthorization | None" = None
        self._cancel_sign_in: threading.Event | None = None
        self._sign_in_thread: threading.Thread | None = None
        self._generation = 0
        self._last_error: str | None = None
        self._last_upload: float | None = None          # wall epoch s, for people
        self._last_upload_mono: float | None = None
        self._upload_wanted = True
        self._upload_failures = 0
        self._refresh_failures = 0
        self._code_failures = 0
        self._mqtt_connected: bool | None = None
        self._sensor_failures: list[str] = []
        self._hold_until: float | None = None
        self._signed_in_screen_until: float | None = None
        self._published_at = clock.monotonic()
        self._status_dirty = False
        self._set_up = False
        self._finished = False
        self.readings_taken = 0                          # for tests and benches
        self.loop_iterations = 0

        # Timers: monotonic deadlines, None = off.
        now = clock.monotonic()
        self._next_read: float | None = None
        self._next_upload: float = now
        self._refresh_at: float | None = None
        self._retry_sign_in_at: float | None = None
        self._tick_at: float | None = None
        self._display_at: float | None = None
        self._watchdog_every = watchdog_interval()
        self._watchdog_at: float | None = now if self._watchdog_every else None

        self.sensors = sensors
        self.outbox = outbox
        self.uploader = uploader
        self.publisher = publisher
        self._pin_factory = pin_factory
        self.button: Any = None
        self.led: Any = None
        self._sensor_worker: _Worker | None = None
        self._net_worker: _Worker | None = None

    # -- assembly ------------------------------------------------------------

    def _build_parts(self) -> None:
        """Build what was not injected. Heavy imports happen here, lazily."""
        cfg = self.config
        if self.sensors is None:
            from agent.telemetry.sensors import build_sensors
            self.sensors = build_sensors(cfg.sensors)
        if self.outbox is None:
            from agent.telemetry.outbox import Outbox
            self.outbox = Outbox(paths.outbox_file(), durability=cfg.telemetry.durability,
                                 max_readings=cfg.telemetry.outbox_max_readings,
                                 max_bytes=cfg.telemetry.outbox_max_bytes)
        if self.uploader is None and cfg.telemetry.endpoint:
            from agent.telemetry.uploader import Uploader
            self.uploader = Uploader(cfg.telemetry.endpoint, device_id=cfg.device_id,
                                     token=self._current_access_token,
                                     refresh_token=self._refresh_for_uploader,
                                     clock=self.clock, session=self.session,
                                     timeout=cfg.telemetry.timeout, rng=self._rng)
        if self.publisher is None and cfg.mqtt is not None:
            from agent.status import SensorInfo, StatusPublisher
            infos = [SensorInfo(s.name, s.unit or self._sensor_unit(s.name)) for s in cfg.sensors]
            self.publisher = StatusPublisher(cfg.mqtt, device_id=cfg.device_id, sensors=infos,
                                             on_connection_change=self._on_mqtt_change)
        if self.publisher is False:
            self.publisher = None
        # A button or LED that cannot be used is reported, never fatal: the
        # device must keep reporting even with a loose wire.
        if cfg.button is not None and self.button is None:
            try:
                from hardware.button import ButtonControl
                self.button = ButtonControl(
                    cfg.button.pin, hold_seconds=cfg.button.hold_seconds,
                    on_press=lambda: self.post("press"),
                    on_hold_start=lambda: self.post("hold_start"),
                    on_hold_cancel=lambda: self.post("hold_cancel"),
                    on_hold=lambda: self.post("hold"),
                    pin_factory=self._pin_factory)
            except (AgentError, ImportError) as exc:
                log.error("button on pin %s not available: %s", cfg.button.pin, exc)
        if cfg.led is not None and self.led is None:
            try:
                from hardware.button import StatusLed
                self.led = StatusLed(cfg.led.pin, pin_factory=self._pin_factory)
            except (AgentError, ImportError) as exc:
                log.error("LED on pin %s not available: %s", cfg.led.pin, exc)

    def _sensor_unit(self, name: str) -> str | None:
        for sensor in self.sensors or ():
            if getattr(sensor, "name", None) == name:
                return getattr(sensor, "unit", None)
        return None

    # -- events from other threads ---------------------------------------------

    def post(self, kind: str, value: Any = None) -> None:
        """Queue an event for the main thread (thread-safe; e.g. "press")."""
        self._post(_Event(kind, value=value))

    def _post(self, event: _Event) -> None:
        self._events.put(event)
        self._wakeup.set()

    def stop(self) -> None:
        """Ask the service to stop (thread-safe; what SIGTERM does)."""
        self.post("stop")

    def _on_mqtt_change(self, connected: bool) -> None:
        self.post("mqtt", connected)

    def _current_access_token(self) -> str | None:
        tokens = self._tokens
        return tokens.access_token if tokens is not None else None

    def _refresh_for_uploader(self) -> str | None:
        # Called on the network thread after a 401. The new token set goes
        # to the main thread as an event, so the state stays single-owner.
        tokens = self.token_client.refresh()
        self._tokens = tokens       # the uploader's retry needs it at once
        self.post("tokens", tokens)
        return tokens.access_token

    # -- running ---------------------------------------------------------------

    def run(self, stop_requested: threading.Event | None = None) -> int:
        """Run until stopped (SIGTERM, SIGINT, :meth:`stop`); return the exit code (0).

        *stop_requested*: set by whoever caught a SIGTERM before the service
        could (it is checked once our own handlers are in place).
        """
        handlers = self._install_signal_handlers()
        if stop_requested is not None and stop_requested.is_set():
            self.stop()
        try:
            self.start()
            while not self._finished:
                self.step()
        finally:
            self._restore_signal_handlers(handlers)
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

    @property
    def last_error(self) -> str | None:
        """The last problem worth telling (one line), None when all is well."""
        return self._last_error

    @property
    def last_upload(self) -> float | None:
        """Wall-clock time (epoch s) of the last accepted upload, None before any."""
        return self._last_upload

    @property
    def mqtt_connected(self) -> bool | None:
        """True/False while MQTT is configured; None without MQTT."""
        return self._mqtt_connected

    @property
    def finished(self) -> bool:
        """True once the service has stopped and released everything."""
        return self._finished

    def start(self) -> None:
        """Build the parts, look at the saved sign-in, and tell systemd we are up."""
        if self._set_up:
            return
        self._set_up = True
        self._build_parts()
        self._sensor_worker = _Worker("sensors", self._post)
        self._net_worker = _Worker("network", self._post)
        now = self.clock.monotonic()
        interval = self.config.telemetry.interval
        jitter = 0.0
        if self.config.telemetry.jitter:
            from agent.telemetry.uploader import start_jitter
            jitter = start_jitter(self.config.device_id, interval)
        self._next_read = now + jitter
        if self.publisher is not None:
            self._mqtt_connected = False
            self.publisher.start()
        self._show(ui.ProgressView("Starting"))
        self._enter(STARTING)
        try:
            tokens = self.token_client.cached()
        except AgentError as exc:
            # A token file refused for its permissions: say so, then sign in afresh.
            log.error("%s", exc)
            self._last_error = str(exc)
            tokens = None
        if tokens is None:
            self._sign_in_required()
        elif tokens.seconds_left(self.clock) > 0:
            self._signed_in(tokens, announce=False)
        else:
            # Expired while the agent was off: refresh before anything is sent.
            self._tokens = tokens
            self._submit_net("refresh", self.token_client.refresh)
        self.notifier.ready()
        log.info("agent running: device %s, profile %s", self.config.device_id,
                 self.config.profile)

    def step(self) -> None:
        """One turn of the loop: handle an event, or run due timers, or wait."""
        if self._finished:
            return
        self.loop_iterations += 1
        try:
            event = self._events.get_nowait()
        except queue.Empty:
            event = None
        if event is not None:
            self._handle(event)
        else:
            now = self.clock.monotonic()
            if not self._run_timers(now):
                self._idle(now)
        if self.state == STOPPING and not self._shutting_down_blocked():
            self._shutdown()
        elif self._status_dirty:
            self._write_status()

    def _idle(self, now: float) -> None:
        deadline = self._next_deadline()
        timeout = max(0.0, deadline - now) if deadline is not None else 3600.0
        self._wakeup.clear()
        if not self._events.empty():
            return
        if self._busy or self._sign_in_thread is not None:
            # Someone is working: wait for their event in real time. Agent
            # time (a FakeClock in tests) does not run ahead meanwhile.
            self._wakeup.wait(min(timeout, MAX_INFLIGHT_WAIT))
        else:
            self.clock.wait(timeout, self._wakeup)

    def _next_deadline(self) -> float | None:
        # A timer whose worker is busy is not a deadline: the job's event
        # wakes the loop (counting it would spin on a zero timeout).
        candidates = [self._retry_sign_in_at, self._tick_at, self._display_at, self._watchdog_at]
        if not self._is_busy("readings"):
            candidates.append(self._next_read)
        if not self._is_busy("network"):
            if self.state == SIGNED_IN:
                candidates.append(self._refresh_at)
            if self._can_upload():
                candidates.append(self._next_upload)
        found = [c for c in candidates if c is not None]
        return min(found) if found else None

    # -- timers ------------------------------------------------------------------

    def _run_timers(self, now: float) -> bool:
        """Run every due timer; True when something was done."""
        did = False
        if self._watchdog_at is not None and now >= self._watchdog_at:
            self.notifier.watchdog()
            self._watchdog_at = now + (self._watchdog_every or 30.0)
            did = True
        if self.state == STOPPING:
            return did
        if self._next_read is not None and now >= self._next_read and not self._is_busy("readings"):
            interval = self.config.telemetry.interval
            self._next_read += interval
            if self._next_read <= now:          # fell behind (suspend, slow sensor): no burst
                self._next_read = now + interval
            self._submit_sensors()
            did = True
        if self.state == SIGNED_IN and self._refresh_at is not None and now >= self._refresh_at \
                and not self._is_busy("network"):
            self._refresh_at = None
            self._submit_net("refresh", self.token_client.refresh)
            did = True
        if self._can_upload() and now >= self._next_upload and not self._is_busy("network"):
            uploader, outbox, batch = self.uploader, self.outbox, self.config.telemetry.batch_max
            self._submit_net("upload", lambda: uploader.upload(outbox, batch))
            did = True
        if self.state == SIGN_IN_STOPPED and self._retry_sign_in_at is not None \
                and now >= self._retry_sign_in_at:
            self._retry_sign_in_at = None
            log.info("requesting a new sign-in code (retry timer)")
            self._sign_in_required()
            did = True
        if self._tick_at is not None and now >= self._tick_at:
            self._tick_at = now + 1.0
            self._tick()
            did = True
        if self._display_at is not None and now >= self._display_at:
            self._display_at = None
            if self.state == SIGNED_IN:
                self._show_status()
            did = True
        return did

    def _tick(self) -> None:
        """Once a second while a countdown is on screen."""
        if self._hold_until is not None:
            left = max(0.0, self._hold_until - self.clock.monotonic())
            self._show(ui.ConfirmSignOutView(seconds_left=left))
            return
        if self.state == AWAITING_USER and self._authorization is not None:
            self._show(self._sign_in_view())
            return
        self._tick_at = None

    def _can_upload(self) -> bool:
        return (self.state == SIGNED_IN and self.uploader is not None and self._tokens is not None
                and self._upload_wanted)

    def _is_busy(self, worker: str) -> bool:
        return self._busy.get(worker, 0) > 0

    def _mark_busy(self, worker: str, delta: int) -> None:
        count = self._busy.get(worker, 0) + delta
        if count > 0:
            self._busy[worker] = count
        else:
            self._busy.pop(worker, None)

    def _submit_sensors(self) -> None:
        from agent.telemetry.sensors import read_all
        sensors, clock = self.sensors, self.clock
        self._mark_busy("readings", +1)
        assert self._sensor_worker is not None
        self._sensor_worker.submit("readings", lambda: read_all(sensors, clock))

    def _submit_net(self, kind: str, job: Callable[[], Any]) -> None:
        self._mark_busy("network", +1)
        assert self._net_worker is not None
        self._net_worker.submit(kind, job)

    # -- events ----------------------------------------------------------------------

    def _handle(self, event: _Event) -> None:
        kind = event.kind
        if kind == "readings":
            self._mark_busy("readings", -1)
        elif kind in ("refresh", "upload", "code"):
            self._mark_busy("network", -1)
        if kind == "stop":
            self._begin_stop()
            return
        if self.state == STOPPING and kind not in ("readings", "upload"):
            return
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None:
            log.warning("unknown event %s", kind)
            return
        handler(event)

    def _on_readings(self, event: _Event) -> None:
        if event.error is not None:
            log.error("reading sensors failed: %s", event.error)
            return
        readings, failures = event.value
        if readings:
            try:
                self.outbox.add(readings)
            except (AgentError, OSError, sqlite3.Error) as exc:
                # Disk full, file removed...: say so, keep the agent alive.
                log.error("cannot keep %d readings: %s", len(readings), exc)
                error = f"outbox: {exc}"
                if error != self._last_error:
                    self._last_error = error
                    self._status_dirty = True
                    self._publish()
                return
            self.readings_taken += len(readings)
            self._upload_wanted = True
            if self.publisher is not None:
                self.publisher.publish_readings({r.sensor: r.value for r in readings},
                                                {r.sensor: r.unit for r in readings})
        # read_all reports failures as (sensor name, reason). Log a sensor when
        # it starts failing and when it recovers, not at every reading.
        reasons = dict(f if isinstance(f, tuple) else (str(f), "") for f in failures or ())
        names = sorted(reasons)
        if names != self._sensor_failures:
            for name in names:
                if name not in self._sensor_failures:
                    log.warning("sensor failing (skipped until it recovers): %s", reasons[name] or name)
            for name in self._sensor_failures:
                if name not in reasons:
                    log.info("sensor %s recovered", name)
            self._sensor_failures = names
            self._status_dirty = True

    def _on_upload(self, event: _Event) -> None:
        now = self.clock.monotonic()
        if event.error is not None:
            # The token callables raise the sign-in errors (after a 401).
            if isinstance(event.error, SignInRequired):
                self._last_error = str(event.error)
                self._sign_in_required()
                return
            self._upload_failed(str(event.error), None, permanent=False)
            return
        result = event.value
        if result.accepted:
            self._last_upload = self.clock.time()
            self._last_upload_mono = now
            self._upload_failures = 0
            if self._last_error and not result.error:
                self._last_error = None
                self._status_dirty = True
            if now - self._published_at >= STATUS_REFRESH:
                self._publish()          # counters over MQTT, at most every STATUS_REFRESH s
        if result.error:
            self._upload_failed(result.error, result.retry_after, permanent=result.permanent)
            return
        if not result.accepted:
            self._upload_wanted = False          # nothing (more) to send
        # The uploader's own gate (Retry-After, backoff) is in retry_after.
        self._next_upload = now + (result.retry_after or 0.0)
        if self.state == SIGNED_IN and self._signed_in_screen_until is None \
                and (result.accepted or not result.attempted):
            self._show_status()

    def _upload_failed(self, error: str, retry_after: float | None, *, permanent: bool) -> None:
        now = self.clock.monotonic()
        self._upload_failures += 1
        if retry_after is None and not permanent:
            # Full jitter (AWS architecture blog): spreads a fleet's retries.
            cap = min(UPLOAD_RETRY_MAX, UPLOAD_RETRY_MIN * 2 ** min(self._upload_failures, 16))
            retry_after = self._rng.uniform(UPLOAD_RETRY_MIN, cap)
        self._next_upload = now + float(retry_after or 0.0)
        changed = error != self._last_error
        self._last_error = error
        if changed:
            self._publish()
            self._status_dirty = True
        if self.state == SIGNED_IN:
            self._show(ui.OfflineView(reason=error[:60], outbox_depth=self._depth(),
                                      retry_in=float(retry_after) if retry_after else None))

    def _on_refresh(self, event: _Event) -> None:
        if self.state not in (STARTING, SIGNED_IN):
            return                  # signed out meanwhile (button hold): too late
        if event.error is None:
            if self._refresh_failures:
                self._last_error = None
            self._refresh_failures = 0
            was = self.state
            self._signed_in(event.value, announce=was != SIGNED_IN)
            return
        exc = event.error
        if isinstance(exc, SignInRequired):
            self._last_error = str(exc)
            self._sign_in_required()
            return
        # Transient (network, 5xx): keep the current token, try again later.
        self._refresh_failures += 1
        delay = min(REFRESH_RETRY_MAX, REFRESH_RETRY_MIN * 2 ** (self._refresh_failures - 1))
        self._last_error = str(exc)
        log.warning("token refresh failed: %s; retrying in %.0f s", exc, delay)
        self._refresh_at = self.clock.monotonic() + delay
        if self.state == STARTING and self._tokens is not None:
            # Expired token, provider unreachable: keep reading; upload after refresh.
            self._enter(SIGNED_IN)
        self._publish()
        self._status_dirty = True

    def _on_tokens(self, event: _Event) -> None:
        # The uploader refreshed after a 401.
        self._tokens = event.value
        self._schedule_refresh()

    def _on_code(self, event: _Event) -> None:
        if self.state != SIGN_IN_REQUIRED:
            return
        if event.error is not None:
            exc = event.error
            self._last_error = str(exc)
            if isinstance(exc, ProviderUnavailable):
                self._code_failures += 1
                delay = min(REFRESH_RETRY_MAX, REFRESH_RETRY_MIN * 2 ** (self._code_failures - 1))
                log.warning("cannot get a sign-in code: %s; retrying in %.0f s", exc, delay)
                self._show(ui.ErrorView(f"Cannot reach the sign-in service; retrying in {delay:.0f}s"))
                self._retry_code_at(delay)
            else:
                log.error("cannot get a sign-in code: %s", exc)
                self._stopped(ui.ErrorView(str(exc)[:120]))
            return
        self._code_failures = 0
        self._await_user(event.value)

    def _retry_code_at(self, delay: float) -> None:
        # Reuse the sign_in_stopped retry timer without showing "stopped".
        self._retry_sign_in_at = self.clock.monotonic() + delay
        self._enter(SIGN_IN_STOPPED, view=None)

    def _on_signin(self, event: _Event) -> None:
        if event.generation != self._generation or self.state != AWAITING_USER:
            return                                  # a stale attempt
        self._sign_in_thread = None
        self._cancel_sign_in = None
        exc = event.error
        if exc is None:
            self._authorization = None
            self._last_error = None
            self._signed_in(event.value, announce=True)
            return
        self._authorization = None
        if isinstance(exc, CancelledError):
            self._stopped(ui.CancelledView())
        elif isinstance(exc, CodeExpired):
            self._stopped(ui.ExpiredView())
        elif isinstance(exc, AuthorizationDeclined):
            self._stopped(ui.DeclinedView())
        else:
            self._last_error = str(exc)
            self._stopped(ui.ErrorView(str(exc)[:120]))

    def _on_mqtt(self, event: _Event) -> None:
        self._mqtt_connected = bool(event.value)
        self._status_dirty = True
        if self.state == SIGNED_IN and self._signed_in_screen_until is None:
            self._show_status()

    def _on_press(self, event: _Event) -> None:
        self.presenter.wake()
        if self.state == AWAITING_USER:
            log.info("sign-in cancelled with the button")
            if self._cancel_sign_in is not None:
                self._cancel_sign_in.set()
        elif self.state == SIGN_IN_STOPPED:
            log.info("new sign-in code requested with the button")
            self._retry_sign_in_at = None
            self._sign_in_required()
        elif self.state == SIGNED_IN:
            self._show_status()

    def _on_hold_start(self, event: _Event) -> None:
        self.presenter.wake()
        if self.state != SIGNED_IN:
            return
        # The button calls hold_start after its confirm delay; the hold
        # itself comes at hold_seconds from the press.
        hold = float(self.config.button.hold_seconds if self.config.button else 5.0)
        hold -= float(getattr(self.button, "confirm_after", 0.0) or 0.0)
        self._hold_until = self.clock.monotonic() + max(0.0, hold)
        self._tick_at = self.clock.monotonic()

    def _on_hold_cancel(self, event: _Event) -> None:
        if self._hold_until is None:
            return
        self._hold_until = None
        self._tick_at = None
        if self.state == SIGNED_IN:
            self._show_status()

    def _on_hold(self, event: _Event) -> None:
        self._hold_until = None
        self._tick_at = None
        if self.state != SIGNED_IN:
            return
        log.info("signing out (button held)")
        try:
            self.token_client.sign_out()
        except AgentError as exc:
            log.error("sign-out failed: %s", exc)
            self._last_error = str(exc)
        self._tokens = None
        self._refresh_at = None
        self._sign_in_required()

    # -- state changes ---------------------------------------------------------------

    def _enter(self, state: str, view: ui.View | None = None) -> None:
        if state != self.state:
            log.info("state: %s -> %s", self.state, state)
            self.state = state
            self.history.append(state)
            if len(self.history) > HISTORY_MAX:
                del self.history[: len(self.history) - HISTORY_MAX]
            self._since = self.clock.time()
        elif self.history[-1] != state:
            self.history.append(state)
        if view is not None:
            self._show(view)
        if self.led is not None:
            try:
                self.led.set_mode(LED_MODES.get(state, "off"))
            except Exception:  # noqa: BLE001 - an LED must never stop the agent
                log.exception("LED failed")
        self.notifier.status(self._status_line())
        self._publish()
        self._write_status()

    def _signed_in(self, tokens: "TokenSet", *, announce: bool) -> None:
        self._tokens = tokens
        self._upload_wanted = True
        self._next_upload = self.clock.monotonic()
        self._schedule_refresh()
        self._enter(SIGNED_IN)
        if announce:
            self._show(ui.SignedInView(account=tokens.account))
            self._signed_in_screen_until = self.clock.monotonic() + SIGNED_IN_SCREEN
            self._display_at = self._signed_in_screen_until
        else:
            self._show_status()

    def _schedule_refresh(self) -> None:
        tokens = self._tokens
        if tokens is None:
            self._refresh_at = None
            return
        lifetime = max(1.0, tokens.expires_at - (tokens.obtained_at or tokens.expires_at - 3600))
        # A 5-minute margin on a 60-second token would refresh forever: cap
        # the margin at a quarter of the lifetime.
        from agent.auth.tokens import REFRESH_MARGIN
        margin = min(REFRESH_MARGIN, lifetime / 4)
        due = max(MIN_REFRESH_SPACING, tokens.refresh_due_in(self.clock, margin))
        self._refresh_at = self.clock.monotonic() + due
        log.debug("token refresh in %.0f s", due)

    def _sign_in_required(self) -> None:
        self._cancel_attempt()
        self._tokens = None
        self._refresh_at = None
        self._retry_sign_in_at = None
        self._enter(SIGN_IN_REQUIRED, view=ui.ProgressView("Requesting a sign-in code"))
        self._submit_net("code", self.token_client.request_code)

    def _await_user(self, authorization: "DeviceAuthorization") -> None:
        self._authorization = authorization
        self._generation += 1
        generation = self._generation
        cancel = threading.Event()
        self._cancel_sign_in = cancel
        client = self.token_client

        def poll() -> None:
            try:
                # on_wait wakes the loop before each poll's wait, so timers
                # (sensor reads, the countdown) run while time passes.
                tokens = client.poll(authorization, cancel=cancel,
                                     on_wait=lambda left: self._wakeup.set())
            except BaseException as exc:  # noqa: BLE001 - every outcome is an event
                if not isinstance(exc, AgentError):
                    log.exception("sign-in polling failed unexpectedly")
                self._post(_Event("signin", error=exc, generation=generation))
            else:
                self._post(_Event("signin", value=tokens, generation=generation))

        log.info("waiting for sign-in at %s (code shown on the device)",
                 authorization.verification_uri)
        self._enter(AWAITING_USER, view=self._sign_in_view())
        self._tick_at = self.clock.monotonic() + 1.0
        self._sign_in_thread = threading.Thread(target=poll, name="agent-sign-in", daemon=True)
        self._sign_in_thread.start()

    def _cancel_attempt(self) -> None:
        if self._cancel_sign_in is not None:
            self._cancel_sign_in.set()
        self._cancel_sign_in = None
        self._sign_in_thread = None
        self._authorization = None
        self._generation += 1

    def _stopped(self, view: ui.View) -> None:
        self._cancel_attempt()
        self._tick_at = None
        self._retry_sign_in_at = self.clock.monotonic() + self.sign_in_retry_delay
        self._enter(SIGN_IN_STOPPED, view=view)

    # -- stopping ------------------------------------------------------------------

    def _begin_stop(self) -> None:
        if self.state == STOPPING:
            return
        log.info("stopping")
        self.notifier.stopping()
        self._cancel_attempt()
        self._tick_at = self._display_at = self._refresh_at = self._retry_sign_in_at = None
        self._next_read = None
        self._stop_deadline = self.clock.monotonic() + STOP_GRACE
        self._enter(STOPPING, view=ui.ProgressView("Stopping"))

    def _shutting_down_blocked(self) -> bool:
        # Give a reading or an upload in flight a moment to land in the outbox.
        return bool(self._busy) and self.clock.monotonic() < self._stop_deadline

    def _shutdown(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self.state != STOPPING:
            self._begin_stop()
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
        if self.publisher is not None:
            self.publisher.close()
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
        status = self._status()
        status["state"] = "stopped"
        status["pid"] = None
        try:
            write_status(self.status_path, status)
        except AgentError as exc:
            log.warning("%s", exc)
        self.notifier.close()
        log.info("stopped")

    def _install_signal_handlers(self) -> dict[str, Any]:
        """SIGTERM/SIGINT -> :meth:`stop`, without running our code in a handler.

        A Python signal handler runs between two bytecodes of the main
        thread, possibly while it holds the event queue's lock: calling
        ``stop()`` there could deadlock. So the C-level handler only writes
        the signal number to a pipe (``signal.set_wakeup_fd``), and a small
        thread that sleeps on that pipe calls ``stop()``.
        """
        if threading.current_thread() is not threading.main_thread():
            return {}
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        saved: dict[str, Any] = {"fds": (read_end, write_end)}
        saved["wakeup_fd"] = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        saved["handlers"] = {sig: signal.signal(sig, lambda signum, frame: None)
                             for sig in (signal.SIGTERM, signal.SIGINT)}
        wanted = {int(signal.SIGTERM), int(signal.SIGINT)}

        def watch() -> None:
            try:
                while data := os.read(read_end, 64):     # b"" once the write end is closed
                    if wanted & set(data):
                        log.info("stop requested by signal")
                        self.stop()
            except OSError:
                pass
            finally:
                os.close(read_end)

        threading.Thread(target=watch, name="agent-signals", daemon=True).start()
        return saved

    @staticmethod
    def _restore_signal_handlers(saved: dict[str, Any]) -> None:
        if not saved:
            return
        for sig, handler in saved["handlers"].items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(saved["wakeup_fd"])
        os.close(saved["fds"][1])      # the watcher reads EOF, closes its end, ends

    # -- showing and telling -----------------------------------------------------

    def _show(self, view: ui.View) -> None:
        try:
            self.presenter.show(view)
        except Exception:  # noqa: BLE001 - a display fault must not stop telemetry
            log.exception("showing %s failed", type(view).__name__)

    def _sign_in_view(self) -> ui.SignInView:
        auth = self._authorization
        assert auth is not None
        return ui.SignInView(
            user_code=auth.user_code,
            verification_uri=auth.verification_uri,
            verification_uri_complete=auth.verification_uri_complete,
            seconds_left=int(auth.seconds_left(self.clock)),
            lifetime=int(auth.expires_in),
        )

    def _show_status(self) -> None:
        now = self.clock.monotonic()
        self._signed_in_screen_until = None
        if not isinstance(self.presenter, ui.NullPresenter):
            # Ages on the screen tick; with no screen, no reason to wake up.
            self._display_at = now + STATUS_REFRESH
        tokens = self._tokens
        self._show(ui.StatusView(
            device_id=self.config.device_id,
            account=tokens.account if tokens else "",
            last_upload_age=(now - self._last_upload_mono) if self._last_upload_mono is not None else None,
            outbox_depth=self._depth(),
            mqtt_connected=self._mqtt_connected,
            token_valid_for=tokens.seconds_left(self.clock) if tokens else None,
        ))

    def _depth(self) -> int:
        try:
            return int(self.outbox.depth()) if self.outbox is not None else 0
        except Exception:  # noqa: BLE001
            return 0

    def _dropped(self) -> int:
        value = getattr(self.outbox, "dropped", 0) if self.outbox is not None else 0
        try:
            return int(value() if callable(value) else value)
        except Exception:  # noqa: BLE001
            return 0

    def _status(self) -> dict[str, Any]:
        """The state as people and other programs see it (MQTT, status.json)."""
        tokens = self._tokens
        status: dict[str, Any] = {
            "state": self.state,
            "since": _iso(self._since),
            "device_id": self.config.device_id,
            "profile": self.config.profile,
            "account": tokens.account if tokens else None,
            "outbox_depth": self._depth(),
            "dropped": self._dropped(),
            "last_upload": _iso(self._last_upload),
            "last_error": self._last_error,
            "version": __version__,
            "mqtt_connected": self._mqtt_connected,
            "sensor_failures": list(self._sensor_failures),
        }
        auth = self._authorization
        if self.state == AWAITING_USER and auth is not None:
            status["verification_uri"] = auth.verification_uri
            status["expires_at"] = _iso(self.clock.time() + auth.seconds_left(self.clock))
            status["user_code"] = auth.user_code   # the publisher drops it unless asked
        return status

    def _status_line(self) -> str:
        if self.state == SIGNED_IN:
            who = self._tokens.account if self._tokens else ""
            return f"signed in{' as ' + who if who else ''}; reporting as {self.config.device_id}"
        if self.state == AWAITING_USER and self._authorization is not None:
            return f"waiting for sign-in at {self._authorization.verification_uri}"
        if self.state == SIGN_IN_STOPPED:
            return "sign-in stopped; press the button for a new code"
        return self.state.replace("_", " ")

    def _publish(self) -> None:
        self._published_at = self.clock.monotonic()
        if self.publisher is not None:
            self.publisher.publish_state(self._status())

    def _write_status(self) -> None:
        # Called on a state change and when the error, MQTT link or failing
        # sensors changed; never for counters alone (depth ticks every read).
        self._status_dirty = False
        status = self._status()
        status.pop("user_code", None)
        status["pid"] = os.getpid()
        status["updated"] = _iso(self.clock.time())
        try:
            write_status(self.status_path, status)
        except AgentError as exc:
            log.warning("%s", exc)


def open_face(settings: dict[str, Any], *, clock: Clock | None = None,
              stream: Any = None) -> ui.Presenter:
    """The presenter for ``[display]`` settings: the one place ``hardware`` is imported.

    ``driver = "none"`` shows nothing. Anything else goes through
    :func:`hardware.display.open_presenter` (which falls back to the console
    on device trouble); a box without Pillow/luma gets the plain console face.
    """
    driver = str(settings.get("driver", "console"))
    if driver == "none":
        return ui.NullPresenter()
    try:
        from hardware.display import open_presenter
    except ImportError as exc:
        if driver != "console":
            log.warning("display driver %s needs the display extra (%s); using the console",
                        driver, exc)
        return ui.ConsolePresenter(stream)
    return open_presenter(settings, clock=clock, stream=stream)


def build_service(config: "AgentConfig", *, clock: Clock | None = None, stream: Any = None,
                  presenter: ui.Presenter | None = None) -> Service:
    """A :class:`Service` for *config* with real parts: profile, token store, display."""
    from agent.auth.tokens import TokenClient
    from agent.clock import SystemClock
    from agent.profiles import ProfileStore
    from agent.tokenstore import TokenStore

    clock = clock or SystemClock()
    profile = ProfileStore(paths.profiles_file()).get(config.profile)
    client = TokenClient(profile, store=TokenStore(paths.token_dir()), clock=clock)
    if presenter is None:
        presenter = open_face(config.display.as_settings(), clock=clock, stream=stream)
    return Service(config, clock=clock, token_client=client, presenter=presenter)
