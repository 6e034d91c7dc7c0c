"""The sandbox identity provider's decisions, apart from HTTP and HTML.

:class:`Policy` is how this provider behaves (lifetimes, dialect, which
clients and tenants it knows...); :class:`Grants` holds every code and token
and answers each endpoint with a status and a JSON body. One lock guards all
of it: handler threads and the test thread both come here.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Mapping

from agent.clock import Clock
from agent.sandbox import idp_entra as entra
from agent.sandbox.idp_codes import DeviceCode, DeviceCodes
from agent.sandbox.idp_entra import (
    DEFAULT_ACCESS_TOKEN_LIFETIME,
    DEFAULT_CODE_LIFETIME,
    DEFAULT_INTERVAL,
    DEVICE_CODE_GRANT_TYPE,
    REFRESH_TOKEN_GRANT_TYPE,
    SANDBOX_TENANT_ID,
    Answer,
    Errors,
    Fault,
    scope_resources,
)
from agent.sandbox.idp_tokens import RefreshToken, Tokens

__all__ = ["Grants", "Policy", "SignIn", "count_key"]


@dataclasses.dataclass
class Policy:
    """How the provider behaves; see :class:`agent.sandbox.idp.IdentityProvider`.

    Mutable: a test may change a field between requests (all times in seconds).
    """

    interval: int = DEFAULT_INTERVAL
    code_lifetime: int = DEFAULT_CODE_LIFETIME
    access_token_lifetime: int = DEFAULT_ACCESS_TOKEN_LIFETIME
    refresh_in: int | None = None
    dialect: str = "entra_v2"
    rotate_refresh_tokens: bool = True
    auto_approve_after_polls: int | None = None
    account: str = "ada@contoso.example"
    public_client_flows: bool = True
    known_client_ids: set[str] | None = None
    enforce_interval: bool = False
    known_tenants: set[str] | None = None
    verification_base_url: str | None = None
    revocation: bool = True


@dataclasses.dataclass(frozen=True)
class SignIn:
    """What the sign-in page did: ``approved``, ``declined`` or ``refused`` (no such code)."""

    outcome: str
    account: str = ""


def count_key(grant_type: str) -> str:
    """The :attr:`Grants.counts` key of a token request with *grant_type*."""
    return {DEVICE_CODE_GRANT_TYPE: "token.device_code",
            REFRESH_TOKEN_GRANT_TYPE: "token.refresh_token"}.get(grant_type, "token.other")


class Grants:
    """Every code and token of one provider and each endpoint's answer.

    Call the endpoint methods with :attr:`lock` held.
    """

    def __init__(self, policy: Policy, clock: Clock) -> None:
        self.policy = policy
        self.clock = clock
        self.lock = threading.RLock()
        self.errors = Errors(lambda: self.policy.dialect, clock.time)
        self.codes = DeviceCodes(self.lock, self.errors)
        self.tokens = Tokens(self.errors, self.remember)
        self.secrets: list[str] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self.token_requests: list[dict[str, object]] = []
        self.token_faults: collections.deque[Fault] = collections.deque()
        self.devicecode_faults: collections.deque[Fault] = collections.deque()
        self.last_scope: str | None = None

    def remember(self, secret: str) -> str:
        """Note *secret* as issued (tests scan output for every one)."""
        self.secrets.append(secret)
        return secret

    def issuer(self, base_url: str, tenant: str) -> str:
        return f"{base_url}/{tenant}/v2.0"

    # -- checks --------------------------------------------------------------

    def _check_tenant(self, tenant: str) -> Answer | None:
        known = self.policy.known_tenants
        if known is None or tenant.lower() in known:
            return None
        return self.errors.error(
            "invalid_request", 90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
            "into the correct cloud.",
        )

    def _check_client(self, client_id: str) -> Answer | None:
        if not client_id:
            return self.errors.wire(entra.NO_CLIENT)
        known = self.policy.known_client_ids
        if known is not None and client_id not in known:
            return self.errors.error(
                "unauthorized_client", 700016,
                f"Application with identifier '{client_id}' was not found in the directory 'Sandbox'.",
            )
        return None

    def _numbers(self, value: int) -> int | str:
        # Entra's v1 endpoint sends expires_in and interval as numeric strings.
        return str(value) if self.policy.dialect == "entra_v1" else value

    # -- endpoints -----------------------------------------------------------

    def discovery(self, base: str, tenant: str) -> Answer:
        """OpenID Connect discovery for *tenant*, with endpoints under *base*."""
        bad = self._check_tenant(tenant)
        if bad:
            return bad
        return 200, {
            "issuer": self.issuer(base, tenant),
            "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
            "userinfo_endpoint": f"{base}/oidc/userinfo",
            "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
            **({"revocation_endpoint": f"{base}/{tenant}/oauth2/v2.0/revoke"} if self.policy.revocation else {}),
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_CODE_GRANT_TYPE],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "name", "oid", "tid", "preferred_username", "ver"],
            "tenant_region_scope": None,
            "cloud_instance_name": "sandbox.invalid",
        }

    def devicecode(self, tenant: str, form: Mapping[str, str], verification_uri: str) -> Answer:
        """RFC 8628 §3.1 request, §3.2 response."""
        bad = self._check_tenant(tenant)
        if bad:
            return bad
        client_id = form.get("client_id", "")
        scope = " ".join(form.get("scope", "").split())
        if scope:
            self.last_scope = scope
        bad = self._check_client(client_id)
        if bad:
            return bad
        if not scope:
            return self.errors.wire(entra.BAD_SCOPE)
        policy = self.policy
        code = self.codes.issue(client_id=client_id, scope=scope, tenant=tenant, now=self.clock.monotonic(),
                                lifetime=policy.code_lifetime, interval=policy.interval, dialect=policy.dialect)
        self.remember(code.device_code)
        body: dict[str, object] = {
            "user_code": code.user_code,
            "device_code": code.device_code,
        }
        if policy.dialect == "entra_v1":
            body["verification_url"] = verification_uri
        else:
            body["verification_uri"] = verification_uri
        if policy.dialect == "oidc":
            body["verification_uri_complete"] = f"{verification_uri}?code={code.user_code}"
        body["expires_in"] = self._numbers(policy.code_lifetime)
        body["interval"] = self._numbers(policy.interval)
        body["message"] = (
            f"To sign in, use a web browser to open the page {verification_uri} "
            f"and enter the code {code.user_code} to authenticate."
        )
        return 200, body

    def token(self, base: str, tenant: str, form: Mapping[str, str]) -> tuple[str, int, dict[str, object]]:
        """RFC 8628 §3.4/§3.5 and RFC 6749 §6; returns (count key, status, body)."""
        key = count_key(form.get("grant_type", ""))
        bad = self._check_tenant(tenant)
        if bad:
            return key, *bad
        if key == "token.other":
            return key, *self.errors.wire(entra.BAD_GRANT)
        client_id = form.get("client_id", "")
        bad = self._check_client(client_id)
        if bad:
            return key, *bad
        if not self.policy.public_client_flows:
            # What Entra says when "Allow public client flows" is off.
            return key, *self.errors.wire(entra.PUBLIC_CLIENT, status=401)
        if key == "token.device_code":
            return key, *self._poll(base, client_id, form.get("device_code", ""))
        return key, *self._refresh(base, client_id, form.get("refresh_token", ""), form.get("scope", ""))

    def _poll(self, base: str, client_id: str, device_code: str) -> Answer:
        policy = self.policy
        polled = self.codes.poll(client_id, device_code, now=self.clock.monotonic(),
                                 enforce_interval=policy.enforce_interval,
                                 auto_approve_after_polls=policy.auto_approve_after_polls, account=policy.account)
        if not isinstance(polled, DeviceCode):
            return polled
        return 200, self._issue(base, client_id, polled.scope, polled.account or policy.account, polled.tenant)

    def _refresh(self, base: str, client_id: str, refresh_token: str, scope: str) -> Answer:
        entry = self.tokens.redeem_refresh(client_id, refresh_token)
        if not isinstance(entry, RefreshToken):
            return entry
        scope = " ".join(scope.split()) or entry.scope
        self.last_scope = scope
        if self.policy.dialect != "oidc" and len(scope_resources(scope)) > 1:
            return self.errors.wire(entra.TWO_RESOURCES)
        if self.policy.rotate_refresh_tokens:
            entry.state = "rotated"
            return 200, self._issue(base, client_id, scope, entry.account, entry.tenant)
        return 200, self._issue(base, client_id, scope, entry.account, entry.tenant, with_refresh=False)

    def _issue(self, base: str, client_id: str, scope: str, account: str, tenant: str, *,
               with_refresh: bool = True) -> dict[str, object]:
        lifetime = self.policy.access_token_lifetime
        return self.tokens.issue(
            client_id, scope, account, tenant, now=self.clock.monotonic(), lifetime=lifetime,
            numbers=self._numbers, refresh_in=self.policy.refresh_in, with_refresh=with_refresh,
            id_token=lambda: entra.id_token(self.issuer(base, SANDBOX_TENANT_ID), client_id, account,
                                            int(self.clock.time()), lifetime))

    def revoke(self, tenant: str, form: Mapping[str, str]) -> Answer:
        """RFC 7009 revocation (see :meth:`Tokens.revoke`)."""
        bad = self._check_tenant(tenant)
        if bad:
            return bad
        return self.tokens.revoke(form.get("token", ""), form.get("client_id", ""))

    def sign_in(self, code_text: str, account: str, action: str) -> SignIn:
        """The person's answer on the sign-in page (RFC 8628 §3.3)."""
        code = self.codes.typed(code_text, self.clock.monotonic())
        if code is None:
            return SignIn("refused")
        if action == "decline":
            code.state = "declined"
            return SignIn("declined")
        code.state = "approved"
        code.account = account.strip() or self.policy.account
        return SignIn("approved", code.account)
