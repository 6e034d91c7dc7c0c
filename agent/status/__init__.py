"""The agent's state over MQTT (paho-mqtt, callback API v2).

Topics, under ``<topic_prefix>/<device_id>/``:

- ``availability``: retained ``online`` on every (re)connect, ``offline`` as
  the last will (set before connecting) and on a clean stop;
- ``state``: retained JSON, the service's state (see :func:`~agent.status.payloads.state_payload`);
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


The package: :mod:`~agent.status.publisher` (:class:`StatusPublisher`,
the topics and paho's callbacks), :mod:`~agent.status.mqttclient` (the paho
client: settings, TLS, the quiet network thread, the reconnect policy) and
:mod:`~agent.status.payloads` (what goes out and what a command may be, as
pure functions). paho is imported only when a publisher is made.
"""

from __future__ import annotations

from agent.homeassistant import SensorInfo
from agent.status.mqttclient import (
    IDLE_WAKEUP,
    RECONNECT_MAX_DELAY,
    RECONNECT_MIN_DELAY,
    MqttSettings,
    _quiet_client_class,
    reconnect_policy,
)
from agent.status.payloads import ALLOWED_STATE_KEYS, COMMAND_MAX_BYTES, state_payload
from agent.status.publisher import (
    CLOSE_TIMEOUT,
    FIRST_CONNECT_JITTER,
    HA_REPUBLISH_SPREAD,
    StatusPublisher,
)

__all__ = [
    "StatusPublisher", "MqttSettings", "SensorInfo", "ALLOWED_STATE_KEYS",
    "RECONNECT_MIN_DELAY", "RECONNECT_MAX_DELAY", "FIRST_CONNECT_JITTER",
    "CLOSE_TIMEOUT", "IDLE_WAKEUP", "HA_REPUBLISH_SPREAD", "reconnect_policy",
    "state_payload", "COMMAND_MAX_BYTES", "_quiet_client_class",
]
