"""Home Assistant MQTT discovery payloads, as pure functions.

What the device and its entities look like to Home Assistant: the config
payloads (:func:`sensor_entity`, :func:`fixed_entities`) and value
templates, built from the values of :mod:`agent.ha_model` (the device, its
sensors, object ids that never collide, friendly names, the board's model;
re-exported here). :mod:`agent.ha_discovery` decides what to announce and
remove over a run; :mod:`agent.status` publishes it.

Entities: one ``sensor`` per reading (a multi-value sensor gets none for its
own name), ``State``, the sign-in entities (the code only with
``publish_user_code``), diagnostics (``entity_category: diagnostic``) and,
when enabled, ``button`` entities publishing :data:`COMMANDS`. Every value
template has a default (``value_json.get(key)``: a missing key renders
``None``, which Home Assistant takes as unknown, so its log stays quiet) and
writes the key as an escaped JSON literal, so any key is safe.

>>> value_template("cpu_temperature")
'{{ value_json.get("cpu_temperature") }}'
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from agent.config.values import MqttConfig
from agent.ha_device_classes import NON_NUMERIC_DEVICE_CLASSES, SENSOR_DEVICE_CLASSES
from agent.ha_model import (
    BOARD_MODEL_PATH,
    COMMAND_NEW_CODE,
    COMMAND_SIGN_OUT,
    COMMANDS,
    DeviceInfo,
    Entity,
    KeyInfo,
    SensorInfo,
    Topics,
    assign_object_ids,
    board_device,
    config_topic,
    friendly_name,
    object_id,
    read_board_model,
    topics_for,
)
from agent.ha_model import clean_name as _clean
from agent.states import (
    AWAITING_USER,
    SIGN_IN_REQUIRED,
    SIGN_IN_STOPPED,
    SIGNED_IN,
    STARTING,
    STOPPING,
)

__all__ = [
    "DEFAULT_PREFIX", "BOARD_MODEL_PATH", "COMMAND_NEW_CODE", "COMMAND_SIGN_OUT", "COMMANDS",
    "SIGN_OUT_CONFIRM_WINDOW", "DeviceInfo", "Topics", "KeyInfo", "SensorInfo", "Entity",
    "topics_for", "object_id", "assign_object_ids", "friendly_name",
    "value_template", "device_payload", "sensor_entity", "fixed_entities", "reading_entity",
    "unit_fits", "read_board_model", "board_device", "sensor_infos", "owner_of",
    "config_topic", "FIXED_KEYS", "STATE_OPTIONS",
]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = MqttConfig.homeassistant_prefix   # Home Assistant's default discovery prefix
#: Seconds within which a second "Sign out" press confirms the first (like
#: holding the physical button through its confirmation screen).
SIGN_OUT_CONFIRM_WINDOW = 10.0
MAX_STATE_LENGTH = 255                           # Home Assistant's limit for a state

#: The states the "State" entity can take (an enum in Home Assistant).
STATE_OPTIONS = [STARTING, SIGNED_IN, SIGN_IN_REQUIRED, AWAITING_USER, SIGN_IN_STOPPED, STOPPING]
SIGN_IN_STATES = [SIGN_IN_REQUIRED, AWAITING_USER, SIGN_IN_STOPPED]


# --------------------------------------------------------------------------
# Payloads

def _literal(key: str) -> str:
    """*key* as a Jinja string literal: JSON-escaped, ASCII only, no braces
    (``{{``/``}}`` inside a template are safe in a literal, but not in every
    tool that reads the config)."""
    text = json.dumps(key, ensure_ascii=True)
    return text.replace("{", "\\u007b").replace("}", "\\u007d")


def value_template(key: str, *, limit: int | None = None, missing: str = "None") -> str:
    """The template that reads *key* of a JSON object, ``None`` when absent.

    Home Assistant treats a rendered ``None`` as unknown and logs nothing.
    *limit* cuts a text to Home Assistant's state length (a longer state is
    a warning in its log); *missing* is shown for an absent or empty text.
    """
    if limit is None:
        return "{{ value_json.get(%s) }}" % _literal(key)
    return "{{ ((value_json.get(%s) or %s) | string)[:%d] }}" % (
        _literal(key), _literal(missing), limit)


def device_payload(device: DeviceInfo) -> dict[str, Any]:
    """The ``device`` block shared by every entity (Home Assistant's device registry)."""
    payload: dict[str, Any] = {
        "identifiers": [f"entra-agent-{device.device_id}"],
        "name": device.device_id,
        "sw_version": device.version,
        "manufacturer": "entra-device-agent",
    }
    if device.model:
        payload["model"] = device.model
    if device.hw_version:
        payload["hw_version"] = device.hw_version
    return payload


def _common(device: DeviceInfo, topics: Topics, oid: str) -> dict[str, Any]:
    return {
        "unique_id": f"{device.device_id}_{oid}",
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device_payload(device),
        "origin": {"name": "entra-device-agent", "sw_version": device.version},
    }


def unit_fits(device_class: str | None, unit: str | None) -> bool:
    """Whether Home Assistant accepts *unit* for *device_class* (any for None)."""
    if device_class is None:
        return True
    if device_class not in SENSOR_DEVICE_CLASSES:
        return False
    units, _ = SENSOR_DEVICE_CLASSES[device_class]
    if device_class in NON_NUMERIC_DEVICE_CLASSES:
        return not unit
    return units is None or (unit or "") in units


def _state_class(device_class: str | None, wanted: str | None) -> str | None:
    # Readings are numbers: "measurement" unless the device class says otherwise.
    if device_class in NON_NUMERIC_DEVICE_CLASSES:
        return None
    allowed = SENSOR_DEVICE_CLASSES.get(device_class or "", (None, None))[1]
    if wanted is not None:
        return wanted if allowed is None or wanted in allowed else None
    if allowed is None or "measurement" in allowed:
        return "measurement"
    return None


def sensor_entity(*, key: str, oid: str, name: str, device: DeviceInfo, topics: Topics,
                  unit: str | None = None, device_class: str | None = None,
                  state_class: str | None = None, icon: str | None = None) -> Entity:
    """The ``sensor`` entity of reading *key* (on the readings topic).

    A device class whose unit Home Assistant would refuse is left out (its
    log would warn at every start); the state class follows from it.
    """
    if not unit_fits(device_class, unit):
        log.debug("Home Assistant: %s: unit %r does not fit device class %s; leaving it out",
                  key, unit, device_class)
        device_class = None
    payload = {
        **_common(device, topics, oid),
        "name": name,
        "state_topic": topics.readings,
        "value_template": value_template(key),
    }
    if unit:
        payload["unit_of_measurement"] = unit
    if device_class:
        payload["device_class"] = device_class
    if (sc := _state_class(device_class, state_class)) is not None:
        payload["state_class"] = sc
    if icon:
        payload["icon"] = icon
    return Entity(key=key, component="sensor", object_id=oid, payload=payload)


def reading_entity(key: str, oid: str, sensors: Sequence[SensorInfo], device: DeviceInfo,
                   topics: Topics, unit_hint: str | None = None) -> Entity:
    """The entity of reading *key*: its sensor's (and key's) unit, classes, label.

    *unit_hint*: the unit the reading itself carried.
    """
    owner, sub = owner_of(key, sensors)
    if owner is None:
        return sensor_entity(key=key, oid=oid, name=friendly_name(key), device=device,
                             topics=topics, unit=unit_hint)
    if sub is None:
        unit = owner.unit if owner.unit is not None else unit_hint
        return sensor_entity(key=key, oid=oid, name=owner.label or friendly_name(key),
                             device=device, topics=topics, unit=unit,
                             device_class=owner.device_class, state_class=owner.state_class,
                             icon=owner.icon)
    info = owner.keys.get(sub, KeyInfo())
    unit = info.unit if info.unit is not None else (
        unit_hint if unit_hint is not None else owner.unit)
    label = info.label or (f"{owner.label} {_clean(sub)}" if owner.label else friendly_name(key))
    return sensor_entity(key=key, oid=oid, name=_clean(label), device=device, topics=topics,
                         unit=unit,
                         device_class=info.device_class if info.device_class is not None
                         else owner.device_class,
                         state_class=info.state_class if info.state_class is not None
                         else owner.state_class,
                         icon=owner.icon)


def owner_of(key: str, sensors: Sequence[SensorInfo]) -> tuple[SensorInfo | None, str | None]:
    """The configured sensor that gives reading *key*, and the key within it
    (None for the sensor's own single value)."""
    best: SensorInfo | None = None
    for sensor in sensors:
        if key == sensor.name:
            return sensor, None
        if key.startswith(sensor.name + ".") and (best is None or len(sensor.name) > len(best.name)):
            best = sensor
    if best is None:
        return None, None
    return best, key[len(best.name) + 1:]


def _state_sensor(key: str, oid: str, name: str, device: DeviceInfo, topics: Topics,
                  field_name: str, **extra: Any) -> Entity:
    limit = extra.pop("limit", None)
    missing = extra.pop("missing", "None")
    payload = {**_common(device, topics, oid), "name": name, "state_topic": topics.state,
               "value_template": value_template(field_name, limit=limit, missing=missing),
               **extra}
    return Entity(key=key, component="sensor", object_id=oid, payload=payload)


def fixed_entities(device: DeviceInfo, topics: Topics, oids: Mapping[str, str], *,
                   publish_user_code: bool, new_code_button: bool,
                   sign_out_button: bool) -> list[Entity]:
    """The device's own entities: state, sign-in, diagnostics, buttons.

    *oids* maps each key of :func:`fixed_keys` to its object id.
    """
    d, t = device, topics
    diag = {"entity_category": "diagnostic"}
    entities = [
        _state_sensor("@state", oids["@state"], "State", d, t, "state",
                      device_class="enum", options=list(STATE_OPTIONS), icon="mdi:account-key",
                      json_attributes_topic=t.state),
        Entity("@sign_in_needed", "binary_sensor", oids["@sign_in_needed"], {
            **_common(d, t, oids["@sign_in_needed"]),
            "name": "Sign-in needed", "state_topic": t.state, "device_class": "problem",
            "value_template": "{{ 'ON' if value_json.get(\"state\") in %s else 'OFF' }}"
                              % json.dumps(SIGN_IN_STATES),
            "icon": "mdi:account-alert"}),
        _state_sensor("@sign_in_address", oids["@sign_in_address"], "Sign-in address", d, t,
                      "verification_uri", limit=MAX_STATE_LENGTH, icon="mdi:web"),
        _state_sensor("@sign_in_expires", oids["@sign_in_expires"], "Sign-in code expires", d, t,
                      "expires_at", device_class="timestamp", icon="mdi:timer-sand"),
        _state_sensor("@outbox_depth", oids["@outbox_depth"], "Outbox depth", d, t,
                      "outbox_depth", unit_of_measurement="readings", state_class="measurement",
                      icon="mdi:tray-full", **diag),
        _state_sensor("@dropped", oids["@dropped"], "Dropped readings", d, t, "dropped",
                      unit_of_measurement="readings", state_class="total_increasing",
                      icon="mdi:delete-alert", **diag),
        _state_sensor("@last_upload", oids["@last_upload"], "Last upload", d, t, "last_upload",
                      device_class="timestamp", icon="mdi:cloud-upload", **diag),
        _state_sensor("@last_error", oids["@last_error"], "Last error", d, t, "last_error",
                      limit=MAX_STATE_LENGTH, missing="none", icon="mdi:alert-circle-outline", **diag),
        _state_sensor("@token_expires", oids["@token_expires"], "Token expires", d, t,
                      "token_expires_at", device_class="timestamp", icon="mdi:key-chain", **diag),
    ]
    if publish_user_code:
        entities.append(_state_sensor("@sign_in_code", oids["@sign_in_code"], "Sign-in code",
                                      d, t, "user_code", limit=MAX_STATE_LENGTH,
                                      icon="mdi:form-textbox-password"))
    for wanted, key, name, press, icon in (
            (new_code_button, "@new_code", "New sign-in code", COMMAND_NEW_CODE, "mdi:refresh"),
            (sign_out_button, "@sign_out",
             f"Sign out (press twice within {SIGN_OUT_CONFIRM_WINDOW:g} s)", COMMAND_SIGN_OUT,
             "mdi:logout")):
        if wanted:
            entities.append(Entity(key, "button", oids[key], {
                **_common(d, t, oids[key]), "name": name, "command_topic": t.command,
                "payload_press": press, "entity_category": "config", "icon": icon}))
    return entities


#: The keys of the fixed entities and their object ids (stable; "state" as before).
FIXED_KEYS = {
    "@state": "state", "@sign_in_needed": "sign_in_needed", "@sign_in_address": "sign_in_address",
    "@sign_in_expires": "sign_in_expires", "@outbox_depth": "outbox_depth",
    "@dropped": "dropped", "@last_upload": "last_upload", "@last_error": "last_error",
    "@token_expires": "token_expires", "@sign_in_code": "sign_in_code",
    "@new_code": "new_code", "@sign_out": "sign_out",
}


def sensor_infos(configs: Sequence[Any], sensors: Sequence[Any] | None) -> list[SensorInfo]:
    """:class:`SensorInfo` of each ``[[sensors]]`` entry (:class:`agent.config.SensorConfig`),
    the config's settings first, then what the built sensor object says
    about itself (``unit``, ``device_class``, ``state_class``, ``icon``, ``multi``)."""
    by_name = {getattr(s, "name", None): s for s in sensors or ()}
    infos = []
    for config in configs:
        sensor = by_name.get(config.name)

        def own(attr: str, default: Any = None) -> Any:
            value = getattr(sensor, attr, default) if sensor is not None else default
            return value if value is None or isinstance(value, (str, bool)) else default

        infos.append(SensorInfo(
            name=config.name,
            unit=config.unit if config.unit is not None else own("unit"),
            device_class=config.device_class or own("device_class"),
            state_class=config.state_class or own("state_class"),
            label=config.label,
            icon=own("icon"),
            multi=own("multi", None),
            keys={key: KeyInfo(unit=k.unit, device_class=k.device_class,
                               state_class=k.state_class, label=k.label)
                  for key, k in config.keys.items()},
        ))
    return infos
