"""Unsubscribing from mailings: a signed token per recipient, a page that
needs no login, and RFC 8058 one-click unsubscribe.

Every letter of a mailing carries ``List-Unsubscribe: <https://SITE/mail/
unsubscribe/TOKEN>`` and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``.
The token is the recipient's id and address signed with the site's secret
key (itsdangerous, HMAC-SHA256): it cannot be made up for another address,
and a changed character makes it worthless. ``GET`` shows a confirmation
page in the configuration's language; ``POST`` (the page's button, or a mail
client's one-click POST with ``List-Unsubscribe=One-Click``, which carries no
CSRF token and no session) records the address as unsubscribed, once.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import sqlalchemy as sa
from flask import current_app, request
from flask_appbuilder import BaseView, expose
from itsdangerous import BadSignature, Signer, base64_encode
from sqlalchemy.exc import IntegrityError

from engine.api import clock, crm, db_session, speaking

SALT = "crm.mail.unsubscribe"
RECIPIENT = "MailingRecipient"
UNSUBSCRIBE = "Unsubscribe"
MAILING = "Mailing"


def secret_key() -> str:
    """The site's secret key (it signs the sessions too)."""
    try:
        return str(current_app.config["SECRET_KEY"])
    except (RuntimeError, KeyError) as exc:
        raise RuntimeError("unsubscribe links need the app's SECRET_KEY") from exc


def _signer(secret: str) -> Signer:
    return Signer(secret, salt=SALT, digest_method=hashlib.sha256)


class Tokens:
    """Tokens for many recipients: the key is derived once (a mailing's batch)."""

    def __init__(self, secret: str) -> None:
        self.signer = _signer(secret)
        self.key = self.signer.derive_key()

    def make(self, recipient_id: int, address: str) -> str:
        value = f"{int(recipient_id)}.{_b64(address.encode())}".encode("ascii")
        signature = base64_encode(self.signer.algorithm.get_signature(self.key, value))
        return (value + b"." + signature).decode("ascii")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_token(secret: str, recipient_id: int, address: str) -> str:
    """The recipient's id and address, signed (HMAC-SHA256 with the site's key)."""
    return Tokens(secret).make(recipient_id, address)


def read_token(secret: str, token: str) -> tuple[int, str] | None:
    """(recipient id, address) of a genuine token; None for a forged or broken one."""
    try:
        value = _signer(secret).unsign(token.encode("ascii")).decode("ascii")
        rid, _, encoded = value.partition(".")
        address = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
        return int(rid), address
    except (BadSignature, UnicodeError, ValueError):
        return None


def unsubscribe(session: Any, models: Any, recipient_id: int, address: str, reason: str) -> bool:
    """Record the address as unsubscribed and the recipient as ``unsubscribed``;
    False when it already was (nothing changes)."""
    r = models.table(RECIPIENT)
    u = models.table(UNSUBSCRIBE)
    m = models.table(MAILING)
    now = clock.now().replace(tzinfo=None)
    row = session.execute(
        sa.select(r.c.id, r.c.mailing_id, r.c.status).where(r.c.id == recipient_id)
    ).first()
    mailing_id = row.mailing_id if row is not None else None
    normal = address.strip().lower()
    changed = False
    if session.execute(sa.select(u.c.id).where(u.c.address == normal)).first() is None:
        try:
            with session.begin_nested():
                session.execute(
                    sa.insert(u).values(address=normal, reason=reason, mailing_id=mailing_id,
                                        version=1, created_at=now, updated_at=now)
                )  # fmt: skip
            changed = True
        except IntegrityError:  # the same address at the same moment from another click
            pass
    if row is not None and row.status in ("queued", "sent"):
        done = session.execute(
            sa.update(r)
            .where(r.c.id == recipient_id, r.c.status.in_(["queued", "sent"]))
            .values(status="unsubscribed", updated_at=now, version=r.c.version + 1)
        )  # fmt: skip
        if done.rowcount:
            session.execute(
                sa.update(m).where(m.c.id == mailing_id)
                .values(unsubscribed=sa.func.coalesce(m.c.unsubscribed, 0) + 1)
            )  # fmt: skip
            changed = True
    return changed


# --- the page --------------------------------------------------------------------------------


class UnsubscribePageView(BaseView):
    """``/mail/unsubscribe/<token>``: no login, no CSRF (the token is the key)."""

    route_base = "/mail/unsubscribe"
    default_view = "page"

    def _page(self, template: str, status: int = 200, **values: Any) -> Any:
        state = crm()
        with speaking(state.registry.locale):
            html = self.render_template(template, company=state.registry.name or "", **values)
        return html, status

    @expose("/<token>", methods=["GET", "POST"])
    def page(self, token: str) -> Any:
        found = read_token(secret_key(), token)
        if found is None:
            return self._page("mail/unsubscribe_bad.html", 400)
        recipient_id, address = found
        if request.method == "GET":
            return self._page("mail/unsubscribe.html", address=address, token=token)
        one_click = request.form.get("List-Unsubscribe") == "One-Click"
        session = db_session()
        try:
            reason = "one_click" if one_click else "link"
            unsubscribe(session, crm().models, recipient_id, address, reason)
            session.commit()
        except Exception:
            session.rollback()
            raise
        if one_click:
            return "", 200
        return self._page("mail/unsubscribe_done.html", address=address)


def register(appbuilder: Any, app: Any) -> None:
    """The page, without login and without CSRF (a one-click POST has neither)."""
    view = appbuilder.add_view_no_menu(UnsubscribePageView())
    if view.blueprint is not None:
        app.extensions["csrf"].exempt(view.blueprint)
