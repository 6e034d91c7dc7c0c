"""Reading a small file we did not write, without hanging or being fooled.

``open(path).read()`` on a FIFO blocks until someone writes to it, and on
``/dev/zero`` never ends. :func:`read_regular` opens with ``O_NONBLOCK``,
checks the *open descriptor* is a regular file (nothing can be swapped in
between the check and the read), and reads at most *limit* bytes.

>>> read_regular(Path("/etc/entra-agent/agent.toml"), limit=1 << 20)  # doctest: +SKIP
b'profile = "raspberry-pi"\\n...'
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["NotRegularFile", "FileTooLarge", "read_regular", "MAX_CONFIG_BYTES"]

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
