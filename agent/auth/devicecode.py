"""The Device Authorization Grant, RFC 8628 §3.1–3.5, over plain requests.

:func:`request_device_authorization` asks for a code (§3.1–3.2);
:func:`poll_for_token` polls the token endpoint (§3.4–3.5) until the person
approves, declines, or the code expires. Deadlines run on the injected
clock's monotonic time; waiting uses ``clock.wait(seconds, cancel)``, so a
cancel event stops polling at once and tests never sleep.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from agent.auth.endpoints import Endpoints
from agent.auth.errors import (
    AuthError, AuthorizationPending, CodeExpired, ProviderUnavailable, SlowDown,
    error_from_response, unavailable,
)
from agent.backoff import DEVICE_CODE_POLL
from agent.clock import Clock
from agent.errors import CancelledError

__all__ = [
    "DEVICE_CODE_GRANT_TYPE", "DEFAULT_INTERVAL", "SLOW_DOWN_INCREMENT",
    "DeviceAuthorization", "request_device_authorization", "poll_for_token",
]

log = logging.getLogger(__name__)

#: RFC 8628 §3.4 grant type.
DEVICE_CODE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
#: RFC 8628 §3.2: "If no value is provided, clients MUST use 5 as the default."
DEFAULT_INTERVAL = 5
#: RFC 8628 §3.5: on slow_down "the interval MUST be increased by 5 seconds".
SLOW_DOWN_INCREMENT = 5
#: After this many slow_down answers, suspect the local clock (as gh does).
SLOW_DOWN_CLOCK_WARNING = 3
#: Longest wait between retries after a network error or 5xx, in seconds
#: (the shared policy's cap, agent.backoff.DEVICE_CODE_POLL).
MAX_RETRY_WAIT = DEVICE_CODE_POLL.cap
_retry_rng = random.Random()
#: Lifetime assumed when a provider omits expires_in (it is REQUIRED), in seconds.
FALLBACK_EXPIRES_IN = 900


@dataclass(frozen=True)
class DeviceAuthorization:
    """A device authorization response (RFC 8628 §3.2).

    ``device_code`` is a secret: it is kept out of ``repr`` and never logged.
    """

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int          # seconds the codes live, from issue
    interval: int            # minimum seconds between polls
    issued_at: float         # clock.monotonic() when the response arrived
    message: str | None = None

    @property
    def deadline(self) -> float:
        """Monotonic time at which the code expires."""
        return self.issued_at + self.expires_in

    def seconds_left(self, clock: Clock) -> float:
        """Seconds until the code expires (never negative)."""
        return max(0.0, self.deadline - clock.monotonic())


def _number(value: Any, name: str, default: int | None = None) -> int:
    # Entra v1 sends numbers as strings ("900"); RFC 8628 says numbers.
    if value is None or value == "":
        if default is None:
            raise ValueError(name)
        return default
    return int(float(value))


def request_device_authorization(
    session: requests.Session, endpoints: Endpoints, client_id: str,
    scopes: Sequence[str], *, clock: Clock, timeout: float = 10.0,
) -> DeviceAuthorization:
    """Ask for a device code and user code (RFC 8628 §3.1)."""
    url = endpoints.device_authorization_endpoint
    try:
        response = session.post(
            url, data={"client_id": client_id, "scope": " ".join(scopes)},
            headers={"Accept": "application/json"}, timeout=timeout,
        )
    except requests.RequestException as exc:
        raise unavailable(f"cannot reach the device authorization endpoint ({type(exc).__name__})", url) from None
    if response.status_code != 200:
        raise error_from_response(response, "the device authorization endpoint")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ProviderUnavailable(
            f"the device authorization endpoint at {url} sent an answer that is not JSON",
            "check the network: a proxy or captive portal may be in the way",
        )
    device_code = body.get("device_code")
    user_code = body.get("user_code")
    # Entra's v1 endpoint says verification_url; RFC 8628 says verification_uri.
    verification_uri = body.get("verification_uri") or body.get("verification_url")
    if not device_code or not user_code or not verification_uri:
        if body.get("error"):
            raise error_from_response(response, "the device authorization endpoint")
        missing = [k for k, v in (("device_code", device_code), ("user_code", user_code),
                                  ("verification_uri", verification_uri)) if not v]
        raise AuthError(
            f"the device authorization endpoint at {url} left out {', '.join(missing)}",
            "the provider may not support the device code flow for this client",
        )
    try:
        expires_in = _number(body.get("expires_in"), "expires_in", FALLBACK_EXPIRES_IN)
        interval = _number(body.get("interval"), "interval", DEFAULT_INTERVAL)
    except (TypeError, ValueError):
        raise AuthError(f"the device authorization endpoint at {url} sent a non-numeric "
                        "expires_in or interval", "report this to the provider") from None
    return DeviceAuthorization(
        device_code=str(device_code),
        user_code=str(user_code),
        verification_uri=str(verification_uri),
        verification_uri_complete=body.get("verification_uri_complete") or None,
        expires_in=max(1, expires_in),
        interval=max(1, interval),
        issued_at=clock.monotonic(),
        message=body.get("message"),
    )


def poll_for_token(
    session: requests.Session, endpoints: Endpoints, client_id: str,
    authorization: DeviceAuthorization, *, clock: Clock,
    cancel: threading.Event | None = None, timeout: float = 10.0,
    on_wait: Callable[[float], None] | None = None, tick: float | None = None,
) -> dict[str, Any]:
    """Poll until the person approves; return the token response body.

    RFC 8628 §3.4–3.5: ``authorization_pending`` keeps the interval,
    ``slow_down`` adds 5 s to this and every later poll, ``access_denied``
    (Entra: ``authorization_declined``) and ``expired_token`` end it. A
    refused connection, a timeout or a 5xx is retried inside the code's
    lifetime with growing waits, never faster than the interval.

    *on_wait* is called with the seconds left before every wait (and every
    *tick* seconds during a wait, for a countdown). Raises
    :class:`CodeExpired`, :class:`AuthorizationDeclined`,
    :class:`agent.errors.CancelledError` or another :class:`AuthError`.
    """
    interval = float(authorization.interval)
    wait = interval
    failures = 0
    slow_downs = 0
    url = endpoints.token_endpoint
    data = {
        "grant_type": DEVICE_CODE_GRANT_TYPE,
        "client_id": client_id,
        "device_code": authorization.device_code,
    }
    while True:
        _wait(clock, wait, authorization, cancel, on_wait, tick)
        try:
            response = session.post(url, data=data, headers={"Accept": "application/json"},
                                    timeout=timeout)
        except requests.RequestException as exc:
            failures += 1
            wait = _retry_wait(interval, failures)
            log.warning("token endpoint unreachable (%s); retrying in %.0f s",
                        type(exc).__name__, wait)
            continue
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and body.get("access_token"):
                return body
            failures += 1
            wait = _retry_wait(interval, failures)
            log.warning("token endpoint sent an unreadable success answer; retrying in %.0f s", wait)
            continue
        error = error_from_response(response, "the token endpoint")
        if isinstance(error, ProviderUnavailable):
            failures += 1
            wait = _retry_wait(interval, failures)
            log.warning("%s; retrying in %.0f s", error.message, wait)
            continue
        failures = 0
        if isinstance(error, SlowDown):
            slow_downs += 1
            interval += SLOW_DOWN_INCREMENT
            if slow_downs == SLOW_DOWN_CLOCK_WARNING:
                log.warning("the provider asked to slow down %d times; is this device's "
                            "clock right? (check timedatectl / NTP)", slow_downs)
            wait = interval
            continue
        if isinstance(error, AuthorizationPending):
            wait = interval
            continue
        raise error


def _retry_wait(interval: float, failures: int, rng: random.Random = _retry_rng) -> float:
    # The shared policy (full jitter, growing window, capped), and never
    # below the interval: RFC 8628 §3.5 forbids polling faster than it.
    return max(interval, DEVICE_CODE_POLL.delay(failures, rng))


def _wait(clock: Clock, seconds: float, authorization: DeviceAuthorization,
          cancel: threading.Event | None, on_wait: Callable[[float], None] | None,
          tick: float | None) -> None:
    """Wait *seconds* (or until expiry); raise on cancel or expiry."""
    end = clock.monotonic() + seconds
    while True:
        left = authorization.seconds_left(clock)
        if left <= 0:
            raise CodeExpired("the device code expired before sign-in finished",
                              "Device code expired. Please try again")
        if on_wait is not None:
            on_wait(left)
        remaining = end - clock.monotonic()
        if remaining <= 0:
            return
        step = min(remaining, left)
        if tick:
            step = min(step, tick)
        if clock.wait(step, cancel):
            raise CancelledError("Authentication cancelled by user")
        if cancel is not None and cancel.is_set():
            raise CancelledError("Authentication cancelled by user")
