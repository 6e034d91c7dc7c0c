"""The service's worker threads: jobs that block on I/O, run in order, each result an event.

The service owns its state on one thread; anything that may block (reading
sensors, HTTP) runs on a :class:`Worker` and comes back as an :class:`Event`
handed to the service's *post* callable, success or failure alike.

>>> worker = Worker("network", post=events.put)
>>> worker.submit(Kind.UPLOAD, lambda: uploader.upload(outbox, 100))  # -> Event(Kind.UPLOAD, value=...)
>>> worker.stop(timeout=3.0)
True
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from agent.errors import AgentError
from agent.service.events import Event, Kind

__all__ = ["Worker"]

log = logging.getLogger(__name__)


class Worker:
    """One thread that runs jobs in order and posts each result as an event."""

    def __init__(self, name: str, post: Callable[[Event], None]) -> None:
        self.name = name
        self._post = post
        self._jobs: queue.Queue[tuple[Kind, Callable[[], Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._main, name=f"agent-{name}", daemon=True)
        self._thread.start()

    def submit(self, kind: Kind, job: Callable[[], Any]) -> None:
        self._jobs.put((kind, job))

    def _main(self) -> None:
        _name_os_thread(f"agent-{self.name}")
        while True:
            item = self._jobs.get()
            if item is None:
                return
            kind, job = item
            try:
                self._post(Event(kind, value=job()))
            except BaseException as exc:  # noqa: BLE001 - reported to the owner, never lost
                if not isinstance(exc, AgentError):
                    log.exception("%s job %s failed unexpectedly", self.name, kind.value)
                self._post(Event(kind, error=exc))

    def stop(self, timeout: float) -> bool:
        """Ask the thread to end after its current job (waiting up to *timeout* seconds);
        True when it did in time."""
        self._jobs.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _name_os_thread(name: str) -> None:
    """Give the OS thread *name* too (``top -H``, /proc/.../comm, the benches); Linux only."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
            comm.write(name[:15])
    except OSError:
        pass


class Jobs:
    """The service's two workers and what each has in flight.

    ``sensors`` reads (and keeps the readings in the outbox); ``network``
    runs HTTP in order (uploads, refreshes, code requests, sign-out,
    revocation). The loop counts jobs queued or running per worker, so a
    timer whose worker is busy is no deadline, and stopping waits for them.
    """

    def __init__(self, post: Callable[[Event], None]) -> None:
        self._post = post
        self._busy: dict[str, int] = {}
        self._sensors: Worker | None = None
        self._network: Worker | None = None

    def start(self) -> None:
        self._sensors = Worker("sensors", self._post)
        self._network = Worker("network", self._post)

    def submit_sensors(self, job: Callable[[], Any]) -> None:
        """Run *job* on the sensors worker; its result comes back as a READINGS event."""
        self._mark("readings", +1)
        assert self._sensors is not None
        self._sensors.submit(Kind.READINGS, job)

    def submit_net(self, kind: Kind, job: Callable[[], Any]) -> None:
        """Run *job* on the network worker (in order); its result comes back as *kind*."""
        self._mark("network", +1)
        assert self._network is not None
        self._network.submit(kind, job)

    def done(self, kind: Kind, network_jobs: frozenset[Kind]) -> None:
        """An event arrived: when it ends a job, that worker has one less in flight."""
        if kind is Kind.READINGS:
            self._mark("readings", -1)
        elif kind in network_jobs:
            self._mark("network", -1)

    def is_busy(self, worker: str) -> bool:
        """Whether *worker* ("readings", "network") has a job queued or running."""
        return self._busy.get(worker, 0) > 0

    def any_busy(self) -> bool:
        return bool(self._busy)

    def workers(self) -> tuple[Worker, ...]:
        return tuple(w for w in (self._sensors, self._network) if w is not None)

    def _mark(self, worker: str, delta: int) -> None:
        count = self._busy.get(worker, 0) + delta
        if count > 0:
            self._busy[worker] = count
        else:
            self._busy.pop(worker, None)
