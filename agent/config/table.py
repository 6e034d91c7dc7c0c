"""Generic checks of one TOML table: typed getters, one-line messages, unknown keys.

A :class:`Table` reads one table and remembers which keys were asked for;
:meth:`Table.finish` refuses the rest (a typo gets "did you mean", a secret
gets a pointer to ``*_file``). Every message names the file, the key path
and what is expected::

    /etc/entra-agent/agent.toml: telemetry.interval must be a number of
    seconds >= 1, got "fast"

:class:`Option` declares one option of a sensor (name, what it must be,
default) so a sensor type owns its options and this module checks them
without knowing any sensor.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from agent.errors import ConfigError

__all__ = ["Table", "Option", "REQUIRED", "EXAMPLE_HINT", "SECRET_KEYS", "show", "is_number",
           "resolve_options"]

#: What to tell someone whose config file is missing or wrong.
EXAMPLE_HINT = "see deploy/agent.toml.example"

#: Keys that would put a secret in a world-readable file.
SECRET_KEYS = frozenset({
    "password", "passwd", "secret", "client_secret", "token", "access_token",
    "refresh_token", "api_key", "private_key",
})

#: Type-specific options of the built-in sensors (besides type, name, unit).

REQUIRED = object()


def show(value: Any) -> str:
    """*value* as it looks in TOML, for "got ..." in messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # Controls and bidi characters shown as escapes, long values cut.
        from agent.textsafe import clean
        return '"' + clean(value, 120).replace('"', '\\"') + '"'
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 40 else text[:20] + "…"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Table:
    """Reads one TOML table, remembering which keys were used."""

    def __init__(self, file: Path, prefix: str, data: Any) -> None:
        self.file = file
        self.prefix = prefix
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: {prefix} must be a table, got {show(data)}",
                              EXAMPLE_HINT)
        self.data = data
        self.used: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, key: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"{self.file}: {self.key(key)} must be {expected}, got {show(value)}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.data.get(key, default)

    def get(self, key: str, expected: str, accept: Callable[[Any], bool],
            default: Any = REQUIRED) -> Any:
        """The value of *key* when ``accept(value)``; else a ConfigError
        saying it "must be *expected*"."""
        self.used.add(key)
        if key not in self.data:
            if default is REQUIRED:
                raise ConfigError(f"{self.file}: {self.key(key)} is missing: it must be {expected}",
                                  EXAMPLE_HINT)
            return default
        value = self.data[key]
        ok = False
        try:
            ok = bool(accept(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise self.fail(key, expected, value)
        return value

    def text(self, key: str, expected: str = "a text", default: Any = REQUIRED,
             pattern: re.Pattern[str] | None = None) -> Any:
        return self.get(key, expected,
                        lambda v: isinstance(v, str) and v != ""
                        and (pattern is None or pattern.match(v) is not None),
                        default)

    def boolean(self, key: str, default: Any = REQUIRED) -> Any:
        return self.get(key, "true or false", lambda v: isinstance(v, bool), default)

    def integer(self, key: str, expected: str, low: int, high: int | None = None,
                default: Any = REQUIRED) -> Any:
        return self.get(key, expected,
                        lambda v: isinstance(v, int) and not isinstance(v, bool)
                        and v >= low and (high is None or v <= high), default)

    def number(self, key: str, expected: str, low: float, high: float | None = None,
               default: Any = REQUIRED, low_inclusive: bool = True) -> Any:
        def accept(v: Any) -> bool:
            if not is_number(v) or not math.isfinite(v):
                return False
            if v < low or (not low_inclusive and v == low):
                return False
            return high is None or v <= high
        value = self.get(key, expected, accept, default)
        return float(value) if is_number(value) else value

    def file_path(self, key: str, must_exist: bool = True) -> Path | None:
        value = self.text(key, "a file path", default=None)
        if value is None:
            return None
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = self.file.parent / path
        if must_exist and not path.is_file():
            raise ConfigError(f"{self.file}: {self.key(key)} names {path}, which does not exist",
                              "create the file or fix the path")
        return path

    def options(self, schema: Sequence["Option"]) -> dict[str, Any]:
        """The values of the options in *schema* (see :class:`Option`), checked.

        An absent option takes its default, or is left out when the option
        says ``fill=False`` (the sensor then uses that default itself).
        """
        values: dict[str, Any] = {}
        for option in schema:
            if not option.fill and option.name not in self.data:
                self.used.add(option.name)
                continue
            value = self.get(option.name, option.expected, option.accepts, option.default)
            values[option.name] = option.convert(value) if option.convert else value
        return values

    def finish(self, allowed_extra: frozenset[str] = frozenset()) -> None:
        """Refuse keys nobody read: typos, secrets, keys from another table."""
        for key in self.data:
            if key in self.used or key in allowed_extra:
                continue
            if key.lower() in SECRET_KEYS or key.lower().endswith("password"):
                where = self.key(key)
                hint = (f"put it in a file readable only by root and set {self.key('password_file')}"
                        if "pass" in key.lower() else "secrets come from *_file paths")
                raise ConfigError(f"{self.file}: {where}: secrets do not belong in the config file",
                                  hint)
            known = sorted(self.used | allowed_extra)
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {self.key(close[0])}? {EXAMPLE_HINT}" if close else EXAMPLE_HINT
            raise ConfigError(f"{self.file}: {self.key(key)} is not a known key", hint)



@dataclass(frozen=True)
class Option:
    """One option of a sensor type, declared by the sensor itself.

    ``expected`` completes "<key> must be ..." in a message; ``accept`` says
    whether a value from the file is good; ``default`` is used when the key
    is left out (:data:`REQUIRED`: it must be given). ``fill=False`` keeps an
    absent option out of ``SensorConfig.options`` (a board path the sensor
    defaults itself); ``convert`` turns an accepted value into what the
    sensor takes (``float`` for seconds, ``list`` for a command).

    >>> Option.choice("period", "1, 5 or 15 (minutes)", (1, 5, 15), default=1).accepts(5)
    True
    """

    name: str
    expected: str
    accept: Callable[[Any], bool]
    default: Any = REQUIRED
    fill: bool = True
    convert: Callable[[Any], Any] | None = None

    def accepts(self, value: Any) -> bool:
        """True when *value* is acceptable (never raises)."""
        try:
            return bool(self.accept(value))
        except (TypeError, ValueError):
            return False

    @classmethod
    def number(cls, name: str, expected: str, low: float, high: float | None = None, *,
               default: Any = REQUIRED, low_inclusive: bool = True) -> "Option":
        """A finite number from *low* (exclusive unless *low_inclusive*) to *high*, as a float."""
        def accept(v: Any) -> bool:
            if not is_number(v) or not math.isfinite(v):
                return False
            if v < low or (not low_inclusive and v == low):
                return False
            return high is None or v <= high
        return cls(name, expected, accept, default, convert=float)

    @classmethod
    def choice(cls, name: str, expected: str, choices: Sequence[Any], *,
               default: Any = REQUIRED) -> "Option":
        """One of *choices* (of the same type: ``true`` is not ``1``)."""
        allowed = tuple(choices)
        return cls(name, expected,
                   lambda v: any(type(v) is type(c) and v == c for c in allowed), default)

    @classmethod
    def text(cls, name: str, expected: str, *, pattern: re.Pattern[str] | None = None,
             default: Any = REQUIRED, fill: bool = True) -> "Option":
        """A non-empty text, matching *pattern* when given."""
        return cls(name, expected,
                   lambda v: isinstance(v, str) and v != ""
                   and (pattern is None or pattern.match(v) is not None), default, fill)

    @classmethod
    def command(cls, name: str, expected: str) -> "Option":
        """A program and its arguments: a non-empty list of texts, the first not empty."""
        return cls(name, expected,
                   lambda v: isinstance(v, list) and len(v) > 0
                   and all(isinstance(a, str) for a in v) and v[0] != "", convert=list)


def resolve_options(schema: Sequence[Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of *schema* from *given* (a ``SensorConfig.options`` made in
    code or by the loader), defaults filled in.

    Raises ValueError (one line, "did you mean" for a typo) for an unknown,
    missing or unacceptable option.
    """
    names = [option.name for option in schema]
    for key in given:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            raise ValueError(f"{key} is not a known option"
                             + (f" (did you mean {close[0]}?)" if close else ""))
    values: dict[str, Any] = {}
    for option in schema:
        if option.name in given:
            value = given[option.name]
            if not option.accepts(value):
                raise ValueError(f"{option.name} must be {option.expected}, got {show(value)}")
            values[option.name] = option.convert(value) if option.convert else value
        elif option.default is REQUIRED:
            raise ValueError(f"{option.name} is missing: it must be {option.expected}")
        else:
            values[option.name] = option.default
    return values
