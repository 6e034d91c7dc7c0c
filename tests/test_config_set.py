"""``entra-agent config set KEY=VALUE ...``: agent.toml changed in place, checked first.

Run through the real command line (:func:`agent.__main__.main`) on real
files; the example config is the one deploy/install.sh starts from.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from agent.__main__ import main
from agent.config import load_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "deploy" / "agent.toml.example"

# What install.sh's starter file looks like: tables of someone else's setup
# commented out where they stand, with their keys.
STARTER = """\
# entra-device-agent config
profile = "default"                 # sign-in profile

[telemetry]
interval = 60                       # seconds between readings
# endpoint = "https://api.example.com/telemetry"

# [display]
# driver = "ssd1306"                # console | none | a luma device
# width = 128

# [button]                          # omit to disable
# pin = 17                          # BCM number

[token_service]
enabled = false
"""


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of deploy/agent.toml.example with the MQTT password file it names."""
    path = tmp_path / "agent.toml"
    path.write_text(EXAMPLE.read_text())
    secret = tmp_path / "mqtt-password"
    secret.write_text("pw\n")
    secret.chmod(0o600)
    return path


@pytest.fixture
def starter(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(STARTER)
    return path


def config_set(path: Path, *pairs: str) -> int:
    return main(["config", "set", "--config", str(path), *pairs])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("entra-agent: error: "), err
    return lines[0]


def test_sets_keys_and_keeps_every_other_line_and_each_comment_where_it_stood(
        example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = example.read_text().splitlines()
    assert config_set(example, "profile=raspberry-pi", "telemetry.endpoint=http://127.0.0.1:9/t",
                      "display.driver=console") == 0
    assert capsys.readouterr().err.strip() == (
        f"updated {example}: profile, telemetry.endpoint, display.driver")
    after = example.read_text().splitlines()
    assert len(after) == len(before)
    changed = [(old, new) for old, new in zip(before, after) if old != new]
    assert len(changed) == 3, changed
    for old, new in changed:
        if "#" in old:                   # the trailing comment stays, at its column
            assert new.index("#") == old.index("#") and new[new.index("#"):] == old[old.index("#"):]
    config = load_config(example)
    assert config.profile == "raspberry-pi"
    assert config.telemetry.endpoint == "http://127.0.0.1:9/t"
    assert config.display.driver == "console"
    assert leftovers(example.parent) == []


def test_a_commented_out_table_is_uncommented_where_it_stands_with_its_key(
        starter: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert config_set(starter, "display.driver=console", "button.pin=17") == 0
    text = starter.read_text()
    headers = [line.split()[0] for line in text.splitlines() if line.startswith("[")]
    assert headers == ["[telemetry]", "[display]", "[button]", "[token_service]"]
    assert 'driver = "console"                # console | none | a luma device' in text
    assert "# width = 128" in text, "a key not given stays commented out"
    assert "pin = 17                          # BCM number" in text
    settings = tomllib.loads(text)
    assert settings["display"] == {"driver": "console"}
    assert settings["button"] == {"pin": 17}            # a number is a TOML integer
    assert "# endpoint" in text and settings["telemetry"] == {"interval": 60}


def test_a_table_the_file_does_not_mention_is_added_at_the_end(starter: Path) -> None:
    assert config_set(starter, "led.pin=27", "profile=kiosk") == 0
    text = starter.read_text()
    assert text.endswith("\n[led]\npin = 27\n")
    assert text.splitlines()[1] == 'profile = "kiosk"                   # sign-in profile'
    assert load_config(starter).led is not None


def test_values_keep_their_toml_type_and_anything_else_is_a_text(starter: Path) -> None:
    assert config_set(starter, "telemetry.interval=30", "button.pin=GPIO17",
                      "telemetry.endpoint=https://api.example.com/t?a=1#x") == 0
    settings = tomllib.loads(starter.read_text())
    assert settings["telemetry"]["interval"] == 30
    assert settings["button"]["pin"] == "GPIO17"
    assert settings["telemetry"]["endpoint"] == "https://api.example.com/t?a=1#x"
    # A number where the config wants a text is taken as the text.
    assert config_set(starter, "device_id=1234") == 0
    assert 'device_id = "1234"' in starter.read_text()
    assert load_config(starter).device_id == "1234"
    # A quoted value is a TOML string as it stands.
    assert config_set(starter, 'button.pin="BOARD11"') == 0
    assert tomllib.loads(starter.read_text())["button"]["pin"] == "BOARD11"


def test_setting_what_is_there_writes_nothing(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert config_set(example, "profile=raspberry-pi", "device_id=1234") == 0
    capsys.readouterr()
    st = example.stat()
    # The same values again (the number that became a text too): no write at all.
    assert config_set(example, "profile=raspberry-pi", "device_id=1234") == 0
    assert capsys.readouterr().err == ""
    after = example.stat()
    assert (after.st_ino, after.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)


def test_the_last_of_two_values_for_one_key_wins(starter: Path) -> None:
    assert config_set(starter, "telemetry.interval=30", "telemetry.interval=45") == 0
    assert tomllib.loads(starter.read_text())["telemetry"]["interval"] == 45


@pytest.mark.parametrize("pair, words", [
    ("telemetry.interval=abc", 'telemetry.interval must be a number of seconds >= 1, got "abc"'),
    ("telemetry.intervl=5", "did you mean telemetry.interval?"),
    ("telemetry.endpoint=http://api.example.com/t", "telemetry.endpoint"),
    ("button.pin=-3", "button.pin"),
])
def test_a_value_or_key_the_config_refuses_is_exit_2_and_the_file_is_untouched(
        example: Path, capsys: pytest.CaptureFixture[str], pair: str, words: str) -> None:
    original = example.read_bytes()
    st = example.stat()
    assert config_set(example, "profile=other", pair) == 2
    line = one_error_line(capsys.readouterr().err)
    assert words in line and str(example) in line
    assert ".tmp-" not in line, "the message names the temp file, not the config"
    assert example.read_bytes() == original and example.stat().st_mtime_ns == st.st_mtime_ns
    assert leftovers(example.parent) == []


@pytest.mark.parametrize("pair", ["=x", "profile", "a..b=1", "telemetry.=1", "x y=1",
                                  "device_id=a\nb", "device_id=\x1b[31m"])
def test_a_malformed_pair_is_exit_2_before_the_file_is_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], pair: str) -> None:
    missing = tmp_path / "nowhere" / "agent.toml"
    assert config_set(missing, pair) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "\x1b" not in line


def test_a_missing_file_is_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert config_set(tmp_path / "agent.toml", "profile=x") == 3
    assert "no such config file" in one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_a_file_invalid_before_the_change_is_exit_3_and_left_alone(
        example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example.parent / "mqtt-password").unlink()   # what the file names is gone
    original = example.read_bytes()
    assert config_set(example, "profile=other") == 3
    line = one_error_line(capsys.readouterr().err)
    assert "mqtt.password_file" in line and "before any change" in line
    assert example.read_bytes() == original


def test_a_file_that_is_not_toml_is_exit_3(starter: Path, capsys: pytest.CaptureFixture[str]) -> None:
    starter.write_text("profile = \n")
    assert config_set(starter, "device_id=x") == 3
    one_error_line(capsys.readouterr().err)
    assert starter.read_text() == "profile = \n"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "agent.toml"
    os.mkfifo(fifo)
    assert config_set(fifo, "profile=x") == 3
    assert "FIFO" in one_error_line(capsys.readouterr().err)


def test_the_file_keeps_its_mode(starter: Path) -> None:
    starter.chmod(0o640)
    assert config_set(starter, "profile=kiosk") == 0
    assert stat.S_IMODE(starter.stat().st_mode) == 0o640


def test_a_new_file_mode_ignores_the_umask(starter: Path) -> None:
    starter.chmod(0o644)
    old = os.umask(0o077)
    try:
        assert config_set(starter, "profile=kiosk") == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(starter.stat().st_mode) == 0o644


def test_config_without_an_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["config"])
    assert exit_.value.code == 2


def test_a_file_that_cannot_be_written_is_exit_6_and_left_as_it_was(
        small_disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The folder's file system turned read-only (an SD card remounted ro
    after errors): one line naming the file, exit 6, nothing changed."""
    path = small_disk / "agent.toml"
    path.write_text(STARTER)
    before = path.read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        assert config_set(path, "telemetry.interval=120") == 6
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    line = one_error_line(capsys.readouterr().err)
    assert "agent.toml" in line
    assert path.read_bytes() == before
    assert leftovers(small_disk) == []
