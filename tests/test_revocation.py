"""Signing out asks the provider to revoke the refresh token (RFC 7009),
against the real sandbox provider; where there is no revocation endpoint one
line says what revokes it; an unreachable provider never blocks the local
sign-out."""

from __future__ import annotations

import pytest

from agent import paths
from agent.auth.tokens import TokenClient
from agent.cli import main
from agent.errors import EXIT_OK
from agent.profiles import Profile, ProfileStore
from agent.sandbox.idp import IdentityProvider
from agent.tokenstore import TokenStore
from tests.hostile_idp import DISCOVERY, HostileProvider, Reply

CLIENT_ID = "00000000-0000-0000-0000-000000000007"


def signed_in(profile: Profile, idp: IdentityProvider, clock) -> str:
    """Save *profile* and sign it in (FakeClock); return its refresh token."""
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    ProfileStore(paths.profiles_file()).save(profile)
    client = TokenClient(profile.validated(), store=TokenStore(paths.token_dir()), clock=clock)
    authorization = client.request_code()
    idp.approve(authorization.user_code)
    tokens = client.poll(authorization)
    assert tokens.refresh_token
    return tokens.refresh_token


def issuer_profile(idp) -> Profile:
    return Profile(name="lab", client_id=CLIENT_ID, issuer=idp.issuer("organizations"))


@pytest.mark.parametrize("command", [["logout", "--profile", "lab"], ["delete-profile", "--name", "lab"]])
def test_sign_out_revokes_the_refresh_token(agent_dirs, idp, fake_clock, capsys, command):
    refresh_token = signed_in(issuer_profile(idp), idp, fake_clock)
    assert main(command) == EXIT_OK
    err = capsys.readouterr().err
    assert f"entra-auth-cli: the refresh token was revoked at {idp.base_url}" in err
    assert refresh_token not in err
    assert idp.revoked == [refresh_token]
    assert idp.refresh_token_state(refresh_token) == "revoked"
    assert not (paths.token_dir() / "lab.json").exists()


def test_a_provider_without_revocation_is_named_in_one_line(agent_dirs, fake_clock, capsys):
    with IdentityProvider(clock=fake_clock, revocation=False) as idp:
        refresh_token = signed_in(issuer_profile(idp), idp, fake_clock)
        assert main(["logout", "--profile", "lab"]) == EXIT_OK
        assert idp.counts["revoke"] == 0
        assert idp.refresh_token_state(refresh_token) == "valid"
    lines = [line for line in capsys.readouterr().err.splitlines() if "revocation" in line]
    assert lines == ["entra-auth-cli: the provider lists no revocation_endpoint: revoke the sign-in "
                     "at the provider (its sessions or consents page)"]


def test_entra_has_no_revocation_endpoint_and_we_say_what_revokes(agent_dirs, idp, fake_clock, capsys):
    profile = Profile(name="lab", client_id=CLIENT_ID, tenant_id="organizations",
                      authority_host=idp.base_url)
    signed_in(profile, idp, fake_clock)
    before = idp.counts
    assert main(["logout", "--profile", "lab"]) == EXIT_OK
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "revocation endpoint" in line)
    assert "Revoke-MgUserSignInSession" in line and '"Revoke sessions"' in line
    assert idp.counts == before                       # no network call for it
    assert not (paths.token_dir() / "lab.json").exists()


def test_an_unresponsive_provider_never_blocks_the_local_sign_out(agent_dirs, idp, fake_clock, capsys):
    refresh_token = signed_in(issuer_profile(idp), idp, fake_clock)
    with HostileProvider() as hostile:
        # The same profile now points at a provider whose revocation endpoint
        # trickles for minutes: the request gives up at its deadline.
        hostile.default(DISCOVERY, Reply(200, hostile.discovery_document()))
        hostile.default("/revoke", Reply(200, b"{" + b" " * 10_000 + b"}", trickle=0.05,
                                         trickle_headers=True))
        store = ProfileStore(paths.profiles_file())
        store.save(Profile(name="lab", client_id=CLIENT_ID, issuer=hostile.issuer),
                   replace_existing=True)
        assert main(["logout", "--profile", "lab"]) == EXIT_OK
        assert [a.form.get("token") for a in hostile.took("/revoke")] == [refresh_token]
    err = capsys.readouterr().err
    assert "could not revoke the refresh token: the revocation endpoint did not answer within 5 s" in err
    assert "Signed out of profile 'lab'" in err
    assert not (paths.token_dir() / "lab.json").exists()


def test_an_unreachable_provider_never_blocks_the_local_sign_out(agent_dirs, idp, fake_clock, capsys):
    signed_in(issuer_profile(idp), idp, fake_clock)
    idp.stop()                                        # connection refused from now on
    assert main(["logout", "--profile", "lab"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "could not ask the provider to revoke the refresh token (cannot reach" in err
    assert not (paths.token_dir() / "lab.json").exists()
