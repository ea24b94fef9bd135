"""Helpers shared by the OpenAI-family adapter tests (fixtures live in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aigw.config.models import Deployment
from aigw.providers.base import CallOptions, Timeouts
from aigw.providers.http import HttpClients
from aigw.providers.openai.client import OpenAIProvider
from aigw.providers.registry import build_provider
from aigw.types import JSON
from tests.fakes.openai_upstream import FakeOpenAI

OPENAI_KEY = "sk-test-key"
AZURE_KEY = "azure-test-key"
COMPAT_KEY = "compat-test-key"
# model id -> Azure deployment name on the fake resource
AZURE_DEPLOYMENT = {
    "gpt-4o-mini": "chat",
    "o3-mini": "reasoner",
    "tiny-context": "tiny",
    "gpt-3.5-turbo-instruct": "instruct",
    "text-embedding-3-small": "embed",
}


def call(connect: float | None = 2.0, first_token: float | None = 2.0, total: float | None = 5.0,
         **headers: str) -> CallOptions:
    """Short limits by default: a test that hangs fails in seconds, not minutes."""
    return CallOptions(timeouts=Timeouts(connect=connect, first_token=first_token, total=total),
                       headers=headers)


@dataclass
class Family:
    """One OpenAI-family provider kind and its fake upstream."""

    kind: str
    fake: FakeOpenAI
    clients: HttpClients

    @property
    def key(self) -> str:
        return {"openai": OPENAI_KEY, "azure": AZURE_KEY}.get(self.kind, COMPAT_KEY)

    def deployment(self, model: str = "gpt-4o-mini", **overrides: Any) -> Deployment:
        fields: dict[str, Any] = {
            "name": "public-name", "provider": self.kind, "model": model,
            "api_base": self.fake.base_url, "api_key": self.key,
        }
        if self.kind == "azure":
            fields["deployment"] = AZURE_DEPLOYMENT.get(model, model)
        return Deployment(**{**fields, **overrides})

    def provider(self, model: str = "gpt-4o-mini", **overrides: Any) -> OpenAIProvider:
        provider = build_provider(self.deployment(model, **overrides), self.clients)
        assert isinstance(provider, OpenAIProvider)
        return provider

    def auth_header(self) -> tuple[str, str]:
        return ("api-key", self.key) if self.kind == "azure" else ("Authorization", f"Bearer {self.key}")


def chat_body(text: str = "hello there", **extra: Any) -> JSON:
    """A canonical request as the gateway hands it over: the public model name, not the upstream's."""
    return {"model": "public-name", "messages": [{"role": "user", "content": text}], **extra}


def stream_body(text: str = "hello there", **extra: Any) -> JSON:
    return chat_body(text, stream=True, stream_options={"include_usage": True}, **extra)


async def collect(chunks: Any) -> list[JSON]:
    return [c async for c in chunks]


def joined_text(chunks: list[JSON]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )


def joined_tool_calls(chunks: list[JSON]) -> list[JSON]:
    """Reassemble streamed tool-call deltas the way SDKs do: by index, arguments concatenated."""
    calls: dict[int, JSON] = {}
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            for delta in choice["delta"].get("tool_calls") or []:
                slot = calls.setdefault(delta["index"], {"id": None, "name": "", "arguments": ""})
                slot["id"] = delta.get("id") or slot["id"]
                fn = delta.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
    return [calls[i] for i in sorted(calls)]
