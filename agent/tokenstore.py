"""The root-only token file: one JSON file per profile, 0600 in a 0700 folder.

Both ``entra-auth-cli`` and the running agent read and write these files, so
every write is atomic (temp file in the same folder, ``fsync``, ``os.replace``,
``fsync`` of the folder) and every read-modify-write runs under an exclusive
``flock`` on a separate ``<profile>.lock`` file. A writer killed with SIGKILL
at any moment leaves either the old or the new content on disk, never a torn
or empty file; its leftover temp file (``.<profile>.json.tmp-*``) is never
read and is removed by the next save.

A file or folder that group or others may read or write, or that belongs to
another user, is refused with a one-line :class:`~agent.errors.StorageError`
that names the fix (``chmod 600 <file>``, ``chmod 700 <dir>``, ``chown``).
Nothing from a file's content ever reaches a log line or an exception.

>>> store = TokenStore(token_dir())                     # doctest: +SKIP
>>> with store.locked("default"):                       # doctest: +SKIP
...     data = store.load("default") or {}
...     data["refresh_token"] = new_refresh_token
...     store.save("default", data)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent.errors import StorageError, UsageError
from agent.lockinfo import LockHolder, lock_holder

__all__ = ["TokenStore", "FILE_MODE", "DIR_MODE", "SUFFIX", "LOCK_SUFFIX", "SIGN_IN_SUFFIX"]

log = logging.getLogger(__name__)

FILE_MODE = 0o600
"""Mode of token, lock and temp files: owner read/write only."""

DIR_MODE = 0o700
"""Mode of the token folder: owner only."""

SUFFIX = ".json"
"""Token files are ``<profile>.json``."""

LOCK_SUFFIX = ".lock"
"""Lock files are ``<profile>.lock``; removed only by :meth:`TokenStore.remove_profile`,
under the lock (a waiter that then gets the removed file notices and opens the new one)."""

SIGN_IN_SUFFIX = ".signin"
"""Sign-in turn files are ``<profile>.signin``: held for a whole device code
flow, so two sign-ins of one profile never run at once. No profile name makes
``<a>.signin`` collide with ``<b>.json`` or ``<b>.lock``."""

TMP_MARK = ".tmp-"
"""Temp files are ``.<profile>.json.tmp-<pid>-<random>``."""

_PRIVATE_BITS = 0o077  # any permission for group or others

MAX_FILE_BYTES = 1024 * 1024
"""Largest token file read (one is about 5 KB); anything larger is damaged."""

# Never follow a symlink planted where a token file should be; close the
# descriptor in any child we spawn.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# A FIFO planted where a token or lock file should be must not block open().
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


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
        _check_profile(profile)
        return self.directory / f"{profile}{SUFFIX}"

    def lock_path(self, profile: str) -> Path:
        """The lock file of *profile*: ``<directory>/<profile>.lock``."""
        _check_profile(profile)
        return self.directory / f"{profile}{LOCK_SUFFIX}"

    def sign_in_path(self, profile: str) -> Path:
        """The sign-in turn file of *profile*: ``<directory>/<profile>.signin``."""
        _check_profile(profile)
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
        raw = _read_private(path)
        if raw is None:
            return None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            # `from None`: the decode error carries the document itself.
            raise _corrupt(path, profile) from None
        if not isinstance(data, dict):
            raise _corrupt(path, profile)
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
            if _read_private(path) == content:
                log.debug("token file of profile %s unchanged, not written: %s", profile, path)
                return False
            self._write_atomic(path, profile, content)
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
                raise _os_error("cannot remove token file", path, exc) from None
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
        fd = _flock(lock_path, None if on_wait is None
                    else lambda holder: on_wait(profile, holder))
        held[profile] = [fd, 1]
        try:
            yield
        finally:
            del held[profile]
            # Closing the descriptor releases the flock; unlock first anyway
            # so a descriptor inherited by a child cannot keep it held.
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

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

        fd = _flock(path, notice, notice_after=0.0)
        try:
            yield bool(waited)
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

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
        turn_fd = _flock(turn, None, blocking=False)
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
        """Make sure the folder is ours and private; False when it is absent.

        With *create*, a missing folder is made 0700 (whatever the umask);
        a folder that already exists is never chmod-ed behind the person's
        back: it is refused with the command that fixes it.
        """
        directory = self.directory
        try:
            # lstat: a token folder that is a symbolic link is refused, never
            # followed (files would be created wherever it points).
            st = os.lstat(directory)
        except FileNotFoundError:
            if not create:
                return False
            self._create_dir()
            st = os.lstat(directory)
        except OSError as exc:
            raise _os_error("cannot use token folder", directory, exc) from None
        if stat.S_ISLNK(st.st_mode):
            raise StorageError(
                f"token folder {directory} is a symbolic link",
                "replace it with a real folder (mode 700) or set ENTRA_AGENT_STATE_DIR",
            )
        if not stat.S_ISDIR(st.st_mode):
            raise StorageError(
                f"token folder {directory} is not a folder",
                "move it away or set ENTRA_AGENT_STATE_DIR to another place",
            )
        _check_owner_mode(directory, st, "token folder", DIR_MODE)
        return True

    def _create_dir(self) -> None:
        directory = self.directory
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error("cannot create folder", directory.parent, exc) from None
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            return  # someone else won the race; the caller checks it
        except OSError as exc:
            raise _os_error("cannot create token folder", directory, exc) from None
        # We made it, so fixing its mode is ours to do: mkdir's mode was
        # masked by the umask, which may have removed owner bits.
        os.chmod(directory, DIR_MODE)
        _fsync_path(directory.parent)
        log.info("created token folder %s", directory)

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

    def _write_atomic(self, path: Path, profile: str, content: bytes) -> None:
        tmp = self.directory / f".{profile}{SUFFIX}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise _os_error("cannot create temp file", tmp, exc) from None
        try:
            try:
                os.fchmod(fd, FILE_MODE)  # umask-independent
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)  # content on disk before the name points at it
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _os_error("cannot write token file", path, exc) from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._fsync_dir()  # the rename itself survives a power cut

    def _fsync_dir(self) -> None:
        _fsync_path(self.directory)


def _check_profile(profile: str) -> None:
    if not isinstance(profile, str) or not profile:
        raise UsageError("profile name is empty", "give a name such as 'default'")
    if "/" in profile or "\\" in profile or os.sep in profile or "\0" in profile:
        raise UsageError(
            f"profile name {profile!r} contains a path separator",
            "use letters, digits, '-' and '_'",
        )
    if profile.startswith("."):
        raise UsageError(
            f"profile name {profile!r} starts with a dot",
            "use letters, digits, '-' and '_'",
        )


def _check_owner_mode(path: Path, st: os.stat_result, what: str, mode: int) -> None:
    """Refuse *path* unless it belongs to us and is closed to everyone else."""
    euid = os.geteuid()
    if st.st_uid != euid:
        raise StorageError(
            f"{what} {path} is owned by uid {st.st_uid}, not by this process (uid {euid})",
            f"run: chown {euid} {path}, or run as its owner",
        )
    bits = st.st_mode & _PRIVATE_BITS
    if bits:
        readable = "readable" if bits & 0o044 else ""
        writable = "writable" if bits & 0o022 else ""
        how = " and ".join(x for x in (readable, writable) if x) or "accessible"
        who = " and ".join(
            w for w, b in (("group", 0o070), ("others", 0o007)) if bits & b
        )
        raise StorageError(
            f"{what} {path} is {how} by {who}",
            f"run: chmod {mode:o} {path}",
        )


def _read_private(path: Path) -> bytes | None:
    """The bytes of token file *path*, or None if absent; checks before reading."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageError(
                f"token file {path} is a symbolic link",
                f"remove it and sign in again: rm {path}",
            ) from None
        raise _os_error("cannot read token file", path, exc) from None
    try:
        # fstat the open descriptor, not the name: nothing can be swapped in
        # between the check and the read.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StorageError(
                f"token file {path} is not a regular file",
                f"remove it and sign in again: rm {path}",
            )
        _check_owner_mode(path, st, "token file", FILE_MODE)
        if st.st_size > MAX_FILE_BYTES:
            raise _corrupt(path, path.stem)
        chunks = []
        size = 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise _corrupt(path, path.stem)
        return b"".join(chunks)
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        raise _os_error("cannot read token file", path, exc) from None
    finally:
        os.close(fd)


def _open_lock(lock_path: Path) -> int:
    """Open (creating 0600 if need be) the lock file; refuse one not ours."""
    flags = os.O_RDWR | _NOFOLLOW | _CLOEXEC | _NONBLOCK
    try:
        try:
            fd = os.open(lock_path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            fd = os.open(lock_path, flags)
        else:
            os.fchmod(fd, FILE_MODE)  # ours, just made: undo the umask
    except OSError as exc:
        raise _os_error("cannot open lock file", lock_path, exc) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StorageError(f"lock file {lock_path} is not a regular file",
                               f"remove it: rm {lock_path}")
        _check_owner_mode(lock_path, st, "lock file", FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _flock(path: Path, on_wait: "Callable[[LockHolder | None], None] | None", *,
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
        fd = _open_lock(path)
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
                    with notice(lambda: on_wait(lock_holder(path)), delay):
                        fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            held = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                return fd
        except OSError as exc:
            os.close(fd)
            raise _os_error("cannot lock", path, exc) from None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)            # removed meanwhile: lock the file that is there now


def _fsync_path(directory: Path) -> None:
    """fsync a folder so that a create, rename or unlink in it is durable."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    except OSError:
        return  # best effort: the data itself is already fsync-ed
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on folders; nothing to add
    finally:
        os.close(fd)


def _corrupt(path: Path, profile: str) -> StorageError:
    return StorageError(
        f"token file {path} is damaged (not a JSON object)",
        f"sign in again: run `entra-auth-cli logout --profile {profile}` or delete {path}",
    )


def _os_error(action: str, path: Path, exc: OSError) -> StorageError:
    """One line from an OSError: keeps the path and reason, drops the rest."""
    reason = exc.strerror or exc.__class__.__name__
    if exc.errno in (errno.EACCES, errno.EPERM):
        hint = f"check the owner and permissions of {path}; token files need root or their owner"
    elif exc.errno == errno.ENOSPC:
        hint = "free some space on the disk"
    elif exc.errno == errno.EROFS:
        hint = "the filesystem is read-only; set ENTRA_AGENT_STATE_DIR to a writable place"
    else:
        hint = f"check {path}"
    error = StorageError(f"{action} {path}: {reason}", hint)
    error.errno = exc.errno
    error.filename = str(path)
    return error
