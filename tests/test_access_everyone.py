"""`everyone` in `access:`: the rule of every role of the configuration that
has no rule of its own, so a plugin's types fit a configuration whose roles it
cannot know; and `needs: {layers: [base]}`, a metadata file that counts only
when the base layer is loaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.access import Principal, allowed, rule
from engine.registry import Registry
from engine.security import granted

Problems = Callable[..., list[str]]
Load = Callable[..., Registry]

ROLES = """\
roles:
  seller:   {label: Seller}
  head:     {label: Head}
  measurer: {label: Measurer}
"""

NOTE = """\
documents:
  Note:
    owner: author
    fields:
      text:   {type: string}
      author: {type: ref, to: User, default: current_user}
    access:
      everyone: {read: own, create: true, update: own}
      head:     {read: all, update: all}
"""


def who(*roles: str) -> Principal:
    return Principal(7, "someone", frozenset(roles))


def test_every_role_without_a_rule_follows_everyone_and_a_named_rule_wins(
    load_config: Load,
) -> None:
    registry = load_config({"roles.yaml": ROLES, "note.yaml": NOTE})
    # seller and measurer have no rule of their own: everyone's
    for role in ("seller", "measurer"):
        assert rule(registry, who(role), "Note", "read") == "own"
        assert rule(registry, who(role), "Note", "create") is True
        assert rule(registry, who(role), "Note", "delete") is False
    # head's own rule replaces everyone's, whole: it reads all but creates nothing
    assert rule(registry, who("head"), "Note", "read") is True
    assert rule(registry, who("head"), "Note", "create") is False
    # a user with two roles gets the more generous answer of each action
    assert rule(registry, who("head", "seller"), "Note", "create") is True
    # a role the configuration does not have (left in the database) gets nothing,
    # nor does a database role that happens to be called `everyone`
    assert not allowed(registry, who("manager"), "Note", "read")
    assert not allowed(registry, who("everyone"), "Note", "read")
    assert not allowed(registry, Principal(7, "nobody"), "Note", "read")
    # administrators see all, as everywhere
    assert rule(registry, who("Admin"), "Note", "delete") is True


def test_migrate_grants_the_permissions_of_everyone_to_each_role(load_config: Load) -> None:
    registry = load_config({"roles.yaml": ROLES, "note.yaml": NOTE})
    assert {p for p in granted(registry, "measurer") if p[1] == "Note"} == {
        ("can_read", "Note"),
        ("can_write", "Note"),
    }
    assert {p for p in granted(registry, "head") if p[1] == "Note"} == {
        ("can_read", "Note"),
        ("can_write", "Note"),
    }
    assert granted(registry, "everyone") == set()


def test_check_accepts_everyone_and_refuses_its_look_alikes(problems_of: Problems) -> None:
    assert problems_of({"roles.yaml": ROLES, "note.yaml": NOTE}) == []
    wrong = NOTE.replace("everyone:", '"*":     ').replace("head:  ", "everybody:")
    assert problems_of({"roles.yaml": ROLES, "note.yaml": wrong}) == [
        "note.yaml:8:7: the access of `Note` names an unknown role `*` (every role is `everyone`)",
        "note.yaml:9:7: the access of `Note` names an unknown role `everybody` "
        "(did you mean `everyone`?)",
    ]


def test_everyone_follows_the_rules_of_any_access_rule(problems_of: Problems) -> None:
    text = NOTE.replace("    owner: author\n", "").replace(
        "      head:     {read: all, update: all}\n", ""
    )
    assert problems_of({"roles.yaml": ROLES, "note.yaml": text}) == [
        "note.yaml:7:24: the access of `everyone` to `Note`: `read: own` needs an `owner`, "
        "the field that says whose record it is (e.g. `owner: manager`)",
    ]
    text = NOTE.replace("create: true", "create: maybe")
    assert problems_of({"roles.yaml": ROLES, "note.yaml": text}) == [
        "note.yaml:8:37: the access of `everyone` to `Note`: `create` must be true, false, "
        "own or all"
    ]


def test_a_role_may_not_be_called_everyone(problems_of: Problems) -> None:
    assert problems_of({"roles.yaml": ROLES + "  everyone: {label: All}\n"}) == [
        "roles.yaml:5:3: `everyone` stands for every role in `access:`; name the role otherwise"
    ]


# --- needs: {layers: [...]} -----------------------------------------------------------------

NEEDS_BASE = """\
needs: {layers: [base]}
documents:
  Deal:
    fields:
      discount: {type: integer}
"""


def test_a_file_that_needs_the_base_layer_counts_only_with_it(load_config: Load) -> None:
    with_base = load_config({"extra.yaml": NEEDS_BASE}, "name: X\nlocale: en\nlayers: [base]\n")
    assert "discount" in with_base.documents["Deal"].fields
    alone = load_config({"extra.yaml": NEEDS_BASE})
    assert "Deal" not in alone.documents


def test_needs_names_only_known_layers(problems_of: Problems) -> None:
    assert problems_of({"extra.yaml": NEEDS_BASE.replace("[base]", "[bsae]")}) == [
        "extra.yaml:1:18: `needs` names an unknown layer `bsae` (did you mean `base`?); "
        "layers are `base`"
    ]
    assert problems_of({"extra.yaml": NEEDS_BASE.replace("[base]", "base")}) == [
        "extra.yaml:1:17: `needs` of a metadata file: `layers` must be a list of names"
    ]


def test_a_standalone_deal_is_free_of_the_typical_sale(
    problems_of: Problems, make_config: Callable[..., Path]
) -> None:
    """The processes plugin's typical sale runs on the base layer's Deal: a
    configuration without the base layer may have a Deal of its own, with no
    `kind` and no `stage`, and the plugin's types need none of its roles."""
    deal = """\
    roles:
      seller: {label: Seller}
    documents:
      Deal:
        title: "{{ subject }}"
        owner: seller
        fields:
          subject: {type: string, required: true}
          seller:  {type: ref, to: User, default: current_user}
        access:
          seller: {read: own, create: true, update: own}
    """
    config = "name: X\nlocale: en\nlayers: []\nplugins:\n  processes: {}\n"
    assert problems_of({"deal.yaml": deal}, config) == []
