"""The publisher's Home Assistant side against a real mosquitto: removals that
survive restarts, the discovery prefix, the button commands."""

from __future__ import annotations

import json
import time

from agent.backoff import Backoff
from agent.homeassistant import DeviceInfo, SensorInfo
from agent.status import StatusPublisher
from tests.fixtures_core import wait_until
from tests.fixtures_mqtt import mqtt_settings

DEVICE = DeviceInfo("dev-1", "1.0", model="Test Board", hw_version="2")


def publisher(broker, record, sensors, commands=None, **kw) -> StatusPublisher:
    kw.setdefault("keepalive", 30)
    settings = mqtt_settings(broker.host, broker.port, homeassistant_discovery=kw.pop("discovery", True),
                             **kw)
    pub = StatusPublisher(settings, device_id="dev-1", sensors=sensors, announced_path=record,
                          device=DEVICE, on_command=(commands.append if commands is not None else None),
                          first_connect_jitter=0.0, reconnect=Backoff(base=1.0, cap=1.0, minimum=0.5))
    pub.start()
    assert wait_until(lambda: pub.is_connected)
    return pub


def retained(mqtt_subscriber, broker, topic):
    """What the broker keeps on *topic* now ("" for nothing kept)."""
    sub = mqtt_subscriber(broker, [topic])
    time.sleep(0.3)                  # a retained message arrives right after SUBACK
    got = sub.on(topic)
    return got[-1].text if got else ""


def test_a_sensor_removed_between_runs_is_removed_from_home_assistant(
        mosquitto, mqtt_subscriber, tmp_path):
    record = tmp_path / "state" / "homeassistant.json"
    topic_b = "homeassistant/sensor/dev-1/b/config"
    early = mqtt_subscriber(mosquitto, ["homeassistant/#"])
    pub = publisher(mosquitto, record, [SensorInfo("a", "°C"), SensorInfo("b", "%")])
    config_b = early.wait_for(topic_b).json()
    assert config_b["device"]["model"] == "Test Board" and config_b["unit_of_measurement"] == "%"
    pub.close()
    assert "b" in json.loads(record.read_text())["entities"]
    assert retained(mqtt_subscriber, mosquitto, topic_b)        # the broker keeps it

    pub = publisher(mosquitto, record, [SensorInfo("a", "°C")])
    early.wait_for(topic_b, lambda m: m.payload == b"")
    pub.close()
    assert retained(mqtt_subscriber, mosquitto, topic_b) == ""  # gone for good
    assert "b" not in json.loads(record.read_text())["entities"]

    # Nothing changed: the record is not written again (SD card).
    before = record.stat().st_mtime_ns
    pub = publisher(mosquitto, record, [SensorInfo("a", "°C")])
    pub.publish_readings({"a": 1.0})
    pub.close()
    assert record.stat().st_mtime_ns == before


def test_discovery_prefix_and_birth_message(mosquitto, mqtt_subscriber, tmp_path):
    sub = mqtt_subscriber(mosquitto, ["ha/main/#", "homeassistant/#"])
    pub = publisher(mosquitto, tmp_path / "r.json", [SensorInfo("a", "°C")],
                    homeassistant_prefix="ha/main")
    try:
        sub.wait_for("ha/main/sensor/dev-1/a/config")
        before = len(sub.on("ha/main/sensor/dev-1/state/config"))
        sub.client.publish("homeassistant/status", "online", qos=1)   # another prefix: not ours
        sub.client.publish("ha/main/status", "online", qos=1)
        assert wait_until(lambda: len(sub.on("ha/main/sensor/dev-1/state/config")) > before)
        # Under the old prefix only the removals of what an earlier version
        # (no record yet) announced there.
        old = [m for m in sub.messages if m.topic.startswith("homeassistant/sensor/")]
        assert old and all(m.payload == b"" for m in old)
    finally:
        pub.close()


def test_turning_discovery_off_takes_the_entities_back(mosquitto, mqtt_subscriber, tmp_path):
    record = tmp_path / "r.json"
    sub = mqtt_subscriber(mosquitto, ["homeassistant/#"])
    publisher(mosquitto, record, [SensorInfo("a", "°C")]).close()
    sub.wait_for("homeassistant/sensor/dev-1/a/config")
    publisher(mosquitto, record, [SensorInfo("a", "°C")], discovery=False).close()
    sub.wait_for("homeassistant/sensor/dev-1/a/config", lambda m: m.payload == b"")
    sub.wait_for("homeassistant/sensor/dev-1/state/config", lambda m: m.payload == b"")
    assert json.loads(record.read_text())["entities"] == {}


def test_button_commands_live_enabled_and_known_only(mosquitto, mqtt_subscriber, tmp_path, caplog):
    caplog.set_level("INFO")
    command = "entra-agent/dev-1/command"
    sender = mqtt_subscriber(mosquitto, ["homeassistant/button/#"])
    # Someone left a retained "sign_out": it must never act, now or on reconnect.
    sender.client.publish(command, "sign_out", qos=1, retain=True).wait_for_publish(5)
    got: list[str] = []
    pub = publisher(mosquitto, tmp_path / "r.json", [], commands=got,
                    homeassistant_new_code_button=True)
    try:
        sender.wait_for("homeassistant/button/dev-1/new_code/config")
        assert not [m for m in sender.messages if "sign_out" in m.topic]   # not enabled
        for payload in ("sign_out", "bogus", "new_code" * 10, "new_code"):
            sender.client.publish(command, payload, qos=1)
        assert wait_until(lambda: got == ["new_code"])
        time.sleep(0.3)
        assert got == ["new_code"]                      # sign_out is not enabled, bogus unknown
        assert "ignoring a retained message" in caplog.text
    finally:
        pub.close()
        sender.client.publish(command, b"", qos=1, retain=True)


def test_buttons_are_off_by_default(mosquitto, mqtt_subscriber, tmp_path):
    got: list[str] = []
    sender = mqtt_subscriber(mosquitto, ["homeassistant/#"])
    pub = publisher(mosquitto, tmp_path / "r.json", [], commands=got)
    try:
        sender.wait_for("homeassistant/sensor/dev-1/state/config")
        sender.client.publish("entra-agent/dev-1/command", "new_code", qos=1)
        time.sleep(0.5)
        assert got == [] and not [m for m in sender.messages if "/button/" in m.topic]
    finally:
        pub.close()


def test_assembly_wires_the_buttons_and_the_record(mosquitto, mqtt_subscriber, agent_dirs):
    import random

    from agent import paths
    from agent.assembly import build_parts
    from agent.clock import SystemClock
    from agent.config import load_config

    paths.config_dir().mkdir(parents=True)
    (paths.config_dir() / "agent.toml").write_text(
        f'device_id = "dev-1"\n[[sensors]]\ntype = "uptime"\n'
        f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
        'connect_spread = 0\nhomeassistant_discovery = true\nhomeassistant_sign_out_button = true\n')
    config = load_config(paths.config_dir() / "agent.toml")
    from agent import ui
    from agent.auth.tokens import TokenClient
    from agent.notify import Notifier
    from agent.profiles import Profile
    from agent.tokenstore import TokenStore

    client = TokenClient(Profile(name="default", client_id="00000000-0000-0000-0000-000000000001",
                                 tenant_id="organizations"),
                         store=TokenStore(paths.token_dir()), clock=SystemClock())
    parts = build_parts(config, clock=SystemClock(), token_client=client, presenter=ui.NullPresenter(),
                        rng=random.Random(), notifier=Notifier(None))
    posted: list[tuple[str, object]] = []

    def drained() -> list[tuple[str, object]]:
        while (event := parts.events.get()) is not None:
            posted.append((event.kind.value, event.value))
        return [p for p in posted if p[0] != "mqtt"]

    sub = mqtt_subscriber(mosquitto, ["homeassistant/#"])
    parts.publisher.start()
    try:
        uptime = sub.wait_for("homeassistant/sensor/dev-1/uptime/config").json()
        assert (uptime["device_class"], uptime["unit_of_measurement"]) == ("duration", "s")
        sub.wait_for("homeassistant/button/dev-1/sign_out/config")
        sub.client.publish("entra-agent/dev-1/command", "sign_out", qos=1)
        assert wait_until(lambda: drained() == [("ha_command", "sign_out")])
        assert wait_until(lambda: paths.homeassistant_file().is_file())
        assert "@sign_out" in json.loads(paths.homeassistant_file().read_text())["entities"]
    finally:
        parts.publisher.close()
        parts.outbox.close()
