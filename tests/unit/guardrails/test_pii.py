"""PII detection, redaction and restoration: what goes upstream and what the client gets back."""

from __future__ import annotations

import copy
import random
import time

import orjson
import pytest

from aigw.errors import InvalidRequest
from aigw.guardrails import pii_entities
from aigw.guardrails.pii import (
    PiiDetector,
    Redactor,
    StreamRestorer,
    apply_pii_policy,
    iban_ok,
    luhn_ok,
    restore,
)
from aigw.schema.anthropic import messages_request_to_canonical

DETECTOR = PiiDetector()


def kinds(text: str) -> list[tuple[str, str]]:
    return [(m.kind, m.value) for m in DETECTOR.find(text)]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("write to john.doe@example.com today", "email", "john.doe@example.com"),
        ("cc a.smith+billing@acme-corp.co.uk", "email", "a.smith+billing@acme-corp.co.uk"),
        ("call +1 (415) 555-0132 now", "phone", "+1 (415) 555-0132"),
        ("ring +44 20 7946 0958", "phone", "+44 20 7946 0958"),
        ("office (212) 555-0147.", "phone", "(212) 555-0147"),
        ("mobile 07700 900123", "phone", "07700 900123"),
        ("tel 06 12 34 56 78", "phone", "06 12 34 56 78"),
        ("toll free 1-800-555-0199", "phone", "1-800-555-0199"),
        ("e164 +14155550132", "phone", "+14155550132"),
        ("SSN: 536-22-8745", "ssn", "536-22-8745"),
        ("ssn 536228745 for payroll", "ssn", "536228745"),
        ("card 4111 1111 1111 1111 exp 12/27", "credit_card", "4111 1111 1111 1111"),
        ("amex 3782 822463 10005", "credit_card", "3782 822463 10005"),
        ("pay 5105-1051-0510-5100", "credit_card", "5105-1051-0510-5100"),
        ("IBAN DE89 3704 0044 0532 0130 00 please", "iban", "DE89 3704 0044 0532 0130 00"),
        ("to GB82 WEST 1234 5698 7654 32", "iban", "GB82 WEST 1234 5698 7654 32"),
        ("NL91ABNA0417164300", "iban", "NL91ABNA0417164300"),
        ("from 192.168.1.10 at noon", "ip", "192.168.1.10"),
        ("v6 2001:db8::1 assigned", "ip", "2001:db8::1"),
        ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "ip", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
        ("key AKIAIOSFODNN7EXAMPLE leaked", "secret", "AKIAIOSFODNN7EXAMPLE"),
        ("sk-proj-AbCdEf1234567890abcdefGHIJ in logs", "secret", "sk-proj-AbCdEf1234567890abcdefGHIJ"),
        ("token ghp_" + "a1B2" * 9, "secret", "ghp_" + "a1B2" * 9),
        ("password = 'hunter2abc9'", "secret", "hunter2abc9"),
    ],
)
def test_finds_each_kind_with_its_exact_span(text: str, kind: str, value: str) -> None:
    found = DETECTOR.find(text)
    assert [(m.kind, m.value) for m in found] == [(kind, value)]
    assert text[found[0].start : found[0].end] == value


def test_finds_pem_private_keys_and_jwts() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234567890abcdef\n-----END RSA PRIVATE KEY-----"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    assert kinds(f"key:\n{pem}\nthanks") == [("secret", pem)]
    assert kinds(f"Authorization: Bearer {jwt}") == [("secret", jwt)]


def test_secret_prefixes_inside_a_longer_token_are_not_keys() -> None:
    key = "sk-proj-" + "Ab1" * 10
    assert kinds(f"use {key} now") == [("secret", key)]
    assert kinds(f"x{key}") == [] and kinds(f"my-{key}") == [] and kinds(f"my_{key}") == []
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    assert kinds(f"-----BEGIN PRIVATE KEY----- (no end) then {pem}") == [
        ("secret", f"-----BEGIN PRIVATE KEY----- (no end) then {pem}")]
    assert kinds("-----BEGIN PRIVATE KEY----- and no end") == []


@pytest.mark.parametrize("text", [
    "sk-" * 20_000 + "\u00e9",  # every "sk-" of the run started a scan to its end: 23 s
    "glpat-" * 10_000 + "\u00e9",
    "xoxb-" * 12_000 + "\u00e9",
    "-----BEGIN PRIVATE KEY-----\n" * 4_000,  # a lazy scan to the end from every BEGIN without an END
])
def test_secret_scan_is_linear_on_hostile_input(text: str) -> None:
    start = time.process_time()
    DETECTOR.find(text)
    assert time.process_time() - start < 0.5  # was seconds to tens of seconds (quadratic)


@pytest.mark.parametrize(
    "text",
    [
        "Order #100234987 shipped on 2024-03-15.",
        "Meeting on 15/03/2024 at 10:30, budget $1,299.99 or €1.234,56",
        "ISBN 978-0-306-40615-7 and ISBN-10: 0-306-40615-2",
        "Random digits 1234 5678 9012 3456 fail Luhn.",
        "Your order number is 4111111111111112.",
        "Not SSNs: 000-12-3456, 666-12-3456, 912-34-5678, 078-05-1120",
        "Released v2.3.14; Python 3.11.7; build 20240315.1",
        "Upgrade to version 1.2.3.4 of the agent",
        "Retina asset icon@2x.png is missing",
        "sk-learn-is-a-great-library-for-ml",
        "API_KEY=<your-key-here> and password: ********",
        "std::vector<int> v; MAC 00:1A:2B:3C:4D:5E; time 10:30:00",
        "bind to 0.0.0.0 please",
        "GB82 WEST 1234 5698 7654 33 has a bad checksum",
        "ticket #555-123-4567 was closed",
    ],
)
def test_hard_negatives_are_left_alone(text: str) -> None:
    assert DETECTOR.find(text) == []


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE89370400440532013001")
    assert not iban_ok("DE8937040044053201300")  # wrong length for Germany


def test_overlaps_keep_the_more_specific_kind() -> None:
    token = "ghp_" + "x9Y8" * 9
    assert kinds(f"https://{token}@github.com/org/repo") == [("secret", token)]
    assert kinds("DE44 5001 0517 5407 3249 31") == [("iban", "DE44 5001 0517 5407 3249 31")]


def test_entity_list_limits_what_is_found() -> None:
    only_email = PiiDetector(entities=["email"])
    assert [m.kind for m in only_email.find("a@example.com +44 20 7946 0958")] == ["email"]


def test_custom_entities_from_config() -> None:
    detector = PiiDetector(entities=["email"], custom={"employee_id": r"EMP-\d{6}"})
    found = detector.find("EMP-123456 wrote to x@example.org")
    assert [(m.kind, m.value) for m in found] == [("employee_id", "EMP-123456"), ("email", "x@example.org")]
    redacted, _, mapping = apply_pii_policy([{"role": "user", "content": "id EMP-000042"}], "redact", detector)
    assert redacted[0]["content"] == "id <EMPLOYEE_ID_1>" and mapping == {"<EMPLOYEE_ID_1>": "EMP-000042"}


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"custom": {"emp": "EMP-("}}, "guardrails.pii.custom.emp"),
        ({"custom": {"Bad Name": "x"}}, "guardrails.pii.custom.Bad Name"),
        ({"custom": {"email": "x"}}, "guardrails.pii.custom.email"),
        ({"entities": ["email", "passport"]}, "guardrails.pii.entities"),
    ],
)
def test_bad_config_is_rejected_naming_the_field(kwargs: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        PiiDetector(**kwargs)
    assert exc.value.param == param


def test_sparse_and_dense_number_scans_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Texts with few digits locate numbers from the digits; both paths must find the same things."""
    rng = random.Random(7)
    pieces = [
        "4111 1111 1111 1111",
        "+44 20 7946 0958",
        "(212) 555-0147",
        "536-22-8745",
        "10.0.0.1",
        "DE89 3704 0044 0532 0130 00",
        "2024-03-15",
        "v1.2",
        " ",
        " ",
        "-",
        ".",
        "(",
        "+",
        "a",
        "word",
        "7",
        "42",
        "x9",
    ]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(300)]
    monkeypatch.setattr(pii_entities, "_SPARSE_DIGITS", 10**9)
    sparse = [DETECTOR.find(t) for t in texts]
    monkeypatch.setattr(pii_entities, "_SPARSE_DIGITS", -1)
    dense = [DETECTOR.find(t) for t in texts]
    assert sparse == dense
    assert sum(map(len, dense)) > 100  # the texts really contain findings


MESSAGES = [
    {"role": "system", "content": "Support bot. Escalations go to ops@example.com."},
    {"role": "user", "content": "I am jane@example.com, card 4111 1111 1111 1111."},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"email": "jane@example.com"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": '{"phone": "+44 20 7946 0958", "email": "jane@example.com"}'},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Also bob@example.org."},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
    },
    {"role": "user", "content": "nothing sensitive here"},
]


def test_redaction_is_typed_and_consistent_across_the_whole_request() -> None:
    original = copy.deepcopy(MESSAGES)
    redacted, verdict, mapping = apply_pii_policy(MESSAGES, "redact", DETECTOR)
    assert original == MESSAGES  # input untouched
    assert redacted[0]["content"] == "Support bot. Escalations go to <EMAIL_1>."
    assert redacted[1]["content"] == "I am <EMAIL_2>, card <CREDIT_CARD_1>."
    assert redacted[2]["tool_calls"][0]["function"]["arguments"] == '{"email": "<EMAIL_2>"}'
    assert redacted[3]["content"] == '{"phone": "<PHONE_1>", "email": "<EMAIL_2>"}'
    assert redacted[4]["content"][0]["text"] == "Also <EMAIL_3>."
    assert redacted[4]["content"][1] is MESSAGES[4]["content"][1]  # image part untouched
    assert redacted[5] is MESSAGES[5]  # unchanged messages are not copied
    assert mapping == {
        "<EMAIL_1>": "ops@example.com",
        "<EMAIL_2>": "jane@example.com",
        "<CREDIT_CARD_1>": "4111 1111 1111 1111",
        "<PHONE_1>": "+44 20 7946 0958",
        "<EMAIL_3>": "bob@example.org",
    }
    assert verdict.action == "redact"
    assert verdict.counts == {"credit_card": 1, "email": 5, "phone": 1}
    assert verdict.reasons == ["pii:credit_card", "pii:email", "pii:phone"]


def test_an_anthropic_documents_title_and_context_are_redacted_too() -> None:
    """A document's title and context reach an Anthropic upstream next to its text: no raw value there."""
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Call notes."},
           "title": "Notes for jane@example.com", "context": "Customer card 4111 1111 1111 1111"}
    body = messages_request_to_canonical({"model": "claude", "max_tokens": 10, "messages": [
        {"role": "user", "content": [doc, {"type": "text", "text": "Summarise."}]}]})
    redacted, verdict, mapping = apply_pii_policy(body["messages"], "redact", DETECTOR)
    sent = orjson.dumps(redacted).decode()
    assert "jane@example.com" not in sent and "4111" not in sent
    assert "Notes for <EMAIL_1>" in sent and "Customer card <CREDIT_CARD_1>" in sent
    assert verdict.counts == {"credit_card": 1, "email": 1}
    assert mapping == {"<EMAIL_1>": "jane@example.com", "<CREDIT_CARD_1>": "4111 1111 1111 1111"}
    assert "jane@example.com" in orjson.dumps(body).decode()  # the client's body is not edited in place
    _, flagged, _ = apply_pii_policy(body["messages"], "block", DETECTOR)
    assert flagged.blocked and flagged.counts == {"credit_card": 1, "email": 1}


@pytest.mark.parametrize(("mode", "action"), [("flag", "flag"), ("block", "block")])
def test_flag_and_block_name_kinds_never_values(mode: str, action: str) -> None:
    messages, verdict, mapping = apply_pii_policy(MESSAGES, mode, DETECTOR)
    assert messages is MESSAGES and mapping == {}
    assert verdict.action == action
    assert "pii:email" in verdict.reasons
    record = repr(verdict.to_record())
    assert "example.com" not in record and "4111" not in record


def test_off_and_clean_requests_pass() -> None:
    messages, verdict, mapping = apply_pii_policy(MESSAGES, "off", DETECTOR)
    assert messages is MESSAGES and verdict.passed and mapping == {}
    clean = [{"role": "user", "content": "hello"}]
    for mode in ("flag", "redact", "block"):
        out, verdict, _ = apply_pii_policy(clean, mode, DETECTOR)
        assert verdict.passed and out == clean


def test_unknown_mode_is_a_config_error() -> None:
    with pytest.raises(InvalidRequest):
        apply_pii_policy(MESSAGES, "mask", DETECTOR)


def test_restore_puts_originals_back_and_leaves_unknown_placeholders() -> None:
    redactor = Redactor(DETECTOR)
    text = redactor.redact_text("mail a@example.com and b@example.com, again a@example.com")
    assert text == "mail <EMAIL_1> and <EMAIL_2>, again <EMAIL_1>"
    answer = "Sent to <EMAIL_2> and <EMAIL_1>; <EMAIL_9> and <PHONE_1> are not ours."
    assert restore(answer, redactor.mapping) == (
        "Sent to b@example.com and a@example.com; <EMAIL_9> and <PHONE_1> are not ours."
    )
    assert restore("no placeholders", {}) == "no placeholders"


def _stream(mapping: dict[str, str], chunks: list[str]) -> str:
    restorer = StreamRestorer(mapping)
    return "".join(restorer.feed(c) for c in chunks) + restorer.flush()


def test_stream_restores_placeholders_split_anywhere() -> None:
    mapping = {"<EMAIL_1>": "a@example.com", "<CREDIT_CARD_12>": "4111 1111 1111 1111"}
    answer = "Hi <EMAIL_1>, your card <CREDIT_CARD_12> is fine. <EMAIL_1>!"
    expected = restore(answer, mapping)
    for i in range(len(answer) + 1):
        assert _stream(mapping, [answer[:i], answer[i:]]) == expected
        for j in range(i, len(answer) + 1, 3):
            assert _stream(mapping, [answer[:i], answer[i:j], answer[j:]]) == expected
    assert _stream(mapping, list(answer)) == expected  # one character per chunk


def test_stream_holds_back_only_a_possible_placeholder_prefix() -> None:
    restorer = StreamRestorer({"<EMAIL_1>": "a@example.com"})
    assert restorer.feed("x < y and <b>bold</b> ") == "x < y and <b>bold</b> "
    assert restorer.feed("write to <EMA") == "write to "
    assert restorer.feed("IL_1> now") == "a@example.com now"
    assert restorer.feed("dangling <EMAIL_") == "dangling "
    assert restorer.flush() == "<EMAIL_"  # never completed: released as is
    assert StreamRestorer({}).feed("<EMA") == "<EMA"
