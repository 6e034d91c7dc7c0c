"""Shared fixtures. Each area keeps its own fixtures in a plugin module."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures_core",
    "tests.fixtures_mqtt",
    "tests.fixtures_hw",
    "tests.fixtures_ha",
    "tests.fixtures_service",
    "tests.fixtures_install",
]


@pytest.fixture
def agent_dirs(tmp_path, monkeypatch):
    """Point every agent path at a fresh temporary folder (as a non-root user would)."""
    dirs = {
        "config": tmp_path / "config",
        "state": tmp_path / "state",
        "runtime": tmp_path / "run",
    }
    monkeypatch.setenv("ENTRA_AGENT_CONFIG_DIR", str(dirs["config"]))
    monkeypatch.setenv("ENTRA_AGENT_STATE_DIR", str(dirs["state"]))
    monkeypatch.setenv("ENTRA_AGENT_RUNTIME_DIR", str(dirs["runtime"]))
    monkeypatch.delenv("ENTRA_AGENT_CONFIG", raising=False)
    for variable in ("CONFIGURATION_DIRECTORY", "STATE_DIRECTORY", "RUNTIME_DIRECTORY"):
        monkeypatch.delenv(variable, raising=False)
    return dirs
