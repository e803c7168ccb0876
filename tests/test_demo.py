"""`crm demo`: one command from nothing to a CRM a sales manager could click through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.fieldtypes import inn_is_valid

CRM = str(Path(sys.executable).with_name("crm"))


def run_demo(cwd: Path, db_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CRM_DATABASE_URL": db_url}
    return subprocess.run([CRM, "demo", "--no-serve"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def test_demo_builds_a_realistic_company_once_and_reuses_it(tmp_path: Path, db_url: str) -> None:
    first = run_demo(tmp_path, db_url)
    assert first.returncode == 0, first.stderr
    assert "202 Customer" in first.stdout and "500 Deal" in first.stdout
    for login in ("admin", "manager", "head", "operator", "marketer", "crmadmin"):
        assert f"  {login} " in first.stdout
    assert "password `demo`" in first.stdout

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            inns = conn.execute(sa.text("SELECT inn FROM customer")).scalars().all()
            phones = conn.execute(sa.text("SELECT phone FROM customer")).scalars().all()
            stages = set(conn.execute(sa.text("SELECT DISTINCT stage FROM deal")).scalars())
            kinds = set(conn.execute(sa.text("SELECT DISTINCT kind FROM deal")).scalars())
            planned = conn.execute(
                sa.text(
                    "SELECT count(*) FROM interaction WHERE status = 'planned' AND planned_at > CURRENT_TIMESTAMP"
                )
            ).scalar_one()
            history = conn.execute(sa.text("SELECT count(*) FROM deal__history")).scalar_one()
            totals = conn.execute(
                sa.text("SELECT count(*) FROM customer_order o WHERE o.total = "
                        "(SELECT sum(l.amount) FROM customer_order__lines l WHERE l.parent_id = o.id)")
            ).scalar_one()  # fmt: skip
            orders = conn.execute(sa.text("SELECT count(*) FROM customer_order")).scalar_one()
            # the night's ABC/XYZ classification has run once: classes, the matrix's cells, history
            cells = dict(conn.execute(sa.text(
                "SELECT abc_class || xyz_class, count(*) FROM customer "
                "WHERE abc_class IS NOT NULL GROUP BY abc_class, xyz_class"
            )).all())  # fmt: skip
            changes = conn.execute(sa.text("SELECT count(*) FROM abc_xyz_change")).scalar_one()
            roles = set(conn.execute(sa.text("SELECT name FROM ab_role")).scalars())
            # the typical deals run their process: each has a task for its manager
            typical_tasks = conn.execute(
                sa.text(
                    "SELECT count(*) FROM task t JOIN deal d ON t.doctype = 'Deal' AND t.doc_id = d.id "
                    "WHERE d.kind = 'typical' AND t.status = 'open' AND t.assignee_id = d.manager_id"
                )
            ).scalar_one()
            typical = conn.execute(
                sa.text("SELECT count(*) FROM deal WHERE kind = 'typical'")
            ).scalar_one()
            # the refs obey their `where`: an Interest, a contact, a deal of the same customer
            mismatched = {
                what: conn.execute(sa.text(
                    f"SELECT count(*) FROM {table} x JOIN {target} t ON t.id = x.{ref}_id "
                    "WHERE t.customer_id <> x.customer_id"
                )).scalar_one()
                for what, table, ref, target in (
                    ("interaction.interest", "interaction", "interest", "interest"),
                    ("interaction.contact", "interaction", "contact", "contact_person"),
                    ("deal.interest", "deal", "interest", "interest"),
                    ("order.interest", "customer_order", "interest", "interest"),
                    ("order.deal", "customer_order", "deal", "deal"),
                )
            }  # fmt: skip
            linked = conn.execute(
                sa.text("SELECT count(*) FROM interaction WHERE interest_id IS NOT NULL")
            ).scalar_one()
            moments = conn.execute(sa.text("SELECT planned_at FROM interaction")).scalars().all()
            # the generated work (the letters' own interactions carry their subjects)
            subjects = conn.execute(
                sa.text(
                    "SELECT DISTINCT kind, subject FROM interaction WHERE id NOT IN "
                    "(SELECT interaction_id FROM email_message WHERE interaction_id IS NOT NULL) "
                    "AND id NOT IN (SELECT interaction_id FROM call WHERE interaction_id IS NOT NULL)"
                )
            ).all()
            mail = _mail(conn)
            tele = _telephony(conn)
            lost = conn.execute(
                sa.text("SELECT count(*), count(loss_reason) FROM deal WHERE stage = 'lost'")
            ).one()
            won = conn.execute(
                sa.text("SELECT count(*) FROM deal WHERE stage = 'won'")
            ).scalar_one()
            tasks = conn.execute(
                sa.text(
                    "SELECT count(CASE WHEN done_at <= due THEN 1 END), "
                    "count(CASE WHEN done_at > due THEN 1 END) FROM task WHERE status = 'done'"
                )
            ).one()
            overdue = conn.execute(
                sa.text("SELECT count(*) FROM task WHERE status = 'open' AND overdue")
            ).scalar_one()
            done_past = conn.execute(
                sa.text("SELECT count(*) FROM interaction WHERE status = 'done'")
            ).scalar_one()
    finally:
        engine.dispose()
    # two clients were entered twice, without their INN (the quality check's duplicates)
    assert len(inns) == 202 and inns.count(None) == 2
    inns = [i for i in inns if i]
    assert len(set(inns)) == 200 and all(inn_is_valid(i) for i in inns)
    assert all(p.startswith("+7") and p[1:].isdigit() and len(p) == 12 for p in phones)
    assert stages == {"new", "qualification", "proposal", "contract", "won", "lost"}
    assert kinds == {"typical", "manual", "simple"}
    assert planned >= 200  # the next weeks are planned
    assert history > 500  # every deal entered, most moved on
    assert orders > 200 and totals == orders  # order totals are computed from their lines
    assert {"AZ", "BZ", "CZ"} <= set(cells) and changes == sum(cells.values())
    assert sum(n for cell, n in cells.items() if cell[1] in "XY") >= 3  # the regular clients
    assert {"manager", "sales_head", "operator", "marketer", "administrator", "Admin"} <= roles
    assert typical > 50 and typical_tasks == typical
    assert mismatched == dict.fromkeys(mismatched, 0)
    assert linked > 100  # the Interest is where a client's need gathers its work
    # meetings and calls in working hours on the company's clock, on working days
    import datetime as dt
    from zoneinfo import ZoneInfo

    stamps = [
        m if isinstance(m, dt.datetime) else dt.datetime.fromisoformat(str(m)) for m in moments
    ]
    local = [
        (m if m.tzinfo else m.replace(tzinfo=dt.UTC)).astimezone(ZoneInfo("Europe/Moscow"))
        for m in stamps
    ]
    assert all(9 <= m.hour < 18 and m.weekday() < 5 for m in local)
    from engine.demo import KINDS

    assert all(subject in KINDS[kind][0] for kind, subject in subjects)
    assert lost[0] > 50 and lost[1] == lost[0]  # every lost deal says why
    assert won > 50 and done_past > 200
    assert tasks[0] > 50 and tasks[1] > 10 and overdue > 0  # on time, late, overdue

    # the mailbox: threaded correspondence on the clients' timelines, unsorted
    # mail, templates in two languages, a finished mailing with its counts
    assert mail["threads"] >= 5 and mail["replies"] >= 8 and mail["broken"] == 0
    assert mail["on_timeline"] == mail["with_customer"] > 10
    assert mail["unsorted"] == 2 and mail["failed"] == [("550",)]
    assert mail["templates"] >= {("ru",), ("en",)}
    assert mail["mailing"][0] == "done" and mail["mailing"][1:] == mail["recipients"]
    assert all(mail["mailing"][2:7]) and mail["unsubscribes"] >= 2
    assert "EmailMessage" in first.stdout and "1 Mailing" in first.stdout

    # the call log: answered, missed and busy calls both ways, filed against
    # clients; each answered one on the client's timeline, each missed
    # incoming one a call-back task; a campaign under way; SMS
    assert tele["calls"] > 40 and tele["events"] >= 2 * tele["calls"]
    assert {("in", "answered"), ("in", "missed"), ("out", "answered"), ("out", "busy")} <= tele[
        "kinds"
    ]
    assert tele["matched"] >= tele["calls"] - 6 and tele["with_contact"] > 5
    assert tele["answered_with_customer"] == tele["on_timeline"] > 20
    assert tele["missed_in"] == tele["callback_tasks"] > 2
    assert tele["recorded"] == tele["answered"]
    assert tele["campaign"][:2] == ("running", "Обзвон: приглашение на выставку «Офис-2026»")
    total, done, failed = tele["campaign"][2:]
    assert total == sum(tele["targets"].values()) and tele["targets"].keys() == {
        "queued", "claimed", "done", "callback", "failed"
    }  # fmt: skip
    assert done == tele["targets"]["done"] == tele["done_answered"]
    assert failed == tele["targets"]["failed"]
    assert tele["operators"] == 2 and tele["questions"] == 3 and tele["results"] >= 3
    assert tele["sms"] == {"sent", "delivered", "failed"} and tele["templates"] >= 3
    assert "Call" in first.stdout and "1 Campaign" in first.stdout

    again = run_demo(tmp_path, db_url)
    assert again.returncode == 0, again.stderr
    assert "reusing it" in again.stdout


def _telephony(conn: Any) -> dict[str, Any]:
    """What the demo's calls, campaign and SMS look like, in a few queries."""

    def one(sql: str) -> Any:
        return conn.execute(sa.text(sql)).scalar_one()

    return {
        "calls": one("SELECT count(*) FROM call"),
        "events": one("SELECT count(*) FROM call_event"),
        "kinds": set(conn.execute(sa.text("SELECT DISTINCT direction, status FROM call")).all()),
        "matched": one("SELECT count(*) FROM call WHERE customer_id IS NOT NULL"),
        "with_contact": one("SELECT count(*) FROM call WHERE contact_id IS NOT NULL"),
        "answered": one("SELECT count(*) FROM call WHERE status = 'answered'"),
        "recorded": one(
            "SELECT count(*) FROM call WHERE status = 'answered' AND recording IS NOT NULL "
            "AND duration > 0 AND answered_at IS NOT NULL AND ended_at IS NOT NULL"
        ),
        "answered_with_customer": one(
            "SELECT count(*) FROM call WHERE status = 'answered' AND customer_id IS NOT NULL"
        ),
        "on_timeline": one(
            "SELECT count(*) FROM call c JOIN interaction i ON i.id = c.interaction_id "
            "WHERE i.kind = 'call' AND i.status = 'done' AND i.customer_id = c.customer_id"
        ),
        "missed_in": one("SELECT count(*) FROM call WHERE status = 'missed' AND direction = 'in'"),
        "callback_tasks": one(
            "SELECT count(*) FROM task t JOIN call c ON t.doctype = 'Call' AND t.doc_id = c.id "
            "WHERE c.status = 'missed' AND c.direction = 'in' AND t.status = 'open'"
        ),
        "campaign": tuple(
            conn.execute(sa.text("SELECT status, name, total, done, failed FROM campaign")).one()
        ),
        "targets": dict(
            conn.execute(
                sa.text("SELECT status, count(*) FROM campaign_call GROUP BY status")
            ).all()
        ),
        "done_answered": one(
            "SELECT count(*) FROM campaign_call t JOIN call c ON c.id = t.call_id "
            "WHERE t.status = 'done' AND c.status = 'answered' AND t.result IS NOT NULL "
            "AND t.answers IS NOT NULL AND t.done_at IS NOT NULL"
        ),
        "operators": one("SELECT count(*) FROM campaign__operators"),
        "questions": one("SELECT count(*) FROM campaign__questions"),
        "results": one("SELECT count(*) FROM campaign__results"),
        "sms": set(conn.execute(sa.text("SELECT DISTINCT status FROM sms_message")).scalars()),
        "templates": one("SELECT count(*) FROM sms_template"),
    }


def _mail(conn: Any) -> dict[str, Any]:
    """What the demo's mail looks like, in a few queries."""

    def one(sql: str) -> Any:
        return conn.execute(sa.text(sql)).scalar_one()

    counts = conn.execute(
        sa.text(
            "SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status = 'failed'), "
            "count(*) FILTER (WHERE status = 'bounced'), count(*) FILTER (WHERE status = 'unsubscribed'), "
            "count(*) FILTER (WHERE status = 'skipped'), count(*) FROM mailing_recipient"
        )
    ).one()
    return {
        # threads of several letters, each reply pointing at the letter before it
        "threads": one(
            "SELECT count(*) FROM (SELECT thread FROM email_message WHERE customer_id IS NOT NULL "
            "GROUP BY thread HAVING count(*) > 1 AND count(DISTINCT direction) = 2) t"
        ),
        "replies": one("SELECT count(*) FROM email_message WHERE in_reply_to IS NOT NULL"),
        "broken": one(
            "SELECT count(*) FROM email_message r WHERE r.in_reply_to IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM email_message o WHERE o.message_id = r.in_reply_to AND o.thread = r.thread)"
        ),
        "with_customer": one(
            "SELECT count(*) FROM email_message WHERE customer_id IS NOT NULL AND status <> 'failed'"
        ),
        "on_timeline": one(
            "SELECT count(*) FROM email_message m JOIN interaction i ON i.id = m.interaction_id "
            "WHERE i.kind = 'email' AND i.status = 'done' AND i.customer_id = m.customer_id"
        ),
        "unsorted": one(
            "SELECT count(*) FROM email_message WHERE direction = 'in' AND customer_id IS NULL"
        ),
        "failed": conn.execute(
            sa.text("SELECT substr(error, 1, 3) FROM email_message WHERE status = 'failed'")
        ).all(),
        "templates": set(conn.execute(sa.text("SELECT DISTINCT locale FROM email_template")).all()),
        "mailing": tuple(
            conn.execute(
                sa.text(
                    "SELECT status, sent, failed, bounced, unsubscribed, skipped, total FROM mailing"
                )
            ).one()
        ),
        "recipients": tuple(counts),
        "unsubscribes": one("SELECT count(*) FROM unsubscribe"),
    }


def test_demo_serves_with_the_background_jobs_running(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's import progress, overdue tasks and notifications need the
    job runner: `crm demo` starts it as `crm run` does."""
    import flask
    from click.testing import CliRunner

    import engine.demo
    from engine.cli import main

    served: list[Any] = []

    def run(app: flask.Flask, **_: Any) -> None:
        served.append(app.extensions.get("crm.jobs"))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRM_DATABASE_URL", db_url)
    monkeypatch.setattr(engine.demo, "has_data", lambda *_: True)  # no need to fill it here
    monkeypatch.setattr(flask.Flask, "run", run)
    sinks: list[Any] = []
    started = engine.demo.mail_sink

    def sink(registry: Any) -> Any:
        sinks.append(started(registry))
        return sinks[-1]

    monkeypatch.setattr(engine.demo, "mail_sink", sink)
    result = CliRunner().invoke(main, ["demo", "--port", "5999"])
    assert result.exit_code == 0, result.output
    assert len(served) == 1 and served[0] is not None, "no job runner while serving"
    served[0].stop()
    # the demo's mailbox sends to a local sink the demo starts: a letter reaches it
    assert len(sinks) == 1 and sinks[0] is not None, "no mail sink (is port 2525 taken?)"
    try:
        assert "Mail goes to a local sink on 127.0.0.1:2525" in result.output
        import smtplib

        with smtplib.SMTP("127.0.0.1", 2525, timeout=10) as client:
            client.sendmail("a@demo.example.ru", ["b@example.ru"], "Subject: hi\r\n\r\nhi")
        assert sinks[0].handler.received[-1][1] == ["b@example.ru"]
    finally:
        sinks[0].stop()
    assert "Background jobs run in this process" in result.output
