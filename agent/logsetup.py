"""Logging for both commands: plain on a terminal, with priorities in the journal.

Under systemd, stderr goes to the journal, which reads a ``<N>`` prefix
(sd-daemon(3)) as the line's syslog priority when the unit says
``SyslogLevelPrefix=yes`` (the default), so ``journalctl -p warning`` shows
only what matters. systemd sets ``JOURNAL_STREAM`` to the ``device:inode``
of that stream; we use the prefix only when stderr really is it.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["setup_logging", "stderr_is_journal"]

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


def setup_logging(prog: str, level: int = logging.WARNING, *, names: bool = False) -> None:
    """Log to stderr: ``prog: LEVEL: [logger: ]message``, or ``<N>logger: message``
    in the journal (which adds the time and the unit's identifier itself)."""
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
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
