"""deploy/install.sh, run for real into a scratch root.

The installer creates a real venv, pip-installs this checkout into it (the
venv sees the system's site-packages, as on a board, so the dependencies
already here are reused instead of downloaded), writes the config, installs
the unit and enables it with the real ``systemctl --root`` (which needs no
running systemd). Running it twice must change nothing, byte for byte and
timestamp for timestamp; ``--uninstall`` must leave the root as it was, except
for what the person made.

The helpers (``make_checkout``, ``make_root``, ``tree``, the ``agent_wheel``
fixture) live in tests/fixtures_install.py.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.fixtures_install import INSTALL, REPO, make_checkout, make_root, need_root, tree


def run_install(*args: str, check: bool = True, env: dict[str, str] | None = None,
                script: Path = INSTALL) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                            env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"install.sh {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    return make_checkout(tmp_path / "checkout")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    need_root()
    return make_root(tmp_path / "root")


@pytest.mark.slow
def test_install_twice_changes_nothing_and_uninstall_leaves_the_root_as_it_was(
        checkout: Path, root: Path) -> None:
    before = tree(root)

    first = run_install("--root", str(root), "--source", str(checkout))
    assert "installing" in first.stderr
    # The next step names a profile: get-token alone fails while none exists.
    assert "Next: sign in" in first.stderr and "create-profile --name default" in first.stderr
    installed = tree(root)

    second = run_install("--root", str(root), "--source", str(checkout))
    assert "is installed already" in second.stderr
    assert tree(root) == installed, "a second run changed files"

    # What the first run made.
    unit = root / "etc/systemd/system/entra-agent.service"
    assert unit.read_bytes() == (REPO / "deploy/entra-agent.service").read_bytes()
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    wants = root / "etc/systemd/system/multi-user.target.wants/entra-agent.service"
    assert os.readlink(wants) == "/etc/systemd/system/entra-agent.service"

    config = root / "etc/entra-agent/agent.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o644
    settings = tomllib.loads(config.read_text())
    assert "mqtt" not in settings and "endpoint" not in settings["telemetry"]
    assert {s["type"] for s in settings["sensors"]} >= {"cpu_temperature", "memory"}

    state = root / "var/lib/entra-agent"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700 and state.stat().st_uid == 0

    venv = root / "opt/entra-agent/venv"
    # (cwd: "python -c" puts the current folder first on sys.path)
    found = subprocess.run([str(venv / "bin/python"), "-c", "import agent; print(agent.__file__)"],
                           capture_output=True, text=True, check=True, cwd=root).stdout.strip()
    assert found.startswith(str(venv)), f"agent imported from {found}, not from the venv"
    for command in ("entra-auth-cli", "entra-agent"):
        link = root / "usr/local/bin" / command
        assert link.is_symlink() and not os.readlink(link).startswith("/")
        assert link.resolve() == (venv / "bin" / command).resolve()
        subprocess.run([str(link), "--help"], capture_output=True, check=True)

    # The starter config is valid for the agent as installed (profile aside).
    env = dict(os.environ, ENTRA_AGENT_CONFIG_DIR=str(root / "etc/entra-agent"),
               ENTRA_AGENT_STATE_DIR=str(state), ENTRA_AGENT_RUNTIME_DIR=str(root / "run/entra-agent"))
    subprocess.run([str(venv / "bin/entra-auth-cli"), "create-profile", "--name", "default",
                    "--client-id", "00000000-0000-0000-0000-0000000000aa", "--tenant-id", "contoso.example"],
                   env=env, capture_output=True, check=True, stdin=subprocess.DEVNULL)
    checked = subprocess.run([str(venv / "bin/entra-agent"), "check-config", "--config", str(config)],
                             env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (root / "etc/entra-agent/profiles.toml").unlink()

    # The unit, against the real entra-agent it starts.
    verify = subprocess.run(["systemd-analyze", "verify", f"--root={root}",
                             "/etc/systemd/system/entra-agent.service"], capture_output=True, text=True)
    assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), \
        verify.stdout + verify.stderr

    gone = run_install("--root", str(root), "--uninstall")
    assert "uninstalled" in gone.stderr
    after = tree(root)
    assert after == before, (f"left behind: {sorted(set(after) - set(before))}; "
                             f"changed or removed: {sorted(k for k in before if after.get(k) != before[k])}")


@pytest.mark.slow
def test_uninstall_keeps_what_you_made_and_purge_removes_it(agent_wheel: Path, root: Path) -> None:
    run_install("--root", str(root), "--source", str(agent_wheel), "--extras", "none")
    config = root / "etc/entra-agent/agent.toml"
    config.write_text(config.read_text() + '\n[button]\npin = 22\n')
    tokens = root / "var/lib/entra-agent/tokens"
    tokens.mkdir(mode=0o700)
    (tokens / "raspberry-pi.json").write_text("{}")

    # Your own config survives a reinstall untouched.
    mine = config.read_bytes()
    run_install("--root", str(root), "--source", str(agent_wheel), "--extras", "none")
    assert config.read_bytes() == mine

    kept = run_install("--root", str(root), "--uninstall")
    assert "kept /etc/entra-agent /var/lib/entra-agent" in kept.stderr
    assert config.read_bytes() == mine and (tokens / "raspberry-pi.json").exists()
    assert not (root / "opt/entra-agent").exists()
    assert not (root / "etc/systemd/system/entra-agent.service").exists()
    assert not (root / "usr/local/bin/entra-auth-cli").exists()

    purged = run_install("--root", str(root), "--uninstall", "--purge", "--yes")
    assert "saved tokens: you will have to sign in again" in purged.stderr
    # The program went with the first --uninstall: nothing is left to revoke with.
    assert "cannot revoke the saved sign-ins" in purged.stderr
    assert "Revoke-MgUserSignInSession" in purged.stderr
    assert "readings not yet uploaded are lost" in purged.stderr
    assert not (root / "etc/entra-agent").exists() and not (root / "var/lib/entra-agent").exists()


@pytest.mark.slow
def test_purge_revokes_the_saved_sign_in_first(agent_wheel: Path, root: Path, idp) -> None:
    from agent.auth.tokens import TokenClient
    from agent.clock import FakeClock
    from agent.profiles import Profile, ProfileStore
    from agent.tokenstore import TokenStore

    run_install("--root", str(root), "--source", str(agent_wheel), "--extras", "none")
    # A board signed in to an OpenID provider (the sandbox lists RFC 7009's endpoint).
    profile = Profile(name="raspberry-pi", client_id="device-agent",
                      issuer=idp.issuer("organizations"))
    ProfileStore(root / "etc/entra-agent/profiles.toml").save(profile)
    client = TokenClient(profile.validated(), clock=FakeClock(),
                         store=TokenStore(root / "var/lib/entra-agent/tokens"))
    authorization = client.request_code()
    idp.approve(authorization.user_code)
    refresh_token = client.poll(authorization).refresh_token

    purged = run_install("--root", str(root), "--uninstall", "--purge", "--yes")
    assert "the refresh token was revoked at" in purged.stderr
    assert idp.revoked == [refresh_token] and idp.refresh_token_state(refresh_token) == "revoked"
    assert not (root / "var/lib/entra-agent").exists() and not (root / "opt/entra-agent").exists()


@pytest.mark.slow
def test_a_changed_source_is_installed_again(checkout: Path, root: Path) -> None:
    run_install("--root", str(root), "--source", str(checkout), "--extras", "none")
    marker = checkout / "agent" / "_install_marker.py"
    marker.write_text("VALUE = 'second build'\n")
    again = run_install("--root", str(root), "--source", str(checkout), "--extras", "none")
    assert "installing" in again.stderr and "installed already" not in again.stderr
    python = root / "opt/entra-agent/venv/bin/python"
    value = subprocess.run([str(python), "-c", "from agent._install_marker import VALUE; print(VALUE)"],
                           capture_output=True, text=True, check=True, cwd=root).stdout.strip()
    assert value == "second build"


def test_wrong_use_fails_with_one_line_before_changing_anything(tmp_path: Path) -> None:
    scratch = tmp_path / "root"
    purge = run_install("--root", str(scratch), "--purge", check=False)
    assert purge.returncode != 0
    assert purge.stderr.strip() == ("install.sh: error: --purge only goes with --uninstall "
                                    "(run: install.sh --uninstall --purge)")
    extra = run_install("--root", str(scratch), "--extras", "display,camera", check=False)
    assert extra.returncode != 0
    assert extra.stderr.strip() == ("install.sh: error: unknown extra 'camera' "
                                    "(choose from display, gpio, or none)")
    assert not any(scratch.iterdir()), "a failed run left files behind"


def test_refuses_to_install_into_slash_unless_root() -> None:
    if os.geteuid() == 0:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(INSTALL)]
    else:
        command = ["bash", str(INSTALL)]
    result = subprocess.run(command, capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "ENTRA_AGENT_PREFIX"})
    assert result.returncode == 1
    assert result.stderr.strip() == ("install.sh: error: must run as root to install into / "
                                     "(run it with sudo, or pass --root DIR for a scratch root)")


@pytest.mark.slow
def test_a_failing_pip_step_shows_pips_own_error(checkout: Path, root: Path) -> None:
    # On armhf, cbor2 6.x needed a Rust compiler and pip's reason was hidden
    # by --quiet ("see its message above" pointed at nothing). A source pip
    # cannot build must show pip's own error above install.sh's line.
    # A build backend that does not exist: pip fails offline, with its own words.
    (checkout / "pyproject.toml").write_text(
        "[build-system]\nrequires = []\nbuild-backend = 'no_such_backend_for_this_test'\n")
    result = run_install("--root", str(root), "--source", str(checkout), "--extras", "none",
                         check=False)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("install.sh: error: pip could not install ") and "see its message above" in last
    before = output[:output.rindex("install.sh: error:")]
    assert "no_such_backend_for_this_test" in before, output[-3000:]
    # ... and what pip was doing when it failed (--quiet hid that: on a Pi
    # Zero a package compiling for half an hour looked like a hang).
    assert f"Processing {checkout}" in before, output[-3000:]


@pytest.mark.slow
def test_apt_is_asked_only_for_packages_this_system_has(tmp_path: Path) -> None:
    # The lists install.sh would hand to apt-get, from this machine's apt:
    # python3-lgpio / python3-rpi-lgpio exist only in Raspberry Pi OS's archive.
    if shutil.which("apt-cache") is None:
        pytest.skip("needs apt")
    script = ("set -euo pipefail; source <(sed -n '/^apt_wanted()/,/^}/p;/^apt_packages()/,/^}/p;"
              "/^say()/,/^}/p' " + str(INSTALL) + "); PROG=install.sh; EXTRAS=display,gpio; apt_packages")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    asked = result.stdout.split()
    for name in asked:
        assert subprocess.run(["apt-cache", "show", name], capture_output=True).returncode == 0, name
    expected = {"python3-venv", "python3-pil", "python3-cbor2", "python3-smbus2", "python3-spidev",
                "fonts-dejavu-core"}
    assert expected <= set(asked), asked
    absent = [name for name in ("python3-lgpio", "python3-rpi-lgpio") if name not in asked]
    if absent:
        assert "not in this system's Debian archive: " in result.stderr
        assert all(name in result.stderr for name in absent), result.stderr


def test_the_install_check_tools_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed (apt-get install shellcheck): CI must have it"
    scripts = sorted((REPO / "tools").glob("*.sh")) + [REPO / ".ci" / "run"]
    assert len(scripts) >= 3
    result = subprocess.run([shellcheck, "-S", "warning", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_token_users_join_the_group_that_may_read_the_token_service_secret(
        agent_wheel: Path, root: Path) -> None:
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                     "alice:x:1001:1001::/home/alice:/bin/sh\n"
                                     "bob:x:1002:1002::/home/bob:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nalice:x:1001:\nbob:x:1002:\n")
    before = tree(root)
    unknown = run_install("--root", str(root), "--source", str(agent_wheel), "--token-users", "carol",
                          check=False)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == ("install.sh: error: no user 'carol' on this system "
                                      "(create it first: sudo adduser carol)")
    assert tree(root) == before, "a refused run changed the root"

    first = run_install("--root", str(root), "--source", str(agent_wheel), "--extras", "none",
                        "--token-users", "alice", "bob")
    assert "created the group entra-agent-tokens" in first.stderr
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}
    group = groups["entra-agent-tokens"]
    assert group[3] == "alice,bob"
    secret = root / "etc/entra-agent/token-service.secret"
    st = secret.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, int(group[2]))
    assert len(secret.read_text().strip()) == 64 and int(secret.read_text(), 16)
    content = secret.read_bytes()

    # Again: nothing changes (same secret, no second membership).
    again = run_install("--root", str(root), "--source", str(agent_wheel), "--extras", "none",
                        "--token-users", "alice")
    assert "added" not in again.stderr and secret.read_bytes() == content
    assert (root / "etc/group").read_text().count("alice,bob") == 1

    gone = run_install("--root", str(root), "--uninstall")
    assert not secret.exists()
    assert "kept the group entra-agent-tokens" in gone.stderr
