"""The status engine: which state a document may enter now, and entering it.

Pure engine code, no web: forms, REST, plugins and imports ask the same
questions and get the same answers. Every refusal comes back as a list of
:class:`Reason` objects, one per rule that said no, each with a message a
user can act on ("“Planned close” (planned_close) must be filled in"),
because "transition not allowed" alone sends them to the administrator.

Rules, in the order they are checked:

- the target is a state, and not the current one;
- a listed transition leads there (free statuses, with no transitions
  listed, allow any move); a ``final`` state is left only through a
  transition that names it in ``from`` (``"*"`` does not count);
- the user holds one of the transition's ``roles`` (administrators bypass);
- its ``when`` expression is true (over the record as it is about to be);
- the target's ``require``d fields are filled in;
- ``require_next``: enough new documents, planned in the future, come along;
- no plugin vetoes it (``crm_before_transition``).

Nothing is written unless every rule agrees: fields, new documents, the
state and the history row go to the caller's session together.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine import expressions
from engine.documents import Documents, Plan, ValidationFailed, aware, empty, quoted, same
from engine.errors import HandledError
from engine.filters import user_name
from engine.i18n import gettext
from engine.registry import (
    FREE,
    MANUAL,
    PROCESS,
    SELF,
    USER,
    DocType,
    Field,
    State,
    Statuses,
    Transition,
)


@dataclass(frozen=True)
class Reason:
    """One rule that refuses a transition.

    ``rule`` is one of ``state``, ``transition``, ``final``, ``roles``,
    ``when``, ``require``, ``require_next``, ``plugin``; ``field`` is a field
    path (``planned_close``, ``next.0.due``) when a form can show the reason
    next to an input.
    """

    rule: str
    message: str
    field: str | None = None

    def __str__(self) -> str:
        return self.message


class TransitionRefused(HandledError):
    def __init__(self, reasons: Iterable[Reason]):
        self.reasons = list(reasons)
        super().__init__("; ".join(r.message for r in self.reasons))


class StatusEngine:
    """Transitions of documents, on behalf of the user of a :class:`Documents`
    service (its session, principal, plugin manager and clock)."""

    def __init__(self, documents: Documents):
        self.docs = documents
        self.registry = documents.registry
        self.locale = self.registry.locale

    # -- questions -----------------------------------------------------------------

    def current(self, doctype: str, obj: Any) -> str | None:
        return getattr(obj, _statuses(self._doctype(doctype)).field)

    def check(
        self,
        doctype: str,
        obj: Any,
        target: str,
        fields: Mapping[str, Any] | None = None,
        next: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Reason]:
        """Every reason that refuses moving ``obj`` to ``target`` now, with
        ``fields`` set first and ``next`` documents coming along ([] = allowed).
        Raises ValidationFailed when ``fields`` themselves do not fit."""
        d = self._doctype(doctype)
        obj = self.docs.resolve(d.name, obj)
        view = self._view_after(d, obj, fields)
        reasons = self.rules(d, obj, target, view)
        state = _statuses(d).states.get(target)
        if state is not None and state.require_next is not None and not _free(d, obj):
            reasons += self._count_next(d, state, len(next or ()))
        if not reasons:
            reasons = self._vetoes(d, obj, target)
        return reasons

    def allowed_targets(self, doctype: str, obj: Any) -> list[str]:
        """States the record may move to now, for the buttons of a form: the
        transition, role and ``when`` rules only. ``require``d fields and the
        next documents are asked for by the transition's own form."""
        d = self._doctype(doctype)
        obj = self.docs.resolve(d.name, obj)
        view = self.docs.view(d, obj)
        source = getattr(obj, _statuses(d).field)
        return [
            name
            for name in _statuses(d).states
            if name != source and not self.rules(d, obj, name, view, require=False)
        ]

    def rules(
        self, d: DocType, obj: Any, target: str, view: Any, require: bool = True
    ) -> list[Reason]:
        """The metadata's rules (not ``require_next``, not plugins) over
        ``view``, the record as it will be when the transition happens."""
        st = d.statuses
        assert st is not None
        source = getattr(obj, st.field)
        state = st.states.get(target)
        if state is None:
            return [
                Reason(
                    "state",
                    gettext(
                        "`%(state)s` is not a state of %(document)s",
                        state=target,
                        document=quoted(d.label, None, self.locale),
                    ),
                )
            ]
        if target == source:
            return [
                Reason("state", gettext("it is already %(state)s", state=self._state(d, target)))
            ]
        kind = record_kind(d, obj)
        control = stage_control(d, kind)
        if control == PROCESS:
            return [
                Reason(
                    "process",
                    gettext(
                        "%(kind)s moves only through its process: its stages are not changed "
                        "by hand",
                        kind=self._kind(d, kind),
                    ),
                )
            ]
        if target not in stage_order(d, kind):
            return [
                Reason(
                    "state",
                    gettext(
                        "%(state)s is not a stage of %(kind)s",
                        state=self._state(d, target),
                        kind=self._kind(d, kind),
                    ),
                )
            ]
        if control == FREE:
            return []  # status only: any state to any state, no gates
        leaving_final = source in st.states and st.states[source].final
        if st.free:
            candidates: list[Transition] = []
        elif leaving_final:
            candidates = [t for t in st.transitions if target in t.targets and source in t.sources]
        else:
            candidates = [t for t in st.transitions if t.matches(source, target)]
        reasons: list[Reason] = []
        if leaving_final and not candidates:
            reasons.append(
                Reason(
                    "final",
                    gettext(
                        "%(source)s is final: it can be left only through a transition "
                        "listed from it, and none leads to %(target)s",
                        source=self._state(d, source),
                        target=self._state(d, target),
                    ),
                )
            )
        elif not st.free and not candidates:
            reasons.append(
                Reason(
                    "transition",
                    gettext(
                        "no transition from %(source)s to %(target)s",
                        source=self._state(d, source),
                        target=self._state(d, target),
                    ),
                )
            )
        elif candidates:
            reasons += self._best(d, candidates, view)
        if require:
            reasons += self._required(d, state, view)
        return reasons

    def _best(self, d: DocType, candidates: list[Transition], view: Any) -> list[Reason]:
        """Any one matching transition whose roles and ``when`` agree allows the
        move; otherwise every objection of every candidate is reported."""
        found: list[Reason] = []
        for t in candidates:
            reasons = []
            principal = self.docs.principal
            if t.roles and not principal.admin and not principal.roles & set(t.roles):
                allowed = ", ".join(
                    quoted(self.registry.roles[r].label, r, self.locale)
                    if r in self.registry.roles
                    else f"“{r}”"
                    for r in t.roles
                )
                reasons.append(
                    Reason(
                        "roles",
                        gettext("only these roles may make this move: %(roles)s", roles=allowed),
                    )
                )
            if t.when and not self._true(d, t.when, view):
                reasons.append(
                    Reason("when", gettext("the condition `%(when)s` is not met", when=t.when))
                )
            if not reasons:
                return []
            found += [r for r in reasons if r not in found]
        return found

    def _true(self, d: DocType, source: str, view: Any) -> bool:
        """A ``when`` that fails to evaluate (``amount > 0`` with no amount)
        is not met; crm check has already vetted its names."""
        try:
            ctx = self.docs.expression_context(view, d.fields, source)
            return expressions.truthy(expressions.evaluate(source, ctx))
        except expressions.ExpressionError:
            return False

    def _required(self, d: DocType, state: State, view: Any) -> list[Reason]:
        reasons = []
        for name in state.require:
            f = d.fields[name]
            if empty(view[name]):
                reasons.append(
                    Reason(
                        "require",
                        gettext(
                            "%(field)s must be filled in to enter %(state)s",
                            field=quoted(f.label, f.name, self.locale),
                            state=self._state(d, state.name),
                        ),
                        name,
                    )
                )
        return reasons

    def _count_next(self, d: DocType, state: State, count: int) -> list[Reason]:
        rn = state.require_next
        assert rn is not None
        if count >= rn.min:
            return []
        nd = self.registry.documents[rn.document]
        through = ", ".join(quoted(nd.fields[name].label, name, self.locale) for name in rn.link)
        return [
            Reason(
                "require_next",
                gettext(
                    "entering %(state)s needs at least %(min)s new %(document)s planned in "
                    "the future and linked through %(through)s; %(count)s given",
                    state=self._state(d, state.name),
                    min=rn.min,
                    document=quoted(nd.label, nd.name, self.locale),
                    through=through,
                    count=count,
                ),
                "next",
            )
        ]

    def _vetoes(self, d: DocType, obj: Any, target: str) -> list[Reason]:
        source = getattr(obj, _statuses(d).field)
        results = self.docs.call_hook(
            "crm_before_transition", doctype=d, doc=obj, source=source, target=target
        )
        return [Reason("plugin", str(message)) for message in results if message]

    # -- the transition ---------------------------------------------------------------

    def apply(
        self,
        doctype: str,
        obj: Any,
        target: str,
        fields: Mapping[str, Any] | None = None,
        next: Sequence[Mapping[str, Any]] | None = None,
        expected_version: int | None = None,
    ) -> Any:
        """Move ``obj`` to ``target`` in the caller's transaction: set
        ``fields`` (validated like any save), check every rule, create the
        ``next`` documents, set the state, write the history row, call the
        hooks. Raises ValidationFailed or TransitionRefused, having written
        nothing. A vetoing plugin sees ``obj`` as it was: ``fields`` are
        written only once every rule and plugin has agreed."""
        d = self._doctype(doctype)
        st = d.statuses
        assert st is not None
        obj = self.docs.resolve(d.name, obj)
        self.docs.check_version(d, obj, expected_version)
        source = getattr(obj, st.field)
        field_plan = self.docs.plan(d, obj, fields, moving=True) if fields else None
        if field_plan is not None:
            field_plan.raise_errors()
        view = self.docs.view(d, field_plan.values if field_plan else obj)
        reasons = self.rules(d, obj, target, view)
        if reasons:
            raise TransitionRefused(reasons)
        state = st.states[target]
        next_plans: list[Plan] = []
        if state.require_next is not None and not _free(d, obj):
            next_plans = self._plan_next(d, obj, state, field_plan, next or ())
            reasons = self._count_next(d, state, len(next_plans)) + self._planned(state, next_plans)
        elif next:
            raise ValidationFailed(
                {
                    "next": gettext(
                        "%(state)s asks for no new documents", state=self._state(d, target)
                    )
                }
            )
        if not reasons:
            reasons = self._vetoes(d, obj, target)
        if reasons:
            raise TransitionRefused(reasons)
        changes = dict(field_plan.changes) if field_plan else {}
        if field_plan is not None and field_plan.changes:
            self.docs.write(field_plan)
        setattr(obj, st.field, target)
        self.docs.touch(obj)
        changes[st.field] = (source, target)
        created = [self.docs.write(p) for p in next_plans]
        self.docs.flush(d, obj)
        self.docs.add_history(d, obj, source, target)
        for p, new in zip(next_plans, created, strict=True):
            self.docs.add_history(p.doctype, new, None, p.values.get(_status_field(p.doctype)))
        self.docs.flush(d, obj)
        self.docs.call_hook("crm_document_updated", doctype=d, doc=obj, changes=changes)
        for p, new in zip(next_plans, created, strict=True):
            self.docs.call_hook("crm_document_created", doctype=p.doctype, doc=new)
        self.docs.call_hook("crm_status_changed", doctype=d, doc=obj, source=source, target=target)
        return obj

    def _plan_next(
        self,
        d: DocType,
        obj: Any,
        state: State,
        field_plan: Plan | None,
        next: Sequence[Mapping[str, Any]],
    ) -> list[Plan]:
        """Plan each new document with its links filled in from this record
        (``require_next.link``); field errors of all of them come back together
        as ``next.<i>.<field>``."""
        rn = state.require_next
        assert rn is not None
        nd = self.registry.documents[rn.document]
        linked: dict[str, Any] = {}
        for name, source in rn.link.items():
            if source == SELF:
                linked[name] = obj.id
            elif field_plan is not None:
                linked[name] = field_plan.values.get(source)
            else:
                linked[name] = getattr(obj, d.fields[source].column)
        errors: dict[str, str] = {}
        plans = []
        for i, values in enumerate(next):
            prefix = f"next.{i}."
            wrong = [
                name
                for name, value in linked.items()
                if values.get(name) not in (None, "")
                and not same(self._ref_id(values[name]), value)
            ]
            for name in wrong:
                errors[prefix + name] = gettext(
                    "is filled in from this %(document)s",
                    document=quoted(d.label, None, self.locale),
                )
            if wrong:
                continue
            # an interaction of no Interest is followed by one of no Interest;
            # what both have in common (the customer, the contact, the manager)
            # the new one takes from this one unless it was given
            inherited = {
                name: getattr(obj, f.column)
                for name, f in nd.fields.items()
                if f.type == "ref" and name not in rn.link and values.get(name) in (None, "")
                and not f.system and not f.readonly
                and name in d.fields and d.fields[name].type == "ref" and d.fields[name].to == f.to
                and getattr(obj, f.column, None) is not None
            }  # fmt: skip
            p = self.docs.plan(nd, None, {**values, **inherited, **linked}, prefix=prefix)
            errors.update(p.errors)
            plans.append(p)
        if errors:
            raise ValidationFailed(errors)
        return plans

    @staticmethod
    def _ref_id(value: Any) -> Any:
        if hasattr(value, "__table__"):
            return value.id
        try:
            return int(value)
        except (TypeError, ValueError):
            return value

    def _planned(self, state: State, plans: list[Plan]) -> list[Reason]:
        """Each new document must be planned in the future: its status is its
        type's initial one and its plan date lies ahead (a date may be today)."""
        reasons = []
        for i, p in enumerate(plans):
            nd = p.doctype
            label = quoted(nd.label, None, self.locale)
            if nd.statuses is not None and p.values.get(nd.statuses.field) != nd.statuses.initial:
                reasons.append(
                    Reason("require_next", gettext("the new %(document)s %(n)s must start as %(state)s",
                                                   document=label, n=i + 1,
                                                   state=self._state(nd, nd.statuses.initial)),
                           f"next.{i}")
                )  # fmt: skip
            f = plan_field(nd)
            if f is None:
                continue
            value = p.values.get(f.name)
            path = f"next.{i}.{f.name}"
            named = quoted(f.label, f.name, self.locale)
            if value is None:
                reasons.append(
                    Reason(
                        "require_next",
                        gettext(
                            "the new %(document)s %(n)s needs %(field)s in the future",
                            document=label,
                            n=i + 1,
                            field=named,
                        ),
                        path,
                    )
                )
            elif not self._ahead(value):
                reasons.append(
                    Reason(
                        "require_next",
                        gettext(
                            "the new %(document)s %(n)s is planned for %(when)s, which is in "
                            "the past: %(field)s must be in the future",
                            document=label,
                            n=i + 1,
                            when=_show(value),
                            field=named,
                        ),
                        path,
                    )
                )
        return reasons

    def _ahead(self, value: Any) -> bool:
        if isinstance(value, dt.datetime):
            return aware(value) > self.docs.now()
        if isinstance(value, dt.date):
            return value >= self.docs.today()
        return True

    # -- history -------------------------------------------------------------------

    def history(self, doctype: str, obj_id: int) -> list[dict[str, Any]]:
        """Every change of state of a record, newest first: who (id and
        name, the login when none is set), when, which field, from and to."""
        hist = self.docs.models.histories[doctype].__table__
        users = self.docs.models.table(USER)
        stmt = (
            sa.select(hist, user_name(users).label("username"))
            .select_from(hist.outerjoin(users, users.c.id == hist.c.by_id))
            .where(hist.c.doc_id == obj_id)
            .order_by(hist.c.at.desc(), hist.c.id.desc())
        )
        return [
            {
                "id": row.id,
                "at": aware(row.at),
                "by_id": row.by_id,
                "by": row.username,
                "field": row.field,
                "from": row.from_state,
                "to": row.to_state,
            }
            for row in self.docs.session.execute(stmt)
        ]

    # -- helpers -------------------------------------------------------------------

    def _doctype(self, doctype: str) -> DocType:
        d = self.registry.documents[doctype]
        if d.statuses is None:
            raise HandledError(
                gettext(
                    "%(document)s has no statuses", document=quoted(d.label, d.name, self.locale)
                )
            )
        return d

    def _state(self, d: DocType, name: str | None) -> str:
        if name is None:
            return gettext("no state")
        state = d.statuses.states.get(name) if d.statuses else None
        return quoted(state.label, name, self.locale) if state else f"`{name}`"

    def _kind(self, d: DocType, kind: str | None) -> str:
        c = _statuses(d).control
        f = d.fields.get(c.field) if c is not None else None
        if f is None or kind is None or kind not in f.values:
            return quoted(d.label, None, self.locale)
        return quoted(f.values[kind], kind, self.locale)

    def _view_after(self, d: DocType, obj: Any, fields: Mapping[str, Any] | None) -> Any:
        if not fields:
            return self.docs.view(d, obj)
        p = self.docs.plan(d, obj, fields, moving=True)
        p.raise_errors()
        return self.docs.view(d, p.values)


def stage_order(d: DocType, kind: str | None = None) -> list[str]:
    """The states of ``d`` in the order a funnel, a kanban and a report show
    them, for records of a deal kind ``kind`` (None: every kind): the declared
    order (a state's ``after:`` places a later layer's stage among the
    base's), the final states last; a kind with its own ``control.stages``
    goes through those states only."""
    st = _statuses(d)
    names = list(st.states)
    own = st.control.stages.get(kind) if st.control is not None and kind else None
    if own:
        names = [n for n in names if n in own]
    return [n for n in names if not st.states[n].final] + [n for n in names if st.states[n].final]


def stage_control(d: DocType, kind: str | None = None) -> str:
    """How records of ``kind`` move between states: ``process`` (only their
    route map moves them), ``manual`` (the declared transitions, by hand) or
    ``free`` (any state, no gates: status only). ``statuses.control`` says
    which kind is which; without it, or for no kind, every record is manual."""
    c = d.statuses.control if d.statuses is not None else None
    if c is None or kind is None:
        return MANUAL
    return c.of(kind)


def record_kind(d: DocType, obj: Any) -> str | None:
    """The value of the control field (the deal's ``kind``) of a record as
    stored, or None when its statuses have no ``control``."""
    c = d.statuses.control if d.statuses is not None else None
    if c is None or c.field not in d.fields or obj is None:
        return None
    value = getattr(obj, d.fields[c.field].column, None)
    return None if value is None else str(value)


def _free(d: DocType, obj: Any) -> bool:
    return stage_control(d, record_kind(d, obj)) == FREE


def plan_field(d: DocType) -> Field | None:
    """The date a document is planned by: its calendar's date, else its first
    required date or datetime field, else its first date or datetime field."""
    calendar = d.views.get("calendar") or {}
    if calendar.get("date") in d.fields:
        return d.fields[calendar["date"]]
    dates = [f for f in d.fields.values() if f.type in ("date", "datetime") and not f.system]
    candidates = [f for f in dates if f.required] or dates
    return candidates[0] if candidates else None


def _statuses(d: DocType) -> Statuses:
    assert d.statuses is not None, f"{d.name} has no statuses"
    return d.statuses


def _status_field(d: DocType) -> str:
    return d.statuses.field if d.statuses else ""


def _show(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return aware(value).strftime("%Y-%m-%d %H:%M %Z")
    return str(value)
