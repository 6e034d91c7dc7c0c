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

from agent import textsafe
from agent.auth.answers import credential, seconds
from agent.auth.endpoints import Endpoints
from agent.auth.errors import (
    AuthError,
    AuthorizationPending,
    CodeExpired,
    InvalidAnswer,
    ProviderUnavailable,
    RedirectRefused,
    SlowDown,
    error_from_answer,
    origin,
)
from agent.auth.http import request
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
    """A device authorization response (RFC 8628 §3.2), checked.

    ``device_code`` is a secret: it is kept out of ``repr`` and never logged.
    ``user_code`` is 1-32 printable ASCII characters and the URIs are
    https (http on loopback) without control characters
    (:mod:`agent.textsafe`), so they are safe to print, draw and publish.
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


#: Longest device code lifetime accepted, in seconds (RFC 8628 gives no
#: limit; Entra uses 900, others 600-1800; a month is past any real one).
MAX_CODE_LIFETIME = 31 * 86400
#: Longest polling interval accepted, in seconds.
MAX_INTERVAL = 3600
#: How long a poll may outlast the code's lifetime, in seconds: the flow
#: ends within expires_in + POLL_GRACE whatever the server does.
POLL_GRACE = 2.0

_WHAT = "the device authorization endpoint"


def request_device_authorization(
    session: requests.Session, endpoints: Endpoints, client_id: str,
    scopes: Sequence[str], *, clock: Clock, timeout: float = 10.0,
    cancel: threading.Event | None = None,
) -> DeviceAuthorization:
    """Ask for a device code and user code (RFC 8628 §3.1).

    *timeout* is the overall deadline of the request, in seconds. Every
    field of the answer is checked (§3.2); a bad one is an
    :class:`~agent.auth.errors.InvalidAnswer`.
    """
    url = endpoints.device_authorization_endpoint
    answer = request(session, "POST", url, what=_WHAT, deadline=timeout, cancel=cancel,
                     data={"client_id": client_id, "scope": " ".join(scopes)})
    body = answer.json_or_none() if answer.status != 200 else answer.json()
    if answer.status != 200:
        raise error_from_answer(answer.status, body, url, _WHAT)
    if not isinstance(body, dict):
        raise ProviderUnavailable(
            f"{_WHAT} at {origin(url)} sent an answer that is not a JSON object",
            "check the network: a proxy or captive portal may be in the way",
        )
    raw_code = body.get("device_code")
    raw_user_code = body.get("user_code")
    # Entra's v1 endpoint says verification_url; RFC 8628 says verification_uri.
    raw_uri = body.get("verification_uri") or body.get("verification_url")
    if not raw_code or not raw_user_code or not raw_uri:
        if body.get("error"):
            raise error_from_answer(400, body, url, _WHAT)
        missing = [k for k, v in (("device_code", raw_code), ("user_code", raw_user_code),
                                  ("verification_uri", raw_uri)) if not v]
        raise AuthError(
            f"{_WHAT} at {origin(url)} left out {', '.join(missing)}",
            "the provider may not support the device code flow for this client",
        )
    device_code = credential(raw_code, "device_code", _WHAT, url)
    code = textsafe.user_code(raw_user_code)
    if code is None:
        raise InvalidAnswer(
            f"{_WHAT} sent a user_code that is not 1-{textsafe.MAX_USER_CODE} printable "
            f"characters, from {origin(url)}", "report this to the provider")
    verification_uri = _uri(raw_uri, "verification_uri", url)
    raw_complete = body.get("verification_uri_complete")
    complete = _uri(raw_complete, "verification_uri_complete", url) if raw_complete else None
    raw_expires = body.get("expires_in")
    expires_in = FALLBACK_EXPIRES_IN if raw_expires is None or raw_expires == "" else \
        seconds(raw_expires, "expires_in", _WHAT, url, 1, MAX_CODE_LIFETIME)
    raw_interval = body.get("interval")
    interval = DEFAULT_INTERVAL if raw_interval is None or raw_interval == "" else \
        seconds(raw_interval, "interval", _WHAT, url, 0, MAX_INTERVAL)
    message = body.get("message")
    return DeviceAuthorization(
        device_code=device_code,
        user_code=code,
        verification_uri=verification_uri,
        verification_uri_complete=complete,
        expires_in=max(1, expires_in),
        interval=max(1, interval),
        issued_at=clock.monotonic(),
        message=textsafe.clean(message) if isinstance(message, str) and message else None,
    )


def _uri(value: object, name: str, url: str) -> str:
    checked = textsafe.verification_uri(value)
    if checked is None:
        raise InvalidAnswer(
            f"{_WHAT} sent a {name} that is not an https:// address, from {origin(url)}",
            "report this to the provider; only https (http on loopback) is shown")
    return checked


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
    lifetime with growing waits, never faster than the interval. A
    redirect or an answer with invalid fields ends it at once
    (:class:`RedirectRefused`, :class:`InvalidAnswer`). Each request's
    deadline is *timeout*, cut to what is left of the code plus
    :data:`POLL_GRACE`, so the flow ends within the code's lifetime
    whatever the server does; *cancel* stops a request in flight too.

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
        # Never past the code's lifetime (plus a little grace), whatever the server does.
        budget = min(timeout, authorization.seconds_left(clock) + POLL_GRACE)
        try:
            answer = request(session, "POST", url, data=data, what="the token endpoint",
                             deadline=budget, cancel=cancel)
        except (RedirectRefused, InvalidAnswer):
            raise                           # not transient: say so now
        except ProviderUnavailable as exc:
            failures += 1
            wait = _retry_wait(interval, failures)
            log.warning("%s; retrying in %.0f s", exc.message, wait)
            continue
        if answer.status == 200:
            try:
                body = answer.json()
            except ProviderUnavailable as exc:
                if type(exc) is not ProviderUnavailable:
                    raise                   # NaN, too deep: a provider fault, not a portal
                body = None
            if isinstance(body, dict) and body.get("access_token"):
                return body
            failures += 1
            wait = _retry_wait(interval, failures)
            log.warning("token endpoint sent an unreadable success answer; retrying in %.0f s", wait)
            continue
        error = error_from_answer(answer.status, answer.json_or_none(), url, "the token endpoint")
        if isinstance(error, ProviderUnavailable):
            failures += 1
            wait = _retry_wait(interval, failures)
            log.warning("%s; retrying in %.0f s", error.message, wait)
            continue
        failures = 0
        if isinstance(error, SlowDown):
            slow_downs += 1
            interval = min(interval + SLOW_DOWN_INCREMENT, float(MAX_INTERVAL))
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
