"""The outbox's spill database: one SQLite file and what it counts.

:class:`SpillFile` owns the connection (opened only when needed), the number
and bytes of the readings on disk, and the two counters that outlive a
restart (``dropped``, ``dead_letters``, in the ``meta`` table). It knows
nothing of memory, durability modes or bounds policy: those are
:class:`agent.telemetry.outbox.Outbox`'s, which holds the lock every call
here runs under. A damaged file (one that fails ``PRAGMA integrity_check``)
is moved aside at open and what is still readable copied into a new one.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from agent.errors import StorageError
from agent.telemetry.outboxdb import (
    CHUNK,
    Entry,
    StorageUnavailable,
    chunks,
    connect,
    integrity_check,
    prepare_file,
    readable_rows,
    short,
    storage_trouble,
    transaction,
)

__all__ = ["SpillFile", "DEAD_LETTER_KEEP"]

log = logging.getLogger(__name__)

#: Dead letters kept for inspection; older ones are deleted (still counted).
DEAD_LETTER_KEEP = 10_000

#: (count, bytes, dropped, dead_letters, meta_dirty): what a failed transaction rolls back.
Snapshot = tuple[int, int, int, int, bool]


class SpillFile:
    """The database at *path*; nothing is opened until :meth:`need_db`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None
        self.count = 0                  # readings on disk
        self.bytes = 0                  # their JSON bytes
        self.dropped = 0                # persisted counters (meta table)
        self.dead_letters = 0
        self.meta_dirty = False         # counters changed since last written
        self.closed = False
        self.recovered = 0              # readings copied out of a damaged file at open
        self.problem: str | None = None   # "storage full: ..." while writes fail

    # -- the disk's health -------------------------------------------------------

    def note_trouble(self, exc: BaseException, unsaved_max: int) -> bool:
        """Remember (and log once) that the disk cannot take writes now.

        :returns: False when *exc* is not the disk's doing (a bug, damage):
            the caller re-raises it.
        """
        trouble = storage_trouble(exc)
        if trouble is None:
            return False
        problem = f"{trouble}: {self.path.parent} ({short(exc)})"
        if self.problem is None:
            log.error("outbox: %s; keeping new readings in memory (at most %d) until it can write again",
                      problem, unsaved_max)
        self.problem = problem
        return True

    def writes_again(self) -> None:
        """A write worked: the disk's trouble, if any, is over."""
        if self.problem is not None:
            log.warning("outbox: the state folder takes writes again; %d readings on disk", self.count)
            self.problem = None

    # -- the connection ------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the database. Raises :class:`StorageUnavailable`
        when the disk cannot take it now; a damaged file is set aside."""
        prepare_file(self.path)
        db: sqlite3.Connection | None = None
        try:
            db = connect(self.path)
            count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM readings").fetchone()
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            if db is not None:
                try:
                    db.close()
                except sqlite3.Error:
                    pass
            if (trouble := storage_trouble(exc)) is not None:
                raise StorageUnavailable(trouble, f"{self.path}: {exc}") from None
            verdict = integrity_check(self.path)
            if verdict is None:
                # Sound, yet it failed: not ours to throw away (a newer schema...).
                raise StorageError(f"{self.path}: the outbox cannot be opened ({exc})",
                                   "move it away if it is not needed") from None
            db, count, size, meta = self._set_aside(f"{exc}; integrity_check: {verdict}")
        self.db = db
        self.count = count
        self.bytes = size
        # Counters only grow; keep the larger of memory's and disk's.
        self.dropped = max(self.dropped, int(meta.get("dropped", 0)))
        self.dead_letters = max(self.dead_letters, int(meta.get("dead_letters", 0)))

    def _set_aside(self, why: str) -> tuple[sqlite3.Connection, int, int, dict[str, int]]:
        """Move a damaged file aside, start a new one, and copy into it what is still readable."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                source.rename(f"{aside}{suffix}")
        rows, meta = readable_rows(aside)
        prepare_file(self.path)
        db = connect(self.path)
        with transaction(db):
            db.executemany("INSERT OR IGNORE INTO readings(id, body, size) VALUES (?, ?, ?)", rows)
        count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM readings").fetchone()
        self.recovered = count
        log.error("%s is damaged (%s); moved to %s, %d readings recovered from it into a new outbox",
                  self.path, why, aside, count)
        return db, count, size, meta

    def need_db(self) -> sqlite3.Connection:
        """The connection, opening the file if need be."""
        if self.closed:
            raise StorageError(f"{self.path}: the outbox is closed")
        if self.db is None:
            self.open()
        assert self.db is not None
        return self.db

    def close_db(self) -> None:
        """Let go of the file (it is opened again when needed)."""
        if self.db is not None:
            try:
                self.db.close()
            finally:
                self.db = None

    def close(self) -> None:
        self.closed = True
        self.close_db()

    # -- counters ------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` on the file (opened if need be); when it
        does not commit, the counters go back to what they were (they match the disk)."""
        db = self.need_db()
        saved = self.snapshot()
        try:
            with transaction(db):
                yield db
        except BaseException:
            self.restore(saved)
            raise

    def snapshot(self) -> Snapshot:
        return (self.count, self.bytes, self.dropped, self.dead_letters, self.meta_dirty)

    def restore(self, saved: Snapshot) -> None:
        """Back to *saved*: the transaction that changed them did not commit."""
        self.count, self.bytes, self.dropped, self.dead_letters, self.meta_dirty = saved

    def count_dropped(self, count: int) -> None:
        self.dropped += count
        self.meta_dirty = True

    def write_meta(self, db: sqlite3.Connection) -> None:
        db.executemany("INSERT INTO meta(key, value) VALUES (?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                       [("dropped", self.dropped), ("dead_letters", self.dead_letters)])
        self.meta_dirty = False

    # -- rows (inside the caller's transaction) ---------------------------------

    def insert(self, db: sqlite3.Connection, entries: list[Entry]) -> None:
        before = db.total_changes
        db.executemany("INSERT OR IGNORE INTO readings(id, body, size) VALUES (?, ?, ?)",
                       [(r.id, body, size) for r, body, size in entries])
        added = db.total_changes - before
        # Ignored duplicates add nothing; count only the new rows.
        if added == len(entries):
            self.count += added
            self.bytes += sum(size for _, _, size in entries)
        else:
            self.count, self.bytes = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM readings").fetchone()

    def drop_oldest(self, db: sqlite3.Connection, extra_count: int,
                    extra_bytes: int) -> tuple[int, int, int]:
        """Delete the oldest rows until *extra_count* readings and *extra_bytes*
        are gone (or the disk is empty): (dropped, count still over, bytes still over)."""
        dropped = 0
        while (extra_count > 0 or extra_bytes > 0) and self.count > 0:
            rows = db.execute("SELECT seq, size FROM readings ORDER BY seq LIMIT ?",
                              (max(extra_count, CHUNK),)).fetchall()
            last_seq = None
            for seq, size in rows:
                if extra_count <= 0 and extra_bytes <= 0:
                    break
                last_seq = seq
                extra_count -= 1
                extra_bytes -= size
                self.count -= 1
                self.bytes -= size
                dropped += 1
            if last_seq is None:
                break
            db.execute("DELETE FROM readings WHERE seq <= ?", (last_seq,))
        return dropped, extra_count, extra_bytes

    def delete(self, db: sqlite3.Connection, ids: list[str]) -> None:
        """Delete these rows (unknown ids are ignored)."""
        for chunk in chunks(ids):
            marks = ",".join("?" * len(chunk))
            count, size = db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM readings WHERE id IN ({marks})",
                chunk).fetchone()
            db.execute(f"DELETE FROM readings WHERE id IN ({marks})", chunk)
            self.count -= count
            self.bytes -= size

    def remove(self, ids: list[str], reason: str | None, from_memory: list[Entry]) -> None:
        """Delete *ids* from disk in one transaction; with a *reason*, move them
        and *from_memory* (the newer ones, after the disk's) to the dead letters."""
        now = time.time()
        with self.transaction() as db:     # counters restored if it does not commit
            moved = 0
            in_memory = {r.id for r, _, _ in from_memory}
            on_disk = [i for i in ids if i not in in_memory]
            for chunk in chunks(on_disk):
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
                self.count -= count
                self.bytes -= size
            if reason is not None and from_memory:
                db.executemany("INSERT INTO dead_letters(id, body, reason, at) VALUES (?, ?, ?, ?)",
                               [(r.id, body, reason, now) for r, body, _ in from_memory])
                moved += len(from_memory)
            if moved:
                self.dead_letters += moved
                db.execute("DELETE FROM dead_letters WHERE seq <= "
                           "(SELECT MAX(seq) FROM dead_letters) - ?", (DEAD_LETTER_KEEP,))
                self.meta_dirty = True
                log.warning("moved %d readings to the dead-letter table: %s", moved, reason)
            if self.meta_dirty:
                self.write_meta(db)

    def rows(self, order: str, limit: int) -> list[tuple[str, str]]:
        """(id, body) of up to *limit* rows, oldest (ASC) or newest (DESC) first."""
        if order not in ("ASC", "DESC"):
            raise ValueError(f"order must be ASC or DESC, not {order!r}")
        return self.need_db().execute(
            f"SELECT id, body FROM readings ORDER BY seq {order} LIMIT ?", (limit,)).fetchall()
