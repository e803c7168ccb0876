"""The version caps of setup.cfg, and why each is still there (docs/upgrading.md).

Each cap has a test that passes while the reason for it stands and fails,
saying which cap to lift, once the reason is gone; and every installed
package must be within its pin, so a run never tests something the project
does not ship with.
"""

from __future__ import annotations

import configparser
import importlib.metadata
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from engine.app import create_app

ROOT = Path(__file__).resolve().parent.parent
UPGRADING = "docs/upgrading.md"


def _requirements() -> list[Requirement]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    lines = parser["options"]["install_requires"].splitlines()
    return [Requirement(line) for line in (x.strip() for x in lines) if line and line[0] != "#"]


def test_every_installed_dependency_is_within_its_pin() -> None:
    outside = []
    for req in _requirements():
        version = importlib.metadata.version(req.name)
        if not req.specifier.contains(version, prereleases=True):
            outside.append(f"{req.name} {version} (setup.cfg: {req})")
    assert outside == [], f"installed outside the pins; see {UPGRADING}"


def test_the_caps_are_the_documented_ones() -> None:
    """A cap added or lifted in setup.cfg is explained (or struck) in docs/upgrading.md."""
    text = (ROOT / UPGRADING).read_text(encoding="utf-8")
    capped = {r.name for r in _requirements() if any(s.operator == "<" for s in r.specifier)}
    assert capped == {"Flask", "Flask-AppBuilder", "marshmallow", "SQLAlchemy", "WTForms"}
    for name in capped:
        assert f"`{name}" in text, f"{UPGRADING} does not explain the cap on {name}"


@pytest.fixture
def fab_app(make_config: Callable[..., Path], tmp_path: Path) -> object:
    folder = make_config({}, f"name: Pins\nlayers: []\ndatabase: sqlite:///{tmp_path}/pins.db\n")
    app = create_app(folder, {"TESTING": True, "SECRET_KEY": "pins-" * 10})
    yield app
    with app.app_context():
        app.extensions["crm"].db.session.remove()
        app.extensions["crm"].db.engine.dispose()
    app.extensions["crm"].models.dispose()


def test_marshmallow_4_still_breaks_flask_appbuilder(fab_app: object) -> None:
    """Flask-AppBuilder builds its REST schemas with ``Meta.fields`` naming
    foreign-key columns (``permission_id``) that marshmallow-sqlalchemy leaves
    out; marshmallow 3 fills them in, marshmallow 4 raises KeyError at startup
    and on any REST API listing a foreign key. Once Flask-AppBuilder declares
    them itself, `marshmallow<4` can go."""
    from flask_appbuilder.api.convert import Model2SchemaConverter
    from flask_appbuilder.models.sqla.interface import SQLAInterface
    from flask_appbuilder.security.sqla.models import PermissionView

    with fab_app.app_context():  # type: ignore[attr-defined]
        converter = Model2SchemaConverter(SQLAInterface(PermissionView), {})
        schema = converter.convert(["permission_id", "view_menu_id"])
        declared = type(schema)._declared_fields
        assert "permission_id" in schema.fields, "marshmallow 3 infers the field"
        assert "permission_id" not in declared, (
            "Flask-AppBuilder now declares foreign keys in its schemas: "
            f"try lifting `marshmallow<4` in setup.cfg ({UPGRADING})"
        )


def test_wtforms_3_4_still_breaks_flask_appbuilder() -> None:
    """Flask-AppBuilder's search forms use WTForms' ``DateTimeField``, which
    WTForms 3.4 removes: importing flask_appbuilder.forms fails there. Once it
    uses ``DateTimeLocalField``, `WTForms<3.4` can go."""
    import wtforms
    from flask_appbuilder import forms

    assert getattr(forms, "DateTimeField", None) is wtforms.DateTimeField, (
        "Flask-AppBuilder no longer uses WTForms' DateTimeField: "
        f"try lifting `WTForms<3.4` in setup.cfg ({UPGRADING})"
    )

    class Search(wtforms.Form):
        at = wtforms.DateTimeField()

    with pytest.warns(DeprecationWarning, match="will be removed in WTForms 3.4"):
        Search()
