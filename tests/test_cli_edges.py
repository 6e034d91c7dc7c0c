"""``entra-auth-cli`` at its edges: Ctrl+C inside a calling script, one line
where a traceback used to be, waits that say what they wait for, one sign-in
per profile at a time, and the small slips of issue 12."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.cli import main
from agent.errors import EXIT_CONFIG, EXIT_USAGE
from agent.sandbox.idp import IdentityProvider
from tests.fixtures_cli import CLI, CLIENT_ID, REPO, approve_when_issued, cli_env, create


def _bin_dir(tmp_path: Path) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / "entra-auth-cli"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -c "
                       "'import sys; from agent.cli import main; sys.exit(main())' \"$@\"\n")
    wrapper.chmod(0o755)
    return bindir


def _read_until(stream, needle: str, timeout: float = 30) -> str:
    """Read a text pipe line by line until *needle* shows up."""
    seen = ""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        if select.select([stream], [], [], 0.5)[0]:
            line = stream.readline()
            if not line:
                break
            seen += line
    assert needle in seen, seen
    return seen


# -- item 3: Ctrl+C stops the calling script -----------------------------------

def test_ctrl_c_stops_the_seeds_retry_script(agent_dirs, idp_realtime, tmp_path):
    """The seed's authenticate_with_retry, as written, in bash; Ctrl+C at the
    terminal (SIGINT to the whole foreground group) must stop bash too."""
    create(idp_realtime, "myapp")
    seed = REPO.parent / "shared" / "seed" / "device-code-flow.txt"
    if not seed.exists():
        seed = REPO / "tests" / "data" / "device-code-flow.txt"
    text = seed.read_text()
    start = text.index("authenticate_with_retry() {")
    end = text.index('authenticate_with_retry "myapp"', start) + len('authenticate_with_retry "myapp"')
    (tmp_path / "retry.sh").write_text(text[start:end] + "\necho 'after the function'\n")
    env = cli_env(agent_dirs, PATH=f"{_bin_dir(tmp_path)}:{os.environ['PATH']}")
    proc = subprocess.Popen(["bash", str(tmp_path / "retry.sh")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    idp_realtime.wait_for_code(timeout=30)
    os.killpg(proc.pid, signal.SIGINT)          # what the terminal does on Ctrl+C
    out, err = proc.communicate(timeout=30)
    assert "Authentication cancelled by user" in err
    assert "Retrying" not in out and "attempt 2" not in out and "after the function" not in out
    assert proc.returncode in (-signal.SIGINT, 130)
    assert idp_realtime.counts["devicecode"] == 1


def test_the_shell_sees_130(agent_dirs, idp_realtime, tmp_path):
    create(idp_realtime)
    env = cli_env(agent_dirs, PATH=f"{_bin_dir(tmp_path)}:{os.environ['PATH']}")
    # Only the CLI gets the signal (kill -INT), so bash carries on and says what it saw.
    proc = subprocess.Popen(["bash", "-c", 'entra-auth-cli get-token; echo "status=$?"'], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    idp_realtime.wait_for_code(timeout=30)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    os.kill(int(children[0]), signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert out.strip() == "status=130" and "Authentication cancelled by user" in err


# -- item 4: one line, no traceback ---------------------------------------------

def test_invalid_utf8_in_profiles_toml_is_one_line(agent_dirs, capsys):
    agent_dirs["config"].mkdir(parents=True)
    (agent_dirs["config"] / "profiles.toml").write_bytes(b'[profiles.caf\xe9]\nclient_id = "x"\n')
    assert main(["list-profiles"]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not UTF-8" in err and "profiles.toml" in err


def _prompt_session(agent_dirs, answers: list[bytes], *args: str) -> tuple[int, bytes]:
    """create-profile on a terminal; each answer is sent at the next prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI on a terminal
        # Start it as a shell on a terminal would: SIGINT at its default and
        # unblocked (the forking test process may have inherited otherwise,
        # and an ignored or blocked SIGINT survives exec).
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.environ.update(cli_env(agent_dirs))
        os.execv(sys.executable, [*CLI, "create-profile", *args])
    pending = list(answers)
    output = b""
    deadline = time.monotonic() + 30
    interrupt_sent_at = None
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 1)[0]:
            # A ^C that lands between Python writing the prompt and starting
            # its read() is only acted on at the next signal (CPython's
            # readline checks signals on EINTR): a person presses again, so
            # does this harness, after 2 s.
            if interrupt_sent_at is not None and time.monotonic() - interrupt_sent_at > 2:
                os.write(fd, b"\x03")
                interrupt_sent_at = time.monotonic()
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        # A whole prompt ends with ": " (a chunk may end inside "https://").
        if output.endswith(b": ") and pending:
            answer = pending.pop(0)
            os.write(fd, answer)
            if answer == b"\x03":
                interrupt_sent_at = time.monotonic()
            output += b"\n"
    else:
        os.kill(pid, signal.SIGKILL)    # a hung CLI fails the test rather than hanging it
        output += b"\n[killed after 30 s]"
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return status, output


def test_ctrl_d_at_a_prompt_is_one_line(agent_dirs):
    status, output = _prompt_session(agent_dirs, [b"\x04"])
    assert os.waitstatus_to_exitcode(status) == EXIT_USAGE, output
    assert b"Traceback" not in output and b"EOFError" not in output
    assert b"no answer for Profile name (input ended): no profile was saved (answer the prompt, " \
           b"or give --name)" in output
    assert not (agent_dirs["config"] / "profiles.toml").exists()


def test_ctrl_c_at_a_prompt_says_cancelled_not_authentication(agent_dirs):
    status, output = _prompt_session(agent_dirs, [b"\x03"], "--name", "x")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT
    assert b"Cancelled: no profile was saved" in output
    assert b"Authentication" not in output and b"Traceback" not in output


def test_prompts_check_each_answer_and_ask_again(agent_dirs):
    status, output = _prompt_session(
        agent_dirs, [b"bad name!\n", b"app\n", b"not a tenant\n", b"contoso.onmicrosoft.com\n",
                     b"11111111-2222\n", CLIENT_ID.encode() + b"\n", b"\n"])
    assert os.waitstatus_to_exitcode(status) == 0, output
    text = output.decode()
    assert "profile name 'bad name!' is not valid" in text
    assert "tenant id 'not a tenant' is not a GUID" in text
    assert "client id '11111111-2222' is not a GUID" in text
    assert text.count("; try again") == 3 and text.count("Profile name") == 2
    profiles = (agent_dirs["config"] / "profiles.toml").read_text()
    assert '[profiles."app"]' in profiles and CLIENT_ID in profiles


def test_screens_without_the_display_extra_is_one_line(tmp_path):
    # Pillow made unimportable, as in a venv without the 'display' extra.
    code = ("import sys; sys.modules['PIL'] = None\n"
            "from agent.__main__ import main; sys.exit(main(['screens', '--out', sys.argv[1]]))")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True,
                            text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == ("entra-agent: error: drawing screens needs Pillow, luma and segno "
                                     "(Pillow is not installed) (pip install 'entra-device-agent[display]')")


def test_stdout_closed_early_ends_quietly(agent_dirs, idp_realtime):
    create(idp_realtime)
    approve_when_issued(idp_realtime)
    assert main(["get-token", "--output", "json"]) == 0
    read_end, write_end = os.pipe()
    os.close(read_end)                          # `| head -c5` that has already gone
    result = subprocess.run([*CLI, "get-token", "--output", "json"], env=cli_env(agent_dirs),
                            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(write_end)
    assert result.returncode == 141 and result.stderr == ""


# -- item 5: waits say what they wait for --------------------------------------

def test_a_provider_that_never_answers_is_named_and_ctrl_c_is_immediate(agent_dirs):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)                            # accepts connections, never answers
    try:
        port = silent.getsockname()[1]
        assert main(["create-profile", "--name", "default", "--client-id", CLIENT_ID,
                     "--tenant-id", "organizations", "--authority-host", f"http://127.0.0.1:{port}"]) == 0
        proc = subprocess.Popen([*CLI, "get-token"], env=cli_env(agent_dirs), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        seen = _read_until(proc.stderr, "Waiting for 127.0.0.1 to answer")
        assert "(a sign-in code; Ctrl+C to stop)" in seen
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=5)             # well inside the 10 s request timeout
        assert proc.returncode == -signal.SIGINT
    finally:
        silent.close()


def test_a_valid_token_needs_no_lock_and_a_held_lock_names_its_holder(agent_dirs):
    with IdentityProvider(interval=1, access_token_lifetime=3600) as idp:
        create(idp)
        approve_when_issued(idp)
        assert main(["get-token", "--output", "json"]) == 0
        lock = agent_dirs["state"] / "tokens" / "default.lock"
        with open(lock, "r+b") as held:
            fcntl.flock(held, fcntl.LOCK_EX)    # another process in the middle of a refresh
            quick = subprocess.run([*CLI, "get-token", "--output", "json"], env=cli_env(agent_dirs),
                                   capture_output=True, text=True, timeout=30)
            assert quick.returncode == 0 and json.loads(quick.stdout)["access_token"]
            assert "Waiting" not in quick.stderr

    with IdentityProvider(interval=1, access_token_lifetime=200) as idp:   # due for refresh at once
        main(["create-profile", "--name", "short", "--client-id", CLIENT_ID, "--tenant-id",
              "organizations", "--authority-host", idp.base_url])
        approve_when_issued(idp)
        assert main(["get-token", "--profile", "short", "--output", "json"]) == 0
        lock = agent_dirs["state"] / "tokens" / "short.lock"
        with open(lock, "r+b") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            proc = subprocess.Popen([*CLI, "get-token", "--profile", "short", "--output", "json"],
                                    env=cli_env(agent_dirs), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            seen = _read_until(proc.stderr, "is using it")
            fcntl.flock(held, fcntl.LOCK_UN)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, seen + err
        assert (f"Waiting for the token file of profile 'short': pid {os.getpid()} "
                in seen), seen
        assert "to answer" not in seen + err            # it was the lock, not the provider
        assert idp.counts["token.refresh_token"] == 1


# -- item 7: one sign-in per profile at a time ---------------------------------

def test_a_second_get_token_joins_the_sign_in_under_way(agent_dirs, idp_realtime):
    create(idp_realtime)
    first = subprocess.Popen([*CLI, "get-token", "--output", "json"], env=cli_env(agent_dirs),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
    code = idp_realtime.wait_for_code(timeout=30)
    second = subprocess.Popen([*CLI, "get-token", "--output", "json"], env=cli_env(agent_dirs),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL)
    waiting = _read_until(second.stderr, "already waiting for a person")
    assert f"(pid {first.pid}" in waiting
    # Ctrl+C ends such a wait at once (the kernel wakes the waiter for the signal).
    third = subprocess.Popen([*CLI, "get-token"], env=cli_env(agent_dirs), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    _read_until(third.stderr, "already waiting for a person")
    third.send_signal(signal.SIGINT)
    third.communicate(timeout=5)
    assert third.returncode == -signal.SIGINT
    idp_realtime.approve(code)
    out1, _ = first.communicate(timeout=30)
    out2, err2 = second.communicate(timeout=30)
    assert first.returncode == 0 and second.returncode == 0, err2
    assert json.loads(out1)["access_token"] == json.loads(out2)["access_token"]
    assert "Signed in by the other sign-in" in err2 and "enter the code" not in err2
    assert idp_realtime.counts["devicecode"] == 1


# -- item 9: small slips ---------------------------------------------------------

def test_verbose_after_the_subcommand(agent_dirs, capsys):
    assert main(["list-profiles", "-v"]) == 0
    assert main(["-v", "list-profiles", "-v", "--output", "json"]) == 0
    from agent.__main__ import main as agent_main
    with pytest.raises(SystemExit) as exit_info:
        agent_main(["status", "--help", "-v"])
    assert exit_info.value.code == 0


@pytest.mark.parametrize("argv, hint", [
    (["get-tokn"], "(did you mean 'get-token'?)"),
    (["get-token", "--profle", "x"], "(did you mean '--profile'?)"),
    (["list-profiles", "--output", "jsn"], "(did you mean 'json'?)"),
])
def test_typos_get_did_you_mean(argv, hint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == EXIT_USAGE
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(hint)


def test_rotation_fingerprints_differ_in_the_log(agent_dirs, capsys, caplog):
    from agent.auth.tokens import fingerprint
    with IdentityProvider(interval=1, access_token_lifetime=200) as idp:
        create(idp)
        approve_when_issued(idp)
        assert main(["get-token", "--output", "json"]) == 0
        before = json.loads((agent_dirs["state"] / "tokens" / "default.json").read_text())["refresh_token"]
        caplog.set_level(logging.INFO, logger="agent.auth.tokens")
        for argv in (["get-token"], ["get-token", "--scope", "api://other/Read"]):
            caplog.clear()
            assert main([*argv, "--output", "json"]) == 0
            after = json.loads((agent_dirs["state"] / "tokens" / "default.json").read_text())["refresh_token"]
            assert after != before
            line = next(r.getMessage() for r in caplog.records if "token refreshed" in r.getMessage())
            assert f"(refresh token {fingerprint(before)} -> {fingerprint(after)})" in line, line
            before = after


def test_delete_profile_removes_its_lock_and_sign_in_files(agent_dirs, idp_realtime, capsys):
    create(idp_realtime)
    approve_when_issued(idp_realtime)
    assert main(["get-token", "--output", "json"]) == 0
    tokens = agent_dirs["state"] / "tokens"
    assert {p.name for p in tokens.iterdir()} == {"default.json", "default.lock", "default.signin"}
    assert main(["delete-profile", "--name", "default"]) == 0
    assert list(tokens.iterdir()) == []
