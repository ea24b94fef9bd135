"""Pydantic's validation errors of an OpenAI-shaped body, told as OpenAI tells them: the field path the
client wrote, OpenAI's ``code``, one message."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from aigw import errors
from aigw.types import JSON

# pydantic's names of a plain union's scalar branches (``str | list[str]``: "str", "list[str]")
_BRANCHES = frozenset({"str", "int", "float", "bool", "none", "function-after"})


def _loc(loc: tuple[int | str, ...]) -> str:
    # drop pydantic's union-branch tags so the param reads like the client's field path
    parts = [str(p) for p in loc if not (isinstance(p, str) and (p[:1].isupper() or "[" in p or p in _BRANCHES))]
    return ".".join(parts)


# pydantic's error type -> the ``code`` OpenAI sends for the same mistake (clients branch on ``err.code``)
_RANGE = {"greater_than_equal": "below_min_value", "greater_than": "below_min_value",
          "less_than_equal": "above_max_value", "less_than": "above_max_value"}


def _code(model: type[BaseModel], error: Any) -> str:
    """OpenAI's error code for a pydantic error: a number's range says integer or decimal as its field does."""
    kind = str(error["type"])
    if kind == "missing":
        return "missing_required_parameter"
    if kind in _RANGE:
        field = model.model_fields.get(str(error["loc"][0]))
        number = "decimal" if field is not None and "float" in str(field.annotation) else "integer"
        return f"{number}_{_RANGE[kind]}"
    if kind == "too_short" and (error.get("ctx") or {}).get("actual_length") == 0:
        return "empty_array"
    if kind.endswith("_type") and kind != "invalid_tool_type":
        return "invalid_type"
    return "invalid_value"


def _first(exc: ValidationError) -> tuple[Any, str, str]:
    """The error to report, its param and message. A field of several types (``str | list[...]``) fails once
    per branch: the branch that got deepest into the value is the one the client meant (a list of parts with
    a bad part is not "Input should be a valid string"); branches that fail at the same place are all named
    ("a valid string or a valid list")."""
    found = exc.errors()
    same_field = [e for e in found if e["loc"][:1] == found[0]["loc"][:1]]
    params = [_loc(tuple(e["loc"])) for e in same_field]
    deepest = max(range(len(same_field)), key=lambda i: len(params[i].split(".")))  # the first of the deepest
    msgs = [str(e["msg"]) for e, p in zip(same_field, params, strict=True) if p == params[deepest]]
    rest = [m.removeprefix("Input should be ") for m in msgs[1:]]
    return same_field[deepest], params[deepest], " or ".join(dict.fromkeys([msgs[0], *rest]))


def check_body(model: type[BaseModel], body: JSON) -> None:
    try:
        model.model_validate(body)
    except ValidationError as exc:
        error, param, message = _first(exc)
        said = f"Missing required parameter: '{param}'." if error["type"] == "missing" else \
            f"Invalid value for '{param}': {message}"
        raise errors.InvalidRequest(said, param=param, code=_code(model, error)) from None
