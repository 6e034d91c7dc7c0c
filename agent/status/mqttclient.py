"""The paho client the publisher drives: settings, TLS, the will, the quiet thread.

paho-mqtt 2.x (callback API v2) is imported only by :func:`make_client`:
the agent without ``[mqtt]`` never loads it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol

from agent.backoff import MQTT_RECONNECT, Backoff

__all__ = [
    "IDLE_WAKEUP", "MqttSettings", "RECONNECT_MAX_DELAY", "RECONNECT_MIN_DELAY", "make_client",
    "reconnect_policy",
]

log = logging.getLogger(__name__)

RECONNECT_MIN_DELAY = MQTT_RECONNECT.minimum   # seconds: no reconnect comes sooner
RECONNECT_MAX_DELAY = MQTT_RECONNECT.cap       # seconds: no reconnect waits longer
IDLE_WAKEUP = 30.0               # seconds paho's network thread may sleep when idle
MAX_QUEUED = 100                 # messages paho may hold during an outage


class MqttSettings(Protocol):
    """What the publisher needs from ``[mqtt]`` (``agent.config.MqttConfig``).

    Read-only (a frozen dataclass satisfies it); the certificate paths may be
    strings or paths.
    """

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def tls(self) -> bool: ...
    @property
    def username(self) -> str | None: ...
    @property
    def ca_file(self) -> str | os.PathLike[str] | None: ...
    @property
    def cert_file(self) -> str | os.PathLike[str] | None: ...
    @property
    def key_file(self) -> str | os.PathLike[str] | None: ...
    @property
    def topic_prefix(self) -> str: ...
    @property
    def homeassistant_discovery(self) -> bool: ...
    @property
    def homeassistant_prefix(self) -> str: ...
    @property
    def homeassistant_new_code_button(self) -> bool: ...
    @property
    def homeassistant_sign_out_button(self) -> bool: ...
    @property
    def publish_user_code(self) -> bool: ...
    @property
    def keepalive(self) -> int: ...

    def password(self) -> str | None:
        """The password, read from ``password_file``."""


def _idle_timeout(keepalive: int) -> float:
    # The longest paho's network thread sleeps in select(); QuietClient cuts
    # each sleep to the moment a PINGREQ falls due, so this is only a cap.
    return max(1.0, float(keepalive)) if keepalive > 0 else IDLE_WAKEUP


#: Shortest select() wait when a ping is (over)due: paho acts on it right
#: after, so this only bounds a misbehaving state to 2 wakeups a second.
PING_WAIT_MIN = 0.5


def keepalive_wait(keepalive: int, last_out: float, last_in: float, now: float, cap: float) -> float:
    """Seconds until paho's keepalive check has work (a PINGREQ to send, or a
    broker that stopped answering): the earlier of the last packet out and the
    last bytes in, plus *keepalive*. Between *PING_WAIT_MIN* and *cap*."""
    if keepalive <= 0:
        return cap
    due = min(last_out, last_in) + keepalive
    return max(PING_WAIT_MIN, min(cap, due - now + 0.05))


def _quiet_client_class(base: type, timeout: float) -> type:
    """paho's Client whose network thread sleeps until its next ping is due.

    ``loop_start`` runs ``loop_forever()`` with paho's default select
    timeout of one second: 60 wakeups a minute on an idle board. Publishing
    from another thread wakes that select through paho's socket pair, and
    the only timed work of paho's loop is the keepalive check, so each
    select waits exactly until a PINGREQ falls due (``_loop``), at most
    *timeout* s: at a 60 s keepalive an idle link costs one ping (two
    wakeups) a minute. ``_thread_main`` and ``_loop`` are paho 2.x's; without
    them (another paho version) the stock client is used.
    """
    if not (hasattr(base, "_thread_main") and hasattr(base, "_loop")):
        # pyproject pins paho-mqtt 2.x, and tests/test_status_mqtt.py checks
        # that this override is in use; say so should another paho be found.
        log.warning("MQTT: this paho-mqtt has no _thread_main; its network thread "
                    "wakes every second (install paho-mqtt 2.x)")
        return base

    class QuietClient(base):
        #: Called (on the network thread) instead of paho's deterministic
        #: doubling wait between connection attempts; set by StatusPublisher.
        agent_reconnect_wait: Callable[[], None] | None = None

        def _thread_main(self) -> None:
            try:
                self.loop_forever(timeout=timeout, retry_first_connection=True)
            finally:
                self._thread = None

        def _loop(self, timeout: float = 1.0) -> Any:
            if self._sock is None:
                return super()._loop(timeout)
            with self._msgtime_mutex:
                last_out, last_in = self._last_msg_out, self._last_bytes_received
            return super()._loop(keepalive_wait(self._keepalive, last_out, last_in,
                                                time.monotonic(), timeout))

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



def make_client(settings: MqttSettings, *, client_id: str, will_topic: str,
                reconnect_wait: Callable[[], None], reconnect: Backoff) -> Any:
    """A paho ``Client`` (the quiet one) with the will, credentials and TLS set.

    *reconnect_wait* is called on paho's network thread before every
    connection attempt; with another paho, its own doubling wait runs
    within *reconnect*'s bounds instead.
    """
    # Imported here: the agent without [mqtt] never loads paho.
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    s = settings
    client = _quiet_client_class(mqtt.Client, _idle_timeout(s.keepalive))(
        CallbackAPIVersion.VERSION2, client_id=client_id)
    # The will must be set before connecting; the broker sends it when
    # the agent vanishes without saying goodbye (crash, SIGKILL, power).
    client.will_set(will_topic, "offline", qos=1, retain=True)
    if s.username:
        client.username_pw_set(s.username, s.password())
    if s.tls:
        # No ca_file: the system's trusted CAs. The broker's name is checked.
        client.tls_set(
            ca_certs=os.fspath(s.ca_file) if s.ca_file else None,
            certfile=os.fspath(s.cert_file) if s.cert_file else None,
            keyfile=os.fspath(s.key_file) if s.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    if hasattr(client, "agent_reconnect_wait"):
        client.agent_reconnect_wait = reconnect_wait
    else:   # another paho: its own doubling, within the policy's bounds
        client.reconnect_delay_set(max(1, int(reconnect.minimum)), max(1, int(reconnect.cap)))
    # Bounded: during a long outage paho must not hoard messages.
    client.max_queued_messages_set(MAX_QUEUED)
    return client
