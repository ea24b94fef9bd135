"""Which failed calls the router lists on ``Served.cut`` (each billed its prompt): a call the upstream had taken
(``CallOptions.sent``) that a timeout or the caller's leaving ended, or that the adapter marks
``reached_upstream``; never a call still connecting, nor an error status the upstream answered."""

from __future__ import annotations

import asyncio

import pytest

from aigw import errors
from aigw.routing.router import RouteRequest
from tests.unit.routing.fakes import Scripted, Step, build

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
ONCE = {"m": {"num_retries": 0}}


def req(**kw: object) -> RouteRequest:
    return RouteRequest(model="m", body=dict(BODY), **kw)  # type: ignore[arg-type]


async def _call(router: object, r: RouteRequest, stream: bool) -> None:
    if stream:
        await router.open_stream(r)  # type: ignore[attr-defined]
    else:
        await router.complete(r)  # type: ignore[attr-defined]


async def _called(provider: Scripted) -> None:
    """Until the provider has the call (bounded): the caller leaves only then."""
    for _ in range(1000):
        if provider.calls:
            return
        await asyncio.sleep(0.002)
    raise AssertionError("the provider never got the call")


def _cut(r: RouteRequest) -> list[str]:
    assert r.served is not None
    return [d.id for d in r.served.cut or ()]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("sent", [True, False])
async def test_a_timeout_bills_a_call_only_once_it_was_sent(stream: bool, sent: bool) -> None:
    router, p = build({"m": [{"timeout_s": 0.05, "first_token_timeout_s": 0.05}]}, routing=ONCE)
    p["m#0"].push(Step(stall=True, sent=sent))
    r = req()
    with pytest.raises(errors.UpstreamTimeout):
        await _call(router, r, stream)
    assert _cut(r) == (["m#0"] if sent else [])


@pytest.mark.parametrize("stream", [False, True])
async def test_the_request_deadline_bills_a_sent_call(stream: bool) -> None:
    router, p = build({"m": [{}]}, routing=ONCE)
    p["m#0"].push(Step(stall=True))
    r = req(deadline_s=0.05)
    with pytest.raises(errors.UpstreamTimeout):
        await _call(router, r, stream)
    assert _cut(r) == ["m#0"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("sent", [True, False])
async def test_a_caller_gone_bills_a_call_only_once_it_was_sent(stream: bool, sent: bool) -> None:
    router, p = build({"m": [{}]}, routing=ONCE)
    p["m#0"].push(Step(stall=True, sent=sent))
    r = req()
    task = asyncio.ensure_future(_call(router, r, stream))
    await _called(p["m#0"])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _cut(r) == (["m#0"] if sent else [])


@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstream_timeout_status_is_not_billed(stream: bool) -> None:
    router, p = build({"m": [{}]}, routing=ONCE)
    p["m#0"].push(Step(error=errors.UpstreamTimeout("504 from the upstream")))  # sent, answered with a status
    r = req()
    with pytest.raises(errors.UpstreamTimeout):
        await _call(router, r, stream)
    assert _cut(r) == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("ending", ["caller gone", "timeout"])
async def test_a_call_ended_while_its_error_status_body_is_read_is_not_billed(stream: bool, ending: str) -> None:
    # the upstream answered an error status (it refused the call: no bill), its body was still on its way when
    # the caller left or the attempt's time ran out
    router, p = build({"m": [{"timeout_s": 0.05, "first_token_timeout_s": 0.05}]}, routing=ONCE)
    p["m#0"].push(Step(stall=True, refused=True))
    r = req()
    if ending == "timeout":
        with pytest.raises(errors.UpstreamTimeout):
            await _call(router, r, stream)
    else:
        task = asyncio.ensure_future(_call(router, r, stream))
        await _called(p["m#0"])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert _cut(r) == []
