"""OpenAI-compatible servers: the OpenAI adapter with quirk switches from config."""

from __future__ import annotations

from aigw.config.models import Deployment
from aigw.providers.base import Provider
from aigw.providers.http import HttpClients
from aigw.providers.openai.client import OpenAIProvider
from aigw.providers.openai_compatible.quirks import parse_quirks


class OpenAICompatibleProvider(OpenAIProvider):
    kind = "openai_compatible"
    listing_needs_key = False  # some hosts list their models to anyone (OpenRouter)

    def __init__(self, deployment: Deployment, clients: HttpClients) -> None:
        if not deployment.api_base:
            raise ValueError(
                f"model {deployment.name!r} (openai_compatible): api_base is required,"
                " e.g. http://127.0.0.1:11434/v1 for Ollama"
            )
        quirks = parse_quirks(deployment)
        super().__init__(
            deployment, clients, shaping=quirks.shaping(), auth=quirks.auth_headers(deployment.api_key)
        )


def build(deployment: Deployment, clients: HttpClients) -> Provider:
    return OpenAICompatibleProvider(deployment, clients)
