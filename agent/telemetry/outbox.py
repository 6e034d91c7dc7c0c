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
    ``max_memory_readings``): a spill that returned is on the medium, since
    every commit uses ``synchronous=FULL`` (the WAL is fsynced at commit, the
    folder when the files are created). Spills are rare, so their fsync costs
    little (``bench/spill_fsync.py``).
``strict``
    Every :meth:`Outbox.add` is committed with ``synchronous=FULL`` (the WAL
    is fsynced) before it returns: no accepted-for-keeping reading is lost to
    SIGKILL or power loss, at the cost of one small write per interval.

A full or read-only disk is not damage. When a write fails for want of
space (or the file system turned read-only, or an I/O error), the database
is kept as it is, new readings stay in memory (at most
:data:`UNSAVED_READINGS_MAX`, oldest dropped first), :attr:`Outbox.storage_problem`
says ``"storage full: ..."`` (the service tells it once, on MQTT, in
``status.json`` and on the screen), and the next write tries again, so the
outbox carries on by itself when space returns. Only a file that fails
``PRAGMA integrity_check`` is moved aside (``outbox.sqlite3.corrupt-<time>``),
after the readings still readable in it are copied into the new one.

After a restart whatever was on disk is picked up again, oldest first.

Readings that the endpoint refuses for good are moved to a dead-letter table
(kept for inspection, bounded by :data:`DEAD_LETTER_KEEP`, counted in
:attr:`Outbox.dead_letters`).

>>> box = Outbox(Path("/var/lib/entra-agent/outbox.sqlite3"))   # doctest: +SKIP
>>> box.add(readings); batch = box.peek_batch(500)               # doctest: +SKIP
>>> box.ack([r.id for r in batch])                              # doctest: +SKIP
"""

from __future__ import annotations

import errno
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

from agent.config.values import DURABILITY_MODES
from agent.errors import StorageError
from agent.telemetry.sensors import Reading

__all__ = ["Outbox", "StorageUnavailable", "DURABILITY_MODES", "DEAD_LETTER_KEEP",
           "MEMORY_READINGS_MAX", "UNSAVED_READINGS_MAX", "SCHEMA_VERSION"]

log = logging.getLogger(__name__)

#: Readings kept in memory (spill mode) before they are written anyway, so a
#: device that cannot upload for a long time (nobody signed in) does not
#: hold hours of readings only in RAM. At one reading a minute per sensor
#: this is a few hours for a handful of sensors; about 150 bytes each.
MEMORY_READINGS_MAX = 1000

#: Readings kept in memory while the disk cannot take them (full, read-only):
#: about 1.5 MB of JSON; past it the oldest go first (counted in ``dropped``).
UNSAVED_READINGS_MAX = 10_000

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


def _storage_trouble(exc: BaseException) -> str | None:
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
        self._storage_problem: str | None = None   # "storage full: ..." while writes fail
        self._acked_unsaved: set[str] = set()       # acked on disk rows whose DELETE failed
        self.recovered = 0              # readings copied out of a damaged file at open
        if self.path.exists() or durability == "strict":
            try:
                self._open()
            except (StorageError, sqlite3.Error, OSError) as exc:
                if _storage_trouble(exc) is None:
                    raise
                self._storage_failed(exc)      # carry on in memory; retried at each write
            if durability == "spill" and self._disk_count == 0:
                # Nothing waiting: let go of the file so a healthy device
                # does not touch it (no -wal/-shm churn either).
                self._close_db()

    # -- the database ------------------------------------------------------

    def _prepare_file(self) -> None:
        folder = self.path.parent
        created = False
        try:
            if not folder.exists():
                folder.mkdir(mode=0o700, parents=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                created = True
            except FileExistsError:
                fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError as exc:
            if (trouble := _storage_trouble(exc)) is not None:
                raise StorageUnavailable(trouble, f"{self.path}: {exc.strerror}") from None
            raise StorageError(f"{self.path}: cannot create the outbox: "
                               f"{exc.strerror or type(exc).__name__}",
                               "check that the state folder is writable") from None
        if created:
            # The new name must survive a power cut too (SQLite fsyncs the
            # folder for its WAL, not for the database file it did not create).
            _fsync_folder(folder)
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
            raise StorageError(f"{self.path}: the outbox was written by a newer agent "
                               f"(schema {version})", "upgrade the agent or move the file away")
        return db

    def _open(self) -> None:
        """Open (or create) the database. Raises :class:`StorageUnavailable`
        when the disk cannot take it now; a damaged file is set aside."""
        self._prepare_file()
        db: sqlite3.Connection | None = None
        try:
            db = self._connect()
            count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM readings").fetchone()
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            if db is not None:
                try:
                    db.close()
                except sqlite3.Error:
                    pass
            if (trouble := _storage_trouble(exc)) is not None:
                raise StorageUnavailable(trouble, f"{self.path}: {exc}") from None
            verdict = self._integrity_check()
            if verdict is None:
                # Sound, yet it failed: not ours to throw away (a newer schema...).
                raise StorageError(f"{self.path}: the outbox cannot be opened ({exc})",
                                   "move it away if it is not needed") from None
            db, count, size, meta = self._set_aside(f"{exc}; integrity_check: {verdict}")
        self._db = db
        self._disk_count = count
        self._disk_bytes = size
        # Counters only grow; keep the larger of memory's and disk's.
        self._dropped = max(self._dropped, int(meta.get("dropped", 0)))
        self._dead_letters = max(self._dead_letters, int(meta.get("dead_letters", 0)))

    def _integrity_check(self) -> str | None:
        """None when the file passes ``PRAGMA integrity_check``, else what is wrong.

        Raises :class:`StorageUnavailable` when the check cannot run for
        want of space or I/O (that says nothing about the file).
        """
        try:
            check = sqlite3.connect(self.path, isolation_level=None, timeout=10)
            try:
                rows = check.execute("PRAGMA integrity_check(20)").fetchall()
            finally:
                check.close()
        except sqlite3.DatabaseError as exc:
            if (trouble := _storage_trouble(exc)) is not None:
                raise StorageUnavailable(trouble, f"{self.path}: {exc}") from None
            return str(exc)
        if rows == [("ok",)]:
            return None
        return "; ".join(str(row[0]) for row in rows[:3])

    def _set_aside(self, why: str) -> tuple[sqlite3.Connection, int, int, dict]:
        """Move a damaged file aside, start a new one, and copy into it what is still readable."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                source.rename(f"{aside}{suffix}")
        rows, meta = _readable_rows(aside)
        self._prepare_file()
        db = self._connect()
        with _transaction(db):
            db.executemany("INSERT OR IGNORE INTO readings(id, body, size) VALUES (?, ?, ?)", rows)
        count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM readings").fetchone()
        self.recovered = count
        log.error("%s is damaged (%s); moved to %s, %d readings recovered from it into a new outbox",
                  self.path, why, aside, count)
        return db, count, size, meta

    def _storage_failed(self, exc: BaseException) -> None:
        """Remember (and log once) that the disk cannot take writes now."""
        trouble = _storage_trouble(exc) or "storage unavailable"
        problem = f"{trouble}: {self.path.parent} ({_short(exc)})"
        if self._storage_problem is None:
            log.error("outbox: %s; keeping new readings in memory (at most %d) until it can write again",
                      problem, UNSAVED_READINGS_MAX)
        self._storage_problem = problem

    def _storage_ok(self) -> None:
        if self._storage_problem is not None:
            log.warning("outbox: the state folder takes writes again; %d readings on disk",
                        self._disk_count)
            self._storage_problem = None

    @property
    def storage_problem(self) -> str | None:
        """``"storage full: <folder> (...)"`` (or read-only, unavailable) while the
        disk cannot take the readings; None when all is well."""
        with self._lock:
            return self._storage_problem

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
            if self.durability == "strict" and self._memory:
                self.spill()                 # readings kept while the disk was full
            if self.durability == "strict" and not self._memory:
                try:
                    self._add_strict(encoded)
                    self._storage_ok()
                    return
                except (StorageError, sqlite3.Error, OSError) as exc:
                    if _storage_trouble(exc) is None:
                        raise
                    self._storage_failed(exc)
            self._add_memory(encoded)

    def _add_strict(self, encoded: list[tuple[Reading, str, int]]) -> None:
        db = self._need_db()
        saved = self._counters()
        try:
            with _transaction(db):
                self._insert(db, encoded)
                self._make_room(db)
                if self._meta_dirty:
                    self._write_meta(db)
        except BaseException:
            self._restore(saved)       # nothing was committed
            raise

    def _insert(self, db: sqlite3.Connection, encoded: list[tuple[Reading, str, int]]) -> None:
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

    def _counters(self) -> tuple[int, int, int, int, bool]:
        return (self._disk_count, self._disk_bytes, self._dropped, self._dead_letters,
                self._meta_dirty)

    def _restore(self, saved: tuple[int, int, int, int, bool]) -> None:
        (self._disk_count, self._disk_bytes, self._dropped, self._dead_letters,
         self._meta_dirty) = saved

    def _add_memory(self, encoded: list[tuple[Reading, str, int]]) -> None:
        for item in encoded:
            self._memory.append(item)
            self._memory_bytes += item[2]
        if self._over() != (0, 0):
            made_room = False
            if self._disk_count > 0 and self._storage_problem is None:
                try:
                    db = self._need_db()
                    with _transaction(db):
                        self._make_room(db)
                        self._write_meta(db)
                    made_room = True
                except (StorageError, sqlite3.Error, OSError) as exc:
                    if _storage_trouble(exc) is None:
                        raise
                    self._storage_failed(exc)
            if not made_room:
                self._make_room(None)
        if len(self._memory) >= self.max_memory_readings or self._storage_problem is not None:
            # (While the disk is full, every add tries again: it carries on
            # by itself when space returns.)
            self.spill()
        if self._storage_problem is not None and len(self._memory) > UNSAVED_READINGS_MAX:
            self._drop_unsaved(len(self._memory) - UNSAVED_READINGS_MAX)

    def _drop_unsaved(self, count: int) -> None:
        for _ in range(count):
            _, _, size = self._memory.popleft()
            self._memory_bytes -= size
        self._dropped += count
        self._meta_dirty = True
        log.warning("outbox: the disk is full and memory holds %d readings: dropped the %d oldest",
                    len(self._memory), count)

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
            total = self.depth()
            if total == 0:
                return []
            if total > max_count and self._newest_turn:
                fresh = [r for r, _, _ in itertools.islice(reversed(self._memory), max_count)]
                rest = max_count - len(fresh)
                older: list[Reading] = []
                if rest > 0 and self.on_disk() > 0:
                    older = self._disk_rows("DESC", rest)
                older.reverse()
                fresh.reverse()
                return older + fresh
            batch: list[Reading] = []
            if self.on_disk() > 0:
                batch = self._disk_rows("ASC", max_count)
            room = max_count - len(batch)
            if room > 0:
                batch.extend(r for r, _, _ in itertools.islice(self._memory, room))
            return batch

    def _disk_rows(self, order: str, count: int) -> list[Reading]:
        """Up to *count* readings from disk, oldest (ASC) or newest (DESC) first;
        none when the disk cannot be read now (memory goes on meanwhile)."""
        skip = self._acked_unsaved
        try:
            rows = self._need_db().execute(
                f"SELECT id, body FROM readings ORDER BY seq {order} LIMIT ?",
                (count + len(skip),)).fetchall()
        except (StorageError, sqlite3.Error, OSError) as exc:
            if _storage_trouble(exc) is None:
                raise
            self._storage_failed(exc)
            return []
        return [_decode(body) for rid, body in rows if rid not in skip][:count]

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
        saved = self._counters()
        try:
            self._remove_on_disk(ids, reason, from_memory)
        except (StorageError, sqlite3.Error, OSError) as exc:
            self._restore(saved)
            if _storage_trouble(exc) is None:
                raise
            self._storage_failed(exc)
            in_memory = {r.id for r, _, _ in from_memory}
            if reason is None:
                # Accepted: never sent again; deleted at the next write that works.
                self._acked_unsaved.update(i for i in ids if i not in in_memory)
            else:
                # Not moved aside: kept, refused again later, moved aside then.
                self._memory.extendleft(reversed(from_memory))
                self._memory_bytes += sum(size for _, _, size in from_memory)

    def _remove_on_disk(self, ids: list[str], reason: str | None,
                        from_memory: list[tuple[Reading, str, int]]) -> None:
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
        Does not touch the disk when there is nothing new to write. When it
        returns, what it wrote is on the medium (fsynced). When the disk
        cannot take them (full, read-only) the readings stay in memory,
        :attr:`storage_problem` says so, and 0 is returned.
        """
        with self._lock:
            if self._closed:
                return 0
            if not self._memory and not self._acked_unsaved \
                    and not (self._meta_dirty and self._db is not None):
                return 0
            items = list(self._memory)
            saved = self._counters()
            try:
                db = self._need_db()
                with _transaction(db):
                    self._delete_acked(db)
                    self._insert(db, items)
                    # Bounds: counted against disk plus what is still in
                    # memory, which this transaction moves to disk.
                    memory, memory_bytes = self._memory, self._memory_bytes
                    self._memory, self._memory_bytes = deque(), 0
                    try:
                        self._make_room(db)
                    finally:
                        self._memory, self._memory_bytes = memory, memory_bytes
                    self._write_meta(db)
            except (StorageError, sqlite3.Error, OSError) as exc:
                self._restore(saved)
                if _storage_trouble(exc) is None:
                    raise
                self._storage_failed(exc)
                return 0
            self._acked_unsaved.clear()
            self._memory.clear()
            self._memory_bytes = 0
            self._storage_ok()
            if items:
                log.debug("spilled %d readings to %s (%d on disk)", len(items), self.path,
                          self._disk_count)
            return len(items)

    def _delete_acked(self, db: sqlite3.Connection) -> None:
        """Delete rows acked while the disk could not take the DELETE (inside a transaction)."""
        ids = list(self._acked_unsaved)
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            count, size = db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM readings WHERE id IN ({marks})",
                chunk).fetchone()
            db.execute(f"DELETE FROM readings WHERE id IN ({marks})", chunk)
            self._disk_count -= count
            self._disk_bytes -= size

    def depth(self) -> int:
        """Readings waiting, in memory and on disk."""
        with self._lock:
            return self._disk_count - len(self._acked_unsaved) + len(self._memory)

    def size_bytes(self) -> int:
        """JSON bytes of the readings waiting (what ``max_bytes`` bounds)."""
        with self._lock:
            return self._disk_bytes + self._memory_bytes

    def on_disk(self) -> int:
        """Readings waiting on disk (the rest are in memory)."""
        with self._lock:
            return self._disk_count - len(self._acked_unsaved)

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
                if self._memory:
                    log.error("outbox: %d readings could not be saved at stop (%s)",
                              len(self._memory), self._storage_problem)
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
        elif self.db.in_transaction:
            # (SQLite may have rolled back already: a full disk does that.)
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass


def _short(exc: BaseException) -> str:
    """One line about *exc* for people (its message, or its type)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass                      # some file systems refuse a folder fsync
    finally:
        os.close(fd)


def _readable_rows(path: Path) -> tuple[list[tuple[str, str, int]], dict]:
    """The readings (id, body, size) still readable in a damaged outbox file, oldest first.

    Reads by ranges of ``seq`` so a damaged page costs only the rows on it;
    every body must still decode as a reading. Meta counters are kept when
    readable.
    """
    rows: list[tuple[str, str, int]] = []
    meta: dict = {}
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
                    reading = _decode(body)
                except (TypeError, ValueError, KeyError, AttributeError):
                    continue
                if isinstance(rid, str) and reading.id == rid:
                    rows.append((rid, body, len(body.encode("utf-8"))))
            start += step
    finally:
        db.close()
    return rows, meta
