"""``cache.redis_url`` / AIGW_CACHE_REDIS_URL: the cache's own Redis, apart from the counters' ``redis_url``.

Limits and budgets want a Redis that never evicts, the cache one that does; before this setting both
shared ``redis_url``, so a cache that filled it made budgets fail closed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aigw.app import build_app
from aigw.config.cache import key_setting_problem
from aigw.config.load import ConfigError, load_config
from tests.support.config_files import write_config

ENV = "AIGW_CACHE_REDIS_URL"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AIGW_CONFIG", "AIGW_REDIS_URL", ENV):
        monkeypatch.delenv(name, raising=False)


def test_a_redis_backend_loads_with_only_the_cache_redis_url(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "cache: {backend: redis, redis_url: 'redis://127.0.0.1:6390/2'}\n"))
    assert config.cache is not None and config.cache.redis_url == "redis://127.0.0.1:6390/2"
    assert config.redis_url == ""


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://:p%40ss@h:6380", "unix:///tmp/r.sock?db=1",
                                 "REDIS://h:6379", "Rediss://h"])
def test_the_cache_redis_url_takes_what_redis_py_opens(tmp_path: Path, url: str) -> None:
    assert load_config(write_config(tmp_path, f"cache: {{redis_url: '{url}'}}\n")).cache.redis_url == url  # type: ignore[union-attr]


def test_a_cache_redis_url_with_the_wrong_scheme_names_the_field_not_the_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, "cache: {redis_url: 'http://u:hunter2@h:6379'}\n"))
    assert "  cache.redis_url: must be empty or start with redis://, rediss:// or unix://" in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("text", [
    "models: [{name: a, provider: mock}]\ncache: {}\nrouting: {a: {cache: {redis_url: 'redis://h'}}}\n",
    "models: [{name: a, provider: mock}]\nrouting: {a: {cache: {redis_url: 'redis://h'}}}\n",
])
def test_a_model_block_may_not_set_the_cache_redis_url(tmp_path: Path, text: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: routing.a.cache: redis_url may only be set in the global cache block")


def test_a_key_setting_may_not_set_the_cache_redis_url() -> None:
    assert key_setting_problem({"redis_url": "redis://h"}) == \
        "cache: redis_url may only be set in the global cache block"


def test_the_environment_fills_the_global_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "redis://127.0.0.1:6390/1")
    config = load_config(write_config(tmp_path, "cache: {backend: redis}\n"))
    assert config.cache is not None and config.cache.redis_url == "redis://127.0.0.1:6390/1"
    assert config.redis_url == ""
    written = load_config(write_config(tmp_path, "cache: {backend: redis, redis_url: 'redis://file:6379'}\n"))
    assert written.cache is not None and written.cache.redis_url == "redis://file:6379"  # the file wins
    assert load_config(write_config(tmp_path, "redis_url: 'redis://h'\n")).cache is None  # it switches no cache on


def test_a_bad_url_from_the_environment_names_the_variable(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "localhost:6379")
    with pytest.raises(ConfigError, match=r"cache.redis_url: must be .* \(set by AIGW_CACHE_REDIS_URL\)"):
        load_config(write_config(tmp_path, "cache: {}\n"))


def test_the_environment_without_a_global_block_for_a_redis_model_block_is_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nowhere to hold the variable, that model's entries would go to redis_url, the counters' Redis."""
    monkeypatch.setenv(ENV, "redis://127.0.0.1:6390/1")
    text = "redis_url: 'redis://127.0.0.1:6379'\nmodels: [{name: a, provider: mock}]\n" \
           "routing: {a: {cache: {backend: redis}}}\n"
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: routing.a.cache.backend: redis with AIGW_CACHE_REDIS_URL set")
    monkeypatch.delenv(ENV)
    assert load_config(path).routing["a"].cache is not None  # without the variable: redis_url, as before


def test_the_same_url_for_both_keeps_one_client(tmp_path: Path) -> None:
    url = "redis://127.0.0.1:6399/0"  # never connected: building the app opens no connection
    text = f"redis_url: '{url}'\ncache: {{backend: redis, redis_url: '{url}'}}\n"
    app = build_app(load_config(write_config(tmp_path, text)))
    deps = app.state["deps"]
    assert deps.services["cache_stores"]["redis"].redis is deps.redis
    assert deps.services["cache_purge_log"].redis is deps.redis
    assert "cache_redis" not in app.state["health"]._checks


def test_another_url_gives_the_cache_a_client_and_a_health_line_of_its_own(tmp_path: Path) -> None:
    text = "redis_url: 'redis://127.0.0.1:6399/0'\ncache: {backend: redis, redis_url: 'redis://127.0.0.1:6398/3'}\n"
    app = build_app(load_config(write_config(tmp_path, text)))
    deps = app.state["deps"]
    cache_redis = deps.services["cache_stores"]["redis"].redis
    assert cache_redis is not deps.redis
    assert cache_redis.connection_pool.connection_kwargs["port"] == 6398
    index = deps.services["cache_indexes"].get("redis")  # built only where numpy is installed
    assert index is None or index.redis is cache_redis
    assert deps.services["cache_purge_log"].redis is cache_redis  # purges announced where the entries live
    assert str(deps.services["cache_stores"]["redis"].pipe.address) == "127.0.0.1:6398"  # the lean connection too
    assert {"redis", "cache_redis"} <= set(app.state["health"]._checks)


def test_the_documented_two_redis_example_loads(tmp_path: Path) -> None:
    doc = (Path(__file__).parents[3] / "docs" / "cache.md").read_text()
    example = doc.split("**A Redis of its own.**", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    config = load_config(write_config(tmp_path, example))
    assert config.redis_url != config.cache.redis_url != ""  # type: ignore[union-attr]


def test_the_cache_redis_password_never_reaches_a_log_line(tmp_path: Path) -> None:
    from aigw.observability.setup import secrets_of

    config = load_config(write_config(tmp_path, "cache: {redis_url: 'redis://:s3cret-cache@127.0.0.1:6390/0'}\n"))
    assert "s3cret-cache" in secrets_of(config)


@pytest.mark.parametrize("text", ["cache: {redis_url: 'redis://127.0.0.1:6390/2'}\n",
                                  "cache: {mode: exact, ttl_s: 60}\n"])
def test_a_cache_redis_url_alone_puts_the_cache_in_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        text: str) -> None:
    """From the file or from the variable: before, the URL was ignored and the cache stayed in memory."""
    monkeypatch.setenv(ENV, "redis://127.0.0.1:6390/2")
    config = load_config(write_config(tmp_path, text))
    assert config.cache is not None and config.cache.backend == "redis"
    assert config.cache.redis_url == "redis://127.0.0.1:6390/2"
    monkeypatch.delenv(ENV)
    without = load_config(write_config(tmp_path, "cache: {mode: exact}\nredis_url: 'redis://127.0.0.1:6390/0'\n"))
    assert without.cache is not None and without.cache.backend == "memory"  # redis_url alone: memory, as before


def test_a_model_block_may_still_keep_its_entries_in_memory(tmp_path: Path) -> None:
    text = "models: [{name: a, provider: mock}, {name: b, provider: mock}]\n" \
           "cache: {redis_url: 'redis://127.0.0.1:6390/2'}\nrouting: {a: {cache: {backend: memory}}}\n"
    app = build_app(load_config(write_config(tmp_path, text)))
    policies = app.state["pipeline"].stage("cache").policies
    assert policies.by_model["a"].backend == "memory" and policies.default.backend == "redis"


def test_backend_memory_beside_a_cache_redis_url_is_a_one_line_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "cache: {backend: memory, redis_url: 'redis://127.0.0.1:6390/2'}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: cache.backend: memory with cache.redis_url would ignore that Redis: remove backend: memory to "
        "cache there (a cache.redis_url alone means backend: redis), or remove cache.redis_url to cache in memory")


def test_backend_memory_with_the_variable_set_names_the_variable(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "redis://127.0.0.1:6390/2")
    path = write_config(tmp_path, "cache: {backend: memory}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: cache.backend: memory with cache.redis_url (set by {ENV}) would ignore")
    assert message.endswith(f"or unset {ENV} to cache in memory")
    assert "6390" not in message  # the URL (and any password in it) stays out of the message


def test_config_check_and_the_start_refuse_backend_memory_beside_a_cache_redis_url(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from aigw.cli.main import cli
    from aigw.config.models import GatewayConfig
    from aigw.pipeline.stages.cache_build import CacheSetupError

    path = write_config(tmp_path, "cache: {backend: memory, redis_url: 'redis://127.0.0.1:6390/2'}\n")
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert result.exit_code == 2 and result.output.startswith(f"{path}: cache.backend: memory with cache.redis_url")
    assert len(result.output.strip().splitlines()) == 1
    config = GatewayConfig.model_validate({"cache": {"backend": "memory", "redis_url": "redis://127.0.0.1:6390/2"}})
    with pytest.raises(CacheSetupError, match=r"^cache\.backend: memory with cache\.redis_url would ignore"):
        build_app(config)  # a config made in code, not loaded: the stage refuses it when the app is built
