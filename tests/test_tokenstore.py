"""The root-only token store, on real files and with real processes."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest

from agent.errors import StorageError, UsageError
from agent.tokenstore import TokenStore
from tests.tokenstore_writer import payload, verify

WRITER = Path(__file__).with_name("tokenstore_writer.py")
# The writer imports this checkout's `agent`, installed or not.
WRITER_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p
)}
SECRET = "rt-0.AAAA-secret-refresh-token-value"
NOBODY = 65534

is_root = os.geteuid() == 0


def mode_of(path: Path) -> int:
    return os.stat(path).st_mode & 0o7777


def temps_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "state" / "tokens")


@pytest.fixture
def umask():
    """Set a umask for one test and put the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)



# -- round trip, modes, names --------------------------------------------------


def test_round_trip(store: TokenStore) -> None:
    assert store.load("default") is None
    assert store.profiles() == []
    data = {"access_token": "at", "refresh_token": SECRET, "expires_at": 1_800_000_000, "n": [1, 2]}
    assert store.save("default", data) is True
    assert store.load("default") == data
    assert store.path("default") == store.directory / "default.json"
    # The documented serialisation, byte for byte.
    expected = json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert store.path("default").read_text() == expected


@pytest.mark.parametrize(
    "mask",
    # 0o277 takes the owner's own write bit away: only an explicit chmod
    # after creation gives 0600/0700. Its parents come out 0500 (root only).
    [0o000, 0o022, 0o077, pytest.param(0o277, marks=pytest.mark.skipif(not is_root, reason="needs root"))],
    ids=oct,
)
def test_modes_exact_whatever_the_umask(tmp_path: Path, umask, mask: int) -> None:
    umask(mask)
    store = TokenStore(tmp_path / "deep" / "state" / "tokens")
    store.save("default", {"a": 1})
    umask(0o022)
    assert mode_of(store.directory) == 0o700
    assert mode_of(store.path("default")) == 0o600
    assert mode_of(store.lock_path("default")) == 0o600
    assert store.load("default") == {"a": 1}


def test_unchanged_content_is_not_written(store: TokenStore) -> None:
    data = {"access_token": "at", "refresh_token": SECRET}
    assert store.save("default", data) is True
    path = store.path("default")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # a distinctive mtime
    before = os.stat(path)
    dir_before = os.stat(store.directory)
    assert store.save("default", dict(data)) is False
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, 1_000_000_000)
    assert os.stat(store.directory).st_mtime_ns == dir_before.st_mtime_ns  # no temp file made
    # A change is written, as a new inode (the atomic replace).
    assert store.save("default", {**data, "access_token": "at2"}) is True
    assert os.stat(path).st_ino != before.st_ino


def test_delete_and_profiles(store: TokenStore) -> None:
    assert store.delete("nothing") is False  # no folder yet
    for name in ("b", "a", "my-app_2"):
        store.save(name, {"name": name})
    (store.directory / ".a.json.tmp-1-dead").write_bytes(b"{")
    assert store.profiles() == ["a", "b", "my-app_2"]  # no lock or temp files
    assert store.delete("a") is True
    assert store.delete("a") is False
    assert store.load("a") is None
    assert store.profiles() == ["b", "my-app_2"]
    assert temps_in(store.directory) == []  # delete cleaned the stale temp too
    assert store.lock_path("a").exists()  # lock files are never removed


@pytest.mark.parametrize("name", ["", "../evil", "a/b", "..", ".", "...", ".hidden", "a\\b", "a\0b"])
def test_unsafe_profile_names_refused(store: TokenStore, name: str) -> None:
    with pytest.raises(UsageError) as info:
        store.path(name)
    assert "\n" not in str(info.value) and "(" in str(info.value)
    with pytest.raises(UsageError):
        store.save(name, {"a": 1})
    assert not store.directory.exists()


# -- refusals ----------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o610], ids=oct)
def test_file_open_to_others_refused(store: TokenStore, mode: int) -> None:
    store.save("default", {"refresh_token": SECRET})
    path = store.path("default")
    os.chmod(path, mode)
    for action in (lambda: store.load("default"), lambda: store.save("default", {"x": 1})):
        with pytest.raises(StorageError) as info:
            action()
        message = str(info.value)
        assert f"(run: chmod 600 {path})" in message
        assert str(path) in message and "\n" not in message
        assert SECRET not in message
    assert mode_of(path) == mode  # refused, not silently "fixed"
    assert json.loads(path.read_text()) == {"refresh_token": SECRET}  # save wrote nothing
    assert store.delete("default") is True  # logout still works: it is the way out


def test_refusal_message_says_readable_by_others(store: TokenStore) -> None:
    store.save("default", {"a": 1})
    path = store.path("default")
    os.chmod(path, 0o644)
    with pytest.raises(StorageError) as info:
        store.load("default")
    assert str(info.value) == (
        f"token file {path} is readable by group and others (run: chmod 600 {path})"
    )


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o770, 0o777], ids=oct)
def test_folder_open_to_others_refused(store: TokenStore, mode: int) -> None:
    store.save("default", {"a": 1})
    os.chmod(store.directory, mode)
    for action in (
        lambda: store.load("default"),
        lambda: store.save("default", {"a": 2}),
        lambda: store.profiles(),
        lambda: store.locked("default").__enter__(),
    ):
        with pytest.raises(StorageError) as info:
            action()
        assert f"(run: chmod 700 {store.directory})" in str(info.value)
    assert mode_of(store.directory) == mode
    os.chmod(store.directory, 0o700)
    assert store.load("default") == {"a": 1}


def test_existing_open_folder_is_not_chmodded(tmp_path: Path) -> None:
    directory = tmp_path / "tokens"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    with pytest.raises(StorageError, match="chmod 700"):
        TokenStore(directory).save("default", {"a": 1})
    assert mode_of(directory) == 0o755
    assert list(directory.iterdir()) == []


@pytest.mark.skipif(not is_root, reason="chown to another uid needs root")
def test_file_owned_by_another_user_refused(store: TokenStore) -> None:
    store.save("default", {"a": 1})
    path = store.path("default")
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(StorageError) as info:
        store.load("default")
    message = str(info.value)
    assert f"owned by uid {NOBODY}" in message and "chown" in message and str(path) in message


@pytest.mark.skipif(not is_root, reason="chown to another uid needs root")
def test_folder_owned_by_another_user_refused(store: TokenStore) -> None:
    store.save("default", {"a": 1})
    os.chown(store.directory, NOBODY, NOBODY)
    with pytest.raises(StorageError, match=r"owned by uid 65534.*chown"):
        store.load("default")
    with pytest.raises(StorageError, match="chown"):
        store.save("default", {"a": 2})


def test_symlink_in_place_of_token_file_refused(store: TokenStore, tmp_path: Path) -> None:
    store.save("default", {"a": 1})
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"planted": true}')
    os.chmod(elsewhere, 0o600)
    store.path("default").unlink()
    store.path("default").symlink_to(elsewhere)
    with pytest.raises(StorageError, match="symbolic link"):
        store.load("default")


@pytest.mark.parametrize(
    "content",
    [b"", b"{\"refresh_token\": \"" + SECRET.encode() + b"\"", b"[1, 2]", b"\xff\xfe" + SECRET.encode(), b"null"],
    ids=["empty", "truncated", "not-an-object", "not-utf8", "null"],
)
def test_corrupt_file_says_sign_in_again(store: TokenStore, content: bytes) -> None:
    store.save("default", {"a": 1})
    path = store.path("default")
    path.write_bytes(content)
    with pytest.raises(StorageError) as info:
        store.load("default")
    message = str(info.value)
    assert str(path) in message and "sign in again" in message
    assert "entra-auth-cli logout --profile default" in message and "\n" not in message
    # Nothing of the content anywhere, not even in the chained traceback.
    text = "".join(traceback.format_exception(info.value))
    assert SECRET not in text and "rt-0" not in text


def test_stale_temp_file_ignored_then_cleaned(store: TokenStore) -> None:
    store.save("default", {"seq": 1})
    stale = store.directory / ".default.json.tmp-4242-deadbeef"
    stale.write_bytes(b'{"seq": 99, "torn')
    other = store.directory / ".other.json.tmp-4242-deadbeef"
    other.write_bytes(b"{")
    assert store.load("default") == {"seq": 1}
    assert store.profiles() == ["default"]
    assert store.save("default", {"seq": 2}) is True
    assert not stale.exists()
    assert other.exists()  # another profile's temp is that profile's business
    assert store.load("default") == {"seq": 2}


def test_nothing_secret_in_logs(store: TokenStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.tokenstore")
    data = {"access_token": "eyJ-access-" + SECRET, "refresh_token": SECRET}
    store.save("default", data)
    store.save("default", data)
    store.load("default")
    (store.directory / ".default.json.tmp-1-x").write_text(SECRET)
    store.save("default", {**data, "n": 1})
    store.delete("default")
    assert "default" in caplog.text  # it does log, by profile and path
    assert SECRET not in caplog.text


# -- the lock ----------------------------------------------------------------


def try_flock(path: Path) -> bool:
    """Whether a fresh open file description can take the lock right now."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_locked_is_exclusive_and_reentrant(store: TokenStore) -> None:
    with store.locked("default"):
        lock = store.lock_path("default")
        assert not try_flock(lock)
        with store.locked("default"):  # re-entrant: no deadlock
            assert store.save("default", {"a": 1}) is True
            assert store.load("default") == {"a": 1}
            assert store.delete("default") is True
        assert not try_flock(lock)  # the inner exit did not release it
        # Per profile: another thread gets "other" while we hold "default".
        other_done = threading.Event()

        def take_other() -> None:
            with store.locked("other"):
                other_done.set()

        threading.Thread(target=take_other, daemon=True).start()
        assert other_done.wait(30)
    assert try_flock(lock)


def test_locked_is_released_on_exception(store: TokenStore) -> None:
    with pytest.raises(RuntimeError):
        with store.locked("default"):
            raise RuntimeError("boom")
    assert try_flock(store.lock_path("default"))


def test_lock_blocks_another_thread(store: TokenStore) -> None:
    entered = threading.Event()
    store.save("default", {"owner": "main"})
    with store.locked("default"):
        def take() -> None:
            with store.locked("default"):
                entered.set()

        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        # Not a speed assertion: the thread must not get in while we hold it.
        assert not entered.wait(0.2)
        store.save("default", {"owner": "main", "n": 2})
    assert entered.wait(10)
    thread.join(10)


def test_lock_blocks_another_process(store: TokenStore) -> None:
    store.save("counter", {"count": 0})
    with store.locked("counter"):
        child = subprocess.Popen([sys.executable, str(WRITER), "count", str(store.directory), "counter", "1"], env=WRITER_ENV)
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(0.5)  # blocked on our lock, not finished
        assert store.load("counter") == {"count": 0}
    assert child.wait(30) == 0
    assert store.load("counter") == {"count": 1}


def test_concurrent_writers_lose_no_increment(store: TokenStore) -> None:
    """Two processes and two threads, each doing locked read-increment-write."""
    per_process, per_thread = 150, 100
    store.save("counter", {"count": 0})
    children = [
        subprocess.Popen([sys.executable, str(WRITER), "count", str(store.directory), "counter", str(per_process)], env=WRITER_ENV)
        for _ in range(2)
    ]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(per_thread):
                with store.locked("counter"):  # one object shared by both threads
                    data = store.load("counter")
                    data["count"] += 1
                    store.save("counter", data)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [child.wait(120) for child in children] == [0, 0]
    assert errors == []
    assert store.load("counter") == {"count": 2 * per_process + 2 * per_thread}
    assert temps_in(store.directory) == []


# -- SIGKILL at any moment ----------------------------------------------------


def test_sigkill_never_leaves_a_torn_file(store: TokenStore) -> None:
    """Kill a writer of 64 KiB payloads 200 times at random moments.

    After every kill the file holds a complete payload (its checksum
    verifies) at least as new as the one before: old or new, never torn,
    empty or missing. Kills that land mid-write leave temp files; those
    must exist at least sometimes, or the test did not test anything.
    """
    kills, size = 200, 64 * 1024
    rng = random.Random(8628)
    store.save("default", payload(0, size))
    last_seq, kills_mid_write = 0, 0
    for _ in range(kills):
        writer = subprocess.Popen(
            [sys.executable, str(WRITER), "churn", str(store.directory), "default", str(size)],
            stdout=subprocess.PIPE,
            env=WRITER_ENV,
        )
        try:
            assert writer.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.0, 0.03))  # a random moment in its save loop
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(30)
            writer.stdout.close()
        assert writer.returncode == -signal.SIGKILL
        if temps_in(store.directory):
            kills_mid_write += 1
        data = store.load("default")
        assert data is not None
        assert verify(data), f"torn payload after kill (seq {data.get('seq')})"
        assert len(data["filler"]) == size
        assert data["seq"] >= last_seq
        last_seq = data["seq"]
    assert last_seq > kills // 2, "the writer hardly ever got a save done"
    assert kills_mid_write > 0, "no kill landed inside a save"
    assert store.save("default", payload(last_seq + 1, size)) is True
    assert temps_in(store.directory) == []
    assert mode_of(store.path("default")) == 0o600
