"""Two people complete the same task at the same moment: the process moves
on once, and the second one is told the task is closed."""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa

from engine.documents import StaleVersion
from plugins.processes import tasks as task_api
from plugins.processes.tasks import AlreadyClosed

ROUTE = """
processes:
  typical_sale:
    document: Deal
    start: {on: create, when: "kind == 'typical'"}
    steps:
      call:
        task: {title: "Call", assignee: owner, due: 1d}
        outcomes: {agreed: offer, refused: lost}
      offer:
        task: {title: "Send the offer", assignee: owner, due: 1d}
        next: won
      won:  {end: true, set: {stage: won}}
      lost: {end: true, set: {stage: lost}}
"""


def test_completing_at_the_same_moment_advances_once(world_for: Any) -> None:
    w = world_for({"sale.yaml": ROUTE})
    s = w.session()
    customer = w.customer(s)
    w.docs(s).create("Deal", {"customer": customer.id, "kind": "typical"})
    s.commit()
    task_id = s.execute(sa.select(w.models.table("Task").c.id)).scalar_one()
    s.close()

    first, second = w.session(), w.session()
    task_api.complete(w.docs(first), task_id, "agreed")
    first.flush()  # the first has written, not committed yet
    outcome: dict[str, Any] = {}

    def other() -> None:
        try:
            task_api.complete(w.docs(second, "head1", ("sales_head",)), task_id, "refused")
            second.commit()
            outcome["result"] = "completed"
        except (AlreadyClosed, StaleVersion) as exc:
            second.rollback()
            outcome["result"] = type(exc).__name__
            outcome["message"] = str(exc)
        except Exception as exc:  # anything else fails the test below, with its type
            second.rollback()
            outcome["result"] = repr(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(timeout=0.5)  # it waits for the first one's lock (or reads before it)
    first.commit()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert outcome["result"] in ("AlreadyClosed", "StaleVersion"), outcome

    check = w.session()
    tasks = w.models.table("Task")
    rows = check.execute(
        sa.select(tasks.c.title, tasks.c.status, tasks.c.outcome).order_by(tasks.c.id)
    )
    assert [tuple(r) for r in rows] == [
        ("Call", "done", "agreed"),
        ("Send the offer", "open", None),
    ]
    deal = check.execute(sa.select(w.models.table("Deal").c.stage)).scalar_one()
    assert deal != "lost"
