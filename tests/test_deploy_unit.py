"""deploy/entra-agent.service: what systemd itself says about it.

``systemd-analyze security --offline=true`` scores the hardening (must be
1.5 or lower) and ``systemd-analyze verify`` must print nothing. Verify checks
that ExecStart exists, so it runs with ``--root`` on a scratch root holding
systemd's own units and an executable at /opt/entra-agent/venv/bin/entra-agent
(tests/test_install.py verifies the unit again against a real install).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "entra-agent.service"
MAX_EXPOSURE = 1.5


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is not installed (apt-get install systemd): CI must have it"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)


def directives(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, repeated keys included."""
    found: list[tuple[str, str, str]] = []
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def values(key: str, section: str | None = None) -> list[str]:
    return [v for s, k, v in directives(UNIT) if k == key and (section is None or s == section)]


def one(key: str, section: str = "Service") -> str:
    found = values(key, section)
    assert len(found) == 1, f"{section}.{key}: expected one setting, got {found}"
    return found[0]


def scratch_root(tmp_path: Path, unit_text: str, with_binary: bool = True) -> Path:
    root = tmp_path / "root"
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/entra-agent.service").write_text(unit_text)
    if with_binary:
        binary = root / "opt/entra-agent/venv/bin/entra-agent"
        binary.parent.mkdir(parents=True)
        binary.write_text("#!/bin/sh\nexit 0\n")
        binary.chmod(0o755)
    return root


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    return analyze("verify", f"--root={root}", "/etc/systemd/system/entra-agent.service")


def test_exposure_is_at_most_1_5() -> None:
    result = analyze("security", "--offline=true", "--no-pager", str(UNIT))
    match = re.search(r"Overall exposure level for entra-agent\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_systemd_reads_the_device_groups_and_network_it_must_leave_open() -> None:
    result = analyze("security", "--offline=true", "--json=short", "--no-pager", str(UNIT))
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    devices = checks["DeviceAllow="]["description"]
    for group in ("char-gpiochip:rw", "char-i2c:rw", "char-spi:rw", "char-fb:rw", "char-*gpiomem:rw"):
        assert group in devices, devices
    # Still on the network (HTTPS, MQTT) ...
    assert checks["PrivateNetwork="]["set"] is False
    assert checks["RestrictAddressFamilies=~AF_(INET|INET6)"]["set"] is False
    # ... but nothing exotic, no capabilities, no new privileges.
    for name in ("RestrictAddressFamilies=~AF_PACKET", "RestrictAddressFamilies=~…",
                 "CapabilityBoundingSet=~CAP_SYS_ADMIN", "CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)",
                 "NoNewPrivileges=", "ProtectSystem=", "ProtectHome=", "MemoryDenyWriteExecute=",
                 "NotifyAccess=", "UMask="):
        assert checks[name]["set"] is True, checks[name]


def test_ip_allow_list_keeps_every_unicast_address_and_drops_multicast() -> None:
    # Same reach as without a list (Entra, an endpoint anywhere, a LAN broker,
    # this board), minus multicast and broadcast.
    import ipaddress

    assert values("IPAddressDeny") == ["any"]
    allowed = [ipaddress.ip_network(n) for v in values("IPAddressAllow") for n in v.split()]

    def allows(address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == n.version and ip in n for n in allowed)

    for reachable in ("127.0.0.1", "::1", "169.254.10.1", "fe80::1", "10.1.2.3", "172.20.0.1",
                      "192.168.1.10", "fd00::5", "20.190.160.1", "40.126.1.1", "8.8.8.8",
                      "2603:1006:2000::1", "2001:db8::1", "223.255.255.254"):
        assert allows(reachable), reachable
    for never in ("224.0.0.251", "239.255.255.250", "255.255.255.255", "ff02::fb"):
        assert not allows(never), never


def test_unit_settings_the_agent_and_the_board_rely_on() -> None:
    assert one("Type") == "notify"
    assert one("ExecStart") == "/opt/entra-agent/venv/bin/entra-agent run"
    assert one("NotifyAccess") == "main"
    assert one("Restart") == "on-failure"
    assert one("WatchdogSec") and one("RestartSec")
    assert one("StartLimitIntervalSec", "Unit") and one("StartLimitBurst", "Unit")
    assert "network-online.target" in one("Wants", "Unit")
    assert set(one("After", "Unit").split()) >= {"network-online.target", "time-sync.target"}
    # time-sync.target is ordered after, never pulled in (systemd.special(7)).
    assert "time-sync.target" not in one("Wants", "Unit")
    assert one("StateDirectory") == "entra-agent" and one("StateDirectoryMode") == "0700"
    assert one("RuntimeDirectory") == "entra-agent" and one("ConfigurationDirectory") == "entra-agent"
    assert one("UMask") == "0077"
    assert one("DevicePolicy") == "closed"
    assert one("SyslogIdentifier") == "entra-agent" and one("SyslogLevelPrefix") == "yes"
    assert one("CapabilityBoundingSet") == ""
    # Root (the token file's owner), in a user namespace that maps only root.
    assert values("User") == [] and one("PrivateUsers") == "yes"
    # The sensors read /proc/loadavg, /proc/meminfo and /proc/uptime.
    assert values("ProcSubset") == []
    assert values("PrivateDevices") == []
    assert set(one("RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert one("WantedBy", "Install") == "multi-user.target"
    # lgpio writes FIFOs in $LG_WD or the working directory: a writable,
    # private one, since "/" is read-only (ProtectSystem=strict).
    assert one("ProtectSystem") == "strict" and one("PrivateTmp") == "yes"
    assert "LG_WD=/tmp" in values("Environment") and one("WorkingDirectory") == "/tmp"
    assert "PYTHONUNBUFFERED=1" in values("Environment")
    # Enabled before setup: skipped, not failed, until a profile exists (agent/paths.py's root path).
    from agent.paths import ROOT_CONFIG_DIR
    assert one("ConditionPathExists", "Unit") == str(ROOT_CONFIG_DIR / "profiles.toml")


def test_verify_is_clean(tmp_path: Path) -> None:
    result = verify(scratch_root(tmp_path, UNIT.read_text()))
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        result.stdout + result.stderr


@pytest.mark.parametrize("break_it, complaint", [
    ("missing_binary", "is not executable"),
    ("typo", "Unknown key 'WatchdogSecs'"),
    ("bad_value", "Failed to parse"),
])
def test_verify_in_a_scratch_root_does_catch_mistakes(tmp_path: Path, break_it: str, complaint: str) -> None:
    # The clean verdict above means something only if these are caught.
    text = UNIT.read_text()
    if break_it == "typo":
        text = text.replace("WatchdogSec=", "WatchdogSecs=")
    elif break_it == "bad_value":
        text = text.replace("RestartSec=15s", "RestartSec=soon")
    result = verify(scratch_root(tmp_path, text, with_binary=break_it != "missing_binary"))
    assert complaint in result.stdout + result.stderr
