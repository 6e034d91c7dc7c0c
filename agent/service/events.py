"""What reaches the loop thread: typed events on one queue, and the wake-up that goes with it.

Other threads (gpiozero's, paho's, the workers, the sign-in poller, the token
service) never touch the service's state: they :meth:`EventQueue.post` an
:class:`Event`, and the loop handles it (``agent.service.loop``, one handler
per :class:`Kind`).

>>> events = EventQueue()
>>> events.post(Kind.PRESS)
>>> events.get()
Event(kind=<Kind.PRESS: 'press'>, value=None, error=None, generation=0)
"""

from __future__ import annotations

import enum
import queue
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["Kind", "Event", "EventQueue", "NETWORK_JOBS"]


class Kind(enum.Enum):
    """Every kind of event the loop handles."""

    STOP = "stop"                    # SIGTERM, SIGINT, Service.stop()
    PRESS = "press"                  # the button (hardware.button, on gpiozero's threads)
    HOLD_START = "hold_start"
    HOLD_CANCEL = "hold_cancel"
    HOLD = "hold"
    HA_COMMAND = "ha_command"        # a Home Assistant button (value: the command)
    MQTT = "mqtt"                    # the broker link went up/down (value: bool)
    TOKEN_ASKED = "token_asked"      # agent.tokenservice: a program asked while signed out
    TOKEN_REFUSED = "token_refused"  # agent.tokenservice: the provider refused a program's token
    TOKENS = "tokens"                # the uploader refreshed after a 401 (value: TokenSet)
    SIGNIN = "signin"                # the RFC 8628 poller ended (value: TokenSet, or error)
    READINGS = "readings"            # sensors worker: (readings, failures, stored error)
    UPLOAD = "upload"                # network worker: UploadResult
    REFRESH = "refresh"              # network worker: TokenSet
    CODE = "code"                    # network worker: DeviceAuthorization
    SIGN_OUT = "sign_out"            # network worker: the token client's sign-out result
    REVOKE = "revoke"                # network worker: RFC 7009 revocation result


#: The events that end a job on the network worker.
NETWORK_JOBS = frozenset({Kind.UPLOAD, Kind.REFRESH, Kind.CODE, Kind.SIGN_OUT, Kind.REVOKE})


@dataclass
class Event:
    """Something that happened off the loop thread (or a job's result)."""

    kind: Kind
    value: Any = None
    error: BaseException | None = None
    generation: int = 0


class EventQueue:
    """The loop's inbox: thread-safe :meth:`post`, and the wake-up the loop waits on."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Event] = queue.Queue()
        self.wakeup = threading.Event()

    def post(self, kind: Kind | str, value: Any = None) -> None:
        """Queue an event (any thread). A string is a :class:`Kind`'s value ("press")."""
        self.put(Event(Kind(kind), value=value))

    def put(self, event: Event) -> None:
        self._queue.put(event)
        self.wakeup.set()

    def get(self) -> Event | None:
        """The next event, None when there is none (never blocks)."""
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def empty(self) -> bool:
        return self._queue.empty()
