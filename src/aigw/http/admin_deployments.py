"""GET /admin/deployments: every deployment's state, in-flight calls, latency, error rate, breaker.

Master key only: deployments are the operator's infrastructure, not a tenant's. It takes no query
parameters: any is a 400 naming it (``admin_query``), as on every admin endpoint. Answered through
``admin_guard.guarded`` like the others: a bug is a clean 500, logged.
"""

from __future__ import annotations

from aigw import errors
from aigw.http.admin_guard import guarded
from aigw.http.admin_query import strict_query
from aigw.http.auth import Authenticator
from aigw.http.request import HttpRequest
from aigw.pipeline.context import Principal
from aigw.routing.report import deployment_report, shared_report
from aigw.routing.router import Router
from aigw.types import JSON


class AdminDeployments:
    def __init__(self, router: Router, auth: Authenticator) -> None:
        self.router = router
        self.list = guarded(auth, self._list)

    async def _list(self, req: HttpRequest, principal: Principal) -> tuple[int, JSON]:
        strict_query(req, ())
        if principal.tenant_id:
            raise errors.PermissionDenied("Deployments are visible to the master key only.")
        return 200, {"object": "list", "data": deployment_report(self.router),
                     "shared_state": shared_report(self.router)}
