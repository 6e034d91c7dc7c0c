"""What a screen shows: plain view values, and the console presenter.

The service and the CLI build views; a presenter shows them. ``hardware``
knows only these types, so drawing never reaches into the agent's state.
All times in a view are already worked out by whoever built it (seconds
left, ages), so drawing a view is a pure function of the view and a size.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO, Union

if TYPE_CHECKING:  # pragma: no cover
    from agent.termui import Terminal


@dataclass(frozen=True)
class SignInView:
    """Waiting for a person to enter ``user_code`` at ``verification_uri``.

    RFC 8628 §3.3.1: the code is always shown as text, even when a QR code
    of ``verification_uri_complete`` carries it too.
    """

    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    seconds_left: int       # until the code expires, in seconds
    lifetime: int           # the code's whole lifetime, in seconds (for a bar)


@dataclass(frozen=True)
class ProgressView:
    """Something is under way: "Requesting a code", "Signing in"."""

    message: str


@dataclass(frozen=True)
class SignedInView:
    """Sign-in just succeeded."""

    account: str            # e.g. "ada@contoso.onmicrosoft.com"; "" when unknown


@dataclass(frozen=True)
class StatusView:
    """The steady screen of a signed-in, reporting device."""

    device_id: str
    account: str
    last_upload_age: float | None   # seconds since the last accepted upload; None: never
    outbox_depth: int               # readings waiting to be uploaded
    mqtt_connected: bool | None     # None: MQTT not configured
    token_valid_for: float | None   # seconds the access token is still valid


@dataclass(frozen=True)
class OfflineView:
    """Signed in, but the endpoint cannot be reached; readings are kept."""

    reason: str                     # one short line, e.g. "endpoint unreachable"
    outbox_depth: int
    retry_in: float | None          # seconds until the next attempt


@dataclass(frozen=True)
class ExpiredView:
    """The code expired before anyone used it.

    ``button``: a button can ask for a new code now; ``retry_in``: seconds
    until a new code comes by itself (None: it does not). The screen tells
    only what is true.
    """

    button: bool = True
    retry_in: float | None = None


@dataclass(frozen=True)
class DeclinedView:
    """The person declined the sign-in (``button``/``retry_in`` as in :class:`ExpiredView`)."""

    button: bool = True
    retry_in: float | None = None


@dataclass(frozen=True)
class CancelledView:
    """Sign-in cancelled (button or Ctrl+C); ``button``/``retry_in`` as in :class:`ExpiredView`."""

    button: bool = True
    retry_in: float | None = None


@dataclass(frozen=True)
class ErrorView:
    """Something a person can act on went wrong; ``message`` is one line.

    ``button``/``retry_in`` as in :class:`ExpiredView`, when the error
    stopped a sign-in that a press or a timer restarts (default: neither).
    """

    message: str
    button: bool = False
    retry_in: float | None = None


@dataclass(frozen=True)
class ConfirmSignOutView:
    """The button is being held: release now to keep the sign-in."""

    seconds_left: float             # until sign-out happens


View = Union[
    SignInView, ProgressView, SignedInView, StatusView, OfflineView,
    ExpiredView, DeclinedView, CancelledView, ErrorView, ConfirmSignOutView,
]

ALL_VIEW_TYPES = View.__args__  # type: ignore[attr-defined]


class Presenter(Protocol):
    """Anything that can show a view: the console, an OLED, nothing."""

    def show(self, view: View) -> None:
        """Show *view*, replacing what was shown."""

    def wake(self) -> None:
        """A person is here (button press): undo any dimming or blanking."""

    def close(self) -> None:
        """Release the device (clear the screen)."""


class NullPresenter:
    """Shows nothing (``driver = "none"``)."""

    def show(self, view: View) -> None:
        pass

    def wake(self) -> None:
        pass

    def close(self) -> None:
        pass


def format_duration(seconds: float | None) -> str:
    """A short human duration: ``"14m 59s"``, ``"3h 05m"``, ``"--"``.

    >>> format_duration(899)
    '14m 59s'
    """
    if seconds is None:
        return "--"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"


def next_code_hint(button: bool, retry_in: float | None, *, again: bool = False) -> str:
    """How a new sign-in code comes: ``"press the button for a new code"``,
    ``"new code in 14m 59s"``, both joined by ``"; "``, or ``""`` (neither).

    *retry_in* is in seconds; *again* says "to try again" instead of "for a new code".
    """
    parts = []
    if button:
        parts.append("press the button " + ("to try again" if again else "for a new code"))
    if retry_in is not None:
        parts.append(f"new code in {format_duration(retry_in)}")
    return "; ".join(parts)


def describe(view: View) -> list[str]:
    """The lines a text-only face shows for *view* (console, log, LCD)."""
    match view:
        case SignInView():
            lines = [
                f"To sign in, open {view.verification_uri}",
                f"and enter the code: {view.user_code}",
                f"Code expires in {format_duration(view.seconds_left)}",
            ]
            return lines
        case ProgressView():
            return [view.message]
        case SignedInView():
            who = view.account or "this device's account"
            return [f"Signed in as {who}"]
        case StatusView():
            mqtt = {None: "off", True: "connected", False: "disconnected"}[view.mqtt_connected]
            last = ("never" if view.last_upload_age is None
                    else f"{format_duration(view.last_upload_age)} ago")
            return [
                f"{view.device_id}: signed in as {view.account or '?'}",
                f"last upload {last}, {view.outbox_depth} waiting, MQTT {mqtt}",
                f"token valid for {format_duration(view.token_valid_for)}",
            ]
        case OfflineView():
            retry = ("" if view.retry_in is None
                     else f", retry in {format_duration(view.retry_in)}")
            return [f"Offline: {view.reason} ({view.outbox_depth} readings kept{retry})"]
        case ExpiredView():
            hint = next_code_hint(view.button, view.retry_in)
            return [f"Device code expired.{' Please try again (' + hint + ').' if hint else ''}"]
        case DeclinedView():
            hint = next_code_hint(view.button, view.retry_in, again=True)
            return [f"Sign-in was declined{' (' + hint + ')' if hint else ''}."]
        case CancelledView():
            hint = next_code_hint(view.button, view.retry_in)
            return [f"Authentication cancelled by user{' (' + hint + ')' if hint else ''}."]
        case ErrorView():
            hint = next_code_hint(view.button, view.retry_in)
            return [f"Error: {view.message}{' (' + hint + ')' if hint else ''}"]
        case ConfirmSignOutView():
            return [f"Keep holding to sign out ({view.seconds_left:.0f}s); release to cancel."]
    raise TypeError(f"not a view: {view!r}")


class ConsolePresenter:
    """Shows views as text lines on a stream (stderr by default).

    A view is printed when it differs from the last one in what it says,
    apart from a running countdown, so a log does not fill with ticks.

    *interactive*: someone at a terminal can press Ctrl+C (default: stdin is
    a terminal). Only then does the sign-in box say what Ctrl+C does there
    (it stops the agent, :data:`AGENT_CTRL_C_HINT`); under systemd nobody
    can, so it says nothing of it. The box fits the stream's terminal
    (:mod:`agent.termui`); where not even the code fits in a box, the plain
    lines of :func:`describe` stand in.
    """

    def __init__(self, stream: TextIO | None = None, *, interactive: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._interactive = _stdin_is_a_terminal() if interactive is None else interactive
        self._lock = threading.Lock()
        self._last_key: object = None

    def show(self, view: View) -> None:
        key: object = (type(view), view.user_code) if isinstance(view, SignInView) else view
        if isinstance(view, StatusView):
            # Ages tick every second; print when the substance changes.
            key = (type(view), view.account, view.outbox_depth == 0, view.mqtt_connected)
        elif isinstance(view, (ExpiredView, DeclinedView, CancelledView, ErrorView)):
            # "new code in 14m 59s" ticks each second on a screen; a log needs it once.
            key = dataclasses.replace(view, retry_in=None)
        elif isinstance(view, OfflineView):
            # Depth and retry time change at every attempt; the reason is the news.
            key = (type(view), view.reason)
        with self._lock:
            if key == self._last_key:
                return
            self._last_key = key
            text = ""
            if isinstance(view, SignInView):
                from agent.termui import terminal

                hint = AGENT_CTRL_C_HINT if self._interactive else None
                text = box(view, cancel_hint=hint, term=terminal(self._stream))
            if text:
                self._stream.write(text + "\n")
            else:
                for line in describe(view):
                    self._stream.write(line + "\n")
            self._stream.flush()

    def wake(self) -> None:
        pass

    def close(self) -> None:
        pass


#: How a person at a terminal cancels a sign-in (entra-auth-cli).
CTRL_C_HINT = "Press Ctrl+C to cancel"
#: What Ctrl+C does where the agent shows the code on its console.
AGENT_CTRL_C_HINT = "Press Ctrl+C to stop the agent"


def _stdin_is_a_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):    # replaced or closed stdin
        return False


def expires_in_words(seconds_left: float) -> str:
    """``"15 min"``, or ``"20 s"`` for a code that lives less than 90 seconds."""
    seconds = max(1, int(seconds_left))
    if seconds < 90:
        return f"{seconds} s"
    return f"{round(seconds / 60)} min"


def box(view: SignInView, *, cancel_hint: str | None = CTRL_C_HINT,
        term: "Terminal | None" = None) -> str:
    """The seed's boxed instructions for a sign-in view, fitted to *term*.

    *cancel_hint* is the last row (how to cancel); None leaves it out, for
    when no one can cancel that way (a service without a terminal). *term*
    (default: any width, Unicode) sets the width and the characters: the
    address wraps, the code never does, and ``""`` comes back when not even
    the code fits in a box (the caller's plain lines carry it then).
    """
    from agent.termui import Terminal, sign_in_box

    term = term or Terminal(width=None, overwrite=False, unicode=True)
    rows: list[tuple[str, str, str] | None] = [
        ("text", "Device Code Authentication", ""),
        None,
        ("address", "1. Visit: ", view.verification_uri),
        ("code", "2. Enter code: ", view.user_code),
        ("text", "3. Sign in with your credentials", ""),
        None,
        ("text", "Waiting for authentication... "
                 f"(expires in {expires_in_words(view.seconds_left)})", ""),
    ]
    if cancel_hint:
        rows.append(("text", cancel_hint, ""))
    out = sign_in_box(rows, term, view.user_code)
    if view.verification_uri_complete:
        out.append(f"Or open: {view.verification_uri_complete}")
    return "\n".join(out)
