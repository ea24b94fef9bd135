"""Cache keys: equal for requests that must share an answer, different for the rest."""

from __future__ import annotations

from typing import Any

import orjson

from aigw.pipeline.context import Principal, RequestContext
from aigw.pipeline.stages.cache_keys import (
    MAX_MARKED_WORDS,
    ExactKeys,
    context_key,
    exact_key,
    fallback_mark,
    literals,
    model_tag,
    purge_patterns,
    scope_of,
    semantic_blocker,
    taken_out_of_service,
    word_order_mark,
)
from aigw.types import JSON


def ctx(body: JSON, *, tenant: str = "t1", project: str = "p1", key: str = "k1", model: str = "m",
        endpoint: str = "chat") -> RequestContext:
    return RequestContext(request_id="r", api="openai", endpoint=endpoint, body=body, model=model,  # type: ignore[arg-type]
                          principal=Principal(key_id=key, tenant_id=tenant, project_id=project))


MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


def sourced(raw: bytes, **kw: Any) -> RequestContext:
    """A context as the HTTP layer makes it: the body parsed from ``raw``, both kept."""
    c = ctx(orjson.loads(raw), **kw)
    c.source = (raw, c.body)
    return c


def test_memoised_keys_are_the_computed_keys() -> None:
    keys = ExactKeys()
    raw = orjson.dumps({"model": "m", "messages": MSGS, "temperature": 0.2})
    first, again = sourced(raw), sourced(raw)
    assert keys(first, "tenant") == exact_key(first, "tenant")
    assert keys(again, "tenant") == exact_key(again, "tenant")  # from the memo this time
    other = sourced(orjson.dumps({"model": "m", "messages": MSGS, "temperature": 0.3}))
    assert keys(other, "tenant") == exact_key(other, "tenant") != keys(again, "tenant")


def test_memoised_keys_keep_tenants_scopes_and_guards_apart() -> None:
    keys = ExactKeys()
    raw = orjson.dumps({"model": "m", "messages": MSGS})
    a, b = sourced(raw, tenant="t1", key="k1"), sourced(raw, tenant="t2", key="k1")
    assert keys(a, "tenant") != keys(b, "tenant")
    assert keys(b, "tenant") == exact_key(b, "tenant")
    same_tenant_other_key = sourced(raw, tenant="t1", key="k2")
    assert keys(same_tenant_other_key, "key") == exact_key(same_tenant_other_key, "key") != keys(a, "key")
    assert keys(a, "tenant", "guarded") == exact_key(a, "tenant", "guarded") != keys(a, "tenant")


def test_a_body_a_stage_replaced_is_keyed_as_it_is_not_as_its_bytes() -> None:
    """PII redaction or a routing rule assigns a new body before the cache: the key follows it."""
    keys = ExactKeys()
    raw = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "mail ann@example.com"}]})
    keys(sourced(raw), "tenant")  # the bytes are in the memo now
    redacted = sourced(raw)
    redacted.body = {"model": "m", "messages": [{"role": "user", "content": "mail <EMAIL_1>"}]}
    assert keys(redacted, "tenant") == exact_key(redacted, "tenant") != exact_key(sourced(raw), "tenant")


def test_the_anthropic_beta_header_splits_the_memo() -> None:
    """The one header that changes the parsed body: the same bytes with another beta are another body."""
    keys = ExactKeys()
    raw = orjson.dumps({"model": "m", "messages": MSGS})
    plain = sourced(raw)
    keys(plain, "tenant")
    beta = sourced(raw)
    beta.headers["anthropic-beta"] = "x"
    beta.body["_anthropic"] = {"betas": ["x"]}  # what parsing with the header would have made
    beta.source = (raw, beta.body)
    assert keys(beta, "tenant") == exact_key(beta, "tenant") != exact_key(plain, "tenant")


def test_the_key_memo_is_bounded() -> None:
    keys = ExactKeys(limit=4, max_bytes=64)
    for i in range(10):
        c = sourced(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": str(i)}]}))
        assert keys(c, "tenant") == exact_key(c, "tenant")
        assert len(keys._keys) <= 4
    big = sourced(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 100}]}))
    assert keys(big, "tenant") == exact_key(big, "tenant")
    assert all(len(memo[0]) <= 64 for memo in keys._keys)


def test_key_ignores_field_order_and_transport_fields() -> None:
    a = ctx({"messages": MSGS, "temperature": 0.1, "model": "m"})
    b = ctx({"model": "m", "temperature": 0.1, "messages": MSGS, "stream": True,
             "stream_options": {"include_usage": True}, "user": "u-9", "metadata": {"a": "b"}})
    assert exact_key(a, "tenant") == exact_key(b, "tenant")


def test_every_answer_shaping_field_changes_the_key() -> None:
    base: JSON = {"model": "m", "messages": MSGS}
    key = exact_key(ctx(base), "tenant")
    for field, value in [("temperature", 0.5), ("top_p", 0.9), ("seed", 1), ("n", 2), ("max_tokens", 9),
                         ("response_format", {"type": "json_object"}), ("stop", ["x"]),
                         ("tools", [{"type": "function", "function": {"name": "f"}}]), ("tool_choice", "none"),
                         ("reasoning_effort", "low"), ("_anthropic", {"top_k": 3})]:
        assert exact_key(ctx({**base, field: value}), "tenant") != key, field
    assert exact_key(ctx(base, model="other"), "tenant") != key
    assert exact_key(ctx(base, endpoint="embeddings"), "tenant") != key


def test_only_known_no_op_empties_are_dropped_from_the_key() -> None:
    base: JSON = {"model": "m", "messages": MSGS}
    key = exact_key(ctx(base), "tenant")
    for field, value in [("tools", []), ("functions", []), ("stop", []), ("stop", None), ("logit_bias", {}),
                         ("_anthropic", {}), ("metadata", {}), ("temperature", None), ("tool_choice", None),
                         ("stream_options", {})]:
        assert exact_key(ctx({**base, field: value}), "tenant") == key, (field, value)
    for field, value in [("web_search_options", {}), ("some_new_field", {}), ("some_new_field", []),
                         ("some_new_field", None), ("prediction", {}), ("response_format", {})]:
        assert exact_key(ctx({**base, field: value}), "tenant") != key, (field, value)


def test_keys_of_requests_without_empty_fields_are_what_they_were() -> None:
    body: JSON = {"model": "m", "messages": MSGS, "temperature": 0.2, "stream": True}
    assert exact_key(ctx(body), "tenant") == "t1:6158dde9.7324cabaafbd04ac07abd6ce57bd8fbf"


def test_scope_is_never_wider_than_a_tenant() -> None:
    body: JSON = {"messages": MSGS}
    assert exact_key(ctx(body, tenant="a"), "tenant") != exact_key(ctx(body, tenant="b"), "tenant")
    assert exact_key(ctx(body, key="k1"), "tenant") == exact_key(ctx(body, key="k2"), "tenant")
    assert exact_key(ctx(body, key="k1"), "key") != exact_key(ctx(body, key="k2"), "key")
    assert exact_key(ctx(body, project="p1"), "project") != exact_key(ctx(body, project="p2"), "project")
    assert exact_key(ctx(body, tenant="a", key="k"), "key") != exact_key(ctx(body, tenant="b", key="k"), "key")
    assert scope_of(ctx(body, tenant=""), "tenant") == "_"


def test_context_key_ignores_only_the_last_user_text() -> None:
    def body(last: str, system: str = "be brief") -> JSON:
        return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": last}]}
    assert context_key(ctx(body("hi")), "tenant") == context_key(ctx(body("hello there")), "tenant")
    assert context_key(ctx(body("hi")), "tenant") != context_key(ctx(body("hi", "be long")), "tenant")
    assert context_key(ctx(body("hi")), "tenant") != exact_key(ctx(body("hi")), "tenant")


def test_context_key_keeps_images_of_the_last_turn() -> None:
    def body(url: str, text: str) -> JSON:
        return {"messages": [{"role": "user", "content": [{"type": "text", "text": text},
                                                          {"type": "image_url", "image_url": {"url": url}}]}]}
    assert context_key(ctx(body("a.png", "what is this")), "tenant") == \
        context_key(ctx(body("a.png", "what's this?")), "tenant")
    assert context_key(ctx(body("a.png", "what is this")), "tenant") != \
        context_key(ctx(body("b.png", "what is this")), "tenant")


def test_semantic_blocker() -> None:
    user: JSON = {"role": "user", "content": "q"}
    assert semantic_blocker({"messages": [user]}, 4, False) == ""
    assert semantic_blocker({"messages": [user], "tools": [{}]}, 4, False) == "tools"
    assert semantic_blocker({"messages": [user], "tools": [{}]}, 4, True) == ""
    for tool_like in [{"functions": [{"name": "f"}]}, {"tool_choice": "none"}, {"web_search_options": {}},
                      {"_anthropic": {"server_tools": [{"type": "web_search_20250305"}]}},
                      {"_anthropic": {"mcp_servers": [{"type": "url"}]}}, {"_anthropic": {"tool_choice": {}}},
                      {"_anthropic": {"container": "c1"}}, {"_anthropic": {"some_new_tool_field": 1}}]:
        assert semantic_blocker({"messages": [user], **tool_like}, 4, False) == "tools", tool_like
    assert semantic_blocker({"messages": [user], "tools": [], "_anthropic": {"top_k": 3}}, 4, False) == ""
    tool_turn = [user, {"role": "assistant", "tool_calls": [{}]}, {"role": "tool", "content": "r"}, user]
    assert semantic_blocker({"messages": tool_turn}, 4, False) == "tool results"
    assert semantic_blocker({"messages": [user, {"role": "assistant", "content": "a"}]}, 4, False) != ""
    assert semantic_blocker({"messages": [user] * 5}, 4, False) == "too many turns"


def test_context_key_keeps_the_literals_of_the_last_turn() -> None:
    def key(text: str) -> str:
        return context_key(ctx(body(text)), "tenant")

    def body(text: str) -> JSON:
        return {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": text}]}

    # what the local model scores 0.96-1.0 and a user means differently: each pair must be two buckets
    for one, other in [("What is the status of order 1234?", "What is the status of order 1235?"),
                       ("Describe CVE-2021-44228", "Describe CVE-2021-45046"),
                       ("Convert $50 to EUR", "Convert $500 to EUR"),
                       ("What does this print? print(2 + 3)", "What does this print? print(2 * 3)"),
                       ("What is in /etc/passwd?", "What is in /etc/shadow?"),
                       ("Explain the config in settings.py", "Explain the config in urls.py"),
                       ("What does `git reset --soft HEAD~1` do?", "What does `git reset --hard HEAD~1` do?"),
                       ("Is 'colour' spelled right?", "Is 'color' spelled right?"),
                       ("What does the regex ^[a-z]+$ match?", "What does the regex ^[A-Z]+$ match?"),
                       ("Is 3 greater than 5?", "Is 5 greater than 3?")]:
        assert key(one) != key(other), (one, other)
    # wording, case, spacing and sentence punctuation around a literal do not split the bucket
    for one, other in [("What is the status of order 1234?", "Can you tell me the status of order 1234"),
                       ("Who won the World Cup in 2014?", "Which country won the 2014 World Cup?"),
                       ("What's the capital of France?", "what is the capital of france"),
                       ("How much is 17 times 23?", "What is  17 times 23 ?\n")]:
        assert key(one) == key(other), (one, other)


def test_context_key_keeps_the_words_a_user_swaps_for_their_opposite() -> None:
    def key(text: str) -> str:
        return context_key(ctx({"messages": [{"role": "user", "content": text}]}), "tenant")

    # the local model scores each pair 0.93-0.99: a semantic hit would be the other question's answer
    for one, other in [("What is the maximum dose of ibuprofen?", "What is the minimum dose of ibuprofen?"),
                       ("What was the weather yesterday?", "What will the weather be tomorrow?"),
                       ("Answer in French: what is a cat?", "Answer in German: what is a cat?"),
                       ("How do I add a user to the group?", "How do I remove a user from the group?"),
                       ("Should I buy the stock now?", "Should I sell the stock now?")]:
        assert key(one) != key(other), (one, other)
    # the same words, phrased another way or with a clause moved, still share a bucket (kept words are a bag:
    # the order of the words is the word-order mark's to judge)
    assert key("What is the maximum dose of ibuprofen?") == key("Tell me the Maximum dose for ibuprofen")
    assert key("How do I add a row in Python?") == key("In Python, how do I add a row?")


def test_context_key_counts_the_negations_of_the_last_turn() -> None:
    def key(text: str) -> str:
        return context_key(ctx({"messages": [{"role": "user", "content": text}]}), "tenant")

    # the local model scores these 0.93-0.99
    for one, other in [("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?"),
                       ("Which countries use the euro?", "Which countries don't use the euro?"),
                       ("Can dogs eat grapes?", "Can't dogs eat grapes?"),
                       ("List foods that contain gluten", "List foods without gluten"),
                       ("È sicuro mangiare uova crude?", "Non è sicuro mangiare uova crude?"),
                       ("Ist das sicher?", "Ist das nicht sicher?")]:
        assert key(one) != key(other), (one, other)
    assert key("Which countries don't use the euro?") == key("Which countries do not use the euro")
    assert key("Is Notion safe?") == key("is notion safe")  # whole words only
    assert key("Why don't cats swim?") == key("why dont cats swim")  # the apostrophe left out
    assert key("What is sin of 30 degrees?") == key("What is the sine of 30 degrees")  # no Spanish "sin"


def test_a_turn_too_long_for_a_word_order_mark_keeps_its_kept_words_in_order() -> None:
    # past MAX_MARKED_WORDS there is no mark to pass over a swap, so the bucket key still tells them apart
    filler = " ".join(["word"] * MAX_MARKED_WORDS)
    one, other = f"{filler} convert celsius to fahrenheit", f"{filler} convert fahrenheit to celsius"
    assert word_order_mark(one) == word_order_mark(other) == b""
    assert literals(one) != literals(other)
    assert literals("convert celsius to fahrenheit") == literals("convert fahrenheit to celsius")  # a mark judges


def test_context_key_keeps_the_words_that_carry_accents() -> None:
    # the local model is uncased and strips accents ("papá" is "papa" to it, similarity 1.0): a word with an
    # accent is kept as a bag, so its unaccented twin is another question
    def key(text: str) -> str:
        return context_key(ctx({"messages": [{"role": "user", "content": text}]}), "tenant")

    for one, other in [("¿Qué significa papa?", "¿Qué significa papá?"),
                       ("¿Cuántos años tiene?", "¿Cuántos anos tiene?"),
                       ("Wie schön ist es?", "Wie schon ist es?"),
                       ("Is this my resume?", "Is this my résumé?")]:
        assert key(one) != key(other), (one, other)
    # paraphrases with the same accented words still share a bucket
    assert key("Où est la gare ?") == key("Où se trouve la gare")
    assert key("What is the capital of France?") == key("Which city is the capital of France")


def test_a_purge_counts_each_answer_it_takes_out_of_service_once() -> None:
    answer = f"ten_a:{model_tag('primary')}.0123abcd"
    mark = fallback_mark(answer, "backup")
    tenant = taken_out_of_service(purge_patterns("ten_a", None))  # takes the answer and its mark: one
    assert (tenant(answer), tenant(mark)) == (True, False)
    backup = taken_out_of_service(purge_patterns(None, "backup"))  # takes the mark alone: its answer is unserved
    assert backup(mark)
    everything = taken_out_of_service(None)
    assert (everything(answer), everything(mark)) == (True, False)
