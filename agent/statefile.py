"""``status.json``: the running agent's last known state, for ``entra-agent status``.

Written atomically (:func:`agent.fileio.write_atomic`, no fsync) with mode
0644 in the runtime folder (tmpfs on a board: no SD-card wear), and only
when its content changed. It never holds a token, a device code or the
user code: other local users may read it.

>>> write_status(paths.status_file(), {"state": "signed_in", "pid": 123})  # doctest: +SKIP
>>> read_status(paths.status_file())["state"]                             # doctest: +SKIP
'signed_in'
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.errors import AgentError, StorageError

__all__ = ["FILE_MODE", "StatusFileMissing", "write_status", "read_status", "pid_alive",
           "format_status"]

log = logging.getLogger(__name__)

FILE_MODE = 0o644        # readable by everyone: `entra-agent status` works without root

# Keys that must never reach a world-readable file, whatever a caller passes.
_FORBIDDEN = frozenset({"access_token", "refresh_token", "device_code", "user_code",
                        "id_token", "password"})


class StatusFileMissing(AgentError, FileNotFoundError):
    """No status file: the agent is not running (or never ran) here."""


def write_status(path: Path, status: Mapping[str, Any]) -> bool:
    """Write *status* to *path* atomically; False (and no write) when unchanged."""
    clean = {k: v for k, v in status.items() if k not in _FORBIDDEN}
    text = json.dumps(clean, indent=2, sort_keys=True) + "\n"
    from agent.fileio import write_if_changed
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not durable: the runtime folder is tmpfs, where an fsync only costs.
        return write_if_changed(path, text.encode("utf-8"), mode=FILE_MODE, durable=False)
    except OSError as exc:
        raise StorageError(f"{path}: cannot write the status file: {exc.strerror or exc}",
                           "check that the runtime folder exists and is writable") from None


def read_status(path: Path) -> dict[str, Any]:
    """The status at *path*; :class:`StatusFileMissing` when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StatusFileMissing(
            f"no status file at {path}: the agent is not running",
            "start it: systemctl start entra-agent (or: entra-agent run)") from None
    except OSError as exc:
        raise StorageError(f"{path}: cannot read the status file: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise StorageError(f"{path}: the status file is not JSON",
                           "restart the agent to rewrite it") from None
    if not isinstance(data, dict):
        raise StorageError(f"{path}: the status file is not a JSON object",
                           "restart the agent to rewrite it")
    return data


def pid_alive(pid: Any) -> bool:
    """True when a process with this id exists (any owner)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True          # exists, owned by someone else (root)
    return True


def format_status(status: Mapping[str, Any]) -> str:
    """*status* as a few human lines (the text output of ``entra-agent status``)."""
    lines = [f"state:        {status.get('state', '?')}"
             + (f" (since {status['since']})" if status.get("since") else "")]
    for key, label in (("device_id", "device"), ("profile", "profile"),
                       ("account", "account"), ("outbox_depth", "outbox"),
                       ("dropped", "dropped"), ("last_upload", "last upload"),
                       ("last_error", "last error"), ("mqtt_connected", "mqtt"),
                       ("verification_uri", "sign in at"), ("expires_at", "code expires"),
                       ("pid", "pid"), ("version", "version"), ("updated", "updated")):
        value = status.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            value = "connected" if value else "disconnected"
        lines.append(f"{label + ':':<13} {value}")
    return "\n".join(lines)
