"""The loop thread's rule: typed events, named timers, one token owner, no blocking I/O on it.

Real parts on the fake clock against the sandbox servers; where a test must
know *which thread* did something, the real class is subclassed to note the
thread and then does its real work.
"""

from __future__ import annotations

import threading

import pytest

from agent import paths
from agent.auth.tokens import TokenClient
from agent.service import SIGNED_IN, Kind
from agent.service.events import EventQueue
from agent.service.tokenholder import TokenHolder
from agent.telemetry.outbox import Outbox
from agent.tokenstore import TokenStore
from tests.fixtures_service import in_state


def test_events_are_typed_and_an_unknown_kind_is_refused():
    events = EventQueue()
    events.post("press")
    events.post(Kind.HOLD)
    assert [events.get().kind, events.get().kind] == [Kind.PRESS, Kind.HOLD]
    assert events.get() is None
    with pytest.raises(ValueError):
        events.post("no_such_event")


class ThreadNotingOutbox(Outbox):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.add_threads: list[str] = []

    def add(self, readings):
        self.add_threads.append(threading.current_thread().name)
        super().add(readings)


def test_strict_outbox_writes_happen_on_the_sensors_worker(make_service, idp, receiver):
    idp.auto_approve_after_polls = 1
    paths.state_dir().mkdir(parents=True, exist_ok=True)
    outbox = ThreadNotingOutbox(paths.outbox_file(), durability="strict")
    service = make_service(endpoint=receiver.url, outbox=outbox)
    assert service.run_until(lambda s: s.state == SIGNED_IN and len(receiver.unique_ids) >= 4, 20000)
    assert outbox.add_threads and set(outbox.add_threads) == {"agent-sensors"}
    assert threading.current_thread().name not in outbox.add_threads


def test_sign_out_runs_on_the_network_worker_before_the_next_code(make_service, idp):
    """The token file's lock may be held by a refresh over HTTP: the loop never waits for it."""
    idp.auto_approve_after_polls = 1
    service = make_service()
    assert service.run_until(in_state(SIGNED_IN), 5000)
    threads: list[str] = []
    client = service.token_client
    real_sign_out = client.sign_out

    def noting_sign_out():
        threads.append(threading.current_thread().name)
        return real_sign_out()

    client.sign_out = noting_sign_out          # the real sign-out, with its thread noted
    idp.auto_approve_after_polls = None
    idp.code_lifetime = 10**6
    service.post(Kind.HOLD_START)
    service.post(Kind.HOLD)
    assert service.run_until(lambda s: s.state == "awaiting_user", 5000)
    assert threads == ["agent-network"]
    assert not (paths.token_dir() / "default.json").exists()


def test_the_token_holder_keeps_no_refresh_that_finished_after_a_sign_out(agent_dirs, idp, fake_clock):
    """The uploader's 401 refresh runs on the network thread; a sign-out on the
    loop meanwhile wins (the old account's new tokens are not brought back)."""
    from agent.profiles import Profile, ProfileStore
    from tests.fixtures_service import CLIENT_ID

    paths.config_dir().mkdir(parents=True, exist_ok=True)
    store = ProfileStore(paths.profiles_file())
    store.save(Profile(name="default", client_id=CLIENT_ID, tenant_id="organizations",
                       authority_host=idp.base_url))
    idp.auto_approve_after_polls = 0
    client = TokenClient(store.get("default"), store=TokenStore(paths.token_dir()), clock=fake_clock)
    tokens = client.poll(client.request_code())
    told: list[object] = []
    holder = TokenHolder(client, on_refreshed=told.append)
    holder.set(tokens)

    # A refresh with nothing in between: kept and told.
    new = holder.refresh_after_401()
    assert new == holder.access_token() != tokens.access_token
    assert told == [holder.get()]

    # A sign-out while the refresh is on the wire (the provider answers
    # after the holder was cleared).
    class SignOutDuringRefresh(TokenClient):
        def refresh(self, scopes=None):
            answer = super().refresh(scopes)
            holder.clear()
            return answer

    racing = SignOutDuringRefresh(store.get("default"), store=TokenStore(paths.token_dir()),
                                  clock=fake_clock)
    holder._client = racing
    assert holder.refresh_after_401() is None
    assert holder.get() is None and len(told) == 1


def test_the_idle_loop_sleeps_until_its_next_reading(make_service, idp, receiver, fake_clock):
    """Signed in, every reading sent: one sleep per interval, to the next read
    (no second upload round, no redraw without a screen)."""
    from agent import ui

    idp.auto_approve_after_polls = 1
    service = make_service(endpoint=receiver.url, presenter=ui.NullPresenter())
    assert service.run_until(lambda s: s.state == SIGNED_IN and receiver.unique_ids, 20000)
    settled = fake_clock.monotonic() + 120         # past the sign-in's own short timers
    assert service.run_until(lambda s: fake_clock.monotonic() >= settled, 100_000)
    start, waits, sent = fake_clock.monotonic(), len(fake_clock.waits), len(receiver.unique_ids)
    assert service.run_until(lambda s: fake_clock.monotonic() - start >= 600, 100_000)
    slept = fake_clock.waits[waits:]
    assert 10 <= len(slept) <= 11, slept
    assert all(w == pytest.approx(60, abs=1) for w in slept[1:]), slept
    assert len(receiver.unique_ids) - sent >= 18          # two sensors a minute, all sent


def test_composition_runs_one_way_and_only_assembly_imports_hardware():
    """No import circle (the service never imports assembly), and no module of
    agent/ but assembly.py imports hardware or luma."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, agent.service, agent.service.loop\n"
            "print(sorted(m for m in sys.modules if m == 'agent.assembly' or m.startswith(('hardware', 'luma'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    root = Path(__file__).resolve().parent.parent / "agent"
    importers = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] in ("hardware", "luma") for n in names):
                importers.add(path.relative_to(root).as_posix())
    assert importers == {"assembly.py"}
