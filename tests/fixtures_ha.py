"""Fixtures for a REAL Home Assistant core, for the discovery end-to-end tests.

``home_assistant`` starts the pinned Home Assistant (its own venv, installed
outside the repository by ``tools/ha-venv.sh``) with a config folder in a
temporary directory, HTTP on a free port of 127.0.0.1, and the MQTT
integration pointed at the test's Mosquitto, and yields a :class:`HomeAssistant`
that reads it through its REST and websocket APIs.

How it is set up (decided for speed and to go through HA's own code):

- the API user: HA's onboarding needs the frontend, so a user and a
  long-lived access token are written to ``.storage/auth`` before the start
  (HA's own store format; the token is HA's HS256 JWT signed with that key);
- the MQTT integration is UI-config only: its config entry is created
  through HA's config-flow REST API after the start, as the UI does it, so
  HA itself checks the broker connection;
- HA runs with ``--skip-pip``: ``tools/ha-venv.sh`` installed the
  requirements of the integrations loaded here, nothing is fetched at test time.

Without the venv the tests skip with the reason; under CI (``CI`` set) they
fail instead, since ``.ci/run`` must have installed it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures_mqtt import Broker, free_port

ROOT = Path(__file__).resolve().parent.parent
HA_SCRIPT = ROOT / "tools" / "ha-venv.sh"
STARTUP_TIMEOUT = 180.0        # seconds for HA to answer its API (a loaded 2-core box)
STOP_TIMEOUT = 60.0


def pinned_version() -> str:
    """The Home Assistant version tools/ha-venv.sh installs (the one place it is pinned)."""
    match = re.search(r'HA_VERSION="\$\{HA_VERSION:-([0-9.]+)\}"', HA_SCRIPT.read_text())
    assert match, "tools/ha-venv.sh pins no HA_VERSION"
    return match.group(1)


def ha_venv() -> Path:
    """Where tools/ha-venv.sh puts the venv (same variables, same defaults)."""
    if value := os.environ.get("ENTRA_AGENT_HA_VENV"):
        return Path(value)
    cache = Path(os.environ.get("ENTRA_AGENT_HA_CACHE", "/var/cache/entra-agent-ha"))
    return cache / f"ha-{os.environ.get('HA_VERSION', pinned_version())}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token(refresh_id: str, jwt_key: str, lifetime: int = 3600) -> str:
    """HA's access token for a refresh token: an HS256 JWT with ``iss`` = its id."""
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps({"iss": refresh_id, "iat": now - 5, "exp": now + lifetime}).encode())
    signing = f"{header}.{body}".encode("ascii")
    signature = _b64(hmac.new(jwt_key.encode(), signing, hashlib.sha256).digest())
    return f"{header}.{body}.{signature}"


# A websocket client run with HA's own Python (aiohttp is there), so the
# test venv needs no websocket library: it sends the commands given as JSON
# on stdin and prints the results as JSON.
_WS_CLIENT = r"""
import asyncio, json, sys
import aiohttp

async def main():
    url, token = sys.argv[1], sys.argv[2]
    commands = json.load(sys.stdin)
    out = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, timeout=30) as ws:
            assert (await ws.receive_json())["type"] == "auth_required"
            await ws.send_json({"type": "auth", "access_token": token})
            reply = await ws.receive_json()
            assert reply["type"] == "auth_ok", reply
            for n, command in enumerate(commands, start=1):
                await ws.send_json({"id": n, **command})
                while True:
                    msg = await ws.receive_json()
                    if msg.get("id") == n and msg.get("type") == "result":
                        out.append(msg)
                        break
    print(json.dumps(out))

asyncio.run(main())
"""


class HomeAssistant:
    """A Home Assistant core process on 127.0.0.1 with the MQTT integration."""

    def __init__(self, venv: Path, workdir: Path, broker: Broker) -> None:
        self.venv = venv
        self.config_dir = workdir / "ha-config"
        self.broker = broker
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = self.config_dir / "home-assistant.log"
        self.process: subprocess.Popen | None = None
        self._past_logs: list[str] = []          # HA rotates its log at every start
        self._refresh_id = secrets.token_hex(16)
        self._jwt_key = secrets.token_hex(32)
        self.token = access_token(self._refresh_id, self._jwt_key)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.token}"
        self.session.trust_env = False           # loopback only, never a proxy
        self._write_config()

    # -- setup -----------------------------------------------------------------

    def _write_config(self) -> None:
        storage = self.config_dir / ".storage"
        storage.mkdir(parents=True)
        (self.config_dir / "configuration.yaml").write_text(
            "homeassistant:\n"
            "  name: entra-agent e2e\n"
            "  latitude: 0\n  longitude: 0\n  elevation: 0\n"
            "  unit_system: metric\n  time_zone: UTC\n  currency: EUR\n  country: DE\n"
            "  language: en\n"
            "http:\n"
            "  server_host: 127.0.0.1\n"
            f"  server_port: {self.port}\n"
            "api:\n"
            "config:\n"
            "logger:\n"
            "  default: warning\n"
            "  logs:\n"
            "    homeassistant.components.mqtt: info\n"
        )
        user_id = secrets.token_hex(16)
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        auth = {
            "version": 1, "minor_version": 1, "key": "auth",
            "data": {
                "users": [{"id": user_id, "group_ids": ["system-admin"], "is_owner": True,
                           "is_active": True, "name": "e2e", "system_generated": False,
                           "local_only": False}],
                "groups": [{"id": "system-admin", "name": "Administrators"},
                           {"id": "system-users", "name": "Users"},
                           {"id": "system-read-only", "name": "Read Only"}],
                "credentials": [],
                "refresh_tokens": [{
                    "id": self._refresh_id, "user_id": user_id, "client_id": None,
                    "client_name": "entra-agent e2e", "client_icon": None,
                    "token_type": "long_lived_access_token", "created_at": now,
                    "access_token_expiration": 86400.0, "token": secrets.token_hex(64),
                    "jwt_key": self._jwt_key, "last_used_at": None, "last_used_ip": None,
                    "expire_at": None, "credential_id": None, "version": pinned_version()}],
            },
        }
        path = storage / "auth"
        path.write_text(json.dumps(auth))
        path.chmod(0o600)

    def start(self) -> None:
        """Start HA, wait for its API, and set up MQTT (first start only)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        with open(self.config_dir / "stdout.log", "ab") as out:
            self.process = subprocess.Popen(
                [str(self.venv / "bin" / "hass"), "-c", str(self.config_dir), "--skip-pip",
                 "--log-file", str(self.log_file), "--log-no-color"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"Home Assistant exited at start ({self.process.returncode}): "
                            f"{self.log_tail()}")
            try:
                if self.session.get(f"{self.url}/api/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"Home Assistant did not answer within {STARTUP_TIMEOUT:.0f} s: "
                        f"{self.log_tail()}")
        self.wait_running()
        if not self.config_entries("mqtt"):
            self._set_up_mqtt()
        assert self.wait(lambda: any(e["state"] == "loaded" for e in self.config_entries("mqtt")),
                         60), self.config_entries("mqtt")

    def wait_running(self, timeout: float = STARTUP_TIMEOUT) -> None:
        assert self.wait(lambda: self.get("/api/config").get("state") == "RUNNING", timeout), \
            self.log_tail()

    def _set_up_mqtt(self) -> None:
        # As the UI does it: start the flow, answer its "broker" form.
        flow = self.post("/api/config/config_entries/flow", {"handler": "mqtt"})
        assert flow.get("step_id") == "broker", flow
        done = self.post(f"/api/config/config_entries/flow/{flow['flow_id']}",
                         {"broker": self.broker.host, "port": self.broker.port})
        assert done.get("type") == "create_entry", done

    def stop(self) -> None:
        """SIGTERM and wait (HA saves its registries on the way out)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None
        self._past_logs.append(self.log_text(current_only=True))

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- reading it ------------------------------------------------------------

    def get(self, path: str) -> Any:
        reply = self.session.get(f"{self.url}{path}", timeout=30, allow_redirects=False)
        reply.raise_for_status()
        return reply.json()

    def post(self, path: str, body: Any) -> Any:
        reply = self.session.post(f"{self.url}{path}", json=body, timeout=30,
                                  allow_redirects=False)
        assert reply.status_code < 300, (path, reply.status_code, reply.text[:500])
        return reply.json()

    def config_entries(self, domain: str) -> list[dict[str, Any]]:
        return self.get(f"/api/config/config_entries/entry?domain={domain}")

    def states(self) -> dict[str, dict[str, Any]]:
        """Every entity's state, by entity id (REST /api/states)."""
        return {s["entity_id"]: s for s in self.get("/api/states")}

    def state(self, entity_id: str) -> dict[str, Any] | None:
        reply = self.session.get(f"{self.url}/api/states/{entity_id}", timeout=30)
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        return reply.json()

    def press(self, entity_id: str) -> None:
        self.post("/api/services/button/press", {"entity_id": entity_id})

    def ws(self, *commands: dict[str, Any]) -> list[Any]:
        """Results of websocket *commands* (``{"type": ...}``), in order."""
        done = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", _WS_CLIENT,
             f"ws://127.0.0.1:{self.port}/api/websocket", self.token],
            input=json.dumps(list(commands)), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        results = json.loads(done.stdout)
        for result in results:
            assert result["success"], result
        return [r["result"] for r in results]

    def entity_registry(self) -> list[dict[str, Any]]:
        return self.ws({"type": "config/entity_registry/list"})[0]

    def device_registry(self) -> list[dict[str, Any]]:
        return self.ws({"type": "config/device_registry/list"})[0]

    def log_text(self, *, current_only: bool = False) -> str:
        """HA's log: of every start of this instance, or of the running one."""
        try:
            current = self.log_file.read_text(errors="replace")
        except OSError:
            current = ""
        if current_only or self.process is None:
            return current if current_only else "".join(self._past_logs)
        return "".join(self._past_logs) + current

    def log_tail(self, n: int = 40) -> str:
        text = self.log_text() or (self.config_dir / "stdout.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-n:])

    @staticmethod
    def wait(predicate, timeout: float = 30.0, every: float = 0.25) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return True
            except (requests.RequestException, KeyError, TypeError):
                pass
            time.sleep(every)
        return bool(predicate())


@pytest.fixture(scope="module")
def ha_broker(tmp_path_factory):
    """One Mosquitto for a module's Home Assistant and agents."""
    broker = Broker(tmp_path_factory.mktemp("mosquitto-ha"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def home_assistant(tmp_path_factory, ha_broker):
    """A real Home Assistant core (pinned by tools/ha-venv.sh) with MQTT on ``ha_broker``."""
    venv = ha_venv()
    if not (venv / ".complete").is_file() or not (venv / "bin" / "hass").exists():
        reason = (f"Home Assistant {pinned_version()} is not installed at {venv} "
                  "(run tools/ha-venv.sh)")
        if os.environ.get("CI"):
            pytest.fail(reason + "; .ci/run must install it")
        pytest.skip(reason)
    ha = HomeAssistant(venv, tmp_path_factory.mktemp("home-assistant"), ha_broker)
    ha.start()
    try:
        yield ha
    finally:
        ha.stop()


__all__ = ["HomeAssistant", "access_token", "ha_venv", "pinned_version"]
