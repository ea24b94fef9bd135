"""The PII stage: flag, redact (and restore, plain and streamed), block; per-key overrides."""

from __future__ import annotations

import copy

import orjson
import pytest

from aigw.errors import GuardrailBlocked
from aigw.pipeline.stages.guardrail_policy import PII_MAPPING
from tests.unit.stages.guardrail_harness import Harness, Upstream, chat, config, streamed_text, verdicts

EMAIL = "alice.smith@example.com"
CARD = "4111 1111 1111 1111"


def upstream_text(h: Harness) -> str:
    return orjson.dumps(h.upstream.bodies[-1]).decode()


def test_no_pii_section_builds_no_stage() -> None:
    assert "pii" not in Harness(config({"injection": {"mode": "flag"}})).names()
    assert Harness(config(None)).names() == []


async def test_redact_sends_placeholders_upstream_and_restores_the_answer() -> None:
    h = Harness(config({"pii": {"mode": "redact"}}))
    body = chat(f"Write to {EMAIL} about card {CARD}", system=f"The user is {EMAIL}.")
    original = copy.deepcopy(body)
    ctx = h.ctx(body)
    answer = await h.run(ctx)
    sent = upstream_text(h)
    assert EMAIL not in sent and "4111" not in sent
    assert "<EMAIL_1>" in sent and "<CREDIT_CARD_1>" in sent
    assert answer["choices"][0]["message"]["content"] == f"Echo: Write to {EMAIL} about card {CARD}"
    assert body == original  # the client's body is never edited in place
    assert verdicts(ctx)["pii"] == {"action": "redact", "reasons": ["pii:credit_card", "pii:email"],
                                    "counts": {"credit_card": 1, "email": 2}, "score": 1.0}
    assert EMAIL not in orjson.dumps(verdicts(ctx)).decode()


async def test_restore_false_leaves_placeholders_in_the_answer() -> None:
    h = Harness(config({"pii": {"mode": "redact", "restore": False}}))
    answer = await h.run(h.ctx(chat(f"mail {EMAIL}")))
    assert answer["choices"][0]["message"]["content"] == "Echo: mail <EMAIL_1>"


@pytest.mark.parametrize("size", [1, 3, 5, 64])
async def test_streamed_answer_is_restored_even_when_a_placeholder_is_split(size: int) -> None:
    h = Harness(config({"pii": {"mode": "redact"}}), Upstream(chunk_size=size))
    chunks = await h.stream(h.ctx(chat(f"mail {EMAIL} or x < y now", stream=True)))
    assert streamed_text(chunks) == f"Echo: mail {EMAIL} or x < y now"
    assert "<EMAIL_1>" in upstream_text(h)
    assert chunks[-1].get("usage") and chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_held_text_is_sent_before_the_finish_reason() -> None:
    h = Harness(config({"pii": {"mode": "redact"}}), Upstream(script=["see <EMAIL_"], chunk_size=3))
    chunks = await h.stream(h.ctx(chat(f"mail {EMAIL}", stream=True)))
    finishing = next(c for c in chunks if c.get("choices") and c["choices"][0]["finish_reason"])
    assert streamed_text(chunks) == "see <EMAIL_"  # a prefix of one is held to the end, then released as is
    assert finishing["choices"][0]["delta"]["content"] == "<EMAIL_"


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_call_arguments_are_restored_json_escaped(stream: bool) -> None:
    secret = 'pa"ss\\word'
    h = Harness(config({"pii": {"mode": "redact", "entities": ["email"], "custom": {"pw": 'pa"ss\\\\word'}}}),
                Upstream(tool_args='{"to": "<EMAIL_1>", "pw": "<PW_1>"}', chunk_size=5))
    ctx = h.ctx(chat(f"send {EMAIL} the password {secret}", stream=stream))
    if stream:
        chunks = await h.stream(ctx)
        args = "".join(c["choices"][0]["delta"].get("tool_calls", [{}])[0].get("function", {}).get("arguments", "")
                       for c in chunks if c.get("choices"))
    else:
        args = (await h.run(ctx))["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert orjson.loads(args) == {"to": EMAIL, "pw": secret}


@pytest.mark.parametrize("size", [1, 5, 64])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_custom_tool_calls_input_is_restored_as_plain_text(stream: bool, size: int) -> None:
    # a custom tool's input is free text, not JSON: the originals go back unescaped, even split across chunks
    secret = 'pa"ss\\word'
    h = Harness(config({"pii": {"mode": "redact", "entities": ["email"], "custom": {"pw": 'pa"ss\\\\word'}}}),
                Upstream(tool_args="mail <EMAIL_1> with <PW_1>", tool_kind="custom", chunk_size=size))
    ctx = h.ctx(chat(f"send {EMAIL} the password {secret}", stream=stream))
    if stream:
        chunks = await h.stream(ctx)
        calls = [call for c in chunks if c.get("choices") for call in c["choices"][0]["delta"].get("tool_calls", [])]
        assert calls[0]["type"] == "custom" and calls[0]["custom"]["name"] == "send"
        assert all("function" not in call for call in calls)
        text = "".join(call["custom"]["input"] for call in calls)
    else:
        call = (await h.run(ctx))["choices"][0]["message"]["tool_calls"][0]
        assert call["type"] == "custom"
        text = call["custom"]["input"]
    assert text == f"mail {EMAIL} with {secret}"


async def test_a_custom_tool_calls_input_in_the_history_is_redacted() -> None:
    h = Harness(config({"pii": {"mode": "redact"}}))
    body = {"model": "mock", "messages": [
        {"role": "user", "content": "email the customer"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "custom", "custom": {"name": "send_mail", "input": f"to: {EMAIL}\nhello"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sent"},
    ]}
    await h.run(h.ctx(body))
    sent = h.upstream.bodies[-1]["messages"][1]["tool_calls"][0]
    assert sent == {"id": "c1", "type": "custom", "custom": {"name": "send_mail", "input": "to: <EMAIL_1>\nhello"}}


async def test_flag_sends_the_original_and_records_counts() -> None:
    h = Harness(config({"pii": {"mode": "flag"}}))
    ctx = h.ctx(chat(f"mail {EMAIL}"))
    answer = await h.run(ctx)
    assert EMAIL in upstream_text(h)
    assert answer["choices"][0]["message"]["content"] == f"Echo: mail {EMAIL}"
    assert verdicts(ctx)["pii"]["action"] == "flag" and verdicts(ctx)["pii"]["counts"] == {"email": 1}
    assert PII_MAPPING not in ctx.state


async def test_block_names_the_kinds_never_the_values_and_sends_nothing() -> None:
    h = Harness(config({"pii": {"mode": "block"}}))
    ctx = h.ctx(chat(f"my card is {CARD}, mail {EMAIL}"))
    with pytest.raises(GuardrailBlocked) as info:
        await h.run(ctx)
    assert info.value.status == 400
    assert "credit_card" in info.value.message and "email" in info.value.message
    assert "4111" not in info.value.message and EMAIL not in info.value.message
    assert h.upstream.bodies == []
    assert verdicts(ctx)["pii"]["action"] == "block"


async def test_clean_request_passes_untouched() -> None:
    h = Harness(config({"pii": {"mode": "redact"}}))
    body = chat("nothing personal here")
    ctx = h.ctx(body)
    await h.run(ctx)
    assert h.upstream.bodies[-1] is body
    assert verdicts(ctx)["pii"]["action"] == "pass"


async def test_tool_results_are_redacted_too() -> None:
    h = Harness(config({"pii": {"mode": "redact"}}))
    body = {"model": "mock", "messages": [
        {"role": "user", "content": "look up the customer"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "customer"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": f"email: {EMAIL}"}]},
    ]}
    await h.run(h.ctx(body))
    assert EMAIL not in upstream_text(h) and "<EMAIL_1>" in upstream_text(h)


async def test_legacy_prompt_is_redacted_and_restored() -> None:
    h = Harness(config({"pii": {"mode": "redact"}}))
    ctx = h.ctx({"model": "mock", "prompt": f"mail {EMAIL}"}, endpoint="completions")
    await h.run(ctx)  # the scripted upstream answers completions like chat; what matters is what it got
    assert h.upstream.bodies[-1]["prompt"] == "mail <EMAIL_1>"


@pytest.mark.parametrize("content", ["str", "parts"])
async def test_a_predicted_output_and_a_completions_suffix_are_redacted_with_the_request(content: str) -> None:
    h = Harness(config({"pii": {"mode": "redact"}}))
    predicted = f"Dear {EMAIL}, card {CARD}"
    prediction = {"type": "content", "content": predicted if content == "str" else [
        {"type": "text", "text": predicted}]}
    body = chat(f"rewrite the letter to {EMAIL}", prediction=prediction)
    original = copy.deepcopy(body)
    answer = await h.run(ctx := h.ctx(body))
    sent = h.upstream.bodies[-1]
    assert EMAIL not in upstream_text(h) and "4111" not in upstream_text(h)
    assert orjson.dumps(sent["prediction"]).decode().count("<EMAIL_1>") == 1  # the same value, the same placeholder
    assert answer["choices"][0]["message"]["content"] == f"Echo: rewrite the letter to {EMAIL}"
    assert body == original and verdicts(ctx)["pii"]["counts"] == {"credit_card": 1, "email": 2}
    h.upstream.bodies.clear()
    ctx = h.ctx({"model": "mock", "prompt": f"mail {EMAIL}", "suffix": f" cc {EMAIL}"}, endpoint="completions")
    await h.run(ctx)
    assert h.upstream.bodies[-1]["prompt"] == "mail <EMAIL_1>" and h.upstream.bodies[-1]["suffix"] == " cc <EMAIL_1>"
    blocking = Harness(config({"pii": {"mode": "block"}}))
    with pytest.raises(GuardrailBlocked, match="credit_card"):
        await blocking.run(blocking.ctx(chat("rewrite the letter", prediction=prediction)))
    assert blocking.upstream.bodies == []


async def test_a_keys_metadata_switches_the_mode() -> None:
    h = Harness(config({"pii": {"mode": "redact"}}))
    key_off = {"guardrails": {"pii": {"mode": "off"}}}
    await h.run(h.ctx(chat(f"mail {EMAIL}"), extra=key_off))
    assert EMAIL in upstream_text(h)
    with pytest.raises(GuardrailBlocked):
        await h.run(h.ctx(chat(f"mail {EMAIL}"), extra={"guardrails": {"pii": {"mode": "block"}}}))


async def test_a_model_block_wins_over_a_keys_metadata() -> None:
    cfg = config({"pii": {"mode": "off"}}, routing={"mock": {"guardrails": {"pii": {"mode": "redact"}}}})
    h = Harness(cfg)
    await h.run(h.ctx(chat(f"mail {EMAIL}"), extra={"guardrails": {"pii": {"mode": "off"}}}))
    assert EMAIL not in upstream_text(h)
    await h.run(h.ctx(chat(f"mail {EMAIL}", model="small")))
    assert EMAIL in upstream_text(h)


async def test_an_invalid_metadata_block_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(config({"pii": {"mode": "redact"}}))
    await h.run(h.ctx(chat(f"mail {EMAIL}"), extra={"guardrails": {"pii": {"mode": "sometimes"}}}))
    assert EMAIL not in upstream_text(h)
    assert "ignoring a metadata guardrails block (key key_1" in caplog.text
    assert "metadata.guardrails.pii.mode: Input should be 'off', 'flag', 'redact' or 'block'" in caplog.text


class _LegacyFunctionUpstream(Upstream):
    """Answers as the legacy ``functions`` API does: one ``function_call`` echoing the last user text."""

    def completion(self, body: dict) -> dict:
        out = super().completion(body)
        args = orjson.dumps({"to": self.answer(body).removeprefix("Echo: ")}).decode()
        out["choices"][0]["message"] = {"role": "assistant", "content": None,
                                        "function_call": {"name": "send", "arguments": args}}
        out["choices"][0]["finish_reason"] = "function_call"
        return out


async def test_legacy_function_calls_refusals_are_redacted_and_restored() -> None:
    h = Harness(config({"pii": {"mode": "redact"}}), _LegacyFunctionUpstream())
    args = orjson.dumps({"to": EMAIL}).decode()
    body = {"model": "mock", "messages": [
        {"role": "user", "content": "send it"},
        {"role": "assistant", "content": None, "function_call": {"name": "send", "arguments": args}},
        {"role": "function", "name": "send", "content": "sent"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": f"I won't mail {EMAIL} again"}]},
        {"role": "assistant", "content": None, "refusal": f"Not to {EMAIL}"},
        {"role": "user", "content": f"then {EMAIL}"}]}
    original = copy.deepcopy(body)
    answer = await h.run(h.ctx(body))
    sent = upstream_text(h)
    assert EMAIL not in sent and sent.count("<EMAIL_1>") == 4
    assert body == original
    call = answer["choices"][0]["message"]["function_call"]
    assert orjson.loads(call["arguments"]) == {"to": f"then {EMAIL}"}  # the answer's call got its original back


class _Log:
    def __init__(self) -> None:
        self.records: list = []

    def add(self, record: object) -> None:
        self.records.append(record)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_logged_answer_body_holds_no_restored_custom_value(stream: bool) -> None:
    from aigw.pipeline.stages import observe

    assert observe._PII_MAPPING == PII_MAPPING
    writer = _Log()
    cfg = config({"pii": {"mode": "redact", "custom": {"employee_id": r"EMP-\d{6}"}}},
                 observability={"log_bodies": True})
    h = Harness(cfg, services={"request_log": writer}, stages=["observe", "pii"])
    ctx = h.ctx(chat(f"who is EMP-123456, {EMAIL}?", stream=stream))
    text = streamed_text(await h.stream(ctx)) if stream else (await h.run(ctx))["choices"][0]["message"]["content"]
    assert text == f"Echo: who is EMP-123456, {EMAIL}?"  # the client gets the originals back
    await next(s for s in h.stages if s.name == "observe").record(ctx)  # type: ignore[attr-defined]
    record = writer.records[-1]
    assert "EMP-123456" not in record.request_body
    assert "EMP-123456" not in record.response_body and EMAIL not in record.response_body
    assert "<EMPLOYEE_ID_1>" in record.response_body


@pytest.mark.parametrize(("stream", "size"), [(False, 4), (True, 1), (True, 4), (True, 100)])
async def test_a_refusal_gets_the_originals_back(stream: bool, size: int) -> None:
    h = Harness(config({"pii": {"mode": "redact"}}), Upstream(chunk_size=size, refusal=True))
    ctx = h.ctx(chat(f"mail {EMAIL} now", stream=stream))
    if stream:
        chunks = await h.stream(ctx)
        refusal = "".join((c.get("delta") or {}).get("refusal") or "" for ch in chunks for c in ch["choices"])
    else:
        refusal = (await h.run(ctx))["choices"][0]["message"]["refusal"]
    assert "<EMAIL_1>" in upstream_text(h)
    assert refusal == f"Echo: mail {EMAIL} now"
