"""The one list of pipeline stages. A stage = one module + one line here.

Each entry names ``build(deps) -> Stage | None``; ``None`` means "switched off by
config" and costs nothing per request. ``DEFAULT_ORDER`` is used unless config
sets ``pipeline:``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from aigw.pipeline.deps import StageDeps
from aigw.pipeline.stage import Stage

StageBuilder = Callable[[StageDeps], Stage | None]

STAGES: dict[str, str] = {
    # "name": "aigw.pipeline.stages.<module>:build",  (one line per stage)
    "observe": "aigw.pipeline.stages.observe:build",
    "limits": "aigw.pipeline.stages.limits:build",
    "budget": "aigw.pipeline.stages.budget:build",
    "accounting": "aigw.pipeline.stages.accounting:build",
    "cache": "aigw.pipeline.stages.cache:build",
    "validate": "aigw.pipeline.stages.validate:build",
    "rules": "aigw.pipeline.stages.rules:build",
    "pii": "aigw.pipeline.stages.pii:build",
    "injection": "aigw.pipeline.stages.injection:build",
    "output": "aigw.pipeline.stages.output:build",
}

# The intended order of every stage; a stage runs only once it is registered above
# and its config switches it on. Pre-hooks run top-down, post-hooks bottom-up:
# output checks see the answer before the cache stores it, and PII placeholders are
# restored after both, so neither the cache nor the ledger ever holds a raw value.
ORDER: list[str] = [
    "observe",     # metrics, request log line, traces (on_finish sees every outcome)
    "validate",    # structure, sizes, max_tokens ceilings
    "limits",      # rpm / tpm / parallel per key, project, tenant
    "budget",      # reserve worst-case cost, settle after
    "rules",       # deterministic answers, routes, rejections
    "pii",         # redact (restore on the way back)
    "injection",   # prompt-injection scoring
    "cache",       # exact / semantic response cache
    "output",      # leakage, content filter, JSON format checks
    "accounting",  # spend ledger record
]


def default_order() -> list[str]:
    return [name for name in ORDER if name in STAGES]


def build_stages(names: list[str], deps: StageDeps) -> list[Stage]:
    stages: list[Stage] = []
    for i, name in enumerate(names):
        try:
            target = STAGES[name]
        except KeyError:
            raise ValueError(f"pipeline[{i}]: unknown pipeline stage {name!r}; known: {', '.join(STAGES)}") from None
        module_name, _, attr = target.partition(":")
        builder = cast(StageBuilder, getattr(importlib.import_module(module_name), attr))
        stage = builder(deps)
        if stage is not None:
            stages.append(stage)
    return stages


TENANCY_STAGES = {"limits": "keys' rate limits are not enforced", "budget": "budgets are not enforced",
                  "accounting": "no spend is recorded"}


def tenancy_left_out(names: list[str]) -> list[str]:
    """What a ``pipeline:`` list that leaves out a tenancy stage turns off while tenancy is on (it may be meant:
    a gateway that only records spend; so it is said at start-up, not refused)."""
    return [f"{name} ({why})" for name, why in TENANCY_STAGES.items() if name not in names]
