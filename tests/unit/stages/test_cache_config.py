"""The cache's config: the documented shape loads, mistakes fail at load or startup with a path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from aigw.app import build_app
from aigw.config import cache as cache_config
from aigw.config.load import ConfigError, load_config
from aigw.pipeline.stages.cache_build import CacheSetupError
from tests.support.config_files import write_config
from tests.support.gateway import make_config

DOCUMENTED = """
models:
  - {name: fast, provider: mock}
  - {name: mock-embed, provider: mock, modes: [embeddings]}
cache:
  mode: exact
  backend: memory
  ttl_s: 3600
  max_entries: 10000
  semantic: {threshold: 0.92, embedding_model: mock-embed, max_turns: 4}
routing:
  fast:
    cache: {mode: semantic, ttl_s: 60, semantic: {embedding_model: mock-embed}}
"""


def test_the_documented_shape_loads(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, DOCUMENTED))
    assert config.cache is not None and config.cache.semantic.threshold == 0.92
    model_block = config.routing["fast"].cache
    assert model_block is not None and model_block.mode == "semantic"
    app = build_app(config)
    stage = app.state["pipeline"].stage("cache")
    assert stage.policies.by_model["fast"].ttl_s == 60
    assert stage.policies.by_model["fast"].semantic.threshold == 0.92  # inherited from the global block


def test_unknown_keys_are_rejected_with_their_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, "cache: {mode: exact, ttl: 5}\n"))
    assert "cache.ttl" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, "cache: {mode: always}\n"))
    assert "cache.mode" in str(info.value)


def test_semantic_local_without_the_extra_fails_at_load_with_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(cache_config.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, "cache: {mode: semantic, semantic: {embedding_model: local}}\n"))
    assert "onnxruntime" in str(info.value) and "pip install 'aigw[semantic]'" in str(info.value)


def test_no_cache_block_means_no_stage() -> None:
    app = build_app(make_config({}))
    assert app.state["pipeline"].stage("cache") is None
    assert "cache_stores" not in app.state["deps"].services


@pytest.mark.parametrize(("raw", "message"), [
    ({"cache": {"backend": "redis"}},
     "cache.backend: the redis cache store is not available (set cache.redis_url or redis_url)"),
    ({"cache": {}, "routing": {"mock": {"cache": {"max_entries": 5}}}}, "routing.mock.cache: max_entries"),
    ({"cache": {"mode": "semantic", "semantic": {"embedding_model": "unknown-model"}}}, "neither 'local'"),
    ({"cache": {"mode": "semantic", "semantic": {"embedding_model": "mock"}}}, "modes: [embeddings]"),
])
def test_setup_mistakes_fail_at_startup(raw: dict, message: str) -> None:
    with pytest.raises(CacheSetupError) as info:
        build_app(make_config(raw))
    assert message in str(info.value)


@pytest.mark.parametrize(("text", "line"), [
    ("cache: {backend: redis}\n", "cache.backend: redis needs redis_url"),
    ("models: [{name: a, provider: mock}]\ncache: {mode: 'off', backend: redis}\n"
     "routing: {a: {cache: {mode: exact}}}\n",
     "routing.a.cache.backend: redis needs redis_url"),
    ("models: [{name: a, provider: mock}]\ncache: {}\nrouting: {a: {cache: {max_entries: 5}}}\n",
     "routing.a.cache: max_entries may only be set in the global cache block"),
    ("cache: {mode: semantic, semantic: {embedding_model: nope}}\n",
     "cache.semantic.embedding_model: 'nope' is neither 'local' nor a model in models: (embedding models: mock-embed)"),
    ("models: [{name: a, provider: mock}]\ncache: {mode: semantic, semantic: {embedding_model: a}}\n",
     "cache.semantic.embedding_model: 'a' has no deployment with modes: [embeddings]"),
])
def test_setup_mistakes_the_config_shows_fail_at_load(tmp_path: Path, text: str, line: str) -> None:
    """So `aigw config check` finds them too (before: it said ok, and only `aigw serve` refused)."""
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {line}")


def test_a_redis_backend_with_redis_url_loads(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "redis_url: redis://127.0.0.1:6379/0\ncache: {backend: redis}\n"))
    assert config.cache is not None and config.cache.backend == "redis"


def test_a_model_block_without_a_global_block_caches_that_model_only(tmp_path: Path) -> None:
    """`routing.<model>.cache: {ttl_s: 5}` alone used to merge over `mode: off`: config check said ok and
    nothing was ever cached. Its unset fields now come from the settings' defaults (mode exact)."""
    text = ("models: [{name: a, provider: mock}, {name: b, provider: mock}]\n"
            "routing: {a: {cache: {ttl_s: 5}}}\n")
    stage = build_app(load_config(write_config(tmp_path, text))).state["pipeline"].stage("cache")
    policies = stage.policies
    assert (policies.by_model["a"].mode, policies.by_model["a"].ttl_s) == ("exact", 5)
    assert policies.default.mode == "off"  # b has no block: not cached
    star = build_app(load_config(write_config(tmp_path, "routing: {'*': {cache: {ttl_s: 9}}}\n")))
    star_default = star.state["pipeline"].stage("cache").policies.default
    assert (star_default.mode, star_default.ttl_s) == ("exact", 9)
    with pytest.raises(ConfigError) as info:  # checked at load like any block that caches
        load_config(write_config(tmp_path, text.replace("{ttl_s: 5}", "{backend: redis}")))
    assert "routing.a.cache.backend: redis needs redis_url" in str(info.value)
