"""The board's own measures, read from ``/sys`` and ``/proc`` directly (cheap on
a Pi Zero: no gpiozero thread): SoC temperature, load, memory, disk, uptime.
Their file paths are options, so tests point them at a fake tree."""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.telemetry.sensors.base import BuiltinSensor, Option, SensorError, number, path_option, read_text

__all__ = ["CpuTemperature", "LoadAverage", "Memory", "DiskUsage", "Uptime"]


class CpuTemperature(BuiltinSensor):
    """The SoC temperature in degrees Celsius (the kernel gives millidegrees)."""

    device_class = "temperature"
    multi = False

    DEFAULT_PATH = "/sys/class/thermal/thermal_zone0/temp"
    DEFAULT_UNIT = "°C"
    OPTIONS = (path_option(DEFAULT_PATH),)

    def __init__(self, name: str = "cpu_temperature", unit: str | None = DEFAULT_UNIT,
                 path: str | Path = DEFAULT_PATH) -> None:
        self.name = name
        self.unit = unit
        self.path = Path(path)

    def read(self) -> float:
        text = read_text(self.path, "thermal zone", self.name).strip()
        return number(text, self.path, self.name) / 1000.0


class LoadAverage(BuiltinSensor):
    """The 1, 5 or 15 minute load average (``/proc/loadavg``)."""

    device_class = None
    icon = "mdi:gauge"
    multi = False

    DEFAULT_PATH = "/proc/loadavg"
    PERIODS = (1, 5, 15)
    OPTIONS = (Option.choice("period", "1, 5 or 15 (minutes)", PERIODS, default=1),
               path_option(DEFAULT_PATH))

    def __init__(self, name: str = "load_average", unit: str | None = None,
                 period: int = 1, path: str | Path = DEFAULT_PATH) -> None:
        self.name = name
        self.unit = unit
        self.period = period
        self.path = Path(path)

    def read(self) -> float:
        fields = read_text(self.path, "/proc", self.name).split()
        index = self.PERIODS.index(self.period)
        if len(fields) <= index:
            raise SensorError(f"{self.name}: {self.path} is too short")
        return number(fields[index], self.path, self.name)


class Memory(BuiltinSensor):
    """Memory available to new programs (``MemAvailable`` in ``/proc/meminfo``),
    as a percentage of ``MemTotal`` or in MB (10^6 bytes)."""

    icon = "mdi:memory"
    multi = False

    DEFAULT_PATH = "/proc/meminfo"
    OPTIONS = (Option.choice("report", '"available_percent" or "available_mb"',
                             ("available_percent", "available_mb"), default="available_percent"),
               path_option(DEFAULT_PATH))

    def __init__(self, name: str = "memory", unit: str | None = None,
                 report: str = "available_percent", path: str | Path = DEFAULT_PATH) -> None:
        self.name = name
        self.report = report
        self.unit = unit if unit is not None else ("%" if report == "available_percent" else "MB")
        self.path = Path(path)
        self.device_class = None if report == "available_percent" else "data_size"

    def read(self) -> float:
        values: dict[str, float] = {}
        for line in read_text(self.path, "/proc", self.name).splitlines():
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


class DiskUsage(BuiltinSensor):
    """Space on the file system holding ``path``: used percent or free MB."""

    icon = "mdi:harddisk"
    multi = False

    DEFAULT_PATH = "/"
    OPTIONS = (Option.choice("report", '"used_percent" or "free_mb"', ("used_percent", "free_mb"),
                             default="used_percent"),
               path_option(DEFAULT_PATH))

    def __init__(self, name: str = "disk_usage", unit: str | None = None,
                 report: str = "used_percent", path: str | Path = DEFAULT_PATH) -> None:
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


class Uptime(BuiltinSensor):
    """Seconds since boot (``/proc/uptime``)."""

    device_class = "duration"
    multi = False

    DEFAULT_PATH = "/proc/uptime"
    DEFAULT_UNIT = "s"
    OPTIONS = (path_option(DEFAULT_PATH),)

    def __init__(self, name: str = "uptime", unit: str | None = DEFAULT_UNIT,
                 path: str | Path = DEFAULT_PATH) -> None:
        self.name = name
        self.unit = unit
        self.path = Path(path)

    def read(self) -> float:
        fields = read_text(self.path, "/proc", self.name).split()
        if not fields:
            raise SensorError(f"{self.name}: {self.path} is empty")
        return number(fields[0], self.path, self.name)
