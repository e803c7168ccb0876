"""Checks over a route map's graph: dangling names, dead ends, unreachable
steps, loops with no task or wait, branches that never join."""

from __future__ import annotations

from collections.abc import Iterator

from engine.api import Problem, did_you_mean

from .model import Process, Step


def check_graph(p: Process, opaque: frozenset[str] = frozenset()) -> list[Problem]:
    """Dangling names, steps with no way out, unreachable steps, loops that
    would spin without a person or the clock, branches that never join, joins
    shared by two splits. ``opaque`` steps exist but their ways out are
    unknown (they have problems of their own): the checks that follow every
    path wait until those, dangling names and dead ends are fixed, so that
    one mistake is not reported again as its consequences."""
    what = f"process `{p.name}`"
    names = set(p.steps) | set(opaque)
    problems: list[Problem] = []
    dangling = stuck = False
    for s in p.steps.values():
        for key, target, where in _named_targets(s):
            if target not in names:
                dangling = True
                problems.append(
                    Problem(
                        s.locs.get(where, s.locs.get(key, s.loc)),
                        f"step `{s.name}` of {what}: `{key}` leads to an unknown step "
                        f"`{target}`{did_you_mean(target, names)}",
                    )
                )
        if s.kind != "end" and not s.exits():
            stuck = True
            problems.append(
                Problem(
                    s.loc,
                    f"step `{s.name}` of {what} has no way out: give it `next`"
                    + (", `outcomes`" if s.kind == "task" else "")
                    + " or make it `end: true`",
                )
            )
    splits: dict[str, str] = {}
    for s in p.steps.values():
        if s.kind == "parallel" and s.join:
            if s.join in splits:
                problems.append(
                    Problem(
                        s.locs.get("join", s.loc),
                        f"step `{s.name}` of {what}: `{s.join}` is already the join of "
                        f"`{splits[s.join]}`; give each `parallel` step a join step of its own",
                    )
                )
            else:
                splits[s.join] = s.name
            if s.join in s.parallel or s.join == s.name:
                problems.append(
                    Problem(
                        s.locs.get("join", s.loc),
                        f"step `{s.name}` of {what}: the join `{s.join}` must be a step "
                        "after the branches, not one of them",
                    )
                )
    problems += _spinning_loops(p)
    if dangling or opaque or stuck:
        return problems
    reached = _reachable(p, p.first)
    for s in p.steps.values():
        if s.name not in reached:
            problems.append(
                Problem(
                    s.loc,
                    f"step `{s.name}` of {what} is never reached from the first step "
                    f"`{p.first}`: lead to it from another step, or remove it",
                )
            )
    for s in p.steps.values():
        if s.kind == "parallel" and s.join and s.join not in s.parallel:
            for i, branch in enumerate(s.parallel):
                if s.join not in _reachable(p, branch, stop=s.join, split=s.name):
                    problems.append(
                        Problem(
                            s.locs.get(f"parallel.{i}", s.locs.get("parallel", s.loc)),
                            f"step `{s.name}` of {what}: the branch `{branch}` never reaches "
                            f"the join `{s.join}`, so the process would wait there forever",
                        )
                    )
    return problems


def _named_targets(s: Step) -> Iterator[tuple[str, str, str]]:
    """(key, step it names, the key of its location in ``s.locs``)."""
    if s.next:
        yield "next", s.next, "next"
    for outcome, target in s.outcomes.items():
        yield "outcomes", target, f"outcomes.{outcome}"
    if s.then:
        yield "then", s.then, "then"
    if s.otherwise:
        yield "else", s.otherwise, "else"
    for i, b in enumerate(s.parallel):
        yield "parallel", b, f"parallel.{i}"
    if s.join:
        yield "join", s.join, "join"


def _reachable(
    p: Process, start: str, stop: str | None = None, split: str | None = None
) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in p.steps:
            continue
        seen.add(name)
        if name in (stop, split):
            continue
        todo += [t for _, t in p.steps[name].exits()]
    return seen


def _spinning_loops(p: Process) -> list[Problem]:
    """A cycle made only of steps that pass at once (if, set, notify,
    parallel) would run forever the moment an instance enters it."""
    instant = {n for n, s in p.steps.items() if not s.waits and s.kind != "end"}
    color: dict[str, int] = {}  # 1: on the current path, 2: done
    reported: set[frozenset[str]] = set()
    problems: list[Problem] = []
    for root in p.steps:  # in the order written, for a stable message
        if root not in instant or root in color:
            continue
        path: list[str] = [root]
        todo: list[Iterator[str]] = [iter(t for _, t in p.steps[root].exits())]
        color[root] = 1
        while todo:
            t = next(todo[-1], None)
            if t is None:
                color[path.pop()] = 2
                todo.pop()
            elif t in instant and color.get(t) == 1:
                cycle = path[path.index(t) :]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    problems.append(
                        Problem(
                            p.steps[t].loc,
                            f"process `{p.name}`: the steps "
                            f"{' → '.join(f'`{c}`' for c in [*cycle, t])} form a loop with no "
                            "task or wait in it, so it would never stop; put a task or a "
                            "`wait` on the way",
                        )
                    )
            elif t in instant and t not in color:
                color[t] = 1
                path.append(t)
                todo.append(iter(x for _, x in p.steps[t].exits()))
    return problems
