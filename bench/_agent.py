"""Shared by the service benchmarks: a real agent process against the sandbox.

:func:`running_agent` starts the sandbox identity provider and telemetry
receiver in this process, writes a profile and config into a temporary
folder (``ENTRA_AGENT_*`` point there), starts ``python -m agent run`` and
waits until it is signed in (the sandbox approves the first poll).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLIENT_ID = "00000000-0000-0000-0000-000000000001"


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (kB) of *pid* and voluntary/involuntary context switches of all its threads."""
    out = {"VmRSS": 0, "voluntary_ctxt_switches": 0, "nonvoluntary_ctxt_switches": 0, "threads": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["VmRSS"] = int(line.split()[1])
    for task in Path(f"/proc/{pid}/task").iterdir():
        out["threads"] += 1
        try:
            text = (task / "status").read_text()
        except OSError:
            continue           # the thread ended meanwhile
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                out[key] += int(value)
    return out


@contextlib.contextmanager
def running_agent(*, interval: float = 60, sensors: int = 3, mqtt: tuple[str, int] | None = None,
                  durability: str = "spill", source: Path | None = None) -> Iterator[subprocess.Popen]:
    """A signed-in ``entra-agent run`` process; stopped (SIGTERM) on exit.

    *source*: run the ``agent`` package of that tree instead (another
    revision, for a side-by-side comparison)."""
    from agent.clock import SystemClock
    from agent.profiles import Profile, ProfileStore
    from agent.sandbox.idp import IdentityProvider
    from agent.sandbox.receiver import TelemetryReceiver

    with tempfile.TemporaryDirectory(prefix="entra-agent-bench-") as tmp, \
            IdentityProvider(SystemClock(), interval=1, auto_approve_after_polls=0) as idp, \
            TelemetryReceiver(token_validator=idp.validate_access_token) as rx:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ENTRA_AGENT_", "NOTIFY_", "WATCHDOG_"))}
        env.update(ENTRA_AGENT_CONFIG_DIR=str(root / "config"), ENTRA_AGENT_STATE_DIR=str(root / "state"),
                   ENTRA_AGENT_RUNTIME_DIR=str(root / "run"))
        (root / "config").mkdir()
        ProfileStore(root / "config" / "profiles.toml").save(Profile(
            name="default", client_id=CLIENT_ID, tenant_id="organizations", authority_host=idp.base_url))
        kinds = ["uptime", "load_average", "memory", "disk_usage"]
        table = "".join(f'[[sensors]]\ntype = "{kinds[i % len(kinds)]}"\nname = "s{i}"\n'
                        for i in range(sensors))
        # connect at once: the measured minutes are the steady state, not the first connect
        broker = (f'[mqtt]\nhost = "{mqtt[0]}"\nport = {mqtt[1]}\nconnect_spread = 0\n' if mqtt else "")
        config = root / "config" / "agent.toml"
        config.write_text(f'device_id = "bench"\n[telemetry]\nendpoint = "{rx.url}"\n'
                          f'interval = {interval}\njitter = false\ndurability = "{durability}"\n'
                          f'[display]\ndriver = "none"\n{table}{broker}')
        if source is not None:
            env["PYTHONPATH"] = str(source)
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                                env=env, cwd=source, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(root / "agent.log", "wb"))
        try:
            status = root / "run" / "status.json"
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise SystemExit("the agent exited: " + (root / "agent.log").read_text()[-2000:])
                try:
                    if json.loads(status.read_text()).get("state") == "signed_in" and rx.unique_ids:
                        break
                except (OSError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the agent did not sign in within 30 s")
                time.sleep(0.1)
            proc.receiver = rx            # type: ignore[attr-defined]
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
