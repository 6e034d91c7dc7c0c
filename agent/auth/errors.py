"""One exception per OAuth wire error, with hints for Entra's AADSTS codes.

Low-level failures (a refused connection, a 503, an HTML captive portal) are
translated once, here, at the edge (:func:`error_from_answer`,
:func:`unavailable`), so callers see one :class:`AuthError` family whose
``str()`` is one line a person can act on. No message ever carries a token,
a device code or a refresh token: only the provider's error code and the
first sentence of its description.
"""

from __future__ import annotations

import re
from typing import Any

from agent.errors import EXIT_NETWORK, EXIT_SIGN_IN, EXIT_USAGE, AgentError
from agent.textsafe import clean

__all__ = [
    "AuthError", "ProviderUnavailable", "InsecureEndpoint", "DiscoveryError",
    "OAuthError", "AuthorizationPending", "SlowDown", "AuthorizationDeclined",
    "CodeExpired", "BadVerificationCode", "InvalidGrant", "InvalidClient",
    "InvalidScope", "InvalidRequest", "UnauthorizedClient", "UnsupportedGrantType",
    "SignInRequired", "UnusableAnswer", "RedirectRefused", "AnswerTooLarge",
    "AnswerTooSlow", "InvalidAnswer", "AADSTS_HINTS", "REAUTH_AADSTS",
    "error_from_answer", "unavailable", "origin",
]


class AuthError(AgentError):
    """Root of every sign-in failure."""


class ProviderUnavailable(AuthError, ConnectionError):
    """The identity provider cannot be reached or answered 5xx (transient)."""

    exit_code = EXIT_NETWORK


class UnusableAnswer(ProviderUnavailable):
    """The provider answered, but with something this client will not use
    (exit 5, like an unreachable provider: nothing local is wrong)."""


class RedirectRefused(UnusableAnswer):
    """A 3xx answer: identity-provider requests never follow redirects, so a
    device code or refresh token never travels to where a Location points."""


class AnswerTooLarge(UnusableAnswer):
    """The answer is larger than any JSON answer of the flow can be
    (:data:`agent.auth.http.MAX_BODY`), or inflates past it."""


class AnswerTooSlow(UnusableAnswer):
    """The answer did not arrive whole within the request's overall deadline."""


class InvalidAnswer(UnusableAnswer):
    """JSON whose fields have the wrong types or values (RFC 8628 §3.2,
    RFC 6749 §5.1): a provider fault, reported instead of stored."""


class InsecureEndpoint(AuthError, ValueError):
    """An endpoint is plain http:// on a non-loopback host."""

    exit_code = EXIT_USAGE


class DiscoveryError(AuthError):
    """The OpenID configuration is missing, unreadable or lacks an endpoint."""


class SignInRequired(AuthError):
    """No usable token: a person has to sign in (again)."""

    exit_code = EXIT_SIGN_IN


class OAuthError(AuthError):
    """An error response of RFC 6749 §5.2 / RFC 8628 §3.5 (``error`` field)."""

    error = ""

    def __init__(self, message: str, hint: str | None = None, *,
                 description: str = "", aadsts: int | None = None,
                 status: int | None = None) -> None:
        super().__init__(message, hint)
        self.description = description
        self.aadsts = aadsts
        self.status = status


class AuthorizationPending(OAuthError):
    """RFC 8628 §3.5: the person has not finished yet; keep polling."""

    error = "authorization_pending"


class SlowDown(OAuthError):
    """RFC 8628 §3.5: still pending, and poll 5 seconds slower from now on."""

    error = "slow_down"


class AuthorizationDeclined(OAuthError):
    """RFC 8628 §3.5 ``access_denied`` (Entra: ``authorization_declined``)."""

    error = "access_denied"
    exit_code = EXIT_SIGN_IN


class CodeExpired(OAuthError):
    """RFC 8628 §3.5 ``expired_token``: the device code's lifetime is over."""

    error = "expired_token"
    exit_code = EXIT_SIGN_IN


class BadVerificationCode(OAuthError):
    """The device code is not known to the provider."""

    error = "bad_verification_code"
    exit_code = EXIT_SIGN_IN


class InvalidGrant(OAuthError):
    """RFC 6749 §5.2 ``invalid_grant``: the code or refresh token is no good."""

    error = "invalid_grant"
    exit_code = EXIT_SIGN_IN


class InvalidClient(OAuthError):
    """RFC 6749 §5.2 ``invalid_client``: the app registration refuses us."""

    error = "invalid_client"


class InvalidScope(OAuthError):
    """RFC 6749 §5.2 ``invalid_scope``."""

    error = "invalid_scope"


class InvalidRequest(OAuthError):
    """RFC 6749 §5.2 ``invalid_request``."""

    error = "invalid_request"


class UnauthorizedClient(OAuthError):
    """RFC 6749 §5.2 ``unauthorized_client``."""

    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    """RFC 6749 §5.2 ``unsupported_grant_type``."""

    error = "unsupported_grant_type"


_ERROR_CLASSES: dict[str, type[OAuthError]] = {
    cls.error: cls for cls in (
        AuthorizationPending, SlowDown, AuthorizationDeclined, CodeExpired,
        BadVerificationCode, InvalidGrant, InvalidClient, InvalidScope,
        InvalidRequest, UnauthorizedClient, UnsupportedGrantType,
    )
}
# Entra's spelling of RFC 8628's access_denied.
_ERROR_CLASSES["authorization_declined"] = AuthorizationDeclined

_SIGN_IN_AGAIN = "sign in again: entra-auth-cli get-token --flow device-code"

# Hints for the AADSTS codes people actually meet on a device. The code is
# in every Entra error_description ("AADSTS7000218: ...").
AADSTS_HINTS: dict[int, str] = {
    7000218: ("enable 'Allow public client flows' on the app registration "
              "(Authentication blade, or: az ad app update --id <client-id> "
              "--is-fallback-public-client true)"),
    700025: ("the app is a public client, so no client secret may be sent: "
             "remove the secret from the request or the app registration"),
    700016: ("no app with this client id in this tenant: check --client-id and "
             "--tenant-id, or make the app registration multi-tenant"),
    90002: "no such tenant: check --tenant-id (a GUID or a verified domain) and --cloud",
    50059: ("the provider could not tell the tenant: use --tenant-id with your "
            "tenant's GUID or domain instead of 'common'"),
    50194: ("the app is single-tenant: use its tenant id instead of 'common' or "
            "'organizations', or make the app registration multi-tenant"),
    65001: ("consent is missing for the requested permissions: an administrator "
            "must grant consent (Entra admin center > App registrations > API "
            "permissions > Grant admin consent)"),
    53003: ("a Conditional Access policy blocked this sign-in; the device code "
            "flow may be blocked by policy: ask an administrator to allow it for this app"),
    70043: f"the refresh token expired or was cut short by sign-in frequency policy: {_SIGN_IN_AGAIN}",
    700082: f"the refresh token expired after a long time unused: {_SIGN_IN_AGAIN}",
    50173: f"the refresh token was revoked (password change or admin action): {_SIGN_IN_AGAIN}",
    70000: f"the grant is no longer valid: {_SIGN_IN_AGAIN}",
    70018: "the code was not entered correctly: check it and try again",
    70019: "the verification code expired: request a new code",
    70020: "the device code expired before sign-in finished: request a new code",
    500011: ("the scope names an API this tenant does not have: check --scope "
             "(e.g. https://graph.microsoft.com/User.Read)"),
    70011: "a requested scope is not valid: check --scope",
    50076: "multi-factor authentication is required: sign in again and complete it",
    50020: ("the account is not in this tenant: sign in with an account of the "
            "tenant, or use a profile with --tenant-id common"),
    900144: "a required parameter is missing: check the profile's client id and scopes",
}

# AADSTS codes after which only a fresh sign-in helps.
REAUTH_AADSTS = frozenset({70043, 700082, 50173, 70000, 50076, 50078, 53003, 65001})

_AADSTS_RE = re.compile(r"AADSTS([0-9]{1,9})")
_AADSTS_NUMBER = re.compile(r"[0-9]{1,9}")
_DESCRIPTION_NOISE = re.compile(r"\s*(Trace ID|Correlation ID|Timestamp):.*$", re.S)


def first_sentence(description: str, limit: int = 200) -> str:
    """The provider's description cut to one short line (no trace ids),
    with control and bidi characters neutralised."""
    text = _DESCRIPTION_NOISE.sub("", description or "").strip()
    return clean(" ".join(text.split()), limit)


def error_from_body(body: dict[str, Any], status: int | None = None,
                    context: str = "the identity provider") -> OAuthError:
    """Build the exception for an RFC 6749 §5.2 error body."""
    # Server text enters here: error and description are cleaned (controls,
    # bidi, newlines neutralised; bounded) before anything can show them.
    raw_error = body.get("error")
    error = clean(raw_error, 64) if isinstance(raw_error, str) and raw_error else "unknown_error"
    raw_description = body.get("error_description")
    description = raw_description[:2000] if isinstance(raw_description, str) else ""
    aadsts: int | None = None
    codes = body.get("error_codes")
    first = codes[0] if isinstance(codes, list) and codes else None
    if type(first) is int and 0 < first < 10**9:
        aadsts = first
    elif isinstance(first, str) and _AADSTS_NUMBER.fullmatch(first):
        aadsts = int(first)
    elif match := _AADSTS_RE.search(description):
        aadsts = int(match.group(1))
    description = clean(description, 2000)
    cls = _ERROR_CLASSES.get(error, OAuthError)
    detail = first_sentence(description)
    message = f"{context} answered {error}"
    if detail:
        message += f": {detail}"
    # What happened to the code (declined, expired, mistyped) says more than
    # the generic AADSTS behind it; elsewhere the AADSTS hint is the better one.
    hint = _DEFAULT_HINTS.get(cls) if cls in _OUTCOME_CLASSES else None
    if hint is None and aadsts:
        hint = AADSTS_HINTS.get(aadsts)
    if hint is None:
        hint = _DEFAULT_HINTS.get(cls)
    exc = cls(message, hint, description=description, aadsts=aadsts, status=status)
    if cls is OAuthError:
        exc.error = error
    return exc


_DEFAULT_HINTS: dict[type[OAuthError], str] = {
    AuthorizationDeclined: "the sign-in was declined on the other device; run the command again to retry",
    CodeExpired: "Device code expired. Please try again",
    BadVerificationCode: "request a new code and try again",
    InvalidGrant: _SIGN_IN_AGAIN,
    InvalidClient: "check the client id, and that the app registration allows public client flows",
    InvalidScope: "check the profile's scopes (--scope)",
    UnauthorizedClient: "check that the app registration allows the device code flow for this client id",
    UnsupportedGrantType: "the provider does not support the device code grant for this client",
}


_OUTCOME_CLASSES = (AuthorizationDeclined, CodeExpired, BadVerificationCode)


def error_from_answer(status: int, body: Any, url: str,
                      context: str = "the identity provider") -> AuthError:
    """Translate a non-success HTTP answer (its status and parsed JSON body,
    or None when it was not JSON) into one exception.

    5xx, 429 and bodies that are not OAuth JSON (a captive portal, a proxy
    page) become :class:`ProviderUnavailable`, which callers retry.
    """
    if status >= 500 or status == 429:
        return unavailable(f"{context} answered HTTP {status}", url)
    if not isinstance(body, dict) or "error" not in body:
        return ProviderUnavailable(
            f"{context} sent an unreadable answer (HTTP {status}, not an OAuth JSON body) "
            f"from {_origin(url)}",
            "check the network: a proxy or captive portal may be in the way",
        )
    return error_from_body(body, status, context)


def unavailable(what: str, url: str | None = None) -> ProviderUnavailable:
    """A transient failure reaching *url*, phrased for a person."""
    where = f" at {_origin(url)}" if url else ""
    return ProviderUnavailable(
        f"{what}{where}",
        "check the network connection and the profile's tenant/issuer; retrying may help",
    )


def origin(url: str | None) -> str:
    """*url* without query or fragment (they could carry codes), cleaned for
    a terminal: ``scheme://host/path`` is enough to say where."""
    if not url:
        return "?"
    return clean(url.split("?", 1)[0].split("#", 1)[0], 200)


_origin = origin
