"""Helpers for tests that drive ``entra-auth-cli``: in-process ``main([...])``
against the local identity provider, or the CLI in a subprocess."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from agent.cli import main
from agent.sandbox.idp import IdentityProvider

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
REPO = Path(__file__).resolve().parent.parent

#: The CLI as a subprocess runs it (this checkout's code on PYTHONPATH, see :func:`cli_env`).
CLI = [sys.executable, "-c", "import sys; from agent.cli import main; sys.exit(main())"]


def create(idp: IdentityProvider, name: str = "default", *extra: str) -> int:
    """``create-profile`` *name* for the sandbox at *idp*; returns the exit code."""
    return main(["create-profile", "--name", name, "--client-id", CLIENT_ID,
                 "--tenant-id", "organizations", "--authority-host", idp.base_url, *extra])


def approve_when_issued(idp: IdentityProvider, *, decline: bool = False) -> threading.Thread:
    """Approve (or decline) the next code *idp* issues, from a thread, as a person would."""
    def run() -> None:
        code = idp.wait_for_code(timeout=10)
        (idp.decline if decline else idp.approve)(code)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def cli_env(agent_dirs: dict[str, Path], **extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: the agent's folders from ``agent_dirs``."""
    env = dict(os.environ)
    env.update({
        "ENTRA_AGENT_CONFIG_DIR": str(agent_dirs["config"]),
        "ENTRA_AGENT_STATE_DIR": str(agent_dirs["state"]),
        "ENTRA_AGENT_RUNTIME_DIR": str(agent_dirs["runtime"]),
        "PYTHONPATH": str(REPO),
    })
    env.pop("DEBUG", None)
    env.update(extra)
    return env
