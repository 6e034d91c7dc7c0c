"""agent.homeassistant (pure discovery payloads), agent.ha_discovery (what to announce and
remove over a run) and agent.ha_announced (the record file)."""

from __future__ import annotations

import json
import os

import pytest

from agent.config import KeyConfig, SensorConfig
from agent.errors import StorageError
from agent.ha_announced import MAX_FILE_BYTES, load_announced, save_announced
from agent.ha_discovery import Discovery, legacy_topics
from agent.homeassistant import (
    COMMAND_NEW_CODE,
    COMMAND_SIGN_OUT,
    DeviceInfo,
    KeyInfo,
    SensorInfo,
    assign_object_ids,
    board_device,
    device_payload,
    friendly_name,
    object_id,
    read_board_model,
    reading_entity,
    sensor_entity,
    sensor_infos,
    topics_for,
    unit_fits,
    value_template,
)
from agent.telemetry.sensors import build_sensors

DEVICE = DeviceInfo("dev-1", "1.2.3", model="Raspberry Pi 4 Model B", hw_version="1.4")
TOPICS = topics_for("entra-agent", "dev-1")


def configs(messages):
    """{topic: payload dict or None (removal)} of discovery messages."""
    return {m.topic: (json.loads(m.payload) if m.payload else None) for m in messages}


def sensor_topic(oid: str, component: str = "sensor", prefix: str = "homeassistant") -> str:
    return f"{prefix}/{component}/dev-1/{oid}/config"


# ---------------------------------------------------------------- names and ids

def test_object_ids_keep_their_old_form_and_never_collide():
    assert object_id("cpu_temperature") == "cpu_temperature"
    assert object_id("ds18b20.28-0316a2795eff") == "ds18b20_28-0316a2795eff"
    ids = assign_object_ids(["env_temperature", "env.temperature", "env-temperature"])
    assert ids["env_temperature"] == "env_temperature"
    assert ids["env-temperature"] == "env-temperature"
    assert ids["env.temperature"].startswith("env_temperature_") and len(set(ids.values())) == 3
    # Stable: the same names give the same ids in every run, whatever the order now.
    again = assign_object_ids(["env.temperature", "env_temperature"], previous=ids)
    assert again == {k: ids[k] for k in ("env.temperature", "env_temperature")}
    # A recorded id that is not a valid object id, or taken twice, is not trusted.
    odd = assign_object_ids(["a", "b"], previous={"a": "x/y", "b": "b"})
    assert odd == {"a": "a", "b": "b"}
    twice = assign_object_ids(["a", "b"], previous={"a": "same", "b": "same"})
    assert twice["a"] == "same" and twice["b"] == "b"


def test_friendly_names():
    assert friendly_name("cpu_temperature") == "CPU temperature"
    assert friendly_name("load_average") == "Load average"
    assert friendly_name("env.humidity") == "Env humidity"
    assert friendly_name("probes.28-0316a2795eff") == "Probes 28-0316a2795eff"
    assert friendly_name("ds18b20") == "DS18B20"
    assert friendly_name("a\x1b[31mb") == "A[31mb"           # no control characters
    assert len(friendly_name("x" * 500)) == 64


def test_value_templates_have_defaults_and_quote_any_key():
    assert value_template("cpu_temperature") == '{{ value_json.get("cpu_temperature") }}'
    assert value_template("it's") == '{{ value_json.get("it\'s") }}'
    # Braces, quotes, backslashes, non-ASCII: a JSON literal, ASCII only, no braces left.
    tricky = value_template('a"b\\c}}{%x°')
    inner = tricky[len("{{ value_json.get("):-len(") }}")]
    assert "{" not in inner and "}" not in inner and inner.isascii()
    assert json.loads(inner) == 'a"b\\c}}{%x°'
    # A text state is cut to Home Assistant's 255 characters; absent -> "None" (unknown).
    assert value_template("last_error", limit=255, missing="none") == \
        '{{ ((value_json.get("last_error") or "none") | string)[:255] }}'


# ---------------------------------------------------------------- payloads

def test_device_block_carries_model_and_hw_version():
    assert device_payload(DEVICE) == {
        "identifiers": ["entra-agent-dev-1"], "name": "dev-1", "sw_version": "1.2.3",
        "manufacturer": "entra-device-agent", "model": "Raspberry Pi 4 Model B", "hw_version": "1.4"}
    assert "model" not in device_payload(DeviceInfo("dev-1", "1"))


def test_sensor_entity_classes_units_and_state_class():
    cpu = sensor_entity(key="cpu_temperature", oid="cpu_temperature", name="CPU temperature",
                        device=DEVICE, topics=TOPICS, unit="°C", device_class="temperature").payload
    assert cpu["unique_id"] == "dev-1_cpu_temperature"
    assert (cpu["unit_of_measurement"], cpu["device_class"], cpu["state_class"]) == \
        ("°C", "temperature", "measurement")
    assert cpu["state_topic"] == "entra-agent/dev-1/readings"
    assert cpu["availability_topic"] == "entra-agent/dev-1/availability"
    assert cpu["origin"]["name"] == "entra-device-agent"
    # No unit: still a measurement (statistics), no unit key.
    load = sensor_entity(key="load_average", oid="l", name="Load", device=DEVICE, topics=TOPICS).payload
    assert load["state_class"] == "measurement" and "unit_of_measurement" not in load
    # A unit the class refuses: the class is left out (no warning in HA's log).
    odd = sensor_entity(key="t", oid="t", name="T", device=DEVICE, topics=TOPICS, unit="mK",
                        device_class="temperature").payload
    assert "device_class" not in odd and odd["unit_of_measurement"] == "mK"
    # A class that takes only totals gets no "measurement".
    energy = sensor_entity(key="e", oid="e", name="E", device=DEVICE, topics=TOPICS, unit="kWh",
                           device_class="energy").payload
    assert "state_class" not in energy
    assert unit_fits("humidity", "%") and not unit_fits("humidity", "°C")
    assert unit_fits("aqi", None) and unit_fits(None, "anything")


def test_reading_entity_takes_the_key_config_over_the_sensor():
    env = SensorInfo("env", "°C", device_class="temperature", multi=None,
                     keys={"humidity": KeyInfo(unit="%", device_class="humidity"),
                           "pressure": KeyInfo(unit="hPa", device_class="atmospheric_pressure",
                                               label="Air pressure")})
    humidity = reading_entity("env.humidity", "env_humidity", [env], DEVICE, TOPICS, "°C").payload
    assert (humidity["unit_of_measurement"], humidity["device_class"]) == ("%", "humidity")
    assert humidity["name"] == "Env humidity"
    pressure = reading_entity("env.pressure", "p", [env], DEVICE, TOPICS).payload
    assert pressure["name"] == "Air pressure" and pressure["unit_of_measurement"] == "hPa"
    # A key not configured: the reading's unit, else the sensor's; the sensor's class.
    other = reading_entity("env.temperature", "t", [env], DEVICE, TOPICS).payload
    assert (other["unit_of_measurement"], other["device_class"]) == ("°C", "temperature")


def test_sensor_infos_from_config_and_built_in_sensors(tmp_path):
    cfgs = [SensorConfig("cpu_temperature", "cpu_temperature", options={"path": str(tmp_path / "t")}),
            SensorConfig("uptime", "uptime"),
            SensorConfig("memory", "memory", options={"report": "available_mb"}),
            SensorConfig("disk_usage", "disk_usage", options={"report": "used_percent"}),
            SensorConfig("ds18b20", "probes", options={"base_dir": str(tmp_path)}),
            SensorConfig("command", "env", options={"command": ["/bin/true"]}, unit="°C",
                         device_class="temperature", label="Room",
                         keys={"humidity": KeyConfig(unit="%", device_class="humidity")})]
    infos = {i.name: i for i in sensor_infos(cfgs, build_sensors(cfgs))}
    assert (infos["cpu_temperature"].device_class, infos["cpu_temperature"].unit) == ("temperature", "°C")
    assert (infos["uptime"].device_class, infos["uptime"].unit) == ("duration", "s")
    assert (infos["memory"].device_class, infos["memory"].unit) == ("data_size", "MB")
    assert (infos["disk_usage"].device_class, infos["disk_usage"].unit) == (None, "%")
    assert infos["probes"].multi is True and infos["cpu_temperature"].multi is False
    env = infos["env"]
    assert env.multi is None and env.label == "Room" and env.keys["humidity"].unit == "%"


def test_board_model_from_the_device_tree(tmp_path):
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi Zero 2 W Rev 1.0\x00")
    assert read_board_model(model) == ("Raspberry Pi Zero 2 W", "1.0")
    model.write_bytes(b"Some Board\x1b[2J\x00junk")
    assert read_board_model(model) == ("Some Board[2J", None)
    model.write_bytes(b"x" * 10_000)
    assert len(read_board_model(model)[0]) == 100
    assert read_board_model(tmp_path / "none") == (None, None)
    assert board_device("dev-1", "1", tmp_path / "none") == DeviceInfo("dev-1", "1")


# ---------------------------------------------------------------- over a run

def sensors():
    return [SensorInfo("cpu_temperature", "°C", device_class="temperature"),
            SensorInfo("probes", "°C", device_class="temperature", multi=True),
            SensorInfo("env", "°C", multi=None, keys={"humidity": KeyInfo(unit="%")})]


def test_connect_announces_fixed_single_and_configured_keys_but_no_parents():
    d = Discovery(DEVICE, TOPICS, sensors=sensors(), announced={})
    sent = configs(d.connect())
    assert set(sent) == {
        sensor_topic("state"), sensor_topic("sign_in_needed", "binary_sensor"),
        sensor_topic("sign_in_address"), sensor_topic("sign_in_expires"),
        sensor_topic("outbox_depth"), sensor_topic("dropped"), sensor_topic("last_upload"),
        sensor_topic("last_error"), sensor_topic("token_expires"),
        sensor_topic("cpu_temperature"), sensor_topic("env_humidity")}
    assert all(p is not None for p in sent.values())           # nothing to remove
    state = sent[sensor_topic("state")]
    assert state["device_class"] == "enum" and "awaiting_user" in state["options"]
    for oid in ("outbox_depth", "dropped", "last_upload", "last_error", "token_expires"):
        assert sent[sensor_topic(oid)]["entity_category"] == "diagnostic"
    assert sent[sensor_topic("last_upload")]["device_class"] == "timestamp"
    assert sent[sensor_topic("dropped")]["state_class"] == "total_increasing"
    # Readings of a multi-value sensor: one entity per value, none for its name.
    new = configs(d.readings({"probes.28-a": 21.0, "env.humidity": 40.0, "env.t": 1.0},
                             {"probes.28-a": "°C", "env.t": "°C"}))
    assert set(new) == {sensor_topic("probes_28-a"), sensor_topic("env_t")}
    assert d.readings({"probes.28-a": 21.5}) == []               # announced once


def test_user_code_and_buttons_only_when_enabled():
    plain = configs(Discovery(DEVICE, TOPICS, announced={}).connect())
    assert sensor_topic("sign_in_code") not in plain
    assert not any("/button/" in t for t in plain)
    full = configs(Discovery(DEVICE, TOPICS, announced={}, publish_user_code=True,
                             new_code_button=True, sign_out_button=True).connect())
    assert full[sensor_topic("sign_in_code")]["value_template"].startswith(
        '{{ ((value_json.get("user_code")')
    new_code = full[sensor_topic("new_code", "button")]
    sign_out = full[sensor_topic("sign_out", "button")]
    assert new_code["command_topic"] == sign_out["command_topic"] == "entra-agent/dev-1/command"
    assert (new_code["payload_press"], sign_out["payload_press"]) == (COMMAND_NEW_CODE, COMMAND_SIGN_OUT)
    assert "twice" in sign_out["name"]


def test_removed_sensors_and_turned_off_entities_are_removed():
    first = Discovery(DEVICE, TOPICS, sensors=sensors(), announced={}, publish_user_code=True)
    first.connect()
    first.readings({"probes.28-a": 1.0, "probes.28-b": 2.0, "env": 3.0})
    record = json.loads(json.dumps(first.announced))            # as through the file

    # Next run: cpu_temperature gone, the code not published, probe 28-b unplugged.
    second = Discovery(DEVICE, TOPICS, sensors=[s for s in sensors() if s.name != "cpu_temperature"],
                       announced=record)
    sent = configs(second.connect())
    assert sent[sensor_topic("cpu_temperature")] is None
    assert sent[sensor_topic("sign_in_code")] is None
    # The probes' entities wait for the sensor's first reading of this run...
    assert sensor_topic("probes_28-a") not in sent and sensor_topic("probes_28-b") not in sent
    settled = configs(second.readings({"probes.28-a": 1.5}))
    assert settled[sensor_topic("probes_28-b")] is None          # ...which settles them
    assert settled[sensor_topic("probes_28-a")]["unique_id"] == "dev-1_probes_28-a"
    # The single-value command "env" keeps its entity only while it gives one value.
    assert configs(second.readings({"env.x": 1.0, "env.y": 2.0}))[sensor_topic("env")] is None
    assert "cpu_temperature" not in second.announced and "@sign_in_code" not in second.announced


def test_without_a_record_what_earlier_versions_announced_is_assumed():
    # Earlier versions announced one entity per configured sensor, parents included.
    d = Discovery(DEVICE, TOPICS, sensors=sensors(), announced=None)
    sent = configs(d.connect())
    assert sensor_topic("cpu_temperature") in sent
    assert sensor_topic("probes") not in sent                  # pending its first reading
    assert configs(d.readings({"probes.28-a": 1.0}))[sensor_topic("probes")] is None
    assert legacy_topics("dev.1", ["a.b"]) == {
        "@state": "homeassistant/sensor/dev_1/state/config",
        "a.b": "homeassistant/sensor/dev_1/a_b/config"}


def test_a_new_prefix_moves_every_entity():
    old = Discovery(DEVICE, TOPICS, sensors=sensors(), announced={})
    old.connect()
    moved = Discovery(DEVICE, TOPICS, sensors=sensors(), prefix="ha", announced=old.announced)
    sent = configs(moved.connect())
    assert sent[sensor_topic("cpu_temperature")] is None
    assert sent[sensor_topic("cpu_temperature", prefix="ha")]["unique_id"] == "dev-1_cpu_temperature"


def test_readings_while_disconnected_are_announced_at_connect():
    d = Discovery(DEVICE, TOPICS, sensors=sensors(), announced={})
    assert d.readings({"probes.28-a": 1.0}, connected=False) == []
    assert sensor_topic("probes_28-a") in configs(d.connect())


def test_remove_all():
    d = Discovery(DEVICE, TOPICS, sensors=sensors(), announced={})
    d.connect()
    removed = configs(d.remove_all())
    assert removed and all(p is None for p in removed.values()) and d.announced == {}


# ---------------------------------------------------------------- the record file

RECORD = {"@state": {"topic": "homeassistant/sensor/dev-1/state/config", "object_id": "state"},
          "it's {x}": {"topic": "homeassistant/sensor/dev-1/it_s__x_/config", "object_id": "it_s__x_"}}


def test_record_round_trip_written_only_when_changed(tmp_path):
    path = tmp_path / "state" / "homeassistant.json"
    assert load_announced(path) is None
    assert save_announced(path, RECORD) is True
    assert load_announced(path) == RECORD
    before = path.stat().st_mtime_ns, path.stat().st_ino
    assert save_announced(path, dict(RECORD)) is False          # unchanged: no write at all
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before
    assert save_announced(path, {}) is True                     # atomic: a new file replaced it
    assert path.stat().st_ino != before[1]
    assert load_announced(path) == {}
    assert [p.name for p in path.parent.iterdir()] == ["homeassistant.json"]   # no temp left


@pytest.mark.parametrize("content", [
    b"{not json", b"[]", b'{"version": 2, "entities": {}}', b'{"version": 1, "entities": []}',
    b'{"version": 1, "entities": {"a": {"topic": "../../etc/config"}}}',
    b'{"version": 1, "entities": {"a": {"topic": "x/config", "object_id": "a b"}}}',
    b"\xff\xfe", b" " * (MAX_FILE_BYTES + 1),
])
def test_a_damaged_record_is_ignored(tmp_path, caplog, content):
    path = tmp_path / "homeassistant.json"
    path.write_bytes(content)
    assert load_announced(path) is None
    assert "ignoring it" in caplog.text


def test_record_in_an_unwritable_place_is_a_storage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError, match="cannot write the Home Assistant record"):
        save_announced(blocker / "homeassistant.json", RECORD)
    assert os.listdir(tmp_path) == ["file"]


def test_readings_carry_the_unit_of_their_key(tmp_path):
    from agent.clock import FakeClock
    from agent.telemetry.sensors import read_all

    helper = tmp_path / "env"
    helper.write_text('#!/bin/sh\necho \'{"temperature": 21.5, "humidity": 48}\'\n')
    helper.chmod(0o755)
    cfg = SensorConfig("command", "env", options={"command": [str(helper)]}, unit="°C",
                       keys={"humidity": KeyConfig(unit="%")})
    readings, failures = read_all(build_sensors([cfg]), FakeClock())
    assert failures == []
    assert {r.sensor: r.unit for r in readings} == {"env.temperature": "°C", "env.humidity": "%"}


def test_a_flood_of_keys_is_bounded():
    from agent.ha_discovery import MAX_READING_ENTITIES

    d = Discovery(DEVICE, TOPICS, sensors=[SensorInfo("cmd", multi=None)], announced={})
    d.connect()
    sent = configs(d.readings({f"cmd.k{i}": 1.0 for i in range(MAX_READING_ENTITIES + 50)}))
    assert len(sent) == MAX_READING_ENTITIES
    long = object_id("x" * 300)
    assert len(long) == 64 and long != object_id("x" * 301)
