"""What every sensor shares: the :class:`Sensor` protocol, :class:`SensorError`,
and :class:`BuiltinSensor`, the base of the built-in types (their options
declared as a schema, built from a ``[[sensors]]`` entry by one generic
:meth:`BuiltinSensor.from_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, Sequence, runtime_checkable

from agent.config.table import Option, resolve_options
from agent.config.values import SensorConfig
from agent.errors import AgentError

__all__ = ["Sensor", "SensorError", "SensorFactory", "BuiltinSensor", "Option", "is_value"]


class SensorError(AgentError, RuntimeError):
    """A sensor could not be read this time (skipped; the others go on)."""


@runtime_checkable
class Sensor(Protocol):
    """What the telemetry loop needs from a sensor."""

    name: str
    unit: str | None

    def read(self) -> float | dict[str, float]:
        """One value now, or several by sub-name; raise SensorError on failure."""


#: What an entry point of ``entra_agent.sensors`` gives: ``(SensorConfig) -> Sensor``.
#: It may declare ``OPTIONS`` (a sequence of :class:`Option`): the loader then checks
#: the file's keys against them and the factory gets them checked, defaults filled in.
SensorFactory = Callable[[SensorConfig], Sensor]


def read_text(path: Path, what: str, name: str) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        raise SensorError(f"{name}: {path} does not exist",
                          f"is there a {what} on this board?") from None
    except OSError as exc:
        raise SensorError(f"{name}: cannot read {path}: {exc.strerror or type(exc).__name__}") from None


def number(text: str, path: Path, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SensorError(f"{name}: {path} does not hold a number: {text[:40]!r}") from None
    return value


def is_value(value: Any) -> bool:
    """A JSON number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class BuiltinSensor:
    """The base of the built-in sensor types.

    A subclass declares ``OPTIONS`` (its ``[[sensors]]`` keys besides type,
    name and unit: names, what each must be, defaults) and takes them as
    keyword arguments of ``__init__(name, unit, ...)``. The config loader
    checks a file's options against the same schema, so the options of a type
    are written once, here. ``DEFAULT_UNIT`` is used when the config gives
    none (or an empty one); ``KEY_UNITS``: the constructor takes
    ``key_units`` (a sensor of several values).
    """

    OPTIONS: ClassVar[Sequence[Option]] = ()
    DEFAULT_UNIT: ClassVar[str | None] = None
    OWN_UNIT: ClassVar[bool] = True      # False: its unit is only what the config says
    KEY_UNITS: ClassVar[bool] = False

    name: str
    unit: str | None

    def read(self) -> float | dict[str, float]:  # pragma: no cover - every type has its own
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: SensorConfig) -> Sensor:
        """The sensor for *config*; ValueError (one line) for options it does not take."""
        options: dict[str, Any] = resolve_options(cls.OPTIONS, config.options)
        if cls.KEY_UNITS:
            options["key_units"] = config.key_units()
        unit = (config.unit or cls.DEFAULT_UNIT) if cls.DEFAULT_UNIT is not None else config.unit
        sensor: Sensor = cls(name=config.name, unit=unit, **options)  # type: ignore[call-arg]
        return sensor


def path_option(default: str, expected: str = "a path") -> Option:
    """The ``path`` option of a sensor that reads a file: left out of the
    config's options when absent (the sensor reads *default*)."""
    return Option.text("path", expected, default=default, fill=False)
