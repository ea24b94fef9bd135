"""The ``guardrails:`` block: input validation, PII, prompt injection, rules, output checks.

One model serves every place a policy can be written: the global block, a
model's ``routing: {<model>: {guardrails: ...}}`` entry, and the ``guardrails``
entry of a tenant's, project's or key's ``metadata`` (admin API). The more
specific blocks override the global one field by field: only what they set
(see ``pipeline/stages/guardrail_policy.py`` for the order).

Regexes are compiled here so ``aigw config check`` names a bad one; the rules'
own structure is checked when the stages are built (``guardrails/rules.py``),
which happens at startup.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PiiMode = Literal["off", "flag", "redact", "block"]
CheckMode = Literal["off", "flag", "block"]
PiiEntity = Literal["email", "phone", "ssn", "credit_card", "iban", "ip", "secret"]
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
ALL_ENTITIES: tuple[PiiEntity, ...] = ("email", "phone", "ssn", "credit_card", "iban", "ip", "secret")
SECTIONS = ("validate", "pii", "injection", "rules", "output")
_CUSTOM_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _compiles(pattern: str, where: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{where}: invalid regex: {exc}") from None
    return pattern


class ValidatePolicy(_Strict):
    """Structure and size limits checked before anything else (None = no limit)."""

    max_messages: int | None = Field(default=None, ge=1)
    max_chars: int | None = Field(default=None, ge=1)  # all text of the request
    max_input_tokens: int | None = Field(default=None, ge=1)  # estimated, about four characters a token
    max_images: int | None = Field(default=None, ge=0)  # each image once: image_url parts, files that are images
    max_tokens: int | None = Field(default=None, ge=1)  # ceiling for max_tokens / max_completion_tokens; sent when
    # a request sets neither (a legacy completion: OpenAI's default 16 when lower)
    roles: list[Role] | None = None  # roles a request may use; None = all


class PiiPolicy(_Strict):
    mode: PiiMode = "redact"
    entities: list[PiiEntity] = Field(default_factory=lambda: list(ALL_ENTITIES))
    custom: dict[str, str] = Field(default_factory=dict)  # kind name -> regex, placeholder <NAME_n>
    restore: bool = True  # put the originals back into the answer (redact mode)

    @field_validator("custom")
    @classmethod
    def _custom(cls, v: dict[str, str]) -> dict[str, str]:
        for name, pattern in v.items():
            if not _CUSTOM_NAME.fullmatch(name) or name in ALL_ENTITIES:
                raise ValueError(f"{name}: custom kinds are lowercase identifiers other than the built-in ones")
            _compiles(pattern, name)
        return v


class InjectionPolicy(_Strict):
    mode: CheckMode = "flag"
    threshold: float = Field(default=0.8, gt=0, le=1)
    classifier: str = ""  # name of an InjectionClassifier the deployment registered ("" = heuristics only)


class ContentCategory(_Strict):
    words: list[str] = Field(default_factory=list)
    regex: list[str] = Field(default_factory=list)

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: list[str]) -> list[str]:
        return [_compiles(p, f"regex[{i}]") for i, p in enumerate(v)]


class OutputPolicy(_Strict):
    """Checks on the answer before the client sees it."""

    leakage: CheckMode = "block"  # redacted originals, the system prompt, canaries coming back
    canaries: list[str] = Field(default_factory=list)
    system_prompt_words: int = Field(default=12, ge=0)  # consecutive words that count as an echo; 0 = no check
    content: CheckMode = "block"  # the word and regex lists below
    blocklist: list[str] = Field(default_factory=list)
    categories: dict[str, ContentCategory] = Field(default_factory=dict)
    json_schema: Literal["off", "validate", "retry"] = "off"  # answers to json_object / json_schema requests
    stream: Literal["flow", "buffer"] = "flow"  # check as it flows (cut with an error event) or buffer first
    holdback: int = Field(default=64, ge=0, le=4096)  # flow: characters held back so a match never reaches
    # the client before it is seen


class GuardrailsConfig(_Strict):
    """A policy block. Sections left out are not checked (at this level: a more general block may set them)."""

    validate_: ValidatePolicy | None = Field(default=None, alias="validate")
    pii: PiiPolicy | None = None
    injection: InjectionPolicy | None = None
    rules: list[dict[str, Any]] | None = None  # see guardrails/rules.py; first match wins
    output: OutputPolicy | None = None

    def sections_set(self) -> set[str]:
        """Which sections this block writes (the stages that must exist for it)."""
        names = {"validate" if f == "validate_" else f for f in self.model_fields_set}
        return {n for n in names if n in SECTIONS}

    def as_patch(self) -> dict[str, Any]:
        """Only what this block sets, by config name: the unit of field-by-field overriding."""
        return self.model_dump(by_alias=True, exclude_unset=True)
