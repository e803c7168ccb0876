"""What reading route maps and automations shares: the helpers that find
where a YAML node is, and ``Reader``, which reads the pieces both sections
use (document types, expressions, triggers, assignees, notifications, ``set``
values). routemaps.py and automations.py build on it.

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
    field_path_problem,
)

from .calendar import Duration, parse_duration
from .model import (
    Assignee,
    Notify,
    Trigger,
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


NOTIFY_KEYS = ("channel", "to", "text", "subject", "template")
#: the built-in plugins that deliver a channel, for the hint of a config that has not turned them on
CHANNEL_PLUGINS = {"email": "mail", "sms": "telephony"}


class Reader:
    """Reads route maps and automations, collecting problems as it goes."""

    def __init__(
        self,
        registry: Registry,
        channels: Iterable[str],
        kinds: Iterable[str],
        templated: Iterable[str] = (),
    ):
        self.registry = registry
        self.channels = {c for c in channels if isinstance(c, str)}
        #: channels whose plugin delivers `notify.<channel>` itself, with `template:`
        self.templated = set(templated)
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

    def label(self, value: Any, loc: Loc, what: str) -> str | None:
        """A label in the config's language: text, or text by language."""
        ok = (isinstance(value, str) and value.strip()) or (
            isinstance(value, Mapping)
            and value
            and all(isinstance(v, str) and v.strip() for v in value.values())
        )
        if not ok:
            self.problem(
                loc,
                f"{what}: `label` is text, or text by language `{{en: ..., ru: ...}}`, "
                f"not {_show(value) if not _blank(value) else 'empty'}",
            )
            return None
        return _label(value, self.registry.locale, "") or None

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
            plugin = CHANNEL_PLUGINS.get(channel) if isinstance(channel, str) else None
            hint = (
                f"; the `{plugin}` plugin delivers it: add `{plugin}: {{}}` under `plugins` "
                "in config.yaml"
                if plugin and plugin not in self.registry.plugins
                else f"{did_you_mean(str(channel), self.channels)}; channels here: "
                f"{_names(sorted(self.channels)) or 'none'}"
            )
            self.problem(
                cloc, f"{what}: no enabled plugin delivers the channel `{_show(channel)}`{hint}"
            )
            ok = False
        text = raw.get("text")
        template = raw.get("template")
        tploc = _value_loc(raw, "template", loc)
        if template is not None:
            if not isinstance(template, str) or not template.strip():
                self.problem(tploc, f"{what}: `template` is the name of an email template")
                ok = False
            elif channel not in self.templated and channel in self.channels:
                self.problem(
                    tploc,
                    f"{what}: the channel `{_show(channel)}` sends no templates; "
                    + (
                        f"channels with templates here: {_names(sorted(self.templated))}"
                        if self.templated
                        else "write `text` instead"
                    ),
                )
                ok = False
            if text is not None:
                self.problem(tploc, f"{what}: write `text` or `template`, not both")
                ok = False
        if text is None and template is None and keys_ok:
            self.problem(
                loc, f"{what}: a notification needs `text`, the message to send (or `template`)"
            )
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
                f"{what}: a notification by `{_show(channel)}` needs `to`: a field "
                '(`customer.email`), a template (`"{{ doc.customer.email }}"`) or the users '
                "to write to (`owner`, a user field, `{role: R}`, `{user: LOGIN}`)",
            )
            ok = False
        elif self._to_users(d, to_raw):
            to = self.assignee(d, to_raw, tloc, f"{what}: `to`")
            ok = ok and to is not None
            if to is not None and channel != "email" and channel not in self.templated:
                self.problem(
                    tloc,
                    f"{what}: users have no address for `{_show(channel)}`; `to` is a field "
                    "or a template of the number",
                )
                ok = False
        elif isinstance(to_raw, str) and "{{" not in to_raw and "{%" not in to_raw:
            problem = field_path_problem(self.registry, d, to_raw)
            if problem:
                self.problem(tloc, f"{what}: `to`: {problem}")
                ok = False
            else:
                to = "{{ doc." + to_raw + " }}"
        elif self.expression(d, to_raw, tloc, f"{what}: `to`", True) is None:
            ok = False
        else:
            to = str(to_raw)
        if not ok:
            return None
        return Notify(
            str(channel),
            to,
            str(text) if text is not None else "",
            str(subject) if subject else None,
            loc,
            str(template).strip() if template is not None else None,
        )

    def _to_users(self, d: DocType, raw: Any) -> bool:
        """Whether a `to` names users (who get it at their own address)."""
        if raw == "owner" or isinstance(raw, Mapping):
            return True
        f = d.fields.get(raw) if isinstance(raw, str) else None
        return f is not None and f.type == "ref" and f.to == USER

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


def _settable(d: DocType, f: Field) -> bool:
    """Whether ``set`` may write ``f``: not computed, not a table, not kept by
    the engine (the status field excepted)."""
    is_status = d.statuses is not None and f.name == d.statuses.field
    return not f.compute and f.type != "table" and (is_status or not f.system)
