"""The agent service: one state machine that ties sign-in, telemetry and status together.

States (README, "States")::

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

Around it: :mod:`agent.states` names the states, :mod:`agent.workers` runs
the jobs, :mod:`agent.report` builds what is shown and told,
:mod:`agent.signals` turns SIGTERM into :meth:`Service.stop`, and
:mod:`agent.assembly` builds the parts from the config.

>>> service = Service(config, clock=SystemClock(), token_client=client, presenter=presenter)
>>> service.run()        # until SIGTERM / SIGINT / service.stop(); returns 0
"""

from __future__ import annotations

import logging
import os
import queue
import random
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import paths, ui
from agent.assembly import build_parts, build_service, open_face
from agent.auth.errors import (
    AuthorizationDeclined,
    CodeExpired,
    ProviderUnavailable,
    SignInRequired,
)
from agent.backoff import TOKEN, Retry
from agent.clock import Clock
from agent.errors import AgentError, CancelledError, StorageError
from agent.notify import Notifier, watchdog_interval
from agent.report import (
    iso,
    outbox_depth,
    show,
    sign_in_view,
    status_dict,
    status_line,
    status_view,
    stopped_view,
)
from agent.signals import install_stop_handlers, restore_handlers
from agent.statefile import write_status
from agent.states import (
    AWAITING_USER,
    SIGN_IN_REQUIRED,
    SIGN_IN_STOPPED,
    SIGNED_IN,
    STARTING,
    STATES,
    STOPPING,
)
from agent.workers import Event, Worker

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

#: Seconds in sign_in_stopped before a new code is requested by itself
#: (a person away from the device gets a fresh code when they come back).
SIGN_IN_RETRY_DELAY = 15 * 60.0
#: Seconds before retrying a refresh (or a code request) that failed for a
#: transient reason: at least REFRESH_RETRY_MIN, at most REFRESH_RETRY_MAX,
#: drawn by the shared policy (agent.backoff.TOKEN, full jitter).
REFRESH_RETRY_MIN = TOKEN.minimum
REFRESH_RETRY_MAX = TOKEN.cap
#: Upload backoff bounds when the upload itself raised (the uploader's own
#: answers carry their wait): agent.telemetry.uploader.upload_policy.
UPLOAD_RETRY_MIN = 1.0
UPLOAD_RETRY_MAX = 300.0
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
#: Seconds between two sign-in codes asked for from Home Assistant (whoever
#: can publish on the broker must not make the agent flood the provider).
HA_NEW_CODE_SPACING = 10.0

#: LED mode per state (hardware.button.StatusLed).
LED_MODES = {
    STARTING: "off", SIGNED_IN: "signed_in", SIGN_IN_REQUIRED: "waiting",
    AWAITING_USER: "waiting", SIGN_IN_STOPPED: "error", STOPPING: "off",
}


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

        self._events: queue.Queue[Event] = queue.Queue()
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
        # One shared policy (agent.backoff) for every retry the service times.
        from agent.telemetry.uploader import upload_policy
        self._upload_retry = Retry(upload_policy(config.telemetry.interval), rng=self._rng)
        self._refresh_retry = Retry(TOKEN, rng=self._rng)
        self._code_retry = Retry(TOKEN, rng=self._rng)
        self._start_not_before = float("-inf")   # start-up jitter for uploads and the refresh
        self._mqtt_connected: bool | None = None
        self._storage_problem: str | None = None      # the outbox's "storage full: ...", told once
        self._sensor_failures: list[str] = []
        self._hold_until: float | None = None
        self._sign_out_armed_until: float | None = None   # monotonic: HA "Sign out" pressed once
        self._sign_out_armed_wall: float | None = None
        self._ha_code_at = float("-inf")
        self._signed_in_screen_until: float | None = None
        self._published_at = clock.monotonic()
        self._status_dirty = False
        self._counters_at = float("-inf")       # when counters were last reported (monotonic)
        self._counters: tuple[Any, ...] | None = None
        self._set_up = False
        self._finished = False
        self._before_stop: tuple[str, float] = (STARTING, self._since)
        self.readings_taken = 0                          # for tests and benches
        self.loop_iterations = 0

        # Timers: monotonic deadlines, None = off.
        now = clock.monotonic()
        self._next_read: float | None = None
        self._next_upload: float = now
        self._refresh_at: float | None = None
        self._retry_sign_in_at: float | None = None
        self._tick_at: float | None = None
        self._stopped_view: ui.View | None = None     # what a stopped sign-in shows, to tick
        self._token_file_seen: tuple[int, int] | None = None   # while awaiting the user
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
        self._sensor_worker: Worker | None = None
        self._net_worker: Worker | None = None
        self.token_service: Any = None                   # agent.tokenservice, when enabled
        self._program_asked: tuple[str, float] | None = None   # (resource, wall s) while signed out

    # -- assembly ------------------------------------------------------------

    def _build_parts(self) -> None:
        """Build what was not injected (agent.assembly). Heavy imports happen there, lazily."""
        build_parts(self, self.config, clock=self.clock, session=self.session, rng=self._rng,
                    pin_factory=self._pin_factory, token=self._current_access_token,
                    refresh_token=self._refresh_for_uploader,
                    on_mqtt_change=self._on_mqtt_change, post=self.post)

    # -- events from other threads ---------------------------------------------

    def post(self, kind: str, value: Any = None) -> None:
        """Queue an event for the main thread (thread-safe; e.g. "press")."""
        self._post(Event(kind, value=value))

    def _post(self, event: Event) -> None:
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
        self._start_token_service()
        self._sensor_worker = Worker("sensors", self._post)
        self._net_worker = Worker("network", self._post)
        now = self.clock.monotonic()
        interval = self.config.telemetry.interval
        jitter = 0.0
        if self.config.telemetry.jitter:
            from agent.telemetry.uploader import start_jitter
            jitter = start_jitter(self.config.device_id, interval)
        self._next_read = now + jitter
        # A fleet that boots together (a site-wide power cut) spreads its
        # first upload of a backlog and its start-up refresh the same way.
        self._start_not_before = now + jitter
        self._next_upload = max(self._next_upload, self._start_not_before)
        if self.publisher is not None:
            self._mqtt_connected = False
            self.publisher.start()
        show(self.presenter, ui.ProgressView("Starting"))
        self._enter(STARTING)
        try:
            tokens = self.token_client.cached()
        except StorageError as exc:
            # A token file refused (permissions, owner): a sign-in now could not
            # be saved, so asking a person for one would waste it. Say so on the
            # screen and stop (exit 6; the unit does not restart for it).
            log.error("%s", exc)
            show(self.presenter, ui.ErrorView(exc.message))
            raise
        except AgentError as exc:
            log.error("%s", exc)
            self._last_error = str(exc)
            tokens = None
        if tokens is None:
            self._sign_in_required()
        elif tokens.seconds_left(self.clock) > 0:
            self._signed_in(tokens, announce=False)
        else:
            # Expired while the agent was off: refresh before anything is sent
            # (after the start-up jitter, so a fleet does not refresh at once).
            self._tokens = tokens
            if self._start_not_before > now:
                self._refresh_at = self._start_not_before
            else:
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
        else:
            self._report_counters()

    def _report_counters(self) -> None:
        """Refresh MQTT and status.json when only counters moved (outbox depth,
        last upload), at most every STATUS_REFRESH seconds."""
        now = self.clock.monotonic()
        if now - self._counters_at < STATUS_REFRESH or self.state == STOPPING:
            return
        self._counters_at = now
        counters = (outbox_depth(self.outbox), self._last_upload)
        if counters != self._counters:
            self._counters = counters
            self._publish()
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
            if self.state in (SIGNED_IN, STARTING):
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
        if self.state in (SIGNED_IN, STARTING) and self._refresh_at is not None \
                and now >= self._refresh_at and not self._is_busy("network"):
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
            show(self.presenter, ui.ConfirmSignOutView(seconds_left=left))
            return
        if self.state == AWAITING_USER and self._authorization is not None:
            if self._signed_in_elsewhere():
                return
            show(self.presenter, sign_in_view(self._authorization, self.clock))
            return
        if self.state == SIGN_IN_STOPPED and self._stopped_view is not None \
                and self._retry_sign_in_at is not None:
            # "new code in 14m 59s" counts down like the sign-in code does.
            left = max(0.0, self._retry_sign_in_at - self.clock.monotonic())
            show(self.presenter, stopped_view(self._stopped_view, button=self.button is not None,
                                              retry_in=left))
            return
        self._tick_at = None

    def _token_file_id(self) -> tuple[int, int] | None:
        """(inode, mtime) of the profile's token file; None when absent. A stat
        a second while awaiting the user: no read, no write, no wakeup of its own."""
        try:
            st = os.stat(self.token_client.store.path(self.config.profile))
        except (OSError, AgentError):
            return None
        return (st.st_ino, st.st_mtime_ns)

    def _signed_in_elsewhere(self) -> bool:
        """While the code is shown: did ``entra-auth-cli`` sign in meanwhile
        (its token file changed)? Then use that token and stop asking."""
        seen = self._token_file_id()
        if seen is None or seen == self._token_file_seen:
            return False
        self._token_file_seen = seen
        try:
            tokens = self.token_client.cached()
        except AgentError as exc:
            log.warning("the token file changed but cannot be used: %s", exc)
            return False
        if tokens is None or tokens.seconds_left(self.clock) <= 0 \
                or not tokens.covers(self.token_client.profile.scopes):
            return False
        # Most likely entra-auth-cli; the agent's own poll may have won the race too.
        log.info("a sign-in was saved to the token file meanwhile; using it")
        self._cancel_attempt()
        self._last_error = None
        self._signed_in(tokens, announce=True)
        return True

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

    def _handle(self, event: Event) -> None:
        kind = event.kind
        if kind == "readings":
            self._mark_busy("readings", -1)
        elif kind in ("refresh", "upload", "code", "revoke"):
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

    def _on_readings(self, event: Event) -> None:
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
            self._check_storage()
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

    def _check_storage(self) -> None:
        """Tell once (state, MQTT, status.json, screen) when the outbox's disk is
        full or read-only, and again when it takes writes again."""
        problem = getattr(self.outbox, "storage_problem", None)
        if not isinstance(problem, (str, type(None))) or problem == self._storage_problem:
            return
        before, self._storage_problem = self._storage_problem, problem
        if problem is not None:
            self._last_error = problem
            show(self.presenter, ui.ErrorView(_screen_line(problem)))
            self._display_at = self.clock.monotonic() + STATUS_REFRESH   # then the status again
        elif self._last_error == before:
            self._last_error = None
        self._publish()
        self._status_dirty = True

    def _on_upload(self, event: Event) -> None:
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
        self._check_storage()
        if result.accepted:
            self._last_upload = self.clock.time()
            self._last_upload_mono = now
            self._upload_failures = 0
            self._upload_retry.reset()
            if self._last_error and not result.error and self._last_error != self._storage_problem:
                self._last_error = self._storage_problem    # a full disk is still worth telling
                self._status_dirty = True
            if now - self._published_at >= STATUS_REFRESH:
                self._publish()          # counters over MQTT, at most every STATUS_REFRESH s
        if result.error:
            self._upload_failed(result.error, result.retry_after, permanent=result.permanent)
            return
        if not result.accepted and (result.attempted or result.retry_after is None):
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
            # The shared policy (full jitter): spreads a fleet's retries.
            retry_after = self._upload_retry.next_delay()
        self._next_upload = now + float(retry_after or 0.0)
        changed = error != self._last_error
        self._last_error = error
        if changed:
            self._publish()
            self._status_dirty = True
        if self.state == SIGNED_IN:
            show(self.presenter, ui.OfflineView(
                reason=error[:60], outbox_depth=outbox_depth(self.outbox),
                retry_in=float(retry_after) if retry_after else None))

    def _on_refresh(self, event: Event) -> None:
        if self.state not in (STARTING, SIGNED_IN):
            return                  # signed out meanwhile (button hold): too late
        if event.error is None:
            if self._refresh_failures:
                self._last_error = None
            self._refresh_failures = 0
            self._refresh_retry.reset()
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
        delay = self._refresh_retry.next_delay()
        self._last_error = str(exc)
        log.warning("token refresh failed: %s; retrying in %.0f s", exc, delay)
        self._refresh_at = self.clock.monotonic() + delay
        if self.state == STARTING and self._tokens is not None:
            # Expired token, provider unreachable: keep reading; upload after refresh.
            self._enter(SIGNED_IN)
        self._publish()
        self._status_dirty = True

    def _on_tokens(self, event: Event) -> None:
        # The uploader refreshed after a 401.
        self._tokens = event.value
        self._schedule_refresh()

    # -- the token service (agent.tokenservice) ----------------------------------------

    def _start_token_service(self) -> None:
        if not self.config.token_service.enabled or self.token_service is not None:
            return
        from agent.tokenservice import serve
        self.token_service = serve(self.config.token_service, self.token_client, clock=self.clock,
                                   gate=self._token_gate,
                                   on_asked=lambda resource: self.post("token_asked", resource),
                                   on_refused=lambda resource: self.post("token_refused", resource))

    def _token_gate(self) -> str | None:
        """None while tokens may be served (called on the token service's threads)."""
        state = self.state
        if state in (SIGNED_IN, STARTING):
            return None
        if state == STOPPING:
            return "entra-agent is stopping; try again when it is back"
        where = "the code is on its screen" if state == AWAITING_USER else "a code is shown on its screen"
        return (f"entra-agent on this device is not signed in ({state.replace('_', ' ')}): a person "
                f"must sign in on the device ({where}; or run: sudo entra-agent status)")

    def _on_token_asked(self, event: Event) -> None:
        # A program asked while nobody is signed in: say so on MQTT and the screen.
        self._program_asked = (str(event.value), self.clock.time())
        log.info("a program asked for a token for %s while not signed in", event.value)
        if self.state == SIGN_IN_STOPPED and self._stopped_view is not None:
            self._stopped_view = ui.ErrorView("A program on this device needs a token: sign in")
            self._tick_at = self.clock.monotonic()
        self._publish()
        self._status_dirty = True

    def _on_token_refused(self, event: Event) -> None:
        # The provider refused the sign-in for a program's resource: check the
        # device's own sign-in now (a refresh); a revoked one asks for a new code.
        if self.state == SIGNED_IN:
            self._refresh_at = self.clock.monotonic()

    def _on_code(self, event: Event) -> None:
        if self.state != SIGN_IN_REQUIRED:
            return
        if event.error is not None:
            exc = event.error
            self._last_error = str(exc)
            if isinstance(exc, ProviderUnavailable):
                self._code_failures += 1
                delay = self._code_retry.next_delay()
                log.warning("cannot get a sign-in code: %s; retrying in %.0f s", exc, delay)
                show(self.presenter,
                     ui.ErrorView(f"Cannot reach the sign-in service; retrying in {delay:.0f}s"))
                self._retry_code_at(delay)
            else:
                log.error("cannot get a sign-in code: %s", exc)
                self._stopped(ui.ErrorView(_screen_line(exc)))
            return
        self._code_failures = 0
        self._code_retry.reset()
        self._await_user(event.value)

    def _retry_code_at(self, delay: float) -> None:
        # Reuse the sign_in_stopped retry timer without showing "stopped".
        self._stopped_view = None
        self._retry_sign_in_at = self.clock.monotonic() + delay
        self._enter(SIGN_IN_STOPPED, view=None)

    def _on_signin(self, event: Event) -> None:
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
            log.error("sign-in failed: %s", exc)
            self._last_error = str(exc)
            self._stopped(ui.ErrorView(_screen_line(exc)))

    def _on_mqtt(self, event: Event) -> None:
        self._mqtt_connected = bool(event.value)
        self._status_dirty = True
        if self.state == SIGNED_IN and self._signed_in_screen_until is None:
            self._show_status()

    def _on_press(self, event: Event) -> None:
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

    def _on_revoke(self, event: Event) -> None:
        if event.error is not None:
            log.warning("could not revoke the refresh token: %s", event.error)
        elif event.value.outcome == "revoked":
            log.info("%s", event.value.line)
        else:
            log.warning("%s", event.value.line)

    def _on_hold_start(self, event: Event) -> None:
        self.presenter.wake()
        if self.state != SIGNED_IN:
            return
        # The button calls hold_start after its confirm delay; the hold
        # itself comes at hold_seconds from the press.
        hold = float(self.config.button.hold_seconds if self.config.button else 5.0)
        hold -= float(getattr(self.button, "confirm_after", 0.0) or 0.0)
        self._hold_until = self.clock.monotonic() + max(0.0, hold)
        self._tick_at = self.clock.monotonic()

    def _on_hold_cancel(self, event: Event) -> None:
        if self._hold_until is None:
            return
        self._hold_until = None
        self._tick_at = None
        if self.state == SIGNED_IN:
            self._show_status()

    def _on_hold(self, event: Event) -> None:
        self._hold_until = None
        self._tick_at = None
        if self.state != SIGNED_IN:
            return
        self._sign_out("button held")

    def _on_ha_command(self, event: Event) -> None:
        # A Home Assistant button (agent.status only passes enabled ones).
        from agent.homeassistant import COMMAND_NEW_CODE, COMMAND_SIGN_OUT, SIGN_OUT_CONFIRM_WINDOW

        now = self.clock.monotonic()
        if event.value == COMMAND_NEW_CODE:
            if self.state not in (AWAITING_USER, SIGN_IN_STOPPED):
                log.info("Home Assistant asked for a new sign-in code while %s: nothing to do",
                         self.state)
            elif now - self._ha_code_at < HA_NEW_CODE_SPACING:
                log.info("Home Assistant asked for another sign-in code within %.0f s: ignored",
                         HA_NEW_CODE_SPACING)
            else:
                self._ha_code_at = now
                log.info("new sign-in code requested from Home Assistant")
                self._sign_in_required()
        elif event.value == COMMAND_SIGN_OUT:
            if self.state != SIGNED_IN:
                log.info("Home Assistant asked to sign out while %s: nothing to do", self.state)
            elif self._sign_out_armed_until is not None and now <= self._sign_out_armed_until:
                self._sign_out_armed_until = self._sign_out_armed_wall = None
                self._sign_out("Sign out pressed twice in Home Assistant")
            else:
                # Like the physical button's hold: a single press only asks.
                self._sign_out_armed_until = now + SIGN_OUT_CONFIRM_WINDOW
                self._sign_out_armed_wall = self.clock.time() + SIGN_OUT_CONFIRM_WINDOW
                log.info("Sign out pressed in Home Assistant: press it again within %.0f s "
                         "to sign out", SIGN_OUT_CONFIRM_WINDOW)
                self._publish()

    def _sign_out(self, why: str) -> None:
        log.info("signing out (%s)", why)
        try:
            signed_out = self.token_client.sign_out()
        except AgentError as exc:
            log.error("sign-out failed: %s", exc)
            self._last_error = str(exc)
        else:
            if signed_out:
                # RFC 7009 on the network worker, bounded: the local sign-out is done.
                client, tokens = self.token_client, signed_out.tokens
                self._submit_net("revoke", lambda: client.revoke(tokens))
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
            show(self.presenter, view)
        if self.led is not None:
            try:
                self.led.set_mode(LED_MODES.get(state, "off"))
            except Exception:  # noqa: BLE001 - an LED must never stop the agent
                log.exception("LED failed")
        self.notifier.status(status_line(
            state=self.state, tokens=self._tokens, authorization=self._authorization,
            device_id=self.config.device_id, button=self.button is not None))
        self._publish()
        self._write_status()

    def _signed_in(self, tokens: "TokenSet", *, announce: bool) -> None:
        self._tokens = tokens
        self._program_asked = None
        self._upload_wanted = True
        self._next_upload = max(self.clock.monotonic(), self._start_not_before)
        self._schedule_refresh()
        self._enter(SIGNED_IN)
        if announce:
            show(self.presenter, ui.SignedInView(account=tokens.account))
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
        if self.token_service is not None:
            self.token_service.tokens.forget()      # the next person's tokens are not these
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
                self._post(Event("signin", error=exc, generation=generation))
            else:
                self._post(Event("signin", value=tokens, generation=generation))

        log.info("waiting for sign-in at %s (code shown on the device)",
                 authorization.verification_uri)
        self._token_file_seen = self._token_file_id()
        self._enter(AWAITING_USER, view=sign_in_view(authorization, self.clock))
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
        self._stopped_view = view
        self._tick_at = self.clock.monotonic() + 1.0
        self._retry_sign_in_at = self.clock.monotonic() + self.sign_in_retry_delay
        self._enter(SIGN_IN_STOPPED, view=stopped_view(
            view, button=self.button is not None, retry_in=self.sign_in_retry_delay))

    # -- stopping ------------------------------------------------------------------

    def _begin_stop(self) -> None:
        if self.state == STOPPING:
            return
        log.info("stopping")
        # What MQTT keeps (retained) after the stop: the last real state.
        self._before_stop = (self.state, self._since)
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
        if self.publisher is not None:
            # The retained state ends as the last thing the agent knew (with
            # the outbox as close() left it), not "stopping"; availability
            # says offline.
            final = self._status()
            final["state"], since = self._before_stop
            final["since"] = iso(since)
            self.publisher.publish_state(final)
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

    # -- showing and telling (built by agent.report) ------------------------------

    def _show_status(self) -> None:
        now = self.clock.monotonic()
        self._signed_in_screen_until = None
        if not isinstance(self.presenter, ui.NullPresenter):
            # Ages on the screen tick; with no screen, no reason to wake up.
            self._display_at = now + STATUS_REFRESH
        show(self.presenter, status_view(
            device_id=self.config.device_id,
            tokens=self._tokens,
            last_upload_age=(now - self._last_upload_mono) if self._last_upload_mono is not None else None,
            outbox_depth=outbox_depth(self.outbox),
            mqtt_connected=self._mqtt_connected,
            clock=self.clock,
        ))

    def _status(self) -> dict[str, Any]:
        """The state as people and other programs see it (MQTT, status.json)."""
        return status_dict(state=self.state, since=self._since, config=self.config,
                           tokens=self._tokens, authorization=self._authorization,
                           outbox=self.outbox, last_upload=self._last_upload,
                           last_error=self._last_error, mqtt_connected=self._mqtt_connected,
                           sensor_failures=self._sensor_failures, clock=self.clock,
                           storage=self._storage_problem,
                           sign_out_confirm_until=self._sign_out_confirm_until(),
                           program_asked=self._program_asked)

    def _sign_out_confirm_until(self) -> float | None:
        # The wall-clock end of a Home Assistant "Sign out" confirmation window.
        armed = self._sign_out_armed_until
        if armed is None or self.clock.monotonic() > armed or self.state != SIGNED_IN:
            return None
        return self._sign_out_armed_wall

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
        status["updated"] = iso(self.clock.time())
        try:
            write_status(self.status_path, status)
        except AgentError as exc:
            log.warning("%s", exc)


def _screen_line(exc: BaseException | str) -> str:
    """One line for a small screen: the whole message when short, else the
    cause alone (the log line above keeps the fix)."""
    text = str(exc)
    if len(text) > 120 and isinstance(exc, AgentError):
        text = exc.message
    return text if len(text) <= 120 else text[:119] + "…"
