"""The service's answers to Home Assistant's buttons (FakeClock, real sandbox servers)."""

from __future__ import annotations

from agent.homeassistant import COMMAND_NEW_CODE, COMMAND_SIGN_OUT, SIGN_OUT_CONFIRM_WINDOW
from agent.service import (
    AWAITING_USER,
    HA_NEW_CODE_SPACING,
    SIGN_IN_REQUIRED,
    SIGN_IN_STOPPED,
    SIGNED_IN,
)
from tests.fixtures_service import in_state


def test_new_code_while_waiting_and_after_a_stop(make_service, idp, fake_clock):
    service = make_service()
    assert service.run_until(in_state(AWAITING_USER), 2000)
    first = idp.wait_for_code()
    service.post("ha_command", COMMAND_NEW_CODE)
    assert service.run_until(lambda s: s.history.count(AWAITING_USER) == 2
                             and s.state == AWAITING_USER, 2000)
    assert idp.wait_for_code() != first or len(idp.pending_user_codes()) == 2
    assert service.history[-3:] == [AWAITING_USER, SIGN_IN_REQUIRED, AWAITING_USER]
    # A second press right away is ignored: a broker peer cannot flood the provider.
    requests = idp.counts["devicecode"]
    service.post("ha_command", COMMAND_NEW_CODE)
    service.run_until(lambda s: False, 50)
    assert idp.counts["devicecode"] == requests and service.history.count(AWAITING_USER) == 2
    # After the spacing, and from a stopped sign-in, a press asks again.
    idp.expire()
    assert service.run_until(in_state(SIGN_IN_STOPPED), 5000)
    fake_clock.advance(HA_NEW_CODE_SPACING)
    service.post("ha_command", COMMAND_NEW_CODE)
    assert service.run_until(in_state(AWAITING_USER), 2000)
    assert idp.counts["devicecode"] == requests + 1


def test_new_code_and_sign_out_do_nothing_in_the_wrong_state(make_service, idp):
    service = make_service()
    assert service.run_until(in_state(AWAITING_USER), 2000)
    service.post("ha_command", COMMAND_SIGN_OUT)          # not signed in: nothing to sign out
    service.run_until(lambda s: False, 50)
    assert service.state == AWAITING_USER
    idp.approve()
    assert service.run_until(in_state(SIGNED_IN), 2000)
    requests = idp.counts["devicecode"]
    service.post("ha_command", COMMAND_NEW_CODE)          # signed in: no new code
    service.run_until(lambda s: False, 50)
    assert service.state == SIGNED_IN and idp.counts["devicecode"] == requests


def test_sign_out_needs_a_second_press_within_the_window(make_service, idp, fake_clock):
    idp.auto_approve_after_polls = 1
    service = make_service()
    assert service.run_until(in_state(SIGNED_IN), 5000)
    service.post("ha_command", COMMAND_SIGN_OUT)
    # (the state, as published over MQTT, says a confirmation is awaited)
    assert service.run_until(lambda s: "sign_out_confirm_until" in s._status(), 20)
    assert service.state == SIGNED_IN
    assert service._status()["sign_out_confirm_until"].endswith("Z")
    # Too late: the window passed, the press only asks again.
    fake_clock.advance(SIGN_OUT_CONFIRM_WINDOW + 1)
    assert "sign_out_confirm_until" not in service._status()
    service.post("ha_command", COMMAND_SIGN_OUT)
    assert service.run_until(lambda s: "sign_out_confirm_until" in s._status(), 20)
    assert service.state == SIGNED_IN
    # Within the window: signed out, and a fresh sign-in begins.
    fake_clock.advance(SIGN_OUT_CONFIRM_WINDOW - 1)
    idp.auto_approve_after_polls = None
    service.post("ha_command", COMMAND_SIGN_OUT)
    assert service.run_until(in_state(AWAITING_USER), 2000)
    assert SIGN_IN_REQUIRED in service.history[-2:]
    assert service.token_client.cached() is None              # the tokens are gone
