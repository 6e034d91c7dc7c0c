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
from urllib.parse import urlsplit

import requests

from agent.auth.errors import DiscoveryError, InsecureEndpoint, unavailable
from agent.errors import UsageError
from agent.net import is_loopback

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
    """The two endpoints of the device flow, and who issues the tokens."""

    device_authorization_endpoint: str
    token_endpoint: str
    issuer: str | None = None


def require_secure(url: str, what: str = "endpoint") -> str:
    """Return *url* if it is https, or http on loopback; else raise.

    >>> require_secure("http://127.0.0.1:8400/token")
    'http://127.0.0.1:8400/token'
    """
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and is_loopback(parts.hostname):
        return url
    if parts.scheme == "http":
        raise InsecureEndpoint(
            f"{what} {url} uses plain http on a non-loopback host",
            "use https://; plain http is allowed only for 127.0.0.1, ::1 and localhost",
        )
    raise InsecureEndpoint(f"{what} {url!r} is not an https:// URL",
                           "give a full https:// address")


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


def discover(issuer: str, session: requests.Session, timeout: float = 10.0) -> Endpoints:
    """Read ``{issuer}/.well-known/openid-configuration`` (OIDC Discovery §4)."""
    issuer = require_secure(issuer.rstrip("/"), "issuer")
    url = f"{issuer}/.well-known/openid-configuration"
    try:
        response = session.get(url, timeout=timeout, headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise unavailable(f"cannot reach the OpenID configuration ({type(exc).__name__})", url) from None
    if response.status_code >= 500:
        raise unavailable(f"the OpenID configuration answered HTTP {response.status_code}", url)
    if response.status_code != 200:
        raise DiscoveryError(
            f"no OpenID configuration at {url} (HTTP {response.status_code})",
            "check the issuer URL: it is the address before /.well-known/openid-configuration",
        )
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise DiscoveryError(f"the OpenID configuration at {url} is not JSON",
                             "check the issuer URL")
    device = document.get("device_authorization_endpoint")
    token = document.get("token_endpoint")
    if not device:
        raise DiscoveryError(
            f"the provider at {issuer} does not offer the device code flow "
            "(no device_authorization_endpoint in its OpenID configuration)",
            "enable the device authorization grant at the provider, or use another provider",
        )
    if not token:
        raise DiscoveryError(f"the OpenID configuration at {url} has no token_endpoint",
                             "check the issuer URL")
    if document.get("issuer") and document["issuer"].rstrip("/") != issuer:
        # OIDC Discovery §4.3: the issuer must match; a mismatch means a wrong URL or a spoof.
        raise DiscoveryError(
            f"the OpenID configuration at {url} names another issuer ({document['issuer']})",
            "use exactly the issuer URL the provider publishes",
        )
    return Endpoints(
        device_authorization_endpoint=require_secure(device, "device authorization endpoint"),
        token_endpoint=require_secure(token, "token endpoint"),
        issuer=issuer,
    )
