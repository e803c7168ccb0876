"""The plugin manager: built-in and outside plugins through one entry point group.

Every plugin, the built-in ones included, is found through the entry point
group ``crm.plugins``; a configuration's ``plugins:`` section chooses which
are on. The engine's own defaults (core field types, the base layer) are a
plugin too, always on.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pluggy

from engine import hookspecs
from engine.errors import Loc, Problem, did_you_mean
from engine.hookspecs import hookimpl
from engine.timeline import CoreTimeline

ENTRY_POINT_GROUP = "crm.plugins"
ROOT = Path(__file__).resolve().parent.parent


class CorePlugin:
    """What the engine itself contributes through its own hooks: the core
    field types, the jobs that deliver email and SMS (``crm.email``,
    ``crm.sms``) through whichever plugin implements the sending hook, and
    the web pages' background import (``crm.import``) and the nightly ABC/XYZ
    classification (``crm.abc_xyz``, scheduled by the configuration's reports)."""

    @hookimpl
    def crm_field_types(self) -> list[Any]:
        from engine.fieldtypes import CORE_TYPES

        return list(CORE_TYPES)

    @hookimpl
    def crm_jobs(self) -> dict[str, Any]:
        from engine.jobs import CORE_JOBS
        from engine.reports.abc_xyz import JOB as ABC_XYZ_JOB
        from engine.reports.abc_xyz import abc_xyz_job
        from engine.transfer import IMPORT_JOB, import_job

        return {**CORE_JOBS, IMPORT_JOB: import_job, ABC_XYZ_JOB: abc_xyz_job}


def available_plugins() -> dict[str, Any]:
    """name → entry point, for every installed plugin."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def make_plugin_manager(
    enabled: Mapping[str, Any], where: Mapping[str, Loc] | None = None
) -> tuple[pluggy.PluginManager, list[Problem]]:
    """A manager with the core and the enabled plugins registered, or the
    problems that prevented it (an unknown plugin name, a misspelt hook)."""
    pm = pluggy.PluginManager("crm")
    pm.add_hookspecs(hookspecs)
    # every plugin registered from here on is asked for hookspecs of its own
    pm.hook.crm_add_hookspecs.call_historic(kwargs={"pm": pm})
    pm.register(CorePlugin(), name="core")
    pm.register(CoreTimeline(), name="core-timeline")
    problems: list[Problem] = []
    installed = available_plugins()
    where = where or {}
    for name in enabled:
        loc = where.get(name, Loc("config.yaml", 1, 1))
        ep = installed.get(name)
        if ep is None:
            problems.append(
                Problem(
                    loc,
                    f"unknown plugin `{name}`{did_you_mean(name, installed)}; "
                    f"installed: {', '.join(sorted(installed)) or 'none'}",
                )
            )
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # an outside plugin that fails to import
            problems.append(Problem(loc, f"plugin `{name}` failed to load: {exc}"))
            continue
        try:
            pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            # a hook implemented with arguments its spec does not have, or the
            # same module enabled twice: leave no half-registered plugin behind
            if pm.has_plugin(name) and pm.get_plugin(name) is plugin:
                pm.unregister(name=name)
            problems.append(Problem(loc, f"plugin `{name}`: {_one_line(exc)}"))
    problems += _unknown_hooks(pm, where)
    return pm, problems


def section_owner(section: str) -> str | None:
    """The installed plugin that interprets a metadata section (``crm_sections``),
    enabled or not: to tell a consultant which plugin to turn on."""
    for name, ep in sorted(available_plugins().items()):
        try:
            declared = getattr(ep.load(), "crm_sections", None)
            sections = declared() if callable(declared) else None
        except Exception:  # a plugin that fails to import says so when it is enabled
            sections = None
        if sections and section in sections:
            return name
    return None


class _SpecRecorder:
    """Stands in for the plugin manager in ``crm_add_hookspecs``: notes the specs."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def add_hookspecs(self, module: Any) -> None:
        self.names |= {n for n, fn in vars(module).items() if hasattr(fn, "crm_spec")}


def hook_owner(hook: str) -> str | None:
    """The installed plugin that offers a hook of its own (``crm_add_hookspecs``)."""
    for name, ep in sorted(available_plugins().items()):
        specs = _SpecRecorder()
        try:
            adds = getattr(ep.load(), "crm_add_hookspecs", None)
            if callable(adds):
                adds(pm=specs)
        except Exception:  # a plugin that fails to import says so when it is enabled
            specs.names.clear()
        if hook in specs.names:
            return name
    return None


def _unknown_hooks(pm: pluggy.PluginManager, where: Mapping[str, Loc]) -> list[Problem]:
    """``pm.check_pending()``, but every misspelt hook is reported, with a hint."""
    specs = [n for n in vars(pm.hook) if not n.startswith("_") and getattr(pm.hook, n).has_spec()]
    problems = []
    for name, caller in sorted(vars(pm.hook).items()):
        if name.startswith("_") or caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if not impl.optionalhook:
                owner = hook_owner(name)
                hint = (
                    f": it is a hook of the `{owner}` plugin; turn `{owner}` on under "
                    "`plugins` in config.yaml"
                    if owner
                    else did_you_mean(name, specs)
                )
                problems.append(
                    Problem(
                        where.get(impl.plugin_name, Loc("config.yaml", 1, 1)),
                        f"plugin `{impl.plugin_name}` implements unknown hook `{name}`{hint}",
                    )
                )
    return problems


def _one_line(exc: Exception) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
