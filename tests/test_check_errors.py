"""`crm check` on broken configurations: every problem, where it is, in words.

Each case is a configuration a consultant could plausibly write, with one
mistake (or a few, to show that all of them are reported). The assertion is
on the full list of printed problems, so a case also proves that the mistake
causes no spurious second problem. Cases that need more than YAML strings
(bytes that are not UTF-8, timing, the shipped base layer) follow the table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.errors import MetadataError
from engine.loader import BASE_LAYER, load, shown_path
from engine.plugins import available_plugins
from engine.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted(p for p in (ROOT / "configs").iterdir() if (p / "config.yaml").is_file())
WITH_BASE = "name: Test company\nlocale: en\nlayers: [base]\n"

Problems = Callable[..., list[str]]
Files = dict[str, str]


def case(name: str, files: Files, *expected: str, config: str | None = None) -> object:
    """One broken configuration and every problem `crm check` must print for it."""
    return pytest.param(files, config, list(expected), id=name)


def run_cases(problems_of: Problems, files: Files, config: str | None, expected: list[str]) -> None:
    got = problems_of(files) if config is None else problems_of(files, config=config)
    assert got == expected


# --- YAML itself ------------------------------------------------------------------------

YAML_CASES = [
    case(
        "unclosed_flow_map",
        {
            "deal.yaml": """\
documents:
  Deal:
    fields:
      amount: {type: money
"""
        },
        "deal.yaml:5:1: YAML: the `{` map that starts at line 4 is never closed",
    ),
    case(
        "flow_list_closed_by_brace",
        {"deal.yaml": "documents:\n  Deal:\n    list: {columns: [amount, stage}\n"},
        "deal.yaml:3:35: YAML: expected ',' or ']', but got '}' "
        "(in the `[` list that starts at line 3)",
    ),
    case(
        "bad_indentation",
        {
            "deal.yaml": """\
documents:
  Deal:
    fields:
      amount: {type: money}
     stage: {type: string}
"""
        },
        "deal.yaml:5:6: YAML: this line is not indented like the rest of "
        "the map that starts at line 3",
    ),
    case(
        "colon_in_plain_value",
        {"deal.yaml": "documents:\n  Deal:\n    label: Deal: big one\n"},
        "deal.yaml:3:16: YAML: a `: ` is not allowed here; "
        "put quotes around a value that holds one",
    ),
    case(
        "tab_indentation",
        {"deal.yaml": "documents:\n\tDeal: {}\n"},
        "deal.yaml:2:1: YAML: a tab cannot indent YAML; use spaces",
    ),
    case(
        "two_documents_in_one_file",
        {"deal.yaml": "documents:\n  Deal: {}\n---\nroles: {}\n"},
        "deal.yaml:3:1: YAML: a metadata file holds one document; remove the `---` line",
    ),
    case(
        "duplicate_keys_all_reported_with_both_lines",
        {
            "deal.yaml": """\
documents:
  Deal:
    fields:
      amount: {type: money}
      stage: {type: string, type: enum}
      amount: {type: integer}
"""
        },
        "deal.yaml:5:29: the key `type` appears twice in one map (first at line 5)",
        "deal.yaml:6:7: the key `amount` appears twice in one map (first at line 4)",
    ),
    case(
        "custom_tag",
        {"deal.yaml": "documents:\n  Deal: !include deal_fields.yaml\n"},
        "deal.yaml:2:9: the tag `!include` is not allowed in metadata",
    ),
    case(
        "nothing_but_a_list",
        {"deal.yaml": "- Deal\n- Customer\n"},
        "deal.yaml:1:1: a metadata file must be a map of keys, not a list",
    ),
]


@pytest.mark.parametrize("files, config, expected", YAML_CASES)
def test_yaml_mistakes(
    problems_of: Problems, files: Files, config: str, expected: list[str]
) -> None:
    run_cases(problems_of, files, config, expected)


# --- unknown keys, with hints -----------------------------------------------------------

KEY_CASES = [
    case(
        "unknown_section",
        {"deal.yaml": "document:\n  Deal: {}\n"},
        "deal.yaml:1:1: unknown section `document` (did you mean `documents`?); sections are "
        "documents, attributes, roles, segments, reports, dashboards",
    ),
    case(
        "unknown_document_key",
        {"deal.yaml": "documents:\n  Deal:\n    feilds:\n      amount: {type: money}\n"},
        "deal.yaml:3:5: unknown key `feilds` in the document type `Deal` (did you mean `fields`?)",
    ),
    case(
        "unknown_field_key",
        {
            "deal.yaml": """\
documents:
  Deal:
    fields:
      amount:
        type: money
        requried: true
"""
        },
        "deal.yaml:6:9: unknown key `requried` in the field `Deal.amount` "
        "(did you mean `required`?)",
    ),
    case(
        "unknown_state_key",
        {
            "deal.yaml": """\
documents:
  Deal:
    statuses:
      initial: new
      states:
        new: {lable: New}
"""
        },
        "deal.yaml:6:15: unknown key `lable` in the state `new` of `Deal` (did you mean `label`?)",
    ),
    case(
        "unknown_transition_key",
        {
            "deal.yaml": """\
documents:
  Deal:
    statuses:
      initial: new
      states: {new: {}, won: {final: true}}
      transitions:
        - {from: new, to: won}
        - {from: new, to: won, role: [manager]}
"""
        },
        "deal.yaml:8:32: unknown key `role` in transition 2 of `statuses` of the document type "
        "`Deal` (did you mean `roles`?)",
    ),
    case(
        "unknown_list_key",
        {
            "deal.yaml": """\
documents:
  Deal:
    fields: {amount: {type: money}}
    list: {columns: [amount], serach: [amount]}
"""
        },
        "deal.yaml:4:31: unknown key `serach` in `list` of the document type `Deal` "
        "(did you mean `search`?)",
    ),
    case(
        "unknown_view_and_missing_kanban_by",
        {
            "deal.yaml": """\
documents:
  Deal:
    fields: {kind: {type: enum, values: [a, b]}}
    views:
      kanban: {bye: kind}
      calender: {date: kind}
"""
        },
        "deal.yaml:5:15: `views.kanban` of the document type `Deal` needs `by`",
        "deal.yaml:5:16: unknown key `bye` in `views.kanban` of the document type `Deal` "
        "(did you mean `by`?)",
        "deal.yaml:6:7: unknown key `calender` in `views` of the document type `Deal` "
        "(did you mean `calendar`?)",
    ),
    case(
        "unknown_access_key",
        {
            "deal.yaml": """\
roles: {manager: {}}
documents:
  Deal:
    access:
      manager: {raed: true, create: true}
"""
        },
        "deal.yaml:5:17: unknown key `raed` in the access of `manager` to `Deal` "
        "(did you mean `read`?)",
    ),
    case(
        "unknown_numbering_key",
        {"deal.yaml": "documents:\n  Deal:\n    numbering: {prefix: D-, widht: 6}\n"},
        "deal.yaml:3:16: `numbering` of the document type `Deal` needs `width`",
        "deal.yaml:3:29: unknown key `widht` in `numbering` of the document type `Deal` "
        "(did you mean `width`?)",
    ),
]


@pytest.mark.parametrize("files, config, expected", KEY_CASES)
def test_unknown_keys(
    problems_of: Problems, files: Files, config: str, expected: list[str]
) -> None:
    run_cases(problems_of, files, config, expected)


# --- names ------------------------------------------------------------------------------

NAME_CASES = [
    case(
        "bad_identifiers",
        {
            "deal.yaml": """\
documents:
  Deal:
    fields:
      2nd_phone: {type: phone}
      not: {type: string}
      self: {type: string}
      a_field_name_that_goes_on_and_on_for_far_too_long_x: {type: string}
      loss__reason: {type: text}
"""
        },
        "deal.yaml:4:7: the field name `2nd_phone` must start with a letter and hold only "
        "letters, digits and _",
        "deal.yaml:5:7: the field name `not` is a word of the expression language, where `not` "
        "would not mean this field; choose another name, such as `not_value`",
        "deal.yaml:6:7: the field name `self` is a word of the expression language, where "
        "`self` would not mean this field; choose another name, such as `self_value`",
        "deal.yaml:7:7: the field name `a_field_name_that_goes_on_and_on_for_far_too_long_x` "
        "is longer than 48 characters",
        "deal.yaml:8:7: the field name `loss__reason` must not contain a double underscore",
    ),
    case(
        "bad_type_state_and_role_names",
        {
            "deal.yaml": """\
roles:
  sales-head: {}
documents:
  AbUser: {}
  Deal:
    statuses:
      initial: new
      states: {new: {}, "on hold": {}}
"""
        },
        "deal.yaml:2:3: the role name `sales-head` must start with a letter and hold only "
        "letters, digits and _",
        "deal.yaml:4:3: the document type name `AbUser` would make the table `ab_user`, and "
        "names starting with `ab_` belong to the user accounts; choose another name",
        "deal.yaml:8:25: the state name `on hold` must start with a letter and hold only "
        "letters, digits and _",
    ),
    case(
        "system_field_name",
        {"deal.yaml": "documents:\n  Deal:\n    fields:\n      created_at: {type: datetime}\n"},
        "deal.yaml:4:7: `created_at` is a field every document has; choose another name",
    ),
    case(
        "user_is_built_in",
        {"user.yaml": "documents:\n  User:\n    fields: {phone: {type: phone}}\n"},
        "user.yaml:2:3: `User` is built in: add user attributes under `attributes: User:`",
    ),
]


@pytest.mark.parametrize("files, config, expected", NAME_CASES)
def test_bad_names(problems_of: Problems, files: Files, config: str, expected: list[str]) -> None:
    run_cases(problems_of, files, config, expected)


# --- fields -----------------------------------------------------------------------------


def deal_fields(fields: str) -> Files:
    """A Deal with these fields (lines 4 on) and a Customer to refer to (after them)."""
    return {
        "deal.yaml": "documents:\n  Deal:\n    fields:\n"
        + fields
        + "  Customer:\n    fields: {name: {type: string}}\n"
    }


FIELD_CASES = [
    case(
        "unknown_field_type",
        deal_fields("      amount: {type: moeny}\n"),
        "deal.yaml:4:22: unknown field type `moeny` (did you mean `money`?)",
    ),
    case(
        "ref_to_unknown_type",
        deal_fields("      customer: {type: ref, to: Custmer}\n"),
        "deal.yaml:4:33: `Deal.customer` refers to an unknown type `Custmer` "
        "(did you mean `Customer`?)",
    ),
    case(
        "ref_without_to",
        deal_fields("      customer: {type: ref, required: true}\n"),
        "deal.yaml:4:7: `Deal.customer` is a ref: say what it refers to, e.g. `to: Customer`",
    ),
    case(
        "enum_without_values",
        deal_fields("      kind: {type: enum}\n"),
        "deal.yaml:4:7: the enum `Deal.kind` needs `values`",
    ),
    case(
        "enum_default_not_a_value",
        deal_fields("      kind: {type: enum, values: [typical, manual], default: manul}\n"),
        "deal.yaml:4:62: the default `manul` of `Deal.kind` is not one of its values "
        "(typical, manual) (did you mean `manual`?)",
    ),
    case(
        "enum_values_repeated_and_not_words",
        deal_fields("      kind: {type: enum, values: [a, b, a, [c]]}\n"),
        "deal.yaml:4:41: the enum `Deal.kind`: the value `a` is listed twice",
        "deal.yaml:4:44: the enum `Deal.kind`: a value must be a word or a number",
    ),
    case(
        "defaults_of_the_wrong_type",
        deal_fields(
            "      probability: {type: integer, default: high}\n"
            "      closes: {type: date, default: tomorrow}\n"
            "      code: {type: string, max_length: 3, default: ABCD}\n"
            "      manager: {type: ref, to: Customer, default: current_user}\n"
        ),
        "deal.yaml:4:45: the default `high` of `Deal.probability` must be a whole number",
        "deal.yaml:5:37: the default `tomorrow` of `Deal.closes` must be a date such as 2026-12-31",
        "deal.yaml:6:52: the default `ABCD` of `Deal.code` must be at most 3 characters",
        "deal.yaml:7:51: `Deal.manager`: `current_user` is a default for a ref to User only",
    ),
    case(
        "options_that_do_not_fit_the_type",
        deal_fields(
            "      qty: {type: integer, max_length: 10}\n"
            "      name: {type: string, to: Customer}\n"
            "      vip: {type: boolean, min: 0}\n"
            "      note: {type: text, values: [a, b]}\n"
        ),
        "deal.yaml:4:28: the field `Deal.qty`: `max_length` does not apply to an integer field",
        "deal.yaml:5:28: the field `Deal.name`: `to` does not apply to a string field",
        "deal.yaml:6:28: the field `Deal.vip`: `min` does not apply to a boolean field",
        "deal.yaml:7:26: the field `Deal.note`: `values` does not apply to a text field",
    ),
    case(
        "bad_pattern",
        deal_fields("      inn: {type: string, pattern: '^[0-9{10}$'}\n"),
        "deal.yaml:4:36: the pattern of `Deal.inn` is not a valid regular expression: "
        "unterminated character set at position 1",
    ),
    case(
        "min_above_max",
        deal_fields(
            "      probability: {type: integer, min: 100, max: 0}\n"
            "      qty: {type: decimal, min: 10, max: 2.5}\n"
            "      closes: {type: date, min: 2026-01-01, max: 2025-01-01}\n"
            "      discount: {type: money, min: lots}\n"
        ),
        "deal.yaml:4:41: `Deal.probability`: `min` 100 is above `max` 0",
        "deal.yaml:5:33: `Deal.qty`: `min` 10 is above `max` 2.5",
        "deal.yaml:6:33: `Deal.closes`: `min` 2026-01-01 is above `max` 2025-01-01",
        "deal.yaml:7:36: the `min` `lots` of `Deal.discount` must be a number",
    ),
    case(
        "option_values_of_the_wrong_shape",
        deal_fields(
            "      amount: {type: money, required: yes}\n"
            "      name: {type: string, max_length: 0}\n"
            "      total: {type: money, compute: 5}\n"
        ),
        "deal.yaml:4:39: the field `Deal.amount`: `required` must be true or false",
        "deal.yaml:5:40: the field `Deal.name`: `max_length` must be between 1 and 10000, not 0",
        "deal.yaml:6:37: the field `Deal.total`: `compute` must be text",
    ),
    case(
        "field_written_as_a_word",
        deal_fields("      amount: money\n"),
        "deal.yaml:4:15: write the field as a map, e.g. `amount: {type: money}`",
    ),
    case(
        "tables",
        deal_fields(
            "      lines: {type: table}\n"
            "      parts:\n"
            "        type: table\n"
            "        unique: true\n"
            "        fields:\n"
            "          sub: {type: table, fields: {x: {type: string}}}\n"
        ),
        "deal.yaml:4:14: the table `Deal.lines` needs `fields` for its rows",
        "deal.yaml:7:9: the field `Deal.parts`: `unique` does not apply to a table field",
    ),
    case(
        "ref_where_mistakes",
        {
            "deal.yaml": """\
documents:
  Deal:
    fields:
      other: {type: ref, to: Interest, where: {custmer: customer, amount: manager, stage: {nin: [won, lst]}, subject: nothing}}
      lines:
        type: table
        fields:
          i: {type: ref, to: Interest, where: {customer: customer}}
"""
        },
        "deal.yaml:4:48: `where` of `Deal.other`: `Interest` has no field `custmer` "
        "(did you mean `customer`?)",
        "deal.yaml:4:75: `where` of `Deal.other`: `Interest.amount` is a money field but "
        "`Deal.manager` refers to `User`: they can never be equal",
        "deal.yaml:4:97: the filter of `where` of `Deal.other`: `stage`: `lst` must be one of: "
        "new, in_progress, won, lost",
        "deal.yaml:4:119: `where` of `Deal.other`: `Deal` has no field `nothing`; a value is a "
        "field of `Deal`, or a condition such as `{eq: nothing}` for a constant",
        "deal.yaml:8:47: `Deal.lines.i`: `where` applies to a document's refs, not yet to a "
        "table row's",
        config=WITH_BASE,
    ),
    case(
        "ref_where_shapes",
        {
            "deal.yaml": """\
documents:
  Deal:
    fields:
      s: {type: string, where: {a: b}}
      t: {type: ref, to: Interest, where: [customer]}
"""
        },
        "deal.yaml:4:25: the field `Deal.s`: `where` does not apply to a string field",
        "deal.yaml:5:43: the field `Deal.t`: `where` must be a map of the target's fields to "
        "fields of this record or to conditions, e.g. {customer: customer, stage: {nin: [won, "
        "lost]}}",
        config=WITH_BASE,
    ),
]


@pytest.mark.parametrize("files, config, expected", FIELD_CASES)
def test_field_mistakes(
    problems_of: Problems, files: Files, config: str, expected: list[str]
) -> None:
    run_cases(problems_of, files, config, expected)


# --- statuses ---------------------------------------------------------------------------

#: a Deal with an owner, an Interaction to plan and two roles: statuses start at line 17
STATUS_BASE = """\
roles: {manager: {}, sales_head: {}}
documents:
  Interaction:
    fields:
      planned_at: {type: datetime}
      deal: {type: ref, to: Deal}
      note: {type: string}
  Deal:
    owner: manager
    fields:
      manager: {type: ref, to: User}
      amount: {type: money}
      loss_reason: {type: text}
"""


def statuses(body: str, fields: str = "") -> Files:
    return {"deal.yaml": STATUS_BASE + fields + "    statuses:\n" + body}


STATUS_CASES = [
    case(
        "unknown_initial_state",
        statuses("      initial: nwe\n      states: {new: {}, won: {final: true}}\n"),
        "deal.yaml:15:16: the initial state `nwe` of `Deal` is not one of its states "
        "(did you mean `new`?)",
    ),
    case(
        "transitions_to_and_from_unknown_states_and_roles",
        statuses(
            "      initial: new\n"
            "      states: {new: {}, won: {final: true}}\n"
            "      transitions:\n"
            "        - {from: new, to: wno}\n"
            "        - {from: [new, neww], to: won, roles: [manager, maneger]}\n"
        ),
        "deal.yaml:18:27: a transition of `Deal` goes to an unknown state `wno` "
        "(did you mean `won`?)",
        "deal.yaml:19:24: a transition of `Deal` goes from an unknown state `neww` "
        "(did you mean `new`?)",
        "deal.yaml:19:57: a transition of `Deal` names an unknown role `maneger` "
        "(did you mean `manager`?)",
    ),
    case(
        "require_unknown_field",
        statuses(
            "      initial: new\n"
            "      states:\n"
            "        new: {}\n"
            "        lost: {final: true, outcome: lost, require: [loss_reson]}\n"
        ),
        "deal.yaml:18:54: the state `lost` of `Deal` requires an unknown field `loss_reson` "
        "(did you mean `loss_reason`?)",
    ),
    case(
        "editable_unknown_field",
        statuses(
            "      initial: new\n"
            "      states:\n"
            "        new: {}\n"
            "        lost: {final: true, editable: [loss_reson]}\n"
        ),
        "deal.yaml:18:40: `editable` of the state `lost` of `Deal` names an unknown field "
        "`loss_reson` (did you mean `loss_reason`?)",
    ),
    case(
        "editable_unknown_role_and_field",
        statuses(
            "      initial: new\n"
            "      states:\n"
            "        new: {}\n"
            "        lost: {final: true, editable: {roles: [maneger], fields: [amont]}}\n"
        ),
        "deal.yaml:18:48: `editable` of the state `lost` of `Deal` names an unknown role "
        "`maneger` (did you mean `manager`?)",
        "deal.yaml:18:67: `editable` of the state `lost` of `Deal` names an unknown field "
        "`amont` (did you mean `amount`?)",
    ),
    case(
        "editable_of_a_wrong_kind",
        statuses(
            "      initial: new\n"
            "      states:\n"
            "        new: {}\n"
            "        lost: {final: true, editable: yes please}\n"
        ),
        "deal.yaml:18:39: the state `lost` of `Deal`: `editable` must be true, false, a list "
        "of fields, or {roles: [...], fields: [...]}",
    ),
    case(
        "require_next_unknown_type",
        statuses(
            "      initial: new\n"
            "      states:\n"
            "        new: {}\n"
            "        won: {final: true, require_next: {document: Interacton, link: deal}}\n"
        ),
        "deal.yaml:18:53: `require_next` of the state `won` of `Deal` names an unknown type "
        "`Interacton` (did you mean `Interaction`?)",
    ),
    case(
        "require_next_unknown_link",
        statuses(
            "      initial: new\n"
            "      states:\n"
            "        new: {}\n"
            "        won: {final: true, require_next: {document: Interaction, link: dael}}\n"
        ),
        "deal.yaml:18:72: `require_next` of the state `won` of `Deal`: `Interaction` has no "
        "field `dael` (did you mean `deal`?)",
    ),
    case(
        "require_next_link_not_a_ref",
        statuses(
            "      initial: new\n"
            "      states:\n"
            "        new: {}\n"
            "        won: {final: true, require_next: {document: Interaction, link: note}}\n"
        ),
        "deal.yaml:18:72: `require_next` of the state `won` of `Deal`: `Interaction.note` must "
        "be a ref to `Deal` (or to a type `Deal` refers to); it is a string field",
    ),
    case(
        "outcome_on_a_state_that_is_not_final",
        statuses(
            "      initial: new\n      states:\n        new: {}\n        won: {outcome: won}\n"
        ),
        "deal.yaml:18:24: the state `won` of `Deal` has an outcome, so it must be `final: true`",
    ),
    case(
        "unknown_outcome",
        statuses("      initial: new\n      states:\n        lost: {final: true, outcome: loss}\n"),
        "deal.yaml:17:38: the state `lost` of `Deal`: `outcome` must be one of won, lost, "
        "cancelled, done, not `loss` (did you mean `lost`?)",
    ),
    case(
        "status_field_declared",
        statuses(
            "      field: stage\n      initial: new\n      states: {new: {}}\n",
            fields="      stage: {type: enum, values: [new]}\n",
        ),
        "deal.yaml:14:7: `Deal.stage` holds the status: the engine makes it from "
        "`statuses.states`, do not declare it",
    ),
    case(
        "status_field_with_a_system_name_and_no_initial",
        statuses("      field: created_at\n      states: {new: {}}\n"),
        "deal.yaml:15:7: the statuses of `Deal` need an `initial` state",
        "deal.yaml:15:14: `created_at` is a field every document has; choose another status field",
    ),
    case(
        "owner_not_a_ref_to_user",
        {
            "deal.yaml": """\
documents:
  Deal:
    owner: customer
    fields:
      customer: {type: ref, to: Customer}
  Customer:
    owner: manger
    fields:
      manager: {type: ref, to: User}
"""
        },
        "deal.yaml:3:12: the owner of `Deal` must be a ref to User; `customer` refers to "
        "`Customer`",
        "deal.yaml:7:12: the owner of `Customer` names no field `manger` (did you mean `manager`?)",
    ),
]


#: a viewing refers to its customer through `buyer`; the next interaction through `customer`
VIEWING = """\
documents:
  Customer: {fields: {name: {type: string}}}
  Property: {fields: {address: {type: string}}}
  Interaction:
    fields:
      customer: {type: ref, to: Customer}
      object: {type: ref, to: Property}
      viewing: {type: ref, to: Viewing}
      planned_at: {type: datetime}
  Viewing:
    fields:
      buyer: {type: ref, to: Customer}
      property: {type: ref, to: Property}
      note: {type: text}
    statuses:
      initial: planned
      states:
        planned: {}
"""


def viewing_held(link: str) -> Files:
    """`Viewing` whose state `held` (line 19) demands the next interaction."""
    return {
        "viewing.yaml": VIEWING
        + f"        held: {{final: true, require_next: {{document: Interaction, link: {link}}}}}\n"
    }


REQUIRE_NEXT_WHERE = "`require_next` of the state `held` of `Viewing`: "

STATUS_CASES += [
    case(
        "require_next_link_by_a_name_this_type_does_not_have",
        viewing_held("customer"),
        "viewing.yaml:19:73: " + REQUIRE_NEXT_WHERE + "`Viewing` has no field `customer` to "
        "fill `Interaction.customer` from; `Viewing` refers to `Customer` through `buyer`: "
        "write `link: {customer: buyer}`",
    ),
    case(
        "require_next_link_to_a_type_this_type_does_not_reach",
        {
            "viewing.yaml": viewing_held("customer")["viewing.yaml"].replace(
                "buyer: {type: ref, to: Customer}", "buyer: {type: text}"
            )
        },
        "viewing.yaml:19:73: " + REQUIRE_NEXT_WHERE + "`Viewing` has no field `customer` to "
        "fill `Interaction.customer` from, and `Interaction.customer` refers to `Customer`, "
        "which `Viewing` neither is nor refers to",
    ),
    case(
        "require_next_link_map_with_unknown_fields",
        viewing_held("{custmer: buyer, object: proprety}"),
        "viewing.yaml:19:74: " + REQUIRE_NEXT_WHERE + "`Interaction` has no field `custmer` "
        "(did you mean `customer`?)",
        "viewing.yaml:19:98: " + REQUIRE_NEXT_WHERE + "`Viewing` has no field `proprety` "
        "(did you mean `property`?); write a field of `Viewing` or `self`",
    ),
    case(
        "require_next_link_map_with_refs_to_other_types",
        viewing_held("{customer: property, viewing: self, object: self, planned_at: note}"),
        "viewing.yaml:19:84: " + REQUIRE_NEXT_WHERE + "`Viewing.property` cannot fill "
        "`Interaction.customer`, a ref to `Customer`: it refers to `Property`; `Viewing` refers "
        "to `Customer` through `buyer`: write `link: {customer: buyer}`",
        "viewing.yaml:19:117: " + REQUIRE_NEXT_WHERE + "`self` is the `Viewing` itself, but "
        "`Interaction.object` refers to `Property`; `Viewing` refers to `Property` through "
        "`property`: write `link: {object: property}`",
        "viewing.yaml:19:123: " + REQUIRE_NEXT_WHERE + "`Interaction.planned_at` must be a ref to "
        "`Viewing` (or to a type `Viewing` refers to); it is a datetime field",
    ),
    case(
        "require_next_link_as_a_list",
        viewing_held("[customer, buyer]"),
        "viewing.yaml:19:73: `require_next` of the state `held` of `Viewing`: `link` must be a "
        "field name, or a map of the next document's fields to this one's (or `self`), "
        "e.g. {customer: buyer, property: self}",
    ),
]


@pytest.mark.parametrize("files, config, expected", STATUS_CASES)
def test_status_mistakes(
    problems_of: Problems, files: Files, config: str, expected: list[str]
) -> None:
    run_cases(problems_of, files, config, expected)


# --- lists, forms, views, access -----------------------------------------------------------

#: a Deal with a few fields; settings go from line 9 on
VIEW_BASE = """\
roles: {manager: {}}
documents:
  Deal:
    fields:
      amount: {type: money}
      kind: {type: enum, values: [a, b]}
      note: {type: string}
      manager: {type: ref, to: User}
"""


def deal_with(settings: str) -> Files:
    return {"deal.yaml": VIEW_BASE + settings}


VIEW_CASES = [
    case(
        "list_names_unknown_fields",
        deal_with("    list: {columns: [amount, amont], search: [nte], order: -creatd_at}\n"),
        "deal.yaml:9:30: the list columns of `Deal`: `Deal` has no field `amont` "
        "(did you mean `amount`?)",
        "deal.yaml:9:47: the list search of `Deal`: `Deal` has no field `nte` "
        "(did you mean `note`?)",
        "deal.yaml:9:60: the list order of `Deal` names no field `creatd_at` "
        "(did you mean `created_at`?)",
    ),
    case(
        "list_follows_a_ref_to_an_unknown_field",
        deal_with("    list: {columns: [amount, manager.usrname]}\n"),
        "deal.yaml:9:30: the list columns of `Deal`: `User` has no field `usrname` "
        "(did you mean `username`?)",
    ),
    case(
        "form_names_unknown_and_repeated_fields",
        deal_with(
            "    form:\n"
            "      sections:\n"
            "        - {label: Main, fields: [amount, knd]}\n"
            "        - {label: More, fields: [note, amount]}\n"
        ),
        "deal.yaml:11:42: the form of `Deal` names no field `knd` (did you mean `kind`?)",
        "deal.yaml:12:40: the form of `Deal` shows `amount` twice",
    ),
    case(
        "kanban_by_a_field_that_is_not_an_enum",
        deal_with("    views: {kanban: {by: amount}}\n"),
        "deal.yaml:9:26: the kanban of `Deal` must be an enum or the status field; "
        "`amount` is a money field",
    ),
    case(
        "calendar_date_not_a_date",
        deal_with("    views: {calendar: {date: note, owner: manger}}\n"),
        "deal.yaml:9:30: the calendar date of `Deal` must be a date or datetime field; "
        "`note` is a string field",
        "deal.yaml:9:43: the calendar owner of `Deal` names no field `manger` "
        "(did you mean `manager`?)",
    ),
    case(
        "access_with_an_unknown_role",
        deal_with("    owner: manager\n    access:\n      manger: {read: true}\n"),
        "deal.yaml:11:7: the access of `Deal` names an unknown role `manger` "
        "(did you mean `manager`?)",
    ),
    case(
        "access_own_without_an_owner",
        deal_with("    access:\n      manager: {read: all, update: own}\n"),
        "deal.yaml:10:36: the access of `manager` to `Deal`: `update: own` needs an `owner`, "
        "the field that says whose record it is (e.g. `owner: manager`)",
    ),
    case(
        "access_create_own_and_a_bad_value",
        deal_with("    owner: manager\n    access:\n      manager: {read: yes, create: own}\n"),
        "deal.yaml:11:23: the access of `manager` to `Deal`: `read` must be true, false, own "
        "or all",
    ),
    case(
        "access_create_own",
        deal_with("    owner: manager\n    access:\n      manager: {read: own, create: own}\n"),
        "deal.yaml:11:36: the access of `manager` to `Deal`: `create` is true or false, not own "
        "(a record has no owner before it exists)",
    ),
    case(
        "access_fields_unknown_field_and_level",
        deal_with(
            "    access:\n"
            "      manager: {read: true, fields: {amont: none, note: hidden, kind: read}}\n"
        ),
        "deal.yaml:10:38: the access of `manager` to `Deal`: `Deal` has no field `amont` "
        "(did you mean `amount`?)",
        "deal.yaml:10:57: the access of `manager` to `Deal`: `note` is none, read or write, "
        "not `hidden`",
    ),
    case(
        "access_fields_hide_the_owner_and_the_kanban_columns",
        deal_with(
            "    owner: manager\n"
            "    views: {kanban: {by: kind}}\n"
            "    access:\n"
            "      manager: {read: own, fields: {manager: none, kind: none, note: none}}\n"
        ),
        "deal.yaml:12:46: the access of `manager` to `Deal`: `manager` cannot be hidden: it is "
        "the owner, which says whose record it is; make it `read`",
        "deal.yaml:12:58: the access of `manager` to `Deal`: `kind` cannot be hidden: the "
        "kanban's columns are its values; make it `read`",
    ),
]


@pytest.mark.parametrize("files, config, expected", VIEW_CASES)
def test_view_and_access_mistakes(
    problems_of: Problems, files: Files, config: str, expected: list[str]
) -> None:
    run_cases(problems_of, files, config, expected)


# --- expressions and templates --------------------------------------------------------------


def when(expression: str) -> Files:
    """A transition whose `when` (line 19, column 38) is ``expression``."""
    return statuses(
        "      initial: new\n"
        "      states: {new: {}, won: {final: true}}\n"
        "      transitions:\n"
        f"        - {{from: new, to: won, when: '{expression}'}}\n"
    )


WHEN = "deal.yaml:18:38: `when` of a transition of `Deal`: "

EXPRESSION_CASES = [
    case(
        "a_when_too_long_to_compile",
        when("amount > " + " + ".join(["1"] * 2600)),
        WHEN + "the expression `amount > 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 +…` has 10406 "
        "characters; at most 10000 are allowed",
    ),
    case(
        "malformed_when",
        when("amount > > 0"),
        WHEN + "`amount > > 0` is not a valid expression: unexpected '>'",
    ),
    case(
        "when_with_an_unknown_name",
        when("amout > 0"),
        WHEN + "unknown name `amout` in `amout > 0` (did you mean `amount`?)",
    ),
    case(
        "when_reaching_a_dunder",
        when("amount.__class__.__mro__"),
        WHEN + "`amount.__class__.__mro__` reaches the hidden attribute `__class__`",
        WHEN + "`amount.__class__.__mro__` reaches the hidden attribute `__mro__`",
    ),
    case(
        "when_calling_range",
        when("range(10) | length > 5"),
        WHEN + "`range(10) | length > 5` calls `range`: only days, hours, minutes, today may "
        "be called",
    ),
    case(
        "when_building_a_huge_string",
        when('"a" * 100000000'),
        WHEN + '`"a" * 100000000` would build a value too large',
    ),
    case(
        "compute_with_an_unknown_name",
        deal_fields(
            "      amount: {type: money}\n"
            "      lines:\n"
            "        type: table\n"
            "        fields:\n"
            "          qty: {type: decimal}\n"
            "          price: {type: money}\n"
            "          sum: {type: money, compute: 'qty * prise'}\n"
            "      total: {type: money, compute: 'amout * 2'}\n"
        ),
        "deal.yaml:10:39: `compute` of `Deal.lines.sum`: unknown name `prise` in `qty * prise` "
        "(did you mean `price`?)",
        "deal.yaml:11:37: `compute` of `Deal.total`: unknown name `amout` in `amout * 2` "
        "(did you mean `amount`?)",
    ),
    case(
        "title_with_an_unknown_field",
        deal_with('    title: "{{ kind }} {{ amout }}"\n'),
        "deal.yaml:9:12: the title of `Deal`: unknown name `amout` in "
        "`{{ kind }} {{ amout }}` (did you mean `amount`?)",
    ),
]


@pytest.mark.parametrize("files, config, expected", EXPRESSION_CASES)
def test_expression_mistakes(
    problems_of: Problems, files: Files, config: str, expected: list[str]
) -> None:
    run_cases(problems_of, files, config, expected)


# --- segments and reports ---------------------------------------------------------------------

CUSTOMER = """\
documents:
  Customer:
    fields:
      name: {type: string}
      revenue: {type: money}
      email: {type: email}
      manager: {type: ref, to: User}
"""


def customer_with(sections: str) -> Files:
    return {"customer.yaml": CUSTOMER + sections}


SEGMENT_CASES = [
    case(
        "segment_with_out_of_range_values",
        customer_with(
            "segments:\n"
            "  old:\n"
            "    document: Customer\n"
            "    filter:\n"
            "      created_at: {gte: -99999999d}\n"
            "      id: {lt: 2147483648}\n"
        ),
        "customer.yaml:12:25: the filter of the segment `old`: `created_at`: `-99999999d` is too "
        "far from today: a relative date goes at most 1000 years back or ahead",
        "customer.yaml:13:16: the filter of the segment `old`: `id`: `2147483648` is not a record "
        "id (at most 2147483647)",
    ),
    case(
        "segment_of_an_unknown_type",
        customer_with("segments:\n  vip: {document: Custmer, filter: {revenue: {gte: 100}}}\n"),
        "customer.yaml:9:19: the segment `vip` is of an unknown type `Custmer` "
        "(did you mean `Customer`?)",
    ),
    case(
        "segment_filter_mistakes",
        customer_with(
            "segments:\n"
            "  vip:\n"
            "    document: Customer\n"
            "    filter:\n"
            "      revenu: {gte: 1000}\n"
            "      revenue: {gtee: 1000}\n"
            "      email: {set: maybe}\n"
            "      manager.usrname: ivanov\n"
        ),
        "customer.yaml:12:7: the filter of the segment `vip`: `Customer` has no field `revenu` "
        "(did you mean `revenue`?)",
        "customer.yaml:13:17: the filter of the segment `vip`: unknown operator `gtee` "
        "(did you mean `gte`?); operators are eq, ne, lt, lte, gt, gte, in, nin, contains, set, "
        "between",
        "customer.yaml:14:20: the filter of the segment `vip`: `set` takes true or false, "
        "not `maybe`",
        "customer.yaml:15:7: the filter of the segment `vip`: `User` has no field `usrname` "
        "(did you mean `username`?)",
    ),
    case(
        "segment_filter_value_of_the_wrong_type",
        customer_with("segments:\n  big: {document: Customer, filter: {revenue: {gte: abc}}}\n"),
        "customer.yaml:9:53: the filter of the segment `big`: `revenue`: `abc` must be a number",
    ),
    case(
        "segment_filter_values_of_the_wrong_kind",
        customer_with(
            "segments:\n"
            "  big:\n"
            "    document: Customer\n"
            "    filter:\n"
            "      name: {gt: 5}\n"
            "      email: {in: [true]}\n"
            "      revenue: {between: [false, 100]}\n"
            "reports:\n"
            "  recent: {type: table, document: Customer, filter: {manager.active: {gt: true}}, by: manager}\n"
        ),
        "customer.yaml:12:18: the filter of the segment `big`: `name` is a string field and "
        "takes text, not the number `5`",
        "customer.yaml:13:19: the filter of the segment `big`: `email` is an email field and "
        "takes text, not the yes/no value `true`",
        "customer.yaml:14:26: the filter of the segment `big`: `revenue` is a money field and "
        "takes a number, not the yes/no value `false`",
        "customer.yaml:16:75: the filter of the report `recent`: `gt` does not apply to the "
        "boolean field `manager.active`",
    ),
    case(
        "segment_without_a_filter",
        customer_with("segments:\n  everyone: {document: Customer}\n"),
        "customer.yaml:9:13: the segment `everyone` needs `filter`",
    ),
    case(
        "report_of_an_unknown_type_and_document",
        customer_with("reports:\n  sales: {type: funel, document: Custmer}\n"),
        "customer.yaml:9:17: the report `sales` has an unknown type `funel` "
        "(did you mean `funnel`?); types are abc_xyz, by_department, by_manager, conversion, "
        "forecast, funnel, loss_reasons, plan_fact, quality, sources, stage_time, stale, table, "
        "won_lost",
        "customer.yaml:9:34: the report `sales` is of an unknown document type `Custmer` "
        "(did you mean `Customer`?)",
    ),
    case(
        "report_by_unknown_fields",
        customer_with(
            "reports:\n"
            "  by_manager:\n"
            "    type: table\n"
            "    document: Customer\n"
            "    date: creatd_at\n"
            "    by: [manager, managr, manager.departmnt]\n"
        ),
        "customer.yaml:12:11: the report `by_manager`, `date`: `Customer` has no field "
        "`creatd_at` (did you mean `created_at`?)",
        "customer.yaml:13:19: the report `by_manager`, `by`: `Customer` has no field `managr` "
        "(did you mean `manager`?)",
        "customer.yaml:13:27: the report `by_manager`, `by`: `User` has no field `departmnt`",
    ),
    case(
        "process_without_the_processes_plugin",
        customer_with("processes:\n  onboarding: {document: Customer}\n"),
        "customer.yaml:8:1: the section `processes` needs the `processes` plugin: "
        "add `processes: {}` under `plugins` in config.yaml",
    ),
]


@pytest.mark.parametrize("files, config, expected", SEGMENT_CASES)
def test_segment_and_report_mistakes(
    problems_of: Problems, files: Files, config: str, expected: list[str]
) -> None:
    run_cases(problems_of, files, config, expected)


# --- layers -------------------------------------------------------------------------------------

EARLIER = """\
documents:
  Deal:
    fields:
      amount: {type: money, required: true}
      name: {type: string, max_length: 100}
      kind: {type: enum, values: [a, b]}
    statuses: {initial: new, states: {new: {}, won: {final: true}}}
"""


def later_fields(fields: str) -> str:
    """A later layer's file that extends fields of `Deal` (they start on line 4)."""
    return "documents:\n  Deal:\n    fields:\n" + fields


LAYER_CASES = [
    case(
        "later_layer_changes_a_type",
        {"a.yaml": EARLIER, "b.yaml": later_fields("      amount: {type: integer}\n")},
        "b.yaml:4:22: a layer may not change the type of `Deal.amount` from `money` "
        "(defined at a.yaml:4:7) to `integer`",
    ),
    case(
        "later_layer_changes_a_type_and_gives_values",
        {
            "a.yaml": EARLIER,
            "b.yaml": later_fields(
                "      name: {type: enum, values: [x, y]}\n"
                "      kind: {type: string, values: [c]}\n"
            ),
        },
        "b.yaml:4:20: a layer may not change the type of `Deal.name` from `string` "
        "(defined at a.yaml:5:7) to `enum`",
        "b.yaml:5:20: a layer may not change the type of `Deal.kind` from `enum` "
        "(defined at a.yaml:6:7) to `string`",
    ),
    case(
        "later_layer_gives_values_to_a_string_without_its_type",
        {"a.yaml": EARLIER, "b.yaml": later_fields("      name: {values: [x, y]}\n")},
        "b.yaml:4:14: the field `Deal.name` (defined at a.yaml:5:7): `values` does not apply "
        "to a string field",
    ),
    case(
        "attribute_that_already_exists",
        {
            "a.yaml": EARLIER,
            "b.yaml": "attributes:\n  Deal:\n    region: {type: string}\n"
            "    kind: {type: enum, values: [c]}\n",
        },
        "b.yaml:4:5: `Deal.kind` is already defined at a.yaml:6:7; `attributes` adds new fields "
        "only: to extend it, write `documents: {Deal: {fields: {kind: {...}}}}`",
    ),
    case(
        "later_layer_removes_a_field",
        {"a.yaml": EARLIER, "b.yaml": later_fields("      amount: ~\n")},
        "b.yaml:4:7: a layer may not remove the field `Deal.amount` (defined at a.yaml:4:7); "
        "hide it with `hidden: true` instead",
    ),
    case(
        "later_layer_relaxes_required",
        {
            "a.yaml": EARLIER,
            "b.yaml": later_fields("      amount: {type: money, required: false}\n"),
        },
        "b.yaml:4:29: a layer may make `Deal.amount` `required` but not undo it "
        "(set at a.yaml:4:39)",
    ),
    case(
        "later_layer_changes_max_length",
        {
            "a.yaml": EARLIER,
            "b.yaml": "documents:\n  Deal:\n    fields:\n"
            "      name: {type: string, max_length: 50}\n",
        },
        "b.yaml:4:28: a layer may not change `max_length` of `Deal.name` from `100` "
        "(set at a.yaml:5:40) to `50`",
    ),
    case(
        "later_layer_changes_the_initial_state",
        {
            "a.yaml": EARLIER,
            "b.yaml": "documents:\n  Deal:\n    statuses: {initial: won, states: {lost: {}}}\n",
        },
        "b.yaml:3:25: a layer may not change `statuses.initial` of `Deal` from `new` "
        "(set at a.yaml:7:25) to `won`",
    ),
    case(
        "attributes_for_an_unknown_type",
        {"a.yaml": EARLIER, "b.yaml": "attributes:\n  Dael:\n    region: {type: string}\n"},
        "b.yaml:2:3: attributes for an unknown document type `Dael` (did you mean `Deal`?)",
    ),
    case(
        "a_broken_type_is_not_also_reported_unknown",
        {
            "a.yaml": "documents:\n  Deal:\n    feilds: {}\n",
            "b.yaml": "attributes:\n  Deal:\n    region: {type: string}\n",
        },
        "a.yaml:3:5: unknown key `feilds` in the document type `Deal` (did you mean `fields`?)",
    ),
    case(
        "built_in_user_field_as_an_attribute",
        {"user.yaml": "attributes:\n  User:\n    email: {type: string}\n"},
        "user.yaml:3:5: `User.email` is built into the engine; `attributes` adds new fields only",
    ),
    case(
        "built_in_user_field_under_documents",
        {"user.yaml": "documents:\n  User:\n    fields: {email: {label: Mail}}\n"},
        "user.yaml:2:3: `User` is built in: add user attributes under `attributes: User:`",
    ),
]


@pytest.mark.parametrize("files, config, expected", LAYER_CASES)
def test_layer_mistakes(
    problems_of: Problems, files: Files, config: str, expected: list[str]
) -> None:
    run_cases(problems_of, files, config, expected)


def test_a_later_layer_may_add_values_states_and_transitions(
    load_config: Callable[..., Registry],
) -> None:
    later = """\
documents:
  Deal:
    fields:
      kind: {type: enum, values: [c], required: true, index: true}
      amount: {type: money, label: {ru: Сумма}}
      name: {required: true}
    statuses:
      states: {lost: {final: true}}
      transitions: [{from: new, to: [won, lost]}]
"""
    registry = load_config({"a.yaml": EARLIER, "b.yaml": later})
    deal = registry.documents["Deal"]
    assert list(deal.fields["kind"].values) == ["a", "b", "c"]
    assert deal.fields["kind"].required and deal.fields["kind"].index
    assert deal.fields["name"].required and deal.fields["name"].max_length == 100
    assert deal.fields["amount"].label.texts == {"": "Amount", "ru": "Сумма"}
    assert deal.statuses is not None and list(deal.statuses.states) == ["new", "won", "lost"]


def test_base_layer_field_type_change_names_both_files(problems_of: Problems) -> None:
    got = problems_of(
        {"deal.yaml": later_fields("      amount: {type: integer}\n")}, config=WITH_BASE
    )
    base = shown_path(BASE_LAYER / "deal.yaml")
    assert got == [
        "deal.yaml:4:22: a layer may not change the type of `Deal.amount` from `money` "
        f"(defined at {base}:11:7) to `integer`"
    ]


def test_base_layer_field_removed(problems_of: Problems) -> None:
    got = problems_of(
        {"customer.yaml": "documents:\n  Customer:\n    fields:\n      inn: ~\n"},
        config=WITH_BASE,
    )
    base = shown_path(BASE_LAYER / "customer.yaml")
    assert got == [
        "customer.yaml:4:7: a layer may not remove the field `Customer.inn` "
        f"(defined at {base}:9:7); hide it with `hidden: true` instead"
    ]


def test_an_attribute_of_the_base_layer_is_refused(problems_of: Problems) -> None:
    """A field the base layer has is extended under `documents:`, never merged silently."""
    got = problems_of(
        {"customer.yaml": "attributes:\n  Customer:\n    source: {type: enum, values: [fair]}\n"},
        config=WITH_BASE,
    )
    base = shown_path(BASE_LAYER / "customer.yaml")
    assert got == [
        f"customer.yaml:3:5: `Customer.source` is already defined at {base}:15:7; `attributes` "
        "adds new fields only: to extend it, write "
        "`documents: {Customer: {fields: {source: {...}}}}`"
    ]


def test_a_base_field_and_a_user_attribute_are_extended_under_documents(
    load_config: Callable[..., Registry],
) -> None:
    later = """\
documents:
  Customer:
    fields:
      source: {values: [fair], required: true}
  User:
    fields:
      department: {required: true}
"""
    registry = load_config({"later.yaml": later}, config=WITH_BASE)
    source = registry.documents["Customer"].fields["source"]
    assert "fair" in source.values and "website" in source.values and source.required
    assert registry.documents["User"].fields["department"].required


# --- config.yaml -------------------------------------------------------------------------------

CONFIG_CASES = [
    case(
        "missing_environment_variable",
        {},
        "config.yaml:4:11: the environment variable `NOPE` is not set",
        config="name: Test\nlayers: []\nplugins: {}\ndatabase: ${NOPE}\n",
    ),
    case(
        "the_session_key_in_the_name",
        {},
        "config.yaml:1:7: `CRM_SECRET_KEY` signs the sessions: config.yaml cannot read it",
        config='name: "${CRM_SECRET_KEY}"\nlayers: []\n',
    ),
    case(
        "a_secret_where_users_read_it",
        {},
        "config.yaml:1:7: `SMTP_PASSWORD` looks like a secret and `name` may be shown to users: "
        "config.yaml reads a secret only in `database` and the plugins' settings",
        "config.yaml:3:15: `API_TOKEN` looks like a secret and `settings` may be shown to users: "
        "config.yaml reads a secret only in `database` and the plugins' settings",
        config="name: Acme ${SMTP_PASSWORD}\nlayers: []\nsettings: {x: '${API_TOKEN}'}\n",
    ),
    case(
        "the_session_key_even_in_a_plugin_s_settings",
        {},
        "config.yaml:3:31: `CRM_SECRET_KEY` signs the sessions: config.yaml cannot read it",
        config="name: Test\nlayers: []\nplugins: {telephony: {secret: '${CRM_SECRET_KEY}'}}\n",
    ),
    case(
        "config_with_a_limit_out_of_range",
        {},
        "config.yaml:3:23: `limits` of config.yaml: `text_length` must be between 1 and "
        "10000000, not 0",
        config="name: Test\nlayers: []\nlimits: {text_length: 0}\n",
    ),
    case(
        "config_without_a_name",
        {},
        "config.yaml:1:1: config.yaml needs `name`",
        config="locale: en\nlayers: []\n",
    ),
    case(
        "config_with_unknown_keys_and_values",
        {},
        "config.yaml:2:9: config.yaml: `locale` must be one of ru, en, not `de`",
        "config.yaml:3:1: unknown key `layer` in config.yaml (did you mean `layers`?)",
        config="name: Test\nlocale: de\nlayer: [base]\n",
    ),
    case(
        "config_with_an_unknown_layer",
        {},
        "config.yaml:2:9: unknown layer `bse`: layers are `base` and the plugins'",
        config="name: Test\nlayers: [bse]\n",
    ),
    case(
        "plugin_settings_not_a_map",
        {},
        "config.yaml:4:14: the settings of the plugin `processes` must be a map, "
        "e.g. `processes: {}`",
        config="name: Test\nlayers: []\nplugins:\n  processes: yes\n",
    ),
]


@pytest.mark.parametrize("files, config, expected", CONFIG_CASES)
def test_config_mistakes(
    problems_of: Problems, files: Files, config: str, expected: list[str]
) -> None:
    run_cases(problems_of, files, config, expected)


def test_unknown_plugin_with_a_hint(problems_of: Problems) -> None:
    installed = ", ".join(sorted(available_plugins()))
    got = problems_of({}, config="name: Test\nlayers: []\nplugins:\n  telephny: {}\n")
    assert got == [
        "config.yaml:4:3: unknown plugin `telephny` (did you mean `telephony`?); "
        f"installed: {installed}"
    ]


def test_environment_references_are_read_in_config_yaml_only(problems_of: Problems) -> None:
    """A label is shown to every user as written: `${CRM_SECRET_KEY}` in metadata
    is a problem, not the key; config.yaml reads variables, secrets where no user sees them."""
    env = {"CRM_SECRET_KEY": "k3y", "COMPANY": "Acme", "DB_PASSWORD": "pw", "AMI_SECRET": "s"}
    got = problems_of(
        {
            "deal.yaml": """\
            documents:
              Deal:
                label: "${CRM_SECRET_KEY}"
                fields:
                  name: {type: string, help: "see ${COMPANY}"}
            """
        },
        config="name: ${COMPANY}\nlayers: []\ndatabase: 'sqlite:///${DB_PASSWORD}.db'\n"
        "plugins: {telephony: {}, simulator: {}, mail: {smtp: {host: h, password: '${AMI_SECRET}'}}}\n",
        env=env,
    )
    assert got == [
        "deal.yaml:3:12: environment references (`${CRM_SECRET_KEY}`) belong in config.yaml, "
        "not in metadata",
        "deal.yaml:5:34: environment references (`${COMPANY}`) belong in config.yaml, "
        "not in metadata",
    ]
    assert "k3y" not in "\n".join(got)


def test_config_yaml_reads_its_variables(make_config: Callable[..., Path]) -> None:
    folder = make_config(
        {},
        "name: ${COMPANY}\nlayers: []\ndatabase: 'sqlite:///${DB_PASSWORD}.db'\n"
        "plugins: {mail: {smtp: {host: h, password: '${AMI_SECRET}'}}}\n",
    )
    env = {"COMPANY": "Acme", "DB_PASSWORD": "pw", "AMI_SECRET": "s3"}
    registry = load(folder, env=env)
    assert registry.name == "Acme"
    assert registry.database.endswith("/pw.db")
    assert registry.plugin_yaml["mail"][0]["smtp"]["password"] == "s3"


def test_a_value_from_the_environment_is_not_in_the_message(problems_of: Problems) -> None:
    """A wrong setting is named by its `${NAME}`, never by the secret it holds."""
    config = (
        "name: Test\nlayers: []\n"
        "plugins:\n  processes: {workdays: '${API_TOKEN}', holidays: ['${HOLIDAY}']}\n"
    )
    got = problems_of({}, config=config, env={"API_TOKEN": "tok-3141", "HOLIDAY": "someday"})
    assert got == [
        "config.yaml:4:25: the settings of the `processes` plugin: `workdays` `${API_TOKEN}` "
        "is not a weekday: write mon, tue, wed, thu, fri, sat or sun",
        "config.yaml:4:52: `holidays` of the settings of the `processes` plugin: `${HOLIDAY}` "
        "is not a date such as 2027-01-07",
    ]


def test_a_secret_is_not_in_the_message(problems_of: Problems) -> None:
    config = (
        "name: Test\nlayers: []\nplugins:\n  telephony: {secret: '${AMI_SECRET}', port: [5038}\n"
    )
    got = problems_of({}, config=config, env={"AMI_SECRET": "TopSecret"})
    assert got == [
        "config.yaml:4:51: YAML: expected ',' or ']', but got '}' "
        "(in the `[` list that starts at line 4)"
    ]
    assert "TopSecret" not in "\n".join(got)


# --- several problems at once ---------------------------------------------------------------------


def test_every_problem_in_a_file_is_reported(problems_of: Problems) -> None:
    got = problems_of(
        {
            "deal.yaml": """\
roles:
  manager: {lable: Manager}
documents:
  Deal:
    fields:
      amount: {type: moeny}
      not: {type: string}
      kind: {type: enum, requried: true}
      created_at: {type: date}
      customer: {type: ref, to: Customer}
"""
        }
    )
    assert got == [
        "deal.yaml:2:13: unknown key `lable` in the role `manager` (did you mean `label`?)",
        "deal.yaml:6:22: unknown field type `moeny` (did you mean `money`?)",
        "deal.yaml:7:7: the field name `not` is a word of the expression language, where `not` "
        "would not mean this field; choose another name, such as `not_value`",
        "deal.yaml:8:26: unknown key `requried` in the field `Deal.kind` "
        "(did you mean `required`?)",
        "deal.yaml:9:7: `created_at` is a field every document has; choose another name",
    ]


def test_problems_in_several_files_are_all_reported(problems_of: Problems) -> None:
    got = problems_of(
        {
            "a.yaml": "documents:\n  Deal:\n    fields: {amount: {type: moeny}}\n",
            "b.yaml": "roles:\n  sales-head: {}\n",
            "c.yaml": "reprots: {}\n",
        }
    )
    assert got == [
        "a.yaml:3:29: unknown field type `moeny` (did you mean `money`?)",
        "b.yaml:2:3: the role name `sales-head` must start with a letter and hold only "
        "letters, digits and _",
        "c.yaml:1:1: unknown section `reprots` (did you mean `reports`?); sections are "
        "documents, attributes, roles, segments, reports, dashboards",
    ]


# --- hostile YAML: refused by its caps, before it is expanded or compiled -----------------------------------------------------------


def test_python_object_tag_is_refused_quickly(
    problems_of: Problems, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    got = problems_of(
        {
            "evil.yaml": "documents:\n"
            "  Deal: !!python/object/apply:os.system ['touch pwned']\n"
            "  Other: !!python/object:builtins.object {}\n"
        },
    )
    assert got == [
        "evil.yaml:2:9: the tag `!!python/object/apply:os.system` is not allowed in metadata"
    ]
    assert not (tmp_path / "pwned").exists()


BILLION_LAUGHS = """\
documents:
  Deal:
    label: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
x1: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
x2: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
x3: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
x4: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
x5: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
x6: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
x7: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
x8: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_billion_laughs_is_refused_quickly(problems_of: Problems) -> None:
    got = problems_of({"bomb.yaml": BILLION_LAUGHS})
    assert got == [
        "bomb.yaml:8:12: aliases would expand the file to more than 200000 values "
        '(a "billion laughs" bomb?)'
    ]


def test_a_huge_template_is_refused_before_compiling(problems_of: Problems) -> None:
    """A 400 KB title took seconds to compile: it is refused at its place, at once."""
    title = "{{ name }}" + "x" * 400_000
    text = f"documents:\n  Deal:\n    title: '{title}'\n    fields: {{name: {{type: string}}}}\n"
    got = problems_of({"deal.yaml": text})
    assert got == [
        "deal.yaml:3:12: the title of `Deal`: the template `{{ name }}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…` "
        "has 400010 characters; at most 10000 are allowed"
    ]


def test_many_aliases_are_refused(problems_of: Problems) -> None:
    text = "base: &x {type: string}\n" + "".join(f"k{i}: *x\n" for i in range(101))
    got = problems_of({"aliases.yaml": text})
    assert got == ["aliases.yaml:102:7: more than 100 aliases in one file"]


def test_deep_nesting_is_refused(problems_of: Problems) -> None:
    text = "documents: " + "[" * 60 + "]" * 60 + "\n"
    assert problems_of({"deep.yaml": text}) == ["deep.yaml:1:61: nesting deeper than 50 levels"]


def test_a_file_that_is_not_utf8(make_config: Callable[..., Path]) -> None:
    folder = make_config({})
    (folder / "deal.yaml").write_bytes("documents:\n  Deal:\n    label: Сделка\n".encode("cp1251"))
    with pytest.raises(MetadataError) as caught:
        load(folder, env={})
    assert [p.message for p in caught.value.problems] == [
        "the file is not UTF-8 text (byte 0xd1); save it as UTF-8"
    ]
    assert [(p.loc.line, p.loc.col) for p in caught.value.problems] == [(3, 12)]
    assert caught.value.problems[0].loc.file.endswith("deal.yaml")


def _problems(folder: Path) -> list[str]:
    try:
        load(folder, env={})
    except MetadataError as exc:
        return [str(p).replace(shown_path(folder) + "/", "") for p in exc.problems]
    return []


def test_a_link_outside_the_configuration_is_not_followed(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    """A metadata file that links to /etc/passwd (or any file outside the
    folder) is one problem, and nothing of the file it names is read or shown."""
    outside = tmp_path / "passwd"
    outside.write_text("root: x:0:0:root:/root:/bin/bash\n", encoding="utf-8")
    folder = make_config({"deal.yaml": "roles:\n  manager: {label: Manager}\n"})
    (folder / "passwd.yaml").symlink_to(outside)
    assert _problems(folder) == ["passwd.yaml:1:1: links outside the configuration"]
    # a link to a file of the folder itself is read like any file
    (folder / "passwd.yaml").unlink()
    (folder / "same.yaml").symlink_to(folder / "deal.yaml")
    assert _problems(folder) == []


def test_a_config_yaml_outside_the_configuration_is_not_followed(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text("name: root:x:0:0\nlayers: []\n", encoding="utf-8")
    folder = make_config({})
    (folder / "config.yaml").unlink()
    (folder / "config.yaml").symlink_to(outside)
    assert _problems(folder) == ["config.yaml:1:1: links outside the configuration"]


# --- what ships passes ------------------------------------------------------------------------------


def test_the_base_layer_loads(load_config: Callable[..., Registry]) -> None:
    registry = load_config(config=WITH_BASE)
    assert {"Customer", "Deal", "CustomerOrder", "Interaction", "User"} <= set(registry.documents)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_passes(path: Path) -> None:
    load(path)
