"""Canonical tools and ``tool_choice`` -> Anthropic's, as pure dict work (used by ``translate``).

* ``tool_choice``: ``required`` is ``any``, a named function ``tool``; ``parallel_tool_calls: false`` is
  ``disable_parallel_tool_use``. ``allowed_tools`` (use only these of the tools defined) has no Anthropic
  twin: only the allowed tools are sent, with ``auto`` or ``any`` for its mode.
* A strict tool's schema is reshaped into what Anthropic's grammar takes (``strict_schema``).
* Tool call ids are sent with each character Anthropic refuses as ``_`` (``tool_id``).
"""

from __future__ import annotations

import re
from typing import Any

from aigw.errors import InvalidRequest
from aigw.providers.anthropic.strict_schema import strict_schema, structured_outputs
from aigw.types import JSON

NO_CUSTOM = ("anthropic models do not support {what}: Anthropic tools take JSON input, with no free-text "
             "or grammar format; use a function tool, or a model served by OpenAI")
_NOT_IN_TOOL_ID = re.compile(r"[^a-zA-Z0-9_-]")  # Anthropic's tool_use ids match ^[a-zA-Z0-9_-]+$


def tool_id(value: Any) -> str:
    """A tool call id as Anthropic takes it: another provider's (Moonshot's ``functions.name:0``, ...) with
    each character Anthropic refuses as ``_``, the same for a call and its result."""
    if not isinstance(value, str):
        return ""
    return _NOT_IN_TOOL_ID.sub("_", value)


def _tools(tools: Any) -> list[JSON]:
    if not isinstance(tools, list):
        raise InvalidRequest("tools must be a list", param="tools")
    out = []
    for i, tool in enumerate(tools):
        if isinstance(tool, dict) and tool.get("type") == "custom":
            raise InvalidRequest(NO_CUSTOM.format(what="custom tools (type 'custom')"), param=f"tools.{i}")
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise InvalidRequest("only function tools are supported by anthropic", param=f"tools.{i}")
        item: JSON = {"name": fn.get("name"), "input_schema": fn.get("parameters") or {"type": "object"}}
        if fn.get("description"):
            item["description"] = fn["description"]
        private = tool.get("_anthropic")  # an Anthropic client's strict, when OpenAI's strict mode could not hold
        if fn.get("strict") is not None:
            item["strict"] = bool(fn["strict"]) or (isinstance(private, dict) and private.get("strict") is True)
            if item["strict"]:  # held to the schema by the same grammar as structured output
                item["input_schema"] = strict_schema(item["input_schema"])
        if "cache_control" in tool:
            item["cache_control"] = tool["cache_control"]
        if isinstance(private, dict):  # an Anthropic client's tool fields the canonical shape has no place for
            item.update((k, v) for k, v in private.items() if k != "strict")
        out.append(item)
    return out


def _tool_choice(choice: Any, parallel: Any) -> JSON | None:
    if choice is None or choice == "auto":
        mapped: JSON = {"type": "auto"}
    elif choice == "required":
        mapped = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "custom":
        raise InvalidRequest(NO_CUSTOM.format(what="a custom tool_choice"), param="tool_choice")
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        mapped = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise InvalidRequest("tool_choice must be auto, none, required or a function", param="tool_choice")
    if parallel is False:
        mapped["disable_parallel_tool_use"] = True
    elif choice is None:
        return None
    return mapped


def _allowed(choice: JSON, tools: list[JSON]) -> tuple[list[JSON], Any]:
    """``allowed_tools``: (the tools allowed, the plain choice its mode makes)."""
    spec = choice.get("allowed_tools")
    modes = ("auto", "required")
    if not (isinstance(spec, dict) and isinstance(spec.get("tools"), list) and spec.get("mode") in modes):
        raise InvalidRequest("allowed_tools needs a mode (auto or required) and a list of tools",
                             param="tool_choice.allowed_tools")
    names = {(t.get("function") or {}).get("name") for t in spec["tools"] if isinstance(t, dict)}
    return [t for t in tools if t.get("name") in names], spec["mode"]


def apply_tools(req: JSON, tools: Any, choice: Any, parallel: Any) -> None:
    """Set ``tools`` and ``tool_choice`` on an Anthropic request (an older Claude takes no ``strict``)."""
    req["tools"] = _tools(tools)
    if not structured_outputs(str(req.get("model") or "")):
        req["tools"] = [{k: v for k, v in t.items() if k != "strict"} if "strict" in t else t for t in req["tools"]]
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        req["tools"], choice = _allowed(choice, req["tools"])
    mapped = _tool_choice(choice, parallel)
    if mapped is not None:
        req["tool_choice"] = mapped
