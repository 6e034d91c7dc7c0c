"""The token service's shared secret: one file, readable by root and one group.

Programs prove they may have the signed-in person's tokens by sending this
secret in ``X-IDENTITY-HEADER`` (the App Service managed-identity protocol,
see :mod:`agent.tokenservice`). Who may read the file is who may get tokens:
root, and the members of :data:`TOKEN_GROUP` (``deploy/install.sh
--token-users USER...`` adds them). The file is
``<config dir>/token-service.secret`` (``/etc/entra-agent`` on a board),
mode 0640 ``root:entra-agent-tokens``, or 0600 when the group does not exist.

>>> secret = ensure_secret(secret_path())          # doctest: +SKIP
>>> print(env_lines("http://127.0.0.1:42424/msi/token", secret))  # doctest: +SKIP
export IDENTITY_ENDPOINT=http://127.0.0.1:42424/msi/token
export IDENTITY_HEADER=…
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import stat
from pathlib import Path

from agent import paths
from agent.errors import ConfigError, StorageError

__all__ = ["TOKEN_GROUP", "SECRET_NAME", "ENV_FORMATS", "secret_path", "read_secret",
           "ensure_secret", "env_lines"]

log = logging.getLogger(__name__)

#: The group whose members may read the secret (and so get tokens).
TOKEN_GROUP = "entra-agent-tokens"
#: The file name, in the agent's config folder.
SECRET_NAME = "token-service.secret"
#: ``shell``: ``export NAME=value`` lines (``eval "$(entra-agent token-env)"``);
#: ``systemd``: ``NAME=value`` lines for another unit's ``EnvironmentFile=``
#: (systemd does not know ``export``: it would read a variable named "export NAME").
ENV_FORMATS = ("shell", "systemd")

_SECRET_RE = re.compile(r"^[0-9a-f]{64}$")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def secret_path() -> Path:
    """``<config dir>/token-service.secret`` (``/etc/entra-agent/token-service.secret``)."""
    return paths.config_dir() / SECRET_NAME


def read_secret(path: Path) -> str:
    """The secret in *path* (64 hex digits), checked before it is trusted.

    :raises ConfigError: when the file is missing, not a regular file, a
        symbolic link, readable or writable by others, owned by someone
        other than root or this user, or does not hold a secret.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{path}: the token service's secret does not exist",
                          "create it: sudo entra-agent token-env (or sudo deploy/install.sh)") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read the token service's secret (permission denied)",
                          f"ask an admin to add you to the group {TOKEN_GROUP}: "
                          f"sudo deploy/install.sh --token-users {_user()}, then log in again") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"{path}: the token service's secret is a symbolic link",
                              f"remove it; it is made again: sudo rm {path}") from None
        raise ConfigError(f"{path}: cannot read the token service's secret: "
                          f"{exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        _check(path, st)
        raw = os.read(fd, 256)
    finally:
        os.close(fd)
    text = raw.decode("ascii", "replace").strip()
    if not _SECRET_RE.match(text):
        raise ConfigError(f"{path}: the token service's secret is damaged (not 64 hex digits)",
                          f"remove it; it is made again: sudo rm {path} && sudo entra-agent token-env")
    return text


def ensure_secret(path: Path) -> str:
    """The secret in *path*, creating it first when there is none.

    A new file is 0640 with group :data:`TOKEN_GROUP` when that group
    exists, else 0600 (only root may then get tokens); it is written
    atomically (a temp file, fsync, rename) so a reader never sees half.
    """
    if not os.path.lexists(path):
        _create(path)
    return read_secret(path)


def env_lines(endpoint: str, secret: str, form: str = "shell") -> str:
    """The two lines that point an Azure SDK at the token service.

    *form* is one of :data:`ENV_FORMATS`. Neither value needs quoting (a
    URL of an IP literal, and hex digits).
    """
    if form not in ENV_FORMATS:
        raise ValueError(f"form must be one of {', '.join(ENV_FORMATS)}, not {form!r}")
    prefix = "export " if form == "shell" else ""
    return (f"{prefix}IDENTITY_ENDPOINT={endpoint}\n"
            f"{prefix}IDENTITY_HEADER={secret}\n")


def _check(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path}: the token service's secret is not a regular file",
                          f"remove it; it is made again: sudo rm {path}")
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"{path}: the token service's secret belongs to uid {st.st_uid}, not root",
                          f"run: sudo chown root {path}")
    if st.st_mode & 0o007:
        raise ConfigError(f"{path}: the token service's secret is open to every user",
                          f"run: sudo chmod 640 {path}")
    if st.st_mode & 0o020:
        raise ConfigError(f"{path}: the token service's secret is writable by its group",
                          f"run: sudo chmod 640 {path}")


def _group_id() -> int | None:
    import grp
    try:
        return grp.getgrnam(TOKEN_GROUP).gr_gid
    except KeyError:
        return None


def _user() -> str:
    import pwd
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _create(path: Path) -> None:
    from agent.fileio import write_atomic
    gid = _group_id()
    mode = 0o640 if gid is not None else 0o600
    content = (secrets.token_hex(32) + "\n").encode("ascii")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # overwrite=False: never replaces a secret another process just made.
        write_atomic(path, content, mode=mode, group=gid, overwrite=False)
    except FileExistsError:
        return
    except OSError as exc:
        hint = ("the agent's config folder is read-only to the service: create it once with "
                "sudo entra-agent token-env (or sudo deploy/install.sh)"
                if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else f"check {path.parent}")
        raise StorageError(f"cannot create the token service's secret {path}: "
                           f"{exc.strerror or exc}", hint) from None
    if gid is None:
        log.warning("created %s readable by root only: the group %s does not exist "
                    "(run: sudo deploy/install.sh --token-users USER)", path, TOKEN_GROUP)
    else:
        log.info("created the token service's secret %s (root and group %s)", path, TOKEN_GROUP)
