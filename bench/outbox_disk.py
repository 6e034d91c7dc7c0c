"""Bytes the outbox writes to disk per hour: spill vs strict durability.

    python3 bench/outbox_disk.py [--hours H] [--sensors N] [--interval S] [--dir PATH]

Simulates H hours of the telemetry loop on a FakeClock (no sleeping): every
interval N readings go into the outbox and one upload POSTs them to the real
local telemetry receiver on loopback, which accepts everything. Three runs
side by side in one process, each on its own outbox file in --dir (default:
a temporary folder on the disk holding $TMPDIR; pass a folder on the SD card
to measure there):

* spill, healthy endpoint
* spill, endpoint down 10 minutes of every hour (503s: readings spill to disk)
* strict, healthy endpoint

For each it prints bytes this process sent to storage (``write_bytes`` of
/proc/self/io: what reaches the block layer, the figure that wears an SD
card), bytes passed to write() (``wchar``), the outbox files' final size, and
the ratio strict / spill.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.clock import FakeClock  # noqa: E402
from agent.sandbox.receiver import TelemetryReceiver  # noqa: E402
from agent.telemetry.outbox import Outbox  # noqa: E402
from agent.telemetry.sensors import Reading, iso_utc, new_reading_id  # noqa: E402
from agent.telemetry.uploader import Uploader  # noqa: E402


def io_counters() -> dict[str, int]:
    """This process's /proc/self/io counters (empty off Linux)."""
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        return {}
    return {key: int(value) for key, value in (line.split(": ") for line in text.splitlines())}


def files_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def simulate(folder: Path, name: str, durability: str, hours: float, sensors: int,
             interval: float, outage_minutes: float) -> dict[str, float]:
    clock = FakeClock()
    path = folder / name / "outbox.sqlite3"
    with TelemetryReceiver() as receiver:
        box = Outbox(path, durability=durability)
        uploader = Uploader(receiver.url, device_id="bench", token=lambda: "t",
                            refresh_token=lambda: "t", clock=clock, rng=random.Random(1))
        ticks = int(hours * 3600 / interval)
        before = io_counters()
        for tick in range(ticks):
            wall = clock.time()
            box.add([Reading(new_reading_id(wall), f"sensor{i}", 20.0 + i, "°C", iso_utc(wall))
                     for i in range(sensors)])
            minute_of_hour = (tick * interval / 60) % 60
            down = minute_of_hour < outage_minutes
            receiver.fail_rate = 1.0 if down else 0.0
            # Drain what the endpoint will take this interval (the backlog
            # after an outage goes in big batches).
            while box.depth():
                result = uploader.upload(box, 500)
                if result.retry_after is not None or result.error:
                    break
            clock.advance(interval)
        box.close()
        uploader.close()
        after = io_counters()
        posts = receiver.requests
        unique = len(receiver.unique_ids)
    per_hour = 1.0 / hours
    return {
        "write_bytes": (after.get("write_bytes", 0) - before.get("write_bytes", 0)) * per_hour,
        "wchar": (after.get("wchar", 0) - before.get("wchar", 0)) * per_hour,
        "file": files_size(path),
        "posts": posts * per_hour,
        "delivered": unique,
        "readings": ticks * sensors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    parser.add_argument("--sensors", type=int, default=5, help="readings per interval (default 5)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the outbox files")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        runs = {
            "spill, healthy": simulate(folder, "spill", "spill", args.hours, args.sensors,
                                       args.interval, 0),
            "spill, 10 min outage/h": simulate(folder, "outage", "spill", args.hours,
                                               args.sensors, args.interval, 10),
            "strict, healthy": simulate(folder, "strict", "strict", args.hours, args.sensors,
                                        args.interval, 0),
        }
    print(f"outbox disk writes per simulated hour ({args.hours:g} h, {args.sensors} readings "
          f"every {args.interval:g} s, real receiver on loopback)")
    print(f"{'mode':<24}{'write_bytes/h':>15}{'wchar/h':>12}{'file bytes':>12}{'POSTs/h':>9}"
          f"{'delivered':>11}")
    for name, run in runs.items():
        print(f"{name:<24}{run['write_bytes']:>15,.0f}{run['wchar']:>12,.0f}{run['file']:>12,}"
              f"{run['posts']:>9.0f}{run['delivered']:>6}/{run['readings']}")
    spill = runs["spill, healthy"]
    strict = runs["strict, healthy"]
    for key in ("write_bytes", "wchar"):
        if spill[key]:
            print(f"strict / spill ({key}): {strict[key] / spill[key]:.1f}x")
        else:
            print(f"strict / spill ({key}): spill wrote 0 bytes; strict wrote "
                  f"{strict[key]:,.0f} bytes/h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
