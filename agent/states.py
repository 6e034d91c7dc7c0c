"""The agent's states, as the service enters them and as MQTT and ``status.json`` name them.

See :mod:`agent.service` for the transitions between them.
"""

from __future__ import annotations

__all__ = ["STATES", "STARTING", "SIGNED_IN", "SIGN_IN_REQUIRED", "AWAITING_USER",
           "SIGN_IN_STOPPED", "STOPPING"]

STARTING = "starting"
SIGNED_IN = "signed_in"
SIGN_IN_REQUIRED = "sign_in_required"
AWAITING_USER = "awaiting_user"
SIGN_IN_STOPPED = "sign_in_stopped"
STOPPING = "stopping"
STATES = (STARTING, SIGNED_IN, SIGN_IN_REQUIRED, AWAITING_USER, SIGN_IN_STOPPED, STOPPING)
