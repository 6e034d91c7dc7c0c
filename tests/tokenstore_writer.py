"""A writer process for tests/test_tokenstore.py: hammers one profile.

    python tests/tokenstore_writer.py count DIR PROFILE N
        N locked read-increment-write cycles of ``data["count"]``.
    python tests/tokenstore_writer.py churn DIR PROFILE BYTES
        prints "ready", then saves ever-changing payloads of about BYTES
        (a sequence number, random filler, and a SHA-256 over both) until
        it is killed.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from agent.tokenstore import TokenStore


def payload(seq: int, size: int) -> dict:
    """A payload whose checksum proves it was written whole."""
    filler = os.urandom(size // 2).hex()
    digest = hashlib.sha256(f"{seq}:{filler}".encode()).hexdigest()
    return {"seq": seq, "filler": filler, "sha256": digest}


def verify(data: dict) -> bool:
    """True when *data* is a complete payload as made by :func:`payload`."""
    digest = hashlib.sha256(f"{data['seq']}:{data['filler']}".encode()).hexdigest()
    return digest == data["sha256"]


def count(store: TokenStore, profile: str, times: int) -> None:
    for _ in range(times):
        with store.locked(profile):
            data = store.load(profile) or {"count": 0}
            data["count"] += 1
            store.save(profile, data)


def churn(store: TokenStore, profile: str, size: int) -> None:
    current = store.load(profile)
    seq = current["seq"] if current else 0
    print("ready", flush=True)
    while True:
        seq += 1
        store.save(profile, payload(seq, size))


def main(argv: list[str]) -> int:
    mode, directory, profile, number = argv
    store = TokenStore(Path(directory))
    if mode == "count":
        count(store, profile, int(number))
    elif mode == "churn":
        churn(store, profile, int(number))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
