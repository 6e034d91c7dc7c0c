"""SIGTERM/SIGINT to a stop request, without running our code in a signal handler.

A Python signal handler runs between two bytecodes of the main thread,
possibly while it holds a lock (the service's event queue): calling
``stop()`` there could deadlock. So the C-level handler only writes the
signal number to a pipe (``signal.set_wakeup_fd``), and a small thread that
sleeps on that pipe calls ``stop()``.

>>> saved = install_stop_handlers(service.stop)
>>> ...                                  # run; a SIGTERM calls service.stop()
>>> restore_handlers(saved)
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["install_stop_handlers", "restore_handlers"]

log = logging.getLogger(__name__)


def install_stop_handlers(stop: Callable[[], None]) -> dict[str, Any]:
    """SIGTERM/SIGINT -> *stop*; returns what :func:`restore_handlers` puts back.

    Only the main thread may set signal handlers: elsewhere this does
    nothing and returns ``{}``.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    saved: dict[str, Any] = {"fds": (read_end, write_end)}
    saved["wakeup_fd"] = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    saved["handlers"] = {sig: signal.signal(sig, lambda signum, frame: None)
                         for sig in (signal.SIGTERM, signal.SIGINT)}
    wanted = {int(signal.SIGTERM), int(signal.SIGINT)}

    def watch() -> None:
        try:
            while data := os.read(read_end, 64):     # b"" once the write end is closed
                if wanted & set(data):
                    log.info("stop requested by signal")
                    stop()
        except OSError:
            pass
        finally:
            os.close(read_end)

    threading.Thread(target=watch, name="agent-signals", daemon=True).start()
    return saved


def restore_handlers(saved: dict[str, Any]) -> None:
    """Put back the handlers and wakeup fd *saved* by :func:`install_stop_handlers`."""
    if not saved:
        return
    for sig, handler in saved["handlers"].items():
        signal.signal(sig, handler)
    signal.set_wakeup_fd(saved["wakeup_fd"])
    os.close(saved["fds"][1])      # the watcher reads EOF, closes its end, ends
