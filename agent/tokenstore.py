"""The root-only token file: one JSON file per profile, 0600 in a 0700 folder.

Both ``entra-auth-cli`` and the running agent read and write these files, so
every write is atomic (:func:`agent.fileio.write_atomic`: temp file in the
same folder, ``fsync``, ``os.replace``, ``fsync`` of the folder) and every
read-modify-write runs under an exclusive ``flock`` on a separate
``<profile>.lock`` file (:mod:`agent.tokenlocks`). A writer killed with SIGKILL
at any moment leaves either the old or the new content on disk, never a torn
or empty file; its leftover temp file (``.<profile>.json.tmp-*``) is never
read and is removed by the next save.

A file or folder that group or others may read or write, or that belongs to
another user, is refused with a one-line :class:`~agent.errors.StorageError`
that names the fix (``chmod 600 <file>``, ``chmod 700 <dir>``, ``chown``);
those rules are :mod:`agent.tokenfiles`. Nothing from a file's content ever
reaches a log line or an exception.

>>> store = TokenStore(token_dir())                     # doctest: +SKIP
>>> with store.locked("default"):                       # doctest: +SKIP
...     data = store.load("default") or {}
...     data["refresh_token"] = new_refresh_token
...     store.save("default", data)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent.errors import StorageError
from agent.fileio import TMP_MARK, TempFileError, fsync_dir, write_atomic
from agent.lockinfo import LockHolder, lock_holder
from agent.tokenfiles import (
    DIR_MODE,
    FILE_MODE,
    MAX_FILE_BYTES,
    check_private_dir,
    check_profile,
    corrupt,
    os_error,
    read_private,
)
from agent.tokenlocks import flock, unlock

__all__ = ["TokenStore", "FILE_MODE", "DIR_MODE", "SUFFIX", "LOCK_SUFFIX", "SIGN_IN_SUFFIX",
           "TMP_MARK", "MAX_FILE_BYTES"]

log = logging.getLogger(__name__)

SUFFIX = ".json"
"""Token files are ``<profile>.json``."""

LOCK_SUFFIX = ".lock"
"""Lock files are ``<profile>.lock``; removed only by :meth:`TokenStore.remove_profile`,
under the lock (a waiter that then gets the removed file notices and opens the new one)."""

SIGN_IN_SUFFIX = ".signin"
"""Sign-in turn files are ``<profile>.signin``: held for a whole device code
flow, so two sign-ins of one profile never run at once. No profile name makes
``<a>.signin`` collide with ``<b>.json`` or ``<b>.lock``."""

# Temp files are ``.<profile>.json.tmp-<pid>-<random>`` (agent.fileio.TMP_MARK);
# file modes, size bound and the refusals live in agent.tokenfiles.


class TokenStore:
    """Per-profile token files in one private folder.

    :param directory: the folder, e.g. :func:`agent.paths.token_dir`; created
        0700 (its missing parents with default modes) on the first save or
        lock.

    Thread-safe and process-safe: :meth:`locked` is an exclusive ``flock``
    that also excludes other threads (each acquisition opens its own file
    description). It is re-entrant for the same object in the same thread,
    so :meth:`save` and :meth:`delete` may be called inside it.
    """

    def __init__(self, directory: Path, *,
                 on_lock_wait: "Callable[[str, LockHolder | None], None] | None" = None) -> None:
        self.directory = Path(directory)
        #: Called (on a timer thread) when :meth:`locked` has waited for another
        #: process for a second or two: ``on_lock_wait(profile, holder)``.
        self.on_lock_wait = on_lock_wait
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"TokenStore({str(self.directory)!r})"

    # -- names ---------------------------------------------------------------

    def path(self, profile: str) -> Path:
        """The token file of *profile*: ``<directory>/<profile>.json``.

        :raises UsageError: when *profile* could escape the folder or clash
            with the store's own files (empty, a separator, NUL, a leading dot).
        """
        check_profile(profile)
        return self.directory / f"{profile}{SUFFIX}"

    def lock_path(self, profile: str) -> Path:
        """The lock file of *profile*: ``<directory>/<profile>.lock``."""
        check_profile(profile)
        return self.directory / f"{profile}{LOCK_SUFFIX}"

    def sign_in_path(self, profile: str) -> Path:
        """The sign-in turn file of *profile*: ``<directory>/<profile>.signin``."""
        check_profile(profile)
        return self.directory / f"{profile}{SIGN_IN_SUFFIX}"

    def profiles(self) -> list[str]:
        """Names of the profiles that have a token file, sorted."""
        if not self._check_dir(create=False):
            return []
        names = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or not name.endswith(SUFFIX):
                    continue  # temp files and anything hidden are not profiles
                if entry.is_file(follow_symlinks=False):
                    names.append(name[: -len(SUFFIX)])
        return sorted(names)

    # -- reading -------------------------------------------------------------

    def load(self, profile: str) -> dict[str, Any] | None:
        """The saved data of *profile*, or None when it has no token file.

        Takes no lock: files are only ever replaced whole by ``os.replace``,
        so a reader sees the old or the new file. Call it inside
        :meth:`locked` for a read-modify-write.

        :raises StorageError: when the file or folder is open to group or
            others, belongs to another user, is not a regular file, or does
            not hold a JSON object.
        """
        path = self.path(profile)
        if not self._check_dir(create=False):
            return None
        raw = read_private(path)
        if raw is None:
            return None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            # `from None`: the decode error carries the document itself.
            raise corrupt(path, profile) from None
        if not isinstance(data, dict):
            raise corrupt(path, profile)
        log.debug("loaded token file of profile %s from %s", profile, path)
        return data

    # -- writing -------------------------------------------------------------

    def save(self, profile: str, data: dict[str, Any]) -> bool:
        """Write *data* for *profile* atomically, under the profile lock.

        :returns: False, having written nothing, when the file already holds
            exactly these bytes (no SD-card wear for an unchanged token);
            True when the file was replaced.
        :raises StorageError: when the folder or an existing file is unsafe
            (see :meth:`load`) or the write fails.
        :raises TypeError: when *data* cannot be serialised to JSON.
        :raises ValueError: when *data* holds NaN or an infinity.
        """
        path = self.path(profile)
        # Serialise before touching the disk: a TypeError leaves nothing behind.
        # allow_nan=False: NaN/Infinity are not JSON and would poison the file.
        content = (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
        with self.locked(profile):
            self._remove_stale_temps(profile)
            if read_private(path) == content:
                log.debug("token file of profile %s unchanged, not written: %s", profile, path)
                return False
            self._write_atomic(path, content)
        log.debug("saved token file of profile %s to %s", profile, path)
        return True

    def delete(self, profile: str) -> bool:
        """Remove the token file of *profile*, under the profile lock.

        The lock file stays: removing it while another process waits on it
        would let two holders in at once.

        :returns: True when a file was removed, False when there was none.
        """
        path = self.path(profile)
        if not self._check_dir(create=False):
            return False
        with self.locked(profile):
            self._remove_stale_temps(profile)
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise os_error("cannot remove token file", path, exc) from None
            self._fsync_dir()
        log.info("deleted token file of profile %s: %s", profile, path)
        return True

    # -- locking -------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, profile: str) -> Iterator[None]:
        """Hold the exclusive lock of *profile* for a read-modify-write.

        Blocks until other processes and threads let go (no busy-wait: the
        kernel wakes us). Re-entrant for this object in this thread.
        """
        lock_path = self.lock_path(profile)
        held: dict[str, list[int]] = self._held()
        if profile in held:
            held[profile][1] += 1
            try:
                yield
            finally:
                held[profile][1] -= 1
            return
        self._check_dir(create=True)
        on_wait = self.on_lock_wait
        fd = flock(lock_path, None if on_wait is None
                   else lambda holder: on_wait(profile, holder))
        assert fd is not None               # blocking: always a descriptor
        held[profile] = [fd, 1]
        try:
            yield
        finally:
            del held[profile]
            unlock(fd)

    @contextlib.contextmanager
    def sign_in_turn(self, profile: str,
                     on_wait: "Callable[[LockHolder | None], None] | None" = None) -> Iterator[bool]:
        """Hold *profile*'s sign-in turn for a whole device code flow.

        Yields False when the turn was free, True when another process held
        it and this one waited (then that sign-in may have saved a token:
        look before asking for a new code). *on_wait* is called at once,
        with the holder when known, before waiting (no busy-wait: the kernel
        wakes us; Ctrl+C interrupts).
        """
        path = self.sign_in_path(profile)
        self._check_dir(create=True)
        waited: list[bool] = []

        def notice(holder: LockHolder | None) -> None:
            waited.append(True)
            if on_wait is not None:
                on_wait(holder)

        fd = flock(path, notice, notice_after=0.0)
        assert fd is not None               # blocking: always a descriptor
        try:
            yield bool(waited)
        finally:
            unlock(fd)

    def remove_profile(self, profile: str) -> bool:
        """Remove everything of *profile*: its token file, lock and sign-in files.

        The lock file is unlinked while held, so a process waiting on it
        gets a removed file, notices (:func:`_flock` compares inodes) and
        opens a fresh one: never two holders at once.

        :raises StorageError: when a sign-in of *profile* is under way.
        :returns: True when a token file was removed.
        """
        if not self._check_dir(create=False):
            return False
        turn = self.sign_in_path(profile)
        turn_fd = flock(turn, None, blocking=False)
        if turn_fd is None:
            holder = lock_holder(turn)
            raise StorageError(
                f"a sign-in of profile '{profile}' is under way "
                f"({holder.describe() if holder else 'another process'})",
                "wait for it to finish or stop it (Ctrl+C), then try again")
        try:
            with self.locked(profile):
                removed = self.delete(profile)
                for path in (turn, self.lock_path(profile)):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                self._fsync_dir()
        finally:
            os.close(turn_fd)
        log.info("removed the files of profile %s", profile)
        return removed

    def _held(self) -> dict[str, list[int]]:
        """This thread's held locks: profile -> [descriptor, depth]."""
        held = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = {}
        return held

    # -- internals -----------------------------------------------------------

    def _check_dir(self, create: bool) -> bool:
        """The folder is ours and private (see :func:`agent.tokenfiles.check_private_dir`)."""
        return check_private_dir(self.directory, create)

    def _remove_stale_temps(self, profile: str) -> None:
        """Remove temp files a killed writer left behind (we hold the lock)."""
        prefix = f".{profile}{SUFFIX}{TMP_MARK}"
        removed = False
        with os.scandir(self.directory) as entries:
            stale = [entry.path for entry in entries if entry.name.startswith(prefix)]
        for name in stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
                removed = True
                log.info("removed stale temp file %s", name)
        if removed:
            self._fsync_dir()

    def _write_atomic(self, path: Path, content: bytes) -> None:
        try:
            write_atomic(path, content, mode=FILE_MODE)
        except TempFileError as exc:
            raise os_error("cannot create temp file", Path(exc.filename), exc) from None
        except OSError as exc:
            raise os_error("cannot write token file", path, exc) from None

    def _fsync_dir(self) -> None:
        fsync_dir(self.directory)
