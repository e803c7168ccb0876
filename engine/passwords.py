"""The password policy: long enough, not the username, not a common password.

``crm users create`` and every password form of the web UI (a user's own
"reset my password", an administrator's reset, a new user) apply it; the
length is ``security.password_min_length`` of config.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import has_request_context

from engine.i18n import gettext, speaking

DEFAULT_MIN_LENGTH = 10

#: passwords that top every leaked-password list (and their Russian-keyboard
#: favourites); compared without case
_COMMON_TEXT = """
    123456 1234567 12345678 123456789 1234567890 12345678910 0123456789 0987654321
    987654321 9876543210 111111 1111111 11111111 111111111 1111111111 000000 00000000
    0000000000 121212 123123 123123123 123321 112233 654321 666666 696969 777777
    7777777 888888 999999 159753 147258369 1q2w3e 1q2w3e4r 1q2w3e4r5t 1q2w3e4r5t6y
    1qaz2wsx 1qazxsw2 zaq12wsx zaq1zaq1 qazwsx qazwsxedc qazwsxedc123 qwerty qwerty1
    qwerty12 qwerty123 qwerty1234 qwerty12345 qwertyuiop qwertyuiop123 qwer1234
    asdfgh asdfghjkl asdfghjkl123 zxcvbn zxcvbnm zxcvbnm123 1234qwer 123qwe 123qweasd
    123qweasdzxc qweasd qweasdzxc password password1 password12 password123 password1234
    passw0rd p@ssw0rd p@ssword pa$$word password! admin admin123 admin1234 administrator
    root toor letmein letmein123 welcome welcome1 welcome123 iloveyou iloveyou1
    iloveyou123 monkey dragon master master123 sunshine princess football baseball
    superman batman trustno1 starwars whatever freedom shadow michael jennifer
    abc123 abc12345 abcdef abcdefg abcdefgh abcd1234 aa123456 a1b2c3 a1b2c3d4
    changeme changeme123 default secret secret123 test test123 test1234 testtest
    guest guest123 user user123 demo demo123 login login123 hello hello123
    qwerty123456 1234512345 5555555555 1212121212 1122334455 11223344 123654789
    йцукен йцукенгшщз йцукенгшщзхъ пароль пароль123 парольпароль привет привет123
    любовь наташа максим солнышко qwertyqwerty 12qwaszx 12345qwert 12345qwerty
    q1w2e3r4 q1w2e3r4t5 q1w2e3r4t5y6 1z2x3c4v5b 7418529630 3216549870 147852369
    crm123456 crmpassword company123 manager123
"""
COMMON = frozenset(_COMMON_TEXT.split())


def min_length(security: Mapping[str, Any]) -> int:
    return int(security.get("password_min_length") or DEFAULT_MIN_LENGTH)


def problem(
    password: str, security: Mapping[str, Any], locale: str, username: str = ""
) -> str | None:
    """Why ``password`` may not be set, or None: in the reader's language on
    the web, in the configuration's ``locale`` in the CLI (``locale``)."""
    with speaking(None if has_request_context() else locale):
        n = min_length(security)
        if len(password) < n:
            return gettext("The password must be at least %(n)s characters long", n=n)
        folded = password.strip().lower()
        if username and folded == username.strip().lower():
            return gettext("The password must not be the username")
        if folded in COMMON:
            return gettext("This password is one of the most common; choose another")
        return None


def form_validator(security: Mapping[str, Any], locale: str) -> Any:
    """Flask-AppBuilder's ``FAB_PASSWORD_COMPLEXITY_VALIDATOR``: its password
    forms (reset my password, reset a user's, add a user) call it."""
    from flask_appbuilder.exceptions import PasswordComplexityValidationError

    def validate(password: str) -> None:
        message = problem(password or "", security, locale)
        if message:
            raise PasswordComplexityValidationError(message)

    return validate
