"""agent.fileio: the one atomic-write helper every writer goes through."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.fileio import TempFileError, read_regular, write_atomic, write_if_changed


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_writes_with_the_mode_asked_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    old = os.umask(0o777)
    try:
        write_atomic(target, b"one\n", mode=0o640)
    finally:
        os.umask(old)
    assert target.read_bytes() == b"one\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == []


def test_replaces_the_old_file_as_a_whole(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old content that is longer\n")
    inode = target.stat().st_ino
    write_atomic(target, b"new\n", mode=0o600, durable=False)
    assert target.read_bytes() == b"new\n"
    assert target.stat().st_ino != inode, "written in place instead of renamed over"


def test_a_failing_check_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "agent.toml"
    target.write_bytes(b"old\n")
    seen: list[bytes] = []

    def check(tmp: Path) -> None:
        assert tmp.parent == tmp_path and tmp.name.startswith(".agent.toml.tmp-")
        seen.append(tmp.read_bytes())
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        write_atomic(target, b"new\n", mode=0o644, check=check)
    assert seen == [b"new\n"], "the check saw the bytes that would be committed"
    assert target.read_bytes() == b"old\n"
    assert leftovers(tmp_path) == []


def test_without_overwrite_an_existing_file_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    write_atomic(target, b"first\n", mode=0o600, overwrite=False)
    with pytest.raises(FileExistsError):
        write_atomic(target, b"second\n", mode=0o600, overwrite=False)
    assert target.read_bytes() == b"first\n"
    assert leftovers(tmp_path) == []


def test_a_temp_file_that_cannot_be_made_says_so(tmp_path: Path) -> None:
    with pytest.raises(TempFileError) as error:
        write_atomic(tmp_path / "missing" / "f", b"x", mode=0o600)
    assert ".f.tmp-" in str(error.value.filename)


def test_a_symlink_planted_as_the_temp_name_is_never_followed(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "f"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep\n")
    import secrets
    monkeypatch.setattr(secrets, "token_hex", lambda n: "planted")
    (tmp_path / f".f.tmp-{os.getpid()}-planted").symlink_to(victim)
    with pytest.raises(TempFileError):
        write_atomic(target, b"x", mode=0o600)
    assert victim.read_bytes() == b"keep\n" and not target.exists()


def test_write_if_changed_writes_nothing_for_the_same_bytes(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    assert write_if_changed(target, b"{}\n", mode=0o644, durable=False) is True
    st = target.stat()
    assert write_if_changed(target, b"{}\n", mode=0o644, durable=False) is False
    assert (target.stat().st_ino, target.stat().st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert write_if_changed(target, b"{1}\n", mode=0o644, durable=False) is True
    assert read_regular(target) == b"{1}\n"
