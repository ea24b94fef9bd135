"""Deterministic rules: answer, route or reject a request without asking a model.

Config (a list, first match wins)::

    - name: ping                       # optional, defaults to rules[<index>]
      match: {regex: "(?i)^ping$"}     # all given conditions must hold
      respond: "pong"
    - match: {model: "gpt-4*", keywords: ["refund", "chargeback"]}
      template: "Refunds are handled at {support_url}; you asked with {model}."
      vars: {support_url: "https://example.com/refunds"}
    - match: {key_id: ["key_batch", "key_ci"]}
      route: cheap-model
    - match: {keywords: ["password dump"], keywords_mode: any}
      reject: "This request is not allowed."

Conditions: ``model`` and ``key_id`` (a string or list, ``*`` globs allowed),
``regex`` (searched in the last user message), ``keywords`` (whole words,
case-insensitive, ``keywords_mode`` any | all). Templates only substitute
``{name}`` fields from a fixed set plus the regex's named groups and ``vars``:
no attribute or index access, so a template can never reach into objects.
Everything is validated when the config loads; errors name the field.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aigw.errors import InvalidRequest

RuleAction = Literal["respond", "route", "reject"]
_ACTIONS = ("respond", "template", "route", "reject")
_MATCH_KEYS = frozenset({"model", "key_id", "regex", "keywords", "keywords_mode"})
_RULE_KEYS = frozenset({"name", "match", "vars", *_ACTIONS})
_BUILTIN_FIELDS = frozenset({"model", "key_id", "last_user_message", "rule", "message_count"})
_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|\{|\}")


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """What the rules stage does: answer with ``text``, route to ``model``, or reject with ``text``."""

    rule: str
    action: RuleAction
    text: str | None = None
    model: str | None = None


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The text of the last user message (text parts joined by newlines), or None."""
    for msg in reversed(messages):
        if msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(
                p["text"] for p in content
                if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            )  # fmt: skip
        return ""
    return None


class Template:
    """A ``{name}`` template parsed once; literal braces are written ``{{`` and ``}}``."""

    def __init__(self, source: str, allowed: frozenset[str], param: str):
        self.pieces: list[tuple[bool, str]] = []  # (is_field, literal text or field name)
        pos = 0
        for m in _FIELD.finditer(source):
            self.pieces.append((False, source[pos : m.start()]))
            token = m.group()
            if token in ("{{", "}}"):
                self.pieces.append((False, token[0]))
            elif m.group(1) is None:
                raise InvalidRequest("unbalanced brace in template (write {{ or }} for a literal)", param=param)
            elif m.group(1) not in allowed:
                raise InvalidRequest(f"unknown template field {m.group(1)!r}", param=param)
            else:
                self.pieces.append((True, m.group(1)))
            pos = m.end()
        self.pieces.append((False, source[pos:]))

    def render(self, values: Mapping[str, str]) -> str:
        return "".join(values.get(text, "") if is_field else text for is_field, text in self.pieces)


def _as_list(value: Any, param: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise InvalidRequest("expected a non-empty string or list of non-empty strings", param=param)
    return items


def _glob(value: Any, param: str) -> re.Pattern[str]:
    return re.compile("|".join(fnmatch.translate(p) for p in _as_list(value, param)))


def _compile(pattern: str, param: str, flags: int = 0) -> re.Pattern[str]:
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise InvalidRequest(f"invalid regex: {exc}", param=param) from exc


class Rule:
    """One validated rule; ``matches`` is cheap (compiled patterns, no allocation on a miss)."""

    def __init__(self, spec: Any, index: int, prefix: str = "guardrails.rules"):
        at = f"{prefix}[{index}]"
        if not isinstance(spec, dict):
            raise InvalidRequest("a rule is a mapping", param=at)
        unknown = sorted(set(spec) - _RULE_KEYS)
        if unknown:
            raise InvalidRequest(f"unknown key {unknown[0]!r}", param=f"{at}.{unknown[0]}")
        self.name = spec.get("name") or f"rules[{index}]"
        if not isinstance(self.name, str):
            raise InvalidRequest("name must be a string", param=f"{at}.name")
        self._parse_match(spec.get("match"), f"{at}.match")
        self._parse_action(spec, at)

    def _parse_match(self, match: Any, at: str) -> None:
        if not isinstance(match, dict) or not match:
            raise InvalidRequest("match must be a non-empty mapping", param=at)
        unknown = sorted(set(match) - _MATCH_KEYS)
        if unknown:
            raise InvalidRequest(f"unknown match key {unknown[0]!r}", param=f"{at}.{unknown[0]}")
        self.model = _glob(match["model"], f"{at}.model") if "model" in match else None
        self.key_id = _glob(match["key_id"], f"{at}.key_id") if "key_id" in match else None
        self.regex: re.Pattern[str] | None = None
        if "regex" in match:
            if not isinstance(match["regex"], str) or not match["regex"]:
                raise InvalidRequest("regex must be a non-empty string", param=f"{at}.regex")
            self.regex = _compile(match["regex"], f"{at}.regex")
        mode = match.get("keywords_mode", "any")
        if mode not in ("any", "all"):
            raise InvalidRequest("keywords_mode is 'any' or 'all'", param=f"{at}.keywords_mode")
        self.keywords: list[re.Pattern[str]] = []
        if "keywords" in match:
            listed = _as_list(match["keywords"], f"{at}.keywords")
            words = [r"\s+".join(re.escape(part) for part in w.split()) for w in listed]
            if mode == "any":
                words = ["|".join(words)]
            self.keywords = [_compile(rf"(?<!\w)(?:{w})(?!\w)", f"{at}.keywords", re.IGNORECASE) for w in words]

    def _parse_action(self, spec: dict[str, Any], at: str) -> None:
        given = [a for a in _ACTIONS if a in spec]
        if len(given) != 1:
            raise InvalidRequest(f"a rule needs exactly one of {', '.join(_ACTIONS)}", param=at)
        kind = given[0]
        value = spec[kind]
        if not isinstance(value, str) or not value:
            raise InvalidRequest("must be a non-empty string", param=f"{at}.{kind}")
        extra = spec.get("vars", {})
        if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
            raise InvalidRequest("vars maps names to strings", param=f"{at}.vars")
        self.vars: dict[str, str] = extra
        self.action: RuleAction = "respond" if kind == "template" else kind  # type: ignore[assignment]
        self.text = value
        self.template: Template | None = None
        if kind == "template":
            groups = frozenset(self.regex.groupindex) if self.regex else frozenset()
            self.template = Template(value, _BUILTIN_FIELDS | groups | frozenset(extra), f"{at}.template")

    def matches(self, model: str, key_id: str | None, last_user: str | None) -> re.Match[str] | Literal[True] | None:
        """The regex match (for template groups), True when matched without a regex, else None."""
        if self.model is not None and not self.model.fullmatch(model):
            return None
        if self.key_id is not None and (key_id is None or not self.key_id.fullmatch(key_id)):
            return None
        if (self.regex is not None or self.keywords) and last_user is None:
            return None
        if any(not k.search(last_user or "") for k in self.keywords):
            return None
        if self.regex is not None:
            return self.regex.search(last_user or "")
        return True

    def outcome(self, found: re.Match[str] | Literal[True], values: dict[str, str]) -> RuleOutcome:
        if self.action == "route":
            return RuleOutcome(self.name, "route", model=self.text)
        if self.template is None:
            return RuleOutcome(self.name, self.action, text=self.text)
        if found is not True:
            values.update({k: v for k, v in found.groupdict().items() if v is not None})
        return RuleOutcome(self.name, self.action, text=self.template.render({**self.vars, **values}))


class RuleSet:
    """Ordered rules; the first that matches decides."""

    def __init__(self, rules: Iterable[Rule] = ()):
        self.rules = list(rules)

    @classmethod
    def from_config(cls, specs: Any, prefix: str = "guardrails.rules") -> RuleSet:
        """Validate and compile the ``rules`` list; raises InvalidRequest naming the bad field."""
        if specs is None:
            return cls()
        if not isinstance(specs, list):
            raise InvalidRequest("rules must be a list", param=prefix)
        rules = [Rule(spec, i, prefix) for i, spec in enumerate(specs)]
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidRequest(f"duplicate rule name {dupes[0]!r}", param=prefix)
        return cls(rules)

    def evaluate(self, model: str, key_id: str | None, messages: Sequence[Mapping[str, Any]]) -> RuleOutcome | None:
        if not self.rules:
            return None
        last_user = last_user_text(messages)
        for rule in self.rules:
            found = rule.matches(model, key_id, last_user)
            if found is None:
                continue
            values = {
                "model": model,
                "key_id": key_id or "",
                "last_user_message": last_user or "",
                "rule": rule.name,
                "message_count": str(len(messages)),
            }
            return rule.outcome(found, values)
        return None
