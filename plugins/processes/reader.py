"""Reading the ``processes`` and ``automations`` sections into definitions.

Parsing never raises: every mistake becomes a ``Problem`` at the YAML node it
is about (the key or the value to fix), all of a file's mistakes are found in
one run, and a definition with problems is left out, so that the engine runs
only route maps that passed ``crm check``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from engine.api import (
    USER,
    DocType,
    Field,
    Loc,
    Problem,
    Registry,
    did_you_mean,
    expression_problems,
    identifier_problem,
)

from .calendar import Duration, parse_duration
from .graph import check_graph
from .model import (
    Action,
    Assignee,
    Automation,
    Notify,
    Process,
    Step,
    TaskSpec,
    Trigger,
    Wait,
)

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
EVENTS = ("create", "update", "status", "field", "delete")


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
MISPLACED: dict[str, str | dict[str, str]] = {
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


class Reader:
    """Reads route maps and automations, collecting problems as it goes."""

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
