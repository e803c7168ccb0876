"""Safe YAML loading that remembers where every node came from.

Metadata is untrusted input: no Python tags, no custom tags, a cap on aliases
(the "billion laughs" bomb), on nesting depth and on file size. The result is
plain dicts, lists and scalars; maps and lists remember the line and column
of each key and value so that later checks can point at the YAML.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    MappingEndEvent,
    NodeEvent,
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


def _prescan(text: str, name: str) -> list[Problem]:
    """Walk the parser's events: tags, aliases and depth, before constructing anything."""
    problems: list[Problem] = []
    aliases = 0
    depth = 0
    for event in YAML(typ="rt").parse(io.StringIO(text)):
        mark = event.start_mark
        where = Loc(name, mark.line + 1, mark.column + 1)
        if isinstance(event, NodeEvent):
            tag = getattr(event, "tag", None)
            tag = str(tag) if tag is not None else None
            if tag not in ALLOWED_TAGS:
                return [Problem(where, f"the tag `{tag}` is not allowed in metadata")]
        if isinstance(event, AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                return [Problem(where, f"more than {MAX_ALIASES} aliases in one file")]
        elif isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                return [Problem(where, f"nesting deeper than {MAX_DEPTH} levels")]
        elif isinstance(event, (MappingEndEvent, SequenceEndEvent)):
            depth -= 1
    return problems


def _convert(node: Any, name: str, env: dict[str, str], state: LoadResult, where: Loc) -> Any:
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
            out[key] = _convert(value, name, env, state, value_where)
        return out
    if isinstance(node, list):
        out_list = LList()
        out_list.loc = _node_loc(node, name, where)
        out_list.item_locs = []
        for index, value in enumerate(node):
            try:
                line, col = node.lc.item(index)
                item_where = Loc(name, line + 1, col + 1)
            except (KeyError, TypeError, AttributeError, IndexError):
                item_where = out_list.loc
            out_list.item_locs.append(item_where)
            out_list.append(_convert(value, name, env, state, item_where))
        return out_list
    if isinstance(node, str):
        return _substitute(str(node), env, state, where)
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


def _map_positions(node: Any, key: Any) -> tuple[int, int, int, int]:
    kl, kc = node.lc.key(key)
    try:
        vl, vc = node.lc.value(key)
    except (KeyError, TypeError):
        vl, vc = kl, kc
    return kl, kc, vl, vc


def _substitute(text: str, env: dict[str, str], state: LoadResult, where: Loc) -> str:
    def repl(match: re.Match[str]) -> str:
        var = match.group(1)
        state.env_refs.add(var)
        if var not in env:
            state.problems.append(Problem(where, f"the environment variable `{var}` is not set"))
            return ""
        return env[var]

    return ENV_REF.sub(repl, text) if "${" in text else text


def load_text(text: str, name: str, env: dict[str, str] | None = None) -> LoadResult:
    env = dict(os.environ) if env is None else env
    state = LoadResult(None, [], set())
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        state.problems.append(
            Problem(Loc(name, 1, 1), f"the file is larger than {MAX_FILE_BYTES // 1024} KiB")
        )
        return state
    try:
        state.problems.extend(_prescan(text, name))
        if state.problems:
            return state
        yaml = YAML(typ="rt")
        yaml.allow_duplicate_keys = False
        raw = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = (exc.problem or exc.context or "invalid YAML").strip()
        if "duplicate key" in message:
            message = message.split(" with value")[0]
        state.problems.append(Problem(Loc(name, line, col), f"YAML: {message}"))
        return state
    except YAMLError as exc:
        state.problems.append(Problem(Loc(name, 1, 1), f"YAML: {exc}"))
        return state
    try:
        state.data = _convert(raw, name, env, state, Loc(name, 1, 1))
    except _TooLarge as exc:
        state.problems.append(
            Problem(exc.where, f"the file expands to more than {MAX_NODES} nodes (aliases?)")
        )
    return state


def load_file(path: Path, shown_as: str, env: dict[str, str] | None = None) -> LoadResult:
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
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return LoadResult(None, [Problem(Loc(shown_as, 1, 1), "the file is not UTF-8 text")], set())
    except OSError as exc:
        return LoadResult(
            None, [Problem(Loc(shown_as, 1, 1), f"cannot read: {exc.strerror}")], set()
        )
    return load_text(text, shown_as, env)
