"""The mail types are listed together under their own group of the
navigation (the type's `menu:`), in the reader's language."""

from __future__ import annotations

import re
from typing import Any


def _group(html: str, heading: str) -> list[str]:
    found = re.search(r'<div class="crm-nav-heading">' + heading + r"</div>(.*?)</ul>", html, re.S)
    assert found, f"no group {heading}"
    return re.findall(r'<a href="([^"]+)">', found[1])


def test_the_mail_types_have_a_group_of_their_own(mail_app: Any, login: Any) -> None:
    app = mail_app()
    html = login(app, "admin").get("/").text
    assert _group(html, "Mail") == [
        "/email_account/", "/email_message/", "/email_template/", "/mailing/",
        "/mailing_recipient/", "/unsubscribe/", "/bounced_address/", "/mail/unsorted/",
    ]  # fmt: skip
    assert "/mailing/" not in _group(html, "Sales")
    manager = login(app, "manager").get("/").text  # sees what the rules let it read
    assert "/email_account/" in _group(manager, "Mail")
    assert "/bounced_address/" in _group(manager, "Mail")
