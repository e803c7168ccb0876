"""Semantic checks over a whole registry: many small named checks.

Each check looks at one thing (a field's options, a transition, an access
rule, ...) and returns problems with the YAML location and a message that
names the type, the field and, where it helps, the likely intended name.
The loader runs them after merging all layers; plugins add their own through
the ``crm_check`` hook.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from engine import expressions
from engine.errors import Loc, Problem, a_or_an, did_you_mean
from engine.filters import check_filter
from engine.names import table_problems
from engine.registry import EVERYONE, FIELD_LEVELS, SELF, USER, DocType, Field, Registry
from engine.yamlload import LList, LMap

Check = Callable[[Registry], Iterator[Problem]]
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


#: where the pieces of the registry were written (see ``Loader.sources``): the
#: frozen registry keeps one location per field or type, the YAML has one per option
_SOURCES: ContextVar[Mapping[tuple[Any, ...], Any]] = ContextVar("crm_check_sources")
#: the report kinds of the enabled plugins (``crm_report_kinds``), beside the engine's own
_REPORT_KINDS: ContextVar[Mapping[str, Any] | None] = ContextVar("crm_report_kinds", default=None)


def check_registry(
    registry: Registry,
    field_types: set[str] | None = None,
    sources: Mapping[tuple[Any, ...], Any] | None = None,
    report_kinds: Mapping[str, Any] | None = None,
) -> list[Problem]:
    """Run every check; ``sources`` (from the loader) sharpens the locations;
    ``report_kinds`` are the report kinds the enabled plugins serve, by type."""
    token = _SOURCES.set(sources or {})
    types = _REPORT_KINDS.set(dict(report_kinds or {}))
    try:
        problems: list[Problem] = []
        for fn in CHECKS:
            problems.extend(fn(registry))
        return problems
    finally:
        _REPORT_KINDS.reset(types)
        _SOURCES.reset(token)


def _source(*key: Any) -> Any:
    return _SOURCES.get({}).get(key)


def _at(node: Any, default: Loc, *keys: Any, item: Any = None) -> Loc:
    """Where ``node[k1][k2]...`` was written (or the list item equal to ``item``)."""
    loc = default
    for key in keys:
        if not isinstance(node, LMap) or key not in node.value_locs:
            return loc
        loc, node = node.value_loc(key), node.get(key)
    if item is not None and isinstance(node, LList):
        for index, value in enumerate(node):
            if value == item:
                return node.item_loc(index)
    return loc


def _key_at(node: Any, default: Loc, key: Any) -> Loc:
    """Where the key ``key`` of ``node`` was written."""
    if isinstance(node, LMap) and key in node.key_locs:
        return node.key_loc(key)
    return default


def _option_loc(path: str, f: Field, option: str) -> Loc:
    """Where a field's option was written: ``Deal.amount`` ``min`` → its value."""
    locs = _source("field", path) or {}
    return locs.get(option, f.loc)


def _setting(d: DocType, key: str) -> tuple[Any, Loc]:
    """A document setting (``list``, ``title``, ...) as written, and where."""
    settings = _source("doc", d.name) or {}
    return settings.get(key, (None, d.loc))


def _expression(source: str, **kwargs: Any) -> list[str]:
    """``expressions.check``, without calling a forbidden callee an unknown name too."""
    problems = expressions.check(source, **kwargs)
    called = {m.group(1) for p in problems if (m := re.search(r" calls `([^`]+)`:", p))}
    return [
        p
        for p in problems
        if not any(p.startswith(f"unknown name `{name}` in ") for name in called)
    ]


def expression_problems(
    registry: Registry, d: DocType, source: str, template: bool = False
) -> list[str]:
    """Why an expression (or a ``{{ }}`` template) over a record of ``d`` would
    fail: its syntax, its safety, and every name and dotted path it uses
    (``amount``, ``doc.customer.phone``). For plugins that read expressions
    from their own sections."""
    return _expression(
        source, template=template, names=list(d.fields), resolve=_resolver(registry, d)
    )


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
            target = f.to or USER
            if f.type != "ref" or target not in registry.documents:
                return f"`{current.name}.{part}` is not a reference, so `{path}` cannot follow it"
            current = registry.documents[target]
    return None


# --- fields --------------------------------------------------------------------


check(table_problems)  # two types (or rows, or a history) sharing one table


@check
def refs_point_to_types(registry: Registry) -> Iterator[Problem]:
    for d in registry.documents.values():
        for path, f, _ in _all_fields(d):
            if f.type != "ref":
                continue
            if not f.to:
                yield Problem(
                    f.loc, f"`{path}` is a ref: say what it refers to, e.g. `to: Customer`"
                )
            elif f.to not in registry.documents:
                yield Problem(
                    _option_loc(path, f, "to"),
                    f"`{path}` refers to an unknown type `{f.to}`"
                    f"{did_you_mean(f.to, registry.documents)}",
                )


@check
def ref_where_valid(registry: Registry) -> Iterator[Problem]:
    """``where`` of a ref: the target's fields, this record's fields of the same
    type, and conditions that are valid filters on the target."""
    from engine import refwhere

    for d in registry.documents.values():
        for f in d.fields.values():
            for c in f.fields.values():
                if c.where is not None:
                    yield Problem(
                        _option_loc(f"{d.name}.{f.name}.{c.name}", c, "where"),
                        f"`{d.name}.{f.name}.{c.name}`: `where` applies to a document's "
                        "refs, not yet to a table row's",
                    )
            if f.type != "ref" or f.where is None or (f.to or USER) not in registry.documents:
                continue
            path = f"{d.name}.{f.name}"
            loc = _option_loc(path, f, "where")
            written = _source("where", path)
            yield from refwhere.check(registry, d, f, written, loc)
            if f.where.conditions:
                spec = LMap({k: v for k, v in f.where.conditions.items()})
                spec.loc = loc
                spec.key_locs = {k: written.key_loc(k) if isinstance(written, LMap) else loc
                                 for k in spec}  # fmt: skip
                spec.value_locs = {k: written.value_loc(k) if isinstance(written, LMap) else loc
                                   for k in spec}  # fmt: skip
                target = registry.documents[f.to or USER]
                yield from _filter(registry, target, spec, loc, f"`where` of `{path}`")


@check
def enums_have_values(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        for path, f, _ in _all_fields(d):
            if f.type == "enum" and not f.values:
                yield Problem(f.loc, f"the enum `{path}` needs `values`")
            elif f.type == "enum" and f.default is not None and str(f.default) not in f.values:
                yield Problem(
                    _option_loc(path, f, "default"),
                    f"the default `{f.default}` of `{path}` is not one of its values "
                    f"({', '.join(f.values)}){did_you_mean(f.default, f.values)}",
                )


def _fails(exc: Exception) -> str:
    """A field type's complaint, the end of a sentence ("... must be at most 2 characters")."""
    return str(exc)


def _normalize(registry: Registry, f: Field, value: Any) -> Any:
    """A value from metadata in the field's type; raises ``Invalid`` with the reason."""
    from engine.fieldtypes import CORE_TYPES, Context

    types = {t.name: t for t in CORE_TYPES}
    if f.type not in types:
        return value
    return types[f.type].normalize(value, f, Context(registry.settings.get("region", "RU")))


@check
def defaults_fit_type(registry: Registry) -> Iterator[Problem]:
    from engine.fieldtypes import Invalid

    for d in _docs(registry):
        for path, f, _ in _all_fields(d):
            if f.default is None or f.type in ("enum", "table"):
                continue
            where = _option_loc(path, f, "default")
            if f.default == "current_user":
                if f.type != "ref" or f.to != USER:
                    yield Problem(
                        where, f"`{path}`: `current_user` is a default for a ref to User only"
                    )
                continue
            if f.default in ("today", "now") and f.type in ("date", "datetime"):
                continue
            try:
                _normalize(registry, f, f.default)
            except Invalid as exc:
                yield Problem(where, f"the default `{f.default}` of `{path}` {_fails(exc)}")


@check
def min_max_fit(registry: Registry) -> Iterator[Problem]:
    from engine.fieldtypes import Invalid

    for d in _docs(registry):
        for path, f, _ in _all_fields(d):
            bounds: dict[str, Any] = {}
            for key in ("min", "max"):
                value = getattr(f, key)
                if value is None or (value in ("today", "now") and f.type in ("date", "datetime")):
                    continue
                try:
                    bounds[key] = _normalize(registry, f, value)
                except Invalid as exc:
                    yield Problem(
                        _option_loc(path, f, key),
                        f"the `{key}` `{value}` of `{path}` {_fails(exc)}",
                    )
            if f.digits is not None and f.places is not None and f.places > f.digits:
                yield Problem(
                    _option_loc(path, f, "places"),
                    f"`{path}`: `places` {f.places} is more than `digits` {f.digits} "
                    "(digits counts all of them, places those after the point)",
                )
            low, high = bounds.get("min"), bounds.get("max")
            if low is not None and high is not None and f.type != "string" and low > high:
                yield Problem(
                    _option_loc(path, f, "min"),
                    f"`{path}`: `min` {f.min} is above `max` {f.max}",
                )


@check
def patterns_compile(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        for path, f, _ in _all_fields(d):
            if f.pattern:
                try:
                    re.compile(f.pattern)
                except re.error as exc:
                    yield Problem(
                        _option_loc(path, f, "pattern"),
                        f"the pattern of `{path}` is not a valid regular expression: {exc}",
                    )


@check
def computed_fields(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        for path, f, siblings in _all_fields(d):
            if f.compute is None:
                continue
            where = _option_loc(path, f, "compute")
            if f.type in ("table", "ref"):
                yield Problem(where, f"`{path}`: {a_or_an(f.type)} field cannot be computed")
                continue
            names = [n for n in siblings if n != f.name]
            for message in _expression(f.compute, names=names, resolve=_resolver(registry, d)):
                yield Problem(where, f"`compute` of `{path}`: {message}")


# --- document settings -----------------------------------------------------------


def _names_field(
    d: DocType, name: str, what: str, types: tuple[str, ...], kind: str, loc: Loc
) -> Iterator[Problem]:
    """``what`` of ``d`` (the kanban's `by`, ...) must name a field of one of ``types``."""
    f = d.fields.get(name)
    if f is None:
        yield Problem(
            loc, f"{what} of `{d.name}` names no field `{name}`{did_you_mean(name, d.fields)}"
        )
    elif f.type not in types:
        yield Problem(
            loc, f"{what} of `{d.name}` must be {kind}; `{name}` is {a_or_an(f.type)} field"
        )


@check
def owner_is_user_ref(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        if d.owner is None:
            continue
        loc = _setting(d, "owner")[1]
        f = d.fields.get(d.owner)
        if f is not None and f.type == "ref" and f.to != USER:
            yield Problem(
                loc,
                f"the owner of `{d.name}` must be a ref to User; `{d.owner}` refers to `{f.to}`",
            )
        else:
            yield from _names_field(d, d.owner, "the owner", ("ref",), "a ref to User", loc)


@check
def title_template(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        if d.title is not None:
            loc = _setting(d, "title")[1]
            for message in _expression(
                d.title, template=True, names=list(d.fields), resolve=_resolver(registry, d)
            ):
                yield Problem(loc, f"the title of `{d.name}`: {message}")


@check
def list_names_fields(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        if d.list is None:
            continue
        raw, _ = _setting(d, "list")
        for part in ("columns", "search", "filters"):
            for name in getattr(d.list, part):
                loc = _at(raw, d.list.loc, part, item=name)
                problem = field_path_problem(registry, d, name)
                if problem:
                    yield Problem(loc, f"the list {part} of `{d.name}`: {problem}")
                elif registry.field_path(d.name, name)[-1].type == "table":
                    yield Problem(
                        loc,
                        f"the list {part} of `{d.name}`: `{name}` is a table; "
                        "its rows are shown in the form",
                    )
        order = d.list.order_field
        if order not in d.fields:
            yield Problem(
                _at(raw, d.list.loc, "order"),
                f"the list order of `{d.name}` names no field `{order}`"
                f"{did_you_mean(order, d.fields)}",
            )
        elif not d.fields[order].stored:
            yield Problem(
                _at(raw, d.list.loc, "order"),
                f"the list of `{d.name}` cannot be ordered by the table `{order}`",
            )


@check
def form_names_fields(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        raw, form_loc = _setting(d, "form")
        sections = raw.get("sections") if isinstance(raw, LMap) else None
        seen: set[str] = set()
        for index, section in enumerate(d.form):
            item = sections[index] if isinstance(sections, list) else None
            default = sections.item_loc(index) if isinstance(sections, LList) else form_loc
            for name in section.fields:
                loc = _at(item, default, "fields", item=name)
                if name not in d.fields:
                    yield Problem(
                        loc,
                        f"the form of `{d.name}` names no field `{name}`"
                        f"{did_you_mean(name, d.fields)}",
                    )
                elif name in seen:
                    yield Problem(loc, f"the form of `{d.name}` shows `{name}` twice")
                seen.add(name)


@check
def views_name_fields(registry: Registry) -> Iterator[Problem]:
    dates = ("date", "datetime")
    for d in _docs(registry):
        raw, loc = _setting(d, "views")
        kanban = d.views.get("kanban")
        if kanban:
            yield from _names_field(
                d,
                kanban["by"],
                "the kanban",
                ("enum",),
                "an enum or the status field",
                _at(raw, loc, "kanban", "by"),
            )
            if kanban.get("amount"):
                yield from _names_field(
                    d,
                    kanban["amount"],
                    "the kanban amount",
                    ("money", "decimal", "integer"),
                    "a number field",
                    _at(raw, loc, "kanban", "amount"),
                )
        calendar = d.views.get("calendar")
        if calendar:
            for key in ("date", "end"):
                if calendar.get(key):
                    yield from _names_field(
                        d,
                        calendar[key],
                        f"the calendar {key}",
                        dates,
                        "a date or datetime field",
                        _at(raw, loc, "calendar", key),
                    )
            owner = calendar.get("owner")
            if owner:
                where = _at(raw, loc, "calendar", "owner")
                f = d.fields.get(owner)
                if f is not None and f.type == "ref" and f.to != USER:
                    yield Problem(
                        where,
                        f"the calendar owner of `{d.name}` must be a ref to User; "
                        f"`{owner}` refers to `{f.to}`",
                    )
                else:
                    yield from _names_field(
                        d, owner, "the calendar owner", ("ref",), "a ref to User", where
                    )


@check
def numbering_field_free(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        if d.numbering and not d.fields[d.numbering.field].system:
            yield Problem(
                _setting(d, "numbering")[1],
                f"`{d.name}` is numbered into `{d.numbering.field}`, "
                "which is also declared as a field",
            )


# --- statuses ----------------------------------------------------------------------


@check
def statuses_consistent(registry: Registry) -> Iterator[Problem]:
    for d in _docs(registry):
        st = d.statuses
        if st is None:
            continue
        spec = _source("statuses", d.name)
        if not st.states:
            yield Problem(_at(spec, st.loc, "states"), f"the statuses of `{d.name}` list no states")
            continue
        if st.initial not in st.states:
            yield Problem(
                _at(spec, st.loc, "initial"),
                f"the initial state `{st.initial}` of `{d.name}` is not one of its states"
                f"{did_you_mean(st.initial, st.states)}",
            )
        declared = d.fields[st.field]
        if not declared.system:
            yield Problem(
                declared.loc,
                f"`{d.name}.{st.field}` holds the status: the engine makes it from "
                "`statuses.states`, do not declare it",
            )
        for index, t in enumerate(st.transitions):
            yield from _transition(registry, d, t, _source("transition", d.name, index))
        for s in st.states.values():
            yield from _state(registry, d, s, _source("state", d.name, s.name))
            yield from _after(d, s, _source("state", d.name, s.name))
        if st.control is not None:
            yield from _control(d, st.control, _source("control", d.name))


def _after(d: DocType, s: Any, raw: Any) -> Iterator[Problem]:
    """``after:`` names another state, and following it leads to no loop."""
    st = d.statuses
    if s.after is None or st is None:
        return
    where = f"`after` of the state `{s.name}` of `{d.name}`"
    if s.after not in st.states:
        yield Problem(
            _at(raw, s.loc, "after"),
            f"{where} names an unknown state `{s.after}`{did_you_mean(s.after, st.states)}",
        )
        return
    seen = [s.name]
    name: str | None = s.after
    while name is not None and name in st.states:
        if name in seen:
            yield Problem(_at(raw, s.loc, "after"), f"{where} goes round in a loop: "
                          + " → ".join(f"`{n}`" for n in [*seen, name]))  # fmt: skip
            return
        seen.append(name)
        name = st.states[name].after


def _control(d: DocType, c: Any, raw: Any) -> Iterator[Problem]:
    """``statuses.control``: an enum field, its values, and states of the type."""
    st = d.statuses
    assert st is not None
    where = f"`statuses.control` of `{d.name}`"
    f = d.fields.get(c.field)
    if not c.field:
        yield Problem(_at(raw, c.loc), f"{where} needs the `field` whose value picks the control")
        return
    if f is None or f.type != "enum" or f.name == st.field:
        found = "" if f is not None else did_you_mean(c.field, d.fields)
        yield Problem(
            _at(raw, c.loc, "field"),
            f"{where}: `field` must be an enum field of `{d.name}` other than its status, "
            f"not `{c.field}`{found}",
        )
        return
    values = list(f.values)
    shown = ", ".join(f"`{v}`" for v in values)
    for key in ("process", "free"):
        for value in getattr(c, key):
            if value not in f.values:
                yield Problem(
                    _at(raw, c.loc, key, item=value),
                    f"{where}: `{key}` names `{value}`, not a value of `{d.name}.{f.name}`"
                    f"{did_you_mean(value, values)}; its values are {shown}",
                )
    for value in set(c.process) & set(c.free):
        yield Problem(
            _at(raw, c.loc, "free", item=value),
            f"{where}: `{value}` cannot be both `process` and `free`",
        )
    written = raw.get("stages") if isinstance(raw, LMap) else None
    for value, names in c.stages.items():
        key_loc = written.key_loc(value) if isinstance(written, LMap) else _at(raw, c.loc, "stages")
        if value not in f.values:
            yield Problem(
                key_loc,
                f"{where}: `stages` names `{value}`, not a value of `{d.name}.{f.name}`"
                f"{did_you_mean(value, values)}; its values are {shown}",
            )
        item = written.get(value) if isinstance(written, LMap) else None
        if not isinstance(item, list) or not names:
            yield Problem(
                _at(written, key_loc, value) if isinstance(written, LMap) else key_loc,
                f"{where}: the stages of `{value}` must be a list of its states",
            )
            continue
        for name in names:
            if name not in st.states:
                yield Problem(
                    _at(written, key_loc, value, item=name),
                    f"{where}: the stages of `{value}` name an unknown state `{name}`"
                    f"{did_you_mean(name, st.states)}",
                )
        if st.initial in st.states and st.initial not in names:
            yield Problem(
                _at(written, key_loc, value),
                f"{where}: the stages of `{value}` must include the initial state "
                f"`{st.initial}`: a new record starts there",
            )


def _transition(registry: Registry, d: DocType, t: Any, raw: Any) -> Iterator[Problem]:
    st = d.statuses
    assert st is not None
    for end, names in (("from", t.sources), ("to", t.targets)):
        for name in names:
            if name == "*" and end == "from":
                continue
            if name not in st.states:
                yield Problem(
                    _at(raw, t.loc, end, item=name),
                    f"a transition of `{d.name}` goes {end} an unknown state `{name}`"
                    f"{did_you_mean(name, st.states)}",
                )
    for role in t.roles:
        if role not in registry.roles:
            yield Problem(
                _at(raw, t.loc, "roles", item=role),
                f"a transition of `{d.name}` names an unknown role `{role}`"
                f"{did_you_mean(role, registry.roles)}",
            )
    if t.when is not None:
        for message in _expression(t.when, names=list(d.fields), resolve=_resolver(registry, d)):
            yield Problem(
                _at(raw, t.loc, "when"), f"`when` of a transition of `{d.name}`: {message}"
            )


def _state(registry: Registry, d: DocType, s: Any, raw: Any) -> Iterator[Problem]:
    for name in s.require:
        if name not in d.fields:
            yield Problem(
                _at(raw, s.loc, "require", item=name),
                f"the state `{s.name}` of `{d.name}` requires an unknown field `{name}`"
                f"{did_you_mean(name, d.fields)}",
            )
    if s.editable is not None:
        where = f"`editable` of the state `{s.name}` of `{d.name}`"
        spec = raw.get("editable") if isinstance(raw, LMap) else None
        sub = ("editable", "fields") if isinstance(spec, LMap) else ("editable",)
        for name in s.editable.fields or ():
            if name not in d.fields:
                yield Problem(
                    _at(raw, s.loc, *sub, item=name),
                    f"{where} names an unknown field `{name}`{did_you_mean(name, d.fields)}",
                )
        for role in s.editable.roles:
            if role not in registry.roles and role != "admin":
                yield Problem(
                    _at(raw, s.loc, "editable", "roles", item=role),
                    f"{where} names an unknown role `{role}`{did_you_mean(role, registry.roles)}",
                )
    if s.outcome and not s.final:
        yield Problem(
            _at(raw, s.loc, "outcome"),
            f"the state `{s.name}` of `{d.name}` has an outcome, so it must be `final: true`",
        )
    if s.require_next:
        yield from _require_next(registry, d, s, raw)


def _require_next(registry: Registry, d: DocType, s: Any, raw: Any) -> Iterator[Problem]:
    rn = s.require_next
    where = f"`require_next` of the state `{s.name}` of `{d.name}`"
    target = registry.documents.get(rn.document)
    if target is None:
        yield Problem(
            _at(raw, rn.loc, "require_next", "document"),
            f"{where} names an unknown type `{rn.document}`"
            f"{did_you_mean(rn.document, registry.documents)}",
        )
        return
    link_loc = _at(raw, rn.loc, "require_next", "link")
    written = raw.get("require_next", {}).get("link") if isinstance(raw, LMap) else None
    for name, source in rn.link.items():
        name_loc = written.key_loc(name) if isinstance(written, LMap) else link_loc
        source_loc = written.value_loc(name) if isinstance(written, LMap) else link_loc
        yield from _next_link(registry, d, target, name, source, where, name_loc, source_loc)
    if target.statuses is None and not any(
        f.type in ("date", "datetime") for f in target.fields.values() if not f.system
    ):
        yield Problem(
            _at(raw, rn.loc, "require_next", "document"),
            f"{where}: `{rn.document}` has no date to plan by",
        )


def _next_link(
    registry: Registry,
    d: DocType,
    target: DocType,
    name: str,
    source: str,
    where: str,
    name_loc: Loc,
    source_loc: Loc,
) -> Iterator[Problem]:
    """One entry of ``require_next.link``: the next document's ref ``name`` is
    filled in from this record's field ``source``, or with the record itself."""
    link = target.fields.get(name)
    if link is None:
        yield Problem(
            name_loc,
            f"{where}: `{target.name}` has no field `{name}`{did_you_mean(name, target.fields)}",
        )
        return
    if link.type != "ref" or link.system:
        actual = "filled in by the engine" if link.system else f"it is {a_or_an(link.type)} field"
        yield Problem(
            name_loc,
            f"{where}: `{target.name}.{name}` must be a ref to `{d.name}` "
            f"(or to a type `{d.name}` refers to); {actual}",
        )
        return
    through = [f.name for f in d.fields.values() if f.type == "ref" and f.to == link.to]
    hint = (
        f"; `{d.name}` refers to `{link.to}` through `{through[0]}`: "
        f"write `link: {{{name}: {through[0]}}}`"
        if through
        else ""
    )
    if source == SELF:
        if link.to != d.name:
            yield Problem(
                source_loc,
                f"{where}: `self` is the `{d.name}` itself, but `{target.name}.{name}` refers "
                f"to `{link.to}`{hint}",
            )
        return
    own = d.fields.get(source)
    if own is None and source == name:
        # `link: customer` where only the next document has a `customer`
        yield Problem(
            source_loc,
            f"{where}: `{d.name}` has no field `{name}` to fill `{target.name}.{name}` from"
            + (hint or f", and `{target.name}.{name}` refers to `{link.to}`, which `{d.name}` "
               f"neither is nor refers to"),
        )  # fmt: skip
    elif own is None:
        yield Problem(
            source_loc,
            f"{where}: `{d.name}` has no field `{source}`{did_you_mean(source, d.fields)}; "
            f"write a field of `{d.name}` or `self`",
        )
    elif own.type != "ref" or own.to != link.to:
        actual = f"refers to `{own.to}`" if own.type == "ref" else f"is {a_or_an(own.type)} field"
        yield Problem(
            source_loc,
            f"{where}: `{d.name}.{source}` cannot fill `{target.name}.{name}`, a ref to "
            f"`{link.to}`: it {actual}{hint}",
        )


# --- access and roles ----------------------------------------------------------------


@check
def access_names_roles(registry: Registry) -> Iterator[Problem]:
    for d in registry.documents.values():
        for role, rule in d.access.items():
            raw = _source("access", d.name, role)
            if role not in registry.roles and role not in ("admin", EVERYONE):
                yield Problem(
                    rule.loc,
                    f"the access of `{d.name}` names an unknown role `{role}`"
                    f"{did_you_mean(role, [*registry.roles, EVERYONE]) or _every(role)}",
                )
            own = [a for a in ("read", "update", "delete") if rule.rule(a) == "own"]
            if own and d.owner is None:
                yield Problem(
                    _at(raw, rule.loc, own[0]),
                    f"the access of `{role}` to `{d.name}`: `{own[0]}: own` needs an `owner`, "
                    f"the field that says whose record it is (e.g. `owner: manager`)",
                )
            if rule.create == "own":
                yield Problem(
                    _at(raw, rule.loc, "create"),
                    f"the access of `{role}` to `{d.name}`: `create` is true or false, not own "
                    "(a record has no owner before it exists)",
                )


@check
def access_fields(registry: Registry) -> Iterator[Problem]:
    """``access: ROLE: fields:`` names fields of the type with `none`, `read`
    or `write`, and hides none that the type cannot be shown without."""
    from engine.access import field_names
    from engine.documents.values import names_used

    for d in registry.documents.values():
        structural = _structural_fields(d, names_used)
        names = field_names(d)
        for role, rule in d.access.items():
            if not rule.fields:
                continue
            raw = _source("access", d.name, role)
            fields_raw = raw.get("fields") if isinstance(raw, LMap) else None
            where = f"the access of `{role}` to `{d.name}`"
            for name, level in rule.fields.items():
                key_loc = (
                    fields_raw.key_loc(name)
                    if isinstance(fields_raw, LMap) and name in fields_raw
                    else _at(raw, rule.loc, "fields")
                )
                value_loc = _at(raw, rule.loc, "fields", name)
                if name not in names:
                    yield Problem(
                        key_loc,
                        f"{where}: `{d.name}` has no field `{name}`{did_you_mean(name, names)}",
                    )
                    continue
                if level not in FIELD_LEVELS:
                    yield Problem(
                        value_loc,
                        f"{where}: `{name}` is none, read or write, not `{level}`"
                        f"{did_you_mean(str(level), FIELD_LEVELS)}",
                    )
                    continue
                if level == "none" and name in structural:
                    yield Problem(
                        value_loc,
                        f"{where}: `{name}` cannot be hidden: {structural[name]}; make it `read`",
                    )


def _structural_fields(d: DocType, names_used: Callable[..., frozenset[str]]) -> dict[str, str]:
    """Fields the type cannot be shown without, and why."""
    out: dict[str, str] = {}
    if d.owner:
        out[d.owner] = "it is the owner, which says whose record it is"
    if d.statuses is not None:
        out[d.statuses.field] = "it is the status"
    if d.numbering is not None:
        out[d.numbering.field] = "it is the record's number"
    if d.title:
        for name in names_used(d.title, True):
            if name in d.fields:
                out.setdefault(name, "the title shows it")
    kanban = d.views.get("kanban") or {}
    if kanban.get("by") in d.fields:
        out.setdefault(kanban["by"], "the kanban's columns are its values")
    calendar = d.views.get("calendar") or {}
    if calendar.get("date") in d.fields:
        out.setdefault(calendar["date"], "the calendar places records by it")
    return out


def _every(role: str) -> str:
    return f" (every role is `{EVERYONE}`)" if role in ("*", "all", "any", "every") else ""


# --- segments and reports --------------------------------------------------------------


def _filter(registry: Registry, d: DocType, spec: Any, loc: Loc, what: str) -> Iterator[Problem]:
    """``check_filter``, one condition at a time so each problem points at its operator."""
    from engine.filters import OPERATORS

    # (the condition alone, where its field is named, where its operator or value is)
    parts: list[tuple[Any, Loc, Loc]] = []
    if not isinstance(spec, LMap):
        parts.append((spec, loc, loc))
    else:
        for path, cond in spec.items():
            field_loc = spec.key_loc(path)
            ops = list(cond.items()) if isinstance(cond, LMap) and cond else [(None, cond)]
            for op, value in ops:
                if op is None:
                    one, where = LMap({path: cond}), spec.value_loc(path)
                else:
                    one = LMap({path: LMap({op: value})})
                    where = cond.value_loc(op) if op in OPERATORS else cond.key_loc(op)
                one.loc, one.key_locs, one.value_locs = spec.loc, {path: where}, {}
                parts.append((one, field_loc, where))
    for part, field_loc, where in parts:
        for p in check_filter(registry, d, part, where):
            message = re.sub(r"^filter(?: on `[^`]*`)?: ", "", p.message)
            about_field = re.search(r"has no field|is not a reference", message)
            yield Problem(field_loc if about_field else p.loc, f"the filter of {what}: {message}")


@check
def segments_valid(registry: Registry) -> Iterator[Problem]:
    for s in registry.segments.values():
        raw = _source("segment", s.name)
        if s.document not in registry.documents:
            yield Problem(
                _at(raw, s.loc, "document"),
                f"the segment `{s.name}` is of an unknown type `{s.document}`"
                f"{did_you_mean(s.document, registry.documents)}",
            )
            continue
        yield from _filter(
            registry,
            registry.documents[s.document],
            s.filter,
            _at(raw, s.loc, "filter"),
            f"the segment `{s.name}`",
        )


def report_kinds() -> Mapping[str, Any]:
    """The report kinds served: the engine's and the enabled plugins'."""
    from engine.reports import load_kinds

    return {**load_kinds(), **(_REPORT_KINDS.get() or {})}


@check
def reports_valid(registry: Registry) -> Iterator[Problem]:
    from engine.reports import COMMON_OPTIONS

    kinds = report_kinds()
    types = set(kinds)
    for r in registry.reports.values():
        k = kinds.get(r.type)
        if r.type not in types:
            yield Problem(
                _at(r.options, r.loc, "type"),
                f"the report `{r.name}` has an unknown type `{r.type}`"
                f"{did_you_mean(r.type, types)}; types are {', '.join(sorted(types))}",
            )
        if k is not None:
            known = COMMON_OPTIONS | set(k.options)
            for key in r.options:
                if key not in known:
                    yield Problem(
                        _key_at(r.options, r.loc, key),
                        f"the report `{r.name}`: a `{r.type}` report does not read `{key}`"
                        f"{did_you_mean(str(key), known)}; its options are "
                        f"{', '.join(sorted(known - {'type', 'document'}))}",
                    )
        roles = r.options.get("roles")
        for role in roles if isinstance(roles, list) else []:
            if role not in registry.roles:
                yield Problem(
                    _at(r.options, r.loc, "roles", item=role),
                    f"the report `{r.name}`, `roles`: there is no role `{role}`"
                    f"{did_you_mean(str(role), registry.roles)}",
                )
        d = registry.documents.get(r.document)
        if d is None:
            yield Problem(
                _at(r.options, r.loc, "document"),
                f"the report `{r.name}` is of an unknown document type `{r.document}`"
                f"{did_you_mean(r.document, registry.documents)}",
            )
            continue
        for key in ("amount", "date", "subject"):
            name = r.options.get(key)
            if name is None:
                continue
            problem = (
                field_path_problem(registry, d, name)
                if isinstance(name, str)
                else "it must name a field"
            )
            if problem:
                yield Problem(
                    _at(r.options, r.loc, key), f"the report `{r.name}`, `{key}`: {problem}"
                )
        by = r.options.get("by")
        names = [by] if isinstance(by, str) else by if isinstance(by, list) else []
        if by is not None and not names:
            yield Problem(
                _at(r.options, r.loc, "by"),
                f"the report `{r.name}`: `by` must be a field or a list of fields",
            )
        for name in names:
            problem = field_path_problem(registry, d, str(name))
            if problem:
                yield Problem(
                    _at(r.options, r.loc, "by", item=name),
                    f"the report `{r.name}`, `by`: {problem}",
                )
        plan = r.options.get("plan")
        if plan is not None and plan not in registry.documents:
            yield Problem(
                _at(r.options, r.loc, "plan"),
                f"the report `{r.name}` names an unknown plan type `{plan}`"
                f"{did_you_mean(str(plan), registry.documents)}",
            )
        if k is not None:
            yield from k.check(registry, r)
        if "filter" in r.options:
            yield from _filter(
                registry,
                d,
                r.options["filter"],
                _at(r.options, r.loc, "filter"),
                f"the report `{r.name}`",
            )


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
            if part == "id" and len(checked) == len(names):
                return None  # every record has its number: `doc.id`, `doc.manager.id`
            problem = field_path_problem(registry, d, ".".join(checked))
            if problem:
                return problem
            f = registry.field_path(d.name, ".".join(checked))[-1]
            if f.type != "ref":
                return None
        return None

    return resolve


# --- dashboards --------------------------------------------------------------------------

#: what a report card's ``params`` take besides its kind's options, and the values they take
CARD_PARAMS: dict[str, tuple[str, ...] | None] = {
    "period": ("today", "week", "month", "quarter", "year"),
    "manager": ("me",),
    "department": ("mine",),
    "kind": None,  # a deal kind: any word
    "segment": None,  # a segment of the report's type
}
#: the keys only a report card takes, and those only a count or sum card takes
_REPORT_ONLY = ("params", "show", "value")
_AGGREGATE_ONLY = ("filter", "field")
NUMERIC = ("integer", "decimal", "money")


@check
def dashboards_valid(registry: Registry) -> Iterator[Problem]:
    for dash in registry.dashboards.values():
        where = f"the dashboard `{dash.name}`"
        roles_spec = _source("dashboard", dash.name, "roles")
        if not dash.roles:
            yield Problem(
                dash.loc,
                f"{where} needs `roles`: the roles that open on it, or `{EVERYONE}`",
            )
        for role in dash.roles:
            if role != EVERYONE and role not in registry.roles:
                yield Problem(
                    _at(roles_spec, dash.loc, "roles", item=role),
                    f"{where} names an unknown role `{role}`"
                    f"{did_you_mean(role, registry.roles)}{_every(role)}",
                )
        for card in dash.cards:
            yield from _card(registry, dash.name, card)


def _card(registry: Registry, dashboard: str, card: Any) -> Iterator[Problem]:
    from engine.reports import KINDS, load_kinds

    where = f"the card `{card.name}` of the dashboard `{dashboard}`"
    spec = card.spec
    wrong = _AGGREGATE_ONLY if card.what == "report" else _REPORT_ONLY
    for key in wrong:
        if key in spec:
            yield Problem(
                spec.key_loc(key) if isinstance(spec, LMap) else card.loc,
                f"{where}: `{key}` is for "
                + ("a `count` or `sum` card" if card.what == "report" else "a `report` card"),
            )
    if card.what in ("count", "sum"):
        d = registry.documents.get(card.target)
        if d is None:
            yield Problem(
                _at(spec, card.loc, card.what),
                f"{where} counts an unknown document type `{card.target}`"
                f"{did_you_mean(card.target, registry.documents)}",
            )
            return
        if card.what == "sum":
            if card.summed is None:
                yield Problem(card.loc, f"{where} needs `field`: the number it adds up")
            else:
                problem = field_path_problem(registry, d, card.summed)
                if problem is None and "." in card.summed:
                    problem = "it must be a field of the type itself"
                if problem is None and d.fields[card.summed].type not in NUMERIC:
                    problem = (
                        f"`{d.name}.{card.summed}` is {a_or_an(d.fields[card.summed].type)}, "
                        f"not a number ({', '.join(NUMERIC)})"
                    )
                if problem:
                    yield Problem(_at(spec, card.loc, "field"), f"{where}, `field`: {problem}")
        elif "field" in spec:
            yield Problem(
                spec.key_loc("field") if isinstance(spec, LMap) else card.loc,
                f"{where}: `field` is for a `sum` card",
            )
        if card.filter:
            yield from _filter(registry, d, card.filter, _at(spec, card.loc, "filter"), where)
        return
    report = registry.reports.get(card.target)
    if report is None:
        yield Problem(
            _at(spec, card.loc, "report"),
            f"{where} names an unknown report `{card.target}`"
            f"{did_you_mean(card.target, registry.reports)}",
        )
        return
    kind = load_kinds().get(report.type) or KINDS.get(report.type)
    options = dict(kind.options) if kind is not None else {}
    params = card.params
    for key, value in params.items():
        loc = _at(params, card.loc, key)
        if key in CARD_PARAMS:
            choices = CARD_PARAMS[key]
            if choices is not None and value not in choices:
                yield Problem(
                    loc,
                    f"{where}, `params.{key}`: `{value}` is not one of "
                    + ", ".join(f"`{c}`" for c in choices),
                )
            elif key == "segment" and not any(
                s.name == value and s.document == report.document
                for s in registry.segments.values()
            ):
                yield Problem(
                    loc,
                    f"{where}, `params.segment`: {report.document} has no segment `{value}`",
                )
            elif not isinstance(value, (str, int)) or isinstance(value, bool):
                yield Problem(loc, f"{where}, `params.{key}` must be a word")
        elif key not in options:
            known = [*CARD_PARAMS, *options]
            yield Problem(
                params.key_loc(key) if isinstance(params, LMap) else card.loc,
                f"{where}: the report `{report.name}` takes no parameter `{key}`"
                f"{did_you_mean(str(key), known)}; it takes " + ", ".join(f"`{k}`" for k in known),
            )
        elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
            yield Problem(loc, f"{where}, `params.{key}` must be a word or a number")
