"""Where the agent's files live, resolved the same way by every command.

So that a token saved by ``entra-auth-cli`` is the one ``entra-agent`` uses,
both resolve places here, in this order:

1. ``ENTRA_AGENT_CONFIG_DIR`` / ``ENTRA_AGENT_STATE_DIR`` /
   ``ENTRA_AGENT_RUNTIME_DIR`` (tests point these at temporary folders);
2. systemd's ``CONFIGURATION_DIRECTORY`` / ``STATE_DIRECTORY`` /
   ``RUNTIME_DIRECTORY`` when the unit sets them;
3. as root: ``/etc/entra-agent``, ``/var/lib/entra-agent``,
   ``/run/entra-agent``;
4. as any other user: ``$XDG_CONFIG_HOME/entra-agent``,
   ``$XDG_STATE_HOME/entra-agent``, ``$XDG_RUNTIME_DIR/entra-agent`` (with
   the XDG defaults when unset).

``ENTRA_AGENT_CONFIG`` names the agent's config file directly.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "entra-agent"

ROOT_CONFIG_DIR = Path("/etc") / APP
ROOT_STATE_DIR = Path("/var/lib") / APP
ROOT_RUNTIME_DIR = Path("/run") / APP


def _is_root() -> bool:
    return os.geteuid() == 0


def _systemd_dir(variable: str) -> Path | None:
    # systemd may list several directories separated by ':'; ours is first.
    value = os.environ.get(variable)
    if not value:
        return None
    return Path(value.split(":")[0])


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable)
    base = Path(value) if value else Path.home() / fallback
    return base / APP


def config_dir() -> Path:
    """Folder of ``agent.toml`` and ``profiles.toml``."""
    if value := os.environ.get("ENTRA_AGENT_CONFIG_DIR"):
        return Path(value)
    if found := _systemd_dir("CONFIGURATION_DIRECTORY"):
        return found
    if _is_root():
        return ROOT_CONFIG_DIR
    return _xdg("XDG_CONFIG_HOME", ".config")


def state_dir() -> Path:
    """Folder of persistent state: tokens and the outbox."""
    if value := os.environ.get("ENTRA_AGENT_STATE_DIR"):
        return Path(value)
    if found := _systemd_dir("STATE_DIRECTORY"):
        return found
    if _is_root():
        return ROOT_STATE_DIR
    return _xdg("XDG_STATE_HOME", ".local/state")


def runtime_dir() -> Path:
    """Folder of volatile state (tmpfs on a real board: no SD-card wear)."""
    if value := os.environ.get("ENTRA_AGENT_RUNTIME_DIR"):
        return Path(value)
    if found := _systemd_dir("RUNTIME_DIRECTORY"):
        return found
    if _is_root():
        return ROOT_RUNTIME_DIR
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / APP
    # No per-user tmpfs (e.g. a plain `su`): keep it beside the state.
    return state_dir() / "run"


def config_file() -> Path:
    """The agent's config file, ``agent.toml``."""
    if value := os.environ.get("ENTRA_AGENT_CONFIG"):
        return Path(value)
    return config_dir() / "agent.toml"


def profiles_file() -> Path:
    """The sign-in profiles, ``profiles.toml``."""
    return config_dir() / "profiles.toml"


def token_dir() -> Path:
    """Folder of the per-profile token files (kept 0700)."""
    return state_dir() / "tokens"


def outbox_file() -> Path:
    """The durable queue of readings not yet accepted."""
    return state_dir() / "outbox.sqlite3"


def homeassistant_file() -> Path:
    """The record of the Home Assistant entities announced (``agent.ha_announced``)."""
    return state_dir() / "homeassistant.json"


def status_file() -> Path:
    """The last known state of the running agent, for ``entra-agent status``."""
    return runtime_dir() / "status.json"
