"""JSON schemas reshaped for Anthropic's structured outputs, checked against the official anthropic SDK's own
``transform_schema`` (what it does to a schema before sending it to Anthropic)."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.lib._parse._transform import transform_schema
from pydantic import BaseModel, Field

from aigw.providers.anthropic.strict_schema import strict_schema
from aigw.providers.anthropic.translate import to_anthropic_request


class Address(BaseModel):
    city: str = Field(min_length=1, max_length=80)
    zip: str | None = Field(default=None, pattern=r"^\d{4}$")


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=150, description="years")
    score: float = Field(gt=0, multiple_of=0.5)
    addresses: list[Address] = Field(min_items=1, max_length=3)
    tags: list[str] = Field(min_items=2, json_schema_extra={"uniqueItems": True})
    kind: str = Field(json_schema_extra={"enum": ["a", "b"]})
    when: str = Field(json_schema_extra={"format": "date-time"})


OPEN = {"type": "object", "properties": {"meta": {"type": "object", "additionalProperties": {"type": "string"}},
                                         "n": {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]}},
        "required": ["meta"]}


@pytest.mark.parametrize("schema", [Person.model_json_schema(), OPEN, {"type": "object"},
                                    {"type": "array", "items": {"type": "string", "format": "color"}}])
def test_the_schema_is_what_the_anthropic_sdk_would_send(schema: dict[str, Any]) -> None:
    assert strict_schema(schema) == transform_schema(schema)


def test_a_schema_anthropic_takes_comes_out_unchanged() -> None:
    sent = transform_schema(Person.model_json_schema())
    assert strict_schema(sent) == sent


def test_a_list_of_types_becomes_any_of() -> None:
    schema = {"type": ["integer", "null"], "description": "maybe"}
    assert strict_schema(schema) == {"description": "maybe", "anyOf": [{"type": "integer"}, {"type": "null"}]}


def test_structured_output_and_strict_tools_are_reshaped_other_tools_not() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}
    tools = [{"type": "function", "function": {"name": "s", "parameters": schema, "strict": True}},
             {"type": "function", "function": {"name": "f", "parameters": schema}}]
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "tools": tools,
            "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": schema}}}
    req = to_anthropic_request(body, "m")
    closed = {"type": "object", "additionalProperties": False,
              "properties": {"n": {"type": "integer", "description": "{minimum: 1}"}}}
    assert req["output_config"]["format"]["schema"] == closed
    assert req["tools"][0]["input_schema"] == closed and req["tools"][1]["input_schema"] == schema
