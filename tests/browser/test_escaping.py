"""Markup typed by users or written in the YAML is shown as text on every
page, never run. The context bypasses the Content-Security-Policy, so the
test checks the escaping itself, not only the CSP behind it."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import Server, expect

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = '"><script>alert(1)</script>'
BOTH = IMG + SCRIPT

# Labels from the YAML carry the payloads too (single-quoted YAML: no escapes).
EVIL = f"""
roles:
  manager:    {{label: Manager}}
  sales_head: {{label: Head of sales}}
documents:
  Customer:
    title: "{{{{ name }}}}"
    owner: manager
    fields:
      name:    {{type: string, required: true}}
      manager: {{type: ref, to: User, default: current_user}}
    access:
      manager: {{read: own, create: true, update: own}}
  Ticket:
    label: 'Ticket {IMG}'
    title: "{{{{ name }}}} / {{{{ customer }}}}"
    owner: manager
    fields:
      name:     {{type: string, required: true, label: 'Name {SCRIPT}'}}
      notes:    {{type: text}}
      email:    {{type: email}}
      kind:     {{type: enum, values: {{a: '{IMG}', b: '{SCRIPT}'}}}}
      customer: {{type: ref, to: Customer}}
      manager:  {{type: ref, to: User, default: current_user}}
      due:      {{type: date}}
      lines:
        type: table
        fields:
          item: {{type: string}}
    statuses:
      field: stage
      initial: open
      states:
        open: {{label: '{IMG}'}}
        done: {{label: '{SCRIPT}', final: true}}
      transitions:
        - {{from: open, to: done}}
    list: {{columns: [name, kind, customer, stage, email, manager], search: [name], filters: [kind, stage]}}
    views: {{kanban: {{by: stage}}, calendar: {{date: due, owner: manager}}}}
    access:
      manager: {{read: own, create: true, update: own}}
"""


def test_markup_in_data_and_labels_is_shown_as_text(serve: Any, new_context: Any) -> None:
    site: Server = serve(EVIL)
    with site.app.app_context():  # a user whose name is markup: owner, history, navbar
        sm = site.app.extensions["crm"].appbuilder.sm
        sm.add_user("mallory", IMG, SCRIPT, "mallory@example.org", [sm.find_role("manager")],
                    "secret")  # fmt: skip
    customer = site.create("mallory", "customer", name=BOTH)
    values = {"name": BOTH, "notes": f"{SCRIPT}\n{IMG}", "kind": "a", "customer": customer,
              "due": "2030-05-15", "lines": [{"item": BOTH}]}  # fmt: skip
    email = f"{SCRIPT}@example.org"
    response = site.as_user("mallory").api(
        "POST", "/api/v1/ticket/", json={**values, "email": email}
    )
    if response.status_code == 422:  # the email type refuses it: fine, one field less
        assert "email" in response.get_json()["errors"]
        email = ""
        ticket = site.create("mallory", "ticket", **values)
    else:
        assert response.status_code == 201, response.get_json()
        ticket = response.get_json()["id"]
    site.transition("mallory", "ticket", ticket, "done")
    second = site.create("mallory", "ticket", **{**values, "kind": "b"})

    context = new_context(bypass_csp=True)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    site.login(page, "mallory")
    page.goto(site.url + "/")
    expect(page.locator(".navbar")).to_contain_text(f"{IMG} {SCRIPT}")

    def no_markup_ran() -> None:
        expect(page.locator("img[src=x]")).to_have_count(0)
        expect(page.locator("script:not([src])", has_text="alert(1)")).to_have_count(0)
        assert dialogs == []

    page.goto(site.url + "/ticket/")
    rows = page.locator(".crm-table-list tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator(".crm-list h2")).to_contain_text(f"Ticket {IMG}")
    row = rows.filter(has=page.locator(f"a[href$='/ticket/{ticket}']"))
    expect(row.locator("td").nth(0)).to_have_text(BOTH)  # name
    expect(row.locator("td").nth(1)).to_have_text(IMG)  # kind's label
    expect(row.locator("td").nth(2)).to_have_text(BOTH)  # the customer's title
    expect(row.locator("td").nth(3)).to_have_text(SCRIPT)  # the state's label
    expect(page.locator(".crm-filters select[name=f_kind] option")).to_contain_text([IMG, SCRIPT])
    no_markup_ran()

    page.goto(f"{site.url}/ticket/{ticket}")
    expect(page.locator(".crm-title")).to_have_text(f"{BOTH} / {BOTH}")
    expect(page.locator(".crm-current-state")).to_have_text(SCRIPT)
    expect(page.locator(".crm-fields dd[data-field=name]")).to_have_text(BOTH)
    expect(page.locator(".crm-fields dd[data-field=notes]")).to_contain_text(SCRIPT)
    expect(page.locator(".crm-fields dd[data-field=kind]")).to_have_text(IMG)
    expect(page.locator(".crm-fields dd[data-field=email]")).to_have_text(email)
    expect(page.locator(".crm-fields dd[data-field=customer]")).to_have_text(BOTH)
    expect(page.locator(".crm-fields dd[data-field=manager]")).to_have_text(f"{IMG} {SCRIPT}")
    expect(page.locator("table.crm-rows[data-field=lines] td")).to_have_text([BOTH])
    expect(page.locator(".crm-fields")).to_contain_text(f"Name {SCRIPT}")  # a field's label
    history = page.locator(".crm-history")
    expect(history).to_contain_text(f"{IMG} → {SCRIPT}")  # the history row, state labels
    no_markup_ran()

    page.goto(f"{site.url}/ticket/{second}/edit")
    expect(page.locator("input[name=name]")).to_have_value(BOTH)
    expect(page.locator("textarea[name=notes]")).to_have_value(f"{SCRIPT}\n{IMG}")
    expect(page.locator("input[name='lines-0-item']")).to_have_value(BOTH)
    expect(page.locator("select[name=kind] option:checked")).to_have_text(SCRIPT)
    picked = page.locator("[data-field=customer] .select2-selection__rendered")
    expect(picked).to_contain_text(BOTH)  # select2 shows the selected title as text
    picked.click()
    expect(page.locator(".select2-container--open .select2-results__option")).to_have_text(
        [BOTH]  # and the titles the server search returns
    )
    page.keyboard.press("Escape")
    no_markup_ran()

    page.goto(site.url + "/ticket/kanban")
    expect(page.locator(".crm-column-head strong")).to_have_text([IMG, SCRIPT])
    expect(page.locator(".crm-card a")).to_have_text([f"{BOTH} / {BOTH}"] * 2)
    expect(page.locator(".crm-card-owner").first).to_have_text(f"{IMG} {SCRIPT}")
    no_markup_ran()

    page.goto(site.url + "/ticket/calendar?date=2030-05-15")
    day = page.locator("td.crm-day[data-date='2030-05-15']")
    expect(day.locator(".crm-entry")).to_have_text([f"{BOTH} / {BOTH}"] * 2)
    expect(day.locator(".crm-owner-count")).to_have_text([f"{IMG} {SCRIPT}: 2"])
    expect(page.locator("select[name=owner]")).to_contain_text(f"{IMG} {SCRIPT}")
    no_markup_ran()

    page.goto(f"{site.url}/ticket/{second}/transition/done")
    expect(page.locator(".crm-transition-form h2")).to_have_text(f"{BOTH} / {BOTH} → {SCRIPT}")
    no_markup_ran()
