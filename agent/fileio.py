"""Files on disk, the one way: reading what we did not write, writing atomically.

Reading: ``open(path).read()`` on a FIFO blocks until someone writes to it,
and on ``/dev/zero`` never ends. :func:`read_regular` opens with
``O_NONBLOCK``, checks the *open descriptor* is a regular file (nothing can
be swapped in between the check and the read), and reads at most *limit*
bytes.

Writing: every file the agent writes (token files, ``profiles.toml``,
``agent.toml`` through ``entra-agent config set``, ``status.json``, the Home
Assistant record, the token service's secret) goes through
:func:`write_atomic`: a temp file ``.<name>.tmp-<pid>-<random>`` in the same
folder (``O_EXCL | O_NOFOLLOW``: never a file someone planted), ``fchmod``
to the wanted mode whatever the umask, ``fsync``, ``os.replace`` (or
``os.link``, which never replaces), ``fsync`` of the folder. A writer killed
at any moment leaves the old or the new content, never a torn file.
:func:`write_if_changed` skips the write (no SD-card wear) when the file
already holds these bytes.

>>> read_regular(Path("/etc/entra-agent/agent.toml"), limit=1 << 20)  # doctest: +SKIP
b'profile = "raspberry-pi"\\n...'
>>> write_atomic(Path("/run/entra-agent/status.json"), b"{}\\n", mode=0o644, durable=False)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["NotRegularFile", "FileTooLarge", "TempFileError", "read_regular", "MAX_CONFIG_BYTES",
           "TMP_MARK", "temp_prefix", "write_atomic", "write_if_changed", "fsync_dir"]

#: Largest config or profiles file read, in bytes (the example is 10 KB).
MAX_CONFIG_BYTES = 1024 * 1024

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class NotRegularFile(OSError):
    """The path is a FIFO, a device, a socket or a folder, not a file."""


class FileTooLarge(OSError):
    """The file is larger than the reader's limit."""


def read_regular(path: Path, *, limit: int = MAX_CONFIG_BYTES, follow: bool = True) -> bytes:
    """The bytes of the regular file *path*, at most *limit* of them.

    :param follow: False refuses a symbolic link (``O_NOFOLLOW``, ``ELOOP``).
    :raises FileNotFoundError, PermissionError: as :func:`open` would.
    :raises NotRegularFile: a FIFO, device, socket or folder (never blocks).
    :raises FileTooLarge: more than *limit* bytes.
    """
    flags = os.O_RDONLY | _NONBLOCK | _CLOEXEC | (0 if follow else _NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise NotRegularFile(errno.EISDIR, "is a folder, not a file", str(path)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a folder" if stat.S_ISDIR(st.st_mode) else
                    "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                    "a socket" if stat.S_ISSOCK(st.st_mode) else "a device")
            raise NotRegularFile(errno.EINVAL, f"is {kind}, not a regular file", str(path))
        if st.st_size > limit:
            raise FileTooLarge(errno.EFBIG, f"is larger than {limit} bytes", str(path))
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:            # grew while we read
                raise FileTooLarge(errno.EFBIG, f"is larger than {limit} bytes", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


TMP_MARK = ".tmp-"
"""Temp files are ``.<name>.tmp-<pid>-<random>``, next to the file they become."""


class TempFileError(OSError):
    """The temp file could not be created (its name is in ``filename``)."""


def temp_prefix(path: Path) -> str:
    """The name every temp file of *path* starts with: ``.<name>.tmp-``.

    Hidden, so no folder listing takes it for the file itself; a writer that
    holds the file's lock may remove the ones a killed writer left behind.
    """
    return f".{path.name}{TMP_MARK}"


def write_atomic(path: Path, content: bytes, *, mode: int, durable: bool = True,
                 overwrite: bool = True, group: int | None = None,
                 check: Callable[[Path], None] | None = None) -> None:
    """Make *path* hold *content*, all at once, with permission bits *mode*.

    :param durable: fsync the file before the rename and the folder after
        it, so the new content survives a power cut; False for files on
        tmpfs (``status.json``), where an fsync only costs.
    :param overwrite: False never replaces an existing file (``os.link``):
        :class:`FileExistsError` when *path* exists, and it is left alone.
    :param group: the group id to give the file (skipped when we may not).
    :param check: called with the temp file's path once the content is in
        it, before it takes *path*'s place; whatever it raises aborts the
        write (the temp file is removed, *path* is untouched).
    :raises TempFileError: the temp file could not be created.
    :raises OSError: writing or renaming failed; nothing is left behind.
    """
    tmp = path.parent / f"{temp_prefix(path)}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    except OSError as exc:
        raise TempFileError(exc.errno, exc.strerror or type(exc).__name__, str(tmp)) from None
    try:
        try:
            if group is not None:
                with contextlib.suppress(PermissionError):   # not root: keep our own group
                    os.fchown(fd, -1, group)
            os.fchmod(fd, mode)          # whatever the umask
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)             # content on disk before the name points at it
        finally:
            os.close(fd)
        if check is not None:
            check(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)           # never replaces a file another process just made
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)           # the rename itself survives a power cut


def write_if_changed(path: Path, content: bytes, *, mode: int, durable: bool = True,
                     limit: int = MAX_CONFIG_BYTES) -> bool:
    """:func:`write_atomic` unless *path* already holds exactly *content*.

    :returns: False, having written nothing, when unchanged; True when written.
    """
    try:
        if len(content) <= limit and read_regular(path, limit=limit) == content:
            return False
    except OSError:
        pass                             # missing, unreadable, not a file: write it
    write_atomic(path, content, mode=mode, durable=durable)
    return True


def fsync_dir(directory: Path) -> None:
    """fsync a folder so that a create, rename or unlink in it is durable.

    Best effort: the data itself is already fsync-ed, and some file systems
    refuse an fsync on a folder.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
