"""Expressions (``when``, ``if``, ``compute``) and templates (``title``, texts).

Both are Jinja2, evaluated in a sandbox that sees only the document, the user,
the time and a few documented helpers. They are compiled and checked once,
by ``crm check``: a name that is not a field, a call to anything but a helper,
an attribute starting with ``_`` or an oversized operation is a check error,
not a surprise at run time.

The sandbox enforces the same rules again while evaluating, whoever compiled
the source: attributes are read only from documents (fields), mappings (keys),
dates, numbers and loop variables; only the helpers may be called; text
formatting with ``%`` / ``.format`` is refused; operations that could build
huge values (``**``, ``*``, ``+``, ``~``, ``replace``, ``join``) are bounded,
and so are a template's loop iterations and output.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2 import filters as jinja_filters
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.lexer import TOKEN_FLOAT, TOKEN_INTEGER, TOKEN_NAME, TOKEN_STRING, describe_token
from jinja2.parser import Parser
from jinja2.runtime import Context, LoopContext, Undefined, missing
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import pass_context, pass_environment, pass_eval_context
from jinja2.visitor import NodeTransformer

from engine import clock
from engine.errors import a_or_an

#: the context's key for today's date on the company's calendar (no field has
#: such a name, and an expression cannot name it)
TODAY = "_today"


@pass_context
def _today(context: Context) -> dt.date:
    """``today()``: the day the context was made for (where the company is),
    else today in UTC."""
    value = context.get(TODAY)
    return value if isinstance(value, dt.date) else clock.today()


#: callables an expression may use, by name
HELPERS: dict[str, Callable[..., Any]] = {
    "today": _today,
    "days": lambda n: dt.timedelta(days=n),
    "hours": lambda n: dt.timedelta(hours=n),
    "minutes": lambda n: dt.timedelta(minutes=n),
}
#: names every expression sees besides the fields
CONTEXT_NAMES = frozenset({"doc", "user", "now", *HELPERS})
#: Jinja names that would reach the template machinery
FORBIDDEN_NAMES = frozenset({"self", "super", "caller", "varargs", "kwargs"})
#: filters that could reach object internals, format text or produce huge output
FORBIDDEN_FILTERS = frozenset(
    {
        "attr", "xmlattr", "pprint", "indent", "center", "wordwrap", "format",
        "batch", "slice", "urlize",
    }
)  # fmt: skip
#: the longest string or list ``*`` may build
MAX_SEQUENCE = 10_000
#: the largest exponent of ``**``
MAX_POWER = 64
#: the largest integer (in bits) ``*`` and ``**`` may build
MAX_INT_BITS = 4096
#: the longest text or list any operation or filter may build, and a template's output
MAX_TEXT = 1_000_000
#: loop iterations one template may run, all loops together
MAX_LOOP_STEPS = 100_000
#: how deeply an expression may nest (Python compiles what Jinja generates)
MAX_DEPTH = 50
#: the longest expression or template metadata may hold: compiling is slow beyond it
#: (a 400 KB template takes seconds), and no formula or title needs more
MAX_SOURCE = 10_000

#: template statements a template may use; anything else ({% macro %},
#: {% include %}, {% set x %}...{% endset %}, ...) is refused
_ALLOWED_STATEMENTS = (nodes.Output, nodes.For, nodes.If, nodes.With, nodes.Assign)
_TAGS = {
    nodes.Extends: "extends", nodes.Macro: "macro", nodes.CallBlock: "call",
    nodes.FilterBlock: "filter", nodes.Block: "block", nodes.Include: "include",
    nodes.Import: "import", nodes.FromImport: "from", nodes.ExprStmt: "do",
    nodes.AssignBlock: "set … endset", nodes.Continue: "continue", nodes.Break: "break",
    nodes.EvalContextModifier: "autoescape", nodes.Scope: "scope",
}  # fmt: skip
#: expression nodes the parser produces and the sandbox handles
_ALLOWED_EXPRESSIONS = (
    nodes.Const, nodes.TemplateData, nodes.Name, nodes.Getattr, nodes.Getitem, nodes.Slice,
    nodes.Tuple, nodes.List, nodes.Dict, nodes.CondExpr, nodes.Filter, nodes.Test,
    nodes.Call, nodes.Compare, nodes.BinExpr, nodes.UnaryExpr, nodes.Concat,
)  # fmt: skip
#: filters whose arguments name attributes: filter → positions of such arguments
_ATTRIBUTE_ARGS = {
    "map": (), "sort": (2,), "groupby": (0,), "selectattr": (0,), "rejectattr": (0,),
    "sum": (0,), "min": (1,), "max": (1,), "unique": (1,), "join": (1,), "dictsort": (),
}  # fmt: skip
#: types whose plain (non-method) attributes an expression may read
_READABLE = (bool, int, float, Decimal, str, dt.date, dt.time, dt.timedelta, LoopContext)


class ExpressionError(ValueError):
    """An expression that cannot be compiled or evaluated; the message is for the user."""


# --- guarded operations ------------------------------------------------------------


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, list, tuple)) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _binop(op: str, left: Any, right: Any) -> Any:
    """``left op right`` for the operators the sandbox intercepts, within bounds."""
    if op == "**":
        if _is_number(right) and abs(right) > MAX_POWER:
            raise SecurityError(f"a power above {MAX_POWER} is not allowed")
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            if left.bit_length() * right > MAX_INT_BITS:
                raise SecurityError("the number would be too large")
        return left**right
    if op == "*":
        for seq, count in ((left, right), (right, left)):
            if _size(seq) is not None and isinstance(count, int):
                if len(seq) * count > MAX_SEQUENCE:
                    raise SecurityError("the result would be too long")
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise SecurityError("the number would be too large")
        return left * right
    if op == "+":
        a, b = _size(left), _size(right)
        if a is not None and b is not None and a + b > MAX_TEXT:
            raise SecurityError("the result would be too long")
        return left + right
    if op == "%":
        if isinstance(left, str):
            raise SecurityError("formatting text with `%` is not allowed: join text with `~`")
        return left % right
    return {"-": operator.sub, "/": operator.truediv, "//": operator.floordiv}[op](left, right)


def _limit(value: Any) -> Any:
    size = _size(value)
    if size is not None and size > MAX_TEXT:
        raise SecurityError("the result would be too long")
    return value


@pass_context
def _loop(context: Context, iterable: Any) -> Iterator[Any]:
    """Every ``{% for %}`` iterates through this: loops of one render share a budget."""
    if iterable is None or isinstance(iterable, Undefined):
        return
    for item in iterable:
        steps = getattr(context, "steps", 0) + 1
        if steps > MAX_LOOP_STEPS:
            raise SecurityError(f"the template runs more than {MAX_LOOP_STEPS} loop steps")
        context.steps = steps  # type: ignore[attr-defined]
        yield item


def _bounded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose result is refused when it is too long."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return _limit(fn(*args, **kwargs))

    return run


@pass_eval_context
def _replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> Any:
    text, old_s, new_s = str(s), str(old), str(new)
    hits = text.count(old_s) if count is None or count < 0 else min(count, text.count(old_s))
    if len(text) + hits * max(0, len(new_s) - len(old_s)) > MAX_TEXT:
        raise SecurityError("the result would be too long")
    return jinja_filters.do_replace(eval_ctx, s, old, new, count)


@pass_eval_context
def _join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    items = list(value)
    if attribute is not None:
        getter = jinja_filters.make_attrgetter(eval_ctx.environment, attribute)
        items = [getter(item) for item in items]
    total = len(str(d)) * max(0, len(items) - 1)
    for item in items:
        total += len(item) if isinstance(item, str) else len(str(item))
        if total > MAX_TEXT:
            raise SecurityError("the result would be too long")
    return jinja_filters.sync_do_join(eval_ctx, items, d)


@pass_environment
def _sum(environment: Any, iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
    if not (_is_number(start) or isinstance(start, dt.timedelta)):
        raise SecurityError("`sum` adds numbers: its start must be a number")
    return jinja_filters.sync_do_sum(environment, iterable, attribute, start)


# --- the sandbox --------------------------------------------------------------------


class _Context(Context):
    """A name nothing defines is None, like an empty field."""

    steps = 0

    def resolve_or_missing(self, key: str) -> Any:
        value = super().resolve_or_missing(key)
        return None if value is missing else value


class _Guard(NodeTransformer):
    """Routes loops through the step budget and ``~`` through the length limit."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_loop", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(node, "_limit", [], [], None, None, lineno=node.lineno)


class _Env(SandboxedEnvironment):
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    context_class = _Context

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return _readable(obj, attr, value)

    def is_safe_callable(self, obj: Any) -> bool:
        return any(obj is helper for helper in HELPERS.values())

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        return _binop(operator_, left, right)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if obj is None or isinstance(obj, Undefined):
            return self.undefined(obj=obj, name=argument)
        if isinstance(argument, str):
            return self.getattr(obj, argument)
        if isinstance(obj, (DocView, Mapping)):
            return self._item(obj, argument)
        try:
            return obj[argument]
        except (TypeError, LookupError):
            return self.undefined(obj=obj, name=argument)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if not isinstance(attribute, str) or attribute.startswith("_"):
            raise SecurityError(f"`{attribute}` is hidden from expressions")
        if obj is None or isinstance(obj, Undefined):
            return self.undefined(obj=obj, name=attribute)
        if isinstance(obj, (DocView, Mapping)):
            return self._item(obj, attribute)
        try:
            value = getattr(obj, attribute)
        except AttributeError:
            if isinstance(obj, _READABLE) or _is_named_tuple(obj):
                return self.undefined(obj=obj, name=attribute)
            value = None
        if not _readable(obj, attribute, value):
            if callable(value):
                raise SecurityError(
                    f"`{attribute}` is a method: expressions may call only "
                    f"{', '.join(sorted(HELPERS))}"
                )
            raise SecurityError(
                f"cannot read `{attribute}` of {a_or_an(type(obj).__name__)}: expressions read "
                "fields of documents, dates and numbers"
            )
        return value

    def _item(self, obj: DocView | Mapping[Any, Any], key: Any) -> Any:
        if isinstance(obj, DocView):
            if isinstance(key, str) and key in obj._fields:
                return obj._get(key)
            return self.undefined(obj=obj, name=key)
        try:
            return obj[key]
        except (TypeError, LookupError):
            return self.undefined(obj=obj, name=key)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(f"`{attribute}` is not readable in an expression")

    def wrap_str_format(self, value: Any) -> None:
        return None

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if not __self.is_safe_callable(__obj):
            raise SecurityError(f"expressions may call only {', '.join(sorted(HELPERS))}")
        return __context.call(__obj, *args, **kwargs)

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        problems = _safety_problems(source)
        if problems:
            raise SecurityError(problems[0])
        source = _Guard().visit(source)
        source.set_environment(self)
        return super()._generate(source, name, filename, defer_init=defer_init)


def _is_named_tuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(type(obj), "_fields")


def _readable(obj: Any, attr: str, value: Any) -> bool:
    if attr.startswith("_") or callable(value):
        return False
    return isinstance(obj, _READABLE) or _is_named_tuple(obj)


def _finalize(value: Any) -> Any:
    """``{{ empty_field }}`` prints nothing, not ``None``."""
    return "" if value is None else value


ENV = _Env(autoescape=False, finalize=_finalize)
ENV.globals.clear()
ENV.globals.update(HELPERS)
for _name in FORBIDDEN_FILTERS:
    ENV.filters.pop(_name, None)
for _name in list(ENV.filters):
    ENV.filters[_name] = _bounded(ENV.filters[_name])
ENV.filters.update(replace=_replace, join=_join, sum=_sum, _loop=_loop, _limit=_limit)


class DocView(Mapping[str, Any]):
    """What an expression sees of a record: its fields by name, nothing else.

    ``{{ customer }}`` prints the referenced record's title; table fields are
    lists of row views; values come from an ORM object or a plain dict.
    Without ``wrap``, values that are engine records (or lists of them)
    become views themselves, see :func:`view`.
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
        if name == "id" and "id" not in self._fields:
            # every record's number: `{{ doc.id }}`, `doc.manager.id` for a ref's value
            return (
                self._values.get("id")
                if isinstance(self._values, Mapping)
                else getattr(self._values, "id", None)
            )
        if name not in self._fields:
            raise KeyError(name)
        raw = (
            self._values.get(name)
            if isinstance(self._values, Mapping)
            else getattr(self._values, name, None)
        )
        return self._wrap(name, raw) if self._wrap else view(raw)

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

    def __repr__(self) -> str:
        try:
            return f"<{self}>"
        except Exception:  # a title that fails must not hide the real error
            return f"<DocView of {', '.join(self._fields[:5])}>"

    def __bool__(self) -> bool:
        return True


#: columns of a user record an expression may read (never the password)
USER_FIELDS = ("id", "username", "first_name", "last_name", "email", "active")


def view(value: Any) -> Any:
    """A value as expressions see it: an engine record (an instance of a class
    built by :mod:`engine.models`) becomes a :class:`DocView` of its fields,
    titled by its type's ``title``; a table's rows become views of their
    columns; a Flask-AppBuilder user shows only :data:`USER_FIELDS`.
    Anything else is returned as it is."""
    if value is None or isinstance(value, (DocView, Mapping, str, int, float, Decimal)):
        return value
    if isinstance(value, (dt.date, dt.time, dt.timedelta)):
        return value
    if isinstance(value, (list, tuple)):
        return [view(v) for v in value]
    cls = type(value)
    doctype = getattr(cls, "__doctype__", None)
    if doctype is not None:
        fields = dict.fromkeys(("id", *doctype.fields))
        return DocView(value, fields, title=_title_of(doctype))
    table = getattr(cls, "__table__", None)
    if table is not None:
        if table.name == "ab_user":
            return DocView(value, [n for n in USER_FIELDS if n in table.c])
        try:
            from sqlalchemy import inspect

            attrs = [a.key for a in inspect(cls).attrs]
        except Exception:  # not a mapped class: show nothing of it
            return value
        hidden = {"parent_id", "idx", "password"}
        return DocView(value, [a for a in attrs if a not in hidden and not a.startswith("_")])
    return value


def _title_of(doctype: Any) -> Callable[[DocView], str] | None:
    if not doctype.title:
        return None
    return lambda v: render(doctype.title, context_for(v))


class Compiled:
    """One checked expression or template, ready to evaluate many times."""

    def __init__(self, source: str, template: bool):
        self.source = source
        self.template = template
        try:
            self._fn = (
                ENV.from_string(source)
                if template
                else ENV.compile_expression(source, undefined_to_none=True)
            )
        except (TemplateError, RecursionError, SyntaxError, MemoryError) as exc:
            raise ExpressionError(f"`{source}` cannot be used: {exc}") from exc

    def __call__(self, context: Mapping[str, Any]) -> Any:
        try:
            if self.template:
                return self._render(context)
            return self._fn(**context)  # type: ignore[operator]
        except (
            TemplateError,
            TypeError,
            ValueError,
            ArithmeticError,
            AttributeError,
            LookupError,
            RecursionError,
        ) as exc:
            raise ExpressionError(f"`{self.source}` failed: {exc}") from exc

    def _render(self, context: Mapping[str, Any]) -> str:
        out: list[str] = []
        size = 0
        for piece in self._fn.generate(context):  # type: ignore[union-attr]
            size += len(piece)
            if size > MAX_TEXT:
                raise SecurityError(f"the text would be longer than {MAX_TEXT} characters")
            out.append(piece)
        return "".join(out)


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


def context_for(
    doc: Any, user: Any = None, now: dt.datetime | None = None, tz: dt.tzinfo | None = None
) -> dict[str, Any]:
    """The names an expression over ``doc`` sees: its fields, ``doc``, ``user``, ``now``
    (and ``today()`` on the calendar of ``tz``, the company's time zone)."""
    doc = view(doc)
    ctx: dict[str, Any] = {name: doc[name] for name in doc} if isinstance(doc, Mapping) else {}
    ctx.update(doc=doc, user=view(user), now=now or clock.now())
    if tz is not None:
        ctx[TODAY] = ctx["now"].astimezone(tz).date()
    return ctx


# --- checking -----------------------------------------------------------------------


LITERALS = (TOKEN_NAME, TOKEN_INTEGER, TOKEN_FLOAT, TOKEN_STRING)


def _parse(source: str, template: bool) -> nodes.Template:
    """The syntax tree, without the sandbox's checks (``check`` reports those)."""
    if template:
        return Parser(ENV, source).parse()
    parser = Parser(ENV, source, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        token = parser.stream.current
        shown = str(token.value) if token.type in LITERALS else describe_token(token)
        raise TemplateSyntaxError(f"unexpected {shown!r} after the expression", token.lineno)
    return nodes.Template([nodes.Output([expr], lineno=1)], lineno=1)


def _syntax_message(source: str, exc: TemplateSyntaxError, template: bool) -> str:
    what = "template" if template else "expression"
    message = (exc.message or "invalid syntax").rstrip(".")
    tokens = {"end of print statement": "`}}`", "end of statement block": "`%}`", "name": "a name"}
    early = re.fullmatch(r"unexpected '?end of template'?(?:, expected '(.+)')?", message)
    if early:
        wanted = early.group(1)
        message = (
            f"it ends too early: {tokens.get(wanted, f'`{wanted}`')} is missing"
            if wanted
            else "it ends too early: a value or a closing bracket is missing"
        )
    elif message.startswith("Unexpected end of template"):
        message = "it ends too early" + message[len("Unexpected end of template") :]
    for token, shown in tokens.items():
        message = message.replace(f"'{token}'", shown)
    where = f" (line {exc.lineno})" if template and "\n" in source.strip() else ""
    return f"`{source}` is not a valid {what}{where}: {message}"


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
        return [f"{'a template' if template else 'an expression'} must not be empty"]
    if len(source) > MAX_SOURCE:
        return [
            f"{'the template' if template else 'the expression'} `{source[:40]}…` has "
            f"{len(source)} characters; at most {MAX_SOURCE} are allowed"
        ]
    try:
        return _check(source, template, names, resolve)
    except RecursionError:
        return [f"`{source[:60]}…` is nested too deeply"]


def _check(
    source: str,
    template: bool,
    names: Collection[str] | None,
    resolve: Callable[[list[str]], str | None] | None,
) -> list[str]:
    try:
        tree = _parse(source, template)
    except TemplateSyntaxError as exc:
        return [_syntax_message(source, exc, template)]
    problems = [f"`{source}` {message}" for message in _safety_problems(tree)]
    if _too_deep(tree):
        return problems
    if names is not None:
        problems += _shadowed(tree, source, names)
        allowed = set(names) | CONTEXT_NAMES | ({"loop"} if template else set())
        assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
        for node in tree.find_all(nodes.Name):
            if node.name in FORBIDDEN_NAMES or node.name.startswith("_"):
                continue  # reported above
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


#: what a bare ``doc``, ``user`` or ``now`` is in an expression, whatever the fields are called
_BUILT_IN = {"doc": "the record itself", "user": "the signed-in user", "now": "the current time"}


def _shadowed(tree: nodes.Node, source: str, names: Collection[str]) -> list[str]:
    """A field called ``user`` (or ``doc``, ``now``) is not what a bare ``user``
    reads, and a field called ``today`` (or ``days``...) hides the helper: say
    what to write instead."""
    problems: list[str] = []
    # `user.username` reads the signed-in user; an expression that writes
    # `doc.user` somewhere already tells the two apart
    based = {id(n.node) for n in tree.find_all(nodes.Getattr)}
    based |= {id(n.node) for n in tree.find_all(nodes.Getitem)}
    explicit = {
        n.attr
        for n in tree.find_all(nodes.Getattr)
        if isinstance(n.node, nodes.Name) and n.node.name == "doc"
    }
    explicit |= {
        n.arg.value
        for n in tree.find_all(nodes.Getitem)
        if isinstance(n.node, nodes.Name)
        and n.node.name == "doc"
        and isinstance(n.arg, nodes.Const)
    }
    for node in tree.find_all(nodes.Name):
        if id(node) in based or node.name in explicit:
            continue
        if node.ctx == "load" and node.name in _BUILT_IN and node.name in names:
            problems.append(
                f"`{node.name}` in `{source}` is {_BUILT_IN[node.name]}, not the field "
                f"`{node.name}`: write `doc.{node.name}` for the field"
            )
    for call in tree.find_all(nodes.Call):
        name = call.node.name if isinstance(call.node, nodes.Name) else None
        if name in HELPERS and name in names:
            problems.append(
                f"`{name}()` cannot be used in `{source}`: the field `{name}` of this record "
                "hides it; rename the field to use the helper"
            )
    return problems


def _safety_problems(tree: nodes.Node) -> list[str]:
    """What the sandbox refuses in a tree, as phrases following the source."""
    if _too_deep(tree):
        return [f"is nested too deeply (more than {MAX_DEPTH} levels)"]
    problems: list[str] = []
    for node in tree.find_all(nodes.Node):
        problems += _check_node(node)
    return list(dict.fromkeys(problems))


def _too_deep(tree: nodes.Node) -> bool:
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())
    return False


def _hidden(value: Any) -> str | None:
    """The hidden part of an attribute name such as ``customer.__class__``."""
    if isinstance(value, str):
        for part in value.split("."):
            if part.startswith("_"):
                return part
    return None


def _check_node(node: nodes.Node) -> list[str]:
    helpers = ", ".join(sorted(HELPERS))
    if isinstance(node, nodes.Stmt) and not isinstance(node, _ALLOWED_STATEMENTS):
        tag = _TAGS.get(type(node), type(node).__name__.lower())
        return [f"uses `{{% {tag} %}}`, which expressions and templates may not use"]
    if isinstance(node, nodes.Expr) and not isinstance(node, _ALLOWED_EXPRESSIONS):
        return [f"uses a construct that expressions may not use ({type(node).__name__})"]
    if isinstance(node, nodes.Name):
        if node.name in FORBIDDEN_NAMES:
            return [f"uses `{node.name}`, which is not available in expressions"]
        if node.name.startswith("_"):
            return [f"reaches the hidden name `{node.name}`"]
        if node.ctx in ("store", "param") and node.name in CONTEXT_NAMES:
            return [f"reassigns `{node.name}`, a name the engine provides"]
        return []
    if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
        return [f"reaches the hidden attribute `{node.attr}`"]
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        if isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
            return [f"reaches the hidden attribute `{node.arg.value}`"]
    if isinstance(node, nodes.Call):
        if not (isinstance(node.node, nodes.Name) and node.node.name in HELPERS):
            callee = (
                node.node.name
                if isinstance(node.node, nodes.Name)
                else getattr(node.node, "attr", "?")
            )
            return [f"calls `{callee}`: only {helpers} may be called"]
    if isinstance(node, nodes.Filter):
        return _check_filter(node)
    if isinstance(node, nodes.Test) and node.name not in ENV.tests:
        return [f"uses an unknown test `{node.name}`"]
    if isinstance(node, nodes.BinExpr):
        return _check_binop(node)
    return []


def _check_filter(node: nodes.Filter) -> list[str]:
    if node.name in FORBIDDEN_FILTERS:
        return [f"uses the filter `{node.name}`, which expressions may not use"]
    if node.name not in ENV.filters or node.name.startswith("_"):
        return [f"uses an unknown filter `{node.name}`"]
    positions = _ATTRIBUTE_ARGS.get(node.name)
    if positions is None:
        return []
    values = [kw.value for kw in node.kwargs if kw.key == "attribute"]
    values += [node.args[i] for i in positions if i < len(node.args)]
    for value in values:
        hidden = isinstance(value, nodes.Const) and _hidden(value.value)
        if hidden:
            return [f"reaches the hidden attribute `{hidden}`"]
    if node.name == "map" and node.args and isinstance(node.args[0], nodes.Const):
        name = node.args[0].value
        if name in FORBIDDEN_FILTERS or name not in ENV.filters or str(name).startswith("_"):
            return [f"maps with the filter `{name}`, which expressions may not use"]
    return []


class _NotStatic(Exception):
    pass


def _static(node: nodes.Node) -> Any:
    """The value of a constant expression (``10 ** 8``, ``[1] * 3``), computed
    with the sandbox's bounds; _NotStatic when it depends on data."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, (nodes.List, nodes.Tuple)):
        items = [_static(item) for item in node.items]
        return items if isinstance(node, nodes.List) else tuple(items)
    if isinstance(node, nodes.Neg):
        return -_static(node.node)
    if isinstance(node, nodes.Pos):
        return +_static(node.node)
    if isinstance(node, nodes.BinExpr) and node.operator in _Env.intercepted_binops:
        left, right = _static(node.left), _static(node.right)
        try:
            return _binop(node.operator, left, right)
        except SecurityError:
            raise
        except Exception as exc:  # 1/0 and the like: an error at run time
            raise _NotStatic from exc
    raise _NotStatic


def _check_binop(node: nodes.BinExpr) -> list[str]:
    try:
        _static(node)
    except SecurityError as exc:
        return [_phrase(str(exc))]
    except _NotStatic:
        pass
    sides = []
    for side in (node.left, node.right):
        try:
            sides.append(_static(side))
        except (_NotStatic, SecurityError):
            sides.append(missing)
    left, right = sides
    if node.operator == "%" and isinstance(left, str):
        return [_phrase("formatting text with `%` is not allowed: join text with `~`")]
    if node.operator == "**" and _is_number(right) and abs(right) > MAX_POWER:
        return [_phrase(f"a power above {MAX_POWER} is not allowed")]
    return []


def _phrase(message: str) -> str:
    """A sandbox message as a phrase following the source."""
    if message == "the result would be too long":
        return "would build a value too large"
    if message == "the number would be too large":
        return "would build a number too large"
    return f"is refused: {message}"


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
    "context_for",
    "evaluate",
    "operator",
    "render",
    "truthy",
    "view",
]
