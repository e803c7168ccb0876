"""Reading route maps (the ``processes`` section): a process, its steps and
their graph, every mistake a problem at the YAML node to fix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.api import DocType, Loc, did_you_mean, identifier_problem

from .graph import check_graph
from .model import Process, Step, TaskSpec, Trigger, Wait
from .reader import (
    KINDS,
    STEP_KEYS,
    Reader,
    _a,
    _closest,
    _item_loc,
    _key_loc,
    _label,
    _names,
    _show,
    _value_loc,
)

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


class RouteMapReader(Reader):
    """Reads the processes of a configuration."""

    def process(self, name: str, body: Any, loc: Loc) -> Process | None:
        what = f"process `{name}`"
        if not isinstance(body, Mapping):
            self.problem(loc, f"{what}: a process is a map with `document`, `start` and `steps`")
            return None
        before = len(self.problems)
        if not self.enabled(body, loc, what):
            return None
        self.unknown_keys(
            body, ("label", "document", "start", "stop_when", "steps", "enabled"), loc, what
        )
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
        start_label: str | None = None
        if not isinstance(start_raw, Mapping):
            self.problem(
                sloc,
                f"{what}: `start` is a map such as `{{on: create, when: \"kind == 'typical'\"}}`",
            )
        else:
            self.unknown_keys(start_raw, ("on", "when", "label"), sloc, f"{what}: `start`")
            if "label" in start_raw:
                start_label = self.label(
                    start_raw["label"], _value_loc(start_raw, "label", sloc), f"{what}: `start`"
                )
            start = self.trigger(
                d, start_raw.get("on", "create"), start_raw.get("when"),
                _value_loc(start_raw, "on", sloc), _value_loc(start_raw, "when", sloc),
                f"{what}: `start`", process=True,
            )  # fmt: skip
        stop_when = None
        if "stop_when" in body:
            stop_when = self.expression(
                d, body["stop_when"], _value_loc(body, "stop_when", loc), f"{what}: `stop_when`"
            )
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
            str(next(iter(steps_raw))), loc, stop_when, start_label,
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
            "label": self.label(raw["label"], _value_loc(raw, "label", loc), what)
            if "label" in raw
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
