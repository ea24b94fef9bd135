"""A small JSON Schema validator for structured-output checks (no dependency).

Covers what ``response_format: json_schema`` schemas use in practice: type
(one or a list; "integer" excludes booleans and accepts 3.0), enum, const,
properties, required, additionalProperties (bool or schema), items,
prefixItems, min/maxItems, uniqueItems, min/maxLength, pattern,
min/maximum, exclusiveMin/Maximum, multipleOf, min/maxProperties, anyOf,
oneOf, allOf, not, and local ``$ref`` ("#/$defs/x", "#/definitions/x").
Unknown keywords (format, title, description, ...) are ignored, as the spec
allows. Errors name the JSON path and what was expected, never the value.
Patterns use Python's ``re``, which agrees with ECMA-262 on the common
subset (classes, anchors, quantifiers) but not on every escape.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_MAX_ERRORS = 20
_MAX_DEPTH = 64
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}


class SchemaValidator:
    """Validates instances against one schema; compiled patterns are cached per validator."""

    def __init__(self, schema: dict[str, Any]):
        self.schema = schema
        self._patterns: dict[str, re.Pattern[str]] = {}

    def errors(self, instance: Any) -> list[str]:
        out: list[str] = []
        self._check(instance, self.schema, "$", out, 0)
        return out[:_MAX_ERRORS]

    def is_valid(self, instance: Any) -> bool:
        return not self.errors(instance)

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise ValueError(f"only local $ref is supported, got {ref!r}")
        node: Any = self.schema
        for part in filter(None, ref[1:].split("/")):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _check(self, value: Any, schema: Any, path: str, out: list[str], depth: int) -> None:
        if len(out) >= _MAX_ERRORS or schema is True or schema == {}:
            return
        if schema is False:
            out.append(f"{path}: no value is allowed here")
            return
        if not isinstance(schema, dict) or depth > _MAX_DEPTH:
            return
        if "$ref" in schema:
            try:
                self._check(value, self._resolve(schema["$ref"]), path, out, depth + 1)
            except (KeyError, TypeError, ValueError):
                out.append(f"{path}: schema $ref {schema['$ref']!r} cannot be resolved")
        types = schema.get("type")
        if types is not None:
            names = [types] if isinstance(types, str) else list(types)
            if not any(_TYPES.get(t, lambda v: True)(value) for t in names):
                out.append(f"{path}: expected {' or '.join(names)}")
                return
        if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
            out.append(f"{path}: not one of the allowed values")
        if "const" in schema and not _same(value, schema["const"]):
            out.append(f"{path}: not the required constant")
        if isinstance(value, dict):
            self._object(value, schema, path, out, depth)
        elif isinstance(value, list):
            self._array(value, schema, path, out, depth)
        elif isinstance(value, str):
            self._string(value, schema, path, out)
        elif _TYPES["number"](value):
            _number(value, schema, path, out)
        self._combinators(value, schema, path, out, depth)

    def _object(self, value: dict[str, Any], schema: dict[str, Any], path: str, out: list[str], depth: int) -> None:
        for name in schema.get("required", ()):
            if name not in value:
                out.append(f"{path}: missing required property {name!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                self._check(item, props[key], f"{path}.{key}", out, depth + 1)
            elif extra is False:
                out.append(f"{path}: unexpected property {key!r}")
            elif isinstance(extra, dict):
                self._check(item, extra, f"{path}.{key}", out, depth + 1)
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            out.append(f"{path}: expected at least {schema['minProperties']} properties")
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            out.append(f"{path}: expected at most {schema['maxProperties']} properties")

    def _array(self, value: list[Any], schema: dict[str, Any], path: str, out: list[str], depth: int) -> None:
        prefix = schema.get("prefixItems", [])
        for i, (item, sub) in enumerate(zip(value, prefix, strict=False)):
            self._check(item, sub, f"{path}[{i}]", out, depth + 1)
        if "items" in schema:
            for i in range(len(prefix), len(value)):
                self._check(value[i], schema["items"], f"{path}[{i}]", out, depth + 1)
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append(f"{path}: expected at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(f"{path}: expected at most {schema['maxItems']} items")
        if schema.get("uniqueItems") and any(_same(a, b) for i, a in enumerate(value) for b in value[i + 1 :]):
            out.append(f"{path}: items must be unique")

    def _string(self, value: str, schema: dict[str, Any], path: str, out: list[str]) -> None:
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append(f"{path}: expected at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{path}: expected at most {schema['maxLength']} characters")
        if "pattern" in schema:
            pattern = self._patterns.get(schema["pattern"])
            if pattern is None:
                try:
                    pattern = self._patterns[schema["pattern"]] = re.compile(schema["pattern"])
                except re.error:
                    out.append(f"{path}: the schema's pattern is not a valid regular expression")
                    return
            if not pattern.search(value):
                out.append(f"{path}: does not match the required pattern")

    def _combinators(self, value: Any, schema: dict[str, Any], path: str, out: list[str], depth: int) -> None:
        for sub in schema.get("allOf", ()):
            self._check(value, sub, path, out, depth + 1)
        if "anyOf" in schema and not any(self._passes(value, s, path, depth) for s in schema["anyOf"]):
            out.append(f"{path}: matches none of the anyOf schemas")
        if "oneOf" in schema:
            n = sum(self._passes(value, s, path, depth) for s in schema["oneOf"])
            if n != 1:
                out.append(f"{path}: must match exactly one oneOf schema, matched {n}")
        if "not" in schema and self._passes(value, schema["not"], path, depth):
            out.append(f"{path}: must not match the 'not' schema")

    def _passes(self, value: Any, schema: Any, path: str, depth: int) -> bool:
        trial: list[str] = []
        self._check(value, schema, path, trial, depth + 1)
        return not trial


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _number(value: float, schema: dict[str, Any], path: str, out: list[str]) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        out.append(f"{path}: expected >= {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        out.append(f"{path}: expected <= {schema['maximum']}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        out.append(f"{path}: expected > {schema['exclusiveMinimum']}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        out.append(f"{path}: expected < {schema['exclusiveMaximum']}")
    step = schema.get("multipleOf")
    if step and abs(value / step - round(value / step)) > 1e-9:
        out.append(f"{path}: expected a multiple of {step}")
