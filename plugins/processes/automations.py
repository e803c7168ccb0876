"""Reading automations (the ``automations`` section): a trigger and the
actions it runs, every mistake a problem at the YAML node to fix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.api import DocType, Loc, did_you_mean

from .model import Action, Automation, Trigger
from .reader import Reader, _item_loc, _key_loc, _label, _names, _show, _value_loc

ACTIONS = ("notify", "set", "create", "start")


class AutomationReader(Reader):
    """Reads the automations of a configuration."""

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
