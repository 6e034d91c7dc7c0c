"""The agent's console sign-in box says what Ctrl+C does (it stops the agent)
only when someone can press it."""

from __future__ import annotations

import io
import os
import pty

import pytest

from agent import ui
from hardware.console import HalfBlockPresenter
from hardware.screens import SAMPLES

VIEW = SAMPLES["sign-in"]


def _shown(presenter_type, **kw) -> str:
    stream = io.StringIO()
    presenter_type(stream, **kw).show(VIEW)
    return stream.getvalue()


@pytest.mark.parametrize("presenter_type", [ui.ConsolePresenter, HalfBlockPresenter])
def test_no_ctrl_c_hint_without_a_terminal(presenter_type):
    text = _shown(presenter_type, interactive=False)
    assert "Ctrl+C" not in text
    assert VIEW.user_code in text and "Sign in with your credentials" in text


@pytest.mark.parametrize("presenter_type", [ui.ConsolePresenter, HalfBlockPresenter])
def test_ctrl_c_hint_at_a_terminal(presenter_type):
    text = _shown(presenter_type, interactive=True)
    # Ctrl+C there stops the agent, not just this sign-in: the box says so.
    assert "Press Ctrl+C to stop the agent" in text and "to cancel" not in text


def test_default_follows_stdin(monkeypatch):
    with open(os.devnull) as devnull:                # systemd: StandardInput=null
        monkeypatch.setattr("sys.stdin", devnull)
        assert "Ctrl+C" not in _shown(ui.ConsolePresenter)
    leader, follower = pty.openpty()
    try:
        with open(follower, closefd=False) as tty:   # someone at a terminal
            monkeypatch.setattr("sys.stdin", tty)
            assert "Press Ctrl+C to stop the agent" in _shown(ui.ConsolePresenter)
    finally:
        os.close(leader)
        os.close(follower)


def test_box_for_the_cli_is_unchanged():
    lines = ui.box(VIEW).splitlines()
    assert lines[-2] == "│ " + "Press Ctrl+C to cancel".ljust(len(lines[0]) - 3) + "│"
    without = ui.box(VIEW, cancel_hint=None)
    assert "Ctrl+C" not in without and len(without.splitlines()) == len(lines) - 1
