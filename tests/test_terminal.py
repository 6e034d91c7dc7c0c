"""What a person sees on a real terminal: ``entra-auth-cli`` on a pseudo-terminal
of a given size, read back through a VT100 emulator (pyte) as the screen
shows it; plain lines where ``\\r`` cannot work; an ASCII box where box
characters cannot be encoded; the agent's console picture only where it fits.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

import pyte
import pytest

from agent import termui, ui
from agent.listing import profiles_text as _profiles_text
from tests.fixtures_cli import CLI, cli_env, create

ROWS = 60


def set_size(fd: int, columns: int, rows: int = ROWS) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


class Terminal:
    """A pseudo-terminal of *columns* x ROWS on the CLI's stderr, and the
    screen a person would see on it."""

    def __init__(self, columns: int, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        set_size(slave, columns)
        self.raw = b""
        self.screen = pyte.Screen(columns, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=slave,
                                     stdin=subprocess.DEVNULL)
        os.close(slave)

    def read(self, seconds: float = 0.2) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if not select.select([self.master], [], [], left)[0]:
                return
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            if not chunk:
                return
            self.raw += chunk
            self.stream.feed(chunk)

    def wait_for(self, predicate, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self) and time.monotonic() < deadline:
            self.read(0.5)
        assert predicate(self), "\n".join(self.lines())

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines())

    def finish(self) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=30)
        self.read(0.5)
        os.close(self.master)
        return self.proc.returncode, out.decode()


def _spinner_ticks(term: Terminal) -> int:
    return term.raw.count(b"\r")


@pytest.mark.parametrize("columns", [40, 80])
def test_sign_in_fits_the_terminal(agent_dirs, idp_realtime, columns):
    create(idp_realtime)
    term = Terminal(columns, [*CLI, "get-token", "--output", "json"],
                    cli_env(agent_dirs, TERM="xterm", COLUMNS=""))
    code = idp_realtime.wait_for_code(timeout=30)
    # Let the spinner tick a few times: each tick must overwrite, not add a line.
    term.wait_for(lambda t: _spinner_ticks(t) >= 3 and "left" in t.text())
    lines = term.lines()
    spinner = [line for line in lines if line.endswith(" left")]
    assert len(spinner) == 1, "\n".join(lines)
    box = [line for line in lines if line and line[0] in "┌│├└"]
    assert box, "\n".join(lines)
    assert {len(line) for line in box} == {len(box[0])} and len(box[0]) <= columns
    # The code is whole on one line of the box; the address wraps in it (40) or not (80).
    assert any(code in line and line.startswith("│") for line in box)
    inside = "".join(line[2:-1].strip() for line in box if "Visit:" in line
                     or (line.startswith("│   ") and code not in line))
    assert idp_realtime.verification_uri in inside.replace("1. Visit:", "")
    if columns == 80:
        assert len(box[0]) == 53 and spinner[0].startswith(("⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"))
        assert "Waiting for authentication..." in spinner[0]
    else:
        assert len(box[0]) == 40 and len(spinner[0]) < 40
    idp_realtime.approve(code)
    status, out = term.finish()
    assert status == 0 and '"access_token"' in out
    assert "✓ Authentication successful" in term.text()


def test_dumb_terminal_gets_plain_lines(agent_dirs, idp_realtime):
    create(idp_realtime)
    term = Terminal(80, [*CLI, "get-token"], cli_env(agent_dirs, TERM="dumb", COLUMNS=""))
    code = idp_realtime.wait_for_code(timeout=30)
    term.wait_for(lambda t: b"Waiting for authentication... (" in t.raw)
    term.read(1.5)                         # the CLI's 1 s countdown ticks meanwhile
    idp_realtime.approve(code)
    status, _ = term.finish()
    assert status == 0
    assert b"\r" not in term.raw.replace(b"\r\n", b""), "\\r used where it cannot work"
    assert b"\033[K" not in term.raw
    # A plain line a minute, not one a tick.
    assert len(re.findall(rb"Waiting for authentication\.\.\. \(\d+m \d\ds left\)", term.raw)) == 1


def test_a_terminal_without_a_width_gets_plain_lines(agent_dirs, idp_realtime):
    create(idp_realtime)
    term = Terminal(0, [*CLI, "get-token"], cli_env(agent_dirs, TERM="xterm", COLUMNS=""))
    code = idp_realtime.wait_for_code(timeout=30)
    term.wait_for(lambda t: b"Waiting for authentication... (" in t.raw)
    idp_realtime.approve(code)
    assert term.finish()[0] == 0
    assert b"\033[K" not in term.raw and b"And enter the code: " + code.encode() in term.raw


def test_latin1_locale_gets_an_ascii_box(agent_dirs, idp_realtime):
    create(idp_realtime)
    term = Terminal(80, [*CLI, "get-token"],
                    cli_env(agent_dirs, TERM="xterm", COLUMNS="", PYTHONIOENCODING="latin-1"))
    code = idp_realtime.wait_for_code(timeout=30)
    term.wait_for(lambda t: "left" in t.text())
    idp_realtime.approve(code)
    assert term.finish()[0] == 0
    text = term.raw.decode("latin-1")
    assert "\\u" not in text and "\\x" not in text, "escapes instead of characters"
    assert "+-----" in text and f"| 2. Enter code: {code}" in text
    assert "OK: Authentication successful" in text


def test_box_never_splits_the_code_and_gives_up_when_it_cannot_fit():
    view = ui.SignInView(user_code="ABCD-EFGH-IJKL", verification_uri="https://microsoft.com/devicelogin",
                         verification_uri_complete=None, seconds_left=900, lifetime=900)
    for width in range(24, 90):
        lines = ui.box(view, term=termui.Terminal(width, True, True)).splitlines()
        assert all(len(line) <= width for line in lines), width
        assert any("ABCD-EFGH-IJKL" in line for line in lines), width
        address = "".join(line[2:-1].strip() for line in lines[3:] if "code" not in line
                          and "ABCD" not in line).split("3.")[0]
        assert "https://microsoft.com/devicelogin" in address.replace("1. Visit:", ""), width
    assert ui.box(view, term=termui.Terminal(15, True, True)) == ""


def test_a_short_lived_code_says_seconds():
    view = ui.SignInView(user_code="ABC", verification_uri="https://x.example/d",
                         verification_uri_complete=None, seconds_left=20, lifetime=20)
    assert "(expires in 20 s)" in ui.box(view)
    assert "(expires in 15 min)" in ui.box(ui.SignInView("ABC", "https://x.example/d", None, 899, 900))


# -- the agent's console picture ---------------------------------------------

@pytest.mark.parametrize("columns, picture", [(40, False), (80, False), (140, True)])
def test_console_picture_only_where_it_fits(columns, picture, monkeypatch):
    from hardware.console import HalfBlockPresenter
    from hardware.screens import SAMPLES

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    master, slave = pty.openpty()
    set_size(slave, columns)
    screen = pyte.Screen(columns, ROWS)
    stream = pyte.ByteStream(screen)
    with open(slave, "w", encoding="utf-8", closefd=True) as tty:
        HalfBlockPresenter(tty, interactive=True).show(SAMPLES["sign-in"])
    raw = b""
    while select.select([master], [], [], 0.2)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        raw += chunk
    os.close(master)
    stream.feed(raw)
    text = "\n".join(line.rstrip() for line in screen.display)
    assert ("▀" in text or "█" in text) is picture
    # The code and the address are always text, and nothing wrapped.
    view = SAMPLES["sign-in"]
    assert view.user_code in text and "Press Ctrl+C to stop the agent" in text
    assert max(len(line) for line in raw.decode().splitlines()) <= columns


# -- list-profiles -----------------------------------------------------------

def test_list_profiles_fits_80_columns(agent_dirs, idp_realtime, capsys):
    from agent.cli import main

    create(idp_realtime, "raspberry-pi-greenhouse", "--scope",
           "https://graph.microsoft.com/User.Read,api://telemetry.example.com/Readings.Write")
    create(idp_realtime, "lab")
    assert main(["list-profiles"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    lines = out.splitlines()
    assert "raspberry-pi-greenhouse: not signed in" in lines and "lab: not signed in" in lines
    assert "api://telemetry.example.com/Readings.Write" in out and idp_realtime.base_url in out


def test_list_profiles_keeps_the_table_when_it_fits():
    rows = [{"name": "a", "authority": "https://id.example/x", "client_id": "c1",
             "scopes": ["s1"], "signed_in": True, "account": "ada@example.com"}]
    lines = _profiles_text(rows, 80)
    assert lines[0].split() == ["NAME", "AUTHORITY", "CLIENT", "ID", "SCOPES", "SIGNED", "IN"]
    assert lines[1].split() == ["a", "https://id.example/x", "c1", "s1", "ada@example.com"]
