"""The agent's states, the transitions between them, and the check the service makes on each.

The names are what MQTT and ``status.json`` say. :data:`TRANSITIONS` is the
whole state machine: every change of state the service makes is in it (a
change that is not is a programming error, :class:`IllegalTransition`), and
README's state diagram (section "States") is this table, edge for edge
(``tests/test_service_states.py`` compares them). Staying in a state (a refresh while
signed in) is not a transition.
"""

from __future__ import annotations

__all__ = ["STATES", "STARTING", "SIGNED_IN", "SIGN_IN_REQUIRED", "AWAITING_USER",
           "SIGN_IN_STOPPED", "STOPPING", "TRANSITIONS", "IllegalTransition", "check_transition"]

STARTING = "starting"
SIGNED_IN = "signed_in"
SIGN_IN_REQUIRED = "sign_in_required"
AWAITING_USER = "awaiting_user"
SIGN_IN_STOPPED = "sign_in_stopped"
STOPPING = "stopping"
STATES = (STARTING, SIGNED_IN, SIGN_IN_REQUIRED, AWAITING_USER, SIGN_IN_STOPPED, STOPPING)

#: Every state change the service makes: from -> the states it may go to.
#: Any state may also go to STOPPING (SIGTERM); STOPPING goes nowhere.
TRANSITIONS: dict[str, frozenset[str]] = {
    # A saved token still valid; or expired and refreshed, or kept (with the
    # readings going to the outbox) while the provider cannot be reached.
    STARTING: frozenset({SIGNED_IN, SIGN_IN_REQUIRED}),
    # The refresh fails for good (also after a 401), or signed out (button hold, Home Assistant).
    SIGNED_IN: frozenset({SIGN_IN_REQUIRED}),
    # A code to show; or the code request failed (for good: shown; transient: the retry timer).
    SIGN_IN_REQUIRED: frozenset({AWAITING_USER, SIGN_IN_STOPPED}),
    # Approved (or a token saved by entra-auth-cli); expired / declined /
    # cancelled; a new code asked for from Home Assistant.
    AWAITING_USER: frozenset({SIGNED_IN, SIGN_IN_STOPPED, SIGN_IN_REQUIRED}),
    # A button press, the retry timer, or Home Assistant asks for a new code.
    SIGN_IN_STOPPED: frozenset({SIGN_IN_REQUIRED}),
    STOPPING: frozenset(),
}


class IllegalTransition(RuntimeError):
    """The service tried a state change that :data:`TRANSITIONS` does not have (a bug)."""


def check_transition(old: str, new: str) -> None:
    """Raise :class:`IllegalTransition` unless *old* -> *new* is allowed (or no change)."""
    if old == new or (new == STOPPING and old != STOPPING):
        return
    if new not in TRANSITIONS.get(old, frozenset()):
        raise IllegalTransition(f"no transition {old} -> {new} in agent.states.TRANSITIONS")
