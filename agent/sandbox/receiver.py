"""A local telemetry endpoint with fault injection, for tests and the demo.

It accepts what the agent's uploader sends (README, "Telemetry")::

    POST /telemetry
    Authorization: Bearer <access token>
    {"device_id": "greenhouse-1",
     "readings": [{"id": "...", "sensor": "cpu_temperature", "value": 48.3,
                   "unit": "°C", "time": "2026-11-28T21:00:00Z"}]}

and answers 200 ``{"accepted": n, "duplicates": d}``. Reading ids make
retries idempotent: a repeated id is counted in :attr:`duplicates` and not
stored twice, so a test proves "nothing lost, nothing doubled" with
``len(rx.unique_ids)``. The body may be gzip-encoded (``Content-Encoding: gzip``).

Faults, checked in this order on every POST: queued responses
(:meth:`TelemetryReceiver.queue_responses`), a dropped connection
(:attr:`~TelemetryReceiver.drop_rate`), a 503 (:attr:`~TelemetryReceiver.fail_rate`),
then the real checks: bearer token (401), body shape (400), batch size (413).
Only a 200 records readings. Random faults come from ``random.Random(seed)``,
so a run is repeatable.

Raw tokens are never kept: the validator sees each one once, and
:attr:`~TelemetryReceiver.auth_headers` holds only the scheme ("Bearer") or "missing".
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import threading
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from agent.sandbox._http import QuietHandler, SandboxServer, SandboxService, is_loopback

__all__ = ["TelemetryReceiver", "ReadingError", "validate_batch"]

logger = logging.getLogger(__name__)

#: A queued answer: a status, or a status with response headers.
Response = int | tuple[int, dict[str, str]]


class ReadingError(ValueError):
    """A telemetry body is not the shape README's "Telemetry" describes (the message names the field)."""


def _is_utc_iso8601(text: object) -> bool:
    if not isinstance(text, str) or "T" not in text:
        return False
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return False
    return moment.utcoffset() == timedelta(0)


def validate_batch(body: object) -> tuple[str, list[dict[str, object]]]:
    """Check a decoded telemetry body; return (device_id, readings) or raise :class:`ReadingError`."""
    if not isinstance(body, dict):
        raise ReadingError("the body must be a JSON object")
    device_id = body.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        raise ReadingError("device_id: expected a non-empty string")
    readings = body.get("readings")
    if not isinstance(readings, list) or not readings:
        raise ReadingError("readings: expected a non-empty list")
    for index, reading in enumerate(readings):
        where = f"readings[{index}]"
        if not isinstance(reading, dict):
            raise ReadingError(f"{where}: expected an object")
        for field in ("id", "sensor"):
            if not isinstance(reading.get(field), str) or not reading[field]:
                raise ReadingError(f"{where}.{field}: expected a non-empty string")
        value = reading.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ReadingError(f"{where}.value: expected a number")
        unit = reading.get("unit", "")
        if unit is not None and not isinstance(unit, str):
            raise ReadingError(f"{where}.unit: expected a string")
        if not _is_utc_iso8601(reading.get("time")):
            raise ReadingError(f"{where}.time: expected an ISO 8601 time in UTC, like 2026-11-28T21:00:00Z")
    return device_id, readings


class TelemetryReceiver(SandboxService):
    """The telemetry endpoint of the sandbox: ``POST {url}`` with a bearer token.

    *token_validator* maps a bearer token to an account (or None when
    invalid), e.g. ``IdentityProvider.validate_access_token``; without one,
    any request is accepted whatever its Authorization header.

    Counters (all read under the lock, returned as copies): :attr:`requests`
    (every POST to the path), :attr:`accepted_batches`, :attr:`batch_sizes`,
    :attr:`unique_ids`, :attr:`duplicates`, :attr:`statuses`.
    """

    def __init__(
        self,
        token_validator: Callable[[str], str | None] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/telemetry",
        seed: int = 0,
    ) -> None:
        self.token_validator = token_validator
        self.path = path
        self.fail_rate: float = 0.0     # probability (0..1) of a 503; settable while running
        self.drop_rate: float = 0.0     # probability (0..1) of closing without an answer
        self.max_batch: int | None = None
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queued: list[tuple[int, dict[str, str]]] = []
        self._ids: set[str] = set()
        self._readings: list[dict[str, object]] = []
        self._duplicates = 0
        self._accepted_batches = 0
        self._requests = 0
        self._batch_sizes: list[int] = []
        self._auth_headers: list[str] = []
        self._statuses: list[int] = []
        self._device_ids: set[str] = set()
        self._server = SandboxServer(_ReceiverHandler, host, port, self)

    # -- lifecycle ---------------------------------------------------------

    _thread_name = "sandbox-receiver"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:{port}{path}``: the agent's telemetry endpoint."""
        return self.origin + self.path

    # -- scripting ---------------------------------------------------------

    def queue_responses(self, *responses: Response) -> None:
        """Answer the next POSTs with these, in order: ``503``, ``(429, {"Retry-After": "7"})``..."""
        with self._lock:
            for response in responses:
                if isinstance(response, int):
                    self._queued.append((response, {}))
                else:
                    status, headers = response
                    self._queued.append((int(status), dict(headers)))

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block (real time, up to *timeout* seconds) until *count* unique readings arrived."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._ids) >= count, timeout)

    def readings(self, sensor: str | None = None) -> list[dict[str, object]]:
        """Unique accepted readings in arrival order (copies), optionally of one sensor."""
        with self._lock:
            return [dict(r) for r in self._readings if sensor is None or r.get("sensor") == sensor]

    @property
    def unique_ids(self) -> set[str]:
        with self._lock:
            return set(self._ids)

    @property
    def duplicates(self) -> int:
        """Readings that arrived again after being accepted once (retries)."""
        with self._lock:
            return self._duplicates

    @property
    def accepted_batches(self) -> int:
        with self._lock:
            return self._accepted_batches

    @property
    def requests(self) -> int:
        """Every POST to the telemetry path, whatever its fate."""
        with self._lock:
            return self._requests

    @property
    def batch_sizes(self) -> list[int]:
        """Readings per accepted batch, in order."""
        with self._lock:
            return list(self._batch_sizes)

    @property
    def auth_headers(self) -> list[str]:
        """Per POST: the Authorization scheme seen ("Bearer", "Basic"...) or "missing"; never a token."""
        with self._lock:
            return list(self._auth_headers)

    @property
    def statuses(self) -> list[int]:
        """Per POST: the status answered (0 for a dropped connection)."""
        with self._lock:
            return list(self._statuses)

    @property
    def device_ids(self) -> set[str]:
        with self._lock:
            return set(self._device_ids)

    def state(self) -> dict[str, object]:
        """A JSON-able summary, as served at ``GET /_receiver/state``."""
        with self._lock:
            return {
                "requests": self._requests,
                "accepted_batches": self._accepted_batches,
                "unique": len(self._ids),
                "duplicates": self._duplicates,
                "device_ids": sorted(self._device_ids),
                "fail_rate": self.fail_rate,
                "drop_rate": self.drop_rate,
                "last": self._readings[-5:],
            }

    # -- the decision for one POST (lock held) -------------------------------

    def _decide(self, authorization: str | None, raw: bytes, encoding: str) -> tuple[int, dict[str, object] | None, dict[str, str]]:
        """Return (status, JSON body or None, headers); status 0 means drop."""
        self._requests += 1
        scheme = (authorization or "").split(" ", 1)[0]
        self._auth_headers.append(scheme or "missing")
        if self._queued:
            status, headers = self._queued.pop(0)
            if status == 401:
                headers.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')
            return status, ({"error": "scripted", "status": status} if status >= 400 else {"accepted": 0}), headers
        if self.drop_rate and self._random.random() < self.drop_rate:
            return 0, None, {}
        if self.fail_rate and self._random.random() < self.fail_rate:
            return 503, {"error": "unavailable", "error_description": "scripted outage (fail_rate)"}, {}
        if self.token_validator is not None:
            header = authorization or ""
            token = header.split(" ", 1)[1].strip() if scheme.lower() == "bearer" and " " in header else ""
            # Called with our lock held: the idp's validator takes only its own
            # lock and never calls back here, so the lock order is fixed.
            if not token or self.token_validator(token) is None:
                return 401, {"error": "invalid_token", "error_description": "a valid bearer token is required"}, {
                    "WWW-Authenticate": 'Bearer error="invalid_token"'}
        try:
            if encoding == "gzip":
                raw = gzip.decompress(raw)
            elif encoding == "deflate":
                raw = zlib.decompress(raw)
            body = json.loads(raw)
            device_id, readings = validate_batch(body)
        except (ValueError, OSError, zlib.error) as error:
            message = str(error) if isinstance(error, ReadingError) else f"the body is not valid JSON: {error}"
            return 400, {"error": "bad_request", "error_description": message}, {}
        if self.max_batch is not None and len(readings) > self.max_batch:
            return 413, {"error": "payload_too_large",
                         "error_description": f"at most {self.max_batch} readings per request"}, {}
        new = 0
        for reading in readings:
            reading_id = str(reading["id"])
            if reading_id in self._ids:
                self._duplicates += 1
                continue
            self._ids.add(reading_id)
            self._readings.append(dict(reading, device_id=device_id))
            new += 1
        self._device_ids.add(device_id)
        self._accepted_batches += 1
        self._batch_sizes.append(len(readings))
        self._changed.notify_all()
        return 200, {"accepted": len(readings), "duplicates": len(readings) - new}, {}


class _ReceiverHandler(QuietHandler):
    @property
    def receiver(self) -> TelemetryReceiver:
        return self.server.owner  # type: ignore[attr-defined]

    def _json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(body).encode(), "application/json; charset=utf-8", headers)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/_receiver/state" and is_loopback(self.client_address[0]):
            self._json(200, self.receiver.state())
        elif path == self.receiver.path:
            self._json(405, {"error": "method_not_allowed", "error_description": "POST readings here"},
                       {"Allow": "POST"})
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        rx = self.receiver
        path = urlsplit(self.path).path
        raw = self.read_body()
        if path != rx.path:
            self._json(404, {"error": "not_found", "error_description": f"POST readings to {rx.path}"})
            return
        authorization = self.headers.get("Authorization")
        encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
        with rx._lock:
            status, body, headers = rx._decide(authorization, raw, encoding)
            rx._statuses.append(status)
        if status == 0:
            self.drop()
            return
        self._json(status, body, headers)
