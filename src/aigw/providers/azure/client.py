"""Azure OpenAI: ``{api_base}/openai/deployments/{deployment}/{op}?api-version=...``, ``api-key`` auth.

Everything else (bodies, streams, timeouts, cancellation) is the OpenAI adapter's.
``api_base`` is the resource endpoint, e.g. ``https://NAME.openai.azure.com``; one ending in ``/openai/v1``
takes Azure's v1 API instead: OpenAI's paths, no ``api-version``, the deployment name as the body's model.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import quote

from aigw.config.models import Deployment
from aigw.providers.azure.errors import map_error
from aigw.providers.base import Provider
from aigw.providers.http import HttpClients
from aigw.providers.openai.client import OPS, OpenAIProvider
from aigw.providers.openai.translate import shaping_for_model

DEFAULT_API_VERSION = "2024-10-21"  # latest GA data-plane version with max_completion_tokens
STREAM_OPTIONS_SINCE = "2024-09-01"  # earlier api-versions (2024-06-01 GA, ...) refuse ``stream_options``
# its chat completions answer a ``file`` part with 400 "Invalid Value: 'file'. This model does not support file
# content types." (PDF input is its Responses API's): refused before the call, naming the client's part
NO_FILE_PARTS = "this model is served by Azure OpenAI, whose chat completions take no file parts (PDFs)"


class AzureProvider(OpenAIProvider):
    kind = "azure"
    listing_names_models = False  # GET /openai/models lists the base models the resource may deploy, not deployments

    def __init__(self, deployment: Deployment, clients: HttpClients) -> None:
        if not deployment.api_base:
            raise ValueError(f"model {deployment.name!r}: azure needs api_base (https://NAME.openai.azure.com)")
        auth = {"api-key": deployment.api_key} if deployment.api_key else {}
        shaping = replace(shaping_for_model(deployment.model), no_file_parts=NO_FILE_PARTS)
        version = deployment.api_version or DEFAULT_API_VERSION
        if not _v1(deployment.api_base) and version < STREAM_OPTIONS_SINCE:  # no usage in their streams
            shaping = replace(shaping, stream_options=False)
        super().__init__(deployment, clients, shaping=shaping, auth=auth, error_mapper=map_error)
        if _v1(deployment.api_base):  # the v1 API names the deployment in the body's model, not in the path
            self.upstream_model = deployment.deployment or deployment.model

    def build_urls(self, base: str) -> dict[str, str]:
        if _v1(base):  # Azure's v1 API (…/openai/v1): OpenAI's own paths, no api-version
            return {op: f"{base}/{op}" for op in OPS}
        if base.endswith("/openai"):  # tolerate an endpoint pasted with the path prefix
            base = base[: -len("/openai")]
        d = self.deployment
        query = "?api-version=" + quote(d.api_version or DEFAULT_API_VERSION, safe="")
        prefix = f"{base}/openai/deployments/{quote(d.deployment or d.model, safe='')}/"
        urls = {op: prefix + op + query for op in ("chat/completions", "completions", "embeddings")}
        urls["models"] = f"{base}/openai/models{query}"
        return urls


def _v1(base: str | None) -> bool:
    """An ``api_base`` of Azure's v1 API (``https://NAME.openai.azure.com/openai/v1``)."""
    return base is not None and base.rstrip("/").endswith("/openai/v1")


def build(deployment: Deployment, clients: HttpClients) -> Provider:
    return AzureProvider(deployment, clients)
