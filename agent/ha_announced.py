"""The record of Home Assistant discovery configs this device announced.

Kept in ``<state dir>/homeassistant.json`` so that an entity announced by an
earlier run and gone from the config (a sensor removed or renamed, the code
entity after ``publish_user_code`` was turned off, a changed discovery
prefix) is removed from Home Assistant, also after a restart. Written
atomically (:func:`agent.fileio.write_if_changed`) and only when its content
changed, so a steady device writes nothing to its SD card.

The file is input like any other: its size is bounded, and anything that is
not the expected shape is ignored (with one warning) as if there were no
record.

>>> save_announced(path, {"@state": {"topic": "homeassistant/sensor/dev/state/config",
...                                   "object_id": "state"}})      # doctest: +SKIP
True
>>> load_announced(path)["@state"]["object_id"]                      # doctest: +SKIP
'state'
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

from agent.errors import StorageError

__all__ = ["FILE_NAME", "MAX_FILE_BYTES", "load_announced", "save_announced"]

log = logging.getLogger(__name__)

FILE_NAME = "homeassistant.json"
MAX_FILE_BYTES = 1024 * 1024          # far above any real device's few dozen entities
_VERSION = 1
_TOPIC_RE = re.compile(r"^[A-Za-z0-9_/-]{1,512}/config$")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")

Record = dict[str, dict[str, str]]


def _valid(data: object) -> Record | None:
    if not isinstance(data, dict) or data.get("version") != _VERSION:
        return None
    entities = data.get("entities")
    if not isinstance(entities, dict):
        return None
    record: Record = {}
    for key, entry in entities.items():
        if not isinstance(key, str) or not isinstance(entry, dict):
            return None
        topic, oid = entry.get("topic"), entry.get("object_id")
        if not isinstance(topic, str) or not _TOPIC_RE.match(topic):
            return None
        clean = {"topic": topic}
        if oid is not None:
            if not isinstance(oid, str) or not _ID_RE.match(oid):
                return None
            clean["object_id"] = oid
        record[key] = clean
    return record


def load_announced(path: Path) -> Record | None:
    """The record at *path*; None when there is none or it cannot be used."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("%s: cannot read the Home Assistant record: %s", path,
                    exc.strerror or type(exc).__name__)
        return None
    record = None
    if len(raw) <= MAX_FILE_BYTES:
        try:
            record = _valid(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, ValueError):
            record = None
    if record is None:
        log.warning("%s: not a Home Assistant record this version can read; ignoring it", path)
    return record


def _text(record: Mapping[str, Mapping[str, str]]) -> str:
    return json.dumps({"version": _VERSION, "entities": {k: dict(v) for k, v in record.items()}},
                      indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def save_announced(path: Path, record: Mapping[str, Mapping[str, str]]) -> bool:
    """Write *record* to *path* atomically; False (and no write) when unchanged.

    Raises :class:`~agent.errors.StorageError` when the folder cannot be written.
    """
    text = _text(record)
    from agent.fileio import write_if_changed
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_if_changed(path, text.encode("utf-8"), mode=0o600, limit=MAX_FILE_BYTES)
    except OSError as exc:
        raise StorageError(f"{path}: cannot write the Home Assistant record: "
                           f"{exc.strerror or exc}",
                           "check that the state folder exists and is writable") from None
