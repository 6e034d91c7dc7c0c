"""agent.telemetry.outbox: durability modes, bounds, order, dead letters, SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.errors import StorageError
from agent.telemetry.outbox import Outbox
from agent.telemetry.sensors import Reading, iso_utc, new_reading_id

T0 = 1_800_000_000.0


def make(n: int, start: int = 0, sensor: str = "s") -> list[Reading]:
    return [Reading(new_reading_id(T0 + i), sensor, float(i), "°C", iso_utc(T0 + i))
            for i in range(start, start + n)]


def values(readings: list[Reading]) -> list[float]:
    return [r.value for r in readings]


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "state" / "outbox.sqlite3"


# ---------------------------------------------------------------- spill mode

def test_healthy_spill_mode_never_creates_the_file(path):
    box = Outbox(path)
    for round_ in range(20):
        box.add(make(3, start=round_ * 3))
        batch = box.peek_batch(500)
        assert values(batch) == [round_ * 3.0, round_ * 3.0 + 1, round_ * 3.0 + 2]
        box.ack([r.id for r in batch])
    assert box.depth() == 0
    assert not path.exists() and not path.parent.exists()


def test_spill_writes_and_a_restart_picks_up_oldest_first(path):
    box = Outbox(path)
    box.add(make(5))
    assert box.spill() == 5
    assert box.spill() == 0
    box.add(make(3, start=5))          # newer ones, in memory
    assert box.depth() == 8 and box.on_disk() == 5
    box.close()                        # spills the rest
    again = Outbox(path)
    assert again.depth() == 8 and again.on_disk() == 8
    assert values(again.peek_batch(100)) == [float(i) for i in range(8)]
    again.ack([r.id for r in again.peek_batch(100)])
    assert again.depth() == 0
    again.close()
    assert Outbox(path).depth() == 0


def test_memory_is_bounded_by_spilling(path):
    box = Outbox(path, max_memory_readings=10)
    box.add(make(9))
    assert box.on_disk() == 0 and not path.exists()
    box.add(make(1, start=9))
    assert box.on_disk() == 10


def test_ack_across_memory_and_disk(path):
    box = Outbox(path)
    box.add(make(4))
    box.spill()
    box.add(make(4, start=4))
    batch = box.peek_batch(6)
    assert values(batch) == [0, 1, 2, 3, 4, 5]
    box.ack([r.id for r in batch] + ["not-a-known-id"])
    assert values(box.peek_batch(10)) == [6, 7]
    assert box.on_disk() == 0 and box.depth() == 2


def test_file_and_folder_modes(path):
    box = Outbox(path, durability="strict")
    box.add(make(1))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    box.close()
    path.chmod(0o644)
    Outbox(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# ---------------------------------------------------------------- strict mode

def test_strict_mode_is_on_disk_before_add_returns(path):
    box = Outbox(path, durability="strict")
    box.add(make(3))
    # another connection sees the rows at once
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 3
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box.on_disk() == 3


# ---------------------------------------------------------------- bounds

def test_full_outbox_drops_oldest_and_counts(path):
    box = Outbox(path, durability="strict", max_readings=100)
    box.add(make(80))
    box.add(make(50, start=80))
    assert box.depth() == 100
    assert box.dropped == 30
    assert values(box.peek_batch(1)) == [30.0]
    box.close()
    assert Outbox(path).dropped == 30   # persisted


def test_full_outbox_in_spill_mode(path):
    box = Outbox(path, max_readings=100, max_memory_readings=1000)
    box.add(make(60))
    box.spill()
    box.add(make(60, start=60))        # 20 too many: the oldest, on disk, go
    assert box.depth() == 100 and box.dropped == 20
    assert values(box.peek_batch(1)) == [20.0]
    box.add(make(150, start=120))      # more than the bound in memory alone
    assert box.depth() == 100 and box.dropped == 170
    assert values(box.peek_batch(1)) == [170.0]
    box.close()
    again = Outbox(path)
    assert again.dropped == 170 and again.depth() == 100


def test_byte_bound(path):
    box = Outbox(path, durability="strict", max_bytes=10_000)
    box.add(make(1000))
    assert box.size_bytes() <= 10_000
    assert box.dropped == 1000 - box.depth()
    assert box.depth() > 50
    kept = values(box.peek_batch(5000))
    assert kept == [float(i) for i in range(1000 - len(kept), 1000)]


# ---------------------------------------------------------------- order

def test_backlog_drains_oldest_first_without_starving_fresh(path):
    box = Outbox(path, durability="strict")
    box.add(make(1200))
    first = box.peek_batch(500)
    assert values(first) == [float(i) for i in range(500)]
    box.ack([r.id for r in first])
    box.add(make(1, start=5000))       # a fresh reading arrives
    second = box.peek_batch(500)
    assert second[-1].value == 5000.0  # the newest end, oldest first within the batch
    assert values(second) == sorted(values(second))
    box.ack([r.id for r in second])
    third = box.peek_batch(500)
    assert values(third) == [float(i) for i in range(500, 701)]
    box.ack([r.id for r in third])
    assert box.depth() == 0


# ---------------------------------------------------------------- dead letters

def test_dead_letters_are_kept_aside_and_counted(path):
    box = Outbox(path)
    box.add(make(3))
    box.spill()
    box.add(make(2, start=3))
    batch = box.peek_batch(10)
    box.dead_letter([batch[0].id, batch[4].id], "HTTP 422: reading rejected\nsecond line")
    assert box.dead_letters == 2
    assert values(box.peek_batch(10)) == [1, 2, 3]
    box.close()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, reason FROM dead_letters ORDER BY seq").fetchall()
    assert rows == [(batch[0].id, "HTTP 422: reading rejected"), (batch[4].id, "HTTP 422: reading rejected")]
    assert Outbox(path).dead_letters == 2


# ---------------------------------------------------------------- failures

def test_closed_outbox_refuses_new_readings(path):
    box = Outbox(path)
    box.close()
    box.close()
    with pytest.raises(StorageError, match="closed"):
        box.add(make(1))


def test_damaged_file_is_moved_aside(path):
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    path.chmod(0o600)
    box = Outbox(path, durability="strict")
    box.add(make(2))
    assert box.depth() == 2
    aside = list(path.parent.glob("outbox.sqlite3.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")


def test_unwritable_place_is_a_storage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot create the outbox"):
        Outbox(blocker / "outbox.sqlite3", durability="strict")


# ---------------------------------------------------------------- SIGKILL

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from agent.telemetry.outbox import Outbox
    from agent.telemetry.sensors import Reading, new_reading_id
    path, mode = Path(sys.argv[1]), sys.argv[2]
    box = Outbox(path, durability=mode, max_memory_readings=100000)
    i = 0
    while True:
        reading = Reading(new_reading_id(1.8e9 + i), "s", float(i), None, "2027-01-15T08:00:00.000Z")
        box.add([reading])
        print(reading.id, flush=True)
        i += 1
        if mode == "spill" and i == 50:
            box.spill()
            print("SPILLED", flush=True)
""")


def run_and_kill(path: Path, mode: str, lines: int) -> list[str]:
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path), mode],
                               stdout=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        assert process.stdout is not None
        while len(seen) < lines:
            line = process.stdout.readline()
            assert line, "the writer stopped early"
            seen.append(line.strip())
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    return seen


def test_strict_mode_loses_nothing_to_sigkill(path):
    printed = run_and_kill(path, "strict", 300)
    box = Outbox(path, durability="strict")
    kept = {r.id for r in box.peek_batch(100000)}
    assert set(printed) <= kept           # every add that returned is on disk
    assert box.depth() >= 300


def test_spill_mode_loses_only_what_was_in_memory(path):
    printed = run_and_kill(path, "spill", 150)
    spilled_at = printed.index("SPILLED")
    box = Outbox(path)
    kept = [r.id for r in box.peek_batch(100000)]
    assert kept == printed[:spilled_at]   # the 50 spilled, in order; later ones were in memory


# ------------------------------------------------------- add(defer) + flush()

def on_disk_elsewhere(path: Path) -> int:
    """Rows another process would find in the file (what survives a SIGKILL now)."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
    finally:
        db.close()


def test_strict_add_deferred_writes_nothing_until_flush(path):
    box = Outbox(path, durability="strict")
    box.add(make(3), defer=True)
    assert box.depth() == 3 and box.on_disk() == 0
    assert on_disk_elsewhere(path) == 0, "a deferred add touched the disk"
    assert box.flush() == 3
    assert box.on_disk() == 3 and on_disk_elsewhere(path) == 3
    assert box.flush() == 0
    box.add(make(2, start=3))                 # not deferred: committed at once, as before
    assert on_disk_elsewhere(path) == 5
    assert values(box.peek_batch(10)) == [0.0, 1.0, 2.0, 3.0, 4.0]
    box.close()


def test_spill_add_deferred_leaves_the_memory_bound_to_flush(path):
    box = Outbox(path, max_memory_readings=4)
    box.add(make(6), defer=True)
    assert box.on_disk() == 0 and not path.exists()
    assert box.flush() == 6                   # past max_memory_readings: spilled
    assert box.on_disk() == 6
    box.add(make(1, start=6), defer=True)
    assert box.flush() == 0 and box.on_disk() == 6 and box.depth() == 7
    box.close()


def test_flush_keeps_the_bounds_of_a_deferred_add(path):
    box = Outbox(path, max_readings=5)
    box.add(make(4))
    box.spill()
    box.add(make(4, start=4), defer=True)
    assert box.depth() == 8                   # over for now: nothing was deleted here
    box.flush()
    assert box.depth() == 5 and box.dropped == 3
    assert values(box.peek_batch(10)) == [3.0, 4.0, 5.0, 6.0, 7.0]
    box.close()
