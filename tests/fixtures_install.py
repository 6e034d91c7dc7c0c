"""Helpers for the installer and setup-script tests (tests/test_install.py,
tests/test_raspberry_pi_auth.py): a copy of this checkout, a scratch root
shaped like a fresh Raspberry Pi OS, a listing of a tree, and this checkout's
wheel, built once per test run (``agent_wheel``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "deploy" / "install.sh"
HOST_UNITS = Path("/lib/systemd/system")

# What a checkout of the project holds that an install needs.
CHECKOUT_PARTS = ["pyproject.toml", "README.md", "agent", "hardware", "deploy", "raspberry-pi-auth.sh"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("installs root-owned files and checks their owner: run as root (CI does)")


def make_checkout(dest: Path) -> Path:
    """A copy of this checkout (pip builds in the tree it is given; not in ours)."""
    dest.mkdir(parents=True)
    for part in CHECKOUT_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=IGNORE)
        else:
            shutil.copy2(src, dest / part)
    return dest


def make_root(dest: Path) -> Path:
    """A scratch root shaped like a fresh Raspberry Pi OS: the folders that exist
    there, systemd's own units (so ``systemctl --root`` and ``systemd-analyze
    --root`` find multi-user.target) and one other enabled service."""
    for folder in ("etc/systemd/system/multi-user.target.wants", "usr/local/bin", "opt",
                   "var/lib", "run", "usr/lib/systemd"):
        (dest / folder).mkdir(parents=True, exist_ok=True)
    shutil.copytree(HOST_UNITS, dest / "usr/lib/systemd/system", symlinks=True)
    (dest / "etc/systemd/system/multi-user.target.wants/ssh.service").symlink_to(
        "/lib/systemd/system/ssh.service")
    return dest


def tree(root: Path) -> dict[str, tuple]:
    """Every path under *root*: type, mode, owner, link target, and for files
    their SHA-256 and modification time (a rewrite with the same bytes counts)."""
    listing: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                listing[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                listing[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                listing[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, digest, st.st_mtime_ns)
    return listing


@pytest.fixture(scope="session")
def agent_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout built as a wheel, once per test run (pip builds in a copy, not in ours).

    Installing a wheel skips pip's build step, which an install from a folder
    repeats each time (most of the 20-30 s of each installer test).
    """
    folder = tmp_path_factory.mktemp("wheel")
    source = make_checkout(folder / "checkout")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--disable-pip-version-check",
                    "-w", str(folder), str(source)], check=True, capture_output=True, timeout=600)
    (wheel,) = folder.glob("entra_device_agent-*.whl")
    return wheel
