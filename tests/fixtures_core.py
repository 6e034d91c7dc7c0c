"""Fixtures for the sign-in core: the local identity provider; and :func:`wait_until`."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.clock import FakeClock, SystemClock
from agent.sandbox.idp import IdentityProvider
from agent.sandbox.receiver import TelemetryReceiver


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock whose ``wait()`` advances time instead of sleeping."""
    return FakeClock()


@pytest.fixture
def idp(fake_clock: FakeClock) -> Iterator[IdentityProvider]:
    """The local identity provider on ``fake_clock`` (codes and tokens age with ``fake_clock.advance``)."""
    with IdentityProvider(clock=fake_clock) as server:
        yield server


@pytest.fixture
def idp_realtime() -> Iterator[IdentityProvider]:
    """The local identity provider on the real clock, polling every 1 s (for clients in subprocesses)."""
    with IdentityProvider(clock=SystemClock(), interval=1) as server:
        yield server


@pytest.fixture
def receiver(idp: IdentityProvider) -> Iterator[TelemetryReceiver]:
    """The telemetry receiver, accepting only access tokens that ``idp`` issued and that are unexpired."""
    with TelemetryReceiver(token_validator=idp.validate_access_token) as server:
        yield server


@pytest.fixture
def receiver_realtime(idp_realtime: IdentityProvider) -> Iterator[TelemetryReceiver]:
    """The telemetry receiver validating tokens of ``idp_realtime`` (real clock)."""
    with TelemetryReceiver(token_validator=idp_realtime.validate_access_token) as server:
        yield server


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll *predicate* (every 20 ms, real time) until it is true or *timeout* seconds pass.

    For what another thread or process does on its own schedule (a broker, a
    paho network thread); never to wait out an interval of the agent's clock.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def need(condition: bool, why: str) -> None:
    """Skip when *condition* fails on a developer's machine; fail under CI,
    which installs and runs as root everything these tests need."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


@contextlib.contextmanager
def small_tmpfs(where: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted on the folder *where* (made if missing) while
    the block runs (needs root: mount)."""
    need(os.geteuid() == 0 and shutil.which("mount") is not None, "mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(where)],
                          capture_output=True, text=True)
    need(done.returncode == 0, f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted on a fresh folder (needs root: mount)."""
    with small_tmpfs(tmp_path / "state") as where:
        yield where


def fill(folder: Path) -> Path:
    """Fill the file system holding *folder* to the last byte (the ballast file returned)."""
    ballast = folder / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return ballast
