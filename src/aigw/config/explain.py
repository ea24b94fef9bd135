"""Config validation errors phrased for the operator: field path, what is wrong, what is allowed.

An unknown key names the nearest allowed ones (``cache.ttl: unknown key; did you
mean 'ttl_s'?``), or lists them all when none is close, so a typo never needs
the docs to fix.
"""

from __future__ import annotations

import datetime
import difflib
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError


def field_path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def describe(exc: ValidationError, root: type[BaseModel], prefix: str = "") -> list[str]:
    """One ``path: problem`` line per error of ``exc`` (raised validating ``root``)."""
    out = []
    for e in exc.errors():
        loc = tuple(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")  # our own validators' words, as written
        if e["type"] == "extra_forbidden" and loc:
            msg = "unknown key" + _allowed_hint(str(loc[-1]), _keys_at(root, loc[:-1]))
        elif e["type"] == "string_type":
            msg += _read_as(e.get("input"))
        elif e["type"] == "model_type":  # "a valid dictionary or instance of Deployment": a class of the code
            msg = f"expected a mapping of settings (key: value), got {_kind(e.get('input'))}"
        out.append(f"{field_path(loc, prefix)}: {msg}")
    return out


def _kind(value: Any) -> str:
    """What YAML made of a value, in the operator's words (the value itself is not echoed)."""
    if isinstance(value, bool):
        return "a true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "nothing" if value is None else f"a {type(value).__name__}"


def _read_as(value: Any) -> str:
    """What YAML made of a value written unquoted where text was expected (Azure's ``api_version: 2024-10-21``
    is a date to YAML, ``master_key: 12345`` a number, ``host: yes`` a boolean). A number is not echoed: it may
    be a key."""
    if isinstance(value, bool):
        return "; YAML read a true or false (yes, no, on, off, true, false): quote it"
    if isinstance(value, datetime.datetime):
        return "; YAML read a date and time: quote it"
    if isinstance(value, datetime.date):
        return f'; YAML read {value.isoformat()} as a date: quote it ("{value.isoformat()}")'
    if isinstance(value, int | float):
        return "; YAML read a number: quote it"
    return ""


def _allowed_hint(key: str, allowed: list[str]) -> str:
    if not allowed:
        return " (not allowed here)"
    starts = [a for a in allowed if a.startswith(key)] if len(key) >= 3 else []  # `input` -> input_per_mtok
    close = list(dict.fromkeys((starts if len(starts) <= 2 else [])
                               + difflib.get_close_matches(key, allowed, n=2, cutoff=0.6)))[:2]
    if close:
        return f"; did you mean {' or '.join(repr(c) for c in close)}?"
    return f"; allowed here: {', '.join(allowed)}"


def _keys_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model at ``loc`` (below ``root``) accepts; [] when it cannot be told."""
    node: Any = root
    for part in loc:
        node = _step(node, part)
        if node is None:
            return []
    model = model_in(node)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _step(node: Any, part: int | str) -> Any:
    model = model_in(node)
    if model is not None and isinstance(part, str):
        for name, f in model.model_fields.items():
            if part in (name, f.alias):
                return f.annotation
        return None
    for arg in options(node):
        origin = get_origin(arg)
        if origin is dict and isinstance(part, str):
            return get_args(arg)[1]
        if origin is list and isinstance(part, int):
            return get_args(arg)[0]
    return None


def options(node: Any) -> list[Any]:
    """``X | None`` and ``Annotated[X, ...]`` unwrapped to their members."""
    origin = get_origin(node)
    if origin is Annotated:
        return options(get_args(node)[0])
    if origin is Union or origin is types.UnionType:
        return [o for a in get_args(node) for o in options(a)]
    return [node]


def model_in(node: Any) -> type[BaseModel] | None:
    for arg in options(node):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
