"""The local telemetry receiver, over real HTTP: auth, shapes, faults and counters.

The uploader's "nothing lost, nothing doubled" tests count on these counters,
so they are checked here against requests made by hand.
"""

from __future__ import annotations

import gzip
import json
import threading

import pytest
import requests

from agent.sandbox.idp import DEVICE_CODE_GRANT_TYPE, IdentityProvider
from agent.sandbox.receiver import ReadingError, TelemetryReceiver, validate_batch


def reading(n: int, sensor: str = "cpu_temperature", value: float = 40.0) -> dict:
    return {"id": f"r-{n}", "sensor": sensor, "value": value + n, "unit": "°C", "time": "2026-11-28T21:00:00Z"}


def batch(*numbers: int, device_id: str = "greenhouse-1") -> dict:
    return {"device_id": device_id, "readings": [reading(n) for n in numbers]}


def access_token(idp: IdentityProvider) -> str:
    code = requests.post(f"{idp.base_url}/organizations/oauth2/v2.0/devicecode",
                         data={"client_id": "c", "scope": "User.Read"}, timeout=5).json()
    idp.approve()
    tokens = requests.post(f"{idp.base_url}/organizations/oauth2/v2.0/token",
                           data={"grant_type": DEVICE_CODE_GRANT_TYPE, "client_id": "c",
                                 "device_code": code["device_code"]}, timeout=5).json()
    return tokens["access_token"]


@pytest.fixture
def token(idp) -> str:
    return access_token(idp)


def post(rx: TelemetryReceiver, body: object, token: str | None = None, **kwargs) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(rx.url, json=body, headers=headers, timeout=5, **kwargs)


def test_accepts_readings_and_drops_repeated_ids(receiver, token):
    assert receiver.url.startswith("http://127.0.0.1:") and receiver.url.endswith("/telemetry")
    first = post(receiver, batch(1, 2, 3), token)
    assert first.status_code == 200 and first.json() == {"accepted": 3, "duplicates": 0}
    retry = post(receiver, batch(2, 3, 4), token)         # a retry that overlaps
    assert retry.json() == {"accepted": 3, "duplicates": 2}
    assert receiver.unique_ids == {"r-1", "r-2", "r-3", "r-4"}
    assert receiver.duplicates == 2
    assert receiver.accepted_batches == 2
    assert receiver.batch_sizes == [3, 3]
    assert receiver.requests == 2
    assert [r["id"] for r in receiver.readings()] == ["r-1", "r-2", "r-3", "r-4"]
    assert receiver.readings()[0]["device_id"] == "greenhouse-1"
    assert receiver.device_ids == {"greenhouse-1"}
    assert receiver.wait_for(4, timeout=0.01)
    assert not receiver.wait_for(5, timeout=0.01)


def test_readings_by_sensor(receiver, token):
    body = {"device_id": "d", "readings": [reading(1, "a"), reading(2, "b"), reading(3, "a")]}
    post(receiver, body, token)
    assert [r["id"] for r in receiver.readings("a")] == ["r-1", "r-3"]
    assert receiver.readings("nope") == []


def test_bearer_is_required_and_never_kept(receiver, idp, fake_clock, token):
    missing = post(receiver, batch(1))
    invalid = post(receiver, batch(1), "not-issued-here")
    basic = post(receiver, batch(1), headers={"Authorization": "Basic dXNlcjpwYXNz"})
    for answer in (missing, invalid, basic):
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert post(receiver, batch(1), token).status_code == 200
    fake_clock.advance(3600)                              # the access token has expired now
    assert post(receiver, batch(2), token).status_code == 401
    assert receiver.unique_ids == {"r-1"}
    assert receiver.auth_headers == ["missing", "Bearer", "Basic", "Bearer", "Bearer"]
    assert receiver.statuses == [401, 401, 401, 200, 401]
    assert token not in json.dumps(receiver.state())


def test_without_a_validator_anything_goes():
    with TelemetryReceiver() as rx:
        assert post(rx, batch(1)).status_code == 200
        assert rx.auth_headers == ["missing"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "JSON object"),
        ({"readings": [reading(1)]}, "device_id"),
        ({"device_id": "", "readings": [reading(1)]}, "device_id"),
        ({"device_id": "d", "readings": []}, "readings"),
        ({"device_id": "d", "readings": "x"}, "readings"),
        ({"device_id": "d", "readings": [1]}, "readings[0]"),
        ({"device_id": "d", "readings": [dict(reading(1), id="")]}, "readings[0].id"),
        ({"device_id": "d", "readings": [reading(1), dict(reading(2), sensor=None)]}, "readings[1].sensor"),
        ({"device_id": "d", "readings": [dict(reading(1), value="1.0")]}, "readings[0].value"),
        ({"device_id": "d", "readings": [dict(reading(1), value=True)]}, "readings[0].value"),
        ({"device_id": "d", "readings": [dict(reading(1), unit=5)]}, "readings[0].unit"),
        ({"device_id": "d", "readings": [dict(reading(1), time="2026-11-28 21:00")]}, "readings[0].time"),
        ({"device_id": "d", "readings": [dict(reading(1), time="2026-11-28T21:00:00")]}, "readings[0].time"),
        ({"device_id": "d", "readings": [dict(reading(1), time="2026-11-28T22:00:00+01:00")]}, "readings[0].time"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(receiver, token, body, field):
    answer = post(receiver, body, token)
    assert answer.status_code == 400
    assert answer.json()["error"] == "bad_request"
    assert field in answer.json()["error_description"]
    assert receiver.unique_ids == set() and receiver.accepted_batches == 0


def test_valid_shapes_pass_validation():
    body = {"device_id": "d", "readings": [reading(1), dict(reading(2), value=3, unit=None),
                                          dict(reading(3), time="2026-11-28T21:00:00.123456+00:00")]}
    device_id, readings = validate_batch(body)
    assert device_id == "d" and len(readings) == 3
    with pytest.raises(ReadingError):
        validate_batch({"device_id": "d", "readings": [dict(reading(1), value=float("nan"))]})


def test_not_json_is_400(receiver, token):
    answer = requests.post(receiver.url, data=b"{oops", timeout=5,
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert answer.status_code == 400 and "not valid JSON" in answer.json()["error_description"]


def test_gzip_bodies(receiver, token):
    answer = requests.post(receiver.url, data=gzip.compress(json.dumps(batch(1, 2)).encode()), timeout=5,
                           headers={"Authorization": f"Bearer {token}", "Content-Encoding": "gzip",
                                    "Content-Type": "application/json"})
    assert answer.status_code == 200 and receiver.unique_ids == {"r-1", "r-2"}


def test_max_batch_is_413(receiver, token):
    receiver.max_batch = 2
    assert post(receiver, batch(1, 2, 3), token).status_code == 413
    assert post(receiver, batch(1, 2), token).status_code == 200
    assert receiver.batch_sizes == [2]


def test_queued_responses_come_first_in_order(receiver, token):
    receiver.queue_responses(503, (429, {"Retry-After": "7"}), 401, (403, {}), 400, 200)
    answers = [post(receiver, batch(n), token) for n in range(7)]
    assert [a.status_code for a in answers] == [503, 429, 401, 403, 400, 200, 200]
    assert answers[1].headers["Retry-After"] == "7"
    assert answers[2].headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    # Scripted answers record nothing, not even a scripted 200.
    assert receiver.unique_ids == {"r-6"}
    assert receiver.requests == 7


def test_fail_rate_one_is_always_503_and_records_nothing(receiver, token):
    receiver.fail_rate = 1.0
    assert {post(receiver, batch(n), token).status_code for n in range(5)} == {503}
    receiver.fail_rate = 0.0
    assert post(receiver, batch(9), token).status_code == 200
    assert receiver.unique_ids == {"r-9"}


def test_drop_rate_one_closes_without_answer_and_records_nothing(receiver, token):
    receiver.drop_rate = 1.0
    for n in range(3):
        with pytest.raises(requests.ConnectionError):
            post(receiver, batch(n), token)
    assert receiver.statuses == [0, 0, 0] and receiver.unique_ids == set()


def test_random_faults_repeat_with_the_seed():
    def run(seed: int) -> list[int]:
        with TelemetryReceiver(seed=seed) as rx:
            rx.fail_rate = 0.3
            rx.drop_rate = 0.1
            for n in range(60):
                try:
                    post(rx, batch(n))
                except requests.ConnectionError:
                    pass
            return rx.statuses

    first, again, other = run(1), run(1), run(2)
    assert first == again != other
    assert {0, 503, 200} == set(first)
    assert 0.15 < first.count(503) / len(first) < 0.45


def test_concurrent_posts_count_every_reading_once(receiver, token):
    def worker(start: int) -> None:
        for n in range(start, start + 20):
            assert post(receiver, batch(n, n + 1), token).status_code == 200

    threads = [threading.Thread(target=worker, args=(k * 10,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 4 workers x 20 posts x 2 readings over ids 0..50, with overlaps.
    assert receiver.unique_ids == {f"r-{n}" for n in range(51)}
    assert len(receiver.unique_ids) + receiver.duplicates == 160
    assert receiver.accepted_batches == 80


def test_paths_methods_and_state(receiver, token):
    assert requests.post(receiver.url.replace("/telemetry", "/other"), json=batch(1), timeout=5).status_code == 404
    assert requests.get(receiver.url, timeout=5).status_code == 405
    post(receiver, batch(1), token)
    state = requests.get(receiver.url.replace("/telemetry", "/_receiver/state"), timeout=5).json()
    assert state["unique"] == 1 and state["requests"] == 1 and state["device_ids"] == ["greenhouse-1"]
    assert receiver.requests == 1                          # the 404 and GETs are not telemetry requests


def test_custom_path_and_stop(capfd):
    rx = TelemetryReceiver(path="/api/v1/readings").start()
    url = rx.url
    assert url.endswith("/api/v1/readings")
    assert post(rx, batch(1)).status_code == 200
    rx.stop()
    with pytest.raises(requests.ConnectionError):
        requests.post(url, json=batch(2), timeout=5)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
