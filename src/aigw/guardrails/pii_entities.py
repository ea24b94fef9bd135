r"""What counts as each built-in PII entity: candidate regexes plus the checks that decide.

Each finder takes the text, its digit count (a shared, cheap pre-filter) and appends
``Match`` objects; ``FINDERS`` maps the config names to them. Precision comes from
validation after the regex (Luhn, mod 97, SSN ranges, phone digit counts and
groupings, ``ipaddress`` for IPv6), not from ever-longer regexes.

Speed: ``re`` skips ahead in C only when a pattern *starts* with a literal or a
character class, so every pattern here starts with one (``\d``, ``[A-Z]``, ``+``)
and puts its boundary check in a lookbehind *after* that first character
(``\d(?<![\w.]\d)`` is ``(?<![\w.])\d`` that the scanner can skip to).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import NamedTuple


class Match(NamedTuple):
    kind: str
    start: int
    end: int
    value: str


# Emails are found from their "@": the domain is matched forwards, the local part walked backwards.
_EMAIL_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24})(?![\w-])")
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_FILE_EXT_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "pdf", "tiff"})

_PHONE_INTL = re.compile(
    r"\+(?<![\w+\-./#@]\+)\d{1,15}(?:[ .\-]?\(\d{1,5}\))?(?:[ .\-]?\d{1,8})?(?:[ .\-]\d{1,8}){0,6}(?![\w]|[.\-/]\d)"
)
_PHONE_NATIONAL = re.compile(
    r"[(\d](?<![\w+\-./#@][(\d])(?:(?<=\()\d{2,5}\)[ .\-]?|(?<=\d)\d{0,4}[ .\-])"
    r"\d{2,8}(?:[ .\-]\d{2,8}){0,4}(?![\w]|[.\-/]\d)"
)
_DATE_PREFIX = re.compile(r"\d{1,2}[./-]\d{1,2}[./-](?:19|20)\d\d|(?:19|20)\d\d[./-]\d{1,2}[./-]\d{1,2}")
_NOT_PHONE_CONTEXT = re.compile(r"(?i)(?:#|isbn(?:-1[03])?|order|invoice|ticket|ref\.?|sku)[:\s#]*$")

_SSN = re.compile(r"\d(?<![\w\-.]\d)\d\d(?<!000)(?<!666)(?<!9\d\d)([- ])(?!00)\d\d\1(?!0000)\d{4}(?![\w]|[-.]\d)")
_SSN_KEYWORD = re.compile(r"(?i)\b(?:ssn|social security(?: number| no\.?)?)\W{0,5}((?!000|666|9)\d{9})\b")
_SSN_INVALID = frozenset({"078051120", "219099999", "457555462"})

_CARD = re.compile(r"\d(?<![\w\-.]\d)(?:[ \-]?\d){12,18}(?!\d)")
# Issuer prefixes of the card networks (Visa 4, Mastercard 5 and 22-27, Amex/Diners/JCB 3,
# Discover/UnionPay/Maestro 6 and 5): with Luhn this keeps most random digit runs out.
_CARD_IIN = re.compile(r"[3-6]|2[2-7]")

_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d\d(?: ?[A-Z0-9]){11,30}")
# ISO 13616 registry: country -> IBAN length.
_IBAN_REGISTRY = (
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DK18 DO28 EE20 "
    "EG29 ES24 FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 "
    "KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 MC27 MD24 ME22 MK19 MR27 MT31 MU30 NL18 NO15 PK24 PL28 "
    "PS29 PT25 QA29 RO24 RS22 SA24 SC31 SE24 SI19 SK24 SM27 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20"
)
_IBAN_LENGTHS = {entry[:2]: int(entry[2:]) for entry in _IBAN_REGISTRY.split(" ")}

_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w]|\.\d)")
_VERSION_CONTEXT = re.compile(r"(?i)(?:version|ver\.?|release|build)\s*$")
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6 = re.compile(r"[0-9A-Fa-f:](?<![\w:.][0-9A-Fa-f:])[0-9A-Fa-f:]{2,38}(?![\w:.])")

# One pattern per key format, each starting with its literal prefix (a fast C search). The lookbehind after
# the prefix rejects one inside a longer token at once: without it every "sk-" of a long run like
# "sk-sk-sk-...é" started a scan to the run's end, quadratic in the run (60 KB took 23 s).
_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_PEM_MIN_BODY = 16
_SECRETS = tuple(
    re.compile(p)
    for p in (
        r"sk-(?<![\w-]sk-)(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}(?![\w-])",
        r"sk_(?<![\w-]sk_)(?:live|test)_[A-Za-z0-9]{16,}(?![\w-])",
        r"rk_(?<![\w-]rk_)(?:live|test)_[A-Za-z0-9]{16,}(?![\w-])",
        r"A(?<![\w-]A)(?:KIA|SIA|GPA|IDA|ROA)[A-Z0-9]{16}(?![\w-])",
        r"gh(?<![\w-]gh)[pousr]_[A-Za-z0-9]{36,}(?![\w-])",
        r"github_pat_(?<![\w-]github_pat_)[A-Za-z0-9_]{40,}(?![\w-])",
        r"xox(?<![\w-]xox)[abposr]-[A-Za-z0-9\-]{10,}(?![\w-])",
        r"AIza(?<![\w-]AIza)[0-9A-Za-z_\-]{35}(?![\w-])",
        r"glpat-(?<![\w-]glpat-)[A-Za-z0-9_\-]{20,}(?![\w-])",
        r"eyJ(?<![\w-]eyJ)[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]*(?![\w-])",
    )
)
_ASSIGN_NAMES = (
    r"(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|client[_-]?secret|password|passwd|pwd)"
)
_ASSIGN_HINTS = ("key", "secret", "token", "pass", "pwd", "KEY", "SECRET", "TOKEN", "PASS", "PWD")
_ASSIGN_VALUE = r"[\"']?\s*(?:[:=]|=>)\s*[\"']?([A-Za-z0-9_\-+/=!@#%^&*~]{8,})"
# On lowercased ASCII text the names are plain literals the scanner can skip to.
_SECRET_ASSIGN_LOWER = re.compile(_ASSIGN_NAMES + _ASSIGN_VALUE)
_SECRET_ASSIGN_ANYCASE = re.compile(r"(?i)(?<![A-Za-z0-9])" + _ASSIGN_NAMES + _ASSIGN_VALUE)
_HAS_DIGIT = re.compile(r"\d")
_HAS_UPPER_AND_DIGIT = re.compile(r"(?=.*[A-Z])(?=.*\d)", re.S)
_HAS_ALPHA_AND_DIGIT = re.compile(r"(?=.*[A-Za-z])(?=.*\d)", re.S)

_NUMERIC_RUN = re.compile(r"[+(\d][\d ()./\-]*")
_DROP_DIGITS = str.maketrans("", "", "0123456789")
_RUN_CHARS = frozenset("0123456789 ()./-")
_SPARSE_DIGITS = 48  # up to this many digits, locate runs from the digits instead of scanning every character
_DROP_PHONE_SEPARATORS = str.maketrans("", "", " ()./-+")


class Span(NamedTuple):
    """A run of digits and separators: where the digit-based finders look."""

    start: int
    end: int  # just after the last digit
    digits: int
    separators: str  # the run without its digits: "() -" for "(212) 555-0147"


class TextScan:
    """One text plus what several finders need, computed once: its digit count and numeric runs.

    Digit-based finders (phone, SSN, card, IPv4, IBAN) search only inside the runs, so a
    2 KB text is scanned once for numbers instead of once per kind.
    """

    __slots__ = ("_covered", "_spans", "n_digits", "text")

    def __init__(self, text: str):
        self.text = text
        self.n_digits = len(text) - len(text.translate(_DROP_DIGITS))
        self._spans: list[Span] | None = None
        self._covered = 0

    @property
    def spans(self) -> list[Span]:
        if self._spans is None:
            if self.n_digits > _SPARSE_DIGITS:
                runs = _NUMERIC_RUN.finditer(self.text)
            else:
                runs = (m for m in map(self._run_at, self._digit_positions()) if m is not None)
            self._spans = []
            for m in runs:
                raw = m.group().rstrip(" ()./-")
                separators = raw.translate(_DROP_DIGITS)
                if len(separators) < len(raw):
                    self._spans.append(Span(m.start(), m.start() + len(raw), len(raw) - len(separators), separators))
        return self._spans

    def _digit_positions(self) -> list[int]:
        """Few digits: find them with str.find (memchr) instead of a regex walk over every character."""
        text, found = self.text, []
        for ch in "0123456789":
            i = text.find(ch)
            while i != -1:
                found.append(i)
                i = text.find(ch, i + 1)
        found.sort()
        return found

    def _run_at(self, pos: int) -> re.Match[str] | None:
        """The numeric run containing the digit at pos, unless an earlier digit's run already covered it."""
        if pos < self._covered:
            return None
        text, start = self.text, pos
        while start and text[start - 1] in _RUN_CHARS:
            start -= 1
        if start and text[start - 1] == "+":
            start -= 1
        while text[start] not in "+(0123456789":
            start += 1
        m = _NUMERIC_RUN.match(text, start)
        self._covered = m.end() if m else pos + 1
        return m

    def windows(self, min_digits: int, separators: str = "") -> list[tuple[int, int]]:
        """(start, endpos) of runs with enough digits and, if given, one of the separators (or a leading "+").

        endpos lets lookaheads see two characters past the run.
        """
        text, limit = self.text, len(self.text)
        return [
            (s.start, min(limit, s.end + 2))
            for s in self.spans
            if s.digits >= min_digits
            and (not separators or text[s.start] == "+" or any(c in s.separators for c in separators))
        ]


Finder = Callable[[TextScan, list[Match]], None]


def luhn_ok(digits: str) -> bool:
    """The payment-card check digit: catches every single-digit typo and most random strings."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """ISO 13616: the country's length and the mod-97 check."""
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def find_email(scan: TextScan, out: list[Match]) -> None:
    text = scan.text
    at = text.find("@")
    while at != -1:
        m = _EMAIL_DOMAIN.match(text, at + 1)
        if m and m.group(1).lower() not in _FILE_EXT_TLDS:
            start = at
            while start > 0 and at - start < 64 and text[start - 1] in _EMAIL_LOCAL:
                start -= 1
            while start < at and not text[start].isalnum():
                start += 1
            boundary = start == 0 or not (text[start - 1].isalnum() or text[start - 1] in "._%+-")
            if start < at and boundary:
                out.append(Match("email", start, m.end(), text[start : m.end()]))
        at = text.find("@", at + 1)


def _valid_phone(raw: str) -> bool:
    digits = raw.translate(_DROP_PHONE_SEPARATORS)
    n = len(digits)
    if raw[0] == "+":
        return 8 <= n <= 15
    if _DATE_PREFIX.match(raw):
        return False
    if digits.startswith("00"):
        return 11 <= n <= 17 and digits[2] != "0"
    if digits[0] == "0":
        return 10 <= n <= 12
    groups = [len(g) for g in re.findall(r"\d+", raw)]
    if n == 10 and groups == [3, 3, 4]:
        return digits[0] > "1" and digits[3] > "1"
    if n == 11 and groups == [1, 3, 3, 4] and digits[0] == "1":
        return digits[1] > "1" and digits[4] > "1"
    return False


def find_phone(scan: TextScan, out: list[Match]) -> None:
    text = scan.text
    if scan.n_digits < 8:
        return
    candidates: list[re.Match[str]] = []
    for start, end in scan.windows(8, " .-("):
        candidates.extend(_PHONE_NATIONAL.finditer(text, start, end))
        if text[start] == "+" and (m := _PHONE_INTL.match(text, start, end)):
            candidates.append(m)
    for m in candidates:
        raw = m.group()
        if _valid_phone(raw) and not _NOT_PHONE_CONTEXT.search(text, max(0, m.start() - 12), m.start()):
            out.append(Match("phone", m.start(), m.end(), raw))


def find_ssn(scan: TextScan, out: list[Match]) -> None:
    text = scan.text
    if scan.n_digits < 9:
        return
    for start, end in scan.windows(9, " -"):
        for m in _SSN.finditer(text, start, end):
            if m.group().replace(m.group(1), "") not in _SSN_INVALID:
                out.append(Match("ssn", m.start(), m.end(), m.group()))
    if "ssn" in text or "SSN" in text or "ocial" in text:
        for m in _SSN_KEYWORD.finditer(text):
            if m.group(1) not in _SSN_INVALID:
                out.append(Match("ssn", m.start(1), m.end(1), m.group(1)))


def _card_match(text: str, m: re.Match[str]) -> Match | None:
    """The longest Luhn-valid run of 13-19 digits from the candidate's start that ends a group."""
    positions = [i for i in range(m.start(), m.end()) if text[i].isdigit()]
    digits = "".join(text[i] for i in positions)
    if not _CARD_IIN.match(digits):
        return None
    for n in range(len(digits), 12, -1):
        end = positions[n - 1] + 1
        if (n == len(digits) or not text[end].isdigit()) and luhn_ok(digits[:n]):
            return Match("credit_card", m.start(), end, text[m.start() : end])
    return None


def find_card(scan: TextScan, out: list[Match]) -> None:
    if scan.n_digits < 13:
        return
    for start, end in scan.windows(13):
        for m in _CARD.finditer(scan.text, start, end):
            if found := _card_match(scan.text, m):
                out.append(found)


def find_iban(scan: TextScan, out: list[Match]) -> None:
    text = scan.text
    if scan.n_digits < 6:
        return
    for span in scan.spans:
        # An IBAN's numbers start with its two check digits, right after the country code.
        if span.start < 2 or text[span.start - 2 : span.start] not in _IBAN_LENGTHS:
            continue
        m = _IBAN.match(text, span.start - 2)
        if m is None:
            continue
        length = _IBAN_LENGTHS[m.group()[:2]]
        chars: list[str] = []
        end = m.start()
        for i in range(m.start(), m.end()):
            if text[i] != " ":
                chars.append(text[i])
                end = i + 1
                if len(chars) == length:
                    break
        if len(chars) == length and not text[end : end + 1].isalnum() and iban_ok("".join(chars)):
            out.append(Match("iban", m.start(), end, text[m.start() : end]))


def find_ip(scan: TextScan, out: list[Match]) -> None:
    text = scan.text
    candidates = [
        m
        for start, end in scan.windows(4)
        if text.count(".", start, end) >= 3
        for m in _IPV4.finditer(text, start, end)
    ]
    for m in candidates:
        parts = m.group().split(".")
        if not all(p == "0" or (p[0] != "0" and int(p) < 256) for p in parts) or m.group() == "0.0.0.0":
            continue
        if not _VERSION_CONTEXT.search(text, max(0, m.start() - 10), m.start()):
            out.append(Match("ip", m.start(), m.end(), m.group()))
    if ":" in text and _IPV6_HINT.search(text):
        for m in _IPV6.finditer(text):
            raw = m.group()
            if raw.count(":") < 2 or not _HAS_DIGIT.search(raw):  # "::" and "a::b" are code, not addresses
                continue
            try:
                ipaddress.IPv6Address(raw)
            except ValueError:
                continue
            out.append(Match("ip", m.start(), m.end(), raw))


def _find_pem(text: str, out: list[Match]) -> None:
    """Private key blocks: a BEGIN line, at least 16 characters, the first END line after them.

    Linear: once no END follows a BEGIN, no later BEGIN can have one either (a lazy ``[\\s\\S]{16,}?``
    between the two rescanned the rest of the text from every unmatched BEGIN).
    """
    if "-----BEGIN " not in text:
        return
    pos = 0
    while (begin := _PEM_BEGIN.search(text, pos)) is not None:
        end = _PEM_END.search(text, begin.end() + _PEM_MIN_BODY)
        if end is None:
            return
        out.append(Match("secret", begin.start(), end.end(), text[begin.start() : end.end()]))
        pos = end.end()


def find_secret(scan: TextScan, out: list[Match]) -> None:
    text = scan.text
    _find_pem(text, out)
    for pattern in _SECRETS:  # the lookbehind after each prefix keeps out matches inside a longer token
        for m in pattern.finditer(text):
            raw, start = m.group(), m.start()
            if raw.startswith("sk-") and not _HAS_UPPER_AND_DIGIT.match(raw):
                continue  # "sk-learn-..." prose, not a key
            out.append(Match("secret", start, m.end(), raw))
    ascii_text = text.isascii()
    source = text.lower() if ascii_text else text
    if not any(name in source for name in _ASSIGN_HINTS):
        return
    for m in (_SECRET_ASSIGN_LOWER if ascii_text else _SECRET_ASSIGN_ANYCASE).finditer(source):
        if ascii_text and m.start() and source[m.start() - 1].isalnum():
            continue
        value = text[m.start(1) : m.end(1)]
        if _HAS_ALPHA_AND_DIGIT.match(value):
            out.append(Match("secret", m.start(1), m.end(1), value))


FINDERS: dict[str, Finder] = {
    "email": find_email, "phone": find_phone, "ssn": find_ssn, "credit_card": find_card,
    "iban": find_iban, "ip": find_ip, "secret": find_secret,
}  # fmt: skip
