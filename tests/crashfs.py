"""A FUSE file system that forgets, at a simulated power cut, whatever was not fsynced.

    python tests/crashfs.py MOUNTPOINT        # then, on stdin: "crash OUTDIR\\n"

Everything lives in memory. Each file keeps two contents: what writes made
of it, and what it held at its last ``fsync``/``fdatasync``. Each folder
keeps two name tables: the current one and the one at its last ``fsync`` of
the folder (``fsyncdir``). That is the strictest reading of POSIX that real
file systems approach after a power cut (ext4's ``data=ordered`` keeps
more, never less): a file created, renamed or removed without a folder
fsync may or may not be there, so here it is not; data written without an
fsync of the file is gone.

``crash OUTDIR`` on stdin freezes the file system (every later operation
fails with EIO, as a disk without power would), writes what would be on the
medium into OUTDIR (the durable name tables, the fsynced contents), prints
``crashed`` and keeps serving EIO until unmounted (``fusermount3 -u``).

The writer under test runs as another process over the kernel's FUSE
driver, so its SQLite does exactly what it does on a real disk: pwrite,
fsync, fdatasync, ftruncate, unlink, an mmap'ed ``-shm`` (writes go through
to us: no writeback cache) and POSIX locks (kept by the kernel, as FUSE
does when the file system does not implement them).

Used by tests/test_outbox_durability.py; needs /dev/fuse, libfuse3
(Debian ``fuse3``) and ``mfusepy`` (PyPI; ctypes bindings for libfuse 3).
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any


class Node:
    """A file or a folder, with what is durable of it."""

    def __init__(self, mode: int, uid: int, gid: int) -> None:
        self.mode = mode
        self.uid, self.gid = uid, gid
        self.data = bytearray()
        self.synced = b""                               # contents at the last fsync
        self.entries: dict[str, Node] = {}              # folders: current names
        self.synced_entries: dict[str, Node] = {}       # folders: names at the last fsyncdir
        now = time.time_ns()
        self.atime = self.mtime = self.ctime = now

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def _operations_class() -> type:
    import mfusepy

    class CrashFS(mfusepy.Operations):
        use_ns = True

        def __init__(self) -> None:
            self._mutex = threading.RLock()
            self.root = Node(stat.S_IFDIR | 0o700, os.getuid(), os.getgid())
            self.handles: dict[int, Node] = {}
            self.counter = itertools.count(1)
            self.frozen = False

        # -- helpers -------------------------------------------------------
        def _check(self) -> None:
            if self.frozen:
                raise mfusepy.FuseOSError(errno.EIO)

        def _lookup(self, path: str) -> Node:
            node = self.root
            for part in [p for p in path.split("/") if p]:
                if not node.is_dir or part not in node.entries:
                    raise mfusepy.FuseOSError(errno.ENOENT)
                node = node.entries[part]
            return node

        def _parent(self, path: str) -> tuple[Node, str]:
            head, _, name = path.rstrip("/").rpartition("/")
            parent = self._lookup(head or "/")
            if not parent.is_dir:
                raise mfusepy.FuseOSError(errno.ENOTDIR)
            return parent, name

        def _node(self, path: str | None, fh: int | None) -> Node:
            if fh and fh in self.handles:
                return self.handles[fh]
            if path is None:
                raise mfusepy.FuseOSError(errno.EBADF)
            return self._lookup(path)

        # -- the power cut -------------------------------------------------
        def crash(self, out: Path) -> None:
            with self._mutex:
                self.frozen = True

                def dump(node: Node, where: Path) -> None:
                    where.mkdir(parents=True, exist_ok=True)
                    for name, child in node.synced_entries.items():
                        if child.is_dir:
                            dump(child, where / name)
                        else:
                            (where / name).write_bytes(child.synced)

                dump(self.root, out)

        # -- metadata --------------------------------------------------------
        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            with self._mutex:
                self._check()
                node = self._node(path, fh)
                return {"st_mode": node.mode, "st_nlink": 2 if node.is_dir else 1,
                        "st_size": len(node.data), "st_uid": node.uid, "st_gid": node.gid,
                        "st_atime": node.atime, "st_mtime": node.mtime, "st_ctime": node.ctime,
                        "st_blocks": (len(node.data) + 511) // 512, "st_blksize": 4096}

        def access(self, path: str, amode: int) -> int:
            with self._mutex:
                self._check()
                self._lookup(path)
                return 0

        def chmod(self, path: str, mode: int) -> int:
            with self._mutex:
                self._check()
                node = self._lookup(path)
                node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
                return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            with self._mutex:
                self._check()
                node = self._lookup(path)
                if uid != -1 and uid != 0xFFFFFFFF:
                    node.uid = uid
                if gid != -1 and gid != 0xFFFFFFFF:
                    node.gid = gid
                return 0

        def utimens(self, path: str, times: Any = None) -> int:
            with self._mutex:
                self._check()
                node = self._lookup(path)
                node.atime, node.mtime = times if times else (time.time_ns(),) * 2
                return 0

        def statfs(self, path: str) -> dict[str, int]:
            return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 20, "f_bfree": 1 << 19,
                    "f_bavail": 1 << 19, "f_files": 1 << 16, "f_ffree": 1 << 15, "f_namemax": 255}

        # -- folders ---------------------------------------------------------
        def readdir(self, path: str, fh: int) -> list[str]:
            with self._mutex:
                self._check()
                return [".", "..", *self._lookup(path).entries]

        def mkdir(self, path: str, mode: int) -> int:
            with self._mutex:
                self._check()
                parent, name = self._parent(path)
                if name in parent.entries:
                    raise mfusepy.FuseOSError(errno.EEXIST)
                parent.entries[name] = Node(stat.S_IFDIR | (mode & 0o7777), os.getuid(), os.getgid())
                return 0

        def rmdir(self, path: str) -> int:
            with self._mutex:
                self._check()
                parent, name = self._parent(path)
                node = self._lookup(path)
                if node.entries:
                    raise mfusepy.FuseOSError(errno.ENOTEMPTY)
                del parent.entries[name]
                return 0

        def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
            with self._mutex:
                self._check()
                node = self._lookup(path)
                node.synced_entries = dict(node.entries)
                return 0

        # -- files -----------------------------------------------------------
        def create(self, path: str, mode: int, fi: Any = None) -> int:
            with self._mutex:
                self._check()
                parent, name = self._parent(path)
                node = parent.entries.get(name)
                if node is None:
                    node = Node(stat.S_IFREG | (mode & 0o7777), os.getuid(), os.getgid())
                    parent.entries[name] = node
                fh = next(self.counter)
                self.handles[fh] = node
                return fh

        def open(self, path: str, flags: int) -> int:
            with self._mutex:
                self._check()
                node = self._lookup(path)
                if flags & os.O_TRUNC:
                    node.data = bytearray()
                fh = next(self.counter)
                self.handles[fh] = node
                return fh

        def release(self, path: str, fh: int) -> int:
            with self._mutex:
                self.handles.pop(fh, None)
                return 0

        def flush(self, path: str, fh: int) -> int:
            with self._mutex:
                self._check()
                return 0               # close() flushes nothing to the medium

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            with self._mutex:
                self._check()
                return bytes(self._node(path, fh).data[offset:offset + size])

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            with self._mutex:
                self._check()
                node = self._node(path, fh)
                if offset > len(node.data):
                    node.data.extend(b"\0" * (offset - len(node.data)))
                node.data[offset:offset + len(data)] = data
                node.mtime = time.time_ns()
                return len(data)

        def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
            with self._mutex:
                self._check()
                node = self._node(path, fh)
                if length < len(node.data):
                    del node.data[length:]
                else:
                    node.data.extend(b"\0" * (length - len(node.data)))
                return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            with self._mutex:
                self._check()
                node = self._node(path, fh)
                node.synced = bytes(node.data)
                return 0

        def unlink(self, path: str) -> int:
            with self._mutex:
                self._check()
                parent, name = self._parent(path)
                if name not in parent.entries:
                    raise mfusepy.FuseOSError(errno.ENOENT)
                del parent.entries[name]
                return 0

        def rename(self, old: str, new: str) -> int:
            with self._mutex:
                self._check()
                old_parent, old_name = self._parent(old)
                new_parent, new_name = self._parent(new)
                node = old_parent.entries.pop(old_name, None)
                if node is None:
                    raise mfusepy.FuseOSError(errno.ENOENT)
                new_parent.entries[new_name] = node
                return 0

    return CrashFS


def main(argv: list[str]) -> int:
    import mfusepy

    mountpoint = argv[1]
    ops = _operations_class()()

    def commands() -> None:
        for line in sys.stdin:
            verb, _, arg = line.strip().partition(" ")
            if verb == "crash":
                ops.crash(Path(arg))
                print("crashed", flush=True)

    threading.Thread(target=commands, daemon=True).start()
    print("mounting", flush=True)
    mfusepy.FUSE(ops, mountpoint, foreground=True, nothreads=True, fsname="crashfs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
