"""Where to ask for codes and tokens: Entra authorities and OIDC discovery.

Entra ID (any cloud) is addressed by an authority host and a tenant:
``https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode`` and
``.../token``. Any other OpenID provider is found through
``{issuer}/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0
§4), which must list ``device_authorization_endpoint`` (RFC 8628 §4).

Plain ``http://`` is allowed only for loopback addresses (the local sandbox).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import requests

from agent.auth.errors import (
    DiscoveryError,
    InsecureEndpoint,
    ProviderUnavailable,
    error_from_answer,
)
from agent.auth.http import DEFAULT_DEADLINE, request, require_secure
from agent.errors import UsageError
from agent.net import is_loopback
from agent.textsafe import clean

__all__ = [
    "CLOUDS", "WELL_KNOWN_TENANTS", "Endpoints", "entra_endpoints", "discover",
    "require_secure", "is_loopback", "validate_tenant",
]

log = logging.getLogger(__name__)

#: Entra ID authority hosts by national cloud.
CLOUDS: dict[str, str] = {
    "public": "https://login.microsoftonline.com",
    "usgov": "https://login.microsoftonline.us",
    "china": "https://login.chinacloudapi.cn",
}

#: Tenant names that are not a directory of their own.
WELL_KNOWN_TENANTS = ("common", "organizations", "consumers")

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$")


@dataclass(frozen=True)
class Endpoints:
    """The two endpoints of the device flow, who issues the tokens, and
    where to revoke them (RFC 7009; None when the provider lists none, as
    Entra ID does)."""

    device_authorization_endpoint: str
    token_endpoint: str
    issuer: str | None = None
    revocation_endpoint: str | None = None


def validate_tenant(tenant: str) -> str:
    """A tenant GUID, a verified domain, or common/organizations/consumers."""
    tenant = (tenant or "").strip()
    if tenant.lower() in WELL_KNOWN_TENANTS:
        return tenant.lower()
    if _GUID.match(tenant) or _DOMAIN.match(tenant):
        return tenant
    raise UsageError(
        f"tenant id {tenant!r} is not a GUID, a domain or one of {', '.join(WELL_KNOWN_TENANTS)}",
        "find it in the Entra admin center under Overview > Tenant ID",
    )


def entra_endpoints(tenant: str, cloud: str = "public",
                    authority_host: str | None = None) -> Endpoints:
    """Endpoints of the Entra v2.0 authority for *tenant* in *cloud*.

    *authority_host* replaces the cloud's host (sovereign or private
    deployments, and the local sandbox in tests).
    """
    tenant = validate_tenant(tenant)
    if authority_host:
        host = require_secure(authority_host.rstrip("/"), "authority host")
    else:
        try:
            host = CLOUDS[cloud]
        except KeyError:
            raise UsageError(f"unknown cloud {cloud!r}",
                             f"use one of: {', '.join(CLOUDS)}") from None
    base = f"{host}/{tenant}"
    return Endpoints(
        device_authorization_endpoint=f"{base}/oauth2/v2.0/devicecode",
        token_endpoint=f"{base}/oauth2/v2.0/token",
        issuer=f"{base}/v2.0",
    )


#: Longest endpoint URL accepted from a discovery document, in characters.
MAX_ENDPOINT = 2048


def discover(issuer: str, session: requests.Session, timeout: float = DEFAULT_DEADLINE) -> Endpoints:
    """Read ``{issuer}/.well-known/openid-configuration`` (OIDC Discovery §4).

    *timeout* is the overall deadline of the request, in seconds. Every
    field used is checked for its type: a non-string issuer or endpoint is
    a :class:`DiscoveryError`, never a traceback.
    """
    issuer = require_secure(issuer.rstrip("/"), "issuer")
    url = f"{issuer}/.well-known/openid-configuration"
    answer = request(session, "GET", url, what="the OpenID configuration", deadline=timeout)
    if answer.status >= 500 or answer.status == 429:
        raise error_from_answer(answer.status, None, url, "the OpenID configuration")
    if answer.status != 200:
        raise DiscoveryError(
            f"no OpenID configuration at {clean(url)} (HTTP {answer.status})",
            "check the issuer URL: it is the address before /.well-known/openid-configuration",
        )
    try:
        document = answer.json()
    except ProviderUnavailable as exc:
        if type(exc) is not ProviderUnavailable:
            raise
        document = None
    if not isinstance(document, dict):
        raise DiscoveryError(f"the OpenID configuration at {clean(url)} is not a JSON object",
                             "check the issuer URL")
    device = document.get("device_authorization_endpoint")
    token = document.get("token_endpoint")
    named = document.get("issuer")
    if named is not None and not isinstance(named, str):
        raise DiscoveryError(f"the OpenID configuration at {clean(url)} has an issuer that is "
                             "not a text", "report this to the provider")
    if named and named.rstrip("/") != issuer:
        # OIDC Discovery §4.3: the issuer must match; a mismatch means a wrong URL or a spoof.
        raise DiscoveryError(
            f"the OpenID configuration at {clean(url)} names another issuer ({clean(named, 200)})",
            "use exactly the issuer URL the provider publishes",
        )
    if not device:
        raise DiscoveryError(
            f"the provider at {clean(issuer)} does not offer the device code flow "
            "(no device_authorization_endpoint in its OpenID configuration)",
            "enable the device authorization grant at the provider, or use another provider",
        )
    if not token:
        raise DiscoveryError(f"the OpenID configuration at {clean(url)} has no token_endpoint",
                             "check the issuer URL")
    revocation = document.get("revocation_endpoint") or None
    return Endpoints(
        device_authorization_endpoint=_endpoint(device, "device authorization endpoint", url),
        token_endpoint=_endpoint(token, "token endpoint", url),
        issuer=issuer,
        revocation_endpoint=_endpoint(revocation, "revocation endpoint", url)
        if revocation is not None else None,
    )


def _endpoint(value: object, what: str, url: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_ENDPOINT:
        raise DiscoveryError(f"the OpenID configuration at {clean(url)} has a {what} that is "
                             "not a URL text", "report this to the provider")
    try:
        return require_secure(value, what)
    except InsecureEndpoint as exc:
        # The provider's document, not the person's input: not a usage error (exit 2).
        raise DiscoveryError(f"the OpenID configuration at {clean(url)} lists an unusable "
                             f"{exc.message}", "report this to the provider: endpoints must be "
                             "https:// (plain http only on loopback)") from None
