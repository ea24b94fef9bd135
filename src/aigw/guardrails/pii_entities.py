"""What counts as each built-in PII entity: candidate regexes plus the checks that decide.

Each finder takes the text, its digit count (a shared, cheap pre-filter) and appends
``Match`` objects; ``FINDERS`` maps the config names to them. Precision comes from
validation after the regex (Luhn, mod 97, SSN ranges, phone digit counts and
groupings, ``ipaddress`` for IPv6), not from ever-longer regexes.
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


_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24})(?![\w-])"
)
_FILE_EXT_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "pdf", "tiff"})

_PHONE = re.compile(
    r"(?<![\w+\-./#@])(?:"
    r"\+\d{1,15}(?:[ .\-]?\(\d{1,5}\))?(?:[ .\-]?\d{1,8})?(?:[ .\-]\d{1,8}){0,6}"
    r"|(?:\(\d{2,5}\)[ .\-]?|\d{1,5}[ .\-])\d{2,8}(?:[ .\-]\d{2,8}){0,4}"
    r")(?![\w]|[.\-/]\d)"
)
_DATE_PREFIX = re.compile(r"\d{1,2}[./-]\d{1,2}[./-](?:19|20)\d\d|(?:19|20)\d\d[./-]\d{1,2}[./-]\d{1,2}")
_NOT_PHONE_CONTEXT = re.compile(r"(?i)(?:#|isbn(?:-1[03])?|order|invoice|ticket|ref\.?|sku)[:\s#]*$")

_SSN = re.compile(r"(?<![\w\-.])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d\d\1(?!0000)\d{4}(?![\w]|[-.]\d)")
_SSN_KEYWORD = re.compile(r"(?i)\b(?:ssn|social security(?: number| no\.?)?)\W{0,5}((?!000|666|9)\d{9})\b")
_SSN_INVALID = frozenset({"078051120", "219099999", "457555462"})

_CARD = re.compile(r"(?<![\w\-.])\d(?:[ \-]?\d){12,18}(?!\d)")
# Issuer prefixes of the card networks (Visa 4, Mastercard 5 and 22-27, Amex/Diners/JCB 3,
# Discover/UnionPay/Maestro 6 and 5): with Luhn this keeps most random digit runs out.
_CARD_IIN = re.compile(r"[3-6]|2[2-7]")

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d\d(?: ?[A-Z0-9]){11,30}")
# ISO 13616 registry: country -> IBAN length.
_IBAN_REGISTRY = (
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DK18 DO28 EE20 "
    "EG29 ES24 FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 "
    "KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 MC27 MD24 ME22 MK19 MR27 MT31 MU30 NL18 NO15 PK24 PL28 "
    "PS29 PT25 QA29 RO24 RS22 SA24 SC31 SE24 SI19 SK24 SM27 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20"
)
_IBAN_LENGTHS = {entry[:2]: int(entry[2:]) for entry in _IBAN_REGISTRY.split(" ")}

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
_VERSION_CONTEXT = re.compile(r"(?i)(?:version|ver\.?|release|build)\s*$")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:.])")

_SECRET = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]{16,}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----"
    r"|(?<![\w-])(?:"
    r"sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,}"
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z_\-]{35}|glpat-[A-Za-z0-9_\-]{20,}"
    r"|eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]*"
    r")(?![\w-])"
)
_SECRET_ASSIGN = re.compile(
    r"(?i)(?<![A-Za-z0-9])(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|client[_-]?secret"
    r"|password|passwd|pwd)[\"']?\s*(?:[:=]|=>)\s*[\"']?([A-Za-z0-9_\-+/=!@#%^&*~]{8,})"
)
_HAS_DIGIT = re.compile(r"\d")
_HAS_UPPER_AND_DIGIT = re.compile(r"(?=.*[A-Z])(?=.*\d)", re.S)
_HAS_ALPHA_AND_DIGIT = re.compile(r"(?=.*[A-Za-z])(?=.*\d)", re.S)

Finder = Callable[[str, int, list[Match]], None]


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


def digit_count(text: str) -> int:
    return sum(map(text.count, "0123456789"))


def find_email(text: str, n_digits: int, out: list[Match]) -> None:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        if m.group(1).lower() not in _FILE_EXT_TLDS:
            out.append(Match("email", m.start(), m.end(), m.group()))


def _valid_phone(raw: str) -> bool:
    digits = "".join(ch for ch in raw if ch.isdigit())
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


def find_phone(text: str, n_digits: int, out: list[Match]) -> None:
    if n_digits < 8:
        return
    for m in _PHONE.finditer(text):
        raw = m.group()
        if _valid_phone(raw) and not _NOT_PHONE_CONTEXT.search(text, max(0, m.start() - 12), m.start()):
            out.append(Match("phone", m.start(), m.end(), raw))


def find_ssn(text: str, n_digits: int, out: list[Match]) -> None:
    if n_digits < 9:
        return
    for m in _SSN.finditer(text):
        if m.group().replace(m.group(1), "") not in _SSN_INVALID:
            out.append(Match("ssn", m.start(), m.end(), m.group()))
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


def find_card(text: str, n_digits: int, out: list[Match]) -> None:
    if n_digits < 13:
        return
    for m in _CARD.finditer(text):
        found = _card_match(text, m)
        if found:
            out.append(found)


def find_iban(text: str, n_digits: int, out: list[Match]) -> None:
    if n_digits < 6:
        return
    for m in _IBAN.finditer(text):
        length = _IBAN_LENGTHS.get(m.group()[:2])
        if length is None:
            continue
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


def find_ip(text: str, n_digits: int, out: list[Match]) -> None:
    if n_digits >= 4 and "." in text:
        for m in _IPV4.finditer(text):
            if m.group() != "0.0.0.0" and not _VERSION_CONTEXT.search(text, max(0, m.start() - 10), m.start()):
                out.append(Match("ip", m.start(), m.end(), m.group()))
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6.finditer(text):
            raw = m.group()
            if len(raw) < 3 or not _HAS_DIGIT.search(raw):  # "::" and "a::b" are code, not addresses
                continue
            try:
                ipaddress.IPv6Address(raw)
            except ValueError:
                continue
            out.append(Match("ip", m.start(), m.end(), raw))


def find_secret(text: str, n_digits: int, out: list[Match]) -> None:
    for m in _SECRET.finditer(text):
        raw = m.group()
        if raw.startswith("sk-") and not _HAS_UPPER_AND_DIGIT.match(raw):
            continue  # "sk-learn-..." prose, not a key
        out.append(Match("secret", m.start(), m.end(), raw))
    for m in _SECRET_ASSIGN.finditer(text):
        if _HAS_ALPHA_AND_DIGIT.match(m.group(1)):
            out.append(Match("secret", m.start(1), m.end(1), m.group(1)))


FINDERS: dict[str, Finder] = {
    "email": find_email, "phone": find_phone, "ssn": find_ssn, "credit_card": find_card,
    "iban": find_iban, "ip": find_ip, "secret": find_secret,
}  # fmt: skip
