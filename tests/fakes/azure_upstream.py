"""A fake Azure OpenAI resource on loopback: FakeOpenAI with Azure's paths, auth and annotations.

    fake = FakeAzure(api_key="azure-test-key", deployments={"chat": "gpt-4o-mini"}).start()
    fake.url   # the resource endpoint, what aigw's azure ``api_base`` takes

Serves ``/openai/deployments/{deployment}/{chat/completions|completions|embeddings}`` and
``GET /openai/models``, each needing ``?api-version=`` (404 "Resource not found" without
it, 400 for an unknown version; versions before 2024-09-01 refuse ``stream_options``) and the
``api-key`` header (401 with Azure's body when missing or wrong). An unknown deployment gets 404
``DeploymentNotFound``. The model is the deployment's, whatever the body says. Its chat completions refuse
``file`` content parts (400 "This model does not support file content types."). The v1 API,
``/openai/v1/{op}``, takes no ``api-version`` and names the deployment in the body's ``model`` instead of the path.
Answers carry ``prompt_filter_results`` and per-choice ``content_filter_results``; streams
start with Azure's prompt-filter chunk (empty ``choices``, empty ``id``/``model``/``object``).
With ``async_filter`` set (a deployment whose content filter runs asynchronously), each chat chunk with
content is followed by an annotation chunk: one choice with ``content_filter_results`` and
``content_filter_offsets`` but no ``delta``, and empty ``id``/``model``/``object``; ``async_filter="block"``
ends the stream on such a chunk with ``finish_reason: "content_filter"`` instead of the model's finish.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes import openai_wire as wire
from tests.fakes.openai_upstream import JSON, FakeOpenAI

API_VERSIONS = frozenset({"2024-02-01", "2024-06-01", "2024-10-21", "2025-01-01-preview", "2025-04-01-preview"})
DEPLOYMENTS = {
    "chat": "gpt-4o-mini",
    "gpt-4o-mini": "gpt-4o-mini",
    "reasoner": "o3-mini",
    "tiny": "tiny-context",
    "instruct": "gpt-3.5-turbo-instruct",
    "embed": "text-embedding-3-small",
}
ACCESS_DENIED = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide"
                 " a valid key for an active subscription and use a correct regional API endpoint for"
                 " your resource.")
STREAM_OPTIONS_SINCE = "2024-09-01"  # older api-versions (2024-06-01 GA, ...) refuse ``stream_options``
_SAFE = {"filtered": False, "severity": "safe"}
FILTER_RESULTS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}


class AzureError(wire.WireError):
    """Azure's own (non-OpenAI) error body: ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, message)
        self.body = {"error": {"code": code, "message": message}}


class FakeAzure(FakeOpenAI):
    name = "fake-azure"

    def __init__(self, api_key: str | None = "azure-test-key", deployments: dict[str, str] | None = None) -> None:
        self.deployments = dict(DEPLOYMENTS if deployments is None else deployments)
        self.async_filter: bool | str = False
        super().__init__(api_key)

    def reset(self) -> None:
        super().reset()
        self.async_filter = False

    @property
    def base_url(self) -> str:
        return self.url

    def add_routes(self, app: web.Application) -> None:
        prefix = "/openai/deployments/{deployment}"
        app.router.add_post(prefix + "/chat/completions", self.handler("chat"))
        app.router.add_post(prefix + "/completions", self.handler("completions"))
        app.router.add_post(prefix + "/embeddings", self.handler("embeddings"))
        app.router.add_get("/openai/models", self.handler("models"))
        for op, path in (("chat", "chat/completions"), ("completions", "completions"), ("embeddings", "embeddings")):
            app.router.add_post("/openai/v1/" + path, self.handler(op))
        app.router.add_get("/openai/v1/models", self.handler("models"))

    def response_headers(self) -> dict[str, str]:
        headers = super().response_headers()
        return {
            "x-request-id": headers["x-request-id"],
            "apim-request-id": headers["x-request-id"][4:],
            "x-ms-region": "Sweden Central",
            "x-ratelimit-remaining-requests": "99",
            "x-ratelimit-remaining-tokens": "99000",
        }

    def check_auth(self, request: web.Request) -> None:
        version = request.query.get("api-version")
        if request.path.startswith("/openai/v1/"):  # the v1 API: no api-version
            version = next(iter(API_VERSIONS))
        if not version:
            raise AzureError(404, "404", "Resource not found")
        if version not in API_VERSIONS:
            raise AzureError(400, "BadRequest", "API version not supported")
        if self.api_key is not None and request.headers.get("api-key") != self.api_key:
            raise AzureError(401, "401", ACCESS_DENIED)

    def check_strict(self, body: JSON) -> None:
        """Azure's chat completions take no ``file`` parts (PDFs are its Responses API's): its 400 says so."""
        super().check_strict(body)
        for i, msg in enumerate(body.get("messages") or ()):
            content = msg.get("content") if isinstance(msg, dict) else None
            for j, part in enumerate(content if isinstance(content, list) else ()):
                if isinstance(part, dict) and part.get("type") == "file":
                    raise wire.WireError(400, "Invalid Value: 'file'. This model does not support file content "
                                         "types.", param=f"messages[{i}].content[{j}].type", code="invalid_value")

    def resolve(self, request: web.Request, body: Any) -> Any:
        version = request.query.get("api-version", "")
        if isinstance(body, dict) and "stream_options" in body and version and version < STREAM_OPTIONS_SINCE:
            raise wire.WireError(400, "Unrecognized request argument supplied: stream_options")
        deployment = request.match_info.get("deployment")
        if deployment is None and request.path.startswith("/openai/v1/") and isinstance(body, dict):
            deployment = str(body.get("model"))  # v1: the body's model names the deployment
        if deployment is None:
            return body
        if deployment not in self.deployments:
            raise AzureError(404, "DeploymentNotFound", "The API deployment for this resource does not"
                             " exist. If you created the deployment within the last 5 minutes, please"
                             " wait a moment and try again.")
        if not isinstance(body, dict):
            return body
        return {**body, "model": self.deployments[deployment]}

    def decorate(self, op: str, result: Any, stream: bool) -> Any:
        if op != "chat":
            return result
        prompt_filter = [{"prompt_index": 0, "content_filter_results": FILTER_RESULTS}]
        if stream:
            preamble = {"choices": [], "created": 0, "id": "", "model": "", "object": "",
                        "prompt_filter_results": prompt_filter}
            return [preamble, *(self._annotated(result) if self.async_filter else result)]
        for choice in result["choices"]:
            choice["content_filter_results"] = FILTER_RESULTS
        return {**result, "prompt_filter_results": prompt_filter}

    def _annotated(self, chunks: list[Any]) -> list[Any]:
        """Azure's asynchronous filter: an annotation chunk (no ``delta``) after each chunk with content."""
        out: list[Any] = []
        offset = 0
        for chunk in chunks:
            choices = chunk.get("choices") or []
            finishing = any(c.get("finish_reason") for c in choices)
            if finishing and self.async_filter == "block":
                out.append(_annotation(offset, "content_filter"))
                continue
            out.append(chunk)
            text = "".join((c.get("delta") or {}).get("content") or "" for c in choices)
            if text:
                offset += len(text)
                out.append(_annotation(offset, None))
        return out


def _annotation(offset: int, finish_reason: str | None) -> dict[str, Any]:
    results = dict(FILTER_RESULTS)
    if finish_reason == "content_filter":
        results["violence"] = {"filtered": True, "severity": "high"}
    choice = {"index": 0, "finish_reason": finish_reason, "content_filter_results": results,
              "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": offset}}
    return {"choices": [choice], "created": 0, "id": "", "model": "", "object": ""}
