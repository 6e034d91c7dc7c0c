"""The uploader: one batched POST of waiting readings, and what to do next.

Each :meth:`Uploader.upload` takes the oldest readings from the outbox (see
:meth:`~agent.telemetry.outbox.Outbox.peek_batch`), POSTs them as README's
"Telemetry" says::

    POST <endpoint>
    Authorization: Bearer <token>
    {"device_id": "greenhouse-1", "readings": [{"id": ..., "sensor": ...,
     "value": 48.3, "unit": "°C", "time": "2027-01-15T08:00:00.000Z"}]}

and returns an :class:`UploadResult` telling the caller how long to wait.
What each answer does:

=====================  ====================================================
2xx                    acknowledged: the readings leave the outbox
401                    the token is refreshed once (``refresh_token()``) and
                       the POST retried once; a second 401 is reported as
                       "the endpoint rejects the token" and readings stay
403, 404, 405, 410,    the endpoint refuses *this device or address*, not
3xx                    these readings: nothing is deleted, the batch is not
                       retried for :data:`REFUSED_PAUSE` seconds, the result
                       is ``permanent`` (a person must act). The issue asked
                       to "stop retrying that batch, report" for 403; moving
                       it aside would move the whole outbox aside one batch
                       at a time while a permission is missing.
413                    the batch is split in halves and retried (down to
                       one reading); later batches stay at the size that
                       worked. A single reading still too large is
                       dead-lettered.
408, 425, 429, 5xx,    the shared retry policy (:mod:`agent.backoff`): full
timeouts, DNS and      jitter, ``uniform(1, min(cap, base * 2**(n-1)))``
connection errors      seconds; a ``Retry-After`` (seconds or an HTTP date,
                       read against the answer's ``Date``) is a floor of at
                       least 1 s with jitter added, never a schedule
other 4xx (400, 422)   the batch is moved to the dead-letter table and the
                       result is ``permanent``; the next batch goes on
=====================  ====================================================

Whenever an upload does not succeed the outbox is spilled to disk (spill
mode keeps readings in memory only while uploads work). Two POSTs are never
started less than :data:`MIN_REQUEST_SPACING` apart, whatever a server says.

The token callables may raise the sign-in errors
(:class:`~agent.auth.errors.SignInRequired`, ``ProviderUnavailable``): they
propagate to the caller, the readings stay in the outbox. No token appears
in a log line, an error or a result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

from agent import __version__
from agent.backoff import UPLOAD, Backoff, Retry, parse_retry_after
from agent.clock import Clock
from agent.config import check_endpoint
from agent.config.values import TelemetryConfig
from agent.errors import ConfigError
from agent.telemetry.outbox import Outbox
from agent.telemetry.sensors import Reading
from agent.telemetry.wire import Bearer, network_reason, server_reason

if TYPE_CHECKING:
    import requests

__all__ = [
    "Uploader",
    "UploadResult",
    "start_jitter",
    "upload_policy",
    "MIN_REQUEST_SPACING",
    "REFUSED_PAUSE",
    "TRANSIENT_STATUSES",
    "REFUSED_STATUSES",
]

log = logging.getLogger(__name__)

#: Seconds: two POSTs never start closer together than this (a backlog
#: drains at one batch a second at most; no Retry-After makes it faster).
MIN_REQUEST_SPACING = 1.0
#: Seconds to wait after the endpoint refused this device (401 after a
#: refresh, 403, 404...): long enough not to hammer it, short enough that a
#: permission granted later is noticed without a restart.
REFUSED_PAUSE = 900.0

#: Statuses worth retrying later with backoff (RFC 9110 §15; 425 RFC 8470).
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Statuses that say the endpoint refuses this device or address, not the readings.
REFUSED_STATUSES = frozenset({403, 404, 405, 410})


@dataclass(frozen=True)
class UploadResult:
    """What one :meth:`Uploader.upload` did and what the caller should do next.

    ``retry_after`` is in seconds: wait that long before the next attempt;
    None means go on (at once while the outbox still holds readings).
    ``error`` is one line for people and logs, never holding a token.
    ``permanent`` says retrying the same request will not help: a person
    must act (403...), or readings were moved to the dead-letter table.
    """

    accepted: int
    retry_after: float | None
    error: str | None
    permanent: bool
    dead_lettered: int = 0
    status: int | None = None     # last HTTP status seen; None: no answer (or nothing sent)
    attempted: bool = True        # False when nothing was sent (empty outbox, still waiting)

    @property
    def ok(self) -> bool:
        """True when nothing went wrong (also when there was nothing to send)."""
        return self.error is None


def start_jitter(device_id: str, interval: float) -> float:
    """Seconds (0 <= x < interval) to delay this device's first upload.

    Stable per device (a hash of the id), so a fleet that boots together
    after a power cut spreads its uploads over one interval.
    """
    digest = hashlib.sha256(device_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 * max(0.0, interval)


def upload_policy(interval: float) -> Backoff:
    """The upload retry policy for a device reading every *interval* seconds.

    :data:`agent.backoff.UPLOAD`, with the first window two intervals
    long: while the endpoint is down a fleet's first retries add at most
    half its steady rate to the uploads still due (1.5x at worst, at the end
    of the first interval; less and less after), instead of retrying a few
    times a second. A single failure costs about one interval of delay,
    what waiting for the next reading costs.
    """
    from dataclasses import replace

    base = max(UPLOAD.base, 2.0 * float(interval))
    return replace(UPLOAD, base=base, cap=max(UPLOAD.cap, base))


class Uploader:
    """Sends batches of readings to one endpoint (see the module docstring).

    *token* returns the current access token; *refresh_token* forces a
    refresh and returns the new one (called after a 401). *timeout* is in
    seconds per request; *rng* makes the backoff jitter repeatable in tests;
    *backoff* is the retry policy (:data:`agent.backoff.UPLOAD` by default).

    >>> uploader = Uploader("https://api.example.com/telemetry", device_id="greenhouse-1",
    ...                     token=lambda: client.acquire_silent().access_token,
    ...                     refresh_token=lambda: client.refresh().access_token,
    ...                     clock=SystemClock())                      # doctest: +SKIP
    >>> result = uploader.upload(outbox, 500)                          # doctest: +SKIP
    """

    def __init__(
        self,
        endpoint: str,
        *,
        device_id: str,
        token: Callable[[], str | None],
        refresh_token: Callable[[], str | None],
        session: "requests.Session | None" = None,
        clock: Clock,
        timeout: float = TelemetryConfig.timeout,
        rng: random.Random | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        if (reason := check_endpoint(endpoint)) is not None:
            raise ConfigError(f"telemetry endpoint {urlsplit(endpoint).netloc or endpoint!r} "
                              f"must be {reason}")
        self.endpoint = endpoint
        self.device_id = device_id
        self._token = token
        self._refresh_token = refresh_token
        self._own_session = session is None
        self._session = session
        self.clock = clock
        self.timeout = timeout
        self._rng = rng if rng is not None else random.Random()
        self._host = urlsplit(endpoint).netloc
        self._retry = Retry(backoff or UPLOAD, rng=self._rng)   # transient failures in a row
        self._not_before = float("-inf")  # monotonic seconds; no POST before this
        self._last: UploadResult | None = None
        self._last_error: str | None = None
        self._failures_in_row = 0
        self._batch_limit: int | None = None  # learnt from 413 answers
        self._secrets: list[str] = []   # tokens used in the current upload, to redact

    # -- state for the service ---------------------------------------------------

    @property
    def failures(self) -> int:
        """Transient failures in a row (0 after a success)."""
        return self._retry.attempts

    @property
    def batch_limit(self) -> int | None:
        """The batch size learnt from 413 answers, if any."""
        return self._batch_limit

    def wait_remaining(self) -> float:
        """Seconds until the next attempt is allowed (0 when it is)."""
        return max(0.0, self._not_before - self.clock.monotonic())

    def close(self) -> None:
        """Close the HTTP session if this uploader made it."""
        if self._own_session and self._session is not None:
            self._session.close()
            self._session = None

    # -- one upload ----------------------------------------------------------------

    def upload(self, outbox: Outbox, batch_max: int) -> UploadResult:
        """POST up to *batch_max* of the oldest waiting readings (see the module docstring).

        Called before the wait of a previous result is over, it sends
        nothing and returns the time still to wait.
        """
        remaining = self.wait_remaining()
        if remaining > 0 and outbox.depth() == 0:
            return UploadResult(0, None, None, False, attempted=False)   # nothing to wait for
        if remaining > 0:
            last = self._last
            return UploadResult(0, remaining, last.error if last else None,
                                last.permanent if last else False, attempted=False,
                                status=last.status if last else None)
        limit = batch_max if self._batch_limit is None else min(batch_max, self._batch_limit)
        batch = outbox.peek_batch(max(1, limit))
        if not batch:
            return UploadResult(0, None, None, False, attempted=False)
        result: UploadResult | None = None
        # The spacing gate holds whatever the answer: no Retry-After (0, a
        # date in the past) makes this device send faster than one a second.
        self._not_before = self.clock.monotonic() + MIN_REQUEST_SPACING
        try:
            result = self._send(outbox, batch)
        finally:
            self._secrets = []
            if result is None or (result.error is not None and result.dead_lettered == 0):
                # Not accepted: spill mode must not keep these only in memory.
                outbox.spill()
        if result.retry_after is None and result.ok and outbox.depth() > 0:
            # More waiting (a backlog): go on as soon as the spacing allows.
            result = replace(result, retry_after=self.wait_remaining() or None)
        self._last = result
        if result.retry_after is not None:
            self._not_before = max(self._not_before, self.clock.monotonic() + result.retry_after)
        # A failure is a WARNING when it is new, DEBUG while it repeats (an
        # endpoint down all night must not fill the journal); recovery is INFO.
        if result.error:
            level = logging.DEBUG if result.error == self._last_error else logging.WARNING
            log.log(level, "upload: %s (%d accepted, %d waiting%s)", result.error, result.accepted,
                    outbox.depth(),
                    f", next try in {result.retry_after:.0f} s" if result.retry_after else "")
            self._failures_in_row += 1
        else:
            if self._failures_in_row:
                log.info("upload: the endpoint accepts readings again after %d failed attempts "
                         "(%d accepted, %d waiting)", self._failures_in_row, result.accepted,
                         outbox.depth())
            else:
                log.debug("upload: %d readings accepted, %d waiting", result.accepted, outbox.depth())
            self._failures_in_row = 0
        self._last_error = result.error
        return result

    def _send(self, outbox: Outbox, batch: list[Reading]) -> UploadResult:
        token = self._bearer(self._token)
        refreshed = False
        accepted = 0
        dead = 0
        errors: list[str] = []
        status: int | None = None
        pending = [batch]
        while pending:
            part = pending.pop(0)
            status, headers, detail = self._post(part, token)
            if status == 401 and not refreshed:
                refreshed = True
                log.info("upload: the endpoint answered 401; refreshing the token once")
                token = self._bearer(self._refresh_token)
                status, headers, detail = self._post(part, token)
            ids = [r.id for r in part]
            if status is not None and 200 <= status < 300:
                outbox.ack(ids)
                accepted += len(part)
                self._retry.reset()
                continue
            if status == 413:
                if len(part) > 1:
                    half = len(part) // 2
                    self._batch_limit = half if self._batch_limit is None else min(self._batch_limit, half)
                    log.info("upload: %d readings are too large for the endpoint; trying %d",
                             len(part), half)
                    pending[0:0] = [part[:half], part[half:]]
                    continue
                reason = "a single reading is too large for the endpoint (HTTP 413)"
                outbox.dead_letter(ids, reason)
                dead += 1
                errors.append(reason + " (it was moved to the dead-letter table)")
                continue
            if status is None or status in TRANSIENT_STATUSES:
                asked = parse_retry_after(headers.get("Retry-After"), date=headers.get("Date"),
                                          now_wall=self.clock.time())
                wait = self._retry.next_delay() if asked is None else self._retry.after_retry_after(asked)
                error = detail if status is None else self._http_error(status, detail)
                return UploadResult(accepted, wait, error, False, dead, status)
            if status == 401:
                error = ("the endpoint rejects the token even after a refresh (HTTP 401) "
                         "(check that the profile's scope is the endpoint's API; readings are kept)")
                return UploadResult(accepted, REFUSED_PAUSE, error, True, dead, status)
            if status in REFUSED_STATUSES or 300 <= status < 400 or status < 200:
                return UploadResult(accepted, REFUSED_PAUSE, self._refused(status, headers, detail),
                                    True, dead, status)
            # Any other 4xx (400, 422...): these readings will never be taken.
            reason = self._http_error(status, detail)
            outbox.dead_letter(ids, reason)
            dead += len(part)
            errors.append(f"{reason} ({len(part)} readings moved to the dead-letter table)")
        if errors:
            return UploadResult(accepted, None, errors[-1], True, dead, status)
        return UploadResult(accepted, None, None, False, dead, status)

    def _bearer(self, get: Callable[[], str | None]) -> str:
        """A token from *get*, remembered for redaction; none (signed out
        meanwhile) is SignInRequired, never a POST without a credential."""
        token = get()
        if not token:
            from agent.auth.errors import SignInRequired
            raise SignInRequired("not signed in: no token to upload with",
                                 "sign in on the device; the readings are kept")
        self._secrets.append(token)
        return token

    def _post(self, part: list[Reading], token: str) -> tuple[int | None, Mapping[str, str], str]:
        """One POST. Returns (status or None when no answer, headers, detail)."""
        import requests

        if self._session is None:
            self._session = requests.Session()
        body = json.dumps({"device_id": self.device_id, "readings": [r.as_json() for r in part]},
                          separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            "User-Agent": f"entra-device-agent/{__version__}",
        }
        try:
            # The token goes in through auth=, so a ~/.netrc entry for the
            # host cannot replace it (requests consults netrc only without auth).
            response = self._session.post(self.endpoint, data=body, headers=headers,
                                          auth=Bearer(token), timeout=self.timeout,
                                          allow_redirects=False)
        except requests.Timeout:
            return None, {}, f"{self._host} did not answer within {self.timeout:g} s"
        except requests.RequestException as exc:
            return None, {}, f"cannot reach {self._host}: {network_reason(exc)}"
        with response:
            detail = server_reason(response, self._secrets)
            # requests' case-insensitive mapping: "retry-after" is "Retry-After".
            return response.status_code, requests.structures.CaseInsensitiveDict(response.headers), detail

    def _http_error(self, status: int, detail: str) -> str:
        return f"{self._host} answered HTTP {status}" + (f": {detail}" if detail else "")

    def _refused(self, status: int, headers: Mapping[str, str], detail: str) -> str:
        base = self._http_error(status, detail)
        if status == 403:
            return base + " (grant this device's account access to the endpoint; readings are kept)"
        if 300 <= status < 400:
            where = urlsplit(headers.get("Location", "")).netloc or "elsewhere"
            return base + f" redirecting to {where} (set telemetry.endpoint to the final address)"
        return base + " (check telemetry.endpoint; readings are kept)"
