"""Route maps as pictures, and where the running processes stand.

``draw`` lays a route map out as server-side SVG (no script, no outside
service): steps in layers by their longest path from the first step, few
crossings between layers, a shape for what each step does, arrows labelled
with outcomes, and a loop's way back as a dashed curve up between the boxes
(it is laid out like the others, reversed, so it never runs over a step).
Every text of the picture comes from YAML and is escaped. The same
definition gives the same picture, byte for byte.

``in_progress`` counts running instances per process and step in one GROUP
BY, as far as the reader may see them; the page ``/processes/`` shows every
map with those counts, and a record's page shows the map of each of its
recent instances with the steps it stands on highlighted.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import abort, jsonify
from flask_appbuilder import BaseView, expose
from flask_login import login_required
from markupsafe import Markup, escape
from sqlalchemy.orm import object_session

from engine import api
from engine.api import gettext, menu_label

from . import definitions_for
from .definitions import Assignee, Process, Step
from .model import outcome_label

INSTANCE = "ProcessInstance"
#: token states that mean "the instance stands here"
STANDING = ("active", "waiting", "joined")
#: instances of one record whose pictures its page shows
RECORD_INSTANCES = 3


def words(locale: str = "") -> dict[str, str]:
    """The picture's and the page's own words, in the user's language."""
    return {
        "yes": gettext("yes"), "no": gettext("no"), "owner": gettext("owner"),
        "role": gettext("role"), "due": gettext("due"), "wait": gettext("wait"),
        "until": gettext("until"), "start": gettext("start"), "create": gettext("on create"),
        "update": gettext("on change"), "delete": gettext("on delete"),
        "status": gettext("on entering"), "field": gettext("when changed:"),
        "join": gettext("join"), "processes": gettext("Processes"), "maps": gettext("Route maps"),
        "step": gettext("Step"), "in_progress": gettext("In progress"),
        "none": gettext("No route maps in this configuration."),
        "instances": gettext("Running instances"), "map": gettext("Route map"),
        "user": gettext("notification"), "email": gettext("email"), "sms": gettext("SMS"),
    }  # fmt: skip


# --- the picture ------------------------------------------------------------------------

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif"
MARGIN = 16
RANK_GAP = 46  # room between layers for the arrows' labels
NODE_GAP = 30
DUMMY_GAP = 12
BOX_W = 200
DIAMOND_W, DIAMOND_H = 176, 74
BAR_W, BAR_H, JOIN_H = 176, 18, 8
END_R = 15
DUMMY_W = 10
SWEEPS = 8

#: (fill, stroke) per kind; a step where an instance stands gets CURRENT
COLORS = {
    "task": ("#eaf2fb", "#4a78ad"),
    "if": ("#fdf4dc", "#b08a1e"),
    "wait": ("#f1ecfa", "#7657a6"),
    "notify": ("#eaf7ed", "#3a8a4e"),
    "set": ("#f3f3f3", "#7a7a7a"),
    "end": ("#ffffff", "#333333"),
    "parallel": ("#3d4b5c", "#3d4b5c"),
    "join": ("#3d4b5c", "#3d4b5c"),
    "start": ("#333333", "#333333"),
}
OTHER_COLORS = ("#ffffff", "#666666")
CURRENT = ("#ffe3a3", "#d9731a")
BADGE = "#2f6fbf"
EDGE = "#56606b"
TEXT, MUTED = "#1f2933", "#5b6670"

START, JOIN, DUMMY = "\0start", "\0join:", "\0dummy:"
#: a template's ``{{ doc.field ... }}`` (group 1: the field) or any other ``{{ }}``
TEMPLATE = re.compile(r"{{\s*(?:doc\.([A-Za-z_][A-Za-z0-9_]*)\b)?[^}]*}}")


@dataclass
class _Node:
    id: str
    kind: str  # a step's kind, or start / join / dummy
    w: float
    h: float
    step: Step | None = None
    #: text, size, weight, fill
    lines: list[tuple[str, float, str, str]] = field(default_factory=list)
    tip: str = ""
    rank: int = 0
    x: float = 0.0  # centre
    y: float = 0.0  # top


@dataclass
class _Edge:
    src: str
    dst: str
    label: str
    back: bool = False
    chain: list[str] = field(default_factory=list)


def _n(v: float) -> str:
    """A coordinate as SVG text: one decimal at most, the same every time."""
    s = f"{v:.1f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _em(ch: str) -> float:
    """A character's width in ems, on the wide side: no font metrics on the server."""
    if ch in "iljtf.,:;'|!() ":
        return 0.34
    if "а" <= ch <= "я" or ch == "ё":  # Cyrillic lower case, as wide as Latin
        return 0.6 if ch not in "жшщмыюф" else 0.7
    if ch.isupper() or ch in "mwMW@%{}<>=~" or ord(ch) > 0x2FF:
        return 0.7
    return 0.6


def _width(text: str, size: float, bold: bool = False) -> float:
    return sum(_em(ch) for ch in text) * size * (1.08 if bold else 1.0)


def _fit(text: str, px: float, size: float, bold: bool = False) -> str:
    text = " ".join(str(text).split())
    if _width(text, size, bold) <= px:
        return text
    room = px - _width("…", size, bold)
    used, cut = 0.0, 0
    while cut < len(text) and used + _width(text[cut], size, bold) <= room:
        used += _width(text[cut], size, bold)
        cut += 1
    return text[:cut].rstrip() + "…"


@dataclass
class _Words:
    """What the picture says, in the reader's language: the page's words
    (``words``), the labels of the document's fields, states and values and
    of the roles (from ``registry``, when given), the labels of the steps."""

    w: dict[str, str]
    locale: str
    process: Process
    doc: Any = None
    roles: Mapping[str, Any] = field(default_factory=dict)

    def step(self, name: str) -> str:
        s = self.process.steps.get(name)
        return (s.label or name) if s is not None else name

    def field_label(self, name: str) -> str:
        f = self.doc.fields.get(name) if self.doc is not None else None
        return f.label.get(self.locale) if f is not None else name

    def value(self, name: str, value: Any) -> str:
        d = self.doc
        if d is None or not isinstance(value, (str, int)):
            return str(value)
        if d.statuses is not None and name == d.statuses.field:
            state = d.statuses.states.get(str(value))
            return state.label.get(self.locale) if state is not None else str(value)
        f = d.fields.get(name)
        if f is not None and f.type == "enum" and str(value) in f.values:
            return f.values[str(value)].get(self.locale)
        return str(value)

    def who(self, a: Assignee | str | None) -> str:
        if a is None:
            return ""
        if isinstance(a, str):
            return a
        if a.kind == "owner":
            return self.w["owner"]
        if a.kind == "role":
            role = self.roles.get(a.value or "")
            return (
                f"{self.w['role']} {role.label.get(self.locale) if role is not None else a.value}"
            )
        if a.kind == "user":
            return f"@{a.value}"
        return self.field_label(str(a.value))

    def sets(self, values: Mapping[str, Any]) -> str:
        return ", ".join(f"{self.field_label(k)} → {self.value(k, v)}" for k, v in values.items())

    def wait(self, s: Step) -> str:
        assert s.wait is not None
        if s.wait.until:
            return f"{self.w['until']} {self.field_label(s.wait.until)}"
        return f"{self.w['wait']} {s.wait.duration.shown() if s.wait.duration else ''}"

    def template(self, text: str) -> str:
        """A task's title or a message as the picture shows it: each
        ``{{ doc.field }}`` as ‹the field's label›, any other ``{{ }}`` as …"""

        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            return f"‹{self.field_label(name)}›" if name else "…"

        return TEMPLATE.sub(one, text)

    def channel(self, name: str) -> str:
        return self.w.get(name, name)


def _trigger(p: Process, t: _Words) -> str:
    if p.start_label:
        return p.start_label
    start = p.start
    text = t.w.get(start.event, start.event)
    if start.event == "status" and start.value:
        text += f" {t.value(t.doc.statuses.field, start.value) if t.doc is not None and t.doc.statuses else start.value}"
    elif start.event == "field" and start.value:
        text += f" {t.field_label(start.value)}"
    if start.when:
        text += f" · {start.when}"
    return text


def _tip(s: Step, t: _Words) -> str:
    w = t.w
    out = [s.label or (s.condition if s.kind == "if" else None) or s.name]
    if s.task is not None:
        out.append(t.template(s.task.title))
        due = f" · {w['due']} {s.task.due.shown()}" if s.task.due else ""
        out.append(t.who(s.task.assignee) + due)
        if s.task.description:
            out.append(s.task.description)
    if s.wait is not None:
        out.append(t.wait(s))
    for n in s.notify:
        out.append(f"{t.channel(n.channel)} → {t.who(n.to)}: {t.template(n.text)}")
    if s.set:
        out.append(t.sets(s.set))
    if s.outcomes:
        out.append(", ".join(
            f"{outcome_label(s, k, t.locale)} → {t.step(v)}" for k, v in s.outcomes.items()
        ))  # fmt: skip
    return "\n".join(out)


def _step_node(s: Step, t: _Words) -> _Node:
    name = s.label or s.name
    title = (name, 12.0, "bold", TEXT)
    tip = _tip(s, t)
    inner = BOX_W - 16
    if s.kind == "if":
        # the consultant's words for the condition, else the condition itself
        lines = [
            (s.label or s.condition or s.name, 11.5, "bold", TEXT),
            ("", 10.0, "normal", MUTED),
        ]
        return _Node(s.name, "if", DIAMOND_W, DIAMOND_H, s, lines, tip)
    if s.kind == "parallel":
        return _Node(s.name, "parallel", BAR_W, BAR_H, s, [(name, 10.0, "bold", "#ffffff")], tip)
    if s.kind == "end":
        return _Node(s.name, "end", 120, 2 * END_R + 18, s, [(name, 11.0, "bold", TEXT)], tip)
    lines = [title]
    w = t.w
    if s.kind == "task" and s.task is not None:
        lines.append((t.template(s.task.title), 11.0, "normal", TEXT))
        who = t.who(s.task.assignee)
        if s.task.due is not None:
            who += f" · {w['due']} {s.task.due.shown()}"
        lines.append((who, 10.0, "normal", MUTED))
    elif s.kind == "wait" and s.wait is not None:
        lines.append((t.wait(s), 10.5, "normal", MUTED))
        inner -= 22
    elif s.kind == "notify" and s.notify:
        n = s.notify[0]
        more = f" +{len(s.notify) - 1}" if len(s.notify) > 1 else ""
        lines.append((f"{t.channel(n.channel)} → {t.who(n.to)}{more}", 10.5, "normal", MUTED))
        lines.append((t.template(n.text), 10.0, "normal", TEXT))
        inner -= 22
    elif s.kind not in ("set", "task"):
        lines.append((s.kind, 10.0, "normal", MUTED))  # a plugin's own kind
    if s.set:
        lines.append((t.sets(s.set), 10.0, "normal", "#2f6b3a"))
    lines = [
        (_fit(t, inner, size, weight == "bold"), size, weight, fill)
        for t, size, weight, fill in lines
    ]
    h = 12 + sum(size + 4 for _, size, _, _ in lines)
    return _Node(s.name, s.kind, BOX_W, h, s, lines, tip)


def _region(p: Process, split: Step) -> set[str]:
    """The steps a parallel split's branches pass before its join."""
    seen: set[str] = set()
    todo = list(split.parallel)
    while todo:
        name = todo.pop()
        if name in seen or name == split.join or name not in p.steps:
            continue
        seen.add(name)
        todo += [t for _, t in p.steps[name].exits()]
    return seen


def _graph(p: Process, t: _Words) -> tuple[dict[str, _Node], list[_Edge]]:
    w = t.w
    nodes: dict[str, _Node] = {}
    start = _trigger(p, t)
    nodes[START] = _Node(
        START, "start", 14, 14, None, [(_fit(start, 300, 10.5), 10.5, "normal", MUTED)], start
    )
    for s in p.steps.values():
        nodes[s.name] = _step_node(s, t)
    edges = [_Edge(START, p.first, "")]
    # a branch arriving at its join goes into the split's bar, then the bar into the step
    bars: dict[str, tuple[str, set[str]]] = {}
    for s in p.steps.values():
        if s.kind == "parallel" and s.join is not None and s.join in p.steps:
            bars[s.name] = (s.join, _region(p, s))
    used: set[str] = set()
    for s in p.steps.values():
        for label, target in s.exits():
            if target not in p.steps or (s.kind == "parallel" and label == "join"):
                continue
            if s.kind == "if":
                label = w.get(label, label)
            elif s.kind == "task" and label in s.outcomes:
                label = outcome_label(s, label, t.locale)
            dst = target
            for split, (join, region) in bars.items():
                if target == join and s.name in region:
                    dst = JOIN + split
                    used.add(split)
                    break
            edges.append(_Edge(s.name, dst, label))
    for split, (join, _) in bars.items():
        if split in used:
            nid = JOIN + split
            nodes[nid] = _Node(
                nid, "join", BAR_W, JOIN_H, None, [], f"{w['join']} → {t.step(join)}"
            )
            edges.append(_Edge(nid, join, ""))
    return nodes, edges


def _mark_back_edges(nodes: Mapping[str, _Node], edges: list[_Edge]) -> None:
    """A depth-first walk from the start: an edge to a step on the walk's
    own path closes a loop; it is laid out reversed and drawn going back up."""
    out: dict[str, list[_Edge]] = {n: [] for n in nodes}
    for e in edges:
        out[e.src].append(e)
    state: dict[str, int] = {}
    for root in nodes:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(out[root]))]
        while stack:
            node, it = stack[-1]
            for e in it:
                seen = state.get(e.dst)
                if seen == 1:
                    e.back = True
                elif seen is None:
                    state[e.dst] = 1
                    stack.append((e.dst, iter(out[e.dst])))
                    break
            else:
                state[node] = 2
                stack.pop()


def _rank(nodes: Mapping[str, _Node], edges: list[_Edge]) -> None:
    """Longest path from the start over the forward edges."""
    forward = [e for e in edges if not e.back]
    indegree = {n: 0 for n in nodes}
    out: dict[str, list[str]] = {n: [] for n in nodes}
    for e in forward:
        indegree[e.dst] += 1
        out[e.src].append(e.dst)
    queue = [n for n in nodes if indegree[n] == 0]
    i = 0
    while i < len(queue):
        n = queue[i]
        i += 1
        for t in out[n]:
            nodes[t].rank = max(nodes[t].rank, nodes[n].rank + 1)
            indegree[t] -= 1
            if indegree[t] == 0:
                queue.append(t)
    # the ends of the map side by side at the bottom
    last = max(node.rank for node in nodes.values())
    for node in nodes.values():
        if node.kind == "end":
            node.rank = last


def _layers(nodes: dict[str, _Node], edges: list[_Edge]) -> list[list[str]]:
    """Chains through dummy nodes for edges that skip layers, then an order
    within each layer with few crossings (barycentres, kept when better)."""
    count = 0
    for e in edges:
        # an arrow back is laid out downwards from its target, and drawn upwards
        top, below = (e.dst, e.src) if e.back else (e.src, e.dst)
        if top == below:
            continue  # a step that leads to itself: a loop on its side
        e.chain = [top]
        for r in range(nodes[top].rank + 1, nodes[below].rank):
            nid = f"{DUMMY}{count}"
            count += 1
            nodes[nid] = _Node(nid, "dummy", DUMMY_W, 0, rank=r)
            e.chain.append(nid)
        e.chain.append(below)
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    succs: dict[str, list[str]] = {n: [] for n in nodes}
    for e in edges:
        for a, b in itertools.pairwise(e.chain):
            succs[a].append(b)
            preds[b].append(a)
    # first order: as a walk from the start meets the nodes
    found: dict[str, int] = {}
    todo = [START]
    while todo:
        n = todo.pop(0)
        if n in found:
            continue
        found[n] = len(found)
        todo += succs[n]
    for n in nodes:
        found.setdefault(n, len(found))
    depth = max(n.rank for n in nodes.values()) + 1
    layers: list[list[str]] = [[] for _ in range(depth)]
    for n in sorted(nodes, key=lambda n: found[n]):
        layers[nodes[n].rank].append(n)

    def positions(ls: list[list[str]]) -> dict[str, int]:
        return {n: i for layer in ls for i, n in enumerate(layer)}

    def crossings(ls: list[list[str]]) -> int:
        pos = positions(ls)
        total = 0
        for layer in ls[:-1]:
            pairs = [(pos[a], pos[b]) for a in layer for b in succs[a]]
            for i, (a1, b1) in enumerate(pairs):
                for a2, b2 in pairs[i + 1 :]:
                    if (a1 - a2) * (b1 - b2) < 0:
                        total += 1
        return total

    def sweep(ls: list[list[str]], down: bool) -> list[list[str]]:
        ls = [list(layer) for layer in ls]
        pos = positions(ls)
        order = range(1, len(ls)) if down else range(len(ls) - 2, -1, -1)
        for r in order:
            near = preds if down else succs

            def key(n: str, near: dict[str, list[str]] = near) -> tuple[float, int]:
                ns = near[n]
                return (sum(pos[m] for m in ns) / len(ns) if ns else float(pos[n]), pos[n])

            ls[r].sort(key=key)
            pos.update({n: i for i, n in enumerate(ls[r])})
        return ls

    best, fewest = layers, crossings(layers)
    current = layers
    for i in range(SWEEPS):
        current = sweep(current, down=i % 2 == 0)
        c = crossings(current)
        if c < fewest:
            best, fewest = current, c
    return best


def _pav(targets: list[float], seps: list[float]) -> list[float]:
    """Positions closest to ``targets`` (least squares) that keep the order
    and the separations: isotonic regression by pooling adjacent violators."""
    offsets = [0.0]
    for s in seps:
        offsets.append(offsets[-1] + s)
    blocks: list[list[float]] = []  # [sum, count]
    for t, o in zip(targets, offsets, strict=True):
        blocks.append([t - o, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    out: list[float] = []
    for s, c in blocks:
        out += [s / c] * int(c)
    return [y + o for y, o in zip(out, offsets, strict=True)]


def _place(nodes: dict[str, _Node], edges: list[_Edge], layers: list[list[str]]) -> None:
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    succs: dict[str, list[str]] = {n: [] for n in nodes}
    for e in edges:
        for a, b in itertools.pairwise(e.chain):
            succs[a].append(b)
            preds[b].append(a)

    def seps(layer: list[str]) -> list[float]:
        out = []
        for a, b in itertools.pairwise(layer):
            gap = DUMMY_GAP if "dummy" in (nodes[a].kind, nodes[b].kind) else NODE_GAP
            out.append((nodes[a].w + nodes[b].w) / 2 + gap)
        return out

    for layer in layers:
        xs = _pav([0.0] * len(layer), seps(layer))
        for n, x in zip(layer, xs, strict=True):
            nodes[n].x = x
    passes = [preds, succs] * 5 + [None, None]
    for i, near in enumerate(passes):
        order = layers if i % 2 == 0 else list(reversed(layers))
        for layer in order:
            targets = []
            for n in layer:
                ns = (preds[n] + succs[n]) if near is None else near[n]
                targets.append(sum(nodes[m].x for m in ns) / len(ns) if ns else nodes[n].x)
            for n, x in zip(layer, _pav(targets, seps(layer)), strict=True):
                nodes[n].x = x
    _straighten(nodes, edges, layers, seps)
    y = float(MARGIN)
    for layer in layers:
        height = max([nodes[n].h for n in layer] + [8.0])
        for n in layer:
            node = nodes[n]
            node.y = y + (height - node.h) / 2 if node.kind != "dummy" else y
            if node.kind == "dummy":
                node.h = height
        y += height + RANK_GAP


def _straighten(
    nodes: dict[str, _Node], edges: list[_Edge], layers: list[list[str]], seps: Any
) -> None:
    """An arrow that skips layers runs straight down where its neighbours leave room."""
    index = {n: (r, i) for r, layer in enumerate(layers) for i, n in enumerate(layer)}
    gaps = [seps(layer) for layer in layers]

    def room(d: str) -> tuple[float, float]:
        r, i = index[d]
        layer = layers[r]
        lo = nodes[layer[i - 1]].x + gaps[r][i - 1] if i > 0 else float("-inf")
        hi = nodes[layer[i + 1]].x - gaps[r][i] if i + 1 < len(layer) else float("inf")
        return lo, hi

    for _ in range(3):
        for e in edges:
            ds = e.chain[1:-1]
            if not ds:
                continue
            xs = sorted(nodes[d].x for d in ds)
            rooms = [room(d) for d in ds]
            lo, hi = max(r[0] for r in rooms), min(r[1] for r in rooms)
            if lo <= hi:
                x = min(max(xs[len(xs) // 2], lo), hi)
                for d in ds:
                    nodes[d].x = x


def _port_y(node: _Node, dx: float, top: bool) -> float:
    """Where an arrow ``dx`` off the centre meets a node's top or bottom."""
    if node.kind == "if":
        k = min(abs(dx) / (node.w / 2), 1.0) * node.h / 2
        return node.y + k if top else node.y + node.h - k
    if node.kind == "end":
        k = max(END_R**2 - dx**2, 0.0) ** 0.5
        return node.y + END_R - k if top else node.y + END_R + k
    return node.y if top else node.y + node.h


class _Canvas:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.right = 0.0
        self.bottom = 0.0

    def extent(self, x: float, y: float) -> None:
        self.right = max(self.right, x)
        self.bottom = max(self.bottom, y)

    def add(self, text: str) -> None:
        self.parts.append(text)

    def text(self, x: float, y: float, s: str, size: float, weight: str = "normal",
             fill: str = TEXT, anchor: str = "middle", cls: str = "") -> None:  # fmt: skip
        self.add(
            f'<text x="{_n(x)}" y="{_n(y)}" font-size="{_n(size)}" fill="{fill}"'
            + (f' font-weight="{weight}"' if weight != "normal" else "")
            + f' text-anchor="{anchor}"'
            + (f' class="{cls}"' if cls else "")
            + f">{escape(s)}</text>"
        )
        width = _width(s, size, weight == "bold")
        self.extent(x + (width if anchor == "start" else width / 2), y)

    def label(self, x: float, y: float, s: str, anchor: str = "middle") -> None:
        """An arrow's label on a white ground, so that lines do not cross it."""
        width = _width(s, 10) + 6
        if anchor == "end" and x - width + 3 < 2:
            anchor = "start"  # no room on the left of the picture
        left = x - width / 2 if anchor == "middle" else x - width + 3 if anchor == "end" else x - 3
        self.extent(left + width, y + 4)
        self.add(
            f'<rect x="{_n(left)}" y="{_n(y - 10)}" width="{_n(width)}" height="14" rx="3"'
            ' fill="#ffffff" fill-opacity="0.9"/>'
        )
        self.text(x, y, s, 10, fill="#7a4b00", anchor=anchor, cls="crm-edge-label")


def _draw_node(c: _Canvas, node: _Node, current: bool, count: int | None) -> None:
    kind = node.kind
    fill, stroke = CURRENT if current else COLORS.get(kind, OTHER_COLORS)
    width = "2.5" if current else "1.4"
    x0, y0, w, h = node.x - node.w / 2, node.y, node.w, node.h
    cx = node.x
    if node.step is not None:
        classes = f"crm-step crm-step-{kind}" + (" crm-step-current" if current else "")
        c.add(
            f'<g class="{escape(classes)}" data-step="{escape(node.id)}" data-kind="{escape(kind)}"'
            + (f' data-count="{count}"' if count else "")
            + ">"
        )
    else:
        c.add(f'<g class="crm-map-{kind}">')
    if node.tip:
        c.add(f"<title>{escape(node.tip)}</title>")
    shape = f'fill="{fill}" stroke="{stroke}" stroke-width="{width}"'
    text_x = cx
    if kind == "start":
        c.add(f'<circle cx="{_n(cx)}" cy="{_n(y0 + 7)}" r="7" {shape}/>')
        text, size, weight, color = node.lines[0]
        c.text(cx + 13, y0 + 11, text, size, weight, color, anchor="start")
    elif kind == "end":
        cy = y0 + END_R
        c.add(f'<circle cx="{_n(cx)}" cy="{_n(cy)}" r="{END_R}" {shape}/>')
        inner = stroke if not current else CURRENT[1]
        c.add(f'<circle cx="{_n(cx)}" cy="{_n(cy)}" r="{END_R - 5}" fill="{inner}"/>')
        text, size, weight, color = node.lines[0]
        c.text(cx, y0 + 2 * END_R + 14, _fit(text, w, size, True), size, weight, color)
    elif kind in ("parallel", "join"):
        c.add(f'<rect x="{_n(x0)}" y="{_n(y0)}" width="{_n(w)}" height="{_n(h)}" rx="3" {shape}/>')
        if node.lines:
            text, size, weight, color = node.lines[0]
            c.text(cx, y0 + h / 2 + 3.5, _fit(text, w - 12, size, True), size, weight, color)
    elif kind == "if":
        points = f"{_n(cx)},{_n(y0)} {_n(x0 + w)},{_n(y0 + h / 2)} {_n(cx)},{_n(y0 + h)} {_n(x0)},{_n(y0 + h / 2)}"
        c.add(f'<polygon points="{points}" {shape}/>')
        (name, s1, w1, f1), (cond, s2, w2, f2) = node.lines
        c.text(cx, y0 + h / 2 - 3, _fit(name, w * 0.62, s1, True), s1, w1, f1)
        c.text(cx, y0 + h / 2 + 11, _fit(cond, w * 0.58, s2), s2, w2, f2)
    else:
        rx = {"task": 10, "set": 0}.get(kind, 6)
        dash = ' stroke-dasharray="5 3"' if kind not in COLORS else ""
        c.add(
            f'<rect x="{_n(x0)}" y="{_n(y0)}" width="{_n(w)}" height="{_n(h)}" rx="{rx}" {shape}{dash}/>'
        )
        if kind == "wait":
            # a clock face
            ix, iy = x0 + 16, y0 + h / 2
            c.add(
                f'<circle cx="{_n(ix)}" cy="{_n(iy)}" r="9" fill="#ffffff" stroke="{stroke}" stroke-width="1.3"/>'
                f'<path d="M{_n(ix)},{_n(iy - 6)} L{_n(ix)},{_n(iy)} L{_n(ix + 4.5)},{_n(iy + 2.5)}" fill="none" stroke="{stroke}" stroke-width="1.3"/>'
            )
            text_x = cx + 11
        elif kind == "notify":
            # an envelope
            ix, iy = x0 + 7, y0 + h / 2 - 6
            c.add(
                f'<rect x="{_n(ix)}" y="{_n(iy)}" width="18" height="12" fill="#ffffff" stroke="{stroke}" stroke-width="1.2"/>'
                f'<path d="M{_n(ix)},{_n(iy)} L{_n(ix + 9)},{_n(iy + 7)} L{_n(ix + 18)},{_n(iy)}" fill="none" stroke="{stroke}" stroke-width="1.2"/>'
            )
            text_x = cx + 11
        y = y0 + 6
        for text, size, weight, color in node.lines:
            y += size + 4
            c.text(text_x, y - 2, text, size, weight, color)
    if count:
        label = str(count)
        bw = max(18.0, _width(label, 10, True) + 10)
        bx = cx + (END_R if kind == "end" else w / 2 - 4)
        by = y0 + (0 if kind in ("parallel", "join") else 2)
        c.add(
            f'<g class="crm-step-count"><rect x="{_n(bx - bw / 2)}" y="{_n(by - 9)}" width="{_n(bw)}"'
            f' height="18" rx="9" fill="{BADGE}"/>'
        )
        c.text(bx, by + 3.5, label, 10, "bold", "#ffffff")
        c.add("</g>")
    c.extent(x0 + w, y0 + h)
    c.add("</g>")


def _spread(n: int, width: float) -> list[float]:
    if n <= 1:
        return [0.0] * n
    step = min(width / (n - 1), 36.0)
    return [(i - (n - 1) / 2) * step for i in range(n)]


#: how much of a node's width its arrows spread over
SPREAD = {"if": 0.5, "end": 26 / 120, "start": 0.0, "dummy": 0.0, "parallel": 0.8, "join": 0.8}


def _draw_edges(c: _Canvas, nodes: dict[str, _Node], edges: list[_Edge]) -> None:
    laid = [e for e in edges if e.chain]
    # where each arrow meets the bottom of its upper node and the top of its
    # lower one, in the order of the nodes at the other end: no crossing at a box
    below: dict[int, float] = {}
    above: dict[int, float] = {}
    for n, node in nodes.items():
        if node.kind == "dummy":
            continue
        width = node.w * SPREAD.get(node.kind, 0.6)
        downs = sorted((i for i, e in enumerate(laid) if e.chain[0] == n),
                       key=lambda i: (nodes[laid[i].chain[1]].x, laid[i].back, i))  # fmt: skip
        for i, dx in zip(downs, _spread(len(downs), width), strict=True):
            below[i] = dx
        ups = sorted((i for i, e in enumerate(laid) if e.chain[-1] == n),
                     key=lambda i: (nodes[laid[i].chain[-2]].x, laid[i].back, i))  # fmt: skip
        for i, dx in zip(ups, _spread(len(ups), width), strict=True):
            above[i] = dx
    c.add(f'<g class="crm-map-edges" fill="none" stroke="{EDGE}" stroke-width="1.4">')
    labels: list[tuple[float, float, str, str]] = []
    arrows: list[str] = []
    for i, e in enumerate(laid):
        upper, lower = nodes[e.chain[0]], nodes[e.chain[-1]]
        ux, lx = upper.x + below[i], lower.x + above[i]
        points = [(ux, _port_y(upper, below[i], top=False))]
        for d in e.chain[1:-1]:
            points += [(nodes[d].x, nodes[d].y), (nodes[d].x, nodes[d].y + nodes[d].h)]
        points.append((lx, _port_y(lower, above[i], top=True)))
        path = [f"M{_n(points[0][0])},{_n(points[0][1])}"]
        for k in range(1, len(points)):
            (ax, ay), (bx, by) = points[k - 1], points[k]
            if k % 2 == 0:  # down a dummy node: a straight line
                path.append(f"L{_n(bx)},{_n(by)}")
            else:
                my = (ay + by) / 2
                path.append(f"C{_n(ax)},{_n(my)} {_n(bx)},{_n(my)} {_n(bx)},{_n(by)}")
        c.add(
            f'<path d="{" ".join(path)}"'
            + (' class="crm-edge-back" stroke-dasharray="6 3"' if e.back else "")
            + "/>"
        )
        if e.back:  # the arrow points up, into the bottom of the step it returns to
            ex, ey = points[0]
            arrows.append(
                f"{_n(ex - 4.5)},{_n(ey + 8)} {_n(ex + 4.5)},{_n(ey + 8)} {_n(ex)},{_n(ey)}"
            )
            (ax, ay), (bx, by) = points[-2], points[-1]
        else:
            ex, ey = points[-1]
            arrows.append(
                f"{_n(ex - 4.5)},{_n(ey - 8)} {_n(ex + 4.5)},{_n(ey - 8)} {_n(ex)},{_n(ey)}"
            )
            (ax, ay), (bx, by) = points[0], points[1]
        if e.label:  # by the step the arrow leaves, on the side it goes to
            side = (
                "middle"
                if e.back
                else "end"
                if bx < ax - 8
                else "start"
                if bx > ax + 8
                else "middle"
            )
            labels.append(((ax + bx) / 2, (ay + by) / 2 + 4, e.label, side))
    for e in edges:
        if e.src != e.dst:
            continue
        node = nodes[e.src]
        sx, sy = node.x + node.w / 2, node.y + node.h / 2
        c.add(
            f'<path class="crm-edge-back" stroke-dasharray="6 3" d="M{_n(sx)},{_n(sy - 7)}'
            f' C{_n(sx + 44)},{_n(sy - 30)} {_n(sx + 44)},{_n(sy + 30)} {_n(sx)},{_n(sy + 7)}"/>'
        )
        arrows.append(
            f"{_n(sx + 8)},{_n(sy + 2.5)} {_n(sx + 8)},{_n(sy + 11.5)} {_n(sx)},{_n(sy + 7)}"
        )
        c.extent(sx + 40, sy + 30)
        if e.label:
            labels.append((sx + 40, sy + 4, e.label, "start"))
    c.add("</g>")
    c.add(f'<g class="crm-map-arrows" fill="{EDGE}">')
    for points_text in arrows:
        c.add(f'<polygon points="{points_text}"/>')
    c.add("</g>")
    for x, y, text, anchor in labels:
        c.label(x, y, _fit(text, 120, 10), anchor)


def draw(
    process: Process,
    counts: Mapping[str, int] | None = None,
    current: Iterable[str] | None = None,
    locale: str = "en",
    registry: Any = None,
) -> Markup:
    """The route map as an SVG picture: ``current`` steps highlighted (class
    ``crm-step-current``), a badge with ``counts[step]`` where it is above zero.
    With the ``registry``, fields, states, values and roles show their labels."""
    doc = registry.documents.get(process.document) if registry is not None else None
    roles = registry.roles if registry is not None else {}
    t = _Words(words(locale), locale, process, doc, roles)
    counts = counts or {}
    here = set(current or ())
    nodes, edges = _graph(process, t)
    _mark_back_edges(nodes, edges)
    _rank(nodes, edges)
    layers = _layers(nodes, edges)
    _place(nodes, edges, layers)
    left = min(n.x - n.w / 2 for n in nodes.values())
    for n in nodes.values():
        n.x += MARGIN - left
    c = _Canvas()
    _draw_edges(c, nodes, edges)
    for nid, node in nodes.items():  # the start, the steps in their order, the joins
        if node.kind == "dummy":
            continue
        count = counts.get(nid) if node.step is not None else None
        _draw_node(c, node, node.step is not None and nid in here, count)
    width, height = c.right + MARGIN, c.bottom + MARGIN
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="crm-route-map"'
        f' data-process="{escape(process.name)}" viewBox="0 0 {_n(width)} {_n(height)}"'
        f' width="{_n(width)}" height="{_n(height)}" role="img"'
        f' aria-label="{escape(process.label)}" font-family="{FONT}"'
        ' style="max-width:100%;height:auto">'
        f"<title>{escape(process.label)}</title>"
    )
    return Markup(head + "".join(c.parts) + "</svg>")  # noqa: S704 - every text above is escaped


# --- where processes stand ------------------------------------------------------------------


def _tables(models: Any) -> tuple[sa.Table, sa.Table, Any]:
    d = models.registry.documents[INSTANCE]
    instances = models.table(INSTANCE)
    tokens = models.children[(INSTANCE, "tokens")].__table__
    return instances, tokens, d


def in_progress(
    models: Any, session: Any, principal: Any, process: str | None = None
) -> dict[str, dict[str, int]]:
    """process → step → running instances standing there (tokens not passed),
    the ones the principal may read: one GROUP BY."""
    if not api.allowed(models.registry, principal, INSTANCE, "read"):
        return {}
    instances, tokens, d = _tables(models)
    name = instances.c[d.fields["process"].column]
    status = instances.c[d.fields[d.statuses.field].column]
    q = (
        sa.select(name, tokens.c.step, sa.func.count(sa.distinct(instances.c.id)))
        .select_from(instances.join(tokens, tokens.c.parent_id == instances.c.id))
        .where(
            status == "running",
            tokens.c.state.in_(STANDING),
            api.where(models, principal, INSTANCE, "read"),
        )
        .group_by(name, tokens.c.step)
    )
    if process is not None:
        q = q.where(name == process)
    out: dict[str, dict[str, int]] = {}
    for p, step, n in session.execute(q):
        out.setdefault(str(p), {})[str(step)] = int(n)
    return out


def in_progress_rows(defs: Any, found: Mapping[str, Mapping[str, int]]) -> list[dict[str, Any]]:
    """``[{process, step, count}]`` in the order of the config and its steps;
    processes and steps no longer in it last, by name."""
    rows: list[dict[str, Any]] = []
    for pname in [*defs.processes, *sorted(set(found) - set(defs.processes))]:
        by_step = found.get(pname, {})
        p = defs.processes.get(pname)
        names = list(p.steps) if p else []
        for step in [*names, *sorted(set(by_step) - set(names))]:
            if by_step.get(step):
                rows.append({"process": pname, "step": step, "count": by_step[step]})
    return rows


def _link(models: Any, instance_id: int, text: str) -> Markup:
    resource = models.registry.documents[INSTANCE].resource
    return Markup('<a href="/{}/{}">{}</a>').format(resource, instance_id, text)


def record_sections(models: Any, defs: Any, doctype: Any, doc: Any, principal: Any) -> list[Any]:
    """A record's processes as pictures: on a document's page, its most
    recent instances (one query); on an instance's page, its own map."""
    if INSTANCE not in models.registry.documents or doc is None:
        return []
    locale = models.registry.locale
    w = words(locale)
    d = models.registry.documents[INSTANCE]
    states = d.statuses.states if d.statuses else {}
    if doctype.name == INSTANCE:
        p = defs.processes.get(doc.process)
        if p is None:
            return []
        here = {t.step for t in doc.tokens if t.state in STANDING}
        return [
            (
                w["map"],
                Markup('<div class="crm-process-map">{}</div>').format(
                    draw(p, current=here, locale=locale, registry=models.registry)
                ),
            )
        ]
    if not defs.for_document(doctype.name)[0]:
        return []
    if not api.allowed(models.registry, principal, INSTANCE, "read"):
        return []
    session = object_session(doc)
    if session is None:
        return []
    instances, tokens, _ = _tables(models)
    col = instances.c
    status = col[d.fields[d.statuses.field].column] if d.statuses else sa.null()
    recent = (
        sa.select(col.id, col[d.fields["process"].column].label("process"), status.label("status"),
                  col.created_at)
        .where(col[d.fields["doctype"].column] == doctype.name, col[d.fields["doc_id"].column] == doc.id,
               api.where(models, principal, INSTANCE, "read"))
        .order_by(col.created_at.desc(), col.id.desc())
        .limit(RECORD_INSTANCES)
        .subquery()
    )  # fmt: skip
    q = (
        sa.select(recent.c.id, recent.c.process, recent.c.status, tokens.c.step)
        .select_from(
            recent.outerjoin(
                tokens, sa.and_(tokens.c.parent_id == recent.c.id, tokens.c.state.in_(STANDING))
            )
        )
        .order_by(recent.c.created_at.desc(), recent.c.id.desc(), tokens.c.idx)
    )
    found: dict[int, tuple[str, str, set[str]]] = {}
    for iid, pname, state, step in session.execute(q):
        entry = found.setdefault(iid, (str(pname), str(state or ""), set()))
        if step is not None:
            entry[2].add(str(step))
    out = []
    for iid, (pname, state, here) in found.items():
        p = defs.processes.get(pname)
        if p is None:
            continue  # a route map since taken out of the config
        label = states[state].label.get(locale) if state in states else state
        html = Markup(
            '<div class="crm-process-map" data-instance="{}"><p class="text-muted">{}</p>{}</div>'
        ).format(
            iid,
            _link(models, iid, label),  # the process's state, linked to its page
            draw(p, current=here, locale=locale, registry=models.registry),
        )
        out.append((p.label, html))
    return out


# --- the pages ------------------------------------------------------------------------------

TEMPLATES = Path(__file__).parent / "templates"


def _maps(only: str | None = None) -> list[dict[str, Any]]:
    """The route maps a page shows, each with its picture and its steps' counts."""
    state = api.crm()
    registry = state.registry
    defs = definitions_for(registry, state.pm)
    found = in_progress(state.models, api.db_session(), api.principal(), only)
    resource = registry.documents[INSTANCE].resource
    loc = api.locale()
    out = []
    for p in defs.processes.values():
        if only is not None and p.name != only:
            continue
        by_step = found.get(p.name, {})
        joins = set(p.join_of())
        # the steps an instance can stand on: tasks, waits, joins (and any counted)
        steps = [
            {"name": s.name, "label": s.label or s.name, "count": by_step.get(s.name, 0)}
            for s in p.steps.values()
            if s.waits or s.name in joins or by_step.get(s.name)
        ]
        doc = registry.documents.get(p.document)
        out.append({
            "name": p.name, "label": p.label,
            "document": doc.label.get(loc) if doc is not None else p.document,
            "svg": draw(p, counts=by_step, locale=loc, registry=registry), "steps": steps,
            "list_url": f"/{resource}/?" + urlencode({"f_process": p.name, "f_status": "running"}),
        })  # fmt: skip
    return out


def _require_read() -> None:
    if not api.allowed(api.crm().registry, api.principal(), INSTANCE, "read"):
        abort(403)


class ProcessMapsView(BaseView):
    """Every route map of the config, and where its running instances stand."""

    route_base = "/processes"
    default_view = "index"
    template_folder = str(TEMPLATES)

    @expose("/")
    @login_required
    def index(self) -> Any:
        _require_read()
        return self.render_template("processes/maps.html", maps=_maps(), one=False)

    @expose("/<name>")
    @login_required
    def one(self, name: str) -> Any:
        _require_read()
        if name not in definitions_for(api.crm().registry, api.crm().pm).processes:
            abort(404)
        return self.render_template("processes/maps.html", maps=_maps(name), one=True)

    @expose("/api/in_progress")
    @login_required
    def api_in_progress(self) -> Any:
        """``[{process, step, count}]`` for dashboards."""
        state = api.crm()
        if not api.allowed(state.registry, api.principal(), INSTANCE, "read"):
            return api.json_error(403, api.gettext("you may not read processes"))
        found = in_progress(state.models, api.db_session(), api.principal())
        return jsonify(in_progress_rows(definitions_for(state.registry, state.pm), found))


def register(appbuilder: Any, registry: Any) -> None:
    """The page of route maps, under "Processes" in the menu."""
    if INSTANCE not in registry.documents:
        return
    appbuilder.add_view_no_menu(ProcessMapsView())
    appbuilder.add_link(
        "crm:process_maps", href="/processes/", label=menu_label(api.lazy_gettext("Route maps")),
        category="crm:processes", category_label=menu_label(api.lazy_gettext("Processes")),
        cond=lambda: api.allowed(registry, api.principal(), INSTANCE, "read"),
    )  # fmt: skip


__all__ = [
    "ProcessMapsView", "draw", "in_progress", "in_progress_rows", "record_sections", "register",
]  # fmt: skip
