"""Input validation: message structure, roles, sizes and ``max_tokens`` ceilings, before anything else.

The HTTP layer already checked field types; this stage checks what a policy
limits (``guardrails.validate``, per model, tenant, project or key) and what
upstreams reject late and expensively: a tool result that answers no tool call,
an assistant turn with nothing in it. A violation is a 400 whose ``param``
names the field (``messages[3].tool_call_id``, ``max_tokens``); sizes are
counted in characters and estimated tokens (about four characters a token).

A ``max_tokens`` ceiling holds for every request: one asking for more is a 400;
one asking for nothing is sent with the ceiling (a legacy completion with
OpenAI's default of 16 when that is lower), not left to the upstream's default.
``max_images`` counts every image part once, whatever its shape (``_is_image``).
"""

from __future__ import annotations

import binascii
from typing import Any

from aigw.accounting.tokens import estimate_text
from aigw.config.guardrails import ValidatePolicy
from aigw.errors import InvalidRequest
from aigw.guardrails.verdict import Verdict
from aigw.observability.metrics import Metrics
from aigw.pipeline.context import RequestContext, Result
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.stage import Stage
from aigw.pipeline.stages.guardrail_policy import Policies, as_messages, metrics_of, policies_for, record
from aigw.schema.anthropic import PRIVATE_KEY
from aigw.schema.anthropic_blocks import ONLY_ANTHROPIC
from aigw.schema.openai import call_text
from aigw.types import JSON

_NEEDS_CONTENT = frozenset({"system", "developer", "user"})
_MAX_FIELDS = ("max_tokens", "max_completion_tokens")
_IMAGE_PARTS = frozenset({"image_url", "input_image"})  # input_image: Responses-style, if ever accepted
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".heic", ".heif", ".avif", ".bmp", ".tif", ".tiff")
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"mif1", b"avif"})
_LEGACY_DEFAULT = 16  # /v1/completions without max_tokens: OpenAI's documented default, kept under a ceiling
_SET = "validate.max_tokens_set"  # the max_tokens a ceiling set (the client asked for none)
AGAIN = "validate.again"  # in StageDeps.services: ``check`` for a request a rule routed to another model


class _Sizes:
    __slots__ = ("chars", "images", "tokens")

    def __init__(self) -> None:
        self.chars = self.tokens = self.images = 0

    def text(self, text: str) -> None:
        self.chars += len(text)
        self.tokens += estimate_text(text)


def _fail(ctx: RequestContext, reason: str, message: str, param: str, metrics: Metrics | None) -> InvalidRequest:
    record(ctx, "validate", Verdict("block", [f"validate:{reason}"], {reason: 1}, 1.0).to_record(), "block",
           metrics)
    return InvalidRequest(message, param=param, code="invalid_request")


def _measure_message(i: int, msg: Any, sizes: _Sizes, tool_ids: set[str], policy: ValidatePolicy) -> tuple[str, str]:
    """('', '') when the message is fine, else (reason, param); adds its text and images to ``sizes``."""
    role = msg.get("role")
    if policy.roles is not None and role not in policy.roles:
        return "role", f"messages[{i}].role"
    content = msg.get("content")
    if isinstance(content, str):
        sizes.text(content)
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                sizes.text(part["text"])
            if _is_image(part):  # by its type alone: a text field beside an image does not hide it
                sizes.images += 1
    for call in msg.get("tool_calls") or ():
        sizes.text(call_text(call) or "")  # a function's arguments or a custom tool's input
        if call.get("id"):
            tool_ids.add(call["id"])
    if role in _NEEDS_CONTENT and content is None:
        return "structure", f"messages[{i}].content"
    if role == "assistant" and content is None and not msg.get("tool_calls") and not msg.get("function_call"):
        return "structure", f"messages[{i}].content"
    if role == "tool" and msg.get("tool_call_id") not in tool_ids:
        return "structure", f"messages[{i}].tool_call_id"
    return "", ""


def _is_image(part: JSON) -> bool:
    """Whether a content part is an image: ``image_url`` (an Anthropic client's ``image`` blocks, a tool
    result's included, arrive as these), ``input_image``, or a ``file`` part carrying an image (a Files API
    image block of an Anthropic client's too)."""
    kind = part.get("type")
    if kind in _IMAGE_PARTS:
        return True
    if kind != "file":
        return False
    own = part.get(PRIVATE_KEY)
    if isinstance(own, dict) and isinstance(block := own.get(ONLY_ANTHROPIC), dict):
        return block.get("type") == "image"  # an Anthropic Files API image, carried as the client sent it
    spec = part.get("file")
    return isinstance(spec, dict) and _file_is_image(spec)


def _file_is_image(spec: JSON) -> bool:
    """A file is an image when its data URL's media type says so; else, unless that type names something
    else (a PDF), when its bytes start as an image's do or its name ends like one (all an uploaded
    ``file_id`` has to go by)."""
    data = spec.get("file_data")
    if isinstance(data, str) and data:
        if data.startswith("data:"):
            header, _, data = data[5:].partition(",")
            media_type = header.partition(";")[0].strip().lower()
            if media_type.startswith("image/"):
                return True
            if media_type not in ("", "application/octet-stream"):
                return False  # declared as something else (a PDF): sent and read as that
        if _image_magic(data):
            return True
    name = spec.get("filename")
    return isinstance(name, str) and name.lower().endswith(_IMAGE_SUFFIXES)


def _image_magic(b64: str) -> bool:
    try:
        head = binascii.a2b_base64(b64[:16])
    except (binascii.Error, ValueError):
        return False
    return head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP") or (
        head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS)


_WHY = {
    "role": "This role is not allowed for this key or model.",
    "structure": "Malformed conversation: system, user and tool messages need content, an assistant message "
                 "needs content or tool_calls, and a tool message must answer an earlier assistant tool call "
                 "by its tool_call_id.",
}


class ValidateStage(Stage):
    name = "validate"

    def __init__(self, policies: Policies, metrics: Metrics | None = None) -> None:
        self.policies = policies
        self.metrics = metrics

    async def on_request(self, ctx: RequestContext) -> Result | None:
        self.check(ctx)
        return None

    def check(self, ctx: RequestContext, again: bool = False) -> None:
        """The request against its model's policy; ``again``: once more, for the model a rule routed it to
        (``AGAIN``), whose checks may be stricter (a pass is recorded once, a block each time)."""
        policy = self.policies.for_request(ctx).validate
        if policy is None:
            return
        self._check_max_tokens(ctx, policy)
        messages = as_messages(ctx) or []
        if ctx.endpoint == "chat" and policy.max_messages is not None and len(messages) > policy.max_messages:
            raise _fail(ctx, "max_messages", f"Too many messages: {len(messages)}; the limit is "
                        f"{policy.max_messages}.", "messages", self.metrics)
        sizes = _Sizes()
        tool_ids: set[str] = set()
        for i, msg in enumerate(messages):
            reason, param = _measure_message(i, msg, sizes, tool_ids, policy)
            if reason:
                raise _fail(ctx, reason, _WHY[reason], param if ctx.endpoint == "chat" else _field(ctx), self.metrics)
        self._check_sizes(ctx, policy, sizes)
        if not again:
            record(ctx, "validate", {"action": "pass", "reasons": [], "counts": {}, "score": 0.0}, "pass",
                   self.metrics)

    def _check_max_tokens(self, ctx: RequestContext, policy: ValidatePolicy) -> None:
        ceiling = policy.max_tokens
        if ceiling is None or ctx.endpoint == "embeddings":
            return
        found = False
        for name in _MAX_FIELDS:
            asked = ctx.body.get(name)
            if name == "max_tokens" and asked is not None and asked == ctx.state.get(_SET):
                continue  # set by an earlier check (another model's ceiling): as if not asked
            if isinstance(asked, int) and asked > ceiling:
                raise _fail(ctx, "max_tokens", f"{name} is {asked}; the most this key or model allows is "
                            f"{ceiling}.", name, self.metrics)
            found = found or isinstance(asked, int)
        if not found:  # else the upstream's default applies: often the model's whole output limit
            value = ctx.state[_SET] = ceiling if ctx.endpoint == "chat" else min(ceiling, _LEGACY_DEFAULT)
            ctx.body = _with_max_tokens(ctx.body, value)

    def _check_sizes(self, ctx: RequestContext, policy: ValidatePolicy, sizes: _Sizes) -> None:
        field = _field(ctx)
        limits = (("max_chars", policy.max_chars, sizes.chars, "characters of text"),
                  ("max_input_tokens", policy.max_input_tokens, sizes.tokens, "input tokens (estimated)"),
                  ("max_images", policy.max_images, sizes.images, "images"))
        for reason, limit, value, what in limits:
            if limit is not None and value > limit:
                raise _fail(ctx, reason, f"The request has {value} {what}; the limit is {limit}.", field,
                            self.metrics)


def _with_max_tokens(body: JSON, value: int) -> JSON:
    """A copy of ``body`` (the client's is never changed) asking for at most ``value`` tokens, in canonical
    ``max_tokens``: every adapter maps it to the field its upstream reads (OpenAI's reasoning models get
    ``max_completion_tokens``, an OpenAI-compatible server its ``max_tokens_field``, Anthropic ``max_tokens``).
    A null field beside it is dropped: the adapters' rename would keep the null over the value."""
    out = {k: v for k, v in body.items() if k not in _MAX_FIELDS}
    out["max_tokens"] = value
    return out


def _field(ctx: RequestContext) -> str:
    return {"chat": "messages", "completions": "prompt"}.get(ctx.endpoint, "input")


def build(deps: StageDeps) -> Stage | None:
    policies = policies_for(deps, "validate")
    if policies is None:
        return None
    stage = ValidateStage(policies, metrics_of(deps))
    deps.services[AGAIN] = stage.check
    return stage
