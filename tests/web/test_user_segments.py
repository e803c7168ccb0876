"""Segments users save from a list: personal or shared, picked on the list,
used by REST, the CSV export, mailings and call lists, each under the
asking user's read rule."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.access import Principal
from engine.documents import Documents
from engine.testing import Client, dispose, make_app

METADATA = """
attributes:
  Customer:
    city: {type: string, max_length: 100, label: {ru: Город, en: City}}
documents:
  Customer:
    list: {columns: [name, city, kind], search: [name], filters: [kind, city, manager]}
"""
USERS = {"admin": ["Admin"], "anna": ["manager"], "boris": ["manager"], "helen": ["sales_head"]}


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Any]:
    made = make_app(tmp_path / "seg", METADATA, layers=("base",), database=db_url, users=USERS,
                    plugins={"mail": {"smtp": {"host": "127.0.0.1", "port": 2525}, "from": "a@b.ru"},
                             "telephony": {}, "simulator": {}})  # fmt: skip
    state = made.extensions["crm"]
    with made.app_context():
        session = state.db.session
        users = state.models.table("User")
        ids = dict(session.execute(sa.select(users.c.username, users.c.id)).tuples().all())
        for who in ("anna", "boris"):
            docs = Documents(state.models, session, ids[who], ["manager"], state.pm, username=who)
            for n, (city, kind) in enumerate(
                [("Kazan", "company"), ("Kazan", "person"), ("Omsk", "company")]
            ):
                docs.create("Customer", {"name": f"{who} {n}", "city": city, "kind": kind,
                                         "email": f"{who}{n}@x.ru", "phone": f"+7912345{len(who)}{n}00"})  # fmt: skip
        session.commit()
    made.config["IDS"] = ids
    yield made
    dispose(made)


def save(client: Client, query: str, label: str, shared: bool = False) -> str:
    """Save the customer list's filter ``query`` from its page; the segment's name."""
    page = client.get(f"/customer/?{query}")
    assert page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, "the list page has a save form"
    data = {"csrf_token": token[1], "label": label, **({"shared": "on"} if shared else {})}
    done = client.client.post(f"/customer/segments/save?{query}", data=data)
    assert done.status_code == 302, done.text
    found = re.search(r"segment=(u\d+)", done.headers["Location"])
    assert found, done.headers["Location"]
    return found[1]


def names(client: Client, query: str) -> list[str]:
    got = client.api("GET", f"/api/v1/customer/?{query}&page_size=100")
    assert got.status_code == 200, got.text
    return sorted(r["name"] for r in got.json["result"])


def test_a_user_saves_a_filter_and_uses_it_everywhere(app: Any) -> None:
    anna, boris, helen = Client(app, "anna"), Client(app, "boris"), Client(app, "helen")
    mine = save(anna, "f_kind=company", "Мои компании")
    # the list page picks it and shows the same records the filter does
    page = anna.get(f"/customer/?segment={mine}").text
    assert f'<option value="{mine}" selected>Мои компании</option>' in page
    assert names(anna, f"segment={mine}") == ["anna 0", "anna 2"]
    # REST, and the CSV export
    csv = anna.get(f"/customer/export.csv?segment={mine}").get_data(as_text=True)
    assert "anna 0" in csv and "anna 2" in csv and "anna 1" not in csv
    # a personal segment is its owner's alone: another user cannot use it anywhere
    assert mine not in boris.get("/customer/").text
    unknown = boris.api("GET", f"/api/v1/customer/?segment={mine}")
    assert unknown.status_code == 400 and "has no segment" in unknown.json["message"]
    assert boris.get(f"/customer/?segment={mine}").status_code == 400
    assert boris.get(f"/customer/export.csv?segment={mine}").status_code == 400
    # an unknown segment is a 400 in REST, never ignored
    bogus = anna.api("GET", "/api/v1/customer/?segment=nosuch")
    assert bogus.status_code == 400 and bogus.json["message"].startswith("`segment`:")
    # a shared one: everyone picks it, each sees only what they may read
    shared = save(anna, "f_kind=company", "Компании (общий)", shared=True)
    assert f'value="{shared}"' in boris.get("/customer/").text
    assert names(boris, f"segment={shared}") == ["boris 0", "boris 2"]
    assert names(helen, f"segment={shared}") == ["anna 0", "anna 2", "boris 0", "boris 2"]
    # only its owner (or an administrator) renames or deletes it
    token = re.search(
        r'name="csrf_token" value="([^"]+)"', boris.get("/customer/?f_kind=person").text
    )
    assert token
    refused = boris.client.post(f"/customer/segments/{shared}",
                                data={"csrf_token": token[1], "action": "delete"})  # fmt: skip
    assert refused.status_code == 302
    assert f'value="{shared}"' in boris.get("/customer/").text
    page = anna.get("/customer/").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    renamed = anna.client.post(f"/customer/segments/{shared}",
                               data={"csrf_token": token[1], "action": "rename", "label": "Юрлица"})  # fmt: skip
    assert renamed.status_code == 302
    assert ">Юрлица</option>" in boris.get("/customer/").text
    gone = anna.client.post(f"/customer/segments/{mine}",
                            data={"csrf_token": token[1], "action": "delete"})  # fmt: skip
    assert gone.status_code == 302
    assert anna.api("GET", f"/api/v1/customer/?segment={mine}").status_code == 400


def test_a_mailing_and_a_call_list_by_a_saved_segment_select_its_records(app: Any) -> None:
    from plugins.mail import delivery
    from plugins.telephony import campaigns

    anna = Client(app, "anna")
    name = save(anna, "f_city=Kazan", "Казань")
    shown = names(anna, f"segment={name}")
    assert shown == ["anna 0", "anna 1"]
    state = app.extensions["crm"]
    ids = app.config["IDS"]
    with app.app_context():
        session = state.db.session
        docs = Documents(state.models, session, ids["anna"], ["manager"], state.pm, username="anna")
        who = Principal(ids["anna"], "anna", frozenset({"manager"}))
        from tests.mail.test_mailing_helpers import make_mailing

        mailing = make_mailing(docs, segment=name)
        insert = delivery.recipients_insert(state.models, mailing, who, docs.now())
        session.execute(insert)
        recipients = state.models.table("MailingRecipient")
        addresses = session.execute(
            sa.select(recipients.c.address).where(recipients.c.mailing_id == mailing.id)
        ).scalars().all()  # fmt: skip
        assert sorted(addresses) == ["anna0@x.ru", "anna1@x.ru"]
        campaign = docs.create("Campaign", {"name": "Обзвон", "segment": name})
        d, spec, _ = campaigns.audience(state.registry, campaign, state.models, who)
        assert d.name == "Customer" and spec == {"city": "Kazan"}
        # boris may not use anna's personal segment for his mailing
        boris = Principal(ids["boris"], "boris", frozenset({"manager"}))
        with pytest.raises(delivery.StartError, match="no segment"):
            delivery.audience(state.registry, state.models, mailing, boris)
        session.rollback()
