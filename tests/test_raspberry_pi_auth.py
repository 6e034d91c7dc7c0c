"""raspberry-pi-auth.sh end to end: a real install into a scratch root, a real
sign-in against the local identity provider (polling every second, approved
over its HTTP controls while the script waits), and tests/fake-bin/systemctl
on PATH recording what the script asks of systemd.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import threading
import tomllib
from pathlib import Path

import pytest
import requests

from agent.sandbox.idp import IdentityProvider
from tests.fixtures_install import REPO, make_checkout, make_root, need_root

SCRIPT = REPO / "raspberry-pi-auth.sh"
FAKE_BIN = REPO / "tests" / "fake-bin"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
TENANT = "contoso.example"
SERVICE_CALLS_FIRST = ["is-active --quiet entra-agent", "enable --now entra-agent",
                       "status --no-pager entra-agent"]
# Settings the script reads from the environment; none may leak in from the
# machine running the tests.
SETTINGS = ("TENANT_ID", "CLIENT_ID", "SCOPE", "PROFILE", "CLOUD", "ISSUER", "AUTHORITY_HOST",
            "ENDPOINT", "MQTT_HOST", "DISPLAY_DRIVER", "BUTTON_PIN", "SOURCE", "EXTRAS")


class Approver:
    """Approves the next device code over ``POST /_sandbox/approve``, from a
    thread, as a person with a phone would while the script waits."""

    def __init__(self, idp: IdentityProvider, action: str = "approve") -> None:
        self.idp = idp
        self.action = action
        self.user_code: str | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            code = self.idp.wait_for_code(timeout=120)
            answer = requests.post(f"{self.idp.base_url}/_sandbox/{self.action}",
                                   data={"user_code": code}, timeout=10)
            answer.raise_for_status()
            self.user_code = code
        except BaseException as error:  # reported by join()
            self.error = error

    def join(self) -> str:
        self._thread.join(timeout=130)
        if self.error is not None:
            raise AssertionError(f"the approver failed: {self.error!r}")
        assert self.user_code, "no device code was requested"
        return self.user_code


def script_env(calls: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ENTRA_AGENT_") and k not in SETTINGS
           and k not in ("CONFIGURATION_DIRECTORY", "STATE_DIRECTORY", "RUNTIME_DIRECTORY")}
    env["PATH"] = f"{FAKE_BIN}:{env['PATH']}"
    env["FAKE_SYSTEMCTL_LOG"] = str(calls)
    # With --root the script leaves this machine's systemd alone unless
    # SYSTEMCTL names a stand-in: the recording one, so the service steps run.
    env["SYSTEMCTL"] = str(FAKE_BIN / "systemctl")
    env.update(extra)
    return env


def agent_env(root: Path) -> dict[str, str]:
    return dict(os.environ, ENTRA_AGENT_CONFIG_DIR=str(root / "etc/entra-agent"),
                ENTRA_AGENT_STATE_DIR=str(root / "var/lib/entra-agent"),
                ENTRA_AGENT_RUNTIME_DIR=str(root / "run/entra-agent"))


def recorded(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


def profiles(root: Path) -> dict[str, dict]:
    cli = root / "opt/entra-agent/venv/bin/entra-auth-cli"
    out = subprocess.run([str(cli), "list-profiles", "--output", "json"], env=agent_env(root),
                         capture_output=True, text=True, check=True).stdout
    return {p["name"]: p for p in json.loads(out)}


def assert_no_secret(idp: IdentityProvider, *outputs: str) -> None:
    text = "\n".join(outputs)
    secrets = idp.issued_secrets()
    assert secrets, "the identity provider issued nothing: the check would be empty"
    leaked = [s[:6] + "..." for s in secrets if s in text]
    assert not leaked, f"tokens or device codes in the script's output: {leaked}"


def run(command: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    return make_checkout(tmp_path / "checkout")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    need_root()
    return make_root(tmp_path / "root")


@pytest.mark.slow
def test_shell_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed (apt-get install shellcheck): CI must have it"
    scripts = [SCRIPT, REPO / "deploy" / "install.sh", *sorted(FAKE_BIN.iterdir()),
               *sorted((REPO / "tools").glob("*.sh"))]
    result = subprocess.run([shellcheck, "-S", "warning", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_sign_in_end_to_end_then_again_without_a_new_code(
        idp_realtime: IdentityProvider, checkout: Path, root: Path, tmp_path: Path) -> None:
    calls = tmp_path / "systemctl.calls"
    env = script_env(calls)
    command = ["bash", str(checkout / "raspberry-pi-auth.sh"), "--root", str(root), "--no-apt",
               "--tenant-id", TENANT, "--client-id", CLIENT_ID,
               "--authority-host", idp_realtime.base_url,
               "--scope", "https://graph.microsoft.com/User.Read", "--scope", "offline_access",
               "--endpoint", "http://127.0.0.1:9/telemetry", "--display", "console", "--button-pin", "17"]
    approver = Approver(idp_realtime)
    first = run(command, env)
    code = approver.join()
    assert first.returncode == 0, first.stdout + first.stderr

    # The person saw the code in the SSH session; no token was printed.
    assert f"enter the code: {code}" in first.stderr and "Grab your phone" in first.stderr
    # The installer's "Next: ... run raspberry-pi-auth.sh" would confuse here.
    assert "Next:" not in first.stderr and "install.sh: done" in first.stderr
    assert_no_secret(idp_realtime, first.stdout, first.stderr)

    profile = profiles(root)["raspberry-pi"]
    assert profile["signed_in"] is True and profile["account"] == "ada@contoso.example"
    assert profile["client_id"] == CLIENT_ID and profile["tenant_id"] == TENANT

    tokens = root / "var/lib/entra-agent/tokens"
    token_file = tokens / "raspberry-pi.json"
    assert token_file.stat().st_uid == 0 and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "var/lib/entra-agent").stat().st_mode) == 0o700

    config_text = (root / "etc/entra-agent/agent.toml").read_text()
    settings = tomllib.loads(config_text)
    assert settings["profile"] == "raspberry-pi"
    assert settings["telemetry"]["endpoint"] == "http://127.0.0.1:9/telemetry"
    assert settings["display"]["driver"] == "console" and settings["button"]["pin"] == 17
    assert settings["telemetry"]["interval"] == 60, "keys not given were changed"
    # One of each table, in the example's order: the commented-out [display]
    # and [button] were uncommented where they stand, not added at the end.
    headers = [line.split()[0] for line in config_text.splitlines() if re.match(r"\[[a-z.]+\]", line)]
    assert headers == ["[telemetry]", "[display]", "[button]"], headers
    # README step 4, literally: under [display], set i2c_address = "0x3D".
    edited = config_text.replace('# i2c_address = "0x3C"', 'i2c_address = "0x3D"')
    assert edited != config_text
    (root / "etc/entra-agent/agent.toml").write_text(edited)
    from agent.config import load_config
    loaded = load_config(root / "etc/entra-agent/agent.toml")
    assert loaded.display.as_settings()["i2c_address"] == "0x3D"
    assert len(loaded.sensors) == len(settings["sensors"])
    (root / "etc/entra-agent/agent.toml").write_text(config_text)

    assert recorded(calls) == [f"--root={root} enable entra-agent.service", *SERVICE_CALLS_FIRST]
    assert "Active: active (running)" in first.stdout

    # Again, with no sign-in values at all: the profile and token are reused,
    # nothing is installed, no code is asked for, and the service restarts.
    codes_before = idp_realtime.state()["issued_codes"]
    calls.unlink()
    config_before = (root / "etc/entra-agent/agent.toml").stat().st_mtime_ns
    second = run(["bash", str(checkout / "raspberry-pi-auth.sh"), "--root", str(root)], env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert idp_realtime.state()["issued_codes"] == codes_before
    assert "enter the code" not in second.stderr
    assert "Grab your phone" not in second.stderr and "signed in already" in second.stderr
    assert "profile 'raspberry-pi' exists; keeping it" in second.stderr
    assert (root / "etc/entra-agent/agent.toml").stat().st_mtime_ns == config_before
    assert recorded(calls) == ["is-active --quiet entra-agent", "restart entra-agent",
                               "status --no-pager entra-agent"]
    assert_no_secret(idp_realtime, second.stdout, second.stderr)

    # A declined sign-in for a new profile stops before touching the service.
    calls.unlink()
    decliner = Approver(idp_realtime, action="decline")
    declined = run(["bash", str(checkout / "raspberry-pi-auth.sh"), "--root", str(root),
                    "--profile", "kiosk", "--tenant-id", TENANT, "--client-id", CLIENT_ID,
                    "--authority-host", idp_realtime.base_url], env)
    decliner.join()
    assert declined.returncode == 4
    assert declined.stderr.strip().splitlines()[-1] == (
        "raspberry-pi-auth.sh: error: the sign-in did not complete: the code expired or was declined "
        "(run raspberry-pi-auth.sh again for a new code)")
    assert recorded(calls) == []

    # A mistyped client id is bad input (2, as entra-auth-cli says), not a broken profile file (3).
    typo = run(["bash", str(checkout / "raspberry-pi-auth.sh"), "--root", str(root),
                "--profile", "typo", "--tenant-id", TENANT, "--client-id", "11111111-2222"], env)
    assert typo.returncode == 2, typo.stderr
    assert "'11111111-2222' is not a GUID" in typo.stderr
    assert recorded(calls) == []


@pytest.mark.slow
def test_piped_over_ssh_installs_from_a_wheel_with_settings_from_the_environment(
        idp_realtime: IdentityProvider, agent_wheel: Path, root: Path, tmp_path: Path) -> None:
    wheel = agent_wheel
    elsewhere = tmp_path / "home"          # no checkout here: the script came on stdin
    elsewhere.mkdir()
    calls = tmp_path / "systemctl.calls"
    env = script_env(calls, TENANT_ID=TENANT, CLIENT_ID=CLIENT_ID, AUTHORITY_HOST=idp_realtime.base_url,
                     SCOPE="api://telemetry/Readings.Write offline_access", MQTT_HOST="broker.example",
                     DISPLAY_DRIVER="ssd1306", SOURCE=str(wheel), ENTRA_AGENT_PREFIX=str(root))
    approver = Approver(idp_realtime)
    piped = run(["bash", "-s", "--", "--no-apt", "--extras", "none"], env, cwd=elsewhere,
                input=SCRIPT.read_text())
    approver.join()
    assert piped.returncode == 0, piped.stdout + piped.stderr
    assert_no_secret(idp_realtime, piped.stdout, piped.stderr)

    assert (root / "opt/entra-agent/venv/share/entra-device-agent/install.sh").is_file()
    profile = profiles(root)["raspberry-pi"]
    assert profile["signed_in"] is True
    assert profile["scopes"] == ["api://telemetry/Readings.Write", "offline_access"]
    settings = tomllib.loads((root / "etc/entra-agent/agent.toml").read_text())
    assert settings["mqtt"]["host"] == "broker.example"
    assert settings["display"]["driver"] == "ssd1306"
    assert "endpoint" not in settings["telemetry"]
    assert recorded(calls) == [f"--root={root} enable entra-agent.service", *SERVICE_CALLS_FIRST]


def test_piped_with_nothing_to_install_from_says_to_pass_source(root: Path, tmp_path: Path) -> None:
    calls = tmp_path / "systemctl.calls"
    env = script_env(calls, ENTRA_AGENT_PREFIX=str(root))
    piped = run(["bash", "-s", "--", "--tenant-id", TENANT, "--client-id", CLIENT_ID], env,
                cwd=tmp_path, input=SCRIPT.read_text())
    assert piped.returncode == 2
    assert piped.stderr.strip() == (
        "raspberry-pi-auth.sh: error: entra-device-agent is not installed and there is no checkout here "
        "to install it from (pass --source: a wheel copied to the board, a git+https:// URL, or "
        "entra-device-agent==VERSION from an index the board can reach)")
    assert not (root / "opt/entra-agent").exists() and recorded(calls) == []


@pytest.mark.slow
def test_a_run_that_failed_before_sign_in_can_be_mended_by_running_again(
        idp_realtime: IdentityProvider, checkout: Path, root: Path, tmp_path: Path) -> None:
    # A typo in the login host (or tenant) makes the first run fail before
    # anyone signed in; running again with the right value must use it, not
    # keep the broken profile and fail the same way.
    calls = tmp_path / "systemctl.calls"
    env = script_env(calls)
    del env["SYSTEMCTL"]            # --root alone: this machine's service is left alone
    base = ["bash", str(checkout / "raspberry-pi-auth.sh"), "--root", str(root), "--no-apt",
            "--tenant-id", TENANT, "--client-id", CLIENT_ID, "--display", "console"]
    broken = run([*base, "--authority-host", "http://127.0.0.1:9"], env)
    assert broken.returncode == 5, broken.stderr
    assert profiles(root)["raspberry-pi"]["signed_in"] is False

    approver = Approver(idp_realtime)
    mended = run([*base, "--authority-host", idp_realtime.base_url], env)
    approver.join()
    assert mended.returncode == 0, mended.stderr
    assert "has never signed in; replacing it" in mended.stderr
    # Only the installer's offline `systemctl --root=...`; nothing live.
    assert all(call.startswith(f"--root={root} ") for call in recorded(calls)), recorded(calls)
    assert "this machine's systemd is left alone" in mended.stderr
    profile = profiles(root)["raspberry-pi"]
    assert profile["signed_in"] is True and profile["authority_host"] == idp_realtime.base_url

    # Signed in now: a later run keeps the profile whatever values it is given.
    again = run([*base, "--authority-host", "http://127.0.0.1:9"], env)
    assert again.returncode == 0, again.stderr
    assert "profile 'raspberry-pi' exists; keeping it" in again.stderr
    assert profiles(root)["raspberry-pi"]["authority_host"] == idp_realtime.base_url


def test_missing_client_id_fails_before_installing(checkout: Path, root: Path, tmp_path: Path) -> None:
    calls = tmp_path / "systemctl.calls"
    result = run(["bash", str(checkout / "raspberry-pi-auth.sh"), "--root", str(root), "--no-apt",
                  "--tenant-id", TENANT], script_env(calls))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "raspberry-pi-auth.sh: error: --client-id is required to create the profile 'raspberry-pi' "
        "(pass --client-id or set CLIENT_ID: the Application (client) ID of your public-client app registration)")
    assert not (root / "opt/entra-agent").exists() and recorded(calls) == []


def test_a_client_id_that_is_not_a_guid_fails_before_installing(checkout: Path, root: Path,
                                                                 tmp_path: Path) -> None:
    """Checked first: on a Pi the install takes minutes, and the mistake is in the command line."""
    calls = tmp_path / "systemctl.calls"
    result = run(["bash", str(checkout / "raspberry-pi-auth.sh"), "--root", str(root), "--no-apt",
                  "--tenant-id", TENANT, "--client-id", "my-app"], script_env(calls))
    assert result.returncode == 2
    assert "--client-id 'my-app' is not a GUID" in result.stderr
    assert not (root / "opt/entra-agent").exists() and recorded(calls) == []


def test_refuses_to_run_unless_root(tmp_path: Path) -> None:
    command = ["bash", str(SCRIPT), "--tenant-id", TENANT, "--client-id", CLIENT_ID]
    if os.geteuid() == 0:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    result = run(command, script_env(tmp_path / "calls"))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "raspberry-pi-auth.sh: error: must run as root: it installs a service and keeps tokens in "
        "root-only files (run: sudo ./raspberry-pi-auth.sh ...)")


def test_refuses_to_run_anywhere_but_linux(tmp_path: Path) -> None:
    # A macOS laptop: `uname -s` says Darwin.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    uname = bin_dir / "uname"
    uname.write_text("#!/bin/sh\necho Darwin\n")
    uname.chmod(0o755)
    env = script_env(tmp_path / "calls")
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    result = run(["bash", str(SCRIPT), "--client-id", CLIENT_ID], env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "raspberry-pi-auth.sh: error: this is Darwin, not Linux (run this script on the Raspberry Pi "
        "itself, e.g. over ssh)")
    assert re.fullmatch(r"[^\n]+", result.stderr.strip()), "more than one line"


@pytest.mark.parametrize("flags, words", [
    (["--tenant-id", "contoso", "--client-id", CLIENT_ID], "--tenant-id 'contoso' is not a GUID, a domain"),
    (["--tenant-id", TENANT, "--client-id", CLIENT_ID, "--endpoint", "http://api.example.com/t"],
     "--endpoint 'http://api.example.com/t' is not an https:// URL"),
    (["--tenant-id", TENANT, "--client-id", CLIENT_ID, "--scope", "User Read"], "--scope 'User Read' is not valid"),
    (["--tenant-id", TENANT, "--client-id", CLIENT_ID, "--mqtt-host", "broker local"],
     "--mqtt-host 'broker local' is not a host name"),
    (["--tenant-id", TENANT, "--client-id", CLIENT_ID, "--display", "ssd1306;rm"], "--display 'ssd1306;rm'"),
    (["--tenant-id", TENANT, "--client-id", CLIENT_ID, "--extras", "displays"], "--extras 'displays'"),
    (["--issuer", "http://id.example.com", "--client-id", "app"], "--issuer 'http://id.example.com'"),
])
def test_every_value_is_checked_before_installing(checkout: Path, tmp_path: Path, flags, words) -> None:
    need_root()
    root = tmp_path / "root"                    # stays empty: nothing may be installed
    calls = tmp_path / "systemctl.calls"
    result = run(["bash", str(checkout / "raspberry-pi-auth.sh"), "--root", str(root), "--no-apt", *flags],
                 script_env(calls))
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (root / "opt/entra-agent").exists() and recorded(calls) == []
