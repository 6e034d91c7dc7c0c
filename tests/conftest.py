"""Shared fixtures. Each area keeps its own fixtures in a plugin module.

Slow tests (``-m "not slow"`` leaves them out; the default runs everything):
a test is marked ``@pytest.mark.slow`` in its own file, listed in
:data:`SLOW` below by the part of its node id that names it, or uses one of
the :data:`SLOW_FIXTURES` (the real clock's sign-in, a real broker).
"""

from __future__ import annotations

import pytest

#: Slow tests marked here rather than in their files (node id prefix -> why).
SLOW = {
    "tests/test_pillow_versions.py::": "builds a venv on Debian's Python and runs the screen tests in it",
    "tests/test_hostile_generative.py::": "hypothesis: hundreds of generated hostile answers",
    "tests/test_service_soak.py::": "a long soak of the service",
    "tests/test_service_e2e.py::": "the service in a subprocess, end to end",
    "tests/test_homeassistant_e2e.py::": "a real Home Assistant core",
    "tests/test_demo.py::": "the demo in a subprocess, real time",
    "tests/test_tokenstore.py::test_sigkill_never_leaves_a_torn_file": "kills writers over and over",
    "tests/test_pins.py::test_hints_name_the_debian_package_only_where_apt_has_it": "asks apt-cache",
    "tests/test_revocation.py::test_an_unresponsive_provider_never_blocks_the_local_sign_out":
        "waits out a real HTTP timeout",
    "tests/test_cli_edges.py::test_a_valid_token_needs_no_lock_and_a_held_lock_names_its_holder":
        "waits for a lock held by another process",
    "tests/test_outbox_durability.py::test_a_full_disk_keeps_the_outbox_and_carries_on_when_space_returns":
        "fills a real (small) file system",
    "tests/test_hostile_idp.py::test_the_device_flow_ends_within_the_code_lifetime_whatever_the_server_does":
        "real HTTP deadlines against a hostile server",
    "tests/test_sensors.py::test_hung_command_and_its_children_are_killed": "waits out a real command timeout",
    "tests/test_tokenstore.py::test_concurrent_writers_lose_no_increment": "many writer processes",
    "tests/test_cli_edges.py::test_ctrl_c_at_a_prompt_says_cancelled_not_authentication": "a CLI on a pty, real time",
    "tests/test_cli_edges.py::test_a_provider_that_never_answers_is_named_and_ctrl_c_is_immediate":
        "waits for a real HTTP timeout",
}

#: Fixtures that make a test slow wherever it is (fixture -> why).
SLOW_FIXTURES = {
    "idp_realtime": "a sign-in on the real clock: each poll waits a real second",
    "mosquitto": "a real Mosquitto broker and paho's real-time network thread",
    "mosquitto_tls": "a real Mosquitto broker with TLS (certificates made per run)",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.nodeid.startswith(prefix) for prefix in SLOW) or SLOW_FIXTURES.keys() & set(
                getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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
