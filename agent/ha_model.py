"""What Home Assistant sees of the board, as values: the device, its sensors, names, ids.

The values (:class:`DeviceInfo`, :class:`SensorInfo`, :class:`Entity`...),
the agent's topics, object ids that never collide
(:func:`assign_object_ids`), friendly names, and the board's model from the
device tree. The discovery payloads built from them are
:mod:`agent.homeassistant`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BOARD_MODEL_PATH", "COMMAND_NEW_CODE", "COMMAND_SIGN_OUT", "COMMANDS", "DeviceInfo",
    "Entity", "KeyInfo", "MAX_NAME_LENGTH", "SensorInfo", "Topics", "assign_object_ids",
    "board_device", "clean_name", "config_topic", "friendly_name", "object_id",
    "read_board_model", "topics_for",
]

log = logging.getLogger(__name__)

BOARD_MODEL_PATH = Path("/proc/device-tree/model")   # "Raspberry Pi 4 Model B Rev 1.4\0"
COMMAND_NEW_CODE = "new_code"                    # payload of the "New sign-in code" button
COMMAND_SIGN_OUT = "sign_out"                    # payload of the "Sign out" button
COMMANDS = (COMMAND_NEW_CODE, COMMAND_SIGN_OUT)
MAX_NAME_LENGTH = 64
MAX_OBJECT_ID_LENGTH = 64                        # longer (a key from a program): cut, plus a hash

_ACRONYMS = {"cpu": "CPU", "ds18b20": "DS18B20", "soc": "SoC", "uv": "UV", "co2": "CO2",
             "pm25": "PM2.5", "pm10": "PM10", "voc": "VOC", "id": "ID", "ip": "IP"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# --------------------------------------------------------------------------
# Values

@dataclass(frozen=True)
class DeviceInfo:
    """The Home Assistant device: the board."""

    device_id: str
    version: str                    # the agent's version (sw_version)
    model: str | None = None        # "Raspberry Pi Zero 2 W" (from /proc/device-tree/model)
    hw_version: str | None = None   # "1.0" (the "Rev" part of the model)


@dataclass(frozen=True)
class Topics:
    """The agent's own topics, under ``<topic_prefix>/<device_id>/``."""

    availability: str
    state: str
    readings: str
    command: str


@dataclass(frozen=True)
class KeyInfo:
    """One value of a multi-value sensor, as configured (``[sensors.keys.<key>]``)."""

    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class SensorInfo:
    """One configured sensor, for its Home Assistant entities.

    ``multi``: False when it gives one value (its entity is announced at
    once), True when it gives several (one entity per ``<name>.<key>`` as
    they come, none for the name itself), None when only its first reading
    will tell (a command, a plugin). ``keys`` are the configured values of a
    multi-value sensor, announced at once.
    """

    name: str
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    label: str | None = None
    icon: str | None = None
    multi: bool | None = False
    keys: Mapping[str, KeyInfo] = field(default_factory=dict)


@dataclass(frozen=True)
class Entity:
    """One discovery config: ``<prefix>/<component>/<node_id>/<object_id>/config``."""

    key: str                        # what it is: a reading name, or "@state", "@last_error"...
    component: str                  # "sensor", "binary_sensor", "button"
    object_id: str
    payload: dict[str, Any]


def config_topic(prefix: str, component: str, node_id: str, oid: str) -> str:
    """The discovery topic of one entity: ``<prefix>/<component>/<node_id>/<oid>/config``."""
    return f"{prefix}/{component}/{node_id}/{oid}/config"


def topics_for(topic_prefix: str, device_id: str) -> Topics:
    """The agent's topics for *device_id* under *topic_prefix*."""
    base = f"{topic_prefix.strip('/')}/{device_id}"
    return Topics(availability=f"{base}/availability", state=f"{base}/state",
                  readings=f"{base}/readings", command=f"{base}/command")


# --------------------------------------------------------------------------
# Names and ids

def object_id(name: str) -> str:
    """The object id Home Assistant accepts for *name* (``[a-zA-Z0-9_-]``).

    The same as earlier versions gave, so existing entities keep their ids
    (a name longer than 64 characters is cut and given a hash);
    :func:`assign_object_ids` resolves the collisions this can make.
    """
    oid = re.sub(r"[^a-zA-Z0-9_-]", "_", name) or "sensor"
    if len(oid) > MAX_OBJECT_ID_LENGTH:
        oid = _hashed(name, oid[:MAX_OBJECT_ID_LENGTH - 9])
    return oid


def _hashed(name: str, base: str) -> str:
    return f"{base}_{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"


def assign_object_ids(keys: Iterable[str], previous: Mapping[str, str] | None = None,
                      suggest: Mapping[str, str] | None = None) -> dict[str, str]:
    """A distinct object id for each of *keys*, stable across runs.

    *previous* (key -> id, from the announced file) is kept where still
    free; a new key gets :func:`object_id` of its name (or ``suggest[key]``),
    or that plus a hash of the name when another key holds it already.

    >>> assign_object_ids(["env_temperature", "env.temperature"])
    {'env_temperature': 'env_temperature', 'env.temperature': 'env_temperature_550ef528'}
    """
    order = list(dict.fromkeys(keys))
    taken: dict[str, str] = {}
    result: dict[str, str] = {}
    for key in order:                    # earlier assignments first: ids never move
        oid = (previous or {}).get(key)
        if isinstance(oid, str) and re.fullmatch(r"[a-zA-Z0-9_-]{1,200}", oid) and oid not in taken:
            taken[oid] = key
            result[key] = oid
    for key in order:
        if key in result:
            continue
        name = key.lstrip("@")
        base = (suggest or {}).get(key) or object_id(name)
        oid, n = base, 0
        while oid in taken:
            n += 1
            oid = _hashed(name if n == 1 else f"{name}#{n}", base)
        if oid != base:
            log.warning("Home Assistant: %r and %r would share the object id %s; "
                        "%r gets %s", taken[base], key, base, key, oid)
        taken[oid] = key
        result[key] = oid
    return result


def clean_name(text: str, limit: int = MAX_NAME_LENGTH) -> str:
    """*text* without control characters, stripped, at most *limit* characters."""
    return _CONTROL.sub("", text).strip()[:limit]


def friendly_name(name: str) -> str:
    """A name for people: ``cpu_temperature`` -> ``CPU temperature``,
    ``env.humidity`` -> ``Env humidity``."""
    words = [w for w in re.split(r"[_.\s]+", clean_name(name, 200)) if w]
    if not words:
        return "Sensor"
    shown = [_ACRONYMS.get(w.lower(), w) for w in words]
    first = shown[0]
    if first == words[0] and first[:1].islower():
        shown[0] = first[:1].upper() + first[1:]
    return clean_name(" ".join(shown))



# --------------------------------------------------------------------------
# The board

def read_board_model(path: Path = BOARD_MODEL_PATH) -> tuple[str | None, str | None]:
    """(model, hw_version) from the device tree, e.g. ``("Raspberry Pi 4 Model B", "1.4")``.

    (None, None) where there is no such file (not a device-tree board). The
    text is from the firmware: NULs and control characters are dropped, the
    length bounded.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(256)
    except OSError:
        return None, None
    text = clean_name(raw.split(b"\0", 1)[0].decode("utf-8", "replace"), 100)
    if not text:
        return None, None
    model, sep, rev = text.partition(" Rev ")
    return (model.strip() or None), (rev.strip() or None) if sep else None


def board_device(device_id: str, version: str, path: Path = BOARD_MODEL_PATH) -> DeviceInfo:
    """The :class:`DeviceInfo` of this board."""
    model, hw_version = read_board_model(path)
    return DeviceInfo(device_id=device_id, version=version, model=model, hw_version=hw_version)
