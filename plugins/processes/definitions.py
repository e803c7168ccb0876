"""Route maps and automations, read from the ``processes`` and ``automations``
sections into frozen definitions, and checked.

Parsing never raises: every mistake becomes a ``Problem`` at the YAML node it
is about, and a definition with problems is left out, so that the engine
runs only route maps that passed ``crm check``. The same definitions drive
the engine (plugins/processes/engine.py), the picture (svg.py) and the
checks below.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.checks import expression_problems, field_path_problem
from engine.errors import Loc, Problem, did_you_mean
from engine.registry import USER, DocType, Registry

#: step kinds the engine runs itself; plugins add theirs (crm_process_step_kinds)
KINDS = ("task", "if", "parallel", "wait", "notify", "set", "end")
#: keys a step may hold besides its kind's own
STEP_KEYS = {
    "task": {"task", "outcomes", "next", "set", "notify", "label"},
    "if": {"if", "then", "else", "set", "notify", "label"},
    "parallel": {"parallel", "join", "set", "notify", "label"},
    "wait": {"wait", "next", "set", "notify", "label"},
    "notify": {"notify", "next", "set", "label"},
    "set": {"set", "next", "label"},
    "end": {"end", "set", "notify", "label"},
}
DURATION = re.compile(r"^\s*(\d+)\s*(m|h|d|w|bd)\s*$")
UNIT_WORDS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks", "bd": "business days"}
EVENTS = ("create", "update", "status", "field", "delete")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# --- durations and the business calendar ---------------------------------------------


@dataclass(frozen=True)
class Calendar:
    """Working days for ``bd`` durations: weekdays and holidays (``processes``
    plugin settings ``workdays`` and ``holidays``), on the company's clock."""

    workdays: frozenset[int] = frozenset(range(5))
    holidays: frozenset[dt.date] = frozenset()
    tz: dt.tzinfo = dt.UTC

    def working(self, day: dt.date) -> bool:
        return day.weekday() in self.workdays and day not in self.holidays

    def add_business_days(self, start: dt.datetime, n: int) -> dt.datetime:
        """``n`` working days after ``start``, at the same time of day; a start
        on a day off counts from the next working day."""
        local = start.astimezone(self.tz)
        day = local.date()
        if not self.workdays:
            return start + dt.timedelta(days=n)
        while not self.working(day):
            day += dt.timedelta(days=1)
        left = n
        while left > 0:
            day += dt.timedelta(days=1)
            if self.working(day):
                left -= 1
        moved = dt.datetime.combine(day, local.timetz())
        return moved.astimezone(dt.UTC)


@dataclass(frozen=True)
class Duration:
    amount: int
    unit: str
    text: str

    def after(self, start: dt.datetime, calendar: Calendar) -> dt.datetime:
        if self.unit == "bd":
            return calendar.add_business_days(start, self.amount)
        seconds = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[self.unit]
        return start + dt.timedelta(seconds=seconds * self.amount)

    def __str__(self) -> str:
        return self.text


def parse_duration(value: Any) -> Duration | str:
    """A Duration, or the message that says why ``value`` is not one."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return f"`{value}` is not a duration: write `30m`, `4h`, `2d`, `1w` or `3bd`"
    m = DURATION.match(str(value))
    if not m:
        return (
            f"`{value}` is not a duration: write `30m`, `4h`, `2d`, `1w` or `3bd` (business days)"
        )
    amount = int(m.group(1))
    if amount <= 0 or amount > 10_000:
        return f"`{value}`: a duration is between 1 and 10000 {UNIT_WORDS[m.group(2)]}"
    return Duration(amount, m.group(2), f"{amount}{m.group(2)}")


def calendar_of(registry: Registry) -> tuple[Calendar, list[Problem]]:
    settings = registry.plugins.get("processes") or {}
    problems: list[Problem] = []
    loc = _loc(settings, Loc("config.yaml", 1, 1))
    try:
        tz: dt.tzinfo = ZoneInfo(str(registry.settings.get("timezone") or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        tz = dt.UTC
    workdays = frozenset(range(5))
    raw_days = settings.get("workdays")
    if raw_days is not None:
        days = set()
        for i, day in enumerate(raw_days if isinstance(raw_days, list) else [raw_days]):
            name = str(day).lower()[:3]
            if name not in WEEKDAYS:
                problems.append(
                    Problem(
                        _item_loc(raw_days, i, loc), f"`{day}` is not a weekday: write mon … sun"
                    )
                )
            else:
                days.add(WEEKDAYS.index(name))
        workdays = frozenset(days)
    holidays = set()
    raw_holidays = settings.get("holidays") or []
    for i, day in enumerate(raw_holidays if isinstance(raw_holidays, list) else [raw_holidays]):
        if isinstance(day, dt.date):
            holidays.add(day)
            continue
        try:
            holidays.add(dt.date.fromisoformat(str(day)))
        except ValueError:
            problems.append(
                Problem(
                    _item_loc(raw_holidays, i, loc), f"`{day}` is not a date such as 2027-01-07"
                )
            )
    return Calendar(workdays, frozenset(holidays), tz), problems


# --- definitions -------------------------------------------------------------------


@dataclass(frozen=True)
class Assignee:
    """``owner``, a field that refs User, ``{role: R}`` or ``{user: LOGIN}``."""

    kind: str  # owner | field | role | user
    value: str | None
    loc: Loc

    def __str__(self) -> str:
        return self.kind if self.kind == "owner" else f"{self.kind} {self.value}"


@dataclass(frozen=True)
class TaskSpec:
    title: str
    assignee: Assignee
    due: Duration | None
    description: str | None
    loc: Loc


@dataclass(frozen=True)
class Notify:
    """A message: to people (channel ``user``) or to an address/number template."""

    channel: str
    to: Assignee | str | None
    text: str
    subject: str | None
    loc: Loc


@dataclass(frozen=True)
class Wait:
    until: str | None  # a date or datetime field
    duration: Duration | None
    loc: Loc


@dataclass(frozen=True)
class Step:
    name: str
    kind: str
    loc: Loc
    label: str | None = None
    set: Mapping[str, Any] = field(default_factory=dict)
    task: TaskSpec | None = None
    outcomes: Mapping[str, str] = field(default_factory=dict)
    next: str | None = None
    condition: str | None = None
    then: str | None = None
    otherwise: str | None = None
    notify: tuple[Notify, ...] = ()
    wait: Wait | None = None
    parallel: tuple[str, ...] = ()
    join: str | None = None
    options: Any = None  # a plugin kind's own settings
    locs: Mapping[str, Loc] = field(default_factory=dict)

    def exits(self) -> list[tuple[str, str]]:
        """(label, step) for every way this step leads on; a parallel step's
        branches and its join included."""
        out: list[tuple[str, str]] = []
        if self.kind == "task" and self.outcomes:
            out += [(outcome, target) for outcome, target in self.outcomes.items()]
        if self.next:
            out.append(("", self.next))
        if self.kind == "if":
            out += [(label, t) for label, t in (("yes", self.then), ("no", self.otherwise)) if t]
        if self.kind == "parallel":
            out += [("", b) for b in self.parallel]
            if self.join:
                out.append(("join", self.join))
        return out

    @property
    def waits(self) -> bool:
        """Whether an instance stops here for a person or the clock."""
        return self.kind in ("task", "wait")


@dataclass(frozen=True)
class Trigger:
    """When a process starts or an automation fires."""

    document: str
    event: str  # create | update | status | field | delete
    value: str | None  # the state or the field
    when: str | None
    loc: Loc


@dataclass(frozen=True)
class Process:
    name: str
    label: str
    document: str
    start: Trigger
    steps: Mapping[str, Step]
    first: str
    loc: Loc

    def join_of(self) -> dict[str, str]:
        """join step → the parallel step that splits to it."""
        return {s.join: s.name for s in self.steps.values() if s.kind == "parallel" and s.join}


@dataclass(frozen=True)
class Action:
    kind: str  # notify | set | create | start
    loc: Loc
    notify: Notify | None = None
    set: Mapping[str, Any] = field(default_factory=dict)
    document: str | None = None  # create
    values: Mapping[str, Any] = field(default_factory=dict)  # create
    process: str | None = None  # start


@dataclass(frozen=True)
class Automation:
    name: str
    label: str
    trigger: Trigger
    actions: tuple[Action, ...]
    loc: Loc


@dataclass
class Definitions:
    processes: dict[str, Process] = field(default_factory=dict)
    automations: dict[str, Automation] = field(default_factory=dict)
    calendar: Calendar = field(default_factory=Calendar)
    problems: list[Problem] = field(default_factory=list)

    def for_document(self, doctype: str) -> tuple[list[Process], list[Automation]]:
        return (
            [p for p in self.processes.values() if p.document == doctype],
            [a for a in self.automations.values() if a.trigger.document == doctype],
        )


# --- reading ------------------------------------------------------------------------


def _loc(node: Any, default: Loc) -> Loc:
    return getattr(node, "loc", default)


def _key_loc(node: Any, key: str, default: Loc) -> Loc:
    return node.key_loc(key) if hasattr(node, "key_loc") and key in node else default


def _value_loc(node: Any, key: str, default: Loc) -> Loc:
    return node.value_loc(key) if hasattr(node, "value_loc") and key in node else default


def _item_loc(node: Any, i: int, default: Loc) -> Loc:
    return node.item_loc(i) if hasattr(node, "item_loc") else default


def _label(value: Any, locale: str, default: str) -> str:
    if isinstance(value, Mapping):
        return str(value.get(locale) or value.get("en") or next(iter(value.values()), default))
    return str(value) if value else default


class _Reader:
    def __init__(self, registry: Registry, channels: Iterable[str], kinds: Iterable[str]):
        self.registry = registry
        self.channels = set(channels)
        self.extra_kinds = set(kinds)
        self.problems: list[Problem] = []

    def problem(self, loc: Loc, message: str) -> None:
        self.problems.append(Problem(loc, message))

    # -- shared pieces ----------------------------------------------------------------

    def doc(self, name: Any, loc: Loc, what: str) -> DocType | None:
        d = self.registry.documents.get(str(name)) if isinstance(name, str) else None
        if d is None or d.builtin:
            choices = [n for n, x in self.registry.documents.items() if not x.builtin]
            self.problem(
                loc, f"{what}: unknown document type `{name}`{did_you_mean(str(name), choices)}"
            )
            return None
        return d

    def expression(
        self, d: DocType, source: Any, loc: Loc, what: str, template: bool = False
    ) -> str | None:
        if not isinstance(source, str):
            self.problem(
                loc, f"{what} must be {'a template' if template else 'an expression'} in quotes"
            )
            return None
        bad = expression_problems(self.registry, d, source, template=template)
        for message in bad:
            self.problem(loc, f"{what}: {message}")
        return None if bad else source

    def trigger(self, d: DocType, raw: Any, when: Any, loc: Loc, what: str) -> Trigger | None:
        """``on: create`` / ``update`` / ``delete`` / ``{status: S}`` / ``{field: F}``
        (``document:`` beside them in an automation)."""
        event: str | None = None
        value: str | None = None
        if isinstance(raw, str):
            event = raw
        elif isinstance(raw, Mapping):
            keys = [k for k in raw if k not in ("document", "when")]
            for k in keys:
                if k in ("status", "field"):
                    if event is not None:
                        self.problem(
                            _key_loc(raw, k, loc), f"{what}: choose one of `status` or `field`"
                        )
                        return None
                    event, value = str(k), raw[k]
                elif k == "event":
                    event = str(raw[k])
                else:
                    self.problem(
                        _key_loc(raw, k, loc),
                        f"{what}: unknown key `{k}`{did_you_mean(str(k), ['status', 'field', 'event'])}; "
                        "write `on: create`, `on: update`, `on: {status: S}` or `on: {field: F}`",
                    )
                    return None
            if event is None:
                event = "create" if not keys else None
        if event not in EVENTS:
            self.problem(
                loc,
                f"{what}: `on` is `create`, `update`, `delete`, `{{status: S}}` or `{{field: F}}`"
                + (f", not `{event}`" if event else ""),
            )
            return None
        vloc = _value_loc(raw, event, loc) if isinstance(raw, Mapping) else loc
        if event == "status":
            if d.statuses is None:
                self.problem(vloc, f"{what}: `{d.name}` has no statuses")
                return None
            if value not in d.statuses.states:
                self.problem(
                    vloc,
                    f"{what}: `{d.name}` has no state `{value}`{did_you_mean(str(value), d.statuses.states)}",
                )
                return None
        if event == "field" and (not isinstance(value, str) or value not in d.fields):
            self.problem(
                vloc,
                f"{what}: `{d.name}` has no field `{value}`{did_you_mean(str(value), d.fields)}",
            )
            return None
        condition = None
        if when is not None:
            condition = self.expression(d, when, _loc(when, loc), f"{what}: `when`")
            if condition is None:
                return None
        return Trigger(d.name, event, value, condition, loc)

    def assignee(self, d: DocType, raw: Any, loc: Loc, what: str) -> Assignee | None:
        if raw == "owner":
            if d.owner is None:
                self.problem(
                    loc, f"{what}: `{d.name}` has no owner; name a field, a role or a user"
                )
                return None
            return Assignee("owner", None, loc)
        if isinstance(raw, str):
            f = d.fields.get(raw)
            if f is None or f.type != "ref" or f.to != USER:
                users = [n for n, x in d.fields.items() if x.type == "ref" and x.to == USER]
                self.problem(
                    loc,
                    f"{what}: `{raw}` is not a field of `{d.name}` that refers to a user; "
                    f"write `owner`, one of {', '.join(f'`{u}`' for u in users) or 'no such fields'}, "
                    "`{role: R}` or `{user: LOGIN}`" + did_you_mean(raw, users),
                )
                return None
            return Assignee("field", raw, loc)
        if isinstance(raw, Mapping) and len(raw) == 1:
            ((kind, value),) = raw.items()
            vloc = _value_loc(raw, kind, loc)
            if kind == "role":
                if value not in self.registry.roles:
                    self.problem(
                        vloc,
                        f"{what}: unknown role `{value}`{did_you_mean(str(value), self.registry.roles)}",
                    )
                    return None
                return Assignee("role", str(value), loc)
            if kind == "user":
                if not isinstance(value, str) or not value.strip():
                    self.problem(vloc, f"{what}: `user` is a login")
                    return None
                return Assignee("user", value, loc)
        self.problem(
            loc,
            f"{what}: write `owner`, a field that refers to a user, `{{role: R}}` or `{{user: LOGIN}}`",
        )
        return None

    def duration(self, raw: Any, loc: Loc, what: str) -> Duration | None:
        result = parse_duration(raw)
        if isinstance(result, str):
            self.problem(loc, f"{what}: {result}")
            return None
        return result

    def notify(self, d: DocType, raw: Any, loc: Loc, what: str) -> Notify | None:
        if not isinstance(raw, Mapping):
            self.problem(loc, f"{what}: `notify` takes `channel`, `to` and `text`")
            return None
        for k in raw:
            if k not in ("channel", "to", "text", "subject"):
                self.problem(
                    _key_loc(raw, k, loc),
                    f"{what}: unknown key `{k}` in `notify`{did_you_mean(str(k), ['channel', 'to', 'text', 'subject'])}",
                )
                return None
        channel = raw.get("channel", "user")
        cloc = _value_loc(raw, "channel", loc)
        if channel not in self.channels:
            self.problem(
                cloc,
                f"{what}: no enabled plugin delivers the channel `{channel}`"
                f"{did_you_mean(str(channel), self.channels)}; channels here: "
                f"{', '.join(sorted(self.channels)) or 'none'}",
            )
            return None
        text = raw.get("text")
        if text is None:
            self.problem(loc, f"{what}: a notification needs `text`")
            return None
        if (
            self.expression(d, text, _value_loc(raw, "text", loc), f"{what}: `text`", template=True)
            is None
        ):
            return None
        subject = raw.get("subject")
        if (
            subject is not None
            and self.expression(
                d, subject, _value_loc(raw, "subject", loc), f"{what}: `subject`", template=True
            )
            is None
        ):
            return None
        to_raw = raw.get("to", "owner" if channel == "user" else None)
        tloc = _value_loc(raw, "to", loc)
        to: Assignee | str | None
        if channel == "user":
            to = self.assignee(d, to_raw, tloc, f"{what}: `to`")
            if to is None:
                return None
        else:
            if to_raw is None:
                self.problem(
                    loc, f"{what}: a `{channel}` notification needs `to`, a template of the address"
                )
                return None
            if self.expression(d, to_raw, tloc, f"{what}: `to`", template=True) is None:
                return None
            to = str(to_raw)
        return Notify(str(channel), to, str(text), str(subject) if subject else None, loc)

    def values(self, d: DocType, raw: Any, loc: Loc, what: str) -> dict[str, Any] | None:
        """``set:`` values: a literal, or a template in ``{{ }}``."""
        if not isinstance(raw, Mapping) or not raw:
            self.problem(loc, f"{what}: `set` maps fields to values")
            return None
        out: dict[str, Any] = {}
        ok = True
        for name, value in raw.items():
            kloc = _key_loc(raw, name, loc)
            f = d.fields.get(name)
            is_status = d.statuses is not None and name == d.statuses.field
            if f is None or (f.system and not is_status) or f.type == "table" or f.compute:
                why = "is computed" if f is not None and f.compute else "cannot be set"
                self.problem(
                    kloc,
                    f"{what}: `{d.name}` has no field `{name}`{did_you_mean(str(name), d.fields)}"
                    if f is None
                    else f"{what}: `{d.name}.{name}` {why}",
                )
                ok = False
                continue
            if is_status:
                assert d.statuses is not None
                if value not in d.statuses.states:
                    self.problem(
                        _value_loc(raw, name, kloc),
                        f"{what}: `{d.name}` has no state `{value}`{did_you_mean(str(value), d.statuses.states)}",
                    )
                    ok = False
                    continue
            elif isinstance(value, str) and "{{" in value:
                if (
                    self.expression(
                        d, value, _value_loc(raw, name, kloc), f"{what}: `{name}`", template=True
                    )
                    is None
                ):
                    ok = False
                    continue
            elif f.type == "enum" and value is not None and value not in f.values:
                self.problem(
                    _value_loc(raw, name, kloc),
                    f"{what}: `{value}` is not a value of `{d.name}.{name}`{did_you_mean(str(value), f.values)}",
                )
                ok = False
                continue
            out[str(name)] = value
        return out if ok else None

    # -- processes ----------------------------------------------------------------------

    def process(self, name: str, body: Any, loc: Loc) -> Process | None:
        what = f"process `{name}`"
        if not isinstance(body, Mapping):
            self.problem(loc, f"{what}: a process is a map with `document`, `start` and `steps`")
            return None
        allowed = ("label", "document", "start", "steps")
        for k in body:
            if k not in allowed:
                self.problem(
                    _key_loc(body, k, loc),
                    f"{what}: unknown key `{k}`{did_you_mean(str(k), allowed)}",
                )
        d = self.doc(body.get("document"), _value_loc(body, "document", loc), what)
        if d is None:
            return None
        start_raw = body.get("start", {"on": "create"})
        sloc = _value_loc(body, "start", loc)
        if not isinstance(start_raw, Mapping):
            self.problem(sloc, f"{what}: `start` is a map such as `{{on: create, when: ...}}`")
            return None
        for k in start_raw:
            if k not in ("on", "when"):
                self.problem(
                    _key_loc(start_raw, k, sloc),
                    f"{what}: `start` takes `on` and `when`, not `{k}`",
                )
                return None
        start = self.trigger(
            d, start_raw.get("on", "create"), start_raw.get("when"),
            _value_loc(start_raw, "on", sloc), f"{what}: `start`",
        )  # fmt: skip
        steps_raw = body.get("steps")
        stloc = _value_loc(body, "steps", loc)
        if not isinstance(steps_raw, Mapping) or not steps_raw:
            self.problem(stloc, f"{what}: `steps` maps step names to steps; it is empty")
            return None
        before = len(self.problems)
        steps: dict[str, Step] = {}
        for step_name, raw in steps_raw.items():
            step = self.step(d, name, str(step_name), raw, _key_loc(steps_raw, step_name, stloc))
            if step is not None:
                steps[str(step_name)] = step
        if len(self.problems) > before or start is None:
            return None
        process = Process(
            name, _label(body.get("label"), self.registry.locale, name), d.name, start, steps,
            next(iter(steps)), loc,
        )  # fmt: skip
        graph_problems = list(check_graph(process))
        self.problems += graph_problems
        return None if graph_problems else process

    def step(self, d: DocType, process: str, name: str, raw: Any, loc: Loc) -> Step | None:
        what = f"step `{name}` of process `{process}`"
        if not isinstance(raw, Mapping):
            self.problem(loc, f"{what}: a step is a map such as `{{task: ..., outcomes: ...}}`")
            return None
        kinds = [k for k in (*KINDS, *sorted(self.extra_kinds)) if k in raw]
        main = [k for k in kinds if k not in ("set", "notify")]
        if len(main) > 1:
            self.problem(
                loc,
                f"{what}: a step is one of {', '.join(KINDS)}; this one is {' and '.join(main)}",
            )
            return None
        kind = (
            main[0] if main else ("notify" if "notify" in raw else "set" if "set" in raw else None)
        )
        if kind is None:
            self.problem(
                loc,
                f"{what}: say what the step does: {', '.join(f'`{k}`' for k in (*KINDS, *sorted(self.extra_kinds)))}",
            )
            return None
        allowed = STEP_KEYS.get(kind, {kind, "next", "set", "notify", "label"})
        ok = True
        for k in raw:
            if k not in allowed:
                self.problem(
                    _key_loc(raw, k, loc),
                    f"{what}: a `{kind}` step has no `{k}`{did_you_mean(str(k), allowed)}",
                )
                ok = False
        locs = {str(k): _value_loc(raw, k, loc) for k in raw}
        kw: dict[str, Any] = {
            "label": str(raw["label"]) if raw.get("label") else None,
            "locs": locs,
        }
        if "set" in raw:
            values = self.values(d, raw["set"], locs["set"], what)
            ok = ok and values is not None
            kw["set"] = values or {}
        if "notify" in raw:
            items = raw["notify"] if isinstance(raw["notify"], list) else [raw["notify"]]
            notes = []
            for i, item in enumerate(items):
                n = self.notify(
                    d,
                    item,
                    _item_loc(raw["notify"], i, locs["notify"])
                    if isinstance(raw["notify"], list)
                    else locs["notify"],
                    what,
                )
                ok = ok and n is not None
                if n is not None:
                    notes.append(n)
            kw["notify"] = tuple(notes)
        for key in ("next", "then", "else", "join"):
            if key in raw and not isinstance(raw[key], str):
                self.problem(locs[key], f"{what}: `{key}` names a step")
                ok = False
        kw["next"] = raw.get("next") if isinstance(raw.get("next"), str) else None
        if kind == "task":
            task = self.task(d, raw["task"], locs["task"], what)
            ok = ok and task is not None
            kw["task"] = task
            outcomes = raw.get("outcomes")
            if outcomes is not None:
                if (
                    not isinstance(outcomes, Mapping)
                    or not outcomes
                    or not all(isinstance(v, str) for v in outcomes.values())
                ):
                    self.problem(
                        locs["outcomes"],
                        f"{what}: `outcomes` maps each outcome to the step it leads to",
                    )
                    ok = False
                else:
                    if "next" in raw:
                        self.problem(
                            locs["next"], f"{what}: a task with `outcomes` needs no `next`"
                        )
                        ok = False
                    kw["outcomes"] = {str(k): str(v) for k, v in outcomes.items()}
        elif kind == "if":
            kw["condition"] = self.expression(d, raw["if"], locs["if"], f"{what}: `if`")
            ok = ok and kw["condition"] is not None
            for key, attr in (("then", "then"), ("else", "otherwise")):
                if key not in raw:
                    self.problem(loc, f"{what}: an `if` needs `then` and `else`")
                    ok = False
                else:
                    kw[attr] = raw[key] if isinstance(raw[key], str) else None
        elif kind == "parallel":
            branches = raw["parallel"]
            if (
                not isinstance(branches, list)
                or len(branches) < 2
                or not all(isinstance(b, str) for b in branches)
            ):
                self.problem(
                    locs["parallel"], f"{what}: `parallel` lists two or more steps to run at once"
                )
                ok = False
            else:
                kw["parallel"] = tuple(branches)
            if not isinstance(raw.get("join"), str):
                self.problem(
                    loc, f"{what}: `parallel` needs `join`, the step that waits for every branch"
                )
                ok = False
            else:
                kw["join"] = raw["join"]
        elif kind == "wait":
            kw["wait"] = self.wait(d, raw["wait"], locs["wait"], what)
            ok = ok and kw["wait"] is not None
        elif kind == "end":
            if raw["end"] is not True:
                self.problem(locs["end"], f"{what}: write `end: true`")
                ok = False
        elif kind in self.extra_kinds:
            kw["options"] = raw[kind]
        return Step(name, kind, loc, **kw) if ok else None

    def task(self, d: DocType, raw: Any, loc: Loc, what: str) -> TaskSpec | None:
        if not isinstance(raw, Mapping):
            self.problem(loc, f"{what}: `task` takes `title`, `assignee`, `due` and `description`")
            return None
        allowed = ("title", "assignee", "due", "description")
        for k in raw:
            if k not in allowed:
                self.problem(
                    _key_loc(raw, k, loc),
                    f"{what}: a task has no `{k}`{did_you_mean(str(k), allowed)}",
                )
                return None
        title = raw.get("title")
        if title is None:
            self.problem(loc, f"{what}: a task needs a `title`")
            return None
        if (
            self.expression(
                d, title, _value_loc(raw, "title", loc), f"{what}: `title`", template=True
            )
            is None
        ):
            return None
        description = raw.get("description")
        if (
            description is not None
            and self.expression(
                d,
                description,
                _value_loc(raw, "description", loc),
                f"{what}: `description`",
                template=True,
            )
            is None
        ):
            return None
        assignee = self.assignee(
            d, raw.get("assignee", "owner"), _value_loc(raw, "assignee", loc), f"{what}: `assignee`"
        )
        due = None
        if raw.get("due") is not None:
            due = self.duration(raw["due"], _value_loc(raw, "due", loc), f"{what}: `due`")
            if due is None:
                return None
        if assignee is None:
            return None
        return TaskSpec(str(title), assignee, due, str(description) if description else None, loc)

    def wait(self, d: DocType, raw: Any, loc: Loc, what: str) -> Wait | None:
        if isinstance(raw, (str, int)) and not isinstance(raw, bool):
            if isinstance(raw, str) and raw in d.fields:
                raw = {"until": raw}
            else:
                duration = self.duration(raw, loc, f"{what}: `wait`")
                return Wait(None, duration, loc) if duration else None
        if isinstance(raw, Mapping) and len(raw) == 1 and "until" in raw:
            name = raw["until"]
            f = d.fields.get(name) if isinstance(name, str) else None
            if f is None or f.type not in ("date", "datetime"):
                dates = [n for n, x in d.fields.items() if x.type in ("date", "datetime")]
                self.problem(
                    _value_loc(raw, "until", loc),
                    f"{what}: `wait: {{until: F}}` names a date field of `{d.name}`: "
                    f"{', '.join(f'`{n}`' for n in dates) or 'it has none'}{did_you_mean(str(name), dates)}",
                )
                return None
            return Wait(str(name), None, loc)
        if isinstance(raw, Mapping) and len(raw) == 1 and "for" in raw:
            duration = self.duration(raw["for"], _value_loc(raw, "for", loc), f"{what}: `wait`")
            return Wait(None, duration, loc) if duration else None
        self.problem(loc, f"{what}: `wait` is a duration (`2d`) or `{{until: a date field}}`")
        return None

    # -- automations ---------------------------------------------------------------------

    def automation(
        self, name: str, body: Any, loc: Loc, processes: Mapping[str, Any]
    ) -> Automation | None:
        what = f"automation `{name}`"
        if not isinstance(body, Mapping):
            self.problem(loc, f"{what}: an automation is a map with `on`, `when` and `do`")
            return None
        allowed = ("label", "on", "when", "do")
        for k in body:
            if k not in allowed:
                self.problem(
                    _key_loc(body, k, loc),
                    f"{what}: unknown key `{k}`{did_you_mean(str(k), allowed)}",
                )
                return None
        on = body.get("on")
        oloc = _value_loc(body, "on", loc)
        if not isinstance(on, Mapping) or "document" not in on:
            self.problem(
                oloc,
                f"{what}: `on` names the `document` and the event: `{{document: Deal, status: won}}`",
            )
            return None
        d = self.doc(on["document"], _value_loc(on, "document", oloc), what)
        if d is None:
            return None
        trigger = self.trigger(d, on, body.get("when"), oloc, what)
        actions_raw = body.get("do")
        aloc = _value_loc(body, "do", loc)
        if not isinstance(actions_raw, list) or not actions_raw:
            self.problem(aloc, f"{what}: `do` lists the actions: notify, set, create, start")
            return None
        actions = []
        ok = trigger is not None
        for i, item in enumerate(actions_raw):
            iloc = _item_loc(actions_raw, i, aloc)
            action = self.action(d, item, iloc, what, processes)
            ok = ok and action is not None
            if action is not None:
                actions.append(action)
        if not ok or trigger is None:
            return None
        return Automation(
            name,
            _label(body.get("label"), self.registry.locale, name),
            trigger,
            tuple(actions),
            loc,
        )

    def action(
        self, d: DocType, raw: Any, loc: Loc, what: str, processes: Mapping[str, Any]
    ) -> Action | None:
        kinds = ("notify", "set", "create", "start")
        if not isinstance(raw, Mapping) or len(raw) != 1 or next(iter(raw)) not in kinds:
            key = next(iter(raw), "") if isinstance(raw, Mapping) else ""
            self.problem(
                loc,
                f"{what}: each action is one of {', '.join(f'`{k}`' for k in kinds)}{did_you_mean(str(key), kinds)}",
            )
            return None
        ((kind, spec),) = raw.items()
        sloc = _value_loc(raw, kind, loc)
        if kind == "notify":
            n = self.notify(d, spec, sloc, what)
            return Action("notify", loc, notify=n) if n else None
        if kind == "set":
            values = self.values(d, spec, sloc, what)
            return Action("set", loc, set=values) if values is not None else None
        if kind == "start":
            name = spec.get("process") if isinstance(spec, Mapping) else spec
            if name not in processes:
                self.problem(
                    sloc, f"{what}: unknown process `{name}`{did_you_mean(str(name), processes)}"
                )
                return None
            body = processes[name].body
            if isinstance(body, Mapping) and body.get("document") != d.name:
                self.problem(
                    sloc,
                    f"{what}: the process `{name}` runs on `{body.get('document')}`, not `{d.name}`",
                )
                return None
            return Action("start", loc, process=str(name))
        # create
        if not isinstance(spec, Mapping) or "document" not in spec:
            self.problem(sloc, f"{what}: `create` takes `document` and `values`")
            return None
        target = self.doc(spec["document"], _value_loc(spec, "document", sloc), what)
        if target is None:
            return None
        values = spec.get("values") or {}
        vloc = _value_loc(spec, "values", sloc)
        out = {}
        for fname, value in values.items() if isinstance(values, Mapping) else ():
            if fname not in target.fields:
                self.problem(
                    _key_loc(values, fname, vloc),
                    f"{what}: `{target.name}` has no field `{fname}`{did_you_mean(str(fname), target.fields)}",
                )
                return None
            if isinstance(value, str) and "{{" in value:
                if (
                    self.expression(
                        d,
                        value,
                        _value_loc(values, fname, vloc),
                        f"{what}: `{fname}`",
                        template=True,
                    )
                    is None
                ):
                    return None
            out[str(fname)] = value
        return Action("create", loc, document=target.name, values=out)


# --- the graph ------------------------------------------------------------------------


def check_graph(p: Process) -> Iterator[Problem]:
    """Dangling names, steps with no way out, unreachable steps, loops that
    would spin without a person or the clock, branches that never join."""
    what = f"process `{p.name}`"
    dangling = False
    for s in p.steps.values():
        for key, target in _named_targets(s):
            if target not in p.steps:
                dangling = True
                yield Problem(
                    s.locs.get(key, s.loc),
                    f"step `{s.name}` of {what}: `{key}` leads to an unknown step `{target}`"
                    f"{did_you_mean(target, p.steps)}",
                )
        if s.kind != "end" and not s.exits():
            yield Problem(
                s.loc,
                f"step `{s.name}` of {what} has no way out: give it `next`"
                + (", `outcomes`" if s.kind == "task" else "")
                + " or make it `end: true`",
            )
    if dangling:
        return
    reached = _reachable(p, p.first)
    for s in p.steps.values():
        if s.name not in reached:
            yield Problem(s.loc, f"step `{s.name}` of {what} is never reached from `{p.first}`")
    yield from _spinning_loops(p)
    for s in p.steps.values():
        if s.kind == "parallel" and s.join:
            for branch in s.parallel:
                if s.join not in _reachable(p, branch, stop=s.join):
                    yield Problem(
                        s.locs.get("parallel", s.loc),
                        f"step `{s.name}` of {what}: the branch `{branch}` never reaches its join `{s.join}`",
                    )


def _named_targets(s: Step) -> Iterator[tuple[str, str]]:
    if s.next:
        yield "next", s.next
    for target in s.outcomes.values():
        yield "outcomes", target
    if s.then:
        yield "then", s.then
    if s.otherwise:
        yield "else", s.otherwise
    for b in s.parallel:
        yield "parallel", b
    if s.join:
        yield "join", s.join


def _reachable(p: Process, start: str, stop: str | None = None) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in p.steps:
            continue
        seen.add(name)
        if name == stop:
            continue
        todo += [t for _, t in p.steps[name].exits()]
    return seen


def _spinning_loops(p: Process) -> Iterator[Problem]:
    """A cycle made only of steps that pass at once (if, set, notify,
    parallel) would run forever the moment an instance enters it."""
    instant = {n for n, s in p.steps.items() if not s.waits and s.kind != "end"}
    color: dict[str, int] = {}
    reported: set[frozenset[str]] = set()

    def visit(name: str, path: list[str]) -> Iterator[Problem]:
        color[name] = 1
        path.append(name)
        for _, t in p.steps[name].exits():
            if t not in instant:
                continue
            if color.get(t) == 1:
                cycle = path[path.index(t) :]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    yield Problem(
                        p.steps[t].loc,
                        f"process `{p.name}`: the steps {' → '.join(f'`{c}`' for c in [*cycle, t])} "
                        "form a loop with no task or wait in it, so it would never stop",
                    )
            elif color.get(t) is None:
                yield from visit(t, path)
        path.pop()
        color[name] = 2

    for name in instant:
        if color.get(name) is None:
            yield from visit(name, [])


# --- the whole -----------------------------------------------------------------------


def read(registry: Registry, channels: Iterable[str], kinds: Iterable[str] = ()) -> Definitions:
    """Every process and automation of a configuration, with the problems found."""
    reader = _Reader(registry, channels, kinds)
    calendar, problems = calendar_of(registry)
    reader.problems += problems
    out = Definitions(calendar=calendar)
    for name, section in registry.processes.items():
        p = reader.process(name, section.body, section.loc)
        if p is not None:
            out.processes[name] = p
    for name, section in registry.automations.items():
        a = reader.automation(name, section.body, section.loc, registry.processes)
        if a is not None:
            out.automations[name] = a
    out.problems = reader.problems
    return out


__all__ = [
    "Action", "Assignee", "Automation", "Calendar", "Definitions", "Duration", "Notify",
    "Process", "Step", "TaskSpec", "Trigger", "Wait", "field_path_problem", "parse_duration", "read",
]  # fmt: skip
