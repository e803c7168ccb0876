"""Route maps and automations of a configuration, read once into frozen definitions.

The sections ``processes`` and ``automations`` (the plugin declares them,
``crm_sections``) are read by routemaps.py and automations.py (on the shared
pieces of reader.py) into the dataclasses of model.py, route maps' graphs
checked by graph.py, with the business calendar of the plugin's
settings (settings.py, calendar.py). The same definitions drive the runtime
(runtime.py), the picture (maps.py) and ``crm check``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.api import Problem, Registry

from .automations import AutomationReader
from .calendar import Calendar, Duration, parse_duration
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
    outcome_label,
)
from .routemaps import RouteMapReader
from .settings import calendar_of

#: the sections of metadata files the plugin reads: section → what one entry is called
SECTIONS = {"processes": "process", "automations": "automation"}
#: the key of the definitions in ``registry.extensions``
EXTENSION = "processes.definitions"


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


def read(
    registry: Registry,
    channels: Iterable[str],
    kinds: Iterable[str] = (),
    templated: Iterable[str] = (),
) -> Definitions:
    """Every process and automation of a configuration, with the problems found.
    ``templated`` are the channels whose plugin runs a ``notify.<channel>``
    job of its own (and so fills in a ``template:``).

    Never raises on what a consultant wrote: a mistake is a Problem."""
    channels, kinds, templated = list(channels), list(kinds), list(templated)
    routes = RouteMapReader(registry, channels, kinds, templated)
    automations = AutomationReader(registry, channels, kinds, templated)
    out = Definitions(calendar=calendar_of(registry))
    processes = registry.section("processes")
    for name, section in processes.items():
        p = routes.process(name, section.body, section.loc)
        if p is not None:
            out.processes[name] = p
    for name, section in registry.section("automations").items():
        a = automations.automation(name, section.body, section.loc, processes)
        if a is not None:
            out.automations[name] = a
    out.problems = routes.problems + automations.problems
    return out


def definitions_for(registry: Registry, pm: Any = None) -> Definitions:
    """The checked definitions of a configuration, read once and kept with
    it (``registry.extensions``); ``pm`` tells the channels and step kinds
    the enabled plugins bring (``crm check`` reads them so first)."""
    found = registry.extensions.get(EXTENSION)
    if found is None or (pm is not None and found[1] is None):
        channels: list[str] = ["user"]
        kinds: list[str] = []
        templated: list[str] = []
        if pm is not None:
            channels = [c for result in pm.hook.crm_notification_channels() for c in result or ()]
            kinds = [k for result in pm.hook.crm_process_step_kinds() for k in result or ()]
            jobs = {name for result in pm.hook.crm_jobs() for name in result or {}}
            templated = [c for c in channels if f"notify.{c}" in jobs]
        found = (read(registry, channels, kinds, templated), pm)
        registry.extensions[EXTENSION] = found
    return found[0]


__all__ = [
    "Action", "Assignee", "Automation", "Calendar", "Definitions", "Duration", "Notify",
    "Process", "Step", "TaskSpec", "Trigger", "Wait", "calendar_of", "definitions_for",
    "outcome_label", "parse_duration", "read",
]  # fmt: skip
