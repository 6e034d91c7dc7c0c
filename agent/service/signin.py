"""The sign-in flow, on the loop thread: ask for a code, show it, wait for the person.

``sign_in_required`` asks the provider for a code (network worker);
``awaiting_user`` shows it while a poller thread runs RFC 8628's polling
(cancellable; its result is a :attr:`~agent.service.events.Kind.SIGNIN` event);
``sign_in_stopped`` says why it ended and asks again on a button press, from
Home Assistant, or by itself after :data:`SIGN_IN_RETRY_DELAY`. While the code
is shown, a token saved meanwhile by ``entra-auth-cli`` is picked up.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from agent import ui
from agent.auth.errors import AuthorizationDeclined, CodeExpired, ProviderUnavailable
from agent.backoff import TOKEN, Retry
from agent.errors import AgentError, CancelledError
from agent.report import show, sign_in_view, stopped_view
from agent.service.events import Event, Kind
from agent.service.timers import Timer
from agent.states import AWAITING_USER, SIGN_IN_REQUIRED, SIGN_IN_STOPPED

if TYPE_CHECKING:  # pragma: no cover
    from agent.auth.devicecode import DeviceAuthorization
    from agent.service.loop import Service

__all__ = ["SignInFlow", "SIGN_IN_RETRY_DELAY", "screen_line"]

log = logging.getLogger(__name__)

#: Seconds in sign_in_stopped before a new code is requested by itself
#: (a person away from the device gets a fresh code when they come back).
SIGN_IN_RETRY_DELAY = 15 * 60.0


def screen_line(exc: BaseException | str) -> str:
    """One line for a small screen: the whole message when short, else the
    cause alone (the log line above keeps the fix)."""
    text = str(exc)
    if len(text) > 120 and isinstance(exc, AgentError):
        text = exc.message
    return text if len(text) <= 120 else text[:119] + "…"


class SignInFlow:
    """From sign_in_required to signed_in (or sign_in_stopped)."""

    def __init__(self, service: "Service", *, retry_delay: float) -> None:
        self._svc = service
        self.retry_delay = retry_delay
        self.authorization: "DeviceAuthorization | None" = None
        self.thread: threading.Thread | None = None       # the poller, while awaiting the user
        self._cancel: threading.Event | None = None
        self._generation = 0
        self._stopped_view: ui.View | None = None         # what a stopped sign-in shows, to tick
        self._token_file_seen: tuple[int, int] | None = None
        self._code_retry = Retry(TOKEN, rng=service.rng)
        self.code_failures = 0

    # -- entering the states ---------------------------------------------------------

    def require(self) -> None:
        """Forget the tokens and ask for a new code (-> sign_in_required)."""
        svc = self._svc
        if svc.token_service is not None:
            svc.token_service.tokens.forget()      # the next person's tokens are not these
        self.cancel()
        svc.tokens.clear()
        svc.timers.clear(Timer.REFRESH, Timer.RETRY_SIGN_IN)
        svc.enter(SIGN_IN_REQUIRED, view=ui.ProgressView("Requesting a sign-in code"))
        svc.submit_net(Kind.CODE, svc.token_client.request_code)

    def _await_user(self, authorization: "DeviceAuthorization") -> None:
        svc = self._svc
        self.authorization = authorization
        self._generation += 1
        generation = self._generation
        cancel = threading.Event()
        self._cancel = cancel
        client, events = svc.token_client, svc.events

        def poll() -> None:
            try:
                # on_wait wakes the loop before each poll's wait, so timers
                # (sensor reads, the countdown) run while time passes.
                tokens = client.poll(authorization, cancel=cancel,
                                     on_wait=lambda left: events.wakeup.set())
            except BaseException as exc:  # noqa: BLE001 - every outcome is an event
                if not isinstance(exc, AgentError):
                    log.exception("sign-in polling failed unexpectedly")
                events.put(Event(Kind.SIGNIN, error=exc, generation=generation))
            else:
                events.put(Event(Kind.SIGNIN, value=tokens, generation=generation))

        log.info("waiting for sign-in at %s (code shown on the device)",
                 authorization.verification_uri)
        self._token_file_seen = self._token_file_id()
        svc.enter(AWAITING_USER, view=sign_in_view(authorization, svc.clock))
        svc.timers.set(Timer.TICK, svc.clock.monotonic() + 1.0)
        self.thread = threading.Thread(target=poll, name="agent-sign-in", daemon=True)
        self.thread.start()

    def cancel(self) -> None:
        """End the attempt in flight (its late result is ignored)."""
        if self._cancel is not None:
            self._cancel.set()
        self._cancel = None
        self.thread = None
        self.authorization = None
        self._generation += 1

    def cancel_by_button(self) -> None:
        """The button while the code is shown: the poller ends with CancelledError."""
        if self._cancel is not None:
            self._cancel.set()

    def _stop(self, view: ui.View) -> None:
        svc = self._svc
        self.cancel()
        self._stopped_view = view
        now = svc.clock.monotonic()
        svc.timers.set(Timer.TICK, now + 1.0)
        svc.timers.set(Timer.RETRY_SIGN_IN, now + self.retry_delay)
        svc.enter(SIGN_IN_STOPPED, view=stopped_view(
            view, button=svc.button is not None, retry_in=self.retry_delay))

    def _retry_code_in(self, delay: float) -> None:
        # The sign_in_stopped retry timer, without showing "stopped".
        svc = self._svc
        self._stopped_view = None
        svc.timers.set(Timer.RETRY_SIGN_IN, svc.clock.monotonic() + delay)
        svc.enter(SIGN_IN_STOPPED, view=None)

    def program_waiting(self) -> None:
        """A program asked for a token while stopped: say so on the screen."""
        if self._svc.state == SIGN_IN_STOPPED and self._stopped_view is not None:
            self._stopped_view = ui.ErrorView("A program on this device needs a token: sign in")
            self._svc.timers.set(Timer.TICK, self._svc.clock.monotonic())

    # -- events and timers --------------------------------------------------------------

    def on_code(self, event: Event) -> None:
        svc = self._svc
        if svc.state != SIGN_IN_REQUIRED:
            return
        if event.error is not None:
            exc = event.error
            svc.last_error = str(exc)
            if isinstance(exc, ProviderUnavailable):
                self.code_failures += 1
                delay = self._code_retry.next_delay()
                log.warning("cannot get a sign-in code: %s; retrying in %.0f s", exc, delay)
                show(svc.presenter,
                     ui.ErrorView(f"Cannot reach the sign-in service; retrying in {delay:.0f}s"))
                self._retry_code_in(delay)
            else:
                log.error("cannot get a sign-in code: %s", exc)
                self._stop(ui.ErrorView(screen_line(exc)))
            return
        self.code_failures = 0
        self._code_retry.reset()
        self._await_user(event.value)

    def on_signin(self, event: Event) -> None:
        svc = self._svc
        if event.generation != self._generation or svc.state != AWAITING_USER:
            return                                  # a stale attempt
        self.thread = None
        self._cancel = None
        self.authorization = None
        exc = event.error
        if exc is None:
            svc.last_error = None
            svc.account.signed_in(event.value, announce=True)
        elif isinstance(exc, CancelledError):
            self._stop(ui.CancelledView())
        elif isinstance(exc, CodeExpired):
            self._stop(ui.ExpiredView())
        elif isinstance(exc, AuthorizationDeclined):
            self._stop(ui.DeclinedView())
        else:
            log.error("sign-in failed: %s", exc)
            svc.last_error = str(exc)
            self._stop(ui.ErrorView(screen_line(exc)))

    def retry_due(self) -> None:
        """The retry timer in sign_in_stopped: a new code by itself."""
        log.info("requesting a new sign-in code (retry timer)")
        self.require()

    def tick(self) -> bool:
        """The countdown tick for the sign-in screens; False when none is on."""
        svc = self._svc
        if svc.state == AWAITING_USER and self.authorization is not None:
            if not self._signed_in_elsewhere():
                show(svc.presenter, sign_in_view(self.authorization, svc.clock))
            return True
        retry_at = svc.timers.get(Timer.RETRY_SIGN_IN)
        if svc.state == SIGN_IN_STOPPED and self._stopped_view is not None and retry_at is not None:
            # "new code in 14m 59s" counts down like the sign-in code does.
            left = max(0.0, retry_at - svc.clock.monotonic())
            show(svc.presenter, stopped_view(self._stopped_view, button=svc.button is not None,
                                             retry_in=left))
            return True
        return False

    def _token_file_id(self) -> tuple[int, int] | None:
        """(inode, mtime) of the profile's token file; None when absent. A stat
        a second while awaiting the user: no read, no write, no wakeup of its own."""
        svc = self._svc
        try:
            st = os.stat(svc.token_client.store.path(svc.config.profile))
        except (OSError, AgentError):
            return None
        return (st.st_ino, st.st_mtime_ns)

    def _signed_in_elsewhere(self) -> bool:
        """While the code is shown: did ``entra-auth-cli`` sign in meanwhile
        (its token file changed)? Then use that token and stop asking."""
        svc = self._svc
        seen = self._token_file_id()
        if seen is None or seen == self._token_file_seen:
            return False
        self._token_file_seen = seen
        try:
            tokens = svc.token_client.cached()
        except AgentError as exc:
            log.warning("the token file changed but cannot be used: %s", exc)
            return False
        if tokens is None or tokens.seconds_left(svc.clock) <= 0 \
                or not tokens.covers(svc.token_client.profile.scopes):
            return False
        # Most likely entra-auth-cli; the agent's own poll may have won the race too.
        log.info("a sign-in was saved to the token file meanwhile; using it")
        self.cancel()
        svc.last_error = None
        svc.account.signed_in(tokens, announce=True)
        return True
