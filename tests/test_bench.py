"""The benchmark suite works: its generator makes plausible rows and one measurement runs.

Tiny sizes and no timing assertions: timings belong to `python -m bench`.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from bench.__main__ import main
from bench.generate import Generator, generate
from bench.suite import (
    CONFIG,
    SCENARIOS,
    WEIGHTS,
    Figures,
    Results,
    fill,
    propose_indexes,
    report,
    run_scenario,
)
from engine.fieldtypes import inn_is_valid
from engine.loader import load
from engine.models import Models, build

SIZE = 2_000


@pytest.fixture
def models() -> Iterator[Models]:
    models = build(load(CONFIG, env={}))
    yield models
    models.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


def test_generator_makes_plausible_linked_rows(models: Models, engine: sa.Engine) -> None:
    models.metadata.create_all(engine)
    with engine.begin() as conn:
        gen = generate(models, conn, {"Customer": SIZE, "CustomerOrder": SIZE}, weights=WEIGHTS)
    customer, order = models.table("Customer"), models.table("CustomerOrder")
    with engine.connect() as conn:
        orders = conn.execute(
            sa.select(order.c.id, order.c.number, order.c.status, order.c.customer_id,
                      order.c.manager_id, order.c.created_at, order.c.date).order_by(order.c.id)
        ).all()  # fmt: skip
        customers = conn.execute(
            sa.select(customer.c.id, customer.c.industry, customer.c.name, customer.c.inn)
        ).all()
    assert len(orders) == len(customers) == SIZE
    assert gen.ids["Customer"] == range(1, SIZE + 1)
    # references point at rows that exist; a few customers get many orders
    assert {o.customer_id for o in orders} <= set(gen.ids["Customer"])
    assert {o.manager_id for o in orders} - {None} <= set(gen.user_ids)
    per_customer = Counter(o.customer_id for o in orders).most_common()
    assert per_customer[0][1] >= 10 * (SIZE / len(per_customer))
    # the distributions the benchmark's filters rely on: about a fifth each
    confirmed = sum(o.status == "confirmed" for o in orders) / SIZE
    retail = sum(c.industry == "retail" for c in customers) / SIZE
    assert 0.15 < confirmed < 0.25 and 0.15 < retail < 0.25
    # numbered, in creation order, dated like their creation
    assert len({o.number for o in orders}) == SIZE and orders[0].number == "O-000001"
    moments = [o.created_at for o in orders]
    assert moments == sorted(moments)
    utc = [m.astimezone(dt.UTC) if m.tzinfo else m for m in moments]
    assert all(o.date == m.date() for o, m in zip(orders, utc, strict=True))
    assert all(isinstance(c.name, str) and c.name for c in customers)
    assert all(c.inn is None or inn_is_valid(c.inn) for c in customers)


def test_generator_appends_and_the_id_sequence_continues(models: Models, engine: sa.Engine) -> None:
    models.metadata.create_all(engine)
    customer = models.table("Customer")
    with engine.begin() as conn:
        gen = Generator(models, seed=7)
        assert gen.users(conn, 3) == gen.users(conn, 3)  # users are reused, not doubled
        first = gen.documents(conn, "Customer", 50)
        second = gen.documents(conn, "Customer", 50)
        assert second.start == first.stop
        # the database's own id sequence continues after the generated rows
        new_id = conn.execute(
            customer.insert().values(name="Manual", created_at=dt.datetime.now(dt.UTC), version=1)
        ).inserted_primary_key
        assert new_id is not None and new_id[0] == 101


def test_one_measurement_runs_and_agrees_with_hand_written_queries(
    models: Models, engine: sa.Engine
) -> None:
    propose_indexes(models)
    fill(models, engine, SIZE)
    for scenario in SCENARIOS:
        # run_scenario asserts that engine, hand SQL and hand ORM show the same page
        f = run_scenario(models, engine, scenario, SIZE, quick=True)
        assert f.size == SIZE and f.reps >= 7
        assert 0 < f.count <= SIZE and not f.count_capped
        assert min(f.engine, f.engine_sql, f.hand_sql, f.hand_orm) > 0


def test_report_flags_missed_targets() -> None:
    def figures(size: int, engine: float, plan: float) -> Figures:
        return Figures("orders", size, engine, plan, plan / 2, plan / 2, 1.0, 0.5, 0.5, 1.0,
                       100, False, 7)  # fmt: skip

    results = Results(
        "SQLite",
        [figures(10_000, 1.0, 1.0), figures(100_000, 2.0, 2.0), figures(1_000_000, 4.0, 1.0)],
    )
    lines: list[str] = []
    missed = report(results, lines.append)
    assert missed == ["scaling orders: 4.00", "orders: plan 2.00", "orders: overhead 2.00"]
    assert any("MISSED" in line for line in lines)


def test_command_line_quick_run(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quick", "--sizes", "300,600", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "List page benchmark on" in out
    assert "orders, status = confirmed" in out
    assert "Scaling of the engine's page + count, 600 rows / 300 rows" in out


def test_the_search_benchmark_runs_and_finds_what_a_scan_finds(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # bench.suite.search_against_equality checks the counts against a scan
    assert main(["--search", "--rows", "2000", "--quick", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "Search against equality on" in out
    (phone,) = [line for line in out.splitlines() if "search phone '8 (" in line]
    assert "1 found" in phone
    assert "customers, filter industry = retail" in out


def test_the_html_list_page_benchmark_runs_and_counts_statements() -> None:
    from bench import html

    lines = html.run(rows=2_000, repeat=2)
    assert lines[1].strip().startswith("GET /customer/?f_industry=retail")
    assert "(5 statements)" in lines[1]


def test_the_discipline_benchmark_runs_agrees_and_sends_one_statement(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # bench.discipline.run checks that the report, its SQL and the hand-written
    # query give the same figures and that the report is one statement
    assert main(["--discipline", "--rows", "2000", "--quick", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "Executive discipline report on" in out and "2,000 tasks" in out
    rows = [line for line in out.splitlines() if line.startswith(("  Dec 2025", "  year"))]
    assert len(rows) == 4 and all(line.endswith("  1") for line in rows), out


def test_the_funnel_benchmark_runs_agrees_and_sends_one_statement(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # bench.reports_funnel.run checks that the report and the hand-written query
    # give the same figures and that the report is one statement
    assert main(["--reports-funnel", "--rows", "2000", "--quick", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "Deal funnel on" in out and "2,000 deals" in out
    rows = [line for line in out.splitlines() if line.startswith(("  Dec 2025", "  Q4", "  year"))]
    assert len(rows) == 4 and all(line.endswith("  1") for line in rows), out


def test_the_caller_lookup_benchmark_runs_agrees_with_the_hand_written_union(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # bench.telephony_lookup.measure compares each lookup's records with the
    # hand-written UNION's, and EXPLAIN must show an index for every part
    assert main(["--lookup", "--rows", "5000", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "Caller lookup over 5,000 customers + 5,000 contact persons" in out
    assert "disagreements with the raw UNION: 0" in out
    assert "(every part indexed)" in out
    assert "'nobody': 0" in out and "'contact': 180" in out
    for name in ("raw SELECT", "raw UNION", "lookup.find", "bare lookup"):
        assert f"    {name} " in out


def test_the_lookup_plan_check_sees_a_scan() -> None:
    from bench.telephony_lookup import indexed

    searched = ["SEARCH customer USING INDEX ix_customer_phone (phone=?)",
                "SEARCH contact_person USING INDEX ix_contact_person_phone (phone=?)"]  # fmt: skip
    assert indexed(searched, ["customer", "contact_person"], "sqlite")
    assert not indexed(
        [searched[0], "SCAN contact_person"], ["customer", "contact_person"], "sqlite"
    )
    assert not indexed(["Seq Scan on customer", "Index Scan using ix on contact_person"],
                       ["customer", "contact_person"], "postgresql")  # fmt: skip


def test_the_deal_reports_benchmark_agrees_with_hand_sql_in_one_statement_each(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # bench.reports_deals.run checks that each report's count equals the
    # hand-written query's and that each report sends exactly one statement
    assert main(["--reports-deals", "--rows", "2000", "--quick", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "Deal reports on" in out and "2,000 deals" in out
    rows = [line for line in out.splitlines() if line.startswith(("deal", "stale", "customer"))]
    assert len(rows) == 14, out


def test_the_merge_benchmark_moves_every_linked_record(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--merge", "--rows", "50", "--quick", "--db", db_url]) == 0
    out = capsys.readouterr().out
    # five kinds of linked record, 50 each, moved in one merge and back by its undo
    assert "Merge of two customers with 50 linked records of each kind" in out
    assert "references moved: 250;" in out
    for name in ("merge", "undo", "hand-written SQL"):
        assert f"    {name} " in out
