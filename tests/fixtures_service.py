"""The service under test: ``make_service`` builds a real :class:`Service` on
the fake clock against the sandbox identity provider, with a presenter that
records what it was asked to show."""

from __future__ import annotations

import pytest

from agent import paths, ui
from agent.assembly import build_service
from agent.auth.tokens import TokenClient
from agent.config import load_config
from agent.notify import Notifier
from agent.profiles import Profile, ProfileStore
from agent.service import Service
from agent.tokenstore import TokenStore

CLIENT_ID = "00000000-0000-0000-0000-000000000001"


class RecordingPresenter:
    """A face that remembers what it was asked to show (the service's port to a screen)."""

    def __init__(self) -> None:
        self.views: list[ui.View] = []
        self.wakes = 0
        self.closed = False

    def show(self, view: ui.View) -> None:
        self.views.append(view)

    def wake(self) -> None:
        self.wakes += 1

    def close(self) -> None:
        self.closed = True

    def of(self, kind: type) -> list[ui.View]:
        return [v for v in self.views if isinstance(v, kind)]

    @property
    def last(self) -> ui.View:
        return self.views[-1]


def write_config(text: str) -> None:
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    (paths.config_dir() / "agent.toml").write_text(text)


@pytest.fixture
def make_service(agent_dirs, fake_clock, idp):
    made: list[Service] = []

    def make(*, endpoint: str | None = None, interval: int = 60, extra: str = "",
             clock=None, provider=None, **kw) -> Service:
        clock = clock or fake_clock
        provider = provider or idp
        paths.config_dir().mkdir(parents=True, exist_ok=True)
        store = ProfileStore(paths.profiles_file())
        if "default" not in store.names():
            store.save(Profile(name="default", client_id=CLIENT_ID, tenant_id="organizations",
                               authority_host=provider.base_url))
        telemetry = f'endpoint = "{endpoint}"\n' if endpoint else ""
        write_config(f'device_id = "dev-1"\n[telemetry]\n{telemetry}interval = {interval}\n'
                     f'jitter = false\n[[sensors]]\ntype = "uptime"\n'
                     f'[[sensors]]\ntype = "load_average"\n{extra}')
        config = load_config(paths.config_file())
        client = TokenClient(store.get("default"), store=TokenStore(paths.token_dir()),
                             clock=clock)
        kw.setdefault("presenter", RecordingPresenter())
        kw.setdefault("notifier", Notifier(None))
        service = build_service(config, clock=clock, token_client=client, **kw)
        made.append(service)
        return service

    yield make
    for service in made:
        if getattr(service, "thread", None) is not None:
            service.stop()
            service.thread.join(10)
        elif service._set_up and not service.finished:
            service.stop()
            service.run_until(lambda s: s.finished, 2000)
        else:
            service.close()          # built, never started: its outbox and devices


def in_state(state):
    return lambda s: s.state == state
