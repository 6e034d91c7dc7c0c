"""``entra-auth-cli get-token --resource R``: a token for a resource, sharing the agent's cache.

The running agent keeps its per-resource tokens in memory only (never on
disk), so the one way for a separate process to share that cache is to ask
the agent: when ``[token_service]`` is enabled for this profile, the CLI
sends the same request an Azure SDK would (:mod:`agent.tokenservice`). That
also serves members of the group ``entra-agent-tokens``, who may read the
secret but not the root-only token file. When the agent is not running (the
connection is refused), root gets the token directly with the profile's
refresh token, through the same :class:`~agent.resourcetokens.ResourceTokens`
code (the rotated refresh token is saved under the token store's lock, so
the agent, when it starts, carries on with it).

>>> token, source = get_resource_token("https://storage.azure.com", "raspberry-pi")  # doctest: +SKIP
>>> source
'agent'
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import requests

from agent import paths, report
from agent.auth.errors import AuthError, ProviderUnavailable, SignInRequired
from agent.clock import SystemClock
from agent.errors import ConfigError, UsageError
from agent.resourcetokens import ResourceNotAllowed, ResourceToken, ResourceTokens, check_resource

__all__ = ["get_resource_token", "get_token_command", "ask_agent", "print_token", "MAX_ANSWER_BYTES"]

log = logging.getLogger(__name__)

#: Largest answer read from the token service, in bytes.
MAX_ANSWER_BYTES = 64 * 1024
#: Seconds to wait for the token service (it may refresh from the provider).
TIMEOUT = 30.0


def get_resource_token(resource: str, profile_name: str) -> tuple[ResourceToken, str]:
    """A token for *resource* and where it came from: ``"agent"`` or ``"provider"``."""
    reason = check_resource(resource)
    if reason is not None:
        raise UsageError(f"--resource {reason}", "give a resource URI such as https://storage.azure.com")
    from agent.profiles import ProfileStore
    profile = ProfileStore(paths.profiles_file()).get(profile_name)
    endpoint_secret = _agent_endpoint(profile_name)
    if endpoint_secret is not None:
        endpoint, secret = endpoint_secret
        try:
            return ask_agent(endpoint, secret, resource), "agent"
        except _AgentDown:
            log.info("the agent's token service at %s does not answer; asking the provider", endpoint)
    from agent.auth.tokens import TokenClient
    from agent.tokenstore import TokenStore
    client = TokenClient(profile, store=TokenStore(paths.token_dir()), clock=SystemClock())
    return ResourceTokens(client).get(resource), "provider"


def _agent_endpoint(profile_name: str) -> tuple[str, str] | None:
    """(endpoint, secret) of the agent's token service for this profile, or None."""
    from agent.config import load_config
    from agent.tokensecret import read_secret, secret_path
    from agent.tokenservice import ENDPOINT_PATH
    try:
        config = load_config(paths.config_file())
    except ConfigError as exc:
        log.info("no agent config to find its token service: %s", exc)
        return None
    service = config.token_service
    if not service.enabled or config.profile != profile_name:
        return None
    try:
        secret = read_secret(secret_path())
    except ConfigError:
        if os.geteuid() == 0:
            return None         # root can go to the provider itself
        raise
    return f"http://{service.address}:{service.port}{ENDPOINT_PATH}", secret


class _AgentDown(Exception):
    """Nothing listens at the token service's address."""


def ask_agent(endpoint: str, secret: str, resource: str,
              session: requests.Session | None = None) -> ResourceToken:
    """Ask the token service at *endpoint* (App Service protocol) for *resource*."""
    from agent.tokenservice import API_VERSION, IDENTITY_HEADER
    http = session or requests.Session()
    try:
        response = http.get(endpoint, params={"resource": resource, "api-version": API_VERSION},
                            headers={IDENTITY_HEADER: secret, "Accept": "application/json"},
                            timeout=TIMEOUT, allow_redirects=False, stream=True)
    except requests.ConnectionError:
        raise _AgentDown() from None
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"the agent's token service did not answer ({type(exc).__name__})",
                                  "check: systemctl status entra-agent") from None
    try:
        raw = response.raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
    except Exception:  # noqa: BLE001 - a broken answer is a failure, not a crash
        raw = b""
    finally:
        response.close()
    body = _json(raw)
    if response.status_code == 200:
        return _token(body, resource)
    message = _clean(str(body.get("message") or f"HTTP {response.status_code}"))
    status = response.status_code
    if status == 403:
        raise SignInRequired(f"the agent's token service: {message}")
    if status == 401:
        raise ConfigError(f"the agent's token service refused the secret: {message}")
    if status in (429, 503) or status >= 500:
        raise ProviderUnavailable(f"the agent's token service: {message}", "try again in a minute")
    if status == 400:
        raise ResourceNotAllowed(f"the agent's token service: {message}")
    raise AuthError(f"the agent's token service answered HTTP {status}: {message}")


def _json(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_ANSWER_BYTES:
        return {}
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _token(body: dict[str, Any], resource: str) -> ResourceToken:
    token, expires_on = body.get("access_token"), body.get("expires_on")
    try:
        expires = float(int(str(expires_on)))
    except ValueError:
        expires = None
    if not isinstance(token, str) or not token or expires is None:
        raise ProviderUnavailable("the agent's token service sent an unreadable answer",
                                  "check the agent's log: journalctl -u entra-agent")
    left = expires - SystemClock().time()
    return ResourceToken(resource=resource, access_token=token,
                         token_type=_clean(str(body.get("token_type") or "Bearer")),
                         expires_on=expires, seconds_left=left, from_cache=True)


def _clean(text: str) -> str:
    """Text from another process, fit for a terminal: no control characters, one line."""
    text = " ".join(text.split())[:500]
    return "".join(c if c.isprintable() else "?" for c in text)


def print_token(token: ResourceToken, profile: str, output: str) -> None:
    """Print like ``get-token`` does: the bare token to a pipe, JSON with ``--output json``."""
    expires_in = max(0, int(token.seconds_left))
    if output == "json":
        print(json.dumps({
            "access_token": token.access_token,
            "token_type": token.token_type,
            "expires_at": report.iso(token.expires_on),
            "expires_in": expires_in,
            "resource": token.resource,
            "profile": profile,
        }, indent=2))
        return
    if sys.stdout.isatty():
        from agent.ui import format_duration
        print(f"Access token for {token.resource} is valid for {format_duration(expires_in)} "
              "(not shown on a terminal: pipe it, or use --output json)", file=sys.stderr)
        return
    print(token.access_token)


def get_token_command(resource: str, profile: str, output: str) -> int:
    """The ``get-token --resource`` command; returns the exit code."""
    token, source = get_resource_token(resource, profile)
    log.info("token for %s from the %s", resource, source)
    print_token(token, profile, output)
    return 0
