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

STAGES: dict[str, str] = {}

DEFAULT_ORDER: list[str] = []


def build_stages(names: list[str], deps: StageDeps) -> list[Stage]:
    stages: list[Stage] = []
    for name in names:
        try:
            target = STAGES[name]
        except KeyError:
            raise ValueError(f"unknown pipeline stage {name!r}; known: {', '.join(STAGES)}") from None
        module_name, _, attr = target.partition(":")
        builder = cast(StageBuilder, getattr(importlib.import_module(module_name), attr))
        stage = builder(deps)
        if stage is not None:
            stages.append(stage)
    return stages
