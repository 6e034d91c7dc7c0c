"""The checks of ``[[sensors]]`` tables: the keys every sensor has (type, name,
unit, Home Assistant classes, ``[sensors.keys.<key>]``) here, the options of
each type from the schema the sensor type declares
(:mod:`agent.telemetry.sensors`): nothing here knows a particular sensor.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

from agent.config.sections import NAME_RE
from agent.config.table import EXAMPLE_HINT, Table, show
from agent.config.values import KeyConfig, SensorConfig
from agent.errors import ConfigError

__all__ = ["sensors"]


def _sensor(file: Path, index: int, data: Any) -> SensorConfig:
    # The registry imports only the standard library; plugins are listed,
    # and loaded only for a type this file uses (to read their options).
    from agent.telemetry.sensors import registry

    t = Table(file, f"sensors[{index}]", data)
    known = registry.sensor_types()
    kind = t.text("type", "a sensor type: " + ", ".join(known))
    if kind not in known:
        close = difflib.get_close_matches(kind, known, n=1)
        raise ConfigError(str(t.fail("type", "one of " + ", ".join(known), kind)),
                          f"did you mean {show(close[0])}? {EXAMPLE_HINT}" if close else EXAMPLE_HINT)
    name = t.text("name", "a name of letters, digits, '.', '_' or '-' (at most 64)",
                  default=kind, pattern=NAME_RE)
    unit = t.get("unit", "a text (may be empty)", lambda v: isinstance(v, str), default=None)
    # A type's own default unit is not known here; a type without one sends the configured unit.
    unit_known = unit is not None or not registry.has_own_unit(kind)
    classes = _ha_classes(t, unit, unit_known=unit_known)
    keys = _sensor_keys(t, unit, classes, unit_known=unit_known)
    try:
        schema = registry.option_schema(kind)
    except ValueError as exc:
        raise ConfigError(f"{t.file}: {t.key('type')} {show(kind)} cannot be used: {exc}") from None
    if schema is not None:
        options = t.options(schema)
    else:
        # A plugin that declares no options: every other key goes to its factory as is.
        options = {key: t.raw(key) for key in list(t.data) if key not in t.used}
    t.finish()
    return SensorConfig(type=kind, name=name, options=options, unit=unit,
                        device_class=classes[0], state_class=classes[1], label=classes[2],
                        keys=keys)


def _ha_classes(t: Table, unit: str | None, *, unit_known: bool,
                inherited: tuple[str | None, str | None] = (None, None)
                ) -> tuple[str | None, str | None, str | None]:
    """``device_class``, ``state_class`` and ``label`` of *t*, checked against
    Home Assistant's rules (a unit it refuses for the class would be a warning
    in its log at every start). *unit_known*: *unit* is what will be sent
    (a built-in type's own default unit is not known here)."""
    from agent.ha_device_classes import (
        NON_NUMERIC_DEVICE_CLASSES,
        SENSOR_DEVICE_CLASSES,
        STATE_CLASSES,
    )

    classes = sorted(SENSOR_DEVICE_CLASSES)
    device_class = t.get("device_class", "a text", lambda v: isinstance(v, str), default=None)
    if device_class is not None and device_class not in SENSOR_DEVICE_CLASSES:
        close = difflib.get_close_matches(device_class, classes, n=1)
        raise ConfigError(str(t.fail("device_class", "a Home Assistant sensor device class "
                                     "such as \"temperature\", \"humidity\" or \"pressure\"",
                                     device_class)),
                          f"did you mean {show(close[0])}? {EXAMPLE_HINT}" if close
                          else "see the device classes of Home Assistant's sensor integration")
    state_class = t.get("state_class", "a text", lambda v: isinstance(v, str), default=None)
    if state_class is not None and state_class not in STATE_CLASSES:
        close = difflib.get_close_matches(state_class, list(STATE_CLASSES), n=1)
        raise ConfigError(str(t.fail("state_class", " or ".join(f'"{c}"' for c in STATE_CLASSES),
                                     state_class)),
                          f"did you mean {show(close[0])}? {EXAMPLE_HINT}" if close else EXAMPLE_HINT)
    label = t.text("label", "a text of at most 64 characters", default=None,
                   pattern=re.compile(r"^[^\x00-\x1f\x7f]{1,64}$"))
    effective_class = device_class if device_class is not None else inherited[0]
    effective_state = state_class if state_class is not None else inherited[1]
    if effective_class is not None:
        units, states = SENSOR_DEVICE_CLASSES[effective_class]
        if effective_class in NON_NUMERIC_DEVICE_CLASSES:
            if effective_state is not None:
                raise t.fail("state_class", f"left out with device_class {show(effective_class)} "
                             "(its state is not a number)", effective_state)
        elif unit_known and units is not None and (unit or "") not in units:
            shown = " or ".join(show(u) for u in sorted(units) if u) or "left out"
            given = unit or ""
            close = ([u for u in units if u.lower() == given.lower()]
                     or difflib.get_close_matches(given, sorted(units), n=1))
            raise ConfigError(
                f"{t.file}: {t.key('unit')} must be {shown} for Home Assistant's device class "
                f"{show(effective_class)}, got {show(given)}",
                f"did you mean {show(close[0])}?" if close and close[0]
                else "set a matching unit, or another device_class")
        if effective_state is not None and states is not None and effective_state not in states:
            raise t.fail("state_class", " or ".join(f'"{c}"' for c in sorted(states))
                         + f" with device_class {show(effective_class)}", effective_state)
    return device_class, state_class, label


_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _sensor_keys(t: Table, unit: str | None, classes: tuple[str | None, str | None, str | None],
                 *, unit_known: bool) -> dict[str, KeyConfig]:
    """``[sensors.keys.<key>]``: per-value unit, classes and label."""
    table = t.get("keys", "a table of [sensors.keys.<key>] tables", lambda v: isinstance(v, dict),
                  default={})
    keys: dict[str, KeyConfig] = {}
    for key, data in table.items():
        if not key or len(key) > 64 or any(ord(c) < 32 or c == "\x7f" for c in key):
            raise ConfigError(f"{t.file}: {t.key('keys')} has a key {show(key)}: keys must be "
                              "1 to 64 printable characters", EXAMPLE_HINT)
        shown = key if _KEY_RE.match(key) else json.dumps(key, ensure_ascii=False)
        k = Table(t.file, t.key(f"keys.{shown}"), data)
        own_unit = k.get("unit", "a text (may be empty)", lambda v: isinstance(v, str), default=None)
        effective_unit = own_unit if own_unit is not None else unit
        device_class, state_class, label = _ha_classes(
            k, effective_unit, unit_known=unit_known or own_unit is not None,
            inherited=(classes[0], classes[1]))
        k.finish()
        keys[key] = KeyConfig(unit=own_unit, device_class=device_class,
                              state_class=state_class, label=label)
    return keys


def sensors(file: Path, data: Any) -> list[SensorConfig]:
    if not isinstance(data, list):
        raise ConfigError(f"{file}: sensors must be a list of [[sensors]] tables, got {show(data)}",
                          EXAMPLE_HINT)
    sensors = [_sensor(file, i, item) for i, item in enumerate(data)]
    seen: dict[str, int] = {}
    for i, sensor in enumerate(sensors):
        if sensor.name in seen:
            raise ConfigError(
                f"{file}: sensors[{i}].name must be unique, got {show(sensor.name)} "
                f"(also sensors[{seen[sensor.name]}])",
                "give each sensor its own name = \"...\"")
        seen[sensor.name] = i
    return sensors

