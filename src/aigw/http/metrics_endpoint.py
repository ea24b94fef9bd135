"""GET /metrics: the Prometheus text exposition of every gateway metric.

Open by default, as scrapers expect; ``observability.metrics.require_key``
makes it ask for the master key. The series count every tenant's traffic (and,
with ``tenant_label``, name every tenant), so a tenant admin key gets a 403 here,
as on ``/admin/deployments``: it may see its own tenant only.
"""

from __future__ import annotations

from aigw import errors
from aigw.http.auth import Authenticator
from aigw.http.request import HttpRequest, Send
from aigw.http.respond import send_json, send_text
from aigw.http.wire_openai import error_body
from aigw.observability.metrics import CONTENT_TYPE, Metrics

_TYPE = CONTENT_TYPE.encode()


class MetricsEndpoint:
    def __init__(self, metrics: Metrics, auth: Authenticator, require_key: bool = False) -> None:
        self.metrics = metrics
        self.auth = auth
        self.require_key = require_key

    async def __call__(self, req: HttpRequest, send: Send) -> None:
        if self.require_key:
            try:
                principal = await self.auth.require_admin(req.headers)
                if principal.tenant_id:  # a tenant admin: every tenant's series are not its to read
                    raise errors.PermissionDenied("Metrics are visible to the master key only.")
            except errors.GatewayError as err:
                self.auth.refused("metrics", err.status, err)
                await send_json(send, err.status, error_body(err))
                return
        await send_text(send, 200, self.metrics.render(), _TYPE)
