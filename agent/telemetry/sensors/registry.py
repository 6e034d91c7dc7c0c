"""Which sensor types exist (built-in, and entry-point plugins of the group
``entra_agent.sensors``), the options each declares, and building sensors
from ``[[sensors]]`` entries.

The config loader asks here for a type's option schema; this module imports
only the standard library at the top (the sensor modules are light), so
``load_config`` stays cheap. Plugins are listed without loading them; a
plugin is loaded only for a type a config uses.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

from agent.config.table import Option, resolve_options
from agent.config.values import SensorConfig
from agent.errors import AgentError, ConfigError
from agent.telemetry.sensors.base import BuiltinSensor, Sensor, SensorFactory
from agent.telemetry.sensors.command import CommandSensor
from agent.telemetry.sensors.onewire import DS18B20
from agent.telemetry.sensors.system import CpuTemperature, DiskUsage, LoadAverage, Memory, Uptime

__all__ = ["ENTRY_POINT_GROUP", "BUILTIN_TYPES", "BUILTIN_SENSORS", "sensor_types",
           "option_schema", "has_own_unit", "declared_options", "build_sensors"]

log = logging.getLogger("agent.telemetry.sensors")

ENTRY_POINT_GROUP = "entra_agent.sensors"

#: The built-in types by their ``type`` name in ``[[sensors]]``.
BUILTIN_TYPES: dict[str, type[BuiltinSensor]] = {
    "cpu_temperature": CpuTemperature,
    "load_average": LoadAverage,
    "memory": Memory,
    "disk_usage": DiskUsage,
    "uptime": Uptime,
    "ds18b20": DS18B20,
    "command": CommandSensor,
}

#: The built-in types, each a factory ``(SensorConfig) -> Sensor``.
BUILTIN_SENSORS: dict[str, SensorFactory] = {
    kind: cls.from_config for kind, cls in BUILTIN_TYPES.items()}


def _plugins() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def sensor_types() -> list[str]:
    """Every known type, sorted: the built-ins and the plugins' entry-point names."""
    names = set(BUILTIN_TYPES)
    try:
        names.update(_plugins())
    except Exception:  # a damaged site-packages must not hide the built-ins
        log.warning("cannot list sensor plugins", exc_info=True)
    return sorted(names)


def declared_options(factory: Any, kind: str) -> tuple[Option, ...] | None:
    """The ``OPTIONS`` a plugin factory declares, or None (an older plugin: its
    options go to it unchecked). ValueError when they are not :class:`Option` values."""
    schema = getattr(factory, "OPTIONS", None)
    if schema is None:
        return None
    if isinstance(schema, (str, bytes)) or not isinstance(schema, Sequence) \
            or not all(isinstance(option, Option) for option in schema):
        raise ValueError(f"the plugin for type {kind!r} declares OPTIONS that are not "
                         "a sequence of agent.config.Option (report this to its author)")
    return tuple(schema)


def option_schema(kind: str) -> tuple[Option, ...] | None:
    """The options sensor type *kind* declares, or None when it declares none.

    A plugin that cannot be loaded counts as declaring none here:
    :func:`build_sensors` reports it with its own message.
    """
    builtin = BUILTIN_TYPES.get(kind)
    if builtin is not None:
        return tuple(builtin.OPTIONS)
    try:
        entry = _plugins().get(kind)
        factory = entry.load() if entry is not None else None
    except Exception:
        log.debug("sensor plugin %s cannot be loaded to read its options", kind, exc_info=True)
        return None
    return declared_options(factory, kind)


def has_own_unit(kind: str) -> bool:
    """False for a type whose unit is only the configured one (the command sensor)."""
    builtin = BUILTIN_TYPES.get(kind)
    return builtin.OWN_UNIT if builtin is not None else True


def build_sensors(configs: list[SensorConfig]) -> list[Sensor]:
    """Sensors for *configs*, built-in or from the ``entra_agent.sensors`` group.

    An unknown type, or a plugin that cannot be loaded or refuses its
    options, is a :class:`ConfigError` (the agent must not start half-blind).
    """
    sensors: list[Sensor] = []
    plugins: dict[str, Any] | None = None
    for config in configs:
        factory = BUILTIN_SENSORS.get(config.type)
        if factory is None:
            if plugins is None:
                plugins = _plugins()
            entry = plugins.get(config.type)
            if entry is None:
                known = sorted(set(BUILTIN_SENSORS) | set(plugins))
                raise ConfigError(f"sensor {config.name}: unknown type {config.type!r}",
                                  "known types: " + ", ".join(known))
            try:
                factory = entry.load()
            except Exception as exc:
                raise ConfigError(f"sensor {config.name}: the plugin {entry.value} for type "
                                  f"{config.type!r} cannot be loaded: {type(exc).__name__}: {exc}"
                                  .splitlines()[0]) from exc
        try:
            schema = declared_options(factory, config.type) if config.type not in BUILTIN_TYPES \
                else None
            if schema is not None:
                config = dataclasses.replace(config, options=resolve_options(schema, config.options))
            sensor = factory(config)
        except AgentError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"sensor {config.name}: bad options for type {config.type!r}: "
                              f"{exc}".splitlines()[0]) from exc
        if not isinstance(sensor, Sensor):
            raise ConfigError(f"sensor {config.name}: the factory for {config.type!r} "
                              f"returned {type(sensor).__name__}, not a sensor")
        sensors.append(sensor)
    return sensors
