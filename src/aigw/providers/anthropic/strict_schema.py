"""A JSON schema as Anthropic's structured outputs take it, as pure dict work.

Anthropic compiles ``output_config.format.schema`` (and a ``strict`` tool's ``input_schema``) into a
grammar, and refuses what the grammar cannot hold with a 400 ("For 'integer' type, property 'minimum' is
not supported"): numeric bounds, string lengths and patterns, most array bounds, and any object without
``additionalProperties: false``. OpenAI's strict mode takes all of these, so an OpenAI client's schema
(a pydantic model with ``Field(ge=1)``, a hand-written schema) is reshaped the way the official anthropic
SDK reshapes its own before sending: every object closed, each keyword Anthropic refuses moved into the
description (``{minimum: 1}``) so the model still reads it, ``oneOf`` as ``anyOf``, a list of types as
``anyOf``. A schema Anthropic takes already comes out the same, so the SDK's own output passes unchanged.
"""

from __future__ import annotations

from typing import Any

import orjson

from aigw.types import JSON

STRING_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6",
                            "uuid"})
JSON_OBJECT_INSTRUCTION = "Respond with a single valid JSON object and nothing else."
SCHEMA_INSTRUCTION = "Respond with a single valid JSON object and nothing else, matching this JSON schema: "
# Claude models without structured outputs (output_config.format) and strict tools: they came with Sonnet 4.5,
# Opus 4.1 and Haiku 4.5 (Bedrock-style names, ``anthropic.`` / ``us.anthropic.``, are read without the prefix)
_NO_STRUCTURED_PREFIXES = ("claude-3", "claude-2", "claude-instant", "claude-sonnet-4-0", "claude-opus-4-0",
                           "claude-sonnet-4-2025", "claude-opus-4-2025")


def structured_outputs(model: str) -> bool:
    """Whether an upstream Claude model takes ``output_config.format`` and ``strict`` tools (unknown names do)."""
    name = model.rsplit(".", 1)[-1] if model.startswith(("anthropic.", "us.", "eu.", "apac.")) else model
    return not name.startswith(_NO_STRUCTURED_PREFIXES)


def _primitive(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def strict_schema(schema: Any) -> Any:
    """``schema`` with what Anthropic's structured outputs refuse moved into descriptions (see the module)."""
    if not isinstance(schema, dict):
        return schema
    rest = dict(schema)
    kind = rest.get("type")
    if isinstance(kind, list):  # ["string", "null"]: Anthropic wants the alternatives spelled out
        head = {k: rest.pop(k) for k in ("description", "title", "$defs") if k in rest}
        del rest["type"]
        return strict_schema({**head, "anyOf": [{**rest, "type": t} for t in kind]})
    out: JSON = {}
    if isinstance(rest.get("$defs"), dict):
        out["$defs"] = {name: strict_schema(sub) for name, sub in rest.pop("$defs").items()}
    if "$ref" in rest:
        out["$ref"] = rest.pop("$ref")  # what else sits beside a reference is not read
        return out
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(rest.get(key), list):
            out["allOf" if key == "allOf" else "anyOf"] = [strict_schema(s) for s in rest.pop(key)]
    for key in ("enum", "const"):
        if rest.get(key) and (all(_primitive(v) for v in rest[key]) if key == "enum" else _primitive(rest[key])):
            out[key] = rest.pop(key)
            kind = None  # the values say it: a type beside them is dropped, as the SDK does
    rest.pop("type", None)
    if kind is not None:
        out["type"] = kind
    for key in ("description", "title"):
        if key in rest:
            out[key] = rest.pop(key)
    if kind == "object" or (kind is None and "properties" in rest):
        props = rest.pop("properties", None)
        out["properties"] = {k: strict_schema(v) for k, v in props.items()} if isinstance(props, dict) else {}
        rest.pop("additionalProperties", None)  # an open object (or a typed map) is refused: closed, as the SDK does
        out["additionalProperties"] = False
        if "required" in rest:
            out["required"] = rest.pop("required")
    elif kind == "string" and rest.get("format") in STRING_FORMATS:
        out["format"] = rest.pop("format")
    elif kind == "array":
        if "items" in rest:
            out["items"] = strict_schema(rest.pop("items"))
        if "minItems" in rest:  # 0 and 1 are taken; a larger minimum goes to the description
            if rest["minItems"] in (0, 1):
                out["minItems"] = rest.pop("minItems")
            else:
                rest["minItems"] = rest.pop("minItems")
    rest.pop("$schema", None)
    if rest:  # refused keywords: the model still reads them, in the description
        said = ", ".join(f"{k}: {v}" for k, v in rest.items())
        out["description"] = (f"{out['description']}\n\n" if out.get("description") else "") + "{" + said + "}"
    return out


def apply_response_format(req: JSON, fmt: Any, system: list[JSON]) -> None:
    """``response_format``: ``json_schema`` as Anthropic's native structured output (``output_config.format``),
    or on a Claude without it a system line asking for JSON matching the schema; ``json_object`` has no native
    twin, so one line is added to the system prompt asking for one JSON object."""
    if not isinstance(fmt, dict):
        return
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not structured_outputs(str(req.get("model") or "")):  # an older Claude: asked for in the prompt
            system.append({"type": "text", "text": SCHEMA_INSTRUCTION + orjson.dumps(schema or {}).decode()})
            return
        schema = strict_schema(schema or {"type": "object"})
        req["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    elif fmt.get("type") == "json_object":
        system.append({"type": "text", "text": JSON_OBJECT_INSTRUCTION})
