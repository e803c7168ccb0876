"""Import in the browser: the form, the background job ``crm.import`` and the
progress page's status, through the real app with users who log in.

Jobs are run by draining the app's runner (``jobs.runner_for(app)``), as the
in-process runner of ``crm run`` or ``crm worker`` would run them.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import sqlalchemy as sa
from flask import Flask
from itsdangerous import URLSafeTimedSerializer

from engine import jobs, transfer
from engine.access import Principal
from tests.web.conftest import SALES, Browser

# SALES, and people who may only read customers
IMPORT = SALES.replace(
    "  sales_head: {label: Head of sales}\n",
    "  sales_head: {label: Head of sales}\n  viewer: {label: Viewer}\n",
    1,
).replace(
    "      sales_head: {read: all, create: true, update: all, delete: true}\n  Deal:",
    "      sales_head: {read: all, create: true, update: all, delete: true}\n"
    "      viewer:     {read: all}\n  Deal:",
    1,
)
assert "viewer:     {read: all}" in IMPORT

GOOD = "name,phone,segment\nAcme,+74951234567,A\nBorealis,,B\nCirrus,,\n"
BAD = "name,phone,segment\nAcme,,A\n,,B\nCirrus,,Z\n"


@pytest.fixture
def app(crm_app: Callable[..., Flask]) -> Flask:
    app = crm_app(IMPORT)
    with app.app_context():
        sm = app.extensions["crm"].appbuilder.sm
        sm.add_user("vera", "Vera", "Test", "vera@example.org", [sm.find_role("viewer")], "secret")
    return app


def upload(
    user: Browser, data: bytes, filename: str = "customers.csv", resource: str = "customer",
    **form: str,
) -> Any:  # fmt: skip
    """Post the import form as a browser does: the file and the page's CSRF token."""
    page = user.get(f"/{resource}/import")
    assert page.status_code == 200, page.status_code
    token = Browser.token_from(page.text)
    return user.client.post(
        f"/{resource}/import",
        data={"csrf_token": token, "file": (io.BytesIO(data), filename), **form},
        content_type="multipart/form-data",
    )


def queued(response: Any, resource: str = "customer") -> int:
    assert response.status_code == 302, response.text
    match = re.fullmatch(rf"/{resource}/import/(\d+)", response.headers["Location"])
    assert match, response.headers["Location"]
    return int(match.group(1))


def run_jobs(app: Flask) -> int:
    with app.app_context():
        return jobs.runner_for(app).drain()


def clocked_runner(app: Flask) -> tuple[jobs.Runner, list[dt.datetime]]:
    """A runner whose clock the test moves on (to a retry's time)."""
    now = [dt.datetime.now(dt.UTC)]
    state = app.extensions["crm"]
    with app.app_context():
        engine = state.db.engine
    return jobs.Runner(state.models, engine, state.pm, clock=lambda: now[0]), now


def status(user: Browser, job_id: int, resource: str = "customer") -> dict[str, Any]:
    response = user.get(f"/{resource}/import/{job_id}/status")
    assert response.status_code == 200, response.status_code
    return response.get_json()  # type: ignore[no-any-return]


def customers(app: Flask) -> list[tuple[str, Any, Any]]:
    state = app.extensions["crm"]
    table = state.models.table("Customer")
    with app.app_context():
        rows = state.db.session.execute(
            sa.select(table.c.name, table.c.segment, table.c.manager_id).order_by(table.c.id)
        ).all()
        state.db.session.remove()
    return [tuple(r) for r in rows]


def user_id(app: Flask, username: str) -> int:
    with app.app_context():
        return int(app.extensions["crm"].appbuilder.sm.find_user(username=username).id)


def uploads(app: Flask) -> list[Path]:
    folder = transfer.upload_folder(app.extensions["crm"].registry)
    return sorted(folder.iterdir()) if folder.exists() else []


# -- the button and the form -----------------------------------------------------------


def test_the_list_offers_import_to_those_who_may_create(app: Flask, login: Any) -> None:
    assert 'class="btn btn-default btn-sm crm-import" href="/customer/import"' in (
        login(app, "anna").get("/customer/").text
    )
    assert "crm-import" not in login(app, "vera").get("/customer/").text


def test_the_form_names_the_columns_and_offers_a_template(app: Flask, login: Any) -> None:
    anna = login(app, "anna")
    page = anna.get("/customer/import")
    assert page.status_code == 200
    assert 'enctype="multipart/form-data"' in page.text
    assert 'name="csrf_token"' in page.text
    for name in ("name", "phone", "email", "segment", "manager"):
        assert f'data-column="{name}"' in page.text
    assert "A, B, C" in page.text  # what an enum takes
    assert "User by Login (username)" in page.text  # how a ref names its record
    assert 'value="partial"' in page.text and 'value="all"' in page.text
    assert "At most 64 MB" in page.text

    template = anna.get("/customer/import/template.csv")
    assert template.status_code == 200
    assert template.mimetype == "text/csv"
    assert template.data.decode("utf-8-sig") == "name,phone,email,segment,manager\r\n"


def test_who_may_not_create_gets_403(app: Flask, login: Any) -> None:
    vera = login(app, "vera")
    assert vera.get("/customer/import").status_code == 403
    assert vera.get("/customer/import/template.csv").status_code == 403
    # with a valid token too: the refusal is the rule's, not the form's
    with vera.client.session_transaction() as session:
        raw = session["csrf_token"]
    token = URLSafeTimedSerializer(app.secret_key, salt="wtf-csrf-token").dumps(raw)
    response = vera.client.post(
        "/customer/import",
        data={"csrf_token": token, "file": (io.BytesIO(GOOD.encode()), "c.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 403
    assert uploads(app) == []


def test_no_csrf_token_is_400_and_queues_nothing(app: Flask, login: Any) -> None:
    anna = login(app, "anna")
    response = anna.client.post(
        "/customer/import",
        data={"file": (io.BytesIO(GOOD.encode()), "customers.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert "CSRF" in response.text
    assert uploads(app) == []
    assert run_jobs(app) == 0


def test_a_missing_empty_or_foreign_file_is_said_on_the_form(app: Flask, login: Any) -> None:
    anna = login(app, "anna")
    page = anna.get("/customer/import")
    token = Browser.token_from(page.text)
    response = anna.client.post("/customer/import", data={"csrf_token": token})
    assert response.status_code == 400
    assert "Choose a file" in response.text
    response = upload(anna, b"", "customers.csv")
    assert response.status_code == 400
    assert "The file is empty" in response.text
    response = upload(anna, b"%PDF-1.4", "report.pdf")
    assert response.status_code == 400
    assert "A CSV or XLSX file, please" in response.text
    assert uploads(app) == []


# -- the job ---------------------------------------------------------------------------


def test_three_good_customers_are_queued_imported_and_listed(app: Flask, login: Any) -> None:
    anna = login(app, "anna")
    job_id = queued(upload(anna, GOOD.encode()))
    stored = uploads(app)
    assert len(stored) == 1
    assert re.fullmatch(r"[0-9a-f]{32}\.csv", stored[0].name)  # never the user's name
    assert stored[0].parent == Path(app.instance_path) / "imports"

    page = anna.get(f"/customer/import/{job_id}")
    assert page.status_code == 200
    assert 'class="progress crm-import-progress"' in page.text
    assert 'aria-valuenow="0"' in page.text
    assert "Queued" in page.text
    assert re.search(r'<script src="/static/crm/import.js" nonce="[^"]+"></script>', page.text)
    before = status(anna, job_id)
    assert before["state"] == "pending" and before["finished"] is False
    assert customers(app) == []

    assert run_jobs(app) == 1

    after = status(anna, job_id)
    assert after["state"] == "done" and after["finished"] is True
    assert after["ok"] is True
    assert (after["created"], after["rows"], after["percent"]) == (3, 3, 100)
    assert (after["done"], after["total"]) == (3, 3)
    assert after["errors"] == [] and after["failure"] is None
    anna_id = user_id(app, "anna")
    assert customers(app) == [("Acme", "A", anna_id), ("Borealis", "B", anna_id),
                              ("Cirrus", None, anna_id)]  # fmt: skip
    listed = anna.get("/customer/").text
    for name in ("Acme", "Borealis", "Cirrus"):
        assert name in listed
    done_page = anna.get(f"/customer/import/{job_id}").text
    assert 'aria-valuenow="100"' in done_page
    assert re.search(r'class="crm-import-created">3<', done_page)
    assert 'href="/customer/"' in done_page
    assert uploads(app) == []  # deleted once the job was done
    assert f"#{job_id} customers.csv" in anna.get("/customer/import").text  # her latest imports


def test_the_lists_export_comes_back_in_by_import(app: Flask, login: Any) -> None:
    """The list's export writes the cells of every file of the type (refs by
    key, enums by key), so a user can edit it in a spreadsheet and import it."""
    anna = login(app, "anna")
    queued(upload(anna, GOOD.encode()))
    assert run_jobs(app) == 1
    exported = anna.get("/customer/export.csv?order=name")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    text = exported.data.decode("utf-8")
    assert text.startswith("\ufeffid,Name,")
    job_id = queued(upload(anna, text.encode("utf-8"), "edited.csv"))
    assert run_jobs(app) == 1
    result = status(anna, job_id)
    assert result["ok"] is True and result["created"] == 3, result
    anna_id = user_id(app, "anna")
    assert customers(app)[3:] == [("Acme", "A", anna_id), ("Borealis", "B", anna_id),
                                  ("Cirrus", None, anna_id)]  # fmt: skip


def test_a_bad_row_writes_nothing_and_the_status_lists_line_and_field(
    app: Flask, login: Any
) -> None:
    anna = login(app, "anna")
    job_id = queued(upload(anna, BAD.encode(), "bad.csv"))
    run_jobs(app)
    s = status(anna, job_id)
    # the data was bad, the job was not: done, once, not retried
    assert s["state"] == "done" and s["finished"] is True
    assert s["ok"] is False and s["all_or_nothing"] is True
    assert (s["created"], s["rows"], s["bad_rows"]) == (0, 3, 2)
    assert [(e["line"], e["field"]) for e in s["errors"]] == [(3, "name"), (4, "segment")]
    assert "required" in s["errors"][0]["message"]
    assert customers(app) == []
    page = anna.get(f"/customer/import/{job_id}").text
    assert "Nothing was imported" in page
    assert '<tr class="crm-import-row-error" data-line="4" data-field="segment"><td>4</td>' in page
    outbox = jobs.OUTBOX
    with app.app_context():
        query = sa.select(outbox.c.attempts, outbox.c.state).where(outbox.c.id == job_id)
        row = app.extensions["crm"].db.session.execute(query).one()
    assert tuple(row) == (1, "done")
    assert uploads(app) == []


def test_skipping_bad_rows_imports_the_good_ones(app: Flask, login: Any) -> None:
    anna = login(app, "anna")
    job_id = queued(upload(anna, BAD.encode(), "bad.csv", mode="partial"))
    run_jobs(app)
    s = status(anna, job_id)
    assert s["ok"] is False and s["all_or_nothing"] is False
    assert (s["created"], s["bad_rows"]) == (1, 2)
    assert [n for n, _, _ in customers(app)] == ["Acme"]
    assert "bad rows skipped: 2" in anna.get(f"/customer/import/{job_id}").text


def test_xlsx_works(app: Flask, login: Any) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Name", "Segment"])  # labels do as well as names
    sheet.append(["Acme", "A"])
    sheet.append(["Borealis", "B"])
    buffer = io.BytesIO()
    book.save(buffer)
    anna = login(app, "anna")
    job_id = queued(upload(anna, buffer.getvalue(), "customers.xlsx"))
    assert uploads(app)[0].suffix == ".xlsx"
    run_jobs(app)
    s = status(anna, job_id)
    assert (s["ok"], s["created"]) == (True, 2)
    assert [(n, seg) for n, seg, _ in customers(app)] == [("Acme", "A"), ("Borealis", "B")]


def test_a_file_that_cannot_be_read_is_a_failed_result_not_a_retry(app: Flask, login: Any) -> None:
    anna = login(app, "anna")
    bad_book = queued(upload(anna, b"name\nAcme\n", "customers.xlsx"))
    unknown = queued(upload(anna, b"name,colour\nAcme,red\n", "customers.csv"))
    run_jobs(app)
    s = status(anna, bad_book)
    assert (s["state"], s["ok"]) == ("done", False)
    assert s["failure"] == "the file is not an XLSX workbook"
    s = status(anna, unknown)
    assert s["state"] == "done" and s["ok"] is False
    assert [(e["line"], e["field"]) for e in s["errors"]] == [(1, "colour")]
    assert "The file was not imported: the file is not an XLSX workbook" in (
        anna.get(f"/customer/import/{bad_book}").text
    )
    assert customers(app) == [] and uploads(app) == []


def test_only_who_started_it_or_an_admin_sees_an_import(app: Flask, login: Any) -> None:
    anna = login(app, "anna")
    job_id = queued(upload(anna, GOOD.encode()))
    boris, helen, admin = login(app, "boris"), login(app, "helen"), login(app, "admin")
    for other in (boris, helen):
        assert other.get(f"/customer/import/{job_id}/status").status_code == 404
        assert other.get(f"/customer/import/{job_id}").status_code == 404
        assert f"#{job_id} " not in other.get("/customer/import").text
    assert admin.get(f"/customer/import/{job_id}/status").status_code == 200
    assert admin.get(f"/customer/import/{job_id}").status_code == 200
    # the job under another type, an unknown job, a job that is no import: 404 alike
    assert anna.get(f"/deal/import/{job_id}/status").status_code == 404
    assert anna.get("/customer/import/99999/status").status_code == 404
    assert anna.get("/customer/import/99999999999/status").status_code == 404
    with app.app_context():
        session = app.extensions["crm"].db.session
        email = jobs.enqueue(session, "crm.email", {"to": "a@example.org"})
        session.commit()
    assert anna.get(f"/customer/import/{email}/status").status_code == 404
    # not logged in: the login page, as for every page
    assert app.test_client().get(f"/customer/import/{job_id}/status").status_code == 302


def test_the_job_runs_as_the_user_with_their_rules(app: Flask, login: Any) -> None:
    """Anna's records are hers (the default `current_user` is her); her deal
    may name only customers she may read: Boris's is "not there", as in a form."""
    anna, boris = login(app, "anna"), login(app, "boris")
    queued(upload(boris, b"name\nBoris's client\n"))
    queued(upload(anna, b"name\nAnna's client\n"))
    run_jobs(app)
    assert [(n, m) for n, _, m in customers(app)] == [
        ("Boris's client", user_id(app, "boris")),
        ("Anna's client", user_id(app, "anna")),
    ]
    # a customer's key is its email: these name them by another field
    deals = b"customer.name,amount\nAnna's client,100\nBoris's client,200\n"
    deal = queued(upload(anna, deals, "deals.csv", "deal"), "deal")
    run_jobs(app)
    s = status(anna, deal, "deal")
    assert (s["ok"], s["created"]) == (False, 0)
    assert [(e["line"], e["field"], e["message"]) for e in s["errors"]] == [
        (3, "customer.name", "there is no “Customer” with “Name” (name) `Boris's client`")
    ]
    # the same file as Helen, who reads every customer
    helen = login(app, "helen")
    deal = queued(upload(helen, deals, "deals.csv", "deal"), "deal")
    run_jobs(app)
    assert status(helen, deal, "deal")["created"] == 2


def test_the_users_rules_are_read_when_the_job_runs(app: Flask, login: Any) -> None:
    """A user who lost the right to create between the upload and the run imports nothing."""
    anna = login(app, "anna")
    job_id = queued(upload(anna, GOOD.encode()))
    with app.app_context():
        sm = app.extensions["crm"].appbuilder.sm
        user = sm.find_user(username="anna")
        user.roles = [sm.find_role("viewer")]
        sm.update_user(user)
    run_jobs(app)
    admin = login(app, "admin")
    s = status(admin, job_id)
    assert s["state"] == "done" and s["ok"] is False
    assert s["failure"] == "anna may not create “Customer” records"
    assert customers(app) == []


def test_progress_is_reported_every_batch(
    app: Flask, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer.job, "JOB_BATCH", 2)
    reports: list[tuple[int, Any, Any]] = []
    real = jobs.Runner.progress

    def spy(self: jobs.Runner, job_id: int, done: int, total: Any, message: Any) -> None:
        reports.append((done, total, message))
        real(self, job_id, done, total, message)

    monkeypatch.setattr(jobs.Runner, "progress", spy)
    anna = login(app, "anna")
    rows = "".join(f"Customer {i},,\n" for i in range(5))
    queued(upload(anna, ("name,phone,segment\n" + rows).encode()))
    run_jobs(app)
    if app.extensions["crm"].registry.database.startswith("sqlite"):
        # SQLite: the whole file is checked first, then written a batch at a time
        assert [(d, t) for d, t, _ in reports] == [(0, None), (2, 5), (4, 5), (5, 5),
                                                   (2, 5), (4, 5), (5, 5)]  # fmt: skip
        assert [m for _, _, m in reports[:5]] == [
            "reading the file…", "checked 2 of 5 rows", "checked 4 of 5 rows",
            "checked 5 of 5 rows", "2 of 5 rows",
        ]  # fmt: skip
        return
    assert [(d, t) for d, t, _ in reports] == [(0, None), (2, 5), (4, 5), (5, 5), (5, 5)]
    assert [m for _, _, m in reports[:2]] == ["reading the file…", "2 of 5 rows"]


def test_a_page_saves_while_an_import_runs(
    app: Flask, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user saving a record while a large import runs is not refused with
    "database is locked": on SQLite the import commits a batch at a time."""
    monkeypatch.setattr(transfer.job, "JOB_BATCH", 2)
    anna, boris = login(app, "anna"), login(app, "boris")
    answers: list[tuple[int, str]] = []
    real = jobs.Runner.progress

    def save_meanwhile(self: jobs.Runner, job_id: int, done: int, total: Any, msg: Any) -> None:
        real(self, job_id, done, total, msg)
        if done and not str(msg).startswith("checked") and len(answers) < 2:
            r = boris.api("POST", "/api/v1/customer/", {"name": f"Meanwhile {done}"})
            answers.append((r.status_code, r.get_data(as_text=True)))

    monkeypatch.setattr(jobs.Runner, "progress", save_meanwhile)
    rows = "".join(f"Customer {i},,\n" for i in range(7))
    job_id = queued(upload(anna, ("name,phone,segment\n" + rows).encode()))
    run_jobs(app)
    assert [code for code, _ in answers] == [201, 201], answers
    s = status(anna, job_id)
    assert (s["state"], s["ok"], s["created"]) == ("done", True, 7)
    names = [name for name, _, _ in customers(app)]
    assert len(names) == 9 and "Meanwhile 2" in names and "Meanwhile 4" in names


def test_an_interrupted_import_goes_on_from_its_last_batch(
    app: Flask, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that dies after some batches were committed: the retry writes
    the rest, not the whole file again."""
    if not app.extensions["crm"].registry.database.startswith("sqlite"):
        pytest.skip("PostgreSQL imports in one transaction: a crash writes nothing")
    monkeypatch.setattr(transfer.job, "JOB_BATCH", 2)
    anna = login(app, "anna")
    real = jobs.Runner.progress
    crash = {"at": 4}

    def dies(self: jobs.Runner, job_id: int, done: int, total: Any, msg: Any) -> None:
        real(self, job_id, done, total, msg)
        if done == crash["at"] and not str(msg).startswith("checked"):
            crash["at"] = -1
            raise sa.exc.OperationalError("INSERT", {}, Exception("the worker died"))

    monkeypatch.setattr(jobs.Runner, "progress", dies)
    rows = "".join(f"Customer {i},,\n" for i in range(7)) + "Customer 0,,Z\n"
    job_id = queued(upload(anna, ("name,phone,segment\n" + rows).encode(),
                           mode="partial"))  # fmt: skip
    runner, now = clocked_runner(app)
    runner.drain()
    assert status(anna, job_id)["state"] == "pending"
    assert len(customers(app)) == 4  # two batches committed before it died
    now[0] += dt.timedelta(minutes=5)
    runner.drain()
    s = status(anna, job_id)
    assert (s["state"], s["created"], s["rows"], s["bad_rows"]) == ("done", 7, 8, 1)
    assert [e["line"] for e in s["errors"]] == [9]
    assert [name for name, _, _ in customers(app)] == [f"Customer {i}" for i in range(7)]


def test_a_crash_is_retried_and_the_file_kept_until_the_job_ends(
    app: Flask, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    anna, admin = login(app, "anna"), login(app, "admin")
    job_id = queued(upload(anna, GOOD.encode()))
    calls = {"n": 0}
    real = transfer.import_

    def flaky(*args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise sa.exc.OperationalError("INSERT", {}, Exception("the database went away"))
        return real(*args, **kw)

    monkeypatch.setattr(transfer.job, "import_", flaky)
    runner, now = clocked_runner(app)
    runner.drain()
    s = status(anna, job_id)
    assert s["state"] == "pending"
    assert s["retrying"] == f"the job failed (job #{job_id}); an administrator can see why"
    assert "the database went away" in status(admin, job_id)["retrying"]
    assert len(uploads(app)) == 1  # kept for the next attempt
    now[0] += dt.timedelta(minutes=5)
    runner.drain()
    s = status(anna, job_id)
    assert (s["state"], s["ok"], s["created"]) == ("done", True, 3)
    assert uploads(app) == []


def test_a_dead_import_deletes_its_file(
    app: Flask, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    anna = login(app, "anna")
    job_id = queued(upload(anna, GOOD.encode()))

    def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(transfer.job, "import_", broken)
    runner, now = clocked_runner(app)
    for _ in range(transfer.JOB_ATTEMPTS):
        runner.drain()
        now[0] += dt.timedelta(hours=2)
    s = status(anna, job_id)
    assert (s["state"], s["finished"], s["ok"]) == ("dead", True, False)
    # the exception is for an admin's eyes
    assert s["failure"] == f"the job failed (job #{job_id}); an administrator can see why"
    assert status(login(app, "admin"), job_id)["failure"] == "RuntimeError: a bug"
    assert uploads(app) == []
    assert "The file was not imported: the job failed" in (
        anna.get(f"/customer/import/{job_id}").text
    )


def test_the_job_reads_only_its_own_uploads(app: Flask) -> None:
    """A payload cannot name a file outside the imports folder."""
    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session
        for name in ("../secret_key", "/etc/passwd", "x.csv", None):
            jobs.enqueue(session, transfer.IMPORT_JOB,
                         {"doctype": "Customer", "file": name, "user_id": 1})  # fmt: skip
        session.commit()
        runner = jobs.runner_for(app)
        runner.drain()
        states = session.execute(
            sa.select(jobs.OUTBOX.c.state, jobs.OUTBOX.c.last_error).order_by(jobs.OUTBOX.c.id)
        ).all()
        session.remove()
    assert [tuple(s) for s in states] == [("dead", "the payload names no uploaded file")] * 4


def test_principal_of_reads_roles_and_refuses_inactive_users(app: Flask) -> None:
    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session
        anna = user_id(app, "anna")
        assert transfer.principal_of(session, state.models, anna) == Principal(
            anna, "anna", frozenset({"manager"})
        )
        sm = state.appbuilder.sm
        user = sm.find_user(username="anna")
        user.active = False
        sm.update_user(user)
        assert transfer.principal_of(session, state.models, anna) is None
        assert transfer.principal_of(session, state.models, 99999) is None
        assert transfer.principal_of(session, state.models, "1") is None
        session.remove()


def test_a_managers_import_cannot_set_numbers_or_states_an_admins_can(
    app: Flask, login: Any
) -> None:
    """A deal may be won only by the head of sales: a manager's file cannot
    skip that rule, nor pick the deal's number; the administrator's migration
    of old data may."""
    anna, admin = login(app, "anna"), login(app, "admin")
    queued(upload(anna, b"name,email\nRomashka,buy@romashka.example\n"))
    run_jobs(app)
    deals = "customer,amount,stage,number\nbuy@romashka.example,100,won,D-00042\n"
    job_id = queued(upload(anna, deals.encode(), "deals.csv", resource="deal"), "deal")
    run_jobs(app)
    s = status(anna, job_id, "deal")
    assert s["ok"] is False and s["created"] == 0
    assert sorted((e["line"], e["field"]) for e in s["errors"]) == [(2, "number"), (2, "stage")]
    messages = " ".join(e["message"] for e in s["errors"])
    assert "numbers are given by the CRM" in messages
    assert "new records start as “New”" in messages
    job_id = queued(upload(admin, deals.encode(), "deals.csv", resource="deal"), "deal")
    run_jobs(app)
    s = status(admin, job_id, "deal")
    assert s["ok"] is True and s["created"] == 1
