"""Expressions and templates: what they compute, and what the sandbox refuses.

Every escape is refused twice: by ``check`` (so ``crm check`` reports it with
its file and line) and by the sandbox itself while compiling or evaluating,
for sources that reach it some other way or values that only exist at run
time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jinja2.exceptions import SecurityError

from engine import expressions
from engine.expressions import (
    ENV,
    HELPERS,
    MAX_LOOP_STEPS,
    Compiled,
    DocView,
    ExpressionError,
    check,
    context_for,
    evaluate,
    render,
    view,
)
from engine.models import Models, build
from engine.registry import Registry

NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=dt.UTC)


def _customer(**values: Any) -> DocView:
    data = {"id": 7, "name": "Romashka", "phone": "+74951234567", **values}
    return DocView(data, list(data), title=lambda v: str(v["name"]))


def _context(**values: Any) -> dict[str, Any]:
    lines = [
        DocView(
            {"product": "Tea", "qty": 2, "price": Decimal("10.50"), "amount": Decimal("21.00")},
            ["product", "qty", "price", "amount"],
        ),
        {"product": "Milk", "qty": 1, "price": Decimal("3.00"), "amount": Decimal("3.00")},
    ]
    data = {
        "number": "D-000001",
        "customer": _customer(),
        "amount": Decimal("1500.00"),
        "qty": None,
        "stage": "won",
        "lines": lines,
        "planned_close": dt.date(2026, 3, 20),
        "notes": None,
        **values,
    }
    doc = DocView(data, list(data), title=lambda v: f"{v['number']} {v['customer']}")
    user = DocView(
        {"id": 1, "username": "alice", "first_name": "Alice"}, ["id", "username", "first_name"]
    )
    return context_for(doc, user=user, now=NOW)


@pytest.fixture
def ctx() -> dict[str, Any]:
    return _context()


# --- evaluation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("amount * 2 + 1", Decimal("3001.00")),
        ("(qty or 0) * 5", 0),
        ("10 // 3", 3),
        ("10 % 3", 1),
        ("7 / 2", 3.5),
        ("2 ** 10", 1024),
        ("-amount", Decimal("-1500.00")),
        ("amount > 1000", True),
        ("amount >= 1500 and stage == 'won'", True),
        ("amount < 1000 or stage != 'won'", False),
        ("not notes", True),
        ("stage in ['won', 'lost']", True),
        ("amount and amount > 0", True),
        ("1 if stage == 'won' else 2", 1),
        ("lines | sum(attribute='amount')", Decimal("24.00")),
        ("lines | map(attribute='qty') | max", 2),
        ("lines | selectattr('amount', 'gt', 5) | map(attribute='product') | list", ["Tea"]),
        ("lines | map(attribute='product') | join(', ')", "Tea, Milk"),
        ("lines | length", 2),
        ("lines[1].product", "Milk"),
        ("lines[0]['price'] * lines[0].qty", Decimal("21.00")),
        ("doc.customer.phone", "+74951234567"),
        ("customer.phone", "+74951234567"),
        ("customer['name']", "Romashka"),
        ("doc.number ~ ' for ' ~ customer", "D-000001 for Romashka"),
        ("user.username", "alice"),
        ("now", NOW),
        ("now.year", 2026),
        ("now - days(30)", NOW - dt.timedelta(days=30)),
        ("now + hours(2) + minutes(5)", NOW + dt.timedelta(hours=2, minutes=5)),
        ("days(1).days", 1),
        ("planned_close > today()", dt.date(2026, 3, 20) > dt.datetime.now(dt.UTC).date()),
        ("'abc' | upper", "ABC"),
        ("name | default('-', true)", "-"),
        ("amount | round(0) | int", 1500),
    ],
)
def test_evaluate(ctx: dict[str, Any], source: str, expected: Any) -> None:
    assert check(source) == []
    assert evaluate(source, ctx) == expected


def test_undefined_names_and_fields_are_none(ctx: dict[str, Any]) -> None:
    assert evaluate("no_such_name", ctx) is None
    assert evaluate("no_such_name.phone", ctx) is None
    assert evaluate("doc.no_such_field", ctx) is None
    assert evaluate("no_such_name is none", ctx) is True
    assert evaluate("not no_such_name", ctx) is True
    assert evaluate("lines[5]", ctx) is None
    # an empty ref reads as empty all the way down
    empty = _context(customer=None)
    assert evaluate("doc.customer.phone", empty) is None
    assert render("{{ number }} {{ customer }}|{{ no_such_name }}", empty) == "D-000001 |"


def test_an_error_while_evaluating_is_an_expression_error(ctx: dict[str, Any]) -> None:
    with pytest.raises(ExpressionError, match=r"`amount \+ stage` failed"):
        evaluate("amount + stage", ctx)
    with pytest.raises(ExpressionError, match="failed"):
        evaluate("amount / 0", ctx)
    with pytest.raises(ExpressionError, match="failed"):
        evaluate("days('x')", ctx)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ number }} {{ customer }}", "D-000001 Romashka"),
        ("{{ doc }}", "D-000001 Romashka"),
        ("{{ customer.name | upper }}, {{ user.first_name }}", "ROMASHKA, Alice"),
        ("{{ notes }}", ""),  # an empty field prints nothing, not None
        (
            "{% for l in lines %}{{ loop.index }}. {{ l.product }} × {{ l.qty }}\n{% endfor %}",
            "1. Tea × 2\n2. Milk × 1\n",
        ),
        ("{% for l in no_such_table %}x{% else %}none{% endfor %}", "none"),
        ("{% if amount > 1000 %}big{% else %}small{% endif %}", "big"),
        ("{% set total = lines | sum(attribute='amount') %}{{ total }}", "24.00"),
        (
            "{% for g in lines | groupby('qty') %}{{ g.grouper }}:{{ g.list | length }} {% endfor %}",
            "1:1 2:1 ",
        ),
    ],
)
def test_render(ctx: dict[str, Any], source: str, expected: str) -> None:
    assert check(source, template=True) == []
    assert render(source, ctx) == expected


def test_docview_reads_objects_and_dicts() -> None:
    obj = SimpleNamespace(id=3, name="Vasilek", secret="hidden")
    v = DocView(obj, ["id", "name"], title=lambda d: f"#{d['id']} {d['name']}")
    assert evaluate("doc.name ~ '/' ~ doc.id", {"doc": v}) == "Vasilek/3"
    assert evaluate("doc.secret", {"doc": v}) is None  # not one of its fields
    assert str(v) == "#3 Vasilek"
    assert str(DocView({"id": 9}, ["id"])) == "9"  # no title: its id
    assert dict(DocView({"a": 1, "b": 2}, ["a"])) == {"a": 1}


def test_view_of_engine_records(load_config: Callable[..., Registry]) -> None:
    registry = load_config(
        {
            "crm.yaml": """
            documents:
              Customer:
                title: "{{ name }}"
                fields:
                  name: {type: string}
                  phone: {type: phone}
              Deal:
                title: "{{ code }} {{ customer }}"
                fields:
                  code: {type: string}
                  customer: {type: ref, to: Customer}
                  lines: {type: table, fields: {qty: {type: integer}}}
            """
        }
    )
    models: Models = build(registry)
    try:
        customer = models.cls("Customer")(id=1, name="Romashka", phone="+74951234567")
        row_cls = models.children[("Deal", "lines")]
        deal = models.cls("Deal")(
            id=2, code="D-1", customer=customer, lines=[row_cls(qty=2), row_cls(qty=3)]
        )
        ctx = context_for(deal, now=NOW)
        assert evaluate("doc.customer.phone", ctx) == "+74951234567"
        assert evaluate("lines | sum(attribute='qty')", ctx) == 5
        assert render("{{ doc }}", ctx) == "D-1 Romashka"
        assert isinstance(view(customer), DocView)
        with pytest.raises(ExpressionError, match="hidden"):
            Compiled("doc[key]", False)({**ctx, "key": "_sa_instance_state"})
    finally:
        models.dispose()


# --- checking ----------------------------------------------------------------------------


def test_syntax_errors_read_well() -> None:
    [message] = check("amount >")
    assert message.startswith("`amount >` is not a valid expression: it ends too early")
    assert ")" not in message and "{{" not in message and "}}" not in message
    [message] = check("(amount > 5")
    assert message == "`(amount > 5` is not a valid expression: it ends too early: `)` is missing"
    [message] = check("amount > 5)")
    assert message == "`amount > 5)` is not a valid expression: unexpected ')'"
    [message] = check("amount 5")
    assert message == "`amount 5` is not a valid expression: unexpected '5' after the expression"
    [message] = check("a }}{{ b")
    assert "unexpected `}}` after the expression" in message
    [message] = check("{% for l in lines %}{{ l }}", template=True)
    assert "is not a valid template: it ends too early" in message and "endfor" in message
    [message] = check("Dear {{ name }},\n{{ amount + }}", template=True)
    assert "(line 2)" in message
    assert check("  ") == ["an expression must not be empty"]
    assert check("", template=True) == ["a template must not be empty"]
    with pytest.raises(ExpressionError, match="is not a valid expression"):
        evaluate("amount >", {})


def test_names_and_paths_are_checked() -> None:
    assert check("amount + amout", names=["amount"]) == [
        "unknown name `amout` in `amount + amout` (did you mean `amount`?)"
    ]
    assert check("doc.amount > 0 and user and now and today()", names=["amount"]) == []
    assert check("{% for l in lines %}{{ loop.index }}{{ l }}{% endfor %}", True, ["lines"]) == []
    paths: list[list[str]] = []
    check("doc.customer.phone ~ customer.name", resolve=lambda p: paths.append(p) or None)
    assert sorted(paths) == [["customer", "name"], ["doc", "customer", "phone"]]
    assert check("customer.phne", resolve=lambda p: f"no {p[-1]}") == ["no phne"]


# --- escapes: refused by check, by the sandbox's compiler, and when evaluated -------------


ESCAPES = [
    ("doc.__class__", "hidden attribute `__class__`"),
    ("amount.__class__.__mro__", "hidden attribute"),
    ("doc.__globals__", "hidden attribute `__globals__`"),
    ("doc._values", "hidden attribute `_values`"),
    ("doc['__class__']", "hidden attribute `__class__`"),
    ("doc['_fields']", "hidden attribute `_fields`"),
    ("_private", "hidden name `_private`"),
    ("x.mro()", "calls `mro`"),
    ("range(10)", "calls `range`"),
    ("lipsum()", "calls `lipsum`"),
    ("cycler(1, 2)", "calls `cycler`"),
    ("joiner()", "calls `joiner`"),
    ("namespace(a=1)", "calls `namespace`"),
    ("dict(a=1)", "calls `dict`"),
    ("'a'.upper()", "calls `upper`"),
    ("doc.items()", "calls `items`"),
    ("'{0.__class__}'.format(doc)", "calls `format`"),
    ("'{0:>999999999}'.format(1)", "calls `format`"),
    ("'%s' % doc", "formatting text with `%`"),
    ("'%0999999999d' % 1", "formatting text with `%`"),
    ('"a" * 10**8', "would build a value too large"),
    ("[1] * 100000", "would build a value too large"),
    ("'x' * 10000 * 10000", "would build a value too large"),
    ("2 ** 10000", "a power above 64"),
    ("(2 ** 64) ** 64", "would build a number too large"),
    ("amount ** 100", "a power above 64"),
    ("doc | attr('__class__')", "the filter `attr`"),
    ("doc | attr('name')", "the filter `attr`"),
    ("'%s' | format(doc)", "the filter `format`"),
    ("lines | map(attribute='__class__') | list", "hidden attribute `__class__`"),
    ("lines | map('attr', '__class__') | list", "maps with the filter `attr`"),
    ("lines | sort(attribute='_values')", "hidden attribute `_values`"),
    ("lines | selectattr('__class__') | list", "hidden attribute `__class__`"),
    ("lines | groupby('customer.__class__')", "hidden attribute `__class__`"),
    ("lines | sum(attribute='__len__')", "hidden attribute `__len__`"),
    ("lines | join(',', '__class__')", "hidden attribute `__class__`"),
    ("name | center(1000000000)", "the filter `center`"),
    ("name | indent(1000000000)", "the filter `indent`"),
    ("name | wordwrap(1)", "the filter `wordwrap`"),
    ("lines | batch(1000000000, 0) | list", "the filter `batch`"),
    ("lines | slice(1000000000) | list", "the filter `slice`"),
    ("doc | xmlattr", "the filter `xmlattr`"),
    ("doc | pprint", "the filter `pprint`"),
    ("name | no_such_filter", "unknown filter `no_such_filter`"),
    ("name | _limit", "unknown filter `_limit`"),
    ("name is no_such_test", "unknown test `no_such_test`"),
    ("self", "`self`"),
    ("self._TemplateReference__context", "hidden attribute"),
    ("caller", "`caller`"),
]
TEMPLATE_ESCAPES = [
    ("{{ self }}", "`self`"),
    ("{% macro m() %}x{% endmacro %}{{ m() }}", "`{% macro %}`"),
    ("{% include 'other.html' %}", "`{% include %}`"),
    ("{% extends 'base.html' %}", "`{% extends %}`"),
    ("{% import 'x.html' as x %}", "`{% import %}`"),
    ("{% from 'x.html' import y %}", "`{% from %}`"),
    ("{% block b %}{% endblock %}", "`{% block %}`"),
    ("{% set x %}{{ name }}{% endset %}", "`{% set … endset %}`"),
    ("{% filter upper %}x{% endfilter %}", "`{% filter %}`"),
    ("{% set today = 1 %}", "reassigns `today`"),
    ("{% for i in range(10) %}{{ i }}{% endfor %}", "calls `range`"),
    ("{% set ns = namespace() %}", "calls `namespace`"),
    ("{{ '%s' % doc }}", "formatting text with `%`"),
]


@pytest.mark.parametrize(("source", "message"), ESCAPES)
def test_escapes_are_refused(ctx: dict[str, Any], source: str, message: str) -> None:
    problems = check(source)
    assert problems and message in problems[0], problems
    # ...by the sandbox's own compiler, whoever asks it
    with pytest.raises(SecurityError) as refused:
        ENV.compile_expression(source)
    assert problems[0] == f"`{source}` {refused.value}"
    # ...and by evaluate()
    with pytest.raises(ExpressionError):
        evaluate(source, ctx)


@pytest.mark.parametrize(("source", "message"), TEMPLATE_ESCAPES)
def test_template_escapes_are_refused(ctx: dict[str, Any], source: str, message: str) -> None:
    problems = check(source, template=True)
    assert problems and message in problems[0], problems
    with pytest.raises(SecurityError) as refused:
        ENV.from_string(source)
    assert problems[0] == f"`{source}` {refused.value}"
    with pytest.raises(ExpressionError):
        render(source, ctx)


@pytest.fixture
def sandbox_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Evaluate without the static checks: only the sandbox's run-time rules apply."""
    monkeypatch.setattr(expressions, "_safety_problems", lambda tree: [])

    def run(source: str, template: bool = False, **values: Any) -> Any:
        return Compiled(source, template)({**_context(), **values})

    yield run


@pytest.mark.parametrize(
    ("source", "values", "message"),
    [
        ("doc.__class__", {}, "`__class__` is hidden"),
        ("doc[key]", {"key": "__class__"}, "`__class__` is hidden"),
        ("doc[key]", {"key": "_values"}, "`_values` is hidden"),
        ("lines[1][key]", {"key": "__class__"}, "`__class__` is hidden"),
        ("lines | map(attribute=key) | list", {"key": "__class__"}, "hidden"),
        ("lines | selectattr(key) | list", {"key": "__init__"}, "hidden"),
        ("lines | sort(attribute=key)", {"key": "_fields"}, "hidden"),
        ("lines | sum(attribute=key)", {"key": "__len__"}, "hidden"),
        ("lines | join(',', attribute=key)", {"key": "__class__"}, "hidden"),
        ("x.mro", {"x": int}, "`mro` is a method"),
        ("x.__name__", {"x": int}, "hidden"),
        ("x.secret", {"x": SimpleNamespace(secret=1)}, "cannot read `secret`"),
        ("x.upper", {"x": "a"}, "`upper` is a method"),
        ("doc.items", {}, None),  # a field lookup: DocView has no field `items`
        ("f('a')", {"f": len}, "expressions may call only days, hours, minutes, today"),
        ("range(3)", {"range": range}, "expressions may call only"),
        ("'a'.upper()", {}, "`upper` is a method"),
        ("'{0.__class__}'.format(doc)", {}, "`format` is a method"),
        ("f % doc", {"f": "%s"}, "formatting text with `%`"),
        ("f % n", {"f": "%0999999999d", "n": 1}, "formatting text with `%`"),
        ("'a' * n", {"n": 10**8}, "too long"),
        ("[1] * n", {"n": 100_000}, "too long"),
        ("2 ** n", {"n": 10_000}, "a power above 64"),
        ("b ** 64", {"b": 2**100}, "too large"),
        ("b * b", {"b": 2**4000}, "too large"),
        ("s + s", {"s": "x" * 600_000}, "too long"),
        ("s ~ s", {"s": "x" * 600_000}, "too long"),
        ("s | replace('x', s)", {"s": "x" * 2000}, "too long"),
        ("([s] * 1000) | join", {"s": "x" * 2000}, "too long"),
        ("lines | sum(start=[])", {}, "its start must be a number"),
        ("s | forceescape | forceescape", {"s": "&" * 300_000}, "too long"),
    ],
)
def test_the_sandbox_refuses_at_run_time(
    sandbox_only: Callable[..., Any], source: str, values: dict[str, Any], message: str | None
) -> None:
    if message is None:
        assert sandbox_only(source, **values) is None
        return
    with pytest.raises(ExpressionError, match=message):
        sandbox_only(source, **values)


def test_templates_are_bounded_at_run_time(sandbox_only: Callable[..., Any]) -> None:
    text = "x" * 1000
    # a loop over a table is fine; loops that multiply are stopped
    assert sandbox_only("{% for l in lines %}{{ l.product }}{% endfor %}", True) == "TeaMilk"
    with pytest.raises(ExpressionError, match=f"more than {MAX_LOOP_STEPS} loop steps"):
        sandbox_only("{% for a in t %}{% for b in t %}{% endfor %}{% endfor %}", True, t=text)
    with pytest.raises(ExpressionError, match="longer than"):
        sandbox_only("{% for a in t %}{{ t }}{% endfor %}", True, t=text * 2)
    doubling = "{% set a = t %}" + "{% set a = a ~ a %}" * 12 + "{{ a | length }}"
    with pytest.raises(ExpressionError, match="too long"):
        sandbox_only(doubling, True, t=text)
    # {% set %} inside a loop does not carry over, so it cannot double either
    assert sandbox_only(
        "{% set a = t %}{% for l in lines %}{% set a = a ~ a %}{% endfor %}{{ a | length }}",
        True,
        t=text,
    ) == str(len(text))


def test_no_jinja_globals_and_no_dangerous_filters(ctx: dict[str, Any]) -> None:
    assert set(ENV.globals) == set(HELPERS)
    for name in ("config", "request", "cycler", "range", "lipsum", "joiner", "namespace", "dict"):
        assert check(name) == []
        assert evaluate(name, ctx) is None, name
    for name in ("attr", "format", "center", "indent", "wordwrap", "batch", "slice", "xmlattr"):
        assert name not in ENV.filters
    assert evaluate("today", ctx) is HELPERS["today"]  # a helper is a value like any other


def test_compile_is_cached_and_checked() -> None:
    assert expressions.compile("amount > 0") is expressions.compile("amount > 0")
    with pytest.raises(ExpressionError, match="hidden attribute"):
        expressions.compile("doc.__class__")


def test_message_of_a_failing_value_names_the_source(tmp_path: Path) -> None:
    with pytest.raises(ExpressionError, match=r"^`x.y.z` failed: cannot read `y`"):
        evaluate("x.y.z", {"x": tmp_path})


@pytest.mark.parametrize(
    "source",
    ["(" * 2000 + "1" + ")" * 2000, "1" + " + 1" * 300, "-" * 3000 + "1", "x" + " | abs" * 100],
)
def test_deep_nesting_is_a_message(source: str) -> None:
    [message] = check(source)
    assert "is nested too deeply" in message
    with pytest.raises(ExpressionError, match="nested too deeply"):
        evaluate(source, {"x": 1})


def test_today_is_the_day_on_the_company_calendar() -> None:
    from zoneinfo import ZoneInfo

    from engine import clock
    from engine.expressions import context_for

    late = dt.datetime(2026, 3, 20, 22, 30, tzinfo=dt.UTC)  # already the 21st in Moscow
    moscow = context_for({}, now=late, tz=ZoneInfo("Europe/Moscow"))
    assert evaluate("today()", moscow) == dt.date(2026, 3, 21)
    assert evaluate("today() - days(1)", moscow) == dt.date(2026, 3, 20)
    with clock.use(lambda: late):
        assert evaluate("today()", context_for({}, now=late)) == dt.date(2026, 3, 20)
