"""What the publisher sends and accepts, as pure functions (no paho, no I/O).

:func:`state_payload` is the state as it goes out (only
:data:`ALLOWED_STATE_KEYS`: a token or device code passed by mistake never
leaves); :func:`json_payload` its bytes; :func:`parse_command` a Home
Assistant button press, or None for anything that is not one of ours.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["ALLOWED_STATE_KEYS", "COMMAND_MAX_BYTES", "json_payload", "parse_command", "state_payload"]

COMMAND_MAX_BYTES = 32          # a longer command payload is not one of ours

# The keys a state payload may carry. Anything else (a token, a device code)
# is dropped before publishing, whatever the caller passed.
ALLOWED_STATE_KEYS = frozenset({
    "state", "since", "profile", "account", "outbox_depth", "dropped",
    "last_upload", "last_error", "version", "verification_uri", "expires_at",
    "user_code", "device_id", "sensor_failures", "storage", "token_expires_at",
    "sign_out_confirm_until",
    "token_request",        # a program asked the token service while not signed in
})   # (not mqtt_connected: over MQTT it would only ever say a stale "false")


def state_payload(state: Mapping[str, Any], *, publish_user_code: bool, version: str) -> dict[str, Any]:
    """*state* as published: only :data:`ALLOWED_STATE_KEYS`; ``user_code``
    only with *publish_user_code*; ``version`` filled in when missing.

    >>> state_payload({"state": "signed_in", "access_token": "x"}, publish_user_code=False, version="1")
    {'state': 'signed_in', 'version': '1'}
    """
    payload = {k: v for k, v in state.items() if k in ALLOWED_STATE_KEYS}
    if not publish_user_code:
        payload.pop("user_code", None)
    payload.setdefault("version", version)
    return payload


def json_payload(payload: Mapping[str, Any]) -> str:
    """Compact JSON with sorted keys: equal state gives equal bytes."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)


def parse_command(payload: bytes, enabled: Collection[str]) -> str | None:
    """The command a message on ``.../command`` carries, if it is an *enabled* one.

    >>> parse_command(b" new_code\n", {"new_code"}), parse_command(b"sign_out", {"new_code"})
    ('new_code', None)
    """
    raw = bytes(payload[:COMMAND_MAX_BYTES + 1])
    command = raw.decode("ascii", "replace").strip()
    if command not in enabled or len(raw) > COMMAND_MAX_BYTES:
        return None
    return command
