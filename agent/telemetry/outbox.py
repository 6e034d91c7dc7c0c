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

The parts: this module is the queue (memory, bounds, the durability modes,
what to do when the disk cannot write); :mod:`agent.telemetry.spillfile`
the database file and its counters; :mod:`agent.telemetry.outboxdb` the
SQLite details (schema, telling a full disk from damage, salvage).

Readings that the endpoint refuses for good are moved to a dead-letter table
(kept for inspection, bounded by :data:`DEAD_LETTER_KEEP`, counted in
:attr:`Outbox.dead_letters`).

>>> box = Outbox(Path("/var/lib/entra-agent/outbox.sqlite3"))   # doctest: +SKIP
>>> box.add(readings); batch = box.peek_batch(500)               # doctest: +SKIP
>>> box.ack([r.id for r in batch])                              # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from agent.config.values import DURABILITY_MODES, TelemetryConfig
from agent.errors import StorageError
from agent.telemetry.memoryqueue import MemoryQueue
from agent.telemetry.outboxbounds import MEMORY_READINGS_MAX, UNSAVED_READINGS_MAX, Bounds
from agent.telemetry.outboxdb import (
    SCHEMA_VERSION,
    Entry,
    StorageUnavailable,
    decode,
    encode,
)
from agent.telemetry.sensors import Reading
from agent.telemetry.spillfile import DEAD_LETTER_KEEP, SpillFile

__all__ = ["Outbox", "StorageUnavailable", "DURABILITY_MODES", "DEAD_LETTER_KEEP",
           "MEMORY_READINGS_MAX", "UNSAVED_READINGS_MAX", "SCHEMA_VERSION"]

log = logging.getLogger(__name__)

# What a failed write of the disk may raise; the ones storage_trouble() names
# are the disk's doing (kept in memory, retried), the rest are bugs.
_DISK_ERRORS = (StorageError, sqlite3.Error, OSError)


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
        max_readings: int = TelemetryConfig.outbox_max_readings,
        max_bytes: int = TelemetryConfig.outbox_max_bytes,
        max_memory_readings: int = MEMORY_READINGS_MAX,
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, got {durability!r}")
        self.bounds = Bounds(max_readings, max_bytes, max_memory_readings)
        self.path = Path(path)
        self.durability = durability
        self._lock = threading.RLock()
        self._memory = MemoryQueue()
        self._file = SpillFile(self.path)
        self._newest_turn = False       # peek_batch alternates ends of a backlog
        self._closed = False
        self._acked_unsaved: set[str] = set()       # acked on disk rows whose DELETE failed
        if self.path.exists() or durability == "strict":
            try:
                self._file.open()
            except _DISK_ERRORS as exc:
                if not self._trouble(exc):     # carry on in memory; retried at each write
                    raise
            if durability == "spill" and self._file.count == 0:
                # Nothing waiting: let go of the file so a healthy device
                # does not touch it (no -wal/-shm churn either).
                self._file.close_db()

    @property
    def recovered(self) -> int:
        """Readings copied out of a damaged file when it was opened."""
        return self._file.recovered

    def _trouble(self, exc: BaseException) -> bool:
        """True (remembered, logged once) when *exc* is the disk's doing."""
        return self._file.note_trouble(exc, UNSAVED_READINGS_MAX)

    @property
    def storage_problem(self) -> str | None:
        """``"storage full: <folder> (...)"`` (or read-only, unavailable) while the
        disk cannot take the readings; None when all is well."""
        with self._lock:
            return self._file.problem

    def _make_room(self, db: sqlite3.Connection | None) -> int:
        return self.bounds.make_room(self._file, self._memory, db)

    # -- the API -------------------------------------------------------------

    def add(self, readings: list[Reading], *, defer: bool = False) -> None:
        """Keep *readings* until they are acknowledged.

        In ``strict`` mode they are committed to disk (fsync) before this
        returns. When the outbox is full the oldest readings are dropped.

        With *defer* nothing here touches the disk (for a thread that must
        not block): the readings wait in memory, and the bounds and the
        ``strict`` commit are :meth:`flush`'s, which another thread calls.
        """
        if not readings:
            return
        encoded = [encode(reading) for reading in readings]
        with self._lock:
            if self._closed:
                raise StorageError(f"{self.path}: the outbox is closed")
            if defer:
                self._memory.append(encoded)
                self.bounds.drop_unsaved(self._file, self._memory)
                return
            if self.durability == "strict" and self._memory:
                self.spill()                 # readings kept while the disk was full
            if self.durability == "strict" and not self._memory:
                try:
                    self._add_strict(encoded)
                    self._file.writes_again()
                    return
                except _DISK_ERRORS as exc:
                    if not self._trouble(exc):
                        raise
            self._add_memory(encoded)

    def _add_strict(self, encoded: list[Entry]) -> None:
        with self._file.transaction() as db:     # counters restored if it does not commit
            self._file.insert(db, encoded)
            self._make_room(db)
            if self._file.meta_dirty:
                self._file.write_meta(db)

    def _add_memory(self, encoded: list[Entry]) -> None:
        self._memory.append(encoded)
        if self.bounds.over(self._file, self._memory) != (0, 0):
            made_room = False
            if self._file.count > 0 and self._file.problem is None:
                try:
                    with self._file.transaction() as db:
                        self._make_room(db)
                        self._file.write_meta(db)
                    made_room = True
                except _DISK_ERRORS as exc:
                    if not self._trouble(exc):
                        raise
            if not made_room:
                self._make_room(None)
        if len(self._memory) >= self.bounds.max_memory_readings or self._file.problem is not None:
            # (While the disk is full, every add tries again: it carries on
            # by itself when space returns.)
            self.spill()
        self.bounds.drop_unsaved(self._file, self._memory)

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
            if self.depth() == 0:
                return []
            return _pick(max_count, self._newest_turn, self._memory, self.on_disk(), self._disk_rows)

    def _disk_rows(self, order: str, count: int) -> list[Reading]:
        """Up to *count* readings from disk, oldest (ASC) or newest (DESC) first;
        none when the disk cannot be read now (memory goes on meanwhile)."""
        skip = self._acked_unsaved
        try:
            rows = self._file.rows(order, count + len(skip))
        except _DISK_ERRORS as exc:
            if not self._trouble(exc):
                raise
            return []
        return [decode(body) for rid, body in rows if rid not in skip][:count]

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
        from_memory = self._memory.take(wanted)
        if reason is None and self._file.count == 0:
            return                       # the healthy path: memory only, no disk
        if reason is None and from_memory and len(from_memory) == len(wanted):
            return                       # all were in memory
        try:
            self._file.remove(ids, reason, from_memory)
        except _DISK_ERRORS as exc:
            if not self._trouble(exc):
                raise
            in_memory = {r.id for r, _, _ in from_memory}
            if reason is None:
                # Accepted: never sent again; deleted at the next write that works.
                self._acked_unsaved.update(i for i in ids if i not in in_memory)
            else:
                # Not moved aside: kept, refused again later, moved aside then.
                self._memory.put_back(from_memory)

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
                    and not (self._file.meta_dirty and self._file.db is not None):
                return 0
            items = list(self._memory)
            try:
                with self._file.transaction() as db:
                    self._file.delete(db, list(self._acked_unsaved))
                    self._file.insert(db, items)
                    # Bounds: counted against disk plus what is still in
                    # memory, which this transaction moves to disk.
                    memory, self._memory = self._memory, MemoryQueue()
                    try:
                        self._make_room(db)
                    finally:
                        self._memory = memory
                    self._file.write_meta(db)
            except _DISK_ERRORS as exc:
                if not self._trouble(exc):
                    raise
                return 0
            self._acked_unsaved.clear()
            self._memory.clear()
            self._file.writes_again()
            if items:
                log.debug("spilled %d readings to %s (%d on disk)", len(items), self.path,
                          self._file.count)
            return len(items)

    def flush(self) -> int:
        """Do the disk work :meth:`add` with ``defer`` left; returns readings written.

        ``strict``: every reading waiting in memory is committed (fsync), as
        :meth:`add` would have. ``spill``: what the bounds ask for, as
        :meth:`add` would have (a spill when ``max_memory_readings`` wait).
        """
        with self._lock:
            if self._closed:
                return 0
            if self.durability == "strict":
                return self.spill()
            before = self.on_disk()
            self._add_memory([])
            return max(0, self.on_disk() - before)

    def depth(self) -> int:
        """Readings waiting, in memory and on disk."""
        with self._lock:
            return self._file.count - len(self._acked_unsaved) + len(self._memory)

    def size_bytes(self) -> int:
        """JSON bytes of the readings waiting (what ``max_bytes`` bounds)."""
        with self._lock:
            return self._file.bytes + self._memory.bytes

    def on_disk(self) -> int:
        """Readings waiting on disk (the rest are in memory)."""
        with self._lock:
            return self._file.count - len(self._acked_unsaved)

    @property
    def dropped(self) -> int:
        """Readings dropped, oldest first, because the outbox was full (since it was created)."""
        with self._lock:
            return self._file.dropped

    @property
    def dead_letters(self) -> int:
        """Readings moved to the dead-letter table (since the outbox was created)."""
        with self._lock:
            return self._file.dead_letters

    def close(self) -> None:
        """Spill what is in memory and close the file. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            try:
                self.spill()
                if self._memory:
                    log.error("outbox: %d readings could not be saved at stop (%s)",
                              len(self._memory), self._file.problem)
            finally:
                self._closed = True
                self._file.close()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Outbox({str(self.path)!r}, durability={self.durability!r}, "
                f"depth={self.depth()}, on_disk={self._file.count})")


def _pick(max_count: int, newest_turn: bool, memory: MemoryQueue, on_disk: int,
          disk_rows: Callable[[str, int], list[Reading]]) -> list[Reading]:
    """The batch :meth:`Outbox.peek_batch` gives: the oldest *max_count*, or, on
    the newest turn of a backlog, the newest (memory's, then disk's newest)."""
    if on_disk + len(memory) > max_count and newest_turn:
        fresh = memory.newest(max_count)
        rest = max_count - len(fresh)
        older: list[Reading] = []
        if rest > 0 and on_disk > 0:
            older = disk_rows("DESC", rest)
        older.reverse()
        return older + fresh
    batch: list[Reading] = []
    if on_disk > 0:
        batch = disk_rows("ASC", max_count)
    room = max_count - len(batch)
    if room > 0:
        batch.extend(memory.oldest(room))
    return batch
