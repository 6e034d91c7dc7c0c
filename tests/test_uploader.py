"""agent.telemetry.uploader against the real local telemetry receiver (and,
for the token round trip, the real local identity provider), on a FakeClock."""

from __future__ import annotations

import email.utils
import logging
import random
import socket
import time

import pytest

from agent.auth.errors import SignInRequired
from agent.auth.tokens import TokenClient
from agent.backoff import UPLOAD
from agent.clock import FakeClock
from agent.errors import ConfigError
from agent.profiles import Profile
from agent.sandbox.receiver import TelemetryReceiver
from agent.telemetry.outbox import Outbox
from agent.telemetry.sensors import Reading, iso_utc, new_reading_id
from agent.telemetry.uploader import (
    MIN_REQUEST_SPACING,
    REFUSED_PAUSE,
    Uploader,
    start_jitter,
    upload_policy,
)
from agent.tokenstore import TokenStore

T0 = 1_800_000_000.0
GOOD = "tok-good-" + "x" * 40
FRESH = "tok-fresh-" + "y" * 40


def make(n: int, start: int = 0) -> list[Reading]:
    return [Reading(new_reading_id(T0 + i), "cpu_temperature", 40.0 + i % 10, "°C", iso_utc(T0 + i))
            for i in range(start, start + n)]


class Tokens:
    """The two token callables, counting calls (the real ones are TokenClient's)."""

    def __init__(self, current: str = GOOD, after_refresh: str = FRESH) -> None:
        self.current = current
        self.after_refresh = after_refresh
        self.refreshes = 0

    def token(self) -> str:
        return self.current

    def refresh(self) -> str:
        self.refreshes += 1
        self.current = self.after_refresh
        return self.current


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall=T0)


@pytest.fixture
def accepted_tokens() -> set[str]:
    return {GOOD, FRESH}


@pytest.fixture
def rx(accepted_tokens):
    with TelemetryReceiver(token_validator=lambda t: "ada" if t in accepted_tokens else None) as server:
        yield server


@pytest.fixture
def box(tmp_path):
    outbox = Outbox(tmp_path / "state" / "outbox.sqlite3")
    yield outbox
    outbox.close()


def uploader_for(url: str, clock: FakeClock, tokens: Tokens | None = None, **options) -> Uploader:
    tokens = tokens or Tokens()
    return Uploader(url, device_id="greenhouse-1", token=tokens.token, refresh_token=tokens.refresh,
                    clock=clock, rng=random.Random(7), **options)


def drain(uploader: Uploader, outbox: Outbox, clock: FakeClock, batch_max: int = 500,
          limit: int = 10_000) -> list:
    """Upload until the outbox is empty, waiting (on the fake clock) as told."""
    results = []
    for _ in range(limit):
        if outbox.depth() == 0:
            return results
        result = uploader.upload(outbox, batch_max)
        results.append(result)
        if result.retry_after:
            clock.advance(result.retry_after)
    raise AssertionError(f"outbox not drained: {outbox.depth()} left")


# ---------------------------------------------------------------- 2xx

def test_accepted_batch_is_acked_and_shaped_as_designed(rx, box, clock):
    readings = make(3)
    box.add(readings)
    up = uploader_for(rx.url, clock)
    result = up.upload(box, 500)
    assert (result.accepted, result.retry_after, result.error, result.permanent) == (3, None, None, False)
    assert result.status == 200 and result.ok
    assert box.depth() == 0
    got = rx.readings()
    assert [r["id"] for r in got] == [r.id for r in readings]
    assert got[0] == {"id": readings[0].id, "sensor": "cpu_temperature", "value": 40.0, "unit": "°C",
                      "time": "2027-01-15T08:00:00.000Z", "device_id": "greenhouse-1"}
    assert rx.auth_headers == ["Bearer"]
    # nothing to do: no POST at all
    empty = up.upload(box, 500)
    assert (empty.accepted, empty.retry_after, empty.error, empty.attempted) == (0, None, None, False)
    assert rx.requests == 1


# ---------------------------------------------------------------- 401

def test_401_refreshes_once_and_retries(rx, box, clock, accepted_tokens):
    accepted_tokens.discard(GOOD)          # the cached token is no longer accepted
    tokens = Tokens()
    box.add(make(5))
    result = uploader_for(rx.url, clock, tokens).upload(box, 500)
    assert result.accepted == 5 and result.error is None
    assert tokens.refreshes == 1
    assert rx.statuses == [401, 200]


def test_401_after_refresh_is_reported_and_readings_kept(rx, box, clock, accepted_tokens, caplog):
    caplog.set_level(logging.DEBUG)
    accepted_tokens.clear()
    tokens = Tokens()
    box.add(make(5))
    up = uploader_for(rx.url, clock, tokens)
    result = up.upload(box, 500)
    assert result.accepted == 0 and result.permanent
    assert "rejects the token" in result.error
    assert result.retry_after == REFUSED_PAUSE
    assert tokens.refreshes == 1 and rx.statuses == [401, 401]
    assert box.depth() == 5 and box.on_disk() == 5      # spilled, not lost
    for secret in (GOOD, FRESH):
        assert secret not in result.error and secret not in caplog.text


def test_sign_in_errors_from_the_token_callable_propagate(rx, box, clock):
    def no_token() -> str:
        raise SignInRequired("no saved sign-in for profile 'default'")

    up = Uploader(rx.url, device_id="d", token=no_token, refresh_token=no_token, clock=clock)
    box.add(make(4))
    with pytest.raises(SignInRequired):
        up.upload(box, 500)
    assert box.depth() == 4 and box.on_disk() == 4
    assert rx.requests == 0


# ---------------------------------------------------------------- 403 and friends

@pytest.mark.parametrize("status", [403, 404, 405, 410, 302])
def test_refusals_keep_readings_and_pause(rx, box, clock, status):
    rx.queue_responses((status, {"Location": "https://elsewhere.example/t"}) if status == 302 else status)
    box.add(make(6))
    up = uploader_for(rx.url, clock)
    result = up.upload(box, 500)
    assert result.permanent and result.accepted == 0 and result.dead_lettered == 0
    assert f"HTTP {status}" in result.error and "\n" not in result.error
    assert result.retry_after == REFUSED_PAUSE
    assert box.depth() == 6 and box.dead_letters == 0
    if status == 403:
        assert "grant this device's account access" in result.error
    # not retried before the pause is over
    early = up.upload(box, 500)
    assert not early.attempted and early.retry_after == REFUSED_PAUSE and early.permanent
    assert rx.requests == 1
    clock.advance(REFUSED_PAUSE)
    assert up.upload(box, 500).accepted == 6


# ---------------------------------------------------------------- 413

def test_413_splits_down_to_what_the_endpoint_takes(rx, box, clock):
    rx.max_batch = 100
    readings = make(1000)
    box.add(readings)
    up = uploader_for(rx.url, clock)
    results = drain(up, box, clock)
    assert sum(r.accepted for r in results) == 1000
    assert all(r.error is None for r in results)
    assert max(rx.batch_sizes) <= 100
    assert rx.unique_ids == {r.id for r in readings} and rx.duplicates == 0
    assert up.batch_limit is not None and up.batch_limit <= 100
    # later uploads start at the learnt size: no more 413s
    before = rx.statuses.count(413)
    box.add(make(300, start=1000))
    drain(up, box, clock)
    assert rx.statuses.count(413) == before


def test_a_single_reading_too_large_is_dead_lettered(rx, box, clock):
    rx.max_batch = 0
    box.add(make(4))
    result = uploader_for(rx.url, clock).upload(box, 500)
    assert result.dead_lettered == 4 and result.permanent and result.retry_after is None
    assert "too large" in result.error
    assert box.depth() == 0 and box.dead_letters == 4


# ---------------------------------------------------------------- other 4xx

def test_bad_readings_are_dead_lettered_and_the_next_batch_goes_on(rx, box, clock):
    bad = Reading(new_reading_id(T0), "s", 1.0, None, "2027-01-15T10:00:00+02:00")  # not UTC
    box.add([bad])
    box.add(make(3, start=1))
    up = uploader_for(rx.url, clock)
    first = up.upload(box, 1)
    assert first.dead_lettered == 1 and first.permanent and first.retry_after is None
    assert "HTTP 400" in first.error and "readings[0].time" in first.error
    clock.advance(MIN_REQUEST_SPACING)        # never two POSTs within a second
    second = up.upload(box, 500)
    assert second.accepted == 3 and second.error is None
    assert box.dead_letters == 1 and box.depth() == 0


def test_422_is_dead_lettered(rx, box, clock):
    rx.queue_responses(422)
    box.add(make(2))
    result = uploader_for(rx.url, clock).upload(box, 500)
    assert result.dead_lettered == 2 and "HTTP 422" in result.error and "scripted" in result.error


# ---------------------------------------------------------------- backoff

def test_429_retry_after_seconds_is_honoured(rx, box, clock):
    rx.queue_responses((429, {"Retry-After": "7"}))
    box.add(make(2))
    up = uploader_for(rx.url, clock)
    result = up.upload(box, 500)
    # A floor with jitter on top (spread: as long as the wait, at least the first window).
    assert 7 <= result.retry_after <= 7 + max(7, UPLOAD.window(1))
    assert not result.permanent and result.status == 429
    assert box.on_disk() == 2                 # spilled on failure
    clock.advance(6.5)
    early = up.upload(box, 500)
    assert not early.attempted and early.retry_after == pytest.approx(result.retry_after - 6.5)
    assert rx.requests == 1
    clock.advance(early.retry_after)
    assert up.upload(box, 500).accepted == 2


def test_503_retry_after_http_date_is_read_against_the_date_header(rx, box, clock):
    # The fake clock is years away from the receiver's real Date header, as
    # on a board without an RTC: the date counts from the server's Date.
    assert abs(clock.time() - time.time()) > 3600
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    rx.queue_responses((503, {"Retry-After": when}))
    box.add(make(1))
    result = uploader_for(rx.url, clock).upload(box, 500)
    assert 29 <= result.retry_after <= 31 + 31


@pytest.mark.parametrize("header", ["0", "Thu, 01 Jan 2015 00:00:00 GMT"])
def test_retry_after_zero_or_past_is_not_a_tight_loop(rx, box, clock, header):
    """Retry-After: 0 or a past date: never sooner than a second, whatever the server says."""
    rx.queue_responses(*([(503, {"Retry-After": header})] * 50))
    box.add(make(1))
    up = uploader_for(rx.url, clock)
    start = clock.monotonic()
    sent = []
    while clock.monotonic() - start < 10.0:
        result = up.upload(box, 500)
        if result.attempted:
            sent.append(clock.monotonic())
            assert result.retry_after >= 1.0
        clock.advance(max(0.01, result.retry_after or 0.01))
    assert sent and all(b - a >= MIN_REQUEST_SPACING for a, b in zip(sent, sent[1:]))
    assert len(sent) <= 10


def test_exponential_backoff_with_full_jitter_and_reset(rx, box, clock):
    rx.queue_responses(*([503] * 12))
    box.add(make(3))
    up = uploader_for(rx.url, clock)
    waits = []
    for attempt in range(1, 13):
        result = up.upload(box, 500)
        assert result.error and "HTTP 503" in result.error and not result.permanent
        assert UPLOAD.minimum <= result.retry_after <= UPLOAD.window(attempt)
        waits.append(result.retry_after)
        clock.advance(result.retry_after)
    assert up.failures == 12
    assert len(set(waits)) == 12              # jittered, not a fixed ladder
    assert max(waits[8:]) > UPLOAD.base * 2 ** 4   # the window did grow
    ok = up.upload(box, 500)
    assert ok.accepted == 3 and up.failures == 0
    assert len(rx.unique_ids) == 3 and rx.duplicates == 0


@pytest.mark.parametrize("status", [408, 425, 500, 502, 504])
def test_other_transient_statuses_back_off(rx, box, clock, status):
    rx.queue_responses(status)
    box.add(make(1))
    result = uploader_for(rx.url, clock).upload(box, 500)
    assert not result.permanent and result.retry_after is not None and result.dead_lettered == 0
    assert box.depth() == 1


def test_dropped_connection_backs_off(rx, box, clock):
    rx.drop_rate = 1.0
    box.add(make(2))
    result = uploader_for(rx.url, clock).upload(box, 500)
    assert result.status is None and not result.permanent
    assert "closed without an answer" in result.error or "reset" in result.error
    assert box.depth() == 2


def test_connection_refused(box, clock):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    box.add(make(1))
    result = uploader_for(f"http://127.0.0.1:{port}/telemetry", clock).upload(box, 500)
    assert result.error == f"cannot reach 127.0.0.1:{port}: the connection was refused"
    assert result.retry_after is not None and box.depth() == 1


def test_dns_failure(box, clock):
    box.add(make(1))
    result = uploader_for("https://no-such-host.invalid/telemetry", clock).upload(box, 500)
    assert "the DNS lookup failed" in result.error
    assert not result.permanent and box.depth() == 1


def test_timeout(box, clock):
    # A server that accepts connections (the kernel's backlog) and never answers.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(5)
        port = server.getsockname()[1]
        box.add(make(1))
        result = uploader_for(f"http://127.0.0.1:{port}/t", clock, timeout=0.3).upload(box, 500)
    assert result.error == f"127.0.0.1:{port} did not answer within 0.3 s"
    assert not result.permanent and box.depth() == 1


# ---------------------------------------------------------------- faults at scale

def test_flaky_endpoint_loses_nothing_and_counts_nothing_twice(rx, box, clock):
    rx.fail_rate = 0.3
    rx.drop_rate = 0.1
    readings = make(3000)
    for start in range(0, 3000, 100):
        box.add(readings[start:start + 100])
    up = uploader_for(rx.url, clock)
    results = drain(up, box, clock, batch_max=250)
    assert sum(r.accepted for r in results) == 3000
    assert rx.unique_ids == {r.id for r in readings}
    assert rx.duplicates == 0
    assert any(r.error for r in results)       # the faults did happen
    assert box.dead_letters == 0 and box.dropped == 0


def test_backlog_drains_oldest_first_in_large_batches(rx, tmp_path, clock):
    box = Outbox(tmp_path / "outbox.sqlite3", durability="strict")
    backlog = make(1200)
    box.add(backlog)
    up = uploader_for(rx.url, clock)
    first = up.upload(box, 500)
    assert first.accepted == 500 and first.ok
    # More is waiting: go on, but not faster than one POST a second.
    assert first.retry_after == MIN_REQUEST_SPACING
    assert [r["id"] for r in rx.readings()] == [r.id for r in backlog[:500]]
    fresh = make(1, start=9999)
    box.add(fresh)
    assert not up.upload(box, 500).attempted
    clock.advance(first.retry_after)
    up.upload(box, 500)
    assert fresh[0].id in rx.unique_ids         # not starved behind the backlog
    drain(up, box, clock)
    assert rx.batch_sizes == [500, 500, 201]
    assert rx.unique_ids == {r.id for r in backlog + fresh}
    box.close()


def test_backlog_survives_a_restart_of_the_outbox(rx, tmp_path, clock):
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    readings = make(40)
    box.add(readings)
    rx.queue_responses(503)
    up = uploader_for(rx.url, clock)
    failed = up.upload(box, 500)
    assert failed.error and box.on_disk() == 40
    box.close()
    again = Outbox(path)
    clock.advance(failed.retry_after)
    assert up.upload(again, 500).accepted == 40
    assert rx.unique_ids == {r.id for r in readings}
    again.close()


# ---------------------------------------------------------------- real tokens

def test_real_tokens_expire_refresh_and_never_leak(idp, fake_clock, tmp_path, box, caplog):
    caplog.set_level(logging.DEBUG)
    profile = Profile(name="default", client_id="00000000-0000-0000-0000-000000000001",
                      tenant_id="organizations", authority_host=idp.base_url).validated()
    client = TokenClient(profile, store=TokenStore(tmp_path / "tokens"), clock=fake_clock)
    authorization = client.request_code()
    idp.approve(authorization.user_code)
    client.poll(authorization)
    with TelemetryReceiver(token_validator=idp.validate_access_token) as receiver:
        up = Uploader(receiver.url, device_id="greenhouse-1",
                      token=lambda: client.cached().access_token,   # deliberately never refreshes
                      refresh_token=lambda: client.refresh().access_token, clock=fake_clock)
        box.add(make(10))
        assert up.upload(box, 500).accepted == 10
        fake_clock.advance(2 * 3600)          # the access token has expired
        box.add(make(10, start=10))
        result = up.upload(box, 500)
        assert result.accepted == 10 and result.error is None
        assert receiver.statuses == [200, 401, 200]
        idp.revoke_refresh_tokens()
        fake_clock.advance(2 * 3600)
        box.add(make(5, start=20))
        with pytest.raises(SignInRequired):
            up.upload(box, 500)
        assert box.depth() == 5
    secrets = idp.issued_secrets()
    assert secrets
    for secret in secrets:
        assert secret not in caplog.text


# ---------------------------------------------------------------- helpers

def test_start_jitter_is_stable_and_spread():
    assert start_jitter("greenhouse-1", 60) == start_jitter("greenhouse-1", 60)
    values = [start_jitter(f"device-{i}", 60) for i in range(1000)]
    assert all(0 <= v < 60 for v in values)
    # spread over the interval: every 6 s slot is used by a fleet of 1000
    assert len({int(v // 6) for v in values}) == 10
    assert start_jitter("x", 0) == 0


def test_upload_policy_follows_the_interval():
    """A device reporting every minute does not retry every two seconds."""
    assert upload_policy(1).base == UPLOAD.base and upload_policy(1).cap == UPLOAD.cap
    assert upload_policy(60).base == 120 and upload_policy(60).minimum == UPLOAD.minimum
    assert upload_policy(3600).cap == 7200


def test_plain_http_is_refused_off_loopback(clock):
    with pytest.raises(ConfigError, match="https"):
        uploader_for("http://api.example.com/telemetry", clock)


def test_a_netrc_entry_cannot_replace_the_bearer_token(rx, box, clock, tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password elsewhere\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    box.add(make(1))
    assert uploader_for(rx.url, clock).upload(box, 500).accepted == 1
    assert rx.auth_headers == ["Bearer"]


def test_a_long_outage_is_one_warning_and_one_recovery_line(rx, box, clock, caplog):
    """An endpoint down all night must not write a warning per attempt to the journal."""
    box.add(make(5))
    up = uploader_for(rx.url, clock)
    rx.queue_responses(503, 503, 503, 503)
    with caplog.at_level(logging.DEBUG, logger="agent.telemetry.uploader"):
        for _ in range(5):
            clock.advance(up.wait_remaining())
            up.upload(box, 500)
    by_level = [(r.levelname, r.getMessage()) for r in caplog.records]
    warnings = [m for level, m in by_level if level == "WARNING"]
    infos = [m for level, m in by_level if level == "INFO"]
    assert len(warnings) == 1 and "503" in warnings[0]
    assert len(infos) == 1 and "accepts readings again after 4 failed attempts" in infos[0]
    assert box.depth() == 0
