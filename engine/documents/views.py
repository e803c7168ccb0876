"""The service's ground floor: who it acts for, its clock, and records as
expressions see them (views, titles, the expression context)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from engine import access, clock, expressions
from engine.access import Principal
from engine.documents.plans import Shape
from engine.documents.values import (
    MAX_TITLE_DEPTH,
    NUMBERS,
    aware,
    names_used,
)
from engine.fieldtypes import Context
from engine.filters import label_field
from engine.models import Models
from engine.registry import USER, DocType, Field


class DocumentViews:
    """The documents service's state, clock and expression views (see
    :class:`engine.documents.Documents`)."""

    def __init__(
        self,
        models: Models,
        session: Session,
        user_id: int | None = None,
        roles: Iterable[str] = (),
        pm: Any = None,
        now: dt.datetime | Callable[[], dt.datetime] | None = None,
        *,
        username: str = "",
        trusted: bool = False,
    ):
        self.models = models
        self.registry = models.registry
        self.session = session
        self.principal = Principal(user_id, username, frozenset(roles))
        self.pm = pm
        self.trusted = trusted
        self._now = now
        self.type_context = Context(str(self.registry.settings.get("region") or "RU"))
        self._user_view: expressions.DocView | None = None
        self._limits: dict[tuple[int, Any], tuple[Field, Any]] = {}
        self._shapes: dict[str, Shape] = {}
        #: while a title is rendered for a person: refs they may not read show no name
        self._masking = False
        #: the ``unique: warn`` values of the last save that other records hold
        self.warnings: dict[str, Any] = {}
        #: refuse a save with such values (DuplicatesFound): a form before "save anyway"
        self.stop_at_warnings = False
        #: the warnings the user saw and confirmed ("field:id"): these no longer stop
        self.confirmed: set[str] = set()

    @classmethod
    def for_principal(
        cls, models: Models, session: Session, principal: Principal, pm: Any = None, **kw: Any
    ) -> Self:
        return cls(
            models,
            session,
            principal.user_id,
            principal.roles,
            pm,
            username=principal.username,
            **kw,
        )

    # -- the clock -------------------------------------------------------------

    @property
    def user_id(self) -> int | None:
        return self.principal.user_id

    @property
    def timezone(self) -> dt.tzinfo:
        try:
            return ZoneInfo(str(self.registry.settings.get("timezone") or "UTC"))
        except (ZoneInfoNotFoundError, ValueError):
            return dt.UTC

    def now(self) -> dt.datetime:
        value = self._now() if callable(self._now) else self._now
        return aware(value) if value is not None else clock.now()

    def today(self) -> dt.date:
        """Today where the company is: a date field means a day on its calendar."""
        return self.now().astimezone(self.timezone).date()

    # -- what expressions see --------------------------------------------------

    def view(
        self, doctype: str | DocType, source: Any, *, zero: bool = False, depth: int = 0
    ) -> expressions.DocView:
        """A record (an ORM object or a plan's values) as expressions see it:
        refs as views of the referenced record, tables as lists of row views.
        ``zero`` reads empty numbers as 0, like empty cells in a spreadsheet,
        so that ``qty * price`` and ``sum`` work on half-filled rows."""
        d = doctype if isinstance(doctype, DocType) else self.registry.documents[doctype]
        return expressions.DocView(
            source,
            list(d.fields),
            title=lambda v: self._title(d, v, depth),
            wrap=lambda name, raw: self._wrap(d.fields[name], raw, zero, depth),
        )

    def _wrap(self, f: Field, raw: Any, zero: bool, depth: int) -> Any:
        if f.type == "ref":
            target = self._ref_object(f, raw)
            if target is None:
                return None
            if self._masking and not access.may_see(
                self.models, self.principal, f.to or USER, target
            ):
                return access.hidden_label(self.registry, target.id)
            return self.view(f.to or USER, target, depth=depth + 1)
        if f.type == "table":
            return [
                expressions.DocView(
                    row, list(f.fields), wrap=lambda n, v: self._wrap(f.fields[n], v, zero, depth)
                )
                for row in raw or ()
            ]
        if zero and raw is None and f.type in NUMBERS:
            return 0
        return raw

    def _ref_object(self, f: Field, raw: Any) -> Any:
        if raw is None:
            return None
        if isinstance(raw, int) and not isinstance(raw, bool):
            return self.session.get(self.models.cls(f.to or USER), raw)
        return raw

    def _title(self, d: DocType, view: expressions.DocView, depth: int) -> str:
        ident = view["id"] if "id" in d.fields else None
        if d.title and depth <= MAX_TITLE_DEPTH:
            try:
                ctx = self.expression_context(view, d.fields, d.title, template=True)
                text = expressions.render(d.title, ctx).strip()
            except expressions.ExpressionError:
                text = ""
            if text:
                return text
        lf = label_field(d)
        if lf is not None and view[lf.name]:
            return str(view[lf.name])
        return f"{d.label.get(self.registry.locale)} #{ident}" if ident else ""

    def user_view(self) -> expressions.DocView | None:
        """The acting user's record, as ``user`` in expressions."""
        if self._user_view is None and self.user_id is not None:
            obj = self.session.get(self.models.cls(USER), self.user_id)
            if obj is not None:
                self._user_view = self.view(USER, obj)
        return self._user_view

    def expression_context(
        self,
        view: expressions.DocView,
        fields: Iterable[str],
        source: str,
        template: bool = False,
    ) -> dict[str, Any]:
        """The names ``source`` uses, and only those: reading every field
        of a record would load every ref it has."""
        used = names_used(source, template)
        ctx: dict[str, Any] = {name: view[name] for name in fields if name in used}
        ctx.update(doc=view, now=self.now())
        ctx[expressions.TODAY] = self.today()  # today() on the company's calendar
        ctx["user"] = self.user_view() if "user" in used else None
        return ctx
