"""Cost of a token save that changes the file vs one that finds it unchanged.

    python3 bench/tokenstore.py [--rounds N] [--dir PATH]

Runs both kinds side by side in one process on the same folder (by default a
temporary folder on the disk holding $TMPDIR; pass --dir to measure the SD
card) and prints time per save, bytes this process sent to storage (from
/proc/self/io, Linux only) and their ratios. The unchanged save should cost
a read and no write at all: that is what keeps the SD card from wearing out
when the agent re-saves a token it did not refresh.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.tokenstore import TokenStore  # noqa: E402


def write_bytes() -> int | None:
    """Bytes this process has caused to be sent to storage, or None."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def token(n: int) -> dict:
    """A token set about the size Entra returns (~4 KiB)."""
    return {
        "access_token": secrets.token_urlsafe(1800),
        "refresh_token": secrets.token_urlsafe(900),
        "expires_at": 1_800_000_000 + n,
        "scope": "openid profile offline_access api://telemetry/.default",
        "account": {"username": "pi@example.com", "tenant_id": "t", "object_id": "o"},
    }


def measure(store: TokenStore, rounds: int, changed: bool) -> tuple[float, int | None, int]:
    """Seconds per save, storage bytes per save, and how many saves wrote."""
    tokens = [token(i) for i in range(rounds)] if changed else [token(0)] * rounds
    store.save("bench", tokens[0] if not changed else token(-1))
    written = 0
    io_before = write_bytes()
    start = time.perf_counter()
    for data in tokens:
        written += store.save("bench", data)
    seconds = (time.perf_counter() - start) / rounds
    io_after = write_bytes()
    io = None if io_before is None or io_after is None else (io_after - io_before) // rounds
    return seconds, io, written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=None, help="a folder to create the store in")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        store = TokenStore(Path(tmp) / "tokens")
        changed_s, changed_io, changed_n = measure(store, args.rounds, changed=True)
        same_s, same_io, same_n = measure(store, args.rounds, changed=False)
    print(f"folder: {tmp} ({args.rounds} saves each)")
    print(f"changed   save: {changed_s * 1e3:8.3f} ms, {changed_io} bytes to storage/save, wrote {changed_n}")
    print(f"unchanged save: {same_s * 1e3:8.3f} ms, {same_io} bytes to storage/save, wrote {same_n}")
    print(f"time ratio changed/unchanged: {changed_s / same_s:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
