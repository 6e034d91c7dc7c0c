"""Sensors: what the board measures, turned into :class:`Reading` values.

A sensor is anything with a ``name``, a ``unit`` and a ``read()`` that
returns a number, or a mapping of sub-names to numbers (a command printing
``{"moisture": 41, "temperature": 18.5}``; several DS18B20s). Optional
attributes: ``key_units`` (unit per sub-name), and for Home Assistant
``device_class``, ``state_class``, ``icon`` and ``multi`` (False: one
value; True: several; None: only a reading tells).

The plugin API (this module): other packages add types through the
entry-point group ``entra_agent.sensors`` whose objects are factories
``(SensorConfig) -> Sensor``. A factory may declare its options as
``OPTIONS = (Option(...), ...)``: the config loader then checks them like a
built-in's (file, key, "did you mean") and the factory gets them with the
defaults filled in; a factory without ``OPTIONS`` gets every other key of
its table as is::

    from agent.telemetry.sensors import Option, SensorConfig

    def factory(config: SensorConfig) -> Bme280:
        return Bme280(config.name, address=config.options["address"])

    factory.OPTIONS = (Option.choice("address", "118 or 119", (118, 119), default=118),)

The built-ins, one module per family: ``system`` (``/sys`` and ``/proc``:
CPU temperature, load, memory, disk, uptime), ``onewire`` (DS18B20),
``command`` (a program's output); ``registry`` knows the types and builds
them; ``readings`` reads them all. A sensor that fails raises
:class:`SensorError` (one line); :func:`read_all` logs it, reports it,
skips it, and never stops.

>>> sensors = build_sensors([SensorConfig("uptime", "uptime")])  # doctest: +SKIP
>>> readings, failures = read_all(sensors, SystemClock())         # doctest: +SKIP
"""

from __future__ import annotations

from agent.config.table import Option
from agent.config.values import SensorConfig
from agent.telemetry.sensors.base import BuiltinSensor, Sensor, SensorError, SensorFactory
from agent.telemetry.sensors.command import KILL_GRACE, STDERR_QUOTE_MAX, CommandSensor
from agent.telemetry.sensors.onewire import DS18B20
from agent.telemetry.sensors.readings import Reading, iso_utc, new_reading_id, read_all
from agent.telemetry.sensors.registry import (
    BUILTIN_SENSORS,
    BUILTIN_TYPES,
    ENTRY_POINT_GROUP,
    build_sensors,
)
from agent.telemetry.sensors.system import CpuTemperature, DiskUsage, LoadAverage, Memory, Uptime

__all__ = [
    "Reading",
    "Sensor",
    "SensorError",
    "SensorFactory",
    "SensorConfig",
    "Option",
    "BuiltinSensor",
    "ENTRY_POINT_GROUP",
    "CpuTemperature",
    "LoadAverage",
    "Memory",
    "DiskUsage",
    "Uptime",
    "DS18B20",
    "CommandSensor",
    "BUILTIN_SENSORS",
    "BUILTIN_TYPES",
    "STDERR_QUOTE_MAX",
    "KILL_GRACE",
    "build_sensors",
    "read_all",
    "new_reading_id",
    "iso_utc",
]
