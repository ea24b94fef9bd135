"""GET /admin/deployments: every deployment's state, in-flight calls, latency, error rate, breaker.

Master key only: deployments are the operator's infrastructure, not a tenant's. It takes no query
parameters: any is a 400 naming it (``admin_query``), as on every admin endpoint.
"""

from __future__ import annotations

from aigw import errors
from aigw.http.admin_query import strict_query
from aigw.http.auth import Authenticator
from aigw.http.request import HttpRequest, Send
from aigw.http.respond import send_json
from aigw.http.wire_openai import error_body
from aigw.routing.report import deployment_report, shared_report
from aigw.routing.router import Router


class AdminDeployments:
    def __init__(self, router: Router, auth: Authenticator) -> None:
        self.router = router
        self.auth = auth

    async def list(self, req: HttpRequest, send: Send) -> None:
        headers = [(b"x-request-id", req.request_id.encode())]
        try:
            principal = await self.auth.require_admin(req.headers)
            strict_query(req, ())
            if principal.tenant_id:
                raise errors.PermissionDenied("Deployments are visible to the master key only.")
        except errors.GatewayError as err:
            self.auth.refused("admin", err.status, err)
            await send_json(send, err.status, error_body(err), headers)
            return
        body = {"object": "list", "data": deployment_report(self.router), "shared_state": shared_report(self.router)}
        await send_json(send, 200, body, headers)
