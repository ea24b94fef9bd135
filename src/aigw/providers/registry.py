"""The one list of provider kinds. Adding a provider = one module + one line here.

Each entry names a ``build(deployment, clients) -> Provider`` function; modules are
imported on first use so start-up stays fast and optional SDK-free.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from aigw.config.models import Deployment
from aigw.providers.base import Provider
from aigw.providers.http import HttpClients

Builder = Callable[[Deployment, HttpClients], Provider]

PROVIDERS: dict[str, str] = {
    "openai": "aigw.providers.openai.client:build",
    "azure": "aigw.providers.azure.client:build",
    "anthropic": "aigw.providers.anthropic.client:build",
    "openai_compatible": "aigw.providers.openai_compatible.client:build",
    "mock": "aigw.providers.mock:build",
}


def builder_for(kind: str) -> Builder:
    try:
        target = PROVIDERS[kind]
    except KeyError:
        raise ValueError(f"unknown provider {kind!r}; known: {', '.join(sorted(PROVIDERS))}") from None
    module_name, _, attr = target.partition(":")
    return cast(Builder, getattr(importlib.import_module(module_name), attr))


def build_provider(deployment: Deployment, clients: HttpClients) -> Provider:
    return builder_for(deployment.provider)(deployment, clients)
