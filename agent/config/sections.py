"""The checks of ``[telemetry]``, ``[mqtt]``, ``[display]``, ``[button]``, ``[led]``
and ``[token_service]``. Defaults come from the dataclasses of
:mod:`agent.config.values`, never written here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.config.drivers import DRIVER_RE, driver_expected
from agent.config.table import Table
from agent.config.values import (
    DURABILITY_MODES,
    MIB,
    MQTTS_PORT,
    ButtonConfig,
    DisplayConfig,
    LedConfig,
    MqttConfig,
    TelemetryConfig,
    TokenServiceConfig,
)
from agent.errors import ConfigError
from agent.net import is_loopback

__all__ = ["check_endpoint", "telemetry", "mqtt", "display", "button", "led", "token_service",
           "NAME_RE"]

# Names that end up in MQTT topics and file names: no '/', '+', '#', spaces.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A DNS name, an IPv4 address or an IPv6 address (no spaces, controls, '/').
HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_.-]+$|^\[?[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?\]?$")


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


def telemetry(file: Path, data: Any) -> TelemetryConfig:
    t = Table(file, "telemetry", data)
    defaults = TelemetryConfig()
    endpoint = t.text("endpoint", "an https:// URL", default=None)
    if endpoint is not None and (reason := check_endpoint(endpoint)) is not None:
        raise t.fail("endpoint", reason, endpoint)
    config = TelemetryConfig(
        endpoint=endpoint,
        interval=t.number("interval", "a number of seconds >= 1", 1, 86400, default=defaults.interval),
        batch_max=t.integer("batch_max", "a whole number from 1 to 10000", 1, 10000, default=defaults.batch_max),
        durability=t.get("durability", 'either "spill" or "strict"',
                         lambda v: v in DURABILITY_MODES, default=defaults.durability),
        outbox_max_readings=t.integer("outbox_max_readings",
                                      "a whole number from 100 to 100000000", 100, 100_000_000,
                                      default=defaults.outbox_max_readings),
        outbox_max_bytes=t.integer("outbox_max_bytes",
                                   "a whole number of bytes from 65536 to 17179869184 (16 GiB)",
                                   65536, 16 * 1024 * MIB, default=defaults.outbox_max_bytes),
        timeout=t.number("timeout", "a number of seconds > 0 and <= 300", 0, 300,
                         default=defaults.timeout, low_inclusive=False),
        jitter=t.boolean("jitter", default=defaults.jitter),
    )
    t.finish()
    return config



def mqtt(file: Path, data: Any) -> MqttConfig:
    t = Table(file, "mqtt", data)
    defaults = MqttConfig(host="")
    host = t.text("host", "the broker's host name or address", pattern=HOST_RE)
    tls = t.boolean("tls", default=defaults.tls)
    port = t.integer("port", "a port number from 1 to 65535", 1, 65535,
                     default=MQTTS_PORT if tls else defaults.port)
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
                   default=defaults.topic_prefix)
    config = MqttConfig(
        host=host, port=port, tls=tls, username=username, password_file=password_file,
        ca_file=ca_file, cert_file=cert_file, key_file=key_file, topic_prefix=prefix,
        homeassistant_discovery=t.boolean("homeassistant_discovery",
                                          default=defaults.homeassistant_discovery),
        homeassistant_prefix=t.get(
            "homeassistant_prefix", "a topic prefix of letters, digits, '_', '-' or '/' "
            "(no leading or trailing '/')",
            lambda v: isinstance(v, str) and re.match(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", v)
            is not None, default=defaults.homeassistant_prefix),
        homeassistant_new_code_button=t.boolean("homeassistant_new_code_button",
                                                default=defaults.homeassistant_new_code_button),
        homeassistant_sign_out_button=t.boolean("homeassistant_sign_out_button",
                                                default=defaults.homeassistant_sign_out_button),
        publish_user_code=t.boolean("publish_user_code", default=defaults.publish_user_code),
        keepalive=t.integer("keepalive", "a whole number of seconds from 5 to 65535", 5, 65535,
                            default=defaults.keepalive),
        connect_spread=t.number("connect_spread", "a number of seconds from 0 to 3600", 0, 3600,
                                default=defaults.connect_spread),
        reconnect_spread=t.number("reconnect_spread", "a number of seconds from 1 to 3600", 1, 3600,
                                  default=defaults.reconnect_spread),
    )
    t.finish()
    return config


def display(file: Path, data: Any) -> DisplayConfig:
    t = Table(file, "display", data)
    defaults = DisplayConfig()
    driver = t.get("driver", driver_expected(),
                   lambda v: isinstance(v, str) and DRIVER_RE.match(v) is not None,
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


def _pin(t: Table) -> int | str:
    return t.get("pin", 'a BCM pin number from 0 to 53 or a gpiozero pin name like "GPIO17" '
                 'or "BOARD11"', _is_pin)


def button(file: Path, data: Any) -> ButtonConfig:
    t = Table(file, "button", data)
    config = ButtonConfig(
        pin=_pin(t),
        hold_seconds=t.number("hold_seconds", "a number of seconds from 0.5 to 60", 0.5, 60,
                              default=ButtonConfig.hold_seconds),
    )
    t.finish()
    return config


def led(file: Path, data: Any) -> LedConfig:
    t = Table(file, "led", data)
    config = LedConfig(pin=_pin(t))
    t.finish()
    return config


def token_service(file: Path, data: Any) -> TokenServiceConfig:
    t = Table(file, "token_service", data)
    expected = "a loopback IPv4 address such as 127.0.0.1"
    defaults = TokenServiceConfig()
    address = t.text("address", expected, default=defaults.address)
    if not _is_loopback_address(address):
        # The endpoint hands out the signed-in person's tokens: never on a network.
        raise t.fail("address", f"{expected} (tokens are served to programs on this board only)",
                     address)
    config = TokenServiceConfig(
        enabled=t.boolean("enabled", default=defaults.enabled),
        address=address,
        port=t.integer("port", "a port number from 1024 to 65535", 1024, 65535, default=defaults.port),
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

