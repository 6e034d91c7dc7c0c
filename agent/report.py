"""What the service shows and tells: screen views, the status dict, the systemd status line.

Pure builders over what the service knows; the service decides when to show
or publish them. The status dict goes to MQTT (the publisher drops the user
code unless asked) and, without the user code, to ``status.json``.

>>> show(presenter, sign_in_view(authorization, clock))
>>> status_line(state="signed_in", tokens=tokens, authorization=None, device_id="dev-1")
'signed in as ada@contoso.example; reporting as dev-1'
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from agent import __version__, ui
from agent.clock import Clock
from agent.states import AWAITING_USER, SIGN_IN_STOPPED, SIGNED_IN

if TYPE_CHECKING:  # pragma: no cover
    from agent.auth.devicecode import DeviceAuthorization
    from agent.auth.tokens import TokenSet
    from agent.config import AgentConfig

__all__ = ["iso", "show", "sign_in_view", "stopped_view", "status_view", "outbox_depth", "outbox_dropped",
           "status_dict", "status_line"]

log = logging.getLogger(__name__)


def iso(epoch: float | None) -> str | None:
    """Wall-clock *epoch* seconds as ISO 8601 UTC (``2026-01-01T12:00:00Z``); None stays None."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def show(presenter: ui.Presenter, view: ui.View) -> None:
    """Show *view*; a display fault is logged, never raised."""
    try:
        presenter.show(view)
    except Exception:  # noqa: BLE001 - a display fault must not stop telemetry
        log.exception("showing %s failed", type(view).__name__)


def sign_in_view(auth: "DeviceAuthorization", clock: Clock) -> ui.SignInView:
    """The code to type and where, with its countdown."""
    return ui.SignInView(
        user_code=auth.user_code,
        verification_uri=auth.verification_uri,
        verification_uri_complete=auth.verification_uri_complete,
        seconds_left=int(auth.seconds_left(clock)),
        lifetime=int(auth.expires_in),
    )


def stopped_view(view: ui.View, *, button: bool, retry_in: float | None) -> ui.View:
    """*view* of a stopped sign-in, saying only what is true about the next code.

    For :class:`~agent.ui.ExpiredView`, :class:`~agent.ui.DeclinedView`,
    :class:`~agent.ui.CancelledView` and :class:`~agent.ui.ErrorView`: *button*
    is whether a working button can ask for a new code; *retry_in* the seconds
    until a new code is asked for by itself (None: never). Any other view is
    returned as it is.
    """
    if isinstance(view, (ui.ExpiredView, ui.DeclinedView, ui.CancelledView, ui.ErrorView)):
        return dataclasses.replace(view, button=bool(button), retry_in=retry_in)
    return view


def status_view(*, device_id: str, tokens: "TokenSet | None", last_upload_age: float | None,
                outbox_depth: int, mqtt_connected: bool | None, clock: Clock) -> ui.StatusView:
    """The steady signed-in screen; *last_upload_age* in seconds."""
    return ui.StatusView(
        device_id=device_id,
        account=tokens.account if tokens else "",
        last_upload_age=last_upload_age,
        outbox_depth=outbox_depth,
        mqtt_connected=mqtt_connected,
        token_valid_for=tokens.seconds_left(clock) if tokens else None,
    )


def outbox_depth(outbox: Any) -> int:
    """Readings waiting in *outbox* (0 without one, or when it cannot say)."""
    try:
        return int(outbox.depth()) if outbox is not None else 0
    except Exception:  # noqa: BLE001
        return 0


def outbox_dropped(outbox: Any) -> int:
    """Readings *outbox* had to drop (0 without one, or when it cannot say)."""
    value = getattr(outbox, "dropped", 0) if outbox is not None else 0
    try:
        return int(value() if callable(value) else value)
    except Exception:  # noqa: BLE001
        return 0


def status_dict(*, state: str, since: float, config: "AgentConfig", tokens: "TokenSet | None",
           authorization: "DeviceAuthorization | None", outbox: Any, last_upload: float | None,
           last_error: str | None, mqtt_connected: bool | None, sensor_failures: list[str],
           clock: Clock, storage: str | None = None,
           sign_out_confirm_until: float | None = None,
           program_asked: tuple[str, float] | None = None) -> dict[str, Any]:
    """The state as people and other programs see it (MQTT, status.json).

    *since*, *last_upload* and *sign_out_confirm_until* (a Home Assistant
    "Sign out" pressed once, waiting for its confirmation) are wall-clock
    epoch seconds. While waiting for the user it holds ``user_code``:
    whoever sends it on drops it unless that channel may carry it.
    *storage* is the outbox's problem with its disk ("storage full: ..."),
    present only while there is one. *program_asked* is (resource,
    wall-clock epoch s) when a program asked the token service for a token
    while nobody was signed in (``token_request`` then says so).
    """
    result: dict[str, Any] = {
        "state": state,
        "since": iso(since),
        "device_id": config.device_id,
        "profile": config.profile,
        "account": tokens.account if tokens else None,
        "outbox_depth": outbox_depth(outbox),
        "dropped": outbox_dropped(outbox),
        "last_upload": iso(last_upload),
        "token_expires_at": iso(tokens.expires_at) if tokens else None,
        "last_error": last_error,
        "version": __version__,
        "mqtt_connected": mqtt_connected,
        "sensor_failures": list(sensor_failures),
    }
    if storage:
        result["storage"] = storage     # "storage full: <folder> (...)" while the disk refuses writes
    if program_asked is not None:
        result["token_request"] = {"resource": program_asked[0], "at": iso(program_asked[1]),
                                   "message": "a program on this device needs a token: sign in"}
    auth = authorization
    if state == AWAITING_USER and auth is not None:
        result["verification_uri"] = auth.verification_uri
        result["expires_at"] = iso(clock.time() + auth.seconds_left(clock))
        result["user_code"] = auth.user_code   # the publisher drops it unless asked
    if sign_out_confirm_until is not None:
        result["sign_out_confirm_until"] = iso(sign_out_confirm_until)
    return result


def status_line(*, state: str, tokens: "TokenSet | None",
                authorization: "DeviceAuthorization | None", device_id: str,
                button: bool = True) -> str:
    """One line for systemd's STATUS= (``systemctl status``); *button*: one can be pressed."""
    if state == SIGNED_IN:
        who = tokens.account if tokens else ""
        return f"signed in{' as ' + who if who else ''}; reporting as {device_id}"
    if state == AWAITING_USER and authorization is not None:
        return f"waiting for sign-in at {authorization.verification_uri}"
    if state == SIGN_IN_STOPPED:
        return ("sign-in stopped; press the button for a new code" if button
                else "sign-in stopped; a new code is asked for later")
    return state.replace("_", " ")
