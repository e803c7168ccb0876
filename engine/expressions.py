"""Expressions (``when``, ``if``, ``compute``) and templates (``title``, texts).

Both are Jinja2, evaluated in a sandbox that sees only the document, the user,
the time and a few documented helpers. They are compiled and checked once,
by ``crm check``: a name that is not a field, a call to anything but a helper,
an attribute starting with ``_`` or an oversized operation is a check error,
not a surprise at run time.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
from collections.abc import Callable, Collection, Iterator, Mapping
from decimal import Decimal
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

#: callables an expression may use, by name
HELPERS: dict[str, Callable[..., Any]] = {
    "today": lambda: dt.datetime.now(dt.UTC).date(),
    "days": lambda n: dt.timedelta(days=n),
    "hours": lambda n: dt.timedelta(hours=n),
    "minutes": lambda n: dt.timedelta(minutes=n),
}
#: names every expression sees besides the fields
CONTEXT_NAMES = frozenset({"doc", "user", "now", *HELPERS})
#: filters that could reach object internals or produce huge output
FORBIDDEN_FILTERS = frozenset({"attr", "xmlattr", "pprint", "indent", "center", "wordwrap"})
MAX_SEQUENCE = 10_000
MAX_POWER = 64


class ExpressionError(ValueError):
    """An expression that cannot be compiled or evaluated; the message is for the user."""


class _Env(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if attr.startswith("_"):
            return False
        if isinstance(obj, DocView):
            return True
        return super().is_safe_attribute(obj, attr, value) and not callable(value)

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, (int, float, Decimal)) and abs(right) > MAX_POWER:
                raise SecurityError(f"a power above {MAX_POWER} is not allowed")
            return left**right
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
                if len(seq) * count > MAX_SEQUENCE:
                    raise SecurityError("the result would be too long")
        return left * right


ENV = _Env(autoescape=False)
ENV.globals.clear()
ENV.globals.update(HELPERS)
for _name in FORBIDDEN_FILTERS:
    ENV.filters.pop(_name, None)


class DocView(Mapping[str, Any]):
    """What an expression sees of a record: its fields by name, nothing else.

    ``{{ customer }}`` prints the referenced record's title; table fields are
    lists of row views; values come from an ORM object or a plain dict.
    """

    def __init__(
        self,
        values: Any,
        fields: Collection[str],
        title: Callable[[DocView], str] | None = None,
        wrap: Callable[[str, Any], Any] | None = None,
    ):
        self._values = values
        self._fields = tuple(fields)
        self._title = title
        self._wrap = wrap

    def _get(self, name: str) -> Any:
        if name not in self._fields:
            raise KeyError(name)
        raw = (
            self._values.get(name)
            if isinstance(self._values, Mapping)
            else getattr(self._values, name, None)
        )
        return self._wrap(name, raw) if self._wrap else raw

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._get(name)
        except KeyError as exc:
            raise AttributeError(name) from exc

    def __getitem__(self, name: str) -> Any:
        return self._get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __str__(self) -> str:
        if self._title:
            return self._title(self)
        return str(
            self._values.get("id", "")
            if isinstance(self._values, Mapping)
            else getattr(self._values, "id", "")
        )

    def __bool__(self) -> bool:
        return True


class Compiled:
    """One checked expression or template, ready to evaluate many times."""

    def __init__(self, source: str, template: bool):
        self.source = source
        self.template = template
        self._fn = (
            ENV.from_string(source)
            if template
            else ENV.compile_expression(source, undefined_to_none=True)
        )

    def __call__(self, context: Mapping[str, Any]) -> Any:
        try:
            if self.template:
                return self._fn.render(context)  # type: ignore[union-attr]
            return self._fn(**context)  # type: ignore[operator]
        except (
            SecurityError,
            UndefinedError,
            TypeError,
            ValueError,
            ArithmeticError,
            AttributeError,
        ) as exc:
            raise ExpressionError(f"`{self.source}` failed: {exc}") from exc


@functools.lru_cache(maxsize=4096)
def compile(source: str, template: bool = False) -> Compiled:
    """Compile once; raises ExpressionError with a message for the consultant."""
    problems = check(source, template=template)
    if problems:
        raise ExpressionError(problems[0])
    return Compiled(source, template)


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    return compile(source)(context)


def render(source: str, context: Mapping[str, Any]) -> str:
    return str(compile(source, template=True)(context))


def context_for(doc: Any, user: Any = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """The names an expression over ``doc`` sees: its fields, ``doc``, ``user``, ``now``."""
    ctx: dict[str, Any] = {name: doc[name] for name in doc} if isinstance(doc, Mapping) else {}
    ctx.update(doc=doc, user=user, now=now or dt.datetime.now(dt.UTC))
    return ctx


def _parse(source: str, template: bool) -> nodes.Template:
    text = source if template else "{{ (" + source + ") }}"
    return ENV.parse(text)


def check(
    source: str,
    template: bool = False,
    names: Collection[str] | None = None,
    resolve: Callable[[list[str]], str | None] | None = None,
) -> list[str]:
    """Problems with an expression, as messages; [] when it is fine.

    ``names`` are the fields the expression may use by name; ``resolve`` is
    given each dotted path (``["doc", "customer", "phone"]``) and returns a
    message when the path is broken.
    """
    if not isinstance(source, str) or not source.strip():
        return ["an expression must not be empty"]
    try:
        tree = _parse(source, template)
    except TemplateSyntaxError as exc:
        return [f"`{source}` is not a valid expression: {exc.message}"]
    problems: list[str] = []
    if not template and any(isinstance(n, (nodes.Output,)) for n in tree.body[1:]):
        problems.append(f"`{source}` must be a single expression")
    for node in tree.find_all(
        (
            nodes.Getattr,
            nodes.Getitem,
            nodes.Call,
            nodes.Filter,
            nodes.Name,
            nodes.Pow,
            nodes.Mul,
            nodes.Keyword,
            nodes.Test,
        )
    ):
        problems += _check_node(node, source)
    if names is not None:
        allowed = set(names) | CONTEXT_NAMES
        assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
        for node in tree.find_all(nodes.Name):
            if node.ctx == "load" and node.name not in allowed and node.name not in assigned:
                from engine.errors import did_you_mean

                problems.append(
                    f"unknown name `{node.name}` in `{source}`{did_you_mean(node.name, allowed)}"
                )
    if resolve is not None:
        for path in _paths(tree):
            message = resolve(path)
            if message:
                problems.append(message)
    return list(dict.fromkeys(problems))


def _check_node(node: nodes.Node, source: str) -> list[str]:
    if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
        return [f"`{source}` reaches the hidden attribute `{node.attr}`"]
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        if isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
            return [f"`{source}` reaches the hidden attribute `{node.arg.value}`"]
    if isinstance(node, nodes.Keyword) and isinstance(node.value, nodes.Const):
        if isinstance(node.value.value, str) and node.value.value.startswith("_"):
            return [f"`{source}` reaches the hidden attribute `{node.value.value}`"]
    if isinstance(node, nodes.Call):
        if not (isinstance(node.node, nodes.Name) and node.node.name in HELPERS):
            callee = (
                node.node.name
                if isinstance(node.node, nodes.Name)
                else getattr(node.node, "attr", "?")
            )
            return [f"`{source}` calls `{callee}`: only {', '.join(sorted(HELPERS))} may be called"]
    if isinstance(node, nodes.Filter) and node.name not in ENV.filters:
        return [f"`{source}` uses an unknown filter `{node.name}`"]
    if isinstance(node, nodes.Test) and node.name not in ENV.tests:
        return [f"`{source}` uses an unknown test `{node.name}`"]
    if isinstance(node, nodes.Pow) and isinstance(node.right, nodes.Const):
        if isinstance(node.right.value, (int, float)) and abs(node.right.value) > MAX_POWER:
            return [f"`{source}`: a power above {MAX_POWER} is not allowed"]
    if isinstance(node, nodes.Mul):
        for side in (node.left, node.right):
            if (
                isinstance(side, nodes.Const)
                and isinstance(side.value, int)
                and side.value > MAX_SEQUENCE
            ):
                other = node.right if side is node.left else node.left
                if isinstance(other, (nodes.Const, nodes.List, nodes.Tuple)) and not isinstance(
                    getattr(other, "value", None), (int, float)
                ):
                    return [f"`{source}` would build a value too large"]
    return []


def _paths(tree: nodes.Node) -> list[list[str]]:
    """Dotted paths rooted at a name: ``doc.customer.phone`` → ['doc', 'customer', 'phone']."""
    out: list[list[str]] = []
    inner: set[int] = set()
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Getattr):
            inner.add(id(node.node))
    for node in tree.find_all(nodes.Getattr):
        if id(node) in inner:
            continue
        path: list[str] = []
        current: nodes.Node = node
        while isinstance(current, nodes.Getattr):
            path.append(current.attr)
            current = current.node
        if isinstance(current, nodes.Name):
            path.append(current.name)
            out.append(list(reversed(path)))
    return out


def truthy(value: Any) -> bool:
    return bool(value) and value is not None


__all__ = [
    "DocView",
    "ExpressionError",
    "check",
    "compile",
    "evaluate",
    "operator",
    "render",
    "truthy",
]
