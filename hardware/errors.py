"""The one error type of the device's face: a screen, a button or an LED that cannot be used."""

from __future__ import annotations

from agent.errors import AgentError

__all__ = ["HardwareError"]


class HardwareError(AgentError, OSError):
    """A display, button or LED is missing, busy or not permitted (one line, with the fix)."""
