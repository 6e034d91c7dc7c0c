"""Sign-in profiles: which app, tenant (or issuer) and scopes to use.

Kept in ``profiles.toml`` (root 0644 under /etc/entra-agent: no secrets in
it), one table per profile::

    [profiles.raspberry-pi]
    client_id = "11111111-2222-3333-4444-555555555555"
    tenant_id = "contoso.onmicrosoft.com"
    cloud = "public"
    scopes = ["https://graph.microsoft.com/User.Read"]
    default_flow = "device-code"
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agent.auth.endpoints import CLOUDS, require_secure, validate_tenant
from agent.errors import AgentError, ConfigError, UsageError
from agent.textsafe import clean

__all__ = [
    "DEFAULT_PROFILE", "DEFAULT_SCOPES", "FLOWS", "Profile", "ProfileStore",
    "validate_profile_name", "validate_client_id", "validate_scopes",
]

log = logging.getLogger(__name__)

DEFAULT_PROFILE = "default"
#: Scopes when a profile names none (the seed's Raspberry Pi example).
DEFAULT_SCOPES = ("https://graph.microsoft.com/User.Read",)
#: Sign-in flows a profile may default to (a headless device has one).
FLOWS = ("device-code",)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SCOPE = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")   # RFC 6749 §3.3 scope-token


def validate_profile_name(name: str) -> str:
    """Letters, digits, '.', '_' and '-', starting with a letter or digit."""
    if not name or not _NAME.match(name):
        raise UsageError(
            f"profile name {name!r} is not valid",
            "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def validate_client_id(client_id: str, *, entra: bool) -> str:
    """Entra client ids are GUIDs; other providers' are any token without spaces."""
    client_id = (client_id or "").strip()
    if entra and not _GUID.match(client_id):
        raise UsageError(
            f"client id {client_id!r} is not a GUID",
            "copy the 'Application (client) ID' from the app registration's Overview page",
        )
    if not client_id or len(client_id) > 255 or any(c.isspace() for c in client_id):
        raise UsageError(f"client id {client_id!r} is not valid",
                         "give the client id your provider shows for the app")
    return client_id


def validate_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Split comma-separated values, drop duplicates, check each scope token."""
    out: list[str] = []
    for item in scopes:
        for scope in re.split(r"[,\s]+", item.strip()):
            if not scope:
                continue
            if not _SCOPE.match(scope):
                raise UsageError(f"scope {scope!r} is not valid",
                                 "a scope has no spaces or quotes, e.g. https://graph.microsoft.com/User.Read")
            if scope not in out:
                out.append(scope)
    return tuple(out)


@dataclass(frozen=True)
class Profile:
    """One sign-in configuration: Entra (tenant + cloud) or an OIDC issuer."""

    name: str
    client_id: str
    tenant_id: str | None = None
    cloud: str = "public"
    issuer: str | None = None
    authority_host: str | None = None   # replaces the cloud's login host (sandbox, private clouds)
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    default_flow: str = "device-code"
    offline_access: bool = True         # without it Entra returns no refresh token

    @property
    def is_entra(self) -> bool:
        return self.issuer is None

    @property
    def authority(self) -> str:
        """Where sign-in happens, for people: the issuer or the tenant's authority."""
        if self.issuer:
            return self.issuer
        host = self.authority_host or CLOUDS.get(self.cloud, "?")
        return f"{host.rstrip('/')}/{self.tenant_id}"

    def validated(self) -> "Profile":
        """Return a normalised copy, or raise UsageError saying what is wrong."""
        validate_profile_name(self.name)
        if self.issuer and self.tenant_id:
            raise UsageError("a profile takes either --tenant-id (Entra) or --issuer (other OpenID provider), not both")
        if not self.issuer and not self.tenant_id:
            raise UsageError("missing --tenant-id (or --issuer for a non-Entra provider)",
                             "give your Entra tenant's GUID or domain, or 'organizations'")
        if self.cloud not in CLOUDS:
            raise UsageError(f"unknown cloud {self.cloud!r}", f"use one of: {', '.join(CLOUDS)}")
        if self.default_flow not in FLOWS:
            raise UsageError(f"unknown flow {self.default_flow!r}", f"use one of: {', '.join(FLOWS)}")
        tenant = validate_tenant(self.tenant_id) if self.tenant_id else None
        issuer = require_secure(self.issuer.rstrip("/"), "issuer") if self.issuer else None
        host = require_secure(self.authority_host.rstrip("/"), "authority host") if self.authority_host else None
        scopes = validate_scopes(list(self.scopes)) or DEFAULT_SCOPES
        client_id = validate_client_id(self.client_id, entra=self.is_entra and host is None)
        return replace(self, tenant_id=tenant, issuer=issuer, authority_host=host,
                       scopes=scopes, client_id=client_id)

    def to_table(self) -> dict[str, Any]:
        table: dict[str, Any] = {"client_id": self.client_id}
        if self.issuer:
            table["issuer"] = self.issuer
        else:
            table["tenant_id"] = self.tenant_id
            table["cloud"] = self.cloud
        if self.authority_host:
            table["authority_host"] = self.authority_host
        table["scopes"] = list(self.scopes)
        table["default_flow"] = self.default_flow
        if not self.offline_access:
            table["offline_access"] = False
        return table

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, **self.to_table(), "authority": self.authority}


# (`list` inside ProfileStore is its method: name the type out here.)
_Names = list[str]

_KEYS = {"client_id", "tenant_id", "cloud", "issuer", "authority_host", "scopes",
         "default_flow", "offline_access"}


class ProfileStore:
    """The profiles file: read, add, replace and delete profiles."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, dict[str, Any]]:
        from agent.fileio import FileTooLarge, NotRegularFile, read_regular
        try:
            raw = read_regular(self.path)
        except FileNotFoundError:
            return {}
        except PermissionError:
            raise ConfigError(f"cannot read {self.path}: permission denied",
                              "run as root (sudo) or as the user who created the profile") from None
        except (NotRegularFile, FileTooLarge) as exc:
            raise ConfigError(f"{self.path}: the profiles file {exc.strerror}",
                              "move it away; entra-auth-cli create-profile writes a new one") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            # TOML is UTF-8; `from None`: the error carries the raw bytes.
            raise ConfigError(f"{self.path}: not UTF-8 text (byte {exc.start} is not valid UTF-8)",
                              "save it as UTF-8, or fix or delete the file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{self.path}: not valid TOML ({exc})", "fix or delete the file") from None
        except RecursionError:
            raise ConfigError(f"{self.path}: not valid TOML (arrays or tables nested too deeply)",
                              "fix or delete the file") from None
        profiles = data.get("profiles", {})
        if not isinstance(profiles, dict):
            raise ConfigError(f"{self.path}: 'profiles' must be a table of profiles")
        return profiles

    def _build(self, name: str, table: Any) -> Profile:
        where = f"{self.path}: profiles.{clean(name, 64)}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        unknown = set(table) - _KEYS
        if unknown:
            shown = ", ".join(sorted(clean(k, 40) for k in unknown))
            raise ConfigError(f"{where} has unknown key(s) {shown}",
                              f"known keys: {', '.join(sorted(_KEYS))}")

        def text(key: str, default: str | None = None, required: bool = False) -> str | None:
            value = table.get(key, default)
            if value is None and not required:
                return None
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where}.{key} must be a non-empty text, got {_shown(value)}",
                                  "fix the file, or recreate the profile with entra-auth-cli "
                                  "create-profile --force")
            return value

        scopes = table.get("scopes", list(DEFAULT_SCOPES))
        if isinstance(scopes, str):
            scopes = [scopes]
        if not isinstance(scopes, list) or not scopes \
                or not all(isinstance(v, str) and v.strip() for v in scopes):
            raise ConfigError(f"{where}.scopes must be a non-empty list of scopes, got {_shown(scopes)}",
                              'e.g. scopes = ["https://graph.microsoft.com/User.Read"]')
        offline = table.get("offline_access", True)
        if not isinstance(offline, bool):
            raise ConfigError(f"{where}.offline_access must be true or false, got {_shown(offline)}")
        try:
            return Profile(name=name, client_id=text("client_id", required=True) or "",
                           tenant_id=text("tenant_id"), cloud=text("cloud", "public") or "public",
                           issuer=text("issuer"), authority_host=text("authority_host"),
                           scopes=tuple(scopes),
                           default_flow=text("default_flow", "device-code") or "device-code",
                           offline_access=offline).validated()
        except AgentError as exc:
            # A bad value in the file is a file problem (exit 3), whatever the
            # same value on the command line would be.
            raise ConfigError(f"{self.path}: profile '{clean(name, 64)}': {exc}") from None

    def list(self) -> list[Profile]:
        """Every profile, sorted by name."""
        return [self._build(n, t) for n, t in sorted(self._read().items())]

    def names(self) -> _Names:
        """The names of every profile, sorted."""
        return sorted(self._read())

    def get(self, name: str, *, hint: str | None = None) -> Profile:
        """The profile called *name*; ConfigError (with *hint*, or how to create
        it) when there is none."""
        profiles = self._read()
        if name not in profiles:
            known = ", ".join(clean(n, 64) for n in sorted(profiles)) or "none yet"
            raise ConfigError(
                f"no profile named '{name}' in {self.path} (profiles: {known})",
                hint or f"create it: entra-auth-cli create-profile --name {name} "
                        "--tenant-id ... --client-id ...",
            )
        return self._build(name, profiles[name])

    def save(self, profile: Profile, *, replace_existing: bool = False) -> None:
        """Add *profile* (or replace it when *replace_existing*)."""
        profile = profile.validated()
        profiles = self._read()
        if profile.name in profiles and not replace_existing:
            raise UsageError(f"profile '{profile.name}' already exists",
                             "use --force to replace it, or pick another --name")
        profiles[profile.name] = profile.to_table()
        self._write(profiles)

    def delete(self, name: str) -> bool:
        profiles = self._read()
        if name not in profiles:
            return False
        del profiles[name]
        self._write(profiles)
        return True

    def _write(self, profiles: dict[str, dict[str, Any]]) -> None:
        from agent.fileio import write_atomic
        text = _dump(profiles)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        # 0644: no secrets in it; readable so users can list the profiles.
        write_atomic(self.path, text.encode("utf-8"), mode=0o644)


def _shown(value: Any) -> str:
    """*value* for a "got ..." in a message: short, no control characters."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + clean(value, 80) + '"'
    if isinstance(value, (int, float)):
        return clean(repr(value), 40)
    return "a table" if isinstance(value, dict) else "a list" if isinstance(value, list) \
        else type(value).__name__


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def _dump(profiles: dict[str, dict[str, Any]]) -> str:
    """TOML for the profiles table (flat values only: no writer dependency)."""
    lines = ["# Sign-in profiles of entra-device-agent (written by entra-auth-cli).", ""]
    for name in sorted(profiles):
        lines.append(f'[profiles."{name}"]')
        for key, value in profiles[name].items():
            if value is None:
                continue
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)
