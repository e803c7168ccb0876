"""Field types: the column each one gets and how a value is checked and normalized.

The fourteen types of metadata version 1 are defined here; a plugin adds its
own through the ``crm_field_types`` hook by returning more :class:`FieldType`
objects.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import phonenumbers
import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email

from engine.i18n import gettext
from engine.registry import Field


class Invalid(ValueError):
    """A value a user entered does not fit its field; the message is for the user."""


@dataclass(frozen=True)
class Context:
    """What normalizing needs beyond the value: the default phone region."""

    region: str = "RU"


@dataclass(frozen=True)
class FieldType:
    name: str
    #: the SQLAlchemy column type for a field of this type
    column: Callable[[Field], sa.types.TypeEngine[Any]]
    #: value from a form, JSON or CSV → the stored value (raises Invalid)
    normalize: Callable[[Any, Field, Context], Any]
    #: options that make sense for this type, beyond the common ones
    options: frozenset[str] = frozenset()
    #: whether min/max compare values of this type
    ordered: bool = False
    python: type | tuple[type, ...] = object


def _string(value: Any, f: Field, ctx: Context) -> str:
    text = str(value).strip()
    limit = f.max_length or 255
    if len(text) > limit:
        raise Invalid(gettext("must be at most %(n)s characters", n=limit))
    if f.pattern and text and not re.fullmatch(f.pattern, text):
        raise Invalid(gettext("does not match the required pattern"))
    return text


#: the most characters a ``text`` field takes without a ``max_length`` of its own
#: (``limits: {text_length: ...}`` in config.yaml sets it for a configuration)
TEXT_LENGTH = 100_000


def _text(value: Any, f: Field, ctx: Context) -> str:
    text = str(value)
    limit = f.max_length or TEXT_LENGTH
    if len(text) > limit:
        raise Invalid(
            gettext("must be at most %(n)s characters (it has %(has)s)", n=limit, has=len(text))
        )
    return text


def _integer(value: Any, f: Field, ctx: Context) -> int:
    if isinstance(value, bool):
        raise Invalid("must be a whole number")
    try:
        if isinstance(value, float) and not value.is_integer():
            raise Invalid("must be a whole number")
        number = int(str(value).strip().replace(" ", "")) if isinstance(value, str) else int(value)
    except (TypeError, ValueError) as exc:
        raise Invalid("must be a whole number") from exc
    if not -(2**63) <= number < 2**63:
        raise Invalid("is too large")
    return number


def _decimal(value: Any, f: Field, ctx: Context) -> Decimal:
    if isinstance(value, bool):
        raise Invalid("must be a number")
    try:
        text = str(value).strip().replace(" ", "").replace("\u00a0", "").replace(",", ".")
        number = Decimal(text)
    except (InvalidOperation, ValueError) as exc:
        raise Invalid("must be a number") from exc
    if not number.is_finite():
        raise Invalid("must be a number")
    digits, places = _precision(f)
    if number.adjusted() >= digits - places:
        raise Invalid(f"must have at most {digits - places} digits before the point")
    try:
        number = number.quantize(Decimal(1).scaleb(-places))
    except InvalidOperation as exc:
        raise Invalid("must be a number") from exc
    if number.adjusted() >= digits - places:
        raise Invalid(f"must have at most {digits - places} digits before the point")
    return number


def _precision(f: Field) -> tuple[int, int]:
    if f.type == "money":
        return 18, 2
    return f.digits or 18, f.places if f.places is not None else 4


def _boolean(value: Any, f: Field, ctx: Context) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on", "да"):
        return True
    if text in ("0", "false", "no", "n", "off", "нет", ""):
        return False
    raise Invalid(gettext("must be yes or no"))


def _date(value: Any, f: Field, ctx: Context) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%d.%m.%Y"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise Invalid("must be a date such as 2026-12-31")


def _datetime(value: Any, f: Field, ctx: Context) -> dt.datetime:
    if isinstance(value, dt.datetime):
        moment = value
    else:
        text = str(value).strip().replace(" ", "T", 1)
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise Invalid("must be a date and time such as 2026-12-31T15:30") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError as exc:  # 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise Invalid("must be a date and time such as 2026-12-31T15:30") from exc


def _enum(value: Any, f: Field, ctx: Context) -> str:
    key = str(value)
    if key in f.values:
        return key
    for k, label in f.values.items():
        if key in label.texts.values():
            return k
    raise Invalid(gettext("must be one of: %(values)s", values=", ".join(f.values)))


#: ids are 32-bit integers in every database the engine supports; a larger
#: number (in a URL, a form, a file) names no record and must not reach PostgreSQL as one
MAX_ID = 2**31 - 1


def valid_id(value: Any) -> int | None:
    """``value`` as a record id (a whole number from 1 to :data:`MAX_ID`, as
    text or a number), or None: never a yes/no or an infinity."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):  # digits a form sends: not ``²`` or ``١``, which int() reads
        value = value.strip()
        if not (value.isascii() and value.isdigit()) or len(value) > 10:
            return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if 0 < number <= MAX_ID else None


def _ref(value: Any, f: Field, ctx: Context) -> int:
    number = valid_id(value)
    if number is None:
        raise Invalid(gettext("must be a record id"))
    return number


def _phone(value: Any, f: Field, ctx: Context) -> str:
    text = str(value).strip()
    try:
        number = phonenumbers.parse(text, ctx.region)
    except phonenumbers.NumberParseException as exc:
        raise Invalid(gettext("is not a phone number")) from exc
    if not phonenumbers.is_valid_number(number):
        raise Invalid(gettext("is not a valid phone number"))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_phone(text: str, region: str = "RU") -> str | None:
    """The E.164 form of ``text``, or None: used to match callers to customers."""
    try:
        return _phone(text, Field("phone", "phone"), Context(region))
    except Invalid:
        return None


def format_phone(e164: str | None) -> str:
    """E.164 → the international format a person reads (``+7 495 123-45-67``)."""
    if not e164:
        return ""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def _email(value: Any, f: Field, ctx: Context) -> str:
    try:
        result = validate_email(str(value).strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise Invalid(gettext("is not a valid email address: %(error)s", error=exc)) from exc
    return result.normalized


def _url(value: Any, f: Field, ctx: Context) -> str:
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Invalid(gettext("must be a web address starting with http:// or https://"))
    if len(text) > 2048:
        raise Invalid(gettext("is longer than 2048 characters"))
    return text


INN_WEIGHTS = {
    10: ((2, 4, 10, 3, 5, 9, 4, 6, 8),),
    12: ((7, 2, 4, 10, 3, 5, 9, 4, 6, 8), (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)),
}


def inn_is_valid(digits: str) -> bool:
    """The check digits of a Russian taxpayer number (10 digits for a company, 12 for a person)."""
    if not digits.isdigit() or len(digits) not in INN_WEIGHTS:
        return False
    for weights in INN_WEIGHTS[len(digits)]:
        n = len(weights)
        check = sum(w * int(d) for w, d in zip(weights, digits[:n], strict=True)) % 11 % 10
        if check != int(digits[n]):
            return False
    return True


def _inn(value: Any, f: Field, ctx: Context) -> str:
    text = re.sub(r"[\s-]", "", str(value))
    if not re.fullmatch(r"\d{10}|\d{12}", text):
        raise Invalid(gettext("must be a taxpayer number of 10 or 12 digits"))
    if not inn_is_valid(text):
        raise Invalid(gettext("is not a valid taxpayer number (wrong check digit)"))
    return text


def _no_value(value: Any, f: Field, ctx: Context) -> Any:
    raise Invalid(gettext("holds rows, not a value"))


CORE_TYPES: tuple[FieldType, ...] = (
    FieldType("string", lambda f: sa.String(f.max_length or 255), _string,
              frozenset({"max_length", "pattern"}), ordered=True, python=str),
    FieldType("text", lambda f: sa.Text(), _text, frozenset({"max_length"}), python=str),
    FieldType("integer", lambda f: sa.BigInteger(), _integer, ordered=True, python=int),
    FieldType("decimal", lambda f: sa.Numeric(*_precision(f)), _decimal,
              frozenset({"digits", "places"}), ordered=True, python=(int, float, Decimal)),
    FieldType("money", lambda f: sa.Numeric(18, 2), _decimal, ordered=True,
              python=(int, float, Decimal)),
    FieldType("boolean", lambda f: sa.Boolean(), _boolean, python=bool),
    FieldType("date", lambda f: sa.Date(), _date, ordered=True, python=dt.date),
    FieldType("datetime", lambda f: sa.DateTime(timezone=True), _datetime, ordered=True,
              python=dt.datetime),
    FieldType("enum", lambda f: sa.String(64), _enum, frozenset({"values"}), python=str),
    FieldType("ref", lambda f: sa.Integer(), _ref, frozenset({"to", "where"}), python=int),
    FieldType("phone", lambda f: sa.String(32), _phone, python=str),
    FieldType("email", lambda f: sa.String(254), _email, python=str),
    FieldType("url", lambda f: sa.String(2048), _url, python=str),
    # beyond metadata version 1's list: a Russian taxpayer number with its check digits
    FieldType("inn", lambda f: sa.String(12), _inn, python=str),
    FieldType("table", lambda f: sa.Integer(), _no_value, frozenset({"fields"})),
)  # fmt: skip
