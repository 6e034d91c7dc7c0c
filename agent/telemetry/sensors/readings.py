"""Readings: the values sent to the endpoint, their ids and times, and one
pass over every sensor (:func:`read_all`) that skips a failing one."""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from agent.clock import Clock
from agent.telemetry.sensors.base import Sensor, SensorError, is_value

__all__ = ["Reading", "new_reading_id", "iso_utc", "read_all"]

log = logging.getLogger("agent.telemetry.sensors")


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
                if not is_value(number) or not math.isfinite(number):
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
