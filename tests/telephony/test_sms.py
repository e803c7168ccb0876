"""SMS end to end: the outbox (queued with its job in the caller's
transaction, sent once through the first provider that answers, retried
when the provider fails for now, failed when it refuses for good or the
attempts run out), delivery receipts, the customer's timeline, opt-outs,
the "Send SMS" action and its compose page, and the `sms` channel of
automations."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from engine.api import JobError, StatusEngine, clock, hookimpl
from engine.cli import main
from engine.testing import drain

from .conftest import create, rows, user_id


def later(seconds: float) -> Any:
    moment = clock.now() + dt.timedelta(seconds=seconds)
    return clock.use(lambda: moment)


@pytest.fixture
def app(phone_app: Any) -> Any:
    return phone_app()


def customer(app: Any, phone: str = "+79161234567", **more: Any) -> int:
    return create(app, "Customer", {"name": "Romashka", "phone": phone,
                                    "manager": user_id(app, "manager"), **more})  # fmt: skip


def queue(app: Any, number: str, text: str, doctype: str | None = None, doc_id: int | None = None,
          username: str = "manager") -> int:  # fmt: skip
    from engine.api import Documents
    from plugins.telephony import sms

    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session()
        docs = Documents(state.models, session, user_id(app, username), [username], state.pm,
                         username=username)  # fmt: skip
        about = None
        if doctype is not None:
            d = state.registry.documents[doctype]
            about = (d, session.get(state.models.cls(doctype), doc_id))
        message = sms.queue(docs, number, text, about=about)
        session.commit()
        return int(message.id)


def jobs(app: Any, job: str) -> list[dict[str, Any]]:
    state = app.extensions["crm"]
    with app.app_context():
        result = state.db.session().execute(
            sa.text("SELECT key, state, attempts, last_error FROM crm_outbox WHERE job = :j "
                    "ORDER BY id"), {"j": job}
        )  # fmt: skip
        return [dict(r._mapping) for r in result]


def test_an_sms_about_a_customer_is_sent_delivered_and_kept_on_the_timeline(app: Any) -> None:
    cid = customer(app)
    mid = queue(app, "8 916 123-45-67", "Your order has shipped", "Customer", cid)
    (message,) = rows(app, "SmsMessage")
    assert (message["status"], message["number"], message["customer_id"]) == (
        "queued", "+79161234567", cid,
    )  # fmt: skip
    assert [j["key"] for j in jobs(app, "sms.send")] == [f"sms.send.{mid}"]
    drain(app)
    (message,) = rows(app, "SmsMessage")
    assert (message["status"], message["provider"]) == ("sent", "simulator")
    assert message["provider_id"] == f"sim-sms.send.{mid}"  # the outbox's key is the reference
    assert message["sent_at"] is not None
    (interaction,) = rows(app, "Interaction", customer_id=cid)
    assert (interaction["kind"], interaction["status"]) == ("sms", "done")
    assert "Your order has shipped" in interaction["result"]
    assert message["interaction_id"] == interaction["id"]
    with later(5):
        drain(app)
    (message,) = rows(app, "SmsMessage")
    assert message["status"] == "delivered" and message["delivered_at"] is not None


def test_a_number_the_simulator_cannot_reach_fails_with_the_reason(app: Any) -> None:
    queue(app, "+79160000000", "hello")
    drain(app)
    with later(5):
        drain(app)
    (message,) = rows(app, "SmsMessage")
    assert message["status"] == "failed"
    assert message["error"] == "the simulator cannot reach numbers ending in 000"


def test_receipts_move_forward_only_and_unknown_ids_change_nothing(app: Any) -> None:
    from plugins.telephony import api

    queue(app, "+79161234567", "hi")
    drain(app)
    (message,) = rows(app, "SmsMessage")
    pid = message["provider_id"]

    def receipt(status: str, provider: str = "simulator", ident: str = pid) -> Any:
        with app.app_context():
            session = app.extensions["crm"].db.session()
            found = api.sms_receipt(provider, ident, status, "no such subscriber", session=session)
            session.commit()
            return found.id if found is not None else None

    assert receipt("delivered", ident="nobody") is None
    assert receipt("delivered", provider="smpp") is None  # another provider's id space
    assert receipt("delivered") == message["id"]
    assert receipt("delivered") is None  # a duplicate
    assert receipt("failed") is None  # never back from delivered
    assert rows(app, "SmsMessage")[0]["status"] == "delivered"
    with app.app_context(), pytest.raises(ValueError, match="one of delivered, failed"):
        api.sms_receipt("simulator", pid, "read", session=app.extensions["crm"].db.session())


class Flaky:
    """A provider that fails for now ``failures`` times, then sends."""

    def __init__(self, failures: int = 0, refuse: str | None = None) -> None:
        self.failures, self.refuse, self.calls = failures, refuse, []

    @hookimpl(tryfirst=True)
    def crm_send_sms(self, to: str, text: str, settings: dict[str, Any], key: str) -> str | None:
        self.calls.append((to, text, key))
        if self.refuse:
            raise JobError(self.refuse, retry=False)
        if len(self.calls) <= self.failures:
            raise ConnectionError("the gateway is down")
        return f"flaky-{key}"


def test_a_provider_that_fails_for_now_is_tried_again_and_sends_once(app: Any) -> None:
    flaky = Flaky(failures=2)
    app.extensions["crm"].pm.register(flaky, name="flaky")
    queue(app, "+79161234567", "hi")
    drain(app)
    assert rows(app, "SmsMessage")[0]["status"] == "queued"
    for wait in (60, 600, 3600):
        with later(wait):
            drain(app)
    (message,) = rows(app, "SmsMessage")
    assert (message["status"], message["provider"], message["attempts"]) == ("sent", "flaky", 3)
    assert len(flaky.calls) == 3 and len({key for _, _, key in flaky.calls}) == 1
    with later(7200):
        drain(app)
    assert len(flaky.calls) == 3  # at most one delivery per message


def test_a_permanent_refusal_fails_the_message_with_the_providers_answer(app: Any) -> None:
    app.extensions["crm"].pm.register(Flaky(refuse="400 unknown sender"), name="refuser")
    queue(app, "+79161234567", "hi")
    drain(app)
    (message,) = rows(app, "SmsMessage")
    assert (message["status"], message["error"]) == ("failed", "400 unknown sender")
    assert [j["state"] for j in jobs(app, "sms.send")] == ["done"]


def test_after_the_last_attempt_the_message_is_failed_with_the_last_error(app: Any) -> None:
    from plugins.telephony import sms

    app.extensions["crm"].pm.register(Flaky(failures=100), name="down")
    queue(app, "+79161234567", "hi")
    for i in range(sms.MAX_ATTEMPTS + 1):
        with later(i * 4000):
            drain(app)
    (message,) = rows(app, "SmsMessage")
    assert (message["status"], message["error"]) == ("failed", "the gateway is down")
    assert message["attempts"] == sms.MAX_ATTEMPTS


def test_bad_input_and_opted_out_numbers_are_refused_and_nothing_is_written(app: Any) -> None:
    from engine.api import ValidationFailed

    create(app, "SmsOptOut", {"number": "+79161234567"})
    with pytest.raises(ValidationFailed) as refused:
        queue(app, "8 916 123 45 67", "hi")
    assert refused.value.errors == {"number": "+7 916 123-45-67 has opted out of SMS"}
    with pytest.raises(ValidationFailed) as bad:
        queue(app, "call me", "x" * 1600)
    assert bad.value.errors == {
        "number": "call me is not a phone number",
        "text": "is 1600 characters long: an SMS takes at most 1530 (10 parts)",
    }
    assert rows(app, "SmsMessage") == [] and jobs(app, "sms.send") == []


def test_a_number_that_opts_out_after_queueing_is_not_sent(app: Any) -> None:
    queue(app, "+79161234567", "hi")
    create(app, "SmsOptOut", {"number": "+79161234567"})
    drain(app)
    (message,) = rows(app, "SmsMessage")
    assert (message["status"], message["error"]) == ("failed", "the number has opted out of SMS")


def test_the_size_of_a_text_in_sms_parts() -> None:
    from plugins.telephony.sms import size

    assert size("a" * 160) == size("a" * 160)  # one SMS
    assert (size("a" * 160).segments, size("a" * 161).segments) == (1, 2)
    assert (size("a" * 306).segments, size("a" * 307).segments) == (2, 3)
    assert size("[]" * 40).length == 160  # the extension table takes two each
    assert (size("я" * 70).encoding, size("я" * 70).segments, size("я" * 71).segments) == (
        "UCS-2", 1, 2,
    )  # fmt: skip
    assert size("я" * 134).segments == 2 and size("я" * 135).segments == 3
    assert size("").segments == 0


# --- the compose page ------------------------------------------------------------------------


def test_send_sms_from_a_customer_with_a_template(app: Any, login: Any) -> None:
    cid = customer(app, phone2="+74951234567")
    create(app, "SmsTemplate", {"name": "Reminder", "doctype": "Customer",
                                "text": "Hello, {{ doc.name }}! We are waiting for you."})  # fmt: skip
    create(app, "SmsTemplate", {"name": "Deal news", "doctype": "Deal", "text": "x"})
    client = login(app, "manager")
    page = client.get(f"/customer/{cid}")
    assert f"/telephony/sms?doctype=Customer&amp;id={cid}" in page.text
    compose = client.get(f"/telephony/sms?doctype=Customer&id={cid}")
    assert compose.status_code == 200
    assert (
        "+7 916 123-45-67 · Phone" in compose.text
        and "+7 495 123-45-67 · Second phone" in compose.text
    )
    assert "Reminder" in compose.text and "Deal news" not in compose.text
    (template_id,) = [r["id"] for r in rows(app, "SmsTemplate", name="Reminder")]
    filled = client.get(f"/telephony/sms/template?template={template_id}&doctype=Customer&id={cid}")
    assert filled.json == {"text": "Hello, Romashka! We are waiting for you.", "encoding": "GSM-7",
                           "length": 40, "segments": 1}  # fmt: skip
    sent = client.post_form("/telephony/sms", {"doctype": "Customer", "id": cid,
                                               "number": "+74951234567", "text": filled.json["text"]})  # fmt: skip
    assert sent.status_code == 302 and sent.headers["Location"].endswith(f"/customer/{cid}")
    (message,) = rows(app, "SmsMessage")
    assert (message["number"], message["customer_id"], message["user_id"]) == (
        "+74951234567", cid, user_id(app, "manager"),
    )  # fmt: skip


def test_the_compose_form_refuses_beside_the_field_and_writes_nothing(app: Any, login: Any) -> None:
    cid = customer(app)
    create(app, "SmsOptOut", {"number": "+79161234567"})
    client = login(app, "manager")
    refused = client.post_form("/telephony/sms", {"doctype": "Customer", "id": cid,
                                                  "number": "+79161234567", "text": "hi"})  # fmt: skip
    assert refused.status_code == 422
    assert 'data-error="number">+7 916 123-45-67 has opted out of SMS' in refused.text
    empty = client.post_form("/telephony/sms", {"doctype": "Customer", "id": cid,
                                                "number": "+79161234567", "text": "  "})  # fmt: skip
    assert empty.status_code == 422 and 'data-error="text">is required' in empty.text
    other = client.post_form("/telephony/sms", {"doctype": "Customer", "id": cid,
                                                "number": "+70000000001", "text": "hi"})  # fmt: skip
    assert other.status_code == 422 and "choose one of the record&#39;s numbers" in other.text
    assert rows(app, "SmsMessage") == [] and jobs(app, "sms.send") == []


def test_no_send_sms_without_a_phone_or_for_a_record_one_may_not_read(app: Any, login: Any) -> None:
    bare = create(app, "Customer", {"name": "No phone", "manager": user_id(app, "sales_head")})
    theirs = customer(app, phone="+79165550000")
    head = login(app, "sales_head")
    assert "Send SMS" not in head.get(f"/customer/{bare}").text
    assert "Send SMS" in head.get(f"/customer/{theirs}").text
    client = login(app, "manager")
    # the manager reads only their own customers
    assert client.get(f"/telephony/sms?doctype=Customer&id={bare}").status_code == 404
    assert client.get("/telephony/sms?doctype=SmsMessage&id=1").status_code == 404


def test_a_messages_page_shows_why_it_failed(app: Any, login: Any) -> None:
    app.extensions["crm"].pm.register(Flaky(refuse="400 unknown sender"), name="refuser")
    mid = queue(app, "+79161234567", "hi")
    drain(app)
    resource = app.extensions["crm"].registry.documents["SmsMessage"].resource
    page = login(app, "manager").get(f"/{resource}/{mid}")
    assert page.status_code == 200
    assert "The SMS was not delivered:" in page.text and "400 unknown sender" in page.text


# --- the `sms` channel ----------------------------------------------------------------------

SHIPPED = """
automations:
  order_shipped_sms:
    on: {document: CustomerOrder, status: shipped}
    when: "doc.customer.phone"
    do:
      - notify: {channel: sms, to: customer.phone, template: order_shipped}
  order_confirmed_sms:
    on: {document: CustomerOrder, status: confirmed}
    do:
      - notify: {channel: sms, to: "{{ doc.customer.phone }}", text: "Order {{ doc.number }} is confirmed"}
"""


def _order(app: Any, cid: int, *states: str) -> str:
    from engine.api import Documents

    state = app.extensions["crm"]
    with app.app_context():
        session = state.db.session()
        docs = Documents(state.models, session, user_id(app, "manager"), ["manager"], state.pm,
                         username="manager")  # fmt: skip
        order = docs.create("CustomerOrder", {
            "customer": cid, "lines": [{"product": "Tea", "qty": 2, "price": 150}],
        })  # fmt: skip
        for target in states:
            StatusEngine(docs).apply("CustomerOrder", order, target)
        session.commit()
        return str(order.number)


def test_an_automation_texts_the_client_when_the_order_ships(phone_app: Any) -> None:
    app = phone_app(SHIPPED)
    cid = customer(app)
    create(app, "SmsTemplate", {"name": "order_shipped", "doctype": "CustomerOrder",
                                "text": "Order {{ doc.number }} for {{ doc.total }} has shipped"})  # fmt: skip
    number = _order(app, cid, "confirmed", "shipped")
    drain(app)
    with later(5):
        drain(app)
    texts = {m["text"]: m for m in rows(app, "SmsMessage")}
    assert set(texts) == {f"Order {number} for 300.00 has shipped", f"Order {number} is confirmed"}
    shipped = texts[f"Order {number} for 300.00 has shipped"]
    assert (shipped["status"], shipped["number"], shipped["customer_id"]) == (
        "delivered", "+79161234567", cid,
    )  # fmt: skip
    assert (shipped["doctype"], shipped["provider"]) == ("CustomerOrder", "simulator")
    assert texts[f"Order {number} is confirmed"]["status"] == "delivered"
    assert [i["kind"] for i in rows(app, "Interaction", customer_id=cid)] == ["sms", "sms"]


def test_an_automation_to_an_opted_out_number_keeps_a_failed_message(phone_app: Any) -> None:
    app = phone_app(SHIPPED)
    cid = customer(app)
    create(app, "SmsOptOut", {"number": "+79161234567"})
    _order(app, cid, "confirmed")
    drain(app)
    (message,) = rows(app, "SmsMessage")
    assert (message["status"], message["error"]) == ("failed", "the number has opted out of SMS")
    assert jobs(app, "sms.send") == []


def test_a_missing_template_stops_the_job_with_its_name(phone_app: Any) -> None:
    app = phone_app(SHIPPED)
    _order(app, customer(app), "confirmed", "shipped")
    drain(app)
    dead = [j["last_error"] for j in jobs(app, "notify.sms") if j["state"] == "dead"]
    assert dead == ["there is no active SMS template named 'order_shipped'"]


TO_OWNER = """
automations:
  tell_the_manager:
    on: {document: CustomerOrder, status: confirmed}
    do:
      - notify: {channel: sms, to: owner, text: "Order {{ doc.number }} confirmed"}
"""


def test_users_get_an_sms_at_their_mobile(phone_app: Any) -> None:
    app = phone_app(TO_OWNER)  # the base layer's users have a `mobile`
    state = app.extensions["crm"]
    with app.app_context():
        users = state.models.table("User")
        session = state.db.session()
        session.execute(users.update().where(users.c.username == "manager")
                        .values(mobile="+79031112233"))  # fmt: skip
        session.commit()
    cid = customer(app)
    number = _order(app, cid, "confirmed")
    drain(app)
    (message,) = rows(app, "SmsMessage")
    assert (message["number"], message["text"], message["status"]) == (
        "+79031112233", f"Order {number} confirmed", "sent",
    )  # fmt: skip
    assert message["customer_id"] is None and message["interaction_id"] is None


def _config(folder: Path, plugins: str, automations: str) -> Path:
    folder.mkdir()
    (folder / "config.yaml").write_text(
        f"name: Shop\nlocale: en\nlayers: [base]\nplugins:\n{plugins}", encoding="utf-8"
    )
    (folder / "automations.yaml").write_text(automations, encoding="utf-8")
    return folder


AUTOMATION = (
    "automations:\n"
    "  order_shipped:\n"
    "    on: {document: CustomerOrder, status: shipped}\n"
    "    do:\n"
    '      - notify: {channel: sms, to: customer.phone, text: "{{ doc.number }} shipped"}\n'
)


def test_crm_check_takes_the_sms_channel_with_telephony_and_names_the_plugin_without(
    tmp_path: Path,
) -> None:
    on = _config(tmp_path / "on", "  processes: {}\n  telephony: {}\n  simulator: {}\n", AUTOMATION)
    result = CliRunner().invoke(main, ["check", str(on)])
    assert result.exit_code == 0, result.output
    off = _config(tmp_path / "off", "  processes: {}\n", AUTOMATION)
    result = CliRunner().invoke(main, ["check", str(off)])
    assert result.exit_code == 1
    assert (
        "automations.yaml:5:27: automation `order_shipped`: no enabled plugin delivers the "
        "channel `sms`; the `telephony` plugin delivers it: add `telephony: {}` under `plugins` "
        "in config.yaml"
    ) in result.output


def test_crm_check_says_users_have_no_phone_for_sms(tmp_path: Path) -> None:
    folder = tmp_path / "users"
    folder.mkdir()
    (folder / "config.yaml").write_text(
        "name: Shop\nlocale: en\nlayers: []\nplugins:\n  processes: {}\n  telephony: {}\n",
        encoding="utf-8",
    )
    (folder / "crm.yaml").write_text(
        "documents:\n"
        "  Ticket:\n"
        "    owner: agent\n"
        "    fields:\n"
        "      title: {type: string}\n"
        "      agent: {type: ref, to: User}\n"
        "    statuses: {initial: new, states: {new: {}, done: {final: true}}, "
        "transitions: [{from: new, to: done}]}\n"
        "automations:\n"
        "  done:\n"
        "    on: {document: Ticket, status: done}\n"
        "    do:\n"
        '      - notify: {channel: sms, to: owner, text: "done"}\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["check", str(folder)])
    assert result.exit_code == 1
    assert (
        "crm.yaml:12:36: users have no phone number for `sms`: add `mobile: {type: "
        "phone}` under `attributes: User:`"
    ) in result.output


def test_the_wholesale_config_passes_crm_check() -> None:
    folder = Path(__file__).resolve().parents[2] / "configs" / "wholesale"
    result = CliRunner().invoke(main, ["check", str(folder)])
    assert result.exit_code == 0, result.output
