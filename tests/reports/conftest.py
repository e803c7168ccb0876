"""A sales team with deals moved through their stages at chosen moments, and
an independent computation of what a funnel of them should say."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from engine import clock
from tests.web.conftest import Browser, crm_app, login  # noqa: F401  (crm_app, login: fixtures)

BASE = "name: Base Ltd\nlocale: en\nregion: RU\nlayers: [base]\n"
EXTRA = """
segments:
  big_deals: {document: Deal, label: Big deals, filter: {amount: {gte: 5000}}}
reports:
  heads_funnel: {type: funnel, document: Deal, amount: amount, roles: [sales_head], label: {en: Heads' funnel, ru: Воронка руководителя}}
"""
STEPS = ["new", "qualification", "proposal", "contract", "won"]
KINDS = ["typical", "manual", "simple"]


@dataclass
class Deal:
    id: int
    manager: str
    kind: str
    amount: int
    #: (state, moment) in order; the first is the creation
    moves: list[tuple[str, dt.datetime]]

    @property
    def now(self) -> str:
        return self.moves[-1][0]


@dataclass
class World:
    app: Flask
    deals: list[Deal]
    users: dict[str, int]
    departments: dict[str, int]
    start: dt.date
    end: dt.date
    login: Callable[[Flask, str], Browser]
    members: dict[str, list[str]] = field(default_factory=dict)

    @property
    def args(self) -> str:
        return f"from={self.start.isoformat()}&to={self.end.isoformat()}"

    def expected(
        self,
        who: str | None = None,
        *,
        manager: str | None = None,
        department: str | None = None,
        kind: str | None = None,
        min_amount: int | None = None,
    ) -> dict[str, Any]:
        """The funnel computed here, record by record: per step how many
        entered it or a later one in the period, and the sum of their amounts;
        how many entered `lost`; how many of them stand in each state now."""
        low = dt.datetime.combine(self.start, dt.time(), dt.UTC)
        high = dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time(), dt.UTC)
        reached = dict.fromkeys(STEPS, 0)
        amount = dict.fromkeys(STEPS, 0)
        lost = lost_amount = total = 0
        now = dict.fromkeys([*STEPS, "lost"], 0)
        for d in self.deals:
            if who == "anna" and d.manager != "anna":
                continue  # a manager reads their own deals
            if manager and d.manager != manager:
                continue
            if department and d.manager not in self.members[department]:
                continue
            if kind and d.kind != kind:
                continue
            if min_amount is not None and d.amount < min_amount:
                continue
            inside = [s for s, at in d.moves if low <= at < high]
            if not inside:
                continue
            total += 1
            now[d.now] += 1
            furthest = max((STEPS.index(s) for s in inside if s in STEPS), default=-1)
            for s in STEPS[: furthest + 1]:
                reached[s] += 1
                amount[s] += d.amount
            if "lost" in inside:
                lost += 1
                lost_amount += d.amount
        return {"reached": reached, "amount": amount, "lost": lost, "lost_amount": lost_amount,
                "now": now, "total": total}  # fmt: skip


def _make_deals(rng: random.Random, managers: list[str], today: dt.datetime) -> list[Any]:
    """Deals created over the last three months, each moved some stages on
    (sometimes skipping one), a third of the unfinished ones lost."""
    out = []
    for _ in range(120):
        created = today - dt.timedelta(days=rng.randint(1, 90), hours=rng.randint(0, 23))
        moves = [("new", created)]
        at = created
        furthest = rng.randint(0, 4)
        for s in STEPS[1 : furthest + 1]:
            if s != "won" and rng.random() < 0.2:
                continue  # skipped: moved straight past it
            at = at + dt.timedelta(days=rng.randint(1, 10), hours=rng.randint(0, 5))
            moves.append((s, at))
        if moves[-1][0] != "won" and rng.random() < 0.35:
            at = at + dt.timedelta(days=rng.randint(1, 10))
            moves.append(("lost", at))
        moves = [(s, m) for s, m in moves if m < today]  # nothing in the future
        out.append(
            (
                rng.choice(managers),
                rng.choice(KINDS),
                rng.choice([0, 1000, 4000, 7000, 12000]),
                moves,
            )
        )
    return out


@pytest.fixture
def world(crm_app: Any, login: Any) -> Iterator[World]:  # noqa: F811
    app = crm_app(EXTRA, BASE)
    state = app.extensions["crm"]
    m = state.models
    users_t, deals_t, customers_t = m.table("User"), m.table("Deal"), m.table("Customer")
    departments_t = m.table("Department")
    hist = m.metadata.tables[state.registry.documents["Deal"].history_table]
    now = clock.now()
    rng = random.Random(14)
    deals: list[Deal] = []
    with app.app_context(), state.db.engine.begin() as conn:
        users = dict(conn.execute(sa.select(users_t.c.username, users_t.c.id)).all())
        departments = {}
        for name in ("Sales", "Key accounts"):
            departments[name] = conn.execute(
                departments_t.insert().values(name=name, version=1, created_at=now)
            ).inserted_primary_key[0]
        members = {"Sales": ["anna", "helen"], "Key accounts": ["boris"]}
        for dept, names in members.items():
            conn.execute(
                users_t.update()
                .where(users_t.c.username.in_(names))
                .values(department_id=departments[dept])
            )
        customer = conn.execute(
            customers_t.insert().values(name="Acme", version=1, created_at=now)
        ).inserted_primary_key[0]
        for n, (who, kind, amount, moves) in enumerate(
            _make_deals(rng, ["anna", "boris", "helen"], now)
        ):
            deal_id = conn.execute(
                deals_t.insert().values(
                    version=1,
                    created_at=moves[0][1],
                    number=f"D-{n:06d}",
                    stage=moves[-1][0],
                    customer_id=customer,
                    kind=kind,
                    amount=amount,
                    manager_id=users[who],
                )
            ).inserted_primary_key[0]
            conn.execute(
                hist.insert(),
                [
                    {"doc_id": deal_id, "field": "stage", "from_state": moves[i - 1][0] if i else None,
                     "to_state": s, "at": at, "by_id": users[who]}
                    for i, (s, at) in enumerate(moves)
                ],
            )  # fmt: skip
            deals.append(Deal(deal_id, who, kind, amount, moves))
    today = clock.today()
    yield World(
        app, deals, users, departments, today - dt.timedelta(days=45), today, login, members
    )
