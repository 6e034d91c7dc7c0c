"""The agent end to end, in real time: sandbox IdP, receiver, a real mosquitto broker.

Some tests run the service in a thread of this process; the others run
``python -m agent run --config ...`` as a subprocess and send it SIGKILL or
SIGTERM, as systemd (or a power cut) would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent import paths
from agent.assembly import build_service
from agent.auth.tokens import TokenClient
from agent.clock import SystemClock
from agent.config import load_config
from agent.notify import Notifier
from agent.profiles import Profile, ProfileStore
from agent.service import AWAITING_USER, SIGN_IN_REQUIRED, SIGNED_IN, Service
from agent.tokenstore import TokenStore

CLIENT_ID = "00000000-0000-0000-0000-000000000001"
DEVICE = "dev-e2e"
BASE = f"entra-agent/{DEVICE}"


def wait_for(predicate, timeout=15.0, every=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())


def write_files(idp, receiver, broker=None, *, interval=1, extra="") -> Path:
    """Profile and agent.toml in the agent_dirs folders; returns the config path."""
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    store = ProfileStore(paths.profiles_file())
    if "default" not in store.names():
        store.save(Profile(name="default", client_id=CLIENT_ID, tenant_id="organizations",
                           authority_host=idp.base_url))
    mqtt = (f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nkeepalive = 5\n'
            'connect_spread = 0\nreconnect_spread = 2\n'
            if broker is not None else "")
    config = paths.config_dir() / "agent.toml"
    config.write_text(
        f'device_id = "{DEVICE}"\n'
        f'[telemetry]\nendpoint = "{receiver.url}"\ninterval = {interval}\njitter = false\n'
        '[[sensors]]\ntype = "uptime"\n[[sensors]]\ntype = "load_average"\n'
        '[display]\ndriver = "console"\n'
        f"{mqtt}{extra}")
    return config


def states_on(sub) -> list[str]:
    """The state values seen on .../state, consecutive repeats folded."""
    seen: list[str] = []
    for message in sub.on(f"{BASE}/state"):
        state = message.json()["state"]
        if not seen or seen[-1] != state:
            seen.append(state)
    return seen


def retained(mqtt_subscriber, broker, topic: str):
    """What the broker keeps on *topic* (a fresh subscriber gets it with retain=1)."""
    message = mqtt_subscriber(broker, [topic]).wait_for(topic)
    assert message.retain
    return message


def start_agent(config: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("DEBUG", None)
    with open(log, "ab") as err:
        return subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                env=env, cwd=str(config.parent))


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@pytest.fixture
def service_in_thread(agent_dirs):
    started: list[tuple[Service, threading.Thread]] = []

    def start(config_path: Path, clock=None) -> Service:
        clock = clock or SystemClock()
        config = load_config(config_path)
        store = ProfileStore(paths.profiles_file())
        client = TokenClient(store.get("default"), store=TokenStore(paths.token_dir()), clock=clock)
        import io

        from agent.ui import ConsolePresenter
        service = build_service(config, clock=clock, token_client=client,
                                presenter=ConsolePresenter(io.StringIO()), notifier=Notifier(None))
        thread = threading.Thread(target=service.run, name="agent-under-test")
        thread.start()
        started.append((service, thread))
        return service

    yield start
    for service, thread in started:
        service.stop()
        thread.join(15)


@pytest.mark.slow
def test_sign_in_telemetry_refresh_revoke_sign_in_again_on_mqtt(
        service_in_thread, idp_realtime, receiver_realtime, mosquitto, mqtt_subscriber, caplog):
    caplog.set_level("DEBUG")
    idp = idp_realtime
    idp.access_token_lifetime = 8            # refresh every ~6 s (a quarter as margin)
    sub = mqtt_subscriber(mosquitto, [f"{BASE}/#", "homeassistant/#"])
    service = service_in_thread(write_files(idp, receiver_realtime, mosquitto,
                                            extra="homeassistant_discovery = true\n"))

    sub.wait_for(f"{BASE}/state", lambda m: m.json()["state"] == AWAITING_USER, timeout=20)
    # Home Assistant: one entity per configured sensor, one for the state.
    uptime = sub.wait_for(f"homeassistant/sensor/{DEVICE}/uptime/config").json()
    assert uptime["unit_of_measurement"] == "s" and uptime["state_topic"] == f"{BASE}/readings"
    sub.wait_for(f"homeassistant/sensor/{DEVICE}/load_average/config")
    assert sub.wait_for(f"homeassistant/sensor/{DEVICE}/state/config").json()["device"]["name"] == DEVICE
    waiting = [m for m in sub.on(f"{BASE}/state") if m.json()["state"] == AWAITING_USER][-1].json()
    assert waiting["verification_uri"] == idp.verification_uri
    assert waiting["expires_at"].endswith("Z")
    assert "user_code" not in waiting                    # publish_user_code is off
    idp.approve()
    sub.wait_for(f"{BASE}/state", lambda m: m.json()["state"] == SIGNED_IN)
    assert receiver_realtime.wait_for(4, 15)              # readings flow
    assert wait_for(lambda: idp.counts["token.refresh_token"] >= 1, 20)   # refreshed before expiry
    accepted = len(receiver_realtime.unique_ids)
    assert receiver_realtime.wait_for(accepted + 4, 15)   # with the new token

    idp.revoke_refresh_tokens()                           # the next refresh is refused for good
    assert wait_for(lambda: service.history.count(AWAITING_USER) == 2, 20)
    idp.approve()
    assert wait_for(lambda: service.history.count(SIGNED_IN) == 2, 20)
    sub.wait_for(f"{BASE}/state", lambda m: m.json()["state"] == SIGNED_IN
                 and len([s for s in states_on(sub) if s == SIGNED_IN]) == 2)

    seen = states_on(sub)
    start = seen.index(AWAITING_USER)
    assert seen[start:] == [AWAITING_USER, SIGNED_IN, SIGN_IN_REQUIRED, AWAITING_USER, SIGNED_IN]
    # (Live deliveries carry retain=0 in MQTT 3.1.1; the late subscriber below
    # proves the broker kept the state.)
    assert sub.on(f"{BASE}/availability")[0].text == "online"

    # A late subscriber gets the current state, retained.
    late = mqtt_subscriber(mosquitto, [f"{BASE}/state"])
    current = late.wait_for(f"{BASE}/state")
    assert current.retain and current.json()["state"] == SIGNED_IN
    assert current.json()["account"] == "ada@contoso.example"

    # Nothing secret on MQTT, in the logs or in status.json.
    service.stop()
    assert wait_for(lambda: service.finished, 15)
    payloads = "".join(m.text for m in sub.messages)
    haystack = payloads + caplog.text + paths.status_file().read_text()
    for secret in idp.issued_secrets():
        assert secret not in haystack
    sub.wait_for(f"{BASE}/availability", lambda m: m.text == "offline")
    assert retained(mqtt_subscriber, mosquitto, f"{BASE}/availability").text == "offline"


@pytest.mark.slow
def test_broker_down_and_back_does_not_touch_telemetry(
        service_in_thread, idp_realtime, receiver_realtime, mosquitto, mqtt_subscriber):
    idp_realtime.auto_approve_after_polls = 0
    service = service_in_thread(write_files(idp_realtime, receiver_realtime, mosquitto))
    assert wait_for(lambda: service.state == SIGNED_IN and service.mqtt_connected, 20)
    assert receiver_realtime.wait_for(2, 10)

    mosquitto.stop()
    assert wait_for(lambda: service.mqtt_connected is False, 15)
    during = len(receiver_realtime.unique_ids)
    assert receiver_realtime.wait_for(during + 6, 15)      # uploads go on without the broker
    assert service.state == SIGNED_IN

    mosquitto.start()                                        # same port, no retained messages
    assert wait_for(lambda: service.mqtt_connected, 20)
    sub = mqtt_subscriber(mosquitto, [f"{BASE}/#"])
    assert sub.wait_for(f"{BASE}/availability").text == "online"
    assert sub.wait_for(f"{BASE}/state").json()["state"] == SIGNED_IN
    # Republished on reconnect and kept by the (restarted, empty) broker.
    assert retained(mqtt_subscriber, mosquitto, f"{BASE}/state").json()["state"] == SIGNED_IN


@pytest.mark.slow
def test_sigkill_leaves_the_last_will_sigterm_says_offline_and_exits_0(
        agent_dirs, idp_realtime, receiver_realtime, mosquitto, mqtt_subscriber, tmp_path):
    idp = idp_realtime
    config = write_files(idp, receiver_realtime, mosquitto)
    sub = mqtt_subscriber(mosquitto, [f"{BASE}/#"])
    log = tmp_path / "agent.log"
    proc = start_agent(config, log)
    try:
        idp.wait_for_code(20)
        idp.approve()
        sub.wait_for(f"{BASE}/state", lambda m: m.json()["state"] == SIGNED_IN, timeout=20)
        assert receiver_realtime.wait_for(2, 15)
        status = json.loads(paths.status_file().read_text())
        assert status["state"] == SIGNED_IN and status["pid"] == proc.pid

        os.kill(proc.pid, signal.SIGKILL)                  # power cut, OOM killer...
        proc.wait(10)
        sub.wait_for(f"{BASE}/availability", lambda m: m.text == "offline", timeout=15)
        assert retained(mqtt_subscriber, mosquitto, f"{BASE}/availability").text == "offline"

        # Restarted: signed in from the saved token, online again.
        before = len(sub.on(f"{BASE}/availability"))
        proc = start_agent(config, log)
        sub.wait_for(f"{BASE}/availability",
                     lambda m: m.text == "online" and len(sub.on(f"{BASE}/availability")) > before,
                     timeout=20)
        assert wait_for(lambda: json.loads(paths.status_file().read_text()).get("pid") == proc.pid)
        assert idp.counts["devicecode"] == 1                # no second sign-in

        sent = len(receiver_realtime.unique_ids)
        assert receiver_realtime.wait_for(sent + 2, 15)
        count = len(sub.on(f"{BASE}/availability"))
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        stop_seconds = time.monotonic() - started
        sub.wait_for(f"{BASE}/availability",
                     lambda m: m.text == "offline" and len(sub.on(f"{BASE}/availability")) > count)
        assert retained(mqtt_subscriber, mosquitto, f"{BASE}/availability").text == "offline"
        final = json.loads(paths.status_file().read_text())
        assert final["state"] == "stopped" and final["pid"] is None
        assert stop_seconds < 10                            # "within a few seconds" (a bound, not a speed claim)
    finally:
        stop_process(proc)
    text = log.read_text()
    assert "Traceback" not in text
    for secret in idp.issued_secrets():
        assert secret not in text
    for message in sub.messages:
        for secret in idp.issued_secrets():
            assert secret not in message.text


def test_status_command_reads_the_running_agents_state(
        agent_dirs, idp_realtime, receiver_realtime, tmp_path, capsys):
    from agent.__main__ import main

    assert main(["status"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("entra-agent: error: no status file at ") and "not running" in err
    assert "Traceback" not in err

    idp_realtime.auto_approve_after_polls = 0
    config = write_files(idp_realtime, receiver_realtime)
    proc = start_agent(config, tmp_path / "agent.log")
    try:
        assert wait_for(lambda: paths.status_file().exists() and json.loads(
            paths.status_file().read_text())["state"] == SIGNED_IN, 20)
        assert main(["status"]) == 0
        out = capsys.readouterr().out
        assert "state:        signed_in" in out
        assert "account:      ada@contoso.example" in out
        assert f"device:       {DEVICE}" in out
        assert main(["status", "--output", "json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["state"] == SIGNED_IN and data["running"] is True and data["pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        stop_process(proc)
    assert main(["status"]) == 1
    captured = capsys.readouterr()
    assert "state:        stopped" in captured.out
    assert "entra-agent: error: the agent is not running (last state: stopped" in captured.err


def test_systemd_notify_ready_status_watchdog_stopping(agent_dirs, idp_realtime, receiver_realtime, tmp_path):
    import socket as socketlib

    idp_realtime.auto_approve_after_polls = 0
    config = write_files(idp_realtime, receiver_realtime)
    address = str(tmp_path / "notify.sock")
    server = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM)
    server.bind(address)
    server.settimeout(20)
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    env.update(NOTIFY_SOCKET=address, WATCHDOG_USEC="1000000")   # ping every 0.5 s
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "agent.log", "wb"), env=env)
    got: list[str] = []
    try:
        def until(predicate):
            while not predicate():
                got.append(server.recv(4096).decode())

        until(lambda: "READY=1" in got)
        until(lambda: any(m.startswith("STATUS=signed in as ada@contoso.example") for m in got))
        count = got.count("WATCHDOG=1")
        until(lambda: got.count("WATCHDOG=1") >= count + 3)
        proc.send_signal(signal.SIGTERM)
        until(lambda: "STOPPING=1" in got)
        assert proc.wait(10) == 0
    finally:
        stop_process(proc)
        server.close()
    statuses = [m for m in got if m.startswith("STATUS=")]
    assert statuses[0] == "STATUS=starting"
    assert all("\n" not in m for m in statuses)
    assert got.index("READY=1") < got.index("STOPPING=1")


def test_mqtt_over_tls_from_the_config_file(service_in_thread, idp_realtime, receiver_realtime,
                                            mosquitto_tls, mqtt_subscriber, caplog):
    caplog.set_level("DEBUG")       # every level: the password is in none
    caplog.set_level("DEBUG", logger="agent")
    certs = mosquitto_tls.certs
    secret = paths.config_dir() / "mqtt-password"
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    secret.write_text("s3cret-pw\n")
    secret.chmod(0o600)
    idp_realtime.auto_approve_after_polls = 0
    config = write_files(idp_realtime, receiver_realtime, extra=(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto_tls.port}\ntls = true\nconnect_spread = 0\n'
        f'username = "dev-1"\npassword_file = "{secret}"\nca_file = "{certs["ca.crt"]}"\n'
        f'cert_file = "{certs["client.crt"]}"\nkey_file = "{certs["client.key"]}"\n'))
    service = service_in_thread(config)
    assert wait_for(lambda: service.state == SIGNED_IN and service.mqtt_connected, 20)
    sub = mqtt_subscriber(mosquitto_tls, [f"{BASE}/state"],
                          tls=dict(ca_certs=str(certs["ca.crt"]), certfile=str(certs["client.crt"]),
                                   keyfile=str(certs["client.key"])),
                          username="dev-1", password="s3cret-pw")
    assert sub.wait_for(f"{BASE}/state").json()["state"] == SIGNED_IN
    assert "mqtt" in caplog.text.lower()    # the log was captured at all
    assert "s3cret-pw" not in caplog.text
