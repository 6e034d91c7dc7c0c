"""Journal priorities: ``<N>`` prefixes only when stderr is the journal stream."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import logging, os, sys
from agent.logsetup import setup_logging
if os.environ.get("FAKE_JOURNAL"):
    st = os.fstat(2)
    os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
setup_logging("entra-agent", logging.DEBUG)
log = logging.getLogger("agent.service")
log.debug("d"); log.info("i"); log.warning("w"); log.error("e")
"""


def run(tmp_path, **env):
    err = tmp_path / "stderr.txt"
    with open(err, "w") as stream:
        subprocess.run([sys.executable, "-c", SCRIPT], stderr=stream, check=True, timeout=30,
                       env={**os.environ, "PYTHONPATH": str(REPO), **env})
    return err.read_text().splitlines()


def test_plain_lines_off_the_journal(tmp_path):
    assert run(tmp_path, JOURNAL_STREAM="1:2") == [
        "entra-agent: DEBUG: d", "entra-agent: INFO: i", "entra-agent: WARNING: w", "entra-agent: ERROR: e"]


def test_priority_prefixes_in_the_journal(tmp_path):
    assert run(tmp_path, FAKE_JOURNAL="1") == [
        "<7>agent.service: d", "<6>agent.service: i", "<4>agent.service: w", "<3>agent.service: e"]


WARNING_SCRIPT = """
import logging, os, sys, warnings
from agent.logsetup import setup_logging
st = os.fstat(2)
os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
setup_logging("entra-agent", logging.INFO)
class PinFactoryFallback(RuntimeWarning):
    pass
# As a library in a venv raises it: the filename is a path under site-packages.
warnings.warn_explicit("Falling back from lgpio:\\n  No module named 'lgpio'", PinFactoryFallback,
                       "/opt/entra-agent/venv/lib/python3.11/site-packages/gpiozero/devices.py", 300)
"""


def test_library_warnings_are_one_warning_line_without_paths(tmp_path):
    err = tmp_path / "stderr.txt"
    with open(err, "w") as stream:
        subprocess.run([sys.executable, "-c", WARNING_SCRIPT], stderr=stream, check=True,
                       timeout=30, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert err.read_text().splitlines() == [
        "<4>py.warnings: gpiozero.devices: PinFactoryFallback: Falling back from lgpio: "
        "No module named 'lgpio'"]


def _agent(tmp_path, *args, journal: bool):
    """entra-agent with stderr in a file; *journal*: that file is JOURNAL_STREAM, as under systemd."""
    err = tmp_path / "stderr.txt"
    with open(err, "w") as stream:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("JOURNAL_STREAM", None)
        if journal:
            st = os.fstat(stream.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        result = subprocess.run([sys.executable, "-m", "agent", *args], stderr=stream,
                                stdout=subprocess.DEVNULL, timeout=60, env=env)
    return result.returncode, err.read_text().splitlines()


def test_a_fatal_config_error_reaches_the_journal_as_an_error(tmp_path):
    bad = tmp_path / "agent.toml"
    bad.write_text('[telemetry]\ninterval = "fast"\n')
    code, lines = _agent(tmp_path, "run", "--config", str(bad), journal=True)
    assert code == 3
    assert len(lines) == 1 and lines[0].startswith("<3>entra-agent: error: ")
    assert "telemetry.interval" in lines[0]
    # Off the journal (a terminal, a pipe) the same line carries no prefix.
    code, lines = _agent(tmp_path, "check-config", "--config", str(bad), journal=False)
    assert code == 3 and lines[0].startswith("entra-agent: error: ") and "telemetry.interval" in lines[0]
