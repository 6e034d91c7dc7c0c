"""The one exception root of the project, and the exit codes built on it.

Every failure a person can meet is an :class:`AgentError`: its ``str()`` is
one line that says the cause and, in brackets, what to do. Command-line
entry points print it as ``prog: error: <line>`` and exit with
``exit_code``; nothing below the edge prints tracebacks for them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

# Exit codes (documented in README.md, "Exit codes").
EXIT_OK = 0
EXIT_FAILURE = 1          # anything not listed below
EXIT_USAGE = 2            # bad command line or bad input value
EXIT_CONFIG = 3           # profile or config file missing or invalid
EXIT_SIGN_IN = 4          # sign-in declined, expired, or required again
EXIT_NETWORK = 5          # identity provider or endpoint unreachable
EXIT_STORAGE = 6          # token file refused (permissions) or unwritable
EXIT_CANCELLED = 130      # Ctrl+C or button cancel (128 + SIGINT)


class AgentError(Exception):
    """Root of every expected failure: a cause and what to do about it."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(AgentError, ValueError):
    """A command-line argument or input value is not acceptable."""

    exit_code = EXIT_USAGE


class ConfigError(AgentError, ValueError):
    """A config or profile file is missing, unreadable or invalid."""

    exit_code = EXIT_CONFIG


class StorageError(AgentError, OSError):
    """A file the agent keeps (tokens, outbox, status) cannot be used safely."""

    exit_code = EXIT_STORAGE


class CancelledError(AgentError):
    """The person cancelled (Ctrl+C or the button)."""

    exit_code = EXIT_CANCELLED


#: Output closed early (``get-token | head -c5``): what a process killed by
#: SIGPIPE shows its shell (128 + 13), as ``cat`` or ``yes`` would.
EXIT_BROKEN_PIPE = 141


def run_command(prog: str, command: Callable[[], int], *, interrupted: str,
                resignal: bool = False) -> int:
    """Run a command-line handler at the edge: expected failures become one
    line ``prog: error: <cause> (<what to do>)`` on stderr and their exit
    code, Ctrl+C prints *interrupted* and gives 130; no traceback unless
    ``DEBUG=1``.

    *resignal*: after the Ctrl+C message, end by SIGINT itself (default
    handler, re-raised), so that a calling shell script stops too rather
    than carrying on (bash ignores a child's exit status 130; it stops for
    a child killed by SIGINT). The status the caller sees is 130 either way.

    A reader that went away (``| head``) ends the command quietly with 141.
    """
    try:
        code = command()
        sys.stdout.flush()          # a closed pipe shows here, not at exit
        return code
    except KeyboardInterrupt:
        if os.environ.get("DEBUG"):
            raise
        print(interrupted, file=sys.stderr)
        if resignal:
            die_by_sigint()
        return EXIT_CANCELLED
    except BrokenPipeError:
        return _output_closed()
    except AgentError as exc:
        if os.environ.get("DEBUG"):
            raise
        print(f"{_fatal()}{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if os.environ.get("DEBUG"):
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{_fatal()}{prog}: error: {exc.strerror or exc}{where} (run with DEBUG=1 for details)",
              file=sys.stderr)
        return EXIT_FAILURE


def _output_closed() -> int:
    # Point stdout at /dev/null so the interpreter's last flush does not
    # fail again ("Exception ignored ... BrokenPipeError") on its way out.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_BROKEN_PIPE


def die_by_sigint() -> None:
    """End this process by SIGINT with the default handler (exit status 130).

    Returns only where that cannot happen (not the main thread, or a
    platform without signals); the caller then returns 130 itself.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    # The default action is immediate for an unblocked signal; should it be
    # blocked (a parent's sigmask), give up and let the caller return 130.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _fatal() -> str:
    """The journal priority prefix of a command's last line (``<3>``; none off the journal)."""
    from agent.logsetup import ERROR_PRIORITY, journal_prefix

    return journal_prefix(ERROR_PRIORITY)
