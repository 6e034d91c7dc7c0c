"""What each screen says: the text blocks of every :mod:`agent.ui` view.

Pure functions of a view; :mod:`hardware.screens.planner` decides where the
blocks go and :mod:`hardware.screens.charlcd` how a character LCD shows them.
"""

from __future__ import annotations

import re
from typing import Callable

from agent.ui import (
    CancelledView,
    ConfirmSignOutView,
    DeclinedView,
    ErrorView,
    ExpiredView,
    OfflineView,
    ProgressView,
    SignedInView,
    SignInView,
    StatusView,
    View,
)
from agent.ui import format_duration as _format_duration
from hardware.screens.column import Block

__all__ = ["display_address", "display_code", "qr_payload", "view_blocks"]


def display_code(user_code: str) -> str:
    """The user code as a person should read it.

    An 8-character code with no separator is grouped in fours
    (``WDJBMJHT`` -> ``WDJB-MJHT``, RFC 8628 §6.1); any other code, such as
    Entra's 9 characters, is shown exactly as issued.
    """
    if len(user_code) == 8 and user_code.isalnum():
        return f"{user_code[:4]}-{user_code[4:]}"
    return user_code


def display_address(uri: str) -> str:
    """The verification address as typed into a browser: without ``https://``.

    Browsers add ``https://`` themselves, and the five saved characters keep
    the address whole on a 128x32 panel. Other schemes stay as they are.
    """
    return uri[len("https://"):] if uri.lower().startswith("https://") else uri


def qr_payload(view: SignInView) -> str:
    """What the QR code carries: the complete address when the provider sent one."""
    return view.verification_uri_complete or view.verification_uri


def _real_count(n: int) -> str:
    return f"{n:,}"


# Stand-ins for values that tick every second, as wide and as tall as they
# get: a screen is laid out once with these and the real text is put in the
# same place (see plan()), so a countdown does not cost a layout a second.
# Lines with a ticking duration never wrap, so the stand-in is one line too.
_WIDEST_DURATION = "88dm 88m"   # wider and taller than any format_duration() text


def view_blocks(view: View, stand_in: bool = False) -> list[Block]:
    """The text of a screen (sign-in's QR code and bar are added by :func:`plan`).

    With *stand_in*, durations and counts are replaced by the widest text of
    their kind (same number of digits for counts).
    """
    if stand_in:
        def format_duration(seconds: float | None) -> str:
            return _WIDEST_DURATION

        def _count(n: int) -> str:
            return re.sub(r"\d", "8", f"{n:,}")
    else:
        format_duration, _count = _format_duration, _real_count
    match view:
        case SignInView():
            return [
                Block("Sign in at", "note", required=False, priority=2),
                Block(display_address(view.verification_uri), "body", wrap="path", max_lines=6),
                Block(display_code(view.user_code), "big", scale=3.0, wrap="none", grow=True),
                Block(f"expires in {format_duration(view.seconds_left)}", "note",
                      wrap="none", required=False, priority=1),
            ]
        case ProgressView():
            return [Block(view.message, "title", scale=1.3, ellipsize=True, max_lines=3),
                    Block("please wait", "note", required=False)]
        case SignedInView():
            return [Block("Signed in", "good", scale=1.5, wrap="none"),
                    Block(view.account or "this device's account", "body", wrap="path",
                          ellipsize=True, max_lines=3)]
        case StatusView():
            last = ("never" if view.last_upload_age is None
                    else f"{format_duration(view.last_upload_age)} ago")
            blocks = [
                Block(view.device_id, "title", required=False, priority=1,
                      ellipsize=True, max_lines=1, align="left"),
                # Every row below matters more on the steady screen than the
                # whole account: when it does not fit as wrapped, it is one
                # line shortened by layout.shorten_account (start of the local
                # part + end of the domain, else the local part) before any
                # optional row is dropped.
                Block(view.account or "?", "body", wrap="path", ellipsize=True,
                      max_lines=3, align="left", shorten=True),
                Block(f"Sent {last}", "good" if view.last_upload_age is not None else "warn",
                      wrap="none", align="left"),
                Block(f"{_count(view.outbox_depth)} waiting",
                      "body" if view.outbox_depth < 1000 else "warn",
                      required=False, priority=4, align="left"),
            ]
            if view.mqtt_connected is not None:
                blocks.append(Block("MQTT " + ("connected" if view.mqtt_connected else "offline"),
                                    "good" if view.mqtt_connected else "bad",
                                    required=False, priority=3, align="left"))
            blocks.append(Block(f"Token {format_duration(view.token_valid_for)}", "note",
                                wrap="none", required=False, priority=2, align="left"))
            return blocks
        case OfflineView():
            blocks = [Block("Offline", "bad", scale=1.4, wrap="none"),
                      Block(view.reason, "body", ellipsize=True, max_lines=3),
                      Block(f"{_count(view.outbox_depth)} readings kept", "body")]
            if view.retry_in is not None:
                blocks.append(Block(f"retry in {format_duration(view.retry_in)}", "note",
                                    wrap="none", required=False))
            return blocks
        case ExpiredView():
            return [Block("Code expired", "warn", scale=1.4),
                    *_next_code(view.button, view.retry_in, format_duration)]
        case DeclinedView():
            return [Block("Sign-in declined", "bad", scale=1.4),
                    *_next_code(view.button, view.retry_in, format_duration, again=True)]
        case CancelledView():
            return [Block("Sign-in cancelled", "warn", scale=1.4),
                    *_next_code(view.button, view.retry_in, format_duration)]
        case ErrorView():
            return [Block("Error", "bad", scale=1.4, wrap="none"),
                    Block(view.message, "body", ellipsize=True, max_lines=4),
                    *_next_code(view.button, view.retry_in, format_duration, optional=True)]
        case ConfirmSignOutView():
            return [Block("Sign out?", "warn", scale=1.5, wrap="none"),
                    Block(f"Keep holding {max(0, round(view.seconds_left))}s", "body"),
                    Block("Release to cancel", "note", required=False)]
    raise TypeError(f"not a view: {view!r}")


def _next_code(button: bool, retry_in: float | None, format_duration: Callable[[float | None], str], *,
               again: bool = False, optional: bool = False) -> list[Block]:
    """How a new code comes, as a stopped screen says it: only what is true.

    The button line is what to do now; the timer line a note. With
    *optional* (under an error message) both may be dropped for room.
    """
    blocks = []
    if button:
        blocks.append(Block("Press the button " + ("to try again" if again else "for a new code"),
                            "body", required=not optional, priority=2))
    if retry_in is not None:
        blocks.append(Block(f"new code in {format_duration(retry_in)}", "note",
                            required=not (optional or button), priority=1))
    return blocks
