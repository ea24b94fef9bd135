"""``${NAME}`` references in config values, expanded with a lookup (pure: ``load.py`` passes the environment).

- ``${NAME}``: NAME's value; an error when NAME is unset (set and empty: empty).
- ``${NAME:-default}``: NAME's value, or ``default`` when NAME is unset or empty (as a shell reads it); the
  default may hold references of its own (``${A:-${B:-x}}``), read only when it is used.
- ``$${``: a literal ``${``.

Anything else that starts with ``${`` is an error, never kept as text: ``${KEY:default}`` once went upstream as
an API key. A variable's value is not read again for references.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FORMS = "${NAME} or ${NAME:-default} ($${ for a literal ${)"


class RefError(ValueError):
    """A reference that cannot be expanded: the message says which and why (without the field path)."""


def expand(text: str, lookup: Callable[[str], str | None], taken: list[str] | None = None) -> str:
    """``text`` with its references expanded; ``lookup(name)`` is the variable's value, or None when unset.
    ``taken`` gets the names of the variables whose values went into the text (not a default's words)."""
    if "$" not in text:
        return text
    return _expand(text, 0, lookup, True, False, [] if taken is None else taken)[0]


def _expand(text: str, i: int, lookup: Callable[[str], str | None], used: bool, nested: bool,
            taken: list[str]) -> tuple[str, int]:
    """From ``text[i]`` to its end (or, ``nested``, to the ``}`` closing a default): the text and where it ended.
    ``used``: False in a default that is not taken, whose unset variables are no error."""
    out: list[str] = []
    while i < len(text):
        if text.startswith("$${", i):
            out.append("${")
            i += 3
        elif text.startswith("${", i):
            value, i = _reference(text, i, lookup, used, taken)
            out.append(value)
        elif nested and text[i] == "}":
            return "".join(out), i
        else:
            out.append(text[i])
            i += 1
    return "".join(out), i


def _reference(text: str, start: int, lookup: Callable[[str], str | None], used: bool,
               taken: list[str]) -> tuple[str, int]:
    """The reference at ``text[start]`` (``${``): its value and the index past its ``}``."""
    name = _NAME.match(text, start + 2)
    j = name.end() if name else start + 2
    if name and text.startswith("}", j):
        value = lookup(name.group())
        if value is None and used:
            raise RefError(f"environment variable {name.group()} is not set (use ${{{name.group()}:-default}})")
        if value is not None and used:
            taken.append(name.group())
        return value or "", j + 1
    if name and text.startswith(":-", j):
        current = lookup(name.group())
        default, k = _expand(text, j + 2, lookup, used and not current, True, taken)
        if k < len(text):  # at its "}"
            if current and used:
                taken.append(name.group())
            return current or default, k + 1
    raise RefError(f"{_shown(text[start:])} is not a reference: write {FORMS}")


def _shown(rest: str) -> str:
    """The malformed reference as written: up to its ``}`` (or the value's end), at most 40 characters."""
    close = rest.find("}")
    ref = rest[: close + 1] if close >= 0 else rest
    return repr(ref if len(ref) <= 40 else ref[:40] + "...")
