"""The one result type every guardrail check returns.

A verdict is what gets recorded (request log, metrics), so it names *kinds*
("pii:email", "injection:override") and counts, never the sensitive values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["pass", "flag", "redact", "block"]

# Higher wins when verdicts of several checks are merged.
_SEVERITY: dict[str, int] = {"pass": 0, "flag": 1, "redact": 2, "block": 3}


@dataclass(slots=True)
class Verdict:
    """Outcome of one check: what to do, why (kinds only), how many, how sure."""

    action: Action = "pass"
    reasons: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    score: float = 0.0

    @property
    def passed(self) -> bool:
        return self.action == "pass"

    @property
    def blocked(self) -> bool:
        return self.action == "block"

    def merge(self, other: Verdict) -> Verdict:
        """Combine two verdicts: the stricter action, all reasons, summed counts, max score."""
        action = self.action if _SEVERITY[self.action] >= _SEVERITY[other.action] else other.action
        reasons = list(self.reasons)
        reasons.extend(r for r in other.reasons if r not in reasons)
        counts = dict(self.counts)
        for kind, n in other.counts.items():
            counts[kind] = counts.get(kind, 0) + n
        return Verdict(action, reasons, counts, max(self.score, other.score))

    def to_record(self) -> dict[str, Any]:
        """A plain dict for the request log and metrics labels."""
        return {
            "action": self.action,
            "reasons": list(self.reasons),
            "counts": dict(self.counts),
            "score": round(self.score, 4),
        }


def passed() -> Verdict:
    """A fresh passing verdict (verdicts are mutable, so no shared constant)."""
    return Verdict()
