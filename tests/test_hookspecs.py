"""docs/plugins.md and engine/hookspecs.py stay in step, and every hook has a test.

A hook is documented in the plugin guide as a ``#### crm_name`` heading under
the heading of its lifecycle group, followed by a ``python`` fenced block
holding exactly its signature on one line.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "plugins.md"
TESTS = Path(__file__).resolve().parent

HOOK_HEADING = re.compile(r"^#### (?P<name>\S+)$", re.MULTILINE)
HOOK_ENTRY = re.compile(
    r"^#### (?P<name>crm_\w+)\n\n```python\n(?P<signature>[^\n]*)\n```$", re.MULTILINE
)
GROUP_HEADING = re.compile(r"^### (?P<group>.+)$", re.MULTILINE)
GROUP_COMMENT = re.compile(r"^# --- (?P<group>\w+) -+$|^def (?P<hook>crm_\w+)\(", re.MULTILINE)


def _specs() -> dict[str, Callable[..., Any]]:
    return {
        name: fn
        for name, fn in vars(hookspecs).items()
        if callable(fn) and hasattr(fn, "crm_spec") and name.startswith("crm_")
    }


SPECS = _specs()


def _annotation(value: Any) -> str:
    # ``from __future__ import annotations`` keeps annotations as source text
    return value if isinstance(value, str) else inspect.formatannotation(value)


def render_signature(name: str, fn: Callable[..., Any]) -> str:
    """``name(arg: type, ...) -> type``, as the plugin guide shows it."""
    sig = inspect.signature(fn)
    params = []
    for p in sig.parameters.values():
        text = p.name
        if p.annotation is not inspect.Parameter.empty:
            text += f": {_annotation(p.annotation)}"
        if p.default is not inspect.Parameter.empty:
            text += f" = {p.default!r}"
        params.append(text)
    rendered = f"{name}({', '.join(params)})"
    if sig.return_annotation is not inspect.Signature.empty:
        rendered += f" -> {_annotation(sig.return_annotation)}"
    return rendered


def _documented() -> dict[str, str]:
    text = DOCS.read_text(encoding="utf-8")
    entries: dict[str, str] = {}
    for m in HOOK_ENTRY.finditer(text):
        assert m["name"] not in entries, f"{m['name']} is documented twice in {DOCS.name}"
        entries[m["name"]] = m["signature"]
    return entries


DOCUMENTED = _documented()


def test_the_specs_are_found() -> None:
    assert "crm_send_sms" in SPECS
    assert render_signature("crm_send_sms", SPECS["crm_send_sms"]) == (
        "crm_send_sms(to: str, text: str, settings: dict[str, Any], key: str) -> str | None"
    )


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hook_is_documented_with_its_signature(name: str) -> None:
    assert name in DOCUMENTED, f"{name} is not documented in docs/plugins.md"
    assert DOCUMENTED[name] == render_signature(name, SPECS[name])


def test_no_stale_or_malformed_hook_in_docs() -> None:
    text = DOCS.read_text(encoding="utf-8")
    headings = {m["name"] for m in HOOK_HEADING.finditer(text)}
    malformed = headings - set(DOCUMENTED)
    assert not malformed, (
        f"hook headings without a signature block right after them: {sorted(malformed)}"
    )
    stale = set(DOCUMENTED) - set(SPECS)
    assert not stale, f"docs/plugins.md documents hooks that do not exist: {sorted(stale)}"


def test_hooks_are_documented_under_their_lifecycle_group() -> None:
    """The ``# --- group ---`` comments in hookspecs.py match the doc's ``###`` headings."""
    source = inspect.getsource(hookspecs)
    group_of_spec: dict[str, str] = {}
    group = ""
    for m in GROUP_COMMENT.finditer(source):
        if m["group"]:
            group = m["group"]
        else:
            group_of_spec[m["hook"]] = group
    assert set(group_of_spec) == set(SPECS)

    text = DOCS.read_text(encoding="utf-8")
    group_of_doc: dict[str, str] = {}
    groups = [(m.start(), m["group"]) for m in GROUP_HEADING.finditer(text)]
    for m in HOOK_ENTRY.finditer(text):
        before = [g for start, g in groups if start < m.start()]
        group_of_doc[m["name"]] = before[-1].lower() if before else ""
    assert group_of_doc == group_of_spec


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hook_has_a_docstring(name: str) -> None:
    doc = inspect.getdoc(SPECS[name])
    assert doc and doc.strip(), f"{name} in engine/hookspecs.py has no docstring"


@functools.cache
def _test_sources() -> str:
    return "\n".join(
        path.read_text(encoding="utf-8")
        for path in sorted(TESTS.rglob("test_*.py"))
        if path.resolve() != Path(__file__).resolve()
    )


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hook_has_a_test(name: str) -> None:
    assert re.search(rf"\b{name}\b", _test_sources()), (
        f"no test under tests/ mentions {name}; add one to tests/test_plugins.py"
    )


@functools.cache
def _engine_sources() -> str:
    return "\n".join(
        path.read_text(encoding="utf-8") for path in sorted((ROOT / "engine").rglob("*.py"))
    )


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_core_hook_has_a_caller_in_the_engine(name: str) -> None:
    """A hook nothing calls is a promise the engine does not keep: a plugin's
    own hooks (telephony's ``crm_place_call``) live in that plugin's hookspecs."""
    called = rf"\.hook\.{name}\b|call_hook\(\s*\"{name}\""
    assert re.search(called, _engine_sources()), (
        f"nothing in engine/ calls {name}: call it, or move it into the plugin that does"
    )
