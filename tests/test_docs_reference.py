"""docs/metadata-reference.md is generated from the schemas and must stay so:
every key described, every example accepted, the checked-in file current."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from marshmallow import fields as mf

from engine import reference
from engine import schema as S
from engine.errors import Loc
from engine.registry import Registry
from engine.yamlload import load_text

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_schema_key_and_field_type_is_described() -> None:
    assert reference.missing() == [], (
        "describe these in engine/reference.py (SECTIONS / FIELD_TYPES) or in the "
        "field's metadata={'doc': ...}, then run `python -m engine.reference --write`"
    )


def test_a_new_key_without_a_description_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = dict(S.RoleSchema._declared_fields, colour=S.Text())
    monkeypatch.setattr(S.RoleSchema, "_declared_fields", fields)
    assert reference.missing() == ["RoleSchema.colour"]
    described = dict(fields, colour=S.Text(metadata={"doc": "The role's colour."}))
    monkeypatch.setattr(S.RoleSchema, "_declared_fields", described)
    assert reference.missing() == []
    assert "| `colour` | text |" in reference.render()


def test_a_new_kind_of_value_is_named_by_its_docstring(monkeypatch: pytest.MonkeyPatch) -> None:
    class Colour(mf.Field):
        """A colour such as `#ff8800`."""

    fields = dict(S.RoleSchema._declared_fields, colour=Colour(metadata={"doc": "Its colour."}))
    monkeypatch.setattr(S.RoleSchema, "_declared_fields", fields)
    assert "| `colour` | A colour such as `#ff8800` |  |  | Its colour. |" in reference.render()


def test_the_checked_in_reference_is_current() -> None:
    text = (DOCS / "metadata-reference.md").read_text(encoding="utf-8")
    assert text == reference.render(), (
        "docs/metadata-reference.md is out of date: run `python -m engine.reference --write`"
    )


def test_every_key_of_every_schema_is_in_the_reference() -> None:
    text = reference.render()
    for cls in reference.schemas():
        for name, f in cls._declared_fields.items():
            assert f"| `{reference.key_name(name, f)}` |" in text, f"{cls.__name__}.{name}"


def _at(data: Any, path: str) -> Any:
    for part in path.split(".") if path else ():
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


@pytest.mark.parametrize("name", list(reference.SECTIONS))
def test_each_example_passes_its_schema(name: str) -> None:
    section = reference.SECTIONS[name]
    result = load_text(section.example, f"{name}.yaml", {})
    assert result.problems == []
    cls = getattr(S, name)
    obj = _at(result.data, section.at)
    assert S.check(cls(), obj, Loc(f"{name}.yaml", 1, 1), name) == []


def test_each_example_is_refused_with_an_unknown_key() -> None:
    """The examples are checked by the real schemas: a misspelt key fails."""
    section = reference.SECTIONS["ListSchema"]
    obj = dict(_at(load_text(section.example, "x.yaml", {}).data, section.at), colums=[])
    problems = S.check(S.ListSchema(), obj, Loc("x.yaml", 1, 1), "the list")
    assert [p.message for p in problems] == [
        "unknown key `colums` in the list (did you mean `columns`?)"
    ]


def test_the_examples_load_together_over_the_base_layer(
    make_config: Callable[..., Path],
) -> None:
    """The example of extending a base field is a configuration `crm check` accepts."""
    from engine.loader import load

    folder = make_config(
        {"extend.yaml": reference.EXTEND_EXAMPLE},
        "name: Reference\nlocale: en\nlayers: [base]\n",
    )
    registry: Registry = load(folder, env={})
    source = registry.documents["Customer"].fields["source"]
    assert source.required
    assert "partner" in source.values and "website" in source.values
    assert source.label.get("en") == "Where they heard of us"


def test_the_reference_names_every_field_type_with_its_column() -> None:
    text = reference.render()
    for ft in reference.CORE_TYPES:
        assert re.search(rf"^\| `{ft.name}` \| [^|]+ \|", text, re.M), ft.name
    assert "| `decimal` | NUMERIC(18, 4) |" in text


def test_nested_schemas_link_to_their_sections() -> None:
    text = reference.render()
    anchors = set(re.findall(r"\]\((#[a-z0-9_-]+)\)", text))
    headings = {"#" + re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", text, re.M)}  # fmt: skip
    assert anchors <= headings, anchors - headings
    for cls in reference.schemas():
        for f in cls._declared_fields.values():
            if isinstance(f, mf.Nested):
                assert reference.SECTIONS[type(f.schema).__name__].title
