"""Route maps and automations, read from the ``processes`` and ``automations``
sections into frozen definitions, and checked.

Parsing never raises: every mistake becomes a ``Problem`` at the YAML node it
is about (the key or the value to fix), all of a file's mistakes are found in
one run, and a definition with problems is left out, so that the engine runs
only route maps that passed ``crm check``. The same definitions drive the
runtime (runtime.py), the picture (maps.py) and the checks below.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.checks import expression_problems, field_path_problem
from engine.errors import Loc, Problem, did_you_mean
from engine.names import identifier_problem
from engine.registry import USER, DocType, Field, Registry

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


DURATION_HINT = "write `30m`, `4h`, `2d`, `1w` or `3bd` (business days)"


def parse_duration(value: Any) -> Duration | str:
    """A Duration, or the message that says why ``value`` is not one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"the duration is empty: {DURATION_HINT}"
    if isinstance(value, bool):
        return f"`{str(value).lower()}` is not a duration: {DURATION_HINT}"
    if isinstance(value, (list, tuple)):
        return "a duration is one value such as `2d`, not a list"
    if isinstance(value, Mapping):
        return "a duration is one value such as `2d`, not a map"
    if isinstance(value, (int, float)):
        return f"`{value}` has no unit: {DURATION_HINT}"
    text = str(value).strip()
    m = DURATION.match(text)
    if m:
        amount = int(m.group(1))
        if amount <= 0 or amount > 10_000:
            return f"`{text}`: a duration is between 1 and 10000 {UNIT_WORDS[m.group(2)]}"
        return Duration(amount, m.group(2), f"{amount}{m.group(2)}")
    shape = re.match(r"^([-+]?)(\d*[.,]?\d*)\s*([A-Za-z]*)$", text)
    if shape and any(c.isdigit() for c in shape.group(2)):
        sign, number, unit = shape.groups()
        if sign == "-":
            return f"`{text}`: a duration cannot be negative; {DURATION_HINT}"
        if "." in number or "," in number:
            return f"`{text}`: a duration counts whole units{_smaller(number, unit)}"
        if unit.lower() in UNIT_WORDS and unit != unit.lower():
            return f"`{text}`: write the unit in small letters: `{number}{unit.lower()}`"
        if not unit:
            return f"`{text}` has no unit: {DURATION_HINT}"
        return (
            f"`{text}`: unknown unit `{unit}`{did_you_mean(unit, UNIT_WORDS)}; "
            "units are m (minutes), h (hours), d (days), w (weeks), bd (business days)"
        )
    return f"`{text}` is not a duration: {DURATION_HINT}"


def _smaller(number: str, unit: str) -> str:
    """The hint for a fraction: ``1.5d`` → ``36h``."""
    smaller = {"w": ("d", 7), "d": ("h", 24), "h": ("m", 60)}.get(unit.lower())
    try:
        value = float(number.replace(",", "."))
    except ValueError:
        return ""
    if smaller is None or not (value * smaller[1]).is_integer():
        return ""
    return f"; write `{int(value * smaller[1])}{smaller[0]}` instead"


#: the ``processes`` plugin's settings in config.yaml
SETTINGS = ("workdays", "holidays")


def _config_node(registry: Registry) -> tuple[Any, Loc]:
    """The ``processes`` settings as written in config.yaml, with locations.

    The registry keeps plugin settings without their YAML locations, so the
    file is read again (without the environment: only where things are is
    wanted here, never a value)."""
    folder = registry.settings.get("config_dir")
    if not isinstance(folder, str):
        return None, Loc("config.yaml", 1, 1)
    from engine.loader import CONFIG_FILE, shown_path
    from engine.yamlload import load_file

    path = Path(folder) / CONFIG_FILE
    name = shown_path(path)
    loc = Loc(name, 1, 1)
    try:
        data = load_file(path, name, env={}).data
    except Exception:  # pragma: no cover - locations only; the loader read it already
        return None, loc
    plugins = data.get("plugins") if isinstance(data, Mapping) else None
    if not isinstance(plugins, Mapping) or "processes" not in plugins:
        return None, loc
    node = plugins["processes"]
    return node, _value_loc(plugins, "processes", loc)


def calendar_of(registry: Registry) -> tuple[Calendar, list[Problem]]:
    """The business calendar of the ``processes`` settings, and what is wrong
    with them (``workdays: [mon, tue, ...]``, ``holidays: [2027-01-07, ...]``)."""
    settings = registry.plugins.get("processes") or {}
    problems: list[Problem] = []
    node, loc = _config_node(registry)
    if not isinstance(node, Mapping):
        node = {}
    what = "the `processes` plugin"
    try:
        tz: dt.tzinfo = ZoneInfo(str(registry.settings.get("timezone") or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        tz = dt.UTC
    for key in settings:
        if key not in SETTINGS:
            problems.append(
                Problem(
                    _key_loc(node, key, loc),
                    f"{what} has no setting `{key}`{did_you_mean(str(key), SETTINGS)}; "
                    f"its settings are {', '.join(f'`{s}`' for s in SETTINGS)}",
                )
            )
    workdays = frozenset(range(5))
    raw_days = settings.get("workdays")
    days_node = node.get("workdays")
    days_loc = _value_loc(node, "workdays", loc)
    if "workdays" in settings and not isinstance(raw_days, (list, str)):
        problems.append(
            Problem(
                days_loc,
                f"{what}: `workdays` lists the working weekdays, e.g. `[mon, tue, wed, thu, fri]`",
            )
        )
    elif raw_days is not None:
        days = set()
        for day, where in _each(raw_days, days_node, days_loc):
            name = str(day).strip().lower() if isinstance(day, str) else ""
            if name[:3] in WEEKDAYS and (len(name) == 3 or _weekday_word(name)):
                days.add(WEEKDAYS.index(name[:3]))
            else:
                problems.append(
                    Problem(
                        where,
                        f"{what}: `{day}` is not a weekday: "
                        "write mon, tue, wed, thu, fri, sat or sun",
                    )
                )
        if raw_days == []:
            problems.append(
                Problem(
                    days_loc,
                    f"{what}: `workdays` is empty, so business days (`bd`) would never pass; "
                    "list the working weekdays, e.g. `[mon, tue, wed, thu, fri]`",
                )
            )
        workdays = frozenset(days)
    holidays = set()
    raw_holidays = settings.get("holidays")
    hol_node = node.get("holidays")
    hol_loc = _value_loc(node, "holidays", loc)
    if raw_holidays is not None and not isinstance(raw_holidays, (list, str, dt.date)):
        problems.append(
            Problem(hol_loc, f"{what}: `holidays` lists dates, e.g. `[2027-01-01, 2027-01-07]`")
        )
    elif raw_holidays is not None:
        for day, where in _each(raw_holidays, hol_node, hol_loc):
            date = _date(day)
            if date is None:
                problems.append(Problem(where, f"{what}: `{day}` is not a date such as 2027-01-07"))
            else:
                holidays.add(date)
    return Calendar(workdays, frozenset(holidays), tz), problems


def _each(raw: Any, node: Any, loc: Loc) -> Iterator[tuple[Any, Loc]]:
    """The items of a setting that is a list or one value, each with its place."""
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            yield item, _item_loc(node, i, loc)
    else:
        yield raw, loc


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(value.strip()) if isinstance(value, str) else None
    except ValueError:
        return None


def _weekday_word(name: str) -> bool:
    """``monday``, ``tues``: a weekday written longer than its three letters."""
    full = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    return any(w.startswith(name) for w in full)


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
    #: outcome → its button's label by language (``{to: step, label: ...}``)
    outcome_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
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


def _has(node: Any, key: Any) -> bool:
    try:
        return isinstance(node, Mapping) and key in node
    except TypeError:  # an unhashable key
        return False


def _key_loc(node: Any, key: Any, default: Loc) -> Loc:
    return node.key_loc(key) if hasattr(node, "key_loc") and _has(node, key) else default


def _value_loc(node: Any, key: Any, default: Loc) -> Loc:
    return node.value_loc(key) if hasattr(node, "value_loc") and _has(node, key) else default


def _item_loc(node: Any, i: int, default: Loc) -> Loc:
    return node.item_loc(i) if hasattr(node, "item_loc") else default


def _label(value: Any, locale: str, default: str) -> str:
    if isinstance(value, Mapping):
        return str(value.get(locale) or value.get("en") or next(iter(value.values()), default))
    return str(value) if value else default


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _closest(word: Any, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(str(word), sorted(set(choices)), n=1, cutoff=0.6)
    return close[0] if close else None


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _a(word: str) -> str:
    return f"an `{word}`" if word[:1] in "aeiou" else f"a `{word}`"


def _show(value: Any) -> str:
    """A value as a consultant wrote it, for a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a map"
    return str(value)


#: why a key a step does not take belongs elsewhere
MISPLACED = {
    "next": {
        "if": "an `if` goes on by `then` and `else`",
        "parallel": "a `parallel` step goes on at its `join`",
        "end": "an `end` step finishes the process; remove `next` or `end: true`",
    },
    "outcomes": "only a `task` has `outcomes`",
    "then": "only an `if` step has `then` and `else`",
    "else": "only an `if` step has `then` and `else`",
    "join": "only a `parallel` step has a `join`",
}
#: keys of a task that are written inside ``task: {...}``
TASK_KEYS = ("title", "assignee", "due", "description")
NOTIFY_KEYS = ("channel", "to", "text", "subject")
ACTIONS = ("notify", "set", "create", "start")


class _Reader:
    def __init__(self, registry: Registry, channels: Iterable[str], kinds: Iterable[str]):
        self.registry = registry
        self.channels = {c for c in channels if isinstance(c, str)}
        self.extra_kinds = {k for k in kinds if isinstance(k, str) and k not in KINDS}
        self.problems: list[Problem] = []

    def problem(self, loc: Loc, message: str) -> None:
        self.problems.append(Problem(loc, message))

    def unknown_keys(
        self, raw: Mapping[Any, Any], allowed: Iterable[str], loc: Loc, what: str, where: str = ""
    ) -> bool:
        """Report every key of ``raw`` not in ``allowed``; whether all were known."""
        allowed = tuple(allowed)
        ok = True
        for k in raw:
            if k not in allowed:
                hint = did_you_mean(str(k), allowed) or f"; it takes {_names(allowed)}"
                self.problem(_key_loc(raw, k, loc), f"{what}: unknown key `{k}`{where}{hint}")
                ok = False
        return ok

    # -- shared pieces ----------------------------------------------------------------

    def doc(self, name: Any, loc: Loc, what: str) -> DocType | None:
        d = self.registry.documents.get(name) if isinstance(name, str) else None
        if d is None or d.builtin:
            choices = [n for n, x in self.registry.documents.items() if not x.builtin]
            self.problem(
                loc,
                f"{what}: unknown document type `{_show(name)}`{did_you_mean(str(name), choices)}",
            )
            return None
        return d

    def expression(
        self, d: DocType, source: Any, loc: Loc, what: str, template: bool = False
    ) -> str | None:
        if isinstance(source, (int, float)) and template and not isinstance(source, bool):
            source = str(source)
        if not isinstance(source, str) or not source.strip():
            self.problem(
                loc,
                f"{what} must be {'a text or template' if template else 'an expression'} "
                f"in quotes, not {'empty' if _blank(source) else _show(source)}",
            )
            return None
        bad = expression_problems(self.registry, d, source, template=template)
        hidden = {m.group(1) for b in bad if (m := re.search(r"hidden attribute `([^`]+)`", b))}
        bad = [b for b in bad if not any(b.endswith(f"has no field `{h}`") for h in hidden)]
        for message in bad:
            self.problem(loc, f"{what}: {message}")
        return None if bad else source

    def trigger(
        self, d: DocType, raw: Any, when: Any, loc: Loc, when_loc: Loc, what: str, process: bool
    ) -> Trigger | None:
        """``on: create`` / ``update`` / ``delete`` / ``{status: S}`` / ``{field: F}``
        (``document:`` beside them in an automation)."""
        forms = "`create`, `update`, `delete`, `{status: S}` or `{field: F}`"
        ok = True
        event: Any = raw
        value: Any = None
        vloc = loc
        if isinstance(raw, Mapping):
            chosen = []
            for k in raw:
                if k in ("status", "field", "event"):
                    chosen.append(k)
                elif k != "document":
                    self.problem(
                        _key_loc(raw, k, loc),
                        f"{what}: unknown key `{k}` in `on`"
                        f"{did_you_mean(str(k), ['status', 'field', 'event'])}; `on` is {forms}",
                    )
                    ok = False
            event = "create"
            if len(chosen) > 1:
                self.problem(
                    _key_loc(raw, chosen[1], loc),
                    f"{what}: `on` names one event, not both `{chosen[0]}` and `{chosen[1]}`; "
                    "make two of them",
                )
                ok = False
            elif chosen:
                key = chosen[0]
                vloc = _value_loc(raw, key, loc)
                event, value = (raw[key], None) if key == "event" else (key, raw[key])
                if key == "event" and event in ("status", "field"):
                    self.problem(vloc, f"{what}: write `on: {{{event}: ...}}`, naming the {event}")
                    ok = False
        if ok and (not isinstance(event, str) or event not in EVENTS):
            self.problem(vloc, f"{what}: `on` is {forms}, not `{_show(event)}`")
            ok = False
        elif ok and process and event == "delete":
            self.problem(
                vloc, f"{what}: a process cannot start on `delete`: the document is gone by then"
            )
            ok = False
        elif ok and event == "status":
            states = d.statuses.states if d.statuses else {}
            if d.statuses is None:
                self.problem(vloc, f"{what}: `{d.name}` has no statuses")
                ok = False
            elif not isinstance(value, str) or value not in states:
                self.problem(
                    vloc,
                    f"{what}: `{d.name}` has no state `{_show(value)}`"
                    f"{did_you_mean(str(value), states)}; its states are {_names(states)}",
                )
                ok = False
        elif ok and event == "field" and (not isinstance(value, str) or value not in d.fields):
            self.problem(
                vloc,
                f"{what}: `{d.name}` has no field `{_show(value)}`"
                f"{did_you_mean(str(value), d.fields)}",
            )
            ok = False
        condition = None
        if when is not None:
            condition = self.expression(d, when, when_loc, f"{what}: `when`")
            ok = ok and condition is not None
        if not ok:
            return None
        return Trigger(d.name, str(event), value, condition, loc)

    def assignee(self, d: DocType, raw: Any, loc: Loc, what: str) -> Assignee | None:
        users = [n for n, x in d.fields.items() if x.type == "ref" and x.to == USER]
        forms = (
            f"write `owner`, a field that refers to a user ({_names(users) or 'it has none'}), "
            "`{role: R}` or `{user: LOGIN}`"
        )
        if raw == "owner":
            if d.owner is None:
                self.problem(
                    loc,
                    f"{what}: `{d.name}` has no owner; "
                    + forms.replace("write `owner`, ", "write "),
                )
                return None
            return Assignee("owner", None, loc)
        if isinstance(raw, str):
            f = d.fields.get(raw)
            if f is None:
                self.problem(
                    loc,
                    f"{what}: `{d.name}` has no field `{raw}`"
                    f"{did_you_mean(raw, [*users, 'owner'])}; {forms}",
                )
                return None
            if f.type != "ref" or f.to != USER:
                refers = f"refers to `{f.to}`" if f.type == "ref" else f"is {_a(f.type)} field"
                self.problem(loc, f"{what}: `{d.name}.{raw}` {refers}, not to a user; " + forms)
                return None
            return Assignee("field", raw, loc)
        if isinstance(raw, Mapping) and len(raw) == 1:
            ((kind, value),) = raw.items()
            vloc = _value_loc(raw, kind, loc)
            if kind == "role":
                if not isinstance(value, str) or value not in self.registry.roles:
                    self.problem(
                        vloc,
                        f"{what}: unknown role `{_show(value)}`"
                        f"{did_you_mean(str(value), self.registry.roles)}; "
                        f"roles are {_names(self.registry.roles)}",
                    )
                    return None
                return Assignee("role", value, loc)
            if kind == "user":
                if not isinstance(value, str) or not value.strip():
                    self.problem(vloc, f"{what}: `user` is a login, such as `{{user: anna}}`")
                    return None
                return Assignee("user", value, loc)
            self.problem(
                _key_loc(raw, kind, loc),
                f"{what}: unknown key `{kind}`{did_you_mean(str(kind), ['role', 'user'])}; "
                + forms,
            )
            return None
        self.problem(loc, f"{what}: {forms}, not {_show(raw)}")
        return None

    def duration(self, raw: Any, loc: Loc, what: str) -> Duration | None:
        result = parse_duration(raw)
        if isinstance(result, str):
            self.problem(loc, f"{what}: {result}")
            return None
        return result

    def notify(self, d: DocType, raw: Any, loc: Loc, what: str) -> Notify | None:
        if not isinstance(raw, Mapping):
            self.problem(
                loc,
                f"{what}: `notify` is a map such as `{{channel: user, to: owner, text: ...}}`, "
                f"not {_show(raw) if raw is not None else 'empty'}",
            )
            return None
        ok = keys_ok = self.unknown_keys(raw, NOTIFY_KEYS, loc, what, " in `notify`")
        channel = raw.get("channel", "user")
        cloc = _value_loc(raw, "channel", loc)
        if not isinstance(channel, str) or channel not in self.channels:
            self.problem(
                cloc,
                f"{what}: no enabled plugin delivers the channel `{_show(channel)}`"
                f"{did_you_mean(str(channel), self.channels)}; channels here: "
                f"{_names(sorted(self.channels)) or 'none'}",
            )
            ok = False
        text = raw.get("text")
        if text is None and keys_ok:
            self.problem(loc, f"{what}: a notification needs `text`, the message to send")
            ok = False
        elif text is not None and (
            self.expression(d, text, _value_loc(raw, "text", loc), f"{what}: `text`", True) is None
        ):
            ok = False
        subject = raw.get("subject")
        if (
            subject is not None
            and self.expression(
                d, subject, _value_loc(raw, "subject", loc), f"{what}: `subject`", True
            )
            is None
        ):
            ok = False
        to_raw = raw.get("to", "owner" if channel == "user" else None)
        tloc = _value_loc(raw, "to", loc)
        to: Assignee | str | None = None
        if channel == "user":
            to = self.assignee(d, to_raw, tloc, f"{what}: `to`")
            ok = ok and to is not None
        elif to_raw is None:
            self.problem(
                loc,
                f"{what}: a notification by `{_show(channel)}` needs `to`, a template of the "
                'address, such as `"{{ doc.customer.email }}"`',
            )
            ok = False
        elif self.expression(d, to_raw, tloc, f"{what}: `to`", True) is None:
            ok = False
        else:
            to = str(to_raw)
        if not ok:
            return None
        return Notify(str(channel), to, str(text), str(subject) if subject else None, loc)

    def values(
        self, d: DocType, raw: Any, loc: Loc, what: str, target: DocType | None = None, key="set"
    ) -> dict[str, Any] | None:
        """``set:`` values (and those of ``create``) for ``target`` (``d`` by
        default): a literal, or a template in ``{{ }}`` over ``d``."""
        t = target or d
        if not isinstance(raw, Mapping) or (not raw and key == "set"):
            self.problem(
                loc,
                f"{what}: `{key}` maps fields of `{t.name}` to values, "
                "such as `{stage: won}`"
                + (
                    ""
                    if raw is None
                    else ", and it is empty"
                    if raw == {}
                    else f", not {_show(raw)}"
                ),
            )
            return None
        out: dict[str, Any] = {}
        ok = True
        for name, value in raw.items():
            kloc = _key_loc(raw, name, loc)
            vloc = _value_loc(raw, name, kloc)
            f = t.fields.get(name) if isinstance(name, str) else None
            is_status = t.statuses is not None and name == t.statuses.field
            if f is None:
                settable = [n for n, x in t.fields.items() if _settable(t, x)]
                self.problem(
                    kloc,
                    f"{what}: `{t.name}` has no field `{name}`{did_you_mean(str(name), settable)}",
                )
                ok = False
                continue
            if f.compute:
                self.problem(
                    kloc,
                    f"{what}: `{t.name}.{name}` is computed from `{f.compute}`; "
                    "set the fields it is computed from instead",
                )
                ok = False
                continue
            if not _settable(t, f):
                why = "is a table of rows" if f.type == "table" else "is kept by the engine"
                self.problem(kloc, f"{what}: `{t.name}.{name}` {why}; a process cannot set it")
                ok = False
                continue
            if isinstance(value, str) and "{{" in value:
                if self.expression(d, value, vloc, f"{what}: `{name}`", template=True) is None:
                    ok = False
                    continue
            elif is_status:
                assert t.statuses is not None
                states = t.statuses.states
                if not isinstance(value, str) or value not in states:
                    self.problem(
                        vloc,
                        f"{what}: `{t.name}` has no state `{_show(value)}`"
                        f"{did_you_mean(str(value), states)}; its states are {_names(states)}",
                    )
                    ok = False
                    continue
            elif (
                f.type == "enum"
                and value is not None
                and (not isinstance(value, (str, int)) or str(value) not in f.values)
            ):
                self.problem(
                    vloc,
                    f"{what}: `{_show(value)}` is not a value of `{t.name}.{name}`"
                    f"{did_you_mean(str(value), f.values)}; its values are {_names(f.values)}",
                )
                ok = False
                continue
            elif isinstance(value, (list, Mapping)):
                self.problem(
                    vloc,
                    f"{what}: `{t.name}.{name}` takes one value or a `{{{{ }}}}` template, "
                    f"not {_show(value)}",
                )
                ok = False
                continue
            out[str(name)] = value
        return out if ok else None

    def enabled(self, body: Mapping[Any, Any], loc: Loc, what: str) -> bool:
        """``enabled: false`` switches a process or an automation off (a config
        does so to one that a layer brings); it is then checked no further."""
        on = body.get("enabled", True)
        if not isinstance(on, bool):
            self.problem(
                _value_loc(body, "enabled", loc),
                f"{what}: `enabled` is `true` or `false`, not `{_show(on)}`",
            )
        return on is not False

    # -- processes ----------------------------------------------------------------------

    def process(self, name: str, body: Any, loc: Loc) -> Process | None:
        what = f"process `{name}`"
        if not isinstance(body, Mapping):
            self.problem(loc, f"{what}: a process is a map with `document`, `start` and `steps`")
            return None
        before = len(self.problems)
        if not self.enabled(body, loc, what):
            return None
        self.unknown_keys(body, ("label", "document", "start", "steps", "enabled"), loc, what)
        if "document" not in body:
            self.problem(
                loc, f"{what} needs `document`: the type it runs on, such as `document: Deal`"
            )
            return None
        d = self.doc(body.get("document"), _value_loc(body, "document", loc), what)
        if d is None:
            return None
        start_raw = body.get("start", {"on": "create"})
        sloc = _value_loc(body, "start", loc)
        start = None
        if not isinstance(start_raw, Mapping):
            self.problem(
                sloc,
                f"{what}: `start` is a map such as `{{on: create, when: \"kind == 'typical'\"}}`",
            )
        else:
            self.unknown_keys(start_raw, ("on", "when"), sloc, f"{what}: `start`")
            start = self.trigger(
                d, start_raw.get("on", "create"), start_raw.get("when"),
                _value_loc(start_raw, "on", sloc), _value_loc(start_raw, "when", sloc),
                f"{what}: `start`", process=True,
            )  # fmt: skip
        steps_raw = body.get("steps")
        stloc = _value_loc(body, "steps", loc)
        if not isinstance(steps_raw, Mapping) or not steps_raw:
            self.problem(
                stloc if "steps" in body else loc,
                f"{what}: `steps` maps step names to steps, "
                + (
                    "and it is missing"
                    if "steps" not in body
                    else "and it has none"
                    if isinstance(steps_raw, Mapping) or steps_raw is None
                    else f"not {_show(steps_raw)}"
                ),
            )
            return None
        steps: dict[str, Step] = {}
        opaque: set[str] = set()
        for step_name, raw in steps_raw.items():
            kloc = _key_loc(steps_raw, step_name, stloc)
            bad_name = identifier_problem(step_name, "step")
            # a step's name is never a column nor a name in an expression, so
            # SQL and Python keywords (`end`, `both`, `check`) are fine for it
            if bad_name and not bad_name.endswith("keyword"):
                self.problem(kloc, f"{what}: {bad_name}")
            step = self.step(d, name, str(step_name), raw, kloc)
            if step is None:
                opaque.add(str(step_name))
            else:
                steps[str(step_name)] = step
        process = Process(
            name, _label(body.get("label"), self.registry.locale, name), d.name,
            start or Trigger(d.name, "create", None, None, loc), steps,
            str(next(iter(steps_raw))), loc,
        )  # fmt: skip
        self.problems += check_graph(process, frozenset(opaque))
        if len(self.problems) > before or start is None:
            return None
        return process

    def step(self, d: DocType, process: str, name: str, raw: Any, loc: Loc) -> Step | None:
        """The step as far as the graph needs it (None when its ways out are
        unknown); the problems found go to ``self.problems``."""
        what = f"step `{name}` of process `{process}`"
        kinds_here = (*KINDS, *sorted(self.extra_kinds))
        say = f"say what it does: {_names(kinds_here)}"
        if not isinstance(raw, Mapping) or not raw:
            self.problem(
                loc,
                f"{what} does nothing: {say}"
                if raw is None or isinstance(raw, Mapping)
                else f"{what}: a step is a map such as `{{task: ..., outcomes: ...}}`, "
                f"not {_show(raw)}",
            )
            return None
        kinds = [k for k in kinds_here if k in raw]
        main = [k for k in kinds if k not in ("set", "notify")]
        if len(main) > 1:
            self.problem(
                _key_loc(raw, main[1], loc),
                f"{what}: a step does one thing, and this one is both `{main[0]}` and "
                f"`{main[1]}`; make two steps and lead from one to the other",
            )
            return None
        kind = (
            main[0] if main else ("notify" if "notify" in raw else "set" if "set" in raw else None)
        )
        every = {k for keys in STEP_KEYS.values() for k in keys} | set(kinds_here)
        if kind is None:
            unknown = [k for k in raw if k not in every]
            for k in unknown:
                self.problem(
                    _key_loc(raw, k, loc),
                    f"{what}: unknown key `{k}`{did_you_mean(str(k), kinds_here)}; {say}",
                )
            if not unknown:
                self.problem(loc, f"{what} does nothing: {say}")
            return None
        allowed = STEP_KEYS.get(kind, {kind, "next", "set", "notify", "label"})
        ok = True  # the step's shape: its ways out are known
        for k in raw:
            if k in allowed:
                continue
            hint = did_you_mean(str(k), allowed)
            guess = k if k in every or k in TASK_KEYS else _closest(k, [*every, *TASK_KEYS])
            if hint:
                pass
            elif guess in TASK_KEYS and kind == "task":
                hint = f"; write it inside `task: {{{guess}: ...}}`"
            elif guess in MISPLACED:
                m = MISPLACED[guess]
                hint = (f" (did you mean `{guess}`?)" if guess != k else "") + "; "
                hint += (
                    m.get(kind, f"{_a(kind)} step goes on by `next`") if isinstance(m, dict) else m
                )
            else:
                hint = f"; it takes {_names(sorted(allowed))}"
            self.problem(_key_loc(raw, k, loc), f"{what}: {_a(kind)} step has no `{k}`{hint}")
            ok = False
        locs: dict[str, Loc] = {str(k): _value_loc(raw, k, loc) for k in raw}
        kw: dict[str, Any] = {
            "label": _label(raw["label"], self.registry.locale, "") or None
            if raw.get("label")
            else None,
            "locs": locs,
        }
        if "set" in raw:
            kw["set"] = self.values(d, raw["set"], locs["set"], what) or {}
        if "notify" in raw:
            items = raw["notify"] if isinstance(raw["notify"], list) else [raw["notify"]]
            notes = []
            for i, item in enumerate(items):
                iloc = (
                    _item_loc(raw["notify"], i, locs["notify"])
                    if isinstance(raw["notify"], list)
                    else locs["notify"]
                )
                n = self.notify(d, item, iloc, what)
                if n is not None:
                    notes.append(n)
            if not items:
                self.problem(locs["notify"], f"{what}: `notify` lists no message")
            kw["notify"] = tuple(notes)
        for key in ("next", "then", "else", "join"):
            if key in raw and (not isinstance(raw[key], str) or not raw[key].strip()):
                self.problem(locs[key], f"{what}: `{key}` names a step, not {_show(raw[key])}")
                ok = False
        if isinstance(raw.get("next"), str) and "next" in allowed:
            kw["next"] = raw["next"]
        if kind == "task":
            kw["task"] = self.task(d, raw["task"], locs["task"], what)
            outcomes = raw.get("outcomes")
            if "outcomes" in raw:
                ok = self.outcomes(outcomes, locs["outcomes"], what, locs) and ok
                if isinstance(outcomes, Mapping):
                    kw["outcomes"] = {str(k): _target(v) for k, v in outcomes.items() if _target(v)}
                    kw["outcome_labels"] = {
                        str(k): _labels(v["label"])
                        for k, v in outcomes.items()
                        if isinstance(v, Mapping) and v.get("label") is not None
                    }
                if "next" in raw:
                    self.problem(
                        _key_loc(raw, "next", loc),
                        f"{what}: a task with `outcomes` goes on by them; remove `next`",
                    )
                    ok = False
        elif kind == "if":
            self.expression(d, raw["if"], locs["if"], f"{what}: `if`")
            kw["condition"] = raw["if"] if isinstance(raw["if"], str) else None
            missing = [k for k in ("then", "else") if k not in raw]
            if missing:
                self.problem(
                    loc,
                    f"{what}: an `if` needs {' and '.join(f'`{k}`' for k in missing)}, "
                    "the steps to go to when the condition holds and when it does not",
                )
                ok = False
            kw["then"] = raw.get("then") if isinstance(raw.get("then"), str) else None
            kw["otherwise"] = raw.get("else") if isinstance(raw.get("else"), str) else None
        elif kind == "parallel":
            branches = raw["parallel"]
            if (
                not isinstance(branches, list)
                or len(branches) < 2
                or not all(isinstance(b, str) and b for b in branches)
            ):
                self.problem(
                    locs["parallel"],
                    f"{what}: `parallel` lists two or more steps to run at once, "
                    "such as `[call_client, send_offer]`",
                )
                ok = False
            else:
                kw["parallel"] = tuple(branches)
                for i in range(len(branches)):
                    locs[f"parallel.{i}"] = _item_loc(branches, i, locs["parallel"])
            if "join" not in raw:
                self.problem(
                    loc,
                    f"{what}: `parallel` needs `join`, the step that waits for every branch",
                )
                ok = False
            elif isinstance(raw["join"], str):
                kw["join"] = raw["join"]
        elif kind == "wait":
            kw["wait"] = self.wait(d, raw["wait"], locs["wait"], what)
        elif kind == "end":
            if raw["end"] is not True:
                self.problem(
                    locs["end"], f"{what}: write `end: true`, not `end: {_show(raw['end'])}`"
                )
        elif kind in self.extra_kinds:
            kw["options"] = raw[kind]
        return Step(name, kind, loc, **kw) if ok else None

    def outcomes(self, raw: Any, loc: Loc, what: str, locs: dict[str, Loc]) -> bool:
        shape = "`outcomes` maps each outcome to the step it leads to, such as `{ok: next_step}`"
        if not isinstance(raw, Mapping) or not raw:
            self.problem(loc, f"{what}: {shape}")
            return False
        ok = True
        for outcome, target in raw.items():
            if not isinstance(outcome, str) or not outcome.strip() or "," in outcome:
                self.problem(
                    _key_loc(raw, outcome, loc),
                    f"{what}: the outcome `{_show(outcome)}` must be a word without commas",
                )
                ok = False
            vloc = _value_loc(raw, outcome, loc)
            if isinstance(target, Mapping):
                # {to: step, label: {en: ..., ru: ...}}: the button says the label
                for key in target:
                    if key not in ("to", "label"):
                        self.problem(
                            _key_loc(target, key, vloc),
                            f"{what}: the outcome `{outcome}` takes `to` and `label`, not `{_show(key)}`",
                        )
                        ok = False
                label = target.get("label")
                if label is not None and not (
                    isinstance(label, str)
                    or (
                        isinstance(label, Mapping)
                        and all(isinstance(x, str) for x in label.values())
                    )
                ):
                    self.problem(
                        _value_loc(target, "label", vloc),
                        f"{what}: the label of `{outcome}` is text, or text by language `{{en: ..., ru: ...}}`",
                    )
                    ok = False
                vloc = _value_loc(target, "to", vloc)
                target = target.get("to")
            locs[f"outcomes.{outcome}"] = vloc
            if not isinstance(target, str) or not target.strip():
                self.problem(vloc, f"{what}: the outcome `{outcome}` leads nowhere: name a step")
                ok = False
        return ok

    def task(self, d: DocType, raw: Any, loc: Loc, what: str) -> TaskSpec | None:
        if not isinstance(raw, Mapping):
            self.problem(
                loc,
                f"{what}: `task` is a map such as `{{title: ..., assignee: owner, due: 2d}}`"
                + (f", not {_show(raw)}" if raw is not None else ""),
            )
            return None
        ok = self.unknown_keys(raw, TASK_KEYS, loc, what, " in `task`")
        title = raw.get("title")
        if title is None and ok:
            self.problem(loc, f"{what}: a task needs a `title`")
            ok = False
        elif title is not None and (
            self.expression(d, title, _value_loc(raw, "title", loc), f"{what}: `title`", True)
            is None
        ):
            ok = False
        description = raw.get("description")
        if (
            description is not None
            and self.expression(
                d,
                description,
                _value_loc(raw, "description", loc),
                f"{what}: `description`",
                True,
            )
            is None
        ):
            ok = False
        assignee = self.assignee(
            d, raw.get("assignee", "owner"), _value_loc(raw, "assignee", loc), f"{what}: `assignee`"
        )
        due = None
        if "due" in raw:
            due = self.duration(raw["due"], _value_loc(raw, "due", loc), f"{what}: `due`")
            ok = ok and due is not None
        if not ok or assignee is None:
            return None
        return TaskSpec(str(title), assignee, due, str(description) if description else None, loc)

    def wait(self, d: DocType, raw: Any, loc: Loc, what: str) -> Wait | None:
        dates = [n for n, x in d.fields.items() if x.type in ("date", "datetime")]
        fields_hint = f"the date fields of `{d.name}` are {_names(dates) or 'none'}"
        if isinstance(raw, str) and raw.strip() in d.fields:
            raw = {"until": raw.strip()}
        elif isinstance(raw, str) and raw.strip() and not any(c.isdigit() for c in raw):
            self.problem(
                loc,
                f"{what}: `wait: {raw}` is neither a duration (`2d`) nor a field of "
                f"`{d.name}`{did_you_mean(raw, dates)}; {fields_hint}",
            )
            return None
        elif not isinstance(raw, Mapping):
            duration = self.duration(raw, loc, f"{what}: `wait`")
            return Wait(None, duration, loc) if duration else None
        if not self.unknown_keys(raw, ("until", "for"), loc, what, " in `wait`"):
            return None
        if len(raw) == 1 and "until" in raw:
            name = raw["until"]
            uloc = _value_loc(raw, "until", loc)
            f = d.fields.get(name) if isinstance(name, str) else None
            if f is None:
                self.problem(
                    uloc,
                    f"{what}: `{d.name}` has no field `{_show(name)}`"
                    f"{did_you_mean(str(name), dates)}; {fields_hint}",
                )
                return None
            if f.type not in ("date", "datetime"):
                self.problem(
                    uloc,
                    f"{what}: `{d.name}.{name}` is {_a(f.type)} field, not a date; {fields_hint}",
                )
                return None
            return Wait(str(name), None, loc)
        if len(raw) == 1 and "for" in raw:
            duration = self.duration(raw["for"], _value_loc(raw, "for", loc), f"{what}: `wait`")
            return Wait(None, duration, loc) if duration else None
        self.problem(
            loc, f"{what}: `wait` is a duration (`2d`) or `{{until: a date field}}`, one of them"
        )
        return None

    # -- automations ---------------------------------------------------------------------

    def automation(
        self, name: str, body: Any, loc: Loc, processes: Mapping[str, Any]
    ) -> Automation | None:
        what = f"automation `{name}`"
        if not isinstance(body, Mapping):
            self.problem(loc, f"{what}: an automation is a map with `on`, `when` and `do`")
            return None
        before = len(self.problems)
        if not self.enabled(body, loc, what):
            return None
        ok = self.unknown_keys(body, ("label", "on", "when", "do", "enabled"), loc, what)
        on = body.get("on")
        oloc = _value_loc(body, "on", loc)
        d = None
        if not isinstance(on, Mapping) or "document" not in on:
            self.problem(
                oloc,
                f"{what}: `on` names the `document` and the event, "
                "such as `{document: Deal, status: won}`",
            )
        else:
            d = self.doc(on["document"], _value_loc(on, "document", oloc), what)
        trigger = None
        if d is not None:
            trigger = self.trigger(
                d, on, body.get("when"), oloc, _value_loc(body, "when", loc), what, process=False
            )
        actions_raw = body.get("do")
        aloc = _value_loc(body, "do", loc)
        actions = []
        if "do" not in body:
            self.problem(
                loc,
                f"{what} has no `do`: list what it does, such as "
                "`do: [{notify: {to: owner, text: ...}}]`",
            )
            ok = False
        elif not isinstance(actions_raw, list) or not actions_raw:
            self.problem(
                aloc,
                f"{what}: `do` lists the actions ({_names(ACTIONS)}), "
                f"one per line starting with `-`"
                + ("" if actions_raw is None else f", not {_show(actions_raw)}"),
            )
            ok = False
        elif d is not None:
            for i, item in enumerate(actions_raw):
                iloc = _item_loc(actions_raw, i, aloc)
                action = self.action(d, item, iloc, what, processes, trigger)
                ok = ok and action is not None
                if action is not None:
                    actions.append(action)
        if not ok or trigger is None or len(self.problems) > before:
            return None
        return Automation(
            name,
            _label(body.get("label"), self.registry.locale, name),
            trigger,
            tuple(actions),
            loc,
        )

    def action(
        self,
        d: DocType,
        raw: Any,
        loc: Loc,
        what: str,
        processes: Mapping[str, Any],
        trigger: Trigger | None,
    ) -> Action | None:
        if not isinstance(raw, Mapping) or len(raw) != 1 or next(iter(raw)) not in ACTIONS:
            keys = list(raw) if isinstance(raw, Mapping) else []
            unknown = [k for k in keys if k not in ACTIONS]
            hint = did_you_mean(str(unknown[0]), ACTIONS) if unknown else ""
            self.problem(
                _key_loc(raw, unknown[0], loc) if unknown else loc,
                f"{what}: "
                + (f"unknown action `{unknown[0]}`{hint}; " if unknown else "")
                + f"each action is one of {_names(ACTIONS)}"
                + (", one per item of `do`" if len(keys) > 1 else ""),
            )
            return None
        ((kind, spec),) = raw.items()
        sloc = _value_loc(raw, kind, loc)
        if trigger is not None and trigger.event == "delete" and kind in ("set", "start"):
            self.problem(
                _key_loc(raw, kind, loc),
                f"{what}: `{kind}` on a deleted document; on `delete` an automation may "
                "`notify` or `create`",
            )
            return None
        if kind == "notify":
            n = self.notify(d, spec, sloc, what)
            return Action("notify", loc, notify=n) if n else None
        if kind == "set":
            values = self.values(d, spec, sloc, what)
            return Action("set", loc, set=values) if values is not None else None
        if kind == "start":
            return self.start_action(d, spec, sloc, loc, what, processes)
        return self.create_action(d, spec, sloc, loc, what)

    def start_action(
        self, d: DocType, spec: Any, sloc: Loc, loc: Loc, what: str, processes: Mapping[str, Any]
    ) -> Action | None:
        name, nloc = spec, sloc
        if isinstance(spec, Mapping):
            if not self.unknown_keys(spec, ("process",), sloc, what, " in `start`"):
                return None
            name, nloc = spec.get("process"), _value_loc(spec, "process", sloc)
        if not isinstance(name, str) or name not in processes:
            self.problem(
                nloc,
                f"{what}: unknown process `{_show(name)}`{did_you_mean(str(name), processes)}"
                + (f"; processes are {_names(processes)}" if processes else "; there are none"),
            )
            return None
        body = processes[name].body
        if isinstance(body, Mapping) and body.get("enabled", True) is False:
            self.problem(nloc, f"{what}: the process `{name}` is switched off (`enabled: false`)")
            return None
        runs_on = body.get("document") if isinstance(body, Mapping) else None
        if runs_on != d.name:
            self.problem(
                nloc,
                f"{what}: the process `{name}` runs on `{_show(runs_on)}`, not `{d.name}`",
            )
            return None
        return Action("start", loc, process=name)

    def create_action(self, d: DocType, spec: Any, sloc: Loc, loc: Loc, what: str) -> Action | None:
        if not isinstance(spec, Mapping) or "document" not in spec:
            self.problem(
                sloc,
                f"{what}: `create` takes `document` and `values`, such as "
                "`{document: Interaction, values: {subject: ...}}`",
            )
            return None
        ok = self.unknown_keys(spec, ("document", "values"), sloc, what, " in `create`")
        target = self.doc(spec["document"], _value_loc(spec, "document", sloc), what)
        if target is None:
            return None
        raw = spec.get("values")
        vloc = _value_loc(spec, "values", sloc)
        values = self.values(d, {} if raw is None else raw, vloc, what, target=target, key="values")
        if values is None:
            return None
        missing = [
            n
            for n, f in target.fields.items()
            if f.required and f.default is None and not f.compute and not f.system
            and n not in values
        ]  # fmt: skip
        if missing:
            self.problem(
                sloc,
                f"{what}: `create` of `{target.name}` leaves {_names(missing)} empty, "
                f"and {'it is' if len(missing) == 1 else 'they are'} required; give "
                f"{'it' if len(missing) == 1 else 'them'} under `values`",
            )
            ok = False
        if not ok:
            return None
        return Action("create", loc, document=target.name, values=values)


def _settable(d: DocType, f: Field) -> bool:
    """Whether ``set`` may write ``f``: not computed, not a table, not kept by
    the engine (the status field excepted)."""
    is_status = d.statuses is not None and f.name == d.statuses.field
    return not f.compute and f.type != "table" and (is_status or not f.system)


def _target(value: Any) -> str | None:
    """The step an outcome leads to: ``next_step`` or ``{to: next_step, label: ...}``."""
    if isinstance(value, Mapping):
        value = value.get("to")
    return value if isinstance(value, str) and value.strip() else None


def _labels(value: Any) -> dict[str, str]:
    """A label by language; plain text is the label in every language (key "")."""
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    return {"": str(value)}


def outcome_label(step: Step | None, outcome: str, locale: str) -> str:
    """What an outcome's button says: its label in the config's language,
    else the outcome's name with spaces for underscores."""
    labels = step.outcome_labels.get(outcome, {}) if step is not None else {}
    return labels.get(locale) or labels.get("") or labels.get("en") or outcome.replace("_", " ")


# --- the graph ------------------------------------------------------------------------


def check_graph(p: Process, opaque: frozenset[str] = frozenset()) -> list[Problem]:
    """Dangling names, steps with no way out, unreachable steps, loops that
    would spin without a person or the clock, branches that never join, joins
    shared by two splits. ``opaque`` steps exist but their ways out are
    unknown (they have problems of their own): the checks that follow every
    path wait until those, dangling names and dead ends are fixed, so that
    one mistake is not reported again as its consequences."""
    what = f"process `{p.name}`"
    names = set(p.steps) | set(opaque)
    problems: list[Problem] = []
    dangling = stuck = False
    for s in p.steps.values():
        for key, target, where in _named_targets(s):
            if target not in names:
                dangling = True
                problems.append(
                    Problem(
                        s.locs.get(where, s.locs.get(key, s.loc)),
                        f"step `{s.name}` of {what}: `{key}` leads to an unknown step "
                        f"`{target}`{did_you_mean(target, names)}",
                    )
                )
        if s.kind != "end" and not s.exits():
            stuck = True
            problems.append(
                Problem(
                    s.loc,
                    f"step `{s.name}` of {what} has no way out: give it `next`"
                    + (", `outcomes`" if s.kind == "task" else "")
                    + " or make it `end: true`",
                )
            )
    splits: dict[str, str] = {}
    for s in p.steps.values():
        if s.kind == "parallel" and s.join:
            if s.join in splits:
                problems.append(
                    Problem(
                        s.locs.get("join", s.loc),
                        f"step `{s.name}` of {what}: `{s.join}` is already the join of "
                        f"`{splits[s.join]}`; give each `parallel` step a join step of its own",
                    )
                )
            else:
                splits[s.join] = s.name
            if s.join in s.parallel or s.join == s.name:
                problems.append(
                    Problem(
                        s.locs.get("join", s.loc),
                        f"step `{s.name}` of {what}: the join `{s.join}` must be a step "
                        "after the branches, not one of them",
                    )
                )
    problems += _spinning_loops(p)
    if dangling or opaque or stuck:
        return problems
    reached = _reachable(p, p.first)
    for s in p.steps.values():
        if s.name not in reached:
            problems.append(
                Problem(
                    s.loc,
                    f"step `{s.name}` of {what} is never reached from the first step "
                    f"`{p.first}`: lead to it from another step, or remove it",
                )
            )
    for s in p.steps.values():
        if s.kind == "parallel" and s.join and s.join not in s.parallel:
            for i, branch in enumerate(s.parallel):
                if s.join not in _reachable(p, branch, stop=s.join, split=s.name):
                    problems.append(
                        Problem(
                            s.locs.get(f"parallel.{i}", s.locs.get("parallel", s.loc)),
                            f"step `{s.name}` of {what}: the branch `{branch}` never reaches "
                            f"the join `{s.join}`, so the process would wait there forever",
                        )
                    )
    return problems


def _named_targets(s: Step) -> Iterator[tuple[str, str, str]]:
    """(key, step it names, the key of its location in ``s.locs``)."""
    if s.next:
        yield "next", s.next, "next"
    for outcome, target in s.outcomes.items():
        yield "outcomes", target, f"outcomes.{outcome}"
    if s.then:
        yield "then", s.then, "then"
    if s.otherwise:
        yield "else", s.otherwise, "else"
    for i, b in enumerate(s.parallel):
        yield "parallel", b, f"parallel.{i}"
    if s.join:
        yield "join", s.join, "join"


def _reachable(
    p: Process, start: str, stop: str | None = None, split: str | None = None
) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in p.steps:
            continue
        seen.add(name)
        if name in (stop, split):
            continue
        todo += [t for _, t in p.steps[name].exits()]
    return seen


def _spinning_loops(p: Process) -> list[Problem]:
    """A cycle made only of steps that pass at once (if, set, notify,
    parallel) would run forever the moment an instance enters it."""
    instant = {n for n, s in p.steps.items() if not s.waits and s.kind != "end"}
    color: dict[str, int] = {}  # 1: on the current path, 2: done
    reported: set[frozenset[str]] = set()
    problems: list[Problem] = []
    for root in p.steps:  # in the order written, for a stable message
        if root not in instant or root in color:
            continue
        path: list[str] = [root]
        todo: list[Iterator[str]] = [iter(t for _, t in p.steps[root].exits())]
        color[root] = 1
        while todo:
            t = next(todo[-1], None)
            if t is None:
                color[path.pop()] = 2
                todo.pop()
            elif t in instant and color.get(t) == 1:
                cycle = path[path.index(t) :]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    problems.append(
                        Problem(
                            p.steps[t].loc,
                            f"process `{p.name}`: the steps "
                            f"{' → '.join(f'`{c}`' for c in [*cycle, t])} form a loop with no "
                            "task or wait in it, so it would never stop; put a task or a "
                            "`wait` on the way",
                        )
                    )
            elif t in instant and t not in color:
                color[t] = 1
                path.append(t)
                todo.append(iter(x for _, x in p.steps[t].exits()))
    return problems


# --- the whole -----------------------------------------------------------------------


def read(registry: Registry, channels: Iterable[str], kinds: Iterable[str] = ()) -> Definitions:
    """Every process and automation of a configuration, with the problems found.

    Never raises on what a consultant wrote: a mistake is a Problem."""
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
    "Process", "Step", "TaskSpec", "Trigger", "Wait", "check_graph", "field_path_problem",
    "parse_duration", "read",
]  # fmt: skip
