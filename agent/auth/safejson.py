"""Strict JSON from a hostile peer: UTF-8 only, finite numbers, bounded nesting.

``NaN``/``Infinity``/``1e999`` are refused, nesting is bounded
(:data:`MAX_DEPTH`, counted without recursion) and ``RecursionError`` is
caught, so an answer body never costs more than its size nor reaches a
caller as a value no JSON producer should send.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from agent.auth.errors import InvalidAnswer, ProviderUnavailable, origin

__all__ = ["MAX_DEPTH", "not_json", "parse_json"]

#: Deepest JSON nesting accepted (OAuth answers are 2 levels deep).
MAX_DEPTH = 32


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("non-finite number")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of *value*, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    children: Iterable[Any]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def parse_json(body: bytes, what: str, url: str) -> Any:
    """Parse an answer body as strict JSON (RFC 8259, UTF-8).

    :raises ProviderUnavailable: not JSON (a captive portal's HTML page).
    :raises InvalidAnswer: JSON with ``NaN``/``Infinity``/``1e999`` or
        nested deeper than :data:`MAX_DEPTH`.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise not_json(what, url) from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidAnswer(f"{what} sent JSON nested too deeply, from {origin(url)}",
                             "report this to the provider") from None
    except ValueError as exc:       # JSONDecodeError, non-finite numbers, huge integers
        if "non-finite" in str(exc):
            raise InvalidAnswer(f"{what} sent a non-finite number (NaN or Infinity), "
                                 f"from {origin(url)}", "report this to the provider") from None
        raise not_json(what, url) from None
    if _depth(value) > MAX_DEPTH:
        raise InvalidAnswer(f"{what} sent JSON nested too deeply, from {origin(url)}",
                             "report this to the provider")
    return value


def not_json(what: str, url: str) -> ProviderUnavailable:
    return ProviderUnavailable(
        f"{what} sent an answer that is not JSON, from {origin(url)}",
        "check the network: a proxy or captive portal may be in the way",
    )
