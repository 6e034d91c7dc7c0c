"""``entra-auth-cli`` as people and scripts use it: in-process ``main([...])``
and real subprocesses against the local identity provider."""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import select
import signal
import stat
import subprocess
import sys
import time

import pytest

from agent.cli import main
from agent.errors import EXIT_CANCELLED, EXIT_CONFIG, EXIT_SIGN_IN, EXIT_USAGE
from tests.fixtures_cli import CLI, CLIENT_ID, REPO, approve_when_issued, cli_env, create

# -- profiles ---------------------------------------------------------------

def test_create_and_list_profiles(agent_dirs, idp_realtime, capsys):
    assert create(idp_realtime, "device-app", "--scope", "User.Read,Mail.Read") == 0
    assert main(["list-profiles", "--output", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["device-app"]
    assert rows[0]["scopes"] == ["User.Read", "Mail.Read"]
    assert rows[0]["signed_in"] is False
    assert main(["list-profiles"]) == 0
    assert "device-app" in capsys.readouterr().out       # the seed's `list-profiles | grep -q`
    mode = stat.S_IMODE(os.stat(agent_dirs["config"] / "profiles.toml").st_mode)
    assert mode == 0o644


def test_create_profile_refuses_duplicates_unless_forced(agent_dirs, idp_realtime, capsys):
    assert create(idp_realtime) == 0
    assert create(idp_realtime) == EXIT_USAGE
    assert "already exists (use --force" in capsys.readouterr().err
    assert create(idp_realtime, "default", "--force") == 0


@pytest.mark.parametrize("args,words", [
    (["--name", "x", "--client-id", "not-a-guid", "--tenant-id", "organizations"], "is not a GUID"),
    (["--name", "bad name", "--client-id", CLIENT_ID, "--tenant-id", "common"], "profile name"),
    (["--name", "x", "--client-id", CLIENT_ID, "--tenant-id", "no such"], "tenant id"),
    (["--name", "x", "--client-id", CLIENT_ID, "--tenant-id", "common", "--scope", 'a"b'], "scope"),
    (["--name", "x", "--client-id", "c", "--issuer", "http://idp.example.com"], "plain http"),
    (["--name", "x", "--client-id", CLIENT_ID, "--tenant-id", "common", "--issuer", "https://x.example"],
     "not both"),
])
def test_create_profile_validates_input(agent_dirs, capsys, args, words):
    assert main(["create-profile", *args]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("entra-auth-cli: error: ") and words in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_create_profile_without_a_terminal_names_what_is_missing(agent_dirs):
    result = subprocess.run([*CLI, "create-profile", "--name", "x"], env=cli_env(agent_dirs),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert result.returncode == EXIT_USAGE
    assert "missing --client-id, --tenant-id (or --issuer)" in result.stderr
    assert "prompting needs a terminal" in result.stderr


def test_create_profile_prompts_on_a_terminal(agent_dirs):
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI on a terminal
        os.environ.update(cli_env(agent_dirs))
        os.execv(sys.executable, [*CLI, "create-profile", "--name", "device-app"])
    answers = iter(["contoso.onmicrosoft.com", CLIENT_ID, ""])
    output = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if output.rstrip().endswith(b":") or output.rstrip().endswith(b"]:"):
            os.write(fd, (next(answers, "") + "\n").encode())
            output += b"\n"
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert b"Tenant ID" in output and b"Client ID" in output
    profiles = (agent_dirs["config"] / "profiles.toml").read_text()
    assert "contoso.onmicrosoft.com" in profiles and CLIENT_ID in profiles


def test_delete_profile_and_logout(agent_dirs, idp_realtime, capsys):
    create(idp_realtime)
    approve_when_issued(idp_realtime)
    assert main(["get-token", "--output", "json"]) == 0
    token_file = agent_dirs["state"] / "tokens" / "default.json"
    assert token_file.exists()
    assert main(["logout"]) == 0
    assert not token_file.exists()
    assert main(["logout"]) == 0
    assert "was not signed in" in capsys.readouterr().err
    assert main(["delete-profile", "--name", "default"]) == 0
    assert main(["get-token"]) == EXIT_CONFIG
    assert "no profile named 'default'" in capsys.readouterr().err


# -- get-token ----------------------------------------------------------------

def test_get_token_json_on_stdout_instructions_on_stderr(agent_dirs, idp_realtime, capsys):
    create(idp_realtime)
    capsys.readouterr()
    approve_when_issued(idp_realtime)
    assert main(["get-token", "--flow", "device-code", "--output", "json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)                       # stdout is nothing but the JSON
    assert set(data) == {"access_token", "token_type", "expires_at", "expires_in", "scope",
                         "profile", "account"}
    assert "refresh_token" not in out
    assert idp_realtime.validate_access_token(data["access_token"]) == "ada@contoso.example"
    assert data["profile"] == "default" and data["token_type"] == "Bearer"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["expires_at"])
    assert 3500 < data["expires_in"] <= 3600
    assert "To sign in, use a web browser to open the page:" in err
    assert idp_realtime.verification_uri in err and "And enter the code:" in err
    assert "Token saved to profile 'default'" in err
    assert data["access_token"] not in err
    # The second call reuses the saved token: no new code, no request at all.
    before = sum(idp_realtime.counts.values())
    assert main(["get-token", "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["access_token"] == data["access_token"]
    assert sum(idp_realtime.counts.values()) == before


def test_get_token_text_prints_the_bare_token_when_piped(agent_dirs, idp_realtime):
    create(idp_realtime)
    approve_when_issued(idp_realtime)
    result = subprocess.run([*CLI, "get-token"], env=cli_env(agent_dirs), capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert idp_realtime.validate_access_token(token)
    assert token not in result.stderr
    # Without a terminal, progress is plain lines, no spinner control codes.
    assert "\r" not in result.stderr and "Waiting for authentication..." in result.stderr


def test_declined_sign_in(agent_dirs, idp_realtime, capsys):
    create(idp_realtime)
    approve_when_issued(idp_realtime, decline=True)
    assert main(["get-token"]) == EXIT_SIGN_IN
    err = capsys.readouterr().err
    assert "authorization_declined" in err and "Traceback" not in err


@pytest.mark.slow
def test_expired_code_says_try_again(agent_dirs, capsys):
    from agent.sandbox.idp import IdentityProvider
    with IdentityProvider(interval=1, code_lifetime=2) as idp:
        create(idp)
        assert main(["get-token"]) == EXIT_SIGN_IN
    err = capsys.readouterr().err
    assert "Device code expired. Please try again." in err


@pytest.mark.slow
def test_public_client_flows_off_gives_the_fix(agent_dirs, capsys):
    from agent.sandbox.idp import IdentityProvider
    with IdentityProvider(interval=1, public_client_flows=False) as idp:
        create(idp)
        assert main(["get-token"]) == 1
    err = capsys.readouterr().err
    assert "AADSTS7000218" in err and "Allow public client flows" in err
    assert "--is-fallback-public-client true" in err


@pytest.mark.slow
def test_unreachable_provider_is_one_line(agent_dirs, capsys):
    from agent.sandbox.idp import IdentityProvider
    idp = IdentityProvider(interval=1).start()
    create(idp)
    idp.stop()
    capsys.readouterr()
    assert main(["get-token"]) == 5
    err = capsys.readouterr().err.strip()
    assert err.startswith("entra-auth-cli: error: cannot reach the device authorization endpoint")
    assert len(err.splitlines()) == 1


def test_ctrl_c_cancels(agent_dirs, idp_realtime):
    create(idp_realtime)
    proc = subprocess.Popen([*CLI, "get-token"], env=cli_env(agent_dirs), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    idp_realtime.wait_for_code(timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    # Ends by SIGINT (so a calling script stops too); a shell shows 130 for it.
    assert proc.returncode == -signal.SIGINT and 128 + signal.SIGINT == EXIT_CANCELLED
    assert "Authentication cancelled by user" in err
    assert "Traceback" not in err and out == ""


def test_spinner_on_a_terminal(agent_dirs, idp_realtime):
    create(idp_realtime)
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))   # 80x24, as a terminal says
    proc = subprocess.Popen([*CLI, "get-token", "--output", "json"],
                            env=cli_env(agent_dirs, TERM="xterm", COLUMNS=""),
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    code = idp_realtime.wait_for_code(timeout=30)
    seen = b""
    deadline = time.monotonic() + 30
    while b"left" not in seen.split(b"Waiting for authentication...")[-1] and time.monotonic() < deadline:
        if select.select([master], [], [], 1)[0]:
            seen += os.read(master, 4096)
    idp_realtime.approve(code)
    out, _ = proc.communicate(timeout=30)
    while select.select([master], [], [], 0.2)[0]:
        try:
            seen += os.read(master, 4096)
        except OSError:
            break
    os.close(master)
    assert proc.returncode == 0
    text = seen.decode()
    assert "┌" in text and "Enter code: " + code in text
    assert re.search(r"\r[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] Waiting for authentication\.\.\. 1[45]m \d\ds left", text)
    assert "✓ Authentication successful" in text
    assert json.loads(out)["access_token"] not in text


@pytest.mark.slow
def test_refreshes_an_expiring_token(agent_dirs, capsys):
    from agent.sandbox.idp import IdentityProvider
    with IdentityProvider(interval=1, access_token_lifetime=200) as idp:   # < 5 minutes: due at once
        create(idp)
        approve_when_issued(idp)
        main(["get-token", "--output", "json"])
        first = json.loads(capsys.readouterr().out)["access_token"]
        assert main(["get-token", "--output", "json"]) == 0
        second = json.loads(capsys.readouterr().out)["access_token"]
        assert second != first and idp.counts["token.refresh_token"] == 1
        assert idp.counts["devicecode"] == 1


@pytest.mark.slow
def test_revoked_refresh_starts_a_new_sign_in(agent_dirs, capsys):
    from agent.sandbox.idp import IdentityProvider
    with IdentityProvider(interval=1, access_token_lifetime=200) as idp:
        create(idp)
        approve_when_issued(idp)
        main(["get-token", "--output", "json"])
        idp.revoke_refresh_tokens()
        approve_when_issued(idp)
        capsys.readouterr()
        assert main(["get-token", "--output", "json"]) == 0
        err = capsys.readouterr().err
        assert "no longer accepted" in err and "starting a new sign-in" in err
        assert err.count("no longer accepted") == 1 and ".;" not in err     # said once, cleanly
        assert idp.counts["devicecode"] == 2


def test_token_file_is_root_only(agent_dirs, idp_realtime):
    create(idp_realtime)
    approve_when_issued(idp_realtime)
    assert main(["get-token", "--output", "json"]) == 0
    token_dir = agent_dirs["state"] / "tokens"
    assert stat.S_IMODE(os.stat(token_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(token_dir / "default.json").st_mode) == 0o600
    os.chmod(token_dir / "default.json", 0o644)
    assert main(["get-token"]) == 6


def test_seed_in_scripts_example(agent_dirs, idp_realtime, tmp_path):
    """The seed's "In Scripts" bash example, unchanged but for the URL it fetches."""
    create(idp_realtime)
    # The seed as shared beside the checkout (CI lays shared/ next to the clone), else our copy.
    seed = REPO.parent / "shared" / "seed" / "device-code-flow.txt"
    if not seed.exists():
        seed = REPO / "tests" / "data" / "device-code-flow.txt"
    text = seed.read_text()
    start = text.index("#!/bin/bash\nset -euo pipefail\necho \"Authenticating with Microsoft Entra ID...\"")
    end = text.index("| jq .", start) + len("| jq .")
    script = text[start:end].replace("https://graph.microsoft.com/v1.0/me",
                                     f"{idp_realtime.base_url}/v1.0/me")
    (tmp_path / "script.sh").write_text(script + "\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "entra-auth-cli").write_text(f"#!/bin/sh\nexec {sys.executable} -c "
                                           "'import sys; from agent.cli import main; sys.exit(main())' \"$@\"\n")
    (bindir / "entra-auth-cli").chmod(0o755)
    approve_when_issued(idp_realtime)
    env = cli_env(agent_dirs, PATH=f"{bindir}:{os.environ['PATH']}")
    result = subprocess.run(["bash", str(tmp_path / "script.sh")], env=env, capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "Authentication successful!" in result.stdout
    assert json.loads(result.stdout[result.stdout.index("{"):])["userPrincipalName"] == "ada@contoso.example"
    for secret in idp_realtime.issued_secrets():
        assert secret not in result.stdout + result.stderr


def _write_display_config(agent_dirs, driver_lines):
    agent_dirs["config"].mkdir(parents=True, exist_ok=True)
    (agent_dirs["config"] / "agent.toml").write_text(
        'profile = "default"\ndevice_id = "pi-1"\n\n[display]\n' + driver_lines + "\n")


def test_get_token_shows_the_code_on_the_configured_screen(agent_dirs, idp_realtime, capsys, caplog):
    pytest.importorskip("luma.core")
    _write_display_config(agent_dirs, 'driver = "dummy"\nwidth = 128\nheight = 64')
    create(idp_realtime)
    approve_when_issued(idp_realtime)
    # Every message of ours at every level (main() sets the root logger's
    # level itself, so the level goes on our loggers): the secrets are in none.
    with caplog.at_level(logging.DEBUG, logger="agent"), \
            caplog.at_level(logging.DEBUG, logger="hardware"):
        assert main(["get-token", "--display", "--output", "json"]) == 0
    assert "dummy" in caplog.text and "128x64" in caplog.text
    secrets = idp_realtime.issued_secrets()
    assert secrets
    err = capsys.readouterr().err
    for secret in secrets:
        assert secret not in caplog.text and secret not in err


def test_get_token_display_trouble_is_one_warning_not_a_failure(agent_dirs, idp_realtime, capsys, caplog):
    pytest.importorskip("luma.core")
    _write_display_config(agent_dirs, 'driver = "ssd1306"\ninterface = "i2c"\ni2c_port = 99')
    create(idp_realtime)
    approve_when_issued(idp_realtime)
    with caplog.at_level(logging.WARNING):
        assert main(["get-token", "--display", "--output", "json"]) == 0
    assert "/dev/i2c-99" in caplog.text
    err = capsys.readouterr().err
    assert err.count("Enter code:") == 1          # no second copy from a console fallback


def test_declined_says_how_to_try_again_for_this_profile(agent_dirs, idp_realtime, capsys):
    create(idp_realtime, "kiosk")
    approve_when_issued(idp_realtime, decline=True)
    assert main(["get-token", "--profile", "kiosk"]) == EXIT_SIGN_IN
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "get-token --flow device-code --profile kiosk" in err
    assert "grant is no longer valid" not in err          # not the generic AADSTS70000 hint


def test_logout_or_delete_of_an_unknown_profile_does_not_suggest_creating_it(agent_dirs, capsys):
    for argv in (["logout", "--profile", "nope"], ["delete-profile", "--name", "nope"]):
        assert main(argv) == EXIT_CONFIG
        err = capsys.readouterr().err
        assert "no profile named 'nope'" in err and "list-profiles" in err and "create-profile" not in err


def test_list_profiles_names_a_refused_token_file_and_its_fix(agent_dirs, idp_realtime, capsys):
    create(idp_realtime)
    approve_when_issued(idp_realtime)
    assert main(["get-token", "--output", "json"]) == 0
    token_file = agent_dirs["state"] / "tokens" / "default.json"
    os.chmod(token_file, 0o644)
    capsys.readouterr()
    assert main(["list-profiles", "--output", "json"]) == 0
    out, err = capsys.readouterr()
    row = json.loads(out)[0]
    assert row["signed_in"] is None and f"chmod 600 {token_file}" in row["error"]
    assert f"chmod 600 {token_file}" in err


def test_an_empty_scope_is_bad_input(agent_dirs, idp_realtime, capsys):
    create(idp_realtime)
    assert main(["get-token", "--scope", ""]) == EXIT_USAGE
    assert "--scope is empty" in capsys.readouterr().err
    assert idp_realtime.counts["devicecode"] == 0
