"""The agent service: one loop thread that ties sign-in, telemetry and status together.

``agent.assembly`` builds the parts and the service; :class:`Service`
(:mod:`agent.service.loop`) runs them. The states and their transitions are
in :mod:`agent.states` (README, "States"). The pieces, all on the loop thread:

- :mod:`~agent.service.events`   typed events (:class:`Kind`) and the loop's inbox
- :mod:`~agent.service.timers`   named monotonic deadlines
- :mod:`~agent.service.signin`   code, polling, stopped, retry
- :mod:`~agent.service.account`  the saved sign-in, refresh, sign-out, the token service's gate
- :mod:`~agent.service.telemetry` read, keep (outbox), upload
- :mod:`~agent.service.controls` the button and Home Assistant's buttons
- :mod:`~agent.service.reporter` status dict, status.json, MQTT state, screen, LED, sd_notify
- :mod:`~agent.service.tokenholder` the token set, shared with the uploader (locked)
- :mod:`~agent.service.workers`  the threads that run the blocking jobs

>>> from agent.assembly import build_service
>>> build_service(config).run()
0
"""

from agent.service.account import REFRESH_RETRY_MAX, REFRESH_RETRY_MIN, SIGNED_IN_SCREEN
from agent.service.controls import HA_NEW_CODE_SPACING
from agent.service.events import Event, Kind
from agent.service.loop import STOP_GRACE, Service
from agent.service.parts import Parts
from agent.service.reporter import LED_MODES, STATUS_REFRESH
from agent.service.signin import SIGN_IN_RETRY_DELAY
from agent.service.telemetry import UPLOAD_RETRY_MAX, UPLOAD_RETRY_MIN
from agent.states import (
    AWAITING_USER,
    SIGN_IN_REQUIRED,
    SIGN_IN_STOPPED,
    SIGNED_IN,
    STARTING,
    STATES,
    STOPPING,
)

__all__ = [
    "Service", "Parts", "Event", "Kind", "STATES", "STARTING", "SIGNED_IN", "SIGN_IN_REQUIRED",
    "AWAITING_USER", "SIGN_IN_STOPPED", "STOPPING", "SIGN_IN_RETRY_DELAY", "REFRESH_RETRY_MIN",
    "REFRESH_RETRY_MAX", "UPLOAD_RETRY_MIN", "UPLOAD_RETRY_MAX", "STOP_GRACE",
    "STATUS_REFRESH", "LED_MODES", "HA_NEW_CODE_SPACING", "SIGNED_IN_SCREEN",
]
