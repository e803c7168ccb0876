"""Plugins: every hook reaches a plugin with its arguments, mistakes are reported.

A recorder plugin implements every hook and notes what pluggy passed it;
outside plugins with mistakes are written to a temporary folder and offered
through a stand-in entry point; the sample outside plugin in
``tests/plugins/sample_plugin`` is installed for real, once per session.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
import textwrap
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

import engine.plugins
import plugins.mail
import plugins.processes
import plugins.telephony
from engine import hookspecs
from engine.errors import Loc, MetadataError, Problem
from engine.fieldtypes import CORE_TYPES, Context, Invalid
from engine.hookspecs import hookimpl
from engine.loader import load
from engine.plugins import ENTRY_POINT_GROUP, available_plugins, make_plugin_manager
from engine.registry import Field

SPECS = {
    name: fn
    for name, fn in vars(hookspecs).items()
    if callable(fn) and hasattr(fn, "crm_spec") and name.startswith("crm_")
}
FIRST_RESULT = {"crm_send_email", "crm_send_sms"}


class Stand:
    """A stand-in for an object the engine passes (an app, a session, a user)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


APP, REGISTRY, APPBUILDER = Stand("app"), Stand("registry"), Stand("appbuilder")
SESSION, DOCTYPE, DOC, USER = Stand("session"), Stand("Deal"), Stand("deal 1"), Stand("user")
DOCS = Stand("documents service")
SETTINGS = {"telephony": {"provider": "example-pbx"}, "mail": {}}
MESSAGE = EmailMessage()
MESSAGE["To"] = "buyer@example.com"


def ping(ctx: Any, payload: Any) -> None:
    """A job the recorder declares."""


#: hook → the keyword arguments the test calls it with
CALLS: dict[str, dict[str, Any]] = {
    "crm_add_hookspecs": {"pm": Stand("plugin manager")},  # the real one, at registration
    "crm_startup": {"app": APP, "registry": REGISTRY},
    "crm_metadata_layers": {},
    "crm_field_types": {},
    "crm_settings_schema": {},
    "crm_sections": {},
    "crm_report_kinds": {"registry": REGISTRY},
    "crm_check": {"registry": REGISTRY, "pm": Stand("plugin manager")},
    "crm_document_created": {
        "session": SESSION,
        "doctype": DOCTYPE,
        "doc": DOC,
        "user": USER,
        "docs": DOCS,
    },
    "crm_document_updated": {
        "session": SESSION,
        "doctype": DOCTYPE,
        "doc": DOC,
        "user": USER,
        "changes": {"amount": (100, 250)},
        "docs": DOCS,
    },
    "crm_document_deleted": {
        "session": SESSION,
        "doctype": DOCTYPE,
        "doc": DOC,
        "user": USER,
        "docs": DOCS,
    },
    "crm_timeline_sources": {
        "models": Stand("models"),
        "doctype": DOCTYPE,
        "doc_id": 7,
        "principal": USER,
    },
    "crm_before_transition": {
        "session": SESSION,
        "doctype": DOCTYPE,
        "doc": DOC,
        "source": None,
        "target": "new",
        "user": USER,
        "docs": DOCS,
    },
    "crm_transition_vetoes": {
        "session": SESSION,
        "doctype": DOCTYPE,
        "doc": DOC,
        "targets": ["won", "lost"],
        "user": USER,
        "docs": DOCS,
    },
    "crm_status_changed": {
        "session": SESSION,
        "doctype": DOCTYPE,
        "doc": DOC,
        "source": "new",
        "target": "won",
        "user": USER,
        "docs": DOCS,
    },
    "crm_send_email": {"message": MESSAGE, "settings": SETTINGS},
    "crm_send_sms": {
        "to": "+74951234567",
        "text": "Your order has shipped",
        "settings": SETTINGS,
        "key": "automation:order_shipped_sms:42",
    },
    "crm_record_sections": {
        "models": Stand("models"),
        "doctype": DOCTYPE,
        "doc": DOC,
        "principal": USER,
    },
    "crm_record_actions": {"doctype": DOCTYPE, "doc": DOC, "principal": USER},
    "crm_register_views": {"appbuilder": APPBUILDER, "registry": REGISTRY},
    "crm_jobs": {},
    "crm_schedules": {},
    "crm_worker_services": {"registry": REGISTRY},
}

#: hook → what the recorder returns from it
RESULTS: dict[str, Any] = {
    "crm_add_hookspecs": None,
    "crm_startup": None,
    "crm_metadata_layers": [("recorder", Path("/layers/recorder"))],
    "crm_field_types": [Stand("field type")],
    "crm_settings_schema": Stand("settings schema"),
    "crm_sections": {"recordings": "recording"},
    "crm_report_kinds": [Stand("report kind")],
    "crm_check": [Problem(Loc("config.yaml", 3, 1), "the recorder objects")],
    "crm_document_created": None,
    "crm_document_updated": None,
    "crm_document_deleted": None,
    "crm_timeline_sources": [Stand("select of calls")],
    "crm_before_transition": "Fill in the amount first",
    "crm_transition_vetoes": {"won": "Fill in the amount first"},
    "crm_status_changed": None,
    "crm_send_email": "email-1",
    "crm_send_sms": "sms-1",
    "crm_record_sections": [("Route map", Stand("svg"))],
    "crm_record_actions": [{"label": "Call", "url": "tel:+74951234567"}],
    "crm_register_views": None,
    "crm_jobs": {"recorder.ping": ping},
    "crm_schedules": [("recorder.ping", 60)],
    "crm_worker_services": [ping],
}


class Recorder:
    """Implements every hook; notes each call with the arguments pluggy passed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _got(self, hook: str, args: dict[str, Any]) -> Any:
        self.calls.append((hook, {k: v for k, v in args.items() if k != "self"}))
        return RESULTS[hook]

    @hookimpl
    def crm_add_hookspecs(self, pm: Any) -> Any:
        return self._got("crm_add_hookspecs", locals())

    @hookimpl
    def crm_settings_schema(self) -> Any:
        return self._got("crm_settings_schema", locals())

    @hookimpl
    def crm_sections(self) -> Any:
        return self._got("crm_sections", locals())

    @hookimpl
    def crm_report_kinds(self, registry: Any) -> Any:
        return self._got("crm_report_kinds", locals())

    @hookimpl
    def crm_startup(self, app: Any, registry: Any) -> Any:
        return self._got("crm_startup", locals())

    @hookimpl
    def crm_metadata_layers(self) -> Any:
        return self._got("crm_metadata_layers", locals())

    @hookimpl
    def crm_field_types(self) -> Any:
        return self._got("crm_field_types", locals())

    @hookimpl
    def crm_check(self, registry: Any, pm: Any) -> Any:
        return self._got("crm_check", locals())

    @hookimpl
    def crm_document_created(
        self, session: Any, doctype: Any, doc: Any, user: Any, docs: Any
    ) -> Any:
        return self._got("crm_document_created", locals())

    @hookimpl
    def crm_document_updated(
        self, session: Any, doctype: Any, doc: Any, user: Any, changes: Any, docs: Any
    ) -> Any:
        return self._got("crm_document_updated", locals())

    @hookimpl
    def crm_document_deleted(
        self, session: Any, doctype: Any, doc: Any, user: Any, docs: Any
    ) -> Any:
        return self._got("crm_document_deleted", locals())

    @hookimpl
    def crm_timeline_sources(self, models: Any, doctype: Any, doc_id: Any, principal: Any) -> Any:
        return self._got("crm_timeline_sources", locals())

    @hookimpl
    def crm_before_transition(
        self, session: Any, doctype: Any, doc: Any, source: Any, target: Any, user: Any, docs: Any
    ) -> Any:
        return self._got("crm_before_transition", locals())

    @hookimpl
    def crm_transition_vetoes(
        self, session: Any, doctype: Any, doc: Any, targets: Any, user: Any, docs: Any
    ) -> Any:
        return self._got("crm_transition_vetoes", locals())

    @hookimpl
    def crm_status_changed(
        self, session: Any, doctype: Any, doc: Any, source: Any, target: Any, user: Any, docs: Any
    ) -> Any:
        return self._got("crm_status_changed", locals())

    @hookimpl
    def crm_send_email(self, message: Any, settings: Any) -> Any:
        return self._got("crm_send_email", locals())

    @hookimpl
    def crm_send_sms(self, to: Any, text: Any, settings: Any, key: Any) -> Any:
        return self._got("crm_send_sms", locals())

    @hookimpl
    def crm_record_sections(self, models: Any, doctype: Any, doc: Any, principal: Any) -> Any:
        return self._got("crm_record_sections", locals())

    @hookimpl
    def crm_record_actions(self, doctype: Any, doc: Any, principal: Any) -> Any:
        return self._got("crm_record_actions", locals())

    @hookimpl
    def crm_register_views(self, appbuilder: Any, registry: Any) -> Any:
        return self._got("crm_register_views", locals())

    @hookimpl
    def crm_jobs(self) -> Any:
        return self._got("crm_jobs", locals())

    @hookimpl
    def crm_schedules(self) -> Any:
        return self._got("crm_schedules", locals())

    @hookimpl
    def crm_worker_services(self, registry: Any) -> Any:
        return self._got("crm_worker_services", locals())


def test_the_recorder_covers_every_hook() -> None:
    implemented = {name for name in vars(Recorder) if name.startswith("crm_")}
    assert implemented == set(SPECS) == set(CALLS) == set(RESULTS)


@pytest.mark.parametrize("hook", sorted(CALLS))
def test_calls_are_complete(hook: str) -> None:
    assert set(CALLS[hook]) == set(inspect.signature(SPECS[hook]).parameters)


@pytest.mark.parametrize("hook", sorted(CALLS))
def test_each_hook_reaches_the_plugin_with_its_arguments(hook: str) -> None:
    pm, problems = make_plugin_manager({})
    assert problems == []
    recorder = Recorder()
    pm.register(recorder, name="recorder")
    pm.check_pending()
    if hook == "crm_add_hookspecs":  # historic: called once, as the plugin is registered
        assert recorder.calls == [(hook, {"pm": pm})]
        return
    recorder.calls.clear()
    if hook == "crm_timeline_sources":
        pm.unregister(
            name="core-timeline"
        )  # it needs real models; tests/test_timeline.py covers it

    result = getattr(pm.hook, hook)(**CALLS[hook])

    assert recorder.calls == [(hook, CALLS[hook])]
    if hook in FIRST_RESULT:
        assert result == RESULTS[hook]
    elif RESULTS[hook] is None:
        assert result == []  # pluggy leaves out None
    else:
        assert RESULTS[hook] in result


def test_first_result_hooks_are_marked_so() -> None:
    pm, _ = make_plugin_manager({})
    marked = {name for name in SPECS if getattr(pm.hook, name).spec.opts["firstresult"]}
    assert marked == FIRST_RESULT


class Sender:
    """Answers the first-result hooks with a fixed id (None: not my business)."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.asked: list[str] = []

    @hookimpl
    def crm_send_email(self, message: Any, settings: Any) -> str | None:
        self.asked.append("crm_send_email")
        return self.answer

    @hookimpl
    def crm_send_sms(self, to: str, text: str, settings: Any) -> str | None:
        self.asked.append("crm_send_sms")
        return self.answer


@pytest.mark.parametrize("hook", sorted(FIRST_RESULT))
def test_first_result_stops_at_the_first_plugin_that_answers(hook: str) -> None:
    pm, _ = make_plugin_manager({})
    first_enabled, answering, not_mine = Sender("id-a"), Sender("id-b"), Sender(None)
    for name, plugin in (("a", first_enabled), ("b", answering), ("c", not_mine)):
        pm.register(plugin, name=name)

    # the plugin registered last is asked first; None passes the turn on
    assert getattr(pm.hook, hook)(**CALLS[hook]) == "id-b"
    assert not_mine.asked == answering.asked == [hook]
    assert first_enabled.asked == []


@pytest.mark.parametrize("hook", sorted(FIRST_RESULT))
def test_first_result_is_none_when_no_plugin_answers(hook: str) -> None:
    pm, _ = make_plugin_manager({})
    assert getattr(pm.hook, hook)(**CALLS[hook]) is None
    pm.register(Sender(None), name="silent")
    assert getattr(pm.hook, hook)(**CALLS[hook]) is None


def test_core_field_types_come_from_the_core_plugin() -> None:
    pm, problems = make_plugin_manager({})
    assert problems == []
    assert pm.hook.crm_field_types() == [list(CORE_TYPES)]


# --- mistakes in plugins and configs -----------------------------------------


@pytest.fixture
def outside_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., None]]:
    """``outside_plugin("name", source)``: a plugin module offered by a stand-in entry point."""
    installed = dict(available_plugins())
    monkeypatch.setattr(engine.plugins, "available_plugins", lambda: installed)
    monkeypatch.syspath_prepend(str(tmp_path))
    modules: list[str] = []

    def add(name: str, source: str) -> None:
        module = f"crm_test_plugin_{name}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        installed[name] = importlib.metadata.EntryPoint(
            name=name, value=module, group=ENTRY_POINT_GROUP
        )
        modules.append(module)

    yield add
    for module in modules:
        sys.modules.pop(module, None)


HERE = Loc("config.yaml", 7, 3)


def test_misspelt_hook_is_a_problem(outside_plugin: Callable[..., None]) -> None:
    outside_plugin(
        "typo",
        """
        from engine.hookspecs import hookimpl

        @hookimpl
        def crm_send_smss(to, text, settings):
            return "sms-1"
        """,
    )
    _pm, problems = make_plugin_manager({"typo": {}}, {"typo": HERE})
    assert [str(p) for p in problems] == [
        "config.yaml:7:3: plugin `typo` implements unknown hook `crm_send_smss`"
        " (did you mean `crm_send_sms`?)"
    ]


def test_hook_with_an_argument_its_spec_lacks_is_a_problem(
    outside_plugin: Callable[..., None],
) -> None:
    outside_plugin(
        "wrongargs",
        """
        from engine.hookspecs import hookimpl

        @hookimpl
        def crm_schedules():
            return [("pigeon.fly", 60)]

        @hookimpl
        def crm_send_sms(to, txt, settings):
            return "sms-1"
        """,
    )
    pm, problems = make_plugin_manager({"wrongargs": {}}, {"wrongargs": HERE})
    assert len(problems) == 1
    assert problems[0].loc == HERE
    assert problems[0].message.startswith("plugin `wrongargs`: ")
    assert "txt" in problems[0].message
    assert "\n" not in problems[0].message
    # nothing of the faulty plugin stays registered
    assert not pm.has_plugin("wrongargs")
    assert pm.hook.crm_schedules() == []
    assert pm.hook.crm_send_sms(**CALLS["crm_send_sms"]) is None


def test_plugin_that_fails_to_import_is_a_problem(outside_plugin: Callable[..., None]) -> None:
    outside_plugin("broken", "import crm_no_such_sdk\n")
    pm, problems = make_plugin_manager({"broken": {}, "processes": {}}, {"broken": HERE})
    assert [str(p) for p in problems] == [
        "config.yaml:7:3: plugin `broken` failed to load: No module named 'crm_no_such_sdk'"
    ]
    assert not pm.has_plugin("broken")
    assert pm.has_plugin("processes")


def test_unknown_plugin_name_is_a_problem_with_a_hint() -> None:
    pm, problems = make_plugin_manager({"telephon": {}}, {"telephon": HERE})
    assert len(problems) == 1
    assert problems[0].loc == HERE
    assert problems[0].message.startswith(
        "unknown plugin `telephon` (did you mean `telephony`?); installed: "
    )
    assert not pm.has_plugin("telephon")


def test_config_with_an_unknown_plugin_fails_to_load(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "name: Test company\nlocale: en\nlayers: []\nplugins:\n  telephon: {}\n",
        encoding="utf-8",
    )
    with pytest.raises(MetadataError) as caught:
        load(tmp_path, env={})
    assert [(p.loc.line, p.loc.col) for p in caught.value.problems] == [(5, 3)]
    assert "did you mean `telephony`?" in caught.value.problems[0].message


# --- the built-in plugins ----------------------------------------------------

BUILT_IN = {"processes": plugins.processes, "mail": plugins.mail, "telephony": plugins.telephony}


def test_built_in_plugins_are_installed_and_register_cleanly() -> None:
    assert set(BUILT_IN) <= set(available_plugins())
    pm, problems = make_plugin_manager({name: {} for name in BUILT_IN})
    assert problems == []
    for name, module in BUILT_IN.items():
        assert pm.get_plugin(name) is module
    for layers in pm.hook.crm_metadata_layers():
        for name, folder in layers:
            assert name in BUILT_IN
            assert folder.is_dir()


def test_telephony_brings_its_provider_hooks_and_only_it() -> None:
    """crm_place_call and crm_call_event are the telephony plugin's own hooks."""
    without, _ = make_plugin_manager({})
    assert not hasattr(without.hook, "crm_place_call")
    assert not hasattr(without.hook, "crm_call_event")
    pm, problems = make_plugin_manager({"telephony": {}})
    assert problems == []
    assert pm.hook.crm_place_call.spec.opts["firstresult"]
    assert pm.hook.crm_call_event.has_spec()

    class Provider:
        @hookimpl
        def crm_place_call(self, extension: str, number: str, call_id: str) -> str:
            return f"call {extension}->{number} as {call_id}"

        @hookimpl
        def crm_call_event(self, event: Any, call: Any) -> None:
            seen.append(event["number"])

    seen: list[str] = []
    pm.register(Provider(), name="pbx")
    placed = pm.hook.crm_place_call(
        session=SESSION, extension="101", number="+7495", call_id="crm-1", settings=SETTINGS
    )
    assert placed == "call 101->+7495 as crm-1"
    pm.hook.crm_call_event(session=SESSION, event={"number": "+7495"}, call=None)
    assert seen == ["+7495"]


def test_a_provider_of_an_unknown_hook_is_refused_without_its_plugin(
    outside_plugin: Callable[..., None],
) -> None:
    """A plugin implementing a telephony hook needs telephony on; the hint says so."""
    outside_plugin(
        "pbx",
        """
        from engine.api import hookimpl

        @hookimpl
        def crm_place_call(extension, number, settings):
            return "call-1"
        """,
    )
    _pm, problems = make_plugin_manager({"pbx": {}}, {"pbx": HERE})
    assert [str(p) for p in problems] == [
        "config.yaml:7:3: plugin `pbx` implements unknown hook `crm_place_call`: it is a "
        "hook of the `telephony` plugin; turn `telephony` on under `plugins` in config.yaml"
    ]
    _pm, problems = make_plugin_manager({"telephony": {}, "pbx": {}}, {"pbx": HERE})
    assert problems == []


def test_processes_brings_its_channels_and_step_kinds_hooks() -> None:
    without, _ = make_plugin_manager({})
    assert not hasattr(without.hook, "crm_process_step_kinds")
    assert not hasattr(without.hook, "crm_notification_channels")
    pm, _ = make_plugin_manager({"processes": {}})

    class Approvals:
        @hookimpl
        def crm_process_step_kinds(self) -> list[str]:
            return ["approve"]

        @hookimpl
        def crm_notification_channels(self) -> list[str]:
            return ["pigeon"]

    pm.register(Approvals(), name="approvals")
    assert pm.hook.crm_process_step_kinds() == [["approve"]]
    assert pm.hook.crm_notification_channels() == [["pigeon"], ["user"]]


def test_plugins_declare_their_sections_and_settings() -> None:
    pm, _ = make_plugin_manager({"processes": {}})
    assert {"processes": "process", "automations": "automation"} in pm.hook.crm_sections()
    # processes serves its discipline report on its own page, not as a `reports:` type
    assert pm.hook.crm_report_kinds(registry=None) == []
    assert plugins.processes.crm_settings_schema() in [
        type(s) if not isinstance(s, type) else s for s in pm.hook.crm_settings_schema()
    ]


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_built_in_metadata_layer_only_when_its_folder_exists(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = BUILT_IN[name]
    folder = tmp_path / "metadata"
    monkeypatch.setattr(module, "METADATA", folder)
    assert module.crm_metadata_layers() == []
    folder.mkdir()
    assert module.crm_metadata_layers() == [(name, folder)]


# --- the sample outside plugin, installed through its entry point ------------

SAMPLE_MODULE = "crm_sample_plugin"  # installed by the `sample_plugin` fixture (conftest)


def test_sample_plugin_is_found_through_its_entry_point(sample_plugin: None) -> None:
    entry_point = available_plugins()["sample"]
    assert entry_point.value == SAMPLE_MODULE

    pm, problems = make_plugin_manager({"sample": {}})
    assert problems == []  # its channels are an optional hook of the processes plugin
    assert pm.has_plugin("sample")
    with_processes, problems = make_plugin_manager({"processes": {}, "sample": {}})
    assert problems == []
    assert ["sample", "email", "sms"] in with_processes.hook.crm_notification_channels()

    types = {ft.name: ft for result in pm.hook.crm_field_types() for ft in result}
    assert set(types) == {ft.name for ft in CORE_TYPES} | {"ogrn"}
    ogrn, field = types["ogrn"], Field("ogrn", "ogrn")
    assert ogrn.normalize(" 1027700132195 ", field, Context()) == "1027700132195"
    assert ogrn.normalize("1027-7001-32195", field, Context()) == "1027700132195"
    with pytest.raises(Invalid):
        ogrn.normalize("1027700132196", field, Context())
    with pytest.raises(Invalid, match="13 digits"):
        ogrn.normalize("77070838", field, Context())


def test_config_may_use_the_sample_plugins_field_type(sample_plugin: None, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "name: Test company\nlocale: en\nlayers: []\nplugins:\n  sample: {greeting: hello}\n",
        encoding="utf-8",
    )
    (tmp_path / "company.yaml").write_text(
        textwrap.dedent(
            """\
            documents:
              Company:
                label: {en: Company}
                fields:
                  name: {type: string, required: true}
                  ogrn: {type: ogrn, label: {en: Registration number}}
            """
        ),
        encoding="utf-8",
    )
    registry = load(tmp_path, env={})
    assert registry.documents["Company"].fields["ogrn"].type == "ogrn"
    # the settings as the plugin's schema loaded them: its defaults filled in
    assert dict(registry.plugins["sample"]) == {
        "greeting": "hello", "smtp_port": 25, "note_field": "note"
    }  # fmt: skip


def test_nested_settings_are_checked_at_their_place(
    outside_plugin: Callable[..., None], tmp_path: Path
) -> None:
    """A plugin's settings schema, nested maps and lists included: each wrong
    setting is one problem at its own line and column in config.yaml."""
    outside_plugin(
        "pbxsettings",
        """
        from marshmallow import fields

        from engine.api import SettingsSchema, hookimpl


        class Line(SettingsSchema):
            number = fields.String(required=True)
            extension = fields.Integer()


        class Settings(SettingsSchema):
            provider = fields.String(required=True)
            account = fields.Nested(Line)
            lines = fields.List(fields.Nested(Line))


        @hookimpl
        def crm_settings_schema():
            return Settings
        """,
    )
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "config.yaml").write_text(
        textwrap.dedent(
            """\
            name: Test company
            layers: []
            plugins:
              pbxsettings:
                provider: example
                account: {number: "+7495", extnesion: 5}
                lines:
                  - {number: "+7496", extension: one}
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(MetadataError) as caught:
        load(folder, env={})
    assert [str(p).split("config.yaml", 1)[1] for p in caught.value.problems] == [
        ":6:32: unknown key `extnesion` in `account` of the settings of the `pbxsettings` "
        "plugin (did you mean `extension`?)",
        ":8:38: line 1 of the settings of the `pbxsettings` plugin: `extension` "
        "not a valid integer",
    ]
    (folder / "config.yaml").write_text(
        "name: Test company\nlayers: []\nplugins:\n  pbxsettings:\n    provider: example\n"
        "    lines: [{number: '+7496', extension: 12}]\n",
        encoding="utf-8",
    )
    registry = load(folder, env={})
    assert registry.plugins["pbxsettings"]["lines"] == [{"number": "+7496", "extension": 12}]


def test_a_section_is_read_by_one_plugin_only(
    outside_plugin: Callable[..., None], tmp_path: Path
) -> None:
    outside_plugin(
        "rival",
        """
        from engine.api import hookimpl

        @hookimpl
        def crm_sections():
            return {"automations": "automation", "roles": "role", "tickets": "ticket"}
        """,
    )
    (tmp_path / "config.yaml").write_text(
        "name: Test company\nlayers: []\nplugins:\n  processes: {}\n  rival: {}\n",
        encoding="utf-8",
    )
    with pytest.raises(MetadataError) as caught:
        load(tmp_path, env={})
    assert [str(p).split("/")[-1] for p in caught.value.problems if "declares" in p.message] == [
        "config.yaml:5:3: the plugin `rival` declares the section `automations`, which "
        "`processes` reads",
        "config.yaml:5:3: the plugin `rival` declares the section `roles`, which the engine reads",
    ]
