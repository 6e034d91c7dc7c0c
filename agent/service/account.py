"""The signed-in account, on the loop thread: the saved sign-in at start, the
refresh timer, sign-out, and the local token service's gate.

The token set itself lives in the shared :class:`~agent.service.tokenholder.TokenHolder`;
this flow decides when it changes. Refreshes and the sign-out (which deletes
the token file under its lock) run on the network worker, in order with the
code request that follows a sign-out.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agent import ui
from agent.auth.errors import SignInRequired
from agent.backoff import TOKEN, Retry
from agent.errors import AgentError, StorageError
from agent.report import show
from agent.service.events import Event, Kind
from agent.service.timers import Timer
from agent.states import AWAITING_USER, SIGNED_IN, STARTING, STOPPING

if TYPE_CHECKING:  # pragma: no cover
    from agent.auth.tokens import TokenSet
    from agent.service.loop import Service

__all__ = ["AccountFlow", "MIN_REFRESH_SPACING", "SIGNED_IN_SCREEN", "REFRESH_RETRY_MIN",
           "REFRESH_RETRY_MAX"]

log = logging.getLogger(__name__)

#: Never refresh more often than this, in seconds, even for very short tokens.
MIN_REFRESH_SPACING = 5.0
#: Seconds the "Signed in" screen stays before the status screen.
SIGNED_IN_SCREEN = 3.0
#: Seconds before retrying a refresh (or a code request) that failed for a
#: transient reason: drawn by the shared policy (agent.backoff.TOKEN, full jitter).
REFRESH_RETRY_MIN = TOKEN.minimum
REFRESH_RETRY_MAX = TOKEN.cap


class AccountFlow:
    """Tokens in, refreshed, and out."""

    def __init__(self, service: "Service") -> None:
        self._svc = service
        self._refresh_retry = Retry(TOKEN, rng=service.rng)
        self.refresh_failures = 0
        self.program_asked: tuple[str, float] | None = None   # (resource, wall s) while signed out

    # -- start and sign-in -------------------------------------------------------------

    def start(self, now: float, not_before: float) -> None:
        """Look at the saved sign-in: use it, refresh it, or ask for a sign-in."""
        svc = self._svc
        try:
            tokens = svc.token_client.cached()
        except StorageError as exc:
            # A token file refused (permissions, owner): a sign-in now could not
            # be saved, so asking a person for one would waste it. Say so on the
            # screen and stop (exit 6; the unit does not restart for it).
            log.error("%s", exc)
            show(svc.presenter, ui.ErrorView(exc.message))
            raise
        except AgentError as exc:
            log.error("%s", exc)
            svc.last_error = str(exc)
            tokens = None
        if tokens is None:
            svc.signin.require()
        elif tokens.seconds_left(svc.clock) > 0:
            self.signed_in(tokens, announce=False)
        else:
            # Expired while the agent was off: refresh before anything is sent
            # (after the start-up jitter, so a fleet does not refresh at once).
            svc.tokens.set(tokens)
            if not_before > now:
                svc.timers.set(Timer.REFRESH, not_before)
            else:
                svc.submit_net(Kind.REFRESH, svc.token_client.refresh)

    def signed_in(self, tokens: "TokenSet", *, announce: bool) -> None:
        svc = self._svc
        svc.tokens.set(tokens)
        self.program_asked = None
        svc.telemetry.signed_in()
        self._schedule_refresh()
        svc.enter(SIGNED_IN)
        if announce:
            show(svc.presenter, ui.SignedInView(account=tokens.account))
            until = svc.clock.monotonic() + SIGNED_IN_SCREEN
            svc.timers.set(Timer.SIGNED_IN_SCREEN, until)
            svc.timers.set(Timer.DISPLAY, until)
        else:
            svc.reporter.show_status()

    def _schedule_refresh(self) -> None:
        svc = self._svc
        tokens = svc.tokens.get()
        if tokens is None:
            svc.timers.clear(Timer.REFRESH)
            return
        lifetime = max(1.0, tokens.expires_at - (tokens.obtained_at or tokens.expires_at - 3600))
        # A 5-minute margin on a 60-second token would refresh forever: cap
        # the margin at a quarter of the lifetime.
        from agent.auth.tokens import REFRESH_MARGIN
        margin = min(REFRESH_MARGIN, lifetime / 4)
        due = max(MIN_REFRESH_SPACING, tokens.refresh_due_in(svc.clock, margin))
        svc.timers.set(Timer.REFRESH, svc.clock.monotonic() + due)
        log.debug("token refresh in %.0f s", due)

    # -- refresh -------------------------------------------------------------------------

    def refresh_due(self) -> None:
        self._svc.timers.clear(Timer.REFRESH)
        self._svc.submit_net(Kind.REFRESH, self._svc.token_client.refresh)

    def on_refresh(self, event: Event) -> None:
        svc = self._svc
        if svc.state not in (STARTING, SIGNED_IN):
            return                  # signed out meanwhile (button hold): too late
        if event.error is None:
            if self.refresh_failures:
                svc.last_error = None
            self.refresh_failures = 0
            self._refresh_retry.reset()
            self.signed_in(event.value, announce=svc.state != SIGNED_IN)
            return
        exc = event.error
        if isinstance(exc, SignInRequired):
            svc.last_error = str(exc)
            svc.signin.require()
            return
        # Transient (network, 5xx): keep the current token, try again later.
        self.refresh_failures += 1
        delay = self._refresh_retry.next_delay()
        svc.last_error = str(exc)
        log.warning("token refresh failed: %s; retrying in %.0f s", exc, delay)
        svc.timers.set(Timer.REFRESH, svc.clock.monotonic() + delay)
        if svc.state == STARTING and svc.tokens.get() is not None:
            # Expired token, provider unreachable: keep reading; upload after refresh.
            svc.enter(SIGNED_IN)
        svc.reporter.changed()

    def on_tokens(self, event: Event) -> None:
        """The uploader refreshed after a 401 (the holder has the set already)."""
        if self._svc.tokens.get() is event.value:
            self._schedule_refresh()

    # -- sign-out ------------------------------------------------------------------------

    def sign_out(self, why: str) -> None:
        """Sign out now: the tokens are gone from here at once; the token file
        goes on the network worker (its lock may be held by a refresh over
        HTTP), then a new code is asked for, in that order."""
        svc = self._svc
        log.info("signing out (%s)", why)
        svc.tokens.clear()
        svc.timers.clear(Timer.REFRESH)
        svc.submit_net(Kind.SIGN_OUT, svc.token_client.sign_out)
        svc.signin.require()

    def on_sign_out(self, event: Event) -> None:
        svc = self._svc
        if event.error is not None:
            log.error("sign-out failed: %s", event.error)
            svc.last_error = str(event.error)
            svc.reporter.changed()
            return
        signed_out = event.value
        if signed_out:
            # RFC 7009 on the network worker, bounded: the local sign-out is done.
            client, tokens = svc.token_client, signed_out.tokens
            svc.submit_net(Kind.REVOKE, lambda: client.revoke(tokens))

    def on_revoke(self, event: Event) -> None:
        if event.error is not None:
            log.warning("could not revoke the refresh token: %s", event.error)
        elif event.value.outcome == "revoked":
            log.info("%s", event.value.line)
        else:
            log.warning("%s", event.value.line)

    # -- the token service (agent.tokenservice) ------------------------------------------

    def start_token_service(self) -> Any:
        svc = self._svc
        if not svc.config.token_service.enabled:
            return None
        from agent.tokenservice import serve
        events = svc.events
        return serve(svc.config.token_service, svc.token_client, clock=svc.clock,
                     gate=self.token_gate,
                     on_asked=lambda resource: events.post(Kind.TOKEN_ASKED, resource),
                     on_refused=lambda resource: events.post(Kind.TOKEN_REFUSED, resource))

    def token_gate(self) -> str | None:
        """None while tokens may be served (called on the token service's threads)."""
        state = self._svc.state
        if state in (SIGNED_IN, STARTING):
            return None
        if state == STOPPING:
            return "entra-agent is stopping; try again when it is back"
        where = "the code is on its screen" if state == AWAITING_USER else "a code is shown on its screen"
        return (f"entra-agent on this device is not signed in ({state.replace('_', ' ')}): a person "
                f"must sign in on the device ({where}; or run: sudo entra-agent status)")

    def on_token_asked(self, event: Event) -> None:
        # A program asked while nobody is signed in: say so on MQTT and the screen.
        svc = self._svc
        self.program_asked = (str(event.value), svc.clock.time())
        log.info("a program asked for a token for %s while not signed in", event.value)
        svc.signin.program_waiting()
        svc.reporter.changed()

    def on_token_refused(self, event: Event) -> None:
        # The provider refused the sign-in for a program's resource: check the
        # device's own sign-in now (a refresh); a revoked one asks for a new code.
        svc = self._svc
        if svc.state == SIGNED_IN:
            svc.timers.set(Timer.REFRESH, svc.clock.monotonic())
