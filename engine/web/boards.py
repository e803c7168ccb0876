"""Kanban and calendar views: server-side aggregates and pages, never all rows.

The kanban asks one GROUP BY for each column's count and sum and one
windowed query for the first cards of every column; a column pages on its
own. Dragging a card posts to the REST transition endpoint with the card's
version, so the same rules (roles, guards, required fields) apply: a move that
only lacks fields the user may fill in is answered with them (``needs``) and
the board asks for them in a small form; any other refusal is shown on the
card. The answer carries both columns' count and sum (:func:`column_totals`,
the one query behind the board's totals too), and the toast's undo is the
reverse move under the same rules. The calendar asks for one date range at a time: the entries of
the range (at most ``MAX_CALENDAR_ENTRIES``) and a GROUP BY for the count of
every day and owner. Either page costs the same few queries however many
records there are: titles' refs are loaded for all cards at once.
"""

from __future__ import annotations

import calendar as cal
import datetime as dt
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import abort, jsonify, request
from flask_appbuilder import expose
from flask_login import login_required

from engine import access, clock
from engine.i18n import gettext
from engine.registry import PROCESS, USER, DocType
from engine.statuses import record_kind, stage_control, stage_order
from engine.web.base import crm, db_session, locale, principal
from engine.web.display import local

CARDS_PER_COLUMN = 20
#: how long the board offers to undo a move, in milliseconds
UNDO_MS = 8000
MAX_CALENDAR_ENTRIES = 500
#: entries a calendar day shows before "+N"
ENTRIES_PER_DAY = 8
MAX_OFFSET = 100_000


def kanban_columns(d: DocType, kind: str | None = None) -> tuple[str, list[str]]:
    """The field a board groups by and its columns: by the status, the
    stages of the deal kind it is switched to (every state without one), in
    their order; by another field, its values."""
    by = d.views["kanban"]["by"]
    if d.statuses is not None and by == d.statuses.field:
        return by, stage_order(d, kind)
    return by, list(d.fields[by].values)


def board_kinds(d: DocType) -> list[tuple[str, str]]:
    """The kinds a board switches between (``statuses.control``'s field): value, label."""
    c = d.statuses.control if d.statuses is not None else None
    if c is None or c.field not in d.fields:
        return []
    return [(v, label.get(locale())) for v, label in d.fields[c.field].values.items()]


def board_kind(d: DocType) -> str | None:
    """``?kind=``: the kind the board shows, by that kind's own stages."""
    raw = request.args.get("kind")
    if raw in (None, ""):
        return None
    kinds = [v for v, _ in board_kinds(d)]
    if raw not in kinds:
        abort(400, gettext("`kind`: one of %(kinds)s", kinds=", ".join(kinds) or "—"))
    return raw


def _arg_id(name: str) -> int | None:
    from engine.fieldtypes import valid_id

    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    value = valid_id(raw)
    if value is None:
        abort(400, f"`{name}` must be the id of a record")
    return value


def _owner_filter(d: DocType, table: sa.Table, owner_field: str | None) -> sa.ColumnElement[bool]:
    return owner_filter(d, table, owner_field, _arg_id("owner"), _arg_id("department"))


def owner_filter(d: DocType, table: sa.Table, owner_field: str | None, value: int | None,
                 department: int | None) -> sa.ColumnElement[bool]:  # fmt: skip
    """One owner's records, or a department's, when the board is switched to them."""
    if value and owner_field:
        return table.c[d.fields[owner_field].column] == value
    if department and owner_field and "department" in crm().registry.documents[USER].fields:
        users = crm().models.table(USER)
        return table.c[d.fields[owner_field].column].in_(
            sa.select(users.c.id).where(users.c.department_id == department)
        )
    return sa.true()


def _person(user: Any) -> str:
    if user is None:
        return ""
    return f"{user.first_name or ''} {user.last_name or ''}".strip() or str(user.username)


def board_where(
    d: DocType, owner: int | None, department: int | None, kind: str | None = None
) -> sa.ColumnElement[bool]:
    """The records a board shows: those the user may read, of the owner or
    department and the deal kind it is switched to."""
    models = crm().models
    table = models.table(d.name)
    c = d.statuses.control if d.statuses is not None else None
    of_kind = (
        table.c[d.fields[c.field].column] == kind
        if kind is not None and c is not None
        else sa.true()
    )
    return sa.and_(
        access.where(models, principal(), d.name, "read"),
        owner_filter(d, table, d.owner, owner, department),
        of_kind,
    )


def column_totals(
    d: DocType, where: sa.ColumnElement[bool], states: list[str]
) -> dict[str, dict[str, Any]]:
    """The count and the sum (of the kanban's ``amount`` field, formatted;
    "" without one) of the records in each of ``states``: one GROUP BY over
    the rows ``where`` lets the user see. The board's columns and the answer
    to a move both come from here."""
    from engine.web.formatting import shown

    table = crm().models.table(d.name)
    by = d.fields[d.views["kanban"]["by"]]
    amount = board_amount(d)
    column = table.c[by.column]
    query = (
        sa.select(column, sa.func.count(),
                  sa.func.sum(table.c[d.fields[amount].column]) if amount else sa.null())
        .where(where, column.in_(states))
        .group_by(column)
    )  # fmt: skip
    found = {row[0]: (row[1], row[2]) for row in db_session().execute(query)}
    return {
        s: {
            "count": found.get(s, (0, None))[0],
            "sum": shown(d.fields[amount], found.get(s, (0, None))[1] or 0) if amount else "",
        }
        for s in states
    }


def _needed_inputs(d: DocType, states: list[str]) -> dict[str, list[Any]]:
    """Per column, the fields entering it may require that the user can fill
    in: the board's "fill in to move" form shows those the move asks for."""
    from engine.web import forms

    st = d.statuses
    if st is None:
        return {}
    out: dict[str, list[Any]] = {}
    for s in states:
        state = st.states.get(s)
        if state is None:
            continue
        fields = [d.fields[n] for n in state.require if forms.settable(d.fields[n], d)]
        if fields:
            out[s] = fields
    return out


def board_amount(d: DocType) -> str | None:
    """The field the kanban sums and shows on cards: none when it is hidden
    from the user (a column's sum would tell its values)."""
    amount: str | None = d.views["kanban"].get("amount")
    if amount and not access.field_rights(crm().registry, principal(), d.name).readable(amount):
        return None
    return amount


def card_rows(d: DocType, where: sa.ColumnElement[bool], by: str, states: list[str], per: int,
              offset: int = 0) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """The first ``per`` cards of every column in one windowed query, then
    the records and their titles' refs in one query each."""
    from engine.web.fetch import ref_loads, title_refs
    from engine.web.formatting import shown, title

    models = crm().models
    table = models.table(d.name)
    amount = board_amount(d)
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
    loads = ref_loads(d, [*title_refs(d), d.owner])
    objs = db_session().execute(
        sa.select(cls)
        .where(cls.id.in_(picked))
        .order_by(cls.created_at.desc(), cls.id.desc())
        .options(*loads)
    )
    for obj in objs.scalars():
        card = {"id": obj.id, "title": title(d, obj), "version": obj.version}
        # a typical sale's card stays put: its process moves it
        card["fixed"] = stage_control(d, record_kind(d, obj)) == PROCESS
        if amount:
            card["amount"] = shown(d.fields[amount], getattr(obj, amount))
        if d.owner:
            card["owner"] = _person(getattr(obj, d.owner))
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
        return d

    @expose("/kanban")
    @login_required
    def kanban(self) -> Any:
        from engine.web.formatting import company_tz
        from engine.web.views import _labels

        d = self._board_doc("kanban")
        kind = board_kind(d)
        by, states = kanban_columns(d, kind)
        where = board_where(d, _arg_id("owner"), _arg_id("department"), kind)
        amount = board_amount(d)
        totals = column_totals(d, where, states)
        cards = card_rows(d, where, by, states, CARDS_PER_COLUMN)
        f = d.fields[by]
        columns = [
            {
                "name": s,
                "label": f.values[s].get(locale()),
                "count": totals[s]["count"],
                "sum": totals[s]["sum"],
                "cards": cards[s],
            }
            for s in states
        ]
        return self.render_template(  # type: ignore[attr-defined]
            "crm/kanban.html", d=d, columns=columns, view=type(self).__name__, per=CARDS_PER_COLUMN,
            owners=_owners(d), owner=_arg_id("owner"),
            amount_label=d.fields[amount].label.get(locale()) if amount else "",
            departments=_departments(), department=_arg_id("department"), boards=_boards(),
            needs=_needed_inputs(d, states), undo_ms=UNDO_MS, refs={}, **_labels(),
            kinds=board_kinds(d), kind=kind,
            company_tz=getattr(company_tz(), "key", "UTC"),
        )  # fmt: skip

    @expose("/kanban/cards")
    @login_required
    def kanban_cards(self) -> Any:
        """The next page of one column, as JSON."""
        d = self._board_doc("kanban")
        kind = board_kind(d)
        by, states = kanban_columns(d, kind)
        column = request.args.get("column", "")
        if column not in states:
            return jsonify({"message": gettext("unknown column `%(name)s`", name=column[:50])}), 400
        offset = request.args.get("offset", 0, type=int)
        if not 0 <= offset <= MAX_OFFSET:
            message = gettext("the offset must be between 0 and %(most)s", most=MAX_OFFSET)
            return jsonify({"message": message}), 400
        where = board_where(d, _arg_id("owner"), _arg_id("department"), kind)
        return jsonify(
            {"cards": card_rows(d, where, by, [column], CARDS_PER_COLUMN, offset)[column]}
        )

    @expose("/calendar")
    @login_required
    def calendar(self) -> Any:
        from engine.web.fetch import ref_loads
        from engine.web.formatting import company_tz, title

        d = self._board_doc("calendar")
        spec = d.views["calendar"]
        models = crm().models
        table = models.table(d.name)
        date_field = d.fields[spec["date"]]
        tz = company_tz()
        mode = request.args.get("mode") or "month"
        if mode not in ("month", "week"):
            abort(400, "`mode` is `month` or `week`")
        raw_date = request.args.get("date")
        try:
            anchor = dt.date.fromisoformat(raw_date) if raw_date else clock.today(tz)
        except ValueError:
            abort(400, "`date` must be a date such as 2026-01-31")
        if not dt.date(1900, 1, 1) <= anchor <= dt.date(9000, 12, 31):
            abort(400, "`date` is out of range")
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
            low = dt.datetime.combine(start, dt.time(), tz).astimezone(dt.UTC)
            high = dt.datetime.combine(end, dt.time(), tz).astimezone(dt.UTC)
        owner_field = spec.get("owner")
        where = sa.and_(
            access.where(models, principal(), d.name, "read"), column >= low, column < high,
            _owner_filter(d, table, owner_field),
        )  # fmt: skip
        cls = models.cls(d.name)
        objs = db_session().execute(
            sa.select(cls).where(where).order_by(getattr(cls, date_field.column), cls.id)
            .limit(MAX_CALENDAR_ENTRIES).options(*ref_loads(d))
        ).scalars()  # fmt: skip
        days: dict[dt.date, list[dict[str, Any]]] = {}
        for obj in objs:
            value = getattr(obj, date_field.column)
            moment = local(value, tz) if isinstance(value, dt.datetime) else value
            day = moment.date() if isinstance(moment, dt.datetime) else moment
            days.setdefault(day, []).append(
                {
                    "id": obj.id,
                    "title": title(d, obj),
                    "time": moment.strftime("%H:%M") if isinstance(moment, dt.datetime) else "",
                }
            )
        # counts come from the database: exact even when entries were capped
        day_expr = _day(column, date_field.type, tz, start)
        counts: dict[dt.date, list[tuple[str, int]]] = {}
        totals: dict[dt.date, int] = {}
        if owner_field:
            owner_col = table.c[d.fields[owner_field].column]
            users = models.table(USER)
            q = (
                sa.select(day_expr.label("day"), users.c.first_name, users.c.last_name,
                          users.c.username, sa.func.count())
                .select_from(table.outerjoin(users, users.c.id == owner_col))
                .where(where)
                .group_by(day_expr, users.c.first_name, users.c.last_name, users.c.username)
                .order_by(day_expr, users.c.first_name, users.c.last_name)
            )  # fmt: skip
            rows = [(r.day, _person(r) or "—", r[4]) for r in db_session().execute(q)]
        else:
            q = sa.select(day_expr.label("day"), sa.func.count()).where(where).group_by(day_expr)
            rows = [(r.day, "", r[1]) for r in db_session().execute(q)]
        for raw_day, name, n in rows:
            key = raw_day if isinstance(raw_day, dt.date) else dt.date.fromisoformat(str(raw_day))
            if name:
                counts.setdefault(key, []).append((name, n))
            totals[key] = totals.get(key, 0) + n
        others = _other_load(d, start, end, tz) if spec.get("load") else {}
        for key, items in others.items():
            totals[key] = totals.get(key, 0) + sum(n for _, n, _ in items)
        weeks = []
        day = start
        while day < end:
            weeks.append([day + dt.timedelta(days=i) for i in range(7)])
            day += dt.timedelta(days=7)
        if mode == "week":
            prev_anchor, next_anchor = anchor - dt.timedelta(days=7), anchor + dt.timedelta(days=7)
        else:
            prev_anchor = (anchor.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
            next_anchor = (anchor.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        return self.render_template(  # type: ignore[attr-defined]
            "crm/calendar.html", d=d, weeks=weeks, days=days, mode=mode, anchor=anchor, view=type(self).__name__,
            prev_anchor=prev_anchor, next_anchor=next_anchor, owners=_owners(d, owner_field),
            owner=_arg_id("owner"), date_field=date_field, counts=counts, totals=totals, others=others,
            today=clock.today(tz), per_day=ENTRIES_PER_DAY,
            departments=_departments(), department=_arg_id("department"),
            can_create=access.allowed(crm().registry, principal(), d.name, "create"),
        )  # fmt: skip


def _other_load(
    d: DocType, start: dt.date, end: dt.date, tz: dt.tzinfo
) -> dict[dt.date, list[tuple[str, int, str]]]:
    """Per day, the open entries of the other calendars that count as load
    (``load: true``: a manager's tasks beside his interactions), for the same
    person or department, as ``(label, count, link)``: one UNION ALL query."""
    registry = crm().registry
    models = crm().models
    selects = []
    for o in registry.documents.values():
        spec = o.views.get("calendar")
        if o is d or not spec or not spec.get("load"):
            continue
        if not access.allowed(registry, principal(), o.name, "read"):
            continue
        table = models.table(o.name)
        f = o.fields[spec["date"]]
        column = table.c[f.column]
        low: Any = start
        high: Any = end
        if f.type == "datetime":
            low = dt.datetime.combine(start, dt.time(), tz).astimezone(dt.UTC)
            high = dt.datetime.combine(end, dt.time(), tz).astimezone(dt.UTC)
        where = [
            access.where(models, principal(), o.name, "read"), column >= low, column < high,
            _owner_filter(o, table, spec.get("owner")),
        ]  # fmt: skip
        if o.statuses is not None:  # done and cancelled work is no load
            final = [n for n, st in o.statuses.states.items() if st.final]
            if final:
                where.append(table.c[o.fields[o.statuses.field].column].not_in(final))
        day = _day(column, f.type, tz, start)
        selects.append(
            sa.select(
                sa.literal(o.name, sa.String(64)).label("doctype"), day.label("day"),
                sa.func.count().label("n"),
            ).where(*where).group_by(day)
        )  # fmt: skip
    if not selects:
        return {}
    out: dict[dt.date, list[tuple[str, int, str]]] = {}
    query = selects[0] if len(selects) == 1 else sa.union_all(*selects)
    for row in db_session().execute(query):
        o = registry.documents[row.doctype]
        key = row.day if isinstance(row.day, dt.date) else dt.date.fromisoformat(str(row.day))
        args = {k: v for k, v in request.args.items() if k in ("owner", "department")}
        link = f"/{o.resource}/calendar?" + urlencode(
            {**args, "mode": "week", "date": key.isoformat()}
        )
        out.setdefault(key, []).append((o.label.get(locale()), int(row.n), link))
    return out


def _departments() -> list[dict[str, Any]]:
    """Departments to switch a board to, when users have a department."""
    registry = crm().registry
    f = registry.documents[USER].fields.get("department")
    if f is None or f.type != "ref" or not access.allowed(registry, principal(), f.to, "read"):
        return []
    table = crm().models.table(f.to)
    name = next((c for c in ("name", "title") if c in table.c), "id")
    rows = db_session().execute(
        sa.select(table.c.id, table.c[name]).order_by(table.c[name]).limit(200)
    )
    return [{"id": r[0], "name": str(r[1])} for r in rows]


def _boards() -> list[dict[str, str]]:
    """Every kanban the user may read: the tabs of "My sales"."""
    registry = crm().registry
    return [
        {"name": d.name, "label": d.label.get(locale()), "url": f"/{d.resource}/kanban"}
        for d in registry.documents.values()
        if "kanban" in d.views and access.allowed(registry, principal(), d.name, "read")
    ]


def _day(column: Any, ftype: str, tz: dt.tzinfo, near: dt.date) -> Any:
    """The calendar day of a date or datetime column, in SQL, on the company's clock."""
    if ftype == "date":
        return column
    if crm().db.engine.dialect.name == "sqlite":
        # SQLite knows no time zones: the offset in force around the range shown
        offset = dt.datetime.combine(near, dt.time(12), tz).utcoffset() or dt.timedelta()
        return sa.func.date(column, f"{int(offset.total_seconds() // 60):+d} minutes")
    name = getattr(tz, "key", "UTC")
    return sa.cast(sa.func.timezone(name, column), sa.Date)


def _owners(d: DocType, owner_field: str | None = None) -> list[dict[str, Any]]:
    """Active users to filter by (a bounded list: a sales department, not every row)."""
    if not (owner_field or d.owner):
        return []
    users = crm().models.table(USER)
    rows = db_session().execute(
        sa.select(users.c.id, users.c.first_name, users.c.last_name, users.c.username)
        .where(users.c.active.is_(True))
        .order_by(users.c.first_name, users.c.last_name).limit(200)
    )  # fmt: skip
    return [{"id": r.id, "name": _person(r)} for r in rows]
