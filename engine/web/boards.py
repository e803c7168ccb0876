"""Kanban and calendar views: server-side aggregates and pages, never all rows.

The kanban asks one GROUP BY for each column's count and sum and one
windowed query for the first cards of every column; a column pages on its
own. Dragging a card posts to the same transition endpoint as the form, so
the same rules (roles, guards, required fields) apply, and a refusal is shown
on the card. The calendar asks for one date range at a time.
"""

from __future__ import annotations

import calendar as cal
import datetime as dt
from typing import Any

import sqlalchemy as sa
from flask import abort, jsonify, request
from flask_appbuilder import expose
from flask_login import login_required

from engine import access
from engine.registry import USER, DocType
from engine.web.base import crm, db_session, locale, principal
from engine.web.display import show

CARDS_PER_COLUMN = 20
MAX_CALENDAR_ENTRIES = 500


def kanban_columns(d: DocType) -> tuple[str, list[str]]:
    by = d.views["kanban"]["by"]
    f = d.fields[by]
    return by, list(f.values)


def _owner_filter(d: DocType, table: sa.Table, owner_field: str | None) -> sa.ColumnElement[bool]:
    value = request.args.get("owner", type=int)
    if value and owner_field:
        return table.c[d.fields[owner_field].column] == value
    department = request.args.get("department", type=int)
    if department and owner_field and "department" in crm().registry.documents[USER].fields:
        users = crm().models.table(USER)
        return table.c[d.fields[owner_field].column].in_(
            sa.select(users.c.id).where(users.c.department_id == department)
        )
    return sa.true()


def card_rows(d: DocType, where: sa.ColumnElement[bool], by: str, states: list[str], per: int,
              offset: int = 0) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """The first ``per`` cards of every column in one windowed query."""
    models = crm().models
    table = models.table(d.name)
    amount = d.views["kanban"].get("amount")
    rank = (
        sa.func.row_number()
        .over(partition_by=table.c[by], order_by=(table.c.created_at.desc(), table.c.id.desc()))
        .label("rank")
    )
    inner = (
        sa.select(table.c.id, table.c[by].label("column"), rank)
        .where(where, table.c[by].in_(states))
        .subquery()
    )
    ids = sa.select(inner.c.id, inner.c.column).where(
        inner.c.rank > offset, inner.c.rank <= offset + per
    )
    picked = {row.id: row.column for row in db_session().execute(ids)}
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in states}
    if not picked:
        return out
    cls = models.cls(d.name)
    from engine.web.service import title

    objs = db_session().execute(
        sa.select(cls).where(cls.id.in_(picked)).order_by(cls.created_at.desc(), cls.id.desc())
    )
    for obj in objs.scalars():
        card = {"id": obj.id, "title": title(d, obj), "version": obj.version}
        if amount:
            card["amount"] = show(d.fields[amount], getattr(obj, amount), locale())
        if d.owner:
            owner = getattr(obj, d.owner)
            card["owner"] = (
                f"{owner.first_name} {owner.last_name}".strip() if owner is not None else ""
            )
        out[picked[obj.id]].append(card)
    return out


class BoardsMixin:
    doctype: str

    def _board_doc(self, view: str) -> DocType:
        d = crm().registry.documents[self.doctype]
        if view not in d.views:
            abort(404)
        if not access.allowed(crm().registry, principal(), d.name, "read"):
            abort(403)
        return d  # type: ignore[no-any-return]

    @expose("/kanban")
    @login_required
    def kanban(self) -> Any:
        d = self._board_doc("kanban")
        models = crm().models
        table = models.table(d.name)
        by, states = kanban_columns(d)
        where = sa.and_(
            access.where(models, principal(), d.name, "read"), _owner_filter(d, table, d.owner)
        )
        amount = d.views["kanban"].get("amount")
        totals_q = sa.select(
            table.c[by], sa.func.count(), sa.func.sum(table.c[amount]) if amount else sa.null()
        ).where(where).group_by(table.c[by])  # fmt: skip
        totals = {row[0]: (row[1], row[2]) for row in db_session().execute(totals_q)}
        cards = card_rows(d, where, by, states, CARDS_PER_COLUMN)
        f = d.fields[by]
        columns = [
            {
                "name": s,
                "label": f.values[s].get(locale()),
                "count": totals.get(s, (0, None))[0],
                "sum": show(d.fields[amount], totals.get(s, (0, None))[1] or 0, locale())
                if amount
                else "",
                "cards": cards[s],
            }
            for s in states
        ]
        return self.render_template(  # type: ignore[attr-defined]
            "crm/kanban.html", d=d, columns=columns, view=type(self).__name__, per=CARDS_PER_COLUMN,
            owners=_owners(d), owner=request.args.get("owner", type=int),
        )  # fmt: skip

    @expose("/kanban/cards")
    @login_required
    def kanban_cards(self) -> Any:
        """The next page of one column, as JSON."""
        d = self._board_doc("kanban")
        models = crm().models
        by, states = kanban_columns(d)
        column = request.args.get("column", "")
        if column not in states:
            return jsonify({"message": f"unknown column `{column}`"}), 400
        offset = max(0, request.args.get("offset", 0, type=int))
        where = sa.and_(
            access.where(models, principal(), d.name, "read"),
            _owner_filter(d, models.table(d.name), d.owner),
        )
        return jsonify(
            {"cards": card_rows(d, where, by, [column], CARDS_PER_COLUMN, offset)[column]}
        )

    @expose("/calendar")
    @login_required
    def calendar(self) -> Any:
        d = self._board_doc("calendar")
        spec = d.views["calendar"]
        models = crm().models
        table = models.table(d.name)
        date_field = d.fields[spec["date"]]
        mode = "week" if request.args.get("mode") == "week" else "month"
        try:
            anchor = (
                dt.date.fromisoformat(request.args.get("date", ""))
                if request.args.get("date")
                else dt.date.today()
            )
        except ValueError:
            anchor = dt.date.today()
        if mode == "week":
            start = anchor - dt.timedelta(days=anchor.weekday())
            end = start + dt.timedelta(days=7)
        else:
            first = anchor.replace(day=1)
            start = first - dt.timedelta(days=first.weekday())
            last = anchor.replace(day=cal.monthrange(anchor.year, anchor.month)[1])
            end = last + dt.timedelta(days=7 - last.weekday())
        column = table.c[date_field.column]
        low: Any = start
        high: Any = end
        if date_field.type == "datetime":
            low = dt.datetime.combine(start, dt.time(), dt.UTC)
            high = dt.datetime.combine(end, dt.time(), dt.UTC)
        owner_field = spec.get("owner")
        where = sa.and_(
            access.where(models, principal(), d.name, "read"), column >= low, column < high,
            _owner_filter(d, table, owner_field),
        )  # fmt: skip
        cls = models.cls(d.name)
        from engine.web.service import title

        objs = (
            db_session()
            .execute(
                sa.select(cls)
                .where(where)
                .order_by(getattr(cls, date_field.column), cls.id)
                .limit(MAX_CALENDAR_ENTRIES)
            )
            .scalars()
        )
        days: dict[dt.date, list[dict[str, Any]]] = {}
        for obj in objs:
            value = getattr(obj, date_field.column)
            day = value.date() if isinstance(value, dt.datetime) else value
            days.setdefault(day, []).append(
                {
                    "id": obj.id,
                    "title": title(d, obj),
                    "time": value.strftime("%H:%M") if isinstance(value, dt.datetime) else "",
                }
            )
        counts: dict[dt.date, list[tuple[str, int]]] = {}
        if owner_field:
            owner_col = table.c[d.fields[owner_field].column]
            day_expr = _day(column, date_field.type)
            users = models.table(USER)
            q = (
                sa.select(
                    day_expr.label("day"), users.c.first_name, users.c.last_name, sa.func.count()
                )
                .select_from(table.outerjoin(users, users.c.id == owner_col))
                .where(where)
                .group_by(day_expr, users.c.first_name, users.c.last_name)
            )
            for row in db_session().execute(q):
                key = (
                    row.day if isinstance(row.day, dt.date) else dt.date.fromisoformat(str(row.day))
                )
                counts.setdefault(key, []).append(
                    (f"{row.first_name or ''} {row.last_name or ''}".strip() or "—", row[3])
                )
        weeks = []
        day = start
        while day < end:
            weeks.append([day + dt.timedelta(days=i) for i in range(7)])
            day += dt.timedelta(days=7)
        step = dt.timedelta(days=7) if mode == "week" else dt.timedelta(days=31)
        prev_anchor = (anchor - step).replace(day=1) if mode == "month" else anchor - step
        next_anchor = (
            (anchor.replace(day=1) + step).replace(day=1) if mode == "month" else anchor + step
        )
        return self.render_template(  # type: ignore[attr-defined]
            "crm/calendar.html", d=d, weeks=weeks, days=days, mode=mode, anchor=anchor, view=type(self).__name__,
            prev_anchor=prev_anchor, next_anchor=next_anchor, owners=_owners(d, owner_field),
            owner=request.args.get("owner", type=int), date_field=date_field, counts=counts,
            today=dt.date.today(),
        )  # fmt: skip


def _day(column: Any, ftype: str) -> Any:
    """The calendar day of a date or datetime column, in SQL (UTC days)."""
    if ftype == "date":
        return column
    if crm().db.engine.dialect.name == "sqlite":
        return sa.func.date(column)
    return sa.cast(sa.func.timezone("UTC", column), sa.Date)


def _owners(d: DocType, owner_field: str | None = None) -> list[dict[str, Any]]:
    """Active users to filter by (a bounded list: a sales department, not every row)."""
    if not (owner_field or d.owner):
        return []
    users = crm().models.table(USER)
    rows = db_session().execute(
        sa.select(users.c.id, users.c.first_name, users.c.last_name).where(users.c.active.is_(True))
        .order_by(users.c.first_name, users.c.last_name).limit(200)
    )  # fmt: skip
    return [{"id": r.id, "name": f"{r.first_name} {r.last_name}".strip()} for r in rows]
