"""``entra-auth-cli``'s interactive sign-in: the device code at a terminal and on the attached screen.

The seed's experience: the page and code on stderr, a box when the terminal
can draw one, a spinner with the time left (a plain line now and then where
``\r`` cannot overwrite), and the same code on the device's screen when
``[display]`` names one (opened through :mod:`agent.assembly`).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from agent import paths, report, termui, waits
from agent.auth.errors import AuthorizationDeclined, CodeExpired
from agent.auth.tokens import TokenClient, TokenSet
from agent.errors import AgentError, CancelledError
from agent.ui import (
    CancelledView,
    DeclinedView,
    ErrorView,
    ExpiredView,
    Presenter,
    SignedInView,
    SignInView,
    View,
    box,
    format_duration,
)

__all__ = ["PROG", "Progress", "open_screen", "sign_in"]

PROG = "entra-auth-cli"
log = logging.getLogger(__name__)

#: Without a terminal, how often a progress line is printed, in seconds.
PLAIN_PROGRESS_EVERY = 60.0


class Progress:
    """The seed's waiting experience on stderr: a spinner with the time left
    where ``\r`` can overwrite a line (fitted to its width), a plain line now
    and then otherwise (a pipe, ``TERM=dumb``, a terminal without a width)."""

    def __init__(self, stream: TextIO, term: termui.Terminal | None = None) -> None:
        self.stream = stream
        self.term = term or termui.terminal(stream)
        self.tty = self.term.overwrite
        self._frame = 0
        self._last_plain: float | None = None

    def update(self, seconds_left: float) -> None:
        if self.tty:
            self._frame += 1
            self.stream.write("\r" + termui.spinner_line(self.term, self._frame, seconds_left)
                              + "\033[K")
            self.stream.flush()
            return
        now = time.monotonic()
        if self._last_plain is None or now - self._last_plain >= PLAIN_PROGRESS_EVERY:
            self._last_plain = now
            self.stream.write(f"Waiting for authentication... ({format_duration(seconds_left)} left)\n")
            self.stream.flush()

    def clear(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def open_screen() -> Presenter | None:
    """The attached screen of ``agent.toml``'s ``[display]``, or None (agent.assembly)."""
    from agent.assembly import open_attached_screen
    from agent.config import load_config
    try:
        config = load_config(paths.config_file())
    except AgentError as exc:
        log.warning("no screen to show the code on: %s", exc)
        return None
    return open_attached_screen(config.display.as_settings())


def sign_in(client: TokenClient, scopes: list[str], screen: Presenter | None = None) -> TokenSet:
    err = sys.stderr
    with waits.provider_slow(client, "a sign-in code"):
        authorization = client.request_code(scopes or None)

    def view_now() -> SignInView:
        return report.sign_in_view(authorization, client.clock)

    view = view_now()
    term = termui.terminal(err)
    err.write("To sign in, use a web browser to open the page:\n"
              f"{authorization.verification_uri}\n"
              f"And enter the code: {authorization.user_code}\n\n")
    boxed = box(view, term=term)
    if boxed:
        err.write(boxed + "\n")
    err.flush()
    progress = Progress(err, term)

    def on_wait(seconds_left: float) -> None:
        progress.update(seconds_left)
        if screen is not None:
            screen.show(view_now())

    try:
        tokens = client.poll(authorization, on_wait=on_wait,
                             tick=1.0 if progress.tty or screen is not None else None)
    except CodeExpired:
        _show(screen, ExpiredView(button=False))
        raise CodeExpired("Device code expired. Please try again.",
                          f"run: {PROG} get-token --flow device-code --profile {client.profile.name}") from None
    except AuthorizationDeclined as exc:
        _show(screen, DeclinedView(button=False))
        raise AuthorizationDeclined(
            exc.message, f"run: {PROG} get-token --flow device-code --profile {client.profile.name} "
                         "to try again", description=exc.description, aadsts=exc.aadsts) from None
    except (CancelledError, KeyboardInterrupt):
        _show(screen, CancelledView(button=False))
        raise
    except AgentError as exc:
        _show(screen, ErrorView(exc.message))
        raise
    finally:
        progress.clear()
    _show(screen, SignedInView(tokens.account))
    who = f" as {tokens.account}" if tokens.account else ""
    err.write(f"{termui.check_mark(term)} Authentication successful{who}!\n"
              f"Token saved to profile '{client.profile.name}'\n")
    err.flush()
    return tokens


def _show(screen: Presenter | None, view: View) -> None:
    if screen is not None:
        report.show(screen, view)     # a display fault never stops the sign-in
