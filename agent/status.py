"""The agent's state over MQTT (paho-mqtt, callback API v2).

Topics, under ``<topic_prefix>/<device_id>/``:

- ``availability``: retained ``online`` on every (re)connect, ``offline`` as
  the last will (set before connecting) and on a clean stop;
- ``state``: retained JSON, the service's state (see :func:`state_payload`);
- ``readings``: retained JSON object of the latest value per sensor, for Home
  Assistant's sensor entities.

With ``homeassistant_discovery`` the discovery configs built by
:mod:`agent.homeassistant` (what to send when: :mod:`agent.ha_discovery`) go to ``<homeassistant_prefix>/<component>/<device>/<object>/config``
(retained) on every connect and again whenever Home Assistant says
``online`` on ``<homeassistant_prefix>/status``; configs announced before
and no longer wanted are removed (empty retained payload; the record is
:mod:`agent.ha_announced`). With a Home Assistant button enabled, commands
arrive on ``command`` (not retained; see :data:`agent.homeassistant.COMMANDS`).

Everything here is asynchronous: ``connect_async`` plus paho's network
thread, so a broker that is down never blocks the caller. Only the last
state is kept; it is (re)published on every connect.

A fleet shares its broker, so nothing here is on a fixed schedule: the
first connect waits a random part of ``connect_spread`` seconds, and every
reconnect (and every retry of a failed connect) waits what the shared retry
policy (:mod:`agent.backoff`, full jitter, capped) draws, instead of paho's
deterministic doubling; a broker restart then brings a fleet of N back at
about N / ``reconnect_spread`` a second, not in one second. The republish
that Home Assistant's birth message asks for is spread over
:data:`HA_REPUBLISH_SPREAD` seconds.

>>> publisher = StatusPublisher(config.mqtt, device_id="greenhouse-1")
>>> publisher.start(); publisher.publish_state({"state": "signed_in", ...})
>>> publisher.close()
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from agent import __version__
from agent.backoff import MQTT_RECONNECT, Backoff, Retry
from agent.clock import Clock, SystemClock
from agent.errors import AgentError
from agent.ha_discovery import Discovery, Message
from agent.homeassistant import (
    COMMAND_NEW_CODE,
    COMMAND_SIGN_OUT,
    DeviceInfo,
    SensorInfo,
    board_device,
    topics_for,
)

__all__ = [
    "StatusPublisher", "MqttSettings", "SensorInfo", "ALLOWED_STATE_KEYS",
    "RECONNECT_MIN_DELAY", "RECONNECT_MAX_DELAY", "FIRST_CONNECT_JITTER",
    "CLOSE_TIMEOUT", "IDLE_WAKEUP", "HA_REPUBLISH_SPREAD", "reconnect_policy",
]

log = logging.getLogger(__name__)

RECONNECT_MIN_DELAY = MQTT_RECONNECT.minimum   # seconds: no reconnect comes sooner
RECONNECT_MAX_DELAY = MQTT_RECONNECT.cap       # seconds: no reconnect waits longer
FIRST_CONNECT_JITTER = 60.0      # seconds: a fleet that boots together spreads its connects
HA_REPUBLISH_SPREAD = 5.0        # seconds over which a Home Assistant restart's republish is spread
CLOSE_TIMEOUT = 3.0              # seconds to wait for "offline" to leave on close()
IDLE_WAKEUP = 30.0               # seconds paho's network thread may sleep when idle
COMMAND_MAX_BYTES = 32          # a longer command payload is not one of ours

# The keys a state payload may carry. Anything else (a token, a device code)
# is dropped before publishing, whatever the caller passed.
ALLOWED_STATE_KEYS = frozenset({
    "state", "since", "profile", "account", "outbox_depth", "dropped",
    "last_upload", "last_error", "version", "verification_uri", "expires_at",
    "user_code", "device_id", "sensor_failures", "storage", "token_expires_at",
    "sign_out_confirm_until",
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
    homeassistant_prefix: str
    homeassistant_new_code_button: bool
    homeassistant_sign_out_button: bool
    publish_user_code: bool
    keepalive: int

    def password(self) -> str | None:
        """The password, read from ``password_file``."""


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
        # pyproject pins paho-mqtt 2.x, and tests/test_status_mqtt.py checks
        # that this override is in use; say so should another paho be found.
        log.warning("MQTT: this paho-mqtt has no _thread_main; its network thread "
                    "wakes every second (install paho-mqtt 2.x)")
        return base

    class QuietClient(base):  # type: ignore[misc, valid-type]
        #: Called (on the network thread) instead of paho's deterministic
        #: doubling wait between connection attempts; set by StatusPublisher.
        agent_reconnect_wait: Callable[[], None] | None = None

        def _thread_main(self) -> None:
            try:
                self.loop_forever(timeout=timeout, retry_first_connection=True)
            finally:
                self._thread = None

        def _reconnect_wait(self) -> None:
            # paho 2.x calls this before every reconnect (and every retry of
            # the first connect); our wait is jittered and returns at once
            # when the publisher closes.
            if self.agent_reconnect_wait is None or not hasattr(base, "_reconnect_wait"):
                super()._reconnect_wait()
            else:
                self.agent_reconnect_wait()

    return QuietClient


def reconnect_policy(spread: float) -> Backoff:
    """The reconnect policy whose first window is *spread* seconds (see the module docstring)."""
    base = max(1.0, float(spread))
    return dataclasses.replace(MQTT_RECONNECT, base=base, cap=max(MQTT_RECONNECT.cap, base),
                               minimum=min(MQTT_RECONNECT.minimum, base))


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
        self._announced_path = announced_path
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
        self._discovery = self._make_discovery(device or board_device(device_id, version))
        self._lock = threading.Lock()
        self._state: dict[str, Any] | None = None
        self._readings: dict[str, Any] | None = None
        self._connected = False
        self._closed = threading.Event()
        self._starter: threading.Thread | None = None
        self._client = self._make_client()

    # -- setup -------------------------------------------------------------

    def _make_discovery(self, device: DeviceInfo) -> Discovery:
        from agent.ha_announced import load_announced

        s = self.settings
        record = load_announced(self._announced_path) if self._announced_path else None
        self._had_record = record is not None
        return Discovery(device, topics_for(s.topic_prefix, self.device_id),
                         sensors=self.sensors, prefix=s.homeassistant_prefix,
                         publish_user_code=s.publish_user_code,
                         new_code_button=COMMAND_NEW_CODE in self.commands,
                         sign_out_button=COMMAND_SIGN_OUT in self.commands,
                         announced=record)

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
        if hasattr(client, "agent_reconnect_wait"):
            client.agent_reconnect_wait = self._reconnect_wait
        else:   # another paho: its own doubling, within the policy's bounds
            policy = self._reconnect.policy
            client.reconnect_delay_set(max(1, int(policy.minimum)), max(1, int(policy.cap)))
        # Bounded: during a long outage paho must not hoard messages.
        client.max_queued_messages_set(100)
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
                self._publish_discovery_locked(self._discovery.connect())
            elif self._had_record and self._discovery.announced:
                # Discovery switched off: take back what an earlier run announced.
                self._publish_discovery_locked(self._discovery.remove_all())
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
                self._publish_discovery_locked(self._discovery.connect())
                if self._state is not None:
                    self._publish_locked(self.state_topic, self._state)

    def _handle_command(self, client, userdata, message) -> None:
        if message.retain:
            # A retained command (left by someone on the broker) would act on
            # every connect: only a live press counts.
            log.warning("MQTT: ignoring a retained message on %s", self.command_topic)
            return
        raw = bytes(message.payload[:COMMAND_MAX_BYTES + 1])
        command = raw.decode("ascii", "replace").strip()
        if command not in self.commands or len(raw) > COMMAND_MAX_BYTES:
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
            if self.settings.homeassistant_discovery:
                messages = self._discovery.readings(values, units, connected=self._connected)
                if messages:
                    self._publish_discovery_locked(messages)
            if self._connected:
                self._publish_locked(self.readings_topic, merged)

    def _publish_locked(self, topic: str, payload: Mapping[str, Any]) -> None:
        # QoS 0 on purpose: paho keeps QoS 1 messages published while the link
        # was dying and resends them *after* on_connect's fresh state, which
        # would leave a stale retained state. The current state is republished
        # on every connect instead.
        self._client.publish(topic, json.dumps(payload, separators=(",", ":"), sort_keys=True),
                             qos=0, retain=True)

    def _publish_discovery_locked(self, messages: Sequence[Message]) -> None:
        # Retained, QoS 1: Home Assistant reads them when it (re)starts.
        for message in messages:
            self._client.publish(message.topic, message.payload, qos=1, retain=True)
        if self._announced_path is not None:
            from agent.ha_announced import save_announced
            try:
                save_announced(self._announced_path, self._discovery.announced)
            except AgentError as exc:
                log.warning("%s", exc)

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
