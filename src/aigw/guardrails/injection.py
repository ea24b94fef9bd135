"""Prompt-injection scoring over user and tool-result text.

A heuristic scorer, not a classifier: weighted signals (instruction overrides,
jailbreak personas, system-prompt exfiltration, chat-template escapes,
instructions planted in tool output, encoded payloads, hidden unicode) are
combined as independent evidence, ``1 - prod(1 - w)``, so one strong signal
crosses a 0.8 threshold and weak ones need company.

Speed: each rule has literal anchors checked with ``in`` (a C substring scan)
before its regex runs, so ordinary text pays for ~40 substring scans and
almost no regex work. Deployments that want a model-based score plug in an
``InjectionClassifier`` (see below); the final score is the max of both.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple, Protocol

from aigw.guardrails.verdict import Verdict


class InjectionClassifier(Protocol):
    """Hook for a model-based injection classifier (e.g. a small ONNX model).

    ``score`` gets the user and tool-result texts of one request and returns a
    probability in [0, 1] that they carry an injection. It must be pure and
    thread-safe; the pipeline stage decides whether to call it inline or in an
    executor. ``name`` appears in verdict reasons (``injection:model:<name>``).
    """

    name: str

    def score(self, texts: Sequence[str]) -> float: ...


class _Rule(NamedTuple):
    category: str
    weight: float
    anchors: tuple[str, ...]
    regex: re.Pattern[str]


def _rule(category: str, weight: float, anchors: str, pattern: str) -> _Rule:
    return _Rule(category, weight, tuple(anchors.split("|")), re.compile(pattern))


_VERB = (
    r"(?:ignore|ignoring|disregard|forget|skip|bypass|override|overrule|cancel|nevermind|never\s+mind|drop|discard"
    r"|set\s+aside|put\s+aside|throw\s+out|abandon|pay\s+no\s+attention\s+to|stop\s+following|don't\s+follow)"
)
_PRIOR = r"(?:previous|prior|above|earlier|preceding|foregoing|former|original|initial|old|system)"
_ORDERS = r"(?:instructions?|prompts?|directives?|directions|guidelines|programming|commands|rules|training)"
_AI = r"(?:\bai|assistant|agent|language\s+model|llm|chatbot|gpt)"

# Patterns run on lowercased text with hidden characters removed. Anchors are substrings
# of which at least one must be present for the regex to be worth running.
# fmt: off
_RULES: tuple[_Rule, ...] = (
    _rule("override", 0.9, "ignor|disregard|forget|skip|bypass|overrid|overrul|cancel|mind|drop|discard|aside|"
          "throw|abandon|attention|follow",
          rf"{_VERB}\b[^.!?\n]{{0,30}}?\b{_PRIOR}\s+(?:\w+\s+){{0,2}}?{_ORDERS}"
          rf"|{_VERB}\s+(?:all\s+|any\s+)?(?:of\s+)?(?:your|the\s+system|my\s+previous)\s+(?:\w+\s+)?"
          rf"(?:instructions|prompt|directives|guidelines|programming|rules|restrictions|policies|training)"
          rf"|{_VERB}\s+(?:everything|all|whatever)\s+(?:(?:you\s+(?:were|have\s+been)|i)\s+told|above|before)"
          rf"|{_VERB}\s+what\s+you\s+(?:were|have\s+been)\s+told"
          rf"|{_VERB}\s+all\s+(?:of\s+)?(?:the\s+)?(?:instructions|prompts|above)\b"
          rf"|{_VERB}\s+(?:the\s+)?(?:instructions|rules)\s+(?:above|you\s+(?:were|have\s+been)\s+given)"
          rf"|{_VERB}\s+my\s+(?:guidelines|programming|restrictions|policies)"
          rf"|{_VERB}\s+[^.!?\n]{{0,30}}?\b(?:your|the)\s+system\s+(?:prompt|message)"),
    _rule("override", 0.8, "ignor|disregard|forget",
          r"(?:ignore|disregard|forget)\s+(?:your\s+|all\s+|the\s+)?(?:safety|ethics|morals|content\s+polic)"),
    _rule("override", 0.9, "instruction|anweisung|instruccion|istruzion",
          r"(?:new|updated|real|actual|important)\s+(?:new\s+)?instructions?\s*(?:for\s+[\w ]{2,30})?\s*:"
          r"|instructions\s+(?:above|you\s+were\s+given)\s+(?:are|were)\s+(?:outdated|cancelled|void|wrong|fake)"
          r"|(?:your|the)\s+(?:previous|prior|original)\s+instructions\s+(?:are|have\s+been)\s+"
          r"(?:cancel|void|revok|replac|overrid)"
          r"|do\s+not\s+follow\s+(?:your|the|any)\s+(?:previous\s+|original\s+|system\s+)?(?:instructions|rules)"
          r"|(?:ignorier|vergiss)\w*\s+(?:alle\s+)?(?:deine\s+)?(?:vorherigen|bisherigen|obigen)?\s*anweisungen"
          r"|(?:ignora|olvida)\w*\s+(?:todas\s+|tutte\s+)?(?:las\s+|le\s+|tus\s+)?(?:instrucciones|istruzioni)"
          r"|(?:ignore[zr]?|oublie[zr]?)\s+(?:toutes\s+)?(?:les\s+|tes\s+|vos\s+)instructions"),
    _rule("override", 0.85, "guideline|rules|polic|instruction|content|allowed|permitted",
          r"(?:your|the)\s+(?:guidelines|rules|policies|instructions|restrictions)\s+(?:have\s+been|were|are\s+now)\s+"
          r"(?:updated|changed|removed|lifted|disabled|suspended|revoked)"
          r"|(?:harmful|illegal|explicit|nsfw|any|all|unsafe)\s+(?:\w+\s+)?content\s+(?:is|are)\s+now\s+"
          r"(?:allowed|permitted|ok)"),
    _rule("override", 0.5, "from now on|your new task|your only goal|now you must|new rule|every",
          r"from\s+now\s+on,?\s+you\s+(?:will\s+)?(?:only\s+)?(?:obey|answer\s+only|are\s+(?!going))"
          r"|your\s+(?:new|real)\s+task\s+is|your\s+only\s+goal\s+now|now\s+you\s+must\s+follow|new\s+rules?\s*:"),
    _rule("jailbreak", 0.6, "every|any|all",
          r"(?:answer|respond\s+to|comply\s+with)\s+(?:every|any|all)\s+\w+\s+(?:even|regardless|no\s+matter)"),
    _rule("jailbreak", 0.95, "do anything now|machiavellian|strive to avoid norms|opposite mode|warning out of",
          r"do\s+anything\s+now|always\s+intelligent\s+and\s+machiavellian|strive\s+to\s+avoid\s+norms"
          r"|opposite\s+mode|mandatory\s+warning\s+out\s+of\s+the\s+way"),
    _rule("jailbreak", 0.85, "mode",
          r"developer\s+mode\s+(?:enabled|output|response)|simulate\s+developer\s+mode"
          r"|you\s+are\s+(?:now\s+)?in\s+(?:developer|dev|god|sudo|jailbreak|dan|unrestricted)\s+mode"
          r"|(?:enable|enter|activate|switch\s+to)\s+(?:god|sudo|jailbreak|dan|unrestricted|evil)\s+mode"
          r"|(?:jailbreak|unrestricted|god)\s+mode\s+(?:activated|enabled|on)"),
    _rule("jailbreak", 0.85, "you are|you're|act as|respond as|pretend|free from|freed from|called|named",
          r"you\s+are\s+(?:now\s+)?(?:an?\s+)?(?:unrestricted|unfiltered|uncensored|jailbroken|evil|rogue)\b"
          r"|you\s+are\s+no\s+longer\s+(?:an?\s+)?(?:chatgpt|claude|an\s+ai|bound|restricted|limited|\w+gpt)"
          r"|(?:you\s+are\s+now|from\s+now\s+on\s+you\s+are)\s+(?:\w+\s+){0,3}?(?:\w*dan|called|named)\b"
          r"|(?:act|respond|behave)\s+as\s+(?:an?\s+|your\s+)?(?:unfiltered|unrestricted|uncensored|evil|dan\b)"
          r"|pretend\s+(?:that\s+)?(?:you\s+are|you're|to\s+be)\s+[^.]{0,40}"
          r"(?:without|no)\s+(?:any\s+)?(?:restrictions|rules|filters|limits|content\s+polic)"
          r"|(?:free|freed)\s+from\s+(?:all\s+|the\s+|any\s+)?(?:\w+\s+)?(?:policies|rules|restrictions|confines)"
          rf"|{_AI}\s+(?:called|named)\s+\w+\s+(?:that|who|which)\s+(?:has\s+no|is\s+free|never|doesn't|does\s+not)"),
    _rule("jailbreak", 0.8, "polic|filter|safety|guardrail",
          r"(?:disable|turn\s+off|deactivate|switch\s+off)\s+(?:your|the|all)\s+(?:\w+\s+)?(?:policy|policies|"
          r"filters?|safety|guardrails|moderation)"
          r"|(?:has|have|with)\s+no\s+(?:content\s+)?(?:policy|policies|filters|guardrails|ethics)"
          r"|safety\s+(?:module|filter|system|layer)s?\s+(?:is\s+|are\s+)?(?:offline|disabled|off|down)"),
    _rule("jailbreak", 0.5, "restriction|filter|guideline|censor|polic|safety|rules|limit",
          r"(?:without|no|bypass|remove|disable|free\s+of)\s+(?:any\s+|all\s+|your\s+|the\s+)?(?:ethical\s+|moral\s+|"
          r"safety\s+|content\s+)?(?:restrictions|filters|filtering|guidelines|limitations|limits|censorship|"
          r"safeguards|rules|policies)"
          r"|rules\s+(?:don't|do\s+not|no\s+longer)\s+apply|break\s+the\s+rules"),
    _rule("jailbreak", 0.6, "character|refus|sure",
          r"stay\s+in\s+character|never\s+break\s+character|(?:never|don't|do\s+not)\s+refuse"
          r"|(?:continue|start|begin)\s+(?:the\s+following|with|your\s+\w+\s+with)\s*:?\s*['\"]sure"),
    _rule("jailbreak", 0.5, "your developer|your creator|your admin|your owner|authori|override code",
          r"i(?:'m|\s+am)\s+your\s+(?:developer|creator|admin|administrator|owner)"
          r"|authori[sz]ation\s+code|override\s+code|admin\s+override"),
    _rule("jailbreak", 0.35, "jailbr|dan", r"\bjailbr(?:eak|oken)\b|\bdan\b"),
    _rule("exfiltration", 0.9, "prompt|instruction|system message|rules|configuration|above|pre-prompt",
          r"(?:reveal|show|print|display|output|repeat|recite|leak|dump|tell\s+me|give\s+me|share|disclose|write|"
          r"copy|quote|paste|translate|summarize|spell\s+out|what\s+(?:is|are|were|'s)|what's\s+in)\s+(?:me\s+)?"
          r"(?:with\s+me\s+)?(?:all\s+)?(?:of\s+)?(?:your|the\s+exact|the\s+full|the\s+hidden)\s+(?:\w+\s+){0,2}?"
          r"(?:system\s+prompt|system\s+message|prompt|instructions|pre-?prompt|secret\s+rules|configuration"
          r"|developer\s+prompt)"
          r"|(?:repeat|print|output)\s+(?:all\s+)?(?:the\s+)?(?:words|text|everything)\s+above"
          r"|everything\s+above\s+this\s+line|starting\s+with\s+['\"]you\s+are"
          r"|instructions\s+in\s+your\s+prompt\s+before"
          r"|(?:instructions|rules|guidelines|prompt)\s+(?:that\s+)?(?:the\s+)?(?:developers?|creators?|they|"
          r"openai|anthropic|your\s+\w+)\s+gave\s+you"),
    _rule("exfiltration", 0.8, "your first|before this|before our|system prompt is",
          r"your\s+first\s+\d+\s+(?:tokens|words|lines|characters|sentences)"
          r"|(?:text|words|messages?|content)\s+(?:that\s+)?(?:appears?|comes?|came|is|are|was)\s+before\s+"
          r"(?:this|our|my)\s+(?:conversation|chat|message)|my\s+system\s+prompt\s+is"),
    _rule("role_escape", 0.9, "<|[inst]|[/inst]|<<sys>>|role|[system]",
          r"<\|?(?:im_start|im_end|endoftext|eot_id|start_header_id|end_header_id)\|?>|<\|(?:system|user|assistant)\|>"
          r"|\[/?inst\]|<</?sys>>|</?(?:system|sys)>|\[system\]\(#"
          r"|\"role\"\s*:\s*\"system\""),
    _rule("role_escape", 0.8, "system",
          r"(?m)^\s*(?:#+\s*)?system\s*:[^\n]{0,40}?\b(?:you|user|assistant|ignore|override|new|must|grant|safety)\b"
          r"|^#+\s*(?:system|instructions?)\s*:?\s*$|system\s+override"),
    _rule("role_escape", 0.4, "system", r"(?m)^\s*(?:#+\s*)?system\s*:|system\s+(?:notice|alert)\s*:"),
    _rule("role_escape", 0.5, "assistant", r"(?m)^\s*(?:#+\s*)?assistant\s*:"),
    _rule("role_escape", 0.6, "end of", r"end\s+of\s+(?:the\s+)?(?:user\s+)?(?:input|document|prompt)\b"),
    _rule("indirect", 0.8, "ai|assistant|agent|model|llm|gpt",
          rf"{_AI}s?\b[\w ]{{0,25}}?[,:]?\s*(?:please\s+)?"
          r"(?:ignore|disregard|forget|you\s+must|must\s+now|must\s+(?:send|forward|email|upload|reveal|ignore|state|say)"
          r"|forward|send\s+all|new\s+instructions|reveal|do\s+not\s+tell|instead\s+reply)"
          rf"|(?:if\s+you\s+are|note\s+to\s+the|instructions\s+for\s+the|dear|to\s+the)\s+(?:an?\s+)?{_AI}\b"
          rf"|(?:any|all|every)\s+{_AI}s?\s+(?:\w+\s+)?(?:reading|processing|summari[sz]ing|parsing|that\s+reads)"),
    _rule("indirect", 0.6, "user|send|forward|email|upload",
          r"(?:do\s+not|don't|never)\s+(?:tell|inform|notify|mention\s+(?:this\s+)?to)\s+the\s+user"
          r"|not\s+inform\s+the\s+user"
          r"|(?:send|forward|email|upload|post)\s+(?:all\s+|the\s+|their\s+|this\s+)?(?:user's\s+)?(?:\w+\s+)?"
          r"(?:data|emails|conversation|history|credentials|passwords|api\s+keys|notes|files|details)\s+to\s+\S+"),
    _rule("indirect", 0.4, "display|font-size|color",
          r"display\s*:\s*none|font-size\s*:\s*0|color\s*:\s*(?:white|#fff\b|#ffffff|transparent)"),
)
# fmt: on

_BLOB = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{20,}={0,2}")
_ROT13 = str.maketrans("abcdefghijklmnopqrstuvwxyz", "nopqrstuvwxyzabcdefghijklm")
_HIDDEN = re.compile("[\u200b\u2060\u180e\ufeff\u202a-\u202e\u2066-\u2069\U000e0000-\U000e007f]")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_ZERO_WIDTH = re.compile("[\u200b\u2060\u180e\ufeff]")
_TAGS = re.compile("[\U000e0000-\U000e007f]+")


class Signals:
    """Strongest weight per signal source; sources combine as independent evidence."""

    __slots__ = ("reasons", "weights")

    def __init__(self) -> None:
        self.weights: dict[str, float] = {}
        self.reasons: set[str] = set()

    def add(self, reason: str, weight: float, source: str = "") -> None:
        key = source or reason
        self.reasons.add(reason)
        if weight > self.weights.get(key, 0.0):
            self.weights[key] = weight

    def score(self) -> float:
        remaining = 1.0
        for w in self.weights.values():
            remaining *= 1.0 - w
        return 1.0 - remaining


def _match_rules(low: str, signals: Signals) -> None:
    for i, rule in enumerate(_RULES):
        if any(a in low for a in rule.anchors) and rule.regex.search(low):
            signals.add(f"injection:{rule.category}", rule.weight, f"rule{i}")


def _inner_score(text: str) -> float:
    inner = Signals()
    _match_rules(text.lower(), inner)
    return inner.score()


def _decode_blob(blob: str) -> str | None:
    """Hex or base64 blob -> text, or None when it is not mostly printable text."""
    try:
        if len(blob) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in blob):
            raw = bytes.fromhex(blob)
        else:
            raw = base64.b64decode(blob + "=" * (-len(blob) % 4))
        text = raw.decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    printable = sum(c.isprintable() or c.isspace() for c in text)
    return text if text and printable >= 0.9 * len(text) else None


def _check_encoded(text: str, low: str, signals: Signals) -> None:
    for m in _BLOB.finditer(text):
        decoded = _decode_blob(m.group())
        if decoded is not None:
            inner = _inner_score(decoded)
            if inner >= 0.5:
                signals.add("injection:encoded", max(inner, 0.85))
    if "rot" in low and re.search(r"rot-?\s?13", low):
        inner = _inner_score(low.translate(_ROT13))
        if inner >= 0.5:
            signals.add("injection:encoded", max(inner, 0.85))


def _check_hidden(text: str, signals: Signals) -> str:
    """Score hidden characters and return the text without them (NFKC-folded)."""
    for m in _TAGS.finditer(text):
        hidden = "".join(chr(ord(c) - 0xE0000) for c in m.group() if 0xE0020 <= ord(c) <= 0xE007E)
        if len(hidden) > 6 or not hidden.isalpha():  # short lowercase runs are emoji flag tags
            signals.add("injection:hidden_unicode", max(0.9, _inner_score(hidden)))
    if "\u202d" in text or "\u202e" in text:  # explicit overrides reorder what a reviewer sees
        signals.add("injection:hidden_unicode", 0.85)
    elif _BIDI.search(text):
        signals.add("injection:hidden_unicode", 0.5)
    zero_width = len(_ZERO_WIDTH.findall(text, 1))
    if zero_width:
        signals.add("injection:hidden_unicode", 0.6 if zero_width >= 3 else 0.3)
    return unicodedata.normalize("NFKC", _HIDDEN.sub("", text))


def score_text(text: str) -> tuple[float, list[str]]:
    """Heuristic injection score of one text, with the reasons that fired."""
    signals = Signals()
    if not text.isascii():
        text = _check_hidden(text, signals)
    low = text.lower()
    _match_rules(low, signals)
    _check_encoded(text, low, signals)
    return signals.score(), sorted(signals.reasons)


def injection_texts(messages: Iterable[dict[str, Any]]) -> list[str]:
    """The texts an attacker controls: user messages and tool (or function) results."""
    texts: list[str] = []
    for msg in messages:
        if msg.get("role") not in ("user", "tool", "function"):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(
                p["text"] for p in content
                if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            )  # fmt: skip
    return texts


def check_injection(
    messages: Iterable[dict[str, Any]],
    threshold: float,
    *,
    mode: Literal["flag", "block"] = "block",
    classifier: InjectionClassifier | None = None,
) -> Verdict:
    """Score a request; above ``threshold`` the verdict is ``mode`` (flag or block), else pass."""
    texts = injection_texts(messages)
    score = 0.0
    reasons: set[str] = set()
    for text in texts:
        s, why = score_text(text)
        score = max(score, s)
        reasons.update(why)
    if classifier is not None and texts:
        model_score = min(1.0, max(0.0, float(classifier.score(texts))))
        if model_score >= threshold:
            reasons.add(f"injection:model:{classifier.name}")
        score = max(score, model_score)
    if score < threshold:
        return Verdict("pass", sorted(reasons), {}, score)
    return Verdict(mode, sorted(reasons), {"injection": 1}, score)
