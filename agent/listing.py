"""``list-profiles`` as text that fits: a table when it fits, else a block per profile.

The table of name, authority, client id, scopes and sign-in state is easily
150 columns wide; where it does not fit (80 columns off a terminal, the
terminal's width on one), each profile becomes a short block with its name
first, so ``list-profiles | grep -q NAME`` works either way.
"""

from __future__ import annotations

from typing import Any, TextIO

from agent import termui

__all__ = ["LIST_WIDTH", "output_width", "profiles_text"]

#: Width list-profiles keeps to when stdout is not a terminal, in columns.
LIST_WIDTH = 80
_LABEL = 13


def output_width(stream: TextIO) -> int:
    """Columns of *stream* when it is a terminal, else :data:`LIST_WIDTH`."""
    return termui.terminal(stream).width or LIST_WIDTH


def profiles_text(rows: list[dict[str, Any]], width: int) -> list[str]:
    """The lines for *rows* (``list-profiles --output json`` objects)."""
    table = [("NAME", "AUTHORITY", "CLIENT ID", "SCOPES", "SIGNED IN")]
    for r in rows:
        state = {True: r["account"] or "yes", False: "no", None: "? (see warning)"}[r["signed_in"]]
        table.append((r["name"], r["authority"], r["client_id"], " ".join(r["scopes"]), state))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    if max(len(line) for line in lines) <= width:
        return lines
    out: list[str] = []
    for r in rows:
        state = {True: f"signed in as {r['account']}" if r["account"] else "signed in",
                 False: "not signed in", None: "sign-in unknown (see warning)"}[r["signed_in"]]
        if out:
            out.append("")
        out.append(f"{r['name']}: {state}")
        for label, values in (("authority", [r["authority"]]), ("client id", [r["client_id"]]),
                              ("scopes", list(r["scopes"]))):
            for i, value in enumerate(values):
                head = f"    {label if i == 0 else '':<{_LABEL - 4}}"
                for j, piece in enumerate(termui.split_address(value, max(20, width - len(head)))):
                    out.append((head if j == 0 else " " * len(head)) + piece)
    return out
