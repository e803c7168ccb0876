"""Plugins stand on the public API alone: ``engine.api``.

Every import in ``plugins/`` and in the sample outside plugin, at the top
of a module or inside a function, is read from the source: one that reaches
into ``engine`` anywhere but ``engine.api`` (and, in a plugin's tests, the
shipped fixtures of ``engine.testing``) fails here, with its file and line,
so the seam the plugins stand on cannot be bypassed unnoticed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import engine.api

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_SOURCES = sorted(
    [*(ROOT / "plugins").rglob("*.py"), *(ROOT / "tests" / "plugins").rglob("*.py")]
)


def engine_imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, what is imported) for every import of the engine in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "engine" or alias.name.startswith("engine."):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "engine":
                for alias in node.names:
                    yield node.lineno, f"engine.{alias.name}"
            elif node.module.startswith("engine."):
                yield node.lineno, node.module


def allowed(path: Path) -> set[str]:
    """``engine.api``; a plugin's tests may also use the shipped fixtures."""
    tests = path.name.startswith("test_") or path.name == "conftest.py"
    return {"engine.api", "engine.testing"} if tests else {"engine.api"}


def private_imports(path: Path) -> list[str]:
    rel = path.relative_to(ROOT)
    return [f"{rel}:{line}: imports {name}" for line, name in engine_imports(path)
            if name not in allowed(path)]  # fmt: skip


@pytest.mark.parametrize("path", PLUGIN_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_plugin_imports_nothing_of_the_engine_but_its_api(path: Path) -> None:
    assert private_imports(path) == []


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The check itself catches the ways a plugin could reach inside."""
    source = tmp_path / "plugin.py"
    source.write_text(
        "import engine.loader\n"
        "from engine import api, jobs\n"
        "from engine.api import hookimpl\n"
        "from .engine import nothing\n"
        "def later():\n"
        "    from engine.web.api import json_body\n",
        encoding="utf-8",
    )
    assert list(engine_imports(source)) == [
        (1, "engine.loader"), (2, "engine.api"), (2, "engine.jobs"), (3, "engine.api"),
        (6, "engine.web.api"),
    ]  # fmt: skip


def test_only_a_plugins_tests_may_use_the_fixtures(tmp_path: Path) -> None:
    for name in ("plugin.py", "test_plugin.py"):
        (tmp_path / name).write_text("from engine.testing import drain\n", encoding="utf-8")
    assert allowed(tmp_path / "plugin.py") == {"engine.api"}
    assert "engine.testing" in allowed(tmp_path / "test_plugin.py")


def test_the_plugins_and_the_sample_are_walked() -> None:
    names = {str(p.relative_to(ROOT)) for p in PLUGIN_SOURCES}
    assert "plugins/processes/work.py" in names
    assert "tests/plugins/sample_plugin/crm_sample_plugin.py" in names


def test_every_public_name_is_there_and_documented() -> None:
    """``__all__`` is the API; docs/plugins.md names each of its members."""
    doc = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    for name in engine.api.__all__:
        assert hasattr(engine.api, name), name
        assert f"`{name}" in doc, f"docs/plugins.md does not document engine.api.{name}"
