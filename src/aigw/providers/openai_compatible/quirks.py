"""The quirk switches of OpenAI-compatible servers, checked once at build time.

Each switch is data for the shared OpenAI shaping, so a new server needs config,
not code. Known switches (``models[].quirks`` in config)::

    no_stream_options: true        # upstream rejects stream_options; usage is taken from
                                   # whatever chunk carries it and sent last
    max_tokens_field: max_tokens   # or max_completion_tokens: rename the other one to this
    drop_params: [seed, parallel_tool_calls, response_format]   # keys the upstream rejects (chat,
                                   # completions and embeddings)
    no_developer_role: true        # send "developer" messages as "system"
    merge_system_messages: true    # one system message, first (strict chat templates)
    auth_header: x-api-key         # header carrying api_key (Authorization gets "Bearer ")
    no_auth: true                  # never send a key (an empty api_key also sends none)
    tool_calls_finish_reason: true # upstream ends a message with tool calls on "stop" (Gemini's
                                   # OpenAI-compatible endpoint): "tool_calls" there, plain and streamed;
                                   # on by default for an api_base on Gemini's host (false turns it off)

Unknown keys and wrong types fail with the field path, before the server starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from aigw.config.models import Deployment
from aigw.providers.openai.client import bearer
from aigw.providers.openai.translate import Shaping

_UNDROPPABLE = frozenset({"model", "messages", "prompt", "input", "stream"})


class Quirks(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    no_stream_options: bool = False
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] | None = None
    drop_params: list[str] = []
    no_developer_role: bool = False
    merge_system_messages: bool = False
    auth_header: str = "Authorization"
    no_auth: bool = False
    tool_calls_finish_reason: bool = False

    @field_validator("drop_params")
    @classmethod
    def _keep_essentials(cls, value: list[str]) -> list[str]:
        bad = sorted(_UNDROPPABLE.intersection(value))
        if bad:
            raise ValueError(f"cannot drop {', '.join(bad)}: every request needs them")
        return value

    @field_validator("auth_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not value or any(c in value for c in " :\r\n"):
            raise ValueError("must be an HTTP header name")
        return value

    def shaping(self) -> Shaping:
        return Shaping(
            max_tokens_field=self.max_tokens_field,
            drop_params=frozenset(self.drop_params),
            role_map={"developer": "system"} if self.no_developer_role else {},
            merge_system_messages=self.merge_system_messages,
            stream_options=not self.no_stream_options,
            tool_calls_finish=self.tool_calls_finish_reason,
        )

    def auth_headers(self, api_key: str) -> dict[str, str]:
        if self.no_auth or not api_key:
            return {}
        if self.auth_header.lower() == "authorization":
            return bearer(api_key)
        return {self.auth_header: api_key}


GEMINI_HOST = "generativelanguage.googleapis.com"  # its OpenAI-compatible endpoint: /v1beta/openai


def parse_quirks(deployment: Deployment) -> Quirks:
    """Validate ``deployment.quirks``; a bad entry raises ValueError naming model and key. Known servers get
    their quirks without config (an agent loop must not stop on Gemini's "stop" after a tool call)."""
    quirks = deployment.quirks
    if GEMINI_HOST in deployment.api_base.lower():
        quirks = {"tool_calls_finish_reason": True, **quirks}
    try:
        return Quirks.model_validate(quirks)
    except ValidationError as exc:
        problems = "; ".join(
            f"quirks.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        known = ", ".join(Quirks.model_fields)
        raise ValueError(
            f"model {deployment.name!r} (openai_compatible): {problems} (known quirks: {known})"
        ) from None
