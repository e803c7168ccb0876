"""Fixtures that read like a consultant's setup: a config from YAML strings.

The database is SQLite in a temporary folder by default; with
``CRM_TEST_DATABASE_URL`` set (CI sets it to the local PostgreSQL) every
test that asks for ``db_url`` gets that server instead, with an empty schema.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.errors import MetadataError
from engine.loader import load
from engine.registry import Registry

PG_URL = os.environ.get("CRM_TEST_DATABASE_URL")
IN_CI = os.environ.get("CI") == "true"

MINIMAL_CONFIG = "name: Test company\nlocale: en\nlayers: []\n"


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Path]:
    """``make_config({"deal.yaml": "documents: ..."}, config="name: X")`` → the folder.

    The config has no base layer unless the config text asks for it, so a
    test sees only the metadata it writes.
    """
    counter = {"n": 0}

    def make(files: dict[str, str] | None = None, config: str = MINIMAL_CONFIG) -> Path:
        counter["n"] += 1
        folder = tmp_path / f"config{counter['n']}"
        folder.mkdir()
        (folder / "config.yaml").write_text(textwrap.dedent(config), encoding="utf-8")
        for name, text in (files or {}).items():
            (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
        return folder

    return make


@pytest.fixture
def load_config(make_config: Callable[..., Path]) -> Callable[..., Registry]:
    """Build a config from YAML strings and load it (raises MetadataError)."""

    def build(files: dict[str, str] | None = None, config: str = MINIMAL_CONFIG) -> Registry:
        return load(make_config(files, config), env={})

    return build


@pytest.fixture
def problems_of(make_config: Callable[..., Path]) -> Callable[..., list[str]]:
    """The problems `crm check` would print for a config, with paths relative to it."""

    def run(
        files: dict[str, str] | None = None,
        config: str = MINIMAL_CONFIG,
        env: dict[str, str] | None = None,
    ) -> list[str]:
        folder = make_config(files, config)
        try:
            load(folder, env=env or {})
        except MetadataError as exc:
            return [
                str(p)
                .replace(str(folder) + os.sep, "")
                .replace(os.path.relpath(folder) + os.sep, "")
                for p in exc.problems
            ]
        return []

    return run


def _reset_postgres(url: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    """An empty database: PostgreSQL when CRM_TEST_DATABASE_URL is set, else SQLite."""
    if PG_URL:
        _reset_postgres(PG_URL)
        yield PG_URL
    else:
        yield f"sqlite:///{tmp_path / 'test.db'}"
