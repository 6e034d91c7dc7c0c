"""The outbox's SQLite file: schema, opening, telling a full disk from damage, salvage.

Everything here works on a path or a connection and keeps no state; the
file's counters and connection are :class:`agent.telemetry.spillfile.SpillFile`'s,
the queue policy :class:`agent.telemetry.outbox.Outbox`'s.

A full or read-only disk is not damage: :func:`storage_trouble` says
``"storage full"``, ``"storage read-only"`` or ``"storage unavailable"`` for
the errors the disk causes (SQLite result codes, ``errno``), None for the
rest. Only a file that fails ``PRAGMA integrity_check`` is damaged, and
:func:`readable_rows` copies out of it what can still be read.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.errors import StorageError
from agent.fileio import fsync_dir
from agent.telemetry.sensors import Reading

__all__ = ["SCHEMA_VERSION", "Entry", "StorageUnavailable", "storage_trouble", "encode", "decode",
           "chunks", "transaction", "short", "prepare_file", "connect", "integrity_check",
           "readable_rows"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

#: A reading as kept: the reading, its JSON body, the body's size in bytes.
Entry = tuple[Reading, str, int]

# SQLite allows 999 bound variables in older builds: chunk "IN (...)" lists.
CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    seq  INTEGER PRIMARY KEY,          -- insertion order = age
    id   TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,                -- the reading as sent (JSON)
    size INTEGER NOT NULL              -- bytes of body, for the byte bound
);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq    INTEGER PRIMARY KEY,
    id     TEXT NOT NULL,
    body   TEXT NOT NULL,
    reason TEXT NOT NULL,
    at     REAL NOT NULL               -- wall time moved aside, epoch seconds
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

# SQLite's primary result codes (the low byte of sqlite_errorcode).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 13, 14
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_UNAVAILABLE_ERRNOS = {errno.EIO, errno.EROFS}


class StorageUnavailable(StorageError):
    """The outbox's disk cannot take writes now (full, read-only, I/O error); it is not damaged."""

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(f"{problem} ({detail})", "free space in the state folder; "
                         "readings are kept in memory meanwhile")
        self.problem = problem


def storage_trouble(exc: BaseException) -> str | None:
    """"storage full", "storage read-only" or "storage unavailable" when *exc*
    is the disk's doing (not damage, not a bug); None otherwise."""
    if isinstance(exc, StorageUnavailable):
        return exc.problem
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary == _SQLITE_FULL:
            return "storage full"
        if primary == _SQLITE_READONLY:
            return "storage read-only"
        if primary in (_SQLITE_IOERR, _SQLITE_CANTOPEN, _SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED):
            return "storage unavailable"
        return None
    if isinstance(exc, OSError) and not isinstance(exc, StorageError):
        if exc.errno in _FULL_ERRNOS:
            return "storage full"
        if exc.errno == errno.EROFS:
            return "storage read-only"
        if exc.errno in _UNAVAILABLE_ERRNOS:
            return "storage unavailable"
    return None


def encode(reading: Reading) -> Entry:
    """*reading* as kept: with its JSON body and the body's size."""
    body = json.dumps(reading.as_json(), separators=(",", ":"), ensure_ascii=False)
    return reading, body, len(body.encode("utf-8"))


def decode(body: str) -> Reading:
    return Reading.from_json(json.loads(body))


def chunks(items: list[str]) -> Iterable[list[str]]:
    """*items* in lists short enough for one ``IN (...)``."""
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


class transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        if kind is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:
            # (SQLite may have rolled back already: a full disk does that.)
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass


def short(exc: BaseException) -> str:
    """One line about *exc* for people (its message, or its type)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


def prepare_file(path: Path) -> None:
    """Create the database file 0600 (its folder 0700) or check the one there."""
    folder = path.parent
    created = False
    try:
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            created = True
        except FileExistsError:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError as exc:
        if (trouble := storage_trouble(exc)) is not None:
            raise StorageUnavailable(trouble, f"{path}: {exc.strerror}") from None
        raise StorageError(f"{path}: cannot create the outbox: "
                           f"{exc.strerror or type(exc).__name__}",
                           "check that the state folder is writable") from None
    if created:
        # The new name must survive a power cut too (SQLite fsyncs the
        # folder for its WAL, not for the database file it did not create).
        fsync_dir(folder)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StorageError(f"{path}: the outbox is not a regular file", "move it away")
        if info.st_mode & 0o077:
            log.warning("%s was readable by others; setting mode 0600", path)
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def connect(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode with ``synchronous=FULL``, the schema in place."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    # Both modes fsync the WAL at every commit: a returned add() (strict)
    # or spill() (spill) survives a power cut. Spill mode writes only when
    # uploads fail, so the fsyncs are rare.
    db.execute("PRAGMA synchronous=FULL")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    elif version > SCHEMA_VERSION:
        db.close()
        raise StorageError(f"{path}: the outbox was written by a newer agent "
                           f"(schema {version})", "upgrade the agent or move the file away")
    return db


def integrity_check(path: Path) -> str | None:
    """None when the file passes ``PRAGMA integrity_check``, else what is wrong.

    Raises :class:`StorageUnavailable` when the check cannot run for
    want of space or I/O (that says nothing about the file).
    """
    try:
        check = sqlite3.connect(path, isolation_level=None, timeout=10)
        try:
            rows = check.execute("PRAGMA integrity_check(20)").fetchall()
        finally:
            check.close()
    except sqlite3.DatabaseError as exc:
        if (trouble := storage_trouble(exc)) is not None:
            raise StorageUnavailable(trouble, f"{path}: {exc}") from None
        return str(exc)
    if rows == [("ok",)]:
        return None
    return "; ".join(str(row[0]) for row in rows[:3])


def readable_rows(path: Path) -> tuple[list[tuple[str, str, int]], dict[str, Any]]:
    """The readings (id, body, size) still readable in a damaged outbox file, oldest first.

    Reads by ranges of ``seq`` so a damaged page costs only the rows on it;
    every body must still decode as a reading. Meta counters are kept when
    readable.
    """
    rows: list[tuple[str, str, int]] = []
    meta: dict[str, Any] = {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=10)
    except sqlite3.Error:
        return rows, meta
    try:
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error:
            meta = {}
        try:
            low, high = db.execute("SELECT MIN(seq), MAX(seq) FROM readings").fetchone()
        except sqlite3.Error:
            low = high = None
        if low is None or high is None:
            return rows, meta
        step = 256
        start = int(low)
        while start <= high:
            try:
                chunk = db.execute("SELECT id, body FROM readings WHERE seq >= ? AND seq < ? "
                                   "ORDER BY seq", (start, start + step)).fetchall()
            except sqlite3.Error:
                chunk = []
                for seq in range(start, min(start + step, int(high) + 1)):
                    try:
                        chunk.extend(db.execute("SELECT id, body FROM readings WHERE seq = ?",
                                                (seq,)).fetchall())
                    except sqlite3.Error:
                        continue
            for rid, body in chunk:
                try:
                    reading = decode(body)
                except (TypeError, ValueError, KeyError, AttributeError):
                    continue
                if isinstance(rid, str) and reading.id == rid:
                    rows.append((rid, body, len(body.encode("utf-8"))))
            start += step
    finally:
        db.close()
    return rows, meta
