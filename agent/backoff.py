"""The one retry policy: how long to wait before trying again, with jitter.

Every retry in the agent asks a :class:`Backoff` (a value: base, cap,
minimum, jitter kind) for its wait, and keeps its own count of failures in a
:class:`Retry`. Waits are random so that a fleet which failed together (a
broker restart, a back end down, a site-wide power cut) does not come back
together: AWS's "Exponential Backoff and Jitter" calls the two kinds used
here *full jitter* (``uniform(minimum, min(cap, base * 2**(n-1)))``) and
*decorrelated jitter* (``min(cap, uniform(base, 3 * previous))``).

A server's ``Retry-After`` (RFC 9110 §10.2.3) is a *floor*, never a
schedule: :func:`retry_after_wait` waits at least that long, never less
than :attr:`Backoff.retry_after_min`, and adds jitter, so ``Retry-After: 0``
is not a tight loop and a fleet told "come back at 12:00:00" does not come
back in that one second. An HTTP-date is read against the response's own
``Date`` header (a board without an RTC may have a clock far off), and only
falls back to the local wall clock when the response has no usable ``Date``.

Nothing here overflows: the exponent is bounded before it is raised, so the
10,000th failure in a row waits ``cap`` like the 20th.

>>> policy = Backoff(base=2.0, cap=300.0, minimum=1.0)
>>> retry = Retry(policy, rng=random.Random(7))
>>> 1.0 <= retry.next_delay() <= 2.0          # first failure: within [1, 2] s
True
>>> retry.reset()                               # after a success
"""

from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass
from datetime import timezone

__all__ = [
    "Backoff", "Retry", "parse_retry_after", "retry_after_wait", "http_date",
    "FULL", "DECORRELATED", "RETRY_AFTER_MAX",
    "UPLOAD", "TOKEN", "DEVICE_CODE_POLL", "MQTT_RECONNECT",
]

FULL = "full"
DECORRELATED = "decorrelated"

#: Seconds: a server's Retry-After is honoured up to this (1 hour); a longer
#: one (or a date far ahead) is read as this.
RETRY_AFTER_MAX = 3600.0

# 2**64 * base is far above any cap in use; bounding the exponent here is
# what keeps the 1,025th failure from raising OverflowError.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class Backoff:
    """A retry schedule (values in seconds).

    ``base``: the first window (full jitter) or the smallest wait
    (decorrelated); ``cap``: no wait is longer (except a ``Retry-After``
    floor, itself at most :data:`RETRY_AFTER_MAX`); ``minimum``: no wait is
    shorter; ``retry_after_min``: the least wait when a server sent
    ``Retry-After`` (``0`` or a past date included); ``retry_after_spread``:
    jitter added on top of a ``Retry-After`` is drawn from
    ``[0, max(retry_after_jitter, spread * retry_after, window))``.

    >>> Backoff(base=2.0, cap=300.0).window(3)
    8.0
    """

    base: float
    cap: float
    minimum: float = 0.0
    jitter: str = FULL
    retry_after_min: float = 1.0
    retry_after_jitter: float = 1.0
    retry_after_spread: float = 1.0

    def __post_init__(self) -> None:
        if self.jitter not in (FULL, DECORRELATED):
            raise ValueError(f"jitter must be {FULL!r} or {DECORRELATED!r}, got {self.jitter!r}")
        if not (0 <= self.minimum <= self.cap and 0 < self.base <= self.cap):
            raise ValueError("backoff needs 0 <= minimum <= cap and 0 < base <= cap")
        if self.retry_after_min < 0 or self.retry_after_jitter < 0 or self.retry_after_spread < 0:
            raise ValueError("Retry-After minimum, jitter and spread must be >= 0")

    def window(self, attempt: int) -> float:
        """The upper end of full jitter's range for failure number *attempt* (1 = first)."""
        exponent = min(max(0, attempt - 1), _MAX_EXPONENT)
        return max(self.minimum, min(self.cap, self.base * 2.0 ** exponent))

    def delay(self, attempt: int, rng: random.Random, previous: float | None = None) -> float:
        """Seconds to wait after failure number *attempt* (1 = the first in a row).

        *previous* is the last wait (decorrelated jitter grows from it).
        Always within ``[minimum, cap]``.
        """
        if self.jitter == DECORRELATED:
            low = max(self.minimum, self.base)
            last = low if previous is None or not math.isfinite(previous) else max(low, previous)
            wait = rng.uniform(low, min(self.cap, last * 3.0))
        else:
            wait = rng.uniform(self.minimum, self.window(attempt))
        return min(self.cap, max(self.minimum, wait))


class Retry:
    """One caller's failures in a row under a :class:`Backoff` (not thread-safe).

    >>> retry = Retry(Backoff(base=15.0, cap=300.0, minimum=15.0), rng=random.Random(1))
    >>> retry.next_delay() == 15.0 and retry.attempts == 1
    True
    """

    def __init__(self, policy: Backoff, *, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng if rng is not None else random.Random()
        self.attempts = 0                  # failures in a row
        self.last_delay: float | None = None

    def next_delay(self) -> float:
        """Count one more failure and return the seconds to wait before the next try."""
        self.attempts += 1
        self.last_delay = self.policy.delay(self.attempts, self._rng, self.last_delay)
        return self.last_delay

    def after_retry_after(self, seconds: float) -> float:
        """Count one more failure the server answered with ``Retry-After: seconds``."""
        self.attempts += 1
        self.last_delay = retry_after_wait(seconds, self.policy, self.attempts, self._rng)
        return self.last_delay

    def reset(self) -> None:
        """A success: the next failure starts from the first window again."""
        self.attempts = 0
        self.last_delay = None


def http_date(value: str | None) -> float | None:
    """Epoch seconds of an HTTP-date (RFC 9110 §5.6.7), None when absent or unreadable."""
    if not value or not isinstance(value, str):
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def parse_retry_after(value: str | None, *, date: str | None = None,
                      now_wall: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (0 <= x <= :data:`RETRY_AFTER_MAX`).

    Accepts delay-seconds (``"7"``) or an HTTP-date. A date is measured
    against *date* (the response's ``Date`` header) when it can be read,
    else against *now_wall* (the local wall clock, epoch seconds); with
    neither it is unreadable. None when absent or unreadable; a date in
    the past is 0.

    >>> parse_retry_after("120")
    120.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", date="Wed, 21 Oct 2015 07:28:00 GMT")
    30.0
    """
    if not value or not isinstance(value, str):
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        # Many digits are still a number: no int() of a 10,000-digit string.
        return RETRY_AFTER_MAX if len(text) > 8 else min(float(int(text)), RETRY_AFTER_MAX)
    when = http_date(text)
    if when is None:
        return None
    reference = http_date(date)
    if reference is None:
        reference = now_wall
    if reference is None:
        return None
    return min(max(0.0, when - reference), RETRY_AFTER_MAX)


def retry_after_wait(seconds: float, policy: Backoff, attempt: int, rng: random.Random) -> float:
    """Seconds to wait when a server said ``Retry-After: seconds`` (see the module docstring).

    At least ``max(seconds, policy.retry_after_min)``, plus jitter from
    ``[0, max(retry_after_jitter, retry_after_spread * seconds, window(attempt)))``
    capped at ``policy.cap``: a fleet told the same moment spreads over a
    span as long as the wait itself.
    """
    floor = max(policy.retry_after_min, min(max(0.0, float(seconds)), RETRY_AFTER_MAX))
    spread = min(policy.cap, max(policy.retry_after_jitter,
                                 policy.retry_after_spread * floor, policy.window(attempt)))
    return floor + rng.uniform(0.0, spread)


# The policies in use, one per kind of retry (seconds).

#: Telemetry POSTs after 408/429/5xx/network errors: uniform in [1, window],
#: the window doubling 2 s, 4 s ... up to 5 minutes.
UPLOAD = Backoff(base=2.0, cap=300.0, minimum=1.0)
#: Token refreshes and sign-in code requests that failed for a transient
#: reason: never before 15 s, the window doubling from 30 s up to 5 minutes.
TOKEN = Backoff(base=30.0, cap=300.0, minimum=15.0)
#: Device-code polls after a network error or 5xx (RFC 8628 §3.5 leaves the
#: wait to the client): the window doubling from 10 s up to 60 s; the
#: caller never waits less than the provider's interval.
DEVICE_CODE_POLL = Backoff(base=10.0, cap=60.0, minimum=1.0)
#: MQTT reconnects: the whole fleet drops at once when its broker restarts,
#: so the first window is already wide (a fleet of N comes back at about
#: N/60 a second), doubling up to 5 minutes.
MQTT_RECONNECT = Backoff(base=60.0, cap=300.0, minimum=1.0)
