"""Cache keys: a cheap hash of what shapes an answer, scoped by tenant.

A key reads ``<scope>:<model tag>.<hash>``: the scope (``scope_of``) and a short
tag of the model come first, in the clear, so that an admin purge can name a
tenant, a model or both (``purge_patterns``) without reading any entry.

Every body field counts except the few that cannot change the answer (below),
so a field added to the API tomorrow splits the key rather than collides.
``stream`` does not count: a streamed and a plain request share one entry.
The semantic key is the same hash with the last user turn's text blanked but
its literals and its count of negations kept (``literals``): an equal context,
equal literals and negations and a similar last question may share an answer.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from typing import Any

import orjson

from aigw.pipeline.context import RequestContext
from aigw.schema.openai import content_text
from aigw.stores.key_glob import escape, matcher
from aigw.types import JSON

# fields that do not shape the answer (transport, bookkeeping, our own controls)
IGNORED_FIELDS = frozenset({
    "stream", "stream_options", "user", "metadata", "store", "service_tier", "cache",
    "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
})
_SORTED = orjson.OPT_SORT_KEYS
# Values known to mean "not given" for a field, so they shape nothing (``tools: []``, ``stop: null``, an
# empty ``_anthropic`` left once the ``cache`` control is taken out of it). Any other value counts, empty
# or not: ``web_search_options: {}`` turns search on, and a field unknown here always splits the key.
_NULL: tuple[Any, ...] = (None,)
_EMPTY_LIST: tuple[Any, ...] = (None, [])
_NO_OP: dict[str, tuple[Any, ...]] = {
    "tools": _EMPTY_LIST, "functions": _EMPTY_LIST, "stop": _EMPTY_LIST, "logit_bias": (None, {}),
    "_anthropic": ({},),
    **dict.fromkeys((  # OpenAI's optional fields, where null is the default
        "temperature", "top_p", "n", "max_tokens", "max_completion_tokens", "presence_penalty",
        "frequency_penalty", "seed", "logprobs", "top_logprobs", "tool_choice", "function_call",
        "parallel_tool_calls", "response_format", "reasoning_effort", "web_search_options",
        "echo", "suffix", "best_of", "encoding_format", "dimensions"), _NULL),
}
_NOTHING: tuple[Any, ...] = ()


def _digest(*parts: bytes) -> str:
    """Each part followed by a NUL byte, hashed (one call: the same digest as feeding them one by one)."""
    return hashlib.blake2b(b"\x00".join(parts) + b"\x00", digest_size=16).hexdigest()


def scope_of(ctx: RequestContext, scope: str, guard: str = "") -> str:
    """Who may share an entry: a tenant (default), a project or a single key. Never wider.

    ``guard`` tags the output checks the answer passed when they are not its model's configured ones
    (a key's metadata changed them): a hit skips those checks, so an answer checked under other ones
    is not served (``Policies.cache_tag``). It follows the scope, so a tenant's purge still finds it.
    """
    p = ctx.principal
    tenant = p.tenant_id or "_"
    if scope == "key":
        who = f"{tenant}/k/{p.key_id or '_'}"
    elif scope == "project":
        who = f"{tenant}/p/{p.project_id or '_'}"
    else:
        who = tenant
    return f"{who}/g/{guard}" if guard else who


_TAGS: dict[str, str] = {}


def model_tag(model: str) -> str:
    """Eight hex digits for ``model`` (memoised: model names come from clients, so bounded)."""
    tag = _TAGS.get(model)
    if tag is None:
        if len(_TAGS) >= 4096:
            _TAGS.clear()
        tag = _TAGS[model] = hashlib.blake2b(model.encode(), digest_size=4).hexdigest()
    return tag


def fallback_mark(key: str, served: str) -> str:
    """The key that vouches for an answer ``served`` gave to a question asked of another model (a fallback),
    stored beside it: it carries the served model's tag, so that model's purge deletes it, and the answer
    (under the asked model's key) is served only while it is there."""
    who, _, rest = key.rpartition(":")
    return f"{who}:{model_tag(served)}.via.{rest}"


def taken_out_of_service(patterns: list[str] | None) -> Callable[[str], bool]:
    """Which keys a purge of ``patterns`` counts in ``deleted``: every answer it deletes, and every mark it deletes
    whose answer it leaves (that answer is served no more: a fallback model's purge), but not a mark beside an
    answer the same purge deletes (one answer, counted once)."""
    match = matcher(patterns) if patterns is not None else None

    def counts(key: str) -> bool:
        who, _, tail = key.rpartition(":")
        if ".via." not in tail:
            return True
        return match is not None and not match(f"{who}:{tail.split('.via.', 1)[1]}")
    return counts


def purge_patterns(tenant: str | None, model: str | None) -> list[str] | None:
    """The keys and semantic buckets of ``tenant`` and/or ``model`` as ``key_glob`` patterns, in every
    scope (a tenant's own, its projects', its keys'); None: everything."""
    if tenant is None and model is None:
        return None
    rest = f"{model_tag(model)}.*" if model is not None else "*"
    if tenant is None:
        return [f"*:{rest}"]  # the scope holds no ":", so the tag follows the first one
    return [f"{escape(tenant)}:{rest}", f"{escape(tenant)}/*:{rest}"]


def _shaping(body: JSON) -> JSON:
    # a known no-op (``_anthropic: {}``, ``tools: []``) shapes nothing: dropped, so both APIs agree
    return {k: v for k, v in body.items() if k not in IGNORED_FIELDS and v not in _NO_OP.get(k, _NOTHING)}


def exact_key(ctx: RequestContext, scope: str, guard: str = "") -> str:
    """``<scope>:<model tag>.<hash of scope, endpoint, model and every shaping field>``."""
    payload = orjson.dumps(_shaping(ctx.body), option=_SORTED)
    who = scope_of(ctx, scope, guard)
    return f"{who}:{model_tag(ctx.model)}.{_digest(who.encode(), ctx.endpoint.encode(), ctx.model.encode(), payload)}"


class ExactKeys:
    """``exact_key``, memoised on the request's bytes: a repeated question (a hit) skips the canonical
    dump and the hash of its body, ~3 µs of a ~20 µs hit.

    Safe because the key is a pure function of what the memo is keyed on: the bytes (from which the
    body was parsed, the same way each time), who may share the entry, the endpoint, the inbound API
    and the one header that changes the parsed body (``anthropic-beta``). Only used while ``ctx.body``
    is still the body parsed from those bytes (``RequestContext.source``): once a stage before the
    cache changed it (PII redaction, a routing rule), the key is computed from the body as it is.
    Bounded like ``Validated``: at most ``limit`` bodies of at most ``max_bytes`` each.
    """

    def __init__(self, limit: int = 1024, max_bytes: int = 8192) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self._keys: dict[tuple[bytes, str, str, str, str | None], str] = {}

    def __call__(self, ctx: RequestContext, scope: str, guard: str = "") -> str:
        source = ctx.source
        if source is None or source[1] is not ctx.body or len(source[0]) > self.max_bytes:
            return exact_key(ctx, scope, guard)
        memo = (source[0], scope_of(ctx, scope, guard), ctx.endpoint, ctx.api, ctx.headers.get("anthropic-beta"))
        key = self._keys.get(memo)
        if key is None:
            key = exact_key(ctx, scope, guard)
            if len(self._keys) >= self.limit:
                self._keys.clear()
            self._keys[memo] = key
        return key


def context_key(ctx: RequestContext, scope: str, guard: str = "") -> str:
    """The semantic bucket: like ``exact_key`` but without the last user turn's text, bar its literals.

    Non-text parts of that turn (images, files) stay in, so two questions about
    different pictures never share an answer; so do the text's ``literals``, so
    "order 1234" and "order 1235" never share one, however alike they embed.
    """
    body = _shaping(ctx.body)
    messages = list(body.get("messages") or ())
    signature = ""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            content = messages[i].get("content")
            signature = literals(content_text(content))
            messages[i] = {**messages[i], "content": _blank_text(content)}
            break
    body["messages"] = messages
    payload = orjson.dumps(body, option=_SORTED)
    who = scope_of(ctx, scope, guard)
    digest = _digest(b"semantic", who.encode(), ctx.model.encode(), payload, signature.encode())
    return f"{who}:{model_tag(ctx.model)}.{digest}"


# What an embedding cannot be trusted to tell apart (measured: "status of order 1234?" / "... 1235?" 0.99,
# "print(2 + 3)" / "print(2 * 3)" 1.0): a word holding a digit, a symbol or a dotted or slashed name, and a
# quoted or backticked span. Sentence punctuation around a word is not part of it ("1234?" is "1234").
_LITERAL_MARK = re.compile(r"[\d$€£¥%#@&*+=<>^~|\\/_{}\[\]()`]|\w[.:]\w")
_QUOTED = re.compile(r"`[^`]+`|\"[^\"]+\"|“[^”]+”|«[^»]+»|„[^“”]+[“”]|(?<!\w)'[^'\n]+'(?!\w)")
# "is X safe" / "is X not safe" embed at 0.99 too: a count (not the words) so "don't" and "do not" agree.
# English (with and without the apostrophe), French, German, Spanish, Italian, Portuguese, Dutch, Russian;
# whole words only. Not Spanish "sin" (without): in English it is the sine ("sin of 30").
_NEGATION = re.compile(
    r"\b(?:not|no|never|none|nor|neither|nothing|nobody|nowhere|without|cannot|\w+n['\u2019]t|"
    r"dont|doesnt|didnt|isnt|arent|wasnt|werent|cant|wont|wouldnt|shouldnt|couldnt|havent|hasnt|hadnt|"
    r"ne|n['\u2019]|pas|jamais|sans|aucune?|rien|nicht|nichts|kein\w*|nie|niemals|ohne|"
    r"non|n\u00e3o|nunca|nada|senza|sem|nem|mai|niet|geen|nooit|zonder|"
    r"\u043d\u0435|\u043d\u0435\u0442|\u043d\u0438|\u0431\u0435\u0437)\b", re.IGNORECASE)
# Words a user swaps for their opposite or a sibling while keeping the rest of the question, and that the
# local model scores alike ("maximum dose" / "minimum dose" 0.96, "yesterday" / "tomorrow", Celsius /
# Fahrenheit, "answer in French" / "in German"): kept in the bucket key as written (lower-cased), as a bag.
# A paraphrase that swaps one for a synonym ("max" for "maximum") is a plain miss, never a wrong answer.
# Not kept: words common in any phrasing ("may", "up", "over", "fall"), which would split paraphrases.
_KEPT_TEXT = """
    max maximum min minimum most least more less fewer higher lower highest lowest bigger smaller biggest
    smallest larger largest greater greatest longer shorter longest shortest faster slower fastest slowest
    heavier lighter older newer oldest newest earlier later earliest latest best worst better worse cheaper
    cheapest increase decrease increasing decreasing raise lower add remove adding removing insert delete
    enable disable enabled disabled allow deny allowed denied accept reject include exclude import export
    upload download encrypt decrypt encode decode compress decompress push pull buy sell win lose start
    stop open close lock unlock connect disconnect install uninstall upgrade downgrade before after above
    below left right north south east west inside outside input output first last next
    previous true false yes no positive negative success failure valid invalid legal illegal safe unsafe
    hot cold warm cool today tomorrow yesterday tonight morning evening night weekday weekend daily weekly
    monthly yearly monday tuesday wednesday thursday friday saturday sunday january february april
    june july august september october november december summer autumn winter celsius
    fahrenheit kelvin metric imperial meters metres miles kilometers kilometres feet inches pounds
    kilograms kg lbs grams ounces liters litres gallons seconds minutes hours days weeks months years
    english french german spanish italian portuguese dutch russian chinese japanese korean arabic hindi
    python javascript typescript java rust golang ruby php kotlin swift sql bash
"""
_KEPT_WORDS = frozenset(_KEPT_TEXT.split())
_AROUND = ".,;:!?¿¡'\"“”\u2018\u2019«»()[]。、\uff0c\uff01\uff1f\uff1a\uff1b"  # + curly quotes, CJK full stops


def literals(text: str) -> str:
    """The literals of ``text`` in order and its ``_KEPT_WORDS`` and accented words as a bag, joined, then how
    many negations it holds: two questions that differ in either may not share an answer. Case counts in
    literals (``^[a-z]+$`` is not ``^[A-Z]+$``). Linear in the text (a split and a search per word, one
    search for negations)."""
    found = _QUOTED.findall(text)
    kept: list[str] = []
    words = 0
    for word in text.split():
        core = word.strip(_AROUND)
        words += core != ""
        if _LITERAL_MARK.search(core):
            found.append(core)
        elif (lower := core.lower()) in _KEPT_WORDS or (not lower.isascii() and _accented(lower)):
            kept.append(lower)
    # as a bag: a moved clause keeps its bucket (the word-order mark judges the order); in order for a turn
    # too long to have a mark, where nothing else would tell "Celsius to Fahrenheit" from its swap
    found += sorted(kept) if words <= MAX_MARKED_WORDS else kept
    found.append(str(len(_NEGATION.findall(text))))
    return "\x1f".join(found)


def _accented(word: str) -> bool:
    """``word`` carries an accent or another combining mark, which the local (uncased) model strips before it
    reads the word: "papá" is "papa" to it, "años" is "anos" (similarity 1.0), so such a word is kept like
    ``_KEPT_WORDS``. Only called for a word that is not plain ASCII."""
    return any(unicodedata.combining(c) for c in unicodedata.normalize("NFD", word))


def word_order_mark(text: str) -> bytes:
    """A hash of the turn's words as a bag (8 bytes), then each word's 2-byte hash in order; empty past 255
    words. Two questions with the same bag in another order ("Is gold heavier than lead?" / "Is lead heavier
    than gold?", 0.99 to the local model) are different questions, unless one moved a block of words ("In
    Python, how do I ..." / "How do I ... in Python?"): ``cache_base.swapped`` tells them apart for the
    semantic index, which stores the mark beside each vector."""
    words = [w.strip(_AROUND).lower() for w in text.split()]
    words = [w for w in words if w]
    if len(words) > MAX_MARKED_WORDS:
        return b""
    bag = hashlib.blake2b("\x1f".join(sorted(words)).encode(), digest_size=8).digest()
    return bag + b"".join(hashlib.blake2b(w.encode(), digest_size=2).digest() for w in words)


MAX_MARKED_WORDS = 255  # a longer turn has no mark (the local model cannot embed it anyway: 128 tokens)


def _blank_text(content: Any) -> Any:
    if isinstance(content, list):
        return [{"type": "text"} if isinstance(p, dict) and p.get("type") == "text" else p for p in content]
    return ""


def semantic_blocker(body: JSON, max_turns: int, with_tools: bool) -> str:
    """Why this request may not match semantically ("" = it may).

    Agents are the risk: a similar question in a tool loop must never get a
    replayed tool call, so tools, tool results and long conversations are out.
    """
    messages = body.get("messages") or ()
    if not messages or messages[-1].get("role") != "user":
        return "last turn is not the user's"
    if not with_tools:
        if _offers_tools(body):
            return "tools"
        if any(m.get("role") in ("tool", "function") or m.get("tool_calls") or m.get("function_call")
               for m in messages):
            return "tool results"
    if sum(1 for m in messages if m.get("role") == "user") > max_turns:
        return "too many turns"
    return ""


# a field whose name holds one of these offers or steers tools: function tools, a tool choice, OpenAI's web
# search, Anthropic's server tools, MCP servers, a code-execution container (and fields not invented yet)
_TOOL_WORDS = ("tool", "function", "mcp", "server", "container", "web_search")


def _tool_like(fields: JSON) -> bool:
    # present is enough (``web_search_options: {}`` turns search on), but an empty list offers nothing
    return any(value is not None and value != [] and any(w in name for w in _TOOL_WORDS)
               for name, value in fields.items())


def _offers_tools(body: JSON) -> bool:
    """Tools of any kind, at the top level or in the Anthropic-only part (``_anthropic.server_tools``,
    ``mcp_servers``, a tool choice kept there when only server tools are offered)."""
    if _tool_like(body):
        return True
    private = body.get("_anthropic")
    return isinstance(private, dict) and _tool_like(private)
