"""The command-line parser both commands share: ``-v`` anywhere, "did you mean".

argparse refuses ``entra-auth-cli get-token -v`` (the flag belongs to the
top-level parser) and answers a typo with the whole list of choices.
:class:`Parser` adds ``-v`` to every subcommand too (:func:`verbosity` sums
both places) and appends the nearest command, flag or choice to the error::

    entra-auth-cli: error: argument COMMAND: invalid choice: 'get-tokn' (choose from ...) (did you mean 'get-token'?)
"""

from __future__ import annotations

import argparse
import re
from typing import Any, NoReturn

__all__ = ["Parser", "add_verbose", "verbosity", "suggestion"]

_INVALID_CHOICE = re.compile(r"invalid choice: '(?P<word>[^']*)' \(choose from (?P<choices>.*)\)")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (?P<words>.*)")


def suggestion(word: str, candidates: list[str]) -> str | None:
    """The candidate nearest to *word*, or None when none is close."""
    import difflib  # only on an error: not on every start

    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors name the nearest command, flag or choice."""

    def error(self, message: str) -> NoReturn:
        hint = self._did_you_mean(message)
        super().error(f"{message} (did you mean {hint}?)" if hint else message)

    def _did_you_mean(self, message: str) -> str | None:
        if m := _INVALID_CHOICE.search(message):
            choices = re.findall(r"'([^']*)'", m.group("choices"))
            near = suggestion(m.group("word"), choices)
            return f"'{near}'" if near else None
        if m := _UNRECOGNIZED.search(message):
            flags = sorted(_option_strings(self))
            for word in m.group("words").split():
                if word.startswith("--"):
                    near = suggestion(word.split("=", 1)[0], flags)
                    if near:
                        return f"'{near}'"
        return None


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every long flag of *parser* and of its subcommands."""
    found: set[str] = set()
    for action in parser._actions:                   # noqa: SLF001 - argparse has no public walk
        found.update(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):   # noqa: SLF001
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


def add_verbose(parser: argparse.ArgumentParser, *, help: str, top: bool = False) -> None:
    """``-v/--verbose`` (counted) on *parser*; *top* for the top-level one."""
    if top:
        parser.add_argument("-v", "--verbose", action="count", default=0, help=help)
    else:
        # Its own dest, so "-v get-token -v" counts both (argparse would let
        # the subcommand's value replace the top-level one).
        parser.add_argument("-v", "--verbose", action="count", dest="verbose_sub",
                            default=argparse.SUPPRESS, help=help)


def verbosity(args: Any) -> int:
    """How many ``-v`` were given, before and after the subcommand."""
    return int(getattr(args, "verbose", 0) or 0) + int(getattr(args, "verbose_sub", 0) or 0)
