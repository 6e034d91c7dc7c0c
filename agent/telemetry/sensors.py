"""Sensors: what the board measures, turned into :class:`Reading` values.

A sensor is anything with a ``name``, a ``unit`` and a ``read()`` that
returns a number, or a mapping of sub-names to numbers (a command printing
``{"moisture": 41, "temperature": 18.5}``; several DS18B20s). Optional
attributes: ``key_units`` (unit per sub-name), and for Home Assistant
``device_class``, ``state_class``, ``icon`` and ``multi`` (False: one
value; True: several; None: only a reading tells). Built-ins read
``/sys`` and ``/proc`` directly (cheap on a Pi Zero: no gpiozero thread);
their file paths are options so tests point them at a fake tree. Other
packages add types through the entry-point group ``entra_agent.sensors``
whose objects are factories ``(SensorConfig) -> Sensor``.

A sensor that fails raises :class:`SensorError` (one line);
:func:`read_all` logs it, reports it, skips it, and never stops.

>>> sensors = build_sensors([SensorConfig("uptime", "uptime")])  # doctest: +SKIP
>>> readings, failures = read_all(sensors, SystemClock())         # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

from agent.clock import Clock
from agent.config import BUILTIN_SENSOR_OPTIONS, SensorConfig
from agent.errors import AgentError, ConfigError

__all__ = [
    "Reading",
    "Sensor",
    "SensorError",
    "SensorFactory",
    "ENTRY_POINT_GROUP",
    "CpuTemperature",
    "LoadAverage",
    "Memory",
    "DiskUsage",
    "Uptime",
    "DS18B20",
    "CommandSensor",
    "BUILTIN_SENSORS",
    "build_sensors",
    "read_all",
    "new_reading_id",
    "iso_utc",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "entra_agent.sensors"

#: Most characters of a program's stderr quoted in a failure line.
STDERR_QUOTE_MAX = 160

#: Seconds to wait for a killed command's pipes to close.
KILL_GRACE = 2.0


class SensorError(AgentError, RuntimeError):
    """A sensor could not be read this time (skipped; the others go on)."""


@dataclass(frozen=True)
class Reading:
    """One measured value, as sent to the endpoint.

    ``id`` is unique and stable across retries (a receiver drops repeats);
    it starts with the time in milliseconds, so ids sort by time of reading.
    ``time`` is ISO 8601 UTC with a "Z", to the millisecond.
    """

    id: str
    sensor: str
    value: float
    unit: str | None
    time: str

    def as_json(self) -> dict[str, Any]:
        """The reading as it appears in the POST body."""
        return {"id": self.id, "sensor": self.sensor, "value": self.value,
                "unit": self.unit, "time": self.time}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Reading":
        return cls(id=data["id"], sensor=data["sensor"], value=float(data["value"]),
                   unit=data.get("unit"), time=data["time"])


def new_reading_id(wall_seconds: float) -> str:
    """A 32-hex-digit id: 48 bits of milliseconds since the epoch, 80 random bits.

    Like a ULID: ids taken later sort later (for a correct wall clock), and
    two boards never collide.
    """
    millis = max(0, int(wall_seconds * 1000)) & ((1 << 48) - 1)
    return f"{millis:012x}{secrets.randbits(80):020x}"


def iso_utc(wall_seconds: float) -> str:
    """``2027-01-15T08:00:00.123Z`` for *wall_seconds* since the epoch."""
    moment = datetime.fromtimestamp(wall_seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@runtime_checkable
class Sensor(Protocol):
    """What the telemetry loop needs from a sensor."""

    name: str
    unit: str | None

    def read(self) -> float | dict[str, float]:
        """One value now, or several by sub-name; raise SensorError on failure."""


SensorFactory = Callable[[SensorConfig], Sensor]


def _read_text(path: Path, what: str, name: str) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        raise SensorError(f"{name}: {path} does not exist",
                          f"is there a {what} on this board?") from None
    except OSError as exc:
        raise SensorError(f"{name}: cannot read {path}: {exc.strerror or type(exc).__name__}") from None


def _number(text: str, path: Path, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SensorError(f"{name}: {path} does not hold a number: {text[:40]!r}") from None
    return value


class CpuTemperature:
    """The SoC temperature in degrees Celsius (the kernel gives millidegrees)."""

    device_class = "temperature"
    multi = False

    DEFAULT_PATH = "/sys/class/thermal/thermal_zone0/temp"

    def __init__(self, name: str = "cpu_temperature", unit: str | None = "°C",
                 path: str | Path = DEFAULT_PATH) -> None:
        self.name = name
        self.unit = unit
        self.path = Path(path)

    def read(self) -> float:
        text = _read_text(self.path, "thermal zone", self.name).strip()
        return _number(text, self.path, self.name) / 1000.0


class LoadAverage:
    """The 1, 5 or 15 minute load average (``/proc/loadavg``)."""

    device_class = None
    icon = "mdi:gauge"
    multi = False

    DEFAULT_PATH = "/proc/loadavg"

    def __init__(self, name: str = "load_average", unit: str | None = None,
                 period: int = 1, path: str | Path = DEFAULT_PATH) -> None:
        if period not in (1, 5, 15):
            raise ValueError("period must be 1, 5 or 15")
        self.name = name
        self.unit = unit
        self.period = period
        self.path = Path(path)

    def read(self) -> float:
        fields = _read_text(self.path, "/proc", self.name).split()
        index = {1: 0, 5: 1, 15: 2}[self.period]
        if len(fields) <= index:
            raise SensorError(f"{self.name}: {self.path} is too short")
        return _number(fields[index], self.path, self.name)


class Memory:
    """Memory available to new programs (``MemAvailable`` in ``/proc/meminfo``),
    as a percentage of ``MemTotal`` or in MB (10^6 bytes)."""

    icon = "mdi:memory"
    multi = False

    DEFAULT_PATH = "/proc/meminfo"

    def __init__(self, name: str = "memory", unit: str | None = None,
                 report: str = "available_percent", path: str | Path = DEFAULT_PATH) -> None:
        if report not in ("available_percent", "available_mb"):
            raise ValueError("report must be available_percent or available_mb")
        self.name = name
        self.report = report
        self.unit = unit if unit is not None else ("%" if report == "available_percent" else "MB")
        self.path = Path(path)
        self.device_class = None if report == "available_percent" else "data_size"

    def read(self) -> float:
        values: dict[str, float] = {}
        for line in _read_text(self.path, "/proc", self.name).splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                try:
                    values[key.strip()] = float(parts[0])  # kB (KiB)
                except ValueError:
                    continue
        total = values.get("MemTotal")
        available = values.get("MemAvailable")
        if available is None and total is not None:
            # Kernels before 3.14 have no MemAvailable; this is their estimate.
            available = values.get("MemFree", 0.0) + values.get("Buffers", 0.0) + values.get("Cached", 0.0)
        if not total or available is None:
            raise SensorError(f"{self.name}: {self.path} has no MemTotal/MemAvailable")
        if self.report == "available_mb":
            return round(available * 1024 / 1e6, 1)
        return round(100.0 * available / total, 2)


class DiskUsage:
    """Space on the file system holding ``path``: used percent or free MB."""

    icon = "mdi:harddisk"
    multi = False

    def __init__(self, name: str = "disk_usage", unit: str | None = None,
                 report: str = "used_percent", path: str | Path = "/") -> None:
        if report not in ("used_percent", "free_mb"):
            raise ValueError("report must be used_percent or free_mb")
        self.name = name
        self.report = report
        self.unit = unit if unit is not None else ("%" if report == "used_percent" else "MB")
        self.path = Path(path)
        self.device_class = None if report == "used_percent" else "data_size"

    def read(self) -> float:
        try:
            usage = shutil.disk_usage(self.path)
        except FileNotFoundError:
            raise SensorError(f"{self.name}: {self.path} does not exist") from None
        except OSError as exc:
            raise SensorError(f"{self.name}: cannot measure {self.path}: "
                              f"{exc.strerror or type(exc).__name__}") from None
        if self.report == "free_mb":
            return round(usage.free / 1e6, 1)
        # Like df: used against what non-root users can use.
        usable = usage.used + usage.free
        return round(100.0 * usage.used / usable, 2) if usable else 0.0


class Uptime:
    """Seconds since boot (``/proc/uptime``)."""

    device_class = "duration"
    multi = False

    DEFAULT_PATH = "/proc/uptime"

    def __init__(self, name: str = "uptime", unit: str | None = "s",
                 path: str | Path = DEFAULT_PATH) -> None:
        self.name = name
        self.unit = unit
        self.path = Path(path)

    def read(self) -> float:
        fields = _read_text(self.path, "/proc", self.name).split()
        if not fields:
            raise SensorError(f"{self.name}: {self.path} is empty")
        return _number(fields[0], self.path, self.name)


class DS18B20:
    """DS18B20 1-wire thermometers, degrees Celsius (``w1_therm`` driver).

    Reads ``<base_dir>/28-*/w1_slave``: the first line must end in ``YES``
    (the CRC matched), the second holds ``t=<millidegrees>``. 85.000 °C is
    the chip's power-on value, not a measurement, and counts as a failure.
    With no ``device`` every thermometer found is read (a mapping by device id).
    """

    DEFAULT_BASE_DIR = "/sys/bus/w1/devices"
    POWER_ON_VALUE = 85000  # millidegrees the chip reports before its first conversion

    device_class = "temperature"

    def __init__(self, name: str = "ds18b20", unit: str | None = "°C",
                 device: str | None = None, base_dir: str | Path = DEFAULT_BASE_DIR,
                 key_units: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.unit = unit
        self.device = device
        self.base_dir = Path(base_dir)
        self.key_units = dict(key_units or {})
        self.multi = device is None          # one reading per thermometer found

    def _devices(self) -> list[Path]:
        if self.device is not None:
            return [self.base_dir / self.device]
        try:
            found = sorted(p for p in self.base_dir.glob("28-*") if p.is_dir())
        except OSError:
            found = []
        if not found:
            raise SensorError(f"{self.name}: no DS18B20 under {self.base_dir}",
                              "check the wiring and dtoverlay=w1-gpio in config.txt")
        return found

    def _read_one(self, folder: Path) -> float:
        path = folder / "w1_slave"
        lines = _read_text(path, "DS18B20", self.name).splitlines()
        if len(lines) < 2 or not lines[0].strip().endswith("YES"):
            raise SensorError(f"{self.name}: {folder.name} failed its CRC check",
                              "check the wiring and the pull-up resistor")
        _, marker, raw = lines[1].rpartition("t=")
        if not marker:
            raise SensorError(f"{self.name}: {path} has no t= value")
        millidegrees = _number(raw.strip(), path, self.name)
        if millidegrees == self.POWER_ON_VALUE:
            raise SensorError(f"{self.name}: {folder.name} gave its power-on value 85.0",
                              "check the power supply of the sensor")
        return millidegrees / 1000.0

    def read(self) -> float | dict[str, float]:
        folders = self._devices()
        if self.device is not None:
            return self._read_one(folders[0])
        values: dict[str, float] = {}
        errors: list[str] = []
        for folder in folders:
            try:
                values[folder.name] = self._read_one(folder)
            except SensorError as exc:
                errors.append(str(exc))
        if not values:
            raise SensorError(errors[0] if len(errors) == 1 else
                              f"{self.name}: none of {len(folders)} DS18B20 could be read")
        for error in errors:
            log.warning("%s", error)
        return values


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return last[:STDERR_QUOTE_MAX]


class CommandSensor:
    """Runs a program (no shell) and reads its stdout.

    Accepted output: a number (``41.5``), JSON ``{"value": 41.5}``, or JSON
    ``{"moisture": 41.5, "temperature": 18.2}`` (several readings, named
    ``<name>.<key>``). The program runs in its own process group and the
    whole group is killed after ``timeout`` seconds, so a hung helper and
    its children never pile up.
    """

    device_class = None
    multi = None                             # a number or a JSON object: its output tells

    def __init__(self, name: str, command: list[str], timeout: float = 5.0,
                 unit: str | None = None, key_units: Mapping[str, str] | None = None) -> None:
        if not command:
            raise ValueError("command must not be empty")
        self.name = name
        self.unit = unit
        self.key_units = dict(key_units or {})
        self.command = list(command)
        self.timeout = timeout
        self.last_pid: int | None = None  # for tests and diagnostics

    def read(self) -> float | dict[str, float]:
        program = self.command[0]
        try:
            process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
            )
        except FileNotFoundError:
            raise SensorError(f"{self.name}: command not found: {program}",
                              "fix sensors.command in the config") from None
        except PermissionError:
            raise SensorError(f"{self.name}: {program} is not executable",
                              f"run: chmod +x {program}") from None
        except OSError as exc:
            raise SensorError(f"{self.name}: cannot run {program}: "
                              f"{exc.strerror or type(exc).__name__}") from None
        self.last_pid = process.pid
        try:
            out, err = process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._kill(process)
            raise SensorError(f"{self.name}: {program} did not finish within {self.timeout:g} s "
                              f"and was killed") from None
        finally:
            # Children that outlive the program (it exited, they did not)
            # must not linger either.
            self._kill_group(process.pid)
        if process.returncode != 0:
            why = _one_line(err.decode("utf-8", "replace"))
            status = (f"was killed by signal {-process.returncode}" if process.returncode < 0
                      else f"exited with status {process.returncode}")
            raise SensorError(f"{self.name}: {program} {status}" + (f": {why}" if why else ""))
        return self._parse(out.decode("utf-8", "replace"))

    @staticmethod
    def _kill_group(pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill(self, process: subprocess.Popen[bytes]) -> None:
        self._kill_group(process.pid)
        try:
            process.communicate(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            # A grandchild that left our group still holds the pipes: stop
            # waiting for them, but reap our own child.
            process.kill()
            process.wait(timeout=KILL_GRACE)

    def _parse(self, text: str) -> float | dict[str, float]:
        text = text.strip()
        if not text:
            raise SensorError(f"{self.name}: {self.command[0]} printed nothing",
                              'it must print a number or JSON like {"value": 1.5}')
        try:
            data = json.loads(text)
        except ValueError:
            data = text
        if isinstance(data, str):
            try:
                data = float(data)
            except ValueError:
                raise SensorError(f"{self.name}: {self.command[0]} printed neither a number "
                                  f"nor JSON: {_one_line(text)[:40]!r}") from None
        if _is_value(data):
            return float(data)
        if isinstance(data, dict):
            if "value" in data and _is_value(data["value"]):
                return float(data["value"])
            if data and all(isinstance(k, str) and _is_value(v) for k, v in data.items()):
                return {k: float(v) for k, v in data.items()}
        raise SensorError(f"{self.name}: {self.command[0]} printed JSON that holds no numbers",
                          'print a number, {"value": x} or {"name": x, ...}')


def _is_value(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _builtin(config: SensorConfig) -> Sensor:
    options = dict(config.options)
    kind = config.type
    if kind == "cpu_temperature":
        return CpuTemperature(config.name, config.unit or "°C",
                              options.get("path", CpuTemperature.DEFAULT_PATH))
    if kind == "load_average":
        return LoadAverage(config.name, config.unit, options.get("period", 1),
                           options.get("path", LoadAverage.DEFAULT_PATH))
    if kind == "memory":
        return Memory(config.name, config.unit, options.get("report", "available_percent"),
                      options.get("path", Memory.DEFAULT_PATH))
    if kind == "disk_usage":
        return DiskUsage(config.name, config.unit, options.get("report", "used_percent"),
                         options.get("path", "/"))
    if kind == "uptime":
        return Uptime(config.name, config.unit or "s", options.get("path", Uptime.DEFAULT_PATH))
    if kind == "ds18b20":
        return DS18B20(config.name, config.unit or "°C", options.get("device"),
                       options.get("base_dir", DS18B20.DEFAULT_BASE_DIR), config.key_units())
    if kind == "command":
        return CommandSensor(config.name, options["command"], float(options.get("timeout", 5.0)),
                             config.unit, config.key_units())
    raise KeyError(kind)


#: The built-in types, each a factory ``(SensorConfig) -> Sensor``.
BUILTIN_SENSORS: dict[str, SensorFactory] = {kind: _builtin for kind in BUILTIN_SENSOR_OPTIONS}


def _plugins() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


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


def read_all(sensors: list[Sensor], clock: Clock) -> tuple[list[Reading], list[tuple[str, str]]]:
    """Read every sensor once.

    Returns the readings and the failures as ``(sensor name, one-line
    reason)``. A failing sensor is logged and skipped, never fatal; a value
    that is not a finite number counts as a failure (JSON cannot carry NaN).
    """
    readings: list[Reading] = []
    failures: list[tuple[str, str]] = []
    for sensor in sensors:
        name = getattr(sensor, "name", type(sensor).__name__)
        try:
            value = sensor.read()
            values = value if isinstance(value, dict) else {"": value}
            wall = clock.time()
            stamp = iso_utc(wall)
            key_units = getattr(sensor, "key_units", None) or {}
            batch = []
            for key, number in values.items():
                if not _is_value(number) or not math.isfinite(number):
                    raise SensorError(f"{name}: gave {number!r}, not a finite number")
                batch.append(Reading(id=new_reading_id(wall), sensor=f"{name}.{key}" if key else name,
                                     value=float(number), unit=key_units.get(key, sensor.unit),
                                     time=stamp))
        except SensorError as exc:
            reason = str(exc)
        except Exception as exc:  # a plugin's bug must not stop the others
            reason = f"{name}: {type(exc).__name__}: {exc}".splitlines()[0]
        else:
            readings.extend(batch)
            continue
        # DEBUG here: the service logs a sensor once when it starts failing and
        # once when it recovers, not at every interval (journal noise, SD wear).
        log.debug("sensor skipped: %s", reason)
        failures.append((name, reason))
    return readings, failures
