"""Home Assistant discovery over a run: what to announce, what to remove.

:class:`Discovery` holds, for one device, the entities of this run (fixed
ones, single-value sensors and configured keys at once, other readings as
they first come) and the record of what earlier runs announced (from
:mod:`agent.ha_announced`), and returns the messages to publish: configs,
and empty retained payloads for entities no longer wanted. No I/O: the
publisher (:mod:`agent.status`) sends them and saves :attr:`Discovery.announced`.

An entity of a sensor whose values are known only from its readings (a
command, a DS18B20 without ``device``) is kept until that sensor's first
reading of the run, which settles it. Without a record, what earlier
versions announced is assumed (:func:`legacy_topics`), so their ghost
entities go too.

>>> from agent.homeassistant import topics_for
>>> d = Discovery(DeviceInfo("greenhouse-1", "1.0"), topics_for("entra-agent", "greenhouse-1"),
...               sensors=[SensorInfo("cpu_temperature", "°C", device_class="temperature")])
>>> [m.topic for m in d.connect()][:1]
['homeassistant/sensor/greenhouse-1/state/config']
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.homeassistant import (
    DEFAULT_PREFIX,
    FIXED_KEYS,
    DeviceInfo,
    Entity,
    SensorInfo,
    Topics,
    assign_object_ids,
    config_topic,
    fixed_entities,
    object_id,
    owner_of,
    reading_entity,
)

__all__ = ["MAX_READING_ENTITIES", "Message", "Discovery", "legacy_topics"]

log = logging.getLogger(__name__)

#: Reading entities announced at most: a sensor program printing thousands of
#: keys must not flood Home Assistant (and the broker) with entities.
MAX_READING_ENTITIES = 256


@dataclass(frozen=True)
class Message:
    """A retained publish on a discovery topic; ``payload`` "" removes the entity."""

    topic: str
    payload: str
    key: str


def legacy_topics(device_id: str, sensor_names: Iterable[str]) -> dict[str, str]:
    """What earlier versions announced (for a device without an announced
    file): the state entity and one entity per configured sensor name."""
    node = object_id(device_id)
    result = {"@state": config_topic(DEFAULT_PREFIX, "sensor", node, "state")}
    for name in sensor_names:
        result[name] = config_topic(DEFAULT_PREFIX, "sensor", node, object_id(name))
    return result


class Discovery:
    """The discovery configs of one device over a run (no I/O: returns messages).

    *announced* is what an earlier run announced (key -> ``{"topic", "object_id"}``,
    from :mod:`agent.ha_announced`; None: no record, assume what earlier
    versions announced). :meth:`connect` gives every config to publish plus
    the removals; :meth:`readings` the configs of readings seen for the first
    time plus the removals their sensor's first reading settles.
    :attr:`announced` is the record to keep.
    """

    def __init__(self, device: DeviceInfo, topics: Topics, *,
                 sensors: Sequence[SensorInfo] = (), prefix: str = DEFAULT_PREFIX,
                 publish_user_code: bool = False, new_code_button: bool = False,
                 sign_out_button: bool = False,
                 announced: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.device = device
        self.topics = topics
        self.sensors = list(sensors)
        self.prefix = prefix
        self.node_id = object_id(device.device_id)
        self._options = dict(publish_user_code=publish_user_code,
                             new_code_button=new_code_button, sign_out_button=sign_out_button)
        if announced is None:
            announced = {key: {"topic": topic} for key, topic in
                         legacy_topics(device.device_id, [s.name for s in self.sensors]).items()}
        self._previous: dict[str, dict[str, str]] = {
            k: {"topic": v["topic"], **({"object_id": v["object_id"]} if "object_id" in v else {})}
            for k, v in announced.items()}
        self._seen: dict[str, str | None] = {}          # reading name -> unit, this run
        self._heard: set[str] = set()                   # sensors that gave a reading this run
        self._ids: dict[str, str] = {}
        self._full = False
        self.announced: dict[str, dict[str, str]] = dict(self._previous)

    # -- what exists now ----------------------------------------------------

    def _fixed_keys(self) -> list[str]:
        keys = [k for k in FIXED_KEYS if k not in ("@sign_in_code", "@new_code", "@sign_out")]
        if self._options["publish_user_code"]:
            keys.append("@sign_in_code")
        if self._options["new_code_button"]:
            keys.append("@new_code")
        if self._options["sign_out_button"]:
            keys.append("@sign_out")
        return keys

    def _reading_keys_upfront(self) -> list[str]:
        # Known before any reading: single-value sensors and configured keys.
        keys: list[str] = []
        for sensor in self.sensors:
            if sensor.multi is False:
                keys.append(sensor.name)
            keys.extend(f"{sensor.name}.{k}" for k in sensor.keys)
        return keys

    def _reading_keys(self) -> list[str]:
        keys = self._reading_keys_upfront()
        keys.extend(k for k in self._seen if k not in keys)
        return keys

    def _assign(self, keys: list[str]) -> dict[str, str]:
        previous = {k: v["object_id"] for k, v in self._previous.items() if "object_id" in v}
        previous.update(self._ids)
        self._ids = assign_object_ids(list(self._ids) + keys, previous,
                                      suggest={k: v for k, v in FIXED_KEYS.items()})
        return self._ids

    def _entities(self, keys: list[str]) -> list[Entity]:
        fixed = self._fixed_keys()
        ids = self._assign(fixed + self._reading_keys())
        result: list[Entity] = []
        if any(k in fixed for k in keys):
            result.extend(e for e in fixed_entities(self.device, self.topics, ids, **self._options)
                          if e.key in keys)
        for key in keys:
            if key not in fixed:
                result.append(reading_entity(key, ids[key], self.sensors, self.device,
                                             self.topics, self._seen.get(key)))
        return result

    def _pending(self, key: str) -> bool:
        # An earlier entity of a sensor that gives values only known from its
        # readings: kept until the sensor's first reading of this run says.
        owner, _ = owner_of(key, self.sensors)
        return owner is not None and owner.multi is not False and owner.name not in self._heard

    def _messages(self, entities: list[Entity]) -> list[Message]:
        messages = []
        for e in entities:
            topic = config_topic(self.prefix, e.component, self.node_id, e.object_id)
            old = self.announced.get(e.key)
            if old is not None and old["topic"] != topic:
                messages.append(Message(old["topic"], "", e.key))       # moved (prefix, id)
            messages.append(Message(topic, json.dumps(e.payload, separators=(",", ":"),
                                                      ensure_ascii=False), e.key))
            self.announced[e.key] = {"topic": topic, "object_id": e.object_id}
        return messages

    def _removals(self) -> list[Message]:
        current = set(self._fixed_keys()) | set(self._reading_keys())
        messages = []
        for key in sorted(self.announced):
            if key in current or self._pending(key):
                continue
            messages.append(Message(self.announced.pop(key)["topic"], "", key))
        return messages

    # -- events -------------------------------------------------------------

    def connect(self) -> list[Message]:
        """Everything to publish on (re)connect and when Home Assistant comes online."""
        keys = self._fixed_keys() + self._reading_keys()
        return self._messages(self._entities(keys)) + self._removals()

    def readings(self, values: Mapping[str, Any],
                 units: Mapping[str, str | None] | None = None, *,
                 connected: bool = True) -> list[Message]:
        """What readings *values* add (new entities) or settle (removals).

        Not *connected*: only noted; :meth:`connect` announces them later.
        """
        upfront = set(self._reading_keys_upfront())
        new: list[str] = []
        for key in values:
            owner, _ = owner_of(key, self.sensors)
            if owner is not None:
                self._heard.add(owner.name)
            if key in self._seen or key in upfront:
                if key not in self._seen:
                    self._seen[key] = (units or {}).get(key)
                continue
            if len(self._seen) >= MAX_READING_ENTITIES:
                if not self._full:
                    log.warning("Home Assistant: more than %d readings; %r and later new ones "
                                "get no entity", MAX_READING_ENTITIES, key)
                    self._full = True
                continue
            self._seen[key] = (units or {}).get(key)
            new.append(key)
        if not connected:
            return []
        return self._messages(self._entities(new)) + self._removals()

    def remove_all(self) -> list[Message]:
        """Removals of everything announced (discovery switched off)."""
        messages = [Message(v["topic"], "", k) for k, v in sorted(self.announced.items())]
        self.announced.clear()
        return messages
