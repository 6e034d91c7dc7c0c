"""Which pin library the button and LED get, and install hints that name packages that exist here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hardware.display import open_device
from hardware.errors import HardwareError
from hardware.packages import apt_knows, install_hint
from hardware.pins import pin_backend

REPO = Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = Path("/usr/bin/python3")


def _in(python: Path | str, code: str, **env: str) -> str:
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env}, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_without_a_pin_library_the_report_names_gpiozeros_fallback_and_the_fix():
    # This test venv has gpiozero but no lgpio/RPi.GPIO/pigpio (x86).
    backend = pin_backend()
    assert backend.name == "native"
    assert "install lgpio" in backend.problem and "pip install 'lgpio'" in backend.problem


def test_an_installed_lgpio_is_chosen_and_its_origin_told(tmp_path):
    # A module named lgpio on the path is what gpiozero's factory would import.
    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "lgpio.py").write_text("")
    out = _in(sys.executable, "from hardware.pins import pin_backend; print(pin_backend().describe())",
              PYTHONPATH=f"{REPO}:{site}")
    assert out.startswith("lgpio (pip)"), out
    if not any(Path("/dev").glob("gpiochip*")):
        assert "no /dev/gpiochip*" in out


def test_gpiozero_pin_factory_overrides():
    out = _in(sys.executable, "from hardware.pins import pin_backend; print(pin_backend().describe())",
              GPIOZERO_PIN_FACTORY="mock")
    assert out == "mock (GPIOZERO_PIN_FACTORY)"


def test_check_config_prints_the_gpio_backend(agent_dirs, tmp_path):
    from agent import paths
    from agent.profiles import Profile, ProfileStore

    agent_dirs["config"].mkdir(parents=True)
    ProfileStore(paths.profiles_file()).save(Profile(name="default", client_id="11111111-2222-3333-4444-555555555555",
                                                         tenant_id="organizations"))
    config = tmp_path / "agent.toml"
    config.write_text('profile = "default"\n')
    result = subprocess.run([sys.executable, "-m", "agent", "check-config", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), "GPIOZERO_PIN_FACTORY": ""})
    assert result.returncode == 0, result.stderr
    assert "  gpio native (gpiozero's own fallback); no pin library: install lgpio (" in result.stdout


@pytest.mark.skipif(shutil.which("apt-cache") is None or not DEBIAN_PYTHON.exists(),
                    reason="needs Debian's apt and python3")
def test_hints_name_the_debian_package_only_where_apt_has_it():
    # Debian's own python3 sees apt's packages: spidev is python3-spidev there;
    # RPi.GPIO (python3-rpi-lgpio / python3-rpi.gpio) exists only in
    # Raspberry Pi OS's archive, so on Debian the hint is pip's rpi-lgpio.
    out = _in(DEBIAN_PYTHON, "from hardware.packages import install_hint as h; "
                             "print(h('spidev')); print(h('RPi')); print(h('lgpio'))").splitlines()
    assert out[0] == "sudo apt-get install python3-spidev"
    for hint, debian, pypi in ((out[1], ("python3-rpi-lgpio", "python3-rpi.gpio"), "rpi-lgpio"),
                               (out[2], ("python3-lgpio",), "lgpio")):
        known = [name for name in debian if apt_knows(name)]
        if known:
            assert hint == f"sudo apt-get install {known[0]}"
        else:
            assert hint == f"pip install '{pypi}'", hint


def test_a_venv_without_system_packages_is_told_to_use_its_own_pip():
    # apt's python3-spidev would not be seen from this venv: pip it is.
    if sys.prefix == sys.base_prefix:
        pytest.skip("runs in a venv")
    assert install_hint("spidev") == f"sudo {Path(sys.prefix) / 'bin' / 'pip'} install 'spidev'"


def test_an_spi_display_without_its_gpio_module_names_an_installable_package():
    # x86 test venv: luma's SPI interface needs RPi.GPIO (and spidev), which
    # are not here; the hint must name something that exists for this Python.
    with pytest.raises(HardwareError) as info:
        open_device({"driver": "st7735", "interface": "spi", "width": 160, "height": 128})
    text = str(info.value)
    assert "the Python module" in text and "is missing" in text, text
    fix = text.rsplit("install it with: ", 1)[1].rstrip(")")
    if fix.startswith("sudo apt-get install "):
        assert apt_knows(fix.split()[-1]), fix
    else:
        assert " install '" in fix and "pip" in fix, fix
