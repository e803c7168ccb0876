"""Phone numbers as the telephony plugin keeps them: E.164 (``+74951234567``).

A provider reports numbers as its exchange writes them (``84951234567``,
``+7 (495) 123-45-67``, ``4951234567``); they are read with ``phonenumbers``
in the configuration's region, the same way the CRM's ``phone`` fields store
them, so that a caller's number and a customer's phone compare equal.
"""

from __future__ import annotations

import phonenumbers


def normalize(text: str | None, region: str = "RU") -> str | None:
    """The E.164 form of a number, or None when it is no phone number
    (an internal extension, "anonymous", empty)."""
    raw = (text or "").strip()
    if not raw or not any(c.isdigit() for c in raw):
        return None
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def shown(e164: str | None) -> str:
    """A number as a person reads it (``+7 495 123-45-67``)."""
    if not e164:
        return ""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
