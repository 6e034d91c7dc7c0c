"""The values of ``agent.toml``: one frozen dataclass per table, and the defaults.

Every default of the config lives here, once: the loader
(:mod:`agent.config.sections`) takes its defaults from these dataclasses,
and the parts that use a value (the outbox's durability modes, the screen's
dim and blank timeouts) import it from here.
"""

from __future__ import annotations

import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ConfigError

__all__ = [
    "AgentConfig", "TelemetryConfig", "SensorConfig", "KeyConfig", "MqttConfig",
    "DisplayConfig", "ButtonConfig", "LedConfig", "TokenServiceConfig",
    "DURABILITY_MODES", "DIM_AFTER", "BLANK_AFTER", "MIB", "MQTTS_PORT",
]

MIB = 1024 * 1024

#: How the outbox keeps readings (:mod:`agent.telemetry.outbox`).
DURABILITY_MODES = ("spill", "strict")

#: Seconds of an unchanged status screen before an OLED dims, and blanks (0: never).
DIM_AFTER = 300.0
BLANK_AFTER = 1800.0

#: The MQTT port with TLS, the default of ``[mqtt] port`` when ``tls = true``.
MQTTS_PORT = 8883


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
    port: int = 1883                    # MQTTS_PORT (8883) when tls = true and no port is given
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
    dim_after: float = DIM_AFTER        # seconds without news before dimming; 0 = never
    blank_after: float = BLANK_AFTER    # seconds before blanking; 0 = never
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
