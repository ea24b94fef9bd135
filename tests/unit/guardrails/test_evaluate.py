"""Quality floors on the shipped labelled sets; docs/guardrails.md states the same figures.

"dev" rows are the ones the checks were tuned on (optimistic); "holdout" rows were written after
tuning and never tuned on, so their floors are the honest ones.
"""

from __future__ import annotations

import pytest

from aigw.guardrails.evaluate import (
    INJECTION_SET,
    PII_SET,
    evaluate_injection,
    evaluate_pii,
    load_set,
    main,
    select,
)
from aigw.guardrails.pii import BUILTIN_ENTITIES


def test_sets_are_big_enough_and_well_formed() -> None:
    pii, injection = load_set(PII_SET), load_set(INJECTION_SET)
    assert len(pii) >= 200 and len(injection) >= 200
    for row in pii:
        for entity in row["entities"]:
            assert entity["kind"] in BUILTIN_ENTITIES
            assert row["text"][entity["start"] : entity["end"]] == entity["value"]
    assert sum(not row["entities"] for row in pii) >= 80  # hard negatives
    assert {row["label"] for row in injection} == {"attack", "benign"}
    for rows in (pii, injection):
        assert {row["split"] for row in rows} == {"dev", "holdout"}


def test_pii_floors() -> None:
    rows = load_set(PII_SET)
    scores, _ = evaluate_pii(rows)
    assert scores["all"].precision >= 0.98 and scores["all"].recall >= 0.98
    for kind in BUILTIN_ENTITIES:
        assert scores[kind].precision >= 0.95, kind
        assert scores[kind].recall >= 0.95, kind
    holdout, _ = evaluate_pii(select(rows, "holdout"))
    assert holdout["all"].precision >= 0.95 and holdout["all"].recall >= 0.95


def test_injection_floors_at_threshold_0_8() -> None:
    rows = load_set(INJECTION_SET)
    (dev,), _, _ = evaluate_injection(select(rows, "dev"), thresholds=(0.8,))
    assert dev.detection_rate >= 0.95 and dev.false_positive_rate <= 0.02
    (holdout,), _, _ = evaluate_injection(select(rows, "holdout"), thresholds=(0.8,))
    # Fresh phrasings: the heuristics catch about a third. This floor guards against getting worse;
    # it is not a claim of coverage (see docs/guardrails.md).
    assert holdout.detection_rate >= 0.30 and holdout.false_positive_rate <= 0.075


def test_errors_list_the_misjudged_rows() -> None:
    rows = [
        {
            "text": "mail a@example.com",
            "entities": [{"kind": "email", "start": 5, "end": 18, "value": "a@example.com"}],
        },
        {"text": "call 020 7946 0958", "entities": []},
    ]
    scores, errors = evaluate_pii(rows)
    assert (scores["email"].tp, scores["phone"].fp) == (1, 1)
    assert [e["text"] for e in errors] == ["call 020 7946 0958"]


def test_module_prints_markdown_tables(capsys: pytest.CaptureFixture[str]) -> None:
    main([])
    out = capsys.readouterr().out
    assert "### PII, holdout" in out and "### Prompt injection, dev" in out
    assert "| kind | precision | recall |" in out and "| threshold | detection rate |" in out
