"""The local token service, with the real azure-identity and msal from PyPI as its clients.

The SDKs find the service the way they find App Service's (IDENTITY_ENDPOINT
and IDENTITY_HEADER in the environment) and speak to it over HTTP on
127.0.0.1; behind it, the agent's refresh grant goes to the sandbox identity
provider, which issues one token per resource (audience = resource), as
Entra does. Server-side time is a FakeClock whose wall clock starts at the
real time, because the SDKs read ``expires_on`` against ``time.time()``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import sys
import time

import pytest
import requests

from agent import paths
from agent.auth.errors import SignInRequired
from agent.auth.tokens import TokenClient
from agent.clock import FakeClock
from agent.config import load_config
from agent.errors import ConfigError, UsageError
from agent.profiles import Profile, ProfileStore
from agent.resourcetokens import ResourceNotAllowed, ResourceTokens, scopes_for
from agent.sandbox.idp import IdentityProvider
from agent.tokensecret import ensure_secret, env_lines, read_secret, secret_path
from agent.tokenservice import API_VERSION, TokenService
from agent.tokenstore import TokenStore

azure_identity = pytest.importorskip("azure.identity")
msal = pytest.importorskip("msal")

CLIENT_ID = "00000000-0000-0000-0000-000000000001"
STORAGE = "https://storage.azure.com"
VAULT = "https://vault.azure.net"
# Variables that would make the SDKs pick another managed-identity flavour.
OTHER_MI_VARIABLES = ("IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT",
                      "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                      "AZURE_FEDERATED_TOKEN_FILE", "AZURE_USERNAME")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall=time.time())


@pytest.fixture
def provider(clock):
    with IdentityProvider(clock=clock, auto_approve_after_polls=0) as idp:
        yield idp


def make_client(provider: IdentityProvider, clock: FakeClock, **profile) -> TokenClient:
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    store = ProfileStore(paths.profiles_file())
    profile.setdefault("tenant_id", "organizations")
    store.save(Profile(name="default", client_id=CLIENT_ID, authority_host=provider.base_url,
                       **profile), replace_existing=True)
    return TokenClient(store.get("default"), store=TokenStore(paths.token_dir()), clock=clock)


@pytest.fixture
def client(agent_dirs, provider, clock) -> TokenClient:
    """Signed in to the sandbox (device code, approved on the first poll)."""
    client = make_client(provider, clock)
    client.poll(client.request_code())
    return client


@pytest.fixture
def sdk_env(monkeypatch):
    for name in OTHER_MI_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def point_at(service: TokenService, secret: str) -> None:
        monkeypatch.setenv("IDENTITY_ENDPOINT", service.endpoint)
        monkeypatch.setenv("IDENTITY_HEADER", secret)
    return point_at


@pytest.fixture
def served(client, clock, sdk_env):
    secret = ensure_secret(secret_path())
    service = TokenService(ResourceTokens(client, clock=clock), secret, port=0, clock=clock).start()
    sdk_env(service, secret)
    yield service
    service.stop()


def azure_token(resource: str):
    """azure-identity, a new credential each time (its own cache lives in the credential)."""
    with azure_identity.ManagedIdentityCredential() as credential:
        return credential.get_token(resource + "/.default")


def msal_token(resource: str) -> dict:
    """MSAL Python's managed-identity client, new each time (same reason)."""
    mi = msal.ManagedIdentityClient(msal.SystemAssignedManagedIdentity(), http_client=requests.Session())
    return mi.acquire_token_for_client(resource=resource)


def raw_get(service: TokenService, params: dict | None = None, headers: dict | None = None,
            method: str = "GET", path: str = "/msi/token") -> requests.Response:
    url = f"http://127.0.0.1:{service.port}{path}"
    return requests.request(method, url, params=params, headers=headers, timeout=5)


def refreshes(provider: IdentityProvider) -> int:
    return provider.counts["token.refresh_token"]


# -- the protocol, with the real SDKs -------------------------------------------------

def test_azure_identity_and_msal_get_tokens_for_two_resources(served, provider):
    storage = azure_token(STORAGE)
    vault = msal_token(VAULT)
    assert "error" not in vault, vault
    assert storage.token != vault["access_token"]
    # The sandbox issued each one for its resource, as Entra would.
    assert provider.audience(storage.token) == STORAGE
    assert provider.audience(vault["access_token"]) == VAULT
    scopes = [r["scope"] for r in provider.token_requests if r["grant_type"] == "refresh_token"]
    assert [s.split()[0] for s in scopes] == [f"{STORAGE}/.default", f"{VAULT}/.default"]
    # expires_on as App Service sends it, read by the SDKs against the real clock.
    assert 3500 < storage.expires_on - time.time() <= 3700    # (the sign-in took fake seconds)
    assert 3500 < vault["expires_in"] <= 3700 and vault["token_type"] == "Bearer"


def test_default_azure_credential_finds_it(served, provider):
    credential = azure_identity.DefaultAzureCredential(exclude_interactive_browser_credential=True)
    token = credential.get_token(f"{STORAGE}/.default")
    assert provider.audience(token.token) == STORAGE


def test_a_second_program_gets_the_cached_token_without_a_provider_call(served, provider):
    first = azure_token(STORAGE)
    before = refreshes(provider)
    again = msal_token(STORAGE)
    third = azure_token(STORAGE)
    assert again["access_token"] == third.token == first.token
    assert refreshes(provider) == before          # the provider heard nothing more


def test_a_token_near_its_expiry_is_refreshed_and_the_rotated_refresh_token_saved(
        served, provider, clock, client):
    first = azure_token(STORAGE)
    stored = TokenStore(paths.token_dir()).load("default")
    clock.advance(3600 - 600 - 1)                 # 9 min 59 s left: still served
    assert azure_token(STORAGE).token == first.token
    assert refreshes(provider) == 1
    clock.advance(2)                              # under 10 minutes left: refreshed
    second = azure_token(STORAGE)
    assert second.token != first.token and provider.audience(second.token) == STORAGE
    assert refreshes(provider) == 2
    assert 3500 < second.expires_on - time.time() <= 3600 + 3600
    # The sandbox rotates refresh tokens: the new one is on disk, the old one is dead.
    saved = TokenStore(paths.token_dir()).load("default")
    assert saved["refresh_token"] != stored["refresh_token"]
    assert saved["access_token"] == stored["access_token"]   # the profile's own token is kept
    assert client.refresh().access_token                     # and the saved chain still works


def test_a_client_without_the_secret_is_refused(served, provider, monkeypatch):
    monkeypatch.setenv("IDENTITY_HEADER", "0" * 64)
    with pytest.raises(azure_identity.CredentialUnavailableError) as caught:
        azure_token(STORAGE)
    assert "X-IDENTITY-HEADER" in str(caught.value)
    result = msal_token(STORAGE)
    assert "access_token" not in result and "401" in result["error_description"]
    answer = raw_get(served, {"resource": STORAGE, "api-version": API_VERSION})
    assert answer.status_code == 401 and "X-IDENTITY-HEADER" in answer.json()["message"]
    assert refreshes(provider) == 0


def test_only_get_with_the_documented_parameters(served, provider):
    secret = {"X-IDENTITY-HEADER": read_secret(secret_path())}
    good = {"resource": STORAGE, "api-version": API_VERSION}
    assert raw_get(served, good, secret, method="POST").status_code == 405
    assert raw_get(served, good, secret, method="POST").headers["Allow"] == "GET"
    assert raw_get(served, good, secret, path="/other").status_code == 404
    for params, words in [
        ({"resource": STORAGE}, "api-version must be 2019-08-01"),
        ({"resource": STORAGE, "api-version": "2017-09-01"}, "api-version must be 2019-08-01"),
        ({"api-version": API_VERSION}, "resource is missing"),
        ({**good, "client_id": "x"}, "one identity"),
        ({**good, "mi_res_id": "x"}, "one identity"),
        ({**good, "scope": "x"}, "unknown parameter"),
        ({"resource": "a b", "api-version": API_VERSION}, "spaces"),
        ({"resource": "x" * 600, "api-version": API_VERSION}, "longer than"),
    ]:
        answer = raw_get(served, params, secret)
        assert answer.status_code == 400, params
        assert words in answer.json()["message"], (params, answer.json())
        assert answer.json()["statusCode"] == 400
    assert refreshes(provider) == 0
    assert raw_get(served, good, secret).status_code == 200


def test_requests_for_another_host_name_are_refused(served):
    # A web page's script could reach 127.0.0.1 through a DNS name rebound to it.
    answer = raw_get(served, {"resource": STORAGE, "api-version": API_VERSION},
                     {"X-IDENTITY-HEADER": read_secret(secret_path()), "Host": "evil.example:80"})
    assert answer.status_code == 403


def test_peers_off_this_device_are_refused(served):
    # The socket is bound to loopback, so no such peer can reach it; the check
    # behind that is asked directly with the peer address it would see.
    answer = served.answer("GET", f"/msi/token?resource={STORAGE}&api-version={API_VERSION}",
                           {"X-IDENTITY-HEADER": read_secret(secret_path())},
                           ("192.168.1.20", 50000), ("127.0.0.1", served.port))
    assert answer.status == 403 and "this device only" in answer.body["message"]


def test_a_non_loopback_bind_is_refused(client, agent_dirs):
    secret = ensure_secret(secret_path())
    for host in ("0.0.0.0", "192.168.1.20", "::", "localhost"):
        with pytest.raises(UsageError, match="loopback only"):
            TokenService(ResourceTokens(client), secret, host=host, port=0)
    config = paths.config_dir() / "agent.toml"
    for address in ("0.0.0.0", "10.0.0.1", "localhost", "::1"):
        config.write_text(f'[token_service]\nenabled = true\naddress = "{address}"\n')
        with pytest.raises(ConfigError) as caught:
            load_config(config)
        assert f"{config}: token_service.address must be a loopback IPv4 address" in str(caught.value)
    config.write_text("[token_service]\nenabled = true\nprot = 4000\n")
    with pytest.raises(ConfigError, match=r"token_service.prot is not a known key.*did you mean token_service.port"):
        load_config(config)
    config.write_text('[token_service]\nenabled = true\naddress = "127.0.0.2"\nport = 4242\n')
    assert load_config(config).token_service.port == 4242
    assert load_config(config).token_service.enabled


def test_each_local_user_is_rate_limited(client, clock, sdk_env, provider):
    secret = ensure_secret(secret_path())
    with TokenService(ResourceTokens(client, clock=clock), secret, port=0, clock=clock,
                      rate=1.0, burst=3) as service:
        sdk_env(service, secret)
        header = {"X-IDENTITY-HEADER": secret}
        good = {"resource": STORAGE, "api-version": API_VERSION}
        assert [raw_get(service, good, header).status_code for _ in range(3)] == [200] * 3
        limited = raw_get(service, good, header)
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
        # MSAL honours it: it throttles the same request itself for Retry-After seconds.
        clock.advance(1.0)
        assert raw_get(service, good, header).status_code == 200
        assert refreshes(provider) == 1


def test_other_providers_serve_only_the_profiles_scopes(agent_dirs, clock, sdk_env):
    with IdentityProvider(clock=clock, auto_approve_after_polls=0, dialect="oidc") as oidc:
        paths.config_dir().mkdir(parents=True, exist_ok=True)
        store = ProfileStore(paths.profiles_file())
        store.save(Profile(name="default", client_id="device-agent", issuer=oidc.issuer(),
                           scopes=("telemetry.write",)))
        client = TokenClient(store.get("default"), store=TokenStore(paths.token_dir()), clock=clock)
        client.poll(client.request_code())
        secret = ensure_secret(secret_path())
        with TokenService(ResourceTokens(client, clock=clock), secret, port=0, clock=clock) as service:
            sdk_env(service, secret)
            with pytest.raises(azure_identity.CredentialUnavailableError) as caught:
                azure_token(STORAGE)
            assert "not Entra ID: only its own scopes can be served (telemetry.write)" in str(caught.value)
            token = msal_token("telemetry.write")
            assert token["access_token"] and "error" not in token


def test_scopes_for_a_resource():
    assert scopes_for(STORAGE, entra=True, profile_scopes=()) == [f"{STORAGE}/.default"]
    assert scopes_for("https://management.azure.com/", entra=True, profile_scopes=()) == [
        "https://management.azure.com//.default"]
    graph = "https://graph.microsoft.com/User.Read"
    assert scopes_for(graph, entra=True, profile_scopes=(graph,)) == [graph]
    assert scopes_for("a", entra=False, profile_scopes=("a", "b")) == ["a", "b"]
    assert scopes_for("c", entra=False, profile_scopes=("a", "b")) is None


def test_unknown_resources_come_back_as_a_clear_error(client):
    with pytest.raises(ResourceNotAllowed, match="spaces"):
        ResourceTokens(client).get("two words")


# -- the secret ------------------------------------------------------------------------

def test_the_secret_file_is_private_and_checked(agent_dirs):
    path = secret_path()
    secret = ensure_secret(path)
    assert ensure_secret(path) == secret == read_secret(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode in (0o600, 0o640) and not mode & 0o007
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="open to every user.*chmod 640"):
        read_secret(path)
    path.chmod(0o600)
    path.write_text("short\n")
    with pytest.raises(ConfigError, match="damaged"):
        read_secret(path)
    path.unlink()
    with pytest.raises(ConfigError, match="does not exist"):
        read_secret(path)


def test_token_env_prints_lines_for_a_shell_and_for_systemd(agent_dirs, tmp_path):
    config = paths.config_dir() / "agent.toml"
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    config.write_text("[token_service]\nenabled = true\nport = 4711\n")
    env = {**os.environ, "ENTRA_AGENT_CONFIG": str(config)}
    shell = subprocess.run([sys.executable, "-m", "agent", "token-env"], capture_output=True, text=True, env=env,
                           timeout=60, check=True).stdout
    secret = read_secret(secret_path())
    assert shell == env_lines("http://127.0.0.1:4711/msi/token", secret)
    assert shell.splitlines()[0] == "export IDENTITY_ENDPOINT=http://127.0.0.1:4711/msi/token"
    # A shell takes it as it is.
    seen = subprocess.run(["bash", "-c", 'eval "$1"; echo "$IDENTITY_ENDPOINT $IDENTITY_HEADER"', "-", shell],
                          capture_output=True, text=True, timeout=30, check=True).stdout.split()
    assert seen == ["http://127.0.0.1:4711/msi/token", secret]
    systemd = subprocess.run([sys.executable, "-m", "agent", "token-env", "--format", "systemd"], capture_output=True,
                             text=True, env=env, timeout=60, check=True).stdout
    assert systemd == f"IDENTITY_ENDPOINT=http://127.0.0.1:4711/msi/token\nIDENTITY_HEADER={secret}\n"


# -- the agent: not signed in, revoked, and the CLI sharing its cache ---------------------------

@pytest.fixture
def agent(agent_dirs, provider, clock, sdk_env):
    """A Service with the token service on, not yet started."""
    from agent.assembly import build_service
    from agent.notify import Notifier
    from agent.service import Service
    from tests.fixtures_service import RecordingPresenter

    made = []

    def make(port: int = 0, mqtt_port: int | None = None) -> Service:
        client = make_client(provider, clock)
        mqtt = (f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\nconnect_spread = 0\n'
                if mqtt_port else "")
        (paths.config_dir() / "agent.toml").write_text(
            'device_id = "dev-1"\n[telemetry]\ninterval = 60\njitter = false\n'
            f'[[sensors]]\ntype = "uptime"\n[token_service]\nenabled = true\nport = {port or 4242}\n'
            + mqtt)
        config = load_config(paths.config_file())
        if not port:
            import dataclasses
            config = dataclasses.replace(config, token_service=dataclasses.replace(
                config.token_service, port=0))
        service = build_service(config, clock=clock, token_client=client, presenter=RecordingPresenter(),
                                notifier=Notifier(None), publisher=None if mqtt_port else False)
        made.append(service)
        return service

    yield make
    for service in made:
        if service._set_up and not service.finished:
            service.stop()
            service.run_until(lambda s: s.finished, 2000)


def start_serving(service, sdk_env) -> None:
    service.start()
    sdk_env(service.token_service, read_secret(secret_path()))


def test_while_not_signed_in_programs_get_a_clear_error_and_the_device_says_one_asked(
        agent, provider, sdk_env):
    from agent import ui
    from agent.service import AWAITING_USER, SIGNED_IN
    provider.auto_approve_after_polls = None
    service = agent()
    start_serving(service, sdk_env)
    assert service.run_until(lambda s: s.state == AWAITING_USER, 2000)
    with pytest.raises(azure_identity.CredentialUnavailableError) as caught:
        azure_token(STORAGE)
    assert "entra-agent on this device is not signed in (awaiting user)" in str(caught.value)
    assert "a person must sign in on the device" in str(caught.value)
    assert refreshes(provider) == 0
    assert service.run_until(lambda s: "token_request" in s._status())
    status = service._status()
    assert status["token_request"]["resource"] == STORAGE
    assert isinstance(service.presenter.last, ui.SignInView)      # the code stays on the screen
    on_disk = json.loads(paths.status_file().read_text())
    assert on_disk["token_request"]["resource"] == STORAGE
    provider.approve()
    assert service.run_until(lambda s: s.state == SIGNED_IN, 5000)
    assert "token_request" not in service._status()
    assert provider.audience(azure_token(STORAGE).token) == STORAGE


def test_a_revoked_refresh_token_gives_the_sdk_a_clear_error_and_the_device_a_new_code(
        agent, provider, sdk_env):
    from agent import ui
    from agent.service import AWAITING_USER, SIGNED_IN
    service = agent()
    start_serving(service, sdk_env)
    assert service.run_until(lambda s: s.state == SIGNED_IN, 5000)
    assert azure_token(STORAGE).token
    provider.revoke_refresh_tokens()
    provider.auto_approve_after_polls = None
    codes_before = len(service.presenter.of(ui.SignInView))
    with pytest.raises(azure_identity.CredentialUnavailableError) as caught:
        azure_token(VAULT)
    text = str(caught.value)
    assert "is no longer accepted" in text and "AADSTS50173" in text
    assert "a person must sign in again on the device" in text
    # The device checks its own sign-in, finds it revoked and shows a new code.
    assert service.run_until(lambda s: s.state == AWAITING_USER, 5000)
    assert len(service.presenter.of(ui.SignInView)) > codes_before
    # Meanwhile programs hear that a sign-in is under way, and nothing of the
    # old sign-in is served (even the still-valid cached storage token).
    result = msal_token(STORAGE)
    assert "not signed in" in result["error_description"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_cli_shares_the_running_agents_cache_and_goes_direct_when_it_is_down(
        agent, provider, sdk_env, capsys):
    from agent.cli import main as cli
    from agent.service import SIGNED_IN
    service = agent(port=free_port())
    start_serving(service, sdk_env)
    assert service.run_until(lambda s: s.state == SIGNED_IN, 5000)
    from_sdk = azure_token(STORAGE)
    before = refreshes(provider)
    capsys.readouterr()
    assert cli(["get-token", "--resource", STORAGE, "--output", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["access_token"] == from_sdk.token and printed["resource"] == STORAGE
    assert 3000 < printed["expires_in"] <= 3700
    assert refreshes(provider) == before             # from the agent's memory

    service.stop()
    assert service.run_until(lambda s: s.finished, 2000)
    assert cli(["get-token", "--resource", STORAGE, "--output", "json"]) == 0
    direct = json.loads(capsys.readouterr().out)
    assert direct["access_token"] != from_sdk.token
    assert provider.audience(direct["access_token"]) == STORAGE
    assert refreshes(provider) == before + 1

    assert cli(["get-token", "--resource", STORAGE, "--scope", "x"]) == 2
    assert "--resource and --scope do not go together" in capsys.readouterr().err


def test_the_cli_says_when_a_sign_in_is_needed(agent, provider, sdk_env, capsys):
    from agent.cli import main as cli
    from agent.service import AWAITING_USER
    provider.auto_approve_after_polls = None
    service = agent(port=free_port())
    start_serving(service, sdk_env)
    assert service.run_until(lambda s: s.state == AWAITING_USER, 2000)
    capsys.readouterr()
    assert cli(["get-token", "--resource", STORAGE]) == 4
    err = capsys.readouterr().err
    assert err.startswith("entra-auth-cli: error: the agent's token service: entra-agent on this "
                          "device is not signed in") and err.count("\n") == 1


def test_no_token_or_secret_in_any_log(served, provider, clock, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    azure_token(STORAGE)
    msal_token(VAULT)
    clock.advance(3500)
    azure_token(STORAGE)
    monkeypatch.setenv("IDENTITY_HEADER", "f" * 64)
    with pytest.raises(azure_identity.CredentialUnavailableError):
        azure_token(STORAGE)
    logged = caplog.text
    assert "token service: first token for https://storage.azure.com" in logged
    assert logged.count("first token for") == 2          # one line per new resource
    secrets = provider.issued_secrets() + [read_secret(secret_path())]
    assert len(secrets) > 5
    for secret in secrets:
        assert secret not in logged


def test_sign_in_required_without_a_saved_sign_in(agent_dirs, provider, clock):
    client = make_client(provider, clock)
    with pytest.raises(SignInRequired):
        ResourceTokens(client).get(STORAGE)


def test_a_stopped_sign_in_screen_says_a_program_needs_a_token(agent, provider, sdk_env):
    from agent import ui
    from agent.service import AWAITING_USER, SIGN_IN_STOPPED
    provider.auto_approve_after_polls = None
    service = agent()
    start_serving(service, sdk_env)
    assert service.run_until(lambda s: s.state == AWAITING_USER, 2000)
    provider.expire()
    assert service.run_until(lambda s: s.state == SIGN_IN_STOPPED, 2000)
    assert isinstance(service.presenter.last, ui.ExpiredView)
    with pytest.raises(azure_identity.CredentialUnavailableError, match="not signed in"):
        azure_token(STORAGE)

    def says_so(s):
        last = s.presenter.last
        return isinstance(last, ui.ErrorView) and "needs a token" in last.message
    assert service.run_until(says_so, 50)
    assert service.state == SIGN_IN_STOPPED and service.presenter.last.retry_in is not None


def test_the_rate_limit_key_is_the_local_user_of_the_connecting_socket():
    from agent.tokenservice import peer_uid
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()):
            accepted, peer = server.accept()
            accepted.close()
            assert peer_uid(peer, server.getsockname()) == os.geteuid()
        if os.geteuid() != 0:
            return
        # Another user's program is told apart (and so has its own bucket).
        code = ("import socket, sys, time; s = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); "
                "print('ok', flush=True); time.sleep(5)")
        other = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                  sys.executable, "-c", code, str(server.getsockname()[1])],
                                 stdout=subprocess.PIPE, text=True)
        try:
            accepted, peer = server.accept()
            assert peer_uid(peer, server.getsockname()) == 65534
            accepted.close()
        finally:
            other.kill()
            other.wait(10)


def test_a_resource_refused_for_consent_does_not_sign_the_device_out(agent, provider, sdk_env):
    from agent.sandbox.idp import Fault
    from agent.service import SIGNED_IN
    service = agent()
    start_serving(service, sdk_env)
    assert service.run_until(lambda s: s.state == SIGNED_IN, 5000)
    provider.queue_token_faults(Fault.error(
        "invalid_grant", "The user or administrator has not consented to use the application.",
        aadsts=65001))
    with pytest.raises(azure_identity.CredentialUnavailableError, match="AADSTS65001"):
        azure_token(VAULT)
    checks = refreshes(provider)
    # The device checks its own sign-in, which is fine: it stays signed in and serves on.
    assert service.run_until(lambda s: refreshes(provider) > checks, 200)
    assert service.run_until(lambda s: not s.is_busy("network"), 200)
    assert service.state == SIGNED_IN
    assert provider.audience(azure_token(STORAGE).token) == STORAGE


def test_mqtt_says_a_program_asked_while_not_signed_in(agent, provider, sdk_env, mosquitto,
                                                        mqtt_subscriber):
    from agent.service import AWAITING_USER
    provider.auto_approve_after_polls = None
    subscriber = mqtt_subscriber(mosquitto, ["entra-agent/dev-1/state"])
    service = agent(mqtt_port=mosquitto.port)
    start_serving(service, sdk_env)
    assert service.run_until(lambda s: s.state == AWAITING_USER, 2000)
    result = msal_token(STORAGE)
    assert "not signed in" in result["error_description"]
    assert service.run_until(lambda s: "token_request" in s._status(), 50)
    message = subscriber.wait_for("entra-agent/dev-1/state", lambda m: "token_request" in m.json())
    assert message.json()["token_request"]["resource"] == STORAGE
    assert message.json()["state"] == AWAITING_USER
