"""The screens under Debian's Pillow (what install.sh's venv uses) as well as PyPI's newest.

install.sh builds its venv with ``--system-site-packages`` on top of
Debian's ``python3-pil`` (bookworm: 9.4), while this suite runs on PyPI's
newest Pillow. Here a second environment is built the installer's way —
a venv on Debian's own ``/usr/bin/python3`` with ``--system-site-packages``
— and the screen and display tests run in it too, and its layout of every
screen is compared with this one's. It is cached in ``.venv-debian-pil/``
(rebuilt when pyproject.toml changes).

README's test command installs ``python3-pil`` and ``fonts-dejavu-core``
for this; on a Debian machine without them this test fails and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import PIL
import pytest

from hardware.layout_report import layout_report

REPO = Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = Path(os.environ.get("ENTRA_AGENT_DEBIAN_PYTHON", "/usr/bin/python3"))
VENV = REPO / ".venv-debian-pil"
SCREEN_TESTS = ["tests/test_screens.py", "tests/test_display.py"]


def _debian_pillow() -> tuple[str, str]:
    """(version, file) of the Pillow Debian's Python imports, or fail saying what to install."""
    if not Path("/etc/debian_version").exists():
        pytest.skip("not a Debian system: no Debian Pillow to compare with")
    if not DEBIAN_PYTHON.exists():
        pytest.fail(f"{DEBIAN_PYTHON} missing (apt-get install python3 python3-venv python3-pil)")
    probe = subprocess.run([str(DEBIAN_PYTHON), "-c", "import PIL; print(PIL.__version__, PIL.__file__)"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.fail("Debian's Pillow is not installed (apt-get install python3-pil): "
                    + probe.stderr.strip().splitlines()[-1])
    version, path = probe.stdout.split()
    return version, path


@pytest.fixture(scope="module")
def debian_venv() -> Path:
    """A venv as install.sh makes it (Debian's Python, its site-packages visible), with the test extra."""
    version, path = _debian_pillow()
    assert "/dist-packages/" in path, f"Debian's python3 imports Pillow from {path}, not apt's"
    stamp = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    python, stamp_file = VENV / "bin" / "python", VENV / ".stamp"
    fresh = python.exists() and stamp_file.exists() and stamp_file.read_text() == stamp
    if not fresh:
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([str(DEBIAN_PYTHON), "-m", "venv", "--system-site-packages", str(VENV)],
                       check=True, timeout=300)
        pip = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                              "--progress-bar", "off", "-e", f"{REPO}[test]"],
                             capture_output=True, text=True, timeout=900)
        assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
        stamp_file.write_text(stamp)
    return python


def _run(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(python), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env=env)


def test_the_second_environment_has_debians_pillow_not_ours(debian_venv):
    result = _run(debian_venv, "-c", "import PIL; print(PIL.__version__); print(PIL.__file__)")
    version, path = result.stdout.split()
    assert "/dist-packages/" in path, path
    assert version != PIL.__version__, "both environments have the same Pillow: nothing compared"


def test_screen_tests_pass_under_debians_pillow(debian_venv):
    result = _run(debian_venv, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SCREEN_TESTS)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout


def test_every_screen_has_the_same_layout_under_both_pillows(debian_venv):
    result = _run(debian_venv, "-m", "hardware.layout_report")
    assert result.returncode == 0, result.stderr
    theirs = json.loads(result.stdout)
    ours = json.loads(json.dumps(layout_report()))
    assert theirs["pillow"] != ours["pillow"]
    assert theirs["font"] == ours["font"] and ours["font"][0] == "truetype", \
        "both draw with DejaVu Sans (apt-get install fonts-dejavu-core)"
    different = [name for name in ours["screens"] if ours["screens"][name] != theirs["screens"].get(name)]
    assert different == [] and theirs["screens"].keys() == ours["screens"].keys()


FALLBACK = """
import logging, sys, tempfile
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from hardware.screens import fonts as layout
layout.FONT_FILES = ("/nonexistent/DejaVuSans.ttf",)
from hardware.screens import write_gallery
written = write_gallery(tempfile.mkdtemp())
print(layout.font_source().kind, len(written))
"""


@pytest.mark.parametrize("which", ["pypi", "debian"])
def test_without_the_font_file_every_screen_still_draws(which, request, tmp_path):
    # The defined fallback: Pillow 10.1+'s own scalable font, else (Debian's
    # 9.4) the bitmap font; one WARNING line names the package to install.
    python = Path(sys.executable) if which == "pypi" else request.getfixturevalue("debian_venv")
    result = _run(python, "-c", FALLBACK)
    assert result.returncode == 0, result.stderr[-3000:]
    kind, count = result.stdout.split()
    assert kind == ("pillow" if which == "pypi" else "bitmap")
    from hardware.screens import write_gallery

    assert int(count) == len(write_gallery(tmp_path)), "a screen went missing"
    warnings = [line for line in result.stderr.splitlines() if "fonts-dejavu-core" in line]
    assert len(warnings) == 1, result.stderr
