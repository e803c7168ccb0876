"""ABC/XYZ: the stored classes, their history, the nightly job and the matrix
equal an independent computation on generated orders (docs/reports.md)."""

from __future__ import annotations

import calendar
import datetime as dt
import random
import statistics
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from engine import clock
from engine.access import ADMIN_ROLE, Principal
from engine.filters import compile_filter
from engine.jobs import enqueue, runner_for
from engine.reports import KINDS, Context, Params, load_kinds
from engine.testing import crm_app  # noqa: F401  (the plugin fixture; tests/reports/conftest.py has the web one)

USERS = {"admin": ["Admin"], "anna": ["manager"], "boris": ["manager"], "head": ["sales_head"]}
COUNTED = ("confirmed", "shipped", "closed")
BASE_CONFIG = "name: Test company\nlocale: en\nlayers: [base]\n"
REPORT = (
    "{type: abc_xyz, document: CustomerOrder, subject: customer, amount: total, date: date, "
    "states: [confirmed, shipped, closed]%s, label: ABC/XYZ}"
)


def add_months(day: dt.date, n: int) -> dt.date:
    y, m = divmod(day.year * 12 + day.month - 1 + n, 12)
    return dt.date(y, m + 1, min(day.day, calendar.monthrange(y, m + 1)[1]))


def order_day(today: dt.date, k: int, rng: random.Random) -> dt.date:
    """A day well inside the k-th month back (0: the month that ends today)."""
    end = today + dt.timedelta(days=1)
    return add_months(end, -k) - dt.timedelta(days=1 + rng.randint(0, 20))


class World:
    """Customers of two managers with generated orders, and what an independent
    computation says their classes are."""

    def __init__(self, app: Any, seed: int = 7, customers: int = 60) -> None:
        self.app = app
        self.state = app.extensions["crm"]
        self.rng = random.Random(seed)
        self.today = clock.today()
        self.orders: list[tuple[int, dt.date, int, str]] = []  # customer, day, amount, status
        with app.app_context():
            session = self.state.db.session()
            users = self.state.models.table("User")
            ids = dict(session.execute(sa.select(users.c.username, users.c.id)).all())
            self.managers = {"anna": ids["anna"], "boris": ids["boris"]}
            cust = self.state.models.table("Customer")
            self.owner: dict[int, int] = {}
            for i in range(customers):
                manager = self.managers["anna" if i % 2 == 0 else "boris"]
                cid = session.execute(
                    cust.insert().values(name=f"Customer {i}", manager_id=manager)
                ).inserted_primary_key[0]
                self.owner[cid] = manager
                self._orders_of(cid, i)
            session.commit()
            self._insert(session, self.orders)

    def _orders_of(self, cid: int, i: int) -> None:
        rng = self.rng
        profile = i % 5
        if profile == 4 and i % 10 == 9:
            return  # no orders at all
        base = rng.randint(5, 400) * 1000
        spread = (0.03, 0.12, 0.3, 0.6, 1.0)[profile]
        for k in range(12):
            if profile >= 3 and rng.random() < 0.4:
                continue  # a month without orders
            amount = max(100, int(base * (1 + rng.uniform(-spread, spread))))
            self.orders.append((cid, order_day(self.today, k, rng), amount, rng.choice(COUNTED)))
        # what does not count: a cancelled or new order, one before the period
        self.orders.append((cid, order_day(self.today, 3, rng), 999_000, "cancelled"))
        self.orders.append((cid, order_day(self.today, 1, rng), 888_000, "new"))
        self.orders.append((cid, order_day(self.today, 13, rng), 777_000, "closed"))

    def _insert(self, session: Any, orders: list[tuple[int, dt.date, int, str]]) -> None:
        table = self.state.models.table("CustomerOrder")
        session.execute(
            table.insert(),
            [
                {"customer_id": c, "date": day, "total": Decimal(amount), "status": status,
                 "manager_id": self.owner[c], "number": f"T-{n}-{c}-{amount}"}
                for n, (c, day, amount, status) in enumerate(orders)
            ],
        )  # fmt: skip
        session.commit()

    def add(self, orders: list[tuple[int, dt.date, int, str]]) -> None:
        self.orders += orders
        with self.app.app_context():
            self._insert(self.state.db.session(), orders)

    def expected(
        self,
        a: float = 80,
        b: float = 95,
        x: float = 10,
        y: float = 25,
        today: dt.date | None = None,
    ) -> dict[int, tuple[str, str, float, int]]:
        """customer → (abc, xyz, cv %, revenue), computed in Python."""
        today = today or self.today
        end = today + dt.timedelta(days=1)
        edges = [add_months(end, k - 12) for k in range(13)]
        months: dict[int, list[int]] = {}
        for c, day, amount, status in self.orders:
            if status not in COUNTED or not edges[0] <= day < edges[-1]:
                continue
            k = max(i for i in range(12) if edges[i] <= day)
            months.setdefault(c, [0] * 12)[k] += amount
        revenue = {c: sum(m) for c, m in months.items() if sum(m) > 0}
        total = sum(revenue.values())
        out = {}
        above = 0
        for c in sorted(revenue, key=lambda c: (-revenue[c], c)):
            abc = "A" if above * 100 < a * total else "B" if above * 100 < b * total else "C"
            above += revenue[c]
            mean = revenue[c] / 12
            cv = statistics.pstdev(months[c]) / mean * 100
            xyz = "X" if cv <= x else "Y" if cv <= y else "Z"
            out[c] = (abc, xyz, cv, revenue[c])
        return out

    def stored(self) -> dict[int, tuple[Any, Any, Any, Any, Any]]:
        with self.app.app_context():
            cust = self.state.models.table("Customer")
            rows = self.state.db.session().execute(
                sa.select(cust.c.id, cust.c.abc_class, cust.c.xyz_class, cust.c.xyz_cv,
                          cust.c.abc_revenue, cust.c.abc_xyz_at)
            )  # fmt: skip
            return {r[0]: tuple(r[1:]) for r in rows}

    def history(self) -> list[tuple[Any, ...]]:
        with self.app.app_context():
            h = self.state.models.table("AbcXyzChange")
            q = sa.select(h.c.customer_id, h.c.from_abc, h.c.to_abc, h.c.from_xyz, h.c.to_xyz,
                          h.c.manager_id).order_by(h.c.id)  # fmt: skip
            return [tuple(r) for r in self.state.db.session().execute(q)]

    def force(self) -> int:
        """Queue a recalculation now (what "Recalculate now" does) and run it."""
        with self.app.app_context():
            session = self.state.db.session()
            enqueue(session, "crm.abc_xyz", {"force": True})
            session.commit()
            return runner_for(self.app).drain()


def assert_classes(world: World, expected: dict[int, tuple[str, str, float, int]]) -> None:
    stored = world.stored()
    for c, (abc, xyz, cv, revenue) in expected.items():
        got = stored[c]
        assert (got[0], got[1]) == (abc, xyz), (c, got, expected[c])
        assert float(got[2]) == pytest.approx(cv, abs=0.006)
        assert float(got[3]) == revenue
    for c, got in stored.items():
        if c not in expected:
            assert got[:4] == (None, None, None, None)
        assert got[4] is not None  # the run's date, on every customer


@pytest.fixture
def app(crm_app: Any, db_url: str) -> Any:  # noqa: F811
    return crm_app("", layers=("base",), database=db_url, users=USERS)


def test_the_nightly_job_stores_the_classes_an_independent_computation_gives(app: Any) -> None:
    world = World(app)
    expected = world.expected()
    assert {v[0] for v in expected.values()} == {"A", "B", "C"}
    assert {v[1] for v in expected.values()} == {"X", "Y", "Z"}
    with app.app_context():
        runner = runner_for(app)
        assert runner.schedules["crm.abc_xyz"] == 3600
        assert runner.run_schedules() >= 1
        assert runner.drain() == 1  # the schedule's first run: no classes yet, so due
    assert_classes(world, expected)
    with app.app_context():  # not an edit of the customers: no new version, no updated_at
        cust = world.state.models.table("Customer")
        q = sa.select(sa.func.max(cust.c.version), sa.func.count(cust.c.updated_at))
        assert tuple(world.state.db.session().execute(q).one()) == (1, 0)
    # every classified customer got its first history row, with its manager
    history = world.history()
    assert sorted(h[0] for h in history) == sorted(expected)
    assert all(h[1] is None and h[3] is None for h in history)
    assert {h[0]: (h[2], h[4]) for h in history} == {c: v[:2] for c, v in expected.items()}
    assert all(h[5] == world.owner[h[0]] for h in history)

    # within the same night nothing is due; the next night it runs again
    with app.app_context():
        runner = runner_for(app)
        runner.run_schedules()
        assert runner.drain() == 0
    before = world.stored()
    tomorrow = dt.datetime.combine(world.today + dt.timedelta(days=1), dt.time(3, 30), dt.UTC)
    with clock.use(lambda: tomorrow), app.app_context():
        runner = runner_for(app)
        runner.run_schedules()
        assert runner.drain() == 1
    after = world.stored()
    assert all(after[c][4] > before[c][4] for c in after)


def test_history_rows_are_written_only_on_a_change(app: Any) -> None:
    world = World(app, seed=11)
    assert world.force() == 1
    first = world.expected()
    rows = len(world.history())
    assert rows == len(first)
    assert world.force() == 1  # the same data: no change, no row
    assert len(world.history()) == rows

    # the smallest customer buys a lot: it climbs to A, and others move down
    smallest = min(first, key=lambda c: first[c][3])
    silent = next(c for c in world.owner if c not in first)
    world.add([(smallest, order_day(world.today, 0, world.rng), 50_000_000, "closed"),
               (silent, order_day(world.today, 2, world.rng), 1000, "shipped")])  # fmt: skip
    second = world.expected()
    assert second[smallest][0] == "A"
    assert world.force() == 1
    assert_classes(world, second)
    changed = {
        c for c in set(first) | set(second)
        if first.get(c, (None, None))[:2] != second.get(c, (None, None))[:2]
    }  # fmt: skip
    new = world.history()[rows:]
    assert sorted(h[0] for h in new) == sorted(changed)
    for c, from_abc, to_abc, from_xyz, to_xyz, _ in new:
        assert (from_abc, from_xyz) == first.get(c, (None, None))[:2]
        assert (to_abc, to_xyz) == second[c][:2]


def test_thresholds_and_period_are_the_reports(crm_app: Any, db_url: str) -> None:  # noqa: F811
    app = crm_app(
        "reports:\n  abc_xyz: " + REPORT % ", thresholds: {a: 50, b: 90, x: 20, y: 40}, at: '01:00'",
        layers=("base",), database=db_url, users=USERS,
    )  # fmt: skip
    world = World(app, seed=3)
    assert world.force() == 1
    expected = world.expected(a=50, b=90, x=20, y=40)
    assert expected != world.expected()
    assert_classes(world, expected)


def context(app: Any, who: str | None) -> Context:
    state = app.extensions["crm"]
    session = state.db.session()
    principal = None
    if who is not None:
        users = state.models.table("User")
        uid = session.execute(sa.select(users.c.id).where(users.c.username == who)).scalar_one()
        roles = frozenset({ADMIN_ROLE} if who == "admin" else USERS[who])
        principal = Principal(uid, who, roles)
    return Context(state.models, session, principal, dt.UTC, clock.now())


def test_the_matrix_counts_only_readable_customers_and_each_cell_drills_to_its_count(
    app: Any,
) -> None:
    world = World(app, seed=5)
    world.force()
    expected = world.expected()
    load_kinds()
    kind = KINDS["abc_xyz"]
    today = clock.today()
    params = Params(today - dt.timedelta(days=30), today)
    for who, mine in (("head", set(world.owner)), ("anna", {
            c for c, m in world.owner.items() if m == world.managers["anna"]})):  # fmt: skip
        with app.app_context():
            ctx = context(app, who)
            report = ctx.registry.reports["abc_xyz"]
            result = kind.run(ctx, report, params)
            seen = {c: v for c, v in expected.items() if c in mine}
            for row in result.rows:
                for x in "XYZ":
                    cell = [c for c, v in seen.items() if v[:2] == (row["abc"], x)]
                    assert row[f"{x}_count"] == len(cell)
                    assert row[f"{x}_revenue"] == pytest.approx(sum(seen[c][3] for c in cell))
                assert row["count"] == sum(1 for v in seen.values() if v[0] == row["abc"])
            assert result.total is not None
            assert result.total["count"] == len(seen)
            assert result.total["revenue"] == pytest.approx(sum(v[3] for v in seen.values()))
            assert result.drill  # every non-empty cell links to its customers
            for (i, key), token in result.drill.items():
                shown = (result.total if i == -1 else result.rows[i])[key]
                doctype, ids = kind.drill(ctx, report, params, token)
                assert doctype == "Customer"
                got = set(ctx.session.execute(ids).scalars())
                assert len(got) == shown and got <= mine
            assert any("Classes as of" in n for n in result.notes)


def test_a_live_matrix_of_won_deals_and_the_vip_segment(crm_app: Any, db_url: str) -> None:  # noqa: F811
    app = crm_app(
        "reports:\n  won_abc: {type: abc_xyz, document: Deal, subject: customer, amount: amount, "
        "store: false}\n",
        layers=("base",), database=db_url, users=USERS,
    )  # fmt: skip
    world = World(app, seed=9, customers=20)
    world.force()
    expected = world.expected()
    with app.app_context():
        # the vip segment: A with steady revenue, as mailings select it
        state = app.extensions["crm"]
        cust = state.models.table("Customer")
        vip = compile_filter(state.models, "Customer", state.registry.segments["vip"].filter)
        got = set(state.db.session().execute(sa.select(cust.c.id).where(vip)).scalars())
        assert got == {c for c, v in expected.items() if v[0] == "A" and v[1] in "XY"}
        # won deals count from the moment they were won (the status history)
        session = state.db.session()
        deals = state.models.table("Deal")
        hist = state.models.metadata.tables["deal__history"]
        c1, c2 = sorted(world.owner)[:2]
        won_at = clock.now() - dt.timedelta(days=40)
        for c, amount, stage in ((c1, 9000, "won"), (c2, 1000, "won"), (c2, 50000, "lost")):
            did = session.execute(
                deals.insert().values(customer_id=c, amount=Decimal(amount), stage=stage,
                                      manager_id=world.owner[c], number=f"D-{c}-{amount}")
            ).inserted_primary_key[0]  # fmt: skip
            session.execute(hist.insert().values(doc_id=did, field="stage", from_state="contract",
                                                 to_state=stage, at=won_at))  # fmt: skip
        session.commit()
        load_kinds()
        ctx = context(app, "admin")
        result = KINDS["abc_xyz"].run(ctx, ctx.registry.reports["won_abc"], Params(
            clock.today(), clock.today()))  # fmt: skip
        assert result.total is not None and result.total["count"] == 2
        assert result.total["revenue"] == 10000
        assert result.rows[0]["Z_count"] == 1  # c1: 90 % of the revenue in one month
        assert result.rows[1]["Z_count"] == 1  # c2 crosses 80 % after c1's 90 %: B
        assert any("Computed now" in n for n in result.notes)


def test_the_classes_are_read_only_over_rest(app: Any, crm_login: Any) -> None:
    world = World(app, seed=2, customers=4)
    world.force()
    head = crm_login(app, "head")
    cid = next(iter(world.owner))
    got = head.api("GET", f"/api/v1/customer/{cid}").json["result"]
    before = world.stored()[cid]
    put = head.api("PUT", f"/api/v1/customer/{cid}",
                   json={"abc_class": "C", "xyz_class": "Z", "version": got["version"]})  # fmt: skip
    assert put.status_code in (200, 400, 422)
    assert world.stored()[cid][:2] == before[:2]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (", period: 1m", "`period`: must be a number of months from 2 to 120"),
        (", thresholds: {a: 90, b: 80}", "`thresholds`: must be a < b ≤ 100 and x < y"),
        (", thresholds: {q: 5}", "`thresholds`: has an unknown key `q`"),
        (", at: '25:00'", "`at`: must be a time of day"),
        ("[shiped]", "`states`: `shiped` is not a state of CustomerOrder"),
    ],
)
def test_crm_check_refuses_bad_options_at_their_place(
    problems_of: Any, options: str, message: str
) -> None:
    text = REPORT % options
    if options.startswith("["):  # the states, in their place
        text = (REPORT % "").replace("[confirmed, shipped, closed]", options)
    problems = problems_of({"r.yaml": f"reports:\n  abc_xyz: {text}\n"}, config=BASE_CONFIG)
    assert len(problems) == 1, problems
    assert problems[0].startswith("r.yaml:2:"), problems
    assert f"the report `abc_xyz`, {message}" in problems[0]


def test_crm_check_refuses_a_subject_that_is_no_ref_and_two_stores(problems_of: Any) -> None:
    text = (
        "reports:\n"
        "  a1: {type: abc_xyz, document: CustomerOrder, subject: date, amount: total, date: date}\n"
        "  a2: {type: abc_xyz, document: Deal, subject: customer, amount: amount}\n"
    )
    problems = problems_of({"r.yaml": text}, config=BASE_CONFIG)
    assert any(
        p.startswith("r.yaml:2:") and "`subject`: must be a ref field" in p for p in problems
    )
    assert any(
        p.startswith("r.yaml:3:")
        and "already stores the classes of Customer; set `store: false`" in p
        for p in problems
    ), problems


def test_the_benchmark_runs_small_and_agrees_with_the_hand_written_sql(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.__main__ import main

    assert main(["--abc-xyz", "--rows", "3000", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "ABC/XYZ classification of 300 customers from 3,000 orders" in out
    assert "disagreements with the hand-written SQL: 0" in out
    assert "×" in out and "history rows: " in out and "'AZ'" in out
