"""``entra-auth-cli``: profiles and tokens from the command line.

Keeps the command-line surface of the original ``entra-auth-cli`` (see
README): ``get-token``, ``create-profile``, ``list-profiles``,
``delete-profile``, ``logout``. Instructions, spinner and countdown go to
stderr; only the result goes to stdout, so
``TOKEN=$(entra-auth-cli get-token --output json)`` works while the person
still sees the code.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from agent import __version__, paths, report, waits
from agent.argparsing import Parser, add_verbose, verbosity
from agent.auth.errors import SignInRequired
from agent.auth.tokens import TokenClient, TokenSet
from agent.clisignin import PROG, open_screen, sign_in
from agent.errors import (
    EXIT_OK,
    EXIT_USAGE,
    AgentError,
    UsageError,
    run_command,
)
from agent.listing import output_width, profiles_text
from agent.profiles import (
    DEFAULT_PROFILE,
    DEFAULT_SCOPES,
    FLOWS,
    Profile,
    ProfileStore,
)
from agent.ui import (
    format_duration,
)

__all__ = ["main"]

_sign_in = sign_in          # the name tests and older callers use

log = logging.getLogger(__name__)



def main(argv: list[str] | None = None) -> int:
    """Run ``entra-auth-cli``; return the exit code (see README, "Exit codes")."""
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(verbosity(args))
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    # Ctrl+C ends by SIGINT (after the message), so a calling script stops too.
    return run_command(PROG, lambda: args.handler(args), resignal=True,
                       interrupted=getattr(args, "interrupted", "\nAuthentication cancelled by user"))


def _setup_logging(verbose: int) -> None:
    from agent.logsetup import setup_logging
    setup_logging(PROG, logging.WARNING - 10 * min(verbose, 2))


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Sign this device in to Microsoft Entra ID (or any OpenID provider "
                    "with a device authorization endpoint) using the device code flow.",
        epilog="Files: profiles in %s, tokens in %s (0600). Exit codes: 0 ok, 1 failure, "
               "2 bad input, 3 profile/config, 4 sign-in declined/expired/required, "
               "5 network, 6 token file, 130 cancelled, 141 output closed early."
               % (paths.profiles_file(), paths.token_dir()),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbose_help = "more log output on stderr (-vv for debug); never shows tokens"
    add_verbose(parser, help=verbose_help, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("get-token", help="print a token, signing in with a device code if needed",
                       description="Print an access token for a profile. A valid saved token comes "
                                   "back with no network call; one that expires within 5 minutes is "
                                   "refreshed; otherwise the device code flow runs: open the address "
                                   "shown on another device and enter the code. Instructions go to "
                                   "stderr, the token to stdout (in text mode only when stdout is not "
                                   "a terminal, so it does not land in your scrollback).")
    p.add_argument("--flow", choices=FLOWS, help="sign-in flow (default: the profile's default flow)")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="profile name (default: %(default)s)")
    p.add_argument("--scope", action="append", default=[], metavar="SCOPE",
                   help="scope to request instead of the profile's (repeatable, or comma-separated)")
    p.add_argument("--output", choices=("text", "json"), default="text",
                   help="text: the bare access token; json: access_token, token_type, expires_at, "
                        "expires_in, scope, profile, account")
    p.add_argument("--resource", metavar="URI",
                   help="a token for another resource (e.g. https://storage.azure.com) from the "
                        "signed-in profile, shared with the running agent's token service "
                        "([token_service] in agent.toml)")
    p.add_argument("--display", action="store_true",
                   help="also show the code and a QR code on the screen set in the agent's config "
                        "([display] in agent.toml), for a person standing at the board")
    p.set_defaults(handler=_get_token)

    p = sub.add_parser("create-profile", help="add a sign-in profile",
                       description="Add a profile: an Entra app registration (tenant + client id) or "
                                   "an OpenID provider (issuer + client id). Missing values are asked "
                                   "for when stdin is a terminal.")
    p.add_argument("--name", help=f"profile name (default when prompting: {DEFAULT_PROFILE})")
    p.add_argument("--client-id", help="Application (client) ID of a public client app")
    p.add_argument("--tenant-id", help="Entra tenant: GUID, domain, organizations, common or consumers")
    p.add_argument("--cloud", choices=("public", "usgov", "china"), default="public",
                   help="Entra national cloud (default: %(default)s)")
    p.add_argument("--issuer", help="issuer URL of a non-Entra OpenID provider (instead of --tenant-id)")
    p.add_argument("--authority-host", help="replace the cloud's login host (private clouds, the local sandbox)")
    p.add_argument("--scope", action="append", default=[], metavar="SCOPE",
                   help="delegated permission to request (repeatable or comma-separated; "
                        f"default: {' '.join(DEFAULT_SCOPES)})")
    p.add_argument("--default-flow", choices=FLOWS, default="device-code", help="(default: %(default)s)")
    p.add_argument("--no-offline-access", action="store_true",
                   help="do not ask for offline_access (no refresh token: sign in every hour)")
    p.add_argument("--force", action="store_true", help="replace a profile of the same name")
    p.set_defaults(handler=_create_profile, interrupted="\nCancelled: no profile was saved")

    p = sub.add_parser("list-profiles", help="list profiles and whether each is signed in")
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.set_defaults(handler=_list_profiles)

    p = sub.add_parser("delete-profile", help="delete a profile and its saved tokens")
    p.add_argument("--name", required=True)
    p.set_defaults(handler=_delete_profile)

    p = sub.add_parser("logout", help="forget a profile's saved tokens")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="profile name (default: %(default)s)")
    p.set_defaults(handler=_logout)
    for command in sub.choices.values():
        add_verbose(command, help=verbose_help)
    return parser


# -- helpers ------------------------------------------------------------------

def _profiles() -> ProfileStore:
    return ProfileStore(paths.profiles_file())


def _client(profile: Profile) -> TokenClient:
    from agent.tokenstore import TokenStore
    return TokenClient(profile, store=TokenStore(paths.token_dir(), on_lock_wait=waits.token_file_busy))


# -- commands -------------------------------------------------------------------

def _get_token(args: argparse.Namespace) -> int:
    from agent.profiles import validate_scopes
    if args.resource:
        if args.scope:
            raise UsageError("--resource and --scope do not go together", "give one of them")
        from agent.localtokens import get_token_command
        return get_token_command(args.resource, args.profile, args.output)
    profile = _profiles().get(args.profile)
    scopes = list(validate_scopes(args.scope))
    if args.scope and not scopes:
        raise UsageError("--scope is empty", "give a scope such as https://graph.microsoft.com/User.Read, "
                         "or leave --scope out to use the profile's")
    client = _client(profile)
    try:
        with waits.provider_slow(client, "a token refresh"):
            tokens = client.acquire_silent(scopes=scopes or None)
    except SignInRequired as exc:
        if client.store.path(profile.name).exists():
            print(f"{exc.message.rstrip('.')}; starting a new sign-in.", file=sys.stderr)
        tokens = _sign_in_once(client, scopes, display=args.display)
    _print_token(tokens, profile, client, args.output)
    return EXIT_OK


def _sign_in_once(client: TokenClient, scopes: list[str], *, display: bool) -> TokenSet:
    """Sign in, one device code flow per profile at a time.

    A second ``get-token`` while one is waiting for a person says so and
    waits for it; when that one saved a token, it is used (no second code).
    """
    name = client.profile.name
    with client.store.sign_in_turn(name, on_wait=lambda holder: waits.sign_in_busy(name, holder)) \
            as waited:
        if waited:
            try:
                tokens = client.acquire_silent(scopes=scopes or None)
            except SignInRequired:
                waits.say("The other sign-in ended without a token; starting a new one.")
            else:
                waits.say(f"Signed in by the other sign-in; using its token for profile '{name}'.")
                return tokens
        screen = open_screen() if display else None
        try:
            return sign_in(client, scopes, screen)
        finally:
            if screen is not None:
                screen.close()


def _print_token(tokens: TokenSet, profile: Profile, client: TokenClient, output: str) -> None:
    expires_in = max(0, int(tokens.seconds_left(client.clock)))
    if output == "json":
        print(json.dumps({
            "access_token": tokens.access_token,
            "token_type": tokens.token_type,
            "expires_at": report.iso(client.clock.time() + expires_in),
            "expires_in": expires_in,
            "scope": " ".join(tokens.scope),
            "profile": profile.name,
            "account": tokens.account,
        }, indent=2))
        return
    if sys.stdout.isatty():
        who = tokens.account or "this profile"
        print(f"Access token for {who} is valid for {format_duration(expires_in)} "
              f"(not shown on a terminal: pipe it, or use --output json)", file=sys.stderr)
        return
    print(tokens.access_token)


def _create_profile(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()
    name, client_id, tenant, issuer = args.name, args.client_id, args.tenant_id, args.issuer
    scopes = list(args.scope)
    missing = [flag for flag, value in (("--name", name), ("--client-id", client_id)) if not value]
    if not tenant and not issuer:
        missing.append("--tenant-id (or --issuer)")
    if missing and not interactive:
        raise UsageError(f"missing {', '.join(missing)}",
                         "give them as flags; prompting needs a terminal")
    store = _profiles()
    if missing:
        from agent.prompts import ask, check_client_id, check_scopes, check_tenant, new_profile_name

        check_name = new_profile_name(store, replace_existing=args.force)
        sys.stderr.write("Creating a device-code profile. The app registration must be a public client "
                         "('Allow public client flows' on).\n")
        name = name or ask("Profile name", DEFAULT_PROFILE, flag="--name", check=check_name)
        if not tenant and not issuer:
            tenant = ask("Tenant ID (GUID, domain or 'organizations'; or an https:// issuer URL)",
                         "organizations", flag="--tenant-id", check=check_tenant)
            if tenant.startswith(("https://", "http://")):
                tenant, issuer = None, tenant
        entra = issuer is None and not args.authority_host
        client_id = client_id or ask("Client ID (Application ID of the app registration)",
                                     flag="--client-id", check=check_client_id(entra=entra))
        if not scopes:
            scopes = [ask("Scopes (delegated permissions, comma-separated)", ",".join(DEFAULT_SCOPES),
                          flag="--scope", check=check_scopes)]
    profile = Profile(name=name, client_id=client_id or "", tenant_id=tenant, cloud=args.cloud,
                      issuer=issuer, authority_host=args.authority_host,
                      scopes=tuple(scopes) or DEFAULT_SCOPES, default_flow=args.default_flow,
                      offline_access=not args.no_offline_access)
    store.save(profile, replace_existing=args.force)
    saved = store.get(profile.name)
    print(f"Profile '{saved.name}' saved to {store.path} ({saved.authority}, "
          f"scopes: {' '.join(saved.scopes)})", file=sys.stderr)
    return EXIT_OK


def _token_summary(profile: Profile) -> dict[str, Any]:
    from agent.auth.tokens import load_tokens
    from agent.tokenstore import TokenStore
    try:
        tokens = load_tokens(TokenStore(paths.token_dir()), profile.name)
    except (AgentError, OSError) as exc:
        # Unreadable (not root), refused (permissions) or damaged: say why, with the fix.
        print(f"{PROG}: warning: profile '{profile.name}': {exc}", file=sys.stderr)
        return {"signed_in": None, "account": None, "expires_at": None, "error": str(exc)}
    if tokens is None:
        return {"signed_in": False, "account": None, "expires_at": None}
    return {"signed_in": True, "account": tokens.account or None,
            "expires_at": report.iso(tokens.expires_at)}


def _list_profiles(args: argparse.Namespace) -> int:
    profiles = _profiles().list()
    rows = [{**p.to_json(), **_token_summary(p)} for p in profiles]
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print(f"No profiles yet (create one: {PROG} create-profile --name NAME --tenant-id ... "
              "--client-id ...)", file=sys.stderr)
        return EXIT_OK
    for line in profiles_text(rows, output_width(sys.stdout)):
        print(line)
    return EXIT_OK


def _sign_out(client: TokenClient) -> bool:
    """Delete the profile's tokens, then ask the provider to revoke the
    refresh token (RFC 7009), in bounded time; one line says how that went."""
    signed_out = client.sign_out()
    if signed_out:
        print(f"{PROG}: {client.revoke(signed_out.tokens).line}", file=sys.stderr)
    return bool(signed_out)


def _delete_profile(args: argparse.Namespace) -> int:
    store = _profiles()
    profile = store.get(args.name, hint=f"see: {PROG} list-profiles")
    client = _client(profile)
    _sign_out(client)                   # revoke first, while the refresh token is at hand
    # Then the lock and sign-in files; refused while a sign-in is under way.
    client.store.remove_profile(profile.name)
    store.delete(profile.name)
    print(f"Profile '{profile.name}' and its saved tokens deleted", file=sys.stderr)
    return EXIT_OK


def _logout(args: argparse.Namespace) -> int:
    profile = _profiles().get(args.profile, hint=f"see: {PROG} list-profiles")
    if _sign_out(_client(profile)):
        print(f"Signed out of profile '{profile.name}' (saved tokens deleted)", file=sys.stderr)
    else:
        print(f"Profile '{profile.name}' was not signed in", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
