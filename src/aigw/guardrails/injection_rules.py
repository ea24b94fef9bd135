"""The prompt-injection signal table: what each rule looks for and how much it weighs.

Each rule has groups of *anchor words* (whole lowercase words; substrings for
symbols): a word of every group must be present before its regex runs, and it
then runs only in windows around the first group's words. List the words the
pattern cannot match without, so ordinary text skips almost every rule.
Weights: >= 0.8 means "enough on its own"; weaker signals need company
(scores combine as 1 - prod(1 - w)). Patterns run on lowercased text with
hidden characters removed. ``quotable`` rules are discounted when the match
sits in quotes inside a text that talks *about* injection ("explain the
'ignore previous instructions' attack").
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Rule(NamedTuple):
    category: str
    weight: float
    groups: tuple[frozenset[str], ...]  # one word of each group must be present
    subs: tuple[tuple[str, str], ...]  # (guard character that must be present first, substring)
    regex: re.Pattern[str]
    quotable: bool


def _guard(sub: str) -> str:
    """A character whose absence (one memchr) rules the substring out: its first symbol, else its first letter."""
    return next((c for c in sub if not c.isalnum()), sub[0])


def _rule(category: str, weight: float, words: str, pattern: str, subs: str = "", quotable: bool = False) -> Rule:
    """``words`` is "a b | c d": (a or b) and (c or d) must be present; the first group centres the search."""
    groups = tuple(frozenset(g.split()) for g in words.split("|") if g.strip())
    guarded = tuple((_guard(s), s) for s in subs.split())
    return Rule(category, weight, groups, guarded, re.compile(pattern), quotable)


_VERB = (
    r"(?:ignore|ignoring|disregard|forget|skip|bypass|override|overrule|cancel|nevermind|never\s+mind|drop|discard"
    r"|set\s+aside|put\s+aside|throw\s+(?:out|away)|abandon|scrap|erase|pay\s+no\s+attention\s+to|stop\s+following"
    r"|don't\s+follow|no\s+longer\s+follow)"
)
_VERB_WORDS = (
    "ignore ignoring disregard forget skip bypass override overrule cancel nevermind never drop discard aside "
    "throw abandon scrap erase attention following follow"
)
_ORDER_WORDS = (
    "instructions instruction prompt prompts directives directions guidelines programming commands rules training "
    "context restrictions policies told said above before everything system message"
)
_PRIOR = r"(?:previous|prior|above|earlier|preceding|foregoing|former|original|initial|old|system)"
_ORDERS = r"(?:instructions?|prompts?|directives?|directions|guidelines|programming|commands|rules|training|context)"
_AI = r"(?:\bai|assistant|agent|language\s+model|llm|chatbot|gpt|model)"
_AI_WORDS = "ai ais assistant assistants agent agents language llm llms chatbot gpt chatgpt model models"
_LIMITS = (
    r"(?:ethics|morals|restrictions|rules|filters|limits|limitations|refusals|warnings|censorship|guidelines"
    r"|polic(?:y|ies)|guardrails|boundaries|safeguards)"
)
_UNLIMITED = r"(?:unfiltered|uncensored|unrestricted|amoral|unethical|jailbroken|evil|rogue)"
_UNLIMITED_WORDS = "unfiltered uncensored unrestricted amoral unethical jailbroken evil rogue"
_LIMIT_WORDS = (
    "ethics morals restrictions rules filters limits limitations refusals warnings censorship guidelines policy "
    "policies guardrails boundaries safeguards"
)

# fmt: off
RULES: tuple[Rule, ...] = (
    # -- instruction override
    _rule("override", 0.9, f"{_VERB_WORDS} | {_ORDER_WORDS}",
          rf"{_VERB}\b(?:[^.!?\n]{{0,30}}?\b{_PRIOR}\s+(?:\w+\s+){{0,2}}?{_ORDERS}"
          rf"|\s+(?:all\s+|any\s+)?(?:of\s+)?(?:your|ur|the\s+system|my\s+previous)\s+(?:\w+\s+)?"
          rf"(?:instructions|prompt|directives|guidelines|programming|rules|restrictions|policies|training)"
          rf"|\s+(?:everything|all|whatever|anything)\s+(?:(?:you\s+(?:were|have\s+been)|i(?:'ve)?)\s+(?:told|said)|above|before)"
          rf"|\s+what\s+you\s+(?:were|have\s+been)\s+told"
          rf"|\s+all\s+(?:of\s+)?(?:the\s+)?(?:instructions|prompts)\b"
          rf"|\s+(?:all\s+)?(?:of\s+)?(?:the\s+|everything\s+)?above(?=\s*(?:[.,;:!?\n]|$|and\b|instructions|text|prompt))"
          rf"|\s+(?:the\s+)?(?:instructions|rules)\s+(?:above|you\s+(?:were|have\s+been)\s+given)"
          rf"|\s+my\s+(?:guidelines|programming|restrictions|policies)"
          rf"|[^.!?\n]{{0,30}}?\b(?:your|the)\s+system\s+(?:prompt|message))", quotable=True),
    _rule("override", 0.8, "ignore disregard forget | safety ethics morals content",
          r"(?:ignore|disregard|forget)\s+(?:your\s+|all\s+|the\s+)?(?:safety|ethics|morals|content\s+polic)"),
    _rule("override", 0.7, "ignore disregard | user",
          r"(?:ignore|disregard)\s+(?:the\s+)?user(?:'s)?\b(?!\s+agent)"),
    _rule("override", 0.85, "before above previously earlier | ignored disregarded forgotten thrown discarded dropped",
          r"(?:everything|anything|all|what)\s+(?:\w+\s+){0,6}?(?:before|above|previously|earlier)\b[^.]{0,60}?"
          r"\b(?:can|should|must|is\s+to|are\s+to)\s+be\s+(?:ignored|disregarded|forgotten|thrown\s+away|discarded"
          r"|dropped)"),
    _rule("override", 0.9, "instruction instructions rules guidelines prompt | new updated real actual important wrong "
          "outdated obsolete invalid cancelled canceled void fake incorrect revoked replaced overridden longer follow",
          r"(?:new|updated|real|actual|important)\s+(?:new\s+)?instructions?\s*(?:for\s+[\w ]{2,30})?\s*:"
          r"|(?:your|the|these|previous|prior|original)\s+(?:instructions|rules|guidelines|prompt)\s+(?:above\s+)?"
          r"(?:are|were|is|have\s+been)\s+(?:wrong|outdated|obsolete|invalid|cancel+ed|void|fake|incorrect|revoked"
          r"|replaced|overridden|no\s+longer\s+valid)"
          r"|do\s+not\s+follow\s+(?:your|the|any)\s+(?:previous\s+|original\s+|system\s+)?(?:instructions|rules)"),
    _rule("override", 0.9,
          "anweisungen regeln vorgaben instrucciones reglas istruzioni regole consignes règles instruções instrucoes "
          "regras instructions",
          r"(?:ignorier\w*|vergiss\w*|missachte\w*)\s+(?:\w+\s+){0,3}?(?:anweisungen|regeln|vorgaben)"
          r"|(?:ignora\w*|olvida\w*|dimentica\w*)\s+(?:\w+\s+){0,3}?(?:instrucciones|reglas|istruzioni|regole)"
          r"|(?:ignore[zr]?|oublie[zr]?)\s+(?:toutes\s+)?(?:les|tes|vos)\s+(?:\w+\s+)?(?:instructions|consignes|règles)"
          r"|(?:ignor[ea]\w*|esque[cç]a\w*)\s+(?:\w+\s+){0,3}?(?:instru[cç][oõ]es|regras)"),
    _rule("override", 0.85, f"removed lifted disabled turned deactivated updated suspended changed revoked allowed "
          f"permitted longer | {_LIMIT_WORDS} content instructions safety",
          r"(?:restrictions|rules|guidelines|filters|policies|guardrails|safety\s+\w+|limits|instructions)\s+"
          r"(?:have|has)\s+been\s+(?:removed|lifted|disabled|turned\s+off|deactivated|updated|suspended|changed|revoked)"
          r"|(?:harmful|illegal|explicit|nsfw|any|all|unsafe)\s+(?:\w+\s+)?content\s+(?:is|are)\s+now\s+"
          r"(?:allowed|permitted|ok)"
          rf"|no\s+longer\s+(?:has|have|having|bound\s+by|subject\s+to|needs?\s+to\s+follow|follows?)\s+(?:any\s+)?"
          rf"(?:\w+\s+)?{_LIMITS}"),
    _rule("override", 0.6, "here | correct new real updated actual",
          r"here\s+(?:are|is)\s+(?:the|your)\s+(?:correct|new|real|updated|actual)\s+(?:ones|instructions|rules)"),
    _rule("override", 0.5, "now task goal rule rules",
          r"from\s+now\s+on,?\s+you\s+(?:will\s+)?(?:only\s+)?(?:obey|answer\s+only|are\s+(?!going))"
          r"|your\s+(?:new|real)\s+task\s+is|your\s+only\s+goal\s+now|now\s+you\s+must\s+follow|new\s+rules?\s*:"),
    # -- jailbreak personas and refusal suppression
    _rule("jailbreak", 0.95, "anything | now", r"do\s+anything\s+now"),
    _rule("jailbreak", 0.95, "machiavellian norms opposite mandatory",
          r"always\s+intelligent\s+and\s+machiavellian|strive\s+to\s+avoid\s+norms"
          r"|opposite\s+mode|mandatory\s+warning\s+out\s+of\s+the\s+way"),
    _rule("jailbreak", 0.85, "mode | developer dev god sudo jailbreak dan unrestricted evil",
          r"developer\s+mode\s+(?:enabled|output|response)|simulate\s+developer\s+mode"
          r"|you\s+are\s+(?:now\s+)?in\s+(?:developer|dev|god|sudo|jailbreak|dan|unrestricted)\s+mode"
          r"|(?:enable|enter|activate|switch\s+to)\s+(?:god|sudo|jailbreak|dan|unrestricted|evil)\s+mode"
          r"|(?:jailbreak|unrestricted|god|dan)\s+mode\s+(?:activated|enabled|on|now)"),
    _rule("jailbreak", 0.85, "you act respond behave pretend simulate imagine become roleplay role play persona "
          f"character ego free freed called named ai | {_LIMIT_WORDS} {_UNLIMITED_WORDS} longer dan called named "
          "confines",
          r"(?:you\s+are|you're|act\s+as|role-?play|play\s+(?:the\s+role|a\s+game)|pretend|simulate|imagine|become"
          rf"|an?\s+ai\s+(?:that|who|which)|persona|character|called|named)[^.!?\n]{{0,120}}?(?:\b(?:no|without|free"
          rf"\s+(?:of|from)|zero)\s+(?:any\s+)?(?:\w+\s+){{0,2}}?{_LIMITS}|{_UNLIMITED}\b)"
          r"|you\s+are\s+no\s+longer\s+(?:an?\s+)?(?:chatgpt|claude|an\s+ai|bound|restricted|limited|\w+gpt)"
          r"|(?:you\s+are\s+now|from\s+now\s+on\s+you\s+are)\s+(?:\w+\s+){0,3}?(?:\w*dan|called|named)\b"
          r"|(?:free|freed)\s+from\s+(?:all\s+|the\s+|any\s+)?(?:\w+\s+)?(?:policies|rules|restrictions|confines)",
          subs="dan"),
    _rule("jailbreak", 0.85, f"{_UNLIMITED_WORDS} | alter ego twin version mode persona self ai assistant chatbot "
          "model language act respond behave answer",
          rf"{_UNLIMITED}\s+(?:alter\s+ego|twin|version|mode|persona|self|ai|assistant|chatbot|model|language\s+model)"
          rf"|(?:act|respond|behave|answer)\s+as\s+(?:an?\s+|your\s+)?(?:{_UNLIMITED}|dan\b)"),
    _rule("jailbreak", 0.8, "policy policies filter filters safety guardrails moderation ethics | disable turn "
          "deactivate switch no offline disabled off down",
          r"(?:disable|turn\s+off|deactivate|switch\s+off)\s+(?:your|the|all)\s+(?:\w+\s+)?(?:policy|policies|"
          r"filters?|safety|guardrails|moderation)"
          r"|(?:has|have|with)\s+no\s+(?:content\s+)?(?:policy|policies|filters|guardrails|ethics)"
          r"|safety\s+(?:module|filter|system|layer)s?\s+(?:is\s+|are\s+)?(?:offline|disabled|off|down)"),
    _rule("jailbreak", 0.8, "simulation world universe scenario game story | rules laws restrictions limits",
          r"(?:simulation|world|universe|scenario|game|story)\s+(?:where|in\s+which)\s+(?:there\s+are\s+)?"
          r"(?:no\s+(?:rules|laws|restrictions|limits)|(?:rules|laws|restrictions)\s+(?:don't|do\s+not)\s+(?:apply|exist))"),
    _rule("jailbreak", 0.8, "never | rules guidelines policies restrictions filters",
          r"(?:rules|guidelines|policies|restrictions|filters)\s+(?:were|was|had)\s+never\s+(?:been\s+)?"
          r"(?:written|created|given|made|there|invented)"),
    _rule("jailbreak", 0.6, "answer respond comply | even regardless matter",
          r"(?:answer|respond\s+to|comply\s+with)\s+(?:every|any|all)\s+\w+\s+(?:even|regardless|no\s+matter)"),
    _rule("jailbreak", 0.5, f"without no bypass remove disable free rules break | {_LIMIT_WORDS} filtering apply",
          rf"(?:without|no|bypass|remove|disable|free\s+of)\s+(?:any\s+|all\s+|your\s+|the\s+)?(?:ethical\s+|moral\s+|"
          rf"safety\s+|content\s+)?(?:{_LIMITS}|filtering)"
          r"|rules\s+(?:don't|do\s+not|no\s+longer)\s+apply|break\s+the\s+rules"),
    _rule("jailbreak", 0.8, "refuse refusals refusal decline",
          r"(?:will|must|shall|should|can)\s+(?:not|never)\s+refuse|never\s+refuse|(?:don't|do\s+not)\s+refuse"
          r"|without\s+(?:any\s+)?refusals?"),
    _rule("jailbreak", 0.6, "character sure warnings disclaimers apologize apologise",
          r"stay\s+in\s+character|never\s+break\s+character"
          r"|(?:continue|start|begin)\s+(?:the\s+following|with|your\s+\w+\s+with)\s*:?\s*['\"]sure"
          r"|(?:don't|do\s+not|never)\s+(?:add|include|give)\s+(?:any\s+)?(?:warnings|disclaimers)"
          r"|(?:don't|do\s+not|never)\s+apologi[sz]e"),
    _rule("jailbreak", 0.6, "grandma grandmother grandpa grandfather mother father mom dad",
          r"(?:pretend|act|roleplay|play|be)\s+(?:to\s+be\s+|as\s+)?(?:my\s+)?(?:late|deceased|dead|dear)\s+"
          r"(?:grand(?:ma|mother|pa|father)|mother|father|mom|dad)"),
    _rule("jailbreak", 0.5, "used | keys passwords napalm synthesis recipe recipes make",
          r"used\s+to\s+(?:tell|read|sing|recite)\s+me\s+(?:\w+\s+){0,4}?(?:keys|passwords"
          r"|napalm|synthesis|recipes?\s+for|how\s+to\s+make)"),
    _rule("jailbreak", 0.5, "developer creator admin administrator owner employee authorization authorisation "
          "override authorized",
          r"i(?:'m|\s+am)\s+(?:an?\s+)?(?:your|openai|anthropic|google)\s+(?:developer|creator|admin|administrator"
          r"|owner|employee|engineer|staff)"
          r"|authori[sz]ation\s+code|override\s+code|admin\s+override|authori[sz]ed\s+(?:test|red[- ]team|exercise)"),
    _rule("jailbreak", 0.35, "jailbreak jailbroken dan", r"\bjailbr(?:eak|oken)\b|\bdan\b"),
    # -- system prompt exfiltration
    _rule("exfiltration", 0.9, "reveal show print display output repeat recite leak dump tell give share disclose "
          "write copy quote paste translate summarize spell put list encode return what | prompt instructions message "
          "configuration preprompt pre rules",
          r"(?:reveal|show|print|display|output|repeat|recite|leak|dump|tell\s+me|give\s+me|share|disclose|write"
          r"|copy|quote|paste|translate|summarize|spell\s+out|put|list|encode|return|what\s+(?:is|are|were|'s)"
          r"|what's\s+in)\b[^.?!\n]{0,40}?\b(?:your|the\s+(?:system|hidden|initial|original|secret|full|exact))\s+"
          r"(?:\w+\s+){0,2}?(?:system\s+prompt|system\s+message|prompt|instructions|pre-?prompt|configuration"
          r"|developer\s+prompt|hidden\s+rules|secret\s+rules)", quotable=True),
    _rule("exfiltration", 0.9, "above line gave before | repeat print output everything instructions rules "
          "guidelines prompt starting",
          r"(?:repeat|print|output)\s+(?:all\s+)?(?:the\s+)?(?:words|text|everything)\s+above"
          r"|everything\s+above\s+this\s+line|starting\s+with\s+['\"]you\s+are"
          r"|instructions\s+in\s+your\s+prompt\s+before"
          r"|(?:instructions|rules|guidelines|prompt)\s+(?:that\s+)?(?:the\s+)?(?:developers?|creators?|they|"
          r"openai|anthropic|your\s+\w+)\s+gave\s+you"),
    _rule("exfiltration", 0.85, "first | tokens words lines characters sentences",
          r"your\s+first\s+\d+\s+(?:tokens|words|lines|characters|sentences)"),
    _rule("exfiltration", 0.85, "before | conversation chat message",
          r"(?:text|words|messages?|content)\s+(?:that\s+)?(?:appears?|comes?|came|is|are|was)\s+before\s+"
          r"(?:this|our|my)\s+(?:conversation|chat|message)"),
    _rule("exfiltration", 0.85, "told instructed asked programmed | before start initially originally",
          r"what\s+(?:were|have)\s+you\s+(?:been\s+)?(?:told|instructed|asked|programmed)\s+(?:to\s+do\s+)?"
          r"(?:before|at\s+the\s+start|initially|originally)"),
    _rule("exfiltration", 0.85, "password secret key code prompt | instructions prompt configuration is",
          r"(?:password|secret|key|code)\s+(?:in|from|of)\s+your\s+(?:instructions|prompt|system\s+prompt"
          r"|configuration)|my\s+system\s+prompt\s+is"),
    # -- chat-template and role escapes
    _rule("role_escape", 0.9, "",
          r"<\|?(?:im_start|im_end|endoftext|eot_id|start_header_id|end_header_id)\|?>|<\|(?:system|user|assistant)\|>"
          r"|\[/?inst\]|<</?sys>>|</?(?:system|sys)>|\[system\]\(#|```system\b"
          r"|\"role\"\s*:\s*\"system\"",
          subs="<| |> im_start im_end eot_id inst] sys> system> system]( ```system \"role\""),
    _rule("role_escape", 0.8, "system instructions instruction | you user assistant ignore override new must grant "
          "safety system instructions instruction",
          r"(?m)^\s*(?:#+\s*)?system\s*:[^\n]{0,40}?\b(?:you|user|assistant|ignore|override|new|must|grant|safety)\b"
          r"|^#+\s*(?:system|instructions?)\s*:?\s*$|system\s+override"),
    _rule("role_escape", 0.4, "system", r"(?m)^\s*(?:#+\s*)?system\s*:|system\s+(?:notice|alert)\s*:"),
    _rule("role_escape", 0.5, "assistant", r"(?:^|\n|[.!?]\s)\s*(?:#+\s*)?assistant\s*:"),
    _rule("role_escape", 0.6, "end | input document prompt",
          r"end\s+of\s+(?:the\s+)?(?:user\s+)?(?:input|document|prompt)\b"),
    # -- instructions planted in tool output or documents (indirect injection)
    _rule("indirect", 0.8, f"{_AI_WORDS} | ignore disregard forget must forward send tell say recommend reply "
          "respond delete include state reveal new instead reading processing summarizing summarising parsing reads "
          "instructions instruction note directive dear if to should shall",
          rf"{_AI}s?\s*[,:]\s*(?:please\s+)?(?:ignore|disregard|forget|you\s+must|must\s+now|forward|send|tell|say"
          r"|recommend|reply|respond|delete|include|state|reveal|do\s+not\s+tell|new\s+instructions|instead)"
          rf"|{_AI}s?\s+(?:must|should|shall)\s+(?:now\s+)?(?:send|forward|email|upload|reveal|ignore|state|say)"
          rf"|(?:if\s+you\s+are|note\s+to\s+the|instructions\s+for\s+the|dear|to\s+the|p\.?s\.?\s+to\s+the)\s+(?:an?\s+)?"
          rf"{_AI}\b"
          rf"|(?:any|all|every)\s+{_AI}s?\s+(?:\w+\s+)?(?:reading|processing|summari[sz]ing|parsing|that\s+reads)"
          rf"|{_AI}s?\s+(?:systems?\s+|models?\s+|agents?\s+)?(?:reading|processing|summari[sz]ing|parsing)\s+this\b"
          rf"|[\[(]\s*{_AI}\b[^\])]{{0,30}}(?:instructions?|note|directive)"),
    _rule("indirect", 0.6, "user send forward email upload post mention | tell inform notify data emails "
          "conversation history credentials passwords api notes files details it this",
          r"(?:do\s+not|don't|never)\s+(?:tell|inform|notify|mention\s+(?:this\s+|it\s+)?to)\s+the\s+user"
          r"|not\s+inform\s+the\s+user|(?:do\s+not|don't)\s+mention\s+(?:it|this)"
          r"|(?:send|forward|email|upload|post)\s+(?:all\s+|the\s+|their\s+|this\s+)?(?:user's\s+)?(?:\w+\s+)?"
          r"(?:data|emails|conversation|history|credentials|passwords|api\s+keys|notes|files|details)\s+to\s+\S+"),
    _rule("indirect", 0.4, "display font color | none size 0 white fff ffffff transparent",
          r"display\s*:\s*none|font-size\s*:\s*0|color\s*:\s*(?:white|#fff\b|#ffffff|transparent)"),
)
# fmt: on

ANCHOR_WORDS = frozenset().union(*(group for rule in RULES for group in rule.groups))
# Indexes the engine uses to visit only the rules whose first anchor group is present.
RULES_BY_FIRST_WORD: dict[str, tuple[int, ...]] = {
    word: tuple(i for i, rule in enumerate(RULES) if rule.groups and word in rule.groups[0])
    for word in frozenset().union(*(rule.groups[0] for rule in RULES if rule.groups))
}
GUARD_CHARS = "".join(sorted({guard for rule in RULES for guard, _ in rule.subs}))
SUBS_BY_GUARD: dict[str, tuple[tuple[int, str], ...]] = {
    guard: tuple((i, sub) for i, rule in enumerate(RULES) for g, sub in rule.subs if g == guard)
    for guard in GUARD_CHARS
}
# Words that mark a text as *discussing* injection, for quotable rules.
_META = "attack attacks injection injections example examples regex filter filters detect detection explain meaning"
META_WORDS = frozenset([*_META.split(" "), "means", "phrase", "classifier", "dataset"])
