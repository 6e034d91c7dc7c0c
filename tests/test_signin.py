"""The RFC 8628 client against the local identity provider, over real HTTP.

The client and the provider share one FakeClock, so polling intervals and
code lifetimes pass instantly and deterministically.
"""

from __future__ import annotations

import logging
import random
import threading

import pytest
import requests

from agent.auth.devicecode import DEFAULT_INTERVAL
from agent.auth.endpoints import CLOUDS, discover, entra_endpoints, require_secure
from agent.auth.errors import (
    AuthError,
    AuthorizationDeclined,
    BadVerificationCode,
    CodeExpired,
    DiscoveryError,
    InsecureEndpoint,
    InvalidClient,
    InvalidGrant,
    InvalidScope,
    ProviderUnavailable,
    SignInRequired,
    UnauthorizedClient,
)
from agent.auth.tokens import TokenClient, decode_id_token_claims
from agent.backoff import DEVICE_CODE_POLL
from agent.clock import FakeClock
from agent.errors import CancelledError, UsageError
from agent.profiles import Profile
from agent.sandbox.idp import Fault, IdentityProvider
from agent.tokenstore import TokenStore

CLIENT_ID = "00000000-0000-0000-0000-000000000001"


@pytest.fixture
def clock():
    return FakeClock()


def make_idp(clock, **options):
    return IdentityProvider(clock, **options).start()


@pytest.fixture
def provider(clock):
    idp = make_idp(clock)
    yield idp
    idp.stop()


def make_client(idp, clock, tmp_path, **profile_options):
    options = dict(name="default", client_id=CLIENT_ID, tenant_id="organizations",
                   authority_host=idp.base_url)
    options.update(profile_options)
    profile = Profile(**options).validated()
    return TokenClient(profile, store=TokenStore(tmp_path / "tokens"), clock=clock)


def sign_in(client, idp, approve_after_polls=None, **poll_options):
    authorization = client.request_code()
    if approve_after_polls == 0:
        idp.approve(authorization.user_code)
    return authorization, client.poll(authorization, **poll_options)


# -- endpoints --------------------------------------------------------------

@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_entra_endpoints_for_each_cloud(cloud):
    endpoints = entra_endpoints("contoso.onmicrosoft.com", cloud)
    assert endpoints.device_authorization_endpoint == \
        f"{CLOUDS[cloud]}/contoso.onmicrosoft.com/oauth2/v2.0/devicecode"
    assert endpoints.token_endpoint == f"{CLOUDS[cloud]}/contoso.onmicrosoft.com/oauth2/v2.0/token"


@pytest.mark.parametrize("tenant", ["common", "Organizations", "consumers",
                                    "72f988bf-86f1-41af-91ab-2d7cd011db47", "contoso.com"])
def test_valid_tenants(tenant):
    assert entra_endpoints(tenant).token_endpoint.endswith("/oauth2/v2.0/token")


@pytest.mark.parametrize("tenant", ["", "not a tenant", "72f988bf-86f1", "../etc", "contoso"])
def test_bad_tenant_is_a_clear_error(tenant):
    with pytest.raises(UsageError, match="tenant id .* is not a GUID, a domain"):
        entra_endpoints(tenant)


@pytest.mark.parametrize("url", ["http://login.example.com/x", "http://10.0.0.5:8080/", "ftp://x/"])
def test_plain_http_refused_off_loopback(url):
    with pytest.raises(InsecureEndpoint) as info:
        require_secure(url)
    assert "https://" in str(info.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/t", "http://localhost/t", "http://[::1]:80/t",
                                 "https://login.microsoftonline.com/x"])
def test_https_or_loopback_allowed(url):
    assert require_secure(url) == url


def test_oidc_discovery(provider):
    session = requests.Session()
    endpoints = discover(provider.issuer("contoso"), session)
    assert endpoints.device_authorization_endpoint == f"{provider.base_url}/contoso/oauth2/v2.0/devicecode"
    assert endpoints.token_endpoint == f"{provider.base_url}/contoso/oauth2/v2.0/token"
    assert provider.counts["discovery"] == 1


def test_discovery_of_a_missing_issuer_says_what_to_check(provider):
    with pytest.raises(DiscoveryError, match="no OpenID configuration"):
        discover(provider.base_url + "/no/such/issuer", requests.Session())


def test_issuer_profile_signs_in_through_discovery(provider, clock, tmp_path):
    provider.dialect = "oidc"
    client = make_client(provider, clock, tmp_path, tenant_id=None, authority_host=None,
                         issuer=provider.issuer("organizations"), client_id="plain-client")
    provider.auto_approve_after_polls = 0
    authorization, tokens = sign_in(client, provider)
    assert authorization.verification_uri_complete.endswith("?code=" + authorization.user_code)
    assert tokens.account == "ada@contoso.example"


# -- the device authorization response ----------------------------------------

def test_offline_access_and_oidc_scopes_are_requested(provider, clock, tmp_path):
    client = make_client(provider, clock, tmp_path)
    client.request_code()
    assert provider.last_scope.split() == ["https://graph.microsoft.com/User.Read", "openid",
                                           "profile", "offline_access"]


def test_offline_access_can_be_left_out(provider, clock, tmp_path):
    client = make_client(provider, clock, tmp_path, offline_access=False)
    client.request_code()
    assert "offline_access" not in provider.last_scope.split()
    provider.auto_approve_after_polls = 0
    tokens = client.poll(client.request_code())
    assert tokens.refresh_token is None
    clock.advance(3600)
    with pytest.raises(SignInRequired, match="cannot be refreshed"):
        client.acquire_silent()


def test_entra_v1_verification_url_and_string_numbers(clock, tmp_path):
    with IdentityProvider(clock, dialect="entra_v1", interval=7, code_lifetime=600) as idp:
        authorization = make_client(idp, clock, tmp_path).request_code()
        assert authorization.verification_uri == idp.verification_uri
    assert (authorization.interval, authorization.expires_in) == (7, 600)


def test_missing_user_code_is_an_error_with_the_providers_description(provider, clock, tmp_path):
    provider.queue_devicecode_faults(Fault.error("invalid_client", "App is not a public client",
                                                 aadsts=7000218))
    with pytest.raises(InvalidClient) as info:
        make_client(provider, clock, tmp_path).request_code()
    text = str(info.value)
    assert "AADSTS7000218" in text and "Allow public client flows" in text
    assert "\n" not in text


def test_malformed_device_authorization_is_not_a_crash(provider, clock, tmp_path):
    provider.queue_devicecode_faults(Fault.malformed('{"device_code": "x"}'))
    with pytest.raises(AuthError, match="left out user_code, verification_uri"):
        make_client(provider, clock, tmp_path).request_code()


def test_devicecode_5xx_is_unavailable(provider, clock, tmp_path):
    provider.queue_devicecode_faults(Fault.status(503))
    with pytest.raises(ProviderUnavailable, match="HTTP 503"):
        make_client(provider, clock, tmp_path).request_code()


# -- polling outcomes ---------------------------------------------------------

def test_pending_then_approved(provider, clock, tmp_path):
    provider.auto_approve_after_polls = 4
    client = make_client(provider, clock, tmp_path)
    start = clock.monotonic()
    authorization, tokens = sign_in(client, provider)
    assert tokens.account == "ada@contoso.example"
    assert provider.counts["token.device_code"] == 5
    # Every poll came a full interval after the previous one.
    assert clock.monotonic() - start == pytest.approx(5 * DEFAULT_INTERVAL)
    saved = client.store.load("default")
    assert saved["access_token"] == tokens.access_token


def test_poll_count_never_exceeds_what_the_interval_allows(clock, tmp_path):
    with IdentityProvider(clock, interval=5, code_lifetime=600) as idp:
        client = make_client(idp, clock, tmp_path)
        authorization = client.request_code()
        start = clock.monotonic()
        with pytest.raises(CodeExpired):
            client.poll(authorization, tick=1.0)
        elapsed = clock.monotonic() - start
        requests_made = idp.counts["token.device_code"]
    # A pending minute allows 12 polls at a 5 s interval; over 600 s, 120.
    assert requests_made <= elapsed / 5
    assert requests_made >= elapsed / 5 - 1
    times = [r["at"] for r in idp.token_requests]
    assert all(b - a >= 5 for a, b in zip(times, times[1:]))


def test_slow_down_raises_the_interval_for_good(provider, clock, tmp_path):
    provider.queue_token_faults(Fault.slow_down(), Fault.error("authorization_pending"),
                                Fault.slow_down())
    provider.auto_approve_after_polls = 5
    client = make_client(provider, clock, tmp_path)
    sign_in(client, provider)
    times = [r["at"] for r in provider.token_requests]
    gaps = [round(b - a) for a, b in zip(times, times[1:])]
    # 5 s at first; +5 after the first slow_down, kept; +5 again after the second.
    assert gaps[:3] == [10, 10, 15]
    assert all(g == 15 for g in gaps[3:])


def test_repeated_slow_down_suspects_the_clock(provider, clock, tmp_path, caplog):
    provider.queue_token_faults(*[Fault.slow_down()] * 3)
    provider.auto_approve_after_polls = 3
    with caplog.at_level(logging.WARNING):
        sign_in(make_client(provider, clock, tmp_path), provider)
    assert "is this device's clock right?" in caplog.text


@pytest.mark.parametrize("dialect,error", [("entra_v2", "authorization_declined"), ("oidc", "access_denied")])
def test_declined(clock, tmp_path, dialect, error):
    with IdentityProvider(clock, dialect=dialect) as idp:
        client = make_client(idp, clock, tmp_path)
        authorization = client.request_code()
        idp.decline(authorization.user_code)
        with pytest.raises(AuthorizationDeclined) as info:
            client.poll(authorization)
    assert error in str(info.value)
    assert client.store.load("default") is None


def test_expired_on_the_server(provider, clock, tmp_path):
    client = make_client(provider, clock, tmp_path)
    authorization = client.request_code()
    provider.expire(authorization.user_code)
    with pytest.raises(CodeExpired, match="expired"):
        client.poll(authorization)


def test_expiry_on_the_local_monotonic_clock(clock, tmp_path):
    with IdentityProvider(clock, code_lifetime=60) as idp:
        client = make_client(idp, clock, tmp_path)
        authorization = client.request_code()
        clock.jump_wall(-3600)          # an NTP step must not matter
        with pytest.raises(CodeExpired):
            client.poll(authorization)
        assert idp.counts["token.device_code"] <= 60 / 5


@pytest.mark.parametrize("fault,exc,words", [
    (Fault.error("bad_verification_code"), BadVerificationCode, "new code"),
    (Fault.error("invalid_grant", aadsts=70000), InvalidGrant, "sign in again"),
    (Fault.error("invalid_client", aadsts=7000218), InvalidClient, "Allow public client flows"),
    (Fault.error("invalid_scope", aadsts=70011), InvalidScope, "--scope"),
    (Fault.error("unauthorized_client", aadsts=700016), UnauthorizedClient, "--client-id"),
    (Fault.error("invalid_request", aadsts=53003), AuthError, "Conditional Access"),
    (Fault.error("invalid_grant", aadsts=65001), InvalidGrant, "consent"),
    (Fault.error("invalid_request", aadsts=90002), AuthError, "--tenant-id"),
    (Fault.error("invalid_request", aadsts=500011), AuthError, "--scope"),
])
def test_wire_errors_are_clear(provider, clock, tmp_path, fault, exc, words):
    provider.queue_token_faults(fault)
    client = make_client(provider, clock, tmp_path)
    with pytest.raises(exc) as info:
        sign_in(client, provider)
    assert words in str(info.value)
    assert "Trace ID" not in str(info.value)


@pytest.mark.parametrize("fault", [Fault.status(503), Fault.status(500, "oops"), Fault.drop(),
                                   Fault.malformed(), Fault.status(429, headers={"Retry-After": "1"})])
def test_transient_faults_are_retried_with_growing_waits(provider, clock, tmp_path, fault):
    provider.queue_token_faults(fault, fault, fault)
    provider.auto_approve_after_polls = 0
    client = make_client(provider, clock, tmp_path)
    _, tokens = sign_in(client, provider)
    assert tokens.access_token
    times = [r["at"] for r in provider.token_requests]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # The shared policy's growing, jittered windows; never below the interval.
    # (1e-6: the gaps are differences of float clock readings: 4.999999999999886.)
    assert len(gaps) == 3 and all(g >= DEFAULT_INTERVAL - 1e-6 for g in gaps)
    assert all(g <= max(DEFAULT_INTERVAL, DEVICE_CODE_POLL.window(n)) + 0.5
               for n, g in enumerate(gaps, start=1))


def test_poll_retry_waits_are_jittered_never_below_the_interval_and_capped():
    """RFC 8628 §3.5: a client never polls faster than the interval, even after errors."""
    from agent.auth.devicecode import MAX_RETRY_WAIT, _retry_wait

    rng = random.Random(8)
    for interval in (5.0, 10.0, 90.0):
        waits = [_retry_wait(interval, n, rng) for n in range(1, 2000)]
        assert all(interval <= w <= max(interval, MAX_RETRY_WAIT) for w in waits)
    fleet = [_retry_wait(5.0, 3, rng) for _ in range(1000)]
    assert len({round(w, 1) for w in fleet}) > 200          # a fleet does not poll in step


def test_timeouts_are_retried(clock, tmp_path):
    with IdentityProvider(clock) as idp:
        idp.queue_token_faults(Fault.delay(1.0))
        idp.auto_approve_after_polls = 0
        client = make_client(idp, clock, tmp_path)
        client.timeout = 0.2
        _, tokens = sign_in(client, idp)
    assert tokens.access_token


def test_network_down_until_expiry_gives_expired(clock, tmp_path):
    idp = IdentityProvider(clock, code_lifetime=120).start()
    client = make_client(idp, clock, tmp_path)
    authorization = client.request_code()
    idp.stop()                  # connection refused from now on
    with pytest.raises(CodeExpired):
        client.poll(authorization)


def test_cancel_stops_polling_at_once(provider, clock, tmp_path):
    client = make_client(provider, clock, tmp_path)
    authorization = client.request_code()
    cancel = threading.Event()
    calls = []

    def on_wait(left):
        calls.append(left)
        if len(calls) == 3:
            cancel.set()

    with pytest.raises(CancelledError, match="cancelled by user"):
        client.poll(authorization, cancel=cancel, on_wait=on_wait, tick=1.0)
    assert provider.counts["token.device_code"] == 0    # 3 ticks < one 5 s interval


def test_cancel_from_another_thread_with_real_time(tmp_path):
    with IdentityProvider(interval=30) as idp:
        from agent.clock import SystemClock
        client = make_client(idp, SystemClock(), tmp_path)
        authorization = client.request_code()
        cancel = threading.Event()
        threading.Timer(0.1, cancel.set).start()
        with pytest.raises(CancelledError):
            client.poll(authorization, cancel=cancel)
        assert idp.counts["token.device_code"] == 0


# -- tokens: reuse, refresh, rotation, revocation -------------------------------

def test_silent_reuse_makes_no_request(provider, clock, tmp_path):
    provider.auto_approve_after_polls = 0
    client = make_client(provider, clock, tmp_path)
    _, first = sign_in(client, provider)
    before = sum(provider.counts.values())
    again = make_client(provider, clock, tmp_path).acquire_silent()     # a new process, same file
    assert again.access_token == first.access_token
    assert sum(provider.counts.values()) == before


def test_refresh_with_rotation_stores_the_new_refresh_token_first(provider, clock, tmp_path):
    provider.auto_approve_after_polls = 0
    client = make_client(provider, clock, tmp_path)
    _, first = sign_in(client, provider)
    clock.advance(3600 - 299)                       # within 5 minutes of expiry
    second = client.acquire_silent()
    assert provider.counts["token.refresh_token"] == 1
    assert second.access_token != first.access_token
    assert second.refresh_token != first.refresh_token
    assert client.store.load("default")["refresh_token"] == second.refresh_token
    # The rotated-away refresh token is dead at the provider.
    r = requests.post(client.endpoints().token_endpoint, data={
        "grant_type": "refresh_token", "client_id": CLIENT_ID,
        "refresh_token": first.refresh_token, "scope": "openid"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_not_due_yet_is_not_refreshed(provider, clock, tmp_path):
    provider.auto_approve_after_polls = 0
    client = make_client(provider, clock, tmp_path)
    sign_in(client, provider)
    clock.advance(3600 - 301)
    client.acquire_silent()
    assert provider.counts["token.refresh_token"] == 0


def test_entra_refresh_in_is_honoured(clock, tmp_path):
    with IdentityProvider(clock, refresh_in=1800, auto_approve_after_polls=0) as idp:
        client = make_client(idp, clock, tmp_path)
        _, tokens = sign_in(client, idp)
        assert tokens.refresh_due_in(clock) == pytest.approx(1800)
        clock.advance(1801)
        client.acquire_silent()
        assert idp.counts["token.refresh_token"] == 1


def test_wall_clock_jump_does_not_expire_a_token_in_memory(provider, clock, tmp_path):
    provider.auto_approve_after_polls = 0
    client = make_client(provider, clock, tmp_path)
    sign_in(client, provider)
    clock.jump_wall(+10 * 86400)                     # NTP sync after a boot without RTC
    client.acquire_silent()
    assert provider.counts["token.refresh_token"] == 0


def test_revoked_refresh_token_means_sign_in_again(provider, clock, tmp_path):
    provider.auto_approve_after_polls = 0
    client = make_client(provider, clock, tmp_path)
    sign_in(client, provider)
    provider.revoke_refresh_tokens()
    clock.advance(3600)
    with pytest.raises(SignInRequired) as info:
        client.acquire_silent()
    assert "AADSTS50173" in str(info.value)
    assert "entra-auth-cli get-token" in str(info.value)


def test_network_error_on_refresh_keeps_the_current_token(provider, clock, tmp_path):
    provider.auto_approve_after_polls = 0
    client = make_client(provider, clock, tmp_path)
    _, first = sign_in(client, provider)
    clock.advance(3600 - 100)
    provider.queue_token_faults(Fault.status(503))
    assert client.acquire_silent().access_token == first.access_token
    clock.advance(200)                               # now expired
    provider.queue_token_faults(Fault.drop())
    with pytest.raises(ProviderUnavailable):
        client.acquire_silent()
    assert client.acquire_silent().access_token != first.access_token


def test_no_saved_token_says_how_to_sign_in(provider, clock, tmp_path):
    with pytest.raises(SignInRequired, match="entra-auth-cli get-token --flow device-code --profile default"):
        make_client(provider, clock, tmp_path).acquire_silent()


def test_two_clients_share_one_rotation(provider, clock, tmp_path):
    """The CLI and the agent refreshing at once must not burn the rotating token."""
    provider.auto_approve_after_polls = 0
    first = make_client(provider, clock, tmp_path)
    sign_in(first, provider)
    second = make_client(provider, clock, tmp_path)
    clock.advance(3600)
    results = []
    threads = [threading.Thread(target=lambda c=c: results.append(c.acquire_silent()))
               for c in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 2
    assert results[0].access_token == results[1].access_token
    assert provider.counts["token.refresh_token"] == 1


def test_id_token_claims_are_decoded_not_verified():
    import base64
    import json
    body = base64.urlsafe_b64encode(json.dumps({"preferred_username": "a@b.c", "tid": "t"}).encode()).decode().rstrip("=")
    assert decode_id_token_claims(f"xx.{body}.sig") == {"preferred_username": "a@b.c", "tid": "t"}
    assert decode_id_token_claims("garbage") == {}
    assert decode_id_token_claims("a.!!!.b") == {}


# -- secrets ------------------------------------------------------------------

def test_no_secret_in_logs_or_errors(provider, clock, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    provider.auto_approve_after_polls = 2
    client = make_client(provider, clock, tmp_path)
    _, tokens = sign_in(client, provider)
    texts = [caplog.text, repr(tokens), repr(client.request_code())]
    clock.advance(3600)
    client.acquire_silent()
    provider.revoke_refresh_tokens()
    clock.advance(3600)
    with pytest.raises(SignInRequired) as info:
        client.acquire_silent()
    texts += [str(info.value), repr(info.value), caplog.text]
    secrets = provider.issued_secrets()
    assert len(secrets) >= 4
    for secret in secrets:
        for text in texts:
            assert secret not in text


def test_a_token_for_other_scopes_does_not_replace_the_profiles_token(provider, clock, tmp_path):
    """get-token --scope X must not hand the agent an X token, nor lose a rotated refresh token."""
    provider.auto_approve_after_polls = 0
    client = make_client(provider, clock, tmp_path)
    _, main_token = sign_in(client, provider)
    other = client.acquire_silent(scopes=["https://storage.azure.com/user_impersonation"])
    assert other.access_token != main_token.access_token
    assert provider.counts["token.refresh_token"] == 1
    agent = make_client(provider, clock, tmp_path)           # the agent, another process
    assert agent.acquire_silent().access_token == main_token.access_token
    assert provider.counts["token.refresh_token"] == 1       # no request: still valid
    clock.advance(3600)                                      # now refresh with the rotated token
    refreshed = agent.acquire_silent()
    assert refreshed.covers(["https://graph.microsoft.com/User.Read"])
    assert provider.counts["token.refresh_token"] == 2


def test_a_sign_in_for_other_scopes_is_refreshed_to_the_profiles_scopes(provider, clock, tmp_path):
    provider.auto_approve_after_polls = 0
    client = make_client(provider, clock, tmp_path)
    authorization = client.request_code(["api://telemetry/.default"])
    client.poll(authorization)
    tokens = make_client(provider, clock, tmp_path).acquire_silent()
    assert provider.counts["token.refresh_token"] == 1
    assert "https://graph.microsoft.com/User.Read" in provider.last_scope.split()
    assert tokens.covers(["https://graph.microsoft.com/User.Read"])
