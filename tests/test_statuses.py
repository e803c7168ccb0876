"""The status engine: a consultant's stages, transitions and their rules.

Every refusal must say which rule refused and what to do about it; nothing
may be written when a transition is refused; every change of state is in the
history. Runs on SQLite, and on PostgreSQL with CRM_TEST_DATABASE_URL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask_appbuilder import Model
from flask_appbuilder.security.sqla.models import User
from sqlalchemy.orm import Session

from engine.documents import Documents, ValidationFailed
from engine.hookspecs import hookimpl
from engine.models import Models, build
from engine.plugins import make_plugin_manager
from engine.registry import Registry
from engine.statuses import Reason, StatusEngine, TransitionRefused, plan_field

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
CONFIG = "name: Romashka LLC\nlocale: en\nregion: RU\nlayers: []\n"
CRM = """
roles:
  manager:    {label: Manager}
  sales_head: {label: Sales head}
documents:
  Deal:
    title: "{{ name }}"
    fields:
      name:          {type: string, required: true}
      amount:        {type: money}
      planned_close: {type: date}
      loss_reason:   {type: text}
      manager:       {type: ref, to: User, default: current_user}
    statuses:
      field: stage
      initial: new
      states:
        new:           {label: New}
        qualification: {label: Qualification, require: [planned_close]}
        proposal:
          label: Proposal
          require_next: {document: Meeting, min: 1, link: deal}
        won:           {label: Won, final: true, outcome: won}
        lost:          {label: Lost, final: true, outcome: lost, require: [loss_reason]}
      transitions:
        - {from: new, to: qualification}
        - {from: [qualification, proposal], to: [won, lost], roles: [sales_head]}
        - {from: "*", to: lost}
        - {from: qualification, to: proposal, when: "amount > 0"}
        - {from: lost, to: new, roles: [sales_head]}
  Meeting:
    fields:
      deal:   {type: ref, to: Deal, required: true}
      topic:  {type: string}
      starts: {type: datetime}
    views: {calendar: {date: starts}}
  Interest:
    title: "{{ subject }}"
    fields:
      subject: {type: string, required: true}
  Interaction:
    fields:
      interest: {type: ref, to: Interest, required: true}
      due:      {type: date, required: true}
      note:     {type: text}
    statuses:
      initial: planned
      states:
        planned:   {label: Planned}
        done:      {label: Done, final: true, require_next: {document: Interaction, min: 1, link: interest}}
        cancelled: {label: Cancelled, final: true}
      transitions:
        - {from: planned, to: [done, cancelled]}
  Task:
    fields:
      title: {type: string}
    statuses:
      initial: open
      states:
        open:    {label: Open}
        waiting: {label: Waiting}
        closed:  {label: Closed, final: true}
"""


@dataclass
class World:
    registry: Registry
    models: Models
    engine: sa.Engine
    session: Session
    users: dict[str, int]

    def docs(self, user: str = "ivan", pm: Any = None, now: dt.datetime = NOW) -> Documents:
        roles = {"ivan": ["manager"], "olga": ["sales_head"], "admin": ["Admin"]}[user]
        return Documents(self.models, self.session, self.users[user], roles, pm, now, username=user)

    def statuses(self, user: str = "ivan", pm: Any = None) -> StatusEngine:
        return StatusEngine(self.docs(user, pm))

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def add_user(engine: sa.Engine, username: str) -> int:
    """Users come from Flask-AppBuilder's security pages; here straight into ab_user."""
    users = User.__table__
    with engine.begin() as conn:
        return int(
            conn.execute(
                users.insert()
                .values(username=username, first_name=username.title(), last_name="Test",
                        email=f"{username}@romashka.example", active=True)
                .returning(users.c.id)
            ).scalar_one()
        )  # fmt: skip


@pytest.fixture
def world(load_config: Callable[..., Registry], db_url: str) -> Iterator[World]:
    registry = load_config({"crm.yaml": CRM}, CONFIG)
    models = build(registry)
    engine = sa.create_engine(db_url)
    Model.metadata.create_all(engine)
    models.metadata.create_all(engine)
    users = {name: add_user(engine, name) for name in ("ivan", "olga", "admin")}
    session = Session(engine)
    yield World(registry, models, engine, session, users)
    session.close()
    models.dispose()
    engine.dispose()


def refused(call: Callable[[], Any]) -> list[Reason]:
    with pytest.raises(TransitionRefused) as info:
        call()
    return info.value.reasons


def messages(reasons: list[Reason]) -> list[str]:
    return [r.message for r in reasons]


def new_deal(w: World, **values: Any) -> Any:
    return w.docs().create("Deal", {"name": "Greenhouse", **values})


# -- the rules --------------------------------------------------------------------


def test_a_listed_transition_with_its_required_field_moves_the_stage(world: World) -> None:
    deal = new_deal(world)
    st = world.statuses()
    assert st.check("Deal", deal, "qualification") == [
        Reason(
            "require",
            "“Planned close” (planned_close) must be filled in to enter “Qualification” "
            "(qualification)",
            "planned_close",
        )
    ]
    # the transition's form asks for the field and sets it in the same step
    st.apply("Deal", deal.id, "qualification", fields={"planned_close": "2026-04-30"})
    assert deal.stage == "qualification"
    assert deal.planned_close == dt.date(2026, 4, 30)
    assert deal.version == 2


def test_a_transition_that_is_not_listed_is_refused(world: World) -> None:
    deal = new_deal(world)
    assert messages(refused(lambda: world.statuses().apply("Deal", deal, "won"))) == [
        "no transition from “New” (new) to “Won” (won)"
    ]
    assert messages(world.statuses().check("Deal", deal, "new")) == ["it is already “New” (new)"]
    assert messages(world.statuses().check("Deal", deal, "paid")) == [
        "`paid` is not a state of “Deal”"
    ]


def test_roles_of_a_transition_are_named_when_the_user_lacks_them(world: World) -> None:
    deal = new_deal(world, planned_close="2026-04-30")
    world.statuses().apply("Deal", deal, "qualification")
    reasons = refused(lambda: world.statuses("ivan").apply("Deal", deal, "won"))
    assert reasons == [
        Reason("roles", "only these roles may make this move: “Sales head” (sales_head)")
    ]
    assert deal.stage == "qualification"
    world.statuses("olga").apply("Deal", deal, "won")
    assert deal.stage == "won"


def test_an_administrator_bypasses_roles_but_no_other_rule(world: World) -> None:
    deal = new_deal(world, planned_close="2026-04-30")
    admin = world.statuses("admin")
    admin.apply("Deal", deal, "qualification")
    assert messages(admin.check("Deal", deal, "lost")) == [
        "“Loss reason” (loss_reason) must be filled in to enter “Lost” (lost)"
    ]
    admin.apply("Deal", deal, "won")
    assert deal.stage == "won"


def test_a_false_when_is_quoted_and_fields_set_in_the_step_count(world: World) -> None:
    deal = new_deal(world, planned_close="2026-04-30")
    st = world.statuses()
    st.apply("Deal", deal, "qualification")
    assert messages(st.check("Deal", deal, "proposal")) == [
        "the condition `amount > 0` is not met",
        "entering “Proposal” (proposal) needs at least 1 new “Meeting” planned in the "
        "future and linked through “Deal” (deal); 0 given",
    ]
    # nothing is written when refused, not even the fields of the step
    reasons = refused(lambda: st.apply("Deal", deal, "proposal", fields={"amount": 0}))
    assert messages(reasons) == ["the condition `amount > 0` is not met"]
    assert deal.amount is None and not world.session.dirty
    # the condition reads the record as it is about to be
    assert messages(st.check("Deal", deal, "proposal", fields={"amount": 10}, next=[{}])) == []


def test_required_fields_are_checked_after_the_steps_fields(world: World) -> None:
    deal = new_deal(world)
    st = world.statuses()
    reasons = refused(lambda: st.apply("Deal", deal, "lost", fields={"loss_reason": ""}))
    assert reasons == [
        Reason(
            "require",
            "“Loss reason” (loss_reason) must be filled in to enter “Lost” (lost)",
            "loss_reason",
        )
    ]
    with pytest.raises(ValidationFailed) as info:
        st.apply("Deal", deal, "lost", fields={"amount": "lots", "loss_reason": "Too dear"})
    assert info.value.errors == {"amount": "must be a number"}
    st.apply("Deal", deal, "lost", fields={"loss_reason": "Too dear"})
    assert (deal.stage, deal.loss_reason) == ("lost", "Too dear")


# -- the next step must be planned ----------------------------------------------------


def test_require_next_demands_new_documents_planned_in_the_future(world: World) -> None:
    docs = world.docs()
    interest = docs.create("Interest", {"subject": "Winter greenhouse"})
    call = docs.create("Interaction", {"interest": interest.id, "due": "2026-03-02"})
    st = world.statuses()
    assert messages(refused(lambda: st.apply("Interaction", call, "done"))) == [
        "entering “Done” (done) needs at least 1 new “Interaction” planned in the "
        "future and linked through “Interest” (interest); 0 given"
    ]
    past = refused(
        lambda: st.apply("Interaction", call, "done", next=[{"due": "2026-03-01", "note": "call"}])
    )
    assert past == [
        Reason(
            "require_next",
            "the new “Interaction” 1 is planned for 2026-03-01, which is in the past: "
            "“Due” (due) must be in the future",
            "next.0.due",
        )
    ]
    with pytest.raises(ValidationFailed) as info:
        st.apply("Interaction", call, "done", next=[{"note": "call back"}])
    assert info.value.errors == {"next.0.due": "is required"}
    world.session.commit()
    assert world.count("interaction") == 1
    assert call.status == "planned"

    st.apply("Interaction", call, "done", next=[{"due": "2026-03-09", "note": "call back"}])
    world.session.commit()
    assert call.status == "done"
    nxt = world.session.execute(
        sa.select(world.models.cls("Interaction")).where(
            world.models.cls("Interaction").id != call.id
        )
    ).scalar_one()
    # linked to the same interest, and it starts at the beginning
    assert (nxt.interest_id, nxt.status, nxt.due) == (interest.id, "planned", dt.date(2026, 3, 9))
    assert nxt.created_by_id == world.users["ivan"]


VIEWINGS = """
roles: {agent: {}}
documents:
  Customer: {title: "{{ name }}", fields: {name: {type: string, required: true}}}
  Property: {title: "{{ address }}", fields: {address: {type: string, required: true}}}
  Viewing:
    fields:
      buyer:    {type: ref, to: Customer, required: true}
      property: {type: ref, to: Property, required: true}
    statuses:
      initial: planned
      states:
        planned: {}
        held:
          final: true
          require_next:
            document: Interaction
            link: {customer: buyer, object: property, viewing: self}
      transitions: [{from: planned, to: held}]
  Interaction:
    fields:
      customer:   {type: ref, to: Customer, required: true}
      object:     {type: ref, to: Property}
      viewing:    {type: ref, to: Viewing}
      planned_at: {type: datetime, required: true}
      subject:    {type: string}
"""


def test_require_next_maps_fields_that_have_other_names(
    load_config: Callable[..., Registry], db_url: str
) -> None:
    """A viewing refers to its customer through `buyer`, the next interaction
    through `customer`: the link maps one to the other, and `self` is the viewing."""
    registry = load_config({"crm.yaml": VIEWINGS}, CONFIG)
    models = build(registry)
    engine = sa.create_engine(db_url)
    Model.metadata.create_all(engine)
    models.metadata.create_all(engine)
    user = add_user(engine, "ivan")
    with Session(engine) as session:
        docs = Documents(models, session, user, ["Admin"], None, NOW, username="ivan")
        buyer = docs.create("Customer", {"name": "Anna Petrova"})
        other = docs.create("Customer", {"name": "Boris"})
        flat = docs.create("Property", {"address": "Lenina 1"})
        viewing = docs.create("Viewing", {"buyer": buyer.id, "property": flat.id})
        st = StatusEngine(docs)
        assert messages(refused(lambda: st.apply("Viewing", viewing, "held"))) == [
            "entering “held” needs at least 1 new “Interaction” planned in the future "
            "and linked through “Customer” (customer), “Object” (object), “Viewing” (viewing); "
            "0 given"
        ]
        with pytest.raises(ValidationFailed) as info:
            st.apply(
                "Viewing", viewing, "held",
                next=[{"customer": other.id, "planned_at": "2026-03-05T10:00"}],
            )  # fmt: skip
        assert info.value.errors == {"next.0.customer": "is filled in from this “Viewing”"}
        st.apply(
            "Viewing", viewing, "held",
            next=[{"subject": "Call back", "planned_at": "2026-03-05T10:00"}],
        )  # fmt: skip
        session.commit()
        interaction = models.cls("Interaction")
        nxt = session.execute(sa.select(interaction)).scalar_one()
        assert (nxt.customer_id, nxt.object_id, nxt.viewing_id, nxt.subject) == (
            buyer.id, flat.id, viewing.id, "Call back",
        )  # fmt: skip
        assert viewing.status == "held"
    engine.dispose()


def test_the_link_is_filled_in_and_a_calendar_date_is_the_plan(world: World) -> None:
    assert plan_field(world.registry.documents["Meeting"]).name == "starts"  # type: ignore[union-attr]
    deal = new_deal(world, planned_close="2026-04-30", amount=100)
    st = world.statuses()
    st.apply("Deal", deal, "qualification")
    assert refused(lambda: st.apply("Deal", deal, "proposal", next=[{"topic": "Offer"}])) == [
        Reason(
            "require_next",
            "the new “Meeting” 1 needs “Starts” (starts) in the future",
            "next.0.starts",
        )
    ]
    with pytest.raises(ValidationFailed) as info:
        st.apply("Deal", deal, "proposal", next=[{"deal": 999, "starts": "2026-03-03T10:00"}])
    assert info.value.errors == {"next.0.deal": "is filled in from this “Deal”"}
    st.apply(
        "Deal", deal, "proposal",
        next=[{"topic": "Offer", "starts": "2026-03-03T10:00"}, {"starts": NOW + dt.timedelta(days=7)}],
    )  # fmt: skip
    meetings = world.session.execute(sa.select(world.models.cls("Meeting"))).scalars().all()
    assert [(m.deal_id, m.topic) for m in meetings] == [(deal.id, "Offer"), (deal.id, None)]
    assert deal.stage == "proposal"


# -- free statuses and final states ---------------------------------------------------------


def test_free_statuses_allow_any_move_except_out_of_a_final_state(world: World) -> None:
    task = world.docs().create("Task", {"title": "Order seeds"})
    st = world.statuses()
    assert st.allowed_targets("Task", task) == ["waiting", "closed"]
    st.apply("Task", task, "waiting")
    st.apply("Task", task, "open")
    st.apply("Task", task, "closed")
    assert st.allowed_targets("Task", task) == []
    assert refused(lambda: st.apply("Task", task, "open")) == [
        Reason(
            "final",
            "“Closed” (closed) is final: it can be left only through a transition listed from "
            "it, and none leads to “Open” (open)",
        )
    ]


def test_a_final_state_is_left_only_through_a_transition_that_names_it(world: World) -> None:
    deal = new_deal(world, loss_reason="Too dear")
    world.statuses().apply("Deal", deal, "lost")
    # `from: "*"` does not reopen a final state, even for an administrator
    assert [r.rule for r in world.statuses("admin").check("Deal", deal, "won")] == ["final"]
    assert messages(world.statuses("ivan").check("Deal", deal, "new")) == [
        "only these roles may make this move: “Sales head” (sales_head)"
    ]
    world.statuses("olga").apply("Deal", deal, "new")
    assert deal.stage == "new"


def test_allowed_targets_are_the_buttons_a_user_sees(world: World) -> None:
    deal = new_deal(world, amount=10)
    assert world.statuses("ivan").allowed_targets("Deal", deal) == ["qualification", "lost"]
    world.statuses().apply("Deal", deal, "qualification", fields={"planned_close": "2026-05-01"})
    assert world.statuses("ivan").allowed_targets("Deal", deal) == ["proposal", "lost"]
    assert world.statuses("olga").allowed_targets("Deal", deal) == ["proposal", "won", "lost"]


# -- history, hooks and plugin vetoes -----------------------------------------------------------


def test_every_change_of_state_is_in_the_history_newest_first(world: World) -> None:
    deal = new_deal(world, planned_close="2026-04-30")
    world.session.commit()
    StatusEngine(world.docs("ivan", now=NOW + dt.timedelta(hours=1))).apply(
        "Deal", deal, "qualification"
    )
    StatusEngine(world.docs("olga", now=NOW + dt.timedelta(hours=2))).apply("Deal", deal, "won")
    world.session.commit()
    rows = world.statuses().history("Deal", deal.id)
    assert [(r["from"], r["to"], r["by"], r["at"], r["field"]) for r in rows] == [
        ("qualification", "won", "Olga Test", NOW + dt.timedelta(hours=2), "stage"),  # by name
        ("new", "qualification", "Ivan Test", NOW + dt.timedelta(hours=1), "stage"),
        (None, "new", "Ivan Test", NOW, "stage"),
    ]
    assert rows[0]["by_id"] == world.users["olga"]
    assert deal.updated_by_id == world.users["olga"]


class Gatekeeper:
    """A plugin: big deals are won only with a signed contract; it also
    writes down the hooks it hears."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    @hookimpl
    def crm_before_transition(
        self, session: Any, doctype: Any, doc: Any, source: str | None, target: str, user: Any
    ) -> str | None:
        if target == "won" and (doc.amount or 0) > Decimal(1_000_000):
            return "a deal over 1 000 000 needs a signed contract"
        return None

    @hookimpl
    def crm_status_changed(
        self, session: Any, doctype: Any, doc: Any, source: str | None, target: str, user: Any
    ) -> None:
        self.calls.append(("status", doctype.name, source, target, user.username))

    @hookimpl
    def crm_document_updated(
        self, session: Any, doctype: Any, doc: Any, user: Any, changes: dict[str, Any]
    ) -> None:
        self.calls.append(("updated", doctype.name, changes))

    @hookimpl
    def crm_document_created(self, session: Any, doctype: Any, doc: Any, user: Any) -> None:
        self.calls.append(("created", doctype.name))


def test_a_plugin_may_veto_and_hears_every_change(world: World) -> None:
    pm = make_plugin_manager({})[0]
    gate = Gatekeeper()
    pm.register(gate)
    deal = world.docs(pm=pm).create(
        "Deal", {"name": "Big", "amount": 2_000_000, "planned_close": "2026-04-30"}
    )
    StatusEngine(world.docs("ivan", pm)).apply("Deal", deal, "qualification")
    olga = StatusEngine(world.docs("olga", pm))
    veto = [Reason("plugin", "a deal over 1 000 000 needs a signed contract")]
    assert olga.check("Deal", deal, "won") == veto
    assert refused(lambda: olga.apply("Deal", deal, "won")) == veto
    assert deal.stage == "qualification"
    olga.apply("Deal", deal, "lost", fields={"loss_reason": "No contract"})
    assert gate.calls == [
        ("created", "Deal"),
        ("updated", "Deal", {"stage": ("new", "qualification")}),
        ("status", "Deal", "new", "qualification", "ivan"),
        ("updated", "Deal", {"loss_reason": (None, "No contract"), "stage": ("qualification", "lost")}),
        ("status", "Deal", "qualification", "lost", "olga"),
    ]  # fmt: skip
    assert len(world.statuses().history("Deal", deal.id)) == 3
