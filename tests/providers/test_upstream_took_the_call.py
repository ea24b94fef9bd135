# ruff: noqa: F811  (pytest fixtures imported from conftest_anthropic)
"""Whether an upstream call that failed had been taken by its upstream (``CallOptions.sent``, and
``reached_upstream`` on the error): a call the upstream may bill, however it ended, is marked; a call that never
reached it (a connect timeout) or that it refused with an error status is not."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

from aigw import errors
from aigw.config.models import Deployment
from aigw.providers.anthropic.client import AnthropicProvider
from aigw.providers.anthropic.client import build as build_anthropic
from aigw.providers.base import CallOptions, Timeouts
from aigw.providers.http import HttpClients
from aigw.providers.openai.client import build as build_openai
from tests.fakes import openai_faults as oai
from tests.fakes.anthropic_upstream import AnthropicUpstream, anthropic_error
from tests.fakes.faults import Fault
from tests.providers.conftest_anthropic import (  # noqa: F401  (fixtures)
    anthropic_deployment,
    anthropic_fake,
    anthropic_provider,
    anthropic_server,
)
from tests.providers.openai_family import Family, chat_body, collect, stream_body
from tests.support.servers import unaccepting_port

BODY: Any = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}


def limits(total: float | None = 2.0, first_token: float | None = 2.0, connect: float | None = 2.0) -> CallOptions:
    return CallOptions(timeouts=Timeouts(connect=connect, first_token=first_token, total=total))


async def drain(chunks: AsyncIterator[Any]) -> None:
    async for _ in chunks:
        pass


async def leave_once_refused(call: CallOptions, calling: Awaitable[Any]) -> None:
    """Run ``calling``; once its call is marked refused (an error status came, its body is still on its way),
    leave it, as a client that hangs up would."""
    task = asyncio.ensure_future(calling)
    for _ in range(1000):
        if call.refused or task.done():
            break
        await asyncio.sleep(0.002)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def warm(answer: Any) -> None:
    """One answered call first, so the timed call goes out on a pooled connection.

    Why: a fresh connection's connect and the body's write share the short deadline, and a pause of the
    test process (a full garbage collection late in the suite) could spend it before the body is written,
    which is a call that rightly counts as not sent. On a pooled connection the write is scheduled before
    any timer can fire."""
    await answer


async def test_a_fresh_call_has_not_been_sent() -> None:
    assert CallOptions().sent is False


# -- OpenAI family ----------------------------------------------------------------------


async def test_a_plain_call_the_upstream_holds_past_the_total_timeout_was_taken(family: Family) -> None:
    await warm(family.provider().chat(chat_body(), limits()))
    family.fake.faults.push(Fault.stall_forever())
    call = limits(total=0.15)
    with pytest.raises(errors.UpstreamTimeout) as err:
        await family.provider().chat(chat_body(), call)
    assert call.sent and err.value.reached_upstream


@pytest.mark.parametrize("fault", [Fault.slow(first_chunk=1.0), Fault.slow(headers=1.0)], ids=["after-200", "no-head"])
async def test_a_stream_with_no_first_token_in_time_was_taken(family: Family, fault: Fault) -> None:
    await warm(family.provider().chat(chat_body(), limits()))
    family.fake.faults.push(fault)
    call = limits(first_token=0.15)
    with pytest.raises(errors.UpstreamTimeout) as err:
        await collect(family.provider().stream_chat(stream_body(), call))
    assert call.sent and err.value.reached_upstream


@pytest.mark.parametrize("stream", [False, True])
async def test_a_connect_timeout_never_reached_the_upstream(clients: HttpClients, stream: bool) -> None:
    with unaccepting_port() as port:
        deployment = Deployment(name="x", provider="openai", model="gpt-4o-mini",
                                api_base=f"http://127.0.0.1:{port}/v1", api_key="k")
        call = limits(connect=0.15)
        with pytest.raises(errors.UpstreamTimeout) as err:
            provider = build_openai(deployment, clients)
            await (drain(provider.stream_chat(stream_body(), call)) if stream else provider.chat(chat_body(), call))
    assert not call.sent and not err.value.reached_upstream


@pytest.mark.parametrize("stream", [False, True])
async def test_an_error_status_is_not_marked_though_the_request_was_sent(family: Family, stream: bool) -> None:
    family.fake.faults.push(oai.server_error(504))
    call = limits()
    with pytest.raises(errors.UpstreamTimeout) as err:  # a 504 maps to a timeout, answered by the upstream
        p = family.provider()
        await (collect(p.stream_chat(stream_body(), call)) if stream else p.chat(chat_body(), call))
    assert call.sent and not err.value.reached_upstream


@pytest.mark.parametrize("stream", [False, True])
async def test_an_error_status_is_a_refusal_before_its_body_is_read(family: Family, stream: bool) -> None:
    family.fake.faults.push(dataclasses.replace(oai.server_error(500), delay_body=5.0))
    call = limits()
    p = family.provider()
    await leave_once_refused(call, collect(p.stream_chat(stream_body(), call)) if stream else p.chat(chat_body(), call))
    assert call.sent and call.refused and not call.billable  # the caller left the read: no bill all the same


@pytest.mark.parametrize("fault", [Fault.non_json_body(), Fault.status_only(200, {"id": "chatcmpl-1"})],
                         ids=["not-json", "no-choices"])
async def test_a_plain_200_that_cannot_be_read_was_taken(family: Family, fault: Fault) -> None:
    family.fake.faults.push(fault)  # an answer all the same: the upstream may bill it, as it would a stream's
    with pytest.raises(errors.UpstreamError) as err:
        await family.provider().chat(chat_body(), limits())
    assert err.value.reached_upstream


async def test_a_200_carrying_an_error_is_a_refusal(family: Family) -> None:
    family.fake.faults.push(Fault.status_only(200, {"error": {"message": "overloaded", "type": "server_error"}}))
    with pytest.raises(errors.GatewayError) as err:
        await family.provider().chat(chat_body(), limits())
    assert not err.value.reached_upstream


# -- Anthropic --------------------------------------------------------------------------


async def test_anthropic_plain_call_held_past_the_total_timeout_was_taken(
        anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream) -> None:
    await warm(anthropic_provider.chat(BODY, limits()))
    anthropic_fake.faults.push(Fault.stall_forever())
    call = limits(total=0.15)
    with pytest.raises(errors.UpstreamTimeout) as err:
        await anthropic_provider.chat(BODY, call)
    assert call.sent and err.value.reached_upstream


@pytest.mark.parametrize("fault", [Fault(delay_first_chunk=1.0), Fault(delay_headers=1.0)],
                         ids=["after-200", "no-head"])
async def test_anthropic_stream_with_no_first_token_in_time_was_taken(
        anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream, fault: Fault) -> None:
    await warm(anthropic_provider.chat(BODY, limits()))
    anthropic_fake.faults.push(fault)
    call = limits(first_token=0.15)
    with pytest.raises(errors.UpstreamTimeout) as err:
        await drain(anthropic_provider.stream_chat(BODY, call))
    assert call.sent and err.value.reached_upstream


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_connect_timeout_never_reached_the_upstream(clients: HttpClients, stream: bool) -> None:
    with unaccepting_port() as port:
        provider = build_anthropic(anthropic_deployment(f"http://127.0.0.1:{port}"), clients)
        call = limits(connect=0.15)
        with pytest.raises(errors.UpstreamTimeout) as err:
            await (drain(provider.stream_chat(BODY, call)) if stream else provider.chat(BODY, call))
    assert not call.sent and not err.value.reached_upstream


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_error_status_is_not_marked(
        anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream, stream: bool) -> None:
    anthropic_fake.faults.push(anthropic_error(529, "overloaded_error", "Overloaded"))
    call = limits()
    with pytest.raises(errors.Unavailable) as err:
        await (drain(anthropic_provider.stream_chat(BODY, call)) if stream else anthropic_provider.chat(BODY, call))
    assert call.sent and not err.value.reached_upstream


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_error_status_is_a_refusal_before_its_body_is_read(
        anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream, stream: bool) -> None:
    anthropic_fake.faults.push(dataclasses.replace(anthropic_error(529, "overloaded_error", "Overloaded"),
                                                   delay_body=5.0))
    call = limits()
    await leave_once_refused(call, drain(anthropic_provider.stream_chat(BODY, call)) if stream
                             else anthropic_provider.chat(BODY, call))
    assert call.sent and call.refused and not call.billable


@pytest.mark.parametrize("fault", [Fault.non_json_body(), Fault.status_only(200, {"type": "completion"})],
                         ids=["not-json", "not-a-message"])
async def test_anthropic_plain_200_that_cannot_be_read_was_taken(
        anthropic_provider: AnthropicProvider, anthropic_fake: AnthropicUpstream, fault: Fault) -> None:
    anthropic_fake.faults.push(fault)
    with pytest.raises(errors.UpstreamError) as err:
        await anthropic_provider.chat(BODY, limits())
    assert err.value.reached_upstream
