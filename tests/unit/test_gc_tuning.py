"""GC tuning of a serving process: start-up objects frozen, young threshold raised, cycles still collected."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from aigw.app import build_app, for_serving
from aigw.gc_tuning import PYTHON_DEFAULT_YOUNG, tune_gc
from tests.support.gateway import make_config


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tune_gc_freezes_startup_objects_and_sets_threshold(restored_gc: None) -> None:
    tune_gc(12_345)
    assert gc.get_threshold()[0] == 12_345
    assert gc.get_freeze_count() > 0


def test_zero_keeps_pythons_default(restored_gc: None) -> None:
    tune_gc(0)
    assert gc.get_threshold()[0] == PYTHON_DEFAULT_YOUNG


def test_cycles_made_after_tuning_are_still_collected(restored_gc: None) -> None:
    tune_gc(50_000)

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    del a, b
    assert gc.collect() >= 2


def test_serving_app_tunes_gc_after_every_other_startup_hook(restored_gc: None) -> None:
    config = make_config({"server": {"gc_young_threshold": 23_456}})
    app = for_serving(build_app(config), config)
    last = app.on_startup[-1]
    asyncio.run(last())
    assert gc.get_threshold()[0] == 23_456
