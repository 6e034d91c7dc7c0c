"""What a durable spill costs: synchronous=FULL (now) vs NORMAL (before), side by side.

    python3 bench/spill_fsync.py [--rounds 200] [--readings 5] [--dir PATH]

The issue's scenario: rounds of "add N readings, spill" (an endpoint that
keeps failing), each on its own outbox file in --dir (default: a temporary
folder on the disk holding $TMPDIR; pass a folder on the SD card to measure
there). Prints per spill the wall time and the bytes sent to storage
(``write_bytes`` of /proc/self/io), and the ratio FULL / NORMAL. NORMAL is
set on the outbox's own connection after its first spill, which is what
spill mode did before.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.telemetry.outbox import Outbox  # noqa: E402
from agent.telemetry.sensors import Reading, iso_utc, new_reading_id  # noqa: E402


def write_bytes() -> int:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(folder: Path, synchronous: str, rounds: int, readings: int) -> tuple[float, float]:
    box = Outbox(folder / synchronous / "outbox.sqlite3")
    n = 0

    def batch() -> list[Reading]:
        nonlocal n
        n += readings
        wall = 1.8e9 + n
        return [Reading(new_reading_id(wall + i), "s", float(i), None, iso_utc(wall + i))
                for i in range(readings)]

    box.add(batch())
    box.spill()
    box._file.need_db().execute(f"PRAGMA synchronous={synchronous}")   # noqa: SLF001 - the comparison
    io_before, t0 = write_bytes(), time.perf_counter()
    for _ in range(rounds):
        box.add(batch())
        box.spill()
    elapsed, written = time.perf_counter() - t0, write_bytes() - io_before
    box.close()
    return elapsed / rounds, written / rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--readings", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="spill-fsync-", dir=args.dir) as tmp:
        normal = run(Path(tmp), "NORMAL", args.rounds, args.readings)
        full = run(Path(tmp), "FULL", args.rounds, args.readings)
    print(f"{args.rounds} spills of {args.readings} readings in {args.dir or tempfile.gettempdir()}")
    print(f"{'':16}{'ms per spill':>14}{'bytes written per spill':>26}")
    print(f"{'NORMAL (before)':16}{normal[0] * 1000:14.2f}{normal[1]:26.0f}")
    print(f"{'FULL (now)':16}{full[0] * 1000:14.2f}{full[1]:26.0f}")
    print(f"{'FULL / NORMAL':16}{full[0] / normal[0]:14.2f}x"
          f"{(full[1] / normal[1]) if normal[1] else float('nan'):25.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
