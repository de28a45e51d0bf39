"""The redactor: emails, phone numbers and card numbers go; dates, times and versions stay."""

from __future__ import annotations

import pytest

from billing.redaction import luhn_valid, redact, redact_json


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Write to jane.doe@example.com today", "Write to [email] today"),
        ("cc: j.o.smith+notes@mail.example.co.uk.", "cc: [email]."),
        ("<ops-team@sub.example-corp.io>", "<[email]>"),
        ("Mail ALICE_42@Example.ORG or bob@example.de", "Mail [email] or [email]"),
    ],
)
def test_it_replaces_email_addresses(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "phone",
    [
        # International, with '+' and a country code
        "+44 20 7946 0958",
        "+44 (0)20 7946 0958",
        "+1 (555) 123-4567",
        "+1 555 123 4567",
        "+15551234567",
        "+33 1 42 68 53 00",
        "+33.1.42.68.53.00",
        "+49 30 901820",
        "+49-170-1234567",
        "+91 98765 43210",
        "+81 3-1234-5678",
        # North American
        "(555) 123-4567",
        "(555)123-4567",
        "555-123-4567",
        "555.123.4567",
        "555 123 4567",
        "1-800-555-0199",
        # National numbers with a trunk zero
        "020 7946 0958",
        "07700 900123",
        "030 901820",
    ],
)
def test_it_replaces_phone_numbers_in_international_and_us_formats(phone: str) -> None:
    assert redact(f"Call me on {phone}, thanks.") == "Call me on [phone], thanks."
    assert redact(f"Numbers: {phone}") == "Numbers: [phone]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call me on 5551234567", "call me on [phone]"),
        ("Mobile: 07700900123", "Mobile: [phone]"),
        ("my phone number is 555 0199", "my phone number is [phone]"),
        ("tel:+15551234567", "tel:[phone]"),
        ("WhatsApp me at 4915112345679.", "WhatsApp me at [phone]."),
    ],
)
def test_an_unformatted_number_is_a_phone_number_after_a_word_that_says_so(
    text: str, expected: str
) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "card",
    [
        "4111 1111 1111 1111",  # Visa
        "4111-1111-1111-1111",
        "4111111111111111",
        "4012888888881881",
        "5555 5555 5555 4444",  # Mastercard
        "2223 0031 2200 3222",  # Mastercard 2-series
        "3782 822463 10005",  # American Express, 4-6-5
        "378282246310005",
        "3056 930902 5904",  # Diners Club, 4-6-4
        "6011 1111 1111 1117",  # Discover
        "3530 1113 3330 0000",  # JCB
        "6250 9410 0652 8599 123",  # 19 digits; a Luhn-valid UnionPay number
    ],
)
def test_it_replaces_card_numbers_that_pass_the_luhn_check(card: str) -> None:
    assert luhn_valid("".join(c for c in card if c.isdigit()))
    assert redact(f"Card {card} exp 12/27") == "Card [card] exp 12/27"


def test_a_card_shaped_number_that_fails_the_luhn_check_is_kept() -> None:
    assert redact("Order 4111 1111 1111 1112") == "Order 4111 1111 1111 1112"
    assert redact("ref 4111111111111112") == "ref 4111111111111112"


@pytest.mark.parametrize(
    "text",
    [
        "The meeting is on 2026-11-27 at 09:30 and ends at 10:45:30.",
        "Dates: 27/11/2026, 11-27-2026, 2026.11.27, 27.11.26, 2026-W48",
        "Timestamp 2026-11-27T09:30:00+01:00 and 2026-11-27 09:30:00.123456",
        "Slot 0900-1030 in room 101, then 1400-1530.",
        "Python 3.12.1, Django 6.1.3, v2.10.4, 1.0.0+20130313144700, 10.15.7",
        "Build 2026.11.1234 of release 24.04.1 LTS",
        "IPs 192.168.1.100 and 10.0.0.1, port 8000",
        "Order #12345, INV-2026-000123, PO-0045-1234-5678, ticket ABC-1234-5678",
        "SKU 123456789012, order number 1234 5678 9012 3456",
        "ts 1700000000000 ms, epoch 1764235800",
        "Revenue $1,234,567.89, up 12.5%, 2+2=4, +1 for that, +100 more",
        "the sales call covered invoice 40012345 and 3 action items",
        "call me on 2026-11-27",
        "Call at 09:30 tomorrow",
        "Page 12 of 340; section 4.2.1; ISBN 978-0-306-40615-7",
        "A host-only address stays: user@localhost",
    ],
)
def test_dates_times_versions_and_order_numbers_survive(text: str) -> None:
    assert redact(text) == text


def test_a_realistic_meeting_note_keeps_everything_but_the_personal_data() -> None:
    note = (
        "Standup 2026-11-27 09:30 (v2.4.1 released). Jane (jane@acme.io, +44 20 7946 0958) "
        "paid invoice INV-2026-000123 with card 4111 1111 1111 1111; follow up at 10:45."
    )
    assert redact(note) == (
        "Standup 2026-11-27 09:30 (v2.4.1 released). Jane ([email], [phone]) "
        "paid invoice INV-2026-000123 with card [card]; follow up at 10:45."
    )


def test_json_is_redacted_string_by_string() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "I am bob@example.com"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"function": {"arguments": '{"phone": "+1 555 123 4567"}'}}],
        },
    ]

    assert redact_json(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "I am [email]"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"function": {"arguments": '{"phone": "[phone]"}'}}],
        },
    ]


def test_empty_text_stays_empty() -> None:
    assert redact("") == ""
