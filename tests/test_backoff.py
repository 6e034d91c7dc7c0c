"""The shared retry policy (agent/backoff.py): bounds, spread, caps, Retry-After, overflow.

Everything runs on injected randomness and the fake clock: no test sleeps.
"""

from __future__ import annotations

import email.utils
import random
import statistics

import pytest

from agent.backoff import (
    DECORRELATED,
    DEVICE_CODE_POLL,
    MQTT_RECONNECT,
    RETRY_AFTER_MAX,
    TOKEN,
    UPLOAD,
    Backoff,
    Retry,
    http_date,
    parse_retry_after,
    retry_after_wait,
)
from agent.clock import FakeClock

NOW = 1_800_000_000.0


def fmt(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


@pytest.mark.parametrize("policy", [UPLOAD, TOKEN, DEVICE_CODE_POLL, MQTT_RECONNECT,
                                    Backoff(base=2, cap=300, minimum=1, jitter=DECORRELATED)])
def test_every_wait_is_within_minimum_and_cap_and_the_window(policy):
    retry = Retry(policy, rng=random.Random(1))
    for attempt in range(1, 200):
        wait = retry.next_delay()
        assert policy.minimum <= wait <= policy.cap
        if policy.jitter != DECORRELATED:
            assert wait <= policy.window(attempt)
    assert retry.attempts == 199


def test_the_window_doubles_up_to_the_cap():
    policy = Backoff(base=2.0, cap=300.0, minimum=1.0)
    assert [policy.window(n) for n in range(1, 11)] == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert policy.window(0) == 2.0             # before any failure: the first window


def test_no_overflow_at_ten_thousand_failures():
    """2 ** 1024 as a float raised OverflowError at the 1,025th failure in a row."""
    for policy in (UPLOAD, TOKEN, DEVICE_CODE_POLL, MQTT_RECONNECT,
                   Backoff(base=2, cap=300, jitter=DECORRELATED)):
        retry = Retry(policy, rng=random.Random(3))
        waits = [retry.next_delay() for _ in range(10_000)]
        assert retry.attempts == 10_000
        assert all(policy.minimum <= w <= policy.cap for w in waits)
        assert policy.window(10_000) == policy.cap
        assert policy.delay(10**9, random.Random(0)) <= policy.cap


def test_full_jitter_spreads_a_fleet_over_the_whole_window():
    """1,000 devices failing together retry all over [minimum, window], not at one moment."""
    policy = Backoff(base=60.0, cap=300.0, minimum=1.0)
    rng = random.Random(5)
    first = [policy.delay(1, rng) for _ in range(1000)]
    assert 1.0 <= min(first) < 3.0 and 57.0 < max(first) <= 60.0
    per_second = [0] * 60
    for wait in first:
        per_second[int(wait)] += 1
    assert max(per_second) <= 50                   # <= 5 % of the fleet in any one second
    assert statistics.pstdev(first) > 15           # uniform over 59 s: about 17
    fifth = [policy.delay(5, rng) for _ in range(1000)]
    assert max(fifth) > 250                        # the window grew to the cap


def test_decorrelated_jitter_grows_from_the_last_wait_and_stays_capped():
    policy = Backoff(base=2.0, cap=60.0, minimum=1.0, jitter=DECORRELATED)
    retry = Retry(policy, rng=random.Random(9))
    waits = [retry.next_delay() for _ in range(50)]
    assert all(2.0 <= w <= 60.0 for w in waits)
    assert waits[0] <= 6.0                         # uniform(base, 3 * base)
    assert max(waits) > 30                         # grows towards the cap
    assert len(set(waits)) == 50


def test_reset_starts_again_from_the_first_window():
    retry = Retry(Backoff(base=2.0, cap=300.0, minimum=1.0), rng=random.Random(2))
    for _ in range(20):
        retry.next_delay()
    retry.reset()
    assert retry.attempts == 0 and retry.last_delay is None
    assert retry.next_delay() <= 2.0


def test_policies_are_checked():
    with pytest.raises(ValueError):
        Backoff(base=10, cap=5)
    with pytest.raises(ValueError):
        Backoff(base=1, cap=5, minimum=6)
    with pytest.raises(ValueError):
        Backoff(base=1, cap=5, jitter="none")


# ---------------------------------------------------------------- Retry-After

def test_retry_after_seconds_and_dates():
    assert parse_retry_after("120") == 120
    assert parse_retry_after(" 7 ") == 7
    assert parse_retry_after("0") == 0
    assert parse_retry_after("999999") == RETRY_AFTER_MAX
    assert parse_retry_after("9" * 10_000) == RETRY_AFTER_MAX   # no giant int()
    assert parse_retry_after(fmt(NOW + 45), now_wall=NOW) == 45
    assert parse_retry_after(fmt(NOW - 45), now_wall=NOW) == 0      # a past date
    for junk in ("soon", "-5", "1.5", "", None, "Mon, 99 Foo 2026 99:99:99 GMT", "٣"):
        assert parse_retry_after(junk, now_wall=NOW) is None


def test_a_future_date_is_read_against_the_responses_date_header_not_the_local_clock():
    """A board without an RTC whose clock runs a day ahead still waits 30 s, not 0."""
    server_now = NOW
    board_clock = FakeClock(wall=server_now + 86_400)        # a day ahead
    seconds = parse_retry_after(fmt(server_now + 30), date=fmt(server_now),
                                now_wall=board_clock.time())
    assert seconds == 30
    # ...and a board a day behind does not wait a day.
    assert parse_retry_after(fmt(server_now + 30), date=fmt(server_now),
                             now_wall=server_now - 86_400) == 30
    # Without a (readable) Date header the local clock is all there is.
    assert parse_retry_after(fmt(server_now + 30), date="garbage", now_wall=server_now) == 30
    assert parse_retry_after(fmt(server_now + 30), date=None, now_wall=None) is None
    assert http_date(fmt(NOW)) == NOW and http_date("nope") is None


@pytest.mark.parametrize("seconds", [0.0, 0.2, 1.0, 5.0, 120.0])
def test_retry_after_is_a_floor_with_a_minimum_and_jitter(seconds):
    policy = UPLOAD
    rng = random.Random(11)
    waits = [retry_after_wait(seconds, policy, 1, rng) for _ in range(1000)]
    floor = max(seconds, policy.retry_after_min)
    spread = max(policy.retry_after_jitter, policy.retry_after_spread * floor, policy.window(1))
    assert all(floor <= w <= floor + spread for w in waits)
    assert min(waits) >= 1.0                          # Retry-After: 0 is not a tight loop
    assert max(waits) - min(waits) > spread * 0.9     # spread out, not one moment


def test_a_fleet_told_the_same_date_spreads_over_as_long_as_it_waits():
    """1,000 devices told "come back at T" (60 s from now) arrive over ~60 s, not in one second."""
    rng = random.Random(4)
    arrivals = [retry_after_wait(60.0, UPLOAD, 1, rng) for _ in range(1000)]
    per_second: dict[int, int] = {}
    for t in arrivals:
        per_second[int(t)] = per_second.get(int(t), 0) + 1
    assert min(arrivals) >= 60.0 and max(arrivals) <= 120.0
    assert max(per_second.values()) <= 50             # <= 5 % in any one second


def test_retry_counts_retry_after_answers_too():
    retry = Retry(UPLOAD, rng=random.Random(1))
    assert retry.after_retry_after(0) >= 1.0
    assert retry.after_retry_after(7) >= 7.0
    assert retry.attempts == 2
    retry.reset()
    assert retry.attempts == 0


def test_mqtt_reconnects_wait_what_the_policy_draws_not_pahos_doubling():
    """Against a port nobody listens on, every wait between attempts is a jittered draw."""
    import socket
    import time

    from agent.config import MqttConfig
    from agent.status import StatusPublisher, reconnect_policy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nobody = s.getsockname()[1]

    clock = FakeClock()
    policy = reconnect_policy(60.0)
    pub = StatusPublisher(MqttConfig(host="127.0.0.1", port=nobody, keepalive=30), device_id="dev-1", first_connect_jitter=0.0, reconnect=policy,
                          clock=clock, rng=random.Random(3))
    pub.start()
    deadline = time.monotonic() + 10
    while len(clock.waits) < 12 and time.monotonic() < deadline:
        time.sleep(0.01)
    pub.close()
    waits = clock.waits[1:12]                 # [0] is the (zero) first-connect spread
    assert len(waits) == 11
    assert all(policy.minimum <= w <= policy.window(n) for n, w in enumerate(waits, start=1))
    assert len(set(waits)) == len(waits)      # not a fixed ladder (1, 2, 4, 8 ...)
    assert max(waits) > 60                    # the window grew past the first one
