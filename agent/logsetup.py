"""Logging for both commands: plain on a terminal, with priorities in the journal.

Under systemd, stderr goes to the journal, which reads a ``<N>`` prefix
(sd-daemon(3)) as the line's syslog priority when the unit says
``SyslogLevelPrefix=yes`` (the default), so ``journalctl -p warning`` shows
only what matters. systemd sets ``JOURNAL_STREAM`` to the ``device:inode``
of that stream; we use the prefix only when stderr really is it.

Three kinds of line reach the journal with a priority, not as plain info:

- log records (``<3>`` for ERROR, ``<4>`` WARNING, ...);
- the one-line fatal error a command ends with (``entra-agent: error: ...``,
  printed by :func:`agent.errors.run_command` with :func:`journal_prefix`),
  at ``<3>``: the unit stops restarting on exit 2, 3 and 6, and
  ``journalctl -p warning`` must say why;
- Python warnings from libraries (gpiozero's pin factory fallbacks, ...):
  captured into logging (:func:`logging.captureWarnings`) as one WARNING line
  ``py.warnings: gpiozero.devices: PinFactoryFallback: ...``, not as two raw
  lines with the venv's file paths.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from types import TracebackType
from typing import TextIO

__all__ = ["setup_logging", "stderr_is_journal", "journal_prefix", "ERROR_PRIORITY"]

# syslog priority of a command's fatal one-line error
ERROR_PRIORITY = 3

# logging level -> syslog priority (RFC 5424 severities)
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
             logging.DEBUG: 7}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6 if record.levelno > logging.DEBUG else 7)
        # One record is one journal entry: keep continuation lines under the same priority.
        text = super().format(record).replace("\n", "\n" + f"<{priority}>")
        return f"<{priority}>{text}"


def stderr_is_journal() -> bool:
    """True when stderr is the journal stream systemd connected us to."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def journal_prefix(priority: int) -> str:
    """``<priority>`` when stderr is the journal, else ``""`` (a terminal, a pipe, a file)."""
    return f"<{priority}>" if stderr_is_journal() else ""


def _warning_source(filename: str) -> str:
    """``gpiozero.devices`` for ``.../site-packages/gpiozero/devices.py``: a module, not a path."""
    parts = filename.replace("\\", "/").split("/")
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            parts = parts[len(parts) - parts[::-1].index(marker):]
            break
    else:
        parts = parts[-1:]
    if parts and parts[-1].endswith(".py"):
        parts[-1] = parts[-1][:-3]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(p for p in parts if p) or "python"


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """warnings.showwarning as one log line: where (a module), the category, the text."""
    text = " ".join(str(message).split())
    logging.getLogger("py.warnings").warning(
        "%s: %s: %s", _warning_source(filename), category.__name__, text)


def _log_uncaught(kind: type[BaseException], value: BaseException,
                  tb: TracebackType | None) -> None:
    """sys.excepthook in the journal: a crash is one CRITICAL entry (every line ``<2>``)."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("agent").critical("unexpected error", exc_info=(kind, value, tb))


def setup_logging(prog: str, level: int = logging.WARNING, *, names: bool = False) -> None:
    """Log to stderr: ``prog: LEVEL: [logger: ]message``, or ``<N>logger: message``
    in the journal (which adds the time and the unit's identifier itself)."""
    handler = logging.StreamHandler(sys.stderr)
    journal = stderr_is_journal()
    if journal:
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
        sys.excepthook = _log_uncaught
    else:
        name = "%(name)s: " if names else ""
        handler.setFormatter(logging.Formatter(f"{prog}: %(levelname)s: {name}%(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_entra_agent", False):
            root.removeHandler(old)
    handler._entra_agent = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Library warnings become log records (priority 4 in the journal). Our
    # showwarning after captureWarnings: logging's own keeps the file path and
    # the source line, two journal entries for one warning.
    logging.captureWarnings(True)
    warnings.showwarning = _show_warning
