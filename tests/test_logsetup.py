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
