"""Helpers for tests of ``agent.config``: write a config file, load it, read the one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    """*text* as the config file *name* in *tmp_path*."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    """The :class:`ConfigError` loading *text* gives: one line, starting with the file's path."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message
