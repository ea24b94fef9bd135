"""GET /metrics with ``require_key``: the master key reads it; a tenant admin key, whose tenant is one of many
in the series, gets a 403 (its own tenant only, as on /admin/deployments); a plain key a 403 too."""

from __future__ import annotations

from aigw.http.auth import Authenticator
from aigw.http.metrics_endpoint import MetricsEndpoint
from aigw.pipeline.context import Principal
from tests.support.asgi_calls import get_with_key

MASTER = "mk-metrics"
KEYS = {
    "sk-aigw-tenant-admin": Principal(key_id="key_a", tenant_id="ten_a", project_id="prj_a", is_admin=True),
    "sk-aigw-user": Principal(key_id="key_u", tenant_id="ten_a", project_id="prj_a"),
}


class FakeMetrics:
    def render(self) -> bytes:
        return b'aigw_requests_total{tenant="ten_b"} 3.0\n'


async def _get(key: str) -> tuple[int, bytes]:
    async def lookup(presented: str) -> Principal | None:
        return KEYS.get(presented)

    endpoint = MetricsEndpoint(FakeMetrics(), Authenticator(MASTER, lookup), require_key=True)  # type: ignore[arg-type]
    return await get_with_key(endpoint, "/metrics", key)


async def test_the_master_key_reads_the_metrics() -> None:
    status, body = await _get(MASTER)
    assert status == 200 and b"ten_b" in body


async def test_a_tenant_admin_key_cannot_read_every_tenants_series() -> None:
    status, body = await _get("sk-aigw-tenant-admin")
    assert status == 403 and b"ten_b" not in body


async def test_a_plain_key_cannot_read_them_either() -> None:
    status, body = await _get("sk-aigw-user")
    assert status == 403 and b"ten_b" not in body
