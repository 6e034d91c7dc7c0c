"""How much the outbox keeps, and what goes when it is full: the oldest first.

Bounds count readings and their JSON bytes over disk and memory together;
past them the oldest readings are dropped (from disk first: they are the
oldest) and counted in the persisted ``dropped``. While the disk cannot
take writes, memory holds at most :data:`UNSAVED_READINGS_MAX`.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

from agent.config.values import TelemetryConfig
from agent.telemetry.memoryqueue import MemoryQueue
from agent.telemetry.spillfile import SpillFile

__all__ = ["Bounds", "MEMORY_READINGS_MAX", "UNSAVED_READINGS_MAX"]

log = logging.getLogger(__name__)

#: Readings kept in memory (spill mode) before they are written anyway, so a
#: device that cannot upload for a long time (nobody signed in) does not
#: hold hours of readings only in RAM. At one reading a minute per sensor
#: this is a few hours for a handful of sensors; about 150 bytes each.
MEMORY_READINGS_MAX = 1000

#: Readings kept in memory while the disk cannot take them (full, read-only):
#: about 1.5 MB of JSON; past it the oldest go first (counted in ``dropped``).
UNSAVED_READINGS_MAX = 10_000


@dataclass(frozen=True)
class Bounds:
    """The outbox's limits (each >= 1, else ValueError)."""

    max_readings: int = TelemetryConfig.outbox_max_readings
    max_bytes: int = TelemetryConfig.outbox_max_bytes
    max_memory_readings: int = MEMORY_READINGS_MAX

    def __post_init__(self) -> None:
        if self.max_readings < 1 or self.max_bytes < 1 or self.max_memory_readings < 1:
            raise ValueError("outbox bounds must be >= 1")

    def over(self, file: SpillFile, memory: MemoryQueue) -> tuple[int, int]:
        """(readings, bytes) above the bounds."""
        count = file.count + len(memory)
        size = file.bytes + memory.bytes
        return max(0, count - self.max_readings), max(0, size - self.max_bytes)

    def make_room(self, file: SpillFile, memory: MemoryQueue, db: sqlite3.Connection | None) -> int:
        """Drop the oldest readings until within bounds; returns how many.

        Disk rows go only when *db* is given (inside the caller's transaction).
        """
        extra_count, extra_bytes = self.over(file, memory)
        dropped = 0
        if db is not None:
            dropped, extra_count, extra_bytes = file.drop_oldest(db, extra_count, extra_bytes)
        while (extra_count > 0 or extra_bytes > 0) and memory:
            extra_bytes -= memory.pop_oldest()
            extra_count -= 1
            dropped += 1
        if dropped:
            file.count_dropped(dropped)
            log.warning("outbox full: dropped the %d oldest readings (%d in all)",
                        dropped, file.dropped)
        return dropped

    def drop_unsaved(self, file: SpillFile, memory: MemoryQueue) -> None:
        """While the disk cannot write: keep at most :data:`UNSAVED_READINGS_MAX` in memory."""
        count = len(memory) - UNSAVED_READINGS_MAX
        if file.problem is None or count <= 0:
            return
        for _ in range(count):
            memory.pop_oldest()
        file.count_dropped(count)
        log.warning("outbox: the disk is full and memory holds %d readings: dropped the %d oldest",
                    len(memory), count)
