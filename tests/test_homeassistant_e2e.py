"""The agent against a REAL Home Assistant core (tests/fixtures_ha.py), end to end.

The agent runs as the service does (sandbox IdP, receiver, real Mosquitto),
Home Assistant discovers it over MQTT, and everything is read back through
Home Assistant's REST and websocket APIs: the device, its entities with
units and classes, availability, the sign-in entities, the buttons, the
removal of a dropped sensor (also across an agent restart and a Home
Assistant restart), and Home Assistant's own log, which must hold no
warning about this device.
"""

from __future__ import annotations

import io
import json
import re
import stat
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent import paths
from agent.assembly import build_service
from agent.auth.tokens import TokenClient
from agent.backoff import Backoff
from agent.clock import SystemClock
from agent.config import load_config
from agent.homeassistant import board_device, sensor_infos
from agent.notify import Notifier
from agent.profiles import Profile, ProfileStore
from agent.service import AWAITING_USER, SIGN_IN_REQUIRED, SIGNED_IN, Service
from agent.status import StatusPublisher
from agent.telemetry.sensors import build_sensors
from agent.tokenstore import TokenStore
from agent.ui import ConsolePresenter

pytestmark = pytest.mark.slow

CLIENT_ID = "00000000-0000-0000-0000-000000000001"
DEVICE = "dev-ha"
BASE = f"entra-agent/{DEVICE}"


def wait_for(predicate, timeout=30.0, every=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except (KeyError, TypeError):
            pass
        time.sleep(every)
    return bool(predicate())


def fake_board(root: Path) -> dict[str, Path]:
    """A thermal zone, two DS18B20s, a BME280-like helper program, a device-tree model."""
    (root / "thermal").mkdir(parents=True)
    (root / "thermal" / "temp").write_text("48312\n")
    for device, milli in (("28-0316a2795eff", 21500), ("28-0416a2795e01", 19250)):
        folder = root / "w1" / device
        folder.mkdir(parents=True)
        (folder / "w1_slave").write_text(
            f"72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t={milli}\n")
    helper = root / "read-env"
    helper.write_text("#!/bin/sh\n"
                      "echo '{\"temperature\": 21.5, \"humidity\": 48, \"pressure\": 1013.2, "
                      "\"it'\"'\"'s\": 3}'\n")
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    (root / "model").write_bytes(b"Raspberry Pi Zero 2 W Rev 1.0\x00")
    return {"thermal": root / "thermal" / "temp", "w1": root / "w1", "helper": helper,
            "model": root / "model"}


def write_config(idp, receiver, broker, board: dict[str, Path], *, with_load: bool = True) -> Path:
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    store = ProfileStore(paths.profiles_file())
    if "default" not in store.names():
        store.save(Profile(name="default", client_id=CLIENT_ID, tenant_id="organizations",
                           authority_host=idp.base_url))
    load = '[[sensors]]\ntype = "load_average"\n' if with_load else ""
    text = f"""device_id = "{DEVICE}"
[telemetry]
endpoint = "{receiver.url}"
interval = 1
jitter = false

[[sensors]]
type = "cpu_temperature"
path = "{board['thermal']}"

[[sensors]]
type = "cpu_temperature"
name = "soc_missing"
path = "{board['thermal'].parent / 'no-such-zone'}"

[[sensors]]
type = "uptime"

{load}
[[sensors]]
type = "memory"
report = "available_mb"

[[sensors]]
type = "disk_usage"

[[sensors]]
type = "ds18b20"
name = "probes"
base_dir = "{board['w1']}"

[[sensors]]
type = "command"
name = "env"
command = ["{board['helper']}"]
unit = "°C"
device_class = "temperature"
[sensors.keys.humidity]
unit = "%"
device_class = "humidity"
[sensors.keys.pressure]
unit = "hPa"
device_class = "atmospheric_pressure"
label = "Air pressure"
[sensors.keys."it's"]
unit = ""
device_class = "aqi"

[[sensors]]
type = "command"
name = "env_temperature"
command = ["/bin/echo", "7"]
unit = "°C"

[display]
driver = "none"

[mqtt]
host = "{broker.host}"
port = {broker.port}
keepalive = 5
homeassistant_discovery = true
publish_user_code = true
homeassistant_new_code_button = true
homeassistant_sign_out_button = true
"""
    path = paths.config_dir() / "agent.toml"
    path.write_text(text)
    return path


class Agent:
    """The service in a thread, with the publisher built as assembly does,
    but with the board's device-tree model file injected."""

    def __init__(self, config_path: Path, model: Path) -> None:
        config = load_config(config_path)
        clock = SystemClock()
        store = ProfileStore(paths.profiles_file())
        client = TokenClient(store.get("default"), store=TokenStore(paths.token_dir()), clock=clock)
        sensors = build_sensors(config.sensors)
        holder: list[Service] = []
        publisher = StatusPublisher(
            config.mqtt, device_id=config.device_id,
            sensors=sensor_infos(config.sensors, sensors),
            on_connection_change=lambda up: holder[0].post("mqtt", up) if holder else None,
            on_command=lambda command: holder[0].post("ha_command", command),
            announced_path=paths.homeassistant_file(),
            device=board_device(config.device_id, "test", model),
            first_connect_jitter=0.0, reconnect=Backoff(base=1.0, cap=1.0, minimum=0.5))
        self.service = build_service(config, clock=clock, token_client=client,
                                     presenter=ConsolePresenter(io.StringIO()), sensors=sensors,
                                     publisher=publisher, notifier=Notifier(None))
        holder.append(self.service)
        self.thread = threading.Thread(target=self.service.run, name="agent-under-ha")
        self.thread.start()

    def stop(self) -> None:
        self.service.stop()
        self.thread.join(20)
        assert not self.thread.is_alive()


@pytest.fixture
def agents():
    started: list[Agent] = []

    def start(config_path: Path, model: Path) -> Agent:
        agent = Agent(config_path, model)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        if agent.thread.is_alive():
            agent.stop()


def by_unique_id(ha) -> dict[str, dict]:
    return {e["unique_id"]: e for e in ha.entity_registry() if e["platform"] == "mqtt"}


def uid(oid: str) -> str:
    return f"{DEVICE}_{oid}"


def entity_state(ha, oid: str) -> dict | None:
    entry = by_unique_id(ha).get(uid(oid))
    return ha.state(entry["entity_id"]) if entry else None


def our_warnings(ha) -> list[str]:
    """Warnings and errors in HA's log about this device: naming it, its topics
    or entities, a template, or from MQTT's entity platforms and discovery
    (not the MQTT client's connection news, nor a slow setup on a loaded box)."""
    about_us = re.compile(rf"{DEVICE}|dev_ha|entra|[Tt]emplate"
                          r"|\[homeassistant\.components\.mqtt\.(?!client\])")
    return [line for line in ha.log_text().splitlines()
            if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line) and about_us.search(line)]


def test_the_agent_as_home_assistant_sees_it(home_assistant, ha_broker, agent_dirs, tmp_path,
                                            idp_realtime, receiver_realtime, agents):
    ha, idp = home_assistant, idp_realtime
    board = fake_board(tmp_path / "board")
    config = write_config(idp, receiver_realtime, ha_broker, board)
    agent = agents(config, board["model"])

    # -- waiting for a person: HA shows it, with the address, time left, the code
    assert wait_for(lambda: agent.service.state == AWAITING_USER, 30)
    assert wait_for(lambda: (entity_state(ha, "sign_in_needed") or {}).get("state") == "on", 60), \
        by_unique_id(ha).keys()
    assert entity_state(ha, "state")["state"] == AWAITING_USER
    assert entity_state(ha, "sign_in_address")["state"] == idp.verification_uri
    code = idp.wait_for_code()
    assert wait_for(lambda: entity_state(ha, "sign_in_code")["state"] == code)
    expires = entity_state(ha, "sign_in_expires")
    assert expires["attributes"]["device_class"] == "timestamp"
    left = (datetime.fromisoformat(expires["state"]) - datetime.now(timezone.utc)).total_seconds()
    assert 0 < left <= 15 * 60 + 5

    # -- the "New sign-in code" button: a fresh code, shown in HA
    entities = by_unique_id(ha)
    ha.press(entities[uid("new_code")]["entity_id"])
    assert wait_for(lambda: entity_state(ha, "sign_in_code")["state"] not in ("unknown", code), 30)
    new_code = entity_state(ha, "sign_in_code")["state"]
    assert new_code in idp.pending_user_codes()
    assert agent.service.history[-3:] == [AWAITING_USER, SIGN_IN_REQUIRED, AWAITING_USER]

    idp.approve(new_code)
    assert wait_for(lambda: agent.service.state == SIGNED_IN, 30)
    assert wait_for(lambda: entity_state(ha, "sign_in_needed")["state"] == "off", 30)

    # -- the device and its entities, with units and classes
    expected = {"state", "sign_in_needed", "sign_in_address", "sign_in_expires", "sign_in_code",
                "outbox_depth", "dropped", "last_upload", "last_error", "token_expires",
                "new_code", "sign_out", "cpu_temperature", "soc_missing", "uptime",
                "load_average", "memory", "disk_usage", "probes_28-0316a2795eff",
                "probes_28-0416a2795e01", "env_humidity", "env_pressure", "env_it_s",
                "env_temperature"}
    assert wait_for(lambda: len(by_unique_id(ha)) == len(expected) + 1, 60), sorted(by_unique_id(ha))
    entities = by_unique_id(ha)
    found = {u[len(DEVICE) + 1:] for u in entities}
    assert expected <= found
    # The env.temperature key collides with the sensor "env_temperature": its own id.
    (extra,) = found - expected
    assert re.fullmatch(r"env_temperature_[0-9a-f]{8}", extra)
    # No ghost entity for the multi-value sensors' own names.
    assert "env" not in found and "probes" not in found

    (device,) = [d for d in ha.device_registry() if ["mqtt", f"entra-agent-{DEVICE}"] in d["identifiers"]]
    assert device["name"] == DEVICE
    assert device["model"] == "Raspberry Pi Zero 2 W" and device["hw_version"] == "1.0"
    assert device["sw_version"] == "test"
    assert {e["device_id"] for e in entities.values()} == {device["id"]}

    def attrs(oid):
        return entity_state(ha, oid)["attributes"]

    assert wait_for(lambda: float(entity_state(ha, "cpu_temperature")["state"]) == 48.312, 30)
    cpu = attrs("cpu_temperature")
    assert cpu["friendly_name"] == f"{DEVICE} CPU temperature"
    assert (cpu["unit_of_measurement"], cpu["device_class"], cpu["state_class"]) == \
        ("°C", "temperature", "measurement")
    assert (attrs("uptime")["device_class"], attrs("uptime")["unit_of_measurement"]) == ("duration", "s")
    assert attrs("load_average")["state_class"] == "measurement"
    assert (attrs("memory")["device_class"], attrs("memory")["unit_of_measurement"]) == ("data_size", "MB")
    assert attrs("disk_usage")["unit_of_measurement"] == "%"
    humidity = attrs("env_humidity")
    assert (humidity["unit_of_measurement"], humidity["device_class"]) == ("%", "humidity")
    assert wait_for(lambda: entity_state(ha, "env_humidity")["state"] == "48.0")
    pressure = attrs("env_pressure")
    assert (pressure["unit_of_measurement"], pressure["device_class"], pressure["friendly_name"]) \
        == ("hPa", "atmospheric_pressure", f"{DEVICE} Air pressure")
    # A key with a quote in it gets its value (the template is safe for any key).
    assert wait_for(lambda: entity_state(ha, "env_it_s")["state"] == "3.0")
    # (env.temperature and the sensor env_temperature: whichever came first kept the plain id)
    assert attrs(extra)["unit_of_measurement"] == attrs("env_temperature")["unit_of_measurement"] == "°C"
    assert wait_for(lambda: {entity_state(ha, extra)["state"],
                             entity_state(ha, "env_temperature")["state"]} == {"21.5", "7.0"})
    probe = attrs("probes_28-0316a2795eff")
    assert (probe["device_class"], probe["unit_of_measurement"]) == ("temperature", "°C")
    # A failing sensor (no thermal zone) is unknown, not a template warning.
    assert entity_state(ha, "soc_missing")["state"] == "unknown"

    # Diagnostics have their own entities, in the diagnostic category.
    for oid in ("outbox_depth", "dropped", "last_upload", "last_error", "token_expires"):
        assert entities[uid(oid)]["entity_category"] == "diagnostic", oid
    assert entities[uid("sign_out")]["entity_category"] == "config"
    assert wait_for(lambda: entity_state(ha, "last_upload")["state"] not in ("unknown", "unavailable"), 30)
    assert attrs("token_expires")["device_class"] == "timestamp"
    assert entity_state(ha, "last_error")["state"] == "none"
    assert entity_state(ha, "dropped")["state"] == "0"

    # -- "Sign out": one press only asks; a second one within the window signs out
    ha.press(entities[uid("sign_out")]["entity_id"])
    assert wait_for(lambda: "sign_out_confirm_until" in entity_state(ha, "state")["attributes"], 15)
    assert agent.service.state == SIGNED_IN
    ha.press(entities[uid("sign_out")]["entity_id"])
    assert wait_for(lambda: agent.service.state == AWAITING_USER, 30)
    assert wait_for(lambda: entity_state(ha, "sign_in_needed")["state"] == "on", 30)
    idp.approve()
    assert wait_for(lambda: agent.service.state == SIGNED_IN, 30)

    # -- a clean stop: every entity unavailable
    agent.stop()
    assert wait_for(lambda: entity_state(ha, "cpu_temperature")["state"] == "unavailable", 30)
    assert entity_state(ha, "state")["state"] == "unavailable"

    # -- restart without load_average: its entity goes, the others come back
    record = json.loads(paths.homeassistant_file().read_text())
    assert "load_average" in record["entities"]
    written = paths.homeassistant_file().stat().st_mtime_ns
    config = write_config(idp, receiver_realtime, ha_broker, board, with_load=False)
    agent = agents(config, board["model"])
    assert wait_for(lambda: uid("load_average") not in by_unique_id(ha), 60)
    assert wait_for(lambda: entity_state(ha, "cpu_temperature")["state"] not in
                    ("unavailable", "unknown"), 60)
    assert "load_average" not in json.loads(paths.homeassistant_file().read_text())["entities"]
    assert paths.homeassistant_file().stat().st_mtime_ns != written

    # -- Home Assistant restarts: the device comes back as it was, load_average stays gone
    ha.restart()
    assert wait_for(lambda: entity_state(ha, "cpu_temperature")["state"] not in
                    ("unavailable", "unknown"), 90)
    assert uid("load_average") not in by_unique_id(ha)
    assert entity_state(ha, "env_humidity")["attributes"]["device_class"] == "humidity"
    agent.stop()

    # -- and Home Assistant's log has nothing to say about this device
    warnings = our_warnings(ha)
    assert not warnings, "\n".join(warnings[:20])
    assert "Template variable" not in ha.log_text()
