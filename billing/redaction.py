"""Redaction of personal data in text: emails, phone numbers and payment card numbers.

Content samples pass through `redact()` inside the gateway process, before they
are queued, so the unredacted text never reaches Redis or the database.

The patterns prefer redacting too much to too little, but dates, times, version
strings and order numbers must survive, or samples lose what makes them useful:
card numbers must pass the Luhn check, and a bare run of digits counts as a phone
number only after a '+' or a word such as "phone" or "call".
"""

from __future__ import annotations

import re
from typing import Any

EMAIL = "[email]"
PHONE = "[phone]"
CARD = "[card]"

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b"
)

# Neither glued to a longer number, word or dotted string on the left, nor continued
# on the right ("2026-11-27" is not "2026-11" followed by something else).
_START = r"(?<![\w.+/-])"
_END = r"(?!\w)(?![.,/-]?\d)"

# Cards begin with 2 to 6 (Mastercard, Amex, Diners, JCB, Visa, Discover, UnionPay),
# which keeps millisecond timestamps and most order numbers out before Luhn decides.
_CARD = re.compile(
    _START + r"(?:"
    r"[2-6]\d{3}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?"  # 4-4-4-4, 4-4-4-4-3
    r"|3\d{3}([ -])\d{6}\2\d{4,5}"  # 4-6-5 (American Express), 4-6-4 (Diners Club)
    r"|[2-6]\d{12,18}"
    r")" + _END
)

# International: '+', a country code, then digit groups, perhaps parenthesised
# ("+44 (0)20 7946 0958", "+1 (555) 123-4567", "+33.1.42.68.53.00").
_INTERNATIONAL = re.compile(_START + r"\+\d{1,3}(?:[ .-]?(?:\(\d{1,5}\)|\d{1,5})){1,6}" + _END)
# North American: (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567, 1-800-555-0199.
_NORTH_AMERICAN = re.compile(
    _START + r"(?:1[ .-])?(?:\(\d{3}\) ?|\d{3}([ .-]))\d{3}(?(1)\1|[ .-])\d{4}" + _END
)
# National numbers with a trunk zero: 020 7946 0958, 07700 900123, 030 901820.
_TRUNK = re.compile(_START + r"0\d{2,4}[ -]\d{3,4}(?:[ -]?\d{3,4})?" + _END)
# Unformatted numbers count only right after a word that announces a phone number
# ("call me on 5551234567", "mobile: 07700900123"), never after just any word.
_ANNOUNCED = re.compile(
    r"(?i)\b(?:phone|telephone|tel|mobile|cell|call|fax|whatsapp|sms)\b"
    r"(?:[\s:#.-]|\b(?:me|us|him|her|them|at|on|is|my|our|number|no|nr|num)\b)*"
    r"(?P<number>\+?\(?\d[\d ().-]{5,22}\d)" + _END
)
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")


def redact(text: str) -> str:
    """`text` with emails, phone numbers and card numbers replaced by placeholders."""
    if not text:
        return text
    text = _EMAIL.sub(EMAIL, text)
    text = _CARD.sub(_card, text)
    text = _INTERNATIONAL.sub(_phone, text)
    text = _NORTH_AMERICAN.sub(PHONE, text)
    text = _TRUNK.sub(_trunk, text)
    return _ANNOUNCED.sub(_announced, text)


def redact_json(value: Any) -> Any:
    """A JSON value (a message list, say) with every string in it redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_json(item) for item in value]
    if isinstance(value, dict):
        return {key: redact_json(item) for key, item in value.items()}
    return value


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _card(match: re.Match[str]) -> str:
    return CARD if luhn_valid(_digits(match.group())) else match.group()


def _phone(match: re.Match[str]) -> str:
    # E.164 allows at most 15 digits; fewer than 8 is a short code or not a phone at all.
    return PHONE if 8 <= len(_digits(match.group())) <= 15 else match.group()


def _trunk(match: re.Match[str]) -> str:
    # Fewer than 9 digits is more often a time range ("0900-1030") than a phone.
    return PHONE if 9 <= len(_digits(match.group())) <= 12 else match.group()


def _announced(match: re.Match[str]) -> str:
    number = match.group("number")
    if _DATE.fullmatch(number.strip()) or not 7 <= len(_digits(number)) <= 15:
        return match.group()
    start = match.start("number") - match.start()
    return match.group()[:start] + PHONE
