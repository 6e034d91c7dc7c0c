"""The core runs on a box with no screen: without Pillow, luma, gpiozero or segno."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("PIL", "luma", "gpiozero", "segno", "zxingcpp")

# Make the heavy packages unimportable, as on a box installed without extras.
BLOCK = f"""
import importlib.abc, sys
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Absent())
"""


def run(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)},
                          stdin=subprocess.DEVNULL)


def test_core_imports_load_no_heavy_module():
    result = run("import sys\n"
                 "import agent.cli, agent.service, agent.status, agent.config, agent.demo, agent.__main__\n"
                 f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_demo_runs_without_any_extra():
    result = run(BLOCK + "from agent.__main__ import main\n"
                 "sys.exit(main(['demo', '--approve-after', '1', '--duration', '8', '--interval', '1']))",
                 timeout=90)
    assert result.returncode == 0, result.stderr
    assert "Signed in as ada@contoso.example" in result.stderr + result.stdout
    summary = [line for line in (result.stderr + result.stdout).splitlines() if "[demo] stopped:" in line]
    assert summary and " 0 received" not in summary[0]


def test_display_config_without_the_extra_falls_back_to_the_console(tmp_path):
    """driver = "ssd1306" on a box without luma: one line saying what to install, then the console."""
    code = BLOCK + """
import logging
logging.basicConfig(level=logging.WARNING)
from agent.assembly import open_face
face = open_face({"driver": "ssd1306"})
print(type(face).__name__)
"""
    result = run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ConsolePresenter"
    assert "display extra" in result.stderr
