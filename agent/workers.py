"""The service's worker threads: jobs that block on I/O, run in order, each result an event.

The service owns its state on one thread; anything that may block (reading
sensors, HTTP) runs on a :class:`Worker` and comes back as an :class:`Event`
handed to the service's *post* callable, success or failure alike.

>>> worker = Worker("network", post=events.put)
>>> worker.submit("upload", lambda: uploader.upload(outbox, 100))  # -> Event("upload", value=...)
>>> worker.stop(timeout=3.0)
True
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.errors import AgentError

__all__ = ["Event", "Worker"]

log = logging.getLogger(__name__)


@dataclass
class Event:
    """Something that happened off the main thread."""

    kind: str                       # "press", "hold", "readings", "upload", ...
    value: Any = None
    error: BaseException | None = None
    generation: int = 0


class Worker:
    """One thread that runs jobs in order and posts each result as an event."""

    def __init__(self, name: str, post: Callable[[Event], None]) -> None:
        self.name = name
        self._post = post
        self._jobs: queue.Queue[tuple[str, Callable[[], Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._main, name=f"agent-{name}", daemon=True)
        self._thread.start()

    def submit(self, kind: str, job: Callable[[], Any]) -> None:
        self._jobs.put((kind, job))

    def _main(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            kind, job = item
            try:
                self._post(Event(kind, value=job()))
            except BaseException as exc:  # noqa: BLE001 - reported to the owner, never lost
                if not isinstance(exc, AgentError):
                    log.exception("%s job %s failed unexpectedly", self.name, kind)
                self._post(Event(kind, error=exc))

    def stop(self, timeout: float) -> bool:
        """Ask the thread to end after its current job (waiting up to *timeout* seconds);
        True when it did in time."""
        self._jobs.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()
