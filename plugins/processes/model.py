"""The frozen definitions of route maps and automations, as the runtime uses them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.api import Loc

from .calendar import Duration


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
    #: the name of a template the channel's plugin fills in (``mail``'s EmailTemplate)
    template: str | None = None


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
    #: an expression over the document: when it holds after a save, the
    #: running instance is cancelled (with its tasks)
    stop_when: str | None = None
    #: what the diagram says of the start (``start: label``), in the config's language
    start_label: str | None = None

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


def outcome_label(step: Step | None, outcome: str, locale: str) -> str:
    """What an outcome's button says: its label in the config's language,
    else the outcome's name with spaces for underscores."""
    labels = step.outcome_labels.get(outcome, {}) if step is not None else {}
    return labels.get(locale) or labels.get("") or labels.get("en") or outcome.replace("_", " ")
