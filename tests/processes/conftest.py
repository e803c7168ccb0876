"""A sales company with the processes plugin on: the base layer, a database,
users in roles, and the Documents service acting for one of them."""

from __future__ import annotations

import contextlib
import datetime as dt
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask_appbuilder import Model
from flask_appbuilder.security.sqla.models import Role, User
from sqlalchemy.orm import Session

from engine import clock, migrate
from engine.configuration import load_configuration
from engine.documents import Documents
from engine.models import Models, build

CONFIG = """\
name: Test sales
locale: en
timezone: Europe/Moscow
layers: [base]
plugins:
  processes: {}
"""

# Flask-AppBuilder's own tables: their ids come from sequences on PostgreSQL
ROLES = Role.__table__
USER_ROLES = Model.metadata.tables["ab_user_role"]


@dataclass
class World:
    models: Models
    engine: sa.Engine
    pm: Any
    users: dict[str, int]
    now: dt.datetime = field(default_factory=lambda: dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC))
    sessions: list[Session] = field(default_factory=list)

    def session(self) -> Session:
        s = Session(self.engine)
        self.sessions.append(s)
        return s

    def docs(
        self, session: Session, user: str = "anna", roles: tuple[str, ...] = ("manager",)
    ) -> Documents:
        return Documents(
            self.models,
            session,
            self.users[user],
            roles,
            self.pm,
            now=lambda: self.now,
            username=user,
        )

    def customer(self, session: Session, user: str = "anna", **values: Any) -> Any:
        return self.docs(session, user).create(
            "Customer", {"name": "ООО Ромашка", "email": "buyer@romashka.example", **values}
        )


@pytest.fixture
def world_for(tmp_path: Path, db_url: str) -> Iterator[Callable[..., World]]:
    made: list[World] = []
    moved = contextlib.ExitStack()

    def make(files: dict[str, str], config: str = CONFIG) -> World:
        folder = tmp_path / f"config{len(made)}"
        folder.mkdir()
        (folder / "config.yaml").write_text(config, encoding="utf-8")
        for name, text in files.items():
            (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
        configuration = load_configuration(folder, env={"CRM_DATABASE_URL": db_url})
        models = build(configuration.registry, dict(configuration.field_types))
        engine = sa.create_engine(db_url)
        Model.metadata.create_all(engine)
        # migrate, like `crm migrate`: it adds the users' attribute columns too
        migrate.apply(models, engine, migrate.plan(models, engine))
        users: dict[str, int] = {}
        with engine.begin() as conn:
            roles = {}
            for role in ("manager", "sales_head"):
                roles[role] = conn.execute(
                    ROLES.insert().values(name=role).returning(ROLES.c.id)
                ).scalar_one()
            for name, role in (("anna", "manager"), ("boris", "manager"), ("head1", "sales_head"),
                               ("head2", "sales_head")):  # fmt: skip
                uid = conn.execute(
                    User.__table__.insert()
                    .values(
                        username=name,
                        first_name=name.title(),
                        last_name="",
                        email=f"{name}@crm.example",
                        active=True,
                    )
                    .returning(User.__table__.c.id)
                ).scalar_one()
                conn.execute(USER_ROLES.insert().values(user_id=uid, role_id=roles[role]))
                users[name] = int(uid)
        w = World(models, engine, configuration.pm, users)
        made.append(w)
        # the whole engine (the outbox's stamps, deadlines, filters) reads w.now
        moved.enter_context(clock.use(lambda: w.now))
        return w

    yield make
    moved.close()
    for w in made:
        for s in w.sessions:
            s.close()
        w.models.dispose()
        w.engine.dispose()
