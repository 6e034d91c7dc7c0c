"""The agent's configuration file (``agent.toml``): load, validate, hold.

Everything is checked before the agent touches anything: an unknown key, a
wrong type, a missing value or an out-of-range number becomes one
:class:`~agent.errors.ConfigError` that names the file, the key path and
what is expected::

    /etc/entra-agent/agent.toml: telemetry.interval must be a number of
    seconds >= 1, got "fast"

Secrets never live in this file: a ``password``-like key is refused with a
pointer to ``password_file``. Relative ``*_file`` paths are taken relative to
the config file's folder. ``deploy/agent.toml.example`` documents every key.

>>> config = load_config(Path("/etc/entra-agent/agent.toml"))  # doctest: +SKIP
>>> config.telemetry.interval
60.0
"""

from __future__ import annotations

import difflib
import errno
import json
import logging
import math
import re
import socket
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from agent.errors import ConfigError
from agent.net import is_loopback

__all__ = [
    "AgentConfig",
    "TelemetryConfig",
    "SensorConfig",
    "KeyConfig",
    "MqttConfig",
    "DisplayConfig",
    "ButtonConfig",
    "LedConfig",
    "TokenServiceConfig",
    "BUILTIN_SENSOR_OPTIONS",
    "DURABILITY_MODES",
    "EXAMPLE_HINT",
    "load_config",
    "check_endpoint",
]

log = logging.getLogger(__name__)

MIB = 1024 * 1024

DURABILITY_MODES = ("spill", "strict")

#: What to tell someone whose config file is missing or wrong.
EXAMPLE_HINT = "see deploy/agent.toml.example"

#: Keys that would put a secret in a world-readable file.
SECRET_KEYS = frozenset({
    "password", "passwd", "secret", "client_secret", "token", "access_token",
    "refresh_token", "api_key", "private_key",
})

#: Type-specific options of the built-in sensors (besides type, name, unit).
#: A third-party sensor type (entry-point group ``entra_agent.sensors``)
#: takes any options; its factory checks them.
BUILTIN_SENSOR_OPTIONS: dict[str, frozenset[str]] = {
    "cpu_temperature": frozenset({"path"}),
    "load_average": frozenset({"period", "path"}),
    "memory": frozenset({"report", "path"}),
    "disk_usage": frozenset({"report", "path"}),
    "uptime": frozenset({"path"}),
    "ds18b20": frozenset({"device", "base_dir"}),
    "command": frozenset({"command", "timeout"}),
}

# Names that end up in MQTT topics and file names: no '/', '+', '#', spaces.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DRIVER_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# A DNS name, an IPv4 address or an IPv6 address (no spaces, controls, '/').
_HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_.-]+$|^\[?[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?\]?$")


# --------------------------------------------------------------------------
# Values

@dataclass(frozen=True)
class TelemetryConfig:
    """``[telemetry]``: where readings go and how they are kept until then."""

    endpoint: str | None = None         # None: read sensors, keep readings, upload nothing
    interval: float = 60.0              # seconds between sensor readings
    batch_max: int = 500                # readings per POST at most
    durability: str = "spill"           # "spill" (SD-card friendly) or "strict"
    outbox_max_readings: int = 100_000  # readings kept at most; the oldest go first
    outbox_max_bytes: int = 50 * MIB    # bytes of readings kept at most (JSON size)
    timeout: float = 10.0               # seconds per HTTP request
    jitter: bool = True                 # spread the first upload of a fleet over one interval


@dataclass(frozen=True)
class KeyConfig:
    """``[sensors.keys.<key>]``: one value of a sensor that gives several.

    Each field left None takes the sensor's own (``unit``, ``device_class``...).
    """

    unit: str | None = None             # e.g. "%" for a "humidity" key
    device_class: str | None = None     # Home Assistant's sensor device class ("humidity")
    state_class: str | None = None      # "measurement", "total" or "total_increasing"
    label: str | None = None            # the name Home Assistant shows


@dataclass(frozen=True)
class SensorConfig:
    """One ``[[sensors]]`` entry.

    ``options`` holds the type-specific keys (``command``, ``timeout``,
    ``device``, ``path``...); ``name`` defaults to the type. ``keys`` gives
    the values of a multi-value sensor (reading ``<name>.<key>``) their own
    unit and Home Assistant classes.
    """

    type: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    unit: str | None = None             # overrides the sensor's own unit
    device_class: str | None = None     # Home Assistant's sensor device class
    state_class: str | None = None      # Home Assistant's state class
    label: str | None = None            # the name Home Assistant shows
    keys: dict[str, KeyConfig] = field(default_factory=dict)

    def key_units(self) -> dict[str, str]:
        """The units configured for single keys (``[sensors.keys.<key>] unit``)."""
        return {key: k.unit for key, k in self.keys.items() if k.unit is not None}


@dataclass(frozen=True)
class MqttConfig:
    """``[mqtt]``: the broker that hears the agent's state. Omit the table to disable."""

    host: str
    port: int = 1883                    # 8883 when tls = true and no port is given
    tls: bool = False
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    topic_prefix: str = "entra-agent"
    homeassistant_discovery: bool = False
    homeassistant_prefix: str = "homeassistant"   # Home Assistant's discovery prefix
    homeassistant_new_code_button: bool = False   # a "New sign-in code" button entity
    homeassistant_sign_out_button: bool = False   # a "Sign out" button entity (press twice)
    publish_user_code: bool = False
    keepalive: int = 60                 # seconds between MQTT pings
    connect_spread: float = 60.0        # seconds over which the first connect is spread
    reconnect_spread: float = 60.0      # seconds: the first reconnect window (it doubles, up to 5 min)

    def password(self) -> str | None:
        """The broker password read from ``password_file`` (no trailing newline).

        Returns None when no password file is set. A missing, unreadable,
        empty or world-readable file is a :class:`ConfigError` naming it.
        """
        if self.password_file is None:
            return None
        path = self.password_file
        try:
            info = path.stat()
            if info.st_mode & stat.S_IROTH:
                raise ConfigError(
                    f"{path}: the MQTT password file is readable by every user",
                    f"run: chmod 600 {path}",
                )
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: the MQTT password file does not exist",
                              "create it or fix mqtt.password_file") from None
        except PermissionError:
            raise ConfigError(f"{path}: the MQTT password file cannot be read (permission denied)",
                              "run the agent as root or fix the file's owner") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: the MQTT password file cannot be read: "
                              f"{type(exc).__name__}") from None
        password = text.rstrip("\r\n")
        if not password:
            raise ConfigError(f"{path}: the MQTT password file is empty",
                              "write the password on one line")
        return password


@dataclass(frozen=True)
class DisplayConfig:
    """``[display]``: the device's face. Keys follow luma's option names."""

    driver: str = "console"             # console | none | framebuffer | a luma device (ssd1306, sh1106, st7735...)
    interface: str = "i2c"              # i2c | spi
    i2c_port: int = 1
    i2c_address: str = "0x3C"
    spi_port: int = 0
    spi_device: int = 0
    width: int = 128                    # pixels
    height: int = 64                    # pixels
    rotate: int = 0                     # quarter turns, 0..3 (luma's rotate)
    framebuffer_device: str = "/dev/fb0"
    dim_after: float = 300.0            # seconds without news before dimming; 0 = never
    blank_after: float = 1800.0         # seconds before blanking; 0 = never
    extra: dict[str, Any] = field(default_factory=dict)  # more luma options, passed as is

    def as_settings(self) -> dict[str, Any]:
        """A plain mapping of every setting (``extra`` merged in), for
        :func:`hardware.display.open_presenter`."""
        settings: dict[str, Any] = {
            "driver": self.driver,
            "interface": self.interface,
            "i2c_port": self.i2c_port,
            "i2c_address": self.i2c_address,
            "spi_port": self.spi_port,
            "spi_device": self.spi_device,
            "width": self.width,
            "height": self.height,
            "rotate": self.rotate,
            "framebuffer_device": self.framebuffer_device,
            "dim_after": self.dim_after,
            "blank_after": self.blank_after,
        }
        settings.update(self.extra)
        return settings


@dataclass(frozen=True)
class ButtonConfig:
    """``[button]``: one push button (press: new code / wake; hold: sign out)."""

    pin: int | str                      # BCM number (17) or a gpiozero pin name ("GPIO17", "BOARD11")
    hold_seconds: float = 5.0           # seconds held before it counts as a hold


@dataclass(frozen=True)
class LedConfig:
    """``[led]``: an optional status LED."""

    pin: int | str


@dataclass(frozen=True)
class TokenServiceConfig:
    """``[token_service]``: the local managed-identity endpoint for other programs
    (:mod:`agent.tokenservice`). Off unless ``enabled = true``."""

    enabled: bool = False
    address: str = "127.0.0.1"          # loopback IPv4 only: 127.0.0.0/8
    port: int = 42424


@dataclass(frozen=True)
class AgentConfig:
    """The whole ``agent.toml``."""

    path: Path
    profile: str = "default"
    device_id: str = field(default_factory=socket.gethostname)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    sensors: list[SensorConfig] = field(default_factory=list)
    mqtt: MqttConfig | None = None
    display: DisplayConfig = field(default_factory=DisplayConfig)
    button: ButtonConfig | None = None
    led: LedConfig | None = None
    token_service: TokenServiceConfig = field(default_factory=TokenServiceConfig)


# --------------------------------------------------------------------------
# Checks shared with the uploader

def check_endpoint(url: str) -> str | None:
    """Why *url* is not acceptable as a telemetry endpoint, or None when it is.

    HTTPS is required except on loopback, where a local receiver may use HTTP.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # raises ValueError for a bad port
    except ValueError:
        return "a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return "an https:// URL"
    if parts.scheme == "http" and not is_loopback(host):
        return "an https:// URL (plain http is allowed only on loopback)"
    if parts.username or parts.password:
        return "a URL without credentials in it"
    return None


# --------------------------------------------------------------------------
# Validation

_REQUIRED = object()


def _show(value: Any) -> str:
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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Table:
    """Reads one TOML table, remembering which keys were used."""

    def __init__(self, file: Path, prefix: str, data: Any) -> None:
        self.file = file
        self.prefix = prefix
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: {prefix} must be a table, got {_show(data)}",
                              EXAMPLE_HINT)
        self.data = data
        self.used: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, key: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"{self.file}: {self.key(key)} must be {expected}, got {_show(value)}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.data.get(key, default)

    def get(self, key: str, expected: str, accept: Callable[[Any], bool],
            default: Any = _REQUIRED) -> Any:
        """The value of *key* when ``accept(value)``; else a ConfigError
        saying it "must be *expected*"."""
        self.used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
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

    def text(self, key: str, expected: str = "a text", default: Any = _REQUIRED,
             pattern: re.Pattern[str] | None = None) -> Any:
        return self.get(key, expected,
                        lambda v: isinstance(v, str) and v != ""
                        and (pattern is None or pattern.match(v) is not None),
                        default)

    def boolean(self, key: str, default: Any = _REQUIRED) -> Any:
        return self.get(key, "true or false", lambda v: isinstance(v, bool), default)

    def integer(self, key: str, expected: str, low: int, high: int | None = None,
                default: Any = _REQUIRED) -> Any:
        return self.get(key, expected,
                        lambda v: isinstance(v, int) and not isinstance(v, bool)
                        and v >= low and (high is None or v <= high), default)

    def number(self, key: str, expected: str, low: float, high: float | None = None,
               default: Any = _REQUIRED, low_inclusive: bool = True) -> Any:
        def accept(v: Any) -> bool:
            if not _is_number(v) or not math.isfinite(v):
                return False
            if v < low or (not low_inclusive and v == low):
                return False
            return high is None or v <= high
        value = self.get(key, expected, accept, default)
        return float(value) if _is_number(value) else value

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


def _telemetry(file: Path, data: Any) -> TelemetryConfig:
    t = _Table(file, "telemetry", data)
    endpoint = t.text("endpoint", "an https:// URL", default=None)
    if endpoint is not None and (reason := check_endpoint(endpoint)) is not None:
        raise t.fail("endpoint", reason, endpoint)
    config = TelemetryConfig(
        endpoint=endpoint,
        interval=t.number("interval", "a number of seconds >= 1", 1, 86400, default=60.0),
        batch_max=t.integer("batch_max", "a whole number from 1 to 10000", 1, 10000, default=500),
        durability=t.get("durability", 'either "spill" or "strict"',
                         lambda v: v in DURABILITY_MODES, default="spill"),
        outbox_max_readings=t.integer("outbox_max_readings",
                                      "a whole number from 100 to 100000000", 100, 100_000_000,
                                      default=100_000),
        outbox_max_bytes=t.integer("outbox_max_bytes",
                                   "a whole number of bytes from 65536 to 17179869184 (16 GiB)",
                                   65536, 16 * 1024 * MIB, default=50 * MIB),
        timeout=t.number("timeout", "a number of seconds > 0 and <= 300", 0, 300,
                         default=10.0, low_inclusive=False),
        jitter=t.boolean("jitter", default=True),
    )
    t.finish()
    return config


def _known_sensor_types() -> list[str]:
    # Entry points are listed, not loaded: check-config stays cheap and a
    # broken plugin fails where it is built, with its own message.
    from importlib.metadata import entry_points

    names = set(BUILTIN_SENSOR_OPTIONS)
    try:
        names.update(ep.name for ep in entry_points(group="entra_agent.sensors"))
    except Exception:  # a damaged site-packages must not hide the built-ins
        log.warning("cannot list sensor plugins", exc_info=True)
    return sorted(names)


def _sensor(file: Path, index: int, data: Any) -> SensorConfig:
    t = _Table(file, f"sensors[{index}]", data)
    known = _known_sensor_types()
    kind = t.text("type", "a sensor type: " + ", ".join(known))
    if kind not in known:
        close = difflib.get_close_matches(kind, known, n=1)
        raise ConfigError(str(t.fail("type", "one of " + ", ".join(known), kind)),
                          f"did you mean {_show(close[0])}? {EXAMPLE_HINT}" if close else EXAMPLE_HINT)
    name = t.text("name", "a name of letters, digits, '.', '_' or '-' (at most 64)",
                  default=kind, pattern=_NAME_RE)
    unit = t.get("unit", "a text (may be empty)", lambda v: isinstance(v, str), default=None)
    classes = _ha_classes(t, unit, unit_known=unit is not None or kind == "command")
    keys = _sensor_keys(t, unit, classes, unit_known=unit is not None or kind == "command")
    options: dict[str, Any] = {}
    if kind == "command":
        command = t.get("command", "a non-empty list of texts (the program and its arguments)",
                        lambda v: isinstance(v, list) and len(v) > 0
                        and all(isinstance(a, str) for a in v) and v[0] != "")
        options["command"] = list(command)
        options["timeout"] = t.number("timeout", "a number of seconds > 0 and <= 300", 0, 300,
                                      default=5.0, low_inclusive=False)
    elif kind == "ds18b20":
        device = t.text("device", 'a 1-wire device id such as "28-0316a2795eff"', default=None,
                        pattern=re.compile(r"^28-[0-9a-fA-F]{12}$"))
        if device is not None:
            options["device"] = device
        base_dir = t.text("base_dir", "a folder path", default=None)
        if base_dir is not None:
            options["base_dir"] = base_dir
    elif kind in BUILTIN_SENSOR_OPTIONS:
        allowed = BUILTIN_SENSOR_OPTIONS[kind]
        if "period" in allowed:
            options["period"] = t.get("period", "1, 5 or 15 (minutes)",
                                      lambda v: type(v) is int and v in (1, 5, 15),
                                      default=1)
        if kind == "memory":
            options["report"] = t.get("report", '"available_percent" or "available_mb"',
                                      lambda v: v in ("available_percent", "available_mb"),
                                      default="available_percent")
        if kind == "disk_usage":
            options["report"] = t.get("report", '"used_percent" or "free_mb"',
                                      lambda v: v in ("used_percent", "free_mb"),
                                      default="used_percent")
        if "path" in allowed:
            path = t.text("path", "a path", default=None)
            if path is not None:
                options["path"] = path
    else:
        # A plugin type: pass every other key to its factory as is.
        for key in list(t.data):
            if key not in t.used:
                options[key] = t.raw(key)
    t.finish()
    return SensorConfig(type=kind, name=name, options=options, unit=unit,
                        device_class=classes[0], state_class=classes[1], label=classes[2],
                        keys=keys)


def _ha_classes(t: _Table, unit: str | None, *, unit_known: bool,
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
                          f"did you mean {_show(close[0])}? {EXAMPLE_HINT}" if close
                          else "see the device classes of Home Assistant's sensor integration")
    state_class = t.get("state_class", "a text", lambda v: isinstance(v, str), default=None)
    if state_class is not None and state_class not in STATE_CLASSES:
        close = difflib.get_close_matches(state_class, list(STATE_CLASSES), n=1)
        raise ConfigError(str(t.fail("state_class", " or ".join(f'"{c}"' for c in STATE_CLASSES),
                                     state_class)),
                          f"did you mean {_show(close[0])}? {EXAMPLE_HINT}" if close else EXAMPLE_HINT)
    label = t.text("label", "a text of at most 64 characters", default=None,
                   pattern=re.compile(r"^[^\x00-\x1f\x7f]{1,64}$"))
    effective_class = device_class if device_class is not None else inherited[0]
    effective_state = state_class if state_class is not None else inherited[1]
    if effective_class is not None:
        units, states = SENSOR_DEVICE_CLASSES[effective_class]
        if effective_class in NON_NUMERIC_DEVICE_CLASSES:
            if effective_state is not None:
                raise t.fail("state_class", f"left out with device_class {_show(effective_class)} "
                             "(its state is not a number)", effective_state)
        elif unit_known and units is not None and (unit or "") not in units:
            shown = " or ".join(_show(u) for u in sorted(units) if u) or "left out"
            given = unit or ""
            close = ([u for u in units if u.lower() == given.lower()]
                     or difflib.get_close_matches(given, sorted(units), n=1))
            raise ConfigError(
                f"{t.file}: {t.key('unit')} must be {shown} for Home Assistant's device class "
                f"{_show(effective_class)}, got {_show(given)}",
                f"did you mean {_show(close[0])}?" if close and close[0]
                else "set a matching unit, or another device_class")
        if effective_state is not None and states is not None and effective_state not in states:
            raise t.fail("state_class", " or ".join(f'"{c}"' for c in sorted(states))
                         + f" with device_class {_show(effective_class)}", effective_state)
    return device_class, state_class, label


_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _sensor_keys(t: _Table, unit: str | None, classes: tuple[str | None, str | None, str | None],
                 *, unit_known: bool) -> dict[str, KeyConfig]:
    """``[sensors.keys.<key>]``: per-value unit, classes and label."""
    table = t.get("keys", "a table of [sensors.keys.<key>] tables", lambda v: isinstance(v, dict),
                  default={})
    keys: dict[str, KeyConfig] = {}
    for key, data in table.items():
        if not key or len(key) > 64 or any(ord(c) < 32 or c == "\x7f" for c in key):
            raise ConfigError(f"{t.file}: {t.key('keys')} has a key {_show(key)}: keys must be "
                              "1 to 64 printable characters", EXAMPLE_HINT)
        shown = key if _KEY_RE.match(key) else json.dumps(key, ensure_ascii=False)
        k = _Table(t.file, t.key(f"keys.{shown}"), data)
        own_unit = k.get("unit", "a text (may be empty)", lambda v: isinstance(v, str), default=None)
        effective_unit = own_unit if own_unit is not None else unit
        device_class, state_class, label = _ha_classes(
            k, effective_unit, unit_known=unit_known or own_unit is not None,
            inherited=(classes[0], classes[1]))
        k.finish()
        keys[key] = KeyConfig(unit=own_unit, device_class=device_class,
                              state_class=state_class, label=label)
    return keys


def _sensors(file: Path, data: Any) -> list[SensorConfig]:
    if not isinstance(data, list):
        raise ConfigError(f"{file}: sensors must be a list of [[sensors]] tables, got {_show(data)}",
                          EXAMPLE_HINT)
    sensors = [_sensor(file, i, item) for i, item in enumerate(data)]
    seen: dict[str, int] = {}
    for i, sensor in enumerate(sensors):
        if sensor.name in seen:
            raise ConfigError(
                f"{file}: sensors[{i}].name must be unique, got {_show(sensor.name)} "
                f"(also sensors[{seen[sensor.name]}])",
                "give each sensor its own name = \"...\"")
        seen[sensor.name] = i
    return sensors


def _mqtt(file: Path, data: Any) -> MqttConfig:
    t = _Table(file, "mqtt", data)
    host = t.text("host", "the broker's host name or address", pattern=_HOST_RE)
    tls = t.boolean("tls", default=False)
    port = t.integer("port", "a port number from 1 to 65535", 1, 65535,
                     default=8883 if tls else 1883)
    username = t.text("username", "a text", default=None)
    password_file = t.file_path("password_file")
    if password_file is not None and username is None:
        raise ConfigError(f"{file}: mqtt.username is missing: a password_file needs a username")
    ca_file = t.file_path("ca_file")
    cert_file = t.file_path("cert_file")
    key_file = t.file_path("key_file")
    if key_file is not None and cert_file is None:
        raise ConfigError(f"{file}: mqtt.cert_file is missing: a key_file needs its certificate")
    if (ca_file or cert_file) and not tls:
        raise ConfigError(f"{file}: mqtt.tls must be true when ca_file or cert_file is set, got false")
    if password_file is not None and not tls and not is_loopback(host):
        # MQTT sends the password in the CONNECT packet: in clear without TLS.
        raise ConfigError(
            f"{file}: mqtt.tls must be true when a password_file is used with a broker on "
            f"another host ({host}), got false",
            "the password would cross the network in clear: enable TLS on the broker "
            "(port 8883) and set tls = true")
    prefix = t.get("topic_prefix", "a topic prefix without '+', '#', or a leading/trailing '/'",
                   lambda v: isinstance(v, str) and v != "" and not set(v) & set("+#\0")
                   and not v.startswith("/") and not v.endswith("/") and "//" not in v,
                   default="entra-agent")
    config = MqttConfig(
        host=host, port=port, tls=tls, username=username, password_file=password_file,
        ca_file=ca_file, cert_file=cert_file, key_file=key_file, topic_prefix=prefix,
        homeassistant_discovery=t.boolean("homeassistant_discovery", default=False),
        homeassistant_prefix=t.get(
            "homeassistant_prefix", "a topic prefix of letters, digits, '_', '-' or '/' "
            "(no leading or trailing '/')",
            lambda v: isinstance(v, str) and re.match(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", v)
            is not None, default="homeassistant"),
        homeassistant_new_code_button=t.boolean("homeassistant_new_code_button", default=False),
        homeassistant_sign_out_button=t.boolean("homeassistant_sign_out_button", default=False),
        publish_user_code=t.boolean("publish_user_code", default=False),
        keepalive=t.integer("keepalive", "a whole number of seconds from 5 to 65535", 5, 65535,
                            default=60),
        connect_spread=t.number("connect_spread", "a number of seconds from 0 to 3600", 0, 3600,
                                default=60.0),
        reconnect_spread=t.number("reconnect_spread", "a number of seconds from 1 to 3600", 1, 3600,
                                  default=60.0),
    )
    t.finish()
    return config


def _display(file: Path, data: Any) -> DisplayConfig:
    t = _Table(file, "display", data)
    defaults = DisplayConfig()
    driver = t.get("driver", 'a display driver: "console", "none", "framebuffer" or a luma '
                   'device name such as "ssd1306"',
                   lambda v: isinstance(v, str) and _DRIVER_RE.match(v) is not None,
                   default=defaults.driver)
    interface = t.get("interface", '"i2c" or "spi"', lambda v: v in ("i2c", "spi"),
                      default=defaults.interface)
    address = t.get("i2c_address", 'an I2C address such as "0x3C"',
                    lambda v: (isinstance(v, str) and 0x03 <= int(v, 0) <= 0x77)
                    or (isinstance(v, int) and not isinstance(v, bool) and 0x03 <= v <= 0x77),
                    default=defaults.i2c_address)
    if isinstance(address, int):
        address = f"0x{address:02X}"
    extra = t.get("extra", "a table of more luma options", lambda v: isinstance(v, dict),
                  default={})
    config = DisplayConfig(
        driver=driver,
        interface=interface,
        i2c_port=t.integer("i2c_port", "a bus number >= 0", 0, 99, default=defaults.i2c_port),
        i2c_address=address,
        spi_port=t.integer("spi_port", "a port number >= 0", 0, 99, default=defaults.spi_port),
        spi_device=t.integer("spi_device", "a device number >= 0", 0, 99,
                             default=defaults.spi_device),
        width=t.integer("width", "a width in pixels from 8 to 4096", 8, 4096,
                        default=defaults.width),
        height=t.integer("height", "a height in pixels from 8 to 4096", 8, 4096,
                         default=defaults.height),
        rotate=t.get("rotate", "0, 1, 2 or 3 (quarter turns; 2 = upside down)",
                     lambda v: type(v) is int and v in (0, 1, 2, 3),
                     default=defaults.rotate),
        framebuffer_device=t.text("framebuffer_device", "a device path such as \"/dev/fb0\"",
                                  default=defaults.framebuffer_device),
        dim_after=t.number("dim_after", "a number of seconds >= 0 (0 = never)", 0,
                           default=defaults.dim_after),
        blank_after=t.number("blank_after", "a number of seconds >= 0 (0 = never)", 0,
                             default=defaults.blank_after),
        extra=dict(extra),
    )
    t.finish()
    clash = sorted(set(config.extra) & set(DisplayConfig.__dataclass_fields__))
    if clash:
        raise ConfigError(f"{file}: display.extra.{clash[0]} repeats a [display] key",
                          f"set display.{clash[0]} instead")
    if config.dim_after and config.blank_after and config.blank_after < config.dim_after:
        raise t.fail("blank_after", f"0 or >= display.dim_after ({config.dim_after:g})",
                     config.blank_after)
    return config


#: gpiozero pin names and the numbers each scheme has on a 40-pin header
#: (BCM/GPIO 0-53 on the SoC; BOARD/J8/P1: physical pins 1-40; WiringPi 0-31).
_PIN_NAME = re.compile(r"^(GPIO|BCM|BOARD|WPI|J8:|P1:)?([0-9]{1,2})$")
_PIN_RANGES = {"": (0, 53), "GPIO": (0, 53), "BCM": (0, 53), "BOARD": (1, 40),
               "J8:": (1, 40), "P1:": (1, 40), "WPI": (0, 31)}


def _is_pin(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return 0 <= value <= 53
    if not isinstance(value, str) or not (match := _PIN_NAME.match(value)):
        return False
    low, high = _PIN_RANGES[match.group(1) or ""]
    return low <= int(match.group(2)) <= high


def _pin(t: _Table) -> int | str:
    return t.get("pin", 'a BCM pin number from 0 to 53 or a gpiozero pin name like "GPIO17" '
                 'or "BOARD11"', _is_pin)


def _button(file: Path, data: Any) -> ButtonConfig:
    t = _Table(file, "button", data)
    config = ButtonConfig(
        pin=_pin(t),
        hold_seconds=t.number("hold_seconds", "a number of seconds from 0.5 to 60", 0.5, 60,
                              default=5.0),
    )
    t.finish()
    return config


def _led(file: Path, data: Any) -> LedConfig:
    t = _Table(file, "led", data)
    config = LedConfig(pin=_pin(t))
    t.finish()
    return config


def _token_service(file: Path, data: Any) -> TokenServiceConfig:
    t = _Table(file, "token_service", data)
    expected = "a loopback IPv4 address such as 127.0.0.1"
    address = t.text("address", expected, default="127.0.0.1")
    if not _is_loopback_address(address):
        # The endpoint hands out the signed-in person's tokens: never on a network.
        raise t.fail("address", f"{expected} (tokens are served to programs on this board only)",
                     address)
    config = TokenServiceConfig(
        enabled=t.boolean("enabled", default=False),
        address=address,
        port=t.integer("port", "a port number from 1024 to 65535", 1024, 65535, default=42424),
    )
    t.finish()
    return config


def _is_loopback_address(address: str) -> bool:
    """An IPv4 literal on loopback (not a name: what a name resolves to can change)."""
    import ipaddress
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return is_loopback(address)


def _read_toml(path: Path) -> dict[str, Any]:
    from agent.safefile import FileTooLarge, NotRegularFile, read_regular
    try:
        raw = read_regular(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file",
                          "copy deploy/agent.toml.example there, or run raspberry-pi-auth.sh") from None
    except NotRegularFile as exc:
        if exc.errno == errno.EISDIR:
            raise ConfigError(f"{path}: is a folder, not a config file",
                              "give the path of agent.toml") from None
        raise ConfigError(f"{path}: the config file {exc.strerror}",
                          "replace it with a regular file (see deploy/agent.toml.example)") from None
    except FileTooLarge as exc:
        raise ConfigError(f"{path}: the config file {exc.strerror}", EXAMPLE_HINT) from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read the config file (permission denied)",
                          "run as root or fix the file's mode") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the config file is not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already ends with "(at line N, column M)".
        raise ConfigError(f"{path}: not valid TOML: {exc}", EXAMPLE_HINT) from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply",
                          EXAMPLE_HINT) from None


def load_config(path: Path) -> AgentConfig:
    """Read and validate the agent config at *path*.

    Raises :class:`~agent.errors.ConfigError` (one line: file, key path,
    what is expected) for anything wrong; nothing is touched before that.
    """
    path = Path(path)
    data = _read_toml(path)
    top = _Table(path, "", data)
    profile = top.text("profile", "a profile name of letters, digits, '.', '_' or '-'",
                       default="default", pattern=_NAME_RE)
    device_id = top.get("device_id", "a name of letters, digits, '.', '_' or '-' (at most 64)",
                        lambda v: isinstance(v, str) and _NAME_RE.match(v) is not None,
                        default=None)
    if device_id is None:
        device_id = socket.gethostname().split(".")[0]
        if not _NAME_RE.match(device_id):
            raise ConfigError(f"{path}: device_id is missing and the hostname "
                              f"{_show(device_id)} cannot be used as one",
                              'set device_id = "..." (letters, digits, ".", "_", "-")')
    telemetry = _telemetry(path, top.raw("telemetry", {}))
    sensors = _sensors(path, top.raw("sensors", []))
    mqtt = _mqtt(path, top.raw("mqtt")) if top.has("mqtt") else None
    display = _display(path, top.raw("display", {}))
    button = _button(path, top.raw("button")) if top.has("button") else None
    led = _led(path, top.raw("led")) if top.has("led") else None
    token_service = _token_service(path, top.raw("token_service", {}))
    top.finish()
    config = AgentConfig(path=path, profile=profile, device_id=device_id, telemetry=telemetry,
                         sensors=sensors, mqtt=mqtt, display=display, button=button, led=led,
                         token_service=token_service)
    if button is not None and led is not None and button.pin == led.pin:
        raise ConfigError(f"{path}: led.pin must differ from button.pin, got {_show(led.pin)}")
    log.debug("loaded %s: profile %s, device %s, %d sensors", path, profile, device_id,
              len(sensors))
    return config
