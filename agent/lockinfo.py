"""Who holds a lock: the process behind an ``flock`` another process waits on.

Linux lists every file lock in ``/proc/locks`` with the holder's pid and the
locked file's device and inode, so a waiter can say "locked by pid 812
(entra-agent)" without the holder writing anything (no SD-card wear, no
stale pid files). Elsewhere, or when the kernel does not say, the answer
is None and the caller says "another process".

>>> holder = lock_holder(Path("/var/lib/entra-agent/tokens/default.lock"))  # doctest: +SKIP
>>> holder.describe() if holder else "another process"                     # doctest: +SKIP
'pid 812 (entra-agent)'
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LockHolder", "lock_holder"]

log = logging.getLogger(__name__)

PROC_LOCKS = Path("/proc/locks")
#: /proc/locks is small (one line per lock); read no more than this, in bytes.
MAX_PROC_LOCKS = 1 << 20


@dataclass(frozen=True)
class LockHolder:
    """A process holding a lock: its pid and, when known, its name (``comm``)."""

    pid: int
    name: str | None = None

    def describe(self) -> str:
        """``"pid 812 (entra-agent)"``, or ``"pid 812"`` without a name."""
        return f"pid {self.pid} ({self.name})" if self.name else f"pid {self.pid}"


def _process_name(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/comm").read_bytes()[:64]
    except OSError:
        return None
    # A process may name itself anything: keep what is safe to print.
    name = "".join(c for c in raw.decode("utf-8", "replace").strip() if c.isprintable())
    return name or None


def lock_holder(path: Path, *, proc_locks: Path = PROC_LOCKS) -> LockHolder | None:
    """The process holding an ``flock`` on *path*, or None when unknown.

    Reads ``/proc/locks`` (lines such as ``3: FLOCK ADVISORY WRITE 812
    b3:02:131090 0 EOF``; waiters, marked ``->``, are skipped) and matches
    the file's device and inode.
    """
    try:
        st = os.stat(path)
        with open(proc_locks, "rb") as f:
            text = f.read(MAX_PROC_LOCKS).decode("ascii", "replace")
    except OSError:
        return None
    wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->" or fields[1] != "FLOCK":
            continue
        try:
            pid = int(fields[4])
            major, minor, inode = fields[5].split(":")
            key = (int(major, 16), int(minor, 16), int(inode))
        except ValueError:
            continue
        if key == wanted and pid > 0:
            return LockHolder(pid, _process_name(pid))
    return None
