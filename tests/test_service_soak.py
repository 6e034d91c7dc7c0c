"""Soak: 30% 5xx, dropped connections and repeated SIGKILLs, over 10,000+ readings, none lost.

The agent runs as ``python -m agent run`` with ``durability = "strict"``
(every reading is committed before it counts as taken) and many cheap
sensors at a one-second interval, so 10,000 readings take well under a
minute of real time. After every SIGKILL the test reads the outbox file the
dead agent left: every reading in it was taken and not yet accepted, so it
must reach the receiver later. At the end, with faults off, every such
reading has arrived, the receiver counted each id once (repeats only from
a kill between the 200 and the acknowledgement), and nothing was dropped.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import paths
from agent.profiles import Profile, ProfileStore

SENSORS = 400                # readings per interval
TARGET = 10_000              # unique readings the receiver must end up with
CLIENT_ID = "00000000-0000-0000-0000-000000000001"


def outbox_ids(path: Path) -> set[str]:
    """Ids waiting in the outbox a (dead or stopped) agent left behind."""
    if not path.exists():
        return set()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return {row[0] for row in db.execute("SELECT id FROM readings")}
    finally:
        db.close()


def start(config: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "DEBUG")}
    with open(log, "ab") as err:
        return subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                env=env)


@pytest.mark.slow
def test_soak_faults_and_sigkills_lose_nothing(agent_dirs, idp_realtime, receiver_realtime, tmp_path):
    idp = idp_realtime
    rx = receiver_realtime
    idp.auto_approve_after_polls = 0
    paths.config_dir().mkdir(parents=True)
    ProfileStore(paths.profiles_file()).save(Profile(
        name="default", client_id=CLIENT_ID, tenant_id="organizations", authority_host=idp.base_url))
    sensors = "".join(f'[[sensors]]\ntype = "uptime"\nname = "u{i:03d}"\n' for i in range(SENSORS))
    config = paths.config_dir() / "agent.toml"
    config.write_text(
        'device_id = "soak"\n'
        f'[telemetry]\nendpoint = "{rx.url}"\ninterval = 1\nbatch_max = 1000\n'
        'durability = "strict"\njitter = false\ntimeout = 5\n'
        '[display]\ndriver = "none"\n' + sensors)
    log = tmp_path / "agent.log"
    outbox = paths.outbox_file()
    rng = random.Random(4)

    rx.fail_rate = 0.30
    rx.drop_rate = 0.05
    expected: set[str] = set()
    kills = 0
    deadline = time.monotonic() + 210
    while len(rx.unique_ids) < TARGET or kills < 3:
        assert time.monotonic() < deadline, f"only {len(rx.unique_ids)} readings after {kills} kills"
        proc = start(config, log)
        if kills == 0:
            # The first agent signs in once; it is killed only after the token
            # is saved (a loaded machine can take longer than the first kill
            # time to get there), so every later run must reuse that token.
            token = paths.token_dir() / "default.json"
            signed_in_by = time.monotonic() + 60
            while not token.exists():
                assert time.monotonic() < signed_in_by, "the first agent never signed in"
                assert proc.poll() is None, f"the first agent exited: {log.read_text()[-2000:]}"
                time.sleep(0.1)
        time.sleep(rng.uniform(2.0, 5.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        kills += 1
        left = outbox_ids(outbox)
        expected |= left
        expected |= rx.unique_ids       # (already safe; kept for the final count)

    # Faults off: the last run drains everything the dead agents left.
    rx.fail_rate = rx.drop_rate = 0.0
    proc = start(config, log)
    try:
        status = paths.status_file()
        deadline = time.monotonic() + 30
        while not (status.exists() and f'"pid": {proc.pid}' in status.read_text()):
            assert time.monotonic() < deadline, "the last agent never started"
            time.sleep(0.1)
        deadline = time.monotonic() + 60
        while not expected <= rx.unique_ids:
            assert time.monotonic() < deadline, f"{len(expected - rx.unique_ids)} readings never arrived"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # Whatever the last agent took and did not send is on disk, not lost.
    remaining = outbox_ids(outbox)
    assert expected <= rx.unique_ids | remaining
    assert len(rx.unique_ids) >= TARGET
    from agent.telemetry.outbox import Outbox
    with Outbox(outbox, durability="strict") as box:
        assert box.dropped == 0 and box.dead_letters == 0
    text = log.read_text()
    assert "Traceback" not in text
    assert idp.counts["devicecode"] == 1          # signed in once; every restart used the token
    from collections import Counter
    print(f"soak: {len(rx.unique_ids)} unique readings, {rx.duplicates} repeats, {kills} SIGKILLs, "
          f"{rx.accepted_batches} batches accepted, answers {dict(Counter(rx.statuses))}")
