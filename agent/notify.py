"""systemd's notify protocol (sd_notify), with no dependency.

A notification is one datagram of ``KEY=VALUE`` lines sent to the socket in
``$NOTIFY_SOCKET``. A name starting with ``@`` is in Linux's abstract
namespace (a leading NUL byte). When the variable is unset (not started by
systemd, or ``Type=simple``) every call does nothing, so the agent runs the
same from a shell.

>>> notifier = Notifier.from_environment()
>>> notifier.ready(); notifier.status("signed in as ada@contoso.example")
"""

from __future__ import annotations

import logging
import os
import socket
import threading

__all__ = ["Notifier", "watchdog_interval"]

log = logging.getLogger(__name__)


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """How often to send ``WATCHDOG=1``, in seconds, or None when not asked.

    Half of ``$WATCHDOG_USEC`` (systemd's advice), and only when
    ``$WATCHDOG_PID`` is unset or names this process.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000 / 2


class Notifier:
    """Sends sd_notify datagrams to one socket address (or to nobody)."""

    def __init__(self, address: str | None) -> None:
        self._address: str | bytes | None = None
        if address:
            # '@name' is the abstract namespace: the kernel wants a NUL first.
            self._address = ("\0" + address[1:]) if address.startswith("@") else address
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> "Notifier":
        """A notifier for ``$NOTIFY_SOCKET``; a silent one when it is unset."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        """True when notifications go somewhere."""
        return self._address is not None

    def notify(self, message: str) -> bool:
        """Send *message* (``"READY=1"``, ...); True when it was sent.

        Never raises: a missing socket must not stop the agent.
        """
        if self._address is None:
            return False
        data = message.encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(data, self._address)
                return True
            except OSError as exc:
                if not self._warned:
                    # Once: a watchdog ping every few seconds would flood the log.
                    log.warning("systemd notification failed: %s", exc)
                    self._warned = True
                return False

    def ready(self) -> bool:
        """Tell systemd the service is up (``Type=notify``)."""
        return self.notify("READY=1")

    def stopping(self) -> bool:
        """Tell systemd the service is shutting down."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """Ping the watchdog (``WatchdogSec=``)."""
        return self.notify("WATCHDOG=1")

    def status(self, line: str) -> bool:
        """Set the one line ``systemctl status`` shows."""
        # A newline would start a new KEY=VALUE assignment.
        return self.notify("STATUS=" + " ".join(line.split()))

    def close(self) -> None:
        """Close the socket."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
