"""Reading ``agent.toml``: the file (bounded, never a FIFO), the TOML, the top level."""

from __future__ import annotations

import errno
import logging
import socket
import tomllib
from pathlib import Path
from typing import Any

from agent.config import sections
from agent.config import sensors as sensor_tables
from agent.config.sections import NAME_RE
from agent.config.table import EXAMPLE_HINT, Table, show
from agent.config.values import AgentConfig
from agent.errors import ConfigError

__all__ = ["load_config", "read_config_text", "parse_config_text"]

log = logging.getLogger("agent.config")


def read_config_text(path: Path) -> str:
    """The text of the config file at *path* (bounded, never blocking on a
    FIFO); :class:`~agent.errors.ConfigError` with the cause and the fix."""
    from agent.fileio import FileTooLarge, NotRegularFile, read_regular
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
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the config file is not UTF-8 text") from None


def parse_config_text(path: Path, text: str) -> dict[str, Any]:
    """*text* (of the config file *path*) as TOML; ConfigError naming the line."""
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
    data = parse_config_text(path, read_config_text(path))
    top = Table(path, "", data)
    profile = top.text("profile", "a profile name of letters, digits, '.', '_' or '-'",
                       default=AgentConfig.profile, pattern=NAME_RE)
    device_id = top.get("device_id", "a name of letters, digits, '.', '_' or '-' (at most 64)",
                        lambda v: isinstance(v, str) and NAME_RE.match(v) is not None,
                        default=None)
    if device_id is None:
        device_id = socket.gethostname().split(".")[0]
        if not NAME_RE.match(device_id):
            raise ConfigError(f"{path}: device_id is missing and the hostname "
                              f"{show(device_id)} cannot be used as one",
                              'set device_id = "..." (letters, digits, ".", "_", "-")')
    telemetry = sections.telemetry(path, top.raw("telemetry", {}))
    sensors = sensor_tables.sensors(path, top.raw("sensors", []))
    mqtt = sections.mqtt(path, top.raw("mqtt")) if top.has("mqtt") else None
    display = sections.display(path, top.raw("display", {}))
    button = sections.button(path, top.raw("button")) if top.has("button") else None
    led = sections.led(path, top.raw("led")) if top.has("led") else None
    token_service = sections.token_service(path, top.raw("token_service", {}))
    top.finish()
    config = AgentConfig(path=path, profile=profile, device_id=device_id, telemetry=telemetry,
                         sensors=sensors, mqtt=mqtt, display=display, button=button, led=led,
                         token_service=token_service)
    if button is not None and led is not None and button.pin == led.pin:
        raise ConfigError(f"{path}: led.pin must differ from button.pin, got {show(led.pin)}")
    log.debug("loaded %s: profile %s, device %s, %d sensors", path, profile, device_id,
              len(sensors))
    return config
