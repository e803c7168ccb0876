"""Safe YAML loading that remembers where every node came from.

Metadata is untrusted input: no Python tags, no custom tags, a cap on aliases
(the "billion laughs" bomb), on nesting depth and on file size. The result is
plain dicts, lists and scalars; maps and lists remember the line and column
of each key and value so that later checks can point at the YAML.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
    SequenceEndEvent,
)

from engine.errors import Loc, Problem

MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_ALIASES = 100
MAX_DEPTH = 50
#: Aliases share nodes; expanded they may still multiply (nine aliases of nine...).
MAX_NODES = 200_000
#: Tags a consultant may write; anything else (``!!python/...``, ``!foo``) is refused.
ALLOWED_TAGS = {
    None,
    "!",
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:merge",
}
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: ``rule(keys, name)``: why the environment variable ``name`` may not be read at the
#: value the ``keys`` lead to (``("plugins", "mail", "password")``), or None
EnvRule = Callable[[tuple[Any, ...], str], "str | None"]
#: a metadata file is shown as written: it reads no environment
IN_METADATA = "environment references (`${{{name}}}`) belong in config.yaml, not in metadata"


class LMap(dict):
    """A mapping that knows where it, its keys and its values are."""

    loc: Loc
    key_locs: dict[Any, Loc]
    value_locs: dict[Any, Loc]

    def key_loc(self, key: Any) -> Loc:
        return self.key_locs.get(key, self.loc)

    def value_loc(self, key: Any) -> Loc:
        return self.value_locs.get(key, self.key_loc(key))


class LList(list):
    """A list that knows where it and each item are."""

    loc: Loc
    item_locs: list[Loc]

    def item_loc(self, index: int) -> Loc:
        if 0 <= index < len(self.item_locs):
            return self.item_locs[index]
        return self.loc


def loc_of(node: Any, default: Loc) -> Loc:
    return getattr(node, "loc", default)


class LoadResult:
    def __init__(self, data: Any, problems: list[Problem], env_refs: set[str]):
        self.data = data
        self.problems = problems
        self.env_refs = env_refs
        self.nodes = 0


class _TooLarge(Exception):
    def __init__(self, where: Loc):
        self.where = where


#: plain scalars that YAML reads as something other than text (``1``, ``true``, ``~``)
_NOT_TEXT = re.compile(
    r"[-+]?(\.?[0-9][0-9_.eExXoObB+-]*|\.inf|\.Inf|\.INF|\.nan|\.NaN|\.NAN)"
    r"|true|True|TRUE|false|False|FALSE|null|Null|NULL|~|"
)


class _Collection:
    """One open map or list while prescanning: for nesting, duplicate keys and sizes."""

    def __init__(self, is_map: bool, anchor: str | None, start: int):
        self.is_map = is_map
        self.anchor = anchor
        self.start = start
        self.expect_key = True
        self.keys: dict[tuple[bool, str], int] = {}


def _show_tag(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:") :] if tag.startswith("tag:yaml.org,2002:") else tag


def _prescan(text: str, name: str) -> list[Problem]:
    """Walk the parser's events before constructing anything.

    Refuses tags other than the plain YAML ones, more than ``MAX_ALIASES``
    aliases, nesting deeper than ``MAX_DEPTH`` and aliases that would expand
    the file beyond ``MAX_NODES`` values (the "billion laughs" bomb): all in
    time proportional to the text, not to what it would expand to. Duplicate
    keys are reported with both lines, every one of them.
    """
    problems: list[Problem] = []
    aliases = 0
    total = 0
    sizes: dict[str, int] = {}
    stack: list[_Collection] = []

    def node(key: tuple[bool, str] | None, line: int, where: Loc) -> None:
        """A complete node (scalar, alias or closed collection) inside the open one."""
        if not stack:
            return
        top = stack[-1]
        if top.is_map and top.expect_key and key is not None and key[1] != "<<":
            first = top.keys.get(key)
            if first is None:
                top.keys[key] = line
            else:
                problems.append(
                    Problem(
                        where,
                        f"the key `{key[1]}` appears twice in one map (first at line {first})",
                    )
                )
        if top.is_map:
            top.expect_key = not top.expect_key

    for event in YAML(typ="rt").parse(io.StringIO(text)):
        mark = event.start_mark
        where = Loc(name, mark.line + 1, mark.column + 1)
        if isinstance(event, NodeEvent) and not isinstance(event, AliasEvent):
            tag = getattr(event, "tag", None)
            tag = str(tag) if tag is not None else None
            if tag not in ALLOWED_TAGS:
                return [
                    Problem(where, f"the tag `{_show_tag(tag or '')}` is not allowed in metadata")
                ]
        if isinstance(event, AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                return [Problem(where, f"more than {MAX_ALIASES} aliases in one file")]
            total += sizes.get(event.anchor, 1)
            if total > MAX_NODES:
                return [
                    Problem(
                        where,
                        f"aliases would expand the file to more than {MAX_NODES} values "
                        '(a "billion laughs" bomb?)',
                    )
                ]
            node(None, mark.line + 1, where)
        elif isinstance(event, ScalarEvent):
            total += 1
            if event.anchor:
                sizes[event.anchor] = 1
            plain = event.style is None and bool(_NOT_TEXT.fullmatch(event.value))
            node((plain, event.value), mark.line + 1, where)
        elif isinstance(event, CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                return [Problem(where, f"nesting deeper than {MAX_DEPTH} levels")]
            total += 1
            stack.append(_Collection(isinstance(event, MappingStartEvent), event.anchor, total))
        elif isinstance(event, (MappingEndEvent, SequenceEndEvent)):
            closed = stack.pop()
            if closed.anchor:
                sizes[closed.anchor] = total - closed.start + 1
            node(None, mark.line + 1, where)
    return problems


class _Env:
    """The environment a file may read, and where (None: it reads none)."""

    def __init__(self, values: Mapping[str, str], rule: EnvRule | None):
        self.values = values
        self.rule = rule


def _convert(
    node: Any, name: str, env: _Env, state: LoadResult, where: Loc, keys: tuple[Any, ...] = ()
) -> Any:
    """ruamel's round-trip objects → LMap/LList/scalars, substituting ``${NAME}``."""
    state.nodes += 1
    if state.nodes > MAX_NODES:
        raise _TooLarge(where)
    if isinstance(node, dict):
        out = LMap()
        out.loc = _node_loc(node, name, where)
        out.key_locs, out.value_locs = {}, {}
        for key, value in node.items():
            try:
                kl, kc, vl, vc = _map_positions(node, key)
                key_where, value_where = Loc(name, kl + 1, kc + 1), Loc(name, vl + 1, vc + 1)
            except (KeyError, TypeError, AttributeError):
                key_where = value_where = out.loc
            if not isinstance(key, (str, int, bool)) or key is None:
                state.problems.append(Problem(key_where, "a key must be a plain word"))
                continue
            out.key_locs[key] = key_where
            out.value_locs[key] = value_where
            out[key] = _convert(value, name, env, state, value_where, (*keys, key))
        return out
    if isinstance(node, list):
        out_list = LList()
        out_list.loc = _node_loc(node, name, where)
        out_list.item_locs = []
        for index, value in enumerate(node):
            try:
                line, col = _item_position(node, index)
                item_where = Loc(name, line + 1, col + 1)
            except (KeyError, TypeError, AttributeError, IndexError):
                item_where = out_list.loc
            out_list.item_locs.append(item_where)
            out_list.append(_convert(value, name, env, state, item_where, (*keys, index)))
        return out_list
    if isinstance(node, str):
        return _substitute(str(node), env, state, where, keys)
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return str(node)


def _node_loc(node: Any, name: str, where: Loc) -> Loc:
    try:
        return Loc(name, node.lc.line + 1, node.lc.col + 1)
    except AttributeError:
        return where


def _item_position(node: Any, index: int) -> tuple[int, int]:
    """Line and column (0-based) of a sequence's item, as ruamel.yaml keeps them."""
    line, col = node.lc.item(index)
    return line, col


def _map_positions(node: Any, key: Any) -> tuple[int, int, int, int]:
    kl, kc = node.lc.key(key)
    try:
        vl, vc = node.lc.value(key)
    except (KeyError, TypeError):
        vl, vc = kl, kc
    return kl, kc, vl, vc


def _substitute(text: str, env: _Env, state: LoadResult, where: Loc, keys: tuple[Any, ...]) -> str:
    def repl(match: re.Match[str]) -> str:
        var = match.group(1)
        state.env_refs.add(var)
        why = IN_METADATA.format(name=var) if env.rule is None else env.rule(keys, var)
        if why is not None:
            state.problems.append(Problem(where, why))
            return ""
        if var not in env.values:
            state.problems.append(Problem(where, f"the environment variable `{var}` is not set"))
            return ""
        return env.values[var]

    return ENV_REF.sub(repl, text) if "${" in text else text


#: ruamel's words for what it was reading → a consultant's words
_CONTEXTS = {
    "flow mapping": "the `{` map",
    "flow sequence": "the `[` list",
    "block mapping": "the map",
    "block collection": "the list",
    "quoted scalar": "the quoted text",
}


def _yaml_message(exc: MarkedYAMLError) -> str:
    """A YAML syntax error in words a consultant can act on."""
    problem = (exc.problem or exc.context or "invalid YAML").strip()
    context = (exc.context or "").strip()
    cm = exc.context_mark
    if "duplicate key" in problem:
        return "YAML: " + problem.split(" with value")[0]
    if "'\\t'" in problem or "'\t'" in problem:
        return "YAML: a tab cannot indent YAML; use spaces"
    if problem == "mapping values are not allowed here":
        return "YAML: a `: ` is not allowed here; put quotes around a value that holds one"
    if "another document" in problem:
        return "YAML: a metadata file holds one document; remove the `---` line"
    start = re.fullmatch(r"found character '(.)' that cannot start any token", problem)
    if start:
        return f"YAML: a value cannot start with `{start.group(1)}`; put it in quotes"
    what = next((w for k, w in _CONTEXTS.items() if context.endswith(k)), None)
    if what is None or cm is None:
        return f"YAML: {problem}"
    opened = f"{what} that starts at line {cm.line + 1}"
    found = re.search(r"but (?:found|got) '(.+)'$", problem)
    token = found.group(1) if found else ""
    if "<block end>" in problem and token in ("}", "]"):
        return f"YAML: `{token}` closes nothing (in {opened})"
    if "<block end>" in problem:
        return f"YAML: this line is not indented like the rest of {opened}"
    if "end of stream" in problem or "<stream end>" in problem:
        return f"YAML: {opened} is never closed"
    return f"YAML: {problem} (in {opened})"


DATE_LIKE = re.compile(r"(?<![\w.-])(\d{4})-(\d{1,2})-(\d{1,2})(?![\w.-])")


def _bad_date(text: str, name: str, exc: ValueError) -> Problem:
    """Where the YAML holds a date that does not exist, and what is wrong with it."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        for m in DATE_LIKE.finditer(line):
            try:
                dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            except ValueError as why:
                return Problem(
                    Loc(name, lineno, m.start() + 1),
                    f"`{m.group(0)}` is not a date ({why}); put it in quotes if it is text",
                )
    return Problem(Loc(name, 1, 1), f"YAML: a value cannot be read: {exc}")


@functools.lru_cache(maxsize=128)
def _parse(text: str, name: str) -> tuple[Any, tuple[Problem, ...]]:
    """The parsed document, or the problems that stopped it. Parsing is most
    of a start-up's time and the same files (the base layer, a plugin's)
    are read by every app a process builds: the result is kept, keyed by
    the text itself. ``_convert`` only reads it."""
    try:
        problems = _prescan(text, name)
        if problems:
            return None, tuple(problems)
        yaml = YAML(typ="rt")
        yaml.allow_duplicate_keys = False
        return yaml.load(text), ()
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return None, (Problem(Loc(name, line, col), _yaml_message(exc)),)
    except YAMLError as exc:
        return None, (Problem(Loc(name, 1, 1), f"YAML: {exc}"),)
    except ValueError as exc:  # a timestamp that is no date (2027-13-01): built unmarked
        return None, (_bad_date(text, name, exc),)


def load_text(
    text: str, name: str, env: Mapping[str, str] | None = None, rule: EnvRule | None = None
) -> LoadResult:
    """The file's data. ``${NAME}`` is read from ``env`` (the process's
    environment by default) where ``rule`` allows; without a rule (a metadata
    file) every ``${NAME}`` is a problem."""
    values = os.environ if env is None else env
    state = LoadResult(None, [], set())
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        state.problems.append(
            Problem(Loc(name, 1, 1), f"the file is larger than {MAX_FILE_BYTES // 1024} KiB")
        )
        return state
    raw, problems = _parse(text, name)
    if problems:
        state.problems.extend(problems)
        return state
    try:
        state.data = _convert(raw, name, _Env(values, rule), state, Loc(name, 1, 1))
    except _TooLarge as exc:
        state.problems.append(
            Problem(exc.where, f"the file expands to more than {MAX_NODES} nodes (aliases?)")
        )
    return state


def load_file(
    path: Path, shown_as: str, env: Mapping[str, str] | None = None, rule: EnvRule | None = None
) -> LoadResult:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return LoadResult(
                None,
                [
                    Problem(
                        Loc(shown_as, 1, 1), f"the file is larger than {MAX_FILE_BYTES // 1024} KiB"
                    )
                ],
                set(),
            )
        raw = path.read_bytes()
    except OSError as exc:
        return LoadResult(
            None, [Problem(Loc(shown_as, 1, 1), f"cannot read: {exc.strerror}")], set()
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return LoadResult(None, [_not_utf8(raw, exc, shown_as)], set())
    return load_text(text.removeprefix("\ufeff"), shown_as, env, rule)


def _not_utf8(raw: bytes, exc: UnicodeDecodeError, shown_as: str) -> Problem:
    """Point at the first byte that is not UTF-8: an editor saved the file as cp1251 or latin-1."""
    line_start = raw.rfind(b"\n", 0, exc.start) + 1
    line = raw.count(b"\n", 0, exc.start) + 1
    col = len(raw[line_start : exc.start].decode("utf-8", "replace")) + 1
    return Problem(
        Loc(shown_as, line, col),
        f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x}); save it as UTF-8",
    )
