"""What a :class:`~agent.service.Service` is made of: one value, built by :mod:`agent.assembly`.

The service never builds a part itself (and never imports ``hardware``):
``agent.assembly.build_parts`` makes these from the config, tests build them
with their own doubles, and both hand them to ``Service(config, parts, clock=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.service.events import EventQueue
from agent.service.tokenholder import TokenHolder

if TYPE_CHECKING:  # pragma: no cover
    from agent import ui
    from agent.auth.tokens import TokenClient
    from agent.notify import Notifier
    from agent.status import StatusPublisher
    from agent.telemetry.outbox import Outbox
    from agent.telemetry.uploader import Uploader

__all__ = ["Parts"]


@dataclass(frozen=True)
class Parts:
    """The service's parts. *events* is the loop's inbox, already wired into the
    button's and the publisher's callbacks; *tokens* is shared with the uploader.
    ``None`` for a part the config does not have (no endpoint, no MQTT, no button)."""

    token_client: "TokenClient"
    presenter: "ui.Presenter"
    notifier: "Notifier"
    events: EventQueue
    tokens: TokenHolder
    status_path: Path
    sensors: list[Any]
    outbox: "Outbox | Any"
    uploader: "Uploader | Any | None" = None
    publisher: "StatusPublisher | Any | None" = None
    button: Any = None
    led: Any = None
