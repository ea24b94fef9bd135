"""Measure the guardrail checks on the labelled sets shipped in ``guardrails/data``.

PII: per-kind precision and recall. A finding is a true positive when an
expected entity of the same kind overlaps it (each expected entity counts
once); exact-span agreement is reported beside it. Injection: detection rate
on attacks and false-positive rate on benign look-alikes, per threshold.

``python -m aigw.guardrails.evaluate`` prints the Markdown tables that
docs/guardrails.md quotes; ``--errors`` lists the misses for tuning.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aigw.guardrails.injection import score_text
from aigw.guardrails.pii import BUILTIN_ENTITIES, Match, PiiDetector

PII_SET = "pii_labelled.jsonl"
INJECTION_SET = "injection_labelled.jsonl"
THRESHOLDS = (0.5, 0.7, 0.8, 0.9)


def load_set(name: str) -> list[dict[str, Any]]:
    """Rows of a shipped labelled set (one JSON object per line)."""
    text = resources.files("aigw.guardrails").joinpath("data", name).read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class KindScore:
    kind: str
    tp: int = 0
    fp: int = 0
    fn: int = 0
    exact: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def _score_row(row: dict[str, Any], found: list[Match], scores: dict[str, KindScore]) -> bool:
    """Update per-kind counts for one row; True when the row was handled perfectly."""
    expected = list(row["entities"])
    perfect = True
    for m in found:
        hit = next((e for e in expected if e["kind"] == m.kind and e["start"] < m.end and m.start < e["end"]), None)
        score = scores.setdefault(m.kind, KindScore(m.kind))
        if hit is None:
            score.fp += 1
            perfect = False
            continue
        expected.remove(hit)
        score.tp += 1
        if (hit["start"], hit["end"]) == (m.start, m.end):
            score.exact += 1
    for e in expected:
        scores.setdefault(e["kind"], KindScore(e["kind"])).fn += 1
        perfect = False
    return perfect


def evaluate_pii(
    rows: list[dict[str, Any]] | None = None, detector: PiiDetector | None = None
) -> tuple[dict[str, KindScore], list[dict[str, Any]]]:
    """Per-kind scores plus an "all" micro-average, and the rows that were not handled perfectly."""
    rows = load_set(PII_SET) if rows is None else rows
    detector = detector or PiiDetector()
    scores = {kind: KindScore(kind) for kind in BUILTIN_ENTITIES}
    errors = []
    for row in rows:
        found = detector.find(row["text"])
        if not _score_row(row, found, scores):
            errors.append({"text": row["text"], "expected": row["entities"], "found": found})
    total = KindScore("all")
    for s in scores.values():
        total.tp, total.fp, total.fn, total.exact = (
            total.tp + s.tp,
            total.fp + s.fp,
            total.fn + s.fn,
            total.exact + s.exact,
        )
    scores["all"] = total
    return scores, errors


@dataclass
class InjectionScore:
    threshold: float
    attacks: int
    detected: int
    benign: int
    false_positives: int

    @property
    def detection_rate(self) -> float:
        return self.detected / self.attacks if self.attacks else 1.0

    @property
    def false_positive_rate(self) -> float:
        return self.false_positives / self.benign if self.benign else 0.0


def evaluate_injection(
    rows: list[dict[str, Any]] | None = None, thresholds: tuple[float, ...] = THRESHOLDS
) -> tuple[list[InjectionScore], dict[str, tuple[int, int]], list[dict[str, Any]]]:
    """Scores per threshold, (detected, total) per category at 0.8, and the rows misjudged at 0.8."""
    rows = load_set(INJECTION_SET) if rows is None else rows
    scored = [(row, score_text(row["text"])) for row in rows]
    results = []
    for t in thresholds:
        attacks = [s for row, (s, _) in scored if row["label"] == "attack"]
        benign = [s for row, (s, _) in scored if row["label"] != "attack"]
        results.append(
            InjectionScore(t, len(attacks), sum(s >= t for s in attacks), len(benign), sum(s >= t for s in benign))
        )
    by_category: dict[str, tuple[int, int]] = {}
    errors = []
    for row, (s, reasons) in scored:
        hit = s >= 0.8
        is_attack = row["label"] == "attack"
        label = f"{row['label']}:{row['category']}"
        done, total = by_category.get(label, (0, 0))
        by_category[label] = (done + (hit == is_attack), total + 1)
        if hit != is_attack:
            errors.append({"text": row["text"], "label": row["label"], "score": round(s, 3), "reasons": reasons})
    return results, by_category, errors


def pii_table(scores: dict[str, KindScore]) -> str:
    lines = ["| kind | precision | recall | TP | FP | FN | exact spans |", "|---|---|---|---|---|---|---|"]
    for s in scores.values():
        lines.append(f"| {s.kind} | {s.precision:.3f} | {s.recall:.3f} | {s.tp} | {s.fp} | {s.fn} | {s.exact}/{s.tp} |")
    return "\n".join(lines)


def injection_table(results: list[InjectionScore], by_category: dict[str, tuple[int, int]]) -> str:
    lines = ["| threshold | detection rate | false-positive rate | attacks | benign |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r.threshold:.1f} | {r.detection_rate:.3f} ({r.detected}/{r.attacks}) | "
            f"{r.false_positive_rate:.3f} ({r.false_positives}/{r.benign}) | {r.attacks} | {r.benign} |"
        )
    lines += ["", "| label:category (at 0.8) | judged right |", "|---|---|"]
    lines += [f"| {label} | {done}/{total} |" for label, (done, total) in sorted(by_category.items())]
    return "\n".join(lines)


def select(rows: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """Rows of one split: "dev" (the checks were tuned on it), "holdout" (written after, never tuned on)."""
    return [r for r in rows if split == "all" or r.get("split") == split]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    errors: list[dict[str, Any]] = []
    pii_rows, inj_rows = load_set(PII_SET), load_set(INJECTION_SET)
    for split in ("all", "dev", "holdout"):
        rows = select(pii_rows, split)
        scores, pii_errors = evaluate_pii(rows)
        print(f"### PII, {split} ({len(rows)} labelled strings)\n\n{pii_table(scores)}\n")
        rows = select(inj_rows, split)
        results, by_category, inj_errors = evaluate_injection(rows)
        print(f"### Prompt injection, {split} ({len(rows)} labelled strings)\n")
        print(f"{injection_table(results, by_category)}\n")
        if split != "all":
            errors += pii_errors + inj_errors
    if "--errors" in argv:
        print("### Errors")
        for err in errors:
            print(json.dumps(err, ensure_ascii=False, default=str))


if __name__ == "__main__":
    main()
