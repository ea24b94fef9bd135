"""Through the HTTP app and the real router: a fallback model's purge reaches the answers it gave."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from aigw.app import build_app
from aigw.config.cache import CacheConfig
from aigw.config.load import load_config
from aigw.config.models import Deployment, ModelRouting
from aigw.http.server import GatewayApp
from tests.unit.http.test_flow_answers import KEY, Sent


async def send(app: GatewayApp, method: str, path: str, query: bytes = b"", body: Any = None) -> Sent:
    scope = {"type": "http", "method": method, "path": path, "query_string": query, "raw_path": path.encode(),
             "headers": [(b"content-type", b"application/json"), (b"authorization", f"Bearer {KEY}".encode())],
             "http_version": "1.1", "scheme": "http", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
             "root_path": ""}
    inbox = [{"type": "http.request", "body": orjson.dumps(body) if body is not None else b"", "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop() if inbox else {"type": "http.disconnect"}

    async def out(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, out)
    await app.state["pipeline"].stage("cache").flush()
    return Sent(sent)


async def test_purging_the_fallback_model_stops_the_answers_it_gave_for_the_model_asked(tmp_path: Path) -> None:
    config = load_config()
    config.server.master_key = KEY
    config.database_url = f"sqlite:///{tmp_path}/fallback.db"
    config.observability.metrics.enabled = False
    config.observability.request_log.enabled = False
    config.tenancy.enabled = False
    config.models = [Deployment(name="primary", provider="mock", mock={"fail_rate": 1.0, "fail_kind": "unavailable"}),
                     Deployment(name="backup", provider="mock")]
    config.routing = {"primary": ModelRouting(fallbacks=["backup"], num_retries=0)}
    config.cache = CacheConfig(mode="exact")
    app = build_app(config)
    ask = {"model": "primary", "messages": [{"role": "user", "content": "who answers?"}]}
    first = await send(app, "POST", "/v1/chat/completions", body=ask)
    assert (first.status, first.headers["x-aigw-served-model"]) == (200, "backup")
    assert first.headers["x-aigw-cache"] == "miss"
    assert (await send(app, "POST", "/v1/chat/completions", body=ask)).headers["x-aigw-cache"] == "hit"
    purged = await send(app, "DELETE", "/admin/cache", b"model=backup")
    # only the mark that vouched for it went; the answer stays stored but is served no more: counted as taken
    assert purged.status == 200 and orjson.loads(purged.body)["deleted"] == 1
    after = await send(app, "POST", "/v1/chat/completions", body=ask)
    assert (after.status, after.headers["x-aigw-cache"]) == (200, "miss")
