"""A config typo is answered with the key that was meant, or the keys allowed there."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigw.config.load import ConfigError, load_config


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("cache: {ttl: 3600}", "cache.ttl: unknown key; did you mean 'ttl_s'?"),
        ("cache: {backed: redis}", "cache.backed: unknown key; did you mean 'backend'?"),
        ("cache: {max_entry: 5}", "cache.max_entry: unknown key; did you mean 'max_entry_bytes' or 'max_entries'?"),
        ("routing: {'*': {cache: {semantic: {treshold: 0.9}}}}",
         "routing.*.cache.semantic.treshold: unknown key; did you mean 'threshold'?"),
        ("models: [{name: a, provider: mock, prices: {input: 1}}]",
         "models[0].prices.input: unknown key; did you mean 'input_per_mtok'?"),
        ("guardrails: {validate: {max_message: 3}}", "guardrails.validate.max_message: unknown key; did you mean"),
    ],
)
def test_a_typo_names_the_key_meant(tmp_path: Path, text: str, line: str) -> None:
    path = tmp_path / "aigw.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert line in str(exc.value)


def test_a_key_far_from_any_lists_the_allowed_ones(tmp_path: Path) -> None:
    path = tmp_path / "aigw.yaml"
    path.write_text("tenancy: {budget_period: yearly}\n")  # a key's limit, set through the admin API
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "tenancy.budget_period: unknown key; allowed here: enabled, " in str(exc.value)
    assert "budget_status" in str(exc.value)
