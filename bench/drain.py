"""Backlog drain rate after an outage: batches of 500 vs one POST per reading.

    python3 bench/drain.py [--backlog N] [--single N] [--batch B] [--dir PATH]

Fills an outbox on disk with a backlog (as after an outage in spill mode),
then drains it through the real Uploader into the real local telemetry
receiver on loopback, twice side by side in one process: with batch_max=B
(default 500) and with batch_max=1 (one POST per reading, on a smaller
backlog so the run stays short). Prints readings per second for each and
their ratio. Both runs include the outbox's own work (peek, ack, SQLite).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.clock import FakeClock  # noqa: E402
from agent.sandbox.receiver import TelemetryReceiver  # noqa: E402
from agent.telemetry.outbox import Outbox  # noqa: E402
from agent.telemetry.sensors import Reading, iso_utc, new_reading_id  # noqa: E402
from agent.telemetry.uploader import Uploader  # noqa: E402


def backlog(path: Path, count: int) -> Outbox:
    box = Outbox(path)
    wall = 1_800_000_000.0
    for start in range(0, count, 1000):
        box.add([Reading(new_reading_id(wall + i), f"sensor{i % 5}", 20.0 + i % 7, "°C",
                         iso_utc(wall + i)) for i in range(start, min(count, start + 1000))])
    box.spill()
    return box


def drain(folder: Path, count: int, batch_max: int) -> tuple[float, int]:
    """Readings per second, and POSTs made, draining *count* readings."""
    box = backlog(folder / f"batch{batch_max}" / "outbox.sqlite3", count)
    with TelemetryReceiver(token_validator=lambda token: "bench") as receiver:
        uploader = Uploader(receiver.url, device_id="bench", token=lambda: "t",
                            refresh_token=lambda: "t", clock=FakeClock())
        start = time.perf_counter()
        while box.depth():
            result = uploader.upload(box, batch_max)
            if result.error:
                raise SystemExit(f"drain failed: {result.error}")
        seconds = time.perf_counter() - start
        uploader.close()
        assert len(receiver.unique_ids) == count, "not every reading arrived"
        posts = receiver.requests
    box.close()
    return count / seconds, posts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=20_000, help="readings for the batched run")
    parser.add_argument("--single", type=int, default=2_000, help="readings for the one-per-POST run")
    parser.add_argument("--batch", type=int, default=500, help="batch_max of the batched run")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the outbox files")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        batched_rate, batched_posts = drain(Path(tmp), args.backlog, args.batch)
        single_rate, single_posts = drain(Path(tmp), args.single, 1)
    print("backlog drain through the real uploader and receiver (loopback HTTP)")
    print(f"batch_max={args.batch:<5} {args.backlog:>7} readings in {batched_posts:>5} POSTs: "
          f"{batched_rate:>9,.0f} readings/s")
    print(f"batch_max=1     {args.single:>7} readings in {single_posts:>5} POSTs: "
          f"{single_rate:>9,.0f} readings/s")
    print(f"ratio: {batched_rate / single_rate:.0f}x faster with batches of {args.batch}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
