"""Pydantic's validation errors of an OpenAI-shaped body, told as OpenAI tells them: the field path the
client wrote, OpenAI's ``code``, one message."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from aigw import errors
from aigw.types import JSON

# pydantic's names of a plain union's scalar branches (``str | list[str]``: "str", "list[str]")
_BRANCHES = frozenset({"str", "int", "float", "bool", "none", "function-after"})


def _parts(loc: tuple[int | str, ...]) -> list[int | str]:
    # drop pydantic's union-branch tags so the param reads like the client's field path
    return [p for p in loc if not (isinstance(p, str) and (p[:1].isupper() or "[" in p or p in _BRANCHES))]


def _loc(loc: tuple[int | str, ...]) -> str:
    """The client's field path as OpenAI writes it, an array's items in brackets ("messages[0].content")."""
    path = ""
    for p in _parts(loc):
        path += f"[{p}]" if isinstance(p, int) else f".{p}" if path else p
    return path


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


def _first(exc: ValidationError) -> tuple[Any, str, str, list[Any]]:
    """The error to report, its param, message and every branch's error at that param. A field of several
    types (``str | list[...]``) fails once per branch: the branch that got deepest into the value is the one
    the client meant (a list of parts with a bad part is not "Input should be a valid string"); branches that
    fail at the same place are all named ("a valid string or a valid list")."""
    found = exc.errors()
    same_field = [e for e in found if e["loc"][:1] == found[0]["loc"][:1]]
    params = [_loc(tuple(e["loc"])) for e in same_field]
    deepest = max(range(len(same_field)), key=lambda i: len(_parts(same_field[i]["loc"])))  # the first of the deepest
    there = [e for e, p in zip(same_field, params, strict=True) if p == params[deepest]]
    msgs = [str(e["msg"]) for e in there]
    rest = [m.removeprefix("Input should be ") for m in msgs[1:]]
    return same_field[deepest], params[deepest], " or ".join(dict.fromkeys([msgs[0], *rest])), there


# pydantic's type errors -> what OpenAI says was expected ("Invalid type for 'n': expected an integer, but got a
# string instead."); pydantic's own words named our classes ("a valid dictionary or instance of StreamOptions")
_EXPECTED = {"int_type": "an integer", "float_type": "a decimal", "string_type": "a string", "bool_type": "a boolean",
             "dict_type": "an object", "model_type": "an object", "list_type": "an array"}


def _got(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    kinds = ((int, "an integer"), (float, "a decimal number"), (str, "a string"), (dict, "an object"),
             (list, "an array"))
    return next((noun for kind, noun in kinds if isinstance(value, kind)), "a value")


def _wrong_type(param: str, there: list[Any]) -> str | None:
    """OpenAI's sentence for a value of the wrong JSON type (every branch wanted another type), else None."""
    if not all(e["type"] in _EXPECTED for e in there):
        return None
    nouns = list(dict.fromkeys(_EXPECTED[e["type"]] for e in there))
    expected = " or ".join(nouns) if len(nouns) < 3 else f"one of {', '.join(nouns[:-1])}, or {nouns[-1]}"
    return f"Invalid type for '{param}': expected {expected}, but got {_got(there[0].get('input'))} instead."


_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<="),
           "less_than": ("lt", "<")}


def _bounds(error: Any, param: str, code: str) -> str | None:
    """OpenAI's sentence for a number out of range or an empty array ("Invalid 'temperature': decimal above
    maximum value. Expected a value <= 2, but got 3 instead."), else None."""
    ctx = error.get("ctx") or {}
    if code == "empty_array":
        return (f"Invalid '{param}': empty array. Expected an array with minimum length {ctx.get('min_length', 1)}, "
                "but got an empty array instead.")
    bound = _BOUNDS.get(str(error["type"]))
    if bound is None or bound[0] not in ctx:
        return None
    number, side = code.split("_", 1)
    where = "below minimum" if side.startswith("below") else "above maximum"
    limit, got = (_number(v) for v in (ctx[bound[0]], error.get("input")))
    return f"Invalid '{param}': {number} {where} value. Expected a value {bound[1]} {limit}, but got {got} instead."


def _number(value: Any) -> str:
    """A number as JSON writes it, a whole float without its ".0" (pydantic holds a float field's bound as 2.0)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return orjson.dumps(value).decode()


def _unsupported(error: Any) -> str | None:
    """OpenAI's sentence for a string that is none of a field's values ("Invalid value: 'robot'. Supported
    values are: 'system', ..., and 'function'."), else None."""
    expected = (error.get("ctx") or {}).get("expected")
    if error["type"] != "literal_error" or not isinstance(error.get("input"), str) or not isinstance(expected, str):
        return None
    values = [v.strip() for part in expected.split(" or ") for v in part.split(", ")]
    listed = " and ".join(values) if len(values) < 3 else f"{', '.join(values[:-1])}, and {values[-1]}"
    value = error["input"] if len(error["input"]) <= 64 else error["input"][:64] + "..."  # echoed: kept short
    return f"Invalid value: '{value}'. Supported values are: {listed}."


def check_body(model: type[BaseModel], body: JSON) -> None:
    try:
        model.model_validate(body)
    except ValidationError as exc:
        error, param, message, there = _first(exc)
        code = _code(model, error)
        said = f"Missing required parameter: '{param}'." if error["type"] == "missing" else \
            _wrong_type(param, there) or _bounds(error, param, code) or _unsupported(error) \
            or f"Invalid value for '{param}': {message}"
        raise errors.InvalidRequest(said, param=param, code=code) from None
