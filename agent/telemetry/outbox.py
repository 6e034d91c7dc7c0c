"""The outbox: every reading waits here until the endpoint has accepted it.

Storage is SQLite in WAL mode (``outbox.sqlite3``, 0600, folder created
0700), bounded by a number of readings and by bytes (the JSON size of the
readings; the file is somewhat larger). When full, the oldest readings go
first and :attr:`Outbox.dropped` (persisted) says how many.

Two durability modes (``telemetry.durability``):

``spill`` (default)
    Readings stay in memory until an upload fails, :meth:`Outbox.spill` or
    :meth:`Outbox.close` is called, or ``max_memory_readings`` wait in
    memory. A healthy device writes nothing to its SD card: the database
    file is not even opened while it holds nothing. A SIGKILL or power loss
    loses at most the readings taken since the last spill (at most
    ``max_memory_readings``). Commits use ``synchronous=NORMAL``: in WAL mode
    a committed spill survives a crash of the agent; a power cut may undo the
    last spill, which is within what this mode promises anyway.
``strict``
    Every :meth:`Outbox.add` is committed with ``synchronous=FULL`` (the WAL
    is fsynced) before it returns: no accepted-for-keeping reading is lost to
    SIGKILL or power loss, at the cost of one small write per interval.

After a restart whatever was on disk is picked up again, oldest first.

Readings that the endpoint refuses for good are moved to a dead-letter table
(kept for inspection, bounded by :data:`DEAD_LETTER_KEEP`, counted in
:attr:`Outbox.dead_letters`).

>>> box = Outbox(Path("/var/lib/entra-agent/outbox.sqlite3"))   # doctest: +SKIP
>>> box.add(readings); batch = box.peek_batch(500)               # doctest: +SKIP
>>> box.ack([r.id for r in batch])                              # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import stat
import threading
import time
from collections import deque
from pathlib import Path
from typing import Iterable

from agent.errors import StorageError
from agent.telemetry.sensors import Reading

__all__ = ["Outbox", "DURABILITY_MODES", "DEAD_LETTER_KEEP", "MEMORY_READINGS_MAX", "SCHEMA_VERSION"]

log = logging.getLogger(__name__)

DURABILITY_MODES = ("spill", "strict")

#: Readings kept in memory (spill mode) before they are written anyway, so a
#: device that cannot upload for a long time (nobody signed in) does not
#: hold hours of readings only in RAM. At one reading a minute per sensor
#: this is a few hours for a handful of sensors; about 150 bytes each.
MEMORY_READINGS_MAX = 1000

#: Dead letters kept for inspection; older ones are deleted (still counted).
DEAD_LETTER_KEEP = 10_000

SCHEMA_VERSION = 1

# SQLite allows 999 bound variables in older builds: chunk "IN (...)" lists.
_CHUNK = 500

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


def _encode(reading: Reading) -> tuple[str, int]:
    body = json.dumps(reading.as_json(), separators=(",", ":"), ensure_ascii=False)
    return body, len(body.encode("utf-8"))


def _decode(body: str) -> Reading:
    return Reading.from_json(json.loads(body))


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


class Outbox:
    """A bounded, durable FIFO of readings (see the module docstring).

    *max_bytes* counts the JSON size of the readings. Thread-safe; meant for
    one producer (the sensor loop) and one consumer (the uploader).
    """

    def __init__(
        self,
        path: Path,
        *,
        durability: str = "spill",
        max_readings: int = 100_000,
        max_bytes: int = 50 * 1024 * 1024,
        max_memory_readings: int = MEMORY_READINGS_MAX,
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, got {durability!r}")
        if max_readings < 1 or max_bytes < 1 or max_memory_readings < 1:
            raise ValueError("outbox bounds must be >= 1")
        self.path = Path(path)
        self.durability = durability
        self.max_readings = max_readings
        self.max_bytes = max_bytes
        self.max_memory_readings = max_memory_readings
        self._lock = threading.RLock()
        self._memory: deque[tuple[Reading, str, int]] = deque()
        self._memory_bytes = 0
        self._db: sqlite3.Connection | None = None
        self._disk_count = 0
        self._disk_bytes = 0
        self._dropped = 0
        self._dead_letters = 0
        self._meta_dirty = False        # counters changed since last written
        self._newest_turn = False       # peek_batch alternates ends of a backlog
        self._closed = False
        if self.path.exists() or durability == "strict":
            self._open()
            if durability == "spill" and self._disk_count == 0:
                # Nothing waiting: let go of the file so a healthy device
                # does not touch it (no -wal/-shm churn either).
                self._close_db()

    # -- the database ------------------------------------------------------

    def _prepare_file(self) -> None:
        folder = self.path.parent
        try:
            if not folder.exists():
                folder.mkdir(mode=0o700, parents=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot create the outbox: "
                               f"{exc.strerror or type(exc).__name__}",
                               "check that the state folder is writable") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise StorageError(f"{self.path}: the outbox is not a regular file",
                                   "move it away")
            if info.st_mode & 0o077:
                log.warning("%s was readable by others; setting mode 0600", self.path)
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        # strict: fsync the WAL on every commit (power-loss safe);
        # spill: WAL commits survive a process crash, fsync at checkpoints.
        db.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'strict' else 'NORMAL'}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version > SCHEMA_VERSION:
            db.close()
            raise StorageError(f"{self.path}: the outbox was written by a newer agent "
                               f"(schema {version})", "upgrade the agent or move the file away")
        return db

    def _open(self) -> None:
        self._prepare_file()
        try:
            db = self._connect()
            count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM readings").fetchone()
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            # A damaged file must not stop the device: keep it for a person
            # to look at and start afresh.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("%s is damaged (%s); moved to %s, starting an empty outbox",
                      self.path, exc, aside)
            try:
                db.close()  # type: ignore[possibly-undefined]
            except Exception:
                pass
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    source.rename(f"{aside}{suffix}")
            self._prepare_file()
            db = self._connect()
            count, size, meta = 0, 0, {}
        self._db = db
        self._disk_count = count
        self._disk_bytes = size
        # Counters only grow; keep the larger of memory's and disk's.
        self._dropped = max(self._dropped, int(meta.get("dropped", 0)))
        self._dead_letters = max(self._dead_letters, int(meta.get("dead_letters", 0)))

    def _need_db(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageError(f"{self.path}: the outbox is closed")
        if self._db is None:
            self._open()
        assert self._db is not None
        return self._db

    def _close_db(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None

    def _write_meta(self, db: sqlite3.Connection) -> None:
        db.executemany("INSERT INTO meta(key, value) VALUES (?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                       [("dropped", self._dropped), ("dead_letters", self._dead_letters)])
        self._meta_dirty = False

    # -- bounds ------------------------------------------------------------

    def _over(self) -> tuple[int, int]:
        """(readings, bytes) above the bounds."""
        count = self._disk_count + len(self._memory)
        size = self._disk_bytes + self._memory_bytes
        return max(0, count - self.max_readings), max(0, size - self.max_bytes)

    def _make_room(self, db: sqlite3.Connection | None) -> int:
        """Drop the oldest readings until within bounds; returns how many.

        Called inside the caller's transaction when *db* is given.
        """
        extra_count, extra_bytes = self._over()
        dropped = 0
        while (extra_count > 0 or extra_bytes > 0) and self._disk_count > 0 and db is not None:
            rows = db.execute("SELECT seq, size FROM readings ORDER BY seq LIMIT ?",
                              (max(extra_count, _CHUNK),)).fetchall()
            last_seq = None
            for seq, size in rows:
                if extra_count <= 0 and extra_bytes <= 0:
                    break
                last_seq = seq
                extra_count -= 1
                extra_bytes -= size
                self._disk_count -= 1
                self._disk_bytes -= size
                dropped += 1
            if last_seq is None:
                break
            db.execute("DELETE FROM readings WHERE seq <= ?", (last_seq,))
        while (extra_count > 0 or extra_bytes > 0) and self._memory:
            _, _, size = self._memory.popleft()
            self._memory_bytes -= size
            extra_count -= 1
            extra_bytes -= size
            dropped += 1
        if dropped:
            self._dropped += dropped
            self._meta_dirty = True
            log.warning("outbox full: dropped the %d oldest readings (%d in all)",
                        dropped, self._dropped)
        return dropped

    # -- the API -------------------------------------------------------------

    def add(self, readings: list[Reading]) -> None:
        """Keep *readings* until they are acknowledged.

        In ``strict`` mode they are committed to disk (fsync) before this
        returns. When the outbox is full the oldest readings are dropped.
        """
        if not readings:
            return
        encoded = [(reading, *_encode(reading)) for reading in readings]
        with self._lock:
            if self._closed:
                raise StorageError(f"{self.path}: the outbox is closed")
            if self.durability == "strict":
                db = self._need_db()
                with _transaction(db):
                    before = db.total_changes
                    db.executemany("INSERT OR IGNORE INTO readings(id, body, size) VALUES (?, ?, ?)",
                                   [(r.id, body, size) for r, body, size in encoded])
                    added = db.total_changes - before
                    # Ignored duplicates add nothing; count only the new rows.
                    if added == len(encoded):
                        self._disk_count += added
                        self._disk_bytes += sum(size for _, _, size in encoded)
                    else:
                        self._disk_count, self._disk_bytes = db.execute(
                            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM readings").fetchone()
                    self._make_room(db)
                    if self._meta_dirty:
                        self._write_meta(db)
                return
            for item in encoded:
                self._memory.append(item)
                self._memory_bytes += item[2]
            if self._over() != (0, 0):
                if self._disk_count > 0:
                    db = self._need_db()
                    with _transaction(db):
                        self._make_room(db)
                        self._write_meta(db)
                else:
                    self._make_room(None)
            if len(self._memory) >= self.max_memory_readings:
                self.spill()

    def peek_batch(self, max_count: int) -> list[Reading]:
        """Up to *max_count* waiting readings, oldest first; nothing is removed.

        When more than *max_count* wait (a backlog), every other batch (the
        turn changes with each :meth:`ack`) takes the newest readings
        instead, so fresh values reach the endpoint while the backlog drains
        at full batch size from its old end. Peeking again without an ack
        (a retry) gives the same batch.
        """
        if max_count < 1:
            return []
        with self._lock:
            total = self._disk_count + len(self._memory)
            if total == 0:
                return []
            if total > max_count and self._newest_turn:
                fresh = [r for r, _, _ in itertools.islice(reversed(self._memory), max_count)]
                rest = max_count - len(fresh)
                older: list[Reading] = []
                if rest > 0 and self._disk_count > 0:
                    rows = self._need_db().execute(
                        "SELECT body FROM readings ORDER BY seq DESC LIMIT ?", (rest,)).fetchall()
                    older = [_decode(body) for (body,) in rows]
                older.reverse()
                fresh.reverse()
                return older + fresh
            batch: list[Reading] = []
            if self._disk_count > 0:
                rows = self._need_db().execute(
                    "SELECT body FROM readings ORDER BY seq LIMIT ?", (max_count,)).fetchall()
                batch = [_decode(body) for (body,) in rows]
            room = max_count - len(batch)
            if room > 0:
                batch.extend(r for r, _, _ in itertools.islice(self._memory, room))
            return batch

    def ack(self, ids: list[str]) -> None:
        """The endpoint accepted these readings: forget them (unknown ids are ignored)."""
        if not ids:
            return
        with self._lock:
            self._remove(list(ids), reason=None)
            self._newest_turn = not self._newest_turn

    def dead_letter(self, ids: list[str], reason: str) -> None:
        """Move these readings aside for good (the endpoint refuses them).

        They are kept in the ``dead_letters`` table for inspection (the
        newest :data:`DEAD_LETTER_KEEP`) and counted in :attr:`dead_letters`.
        """
        if not ids:
            return
        with self._lock:
            self._remove(list(ids), reason=reason.splitlines()[0][:500] if reason else "refused")

    def _remove(self, ids: list[str], reason: str | None) -> None:
        wanted = set(ids)
        from_memory = [item for item in self._memory if item[0].id in wanted]
        if from_memory:
            self._memory = deque(item for item in self._memory if item[0].id not in wanted)
            self._memory_bytes -= sum(size for _, _, size in from_memory)
        if reason is None and self._disk_count == 0:
            return                       # the healthy path: memory only, no disk
        if reason is None and from_memory and len(from_memory) == len(wanted):
            return                       # all were in memory
        db = self._need_db()
        now = time.time()
        with _transaction(db):
            moved = 0
            in_memory = {r.id for r, _, _ in from_memory}
            on_disk = [i for i in ids if i not in in_memory]
            for chunk in _chunks(on_disk):
                marks = ",".join("?" * len(chunk))
                count, size = db.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM readings WHERE id IN ({marks})",
                    chunk).fetchone()
                if not count:
                    continue
                if reason is not None:
                    db.execute(f"INSERT INTO dead_letters(id, body, reason, at) "
                               f"SELECT id, body, ?, ? FROM readings WHERE id IN ({marks})",
                               [reason, now, *chunk])
                    moved += count
                db.execute(f"DELETE FROM readings WHERE id IN ({marks})", chunk)
                self._disk_count -= count
                self._disk_bytes -= size
            if reason is not None and from_memory:
                # Memory holds the newer readings: they go aside after the disk's.
                db.executemany("INSERT INTO dead_letters(id, body, reason, at) VALUES (?, ?, ?, ?)",
                               [(r.id, body, reason, now) for r, body, _ in from_memory])
                moved += len(from_memory)
            if moved:
                self._dead_letters += moved
                db.execute("DELETE FROM dead_letters WHERE seq <= "
                           "(SELECT MAX(seq) FROM dead_letters) - ?", (DEAD_LETTER_KEEP,))
                self._meta_dirty = True
                log.warning("moved %d readings to the dead-letter table: %s", moved, reason)
            if self._meta_dirty:
                self._write_meta(db)

    def spill(self) -> int:
        """Write the readings held in memory to disk; returns how many.

        Called by the uploader when an upload fails, and by :meth:`close`.
        Does not touch the disk when there is nothing new to write.
        """
        with self._lock:
            if self._closed:
                return 0
            if not self._memory and not (self._meta_dirty and self._db is not None):
                return 0
            db = self._need_db()
            items = list(self._memory)
            with _transaction(db):
                before = db.total_changes
                db.executemany("INSERT OR IGNORE INTO readings(id, body, size) VALUES (?, ?, ?)",
                               [(r.id, body, size) for r, body, size in items])
                added = db.total_changes - before
                self._memory.clear()
                self._memory_bytes = 0
                if added == len(items):
                    self._disk_count += added
                    self._disk_bytes += sum(size for _, _, size in items)
                else:
                    self._disk_count, self._disk_bytes = db.execute(
                        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM readings").fetchone()
                self._make_room(db)
                self._write_meta(db)
            if items:
                log.debug("spilled %d readings to %s (%d on disk)", len(items), self.path,
                         self._disk_count)
            return len(items)

    def depth(self) -> int:
        """Readings waiting, in memory and on disk."""
        with self._lock:
            return self._disk_count + len(self._memory)

    def size_bytes(self) -> int:
        """JSON bytes of the readings waiting (what ``max_bytes`` bounds)."""
        with self._lock:
            return self._disk_bytes + self._memory_bytes

    def on_disk(self) -> int:
        """Readings waiting on disk (the rest are in memory)."""
        with self._lock:
            return self._disk_count

    @property
    def dropped(self) -> int:
        """Readings dropped, oldest first, because the outbox was full (since it was created)."""
        with self._lock:
            return self._dropped

    @property
    def dead_letters(self) -> int:
        """Readings moved to the dead-letter table (since the outbox was created)."""
        with self._lock:
            return self._dead_letters

    def close(self) -> None:
        """Spill what is in memory and close the file. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            try:
                self.spill()
            finally:
                self._closed = True
                self._close_db()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Outbox({str(self.path)!r}, durability={self.durability!r}, "
                f"depth={self.depth()}, on_disk={self._disk_count})")


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        if kind is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
