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


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("models: [{name: a, provider: azure, api_base: 'https://x', api_version: 2024-10-21}]",
         "models[0].api_version: Input should be a valid string; YAML read 2024-10-21 as a date: "
         "quote it (\"2024-10-21\")"),
        ("server: {master_key: 12345}", "server.master_key: Input should be a valid string; YAML read a number: "
         "quote it"),
        ("server: {host: yes}", "server.host: Input should be a valid string; YAML read a true or false "
         "(yes, no, on, off, true, false): quote it"),
        ("models: [{name: a, provider: mock, headers: {x-v: 2.5}}]", "models[0].headers.x-v: Input should be a "
         "valid string; YAML read a number: quote it"),
    ],
)
def test_a_value_yaml_read_as_another_type_says_to_quote_it(tmp_path: Path, text: str, line: str) -> None:
    """Azure's `api_version: 2024-10-21`, written as Azure's docs show it, was answered "Input should be a valid
    string": YAML reads it as a date, which the message did not say, nor how to write it."""
    path = tmp_path / "aigw.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert f"  {line}\n" in str(exc.value) + "\n", str(exc.value)
    assert "12345" not in str(exc.value)  # a key is never echoed


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("models: [gpt-4o]", "models[0]: expected a mapping of settings (key: value), got text"),
        ("tenancy: yes", "tenancy: expected a mapping of settings (key: value), got a true or false"),
        ("routing: {'*': [a]}", "routing.*: expected a mapping of settings (key: value), got a list"),
    ],
)
def test_a_section_of_the_wrong_shape_names_no_class_of_the_code(tmp_path: Path, text: str, line: str) -> None:
    """"Input should be a valid dictionary or instance of Deployment": the operator never wrote a Deployment."""
    path = tmp_path / "aigw.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert f"  {line}\n" in str(exc.value) + "\n" and "instance of" not in str(exc.value), str(exc.value)
