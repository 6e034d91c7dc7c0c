"""Fixtures for MQTT: a real Mosquitto broker on loopback, and a subscriber.

``mosquitto`` starts the real ``mosquitto`` binary with a generated config
(a free port on 127.0.0.1, anonymous, no persistence) and yields a
:class:`Broker` with ``host``, ``port``, ``restart()`` and ``stop()``.
``mqtt_subscriber`` returns a factory of :class:`Subscriber`, a paho client
that records every message (with its retained flag) and can
``wait_for(topic, predicate, timeout)``. :func:`mqtt_settings` is the
``[mqtt]`` table the publisher is given, as ``agent.config`` builds it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from agent.config import MqttConfig

STARTUP_TIMEOUT = 10.0      # seconds for mosquitto to accept connections


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def mqtt_settings(host: str, port: int, *, password: str | None = None, folder: Path | None = None,
                  **options: Any) -> MqttConfig:
    """The real :class:`agent.config.MqttConfig` for *host*:*port* (the other keys from *options*).

    A *password* is written to a private file in *folder* (``password_file``,
    as on a board); ``ca_file``, ``cert_file`` and ``key_file`` may be strings.
    """
    if password is not None:
        if folder is None:
            raise ValueError("a password needs a folder for its password_file")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "mqtt-password"
        path.write_text(password, encoding="utf-8")
        path.chmod(0o600)
        options["password_file"] = path
    for key in ("ca_file", "cert_file", "key_file"):
        if isinstance(options.get(key), str):
            options[key] = Path(options[key])
    return MqttConfig(host=host, port=port, **options)


class Broker:
    """A mosquitto process on 127.0.0.1 that can be stopped and restarted."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path, port: int | None = None, *, extra_config: str = "",
                 anonymous: bool = True) -> None:
        binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if binary is None:
            pytest.fail("the mosquitto broker is not installed (apt-get install mosquitto)")
        self.binary: str = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"allow_anonymous {'true' if anonymous else 'false'}\n"
            "persistence false\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            # As root, mosquitto switches to user "mosquitto", which cannot
            # read pytest's private folders (log, certificates, passwords).
            + ("user root\n" if os.geteuid() == 0 else "")
            + extra_config
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start mosquitto and wait until the port accepts connections."""
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                pytest.fail(f"mosquitto exited at start: {err.strip()}")
            if _accepts(self.host, self.port):
                return
            time.sleep(0.05)
        pytest.fail(f"mosquitto did not listen on {self.host}:{self.port} within {STARTUP_TIMEOUT}s")

    def stop(self) -> None:
        """Stop mosquitto (retained messages are lost: persistence is off)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass(frozen=True)
class Message:
    """One message a subscriber received."""

    topic: str
    payload: bytes
    retain: bool
    qos: int

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A paho client that records messages on its subscriptions."""

    def __init__(self, host: str, port: int, topics: list[str], *, tls: dict | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._topics = topics
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.reconnect_delay_set(1, 1)
        if tls is not None:
            self.client.tls_set(**tls)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("test subscriber could not subscribe")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))
            self._cond.notify_all()

    def on(self, topic: str) -> list[Message]:
        """Messages received on *topic*, in order."""
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, topic: str, predicate: Callable[[Message], bool] = lambda m: True,
                 timeout: float = 10.0) -> Message:
        """The first message on *topic* matching *predicate*; fails after *timeout* s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages:
                    if m.topic == topic and predicate(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(m.topic, m.text[:200]) for m in self.messages[-10:]]
                    raise AssertionError(f"no matching message on {topic} within {timeout}s; last: {seen}")
                self._cond.wait(left)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mosquitto(tmp_path_factory):
    """A real mosquitto broker on 127.0.0.1 for one test."""
    broker = Broker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mqtt_subscriber():
    """Factory: ``mqtt_subscriber(broker, ["prefix/#"])`` -> a recording :class:`Subscriber`."""
    made: list[Subscriber] = []

    def make(broker: Broker, topics: list[str], **options) -> Subscriber:
        sub = Subscriber(broker.host, broker.port, topics, **options)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


def make_certificates(folder: Path) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed (apt-get install openssl)")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=entra-agent test CA",
        "-keyout", "ca.key", "-out", "ca.crt")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn, ext in (("server", "127.0.0.1", ["-extfile", "san.ext"]), ("client", "dev-1", [])):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-out", f"{name}.crt", *ext)
    for key in folder.glob("*.key"):
        key.chmod(0o600)
    return {name: folder / name for name in
            ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


@pytest.fixture
def mosquitto_tls(tmp_path_factory):
    """mosquitto with TLS, client certificates and a password file (user dev-1, password s3cret-pw)."""
    work = tmp_path_factory.mktemp("mosquitto-tls")
    certs = make_certificates(work / "certs")
    passwords = work / "passwords"
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    subprocess.run([tool, "-b", "-c", str(passwords), "dev-1", "s3cret-pw"], check=True,
                   capture_output=True)
    broker = Broker(work, anonymous=False, extra_config=(
        f"cafile {certs['ca.crt']}\ncertfile {certs['server.crt']}\nkeyfile {certs['server.key']}\n"
        f"require_certificate true\npassword_file {passwords}\n"))
    broker.certs = certs
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
