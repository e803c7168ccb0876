"""Helpers of the mailing tests (no tests here): a template and a mailing, the statements run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from engine.api import Documents


def system_docs(app: Any, session: Any) -> Documents:
    state = app.extensions["crm"]
    return Documents(state.models, session, None, ["Admin"], state.pm, username="system",
                     trusted=True)  # fmt: skip


def make_mailing(docs: Documents, filter_: str = "", segment: str | None = None,
                 **more: Any) -> Any:  # fmt: skip
    table = docs.models.table("EmailTemplate")
    made = docs.session.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    template = docs.create("EmailTemplate", {
        "name": f"news {made + 1}", "subject": "News for {{ name }}",
        "body": "Dear {{ name }},\nour news.",
    })  # fmt: skip
    account = docs.session.execute(sa.select(docs.models.table("EmailAccount").c.id)).scalar()
    if account is None:
        from plugins.mail import accounts

        account = accounts.ensure_config_account(docs.session, docs.models, docs.registry)
    values = {"name": "Spring news", "account": account, "template": template.id,
              "doctype": "Customer", "filter": filter_, "segment": segment, **more}  # fmt: skip
    return docs.create("Mailing", values)


def counts_of(app: Any, session: Any, mailing_id: int) -> dict[str, int]:
    r = app.extensions["crm"].models.table("MailingRecipient")
    rows = session.execute(
        sa.select(r.c.status, sa.func.count()).where(r.c.mailing_id == mailing_id)
        .group_by(r.c.status)
    ).all()  # fmt: skip
    return {s: n for s, n in rows}


@contextmanager
def statements(app: Any) -> Iterator[list[str]]:
    """The SQL statements the app runs meanwhile."""
    seen: list[str] = []

    def listen(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        seen.append(statement)

    with app.app_context():
        engine = app.extensions["crm"].db.engine
    sa.event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", listen)
