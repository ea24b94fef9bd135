"""The tokenizer loads once, off the event loop when preloaded: a first count on the loop stalled every request."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import tiktoken

from aigw.accounting import tokens
from aigw.accounting.tokens import TokenCounter
from aigw.app import build_app, counts_locally, for_serving
from tests.support.gateway import make_config


class SlowLoads:
    """``tiktoken.get_encoding`` as it is, slowed down and counted, to see who loads and how often."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, delay_s: float) -> None:
        self.calls: list[str] = []
        self.delay_s = delay_s
        real = tiktoken.get_encoding

        def get_encoding(name: str) -> Any:
            self.calls.append(threading.current_thread().name)
            time.sleep(self.delay_s)
            return real(name)

        monkeypatch.setattr(tiktoken, "get_encoding", get_encoding)


def test_preload_loads_the_encoding_on_a_thread_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = SlowLoads(monkeypatch, 0.0)
    counter = TokenCounter()
    thread = counter.preload()
    assert thread is not None
    thread.join(10)
    assert counter.loaded and counter.exact
    assert loads.calls == ["aigw-tokenizer-load"]
    assert counter.preload() is None  # loaded: nothing more to do
    assert counter.count_text("hello world") == 2
    assert loads.calls == ["aigw-tokenizer-load"]


def test_a_count_during_the_preload_waits_for_it_instead_of_loading_again(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = SlowLoads(monkeypatch, 0.3)
    counter = TokenCounter()
    thread = counter.preload()
    assert thread is not None
    assert counter.preload() is None  # already loading
    while not loads.calls:
        time.sleep(0.005)
    assert counter.count_text("hello world") == 2  # exact: it waited for the encoding, not the estimator
    thread.join(10)
    assert loads.calls == ["aigw-tokenizer-load"]


def test_a_failed_load_falls_back_to_the_estimator_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def broken(name: str) -> Any:
        calls.append(name)
        raise ValueError("no such encoding")

    monkeypatch.setattr(tiktoken, "get_encoding", broken)
    counter = TokenCounter()
    thread = counter.preload()
    assert thread is not None
    thread.join(10)
    assert not counter.exact
    assert counter.count_text("four score and seven years ago") > 0
    assert len(calls) == 1


@pytest.mark.parametrize(("raw", "counts"), [
    ({"tenancy": {"enabled": False}}, False),  # bare: nothing counts locally, no 40 MB at idle
    ({}, True),  # tenancy on (the default): the ledger and limits count cut calls and usage-less streams
    ({"tenancy": {"enabled": False}, "cache": {"mode": "exact"}}, True),
    ({"tenancy": {"enabled": False}, "routing": {"mock": {"cache": {"mode": "exact"}}}}, True),
])
def test_who_counts_locally(raw: dict[str, Any], counts: bool) -> None:
    assert counts_locally(make_config(raw)) is counts


@pytest.fixture
def fresh_counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenCounter]:
    counter = TokenCounter()
    monkeypatch.setattr(tokens, "LOCAL_COUNTER", counter)
    before = gc.get_threshold()
    yield counter
    gc.unfreeze()
    gc.set_threshold(*before)


def test_a_serving_process_with_tenancy_loads_the_tokenizer_at_start(fresh_counter: TokenCounter) -> None:
    config = make_config({})
    asyncio.run(for_serving(build_app(config), config).on_startup[-1]())
    deadline = time.monotonic() + 10
    while not fresh_counter.loaded and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fresh_counter.loaded and fresh_counter.exact


def test_a_bare_serving_process_does_not(fresh_counter: TokenCounter) -> None:
    config = make_config({"tenancy": {"enabled": False}})
    asyncio.run(for_serving(build_app(config), config).on_startup[-1]())
    time.sleep(0.05)
    assert not fresh_counter.loaded
