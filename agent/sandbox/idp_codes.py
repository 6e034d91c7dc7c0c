"""The sandbox identity provider's device codes (RFC 8628 §3.2-§3.5).

Each :class:`DeviceCode` goes pending -> approved | declined | expired, and
approved -> redeemed when a poll collects the tokens. :class:`DeviceCodes`
keeps them and answers a poll. Call everything with the provider's lock held
(the lock is :attr:`DeviceCodes.issued`'s).
"""

from __future__ import annotations

import dataclasses
import secrets
import threading

from agent.sandbox import idp_entra as entra
from agent.sandbox.idp_entra import Answer, Errors

__all__ = ["DeviceCode", "DeviceCodes"]

_PENDING_STATES = ("pending",)


@dataclasses.dataclass
class DeviceCode:
    device_code: str
    user_code: str
    client_id: str
    scope: str
    tenant: str
    issued_at: float            # clock.monotonic()
    expires_at: float           # clock.monotonic()
    interval: int               # seconds; raised by 5 on each enforced slow_down
    state: str = "pending"      # pending | approved | declined | expired | redeemed
    account: str | None = None
    polls: int = 0              # authorization_pending answers given so far
    last_poll: float | None = None


class DeviceCodes:
    """Every code issued, oldest first, and what a poll for one is answered."""

    def __init__(self, lock: threading.RLock, errors: Errors) -> None:
        #: Notified when a code is issued (``wait_for_code``); shares the provider's lock.
        self.issued = threading.Condition(lock)
        self.codes: list[DeviceCode] = []
        self._by_device_code: dict[str, DeviceCode] = {}
        self._errors = errors

    def issue(self, *, client_id: str, scope: str, tenant: str, now: float, lifetime: int,
              interval: int, dialect: str) -> DeviceCode:
        """A new pending code (its device code is a fresh secret)."""
        code = DeviceCode(
            device_code=secrets.token_urlsafe(48),
            user_code=entra.new_user_code(dialect, {c.user_code for c in self.codes}),
            client_id=client_id,
            scope=scope,
            tenant=tenant,
            issued_at=now,
            expires_at=now + lifetime,
            interval=interval,
        )
        self.codes.append(code)
        self._by_device_code[code.device_code] = code
        self.issued.notify_all()
        return code

    def is_pending(self, code: DeviceCode, now: float) -> bool:
        """Whether *code* still waits for a person (a timed-out one turns "expired")."""
        if code.state == "pending" and now >= code.expires_at:
            code.state = "expired"
        return code.state in _PENDING_STATES

    def pending(self, now: float) -> list[DeviceCode]:
        """The codes still waiting for a person, oldest first."""
        return [c for c in self.codes if self.is_pending(c, now)]

    def find_pending(self, user_code: str | None, now: float) -> DeviceCode:
        """The pending code *user_code* (None: the newest); LookupError if there is none."""
        wanted = entra.normalize_code(user_code) if user_code else None
        for code in reversed(self.codes):
            if wanted is not None and entra.normalize_code(code.user_code) != wanted:
                continue
            if self.is_pending(code, now):
                return code
            if wanted is not None:
                break
        if wanted is None:
            raise LookupError("no device code is waiting for approval")
        raise LookupError(f"the code {user_code!r} is not waiting for approval (unknown, used or expired)")

    def typed(self, code_text: str, now: float) -> DeviceCode | None:
        """The pending code a person typed on the sign-in page, or None."""
        wanted = entra.normalize_code(code_text)
        if not wanted:
            return None
        code = next((c for c in reversed(self.codes) if entra.normalize_code(c.user_code) == wanted), None)
        return code if code is not None and self.is_pending(code, now) else None

    def poll(self, client_id: str, device_code: str, *, now: float, enforce_interval: bool,
             auto_approve_after_polls: int | None, account: str) -> DeviceCode | Answer:
        """RFC 8628 §3.4/§3.5: the code, now redeemed, or the error to answer."""
        errors = self._errors
        if not device_code:
            return errors.wire(entra.NO_DEVICE_CODE)
        code = self._by_device_code.get(device_code)
        if code is None or code.client_id != client_id:
            return errors.wire(entra.BAD_CODE)
        self.is_pending(code, now)          # turns a timed-out code into "expired"
        if code.state == "expired":
            return errors.wire(entra.EXPIRED)
        if code.state == "declined":
            return errors.wire(entra.DECLINED)
        if code.state == "redeemed":
            return errors.wire(entra.REDEEMED)
        if code.state == "pending":
            too_soon = (
                enforce_interval
                and code.last_poll is not None
                and now - code.last_poll < code.interval
            )
            code.last_poll = now
            if too_soon:
                code.interval += 5      # RFC 8628 §3.5: "MUST be increased by 5 seconds"
                return errors.error("slow_down", None,
                                    "Polling too fast. Increase the polling interval by 5 seconds.")
            if auto_approve_after_polls is not None and code.polls >= auto_approve_after_polls:
                code.state = "approved"
                code.account = account
            else:
                code.polls += 1
                return errors.wire(entra.PENDING)
        code.state = "redeemed"
        return code
