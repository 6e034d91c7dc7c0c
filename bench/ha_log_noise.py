"""Warnings in a real Home Assistant's log per reading: the old discovery payloads vs today's.

    .venv/bin/python bench/ha_log_noise.py [--rounds N]

Needs the Home Assistant venv of ``tools/ha-venv.sh`` and ``mosquitto``.
Side by side in one run, against one Home Assistant core and one broker:
a device announced with the payloads of versions before issue 11 (value
templates without a default, an entity for a multi-value sensor's own name,
shown inline below), then a device announced by :mod:`agent.homeassistant`
through the real publisher. Both have the same sensors — one that reads,
one that fails (never in the readings: a board without a thermal zone) and a
multi-value one — and publish the same readings *rounds* times. Prints the
warnings Home Assistant logged per round and what that makes in a day at the
default 60 s interval.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.config import MqttConfig  # noqa: E402
from agent.homeassistant import DeviceInfo, KeyInfo, SensorInfo  # noqa: E402
from agent.status import StatusPublisher  # noqa: E402
from tests.fixtures_ha import HomeAssistant, ha_venv  # noqa: E402
from tests.fixtures_mqtt import Broker  # noqa: E402

WARNING = re.compile(r"\b(WARNING|ERROR)\b")


def legacy_configs(device_id: str) -> dict[str, dict]:
    """What versions before issue 11 announced (agent/status.py then)."""
    base = f"entra-agent/{device_id}"
    common = {"availability_topic": f"{base}/availability", "payload_available": "online",
              "payload_not_available": "offline",
              "device": {"identifiers": [f"entra-agent-{device_id}"], "name": device_id,
                         "sw_version": "old", "manufacturer": "entra-device-agent"}}
    configs = {"state": {**common, "name": "State", "unique_id": f"{device_id}_state",
                         "state_topic": f"{base}/state",
                         "value_template": "{{ value_json.state }}"}}
    for name, unit in (("cpu_temperature", "°C"), ("soc_missing", "°C"), ("env", "°C"),
                       ("env.temperature", "°C"), ("env.humidity", "°C")):
        oid = re.sub(r"[^a-zA-Z0-9_-]", "_", name)
        configs[oid] = {**common, "name": name, "unique_id": f"{device_id}_{oid}",
                        "state_topic": f"{base}/readings",
                        "value_template": "{{ value_json['%s'] }}" % name,
                        "unit_of_measurement": unit, "state_class": "measurement"}
    return configs


READINGS = {"cpu_temperature": 48.3, "env.temperature": 21.5, "env.humidity": 48.0}


def count_warnings(ha: HomeAssistant, since: int) -> int:
    return sum(1 for line in ha.log_text()[since:].splitlines() if WARNING.search(line))


def run_legacy(ha: HomeAssistant, broker: Broker, rounds: int, every: float) -> int:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    device = "old-device"
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(f"entra-agent/{device}/availability", "online", qos=1, retain=True)
        for oid, config in legacy_configs(device).items():
            client.publish(f"homeassistant/sensor/{device}/{oid}/config", json.dumps(config),
                           qos=1, retain=True).wait_for_publish(5)
        ha.wait(lambda: ha.state("sensor.old_device_cpu_temperature") is not None, 30)
        since = len(ha.log_text())
        for _ in range(rounds):
            client.publish(f"entra-agent/{device}/readings", json.dumps(READINGS), retain=True)
            client.publish(f"entra-agent/{device}/state", json.dumps({"state": "signed_in"}),
                           retain=True)
            time.sleep(every)
        time.sleep(1.0)
        return count_warnings(ha, since)
    finally:
        client.loop_stop()
        client.disconnect()


def run_current(ha: HomeAssistant, broker: Broker, rounds: int, every: float) -> int:
    sensors = [SensorInfo("cpu_temperature", "°C", device_class="temperature"),
               SensorInfo("soc_missing", "°C", device_class="temperature"),
               SensorInfo("env", "°C", device_class="temperature", multi=None,
                          keys={"humidity": KeyInfo(unit="%", device_class="humidity")})]
    pub = StatusPublisher(MqttConfig(host=broker.host, port=broker.port, homeassistant_discovery=True, keepalive=30),
                          device_id="new-device",
                          sensors=sensors, device=DeviceInfo("new-device", "now"),
                          first_connect_jitter=0.0)
    pub.start()
    try:
        ha.wait(lambda: ha.state("sensor.new_device_cpu_temperature") is not None, 30)
        since = len(ha.log_text())
        for _ in range(rounds):
            pub.publish_readings(READINGS, {"env.humidity": "%"})
            pub.publish_state({"state": "signed_in"})
            time.sleep(every)
        time.sleep(1.0)
        return count_warnings(ha, since)
    finally:
        pub.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--every", type=float, default=0.5, help="seconds between rounds")
    args = parser.parse_args()
    venv = ha_venv()
    if not (venv / ".complete").is_file():
        print(f"Home Assistant is not installed at {venv}: run tools/ha-venv.sh", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp))
        broker.start()
        ha = HomeAssistant(venv, Path(tmp), broker)
        try:
            ha.start()
            old = run_legacy(ha, broker, args.rounds, args.every)
            new = run_current(ha, broker, args.rounds, args.every)
        finally:
            ha.stop()
            broker.stop()
    per_day = 86400 / 60
    print(f"{'payloads':<22}{'warnings':>10}{'per round':>11}{'per day at 60 s':>17}")
    for label, count in (("before issue 11", old), ("agent.homeassistant", new)):
        print(f"{label:<22}{count:>10}{count / args.rounds:>11.2f}"
              f"{count / args.rounds * per_day:>17.0f}")
    print(f"({args.rounds} rounds of the same readings each; one Home Assistant "
          f"{ha_venv().name.removeprefix('ha-')}, one broker)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
