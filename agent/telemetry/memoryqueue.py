"""The readings the outbox holds in memory, oldest first, with their JSON bytes.

In ``spill`` mode this is where readings wait on a healthy device (the
database file is not even opened); in both modes it keeps the readings the
disk cannot take for now. No I/O, no lock of its own: the outbox's lock
covers every call.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator

from agent.telemetry.outboxdb import Entry
from agent.telemetry.sensors import Reading

__all__ = ["MemoryQueue"]


class MemoryQueue:
    """A FIFO of :data:`~agent.telemetry.outboxdb.Entry` that counts their bytes."""

    def __init__(self) -> None:
        self._entries: deque[Entry] = deque()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def append(self, entries: list[Entry]) -> None:
        for entry in entries:
            self._entries.append(entry)
            self.bytes += entry[2]

    def pop_oldest(self) -> int:
        """Forget the oldest entry; returns its size in bytes."""
        _, _, size = self._entries.popleft()
        self.bytes -= size
        return size

    def take(self, ids: set[str]) -> list[Entry]:
        """Remove and return the entries with these ids, oldest first."""
        taken = [entry for entry in self._entries if entry[0].id in ids]
        if taken:
            self._entries = deque(entry for entry in self._entries if entry[0].id not in ids)
            self.bytes -= sum(size for _, _, size in taken)
        return taken

    def put_back(self, entries: list[Entry]) -> None:
        """Return *entries* (older than all others) to the front."""
        self._entries.extendleft(reversed(entries))
        self.bytes += sum(size for _, _, size in entries)

    def oldest(self, count: int) -> list[Reading]:
        return [r for r, _, _ in itertools.islice(self._entries, count)]

    def newest(self, count: int) -> list[Reading]:
        """The newest *count* readings, oldest of them first."""
        fresh = [r for r, _, _ in itertools.islice(reversed(self._entries), count)]
        fresh.reverse()
        return fresh

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0
