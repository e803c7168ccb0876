"""From a config directory to a :class:`~engine.registry.Registry`.

Layers load in order: the base (``metadata/``), the enabled plugins' layers,
then the config's own ``*.yaml`` files by name. A later layer may add types,
fields, enum values, states, transitions, labels and access rules, and make a
field required, unique or indexed; it may not change a field's type or remove
it. Every problem found on the way is collected with its location; nothing is
half-built.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import schema as S
from engine.errors import Loc, MetadataError, Problem, a_or_an, did_you_mean
from engine.fieldtypes import TEXT_LENGTH
from engine.names import identifier_problem
from engine.plugins import ROOT, make_plugin_manager, section_owner
from engine.registry import (
    EVERYONE,
    SELF,
    SYSTEM_FIELDS,
    USER,
    Access,
    Card,
    Dashboard,
    DocType,
    Editable,
    Field,
    FormSection,
    Label,
    ListSpec,
    Numbering,
    RefWhere,
    Registry,
    Report,
    RequireNext,
    Role,
    Section,
    Segment,
    StageControl,
    State,
    Statuses,
    Transition,
    frozen_map,
)
from engine.yamlload import LList, LMap, load_file

BASE_LAYER = ROOT / "metadata"
CONFIG_FILE = "config.yaml"
#: the sections the engine reads itself; plugins declare theirs (``crm_sections``)
SECTIONS = ("documents", "attributes", "roles", "segments", "reports", "dashboards")
#: options a later layer may change on an existing field without an error
MERGEABLE = {"label", "help", "default", "hidden", "readonly", "min", "max", "pattern", "where"}
#: options a later layer may only switch on
SWITCH_ON = {"required", "index", "unique"}


def _strength(value: Any) -> int:
    """How far a switch-on option is on: off, ``warn`` (of ``unique``), on."""
    return 1 if value == "warn" else 2 if value else 0


def shown_path(path: Path) -> str:
    """How a file is named in messages: relative to the working folder when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


# --- drafts: mutable while layers merge, frozen into the registry at the end --


@dataclass
class FieldDraft:
    name: str
    spec: dict[str, Any]
    loc: Loc
    layer: str
    locs: dict[str, Loc] = field(default_factory=dict)
    values: dict[str, Label] = field(default_factory=dict)
    children: dict[str, FieldDraft] = field(default_factory=dict)


@dataclass
class StatusesDraft:
    spec: LMap
    loc: Loc
    states: dict[str, tuple[LMap, Loc, Label]] = field(default_factory=dict)
    transitions: list[tuple[LMap, Loc]] = field(default_factory=list)
    #: ``control:`` merged key by key over the layers (a later layer's key wins)
    control: LMap | None = None


@dataclass
class DashboardDraft:
    """A dashboard while layers merge: a later layer's entry of the same name
    changes its label, roles and order, and adds, replaces or removes cards by name."""

    name: str
    loc: Loc
    spec: LMap
    label: Label
    roles: tuple[str, ...] | None = None
    order: int = 0
    cards: dict[str, Card] = field(default_factory=dict)


@dataclass
class DocDraft:
    name: str
    loc: Loc
    layer: str
    label: Label
    fields: dict[str, FieldDraft] = field(default_factory=dict)
    settings: dict[str, tuple[Any, Loc]] = field(default_factory=dict)
    statuses: StatusesDraft | None = None
    access: dict[str, tuple[LMap, Loc]] = field(default_factory=dict)
    builtin: bool = False


class Loader:
    def __init__(self, config_dir: Path, env: Mapping[str, str] | None = None):
        self.config_dir = Path(config_dir)
        self.env = dict(os.environ if env is None else env)
        self.problems: list[Problem] = []
        self.docs: dict[str, DocDraft] = {}
        self.roles: dict[str, Role] = {}
        self.segments: dict[str, Segment] = {}
        self.reports: dict[str, Report] = {}
        self.dashboards: dict[str, DashboardDraft] = {}
        #: a plugin's section → its entries, as loaded YAML (``crm_sections``)
        self.sections: dict[str, dict[str, Section]] = {}
        #: a plugin's section → what one entry of it is called in messages
        self.section_nouns: dict[str, str] = {}
        #: plugin → its settings as its schema loaded them (``crm_settings_schema``)
        self.plugin_settings: dict[str, Any] = {}
        #: plugin → its settings as written, and where they start
        self.plugin_yaml: dict[str, tuple[Any, Loc]] = {}
        self.field_types: set[str] = set()
        #: field type → (the options it takes beyond the common ones, whether min/max apply)
        self.type_options: dict[str, tuple[frozenset[str], bool]] = {}
        #: document types whose definition was refused: not reported again as unknown
        self.broken: set[str] = set()
        #: where each piece of the merged metadata was written, for the checks' messages
        self.sources: dict[tuple[Any, ...], Any] = {}
        self.pm: Any = None
        self.layers: dict[str, bool] = {}
        #: the most characters of a ``text`` field without a ``max_length`` of its own
        self.text_length = TEXT_LENGTH
        #: what config.yaml read from the environment: value → variable, kept out of messages
        self.env_values: dict[str, str] = {}
        #: every value config.yaml read from the environment (a Secret setting must be one)
        self.env_secrets: frozenset[str] = frozenset()

    # -- entry point ----------------------------------------------------------

    def load(self) -> Registry:
        config, config_loc = self._load_config()
        if config is None:
            raise MetadataError(self._redacted())
        self.text_length = (config.get("limits") or {}).get("text_length", TEXT_LENGTH)
        plugins = config.get("plugins") or LMap()
        if not isinstance(plugins, Mapping):
            plugins = LMap()
        plugin_locs = {n: plugins.key_loc(n) for n in plugins} if isinstance(plugins, LMap) else {}
        self.pm, problems = make_plugin_manager(plugins, plugin_locs)
        self.problems += problems
        self._check_plugin_settings(plugins, config_loc)
        self._plugin_sections(plugin_locs, config_loc)
        for result in self.pm.hook.crm_field_types():
            for ft in result:
                if ft.name in self.field_types:
                    self.problems.append(
                        Problem(config_loc, f"two plugins define the field type `{ft.name}`")
                    )
                self.field_types.add(ft.name)
                self.type_options[ft.name] = (frozenset(ft.options), bool(ft.ordered))
        self._add_user_type()
        layers: list[tuple[str, list[Path], Path]] = []
        wanted = config.get("layers", ["base"])
        if "base" in wanted:
            layers.append(("base", _yaml_files(BASE_LAYER), BASE_LAYER))
        # pluggy calls the last registered plugin first: reverse to keep config order
        for contributed in reversed(self.pm.hook.crm_metadata_layers()):
            for name, folder in contributed:
                layers.append((name, _yaml_files(Path(folder)), Path(folder)))
        for name in wanted:
            if name != "base":
                loc = config.value_loc("layers") if isinstance(config, LMap) else config_loc
                self.problems.append(
                    Problem(loc, f"unknown layer `{name}`: layers are `base` and the plugins'")
                )
        own = [p for p in _yaml_files(self.config_dir, recursive=False) if p.name != CONFIG_FILE]
        layers.append(("config", own, self.config_dir))
        # the layers a file may need, and whether this configuration loads them
        self.layers = {"base": False, **{name: True for name, *_ in layers if name != "config"}}
        for layer, files, folder in layers:
            for path in files:
                self._load_metadata_file(path, layer, folder)
        self._check_merged(plugins)
        registry = self._build(config)
        if not self.problems:
            from engine.checks import check_registry
            from engine.reports.service import plugin_kinds

            kinds = plugin_kinds(self.pm, registry)
            self.problems += check_registry(registry, self.field_types, self.sources, kinds)
            for result in self.pm.hook.crm_check(registry=registry, pm=self.pm):
                self.problems += result or []
        if self.problems:
            raise MetadataError(self._redacted())
        return registry

    def _redacted(self) -> list[Problem]:
        """The problems, with every value read from the environment shown as
        its ``${NAME}``: a message about a setting never prints a password."""
        if not self.env_values:
            return self.problems
        out = []
        for p in self.problems:
            message = p.message
            for value in sorted(self.env_values, key=len, reverse=True):
                message = message.replace(value, "${" + self.env_values[value] + "}")
            out.append(Problem(p.loc, message))
        return out

    # -- config.yaml ----------------------------------------------------------

    def _load_config(self) -> tuple[LMap | None, Loc]:
        path = self.config_dir / CONFIG_FILE
        name = shown_path(path)
        loc = Loc(name, 1, 1)
        if not self.config_dir.is_dir():
            self.problems.append(Problem(Loc(shown_path(self.config_dir)), "no such config folder"))
            return None, loc
        if not path.is_file():
            self.problems.append(Problem(loc, "the config folder has no config.yaml"))
            return None, loc
        if not _inside(path, self.config_dir):
            self.problems.append(Problem(loc, OUTSIDE))
            return None, loc
        result = load_file(path, name, self.env, config_env_rule)
        self.env_secrets = frozenset(self.env[v] for v in result.env_refs if v in self.env)
        self.env_values = {
            self.env[v]: v
            for v in result.env_refs
            if len(self.env.get(v) or "") >= 4  # shorter would garble messages, and hides nothing
        }
        self.problems += result.problems
        if result.problems:
            return None, loc
        data = result.data
        problems = S.check(S.ConfigSchema, data, loc, "config.yaml")
        plugins = data.get("plugins") if isinstance(data, Mapping) else None
        if not isinstance(plugins, LMap):
            plugins = LMap()
        for name, settings in plugins.items():
            if settings is not None and not isinstance(settings, Mapping):
                problems.append(
                    Problem(
                        plugins.value_loc(name),
                        f"the settings of the plugin `{name}` must be a map, e.g. `{name}: {{}}`",
                    )
                )
        self.problems += problems
        if problems:
            return None, loc
        return data, loc

    # -- one metadata file ----------------------------------------------------

    def _load_metadata_file(self, path: Path, layer: str, folder: Path) -> None:
        name = shown_path(path)
        if not _inside(path, folder):
            self.problems.append(Problem(Loc(name, 1, 1), OUTSIDE))
            return
        result = load_file(path, name)
        self.problems += result.problems
        data = result.data
        if data is None or result.problems:
            return
        loc = Loc(name, 1, 1)
        schema = S.FileSchema.from_dict({s: S.MapOf() for s in self.sections})
        problems = S.check(schema(), data, loc, "a metadata file")
        if problems:
            self.problems += [_section_hint(p, (*SECTIONS, *self.sections)) for p in problems]
            return
        if "needs" in data and not self._needs_met(data["needs"]):
            return
        for section in (*SECTIONS, *self.sections):
            body = data.get(section)
            if body is None:
                continue
            handler = getattr(self, f"_section_{section}", None)
            for key, value in body.items():
                key_loc, value_loc = body.key_loc(key), body.value_loc(key)
                if handler is None:
                    self._plugin_section(section, key, value, key_loc)
                else:
                    handler(key, value, key_loc, value_loc, layer)

    def _needs_met(self, needs: LMap) -> bool:
        """``needs: {layers: [base]}``: a file (a plugin's content on the base
        layer's types) counts only when the configuration loads those layers."""
        names = needs["layers"]
        met = True
        for i, name in enumerate(names):
            if name not in self.layers:
                self.problems.append(
                    Problem(
                        names.item_loc(i),
                        f"`needs` names an unknown layer `{name}`"
                        f"{did_you_mean(name, self.layers)}; layers are "
                        + ", ".join(f"`{n}`" for n in self.layers),
                    )
                )
            met = met and bool(self.layers.get(name))
        return met

    # -- documents and attributes ---------------------------------------------

    def _section_documents(self, name: Any, spec: Any, loc: Loc, vloc: Loc, layer: str) -> None:
        if name == USER and not self._extends_user_attributes(spec):
            self.problems.append(
                Problem(loc, "`User` is built in: add user attributes under `attributes: User:`")
            )
            return
        problem = None if name == USER else identifier_problem(name, "document type")
        if problem:
            self.problems.append(Problem(loc, problem))
            return
        if spec is None:
            spec = LMap()
            spec.loc, spec.key_locs, spec.value_locs = vloc, {}, {}
        problems = S.check(S.DocumentSchema, spec, vloc, f"the document type `{name}`")
        if problems:
            self.problems += problems
            self.broken.add(name)
            return
        draft = self.docs.get(name)
        if draft is None:
            draft = DocDraft(name, loc, layer, Label.of(spec.get("label"), name))
            self.docs[name] = draft
        elif "label" in spec:
            draft.label = draft.label.merged(Label.of(spec["label"], name))
        for key in ("title", "list", "form", "views", "menu"):
            if key in spec:
                draft.settings[key] = (spec[key], spec.value_loc(key))
        for key in ("owner", "numbering"):
            if key in spec:
                self._set_once(draft, key, spec[key], spec.value_loc(key))
        for fname, fspec in (spec.get("fields") or {}).items():
            self._add_field(draft.fields, draft.name, fname, fspec, spec["fields"], layer)
        for role, rule in (spec.get("access") or {}).items():
            rloc = spec["access"].value_loc(role)
            problems = S.check(
                S.AccessSchema, rule, rloc, f"the access of `{role}` to `{draft.name}`"
            )
            if problems:
                self.problems += problems
                continue
            draft.access[role] = (rule, spec["access"].key_loc(role))
            self.sources["access", draft.name, role] = rule
        if "statuses" in spec:
            self._merge_statuses(draft, spec["statuses"], spec.value_loc("statuses"))

    def _extends_user_attributes(self, spec: Any) -> bool:
        """``documents: User:`` may only extend the user attributes of a lower layer."""
        if not isinstance(spec, Mapping) or set(spec) != {"fields"}:
            return False
        fields = spec["fields"]
        user = self.docs[USER].fields
        return isinstance(fields, Mapping) and all(
            n in user and user[n].layer != "engine" for n in fields
        )

    def _section_attributes(self, name: Any, spec: Any, loc: Loc, vloc: Loc, layer: str) -> None:
        draft = self.docs.get(name)
        if draft is None:
            if name in self.broken:
                return
            self.problems.append(
                Problem(
                    loc,
                    f"attributes for an unknown document type `{name}`"
                    f"{did_you_mean(name, self.docs)}",
                )
            )
            return
        if not isinstance(spec, LMap):
            self.problems.append(Problem(vloc, f"attributes of `{name}` must be a map of fields"))
            return
        for fname, fspec in spec.items():
            existing = draft.fields.get(fname) if isinstance(fname, str) else None
            if existing is not None:
                self.problems.append(Problem(spec.key_loc(fname), _not_new(name, existing)))
                continue
            self._add_field(draft.fields, draft.name, fname, fspec, spec, layer)

    def _set_once(self, draft: DocDraft, key: str, value: Any, loc: Loc) -> None:
        if key in draft.settings and draft.settings[key][0] != value:
            first = draft.settings[key][1]
            self.problems.append(
                Problem(
                    loc, f"`{draft.name}.{key}` was set at {first}; a later layer may not change it"
                )
            )
            return
        draft.settings[key] = (value, loc)

    def _add_field(
        self,
        fields: dict[str, FieldDraft],
        owner: str,
        name: Any,
        spec: Any,
        parent: LMap,
        layer: str,
    ) -> None:
        loc, vloc = parent.key_loc(name), parent.value_loc(name)
        problem = identifier_problem(name, "field")
        if problem:
            self.problems.append(Problem(loc, problem))
            return
        if name in SYSTEM_FIELDS:
            self.problems.append(
                Problem(loc, f"`{name}` is a field every document has; choose another name")
            )
            return
        existing = fields.get(name)
        if spec is None:
            if existing:
                self.problems.append(
                    Problem(
                        loc,
                        f"a layer may not remove the field `{owner}.{name}` "
                        f"({_defined(existing.loc)}); hide it with `hidden: true` instead",
                    )
                )
            else:
                self.problems.append(Problem(vloc, f"the field `{owner}.{name}` needs `type`"))
            return
        if isinstance(spec, str):
            self.problems.append(
                Problem(vloc, f"write the field as a map, e.g. `{name}: {{type: {spec}}}`")
            )
            return
        if existing is not None and isinstance(spec, LMap) and "type" not in spec:
            # a later layer that only makes a field required (or relabels it) need not
            # repeat its type
            spec = _with(spec, "type", existing.spec["type"])
        problems = S.check(S.FieldSchema, spec, vloc, f"the field `{owner}.{name}`")
        if problems:
            self.problems += problems
            return
        ftype = spec["type"]
        if ftype not in self.field_types:
            self.problems.append(
                Problem(
                    spec.value_loc("type"),
                    f"unknown field type `{ftype}`{did_you_mean(ftype, self.field_types)}",
                )
            )
            return
        if existing is not None and ftype != existing.spec["type"]:
            # the type change is the mistake; options that fit only the new type are not
            self.problems.append(
                Problem(
                    spec.value_loc("type"),
                    f"a layer may not change the type of `{owner}.{name}` from "
                    f"`{existing.spec['type']}` ({_defined(existing.loc)}) to `{ftype}`",
                )
            )
            return
        if not self._options_fit(spec, ftype, f"{owner}.{name}", existing):
            return
        values = self._enum_values(spec, owner, name) if ftype == "enum" else {}
        if existing is None:
            draft = FieldDraft(name, dict(spec), loc, layer, dict(spec.value_locs), values)
            fields[name] = draft
        else:
            draft = existing
            self._merge_field(draft, spec, owner)
            for key, label in values.items():
                draft.values[key] = (
                    draft.values[key].merged(label) if key in draft.values else label
                )
        if ftype == "table":
            children = spec.get("fields")
            if not children:
                if existing is None:
                    self.problems.append(
                        Problem(vloc, f"the table `{owner}.{name}` needs `fields` for its rows")
                    )
                return
            for cname, cspec in children.items():
                if isinstance(cspec, Mapping) and cspec.get("type") == "table":
                    self.problems.append(
                        Problem(
                            children.value_loc(cname), "a table's rows cannot hold another table"
                        )
                    )
                    continue
                self._add_field(draft.children, f"{owner}.{name}", cname, cspec, children, layer)

    def _options_fit(
        self, spec: LMap, ftype: str, path: str, existing: FieldDraft | None = None
    ) -> bool:
        """Options that belong to another type (``max_length`` on an integer) are mistakes."""
        specific = {o for options, _ in self.type_options.values() for o in options}
        own, ordered = self.type_options.get(ftype, (frozenset(), False))
        misplaced = [k for k in spec if k in specific - own]
        if not ordered:
            misplaced += [k for k in ("min", "max") if k in spec]
        if ftype == "table":
            # a table is rows in a child table, not a column
            misplaced += [k for k in ("default", "unique", "index") if k in spec]
        # a later layer that leaves out the type writes options of the type it thinks it is
        where = f" ({_defined(existing.loc)})" if existing is not None else ""
        for key in misplaced:
            self.problems.append(
                Problem(
                    spec.key_loc(key),
                    f"the field `{path}`{where}: `{key}` does not apply to {a_or_an(ftype)} field",
                )
            )
        return not misplaced

    def _merge_field(self, draft: FieldDraft, spec: LMap, owner: str) -> None:
        where = f"`{owner}.{draft.name}`"
        for key, value in spec.items():
            if key in ("type", "fields", "values"):
                continue
            old = draft.spec.get(key)
            if key == "label":
                # the same fallback as a field without a label: `loss_reason` → "Loss reason"
                fallback = draft.name.replace("_", " ").capitalize()
                draft.spec[key] = Label.of(old, fallback).merged(Label.of(value, fallback)).texts
            elif key in MERGEABLE or old == value:
                draft.spec[key] = value
            elif key in SWITCH_ON:
                if _strength(value) < _strength(old):
                    self.problems.append(
                        Problem(
                            spec.key_loc(key),
                            f"a layer may make {where} `{key}` but not undo it "
                            f"({_defined(draft.locs.get(key, draft.loc), 'set')})",
                        )
                    )
                    continue
                draft.spec[key] = value
            elif old is None:
                self.problems.append(
                    Problem(
                        spec.key_loc(key),
                        f"a layer may not add `{key}` to {where} ({_defined(draft.loc)})",
                    )
                )
                continue
            else:
                self.problems.append(
                    Problem(
                        spec.key_loc(key),
                        f"a layer may not change `{key}` of {where} from `{old}` "
                        f"({_defined(draft.locs.get(key, draft.loc), 'set')}) to `{value}`",
                    )
                )
                continue
            draft.locs[key] = spec.value_loc(key)

    def _enum_values(self, spec: LMap, owner: str, name: str) -> dict[str, Label]:
        raw = spec.get("values")
        loc = spec.value_loc("values") if "values" in spec else spec.loc
        where = f"the enum `{owner}.{name}`"
        out: dict[str, Label] = {}
        if isinstance(raw, LList):
            for i, v in enumerate(raw):
                if isinstance(v, bool) or not isinstance(v, (str, int)) or v == "":
                    self.problems.append(
                        Problem(raw.item_loc(i), f"{where}: a value must be a word or a number")
                    )
                elif str(v) in out:
                    self.problems.append(
                        Problem(raw.item_loc(i), f"{where}: the value `{v}` is listed twice")
                    )
                else:
                    out[str(v)] = Label.of(None, str(v))
        elif isinstance(raw, LMap):
            for k, label in raw.items():
                if label is not None and not _is_label(label):
                    self.problems.append(
                        Problem(
                            raw.value_loc(k),
                            f"{where}: the label of `{k}` must be text, "
                            "or a map of language → text such as {en: Won}",
                        )
                    )
                    continue
                out[str(k)] = Label.of(label, str(k))
        elif raw is not None:
            self.problems.append(
                Problem(loc, f"{where}: `values` must be a list, or a map value → label")
            )
        for k in out:
            if len(k) > 64:
                self.problems.append(
                    Problem(loc, f"{where}: the value `{k[:20]}…` is longer than 64 characters")
                )
        return out

    def _merge_statuses(self, draft: DocDraft, spec: LMap, loc: Loc) -> None:
        if draft.statuses is None:
            draft.statuses = StatusesDraft(spec, loc)
        else:
            first = draft.statuses.spec
            for key, default in (("field", "status"), ("initial", None)):
                old = first.get(key, default)
                if key in spec and spec[key] != old:
                    self.problems.append(
                        Problem(
                            spec.value_loc(key),
                            f"a layer may not change `statuses.{key}` of `{draft.name}` "
                            f"from `{old}` (set at {first.value_loc(key)}) to `{spec[key]}`",
                        )
                    )
        states = spec.get("states") or LMap()
        for sname, sspec in states.items():
            sloc = states.key_loc(sname)
            problem = identifier_problem(sname, "state")
            if problem:
                self.problems.append(Problem(sloc, problem))
                continue
            if sspec is None:
                sspec = LMap()
                sspec.loc, sspec.key_locs, sspec.value_locs = sloc, {}, {}
            problems = S.check(
                S.StateSchema,
                sspec,
                states.value_loc(sname),
                f"the state `{sname}` of `{draft.name}`",
            )
            if problems:
                self.problems += problems
                continue
            label = Label.of(sspec.get("label"), sname)
            if sname in draft.statuses.states:
                old, old_loc, old_label = draft.statuses.states[sname]
                merged = LMap({**old, **{k: v for k, v in sspec.items() if k != "label"}})
                merged.loc, merged.key_locs = old.loc, {**old.key_locs, **sspec.key_locs}
                merged.value_locs = {**old.value_locs, **sspec.value_locs}
                if "require" in old and "require" in sspec:
                    merged["require"] = [*old["require"], *sspec["require"]]
                draft.statuses.states[sname] = (merged, old_loc, old_label.merged(label))
            else:
                draft.statuses.states[sname] = (sspec, sloc, label)
        transitions = spec.get("transitions") or LList()
        for i, t in enumerate(transitions):
            draft.statuses.transitions.append((t, transitions.item_loc(i)))
        control = spec.get("control")
        if isinstance(control, LMap):
            old = draft.statuses.control
            if old is None:
                draft.statuses.control = control
            else:
                merged = LMap({**old, **control})
                merged.loc, merged.key_locs = control.loc, {**old.key_locs, **control.key_locs}
                merged.value_locs = {**old.value_locs, **control.value_locs}
                draft.statuses.control = merged

    def _check_merged(self, plugins: Mapping[str, Any]) -> None:
        """What only the merge of all layers can tell."""
        for draft in self.docs.values():
            made: dict[str, str] = {}
            if "numbering" in draft.settings:
                numbering = draft.settings["numbering"][0]
                name = numbering.get("field", "number")
                self._engine_field(draft, name, "numbering", numbering.value_loc("field"), made)
            st = draft.statuses
            if st is None:
                continue
            if "initial" not in st.spec:
                self.problems.append(
                    Problem(st.loc, f"the statuses of `{draft.name}` need an `initial` state")
                )
            name = st.spec.get("field", "status")
            self._engine_field(draft, name, "status", st.spec.value_loc("field"), made)

    def _engine_field(
        self, draft: DocDraft, name: str, what: str, loc: Loc, made: dict[str, str]
    ) -> None:
        """The field the engine makes for numbering or statuses needs a free, valid name."""
        problem = identifier_problem(name, f"{what} field")
        if problem is None and name in SYSTEM_FIELDS:
            problem = f"`{name}` is a field every document has; choose another {what} field"
        if problem is None and name in made:
            problem = f"`{draft.name}.{name}` cannot hold both the {made[name]} and the {what}"
        if problem:
            self.problems.append(Problem(loc, problem))
        made[name] = what

    # -- other sections -------------------------------------------------------

    def _named(self, what: str, name: Any, loc: Loc, seen: Mapping[str, Any]) -> bool:
        problem = identifier_problem(name, what)
        if problem:
            self.problems.append(Problem(loc, problem))
            return False
        return True

    def _section_roles(self, name: Any, spec: Any, loc: Loc, vloc: Loc, layer: str) -> None:
        if not self._named("role", name, loc, self.roles):
            return
        if name == EVERYONE:
            self.problems.append(
                Problem(
                    loc, f"`{EVERYONE}` stands for every role in `access:`; name the role otherwise"
                )
            )
            return
        spec = spec if spec is not None else {}
        problems = S.check(S.RoleSchema, spec, vloc, f"the role `{name}`")
        if problems:
            self.problems += problems
            return
        label = Label.of(spec.get("label"), name)
        if name in self.roles:
            label = self.roles[name].label.merged(label)
            loc = self.roles[name].loc
        self.roles[name] = Role(name, label, loc)

    def _section_segments(self, name: Any, spec: Any, loc: Loc, vloc: Loc, layer: str) -> None:
        if not self._named("segment", name, loc, self.segments):
            return
        problems = S.check(S.SegmentSchema, spec, vloc, f"the segment `{name}`")
        if problems:
            self.problems += problems
            return
        self.sources["segment", name] = spec
        self.segments[name] = Segment(
            name, spec["document"], Label.of(spec.get("label"), name), spec["filter"], loc
        )

    def _section_reports(self, name: Any, spec: Any, loc: Loc, vloc: Loc, layer: str) -> None:
        if not self._named("report", name, loc, self.reports):
            return
        problems = S.check(S.ReportSchema, spec, vloc, f"the report `{name}`")
        if problems:
            self.problems += problems
            return
        options = {k: v for k, v in spec.items() if k not in ("type", "document")}
        self.reports[name] = Report(
            name, spec["type"], spec["document"], spec_view(spec, options), loc
        )

    def _section_dashboards(self, name: Any, spec: Any, loc: Loc, vloc: Loc, layer: str) -> None:
        if not self._named("dashboard", name, loc, self.dashboards):
            return
        if spec is None:
            spec = LMap()
            spec.loc, spec.key_locs, spec.value_locs = vloc, {}, {}
        problems = S.check(S.DashboardSchema, spec, vloc, f"the dashboard `{name}`")
        if problems:
            self.problems += problems
            return
        draft = self.dashboards.get(name)
        if draft is None:
            draft = self.dashboards[name] = DashboardDraft(
                name, loc, spec, Label.of(spec.get("label"), name)
            )
        elif "label" in spec:
            draft.label = draft.label.merged(Label.of(spec["label"], name))
        if "roles" in spec:
            draft.roles = tuple(spec["roles"])
            self.sources["dashboard", name, "roles"] = spec
        if "order" in spec:
            draft.order = spec["order"]
        cards = spec.get("cards") or LMap()
        for cname, cspec in cards.items():
            cloc, cvloc = cards.key_loc(cname), cards.value_loc(cname)
            where = f"the card `{cname}` of the dashboard `{name}`"
            problem = identifier_problem(cname, "card")
            if problem:
                self.problems.append(Problem(cloc, problem))
                continue
            if cspec is None:  # a later layer takes a card away
                if draft.cards.pop(cname, None) is None:
                    self.problems.append(
                        Problem(cloc, f"{where}: no earlier layer has this card to remove")
                    )
                continue
            problems = S.check(S.CardSchema, cspec, cvloc, where)
            if problems:
                self.problems += problems
                continue
            kinds = [k for k in ("count", "sum", "report") if k in cspec]
            if len(kinds) != 1:
                self.problems.append(
                    Problem(
                        cvloc,
                        f"{where} needs exactly one of `count: TYPE`, `sum: TYPE` or "
                        f"`report: NAME`"
                        + (f", not {' and '.join(f'`{k}`' for k in kinds)}" if kinds else ""),
                    )
                )
                continue
            what = kinds[0]
            draft.cards[cname] = Card(
                name=cname,
                what=what,
                target=cspec[what],
                label=Label.of(cspec["label"], cname) if "label" in cspec else None,
                filter=cspec.get("filter") or LMap(),
                summed=cspec.get("field"),
                params=cspec.get("params") or LMap(),
                show=cspec.get("show", "kpi"),
                value=cspec.get("value"),
                tone=cspec.get("tone", "none"),
                spec=cspec,
                loc=cloc,
            )

    def _plugin_section(self, section: str, name: Any, spec: Any, loc: Loc) -> None:
        """An entry of a section a plugin interprets: kept as loaded YAML for
        the plugin's own reading and checks; a later layer's entry replaces it."""
        entries = self.sections[section]
        if self._named(self.section_nouns[section], name, loc, entries):
            entries[name] = Section(name, spec, loc)

    def _plugin_sections(self, plugin_locs: Mapping[str, Loc], config_loc: Loc) -> None:
        """The sections the enabled plugins declare (``crm_sections``); a name
        the engine or another plugin has already is refused."""
        owners: dict[str, str] = {}
        for impl in self.pm.hook.crm_sections.get_hookimpls():  # in the order enabled
            for section, noun in (impl.function() or {}).items():
                taken = "the engine" if section in SECTIONS else owners.get(section)
                if taken:
                    self.problems.append(
                        Problem(
                            plugin_locs.get(impl.plugin_name, config_loc),
                            f"the plugin `{impl.plugin_name}` declares the section `{section}`, "
                            f"which {taken if taken == 'the engine' else f'`{taken}`'} reads",
                        )
                    )
                    continue
                owners[section] = impl.plugin_name
                self.sections[section] = {}
                self.section_nouns[section] = str(noun)

    # -- plugins' settings ----------------------------------------------------

    def _check_plugin_settings(self, plugins: Mapping[str, Any], config_loc: Loc) -> None:
        """Each enabled plugin's settings through the schema it declares
        (``crm_settings_schema``): a wrong setting is a problem at its place."""
        for name in plugins:
            where = plugins.value_loc(name) if isinstance(plugins, LMap) else config_loc
            self.plugin_yaml[name] = (plugins.get(name), where)
        for impl in self.pm.hook.crm_settings_schema.get_hookimpls():
            name = impl.plugin_name
            if name not in plugins:
                continue
            schema = impl.function()
            if schema is None:
                continue
            if isinstance(schema, type):
                schema = schema()
            node = plugins.get(name)
            node = LMap() if node is None else node
            where = plugins.value_loc(name) if isinstance(plugins, LMap) else config_loc
            # a Secret setting is accepted only as written `${NAME}` (engine.schema.Secret)
            token = S.ENV_VALUES.set(self.env_secrets)
            try:
                problems = S.check(schema, node, where, f"the settings of the `{name}` plugin")
                self.problems += problems
                if not problems:
                    self.plugin_settings[name] = schema.load(dict(node))
            finally:
                S.ENV_VALUES.reset(token)

    # -- the built-in User type -------------------------------------------------

    def _add_user_type(self) -> None:
        user = DocDraft(
            USER,
            Loc("<engine>", 0, 0),
            "engine",
            Label.of({"en": "User", "ru": "Пользователь"}, USER),
        )
        user.builtin = True
        for name, ftype, label in (
            ("username", "string", {"en": "Login", "ru": "Логин"}),
            ("first_name", "string", {"en": "First name", "ru": "Имя"}),
            ("last_name", "string", {"en": "Last name", "ru": "Фамилия"}),
            ("email", "email", {"en": "Email", "ru": "Эл. почта"}),
            ("active", "boolean", {"en": "Active", "ru": "Активен"}),
        ):
            user.fields[name] = FieldDraft(
                name, {"type": ftype, "label": label, "readonly": True}, user.loc, "engine"
            )
        user.settings["title"] = ("{{ first_name }} {{ last_name }}", user.loc)
        self.docs[USER] = user

    # -- freezing -------------------------------------------------------------

    def _build(self, config: LMap) -> Registry:
        documents = {name: self._freeze_doc(d) for name, d in self.docs.items()}
        return Registry(
            name=config["name"],
            locale=config.get("locale", "en"),
            documents=frozen_map(documents),
            roles=frozen_map(self.roles),
            segments=frozen_map(self.segments),
            reports=frozen_map(self.reports),
            dashboards=frozen_map(
                {
                    n: Dashboard(
                        n, d.label, d.roles or (), tuple(d.cards.values()), d.order, d.spec, d.loc
                    )
                    for n, d in self.dashboards.items()
                }
            ),
            sections=frozen_map({k: frozen_map(v) for k, v in self.sections.items()}),
            plugin_yaml=frozen_map(self.plugin_yaml),
            plugins=frozen_map(
                {
                    k: frozen_map(self.plugin_settings.get(k, v) or {})
                    for k, v in (config.get("plugins") or {}).items()
                }
            ),
            layers=tuple(config.get("layers", ["base"])),
            jobs=frozen_map(config.get("jobs") or {}),
            security=frozen_map(config.get("security") or {}),
            imports=frozen_map(config.get("imports") or {}),
            database=_database_url(
                self.env.get("CRM_DATABASE_URL") or config.get("database"), self.config_dir
            ),
            settings=frozen_map(
                {
                    "region": config.get("region")
                    or ("RU" if config.get("locale", "en") == "ru" else "US"),
                    "timezone": config.get("timezone", "UTC"),
                    "config_dir": str(self.config_dir.resolve()),
                    **(config.get("settings") or {}),
                }
            ),
        )

    def _freeze_field(self, d: FieldDraft, owner: str = "") -> Field:
        s = d.spec
        return Field(
            name=d.name,
            type=s["type"],
            loc=d.loc,
            layer=d.layer,
            label=Label.of(s.get("label"), d.name.replace("_", " ").capitalize()),
            required=bool(s.get("required", False)),
            default=s.get("default"),
            unique=s.get("unique") is True,
            unique_warn=s.get("unique") == "warn",
            index=bool(s.get("index", False)),
            help=Label.of(s["help"], "") if s.get("help") else None,
            readonly=bool(s.get("readonly", False)),
            hidden=bool(s.get("hidden", False)),
            min=s.get("min"),
            max=s.get("max"),
            compute=s.get("compute"),
            max_length=s.get("max_length") or (self.text_length if s["type"] == "text" else None),
            pattern=s.get("pattern"),
            digits=s.get("digits"),
            places=s.get("places"),
            values=frozen_map(d.values),
            to=s.get("to"),
            fields=frozen_map({n: self._freeze_field(c) for n, c in d.children.items()}),
            system=d.layer == "engine",
            where=_ref_where(owner, s.get("where"), d.locs.get("where", d.loc)),
        )

    def _freeze_doc(self, d: DocDraft) -> DocType:
        self.sources["doc", d.name] = d.settings
        for fd in d.fields.values():
            self.sources["field", f"{d.name}.{fd.name}"] = fd.locs
            if isinstance(fd.spec.get("where"), Mapping):
                # the map as written: `crm check` points at its keys and values
                self.sources["where", f"{d.name}.{fd.name}"] = fd.spec["where"]
            for child in fd.children.values():
                self.sources["field", f"{d.name}.{fd.name}.{child.name}"] = child.locs
                if child.spec.get("unique") == "warn":
                    self.problems.append(
                        Problem(
                            child.locs.get("unique", child.loc),
                            f"`{d.name}.{fd.name}.{child.name}`: `unique: warn` applies to "
                            "a record's fields, not to a table's rows (use `unique: true`)",
                        )
                    )
        fields: dict[str, Field] = {}
        numbering = None
        if "numbering" in d.settings:
            n, _ = d.settings["numbering"]
            numbering = Numbering(n["prefix"], n["width"], n.get("field", "number"))
            fields[numbering.field] = Field(
                numbering.field,
                "string",
                d.settings["numbering"][1],
                d.layer,
                Label.of({"en": "Number", "ru": "Номер"}, "number"),
                unique=True,
                readonly=True,
                max_length=64,
                system=True,
            )
        statuses = self._freeze_statuses(d) if d.statuses else None
        if statuses is not None and statuses.field not in d.fields:
            fields[statuses.field] = Field(
                statuses.field,
                "enum",
                statuses.loc,
                d.layer,
                Label.of(
                    STATUS_LABELS.get(
                        statuses.field,
                        {"en": statuses.field.replace("_", " ").capitalize(), "ru": "Статус"},
                    ),
                    statuses.field,
                ),
                required=True,
                default=statuses.initial,
                index=True,
                readonly=True,
                values=frozen_map({k: s.label for k, s in statuses.states.items()}),
                system=True,
            )
        for name, f in d.fields.items():
            fields[name] = self._freeze_field(f, d.name)
        if not d.builtin:
            fields.update(_audit_fields(d.loc))
        settings = {k: v for k, (v, _) in d.settings.items()}
        list_spec = None
        if "list" in settings:
            ls, lloc = d.settings["list"]
            list_spec = ListSpec(
                tuple(ls["columns"]),
                tuple(ls.get("search", ())),
                tuple(ls.get("filters", ())),
                ls.get("order", "-created_at"),
                lloc,
            )
        form = tuple(
            FormSection(Label.of(s.get("label"), ""), tuple(s["fields"]))
            for s in (settings.get("form") or {}).get("sections", [])
        )
        access = {
            role: Access(
                rule.get("read", False),
                rule.get("create", False),
                rule.get("update", False),
                rule.get("delete", False),
                loc,
                frozen_map({str(k): v for k, v in (rule.get("fields") or {}).items()}),
            )
            for role, (rule, loc) in d.access.items()
        }
        return DocType(
            name=d.name,
            loc=d.loc,
            layer=d.layer,
            label=d.label,
            fields=frozen_map(fields),
            title=settings.get("title"),
            owner=settings.get("owner"),
            menu=Label.of(settings["menu"], "") if settings.get("menu") else None,
            numbering=numbering,
            statuses=statuses,
            list=list_spec,
            form=form,
            views=frozen_map({k: frozen_map(v) for k, v in (settings.get("views") or {}).items()}),
            access=frozen_map(access),
            builtin=d.builtin,
        )

    def _freeze_statuses(self, d: DocDraft) -> Statuses:
        st = d.statuses
        assert st is not None
        self.sources["statuses", d.name] = st.spec
        for i, (t, _) in enumerate(st.transitions):
            self.sources["transition", d.name, i] = t
        states: dict[str, State] = {}
        for name, (spec, loc, label) in st.states.items():
            self.sources["state", d.name, name] = spec
            rn = spec.get("require_next")
            states[name] = State(
                name,
                label,
                loc,
                bool(spec.get("final", False)),
                spec.get("outcome"),
                tuple(spec.get("require", ())),
                RequireNext(
                    rn["document"],
                    rn.get("min", 1),
                    self._next_link(d, rn),
                    spec.value_loc("require_next"),
                )
                if rn
                else None,
                _editable(spec.get("editable")),
                spec.get("after"),
            )
        transitions = tuple(
            Transition(
                _names(t["from"]), _names(t["to"]), loc, tuple(t.get("roles", ())), t.get("when")
            )
            for t, loc in st.transitions
        )
        control = None
        if st.control is not None:
            c = st.control
            self.sources["control", d.name] = c
            control = StageControl(
                str(c.get("field", "")),
                tuple(c.get("process", ())),
                tuple(c.get("free", ())),
                frozen_map(
                    {
                        str(k): tuple(v) if isinstance(v, list) else ()
                        for k, v in (c.get("stages") or {}).items()
                    }
                ),
                c.loc,
            )
        return Statuses(
            st.spec.get("field", "status"),
            st.spec.get("initial", ""),
            frozen_map({name: states[name] for name in _placed(states)}),
            transitions,
            st.loc,
            control,
        )

    def _next_link(self, d: DocDraft, rn: Mapping[str, Any]) -> Mapping[str, str]:
        """``link: interest`` is the ref both documents have by that name, or the
        next document's ref to this one: ``{interest: interest}`` or ``{deal: self}``."""
        link = rn["link"]
        if isinstance(link, Mapping):
            return frozen_map({str(k): str(v) for k, v in link.items()})
        target = self.docs.get(rn["document"])
        f = target.fields.get(link) if target is not None else None
        refers_here = f is not None and f.spec.get("to") == d.name
        return frozen_map({link: SELF if refers_here else link})


#: labels of the usual names of a status field; others get "Status" in Russian
STATUS_LABELS = {
    "status": {"en": "Status", "ru": "Статус"},
    "stage": {"en": "Stage", "ru": "Этап"},
    "state": {"en": "State", "ru": "Состояние"},
    "phase": {"en": "Phase", "ru": "Фаза"},
}


def _ref_where(owner: str, spec: Any, loc: Loc) -> RefWhere | None:
    """``where:`` of a ref: a name is a field of this record the target's field
    must equal, a map is a filter condition with constants (``crm check``
    refuses the rest)."""
    if not isinstance(spec, Mapping) or not spec:
        return None
    same = {str(k): v for k, v in spec.items() if isinstance(v, str)}
    conditions = {str(k): v for k, v in spec.items() if not isinstance(v, str)}
    return RefWhere(owner, frozen_map(same), frozen_map(conditions), loc)


def _database_url(url: str | None, config_dir: Path) -> str:
    """A relative SQLite path is taken from the config folder, wherever `crm` runs."""
    if not url:
        url = "sqlite:///instance/crm.db"
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str((config_dir / url[len(prefix) :]).resolve())
    return url


def _audit_fields(loc: Loc) -> dict[str, Field]:
    def f(name: str, ftype: str, en: str, ru: str, **kw: Any) -> tuple[str, Field]:
        return name, Field(
            name,
            ftype,
            loc,
            "engine",
            Label.of({"en": en, "ru": ru}, name),
            readonly=True,
            system=True,
            **kw,
        )

    return dict(
        (
            f("id", "integer", "ID", "ID"),
            f("created_at", "datetime", "Created", "Создано", index=True),
            f("created_by", "ref", "Created by", "Автор", to=USER),
            f("updated_at", "datetime", "Updated", "Изменено"),
            f("updated_by", "ref", "Updated by", "Изменил", to=USER),
            f("version", "integer", "Version", "Версия"),
        )
    )


def _with(spec: LMap, key: str, value: Any) -> LMap:
    """A copy of ``spec`` with one more key, keeping every location."""
    out = LMap({**spec, key: value})
    out.loc, out.key_locs, out.value_locs = spec.loc, dict(spec.key_locs), dict(spec.value_locs)
    return out


def _not_new(owner: str, existing: FieldDraft) -> str:
    """Why ``attributes: {owner: {field: ...}}`` is refused for a field that exists."""
    path = f"`{owner}.{existing.name}`"
    if existing.loc.file == "<engine>":
        return f"{path} is built into the engine; `attributes` adds new fields only"
    example = f"documents: {{{owner}: {{fields: {{{existing.name}: {{...}}}}}}}}"
    return (
        f"{path} is already defined at {existing.loc}; `attributes` adds new fields only: "
        f"to extend it, write `{example}`"
    )


def _defined(loc: Loc, verb: str = "defined") -> str:
    return "built into the engine" if loc.file == "<engine>" else f"{verb} at {loc}"


def _is_label(value: Any) -> bool:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return True
    return isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values())


def _placed(states: Mapping[str, State]) -> list[str]:
    """The states in their declared order, each one with ``after: X`` moved
    right behind X (behind the states placed after X before it): a later
    layer's stages take their place in the base's order. A state after an
    unknown one, or in a loop, stays where it was declared (crm check says why)."""
    following: dict[str, list[str]] = {}
    roots: list[str] = []
    for name, s in states.items():
        if s.after and s.after in states and s.after != name:
            following.setdefault(s.after, []).append(name)
        else:
            roots.append(name)
    out: list[str] = []

    def place(name: str) -> None:
        out.append(name)
        for later in following.get(name, ()):
            if later not in out:
                place(later)

    for name in roots:
        place(name)
    out += [name for name in states if name not in out]  # loops of `after`
    return out


def _names(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def spec_view(spec: LMap, options: dict[str, Any]) -> Mapping[str, Any]:
    out = LMap(options)
    out.loc, out.key_locs, out.value_locs = spec.loc, spec.key_locs, spec.value_locs
    return out


#: parts of a variable's name that make it a secret (``SMTP_PASSWORD``, ``API_TOKEN``)
SECRET_WORDS = ("SECRET", "PASSWORD", "PASSWD", "TOKEN", "KEY", "CREDENTIAL", "PRIVATE", "DSN",
                "DATABASE_URL")  # fmt: skip
#: where config.yaml may read a secret: what the engine and the plugins use, and never show
SECRET_PLACES = ("database", "plugins")


def looks_secret(variable: str) -> bool:
    upper = variable.upper()
    return any(word in upper for word in SECRET_WORDS)


def config_env_rule(keys: tuple[Any, ...], variable: str) -> str | None:
    """Where config.yaml may read an environment variable: anywhere, except
    that ``CRM_SECRET_KEY`` (it signs the sessions) is never read, and a
    secret-looking variable only in ``database`` and the plugins' settings, so
    that no secret reaches what users read (``name``, ``settings``...)."""
    if variable == "CRM_SECRET_KEY":
        return "`CRM_SECRET_KEY` signs the sessions: config.yaml cannot read it"
    if looks_secret(variable) and (not keys or keys[0] not in SECRET_PLACES):
        where = f"`{keys[0]}`" if keys else "here"
        return (
            f"`{variable}` looks like a secret and {where} may be shown to users: "
            "config.yaml reads a secret only in `database` and the plugins' settings"
        )
    return None


#: a file of a configuration that is a link to a file elsewhere (``/etc/passwd``) is not read
OUTSIDE = "links outside the configuration"


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, its links followed, is a file of ``folder`` (itself maybe a link)."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a loop of links
        return False


def _yaml_files(folder: Path, recursive: bool = True) -> list[Path]:
    if not folder.is_dir():
        return []
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix in (".yaml", ".yml") and p.is_file())


def _section_hint(p: Problem, sections: tuple[str, ...]) -> Problem:
    match = re.match(r"unknown key `(.*?)` in a metadata file(.*)$", p.message)
    if not match:
        return p
    owner = section_owner(match.group(1))
    if owner is not None:
        return Problem(
            p.loc,
            f"the section `{match.group(1)}` needs the `{owner}` plugin: "
            f"add `{owner}: {{}}` under `plugins` in config.yaml",
        )
    return Problem(
        p.loc,
        f"unknown section `{match.group(1)}`{match.group(2)}; sections are {', '.join(sections)}",
    )


def load(config_dir: str | Path, env: Mapping[str, str] | None = None) -> Registry:
    """Load and check a configuration; raises MetadataError with every problem."""
    return Loader(Path(config_dir), env).load()


def _editable(spec: Any) -> Editable | None:
    """``editable:`` of a state (see :class:`engine.registry.Editable`)."""
    if spec is None:
        return None
    if spec is True:
        return Editable(None)
    if spec is False:
        return Editable(())
    if isinstance(spec, Mapping):
        fields = spec.get("fields")
        return Editable(None if fields is None else tuple(fields), tuple(spec.get("roles", ())))
    return Editable(tuple(spec))
