"""GET /v1/models and /v1/models/{id}: the models a caller may use, in its SDK's shape.

The OpenAI and the Anthropic SDK both call these paths. Anthropic's sends ``anthropic-version`` on every
request, so that header picks Anthropic's shape (``type: model``, ``display_name``, ``created_at``, pages with
``has_more``, ``first_id`` and ``last_id``, its ``request-id`` header and error bodies); any other caller gets
OpenAI's. Both list the gateway's public model names, in config order, less those the caller's key may not use.
"""

from __future__ import annotations

from aigw import errors
from aigw.http.auth import Authenticator
from aigw.http.flow import ApiFormat, send_error
from aigw.http.request import HttpRequest, Send
from aigw.http.respond import Headers, send_json
from aigw.pipeline.context import Principal
from aigw.routing.router import Router
from aigw.types import JSON

# Anthropic's page sizes: 20 unless asked, at most 1000
DEFAULT_PAGE, MAX_PAGE = 20, 1000
# aigw knows no release date of a model: the epoch, as OpenAI's ``created: 0``
NO_DATE = "1970-01-01T00:00:00Z"
MODELS_PREFIX = "/v1/models/"


class ModelsApi:
    def __init__(self, router: Router, auth: Authenticator, openai: ApiFormat, anthropic: ApiFormat | None) -> None:
        self.router = router
        self.auth = auth
        self.openai = openai
        self.anthropic = anthropic

    def _format(self, req: HttpRequest) -> ApiFormat:
        if self.anthropic is not None and "anthropic-version" in req.headers:
            return self.anthropic
        return self.openai

    async def list_models(self, req: HttpRequest, send: Send) -> None:
        api = self._format(req)
        try:
            principal = await self.auth.authenticate(req.headers)
            names = self._visible(principal)
            body = _anthropic_page(names, req.query) if api is self.anthropic else \
                {"object": "list", "data": [self._openai_card(m) for m in names]}
        except errors.GatewayError as err:
            self.auth.refused("models", await send_error(send, api, err, req.request_id), err)
            return
        await send_json(send, 200, body, _headers(api, req.request_id))

    async def get_model(self, req: HttpRequest, send: Send) -> None:
        api = self._format(req)
        model = req.path.removeprefix(MODELS_PREFIX)
        try:
            principal = await self.auth.authenticate(req.headers)
            if not self.router.targets(model) or not _may_use(principal, model):
                raise errors.NotFound(f"The model `{model}` does not exist or you do not have access to it.",
                                      param="model", code="model_not_found")
        except errors.GatewayError as err:
            self.auth.refused("models", await send_error(send, api, err, req.request_id), err)
            return
        card = _anthropic_card(model) if api is self.anthropic else self._openai_card(model)
        await send_json(send, 200, card, _headers(api, req.request_id))

    def _visible(self, principal: Principal) -> list[str]:
        return [m for m in self.router.model_names() if _may_use(principal, m)]

    def _openai_card(self, name: str) -> JSON:
        targets = self.router.targets(name)
        owner = targets[0].deployment.provider if targets else "aigw"
        return {"id": name, "object": "model", "created": 0, "owned_by": owner}


def _may_use(principal: Principal, model: str) -> bool:
    allowed = principal.allowed_models
    return allowed is None or model in allowed


def _anthropic_card(name: str) -> JSON:
    return {"type": "model", "id": name, "display_name": name, "created_at": NO_DATE}


def _anthropic_page(names: list[str], query: dict[str, str]) -> JSON:
    """One page of Anthropic's list: ``limit`` models after ``after_id``, or before ``before_id``, or the first;
    ``has_more`` says whether more lie in that direction."""
    raw = query.get("limit", str(DEFAULT_PAGE))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise errors.InvalidRequest(f"limit: must be a whole number from 1 to {MAX_PAGE}, not {raw!r}.",
                                    param="limit")
    after, before = query.get("after_id"), query.get("before_id")
    if after is not None and before is not None:
        raise errors.InvalidRequest("Give after_id or before_id, not both.", param="after_id")
    cursor = after if after is not None else before
    if cursor is not None and cursor not in names:
        raise errors.InvalidRequest(f"{'after_id' if after is not None else 'before_id'}: `{cursor}` is not a "
                                    "model in this list.", param="after_id" if after is not None else "before_id")
    if before is not None:
        end = names.index(before)
        start = max(0, end - limit)
        page, more = names[start:end], start > 0
    else:
        start = names.index(after) + 1 if after is not None else 0
        page, more = names[start:start + limit], start + limit < len(names)
    return {"data": [_anthropic_card(m) for m in page], "has_more": more,
            "first_id": page[0] if page else None, "last_id": page[-1] if page else None}


def _headers(api: ApiFormat, request_id: str) -> Headers:
    headers: Headers = [(b"x-request-id", request_id.encode())]
    if api.own_headers is not None:
        headers += api.own_headers(request_id, {})
    return headers
