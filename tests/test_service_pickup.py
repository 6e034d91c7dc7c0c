"""An agent waiting for a person notices a token that entra-auth-cli saved
meanwhile (a stat of the token file on the countdown tick it runs anyway)."""

from __future__ import annotations

import os

from agent import paths, ui
from agent.auth.tokens import TokenClient
from agent.clock import FakeClock
from agent.profiles import ProfileStore
from agent.service import AWAITING_USER, SIGNED_IN
from agent.tokenstore import TokenStore
from tests.fixtures_service import in_state


def test_awaiting_user_picks_up_a_token_saved_by_the_cli(make_service, idp):
    idp.auto_approve_after_polls = None
    service = make_service()
    assert service.run_until(in_state(AWAITING_USER), 5000)
    agent_code = service.presenter.of(ui.SignInView)[-1].user_code

    # Meanwhile, entra-auth-cli signs the same profile in with a code of its own.
    cli = TokenClient(ProfileStore(paths.profiles_file()).get("default"),
                      store=TokenStore(paths.token_dir()), clock=FakeClock())
    authorization = cli.request_code()
    assert authorization.user_code != agent_code
    idp.approve(authorization.user_code)
    saved = cli.poll(authorization)

    assert service.run_until(in_state(SIGNED_IN), 5000)
    assert service.tokens.get().access_token == saved.access_token
    assert service.history[-2:] == [AWAITING_USER, SIGNED_IN]
    assert service.presenter.of(ui.SignedInView)[-1].account == "ada@contoso.example"
    # It stops polling for its own code.
    assert service.signin.thread is None and service.signin.authorization is None


def test_awaiting_user_writes_nothing_while_it_watches(make_service, idp, fake_clock):
    idp.auto_approve_after_polls = None
    service = make_service()
    assert service.run_until(in_state(AWAITING_USER), 5000)
    tokens = paths.token_dir()
    before = {p.name: os.stat(p).st_mtime_ns for p in tokens.iterdir()} if tokens.exists() else {}
    ticks = service.loop_iterations
    start = fake_clock.monotonic()
    assert service.run_until(lambda s: fake_clock.monotonic() - start >= 30, 20000)
    assert service.state == AWAITING_USER and service.loop_iterations > ticks
    after = {p.name: os.stat(p).st_mtime_ns for p in tokens.iterdir()} if tokens.exists() else {}
    assert after == before
