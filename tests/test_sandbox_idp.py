"""The local identity provider, over real HTTP: RFC 8628 §3.1–3.5 and Entra's shapes.

The client side of the project is tested against this server, so these tests
pin down that the server itself says what a real provider says.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading

import pytest
import requests

from agent.clock import FakeClock
from agent.sandbox._http import is_loopback
from agent.sandbox.idp import DEVICE_CODE_GRANT_TYPE, Fault, IdentityProvider

CLIENT = "00000000-0000-0000-0000-000000000001"
SCOPE = "openid profile offline_access User.Read"


def devicecode(idp: IdentityProvider, tenant: str = "organizations", **form: str) -> requests.Response:
    data = {"client_id": CLIENT, "scope": SCOPE}
    data.update(form)
    return requests.post(f"{idp.base_url}/{tenant}/oauth2/v2.0/devicecode", data=data, timeout=5)


def poll(idp: IdentityProvider, device_code: str, client_id: str = CLIENT, **kwargs) -> requests.Response:
    return requests.post(
        f"{idp.base_url}/organizations/oauth2/v2.0/token",
        data={"grant_type": DEVICE_CODE_GRANT_TYPE, "client_id": client_id, "device_code": device_code},
        timeout=kwargs.pop("timeout", 5),
        **kwargs,
    )


def refresh(idp: IdentityProvider, refresh_token: str, scope: str = SCOPE) -> requests.Response:
    return requests.post(
        f"{idp.base_url}/organizations/oauth2/v2.0/token",
        data={"grant_type": "refresh_token", "client_id": CLIENT, "refresh_token": refresh_token, "scope": scope},
        timeout=5,
    )


def sign_in(idp: IdentityProvider, scope: str = SCOPE) -> dict:
    code = devicecode(idp, scope=scope).json()
    idp.approve(code["user_code"])
    answer = poll(idp, code["device_code"])
    assert answer.status_code == 200, answer.text
    return answer.json()


def claims(jwt: str) -> dict:
    header, payload, _signature = jwt.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    assert decode(header) == {"alg": "none", "typ": "JWT"}
    return decode(payload)


# -- discovery ------------------------------------------------------------------


@pytest.mark.parametrize("tenant", ["organizations", "common", "consumers", "contoso.onmicrosoft.com",
                                    "72f988bf-86f1-41af-91ab-2d7cd011db47"])
def test_discovery_for_any_tenant_points_at_endpoints_that_answer(idp, tenant):
    doc = requests.get(f"{idp.issuer(tenant)}/.well-known/openid-configuration", timeout=5).json()
    assert doc["issuer"] == idp.issuer(tenant) == f"{idp.base_url}/{tenant}/v2.0"
    assert doc["device_authorization_endpoint"] == f"{idp.base_url}/{tenant}/oauth2/v2.0/devicecode"
    assert doc["token_endpoint"] == f"{idp.base_url}/{tenant}/oauth2/v2.0/token"
    assert DEVICE_CODE_GRANT_TYPE in doc["grant_types_supported"]
    # The advertised endpoints are the ones served.
    code = requests.post(doc["device_authorization_endpoint"], data={"client_id": CLIENT, "scope": SCOPE}, timeout=5)
    assert code.status_code == 200
    token = requests.post(doc["token_endpoint"], data={"grant_type": DEVICE_CODE_GRANT_TYPE, "client_id": CLIENT,
                                                       "device_code": code.json()["device_code"]}, timeout=5)
    assert token.json()["error"] == "authorization_pending"
    assert requests.get(doc["jwks_uri"], timeout=5).json() == {"keys": []}
    assert idp.counts["discovery"] == 1


def test_unknown_tenant_is_aadsts90002_when_tenants_are_listed(fake_clock):
    with IdentityProvider(clock=fake_clock, known_tenants={"contoso.example"}) as idp:
        bad = requests.get(f"{idp.issuer('fabrikam.example')}/.well-known/openid-configuration", timeout=5)
        assert bad.status_code == 400
        assert bad.json()["error_codes"] == [90002]
        assert devicecode(idp, tenant="fabrikam.example").json()["error_codes"] == [90002]
        assert devicecode(idp, tenant="Contoso.Example").status_code == 200


# -- RFC 8628 §3.1/§3.2: the device authorization response, per dialect -----------


def test_entra_v2_device_authorization_response(idp):
    answer = devicecode(idp)
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.json()
    assert set(body) == {"user_code", "device_code", "verification_uri", "expires_in", "interval", "message"}
    assert re.fullmatch(r"[A-Z0-9]{9}", body["user_code"])
    assert body["verification_uri"] == idp.verification_uri == f"{idp.base_url}/devicelogin"
    assert body["expires_in"] == 900 and body["interval"] == 5
    assert body["user_code"] in body["message"] and idp.verification_uri in body["message"]
    assert len(body["device_code"]) >= 40
    assert idp.pending_user_codes() == [body["user_code"]]
    assert idp.last_scope == SCOPE


def test_entra_v1_sends_verification_url_and_numbers_as_strings(fake_clock):
    with IdentityProvider(clock=fake_clock, dialect="entra_v1", interval=3, code_lifetime=600) as idp:
        body = devicecode(idp).json()
        assert "verification_uri" not in body and body["verification_url"] == idp.verification_uri
        assert body["expires_in"] == "600" and body["interval"] == "3"
        idp.approve()
        tokens = poll(idp, body["device_code"]).json()
        assert tokens["expires_in"] == "3600"


def test_oidc_dialect_sends_verification_uri_complete_and_rfc_codes(fake_clock):
    with IdentityProvider(clock=fake_clock, dialect="oidc") as idp:
        body = devicecode(idp).json()
        assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", body["user_code"])
        assert body["verification_uri_complete"] == f"{idp.verification_uri}?code={body['user_code']}"
        pending = poll(idp, body["device_code"]).json()
        # A plain RFC 6749 §5.2 error body, no Entra extras.
        assert set(pending) == {"error", "error_description"}
        assert pending["error"] == "authorization_pending"


def test_unknown_dialect_is_refused():
    with pytest.raises(ValueError, match="dialect"):
        IdentityProvider(dialect="entra_v3")


def test_user_codes_are_unique(idp):
    codes = {devicecode(idp).json()["user_code"] for _ in range(30)}
    assert len(codes) == 30


@pytest.mark.parametrize(
    ("form", "error", "aadsts"),
    [
        ({"client_id": ""}, "invalid_request", 900144),
        ({"scope": ""}, "invalid_scope", 70011),
        ({"scope": "   "}, "invalid_scope", 70011),
    ],
)
def test_device_authorization_request_errors(idp, form, error, aadsts):
    answer = devicecode(idp, **form)
    assert answer.status_code == 400
    assert answer.json()["error"] == error
    assert answer.json()["error_codes"] == [aadsts]
    assert idp.pending_user_codes() == []


def test_unknown_client_id_is_aadsts700016(fake_clock):
    with IdentityProvider(clock=fake_clock, known_client_ids={CLIENT}) as idp:
        answer = devicecode(idp, client_id="11111111-1111-1111-1111-111111111111")
        assert answer.status_code == 400
        assert answer.json()["error"] == "unauthorized_client"
        assert answer.json()["error_description"].startswith("AADSTS700016: ")
        assert devicecode(idp).status_code == 200


# -- RFC 8628 §3.4/§3.5: polling outcomes ------------------------------------------


def test_entra_error_body_shape(idp):
    body = poll(idp, devicecode(idp).json()["device_code"]).json()
    assert body["error"] == "authorization_pending"
    assert body["error_codes"] == [70016]
    first, *rest = body["error_description"].split("\r\n")
    assert first.startswith("AADSTS70016: ")
    assert rest[0] == f"Trace ID: {body['trace_id']}"
    assert rest[1] == f"Correlation ID: {body['correlation_id']}"
    assert rest[2] == f"Timestamp: {body['timestamp']}"


def test_pending_then_approved_returns_tokens_once(idp, fake_clock):
    code = devicecode(idp).json()
    for _ in range(3):
        assert poll(idp, code["device_code"]).json()["error"] == "authorization_pending"
        fake_clock.advance(5)
    assert idp.approve() == code["user_code"]
    assert idp.pending_user_codes() == []
    answer = poll(idp, code["device_code"])
    assert answer.status_code == 200
    tokens = answer.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"] == SCOPE
    assert tokens["expires_in"] == tokens["ext_expires_in"] == 3600
    assert "refresh_in" not in tokens
    assert idp.validate_access_token(tokens["access_token"]) == "ada@contoso.example"
    id_claims = claims(tokens["id_token"])
    assert id_claims["aud"] == CLIENT
    assert id_claims["preferred_username"] == "ada@contoso.example"
    assert id_claims["iss"] == idp.issuer(id_claims["tid"])
    assert id_claims["exp"] - id_claims["iat"] == 3600 and id_claims["iat"] == int(fake_clock.time())
    assert {"sub", "oid", "name"} <= set(id_claims)
    # A device code redeems once.
    again = poll(idp, code["device_code"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert idp.counts["token.device_code"] == 5
    assert [r["status"] for r in idp.token_requests] == [400, 400, 400, 200, 400]
    assert set(idp.issued_secrets()) >= {code["device_code"], tokens["access_token"], tokens["refresh_token"],
                                         tokens["id_token"]}


def test_scope_decides_refresh_and_id_tokens(idp):
    tokens = sign_in(idp, scope="User.Read")
    assert "refresh_token" not in tokens and "id_token" not in tokens
    tokens = sign_in(idp, scope="User.Read offline_access")
    assert "refresh_token" in tokens and "id_token" not in tokens


def test_approve_as_another_account(idp):
    code = devicecode(idp).json()
    idp.approve(code["user_code"].lower(), account="grace@contoso.example")
    tokens = poll(idp, code["device_code"]).json()
    assert idp.validate_access_token(tokens["access_token"]) == "grace@contoso.example"
    assert claims(tokens["id_token"])["preferred_username"] == "grace@contoso.example"


def test_approve_picks_the_code_asked_for(idp):
    first = devicecode(idp).json()
    second = devicecode(idp).json()
    assert idp.pending_user_codes() == [first["user_code"], second["user_code"]]
    idp.approve(first["user_code"])
    assert poll(idp, first["device_code"]).status_code == 200
    assert poll(idp, second["device_code"]).json()["error"] == "authorization_pending"
    with pytest.raises(LookupError):
        idp.approve(first["user_code"])       # already used
    with pytest.raises(LookupError):
        idp.approve("NOSUCHCOD")


def test_controls_without_a_pending_code_raise_lookup_error(idp):
    for control in (idp.approve, idp.decline, idp.expire):
        with pytest.raises(LookupError):
            control()


@pytest.mark.parametrize(("dialect", "error"), [("entra_v2", "authorization_declined"), ("entra_v1", "authorization_declined"),
                                                ("oidc", "access_denied")])
def test_declined(fake_clock, dialect, error):
    with IdentityProvider(clock=fake_clock, dialect=dialect) as idp:
        code = devicecode(idp).json()
        idp.decline()
        answer = poll(idp, code["device_code"])
        assert answer.status_code == 400 and answer.json()["error"] == error
        assert idp.pending_user_codes() == []


def test_code_expires_on_the_clock(idp, fake_clock):
    code = devicecode(idp).json()
    fake_clock.advance(899)
    assert poll(idp, code["device_code"]).json()["error"] == "authorization_pending"
    fake_clock.advance(1)
    body = poll(idp, code["device_code"]).json()
    assert body["error"] == "expired_token" and body["error_codes"] == [70020]
    assert idp.pending_user_codes() == []
    with pytest.raises(LookupError):
        idp.approve(code["user_code"])


def test_expire_now(idp):
    code = devicecode(idp).json()
    assert idp.expire() == code["user_code"]
    assert poll(idp, code["device_code"]).json()["error"] == "expired_token"


def test_unknown_device_code_and_wrong_client(idp):
    assert poll(idp, "not-a-code").json()["error"] == "bad_verification_code"
    code = devicecode(idp).json()
    idp.approve()
    # RFC 6749 §4.1.3 spirit: a code is bound to the client it was issued to.
    assert poll(idp, code["device_code"], client_id="someone-else").json()["error"] == "bad_verification_code"
    missing = poll(idp, "")
    assert missing.json()["error"] == "invalid_request" and missing.json()["error_codes"] == [900144]
    assert poll(idp, code["device_code"]).status_code == 200


def test_unsupported_grant_type(idp):
    answer = requests.post(f"{idp.base_url}/common/oauth2/v2.0/token",
                           data={"grant_type": "password", "client_id": CLIENT, "username": "u", "password": "p"},
                           timeout=5)
    assert answer.status_code == 400 and answer.json()["error"] == "unsupported_grant_type"
    assert idp.counts["token.other"] == 1


def test_public_client_flows_off_is_aadsts7000218(fake_clock):
    with IdentityProvider(clock=fake_clock, public_client_flows=False) as idp:
        code = devicecode(idp).json()       # Entra hands out the code, then refuses the poll
        idp.approve()
        answer = poll(idp, code["device_code"])
        assert answer.status_code == 401
        assert answer.json()["error"] == "invalid_client"
        assert answer.json()["error_description"].startswith("AADSTS7000218: ")


def test_auto_approve_after_polls(fake_clock):
    with IdentityProvider(clock=fake_clock, auto_approve_after_polls=2, account="bot@contoso.example") as idp:
        code = devicecode(idp).json()
        statuses = [poll(idp, code["device_code"]).status_code for _ in range(3)]
        assert statuses == [400, 400, 200]
    with IdentityProvider(clock=fake_clock, auto_approve_after_polls=0) as idp:
        assert poll(idp, devicecode(idp).json()["device_code"]).status_code == 200


def test_enforced_interval_answers_slow_down_and_raises_the_interval(fake_clock):
    with IdentityProvider(clock=fake_clock, enforce_interval=True, interval=5) as idp:
        code = devicecode(idp).json()["device_code"]
        assert poll(idp, code).json()["error"] == "authorization_pending"
        fake_clock.advance(4.9)
        assert poll(idp, code).json()["error"] == "slow_down"          # too soon: interval now 10
        fake_clock.advance(5)
        assert poll(idp, code).json()["error"] == "slow_down"          # 5 s < 10 s: interval now 15
        fake_clock.advance(15)
        assert poll(idp, code).json()["error"] == "authorization_pending"


def test_concurrent_polls_redeem_an_approved_code_exactly_once(idp):
    code = devicecode(idp).json()
    idp.approve()
    statuses: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        status = poll(idp, code["device_code"]).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [400] * 7


# -- RFC 6749 §6: refresh ---------------------------------------------------------


def test_refresh_rotates_and_the_old_token_stops_working(idp):
    tokens = sign_in(idp)
    first = refresh(idp, tokens["refresh_token"])
    assert first.status_code == 200
    new = first.json()
    assert new["refresh_token"] != tokens["refresh_token"]
    assert new["access_token"] != tokens["access_token"]
    assert idp.validate_access_token(new["access_token"]) == "ada@contoso.example"
    old = refresh(idp, tokens["refresh_token"])
    assert old.status_code == 400 and old.json()["error"] == "invalid_grant"
    assert refresh(idp, new["refresh_token"]).status_code == 200
    assert idp.counts["token.refresh_token"] == 3


def test_refresh_without_rotation_keeps_the_old_token(fake_clock):
    with IdentityProvider(clock=fake_clock, rotate_refresh_tokens=False) as idp:
        tokens = sign_in(idp)
        for _ in range(2):
            answer = refresh(idp, tokens["refresh_token"])
            assert answer.status_code == 200
            assert "refresh_token" not in answer.json()     # RFC 6749 §6: keep the one you have


def test_refresh_scope_defaults_to_the_granted_one_and_is_remembered(idp):
    tokens = sign_in(idp)
    answer = refresh(idp, tokens["refresh_token"], scope="")
    assert answer.json()["scope"] == SCOPE
    answer = refresh(idp, answer.json()["refresh_token"], scope="User.Read  offline_access")
    assert answer.json()["scope"] == "User.Read offline_access"
    assert idp.last_scope == "User.Read offline_access"


@pytest.mark.parametrize(("action", "aadsts"), [("revoke_refresh_tokens", 50173), ("expire_refresh_tokens", 700082)])
def test_revoked_or_expired_refresh_tokens(idp, action, aadsts):
    tokens = sign_in(idp)
    assert getattr(idp, action)() == 1
    answer = refresh(idp, tokens["refresh_token"])
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"
    assert answer.json()["error_codes"] == [aadsts]
    # Tokens issued after the revocation work.
    assert refresh(idp, sign_in(idp)["refresh_token"]).status_code == 200


def test_unknown_or_missing_refresh_token(idp):
    assert refresh(idp, "made-up").json()["error"] == "invalid_grant"
    assert refresh(idp, "").json()["error"] == "invalid_request"


def test_refresh_in_and_token_lifetime(fake_clock):
    with IdentityProvider(clock=fake_clock, access_token_lifetime=120, refresh_in=60) as idp:
        tokens = sign_in(idp)
        assert tokens["expires_in"] == 120 and tokens["refresh_in"] == 60
        fake_clock.advance(119)
        assert idp.validate_access_token(tokens["access_token"]) == "ada@contoso.example"
        fake_clock.advance(1)
        assert idp.validate_access_token(tokens["access_token"]) is None
        assert idp.validate_access_token("never-issued") is None


# -- faults --------------------------------------------------------------------------


def test_error_fault_with_aadsts(idp):
    code = devicecode(idp).json()
    idp.queue_token_faults(Fault.error("invalid_grant", "Conditional Access blocks this.", aadsts=53003, status=400))
    body = poll(idp, code["device_code"]).json()
    assert body["error"] == "invalid_grant" and body["error_codes"] == [53003]
    assert body["error_description"].startswith("AADSTS53003: Conditional Access blocks this.")
    # Consumed: the next poll is normal.
    assert poll(idp, code["device_code"]).json()["error"] == "authorization_pending"


def test_slow_down_fault(idp):
    code = devicecode(idp).json()
    idp.queue_token_faults(Fault.slow_down(), Fault.slow_down())
    assert [poll(idp, code["device_code"]).json()["error"] for _ in range(3)] == \
        ["slow_down", "slow_down", "authorization_pending"]
    assert Fault.slow_down() == Fault.error("slow_down", Fault.slow_down().description)


def test_status_faults_with_html_and_headers(idp):
    code = devicecode(idp).json()
    idp.queue_token_faults(Fault.status(503), Fault.status(429, "slow", headers={"Retry-After": "7"}))
    first = poll(idp, code["device_code"])
    assert first.status_code == 503
    assert first.headers["Content-Type"].startswith("text/html")
    assert first.text == "<html>Service unavailable</html>"
    second = poll(idp, code["device_code"])
    assert second.status_code == 429 and second.headers["Retry-After"] == "7" and second.text == "slow"
    assert [r["status"] for r in idp.token_requests] == [503, 429]
    assert idp.counts["token.device_code"] == 2


def test_malformed_fault(idp):
    code = devicecode(idp).json()
    idp.queue_token_faults(Fault.malformed())
    answer = poll(idp, code["device_code"])
    assert answer.status_code == 200
    with pytest.raises(ValueError):
        answer.json()


def test_drop_fault_is_a_connection_error(idp):
    code = devicecode(idp).json()
    idp.queue_token_faults(Fault.drop())
    with pytest.raises(requests.ConnectionError):
        poll(idp, code["device_code"])
    assert idp.token_requests[-1]["status"] == 0
    assert poll(idp, code["device_code"]).json()["error"] == "authorization_pending"


def test_delay_fault_trips_a_client_timeout_then_answers_normally(idp):
    code = devicecode(idp).json()
    idp.queue_token_faults(Fault.delay(1.0), Fault.delay(0.05))
    with pytest.raises(requests.Timeout):
        poll(idp, code["device_code"], timeout=0.2)
    late = poll(idp, code["device_code"])
    assert late.json()["error"] == "authorization_pending"


def test_devicecode_faults(idp):
    idp.queue_devicecode_faults(Fault.status(500, '{"error": "server_error"}'),
                                Fault.error("invalid_client", aadsts=7000218))
    first = devicecode(idp)
    assert first.status_code == 500 and first.headers["Content-Type"].startswith("application/json")
    second = devicecode(idp)
    assert second.json()["error_codes"] == [7000218]
    assert devicecode(idp).status_code == 200
    assert idp.counts["devicecode"] == 3
    assert len(idp.pending_user_codes()) == 1


# -- RFC 8628 §3.3: the person's sign-in page ------------------------------------------


def test_signin_page_prefills_the_code_and_escapes_it(idp):
    page = requests.get(f"{idp.verification_uri}?code=<script>x</script>", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "<script>x" not in page.text and "&lt;script&gt;x" in page.text
    assert "<form method=post" in page.text
    assert ">Approve</button>" in page.text and ">Decline</button>" in page.text
    root = requests.get(idp.base_url + "/", allow_redirects=False, timeout=5)
    assert root.status_code == 302 and root.headers["Location"] == "/devicelogin"
    assert idp.counts["signin_page"] == 2


def test_signin_page_approves_with_a_sloppily_typed_code(idp):
    code = devicecode(idp).json()
    typed = code["user_code"].lower()[:4] + "-" + code["user_code"].lower()[4:]
    page = requests.post(idp.verification_uri, data={"code": typed, "account": "lin@contoso.example",
                                                     "action": "approve"}, timeout=5)
    assert page.status_code == 200
    assert "You have signed in to the application on your device" in page.text
    tokens = poll(idp, code["device_code"]).json()
    assert idp.validate_access_token(tokens["access_token"]) == "lin@contoso.example"


def test_signin_page_decline_and_bad_codes(idp):
    code = devicecode(idp).json()
    page = requests.post(idp.verification_uri, data={"code": code["user_code"], "action": "decline"}, timeout=5)
    assert "You declined" in page.text
    assert poll(idp, code["device_code"]).json()["error"] == "authorization_declined"
    for typed in (code["user_code"], "ZZZZZZZZZ", ""):
        page = requests.post(idp.verification_uri, data={"code": typed, "action": "approve"}, timeout=5)
        assert page.status_code == 400 and "That code is not valid or has expired" in page.text


# -- /_sandbox: control over HTTP ----------------------------------------------------


def test_http_controls(idp):
    base = f"{idp.base_url}/_sandbox"
    assert requests.post(f"{base}/approve", timeout=5).status_code == 404
    first = devicecode(idp).json()
    second = devicecode(idp).json()
    third = devicecode(idp).json()
    state = requests.get(f"{base}/state", timeout=5).json()
    assert state["pending"] == [first["user_code"], second["user_code"], third["user_code"]]
    assert state["counts"]["devicecode"] == 3 and state["approved"] == 0
    answer = requests.post(f"{base}/approve", data={"user_code": first["user_code"], "account": "x@y.example"}, timeout=5)
    assert answer.json() == {"approved": first["user_code"]}
    assert requests.post(f"{base}/decline", timeout=5).json() == {"declined": third["user_code"]}
    assert requests.post(f"{base}/expire", data={"user_code": second["user_code"]}, timeout=5).json() == \
        {"expired": second["user_code"]}
    tokens = poll(idp, first["device_code"]).json()
    assert idp.validate_access_token(tokens["access_token"]) == "x@y.example"
    assert poll(idp, second["device_code"]).json()["error"] == "expired_token"
    assert poll(idp, third["device_code"]).json()["error"] == "authorization_declined"
    assert requests.post(f"{base}/revoke", timeout=5).json() == {"revoked": 1}
    assert refresh(idp, tokens["refresh_token"]).json()["error_codes"] == [50173]
    state = requests.get(f"{base}/state", timeout=5).json()
    assert state["pending"] == [] and state["approved"] == 1
    assert requests.get(f"{base}/approve", timeout=5).status_code == 405
    assert requests.post(f"{base}/explode", timeout=5).status_code == 404


def test_unknown_paths_are_json_404(idp):
    answer = requests.get(f"{idp.base_url}/nothing/here", timeout=5)
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"


# -- lifecycle and waiting --------------------------------------------------------------


def test_wait_for_code_returns_the_code_a_client_requested(idp):
    timer = threading.Timer(0.05, lambda: devicecode(idp))
    timer.start()
    try:
        user_code = idp.wait_for_code(timeout=5)
    finally:
        timer.join()
    assert idp.pending_user_codes() == [user_code]


def test_wait_for_code_times_out(idp):
    with pytest.raises(TimeoutError):
        idp.wait_for_code(timeout=0.05)


def test_stopped_server_refuses_connections_and_prints_nothing(capfd):
    idp = IdentityProvider(clock=FakeClock()).start()
    url = idp.base_url
    devicecode(idp)
    requests.get(f"{url}/nope", timeout=5)
    idp.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/organizations/v2.0/.well-known/openid-configuration", timeout=5)
    idp.stop()                                   # stopping twice is harmless
    out, err = capfd.readouterr()
    assert out == "" and err == ""               # no access log on stderr


def test_many_servers_start_and_stop(fake_clock):
    ports = set()
    for _ in range(25):
        with IdentityProvider(clock=fake_clock) as idp:
            ports.add(idp.port)
            assert devicecode(idp).status_code == 200
    assert len(ports) >= 2


def _lan_address() -> str | None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 9))     # a UDP connect sends no packet
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if is_loopback(address) else address


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.10") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("192.168.1.20") and not is_loopback("fd00::2") and not is_loopback("localhost.example")


@pytest.mark.skipif(_lan_address() is None, reason="this machine has no non-loopback IPv4 address")
def test_on_a_lan_the_page_is_served_but_the_controls_are_not(fake_clock):
    lan = _lan_address()
    with IdentityProvider(clock=fake_clock, host="0.0.0.0", verification_base_url=f"http://{lan}:1234/") as idp:
        code = devicecode(idp).json()          # the agent still talks to loopback
        assert idp.base_url.startswith("http://127.0.0.1:")
        assert code["verification_uri"] == idp.verification_uri == f"http://{lan}:1234/devicelogin"
        from_lan = f"http://{lan}:{idp.port}"
        assert requests.get(f"{from_lan}/devicelogin", timeout=5).status_code == 200
        refused = requests.post(f"{from_lan}/_sandbox/approve", timeout=5)
        assert refused.status_code == 403 and idp.pending_user_codes() == [code["user_code"]]
        assert requests.get(f"{from_lan}/_sandbox/state", timeout=5).status_code == 403
        page = requests.post(f"{from_lan}/devicelogin", data={"code": code["user_code"], "action": "approve"}, timeout=5)
        assert page.status_code == 200 and poll(idp, code["device_code"]).status_code == 200


def test_me_is_a_protected_resource(idp):
    """``GET /v1.0/me`` answers only to a valid bearer token (what the seed's script fetches)."""
    import requests as _requests
    url = idp.base_url + "/v1.0/me"
    assert _requests.get(url, timeout=5).status_code == 401
    assert _requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401
    code = _requests.post(f"{idp.base_url}/organizations/oauth2/v2.0/devicecode",
                          data={"client_id": "c", "scope": "openid"}, timeout=5).json()
    idp.approve(code["user_code"])
    token = _requests.post(f"{idp.base_url}/organizations/oauth2/v2.0/token", timeout=5, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": "c",
        "device_code": code["device_code"]}).json()["access_token"]
    me = _requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert me.status_code == 200 and me.json()["userPrincipalName"] == "ada@contoso.example"


def test_each_access_token_is_for_one_resource_as_entra_issues_them(idp):
    tokens = sign_in(idp)
    assert idp.audience(tokens["access_token"]) == "https://graph.microsoft.com"   # bare User.Read
    storage = refresh(idp, tokens["refresh_token"], "https://storage.azure.com/.default offline_access")
    assert storage.status_code == 200, storage.text
    assert idp.audience(storage.json()["access_token"]) == "https://storage.azure.com"
    arm = refresh(idp, storage.json()["refresh_token"], "https://management.azure.com//.default")
    assert idp.audience(arm.json()["access_token"]) == "https://management.azure.com/"
    assert idp.token_requests[-1]["scope"] == "https://management.azure.com//.default"
    assert idp.audience("not-issued") is None


def test_a_request_for_two_resources_is_refused_with_aadsts28000(idp):
    tokens = sign_in(idp)
    both = refresh(idp, tokens["refresh_token"],
                   "https://storage.azure.com/.default https://vault.azure.net/.default offline_access")
    assert both.status_code == 400
    assert both.json()["error"] == "invalid_scope" and both.json()["error_codes"] == [28000]
    # Nothing was spent: the refresh token still works.
    assert refresh(idp, tokens["refresh_token"]).status_code == 200


def test_scope_resources():
    from agent.sandbox.idp import scope_resources
    assert scope_resources("openid profile offline_access") == set()
    assert scope_resources("User.Read Mail.Read") == {"https://graph.microsoft.com"}
    assert scope_resources("api://telemetry/Readings.Write") == {"api://telemetry"}
    assert scope_resources("https://storage.azure.com") == {"https://storage.azure.com"}
