"""Damaged, hostile and odd local files, table-driven: each gives one line, a
documented exit code, and never a traceback or a hang.

Token files with wrong-typed fields read as damaged (exit 6, with the fix);
FIFOs where a file belongs never block (checked in subprocesses with a
timeout, so a regression fails instead of hanging the suite); a token
folder that is a symbolic link is refused, not followed; profiles.toml is
checked like agent.toml (exit 3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agent import paths
from agent.__main__ import main as agent_main
from agent.cli import main
from agent.errors import EXIT_CONFIG, EXIT_OK, EXIT_STORAGE
from agent.profiles import Profile, ProfileStore
from agent.textsafe import is_clean
from tests.fixtures_cli import CLI, CLIENT_ID, cli_env

GOOD_TOKENS = {"version": 1, "client_id": CLIENT_ID, "access_token": "AT", "token_type": "Bearer",
               "expires_at": 4_000_000_000.0, "scope": ["User.Read"], "refresh_token": "RT",
               "id_token_claims": {"preferred_username": "ada@contoso.example"},
               "refresh_in": None, "obtained_at": 1_700_000_000.0, "requested_scopes": ["User.Read"]}


@pytest.fixture
def profile(agent_dirs):
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    ProfileStore(paths.profiles_file()).save(Profile(
        name="default", client_id=CLIENT_ID, tenant_id="contoso.onmicrosoft.com"))
    tokens = paths.token_dir()
    tokens.mkdir(parents=True, mode=0o700)
    os.chmod(tokens, 0o700)
    return tokens


def write_private(path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)


def one_error_line(err: str, prog: str = "entra-auth-cli") -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(lines) == 1, err
    assert all(is_clean(line) for line in err.splitlines()), err
    return lines[0]


def with_fields(**changes) -> bytes:
    data = dict(GOOD_TOKENS)
    for key, value in changes.items():
        if value is ...:
            data.pop(key)
        else:
            data[key] = value
    return json.dumps(data, allow_nan=True).encode()


# -- token files --------------------------------------------------------------------------------

DAMAGED_TOKEN_FILES = {
    "expires_at NaN": with_fields(expires_at=float("nan")),
    "expires_at Infinity": with_fields(expires_at=float("inf")),
    "expires_at 1e300": with_fields(expires_at=1e300),
    "expires_at soon": with_fields(expires_at="soon"),
    "expires_at null": with_fields(expires_at=None),
    "expires_at true": with_fields(expires_at=True),
    "no access_token": with_fields(access_token=...),
    "access_token number": with_fields(access_token=5),
    "access_token with a newline": with_fields(access_token="AT\r\nX-Evil: 1"),
    "refresh_token object": with_fields(refresh_token={"a": 1}),
    "scope text": with_fields(scope="User.Read"),
    "scope of numbers": with_fields(scope=[1, 2]),
    "claims a list": with_fields(id_token_claims=["ada"]),
    "refresh_in text": with_fields(refresh_in="later"),
    "a JSON array": b"[]",
    "not UTF-8": b"\xff\xfe{}",
    "empty": b"",
    "100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "2 MB": b'{"access_token": "' + b"x" * (2 * 1024 * 1024) + b'"}',
}


@pytest.mark.parametrize("content", DAMAGED_TOKEN_FILES.values(), ids=DAMAGED_TOKEN_FILES.keys())
def test_a_damaged_token_file_is_exit_6_with_the_fix(profile, capsys, content):
    write_private(profile / "default.json", content)
    assert main(["get-token"]) == EXIT_STORAGE
    line = one_error_line(capsys.readouterr().err)
    assert "is damaged" in line and "entra-auth-cli logout --profile default" in line
    # list-profiles keeps working and says why, and logout clears it.
    assert main(["list-profiles", "--output", "json"]) == EXIT_OK
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["signed_in"] is None and "damaged" in captured.err
    assert main(["logout"]) == EXIT_OK
    assert not (profile / "default.json").exists()


def test_claims_in_an_old_token_file_are_cleaned_on_the_way_in(profile, capsys):
    write_private(profile / "default.json",
                  with_fields(id_token_claims={"preferred_username": "ada\x1b]0;x\x07\u202e"}))
    assert main(["list-profiles"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "ada\\x1b]0;x\\x07\\u202e" in out and is_clean(out.replace("\n", ""))


def run_cli(agent_dirs, *args, program=CLI):
    # A subprocess with a timeout: a FIFO that blocks fails the test instead of hanging it.
    return subprocess.run([*program, *args], env=cli_env(agent_dirs), capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_a_fifo_token_file_does_not_hang(agent_dirs, profile):
    os.mkfifo(profile / "default.json", 0o600)
    result = run_cli(agent_dirs, "get-token")
    assert result.returncode == EXIT_STORAGE
    assert "is not a regular file" in one_error_line(result.stderr)


def test_a_fifo_lock_file_does_not_hang(agent_dirs, profile):
    write_private(profile / "default.json", with_fields(expires_at=1.0))   # expired: refresh locks
    os.mkfifo(profile / "default.lock", 0o600)
    result = run_cli(agent_dirs, "get-token")
    assert result.returncode == EXIT_STORAGE
    assert "lock file" in one_error_line(result.stderr)


def test_a_symlinked_token_folder_is_refused_not_followed(agent_dirs, tmp_path, capsys):
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    ProfileStore(paths.profiles_file()).save(Profile(
        name="default", client_id=CLIENT_ID, tenant_id="contoso.onmicrosoft.com"))
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    os.chmod(target, 0o700)
    paths.state_dir().mkdir(parents=True, exist_ok=True)
    paths.token_dir().symlink_to(target)
    for command in (["get-token"], ["logout"]):
        assert main(command) == EXIT_STORAGE
        assert "is a symbolic link" in one_error_line(capsys.readouterr().err)
    assert list(target.iterdir()) == []          # nothing was created at its target


# -- profiles.toml ----------------------------------------------------------------------------

def profile_table(**values) -> str:
    lines = ['[profiles.default]']
    base = {"client_id": f'"{CLIENT_ID}"', "tenant_id": '"contoso.onmicrosoft.com"'}
    base.update(values)
    lines += [f"{k} = {v}" for k, v in base.items() if v is not None]
    return "\n".join(lines) + "\n"


BAD_PROFILES = {
    "invalid UTF-8": (b"[profiles.default]\nclient_id = \"\xff\xfe\"\n", "not UTF-8"),
    "5,000-deep array": (("[profiles.default]\nscopes = " + "[" * 5000 + "]" * 5000).encode(),
                         "nested too deeply"),
    "not TOML": (b"[profiles\n", "not valid TOML"),
    "profiles is a text": (b'profiles = "x"\n', "must be a table"),
    "a profile is a number": (b"[profiles]\ndefault = 5\n", "must be a table"),
    "client_id a number": (profile_table(client_id="5").encode(), "client_id must be a non-empty text"),
    "tenant_id a list": (profile_table(tenant_id='["a"]').encode(), "tenant_id must be a non-empty text"),
    "scopes empty": (profile_table(scopes="[]").encode(), "scopes must be a non-empty list"),
    "scopes of numbers": (profile_table(scopes="[1]").encode(), "scopes must be a non-empty list"),
    'offline_access = "no"': (profile_table(offline_access='"no"').encode(),
                              "offline_access must be true or false"),
    "plain http issuer": (profile_table(tenant_id=None, issuer='"http://10.0.0.1"').encode(),
                          "plain http"),
    "javascript: issuer": (profile_table(tenant_id=None, issuer='"javascript:alert(1)"').encode(),
                           "is not an https:// URL"),
    "escape in the issuer": (profile_table(tenant_id=None, issuer='"https://x.example/\\u001b[2J"').encode(),
                             "not a valid URL"),
    "escape in a key": (profile_table(**{'"evil\\u001b[2J"': '"x"'}).encode(), "unknown key"),
    "unknown cloud": (profile_table(cloud='"mars"').encode(), "unknown cloud"),
}


@pytest.mark.parametrize("content,says", BAD_PROFILES.values(), ids=BAD_PROFILES.keys())
def test_a_bad_profiles_file_is_exit_3_in_one_line(agent_dirs, capsys, content, says):
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    paths.profiles_file().write_bytes(content)
    for command in (["get-token"], ["list-profiles"]):
        assert main(command) == EXIT_CONFIG, command
        line = one_error_line(capsys.readouterr().err)
        assert says in line and str(paths.profiles_file()) in line


def test_a_fifo_profiles_file_does_not_hang(agent_dirs):
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    os.mkfifo(paths.profiles_file())
    result = run_cli(agent_dirs, "list-profiles")
    assert result.returncode == EXIT_CONFIG
    assert "is a FIFO, not a regular file" in one_error_line(result.stderr)


# -- agent.toml -----------------------------------------------------------------------------------

AGENT = [sys.executable, "-c", "import sys; from agent.__main__ import main; sys.exit(main())"]
GOOD_CONFIG = 'profile = "default"\ndevice_id = "greenhouse-1"\n'


def test_a_fifo_agent_toml_does_not_hang(agent_dirs):
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    config = paths.config_dir() / "agent.toml"
    os.mkfifo(config)
    result = run_cli(agent_dirs, "check-config", "--config", str(config), program=AGENT)
    assert result.returncode == EXIT_CONFIG
    assert "is a FIFO" in one_error_line(result.stderr, "entra-agent")


BAD_CONFIGS = {
    "button GPIO999": ('[button]\npin = "GPIO999"\n', "button.pin must be a BCM pin"),
    "button BOARD41": ('[button]\npin = "BOARD41"\n', "button.pin"),
    "button pin 54": ("[button]\npin = 54\n", "button.pin"),
    "button pin with a command": ('[button]\npin = "GPIO17; reboot"\n', "button.pin"),
    "led GPIO-1": ('[led]\npin = "GPIO-1"\n', "led.pin"),
    "mqtt host with an escape": ('[mqtt]\nhost = "broker\\u001b[2J"\n', "mqtt.host"),
    "mqtt host with a space": ('[mqtt]\nhost = "broker local"\n', "mqtt.host"),
    "mqtt host with a newline": ('[mqtt]\nhost = "a\\nb"\n', "mqtt.host"),
    "outbox_max_bytes 2**63-1": ("[telemetry]\noutbox_max_bytes = 9223372036854775807\n",
                                 "telemetry.outbox_max_bytes"),
    "outbox_max_readings 10**15": ("[telemetry]\noutbox_max_readings = 1000000000000000\n",
                                   "telemetry.outbox_max_readings"),
    "5,000-deep array": ("x = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
}


@pytest.mark.parametrize("extra,says", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_check_config_refuses_hostile_values(agent_dirs, capsys, extra, says):
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    ProfileStore(paths.profiles_file()).save(Profile(
        name="default", client_id=CLIENT_ID, tenant_id="contoso.onmicrosoft.com"))
    config = paths.config_dir() / "agent.toml"
    config.write_text(GOOD_CONFIG + extra)
    assert agent_main(["check-config", "--config", str(config)]) == EXIT_CONFIG
    line = one_error_line(capsys.readouterr().err, "entra-agent")
    assert says in line


@pytest.mark.parametrize("pin", ["17", '"GPIO17"', '"BCM4"', '"BOARD11"', '"J8:40"', '"WPI0"', "0"])
def test_check_config_accepts_real_pins(agent_dirs, capsys, pin):
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    ProfileStore(paths.profiles_file()).save(Profile(
        name="default", client_id=CLIENT_ID, tenant_id="contoso.onmicrosoft.com"))
    config = paths.config_dir() / "agent.toml"
    config.write_text(GOOD_CONFIG + f"[button]\npin = {pin}\n[mqtt]\nhost = \"broker.local\"\n")
    assert agent_main(["check-config", "--config", str(config)]) == EXIT_OK, capsys.readouterr().err
