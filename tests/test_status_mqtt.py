"""agent.status against a real mosquitto broker; agent.notify against a real socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from agent.backoff import Backoff
from agent.status import SensorInfo, StatusPublisher
from tests.fixtures_core import wait_until
from tests.fixtures_mqtt import mqtt_settings


def make_publisher(broker, **kw) -> StatusPublisher:
    sensors = kw.pop("sensors", ())
    changes = kw.pop("changes", None)
    kw.setdefault("keepalive", 30)
    settings = mqtt_settings(broker.host, broker.port, **kw)
    return StatusPublisher(settings, device_id="dev-1", sensors=sensors,
                           on_connection_change=(changes.append if changes is not None else None),
                           first_connect_jitter=0.0, reconnect=Backoff(base=1.0, cap=1.0, minimum=0.5))


def test_online_and_state_are_retained(mosquitto, mqtt_subscriber):
    pub = make_publisher(mosquitto)
    early = mqtt_subscriber(mosquitto, ["entra-agent/dev-1/state"])
    pub.start()
    try:
        assert wait_until(lambda: pub.is_connected)
        pub.publish_state({"state": "awaiting_user", "user_code": "ABCD-EFGH",
                           "verification_uri": "https://microsoft.com/devicelogin",
                           "access_token": "eyJ-secret", "device_code": "dc-secret"})
        # Once a live subscriber has it, the broker holds it: no race with the publish.
        early.wait_for("entra-agent/dev-1/state", lambda m: b"awaiting_user" in m.payload)
        # A subscriber that arrives later gets both as retained messages.
        sub = mqtt_subscriber(mosquitto, ["entra-agent/dev-1/#"])
        avail = sub.wait_for("entra-agent/dev-1/availability")
        assert avail.text == "online" and avail.retain
        state = sub.wait_for("entra-agent/dev-1/state")
        assert state.retain
        body = state.json()
        assert body["state"] == "awaiting_user"
        assert body["verification_uri"] == "https://microsoft.com/devicelogin"
        assert body["version"]
        # Never on a shared channel unless asked for; secrets never.
        assert "user_code" not in body
        assert "ABCD-EFGH" not in state.text
        assert "secret" not in state.text
    finally:
        pub.close()


def test_user_code_published_only_when_enabled(mosquitto, mqtt_subscriber):
    sub = mqtt_subscriber(mosquitto, ["entra-agent/dev-1/state"])
    pub = make_publisher(mosquitto, publish_user_code=True)
    pub.start()
    try:
        pub.publish_state({"state": "awaiting_user", "user_code": "WXYZ-1234"})
        msg = sub.wait_for("entra-agent/dev-1/state")
        assert msg.json()["user_code"] == "WXYZ-1234"
    finally:
        pub.close()


def test_states_arrive_in_order(mosquitto, mqtt_subscriber):
    sub = mqtt_subscriber(mosquitto, ["entra-agent/dev-1/state"])
    pub = make_publisher(mosquitto)
    pub.start()
    try:
        assert wait_until(lambda: pub.is_connected)
        order = ["starting", "sign_in_required", "awaiting_user", "signed_in"]
        for name in order:
            pub.publish_state({"state": name})
        sub.wait_for("entra-agent/dev-1/state", lambda m: m.json()["state"] == "signed_in")
        seen = [m.json()["state"] for m in sub.on("entra-agent/dev-1/state")]
        assert seen == order
    finally:
        pub.close()


def test_close_publishes_offline_retained(mosquitto, mqtt_subscriber):
    pub = make_publisher(mosquitto)
    pub.start()
    assert wait_until(lambda: pub.is_connected)
    pub.close()
    assert not pub.is_connected
    sub = mqtt_subscriber(mosquitto, ["entra-agent/dev-1/availability"])
    msg = sub.wait_for("entra-agent/dev-1/availability")
    assert msg.text == "offline" and msg.retain


def test_close_is_not_reported_as_a_lost_connection(mosquitto, caplog):
    # Every restart of the agent ends with close(): a WARNING "disconnected
    # ...; reconnecting" there would fill `journalctl -p warning` with noise.
    pub = make_publisher(mosquitto)
    pub.start()
    assert wait_until(lambda: pub.is_connected)
    with caplog.at_level("INFO", logger="agent.status"):
        pub.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelname != "INFO"]
    assert warnings == []
    assert any("MQTT: disconnected from" in r.getMessage() and "reconnecting" not in r.getMessage()
               for r in caplog.records)


PUBLISHER_SCRIPT = textwrap.dedent("""
    import time
    from agent.config import MqttConfig
    from agent.status import StatusPublisher
    pub = StatusPublisher(MqttConfig(host="127.0.0.1", port={port}, keepalive=30), device_id="dev-1",
                          first_connect_jitter=0)
    pub.start()
    while not pub.is_connected:
        time.sleep(0.05)
    pub.publish_state({{"state": "signed_in"}})
    print("up", flush=True)
    time.sleep(60)
""")


def test_last_will_after_sigkill(mosquitto, mqtt_subscriber):
    sub = mqtt_subscriber(mosquitto, ["entra-agent/dev-1/availability"])
    script = PUBLISHER_SCRIPT.format(port=mosquitto.port)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        sub.wait_for("entra-agent/dev-1/availability", lambda m: m.text == "online")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        msg = sub.wait_for("entra-agent/dev-1/availability", lambda m: m.text == "offline")
        assert msg.qos == 1
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def test_broker_restart_republishes(mosquitto, mqtt_subscriber):
    changes: list[bool] = []
    pub = make_publisher(mosquitto, changes=changes)
    pub.start()
    try:
        assert wait_until(lambda: pub.is_connected)
        pub.publish_state({"state": "signed_in", "outbox_depth": 3})
        mosquitto.restart()          # persistence off: every retained message is gone
        assert wait_until(lambda: changes[-2:] == [False, True], timeout=15)
        # A live subscriber first: once it has the republished state, the broker keeps it.
        mqtt_subscriber(mosquitto, ["entra-agent/dev-1/state"]).wait_for(
            "entra-agent/dev-1/state", lambda m: b'"outbox_depth":3' in m.payload.replace(b" ", b""))
        sub = mqtt_subscriber(mosquitto, ["entra-agent/dev-1/#"])
        assert sub.wait_for("entra-agent/dev-1/availability").text == "online"
        state = sub.wait_for("entra-agent/dev-1/state")
        assert state.retain and state.json()["outbox_depth"] == 3
    finally:
        pub.close()


@pytest.mark.slow
def test_down_broker_never_blocks_and_connects_later(tmp_path_factory, mqtt_subscriber):
    from tests.fixtures_mqtt import Broker

    broker = Broker(tmp_path_factory.mktemp("late"))   # not started yet
    pub = make_publisher(broker)
    started = time.monotonic()
    pub.start()
    pub.publish_state({"state": "starting"})
    pub.publish_state({"state": "signed_in"})
    assert not pub.is_connected
    # Both calls return at once: nothing waits for the broker. (Generous bound:
    # the point is "not a connect timeout", not a speed claim.)
    assert time.monotonic() - started < 1.0
    broker.start()
    try:
        assert wait_until(lambda: pub.is_connected, timeout=15)
        sub = mqtt_subscriber(broker, ["entra-agent/dev-1/state"])
        assert sub.wait_for("entra-agent/dev-1/state").json()["state"] == "signed_in"
    finally:
        pub.close()
        broker.stop()


def test_home_assistant_discovery(mosquitto, mqtt_subscriber):
    sensors = [SensorInfo("cpu_temperature", "°C"), SensorInfo("soil moisture", "%")]
    pub = make_publisher(mosquitto, homeassistant_discovery=True, sensors=sensors)
    early = mqtt_subscriber(mosquitto, ["homeassistant/sensor/#", "entra-agent/dev-1/readings"])
    pub.start()
    try:
        assert wait_until(lambda: pub.is_connected)
        pub.publish_readings({"cpu_temperature": 48.5, "soil moisture": 31.0})
        # Once a live subscriber has them, the broker keeps them: no race with the publishes.
        early.wait_for("homeassistant/sensor/dev-1/state/config")
        early.wait_for("entra-agent/dev-1/readings")
        sub = mqtt_subscriber(mosquitto, ["homeassistant/sensor/#", "entra-agent/dev-1/readings"])
        state_cfg = sub.wait_for("homeassistant/sensor/dev-1/state/config")
        assert state_cfg.retain
        cfg = state_cfg.json()
        assert cfg["state_topic"] == "entra-agent/dev-1/state"
        assert cfg["availability_topic"] == "entra-agent/dev-1/availability"
        assert cfg["device"]["identifiers"] == ["entra-agent-dev-1"]
        assert cfg["device"]["sw_version"]
        cpu = sub.wait_for("homeassistant/sensor/dev-1/cpu_temperature/config").json()
        assert cpu["unit_of_measurement"] == "°C"
        assert cpu["state_topic"] == "entra-agent/dev-1/readings"
        soil = sub.wait_for("homeassistant/sensor/dev-1/soil_moisture/config").json()
        assert soil["unique_id"] == "dev-1_soil_moisture"
        readings = sub.wait_for("entra-agent/dev-1/readings").json()
        assert readings == {"cpu_temperature": 48.5, "soil moisture": 31.0}

        # A sensor with several values: one entity per value, when first seen.
        pub.publish_readings({"ds18b20.28-0316a2795eff": 21.5}, {"ds18b20.28-0316a2795eff": "°C"})
        probe = sub.wait_for("homeassistant/sensor/dev-1/ds18b20_28-0316a2795eff/config").json()
        assert probe["unit_of_measurement"] == "°C"
        assert probe["value_template"] == '{{ value_json.get("ds18b20.28-0316a2795eff") }}'
        assert sub.wait_for("entra-agent/dev-1/readings",
                            lambda m: "ds18b20.28-0316a2795eff" in m.json()).json()["cpu_temperature"] == 48.5

        # Home Assistant restarts and announces itself: discovery comes again.
        before = len(sub.on("homeassistant/sensor/dev-1/state/config"))
        sub.client.publish("homeassistant/status", "online", qos=1)
        assert wait_until(lambda: len(sub.on("homeassistant/sensor/dev-1/state/config")) > before)
        again = sub.on("homeassistant/sensor/dev-1/state/config")[-1]
        assert not again.retain      # a live publish, not the broker's retained copy
    finally:
        pub.close()


@pytest.mark.slow
def test_refused_connection_is_reported_not_fatal(tmp_path_factory):
    from tests.fixtures_mqtt import Broker

    broker = Broker(tmp_path_factory.mktemp("auth"))
    broker.config.write_text(broker.config.read_text().replace(
        "allow_anonymous true", "allow_anonymous false"))
    broker.start()
    pub = make_publisher(broker)
    try:
        pub.start()
        pub.publish_state({"state": "signed_in"})
        time.sleep(1.5)         # let paho try (and be refused) at least once
        assert not pub.is_connected
    finally:
        pub.close()
        broker.stop()


@pytest.mark.slow
def test_idle_connection_survives_keepalive(mosquitto):
    # The network thread sleeps a quarter keepalive at a time (fewer wakeups);
    # pings must still go out before the broker's 1.5 x keepalive cut-off.
    changes: list[bool] = []
    pub = make_publisher(mosquitto, keepalive=6, changes=changes)
    pub.start()
    try:
        assert wait_until(lambda: pub.is_connected)
        time.sleep(15)                      # mosquitto cuts a silent client at ~12 s here
        assert changes == [True]
        assert pub.is_connected
    finally:
        pub.close()


def test_tls_client_certificate_and_password(mosquitto_tls, mqtt_subscriber, tmp_path):
    certs = mosquitto_tls.certs
    tls = dict(ca_file=str(certs["ca.crt"]), cert_file=str(certs["client.crt"]),
               key_file=str(certs["client.key"]))
    sub = mqtt_subscriber(mosquitto_tls, ["entra-agent/dev-1/#"],
                          tls=dict(ca_certs=tls["ca_file"], certfile=tls["cert_file"],
                                   keyfile=tls["key_file"]),
                          username="dev-1", password="s3cret-pw")
    pub = make_publisher(mosquitto_tls, tls=True, username="dev-1", password="s3cret-pw",
                         folder=tmp_path / "secrets", **tls)
    pub.start()
    try:
        assert wait_until(lambda: pub.is_connected)
        pub.publish_state({"state": "signed_in"})
        assert sub.wait_for("entra-agent/dev-1/state").json()["state"] == "signed_in"
    finally:
        pub.close()


@pytest.mark.parametrize("change", ["password", "ca", "no-client-cert"])
def test_tls_or_password_refused_is_not_fatal(mosquitto_tls, tmp_path, change):
    from tests.fixtures_mqtt import make_certificates

    certs = mosquitto_tls.certs
    options = dict(tls=True, username="dev-1", password="s3cret-pw", folder=tmp_path / "secrets",
                   ca_file=str(certs["ca.crt"]), cert_file=str(certs["client.crt"]),
                   key_file=str(certs["client.key"]))
    if change == "password":
        options["password"] = "wrong"
    elif change == "ca":
        options["ca_file"] = str(make_certificates(tmp_path / "other")["ca.crt"])
    else:
        options["cert_file"] = options["key_file"] = None
    pub = make_publisher(mosquitto_tls, **options)
    try:
        pub.start()
        pub.publish_state({"state": "signed_in"})    # returns at once, whatever the broker says
        time.sleep(1.5)
        assert not pub.is_connected
    finally:
        pub.close()


def test_the_quiet_network_thread_override_is_in_use():
    # agent/status/mqttclient.py replaces paho 2.x's network thread body (fewer idle
    # wakeups), its select wait (until the next ping) and its reconnect wait
    # (jitter). Were paho to rename any of them,
    # the agent would silently fall back: this test fails instead.
    import inspect
    from importlib.metadata import version

    import paho.mqtt.client as mqtt

    from agent.status import _quiet_client_class

    assert int(version("paho-mqtt").split(".")[0]) == 2
    assert "_thread_main" in inspect.getsource(mqtt.Client.loop_start)
    assert "_reconnect_wait" in inspect.getsource(mqtt.Client.loop_forever) + inspect.getsource(
        mqtt.Client._reconnect_wait)
    # The select() wait is cut to the next ping: paho's loop must still call
    # _loop, and its keepalive check still read the two times we read.
    assert "self._loop(" in inspect.getsource(mqtt.Client.loop_forever)
    keepalive_check = inspect.getsource(mqtt.Client._check_keepalive)
    assert "_last_msg_out" in keepalive_check and "_last_bytes_received" in keepalive_check
    quiet = _quiet_client_class(mqtt.Client, 7.5)
    assert quiet is not mqtt.Client and issubclass(quiet, mqtt.Client)
    assert {"_thread_main", "_reconnect_wait", "_loop"} <= set(vars(quiet))


def test_the_network_thread_sleeps_until_the_next_ping_is_due():
    from agent.status.mqttclient import PING_WAIT_MIN, _idle_timeout, keepalive_wait

    # Idle link, keepalive 60: the last packet went out 10 s ago, bytes came in 20 s ago.
    assert keepalive_wait(60, last_out=990.0, last_in=980.0, now=1000.0, cap=60.0) == pytest.approx(40.05)
    # A publish (out) does not postpone the ping the broker's silence makes due.
    assert keepalive_wait(60, last_out=1000.0, last_in=950.0, now=1000.0, cap=60.0) == pytest.approx(10.05)
    # Overdue: a short wait, never 0 (no spin), never past the cap.
    assert keepalive_wait(60, last_out=0.0, last_in=0.0, now=1000.0, cap=60.0) == PING_WAIT_MIN
    assert keepalive_wait(600, last_out=1000.0, last_in=1000.0, now=1000.0, cap=30.0) == 30.0
    # No keepalive: only the cap.
    assert keepalive_wait(0, last_out=0.0, last_in=0.0, now=1000.0, cap=30.0) == 30.0
    assert _idle_timeout(60) == 60.0 and _idle_timeout(0) > 0


def test_a_started_publisher_runs_the_quiet_thread(mosquitto):
    pub = make_publisher(mosquitto)
    try:
        pub.start()
        assert wait_until(lambda: pub.is_connected)
        client = pub._client
        assert type(client).__name__ == "QuietClient"
        assert client.agent_reconnect_wait is not None      # our jittered wait, not paho's doubling
    finally:
        pub.close()
