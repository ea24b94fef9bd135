"""Which guardrail policy applies to one request, compiled once and shared by the guardrail stages.

Blocks override field by field (only the fields they set; lists and maps are
replaced whole), in this order, the last one winning:

    guardrails:  (global)  <-  routing."*".guardrails
        <-  tenant metadata.guardrails  <-  project metadata.guardrails  <-  key metadata.guardrails
        <-  routing.<model>.guardrails

Tenants, projects and keys carry theirs in ``metadata["guardrails"]`` (admin API),
read from ``ctx.principal.extra["grant"]``; a custom auth may also put a block in
``ctx.principal.extra["guardrails"]`` (applied after the key's). The model block
comes last because it is the operator's word on where a model's data may go.
A metadata block that does not validate is ignored (logged once per distinct
value); the rest of the chain still applies.

A section's stage exists only if some config block (global or a model's) names
that section, so a deployment that never mentions ``pii`` pays nothing for it;
``pii: {mode: off}`` keeps the stage for keys that switch it on.

Resolution is once per request (kept on ``ctx.state``); compiled policies are
memoised per model, and per (model, metadata blocks) when there are overrides.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from aigw.config.explain import describe
from aigw.config.guardrails import GuardrailsConfig, InjectionPolicy, OutputPolicy, PiiPolicy, ValidatePolicy
from aigw.config.load import ConfigError
from aigw.config.models import GatewayConfig
from aigw.errors import InvalidRequest
from aigw.guardrails.injection import InjectionClassifier
from aigw.guardrails.output import ContentFilter
from aigw.guardrails.pii import PiiDetector
from aigw.guardrails.rules import RuleSet
from aigw.observability.metrics import Metrics
from aigw.pipeline.context import Principal, RequestContext
from aigw.pipeline.deps import StageDeps
from aigw.types import JSON

log = logging.getLogger("aigw.guardrails")
SERVICE = "guardrail_policies"  # deps.services: the one Policies object the stages share
CLASSIFIERS = "injection_classifiers"  # deps.services: name -> InjectionClassifier (optional)
METADATA_KEY = "guardrails"  # tenant / project / key metadata entry, and principal.extra entry
VERDICTS = "guardrails"  # ctx.state: stage -> verdict record (kinds and counts); the request log reads it
PII_MAPPING = "guardrails.pii.mapping"  # ctx.state: placeholder -> original (pii writes; output, observe read)
PII_RESTORE = "guardrails.pii.restore"  # ctx.state: True when the answer gets the originals back (pii writes)
PII_DETECTOR = "guardrails.pii.detector"  # ctx.state: the request's PiiDetector, any mode (pii writes, observe reads)
_POLICY = "guardrails.policy"
_MAPPINGS = frozenset({"validate", "pii", "injection", "output"})
_MEMO_LIMIT = 1024


@dataclass(slots=True, eq=False)
class Policy:
    """One effective policy with its checkers built; a section that is off is None."""

    validate: ValidatePolicy | None = None
    pii: PiiPolicy | None = None
    detector: PiiDetector | None = None
    injection: InjectionPolicy | None = None
    classifier: InjectionClassifier | None = None
    rules: RuleSet | None = None
    output: OutputPolicy | None = None
    content: ContentFilter | None = None
    output_tag: str = ""  # a short hash of the output section ("" without one): what ``cache_tag`` compares

    @property
    def output_active(self) -> bool:
        out = self.output
        return out is not None and (out.leakage != "off" or self.content is not None or out.json_schema != "off")


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``base`` with what ``patch`` sets: sections field by field, lists and maps whole."""
    out = dict(base)
    for name, value in patch.items():
        old = out.get(name)
        if name in _MAPPINGS and isinstance(old, dict) and isinstance(value, dict):
            value = {**old, **value}
        out[name] = value
    return out


def metadata_blocks(principal: Principal) -> list[Any]:
    """The tenant's, project's and key's ``metadata.guardrails`` (in that order), then ``extra.guardrails``."""
    extra = principal.extra
    if not extra:
        return []
    out: list[Any] = []
    grant = extra.get("grant")
    if grant is not None:
        for owner in (grant.tenant, grant.project, grant.key):
            meta = getattr(owner, "metadata", None)
            if meta and (block := meta.get(METADATA_KEY)) is not None:
                out.append(block)
    if (block := extra.get(METADATA_KEY)) is not None:
        out.append(block)
    return out


def parse_block(block: Any, where: str = METADATA_KEY) -> GuardrailsConfig:
    """A tenant's, project's or key's guardrails block as the stages read it, checked as far as no config is needed
    (its fields, its rules); ValueError saying why not, naming the field from ``where``. The admin API checks a
    block with it when it is written; the stages, when a call uses it (then route targets and classifiers too)."""
    try:
        parsed = GuardrailsConfig.model_validate(block)
        RuleSet.from_config(parsed.rules, prefix=f"{where}.rules")
    except ValidationError as exc:
        raise ValueError("; ".join(describe(exc, GuardrailsConfig, where))) from None
    except InvalidRequest as exc:
        raise ValueError(f"{exc.param}: {exc.message}") from None
    return parsed

class Policies:
    def __init__(self, config: GatewayConfig, classifiers: dict[str, InjectionClassifier] | None = None) -> None:
        self._models = frozenset(config.model_names())
        self._classifiers = dict(classifiers or {})
        self._detectors: dict[tuple[Any, ...], PiiDetector] = {}
        self._compiled: dict[bytes, Policy] = {}
        self._memo: dict[tuple[str, bytes], Policy] = {}
        blocks: dict[str, GuardrailsConfig] = {}
        if config.guardrails is not None:
            blocks["guardrails"] = config.guardrails
        for name, routing in config.routing.items():
            if routing.guardrails is not None:
                blocks[f"routing.{name}.guardrails"] = routing.guardrails
        self.sections: set[str] = set()
        for where, block in blocks.items():
            self.sections |= block.sections_set()
            self._check(block, where)
        base = config.guardrails.as_patch() if config.guardrails is not None else {}
        star = config.routing.get("*")
        if star is not None and star.guardrails is not None:
            base = merge(base, star.guardrails.as_patch())
        self._base = base
        self._model_patches = {name: r.guardrails.as_patch() for name, r in config.routing.items()
                               if name != "*" and r.guardrails is not None}
        self.default = self._compile(base)
        self.by_model = {name: self._compile(merge(base, p)) for name, p in self._model_patches.items()}

    def has(self, section: str) -> bool:
        return section in self.sections

    # -- per request ---------------------------------------------------------------------
    def for_request(self, ctx: RequestContext) -> Policy:
        found: Policy | None = ctx.state.get(_POLICY)
        if found is not None:
            return found
        blocks = metadata_blocks(ctx.principal)
        policy = (self.by_model.get(ctx.model, self.default) if not blocks
                  else self._with_blocks(ctx.model, blocks, ctx.principal))
        ctx.state[_POLICY] = policy
        return policy

    def cache_tag(self, ctx: RequestContext) -> str:
        """Empty when this request's output checks are its model's configured ones, else their tag: the
        response cache keeps answers checked under other output checks apart (a hit skips them)."""
        tag = self.for_request(ctx).output_tag
        return "" if tag == self.by_model.get(ctx.model, self.default).output_tag else tag

    @staticmethod
    def forget(ctx: RequestContext) -> None:
        """The model changed (a rule routed the request): resolve again for the new one."""
        ctx.state.pop(_POLICY, None)

    def _with_blocks(self, model: str, blocks: list[Any], who: Principal) -> Policy:
        try:
            raw = orjson.dumps(blocks, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            return self.by_model.get(model, self.default)
        found = self._memo.get((model, raw))
        if found is not None:
            return found
        patch = self._base
        for block in blocks:
            if self._block_ok(block, who):
                patch = merge(patch, block)
        policy = self._compile(merge(patch, self._model_patches.get(model, {})))
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[(model, raw)] = policy
        return policy

    def _block_ok(self, block: Any, who: Principal) -> bool:
        try:
            self._check(parse_block(block, "metadata.guardrails"), "metadata.guardrails", fail=InvalidRequest)
        except (InvalidRequest, ConfigError, ValueError) as exc:
            why = str(exc).splitlines()[0]
            log.warning("ignoring a metadata guardrails block (key %s, tenant %s; the same block is not reported "
                        "again): %s", who.key_id, who.tenant_id or "-", why)
            return False
        return True

    # -- building ------------------------------------------------------------------------
    def _check(self, block: GuardrailsConfig, where: str, fail: type[Exception] = ConfigError) -> None:
        """What the pydantic model cannot check: rules, route targets, classifier names."""
        try:
            rules = RuleSet.from_config(block.rules, prefix=f"{where}.rules")
        except InvalidRequest as exc:
            raise fail(f"{exc.param}: {exc.message}") from None
        for i, rule in enumerate(rules.rules):
            if rule.action == "route" and rule.text not in self._models:
                raise fail(f"{where}.rules[{i}].route: no model named {rule.text!r} in models:")
        inj = block.injection
        if inj is not None and inj.classifier and inj.classifier not in self._classifiers:
            raise fail(f"{where}.injection.classifier: no classifier named {inj.classifier!r} is registered")

    def _compile(self, patch: dict[str, Any]) -> Policy:
        key = orjson.dumps(patch, option=orjson.OPT_SORT_KEYS)
        found = self._compiled.get(key)
        if found is not None:
            return found
        cfg = GuardrailsConfig.model_validate(patch)
        pii = cfg.pii if cfg.pii is not None and cfg.pii.mode != "off" else None
        inj = cfg.injection if cfg.injection is not None and cfg.injection.mode != "off" else None
        out = cfg.output
        policy = Policy(
            validate=cfg.validate_, pii=pii, detector=self._detector(pii) if pii is not None else None,
            injection=inj, classifier=self._classifiers.get(inj.classifier) if inj and inj.classifier else None,
            rules=RuleSet.from_config(cfg.rules) if cfg.rules else None, output=out,
            content=_content_filter(out) if out is not None else None,
            output_tag=_tag(out.model_dump(mode="json")) if out is not None else "",
        )
        if len(self._compiled) >= _MEMO_LIMIT:
            self._compiled.clear()
        self._compiled[key] = policy
        return policy

    def _detector(self, pii: PiiPolicy) -> PiiDetector:
        key = (tuple(pii.entities), tuple(sorted(pii.custom.items())))
        found = self._detectors.get(key)
        if found is None:
            found = self._detectors[key] = PiiDetector(pii.entities, pii.custom)
        return found


def _tag(section: dict[str, Any]) -> str:
    return hashlib.blake2b(orjson.dumps(section, option=orjson.OPT_SORT_KEYS), digest_size=6).hexdigest()


def _content_filter(out: OutputPolicy) -> ContentFilter | None:
    if out.content == "off" or not (out.blocklist or out.categories):
        return None
    spec = {"blocklist": out.blocklist, "categories": {n: c.model_dump() for n, c in out.categories.items()}}
    return ContentFilter.from_config(spec, action=out.content)


def policies_for(deps: StageDeps, section: str) -> Policies | None:
    """The shared Policies (built by the first guardrail stage), or None if ``section`` is never on."""
    config = deps.config
    if config.guardrails is None and all(r.guardrails is None for r in config.routing.values()):
        return None
    found = deps.services.get(SERVICE)
    if not isinstance(found, Policies):
        found = deps.services[SERVICE] = Policies(config, deps.services.get(CLASSIFIERS))
    return found if found.has(section) else None


def metrics_of(deps: StageDeps) -> Metrics | None:
    found = deps.services.get("metrics")
    return found if isinstance(found, Metrics) else None


def record(ctx: RequestContext, stage: str, entry: dict[str, Any], action: str, metrics: Metrics | None) -> None:
    """Keep one stage's verdict for the request log (kinds and counts only) and count it."""
    verdicts = ctx.state.get(VERDICTS)
    if verdicts is None:
        verdicts = ctx.state[VERDICTS] = {}
    verdicts[stage] = entry
    if metrics is not None:
        metrics.guardrail(ctx.model, stage, action)


def as_messages(ctx: RequestContext) -> list[JSON] | None:
    """Chat messages, or a legacy prompt / embeddings input as user messages (text only)."""
    body = ctx.body
    if ctx.endpoint == "chat":
        messages = body.get("messages")
        return messages if isinstance(messages, list) else None
    raw = body.get("prompt") if ctx.endpoint == "completions" else body.get("input")
    items = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    texts = [x for x in items if isinstance(x, str)]
    return [{"role": "user", "content": t} for t in texts] or None


def with_texts(ctx: RequestContext, messages: list[JSON]) -> JSON:
    """The body with ``messages`` (from ``as_messages``) written back where they came from."""
    body = ctx.body
    if ctx.endpoint == "chat":
        return {**body, "messages": messages}
    field = "prompt" if ctx.endpoint == "completions" else "input"
    texts = iter(m["content"] for m in messages)
    raw = body.get(field)
    if isinstance(raw, str):
        return {**body, field: next(texts)}
    return {**body, field: [next(texts) if isinstance(x, str) else x for x in raw or ()]}
