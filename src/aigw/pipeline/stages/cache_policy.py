"""Which cache rules apply to one request: global <- model <- key <- request.

The global ``cache:`` block is overridden field by field by the model's
``routing.<model>.cache`` block, then by the key's ``cache`` setting
(``principal.extra["cache"]``, or ``cache`` in the key's metadata; same shape),
and the request itself may only narrow: skip the lookup, skip the store, or pick
a TTL up to ``max_ttl_s``. Its header and its body's ``cache`` object add up: either
one's ``no-cache``/``no-store``/exact-only holds, and the shorter TTL.
Merged policies are built once per model, and once per distinct key setting.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from aigw import errors
from aigw.config.cache import CacheConfig, key_setting_problem
from aigw.config.explain import describe
from aigw.pipeline.context import Principal, RequestContext
from aigw.pipeline.deps import StageDeps
from aigw.types import JSON

log = logging.getLogger("aigw.cache")
HEADER = "x-aigw-cache"
_MEMO_LIMIT = 1024


@dataclass(slots=True)
class Controls:
    """What the request asked for, from the ``x-aigw-cache`` header and the body's ``cache``."""

    no_cache: bool = False  # do not look up (the answer may still be stored)
    no_store: bool = False  # do not store this answer
    ttl_s: float | None = None
    semantic: bool = True  # False: exact matches only


def merge(base: CacheConfig, override: CacheConfig | JSON) -> CacheConfig:
    """``base`` with the fields ``override`` sets (semantic fields one by one)."""
    data = base.model_dump()
    if isinstance(override, CacheConfig):
        patch = override.model_dump(include=override.model_fields_set)
        if "semantic" in patch:
            patch["semantic"] = override.semantic.model_dump(include=override.semantic.model_fields_set)
    else:
        patch = dict(override)
    semantic = patch.pop("semantic", None)
    data.update(patch)
    if isinstance(semantic, dict):
        data["semantic"] = {**data["semantic"], **semantic}
    elif semantic is not None:
        data["semantic"] = semantic  # let validation name the error
    return CacheConfig.model_validate(data)


class Policies:
    """``base``: what a model's block fills its unset fields from (default: ``default``)."""

    def __init__(self, default: CacheConfig, by_model: dict[str, CacheConfig],
                 base: CacheConfig | None = None) -> None:
        self.default = default
        under = base if base is not None else default
        self.by_model = {name: merge(under, block) for name, block in by_model.items()}
        self._by_key: dict[tuple[str, bytes], CacheConfig] = {}

    def all(self) -> list[CacheConfig]:
        return [self.default, *self.by_model.values()]

    def for_request(self, ctx: RequestContext) -> CacheConfig:
        base = self.by_model.get(ctx.model, self.default)
        override = _key_setting(ctx.principal.extra) if ctx.principal.extra else None
        if not override:
            return base
        return self._for_key(ctx.model, base, override, ctx.principal)

    def _for_key(self, model: str, base: CacheConfig, override: Any, who: Principal) -> CacheConfig:
        try:
            memo_key = (model, orjson.dumps(override, option=orjson.OPT_SORT_KEYS))
        except TypeError:
            return base
        found = self._by_key.get(memo_key)
        if found is not None:
            return found
        policy = base
        why = key_setting_problem(override)
        if not why:
            try:
                policy = merge(base, override)
            except ValidationError as exc:  # it names each field
                why = "; ".join(describe(exc, CacheConfig, "cache"))
        if why:
            log.warning("ignoring a key's cache setting (key %s, tenant %s; the same setting is not reported "
                        "again): %s", who.key_id, who.tenant_id or "-", why)
            policy = base
        if len(self._by_key) >= _MEMO_LIMIT:
            self._by_key.clear()
        self._by_key[memo_key] = policy
        return policy


def _key_setting(extra: dict[str, Any]) -> Any:
    """A key's ``cache`` setting: ``extra["cache"]``, else the key's ``metadata["cache"]``."""
    found = extra.get("cache")
    if found is None:
        metadata = extra.get("metadata")
        found = metadata.get("cache") if isinstance(metadata, dict) else None
    return found


_NONE = Controls()  # what a request that asks for nothing gets (shared: never changed)


def read_controls(ctx: RequestContext) -> Controls:
    """Parse the header and take the body's ``cache`` object out (it never goes upstream)."""
    header = ctx.headers.get(HEADER)
    body = ctx.body
    if not header and "cache" not in body and "_anthropic" not in body:
        return _NONE
    controls = Controls()
    if header:
        _apply_directives(controls, header, HEADER)
    body_value = ctx.body.pop("cache", None)
    private = ctx.body.get("_anthropic")
    if body_value is None and isinstance(private, dict) and "cache" in private:
        body_value = private.pop("cache")
        if not private:
            del ctx.body["_anthropic"]
    if body_value is not None:
        _apply_body(controls, body_value)
    if controls.no_cache and controls.no_store:  # no lookup, no store: a vector (maybe a billed call) serves nothing
        controls.semantic = False
    return controls


def _apply_directives(controls: Controls, raw: str, where: str) -> None:
    for token in (t.strip().lower() for t in raw.split(",")):
        if not token:
            continue
        if token == "no-cache":
            controls.no_cache = True
        elif token == "no-store":
            controls.no_store = True
        elif token.startswith("ttl="):
            _shorter(controls, _ttl(token[4:], where))
        else:
            raise errors.InvalidRequest(
                f"{where}: unknown directive {token!r}; use no-cache, no-store or ttl=SECONDS", param=where
            )


def _apply_body(controls: Controls, value: Any) -> None:
    if isinstance(value, str):
        _apply_directives(controls, value, "cache")
        return
    if not isinstance(value, dict):
        raise errors.InvalidRequest("cache: expected an object like {\"no_store\": true, \"ttl_s\": 60}",
                                    param="cache")
    for name, item in value.items():
        if name in ("no_cache", "no_store", "semantic"):
            if not isinstance(item, bool):
                raise errors.InvalidRequest(f"cache.{name}: expected true or false", param=f"cache.{name}")
            if name == "semantic":
                controls.semantic = controls.semantic and item  # either saying exact-only wins
            elif item:
                setattr(controls, name, True)  # false adds nothing: it never undoes the header
        elif name in ("ttl_s", "ttl"):
            if isinstance(item, str):  # JSON has numbers: "5" is a mistake (the header's ttl=5 is text by nature)
                raise errors.InvalidRequest(f"cache.{name}: ttl must be a number of seconds", param=f"cache.{name}")
            _shorter(controls, _ttl(item, f"cache.{name}"))
        else:
            raise errors.InvalidRequest(
                f"cache.{name}: unknown field; use no_cache, no_store, ttl_s or semantic", param=f"cache.{name}"
            )


def _shorter(controls: Controls, ttl_s: float) -> None:
    """Header and body each may name a TTL: the shorter one holds."""
    controls.ttl_s = ttl_s if controls.ttl_s is None else min(controls.ttl_s, ttl_s)


def _ttl(raw: Any, where: str) -> float:
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw)
    except (TypeError, ValueError):
        raise errors.InvalidRequest(f"{where}: ttl must be a number of seconds", param=where) from None
    if not 0 < value < math.inf:
        raise errors.InvalidRequest(f"{where}: ttl must be a positive, finite number of seconds", param=where)
    return value


def policies_from(deps: StageDeps) -> Policies | None:
    """The global block and the per-model ``routing.<model>.cache`` blocks; None = no cache at all."""
    config = deps.config
    by_model = {name: r.cache for name, r in config.routing.items() if r.cache is not None}
    if config.cache is None and not by_model:
        return None
    # a model's block without a global one caches with the settings' defaults (mode exact), as documented;
    # models without a block stay off (before: every block merged over `off`, so it cached nothing)
    base = config.cache if config.cache is not None else CacheConfig()
    star = by_model.pop("*", None)
    if star is not None:
        base = merge(base, star)
    default = base if config.cache is not None or star is not None else CacheConfig(mode="off")
    return Policies(default, by_model, base=base)
