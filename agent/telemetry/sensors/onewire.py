"""DS18B20 1-wire thermometers (the kernel's ``w1_therm`` driver)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Mapping

from agent.telemetry.sensors.base import BuiltinSensor, Option, SensorError, number, read_text

__all__ = ["DS18B20"]

log = logging.getLogger("agent.telemetry.sensors")


class DS18B20(BuiltinSensor):
    """DS18B20 1-wire thermometers, degrees Celsius (``w1_therm`` driver).

    Reads ``<base_dir>/28-*/w1_slave``: the first line must end in ``YES``
    (the CRC matched), the second holds ``t=<millidegrees>``. 85.000 °C is
    the chip's power-on value, not a measurement, and counts as a failure.
    With no ``device`` every thermometer found is read (a mapping by device id).
    """

    DEFAULT_BASE_DIR = "/sys/bus/w1/devices"
    POWER_ON_VALUE = 85000  # millidegrees the chip reports before its first conversion
    DEFAULT_UNIT = "°C"
    KEY_UNITS = True
    OPTIONS = (Option.text("device", 'a 1-wire device id such as "28-0316a2795eff"',
                           pattern=re.compile(r"^28-[0-9a-fA-F]{12}$"), default=None, fill=False),
               Option.text("base_dir", "a folder path", default=DEFAULT_BASE_DIR, fill=False))

    device_class = "temperature"

    def __init__(self, name: str = "ds18b20", unit: str | None = DEFAULT_UNIT,
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
        lines = read_text(path, "DS18B20", self.name).splitlines()
        if len(lines) < 2 or not lines[0].strip().endswith("YES"):
            raise SensorError(f"{self.name}: {folder.name} failed its CRC check",
                              "check the wiring and the pull-up resistor")
        _, marker, raw = lines[1].rpartition("t=")
        if not marker:
            raise SensorError(f"{self.name}: {path} has no t= value")
        millidegrees = number(raw.strip(), path, self.name)
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
