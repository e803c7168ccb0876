"""One clock for the engine: moving it moves what the outbox stamps, what
``today()`` says in an expression and which day a relative filter means."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from engine import clock, expressions, jobs

MOMENT = dt.datetime(2031, 1, 1, 0, 30, tzinfo=dt.UTC)  # still 31 Dec in New York


def test_today_is_the_day_where_the_company_is() -> None:
    with clock.use(lambda: MOMENT):
        assert clock.now() == MOMENT
        assert clock.today() == dt.date(2031, 1, 1)
        assert clock.today("America/New_York") == dt.date(2030, 12, 31)
    assert clock.now().year != 2031


def test_a_naive_source_is_taken_as_utc() -> None:
    with clock.use(lambda: dt.datetime(2031, 5, 1, 12, 0)):
        assert clock.now() == dt.datetime(2031, 5, 1, 12, 0, tzinfo=dt.UTC)


def test_the_outbox_stamps_a_job_with_the_engines_time() -> None:
    engine = sa.create_engine("sqlite://")
    jobs.OUTBOX.metadata.create_all(engine)
    with Session(engine) as session, clock.use(lambda: MOMENT):
        jobs.enqueue(session, "test.note", {"text": "hello"}, key="k1")
        row = session.execute(sa.select(jobs.OUTBOX.c.run_after, jobs.OUTBOX.c.created_at)).one()
    assert {value.replace(tzinfo=dt.UTC) for value in row} == {MOMENT}


def test_today_in_an_expression_follows_the_clock() -> None:
    with clock.use(lambda: MOMENT):
        assert expressions.evaluate("today()", {}) == dt.date(2031, 1, 1)
