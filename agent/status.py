"""The agent's state over MQTT (paho-mqtt, callback API v2).

Topics, under ``<topic_prefix>/<device_id>/``:

- ``availability``: retained ``online`` on every (re)connect, ``offline`` as
  the last will (set before connecting) and on a clean stop;
- ``state``: retained JSON, the service's state (see :func:`state_payload`);
- ``readings``: retained JSON object of the latest value per sensor, for Home
  Assistant's sensor entities.

With ``homeassistant_discovery`` the discovery configs go to
``homeassistant/sensor/<device_id>/<object>/config`` (retained) on every
connect and again whenever Home Assistant says ``online`` on
``homeassistant/status``.

Everything here is asynchronous: ``connect_async`` plus paho's network
thread, so a broker that is down never blocks the caller. Only the last
state is kept; it is (re)published on every connect.

>>> publisher = StatusPublisher(config.mqtt, device_id="greenhouse-1")
>>> publisher.start(); publisher.publish_state({"state": "signed_in", ...})
>>> publisher.close()
"""

from __future__ import annotations

import json
import logging
import random
import re
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agent import __version__

__all__ = [
    "StatusPublisher", "MqttSettings", "SensorInfo", "ALLOWED_STATE_KEYS",
    "RECONNECT_MIN_DELAY", "RECONNECT_MAX_DELAY", "FIRST_CONNECT_JITTER",
    "CLOSE_TIMEOUT", "IDLE_WAKEUP",
]

log = logging.getLogger(__name__)

RECONNECT_MIN_DELAY = 1          # seconds before the first reconnect; paho doubles it
RECONNECT_MAX_DELAY = 120        # seconds, the ceiling of paho's backoff
FIRST_CONNECT_JITTER = 2.0       # seconds: a fleet that boots together spreads its connects
CLOSE_TIMEOUT = 3.0              # seconds to wait for "offline" to leave on close()
IDLE_WAKEUP = 30.0               # seconds paho's network thread may sleep when idle
HA_PREFIX = "homeassistant"      # Home Assistant's default discovery prefix

# The keys a state payload may carry. Anything else (a token, a device code)
# is dropped before publishing, whatever the caller passed.
ALLOWED_STATE_KEYS = frozenset({
    "state", "since", "profile", "account", "outbox_depth", "dropped",
    "last_upload", "last_error", "version", "verification_uri", "expires_at",
    "user_code", "device_id", "sensor_failures",
    "token_request",        # a program asked the token service while not signed in
})   # (not mqtt_connected: over MQTT it would only ever say a stale "false")


class MqttSettings(Protocol):
    """What the publisher needs from ``[mqtt]`` (``agent.config.MqttConfig``)."""

    host: str
    port: int
    tls: bool
    username: str | None
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    topic_prefix: str
    homeassistant_discovery: bool
    publish_user_code: bool
    keepalive: int

    def password(self) -> str | None:
        """The password, read from ``password_file``."""


@dataclass(frozen=True)
class SensorInfo:
    """One configured sensor, for a Home Assistant entity."""

    name: str                   # the reading's ``sensor`` field
    unit: str | None = None


def _idle_timeout(keepalive: int) -> float:
    # paho checks whether a PINGREQ is due only when select returns: a
    # quarter of the keepalive keeps the ping well inside the broker's 1.5x.
    return max(1.0, min(IDLE_WAKEUP, keepalive / 4))


def _quiet_client_class(base: type, timeout: float) -> type:
    """paho's Client whose network thread sleeps up to *timeout* s, not 1 s.

    ``loop_start`` runs ``loop_forever()`` with paho's default select
    timeout of one second: 60 wakeups a minute on an idle board. Publishing
    from another thread wakes that select through paho's socket pair, and
    keepalive pings only need a check every quarter keepalive, so a longer timeout costs
    little. ``_thread_main`` is paho 2.x's thread body; without it (another
    paho version) the stock client is used.
    """
    if not hasattr(base, "_thread_main"):
        return base

    class QuietClient(base):  # type: ignore[misc, valid-type]
        def _thread_main(self) -> None:
            try:
                self.loop_forever(timeout=timeout, retry_first_connection=True)
            finally:
                self._thread = None

    return QuietClient


def _object_id(name: str) -> str:
    # Home Assistant accepts [a-zA-Z0-9_-] in the object id of a topic.
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name) or "sensor"


class StatusPublisher:
    """Publishes availability, state and readings; reconnects by itself.

    ``on_connection_change(connected: bool)`` is called from paho's network
    thread; keep it short (the service posts an event to its queue).
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        device_id: str,
        sensors: Sequence[SensorInfo] = (),
        version: str = __version__,
        on_connection_change: Callable[[bool], None] | None = None,
        first_connect_jitter: float = FIRST_CONNECT_JITTER,
        reconnect_delay: tuple[int, int] = (RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY),
    ) -> None:
        self.settings = settings
        self.device_id = device_id
        self.sensors = list(sensors)
        self.version = version
        self._on_connection_change = on_connection_change
        self._first_connect_jitter = max(0.0, first_connect_jitter)
        self._reconnect_delay = reconnect_delay
        prefix = settings.topic_prefix.strip("/")
        self.base_topic = f"{prefix}/{device_id}"
        self.availability_topic = f"{self.base_topic}/availability"
        self.state_topic = f"{self.base_topic}/state"
        self.readings_topic = f"{self.base_topic}/readings"
        self._lock = threading.Lock()
        self._state: dict[str, Any] | None = None
        self._readings: dict[str, Any] | None = None
        self._connected = False
        self._closed = threading.Event()
        self._starter: threading.Thread | None = None
        self._client = self._make_client()

    # -- setup -------------------------------------------------------------

    def _make_client(self):  # -> paho.mqtt.client.Client
        # Imported here: the agent without [mqtt] never loads paho.
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        s = self.settings
        client = _quiet_client_class(mqtt.Client, _idle_timeout(s.keepalive))(
            CallbackAPIVersion.VERSION2, client_id=f"entra-agent-{self.device_id}")
        # The will must be set before connecting; the broker sends it when
        # the agent vanishes without saying goodbye (crash, SIGKILL, power).
        client.will_set(self.availability_topic, "offline", qos=1, retain=True)
        if s.username:
            client.username_pw_set(s.username, s.password())
        if s.tls:
            # No ca_file: the system's trusted CAs. The broker's name is checked.
            client.tls_set(
                ca_certs=str(s.ca_file) if s.ca_file else None,
                certfile=str(s.cert_file) if s.cert_file else None,
                keyfile=str(s.key_file) if s.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.reconnect_delay_set(*self._reconnect_delay)
        # Bounded: during a long outage paho must not hoard messages.
        client.max_queued_messages_set(100)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.message_callback_add(f"{HA_PREFIX}/status", self._handle_ha_status)
        return client

    def start(self) -> None:
        """Begin connecting in the background (never blocks on the broker)."""
        if self._starter is not None:
            return
        delay = random.uniform(0.0, self._first_connect_jitter)

        def begin() -> None:
            if self._closed.wait(delay):
                return
            try:
                self._client.connect_async(self.settings.host, self.settings.port,
                                           keepalive=self.settings.keepalive)
                self._client.loop_start()
            except (OSError, ValueError) as exc:
                log.warning("MQTT: cannot start connecting to %s:%s: %s",
                            self.settings.host, self.settings.port, exc)

        self._starter = threading.Thread(target=begin, name="mqtt-start", daemon=True)
        self._starter.start()

    # -- paho callbacks (network thread) -----------------------------------

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            # Bad credentials, not authorised...: paho retries with backoff.
            log.warning("MQTT: broker %s:%s refused the connection: %s",
                        self.settings.host, self.settings.port, reason_code)
            return
        log.info("MQTT: connected to %s:%s", self.settings.host, self.settings.port)
        with self._lock:
            self._connected = True
            client.publish(self.availability_topic, "online", qos=1, retain=True)
            if self.settings.homeassistant_discovery:
                client.subscribe(f"{HA_PREFIX}/status", qos=1)
                self._publish_discovery_locked()
            if self._readings is not None:
                self._publish_locked(self.readings_topic, self._readings)
            if self._state is not None:
                self._publish_locked(self.state_topic, self._state)
        self._notify_change(True)

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            was = self._connected
            self._connected = False
        if was and self._closed.is_set():
            # Our own goodbye (close()): nothing lost, nothing to reconnect.
            log.info("MQTT: disconnected from %s:%s", self.settings.host, self.settings.port)
            self._notify_change(False)
        elif was:
            log.warning("MQTT: disconnected from %s:%s (%s); reconnecting",
                        self.settings.host, self.settings.port, reason_code)
            self._notify_change(False)

    def _handle_ha_status(self, client, userdata, message) -> None:
        if message.payload.strip().lower() == b"online" and self.settings.homeassistant_discovery:
            # Home Assistant restarted: it has forgotten non-retained state.
            with self._lock:
                self._publish_discovery_locked()
                if self._state is not None:
                    self._publish_locked(self.state_topic, self._state)

    def _notify_change(self, connected: bool) -> None:
        if self._on_connection_change is None:
            return
        try:
            self._on_connection_change(connected)
        except Exception:  # noqa: BLE001 - a callback bug must not kill paho's thread
            log.exception("MQTT: connection-change callback failed")

    # -- publishing --------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """True while the broker connection is up."""
        with self._lock:
            return self._connected

    def publish_state(self, state: Mapping[str, Any]) -> None:
        """Publish *state* (retained JSON on ``.../state``), now or on connect.

        Only :data:`ALLOWED_STATE_KEYS` are sent; ``user_code`` only when
        ``publish_user_code`` is true. ``version`` is filled in.
        """
        payload = {k: v for k, v in state.items() if k in ALLOWED_STATE_KEYS}
        if not self.settings.publish_user_code:
            payload.pop("user_code", None)
        payload.setdefault("version", self.version)
        with self._lock:
            self._state = payload
            if self._connected:
                self._publish_locked(self.state_topic, payload)

    def publish_readings(self, values: Mapping[str, float],
                         units: Mapping[str, str | None] | None = None) -> None:
        """Publish the latest value per sensor (retained JSON on ``.../readings``).

        A reading name not configured as such (a sensor with several values,
        e.g. two DS18B20 as ``ds18b20.28-...``) gets its own Home Assistant
        entity the first time it is seen; *units* gives its unit.
        """
        with self._lock:
            merged = dict(self._readings or {})
            merged.update(values)
            self._readings = merged
            known = {s.name for s in self.sensors}
            new = [SensorInfo(name, (units or {}).get(name)) for name in values if name not in known]
            self.sensors.extend(new)
            if self._connected:
                if new and self.settings.homeassistant_discovery:
                    self._publish_discovery_locked(new)
                self._publish_locked(self.readings_topic, merged)

    def _publish_locked(self, topic: str, payload: Mapping[str, Any]) -> None:
        # QoS 0 on purpose: paho keeps QoS 1 messages published while the link
        # was dying and resends them *after* on_connect's fresh state, which
        # would leave a stale retained state. The current state is republished
        # on every connect instead.
        self._client.publish(topic, json.dumps(payload, separators=(",", ":"), sort_keys=True),
                             qos=0, retain=True)

    def _publish_discovery_locked(self, only: Sequence[SensorInfo] | None = None) -> None:
        device = {
            "identifiers": [f"entra-agent-{self.device_id}"],
            "name": self.device_id,
            "sw_version": self.version,
            "manufacturer": "entra-device-agent",
        }
        common = {
            "availability_topic": self.availability_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
        }
        configs: dict[str, dict[str, Any]] = {} if only is not None else {
            "state": {
                **common,
                "name": "State",
                "unique_id": f"{self.device_id}_state",
                "state_topic": self.state_topic,
                "value_template": "{{ value_json.state }}",
                "json_attributes_topic": self.state_topic,
                "icon": "mdi:account-key",
            },
        }
        for sensor in self.sensors if only is None else only:
            oid = _object_id(sensor.name)
            config = {
                **common,
                "name": sensor.name,
                "unique_id": f"{self.device_id}_{oid}",
                "state_topic": self.readings_topic,
                "value_template": "{{ value_json['%s'] }}" % sensor.name.replace("'", ""),
            }
            if sensor.unit:
                config["unit_of_measurement"] = sensor.unit
                config["state_class"] = "measurement"
            configs[oid] = config
        for oid, config in configs.items():
            topic = f"{HA_PREFIX}/sensor/{_object_id(self.device_id)}/{oid}/config"
            self._client.publish(topic, json.dumps(config, separators=(",", ":")), qos=1, retain=True)

    # -- stopping ----------------------------------------------------------

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Publish ``offline`` (retained), wait up to *timeout* s for it, disconnect.

        A clean disconnect makes the broker discard the will, so the agent
        says ``offline`` itself.
        """
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            connected = self._connected
        if connected:
            info = self._client.publish(self.availability_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("MQTT: could not publish offline: %s", exc)
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            with self._lock:
                self._connected = False
