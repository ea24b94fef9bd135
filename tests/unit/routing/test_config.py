"""`routing:` and `circuit_breaker:` config: shapes, and names that must exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigw.config.load import ConfigError, load_config
from tests.support.config_files import write_config

BASE = """
models:
  - {name: fast, provider: mock, weight: 3, rpm: 600, tpm: 200000, timeout_s: 20}
  - {name: fast, provider: mock}
  - {name: smart, provider: mock}
  - {name: long, provider: mock}
"""


def load(tmp_path: Path, text: str) -> object:
    return load_config(write_config(tmp_path, BASE + text))


def test_the_documented_shape_loads(tmp_path: Path) -> None:
    config = load(tmp_path, """
routing:
  "*": {num_retries: 1}
  fast:
    strategy: least_inflight
    num_retries: 2
    timeout_s: 30
    fallbacks: [smart]
    context_window_fallbacks: [long]
    content_policy_fallbacks: [smart]
circuit_breaker: {failures: 5, window_s: 30, cooldown_s: 30, half_open_calls: 1}
""")
    assert config.routing["fast"].fallbacks == ["smart"]  # type: ignore[attr-defined]
    assert config.circuit_breaker.half_open_calls == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("routing: {nope: {num_retries: 1}}", "routing.nope: no model named 'nope'"),
        ("routing: {fast: {fallbacks: [smart, gone]}}", "routing.fast.fallbacks[1]: no model named 'gone'"),
        ("routing: {fast: {context_window_fallbacks: [huge]}}", "routing.fast.context_window_fallbacks[0]"),
        ("routing: {fast: {fallbacks: [fast]}}", "cannot fall back to itself"),
        ("routing: {fast: {strategy: fastest}}", "routing.fast.strategy"),
        ("routing: {fast: {retries: 2}}", "routing.fast.retries: unknown key"),
        ("circuit_breaker: {failures: 0}", "circuit_breaker.failures"),
        ("circuit_breaker: {threshold: 3}", "circuit_breaker.threshold: unknown key"),
    ],
)
def test_bad_routing_config_names_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text)
    assert message in str(exc.value)


def test_duplicate_deployment_ids_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "aigw.yaml"
    path.write_text("models:\n  - {name: a, provider: mock, id: one}\n  - {name: b, provider: mock, id: one}\n")
    with pytest.raises(ConfigError, match=r"models\[1\].id"):
        load_config(path)
