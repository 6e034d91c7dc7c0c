"""The Home Assistant discovery configs one publisher announces, and their record.

:class:`Announcements` wraps :class:`agent.ha_discovery.Discovery` (what to
announce when) with the paho side: configs go out retained at QoS 1, and the
record of what was announced (:mod:`agent.ha_announced`) is saved after each
batch so a later run can take back what it no longer wants.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.ha_discovery import Discovery, Message
from agent.homeassistant import COMMAND_NEW_CODE, COMMAND_SIGN_OUT, DeviceInfo, SensorInfo, topics_for

__all__ = ["Announcements"]

log = logging.getLogger(__name__)


class Announcements:
    """Discovery for one device; *path* keeps the record (None: in memory only)."""

    def __init__(self, device: DeviceInfo, *, topic_prefix: str, device_id: str,
                 sensors: Sequence[SensorInfo], prefix: str, publish_user_code: bool,
                 commands: frozenset[str], path: Path | None) -> None:
        from agent.ha_announced import load_announced

        record = load_announced(path) if path else None
        self._path = path
        self._had_record = record is not None
        self.discovery = Discovery(device, topics_for(topic_prefix, device_id),
                                   sensors=sensors, prefix=prefix,
                                   publish_user_code=publish_user_code,
                                   new_code_button=COMMAND_NEW_CODE in commands,
                                   sign_out_button=COMMAND_SIGN_OUT in commands,
                                   announced=record)

    def on_connect(self, client: Any, enabled: bool) -> None:
        """Announce everything (discovery on), or take back what an earlier
        run announced (discovery switched off since)."""
        if enabled:
            self.publish(client, self.discovery.connect())
        elif self._had_record and self.discovery.announced:
            self.publish(client, self.discovery.remove_all())

    def readings(self, client: Any, values: Mapping[str, float],
                 units: Mapping[str, str | None] | None, *, connected: bool) -> None:
        """Announce the entities new reading names need."""
        messages = self.discovery.readings(values, units, connected=connected)
        if messages:
            self.publish(client, messages)

    def publish(self, client: Any, messages: Sequence[Message]) -> None:
        """Send *messages* (retained, QoS 1: Home Assistant reads them when it
        (re)starts), then save the record."""
        for message in messages:
            client.publish(message.topic, message.payload, qos=1, retain=True)
        if self._path is not None:
            from agent.ha_announced import save_announced
            try:
                save_announced(self._path, self.discovery.announced)
            except AgentError as exc:
                log.warning("%s", exc)
