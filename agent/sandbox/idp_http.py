"""The sandbox identity provider's HTTP side: routes, scripted faults, and
the ``/_sandbox/`` controls (loopback clients only). The answers themselves
come from :class:`agent.sandbox.idp_grants.Grants`."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from agent.sandbox._http import QuietHandler, is_loopback
from agent.sandbox.idp_entra import Fault
from agent.sandbox.idp_grants import count_key
from agent.sandbox.idp_pages import signed_in_page, signin_form

if TYPE_CHECKING:
    from agent.sandbox.idp import IdentityProvider

__all__ = ["IdpHandler"]

# The messages keep the identity provider's logger name (the sandbox's log says who failed).
logger = logging.getLogger("agent.sandbox.idp")

_DISCOVERY = re.compile(r"^/([^/]+)(?:/v2\.0)?/\.well-known/openid-configuration$")
_DEVICECODE = re.compile(r"^/([^/]+)/oauth2/(?:v2\.0/)?devicecode$")
_TOKEN = re.compile(r"^/([^/]+)/oauth2/(?:v2\.0/)?token$")
_KEYS = re.compile(r"^/([^/]+)/discovery/(?:v2\.0/)?keys$")
_REVOKE = re.compile(r"^/([^/]+)/oauth2/(?:v2\.0/)?revoke$")


def _form(body: bytes) -> dict[str, str]:
    """application/x-www-form-urlencoded, first value of each field."""
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


class IdpHandler(QuietHandler):
    """One request to the identity provider (``server.owner``)."""

    @property
    def idp(self) -> IdentityProvider:
        return self.server.owner  # type: ignore[attr-defined]

    def _json(self, status: int, body: Mapping[str, object], headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(body).encode(), "application/json; charset=utf-8", headers)

    def _html(self, status: int, text: str) -> None:
        self.send_bytes(status, text.encode(), "text/html; charset=utf-8")

    def _apply_fault(self, fault: Fault) -> bool:
        """Answer per *fault*; False means "now answer normally" (a delay)."""
        if fault.kind == "delay":
            self.idp.stopping.wait(fault.seconds)
            return False
        if fault.kind == "drop":
            self.drop()
        elif fault.kind == "error":
            grants = self.idp.grants
            with grants.lock:
                status, body = grants.errors.error(fault.error_code, fault.aadsts, fault.description,
                                                   fault.http_status)
            self._json(status, body)
        else:
            text = fault.body
            kind = "application/json" if text[:1] in "{[" or fault.kind == "malformed" else (
                "text/html" if text[:1] == "<" else "text/plain")
            self.send_bytes(fault.http_status, text.encode(), f"{kind}; charset=utf-8", dict(fault.headers))
        return True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        try:
            self._route(method)
        except ConnectionError:
            return      # the client gave up (its timeout): nobody to answer
        except Exception:
            logger.exception("sandbox identity provider failed on %s %s", method, urlsplit(self.path).path)
            self._json(500, {"error": "server_error", "error_description": "The sandbox failed; see its log."})

    def _route(self, method: str) -> None:
        idp = self.idp
        grants = idp.grants
        url = urlsplit(self.path)
        path = url.path
        body = self.read_body() if method == "POST" else b""

        if path.startswith("/_sandbox/"):
            self._control(method, path, body)
            return
        if path in ("/", "/devicelogin"):
            with grants.lock:
                grants.counts["signin_page"] += 1
            if path == "/":
                self.send_bytes(302, b"", "text/plain", {"Location": "/devicelogin"})
            elif method == "GET":
                query = _form(url.query.encode())
                self._html(200, signin_form(query.get("code", ""), idp.account))
            else:
                form = _form(body)
                with grants.lock:
                    result = grants.sign_in(form.get("code", ""), form.get("account", ""),
                                            form.get("action", "approve"))
                status, text = signed_in_page(result)
                self._html(status, text)
            return
        match = _DISCOVERY.match(path)
        if match and method == "GET":
            with grants.lock:
                grants.counts["discovery"] += 1
                status, doc = grants.discovery(idp.base_url, match.group(1))
            self._json(status, doc)
            return
        if path == "/v1.0/me" and method == "GET":
            self._me()
            return
        match = _KEYS.match(path)
        if match and method == "GET":
            self._json(200, {"keys": []})
            return
        match = _DEVICECODE.match(path)
        if match and method == "POST":
            with grants.lock:
                grants.counts["devicecode"] += 1
                fault = grants.devicecode_faults.popleft() if grants.devicecode_faults else None
            if fault is not None and self._apply_fault(fault):
                return
            with grants.lock:
                status, doc = grants.devicecode(match.group(1), _form(body), idp.verification_uri)
            self._json(status, doc)
            return
        match = _TOKEN.match(path)
        if match and method == "POST":
            self._token(match.group(1), _form(body))
            return
        match = _REVOKE.match(path)
        if match and method == "POST" and idp.revocation:
            with grants.lock:
                grants.counts["revoke"] += 1
                status, doc = grants.revoke(match.group(1), _form(body))
            self._json(status, doc)
            return
        self._json(404, {"error": "not_found", "error_description": f"No such endpoint: {method} {path}"})

    def _me(self) -> None:
        """A Graph-shaped ``GET /v1.0/me``: a protected resource to try a token on."""
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        account = self.idp.validate_access_token(token.strip()) if scheme.lower() == "bearer" else None
        with self.idp.grants.lock:
            self.idp.grants.counts["resource"] += 1
        if account is None:
            self._json(401, {"error": {"code": "InvalidAuthenticationToken",
                                       "message": "Access token is empty, invalid or expired."}},
                       {"WWW-Authenticate": 'Bearer error="invalid_token"'})
            return
        self._json(200, {"userPrincipalName": account, "displayName": account.split("@")[0].title(),
                         "mail": account})

    def _token(self, tenant: str, form: dict[str, str]) -> None:
        idp = self.idp
        grants = idp.grants
        grant_type = form.get("grant_type", "")
        with grants.lock:
            record: dict[str, object] = {"grant_type": grant_type, "at": grants.clock.monotonic(), "status": 0,
                                         "scope": " ".join(form.get("scope", "").split())}
            grants.token_requests.append(record)
            fault = grants.token_faults.popleft() if grants.token_faults else None
            if fault is not None and fault.kind != "delay":
                grants.counts[count_key(grant_type)] += 1
                record["status"] = fault.http_status
        if fault is not None and self._apply_fault(fault):
            return
        with grants.lock:
            key, status, doc = grants.token(idp.base_url, tenant, form)
            grants.counts[key] += 1
            record["status"] = status
        self._json(status, doc)

    def _control(self, method: str, path: str, body: bytes) -> None:
        """``/_sandbox/*``: scripting over HTTP, for clients run in a subprocess."""
        idp = self.idp
        if not is_loopback(self.client_address[0]):
            # The sign-in page may be served on a LAN for a phone; the switches never are.
            self._json(403, {"error": "forbidden", "error_description": "sandbox controls are for loopback clients only"})
            return
        action = path[len("/_sandbox/"):]
        if action == "state" and method == "GET":
            self._json(200, idp.state())
            return
        if method != "POST":
            self._json(405, {"error": "method_not_allowed", "error_description": f"use POST {path}"},
                       {"Allow": "POST"})
            return
        form = _form(body)
        user_code = form.get("user_code") or None
        try:
            if action == "approve":
                self._json(200, {"approved": idp.approve(user_code, form.get("account") or None)})
            elif action == "decline":
                self._json(200, {"declined": idp.decline(user_code)})
            elif action == "expire":
                self._json(200, {"expired": idp.expire(user_code)})
            elif action == "revoke":
                self._json(200, {"revoked": idp.revoke_refresh_tokens()})
            else:
                self._json(404, {"error": "not_found", "error_description": f"no sandbox control {action!r}"})
        except LookupError as error:
            self._json(404, {"error": "not_found", "error_description": str(error)})
