"""``entra-agent demo``: the whole loop on this machine, with no tenant and no device.

Starts the sandbox identity provider (:mod:`agent.sandbox.idp`, real HTTP on
127.0.0.1, short-lived access tokens so refreshes show up within a minute)
and a telemetry receiver (:mod:`agent.sandbox.receiver`), writes a profile
and a config into a temporary folder (the ``ENTRA_AGENT_*`` folders point
there, so nothing under /etc or the person's own tokens is touched), and
runs the real :class:`agent.service.Service` with the console face. The
person opens the printed sign-in page in a browser and types the code, or
``--approve-after N`` approves by itself. MQTT state goes to ``--mqtt-host``
or to a broker that answers on localhost:1883.

>>> Demo(approve_after=3, duration=60).run()      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import TextIO

__all__ = ["Demo", "DEMO_DEVICE_ID", "DEMO_CLIENT_ID", "PROGRESS_EVERY"]

log = logging.getLogger(__name__)

DEMO_DEVICE_ID = "demo-device"
DEMO_CLIENT_ID = "00000000-0000-0000-0000-000000000001"
PROGRESS_EVERY = 10.0           # seconds between the demo's own progress lines
DEMO_POLL_INTERVAL = 2          # seconds between sign-in polls (Entra: 5)
_ENV = ("ENTRA_AGENT_CONFIG_DIR", "ENTRA_AGENT_STATE_DIR", "ENTRA_AGENT_RUNTIME_DIR",
        "ENTRA_AGENT_CONFIG", "CONFIGURATION_DIRECTORY", "STATE_DIRECTORY",
        "RUNTIME_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _broker_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Demo:
    """One demo run. All durations in seconds."""

    def __init__(self, *, approve_after: float | None = None, mqtt_host: str | None = None,
                 mqtt_port: int = 1883, duration: float | None = None,
                 token_lifetime: int = 75, interval: float = 2.0,
                 out: TextIO | None = None) -> None:
        self.approve_after = approve_after
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port
        self.duration = duration
        self.token_lifetime = max(10, int(token_lifetime))
        self.interval = max(1.0, float(interval))
        self.out = out if out is not None else sys.stderr
        self._done = threading.Event()

    def say(self, line: str) -> None:
        """One line of the demo's own narrative."""
        self.out.write(f"[demo] {line}\n")
        self.out.flush()

    def run(self) -> int:
        """Run until Ctrl+C or ``duration``; return the agent's exit code."""
        saved = {name: os.environ.get(name) for name in _ENV}
        with tempfile.TemporaryDirectory(prefix="entra-agent-demo-") as tmp:
            root = Path(tmp)
            for name in _ENV:
                os.environ.pop(name, None)
            os.environ["ENTRA_AGENT_CONFIG_DIR"] = str(root / "config")
            os.environ["ENTRA_AGENT_STATE_DIR"] = str(root / "state")
            os.environ["ENTRA_AGENT_RUNTIME_DIR"] = str(root / "run")
            try:
                return self._run(root)
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value

    def _run(self, root: Path) -> int:
        from agent import paths
        from agent.assembly import build_service
        from agent.clock import SystemClock
        from agent.config import load_config
        from agent.profiles import Profile, ProfileStore
        from agent.sandbox.idp import IdentityProvider
        from agent.sandbox.receiver import TelemetryReceiver

        clock = SystemClock()
        with IdentityProvider(clock, interval=DEMO_POLL_INTERVAL,
                              access_token_lifetime=self.token_lifetime,
                              rotate_refresh_tokens=True) as idp, \
                TelemetryReceiver(token_validator=idp.validate_access_token) as receiver:
            paths.config_dir().mkdir(parents=True, exist_ok=True)
            ProfileStore(paths.profiles_file()).save(Profile(
                name="default", client_id=DEMO_CLIENT_ID, tenant_id="organizations",
                authority_host=idp.base_url))
            mqtt = self._mqtt_table()
            config_text = "\n".join([
                'profile = "default"',
                f"device_id = {_toml_string(DEMO_DEVICE_ID)}",
                "",
                "[telemetry]",
                f"endpoint = {_toml_string(receiver.url)}",
                f"interval = {self.interval:g}",
                "jitter = false",
                "",
                "[[sensors]]", 'type = "load_average"', "",
                "[[sensors]]", 'type = "memory"', "",
                "[[sensors]]", 'type = "uptime"', "",
                "[display]", 'driver = "console"', "",
                mqtt,
            ])
            config_path = paths.config_dir() / "agent.toml"
            config_path.write_text(config_text, encoding="utf-8")
            config = load_config(config_path)

            self.say(f"local identity provider: {idp.base_url} (tokens live {self.token_lifetime} s)")
            self.say(f"local telemetry receiver: {receiver.url}")
            self.say(f"files of this run: {root} (removed at the end)")
            if mqtt:
                self.say(f"MQTT: state on {self.mqtt_host or 'localhost'}:{self.mqtt_port} "
                         f"under entra-agent/{DEMO_DEVICE_ID}/")
            if self.approve_after is None:
                self.say(f"open {idp.verification_uri} in a browser and type the code below")
            else:
                self.say(f"the sign-in will be approved by itself after {self.approve_after:g} s")
            self.say("Ctrl+C stops the agent cleanly")

            service = build_service(config, clock=clock, stream=self.out)
            helpers = [threading.Thread(target=self._report, args=(service, idp, receiver),
                                        name="demo-report", daemon=True)]
            if self.approve_after is not None:
                helpers.append(threading.Thread(target=self._approve, args=(idp,),
                                                name="demo-approve", daemon=True))
            if self.duration is not None:
                timer = threading.Timer(self.duration, service.stop)
                timer.daemon = True
                helpers.append(timer)
            for helper in helpers:
                helper.start()
            try:
                code = service.run()
            finally:
                self._done.set()
            self._summary(service, idp, receiver)
            return code

    def _mqtt_table(self) -> str:
        host = self.mqtt_host
        if host is None:
            if not _broker_answers("127.0.0.1", self.mqtt_port):
                return ""
            host = "127.0.0.1"
            self.mqtt_host = "localhost"
        return "\n".join(["[mqtt]", f"host = {_toml_string(host)}", f"port = {self.mqtt_port}",
                          "homeassistant_discovery = true",
                          # One device, not a fleet: no need to spread its connects.
                          "connect_spread = 0", "reconnect_spread = 5", ""])

    def _approve(self, idp) -> None:
        # Approve each code the agent asks for (a sign-out asks again).
        approved: set[str] = set()
        while not self._done.is_set():
            try:
                code = idp.wait_for_code(timeout=1.0)
            except TimeoutError:
                continue
            if code in approved:
                self._done.wait(0.5)
                continue
            if self._done.wait(self.approve_after):
                return
            try:
                idp.approve(code)
                approved.add(code)
                self.say(f"approved code {code} as {idp.account} (as a person would in the browser)")
            except LookupError:
                pass        # cancelled or expired meanwhile

    def _report(self, service, idp, receiver) -> None:
        # Looks once a second (a demo, not the agent): a refresh is told at
        # once, the reading count every PROGRESS_EVERY seconds.
        seen_refreshes = 0
        ticks = 0
        while not self._done.wait(1.0):
            ticks += 1
            refreshes = idp.counts["token.refresh_token"]
            if refreshes != seen_refreshes:
                seen_refreshes = refreshes
                self.say(f"the agent refreshed its token before it expired ({refreshes} so far)")
            if ticks % int(PROGRESS_EVERY) == 0:
                self.say(f"{service.state}: {len(receiver.unique_ids)} readings received in "
                         f"{receiver.accepted_batches} uploads")

    def _summary(self, service, idp, receiver) -> None:
        self.say(f"stopped: {service.readings_taken} readings taken, "
                 f"{len(receiver.unique_ids)} received in {receiver.accepted_batches} uploads, "
                 f"{idp.counts['token.refresh_token']} token refreshes, "
                 f"states: {' -> '.join(service.history)}")
