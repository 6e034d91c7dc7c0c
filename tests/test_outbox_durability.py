"""The outbox against a power cut and a full disk, on real file systems.

Power cut: the writer (a separate process running the real Outbox) works on
tests/crashfs.py, a FUSE file system that keeps only what was fsynced; at a
moment chosen by the test the file system is frozen and its durable state
copied out, then the writer is SIGKILLed. What the copy holds is what a
board would find after the power came back.

Why FUSE and not a tmpfs or a loop image: dropping the page cache of a
mounted file system (``echo 3 > drop_caches``) does not throw away dirty
pages, it writes them; only a file system of our own can decide, at the cut,
that unsynced data never reached the medium. A control run with raw SQLite at
``synchronous=NORMAL`` (the old spill setting) shows that the harness does
see the loss.

Full disk: a 1 MiB tmpfs mounted for the test (root only), filled with a
ballast file, then freed.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from agent.telemetry.outbox import UNSAVED_READINGS_MAX, Outbox
from agent.telemetry.sensors import Reading, iso_utc, new_reading_id
from tests.fixtures_core import fill, need

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
T0 = 1_800_000_000.0


def make(n: int, start: int = 0) -> list[Reading]:
    return [Reading(new_reading_id(T0 + i), "cpu_temperature", 40.0 + i, "°C", iso_utc(T0 + i))
            for i in range(start, start + n)]


# ---------------------------------------------------------------- power cut

WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from agent.telemetry.outbox import Outbox
    from agent.telemetry.sensors import Reading, iso_utc, new_reading_id
    mode, folder = sys.argv[1], Path(sys.argv[2])
    n = 0
    def five():
        global n
        n += 5
        return [Reading(new_reading_id(1.8e9 + n + i), "s", float(n + i), None, iso_utc(1.8e9 + n + i))
                for i in range(5)]
    if mode == "raw-normal":
        # The control: what spill mode did before (WAL, synchronous=NORMAL).
        import sqlite3
        db = sqlite3.connect(folder / "outbox.sqlite3", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE readings (seq INTEGER PRIMARY KEY, id TEXT, body TEXT, size INTEGER)")
        for round in range(1, 100000):
            db.executemany("INSERT INTO readings(id, body, size) VALUES (?, ?, 1)",
                           [(r.id, "{{}}") for r in five()])
            print(round * 5, flush=True)
    elif mode == "spill":
        box = Outbox(folder / "outbox.sqlite3", durability="spill")
        for round in range(1, 100000):
            box.add(five())
            box.spill()                      # returned: must survive the cut
            print(box.on_disk(), flush=True)
    elif mode == "auto":
        box = Outbox(folder / "outbox.sqlite3", durability="spill", max_memory_readings=100)
        told = 0
        while True:
            box.add(five())                  # the automatic spill, every 100 readings
            if box.on_disk() != told:
                told = box.on_disk()
                print(told, flush=True)
    elif mode == "strict":
        box = Outbox(folder / "outbox.sqlite3", durability="strict")
        while True:
            box.add(five())
            print(box.on_disk(), flush=True)
""")


class CrashRun:
    """crashfs mounted on a temporary folder, and a writer process on it."""

    def __init__(self, tmp: Path) -> None:
        self.mnt = tmp / "mnt"
        self.out = tmp / "after-the-cut"
        self.mnt.mkdir()
        self.fs = subprocess.Popen([sys.executable, str(HERE / "crashfs.py"), str(self.mnt)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=open(tmp / "crashfs.log", "wb"), text=True)
        deadline = time.monotonic() + 10
        while not os.path.ismount(self.mnt):
            if self.fs.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("crashfs did not mount: " + (tmp / "crashfs.log").read_text()[-2000:])
            time.sleep(0.05)
        self.writer: subprocess.Popen | None = None

    def write_until(self, mode: str, acknowledged: int) -> int:
        """Run the writer until it said *acknowledged* readings are kept; then cut the power.

        Returns the last count the writer printed before the cut.
        """
        script = WRITER.format(root=str(ROOT))
        self.writer = subprocess.Popen([sys.executable, "-c", script, mode, str(self.mnt)],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        told = 0
        assert self.writer.stdout is not None
        for line in self.writer.stdout:
            told = int(line)
            if told >= acknowledged:
                break
        else:
            raise AssertionError("the writer stopped: " + self.writer.stderr.read()[-2000:])
        # The cut: the medium keeps what was fsynced, the writer dies mid-stride.
        assert self.fs.stdin is not None and self.fs.stdout is not None
        self.fs.stdin.write(f"crash {self.out}\n")
        self.fs.stdin.flush()
        while (line := self.fs.stdout.readline().strip()) != "crashed":
            assert line, "crashfs ended before the cut"
        self.writer.kill()
        self.writer.wait(10)
        return told

    def close(self) -> None:
        if self.writer is not None and self.writer.poll() is None:
            self.writer.kill()
            self.writer.wait(10)
        subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)
        try:
            self.fs.wait(10)
        except subprocess.TimeoutExpired:
            self.fs.kill()
            self.fs.wait(10)


@pytest.fixture
def crash_run(tmp_path):
    need(Path("/dev/fuse").exists(), "no /dev/fuse in this sandbox")
    need(shutil.which("fusermount3") is not None, "fusermount3 missing (apt-get install fuse3)")
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        need(False, f"mfusepy/libfuse3 missing ({exc}): pip install mfusepy; apt-get install fuse3")
    run = CrashRun(tmp_path)
    try:
        yield run
    finally:
        run.close()


def rows_after_the_cut(folder: Path) -> int:
    """What an agent finds on the board after the power returns (the real Outbox opening it)."""
    path = folder / "outbox.sqlite3"
    if not path.exists():
        return 0
    with tempfile.TemporaryDirectory() as copy:   # a writable copy, as on the SD card
        for name in os.listdir(folder):
            shutil.copy(folder / name, Path(copy) / name)
        box = Outbox(Path(copy) / "outbox.sqlite3")
        try:
            assert not list(Path(copy).glob("*.corrupt-*")), "the cut left a damaged outbox"
            return box.on_disk()
        finally:
            box.close()


def test_the_harness_sees_unsynced_commits_vanish(crash_run):
    """The control: WAL with synchronous=NORMAL (the old spill mode) loses committed rows."""
    told = crash_run.write_until("raw-normal", 500)
    path = crash_run.out / "outbox.sqlite3"
    kept = 0
    if path.exists():
        try:
            kept = sqlite3.connect(path).execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        except sqlite3.Error:
            kept = 0
    assert kept < told, (kept, told)


@pytest.mark.parametrize("mode,acknowledged", [("spill", 5), ("spill", 400), ("auto", 300),
                                               ("strict", 200)])
def test_a_returned_spill_survives_a_power_cut(crash_run, mode, acknowledged):
    told = crash_run.write_until(mode, acknowledged)
    kept = rows_after_the_cut(crash_run.out)
    assert kept >= told, f"{mode}: {told} readings were kept when the power went, {kept} after"


# ---------------------------------------------------------------- full disk

def test_a_full_disk_keeps_the_outbox_and_carries_on_when_space_returns(small_disk, caplog):
    path = small_disk / "outbox.sqlite3"
    box = Outbox(path, durability="spill", max_memory_readings=50)
    before = make(60)
    box.add(before)                                  # past the memory bound: spilled
    assert box.on_disk() == 60
    ballast = fill(small_disk)
    during = make(3000, start=1000)
    for i in range(0, len(during), 5):
        box.add(during[i:i + 5])                     # spills fail: kept in memory
    assert box.storage_problem is not None and box.storage_problem.startswith("storage full")
    assert box.depth() == 60 + 3000                  # nothing lost, nothing dropped
    assert box.dropped == 0
    assert box.spill() == 0                          # a spill that could not write says so
    assert path.exists() and not list(small_disk.glob("*.corrupt-*"))   # not "damaged"
    assert caplog.text.count("storage full") == 1    # said once
    # Uploads go on meanwhile: memory and the (readable) disk.
    batch = box.peek_batch(100)
    assert batch and batch[0].id == before[0].id
    box.ack([r.id for r in batch])
    assert box.depth() == 60 + 3000 - 100
    ballast.unlink()                                 # space returns
    box.add(make(5, start=9000))
    assert box.storage_problem is None
    assert box.on_disk() == box.depth() == 60 + 3000 - 100 + 5
    box.close()
    again = Outbox(path)
    assert again.depth() == 60 + 3000 - 100 + 5
    ids = set()
    while (batch := again.peek_batch(500)):
        ids.update(r.id for r in batch)
        again.ack([r.id for r in batch])
    assert {r.id for r in batch_ids(before, during)[100:]} <= ids
    again.close()


def batch_ids(*groups: list[Reading]) -> list[Reading]:
    return [r for group in groups for r in group]


def test_memory_is_bounded_while_the_disk_is_full(small_disk):
    path = small_disk / "outbox.sqlite3"
    box = Outbox(path, durability="spill", max_memory_readings=50)
    box.add(make(50))
    fill(small_disk)
    box.add(make(UNSAVED_READINGS_MAX + 500, start=100))
    assert box.storage_problem is not None
    assert box.depth() == 50 + UNSAVED_READINGS_MAX   # the disk's 50, memory's newest
    assert box.dropped == 500                         # the oldest in memory, counted
    box.close()


def test_opening_on_a_full_disk_is_not_corruption(small_disk):
    path = small_disk / "outbox.sqlite3"
    box = Outbox(path, durability="strict")
    box.add(make(100))
    box.close()
    ballast = fill(small_disk)
    box = Outbox(path, durability="strict")          # must not move it aside
    box.add(make(5, start=500))                      # kept in memory meanwhile
    assert not list(small_disk.glob("*.corrupt-*"))
    assert box.depth() >= 105 or box.storage_problem is not None
    ballast.unlink()
    box.add(make(5, start=600))
    assert box.storage_problem is None and box.on_disk() == 110
    box.close()


def test_a_read_only_disk_is_not_corruption(small_disk):
    """The state folder turned read-only (an SD card remounted ro after errors)."""
    path = small_disk / "outbox.sqlite3"
    box = Outbox(path, durability="spill")
    box.add(make(20))                               # in memory, no file yet
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        assert box.spill() == 0
        assert box.storage_problem is not None
        assert box.storage_problem.startswith("storage read-only")
        box.add(make(20, start=100))
        assert box.depth() == 40 and not path.exists()
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert box.spill() == 40 and box.storage_problem is None and box.on_disk() == 40
    box.close()


# ---------------------------------------------------------------- real damage

def test_a_damaged_file_is_set_aside_and_its_readable_rows_recovered(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path, durability="strict")
    readings = make(3000)
    box.add(readings)
    box.close()                                       # checkpointed into the main file
    size = path.stat().st_size
    page = 4096
    with open(path, "r+b") as f:                      # one page in the middle: garbage
        f.seek((size // page // 2) * page)
        f.write(b"\xa5" * page)
    try:
        verdict = sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        verdict = str(exc)
    assert verdict != "ok"
    again = Outbox(path)
    aside = [p for p in tmp_path.glob("outbox.sqlite3.corrupt-*") if p.name[-1].isdigit()]
    assert len(aside) == 1
    assert 2500 < again.depth() < 3000 and again.recovered == again.depth()
    got = set()
    while (batch := again.peek_batch(500)):
        got.update(r.id for r in batch)
        again.ack([r.id for r in batch])
    assert got <= {r.id for r in readings}
    again.close()
