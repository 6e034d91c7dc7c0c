"""``entra-agent config set KEY=VALUE ...``: change agent.toml in place, checked first.

Every other line of the file stays as it is, comments included, and a
changed line keeps its trailing comment where it stood. A table the starter
file keeps commented out (``# [display]``) is uncommented where it stands,
with the key if it is there commented out too, so the file still reads top
to bottom with one of each table. A table the file does not mention at all
is added at the end.

The new text is checked with the agent's own loader (:func:`agent.config.load_config`,
the same messages with file, key and "did you mean") before it takes the
file's place, atomically (:func:`agent.fileio.write_atomic`), and only when
something changed: a run that sets what is already there writes nothing.

A value that reads as a TOML number, ``true``/``false``, an array or a quoted
string is written as that (``button.pin=17`` is the integer 17); anything
else is a text (``telemetry.endpoint=https://...``). When the loader refuses
a typed value but takes it as text (``device_id=1234``), text it is.

Exit codes: 2 for a malformed ``KEY=VALUE`` or a key or value the config
refuses, 3 when the file is missing or already invalid, 6 when it cannot be
written.

>>> set_values(Path("/etc/entra-agent/agent.toml"), ["display.driver=sh1106"])  # doctest: +SKIP
True
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ConfigError, StorageError, UsageError

__all__ = ["Setting", "parse_setting", "edit_text", "set_values", "add_config_parser"]

log = logging.getLogger(__name__)

#: Mode of a config file this command creates the text of (no secrets in it).
FILE_MODE = 0o644

_KEY = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?\s*(#.*)?$")
_COMMENTED = re.compile(r"^\s*#\s?(\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]\s*(#.*)?)$")
_ANY_HEADER = re.compile(r"^\s*(#\s*)?\[")


@dataclass(frozen=True)
class Setting:
    """One ``table.key=value`` from the command line, with its TOML spelling."""

    table: str          # "" for the top level
    key: str
    raw: str            # as given
    literal: str        # as written into the file
    value: Any          # what the file then holds

    @property
    def dotted(self) -> str:
        return f"{self.table}.{self.key}" if self.table else self.key

    def as_text(self) -> "Setting":
        """This setting with its value written as a TOML string."""
        return Setting(self.table, self.key, self.raw, json.dumps(self.raw), self.raw)


def parse_setting(pair: str) -> Setting:
    """``table.key=value`` as a :class:`Setting`; UsageError when malformed."""
    import tomllib

    dotted, sep, raw = pair.partition("=")
    dotted = dotted.strip()
    if not sep or not _KEY.match(dotted):
        raise UsageError(f"{_shown(pair)} is not KEY=VALUE",
                         "give e.g. telemetry.endpoint=https://api.example.com/telemetry")
    if any(ord(c) < 0x20 and c != "\t" or c == "\x7f" for c in raw):
        raise UsageError(f"the value of {dotted} holds a control character",
                         "give it on one line, without control characters")
    table, _, key = dotted.rpartition(".")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return Setting(table, key, raw, json.dumps(raw), raw)
    if isinstance(value, dict) or not raw.strip():
        return Setting(table, key, raw, json.dumps(raw), raw)
    return Setting(table, key, raw, raw.strip(), value)


def edit_text(original: str, settings: list[Setting]) -> str:
    """*original* with each setting in place (see the module docstring)."""
    lines = original.splitlines()
    for s in settings:
        headers = [(i, m.group(1)) for i, line in enumerate(lines) if (m := _HEADER.match(line))]
        start: int | None
        if s.table:
            found = [i for i, name in headers if name == s.table and not lines[i].lstrip().startswith("[[")]
            start = found[0] + 1 if found else None
        else:
            start = 0
        at: int | None
        if start is None:
            header = _uncomment_table(lines, s.table)
            if header is None:
                lines += ["", f"[{s.table}]", f"{s.key} = {s.literal}"]
                continue
            start = header + 1
            # Its block ends at the next header, commented out or not.
            end = next((i for i in range(start, len(lines)) if _ANY_HEADER.match(lines[i])), len(lines))
            commented = re.compile(rf"^\s*#\s?(\s*{re.escape(s.key)}\s*=.*)$")
            at = next((i for i in range(start, end) if commented.match(lines[i])), None)
            if at is not None:
                match = commented.match(lines[at])
                assert match is not None
                lines[at] = match.group(1).lstrip()
        else:
            end = next((i for i, _ in headers if i >= start), len(lines))
            assign = re.compile(rf"^\s*{re.escape(s.key)}\s*=")
            at = next((i for i in range(start, end) if assign.match(lines[i])), None)
        if at is None:
            insert_at = start if s.table else (headers[0][0] if headers else len(lines))
            lines.insert(insert_at, f"{s.key} = {s.literal}")
        else:
            old = lines[at]
            comment = _comment_of(old)
            new = f"{s.key} = {s.literal}"
            if comment:
                column = len(old) - len(comment.lstrip())      # where the '#' was
                new = new.ljust(column) if len(new) < column else new + " "
                new += comment.lstrip()
            lines[at] = new
    return "\n".join(lines) + "\n"


def set_values(path: Path, pairs: list[str]) -> bool:
    """Set *pairs* (``table.key=value``) in the config file *path*.

    :returns: True when the file was rewritten, False when it held these
        values already (nothing is written then).
    :raises UsageError: a malformed pair, or a key or value the config refuses.
    :raises ConfigError: the file is missing, unreadable or already invalid.
    :raises StorageError: the new file cannot be written.
    """
    from agent.config.loader import parse_config_text, read_config_text

    if not pairs:
        raise UsageError("config set needs at least one KEY=VALUE",
                         "e.g. entra-agent config set display.driver=sh1106")
    settings = _last_wins([parse_setting(pair) for pair in pairs])
    path = Path(path)
    original = read_config_text(path)
    try:
        parse_config_text(path, original)
    except ConfigError as exc:
        raise ConfigError(exc.message, "fix it by hand first, then run this again") from None
    text = edit_text(original, settings)
    if text == original:
        log.debug("%s holds these values already; not written", path)
        return False
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = FILE_MODE
    try:
        _write_checked(path, text, settings, mode)
    except ConfigError as first:
        typed = [s for s in settings if not isinstance(s.value, str)]
        if not typed:
            raise _blame(path, first) from None
        retry = [s.as_text() if s in typed else s for s in settings]
        text = edit_text(original, retry)
        if text == original:
            return False                 # as text, these are the values already there
        try:
            _write_checked(path, text, retry, mode)
        except ConfigError:
            raise _blame(path, first) from None
    return True


def _write_checked(path: Path, text: str, settings: list[Setting], mode: int) -> None:
    """Write *text* to *path* once the loader and a re-read both accept it."""
    import tomllib

    from agent.config import load_config
    from agent.fileio import TempFileError, write_atomic

    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        keys = ", ".join(s.dotted for s in settings)
        raise UsageError(f"{path}: cannot set {keys} in this file ({exc})",
                         "edit the file by hand") from None
    for s in settings:
        node: Any = parsed
        for part in filter(None, s.table.split(".")):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or node.get(s.key) != s.value:
            raise UsageError(f"{path}: {s.dotted} did not take the value {_shown(s.raw)}",
                             "the file places that table oddly; edit it by hand")

    def check(tmp: Path) -> None:
        try:
            load_config(tmp)
        except ConfigError as exc:
            # Messages name the file the person knows, not our temp file.
            raise ConfigError(exc.message.replace(str(tmp), str(path)),
                              exc.hint and exc.hint.replace(str(tmp), str(path))) from None

    try:
        write_atomic(path, text.encode("utf-8"), mode=mode, check=check)
    except TempFileError as exc:
        raise StorageError(f"{path}: cannot write the config file: {exc.strerror}",
                           f"check that {path.parent} is writable (run as root: sudo)") from None
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        raise StorageError(f"{path}: cannot write the config file: {exc.strerror or exc}",
                           f"check that {path.parent} is writable (run as root: sudo)") from None


def _blame(path: Path, error: ConfigError) -> ConfigError | UsageError:
    """*error* as bad input (2) when the file was valid before, else as the file's (3).

    The file on disk is still the original: the write never happened.
    """
    from agent.config import load_config

    try:
        load_config(path)
    except ConfigError as before:
        return ConfigError(f"{before.message}, before any change", before.hint
                           or "fix that by hand first, then run this again")
    return UsageError(error.message, error.hint)


def _last_wins(settings: list[Setting]) -> list[Setting]:
    seen: dict[tuple[str, str], Setting] = {}
    for s in settings:
        seen.pop((s.table, s.key), None)
        seen[(s.table, s.key)] = s
    return list(seen.values())


def _uncomment_table(lines: list[str], table: str) -> int | None:
    """Index of the header line of *table* once uncommented, or None."""
    for i, line in enumerate(lines):
        m = _COMMENTED.match(line)
        if m and m.group(2) == table:
            lines[i] = m.group(1).lstrip()
            return i
    return None


def _comment_of(line: str) -> str:
    """The trailing comment of ``key = value  # ...``: the first '#' before
    which the line parses as TOML (a '#' inside a string does not count)."""
    import tomllib

    for i, ch in enumerate(line):
        if ch == "#":
            try:
                tomllib.loads(line[:i])
            except tomllib.TOMLDecodeError:
                continue
            return line[len(line[:i].rstrip()):]
    return ""


def _shown(text: str) -> str:
    from agent.textsafe import clean

    return "'" + clean(text, 120) + "'"


# -- the command ---------------------------------------------------------------

def add_config_parser(sub: Any, *, config_help: str) -> argparse.ArgumentParser:
    """Add ``config set`` to ``entra-agent``'s subcommands; returns the ``set`` parser."""
    config = sub.add_parser("config", help="change agent.toml: config set KEY=VALUE ...",
                            description="Change agent.toml in place (comments and other lines "
                                        "stay), checked with the agent's config loader first.")
    actions = config.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    setter = actions.add_parser(
        "set", help="set table.key=value pairs",
        description="Set table.key=value pairs in agent.toml, e.g. display.driver=sh1106 "
                    "button.pin=17. Numbers, true/false and quoted strings keep their TOML type; "
                    "anything else is a text. Writes nothing when nothing changes. Exit codes: 2 a "
                    "bad key or value, 3 the file missing or invalid, 6 it cannot be written.")
    setter.add_argument("--config", type=Path, help=config_help)
    setter.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    setter.set_defaults(handler=config_set_command)
    return setter


def config_set_command(args: argparse.Namespace) -> int:
    """``entra-agent config set``: 0 whether or not the file changed."""
    from agent import paths

    path = args.config if args.config is not None else paths.config_file()
    if set_values(path, list(args.pairs)):
        keys = ", ".join(s.dotted for s in _last_wins([parse_setting(p) for p in args.pairs]))
        print(f"updated {path}: {keys}", file=sys.stderr)
    return 0
