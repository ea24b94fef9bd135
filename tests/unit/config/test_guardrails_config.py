"""The guardrails block: the issue's example loads as written; mistakes fail at load naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigw.config.load import ConfigError, load_config
from tests.support.config_files import write_config

EXAMPLE = """
models: [{name: m, provider: mock}]
guardrails:
  pii: {mode: redact, entities: [email, phone, ssn, credit_card, iban, ip, secret], restore: true}
  injection: {mode: block, threshold: 0.8}
  rules:
    - {match: {regex: "(?i)^ping$"}, respond: "pong"}
  output: {leakage: block, json_schema: validate, blocklist: []}
routing:
  m: {guardrails: {pii: {mode: block}, validate: {max_tokens: 100}}}
"""


def load(tmp_path: Path, text: str) -> object:
    return load_config(write_config(tmp_path, text))


def test_the_documented_example_loads(tmp_path: Path) -> None:
    config = load(tmp_path, EXAMPLE)
    g = config.guardrails  # type: ignore[attr-defined]
    assert g.pii.mode == "redact" and g.injection.threshold == 0.8 and g.output.json_schema == "validate"
    assert g.sections_set() == {"pii", "injection", "rules", "output"}
    model = config.routing["m"].guardrails  # type: ignore[attr-defined]
    assert model.as_patch() == {"pii": {"mode": "block"}, "validate": {"max_tokens": 100}}


@pytest.mark.parametrize(("block", "path"), [
    ("guardrails: {pii: {mode: sometimes}}", "guardrails.pii.mode"),
    ("guardrails: {pii: {entities: [email, passport]}}", "guardrails.pii.entities[1]"),
    ("guardrails: {pii: {custom: {emp: 'EMP-('}}}", "guardrails.pii.custom"),
    ("guardrails: {pii: {custom: {email: 'x'}}}", "guardrails.pii.custom"),
    ("guardrails: {injection: {threshold: 1.5}}", "guardrails.injection.threshold"),
    ("guardrails: {output: {categories: {x: {regex: ['(']}}}}", "guardrails.output.categories.x.regex"),
    ("guardrails: {validate: {max_tokens: 0}}", "guardrails.validate.max_tokens"),
    ("guardrails: {pii: {modes: redact}}", "guardrails.pii.modes"),
    ("guardrails: {firewall: {}}", "guardrails.firewall"),
])
def test_mistakes_name_the_field(tmp_path: Path, block: str, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, "models: [{name: m, provider: mock}]\n" + block + "\n")
    assert path in str(err.value)
