"""The publisher: availability, state and readings over MQTT, reconnecting by itself.

See :mod:`agent.status` for the topics and the fleet behaviour.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.backoff import MQTT_RECONNECT, Backoff, Retry
from agent.clock import Clock, SystemClock
from agent.config.values import MqttConfig
from agent.homeassistant import (
    COMMAND_NEW_CODE,
    COMMAND_SIGN_OUT,
    DeviceInfo,
    SensorInfo,
    board_device,
)
from agent.status.announcements import Announcements
from agent.status.mqttclient import MqttSettings, make_client
from agent.status.payloads import json_payload, parse_command, state_payload

__all__ = ["CLOSE_TIMEOUT", "FIRST_CONNECT_JITTER", "HA_REPUBLISH_SPREAD", "StatusPublisher"]

log = logging.getLogger(__name__)

FIRST_CONNECT_JITTER = MqttConfig.connect_spread   # seconds: a fleet that boots together spreads its connects
HA_REPUBLISH_SPREAD = 5.0        # seconds over which a Home Assistant restart's republish is spread
CLOSE_TIMEOUT = 3.0              # seconds to wait for "offline" to leave on close()


class StatusPublisher:
    """Publishes availability, state and readings; reconnects by itself.

    ``on_connection_change(connected: bool)`` is called from paho's network
    thread; keep it short (the service posts an event to its queue).
    *first_connect_jitter*: seconds over which the first connect is spread;
    *reconnect*: the retry policy between connection attempts
    (:func:`reconnect_policy`); *clock* and *rng* are injected by tests and
    the fleet bench.
    ``on_command(command: str)`` likewise, for a Home Assistant button
    press (``new_code`` or ``sign_out``, only those enabled in the config).
    *announced_path* keeps the record of announced discovery configs
    (None: kept in memory only); *device* describes the board (default:
    from ``/proc/device-tree/model``).
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
        reconnect: Backoff = MQTT_RECONNECT,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_command: Callable[[str], None] | None = None,
        announced_path: Path | None = None,
        device: DeviceInfo | None = None,
    ) -> None:
        self.settings = settings
        self.device_id = device_id
        self.sensors = list(sensors)
        self.version = version
        self._on_command = on_command
        self.commands = frozenset(
            c for c, on in ((COMMAND_NEW_CODE, settings.homeassistant_new_code_button),
                            (COMMAND_SIGN_OUT, settings.homeassistant_sign_out_button))
            if on and settings.homeassistant_discovery)
        self._on_connection_change = on_connection_change
        self._first_connect_jitter = max(0.0, first_connect_jitter)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._rng = rng if rng is not None else random.Random()
        self._reconnect = Retry(reconnect, rng=self._rng)   # used on paho's thread only
        self._republish_pending = False
        prefix = settings.topic_prefix.strip("/")
        self.base_topic = f"{prefix}/{device_id}"
        self.availability_topic = f"{self.base_topic}/availability"
        self.state_topic = f"{self.base_topic}/state"
        self.readings_topic = f"{self.base_topic}/readings"
        self.command_topic = f"{self.base_topic}/command"
        self.ha_prefix = settings.homeassistant_prefix
        self._announcements = Announcements(
            device or board_device(device_id, version), topic_prefix=settings.topic_prefix,
            device_id=device_id, sensors=self.sensors, prefix=settings.homeassistant_prefix,
            publish_user_code=settings.publish_user_code, commands=self.commands,
            path=announced_path)
        self._lock = threading.Lock()
        self._state: dict[str, Any] | None = None
        self._readings: dict[str, Any] | None = None
        self._connected = False
        self._closed = threading.Event()
        self._starter: threading.Thread | None = None
        self._client = self._make_client()

    # -- setup -------------------------------------------------------------

    def _make_client(self) -> Any:  # -> paho.mqtt.client.Client
        client = make_client(self.settings, client_id=f"entra-agent-{self.device_id}",
                             will_topic=self.availability_topic,
                             reconnect_wait=self._reconnect_wait, reconnect=self._reconnect.policy)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.message_callback_add(f"{self.ha_prefix}/status", self._handle_ha_status)
        client.message_callback_add(self.command_topic, self._handle_command)
        return client

    def start(self) -> None:
        """Begin connecting in the background (never blocks on the broker)."""
        if self._starter is not None:
            return
        delay = self._rng.uniform(0.0, self._first_connect_jitter)

        def begin() -> None:
            if self._clock.wait(delay, self._closed):
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

    def _reconnect_wait(self) -> None:
        delay = self._reconnect.next_delay()
        log.debug("MQTT: next connection attempt in %.1f s", delay)
        self._clock.wait(delay, self._closed)

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            # Bad credentials, not authorised...: paho retries with backoff.
            log.warning("MQTT: broker %s:%s refused the connection: %s",
                        self.settings.host, self.settings.port, reason_code)
            return
        log.info("MQTT: connected to %s:%s", self.settings.host, self.settings.port)
        self._reconnect.reset()
        with self._lock:
            self._connected = True
            client.publish(self.availability_topic, "online", qos=1, retain=True)
            if self.settings.homeassistant_discovery:
                client.subscribe(f"{self.ha_prefix}/status", qos=1)
                if self.commands:
                    client.subscribe(self.command_topic, qos=1)
            self._announcements.on_connect(client, self.settings.homeassistant_discovery)
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
            # Every device hears this at once: spread the republish.
            with self._lock:
                if self._republish_pending:
                    return
                self._republish_pending = True
            delay = self._rng.uniform(0.0, HA_REPUBLISH_SPREAD)
            threading.Thread(target=self._republish_for_ha, args=(delay,),
                             name="mqtt-ha-republish", daemon=True).start()

    def _republish_for_ha(self, delay: float) -> None:
        if self._clock.wait(delay, self._closed):
            return
        with self._lock:
            self._republish_pending = False
            if self._connected:
                self._announcements.publish(self._client, self._announcements.discovery.connect())
                if self._state is not None:
                    self._publish_locked(self.state_topic, self._state)

    def _handle_command(self, client, userdata, message) -> None:
        if message.retain:
            # A retained command (left by someone on the broker) would act on
            # every connect: only a live press counts.
            log.warning("MQTT: ignoring a retained message on %s", self.command_topic)
            return
        command = parse_command(message.payload, self.commands)
        if command is None:
            log.warning("MQTT: ignoring a command on %s that is not enabled or not known "
                        "(%d bytes)", self.command_topic, len(message.payload))
            return
        log.info("MQTT: %s pressed in Home Assistant", command)
        if self._on_command is None:
            return
        try:
            self._on_command(command)
        except Exception:  # noqa: BLE001 - a callback bug must not kill paho's thread
            log.exception("MQTT: command callback failed")

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

        Only :data:`~agent.status.payloads.ALLOWED_STATE_KEYS` are sent; ``user_code`` only when
        ``publish_user_code`` is true. ``version`` is filled in.
        """
        payload = state_payload(state, publish_user_code=self.settings.publish_user_code,
                                version=self.version)
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
            if self.settings.homeassistant_discovery:
                self._announcements.readings(self._client, values, units, connected=self._connected)
            if self._connected:
                self._publish_locked(self.readings_topic, merged)

    def _publish_locked(self, topic: str, payload: Mapping[str, Any]) -> None:
        # QoS 0 on purpose: paho keeps QoS 1 messages published while the link
        # was dying and resends them *after* on_connect's fresh state, which
        # would leave a stale retained state. The current state is republished
        # on every connect instead.
        self._client.publish(topic, json_payload(payload), qos=0, retain=True)

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
