"""The rules every file of the token store follows: ours, private, bounded.

A token file, lock file or the token folder that group or others may read
or write, that belongs to another user, that is a symbolic link or not a
regular file, is refused with a one-line :class:`~agent.errors.StorageError`
that names the fix (``chmod 600 <file>``, ``chmod 700 <dir>``, ``chown``).
Nothing from a file's content ever reaches a log line or an exception.
:mod:`agent.tokenstore` builds on these; :mod:`agent.tokenlocks` opens its
lock files with them.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from agent.errors import StorageError, UsageError
from agent.fileio import fsync_dir

__all__ = ["FILE_MODE", "DIR_MODE", "MAX_FILE_BYTES", "check_profile", "check_owner_mode",
           "check_private_dir", "read_private", "corrupt", "os_error"]

log = logging.getLogger(__name__)

FILE_MODE = 0o600
"""Mode of token, lock and temp files: owner read/write only."""

DIR_MODE = 0o700
"""Mode of the token folder: owner only."""

MAX_FILE_BYTES = 1024 * 1024
"""Largest token file read (one is about 5 KB); anything larger is damaged."""

_PRIVATE_BITS = 0o077  # any permission for group or others

# Never follow a symlink planted where a token file should be; close the
# descriptor in any child we spawn.
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# A FIFO planted where a token or lock file should be must not block open().
NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def check_profile(profile: str) -> None:
    """Refuse a profile name that could escape the folder or clash with the store's files."""
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


def check_owner_mode(path: Path, st: os.stat_result, what: str, mode: int) -> None:
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


def check_private_dir(directory: Path, create: bool) -> bool:
    """Make sure the token folder is ours and private; False when it is absent.

    With *create*, a missing folder is made 0700 (whatever the umask);
    a folder that already exists is never chmod-ed behind the person's
    back: it is refused with the command that fixes it.
    """
    try:
        # lstat: a token folder that is a symbolic link is refused, never
        # followed (files would be created wherever it points).
        st = os.lstat(directory)
    except FileNotFoundError:
        if not create:
            return False
        _create_dir(directory)
        st = os.lstat(directory)
    except OSError as exc:
        raise os_error("cannot use token folder", directory, exc) from None
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
    check_owner_mode(directory, st, "token folder", DIR_MODE)
    return True


def _create_dir(directory: Path) -> None:
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error("cannot create folder", directory.parent, exc) from None
    try:
        os.mkdir(directory, DIR_MODE)
    except FileExistsError:
        return  # someone else won the race; the caller checks it
    except OSError as exc:
        raise os_error("cannot create token folder", directory, exc) from None
    # We made it, so fixing its mode is ours to do: mkdir's mode was
    # masked by the umask, which may have removed owner bits.
    os.chmod(directory, DIR_MODE)
    fsync_dir(directory.parent)
    log.info("created token folder %s", directory)


def read_private(path: Path) -> bytes | None:
    """The bytes of token file *path*, or None if absent; checks before reading."""
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | CLOEXEC | NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageError(
                f"token file {path} is a symbolic link",
                f"remove it and sign in again: rm {path}",
            ) from None
        raise os_error("cannot read token file", path, exc) from None
    try:
        # fstat the open descriptor, not the name: nothing can be swapped in
        # between the check and the read.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StorageError(
                f"token file {path} is not a regular file",
                f"remove it and sign in again: rm {path}",
            )
        check_owner_mode(path, st, "token file", FILE_MODE)
        if st.st_size > MAX_FILE_BYTES:
            raise corrupt(path, path.stem)
        chunks = []
        size = 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise corrupt(path, path.stem)
        return b"".join(chunks)
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        raise os_error("cannot read token file", path, exc) from None
    finally:
        os.close(fd)


def corrupt(path: Path, profile: str) -> StorageError:
    """The error for a token file that is not a JSON object (or too large to be one)."""
    return StorageError(
        f"token file {path} is damaged (not a JSON object)",
        f"sign in again: run `entra-auth-cli logout --profile {profile}` or delete {path}",
    )


def os_error(action: str, path: Path, exc: OSError) -> StorageError:
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
