"""A stopped sign-in says only what is true about the next code: the button
when there is one, the retry timer's time left when there is one."""

from __future__ import annotations

import pytest

from agent import ui
from agent.service import SIGN_IN_RETRY_DELAY, SIGN_IN_STOPPED
from hardware.screens import GEOMETRIES, layout, render_text
from tests.fixtures_service import in_state

STOPPED = [ui.ExpiredView, ui.DeclinedView, ui.CancelledView]
PIXEL = [g for g in GEOMETRIES if g.mode != "text"]


def _texts(view: ui.View, geometry) -> str:
    if geometry.mode == "text":
        return " ".join(render_text(view, geometry.width, geometry.height))
    return " ".join(b.text for b in layout(view, geometry.size, geometry.mode) if b.kind == "text")


@pytest.mark.parametrize("kind", STOPPED, ids=lambda k: k.__name__)
def test_without_a_button_no_screen_asks_for_a_press(kind):
    view = kind(button=False, retry_in=899.0)
    assert "button" not in " ".join(ui.describe(view)).lower()
    assert "new code in 14m 59s" in " ".join(ui.describe(view))
    for geometry in PIXEL:
        text = _texts(view, geometry)
        assert "button" not in text.lower(), geometry.name
        assert "new code in 14m 59s" in text.replace(" \n", " "), geometry.name


@pytest.mark.parametrize("kind", STOPPED, ids=lambda k: k.__name__)
def test_button_and_timer_are_both_said(kind):
    view = kind(button=True, retry_in=899.0)
    said = " ".join(ui.describe(view))
    assert "press the button" in said and "new code in 14m 59s" in said
    text = _texts(view, next(g for g in PIXEL if g.size == (320, 240)))
    assert "Press the" in text and "new code in 14m 59s" in text


def test_neither_button_nor_timer_promises_nothing():
    assert ui.describe(ui.ExpiredView(button=False)) == ["Device code expired."]
    assert "button" not in " ".join(ui.describe(ui.CancelledView(button=False))).lower()


def test_error_view_says_the_hint_only_when_given():
    assert ui.describe(ui.ErrorView("boom")) == ["Error: boom"]
    assert ui.describe(ui.ErrorView("boom", button=False, retry_in=60.0)) == [
        "Error: boom (new code in 1m 00s)"]


def test_service_without_a_button_says_the_timer(make_service, idp):
    idp.code_lifetime = 60
    service = make_service()
    assert service.run_until(in_state(SIGN_IN_STOPPED), 5000)
    assert service.presenter.last == ui.ExpiredView(button=False, retry_in=SIGN_IN_RETRY_DELAY)


def test_service_with_a_button_says_press_and_timer(make_service, idp):
    from gpiozero.pins.mock import MockFactory

    idp.code_lifetime = 60
    service = make_service(pin_factory=MockFactory(), extra="[button]\npin = 17\n")
    assert service.run_until(in_state(SIGN_IN_STOPPED), 5000)
    assert service.presenter.last == ui.ExpiredView(button=True, retry_in=SIGN_IN_RETRY_DELAY)


def test_the_retry_countdown_ticks_on_screen_and_prints_once_on_a_console(agent_dirs, fake_clock, idp):
    """'new code in 14m 59s' counts down on a screen; a console (the journal) gets it once."""
    import io

    from agent import paths, ui
    from agent.assembly import build_service
    from agent.auth.tokens import TokenClient
    from agent.config import load_config
    from agent.notify import Notifier
    from agent.profiles import Profile, ProfileStore
    from agent.service import SIGN_IN_STOPPED
    from agent.tokenstore import TokenStore

    class Both:
        def __init__(self):
            self.views, self.console = [], ui.ConsolePresenter(io.StringIO(), interactive=False)

        def show(self, view):
            self.views.append(view)
            self.console.show(view)

        def wake(self):
            pass

        def close(self):
            pass

    paths.config_dir().mkdir(parents=True, exist_ok=True)
    store = ProfileStore(paths.profiles_file())
    store.save(Profile(name="default", client_id="00000000-0000-0000-0000-000000000001",
                       tenant_id="organizations", authority_host=idp.base_url))
    (paths.config_dir() / "agent.toml").write_text('device_id = "d"\n[[sensors]]\ntype = "uptime"\n')
    face = Both()
    service = build_service(load_config(paths.config_file()), clock=fake_clock, notifier=Notifier(None),
                            token_client=TokenClient(store.get("default"), store=TokenStore(paths.token_dir()),
                                               clock=fake_clock), presenter=face)
    assert service.run_until(lambda s: idp.pending_user_codes(), 2000)
    idp.expire()
    assert service.run_until(lambda s: s.state == SIGN_IN_STOPPED, 2000)
    assert service.run_until(lambda s: sum(isinstance(v, ui.ExpiredView) for v in face.views) >= 5, 2000)
    lefts = [v.retry_in for v in face.views if isinstance(v, ui.ExpiredView)]
    assert lefts == sorted(lefts, reverse=True) and lefts[0] - lefts[-1] >= 3
    assert face.console._stream.getvalue().count("Device code expired") == 1
    service.stop()
    service.run_until(lambda s: s.finished, 2000)
