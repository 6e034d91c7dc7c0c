"""What people do to the agent, on the loop thread: the button and Home Assistant's buttons.

A press wakes the screen and means what the state says (cancel the code,
ask for a new one, show the status); holding the button while signed in
counts down on the screen, then signs out. Home Assistant's "New code" is
rate-limited; its "Sign out" asks to be pressed twice, like the hold.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agent import ui
from agent.report import show
from agent.service.events import Event
from agent.service.timers import Timer
from agent.states import AWAITING_USER, SIGN_IN_STOPPED, SIGNED_IN

if TYPE_CHECKING:  # pragma: no cover
    from agent.service.loop import Service

__all__ = ["Controls", "HA_NEW_CODE_SPACING"]

log = logging.getLogger(__name__)

#: Seconds between two sign-in codes asked for from Home Assistant (whoever
#: can publish on the broker must not make the agent flood the provider).
HA_NEW_CODE_SPACING = 10.0


class Controls:
    """The button's events and Home Assistant's commands."""

    def __init__(self, service: "Service") -> None:
        self._svc = service
        self._ha_code_at = float("-inf")
        self._sign_out_armed_wall: float | None = None

    def on_press(self, event: Event) -> None:
        svc = self._svc
        svc.presenter.wake()
        if svc.state == AWAITING_USER:
            log.info("sign-in cancelled with the button")
            svc.signin.cancel_by_button()
        elif svc.state == SIGN_IN_STOPPED:
            log.info("new sign-in code requested with the button")
            svc.signin.require()
        elif svc.state == SIGNED_IN:
            svc.reporter.show_status()

    def on_hold_start(self, event: Event) -> None:
        svc = self._svc
        svc.presenter.wake()
        if svc.state != SIGNED_IN:
            return
        # The button calls hold_start after its confirm delay; the hold
        # itself comes at hold_seconds from the press.
        hold = float(svc.config.button.hold_seconds if svc.config.button else 5.0)
        hold -= float(getattr(svc.button, "confirm_after", 0.0) or 0.0)
        now = svc.clock.monotonic()
        svc.timers.set(Timer.HOLD, now + max(0.0, hold))
        svc.timers.set(Timer.TICK, now)

    def on_hold_cancel(self, event: Event) -> None:
        svc = self._svc
        if svc.timers.get(Timer.HOLD) is None:
            return
        svc.timers.clear(Timer.HOLD, Timer.TICK)
        if svc.state == SIGNED_IN:
            svc.reporter.show_status()

    def on_hold(self, event: Event) -> None:
        svc = self._svc
        svc.timers.clear(Timer.HOLD, Timer.TICK)
        if svc.state == SIGNED_IN:
            svc.account.sign_out("button held")

    def tick(self) -> bool:
        """The hold countdown on screen; False when no hold is on."""
        svc = self._svc
        until = svc.timers.get(Timer.HOLD)
        if until is None:
            return False
        show(svc.presenter, ui.ConfirmSignOutView(seconds_left=max(0.0, until - svc.clock.monotonic())))
        return True

    def on_ha_command(self, event: Event) -> None:
        # A Home Assistant button (agent.status only passes enabled ones).
        from agent.homeassistant import COMMAND_NEW_CODE, COMMAND_SIGN_OUT, SIGN_OUT_CONFIRM_WINDOW

        svc = self._svc
        now = svc.clock.monotonic()
        if event.value == COMMAND_NEW_CODE:
            if svc.state not in (AWAITING_USER, SIGN_IN_STOPPED):
                log.info("Home Assistant asked for a new sign-in code while %s: nothing to do",
                         svc.state)
            elif now - self._ha_code_at < HA_NEW_CODE_SPACING:
                log.info("Home Assistant asked for another sign-in code within %.0f s: ignored",
                         HA_NEW_CODE_SPACING)
            else:
                self._ha_code_at = now
                log.info("new sign-in code requested from Home Assistant")
                svc.signin.require()
        elif event.value == COMMAND_SIGN_OUT:
            if svc.state != SIGNED_IN:
                log.info("Home Assistant asked to sign out while %s: nothing to do", svc.state)
            elif (armed := svc.timers.get(Timer.SIGN_OUT_ARMED)) is not None and now <= armed:
                svc.timers.clear(Timer.SIGN_OUT_ARMED)
                self._sign_out_armed_wall = None
                svc.account.sign_out("Sign out pressed twice in Home Assistant")
            else:
                # Like the physical button's hold: a single press only asks.
                svc.timers.set(Timer.SIGN_OUT_ARMED, now + SIGN_OUT_CONFIRM_WINDOW)
                self._sign_out_armed_wall = svc.clock.time() + SIGN_OUT_CONFIRM_WINDOW
                log.info("Sign out pressed in Home Assistant: press it again within %.0f s "
                         "to sign out", SIGN_OUT_CONFIRM_WINDOW)
                svc.reporter.publish()

    def sign_out_confirm_until(self) -> float | None:
        """The wall-clock end of a Home Assistant "Sign out" confirmation window."""
        svc = self._svc
        armed = svc.timers.get(Timer.SIGN_OUT_ARMED)
        if armed is None or svc.clock.monotonic() > armed or svc.state != SIGNED_IN:
            return None
        return self._sign_out_armed_wall
