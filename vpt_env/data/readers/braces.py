"""Shell-style brace expansion for shard lists (``"cc-{000..009}.tar"``), without a dependency."""

from __future__ import annotations

import re

__all__ = ["expand_braces"]

_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?")


def _alternatives(body: str) -> list[str] | None:
    """The expansions of one brace group's body, or None if it is literal (``{x}``)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    if parts:
        return [*parts, body[start:]]
    m = _RANGE.fullmatch(body)
    if m is None:
        return None
    a, b = int(m.group(1)), int(m.group(2))
    step = abs(int(m.group(3) or 1)) or 1
    # As bash: a leading zero on either end pads every number to the longer end's width.
    padded = any(re.fullmatch(r"-?0\d+", g) for g in m.group(1, 2))
    width = max(len(m.group(1)), len(m.group(2))) if padded else 0
    values = range(a, b + 1, step) if a <= b else range(a, b - 1, -step)
    return [f"{v:0{width}d}" for v in values]


def expand_braces(pattern: str) -> list[str]:
    """Expand shell-style braces: lists ``{a,b}`` and numeric ranges ``{000..009}``.

    Ranges keep zero padding (``{08..10}`` -> ``08 09 10``), may count down
    and take a step (``{0..10..5}``); groups nest and combine left to right.
    A brace group with neither a comma nor a range (``{x}``) stays literal.

    >>> expand_braces("shards/cc-{000..002}.tar")
    ['shards/cc-000.tar', 'shards/cc-001.tar', 'shards/cc-002.tar']
    >>> expand_braces("{a,b{1..2}}-{x}.tar")
    ['a-{x}.tar', 'b1-{x}.tar', 'b2-{x}.tar']
    """
    depth, start = 0, -1
    for i, ch in enumerate(pattern):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                alts = _alternatives(pattern[start + 1 : i])
                if alts is not None:
                    head, tail = pattern[:start], pattern[i + 1 :]
                    return [out for alt in alts for out in expand_braces(head + alt + tail)]
    return [pattern]
