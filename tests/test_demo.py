"""``entra-agent demo``: the whole loop on loopback, touching nothing of the user's."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from agent.__main__ import main


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fake home and XDG folders, to prove the demo writes nothing there."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for variable in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR", "ENTRA_AGENT_CONFIG",
                     "ENTRA_AGENT_CONFIG_DIR", "ENTRA_AGENT_STATE_DIR", "ENTRA_AGENT_RUNTIME_DIR"):
        monkeypatch.delenv(variable, raising=False)
    return home


@pytest.mark.slow
def test_demo_signs_in_reports_and_refreshes(home, capsys):
    code = main(["demo", "--approve-after", "1", "--duration", "14", "--token-lifetime", "10",
                 "--interval", "1", "--mqtt-port", "1"])      # port 1: no broker, MQTT off
    out = capsys.readouterr().err
    assert code == 0, out
    assert "Traceback" not in out
    assert re.search(r"Visit: http://127\.0\.0\.1:\d+/devicelogin", out)
    shown = re.search(r"Enter code: (\w+)", out).group(1)
    assert f"[demo] approved code {shown} as ada@contoso.example" in out
    assert "Signed in as ada@contoso.example" in out
    summary = re.search(r"\[demo\] stopped: (\d+) readings taken, (\d+) received in (\d+) uploads, "
                        r"(\d+) token refreshes, states: (.*)", out)
    assert summary, out
    taken, received, uploads, refreshes = map(int, summary.groups()[:4])
    assert received >= 10 and uploads >= 3 and refreshes >= 1
    assert received <= taken
    assert summary.group(5).startswith("starting -> sign_in_required -> awaiting_user -> signed_in")
    files = re.search(r"files of this run: (\S+)", out).group(1)
    assert not os.path.exists(files)                  # the temporary folder is gone
    assert list(home.iterdir()) == []                 # nothing in the user's home
    assert "ENTRA_AGENT_CONFIG_DIR" not in os.environ  # environment restored


@pytest.mark.slow
def test_demo_with_mqtt_stops_on_ctrl_c(home, mosquitto, mqtt_subscriber, tmp_path):
    sub = mqtt_subscriber(mosquitto, ["entra-agent/demo-device/#"])
    log = tmp_path / "demo.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "demo", "--approve-after", "1",
             "--mqtt-host", mosquitto.host, "--mqtt-port", str(mosquitto.port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        state = sub.wait_for("entra-agent/demo-device/state",
                             lambda m: m.json()["state"] == "signed_in", timeout=30)
        assert state.json()["account"] == "ada@contoso.example"
        time.sleep(1)
        proc.send_signal(signal.SIGINT)                 # Ctrl+C
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sub.wait_for("entra-agent/demo-device/availability", lambda m: m.text == "offline")
    text = log.read_text()
    assert "Traceback" not in text
    assert "[demo] stopped:" in text
