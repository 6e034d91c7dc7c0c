"""The service's start-up jitter, a full state folder, and the MQTT state after a clean stop.

The loop is the real one on a FakeClock (:meth:`Service.run_until`), against
the sandbox identity provider and receiver; MQTT goes to a real Mosquitto;
the full disk is a real 1 MiB tmpfs.
"""

from __future__ import annotations

import json
import time

import pytest

from agent import paths, ui
from agent.assembly import build_service
from agent.auth.tokens import TokenClient
from agent.config import load_config
from agent.notify import Notifier
from agent.profiles import Profile, ProfileStore
from agent.service import SIGNED_IN, Service
from agent.telemetry.uploader import start_jitter
from agent.tokenstore import TokenStore
from tests.fixtures_core import fill, small_tmpfs

CLIENT_ID = "00000000-0000-0000-0000-000000000001"


class Presenter:
    """Remembers every view it was asked to show."""

    def __init__(self) -> None:
        self.views: list[ui.View] = []

    def show(self, view: ui.View) -> None:
        self.views.append(view)

    def wake(self) -> None:
        pass

    def close(self) -> None:
        pass


def device_with_jitter(interval: float, at_least: float) -> str:
    """A device id whose start-up jitter is at least *at_least* seconds."""
    for i in range(1000):
        if start_jitter(f"dev-{i}", interval) >= at_least:
            return f"dev-{i}"
    raise AssertionError("no such device id")


@pytest.fixture
def make_service(agent_dirs, fake_clock, idp):
    made: list[Service] = []

    def make(*, device: str = "dev-1", endpoint: str | None = None, jitter: bool = False,
             extra: str = "") -> Service:
        paths.config_dir().mkdir(parents=True, exist_ok=True)
        store = ProfileStore(paths.profiles_file())
        if "default" not in store.names():
            store.save(Profile(name="default", client_id=CLIENT_ID, tenant_id="organizations",
                               authority_host=idp.base_url))
        telemetry = f'endpoint = "{endpoint}"\n' if endpoint else ""
        (paths.config_dir() / "agent.toml").write_text(
            f'device_id = "{device}"\n[telemetry]\n{telemetry}interval = 60\n'
            f'jitter = {"true" if jitter else "false"}\n[[sensors]]\ntype = "uptime"\n{extra}')
        config = load_config(paths.config_file())
        client = TokenClient(store.get("default"), store=TokenStore(paths.token_dir()),
                             clock=fake_clock)
        service = build_service(config, clock=fake_clock, token_client=client, presenter=Presenter(),
                                notifier=Notifier(None))
        made.append(service)
        return service

    yield make
    for service in made:
        if service._set_up and not service.finished:
            service.stop()
            service.run_until(lambda s: s.finished, 2000)
        else:
            service.close()


def stop(service: Service) -> None:
    service.stop()
    assert service.run_until(lambda s: s.finished, 2000)


def test_after_a_power_cut_the_backlog_upload_and_the_refresh_wait_for_the_start_jitter(
        make_service, idp, receiver, fake_clock):
    """176 of 200 boards POSTed in one second after a site-wide cut: the backlog ignored the jitter."""
    device = device_with_jitter(60, 20)
    jitter = start_jitter(device, 60)
    idp.auto_approve_after_polls = 1
    idp.access_token_lifetime = 600
    receiver.fail_rate = 1.0                              # the back end is down: a backlog builds
    first = make_service(device=device, endpoint=receiver.url)
    assert first.run_until(lambda s: s.state == SIGNED_IN and s.outbox.on_disk() >= 3, 20_000)
    stop(first)
    fake_clock.advance(3600)                              # power back an hour later: token expired
    receiver.fail_rate = 0.0
    refreshes, posts = idp.counts["token.refresh_token"], receiver.requests

    second = make_service(device=device, endpoint=receiver.url, jitter=True)
    started = fake_clock.monotonic()
    second.start()
    assert second.run_until(lambda s: idp.counts["token.refresh_token"] > refreshes, 20_000)
    assert fake_clock.monotonic() - started >= jitter - 1e-6   # the start-up refresh waited
    assert second.run_until(lambda s: receiver.requests > posts, 20_000)
    assert fake_clock.monotonic() - started >= jitter - 1e-6   # and so did the backlog's first POST
    assert second.run_until(lambda s: s.outbox.depth() == 0, 20_000)


# ---------------------------------------------------------------- full disk

@pytest.fixture
def small_state_dir(agent_dirs):
    with small_tmpfs(paths.state_dir()) as state:
        yield state


def test_a_full_state_folder_is_told_once_and_the_agent_carries_on(
        make_service, idp, receiver, fake_clock, small_state_dir):
    idp.auto_approve_after_polls = 1
    idp.access_token_lifetime = 3600 * 24 * 30      # no refresh: its token file is on that disk too
    service = make_service(endpoint=receiver.url)
    assert service.run_until(lambda s: s.state == SIGNED_IN, 5000)
    ballast = fill(small_state_dir)
    receiver.fail_rate = 1.0                              # uploads fail: the outbox must spill
    assert service.run_until(lambda s: s.outbox.storage_problem is not None, 20_000)
    assert service.run_until(lambda s: s._status().get("storage", "").startswith("storage full"), 10)
    taken = service.readings_taken
    assert service.run_until(lambda s: s.readings_taken >= taken + 10, 20_000)
    assert service.state == SIGNED_IN and not service.finished
    assert service.outbox.depth() == service.readings_taken    # nothing lost, in memory
    assert not list(small_state_dir.glob("outbox.sqlite3.corrupt-*"))
    errors = [v for v in service.presenter.views if isinstance(v, ui.ErrorView)]
    assert len([v for v in errors if "storage full" in v.message]) == 1    # said once
    status = json.loads(paths.status_file().read_text())
    assert status["storage"].startswith("storage full") and status["state"] == SIGNED_IN

    ballast.unlink()                                       # space returns
    receiver.fail_rate = 0.0
    assert service.run_until(lambda s: s.outbox.depth() == 0 and s.outbox.storage_problem is None,
                             20_000)
    assert len(receiver.unique_ids) == service.readings_taken
    assert not (service.last_error or "").startswith("storage full")
    assert "storage" not in json.loads(paths.status_file().read_text())


# ---------------------------------------------------------------- MQTT after a stop

def test_after_a_clean_stop_the_retained_state_is_the_last_real_state(
        make_service, idp, fake_clock, mosquitto, mqtt_subscriber):
    """Not "stopping" forever: the last thing the agent knew; availability offline."""
    idp.auto_approve_after_polls = 1
    service = make_service(extra=f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
                                 'connect_spread = 0\n')
    service.start()
    deadline = time.monotonic() + 10
    while not service.publisher.is_connected:
        assert time.monotonic() < deadline, "the publisher did not connect"
        time.sleep(0.02)
    assert service.run_until(lambda s: s.state == SIGNED_IN, 5000)
    live = mqtt_subscriber(mosquitto, ["entra-agent/dev-1/#"])
    stop(service)
    live.wait_for("entra-agent/dev-1/availability", lambda m: m.text == "offline")
    late = mqtt_subscriber(mosquitto, ["entra-agent/dev-1/state", "entra-agent/dev-1/availability"])
    state = late.wait_for("entra-agent/dev-1/state")
    assert state.retain and state.json()["state"] == SIGNED_IN
    assert late.wait_for("entra-agent/dev-1/availability").text == "offline"
