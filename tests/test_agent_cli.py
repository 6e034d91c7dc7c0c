"""``entra-agent`` commands through ``main([...])`` (and once as a real subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agent import paths
from agent.__main__ import main
from agent.profiles import Profile, ProfileStore

CLIENT_ID = "00000000-0000-0000-0000-000000000001"
GOOD = """\
profile = "default"
device_id = "greenhouse-1"

[telemetry]
endpoint = "https://api.example.com/telemetry"
interval = 60

[[sensors]]
type = "uptime"
"""


@pytest.fixture
def files(agent_dirs):
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    ProfileStore(paths.profiles_file()).save(Profile(
        name="default", client_id=CLIENT_ID, tenant_id="contoso.onmicrosoft.com"))

    def write(text: str) -> str:
        path = paths.config_dir() / "agent.toml"
        path.write_text(text)
        return str(path)

    return write


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("entra-agent: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_check_config_accepts_a_good_file(files, capsys):
    path = files(GOOD)
    assert main(["check-config", "--config", path]) == 0
    out = capsys.readouterr().out
    assert f"{path}: OK" in out
    assert "device greenhouse-1, profile default, 1 sensors" in out
    assert "MQTT off" in out


def test_check_config_uses_the_environment_path(files, monkeypatch, capsys):
    path = files(GOOD)
    monkeypatch.setenv("ENTRA_AGENT_CONFIG", path)
    assert main(["check-config"]) == 0
    assert f"{path}: OK" in capsys.readouterr().out


@pytest.mark.parametrize("text, expected", [
    ("colour = 'red'\n" + GOOD, "agent.toml: colour is not a known key"),
    (GOOD.replace("interval = 60", 'interval = "fast"'),
     'telemetry.interval must be a number of seconds >= 1, got "fast"'),
    (GOOD.replace("https://api.example.com", "http://api.example.com"),
     "telemetry.endpoint must be an https:// URL"),
    (GOOD + "[mqtt]\nhost = 'b'\npassword = 'hunter2'\n",
     "mqtt.password: secrets do not belong in the config file"),
    (GOOD + "[[sensors]]\ntype = 'command'\n", "sensors[1].command is missing"),
    (GOOD + "[[sensors]]\ntype = 'teleporter'\n", "sensors[1].type must be one of"),
    ("profile = \n", "not valid TOML"),
])
def test_check_config_rejects_bad_files_with_the_key(files, capsys, text, expected):
    path = files(text)
    assert main(["check-config", "--config", path]) == 3
    line = error_line(capsys)
    assert line.startswith(f"entra-agent: error: {path}: ")
    assert expected in line
    assert "hunter2" not in line


def test_check_config_rejects_an_unknown_display_driver(files, capsys):
    # `run` only warns and uses the console; check-config must not say OK.
    pytest.importorskip("luma.core.cmdline")
    path = files(GOOD + "[display]\ndriver = 'ssd1307'\n")
    assert main(["check-config", "--config", path]) == 3
    line = error_line(capsys)
    assert line.startswith(f"entra-agent: error: {path}: display.driver must be")
    assert 'got "ssd1307"' in line and "ssd1306" in line
    for driver in ("ssd1306", "sh1106", "console", "none", "framebuffer"):
        assert main(["check-config", "--config", files(GOOD + f"[display]\ndriver = '{driver}'\n")]) == 0
    assert f"display {'ssd1306'}" in capsys.readouterr().out


def test_check_config_missing_file_and_profile(files, tmp_path, capsys):
    missing = tmp_path / "nowhere.toml"
    assert main(["check-config", "--config", str(missing)]) == 3
    assert f"{missing}: no such config file (copy deploy/agent.toml.example" in error_line(capsys)

    path = files(GOOD.replace('profile = "default"', 'profile = "lab"'))
    assert main(["check-config", "--config", path]) == 3
    line = error_line(capsys)
    assert "no profile named 'lab'" in line and "entra-auth-cli create-profile --name lab" in line


def test_check_config_refuses_a_world_readable_mqtt_password(files, capsys):
    secret = paths.config_dir() / "mqtt-password"
    secret.write_text("hunter2\n")
    secret.chmod(0o644)
    path = files(GOOD + f"[mqtt]\nhost = 'broker.local'\ntls = true\nusername = 'gh1'\npassword_file = '{secret}'\n")
    assert main(["check-config", "--config", path]) == 3
    line = error_line(capsys)
    assert "readable by every user" in line and f"chmod 600 {secret}" in line
    secret.chmod(0o600)
    assert main(["check-config", "--config", path]) == 0
    assert "MQTT broker.local:8883" in capsys.readouterr().out


def test_run_with_a_bad_config_touches_nothing(files, capsys):
    path = files("colour = 'red'\n" + GOOD)
    assert main(["run", "--config", path]) == 3
    assert "colour is not a known key" in error_line(capsys)
    assert not paths.state_dir().exists()
    assert not paths.status_file().exists()


def test_debug_shows_the_traceback(files, monkeypatch):
    from agent.errors import ConfigError

    path = files("colour = 'red'\n" + GOOD)
    monkeypatch.setenv("DEBUG", "1")
    with pytest.raises(ConfigError):
        main(["check-config", "--config", path])


def test_status_without_an_agent(agent_dirs, capsys):
    assert main(["status", "--output", "json"]) == 1
    line = error_line(capsys)
    assert f"no status file at {paths.status_file()}: the agent is not running" in line


def test_status_of_a_dead_agent(agent_dirs, capsys):
    from agent.statefile import write_status

    # A pid that cannot exist: the agent was killed without cleaning up.
    write_status(paths.status_file(), {"state": "signed_in", "pid": 2**22 + 12345,
                                       "account": "ada@contoso.example"})
    assert main(["status"]) == 1
    captured = capsys.readouterr()
    assert "state:        signed_in" in captured.out
    assert "the agent is not running (last state: signed_in" in captured.err


def test_screens_writes_pngs(tmp_path, capsys):
    out = tmp_path / "gallery"
    assert main(["screens", "--out", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert f"{len(pngs)} screens written to {out}" in capsys.readouterr().out


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["status", "--output", "yaml"])
    assert exc.value.code == 2
    assert main([]) == 2


def test_entry_point_as_a_process(files):
    path = files("colour = 'red'\n" + GOOD)
    result = subprocess.run([sys.executable, "-m", "agent", "check-config", "--config", path],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "DEBUG": ""})
    assert result.returncode == 3
    assert result.stderr.startswith(f"entra-agent: error: {path}: colour is not a known key")
    assert "Traceback" not in result.stderr
