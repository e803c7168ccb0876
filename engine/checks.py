"""Semantic checks over a whole registry: many small named checks.

Each check looks at one thing (a field's options, a transition, an access
rule, ...) and returns problems with the YAML location and a message that
names the type, the field and, where it helps, the likely intended name.
The loader runs them after merging all layers; plugins add their own through
the ``crm_check`` hook.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from engine import expressions
from engine.errors import Loc, Problem, did_you_mean
from engine.filters import check_filter
from engine.registry import USER, DocType, Field, Registry

Check = Callable[[Registry], Iterator[Problem]]
CHECKS: list[Check] = []
COMMON_OPTIONS = {
    "type", "label", "required", "default", "unique", "index", "help", "readonly",
    "hidden", "min", "max", "compute",
}  # fmt: skip
REPORT_TYPES = {
    "funnel", "conversion", "plan_fact", "by_manager", "by_department", "forecast",
    "stage_time", "won_lost", "loss_reasons", "stale", "sources", "abc_xyz",
    "processes", "discipline", "table",
}  # fmt: skip


def check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


def check_registry(registry: Registry, field_types: set[str] | None = None) -> list[Problem]:
    problems: list[Problem] = []
    for fn in CHECKS:
        problems.extend(fn(registry))
    return problems


def _docs(registry: Registry) -> Iterator[DocType]:
    return (d for d in registry.documents.values() if not d.builtin)


def _all_fields(d: DocType) -> Iterator[tuple[str, Field, dict[str, Field]]]:
    """(path, field, sibling fields) for a document's fields and its table rows' fields."""
    for f in d.fields.values():
        if f.system:
            continue
        yield f"{d.name}.{f.name}", f, dict(d.fields)
        for c in f.fields.values():
            yield f"{d.name}.{f.name}.{c.name}", c, dict(f.fields)


def field_path_problem(registry: Registry, d: DocType, path: str) -> str | None:
    """Why a dotted field name does not resolve on ``d``, or None."""
    current = d
    parts = path.split(".")
    for i, part in enumerate(parts):
        f = current.fields.get(part)
        if f is None:
            return f"`{current.name}` has no field `{part}`{did_you_mean(part, current.fields)}"
        if i < len(parts) - 1:
            if f.type != "ref" or f.to not in registry.documents:
                return f"`{current.name}.{part}` is not a reference, so `{path}` cannot follow it"
            current = registry.documents[f.to]
    return None


# --- fields --------------------------------------------------------------------


@check
def field_options_fit_type(registry: Registry) -> Iterator[Problem]:
    from engine.fieldtypes import CORE_TYPES

    specific = {t.name: t.options for t in CORE_TYPES}
    all_specific = set().union(*specific.values())
    for d in registry.documents.values():
        for path, f, _ in _all_fields(d):
            allowed = specific.get(f.type, all_specific)
            for option in all_specific - allowed:
                if getattr(f, option, None) not in (None, {}, ()) and (
                    option != "fields" or f.fields
                ):
                    if option == "values" and not f.values:
                        continue
                    yield Problem(f.loc, f"`{path}`: `{option}` does not apply to a {f.type} field")


@check
def refs_point_to_types(registry: Registry) -> Iterator[Problem]:
    for d in registry.documents.values():
        for path, f, _ in _all_fields(d):
            if f.type != "ref":
                continue
            if not f.to:
                yield Problem(f.loc, f"`{path}` is a ref: say what it refers `to`")
            elif f.to not in registry.documents:
                yield Problem(
                    f.loc,
                    f"`{path}` refers to an unknown type `{f.to}`{did_you_mean(f.to, registry.documents)}",
                )


@check
def enums_have_values(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        for path, f, _ in _all_fields(d):
            if f.type == "enum" and not f.values:
                yield Problem(f.loc, f"the enum `{path}` needs `values`")
            if f.type == "enum" and f.default is not None and str(f.default) not in f.values:
                yield Problem(
                    f.loc,
                    f"the default `{f.default}` of `{path}` is not one of its values"
                    f"{did_you_mean(f.default, f.values)}",
                )


@check
def defaults_fit_type(registry: Registry) -> Iterator[Problem]:
    from engine.fieldtypes import CORE_TYPES, Context, Invalid

    types = {t.name: t for t in CORE_TYPES}
    for d in _docs(registry):
        for path, f, _ in _all_fields(d):
            if f.default is None or f.type in ("enum", "table") or f.type not in types:
                continue
            if f.default == "current_user":
                if f.type != "ref" or f.to != USER:
                    yield Problem(
                        f.loc, f"`{path}`: `current_user` is a default for a ref to User only"
                    )
                continue
            if f.default in ("today", "now") and f.type in ("date", "datetime"):
                continue
            try:
                types[f.type].normalize(
                    f.default, f, Context(registry.settings.get("region", "RU"))
                )
            except Invalid as exc:
                yield Problem(f.loc, f"the default of `{path}` {exc}")


@check
def min_max_fit(registry: Registry) -> Iterator[Problem]:
    ordered = {"integer", "decimal", "money", "date", "datetime", "string"}
    for d in _docs(registry):
        for path, f, _ in _all_fields(d):
            if (f.min is not None or f.max is not None) and f.type not in ordered:
                yield Problem(f.loc, f"`{path}`: `min`/`max` do not apply to a {f.type} field")
            elif (
                f.min is not None
                and f.max is not None
                and type(f.min) is type(f.max)
                and f.min > f.max
            ):
                yield Problem(f.loc, f"`{path}`: `min` {f.min} is above `max` {f.max}")


@check
def patterns_compile(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        for path, f, _ in _all_fields(d):
            if f.pattern:
                try:
                    re.compile(f.pattern)
                except re.error as exc:
                    yield Problem(
                        f.loc, f"the pattern of `{path}` is not a valid regular expression: {exc}"
                    )


@check
def computed_fields(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        for path, f, siblings in _all_fields(d):
            if not f.compute:
                continue
            if f.type in ("table", "ref"):
                yield Problem(f.loc, f"`{path}`: a {f.type} field cannot be computed")
                continue
            names = [n for n in siblings if n != f.name]
            for message in expressions.check(
                f.compute, names=names, resolve=_resolver(registry, d)
            ):
                yield Problem(f.loc, f"`{path}`: {message}")


# --- document settings -----------------------------------------------------------


@check
def owner_is_user_ref(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        if d.owner is None:
            continue
        f = d.fields.get(d.owner)
        if f is None:
            yield Problem(
                d.loc,
                f"the owner of `{d.name}` names no field `{d.owner}`{did_you_mean(d.owner, d.fields)}",
            )
        elif f.type != "ref" or f.to != USER:
            yield Problem(
                f.loc, f"the owner of `{d.name}` must be a ref to User; `{d.owner}` is a {f.type}"
            )


@check
def title_template(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        if d.title:
            for message in expressions.check(
                d.title, template=True, names=list(d.fields), resolve=_resolver(registry, d)
            ):
                yield Problem(d.loc, f"the title of `{d.name}`: {message}")


@check
def list_names_fields(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        if d.list is None:
            continue
        for part in ("columns", "search", "filters"):
            for name in getattr(d.list, part):
                problem = field_path_problem(registry, d, name)
                if problem:
                    yield Problem(d.list.loc, f"list {part} of `{d.name}`: {problem}")
                elif registry.field_path(d.name, name)[-1].type == "table":
                    yield Problem(d.list.loc, f"list {part} of `{d.name}`: `{name}` is a table")
        order = d.list.order_field
        if order not in d.fields or not d.fields[order].stored:
            yield Problem(
                d.list.loc,
                f"the list order of `{d.name}` names no field `{order}`{did_you_mean(order, d.fields)}",
            )


@check
def form_names_fields(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        seen: set[str] = set()
        for section in d.form:
            for name in section.fields:
                if name not in d.fields:
                    yield Problem(
                        d.loc,
                        f"the form of `{d.name}` names no field `{name}`{did_you_mean(name, d.fields)}",
                    )
                elif name in seen:
                    yield Problem(d.loc, f"the form of `{d.name}` shows `{name}` twice")
                seen.add(name)


@check
def views_name_fields(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        kanban = d.views.get("kanban")
        if kanban:
            by = d.fields.get(kanban["by"])
            if by is None:
                yield Problem(
                    d.loc,
                    f"the kanban of `{d.name}` is by an unknown field `{kanban['by']}`{did_you_mean(kanban['by'], d.fields)}",
                )
            elif by.type != "enum":
                yield Problem(
                    by.loc,
                    f"the kanban of `{d.name}` needs an enum or status field; `{by.name}` is a {by.type}",
                )
            amount = kanban.get("amount")
            if amount and (
                amount not in d.fields
                or d.fields[amount].type not in ("money", "decimal", "integer")
            ):
                yield Problem(
                    d.loc, f"the kanban amount of `{d.name}` must be a number field, not `{amount}`"
                )
        calendar = d.views.get("calendar")
        if calendar:
            for key in ("date", "end"):
                name = calendar.get(key)
                if name is None:
                    continue
                f = d.fields.get(name)
                if f is None or f.type not in ("date", "datetime"):
                    yield Problem(
                        d.loc,
                        f"the calendar {key} of `{d.name}` must be a date or datetime field, not `{name}`{did_you_mean(name, d.fields)}",
                    )
            owner = calendar.get("owner")
            if owner and (owner not in d.fields or d.fields[owner].to != USER):
                yield Problem(
                    d.loc, f"the calendar owner of `{d.name}` must be a ref to User, not `{owner}`"
                )


@check
def numbering_field_free(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        if d.numbering and not d.fields[d.numbering.field].system:
            yield Problem(
                d.loc,
                f"`{d.name}` is numbered into `{d.numbering.field}`, which is also declared as a field",
            )


# --- statuses ----------------------------------------------------------------------


@check
def statuses_consistent(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        st = d.statuses
        if st is None:
            continue
        if not st.states:
            yield Problem(st.loc, f"the statuses of `{d.name}` list no states")
            continue
        if st.initial not in st.states:
            yield Problem(
                st.loc,
                f"the initial state `{st.initial}` of `{d.name}` is not a state{did_you_mean(st.initial, st.states)}",
            )
        declared = d.fields[st.field]
        if not declared.system:
            yield Problem(
                declared.loc,
                f"`{d.name}.{st.field}` holds the status: it is made from `statuses.states`, do not declare it",
            )
        for t in st.transitions:
            for end, names in (("from", t.sources), ("to", t.targets)):
                for name in names:
                    if name == "*" and end == "from":
                        continue
                    if name not in st.states:
                        yield Problem(
                            t.loc,
                            f"a transition of `{d.name}` goes {end} an unknown state `{name}`{did_you_mean(name, st.states)}",
                        )
            for role in t.roles:
                if role not in registry.roles:
                    yield Problem(
                        t.loc,
                        f"a transition of `{d.name}` names an unknown role `{role}`{did_you_mean(role, registry.roles)}",
                    )
            if t.when:
                for message in expressions.check(
                    t.when, names=list(d.fields), resolve=_resolver(registry, d)
                ):
                    yield Problem(t.loc, f"`when` of a transition of `{d.name}`: {message}")
        for s in st.states.values():
            for name in s.require:
                if name not in d.fields:
                    yield Problem(
                        s.loc,
                        f"the state `{s.name}` of `{d.name}` requires an unknown field `{name}`{did_you_mean(name, d.fields)}",
                    )
            if s.outcome and not s.final:
                yield Problem(
                    s.loc,
                    f"the state `{s.name}` of `{d.name}` has an outcome, so it must be `final: true`",
                )
            if s.require_next:
                yield from _require_next(registry, d, s)


def _require_next(registry: Registry, d: DocType, s: Any) -> Iterator[Problem]:
    rn = s.require_next
    target = registry.documents.get(rn.document)
    if target is None:
        yield Problem(
            rn.loc,
            f"`require_next` of `{d.name}.{s.name}` names an unknown type `{rn.document}`{did_you_mean(rn.document, registry.documents)}",
        )
        return
    link = target.fields.get(rn.link)
    if link is None:
        yield Problem(
            rn.loc,
            f"`require_next`: `{rn.document}` has no field `{rn.link}`{did_you_mean(rn.link, target.fields)}",
        )
    elif link.type != "ref" or (link.to != d.name and not _links_through(registry, d, link)):
        yield Problem(
            rn.loc,
            f"`require_next`: `{rn.document}.{rn.link}` must be a ref to `{d.name}` (or to a type `{d.name}` refers to)",
        )
    if target.statuses is None and not any(
        f.type in ("date", "datetime") for f in target.fields.values() if not f.system
    ):
        yield Problem(rn.loc, f"`require_next`: `{rn.document}` has no date to plan by")


def _links_through(registry: Registry, d: DocType, link: Field) -> bool:
    """``require_next.link`` may name a ref to a type the document itself refers to
    (completing an Interaction demands the next one for the same Interest)."""
    return any(
        f.type == "ref" and f.to == link.to and f.name == link.name for f in d.fields.values()
    )


# --- access and roles ----------------------------------------------------------------


@check
def access_names_roles(registry: Registry) -> Iterator[Problem]:
    for d in registry.documents.values():
        for role, rule in d.access.items():
            if role not in registry.roles and role != "admin":
                yield Problem(
                    rule.loc,
                    f"access of `{d.name}` names an unknown role `{role}`{did_you_mean(role, registry.roles)}",
                )
            if "own" in (rule.read, rule.update, rule.delete) and d.owner is None:
                yield Problem(rule.loc, f"access `own` on `{d.name}` needs an `owner` field")
            if rule.create == "own":
                yield Problem(rule.loc, f"access of `{d.name}`: `create` is true or false, not own")


# --- segments and reports --------------------------------------------------------------


@check
def segments_valid(registry: Registry) -> Iterator[Problem]:
    for s in registry.segments.values():
        if s.document not in registry.documents:
            yield Problem(
                s.loc,
                f"the segment `{s.name}` is of an unknown type `{s.document}`{did_you_mean(s.document, registry.documents)}",
            )
            continue
        yield from check_filter(registry, registry.documents[s.document], s.filter, s.loc)


@check
def reports_valid(registry: Registry) -> Iterator[Problem]:
    for r in registry.reports.values():
        if r.type not in REPORT_TYPES:
            yield Problem(
                r.loc,
                f"the report `{r.name}` has an unknown type `{r.type}`{did_you_mean(r.type, REPORT_TYPES)}",
            )
        d = registry.documents.get(r.document)
        if d is None:
            yield Problem(
                r.loc,
                f"the report `{r.name}` is of an unknown type `{r.document}`{did_you_mean(r.document, registry.documents)}",
            )
            continue
        for key in ("amount", "date", "subject"):
            name = r.options.get(key)
            if isinstance(name, str):
                problem = field_path_problem(registry, d, name)
                if problem:
                    yield Problem(_opt_loc(r, key), f"the report `{r.name}`: {problem}")
        by = r.options.get("by")
        for name in [by] if isinstance(by, str) else by or []:
            problem = field_path_problem(registry, d, str(name))
            if problem:
                yield Problem(_opt_loc(r, "by"), f"the report `{r.name}`: {problem}")
        plan = r.options.get("plan")
        if plan is not None and plan not in registry.documents:
            yield Problem(
                _opt_loc(r, "plan"), f"the report `{r.name}` names an unknown plan type `{plan}`"
            )
        if "filter" in r.options:
            yield from check_filter(registry, d, r.options["filter"], _opt_loc(r, "filter"))


def _opt_loc(r: Any, key: str) -> Loc:
    getter = getattr(r.options, "value_loc", None)
    return getter(key) if getter else r.loc


def _resolver(registry: Registry, d: DocType) -> Callable[[list[str]], str | None]:
    """Dotted names in expressions: ``doc.customer.phone`` or ``customer.phone``."""

    def resolve(path: list[str]) -> str | None:
        names = path[1:] if path[0] == "doc" else path
        if (
            path[0] in ("user", "now")
            or not names
            or (names[0] not in d.fields and path[0] != "doc")
        ):
            return None
        checked: list[str] = []
        for part in names:
            checked.append(part)
            problem = field_path_problem(registry, d, ".".join(checked))
            if problem:
                return problem
            f = registry.field_path(d.name, ".".join(checked))[-1]
            if f.type != "ref":
                return None
        return None

    return resolve
