"""Exclusive ``flock`` on the token store's lock and sign-in turn files.

A lock file is opened (created 0600 if need be) with the token store's file
rules (:mod:`agent.tokenfiles`), then locked; waiting sleeps in the kernel
(no busy-wait), and *on_wait* hears who holds it (``/proc/locks``). A lock
file removed or replaced while we waited (``TokenStore.remove_profile``) is
let go and the new one locked: never two holders at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Callable
from pathlib import Path

from agent.errors import StorageError
from agent.lockinfo import LockHolder, lock_holder
from agent.tokenfiles import CLOEXEC, FILE_MODE, NOFOLLOW, NONBLOCK, check_owner_mode, os_error

__all__ = ["open_lock", "flock", "unlock"]


def open_lock(lock_path: Path) -> int:
    """Open (creating 0600 if need be) the lock file; refuse one not ours."""
    flags = os.O_RDWR | NOFOLLOW | CLOEXEC | NONBLOCK
    try:
        try:
            fd = os.open(lock_path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            fd = os.open(lock_path, flags)
        else:
            os.fchmod(fd, FILE_MODE)  # ours, just made: undo the umask
    except OSError as exc:
        raise os_error("cannot open lock file", lock_path, exc) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StorageError(f"lock file {lock_path} is not a regular file",
                               f"remove it: rm {lock_path}")
        check_owner_mode(lock_path, st, "lock file", FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def flock(path: Path, on_wait: Callable[[LockHolder | None], None] | None, *,
          notice_after: float | None = None, blocking: bool = True) -> int | None:
    """Open *path* (made 0600 if need be) and take an exclusive ``flock`` on it.

    When another process holds it, *on_wait* is called with the holder
    (``/proc/locks``) after *notice_after* seconds of waiting (default:
    :data:`agent.termui.NOTICE_AFTER`); the wait itself sleeps in the
    kernel. A file removed or replaced while we waited (see
    :meth:`TokenStore.remove_profile`) is let go and the new one locked.
    Returns the descriptor holding the lock, or None when not *blocking*
    and the lock is taken.
    """
    from agent.termui import NOTICE_AFTER
    from agent.termui import notice_after as notice

    delay = NOTICE_AFTER if notice_after is None else notice_after
    while True:
        fd = open_lock(path)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not blocking:
                    os.close(fd)
                    return None
                if on_wait is None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                elif delay <= 0:
                    on_wait(lock_holder(path))
                    fcntl.flock(fd, fcntl.LOCK_EX)
                else:
                    report = on_wait
                    with notice(lambda: report(lock_holder(path)), delay):
                        fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current: os.stat_result | None = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            held = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                return fd
        except OSError as exc:
            os.close(fd)
            raise os_error("cannot lock", path, exc) from None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)            # removed meanwhile: lock the file that is there now


def unlock(fd: int) -> None:
    """Let go of a lock taken by :func:`flock` and close its descriptor.

    Unlocks before closing, so a descriptor inherited by a child cannot keep
    it held.
    """
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
