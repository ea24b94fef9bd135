"""Streams that end abnormally, as the operator's ledger sees them: what the upstream billed is charged."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from aigw.accounting.tokens import LOCAL_COUNTER
from aigw.cli.admin_client import AdminClient
from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import AnthropicUpstream
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI
from tests.integration.tenancy_support import MASTER, gateway_config, key_spend, setup_key
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.servers import start_aiohttp_app

PRICES = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}  # $0.001 a prompt token, $0.002 an output one
PROMPT = "tell me about the sea"


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeOpenAI, AnthropicUpstream, str]]:
    oai = FakeOpenAI("sk-oai").start()
    claude = AnthropicUpstream()
    server = start_aiohttp_app(claude.app(), "fake-anthropic")
    yield oai, claude, server.url
    oai.stop()
    server.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, fakes: tuple[FakeOpenAI, AnthropicUpstream, str]
       ) -> Iterator[RunningGateway]:
    oai, _, claude_url = fakes
    config = gateway_config(tmp_path_factory.mktemp("stream-ends") / "gw.db")
    config["models"] = [
        {"name": "oai", "provider": "openai", "model": "gpt-4o-mini", "api_base": oai.base_url, "api_key": "sk-oai",
         "prices": PRICES},
        {"name": "claude", "provider": "anthropic", "model": "claude-test-1", "api_base": claude_url,
         "api_key": ANTHROPIC_KEY, "prices": PRICES},
    ]
    config["routing"] = {"*": {"num_retries": 0}}
    with running_gateway(config) as running:
        yield running


@pytest.mark.parametrize("model", ["oai", "claude"])
@pytest.mark.parametrize("inbound", ["openai", "anthropic"])
def test_a_stream_whose_upstream_reports_no_usage_is_charged_by_a_local_count(
    gw: RunningGateway, fakes: tuple[FakeOpenAI, AnthropicUpstream, str], model: str, inbound: str
) -> None:
    admin = AdminClient(gw.url, MASTER)
    key = setup_key(admin, f"no-usage-{model}-{inbound}")
    (fakes[0] if model == "oai" else fakes[1]).faults.push(Fault(no_usage=True))
    messages = [{"role": "user", "content": PROMPT}]
    if inbound == "openai":
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0, timeout=10)
        stream = client.chat.completions.create(model=model, messages=messages, max_tokens=50, stream=True)  # type: ignore[arg-type]
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    else:
        ant = anthropic.Anthropic(base_url=gw.url, api_key=key["key"], max_retries=0, timeout=10)
        with ant.messages.stream(model=model, max_tokens=50, messages=messages) as s:  # type: ignore[arg-type]
            text = "".join(s.text_stream)
    assert text  # the whole answer arrived
    row = key_spend(admin, key["id"])
    assert row["prompt_tokens"] > 0  # the upstream billed the prompt, not zero tokens
    assert row["completion_tokens"] == LOCAL_COUNTER.count_text(text)
    assert row["cost_usd"] == pytest.approx((row["prompt_tokens"] * 1000 + row["completion_tokens"] * 2000) / 1e6)


@pytest.mark.parametrize("asked", [True, False])
def test_a_stream_without_upstream_usage_ends_with_the_count_it_is_billed_when_asked(
    gw: RunningGateway, fakes: tuple[FakeOpenAI, AnthropicUpstream, str], asked: bool
) -> None:
    """A server that ignores ``include_usage``: a client that asked still gets a usage chunk (the local count the
    ledger bills), one that did not gets none; an Anthropic client's message_delta carries the output count."""
    admin = AdminClient(gw.url, MASTER)
    key = setup_key(admin, f"usage-chunk-{asked}")
    fakes[0].faults.push(Fault(no_usage=True))
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0, timeout=10)
    extra = {"stream_options": {"include_usage": True}} if asked else {}
    chunks = list(client.chat.completions.create(model="oai", messages=[{"role": "user", "content": PROMPT}],  # type: ignore[call-overload]
                                                 max_tokens=50, stream=True, **extra))
    row = key_spend(admin, key["id"])
    with_usage = [c for c in chunks if c.usage is not None]
    if not asked:
        assert not with_usage
        return
    assert with_usage == [chunks[-1]] and chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (
        row["prompt_tokens"], row["completion_tokens"])
    assert usage.completion_tokens > 0 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    fakes[0].faults.push(Fault(no_usage=True))
    ant = anthropic.Anthropic(base_url=gw.url, api_key=key["key"], max_retries=0, timeout=10)
    with ant.messages.stream(model="oai", max_tokens=50, messages=[{"role": "user", "content": PROMPT}]) as s:
        final = s.get_final_message()
    assert final.usage.output_tokens == LOCAL_COUNTER.count_text(final.content[0].text) > 0  # type: ignore[union-attr]


def test_a_cut_stream_without_usage_gets_no_usage_chunk_only_its_error(
    gw: RunningGateway, fakes: tuple[FakeOpenAI, AnthropicUpstream, str]
) -> None:
    """The usage chunk is for a whole answer: a stream cut mid-way ends with its error event, never with a usage
    figure that would read as a finished answer (the ledger still bills what was seen)."""
    admin = AdminClient(gw.url, MASTER)
    key = setup_key(admin, "usage-chunk-cut")
    fakes[0].faults.push(Fault(no_usage=True, cut_after=2))
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0, timeout=10)
    seen = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model="oai", messages=[{"role": "user", "content": PROMPT}],  # type: ignore[call-overload]
                                                    max_tokens=50, stream=True,
                                                    stream_options={"include_usage": True}):
            seen.append(chunk)
    assert seen and all(c.usage is None for c in seen)
    assert key_spend(admin, key["id"])["prompt_tokens"] > 0


@pytest.mark.parametrize("inbound", ["openai", "anthropic"])
def test_a_stream_whose_output_count_never_came_bills_its_input_and_a_local_output_count(
    gw: RunningGateway, fakes: tuple[FakeOpenAI, AnthropicUpstream, str], inbound: str
) -> None:
    """An Anthropic-compatible server that reports usage in message_start only (its output_tokens a placeholder,
    1): the output is counted locally, for the ledger and for the client's final usage, not billed as 1 token."""
    admin = AdminClient(gw.url, MASTER)
    key = setup_key(admin, f"start-usage-{inbound}")
    fakes[1].faults.push(Fault(start_usage_only=True))
    messages = [{"role": "user", "content": PROMPT}]
    if inbound == "openai":
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0, timeout=10)
        chunks = list(client.chat.completions.create(model="claude", messages=messages, max_tokens=50,  # type: ignore[call-overload]
                                                     stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
        assert usage is not None
        seen = (usage.prompt_tokens, usage.completion_tokens)
    else:
        ant = anthropic.Anthropic(base_url=gw.url, api_key=key["key"], max_retries=0, timeout=10)
        with ant.messages.stream(model="claude", max_tokens=50, messages=messages) as s:  # type: ignore[arg-type]
            final = s.get_final_message()
        text = final.content[0].text  # type: ignore[union-attr]
        seen = (final.usage.input_tokens, final.usage.output_tokens)
    row = key_spend(admin, key["id"])
    assert row["completion_tokens"] == LOCAL_COUNTER.count_text(text) > 1
    assert seen == (row["prompt_tokens"], row["completion_tokens"])
    assert row["cost_usd"] == pytest.approx((row["prompt_tokens"] * 1000 + row["completion_tokens"] * 2000) / 1e6)


@pytest.mark.parametrize("model", ["oai", "claude"])
@pytest.mark.parametrize("inbound", ["openai", "anthropic"])
def test_a_whole_answer_without_usage_is_charged_and_told_a_local_count(
    gw: RunningGateway, fakes: tuple[FakeOpenAI, AnthropicUpstream, str], model: str, inbound: str
) -> None:
    """An OpenAI- or Anthropic-compatible server whose (unstreamed) answer has no ``usage``: the call is billed by
    a local count, as a stream without usage is, and the client's usage is that count (it read zeros, or none)."""
    admin = AdminClient(gw.url, MASTER)
    key = setup_key(admin, f"whole-no-usage-{model}-{inbound}")
    (fakes[0] if model == "oai" else fakes[1]).faults.push(Fault(no_usage=True))
    messages = [{"role": "user", "content": PROMPT}]
    if inbound == "openai":
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0, timeout=10)
        answer = client.chat.completions.create(model=model, messages=messages, max_tokens=50)  # type: ignore[arg-type]
        text = answer.choices[0].message.content or ""
        assert answer.usage is not None
        seen = (answer.usage.prompt_tokens, answer.usage.completion_tokens)
        assert answer.usage.total_tokens == sum(seen)
    else:
        ant = anthropic.Anthropic(base_url=gw.url, api_key=key["key"], max_retries=0, timeout=10)
        message = ant.messages.create(model=model, max_tokens=50, messages=messages)  # type: ignore[arg-type]
        text = message.content[0].text  # type: ignore[union-attr]
        seen = (message.usage.input_tokens, message.usage.output_tokens)
    row = key_spend(admin, key["id"])
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] == LOCAL_COUNTER.count_text(text) > 0
    assert seen == (row["prompt_tokens"], row["completion_tokens"])  # told what it is billed
    assert row["cost_usd"] == pytest.approx((row["prompt_tokens"] * 1000 + row["completion_tokens"] * 2000) / 1e6)
