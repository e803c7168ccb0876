"""Stage logic and optimistic locking as the record page shows them: the
current state, the history, a button per allowed move, the fields and next
steps a move asks for, why a move is refused, and edits that would overwrite
someone else's change."""

from __future__ import annotations

import datetime as dt
import html as htmlmod
import re
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask

SALES = """
roles:
  manager:    {label: Manager}
  sales_head: {label: Head of sales}
documents:
  Customer:
    title: "{{ name }}"
    owner: manager
    fields:
      name:    {type: string, required: true}
      manager: {type: ref, to: User, default: current_user}
    access:
      manager:    {read: own, create: true, update: own}
      sales_head: {read: all, create: true, update: all, delete: true}
  Deal:
    numbering: {prefix: "D-", width: 5}
    title: "{{ number }} {{ customer }}"
    owner: manager
    fields:
      customer: {type: ref, to: Customer, required: true}
      amount:   {type: money}
      manager:  {type: ref, to: User, default: current_user}
      planned_close: {type: date}
      loss_reason: {type: text}
    statuses:
      field: stage
      initial: new
      states:
        new:      {label: New}
        proposal: {label: Proposal, require: [planned_close]}
        followup: {label: Follow-up, require_next: {document: Interaction, min: 1, link: deal}}
        won:      {label: Won, final: true, outcome: won}
        lost:     {label: Lost, final: true, outcome: lost, require: [loss_reason]}
      transitions:
        - {from: new, to: proposal, when: "amount and amount > 0"}
        - {from: proposal, to: won, roles: [sales_head]}
        - {from: proposal, to: followup}
        - {from: "*", to: lost}
    access:
      manager:    {read: own, create: true, update: own}
      sales_head: {read: all, create: true, update: all, delete: true}
  Interaction:
    title: "{{ subject }}"
    owner: manager
    fields:
      subject: {type: string, required: true}
      due:     {type: datetime, required: true}
      deal:    {type: ref, to: Deal}
      manager: {type: ref, to: User, default: current_user}
    access:
      manager:    {read: own, create: true, update: own}
      sales_head: {read: all, create: true, update: all, delete: true}
"""
CONFIG = "name: Sales Ltd\nlocale: en\nregion: RU\nlayers: []\n"


def record_id(response: Any) -> int:
    assert response.status_code == 302, response.text
    return int(response.headers["Location"].rstrip("/").rsplit("/", 1)[1])


def text_of(html: str) -> str:
    return htmlmod.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def moves(html: str) -> dict[str, str]:
    """The move buttons of a record page: target → `post`, `form` or `refused`."""
    state = html.split('class="crm-state"', 1)[1].split('class="crm-actions"', 1)[0]
    out = {}
    for to in re.findall(r'class="crm-move-refused" data-to="(\w+)"', state):
        out[to] = "refused"
    for to in re.findall(r'class="crm-inline crm-move" data-to="(\w+)"', state):
        out[to] = "post"
    for to in re.findall(
        r'<a class="btn btn-default btn-sm crm-transition" data-to="(\w+)"', state
    ):
        out[to] = "form"
    return out


def history(html: str) -> list[str]:
    rows = re.findall(r'<tr class="crm-history-row">(.*?)</tr>', html, re.S)
    return [text_of(r).strip() for r in rows]


def stage_of(app: Flask, deal_id: int) -> str:
    with app.app_context():
        state = app.extensions["crm"]
        t = state.models.table("Deal")
        return str(
            state.db.session.execute(sa.select(t.c.stage).where(t.c.id == deal_id)).scalar_one()
        )


def new_deal(browser: Any, amount: str = "") -> int:
    customer = record_id(browser.post_form("/customer/add", {"name": "Romashka"}))
    return record_id(browser.post_form("/deal/add", {"customer": str(customer), "amount": amount}))


def version_in(html: str) -> str:
    match = re.search(r'name="_version" value="(\d+)"', html)
    assert match, "the form carries no version"
    return match.group(1)


def test_the_record_page_shows_the_state_the_history_and_a_button_per_move(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SALES, CONFIG)
    anna = login(app, "anna")
    deal = new_deal(anna)
    page = anna.get(f"/deal/{deal}").text
    assert re.search(r'crm-current-state" data-state="new">New<', page)
    # no amount yet: the guard refuses Proposal and the page says why
    assert moves(page) == {"proposal": "refused", "lost": "form"}
    refused = page.split('data-to="proposal"', 1)[1].split("</span>", 1)[0]
    assert "the condition `amount and amount &gt; 0` is not met" in refused
    assert "disabled" in refused
    [entry] = history(page)
    assert entry.endswith("Anna Test — → New")
    edit = anna.get(f"/deal/{deal}/edit").text
    anna.post_form(f"/deal/{deal}/edit", {"_version": version_in(edit), "customer": re.search(r'<option value="(\d+)" selected>Romashka', edit).group(1), "amount": "100"})  # type: ignore[union-attr]  # fmt: skip
    page = anna.get(f"/deal/{deal}").text
    assert moves(page) == {"proposal": "form", "lost": "form"}


def test_a_move_that_needs_fields_asks_for_them_in_the_same_step(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SALES, CONFIG)
    anna = login(app, "anna")
    deal = new_deal(anna, "100")
    form = anna.get(f"/deal/{deal}/transition/proposal")
    assert form.status_code == 200
    assert 'name="planned_close"' in form.text and 'data-type="date"' in form.text
    assert 'name="loss_reason"' not in form.text  # only what Proposal requires
    refused = anna.post_form(f"/deal/{deal}/transition/proposal", {})
    assert refused.status_code == 422
    # the field's group, up to the next one (a date's input is a group of its own)
    at_field = refused.text.split('data-field="planned_close"', 1)[1].split('class="form-group', 1)[
        0
    ]
    assert "must be filled in to enter “Proposal” (proposal)" in htmlmod.unescape(at_field)
    assert stage_of(app, deal) == "new"
    done = anna.post_form(f"/deal/{deal}/transition/proposal", {"planned_close": "2030-01-31"})
    assert done.status_code == 302, done.text
    page = anna.get(f"/deal/{deal}").text
    assert 'data-state="proposal">Proposal<' in page
    assert "2030-01-31" in page.split('data-field="planned_close"', 1)[1][:100]
    assert history(page)[0].endswith("Anna Test New → Proposal")  # by name, not login
    assert len(history(page)) == 2


def test_a_refused_move_says_why(crm_app: Callable[..., Flask], login: Callable[..., Any]) -> None:
    app = crm_app(SALES, CONFIG)
    anna = login(app, "anna")
    deal = new_deal(anna, "100")
    anna.post_form(f"/deal/{deal}/transition/proposal", {"planned_close": "2030-01-31"})
    page = anna.get(f"/deal/{deal}").text
    assert moves(page)["won"] == "refused"
    why = "only these roles may make this move: “Head of sales” (sales_head)"
    assert why in htmlmod.unescape(page.split('data-to="won"', 1)[1].split("</span>", 1)[0])
    form = anna.get(f"/deal/{deal}/transition/won")
    assert why in htmlmod.unescape(form.text)
    assert "crm-confirm-transition" not in form.text  # nothing to confirm
    posted = anna.client.post(f"/deal/{deal}/transition/won", data={"csrf_token": anna.csrf})
    assert posted.status_code == 422
    assert why in htmlmod.unescape(posted.text)
    assert stage_of(app, deal) == "proposal"
    # a state the record cannot reach from here at all
    nowhere = anna.get(f"/deal/{deal}/transition/new")
    assert "no transition from “Proposal” (proposal) to “New” (new)" in htmlmod.unescape(
        nowhere.text
    )
    assert anna.get(f"/deal/{deal}/transition/nonsense").status_code == 404


def test_a_move_with_nothing_to_ask_is_one_click(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SALES, CONFIG)
    anna, helen = login(app, "anna"), login(app, "helen")
    deal = new_deal(anna, "100")
    anna.post_form(f"/deal/{deal}/transition/proposal", {"planned_close": "2030-01-31"})
    page = helen.get(f"/deal/{deal}").text
    assert moves(page)["won"] == "post"
    button = page.split('data-to="won"', 1)[1].split("</form>", 1)[0]
    token = re.search(r'name="csrf_token" value="([^"]+)"', button).group(1)  # type: ignore[union-attr]
    response = helen.client.post(
        f"/deal/{deal}/transition/won", data={"csrf_token": token, "_version": version_in(button)}
    )
    assert response.status_code == 302
    page = helen.get(f"/deal/{deal}").text
    assert 'data-state="won">Won<' in page
    assert history(page)[0].endswith("Helen Test Proposal → Won")
    assert moves(page) == {}  # final, and no transition leaves it


def test_a_move_that_needs_a_next_interaction_plans_it_in_the_same_step(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SALES, CONFIG)
    anna = login(app, "anna")
    deal = new_deal(anna, "100")
    anna.post_form(f"/deal/{deal}/transition/proposal", {"planned_close": "2030-01-31"})
    form = anna.get(f"/deal/{deal}/transition/followup").text
    assert 'name="next-0-subject"' in form and 'name="next-0-due"' in form
    assert (
        'type="datetime-local"' in form.split('data-field="next-0-due"', 1)[1].split("</div>", 1)[0]
    )
    assert 'name="next-0-deal"' not in form  # the link is filled in from the deal
    url = f"/deal/{deal}/transition/followup"
    missing = anna.post_form(url, {})
    assert missing.status_code == 422
    assert "needs at least 1 new" in htmlmod.unescape(missing.text)
    past = anna.post_form(url, {"next-0-subject": "Call back", "next-0-due": "2001-01-01T10:00"})
    assert past.status_code == 422
    assert "which is in the past" in htmlmod.unescape(past.text)
    assert 'value="Call back"' in past.text  # what was typed is kept
    assert stage_of(app, deal) == "proposal"
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    done = anna.post_form(url, {"next-0-subject": "Call back", "next-0-due": soon})
    assert done.status_code == 302, done.text
    assert stage_of(app, deal) == "followup"
    with app.app_context():
        state = app.extensions["crm"]
        t = state.models.table("Interaction")
        rows = state.db.session.execute(sa.select(t.c.subject, t.c.deal_id)).all()
    assert [tuple(r) for r in rows] == [("Call back", deal)]


def test_a_next_document_of_no_interest_takes_the_customer_of_the_completed_one(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    """The base Interaction's next one goes into the same Interest; one that
    belongs to no Interest is followed by one of no Interest, for the same
    customer and manager without typing them again."""
    app = crm_app("{}\n", "name: Sales Ltd\nlocale: en\nregion: RU\nlayers: [base]\n")
    anna = login(app, "anna")
    customer = record_id(anna.post_form("/customer/add", {"name": "Romashka"}))
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    call = record_id(anna.post_form("/interaction/add", {
        "kind": "call", "subject": "First call", "planned_at": later, "customer": str(customer)}))  # fmt: skip
    url = f"/interaction/{call}/transition/done"
    posted = anna.post_form(url, {
        "_version": version_in(anna.get(url).text), "result": "Talked", "next-0-kind": "call",
        "next-0-subject": "Call back", "next-0-planned_at": later,
    })  # fmt: skip
    assert posted.status_code == 302, posted.text
    with app.app_context():
        state = app.extensions["crm"]
        t = state.models.table("Interaction")
        rows = state.db.session.execute(
            sa.select(t.c.subject, t.c.customer_id, t.c.interest_id, t.c.status).order_by(t.c.id)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("First call", customer, None, "done"),
        ("Call back", customer, None, "planned"),
    ]


def test_saving_over_a_newer_version_is_refused_and_overwrites_nothing(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SALES, CONFIG)
    anna, helen = login(app, "anna"), login(app, "helen")
    deal = new_deal(anna, "100")
    anna_form = anna.get(f"/deal/{deal}/edit").text
    customer = re.search(r'<option value="(\d+)" selected>Romashka', anna_form).group(1)  # type: ignore[union-attr]
    stale = version_in(anna_form)
    helen_form = helen.get(f"/deal/{deal}/edit").text
    saved = helen.post_form(
        f"/deal/{deal}/edit",
        {"_version": version_in(helen_form), "customer": customer, "amount": "200"},
    )
    assert saved.status_code == 302
    response = anna.post_form(
        f"/deal/{deal}/edit", {"_version": stale, "customer": customer, "amount": "300"}
    )
    assert response.status_code == 409
    message = htmlmod.unescape(
        response.text.split('crm-stale" role="alert">', 1)[1].split("<", 1)[0]
    )
    assert re.search(r"was changed by helen at \d{4}-\d\d-\d\d \d\d:\d\d", message), message
    assert 'value="300"' in response.text  # Anna's typing is not lost
    page = anna.get(f"/deal/{deal}").text
    assert "200.00" in page.split('data-field="amount"', 1)[1][:60]  # Helen's change stands
    # a transition over a stale version is refused alike
    form = anna.get(f"/deal/{deal}/transition/lost").text
    helen.post_form(f"/deal/{deal}/edit", {"_version": version_in(helen.get(f"/deal/{deal}/edit").text), "customer": customer, "amount": "250"})  # fmt: skip
    moved = anna.client.post(
        f"/deal/{deal}/transition/lost",
        data={"csrf_token": anna.csrf, "_version": version_in(form), "loss_reason": "price"},
    )
    assert moved.status_code == 409
    message = htmlmod.unescape(moved.text.split('crm-stale" role="alert">', 1)[1].split("<", 1)[0])
    assert re.search(r"was changed by helen at \d{4}-\d\d-\d\d \d\d:\d\d", message), message
    assert stage_of(app, deal) == "new"


def test_deleting_a_record_changed_meanwhile_is_refused(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    app = crm_app(SALES, CONFIG)
    helen = login(app, "helen")
    customer = record_id(helen.post_form("/customer/add", {"name": "Old name"}))
    page = helen.get(f"/customer/{customer}").text
    delete_form = page.split("crm-confirm", 1)[1].split("</form>", 1)[0]
    edit = helen.get(f"/customer/{customer}/edit").text
    helen.post_form(
        f"/customer/{customer}/edit", {"_version": version_in(edit), "name": "New name"}
    )
    response = helen.client.post(
        f"/customer/{customer}/delete",
        data={"csrf_token": helen.csrf, "_version": version_in(delete_form)},
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/customer/{customer}")
    assert "New name" in helen.get(f"/customer/{customer}").text
    current = version_in(helen.get(f"/customer/{customer}").text.split("crm-confirm", 1)[1])
    gone = helen.client.post(
        f"/customer/{customer}/delete", data={"csrf_token": helen.csrf, "_version": current}
    )
    assert gone.status_code == 302 and gone.headers["Location"].endswith("/customer/")
    assert helen.get(f"/customer/{customer}").status_code == 404


def test_completing_an_interaction_opens_the_next_one_filled_in(
    crm_app: Callable[..., Flask], login: Callable[..., Any]
) -> None:
    """Completing an interaction asks for the next one with the customer, the
    contact person, the Interest and the manager of the completed one filled
    in (named, not by id); the next one is saved with them."""
    app = crm_app("{}\n", "name: Sales Ltd\nlocale: en\nregion: RU\nlayers: [base]\n")
    anna = login(app, "anna")
    customer = record_id(anna.post_form("/customer/add", {"name": "Romashka"}))
    contact = record_id(anna.post_form("/contact_person/add", {
        "customer": str(customer), "name": "Olga Petrova"}))  # fmt: skip
    interest = record_id(anna.post_form("/interest/add", {
        "subject": "Tea for the office", "customer": str(customer)}))  # fmt: skip
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    call = record_id(anna.post_form("/interaction/add", {
        "kind": "call", "subject": "First call", "planned_at": later, "customer": str(customer),
        "contact": str(contact), "interest": str(interest)}))  # fmt: skip
    url = f"/interaction/{call}/transition/done"
    form = anna.get(url)
    assert form.status_code == 200
    picked = dict(re.findall(
        r'name="next-0-(\w+)"[^>]*>\s*<option value=""></option>\s*<option value="(\d+)" selected', form.text))  # fmt: skip
    with app.app_context():
        users = app.extensions["crm"].models.table("User")
        session = app.extensions["crm"].db.session
        me = session.execute(sa.select(users.c.id).where(users.c.username == "anna")).scalar()
    assert picked == {
        "customer": str(customer), "contact": str(contact), "interest": str(interest),
        "manager": str(me),
    }  # fmt: skip
    for name in ("Romashka", "Olga Petrova", "Tea for the office", "Anna Test"):
        assert f"selected>{name}</option>" in form.text, name
    posted = anna.post_form(url, {
        "_version": version_in(form.text), "result": "Talked", "next-0-kind": "call",
        "next-0-subject": "Call back", "next-0-planned_at": later, **{
            f"next-0-{k}": v for k, v in picked.items()},
    })  # fmt: skip
    assert posted.status_code == 302, posted.text
    with app.app_context():
        t = app.extensions["crm"].models.table("Interaction")
        rows = app.extensions["crm"].db.session.execute(
            sa.select(t.c.subject, t.c.customer_id, t.c.contact_id, t.c.interest_id,
                      t.c.manager_id).order_by(t.c.id)
        ).all()  # fmt: skip
    assert tuple(rows[-1]) == ("Call back", customer, contact, interest, me)
    # a link may fill in a new interaction; a record the user may not read stays out
    boris = login(app, "boris")
    his = record_id(boris.post_form("/customer/add", {"name": "Lyutik"}))
    page = anna.get(f"/interaction/add?customer={his}&contact={contact}&subject=Hi")
    assert page.status_code == 200
    customer_input = page.text.split('name="customer"', 1)[1].split("</select>", 1)[0]
    assert "selected" not in customer_input and "Lyutik" not in page.text
    assert f'<option value="{contact}" selected>Olga Petrova</option>' in page.text
    assert 'value="Hi"' in page.text
