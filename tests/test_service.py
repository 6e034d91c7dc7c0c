"""The service state machine on a FakeClock, against the real sandbox servers.

The loop is the real one (:meth:`Service.run_until`); the identity provider
and the receiver are real HTTP servers on 127.0.0.1 running on the same
FakeClock, so token lifetimes, code expiry and the retry timer are exercised
without sleeping.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time

import pytest

from agent import paths, ui
from agent.clock import SystemClock
from agent.profiles import Profile, ProfileStore
from agent.sandbox.idp import Fault
from agent.service import (
    AWAITING_USER,
    SIGN_IN_REQUIRED,
    SIGN_IN_RETRY_DELAY,
    SIGN_IN_STOPPED,
    SIGNED_IN,
    STARTING,
    Service,
)
from agent.tokenstore import TokenStore
from tests.fixtures_service import CLIENT_ID, RecordingPresenter, in_state, write_config  # noqa: F401


def test_first_start_signs_in_and_keeps_reading(make_service, idp, fake_clock):
    idp.auto_approve_after_polls = 1
    t0 = fake_clock.monotonic()
    service = make_service()
    assert service.run_until(in_state(SIGNED_IN), 5000)
    assert service.history == [STARTING, SIGN_IN_REQUIRED, AWAITING_USER, SIGNED_IN]
    shown = service.presenter.of(ui.SignInView)
    assert shown and shown[0].user_code and shown[0].verification_uri == idp.verification_uri
    assert shown[0].lifetime == 900
    assert service.presenter.of(ui.SignedInView)[-1].account == "ada@contoso.example"
    token_file = paths.token_dir() / "default.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

    # No endpoint configured: readings (2 sensors) are kept in the outbox.
    assert service.run_until(lambda s: s.readings_taken >= 6, 5000)
    assert service.outbox.depth() == service.readings_taken == 6
    assert fake_clock.monotonic() - t0 == 2 * 60         # three reads, one interval apart
    status = json.loads(paths.status_file().read_text())
    assert status["state"] == SIGNED_IN and status["account"] == "ada@contoso.example"
    assert status["pid"] == os.getpid()
    assert stat.S_IMODE(paths.status_file().stat().st_mode) == 0o644
    text = paths.status_file().read_text()
    for secret in idp.issued_secrets():
        assert secret not in text


def test_saved_sign_in_is_used_without_network(make_service, idp):
    idp.auto_approve_after_polls = 1
    first = make_service()
    assert first.run_until(in_state(SIGNED_IN), 5000)
    first.stop()
    assert first.run_until(lambda s: s.finished, 1000)
    before = idp.counts
    second = make_service()
    assert second.run_until(in_state(SIGNED_IN), 100)
    assert second.history == [STARTING, SIGNED_IN]
    assert idp.counts == before                    # cached token: nothing asked


def test_button_cancels_then_asks_for_a_new_code(make_service, idp):
    idp.code_lifetime = 10**6          # nobody approves; the code must not expire first
    service = make_service()
    assert service.run_until(in_state(AWAITING_USER), 5000)
    first_code = service.presenter.of(ui.SignInView)[-1].user_code
    service.post("press")
    assert service.run_until(in_state(SIGN_IN_STOPPED), 5000)
    assert isinstance(service.presenter.last, ui.CancelledView)
    assert service.presenter.wakes == 1
    service.post("press")
    assert service.run_until(in_state(AWAITING_USER), 5000)
    assert service.presenter.of(ui.SignInView)[-1].user_code != first_code
    assert idp.counts["devicecode"] == 2
    assert service.history[-3:] == [SIGN_IN_STOPPED, SIGN_IN_REQUIRED, AWAITING_USER]


def test_expired_code_stops_then_retry_timer_asks_again(make_service, idp, fake_clock):
    idp.code_lifetime = 60
    service = make_service()
    assert service.run_until(in_state(SIGN_IN_STOPPED), 5000)
    assert isinstance(service.presenter.last, ui.ExpiredView)
    stopped_at = fake_clock.monotonic()
    assert service.run_until(lambda s: s.history.count(AWAITING_USER) == 2, 5000)
    assert fake_clock.monotonic() - stopped_at >= SIGN_IN_RETRY_DELAY
    assert idp.counts["devicecode"] == 2


def test_declined_sign_in_stops(make_service, idp):
    idp.code_lifetime = 10**6
    service = make_service()
    assert service.run_until(in_state(AWAITING_USER), 5000)
    idp.decline()
    assert service.run_until(in_state(SIGN_IN_STOPPED), 5000)
    assert isinstance(service.presenter.last, ui.DeclinedView)


def test_revoked_refresh_token_means_sign_in_again(make_service, idp, fake_clock):
    idp.auto_approve_after_polls = 1
    idp.access_token_lifetime = 600
    service = make_service()
    assert service.run_until(in_state(SIGNED_IN), 5000)
    idp.revoke_refresh_tokens()
    assert service.run_until(lambda s: s.history.count(SIGNED_IN) == 2, 10000)
    assert service.history == [STARTING, SIGN_IN_REQUIRED, AWAITING_USER, SIGNED_IN,
                               SIGN_IN_REQUIRED, AWAITING_USER, SIGNED_IN]
    assert idp.counts["token.refresh_token"] == 1      # tried once, refused for good


def test_transient_refresh_failure_keeps_the_token(make_service, idp, fake_clock):
    idp.auto_approve_after_polls = 1
    idp.access_token_lifetime = 600
    service = make_service()
    assert service.run_until(in_state(SIGNED_IN), 5000)
    idp.queue_token_faults(Fault.status(503), Fault.drop())
    assert service.run_until(lambda s: s.last_error is not None, 10000)
    assert "HTTP 503" in service.last_error
    # The third attempt works; the error clears; the token was never dropped.
    assert service.run_until(lambda s: idp.counts["token.refresh_token"] >= 3
                             and s.last_error is None, 10000)
    assert service.history == [STARTING, SIGN_IN_REQUIRED, AWAITING_USER, SIGNED_IN]


def test_hold_signs_out_release_keeps(make_service, idp):
    idp.auto_approve_after_polls = 1
    service = make_service()
    assert service.run_until(in_state(SIGNED_IN), 5000)
    service.post("hold_start")
    assert service.run_until(lambda s: isinstance(s.presenter.last, ui.ConfirmSignOutView), 100)
    service.post("hold_cancel")
    assert service.run_until(lambda s: isinstance(s.presenter.last, ui.StatusView), 100)
    assert service.state == SIGNED_IN
    assert (paths.token_dir() / "default.json").exists()

    idp.auto_approve_after_polls = None
    idp.code_lifetime = 10**6
    service.post("hold_start")
    service.post("hold")
    assert service.run_until(in_state(AWAITING_USER), 5000)
    assert not (paths.token_dir() / "default.json").exists()
    assert service.history[-3:] == [SIGNED_IN, SIGN_IN_REQUIRED, AWAITING_USER]


def test_hold_revokes_the_refresh_token_where_the_provider_can(agent_dirs, make_service, idp):
    # An OpenID profile: discovery lists the sandbox's RFC 7009 endpoint.
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    ProfileStore(paths.profiles_file()).save(Profile(name="default", client_id=CLIENT_ID,
                                                     issuer=idp.issuer("organizations")))
    idp.auto_approve_after_polls = 1
    service = make_service()
    assert service.run_until(in_state(SIGNED_IN), 5000)
    refresh_token = service.tokens.get().refresh_token
    idp.auto_approve_after_polls = None
    idp.code_lifetime = 10**6
    service.post("hold_start")
    service.post("hold")
    # The local sign-out happens at once; the revocation runs on the network worker.
    assert service.run_until(lambda s: s.state == AWAITING_USER and idp.revoked, 5000)
    assert idp.revoked == [refresh_token]
    assert idp.refresh_token_state(refresh_token) == "revoked"


def test_wall_clock_jump_is_not_expiry(make_service, idp, fake_clock):
    idp.auto_approve_after_polls = 1
    service = make_service()                 # tokens live 3600 s: refresh at 3300 s
    assert service.run_until(in_state(SIGNED_IN), 5000)
    signed_in_at = fake_clock.monotonic()
    fake_clock.jump_wall(+3 * 365 * 86400)   # NTP finds the real date after boot
    taken = service.readings_taken
    assert service.run_until(lambda s: s.readings_taken >= taken + 10, 5000)
    fake_clock.jump_wall(-10 * 86400)
    assert service.run_until(lambda s: s.readings_taken >= taken + 20, 5000)
    assert idp.counts["token.refresh_token"] == 0
    assert service.state == SIGNED_IN
    assert service.run_until(lambda s: idp.counts["token.refresh_token"] == 1, 5000)
    elapsed = fake_clock.monotonic() - signed_in_at
    assert 3300 - 61 <= elapsed <= 3300 + 61          # on the monotonic schedule
    assert service.state == SIGNED_IN


def test_stop_spills_the_outbox_and_says_stopped(make_service, idp):
    idp.auto_approve_after_polls = 1
    service = make_service()
    assert service.run_until(lambda s: s.readings_taken >= 4, 5000)
    service.stop()
    assert service.run_until(lambda s: s.finished, 1000)
    assert service.presenter.closed
    assert service.history[-1] == "stopping"
    status = json.loads(paths.status_file().read_text())
    assert status["state"] == "stopped" and status["pid"] is None
    from agent.telemetry.outbox import Outbox
    with Outbox(paths.outbox_file()) as box:
        assert box.depth() == service.readings_taken


def test_nothing_secret_reaches_logs_views_or_status(make_service, idp, caplog):
    caplog.set_level("DEBUG")
    idp.auto_approve_after_polls = 1
    idp.access_token_lifetime = 400
    service = make_service()
    assert service.run_until(lambda s: idp.counts["token.refresh_token"] >= 2, 10000)
    idp.revoke_refresh_tokens()
    assert service.run_until(lambda s: s.history.count(SIGNED_IN) == 2, 10000)
    service.stop()
    service.run_until(lambda s: s.finished, 1000)
    secrets = idp.issued_secrets()
    assert len(secrets) >= 6
    haystack = caplog.text + repr(service.presenter.views) + paths.status_file().read_text()
    for secret in secrets:
        assert secret not in haystack


# -- telemetry through the loop ----------------------------------------------

def drained(receiver):
    return lambda s: s.outbox.depth() == 0 and len(receiver.unique_ids) == s.readings_taken


def test_readings_flow_and_short_tokens_are_refreshed(make_service, idp, receiver, fake_clock):
    idp.auto_approve_after_polls = 1
    idp.access_token_lifetime = 240          # refresh every 180 s (margin: a quarter)
    service = make_service(endpoint=receiver.url)
    assert service.run_until(lambda s: s.readings_taken >= 40, 20000)
    assert service.run_until(drained(receiver), 2000)
    # The receiver checks every bearer token against the provider's clock:
    # had a refresh been missed, uploads would have been 401s.
    assert idp.counts["token.refresh_token"] >= 3
    assert receiver.duplicates == 0
    assert service.history == [STARTING, SIGN_IN_REQUIRED, AWAITING_USER, SIGNED_IN]
    assert service.last_upload is not None


def test_readings_taken_while_signed_out_arrive_after_sign_in(make_service, idp, receiver):
    idp.auto_approve_after_polls = 1
    service = make_service(endpoint=receiver.url)
    assert service.run_until(lambda s: s.readings_taken >= 4 and s.outbox.depth() == 0, 5000)
    # The refresh token is revoked; the next 401 makes the uploader refresh:
    # refused for good, so a person must sign in again.
    idp.revoke_refresh_tokens()
    idp.auto_approve_after_polls = None      # a person will have to come
    idp.code_lifetime = 10**6
    receiver.queue_responses(401)            # the endpoint stops taking the token
    assert service.run_until(in_state(AWAITING_USER), 5000)
    assert service.history[-3:] == [SIGNED_IN, SIGN_IN_REQUIRED, AWAITING_USER]
    taken_before = service.readings_taken
    assert service.run_until(lambda s: s.readings_taken >= taken_before + 6, 20000)
    assert len(receiver.unique_ids) < service.readings_taken   # kept, not sent
    idp.approve()
    assert service.run_until(lambda s: s.history.count(SIGNED_IN) == 2, 20000)
    assert service.run_until(drained(receiver), 2000)


def test_endpoint_faults_back_off_and_nothing_is_lost(make_service, idp, receiver):
    idp.auto_approve_after_polls = 1
    receiver.queue_responses(503, (429, {"Retry-After": "120"}), 500, 401)
    service = make_service(endpoint=receiver.url)
    assert service.run_until(lambda s: isinstance(s.presenter.last, ui.OfflineView), 5000)
    assert service.run_until(lambda s: s.readings_taken >= 30, 20000)
    assert service.run_until(drained(receiver), 2000)
    assert receiver.duplicates == 0
    assert idp.counts["token.refresh_token"] >= 1      # the 401 made it refresh once
    assert service.last_error is None
    assert service.state == SIGNED_IN


def test_forbidden_pauses_uploads_and_reports(make_service, idp, receiver, fake_clock):
    from agent.telemetry.uploader import REFUSED_PAUSE

    idp.auto_approve_after_polls = 1
    receiver.queue_responses(403)
    service = make_service(endpoint=receiver.url)
    assert service.run_until(lambda s: s.last_error is not None, 5000)
    refused_at = fake_clock.monotonic()
    assert "HTTP 403" in service.last_error
    status = json.loads(paths.status_file().read_text())
    assert "HTTP 403" in (status["last_error"] or "")
    requests_before = receiver.accepted_batches
    assert service.run_until(lambda s: fake_clock.monotonic() >= refused_at + REFUSED_PAUSE - 60, 20000)
    assert receiver.accepted_batches == requests_before      # no retry during the pause
    assert service.run_until(drained(receiver), 20000)
    assert fake_clock.monotonic() >= refused_at + REFUSED_PAUSE


def test_status_file_follows_the_counters_at_most_every_status_refresh(make_service, idp, receiver,
                                                                      fake_clock):
    """``entra-agent status`` must show the last upload and the queue, yet the file
    is not rewritten at every reading: counters alone refresh it at most every
    STATUS_REFRESH seconds; a new error rewrites it at once."""
    from agent.service import STATUS_REFRESH
    idp.auto_approve_after_polls = 1
    service = make_service(endpoint=receiver.url, interval=5)
    assert service.run_until(lambda s: s.state == SIGNED_IN and len(receiver.unique_ids) >= 2, 5000)
    changes: list[float] = []
    seen = [paths.status_file().stat().st_ino]

    def watch(s):
        ino = paths.status_file().stat().st_ino
        if ino != seen[-1]:
            seen.append(ino)
            changes.append(fake_clock.monotonic())
        return s.readings_taken >= 60

    assert service.run_until(watch, 40000)
    assert service.run_until(drained(receiver), 2000)
    assert len(changes) >= 2                               # it did follow the counters
    gaps = [b - a for a, b in zip(changes, changes[1:])]
    assert min(gaps) >= STATUS_REFRESH                     # ... but not at every 5 s reading
    status = json.loads(paths.status_file().read_text())
    assert status["last_upload"] is not None
    receiver.queue_responses(503)
    ino = paths.status_file().stat().st_ino
    assert service.run_until(lambda s: s.last_error is not None, 5000)
    assert service.run_until(lambda s: paths.status_file().stat().st_ino != ino, 10)
    assert "HTTP 503" in json.loads(paths.status_file().read_text())["last_error"]


# -- the real button and LED on gpiozero's mock pins (real time) ----------------

def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def press(pin) -> None:
    """A short press on a mock pin, with the real button's thread and clock."""
    pin.drive_low()
    time.sleep(0.2)
    pin.drive_high()


def start_in_thread(service: Service) -> Service:
    service.thread = threading.Thread(target=service.run, name="service-under-test")
    service.thread.start()
    return service


def test_button_and_led_on_mock_pins(make_service, idp_realtime):
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    idp_realtime.auto_approve_after_polls = None
    service = make_service(clock=SystemClock(), provider=idp_realtime, pin_factory=factory,
                           extra="[button]\npin = 17\nhold_seconds = 2\n[led]\npin = 27\n")
    start_in_thread(service)
    button = factory.pin(17)
    assert wait_for(lambda: service.state == AWAITING_USER)
    assert service.led.mode == "waiting"

    press(button)                                                 # a short press: cancel
    assert wait_for(lambda: service.state == SIGN_IN_STOPPED)
    assert isinstance(service.presenter.last, ui.CancelledView)
    assert service.led.mode == "error"

    press(button)                                                 # again: a new code
    assert wait_for(lambda: service.state == AWAITING_USER)
    idp_realtime.approve()
    assert wait_for(lambda: service.state == SIGNED_IN)
    assert service.led.mode == "signed_in"

    button.drive_low()                                             # hold: confirm, then sign out
    assert wait_for(lambda: service.presenter.of(ui.ConfirmSignOutView), 3)
    assert wait_for(lambda: service.state != SIGNED_IN, 5)
    button.drive_high()
    assert wait_for(lambda: service.state == AWAITING_USER)
    assert not (paths.token_dir() / "default.json").exists()
    service.stop()
    service.thread.join(10)
    assert not service.thread.is_alive()
    assert service.led.mode == "off"


def test_status_file_while_waiting_has_the_address_not_the_code(make_service, idp):
    idp.code_lifetime = 10**6
    service = make_service()
    assert service.run_until(in_state(AWAITING_USER), 5000)
    code = service.presenter.of(ui.SignInView)[-1].user_code
    text = paths.status_file().read_text()
    status = json.loads(text)
    assert status["state"] == AWAITING_USER
    assert status["verification_uri"] == idp.verification_uri
    assert status["expires_at"].endswith("Z")
    assert code not in text and "user_code" not in status


def test_provider_down_at_sign_in_retries_soon(make_service, idp, fake_clock):
    from agent.service import REFRESH_RETRY_MIN

    idp.code_lifetime = 10**6
    idp.queue_devicecode_faults(Fault.status(503), Fault.drop())
    service = make_service()
    assert service.run_until(lambda s: idp.counts["devicecode"] >= 1 and s.state == SIGN_IN_STOPPED, 5000)
    assert isinstance(service.presenter.last, ui.ErrorView)
    assert "Cannot reach the sign-in service" in service.presenter.last.message
    failed_at = fake_clock.monotonic()
    assert service.run_until(in_state(AWAITING_USER), 5000)
    # Two failures, each wait drawn by the shared policy (at least 15 s, within
    # the first and second windows); far sooner than the 15-minute retry after
    # a stop. (+ up to one poll interval: the poller's first wait moves the clock.)
    from agent.backoff import TOKEN
    waited = fake_clock.monotonic() - failed_at
    assert REFRESH_RETRY_MIN * 2 <= waited <= TOKEN.window(1) + TOKEN.window(2) + idp.interval
    assert idp.counts["devicecode"] == 3


def test_a_failing_sensor_is_logged_once_not_every_interval(make_service, idp, caplog):
    """A sensor that fails all night is one warning, not one per reading (journal noise, SD wear)."""
    import logging
    service = make_service(extra='[[sensors]]\ntype = "cpu_temperature"\npath = "/nonexistent/temp"\n')
    with caplog.at_level(logging.INFO):
        assert service.run_until(lambda s: s.readings_taken >= 20, 5000)
    failing = [r for r in caplog.records if "sensor failing" in r.getMessage()]
    assert len(failing) == 1 and "does not exist" in failing[0].getMessage()


def test_a_refused_token_file_stops_the_agent_before_asking_anyone(make_service, idp):
    """A sign-in that could not be saved would waste a person's time: exit 6 instead."""
    import os

    from agent.errors import StorageError
    store = TokenStore(paths.token_dir())
    store.save("default", {"access_token": "x", "expires_at": 0, "scope": []})
    os.chmod(store.path("default"), 0o644)
    presenter = RecordingPresenter()
    service = make_service(presenter=presenter)
    with pytest.raises(StorageError, match="chmod 600") as info:
        service.run()
    assert info.value.exit_code == 6
    assert idp.counts["devicecode"] == 0
    assert any(isinstance(v, ui.ErrorView) and "readable" in v.message for v in presenter.views)
    assert service.finished


@pytest.mark.parametrize("expires_at", [float("nan"), "soon", None, 1e300])
def test_a_damaged_token_file_stops_the_agent_with_the_fix(make_service, idp, expires_at):
    """A poisoned token file (as an old version could write) is exit 6 with the fix, no traceback."""
    from agent.errors import StorageError
    paths.token_dir().mkdir(parents=True, mode=0o700, exist_ok=True)
    path = paths.token_dir() / "default.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"access_token": "x", "expires_at": expires_at, "scope": []}, f)
    presenter = RecordingPresenter()
    service = make_service(presenter=presenter)
    with pytest.raises(StorageError, match="is damaged") as info:
        service.run()
    assert info.value.exit_code == 6
    assert "entra-auth-cli logout --profile default" in str(info.value)
    assert idp.counts["devicecode"] == 0
