"""`crm check` on broken route maps and automations: every defect, where it is.

Each case is a small configuration (the base layer with the processes
plugin) holding route maps or automations a consultant could plausibly
write, with mistakes of one class. The assertion is on the full list of
printed problems, ``file:line:col: message``, so a case also proves that
every mistake in a file is reported in the same run, at the YAML node to
fix, and that none of them causes a spurious second problem. Cases that
need more than YAML strings (plugins that deliver more channels, the
``processes`` settings, the shipped example configs, malformed shapes
thrown at ``read()``) follow the table.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cli import main
from engine.errors import Loc, Problem
from engine.loader import load
from engine.registry import Registry, Section
from engine.yamlload import load_text
from plugins.processes import definitions

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG = "name: Test company\nlocale: en\nlayers: [base]\nplugins:\n  processes: {}\n"

Problems = Callable[..., list[str]]


def case(name: str, text: str, *expected: str) -> object:
    """One broken ``sale.yaml`` and every problem `crm check` must print for it."""
    return pytest.param(text, list(expected), id=name)


CASES = [
    case(
        "bad_stop_when",
        """\
processes:
  follow_up:
    document: Deal
    stop_when: "stage == 'lost' and amont > 0"
    steps:
      call: {task: {title: Call back}, next: done}
      done: {end: true}
  call_back:
    document: Deal
    stop_when: 3
    steps:
      call: {task: {title: Call back}, next: done}
      done: {end: true}
""",
        "sale.yaml:4:16: process `follow_up`: `stop_when`: unknown name `amont` in "
        "`stage == 'lost' and amont > 0` (did you mean `amount`?)",
        "sale.yaml:10:16: process `call_back`: `stop_when` must be an expression in quotes, not 3",
    ),
    case(
        "unknown_document",
        """\
processes:
  follow_up:
    document: Dael
    steps:
      call: {task: {title: Call back}, next: done}
      done: {end: true}
""",
        "sale.yaml:3:15: process `follow_up`: unknown document type `Dael` (did you mean `Deal`?)",
    ),
    case(
        "process_without_document_or_steps",
        """\
processes:
  follow_up:
    label: Follow up
  call_back:
    document: Deal
    steps: {}
""",
        "sale.yaml:2:3: process `follow_up` needs `document`: the type it runs on, such as "
        "`document: Deal`",
        "sale.yaml:6:12: process `call_back`: `steps` maps step names to steps, and it has none",
    ),
    case(
        "unknown_keys_with_hints",
        """\
processes:
  follow_up:
    document: Deal
    strat: {on: create}
    steps:
      call:
        task: {title: Call back, asignee: owner, due: 2d}
        nxt: done
      tell:
        notify: {chanel: user, text: Called}
        next: done
      done: {end: true}
""",
        "sale.yaml:4:5: process `follow_up`: unknown key `strat` (did you mean `start`?)",
        "sale.yaml:7:34: step `call` of process `follow_up`: unknown key `asignee` in `task` "
        "(did you mean `assignee`?)",
        "sale.yaml:8:9: step `call` of process `follow_up`: a `task` step has no `nxt` (did "
        "you mean `next`?)",
        "sale.yaml:10:18: step `tell` of process `follow_up`: unknown key `chanel` in "
        "`notify` (did you mean `channel`?)",
    ),
    case(
        "keys_that_belong_elsewhere",
        """\
processes:
  follow_up:
    document: Deal
    steps:
      call:
        task: {title: Call back}
        assignee: owner
        then: done
        outcomes: {ok: done}
      done: {end: true, next: call}
""",
        "sale.yaml:7:9: step `call` of process `follow_up`: a `task` step has no `assignee`; "
        "write it inside `task: {assignee: ...}`",
        "sale.yaml:8:9: step `call` of process `follow_up`: a `task` step has no `then`; only "
        "an `if` step has `then` and `else`",
        "sale.yaml:10:25: step `done` of process `follow_up`: an `end` step has no `next`; an "
        "`end` step finishes the process; remove `next` or `end: true`",
    ),
    case(
        "step_with_two_kinds",
        """\
processes:
  follow_up:
    document: Deal
    steps:
      call:
        task: {title: Call back}
        if: "amount > 0"
        next: done
      done: {end: true}
""",
        "sale.yaml:7:9: step `call` of process `follow_up`: a step does one thing, and this "
        "one is both `task` and `if`; make two steps and lead from one to the other",
    ),
    case(
        "steps_that_do_nothing",
        """\
processes:
  follow_up:
    document: Deal
    steps:
      call:
        label: Call the client
      wait_a_bit:
      nothing: {}
      review:
        taks: {title: Review}
      done: {end: true}
""",
        "sale.yaml:5:7: step `call` of process `follow_up` does nothing: say what it does: "
        "`task`, `if`, `parallel`, `wait`, `notify`, `set`, `end`",
        "sale.yaml:7:7: step `wait_a_bit` of process `follow_up` does nothing: say what it "
        "does: `task`, `if`, `parallel`, `wait`, `notify`, `set`, `end`",
        "sale.yaml:8:7: step `nothing` of process `follow_up` does nothing: say what it does: "
        "`task`, `if`, `parallel`, `wait`, `notify`, `set`, `end`",
        "sale.yaml:10:9: step `review` of process `follow_up`: unknown key `taks` (did you "
        "mean `task`?); say what it does: `task`, `if`, `parallel`, `wait`, `notify`, `set`, "
        "`end`",
    ),
    case(
        "dangling_names_with_typo_hints",
        """\
processes:
  follow_up:
    document: Deal
    steps:
      call:
        task: {title: Call back}
        outcomes: {reached: decid, busy: retry}
      decide:
        if: "amount > 1000"
        then: aprove
        else: close
      approve:
        parallel: [notify_haed, ask_client]
        join: gathered
      notify_head:
        notify: {to: {role: sales_head}, text: "Approve {{ doc.number }}"}
        next: gather
      ask_client:
        task: {title: Ask}
        next: gather
      gather:
        set: {stage: proposal}
        next: dnoe
      done: {end: true}
""",
        "sale.yaml:7:29: step `call` of process `follow_up`: `outcomes` leads to an unknown "
        "step `decid` (did you mean `decide`?)",
        "sale.yaml:7:42: step `call` of process `follow_up`: `outcomes` leads to an unknown "
        "step `retry`",
        "sale.yaml:10:15: step `decide` of process `follow_up`: `then` leads to an unknown "
        "step `aprove` (did you mean `approve`?)",
        "sale.yaml:11:15: step `decide` of process `follow_up`: `else` leads to an unknown "
        "step `close`",
        "sale.yaml:13:20: step `approve` of process `follow_up`: `parallel` leads to an "
        "unknown step `notify_haed` (did you mean `notify_head`?)",
        "sale.yaml:14:15: step `approve` of process `follow_up`: `join` leads to an unknown "
        "step `gathered` (did you mean `gather`?)",
        "sale.yaml:23:15: step `gather` of process `follow_up`: `next` leads to an unknown "
        "step `dnoe` (did you mean `done`?)",
    ),
    case(
        "unreachable_steps",
        """\
processes:
  follow_up:
    document: Deal
    steps:
      call: {task: {title: Call back}, next: done}
      forgotten: {task: {title: Nobody comes here}, next: done}
      also_forgotten: {end: true}
      done: {end: true}
""",
        "sale.yaml:6:7: step `forgotten` of process `follow_up` is never reached from the "
        "first step `call`: lead to it from another step, or remove it",
        "sale.yaml:7:7: step `also_forgotten` of process `follow_up` is never reached from "
        "the first step `call`: lead to it from another step, or remove it",
    ),
    case(
        "steps_with_no_way_out",
        """\
processes:
  follow_up:
    document: Deal
    steps:
      call:
        task: {title: Call back}
      mark:
        set: {probability: 50}
      pause:
        wait: 1d
      done: {end: true}
""",
        "sale.yaml:5:7: step `call` of process `follow_up` has no way out: give it `next`, "
        "`outcomes` or make it `end: true`",
        "sale.yaml:7:7: step `mark` of process `follow_up` has no way out: give it `next` or "
        "make it `end: true`",
        "sale.yaml:9:7: step `pause` of process `follow_up` has no way out: give it `next` or "
        "make it `end: true`",
    ),
    case(
        "loop_without_a_task",
        """\
processes:
  follow_up:
    document: Deal
    steps:
      call: {task: {title: Call back}, next: decide}
      decide:
        if: "probability < 50"
        then: bump
        else: done
      bump:
        set: {probability: 60}
        next: decide
      done: {end: true}
""",
        "sale.yaml:6:7: process `follow_up`: the steps `decide` → `bump` → `decide` form a "
        "loop with no task or wait in it, so it would never stop; put a task or a `wait` on "
        "the way",
    ),
    case(
        "branch_that_never_joins",
        """\
processes:
  follow_up:
    document: Deal
    steps:
      split:
        parallel: [call, write]
        join: together
      call: {task: {title: Call}, next: together}
      write: {task: {title: Write}, outcomes: {sent: together, bounced: lost}}
      together:
        parallel: [sign, pay]
        join: done
      sign: {task: {title: Sign}, next: done}
      pay: {task: {title: Pay}, next: lost}
      done: {end: true}
      lost: {end: true}
""",
        "sale.yaml:11:26: step `together` of process `follow_up`: the branch `pay` never "
        "reaches the join `done`, so the process would wait there forever",
    ),
    case(
        "two_splits_share_one_join",
        """\
processes:
  follow_up:
    document: Deal
    steps:
      split:
        parallel: [call, inner]
        join: together
      call: {task: {title: Call}, next: together}
      inner:
        parallel: [sign, pay]
        join: together
      sign: {task: {title: Sign}, next: together}
      pay: {task: {title: Pay}, next: together}
      together: {end: true}
""",
        "sale.yaml:11:15: step `inner` of process `follow_up`: `together` is already the join "
        "of `split`; give each `parallel` step a join step of its own",
    ),
    case(
        "join_that_is_one_of_its_branches",
        """\
processes:
  follow_up:
    document: Deal
    steps:
      split:
        parallel: [call, together]
        join: together
      call: {task: {title: Call}, next: together}
      together: {end: true}
""",
        "sale.yaml:7:15: step `split` of process `follow_up`: the join `together` must be a "
        "step after the branches, not one of them",
    ),
    case(
        "bad_durations",
        """\
processes:
  follow_up:
    document: Deal
    steps:
      a: {task: {title: A, due: 2x}, next: b}
      b: {task: {title: B, due: 0d}, next: c}
      c: {task: {title: C, due: -1h}, next: d}
      d: {task: {title: D, due: 1.5d}, next: e}
      e: {task: {title: E, due: ""}, next: f}
      f: {task: {title: F, due: [1d]}, next: g}
      g: {task: {title: G, due: 5}, next: h}
      h: {task: {title: H, due: 2D}, next: i}
      i: {wait: soon, next: j}
      j: {end: true}
""",
        "sale.yaml:5:33: step `a` of process `follow_up`: `due`: `2x`: unknown unit `x`; "
        "units are m (minutes), h (hours), d (days), w (weeks), bd (business days)",
        "sale.yaml:6:33: step `b` of process `follow_up`: `due`: `0d`: a duration is between "
        "1 and 10000 days",
        "sale.yaml:7:33: step `c` of process `follow_up`: `due`: `-1h`: a duration cannot be "
        "negative; write `30m`, `4h`, `2d`, `1w` or `3bd` (business days)",
        "sale.yaml:8:33: step `d` of process `follow_up`: `due`: `1.5d`: a duration counts "
        "whole units; write `36h` instead",
        "sale.yaml:9:33: step `e` of process `follow_up`: `due`: the duration is empty: write "
        "`30m`, `4h`, `2d`, `1w` or `3bd` (business days)",
        "sale.yaml:10:33: step `f` of process `follow_up`: `due`: a duration is one value "
        "such as `2d`, not a list",
        "sale.yaml:11:33: step `g` of process `follow_up`: `due`: `5` has no unit: write "
        "`30m`, `4h`, `2d`, `1w` or `3bd` (business days)",
        "sale.yaml:12:33: step `h` of process `follow_up`: `due`: `2D`: write the unit in "
        "small letters: `2d`",
        "sale.yaml:13:17: step `i` of process `follow_up`: `wait: soon` is neither a duration "
        "(`2d`) nor a field of `Deal`; the date fields of `Deal` are `planned_close`, "
        "`created_at`, `updated_at`",
    ),
    case(
        "bad_waits",
        """\
processes:
  follow_up:
    document: Deal
    steps:
      a: {wait: {until: amount}, next: b}
      b: {wait: {until: planed_close}, next: c}
      c: {wait: {until: planned_close, for: 2d}, next: d}
      d: {wait: planned_close, next: e}
      e: {wait: {for: 3bd}, next: f}
      f: {wait: {untl: planned_close}, next: g}
      g: {end: true}
""",
        "sale.yaml:5:25: step `a` of process `follow_up`: `Deal.amount` is a `money` field, "
        "not a date; the date fields of `Deal` are `planned_close`, `created_at`, "
        "`updated_at`",
        "sale.yaml:6:25: step `b` of process `follow_up`: `Deal` has no field `planed_close` "
        "(did you mean `planned_close`?); the date fields of `Deal` are `planned_close`, "
        "`created_at`, `updated_at`",
        "sale.yaml:7:17: step `c` of process `follow_up`: `wait` is a duration (`2d`) or "
        "`{until: a date field}`, one of them",
        "sale.yaml:10:18: step `f` of process `follow_up`: unknown key `untl` in `wait` (did "
        "you mean `until`?)",
    ),
    case(
        "channels_no_plugin_delivers",
        """\
processes:
  follow_up:
    document: Deal
    steps:
      tell:
        notify: {channel: sms, to: "{{ doc.customer.phone }}", text: "Your offer {{ doc.number }} is ready"}
        next: mail
      mail:
        notify: {channel: emial, to: "{{ doc.customer.email }}", text: Hello}
        next: done
      done: {end: true}
""",
        "sale.yaml:6:27: step `tell` of process `follow_up`: no enabled plugin delivers the "
        "channel `sms`; the `telephony` plugin delivers it: add `telephony: {}` under "
        "`plugins` in config.yaml",
        "sale.yaml:9:27: step `mail` of process `follow_up`: no enabled plugin delivers the "
        "channel `emial`; channels here: `user`",
    ),
    case(
        "assignees",
        """\
processes:
  follow_up:
    document: Deal
    steps:
      a: {task: {title: A, assignee: {role: sales_hed}}, next: b}
      b: {task: {title: B, assignee: customer}, next: c}
      c: {task: {title: C, assignee: manger}, next: d}
      d: {task: {title: D, assignee: {rol: manager}}, next: e}
      e: {task: {title: E, assignee: {user: anna}}, next: f}
      f:
        notify: {to: {role: nobody}, text: Hi}
        next: g
      g: {end: true}
""",
        "sale.yaml:5:45: step `a` of process `follow_up`: `assignee`: unknown role "
        "`sales_hed` (did you mean `sales_head`?); roles are `manager`, `sales_head`, "
        "`operator`, `marketer`, `administrator`",
        "sale.yaml:6:38: step `b` of process `follow_up`: `assignee`: `Deal.customer` refers "
        "to `Customer`, not to a user; write `owner`, a field that refers to a user "
        "(`manager`, `created_by`, `updated_by`), `{role: R}` or `{user: LOGIN}`",
        "sale.yaml:7:38: step `c` of process `follow_up`: `assignee`: `Deal` has no field "
        "`manger` (did you mean `manager`?); write `owner`, a field that refers to a user "
        "(`manager`, `created_by`, `updated_by`), `{role: R}` or `{user: LOGIN}`",
        "sale.yaml:8:39: step `d` of process `follow_up`: `assignee`: unknown key `rol` (did "
        "you mean `role`?); write `owner`, a field that refers to a user (`manager`, "
        "`created_by`, `updated_by`), `{role: R}` or `{user: LOGIN}`",
        "sale.yaml:11:29: step `f` of process `follow_up`: `to`: unknown role `nobody`; roles "
        "are `manager`, `sales_head`, `operator`, `marketer`, `administrator`",
    ),
    case(
        "set_values",
        """\
processes:
  follow_up:
    document: Deal
    steps:
      a:
        set: {stage: wn, kind: typicl, nope: 1, number: D-1, created_at: 2026-01-01, probability: "{{ doc.amont }}"}
        next: b
      b: {end: true}
  order_flow:
    document: CustomerOrder
    steps:
      a:
        set: {total: 100, lines: [], status: shiped}
        next: b
      b: {end: true}
""",
        "sale.yaml:6:22: step `a` of process `follow_up`: `Deal` has no state `wn` (did you "
        "mean `won`?); its states are `new`, `qualification`, `proposal`, `contract`, `won`, "
        "`lost`",
        "sale.yaml:6:32: step `a` of process `follow_up`: `typicl` is not a value of "
        "`Deal.kind` (did you mean `typical`?); its values are `typical`, `manual`, `simple`",
        "sale.yaml:6:40: step `a` of process `follow_up`: `Deal` has no field `nope`",
        "sale.yaml:6:49: step `a` of process `follow_up`: `Deal.number` is kept by the "
        "engine; a process cannot set it",
        "sale.yaml:6:62: step `a` of process `follow_up`: `Deal.created_at` is kept by the "
        "engine; a process cannot set it",
        "sale.yaml:6:99: step `a` of process `follow_up`: `probability`: `Deal` has no field "
        "`amont` (did you mean `amount`?)",
        "sale.yaml:13:15: step `a` of process `order_flow`: `CustomerOrder.total` is computed "
        "from `lines | sum(attribute='amount')`; set the fields it is computed from instead",
        "sale.yaml:13:27: step `a` of process `order_flow`: `CustomerOrder.lines` is a table "
        "of rows; a process cannot set it",
        "sale.yaml:13:46: step `a` of process `order_flow`: `CustomerOrder` has no state "
        "`shiped` (did you mean `shipped`?); its states are `new`, `confirmed`, `shipped`, "
        "`closed`, `cancelled`",
    ),
    case(
        "expressions",
        """\
processes:
  follow_up:
    document: Deal
    start: {on: create, when: "kind = 'typical'"}
    steps:
      a:
        if: "doc.amount >"
        then: b
        else: b
      b:
        if: "amont > 5"
        then: c
        else: c
      c:
        task: {title: "Call {{ doc.customer.nam }}", description: "{{ doc.__class__ }}"}
        next: d
      d:
        notify: {to: owner, text: "{{ doc.number }} for {{ doc.cusomer }}"}
        next: e
      e: {end: true}
""",
        "sale.yaml:4:31: process `follow_up`: `start`: `when`: `kind = 'typical'` is not a "
        "valid expression: unexpected '=' after the expression",
        "sale.yaml:7:13: step `a` of process `follow_up`: `if`: `doc.amount >` is not a valid "
        "expression: it ends too early: a value or a closing bracket is missing",
        "sale.yaml:11:13: step `b` of process `follow_up`: `if`: unknown name `amont` in "
        "`amont > 5` (did you mean `amount`?)",
        "sale.yaml:15:23: step `c` of process `follow_up`: `title`: `Customer` has no field "
        "`nam` (did you mean `name`?)",
        "sale.yaml:15:67: step `c` of process `follow_up`: `description`: `{{ doc.__class__ "
        "}}` reaches the hidden attribute `__class__`",
        "sale.yaml:18:35: step `d` of process `follow_up`: `text`: `Deal` has no field "
        "`cusomer` (did you mean `customer`?)",
    ),
    case(
        "start_triggers",
        """\
processes:
  on_nonexistent:
    document: Deal
    start: {on: {status: nonexistent}}
    steps:
      done: {end: true}
  on_field:
    document: Deal
    start: {on: {field: nope}}
    steps:
      done: {end: true}
  on_delete:
    document: Deal
    start: {on: delete}
    steps:
      done: {end: true}
  on_number:
    document: Deal
    start: {on: 5, if: "amount"}
    steps:
      done: {end: true}
  on_two:
    document: Deal
    start: {on: {status: won, field: amount}}
    steps:
      done: {end: true}
""",
        "sale.yaml:4:26: process `on_nonexistent`: `start`: `Deal` has no state "
        "`nonexistent`; its states are `new`, `qualification`, `proposal`, `contract`, `won`, "
        "`lost`",
        "sale.yaml:9:25: process `on_field`: `start`: `Deal` has no field `nope`",
        "sale.yaml:14:17: process `on_delete`: `start`: a process cannot start on `delete`: "
        "the document is gone by then",
        "sale.yaml:19:17: process `on_number`: `start`: `on` is `create`, `update`, `delete`, "
        "`{status: S}` or `{field: F}`, not `5`",
        "sale.yaml:19:20: process `on_number`: `start`: unknown key `if`; it takes `on`, `when`, `label`",
        "sale.yaml:24:31: process `on_two`: `start`: `on` names one event, not both `status` "
        "and `field`; make two of them",
    ),
    case(
        "automations",
        """\
processes:
  customer_care:
    document: Customer
    steps:
      done: {end: true}
automations:
  no_do:
    on: {document: Deal, status: won}
  unknown_action:
    on: {document: Deal, status: won}
    do:
      - notfy: {text: Won}
  do_is_a_map:
    on: {document: Deal, status: won}
    do: {x: 1}
  starts:
    on: {document: Deal, status: won}
    do:
      - start: typical_sael
      - start: customer_care
      - start: {process: typical_sale}
  creates:
    on: {document: Deal, status: lost}
    when: "doc.loss_reasn"
    do:
      - create: {document: Taks, values: {title: x}}
      - create: {document: Task, values: {titel: "Why {{ doc.number }}?"}}
      - create: {document: Interaction, values: {subject: "Lost {{ doc.number }}"}}
  emails:
    on: {document: CustomerOrder, status: shipped}
    do:
      - notify: {channel: email, to: "{{ doc.customer.email }}", text: "Order {{ doc.number }} has shipped"}
  no_document:
    on: {status: won}
    do:
      - notify: {text: Won}
  on_delete:
    on: {document: Deal, event: delete}
    do:
      - set: {probability: 0}
      - notify: {text: "Deal {{ doc.number }} was deleted"}
""",
        "sale.yaml:7:3: automation `no_do` has no `do`: list what it does, such as `do: "
        "[{notify: {to: owner, text: ...}}]`",
        "sale.yaml:12:9: automation `unknown_action`: unknown action `notfy` (did you mean "
        "`notify`?); each action is one of `notify`, `set`, `create`, `start`",
        "sale.yaml:15:9: automation `do_is_a_map`: `do` lists the actions (`notify`, `set`, "
        "`create`, `start`), one per line starting with `-`, not a map",
        "sale.yaml:19:16: automation `starts`: unknown process `typical_sael` (did you mean "
        "`typical_sale`?); processes are `typical_sale`, `customer_care`",
        "sale.yaml:20:16: automation `starts`: the process `customer_care` runs on "
        "`Customer`, not `Deal`",
        "sale.yaml:24:11: automation `creates`: `when`: `Deal` has no field `loss_reasn` (did "
        "you mean `loss_reason`?)",
        "sale.yaml:26:28: automation `creates`: unknown document type `Taks` (did you mean "
        "`Task`?)",
        "sale.yaml:27:43: automation `creates`: `Task` has no field `titel` (did you mean "
        "`title`?)",
        "sale.yaml:28:17: automation `creates`: `create` of `Interaction` leaves "
        "`planned_at`, `customer` empty, and they are required; give them under `values`",
        "sale.yaml:32:27: automation `emails`: no enabled plugin delivers the channel "
        "`email`; the `mail` plugin delivers it: add `mail: {}` under `plugins` in config.yaml",
        "sale.yaml:34:9: automation `no_document`: `on` names the `document` and the event, "
        "such as `{document: Deal, status: won}`",
        "sale.yaml:40:9: automation `on_delete`: `set` on a deleted document; on `delete` an "
        "automation may `notify` or `create`",
    ),
    case(
        "step_names",
        """\
processes:
  follow_up:
    document: Deal
    steps:
      1st: {task: {title: First}, next: end}
      end: {end: true}
""",
        "sale.yaml:5:7: process `follow_up`: the step name `1st` must start with a letter and "
        "hold only letters, digits and _",
    ),
    case(
        "switched_on_and_off",
        """\
processes:
  typical_sale: {enabled: false}
  follow_up:
    document: Deal
    enabled: yes
    steps:
      done: {end: true}
automations:
  old_rule:
    enabled: false
    on: whatever
  starts_off:
    on: {document: Deal, status: won}
    do:
      - start: typical_sale
""",
        "sale.yaml:5:14: process `follow_up`: `enabled` is `true` or `false`, not `yes`",
        "sale.yaml:15:16: automation `starts_off`: the process `typical_sale` is switched off "
        "(`enabled: false`)",
        "metadata/deal.yaml:23:16: `statuses.control` of `Deal`: `typical` move only through a "
        "process, but no enabled process sets `Deal.stage`; give them one, or write "
        "`control: {process: []}` to let people move them by hand",
    ),
    case(
        "shapes",
        """\
processes:
  a_list:
    document: Deal
    steps: [a, b]
  shapes:
    document: Deal
    start: {on: 5}
    steps:
      task_is_5: {task: 5, next: outcomes_list}
      outcomes_list: {task: {title: T}, outcomes: [x]}
      parallel_map: {parallel: {a: b}, join: done}
      notify_numbers: {notify: [1, 2], next: set_seven}
      set_seven: {set: 7, next: nulls}
      nulls: {task: {title: ~, assignee: ~, due: ~}, next: ~}
      done: {end: ~}
  nothing:
automations:
  do_map:
    on: {document: Deal}
    do: {x: 1}
  nulls:
    on: ~
    when: ~
    do: [~]
""",
        "sale.yaml:4:12: process `a_list`: `steps` maps step names to steps, not a list",
        "sale.yaml:7:17: process `shapes`: `start`: `on` is `create`, `update`, `delete`, "
        "`{status: S}` or `{field: F}`, not `5`",
        "sale.yaml:9:25: step `task_is_5` of process `shapes`: `task` is a map such as "
        "`{title: ..., assignee: owner, due: 2d}`, not 5",
        "sale.yaml:10:51: step `outcomes_list` of process `shapes`: `outcomes` maps each "
        "outcome to the step it leads to, such as `{ok: next_step}`",
        "sale.yaml:11:32: step `parallel_map` of process `shapes`: `parallel` lists two or "
        "more steps to run at once, such as `[call_client, send_offer]`",
        "sale.yaml:12:33: step `notify_numbers` of process `shapes`: `notify` is a map such "
        "as `{channel: user, to: owner, text: ...}`, not 1",
        "sale.yaml:12:36: step `notify_numbers` of process `shapes`: `notify` is a map such "
        "as `{channel: user, to: owner, text: ...}`, not 2",
        "sale.yaml:13:24: step `set_seven` of process `shapes`: `set` maps fields of `Deal` "
        "to values, such as `{stage: won}`, not 7",
        "sale.yaml:14:21: step `nulls` of process `shapes`: a task needs a `title`",
        "sale.yaml:14:42: step `nulls` of process `shapes`: `assignee`: write `owner`, a "
        "field that refers to a user (`manager`, `created_by`, `updated_by`), `{role: R}` or "
        "`{user: LOGIN}`, not null",
        "sale.yaml:14:50: step `nulls` of process `shapes`: `due`: the duration is empty: "
        "write `30m`, `4h`, `2d`, `1w` or `3bd` (business days)",
        "sale.yaml:14:60: step `nulls` of process `shapes`: `next` names a step, not null",
        "sale.yaml:15:19: step `done` of process `shapes`: write `end: true`, not `end: null`",
        "sale.yaml:16:3: process `nothing`: a process is a map with `document`, `start` and "
        "`steps`",
        "sale.yaml:20:9: automation `do_map`: `do` lists the actions (`notify`, `set`, "
        "`create`, `start`), one per line starting with `-`, not a map",
        "sale.yaml:22:9: automation `nulls`: `on` names the `document` and the event, such as "
        "`{document: Deal, status: won}`",
    ),
    case(
        "labels",
        """\
processes:
  labelled:
    document: Deal
    start: {on: create, label: [a, b]}
    steps:
      ask:
        label: {en: Ask, ru: 5}
        task: {title: Ask, assignee: owner}
        outcomes: {ok: {to: done, label: [x]}}
      done: {end: true, label: ""}
""",
        "sale.yaml:4:32: process `labelled`: `start`: `label` is text, or text by language "
        "`{en: ..., ru: ...}`, not a list",
        "sale.yaml:7:16: step `ask` of process `labelled`: `label` is text, or text by language "
        "`{en: ..., ru: ...}`, not a map",
        "sale.yaml:9:42: step `ask` of process `labelled`: the label of `ok` is text, or text "
        "by language `{en: ..., ru: ...}`",
        "sale.yaml:10:32: step `done` of process `labelled`: `label` is text, or text by "
        "language `{en: ..., ru: ...}`, not empty",
    ),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_crm_check_reports_every_defect_where_it_is(
    problems_of: Problems, text: str, expected: list[str]
) -> None:
    assert problems_of({"sale.yaml": text}, config=CONFIG) == expected


# --- what passes ----------------------------------------------------------------------

GOOD = """\
processes:
  follow_up:
    label: {en: Follow up, ru: Перезвонить}
    document: Deal
    start: {on: {status: proposal}, when: "amount and amount > 0"}
    steps:
      call:
        task: {title: "Call {{ doc.customer.name }}", assignee: manager, due: 4h}
        outcomes: {reached: decide, busy: pause}
      pause:
        wait: 1bd
        next: call
      decide:
        if: "doc.probability >= 50"
        then: both
        else: bump
      bump:
        set: {probability: "{{ doc.probability + 10 }}"}
        notify: {to: {role: sales_head}, text: "{{ doc.number }} needs a push"}
        next: call
      both:
        parallel: [offer, remind]
        join: close
      offer:
        task: {title: Send the offer, assignee: {role: sales_head}, due: 1d}
        next: close
      remind:
        wait: {until: planned_close}
        next: close
      close: {end: true, set: {stage: won}}
automations:
  tell_the_head:
    on: {document: Deal, status: won}
    when: "doc.amount > 1000000"
    do:
      - notify: {to: {role: sales_head}, text: "Big win: {{ doc.number }}"}
      - create: {document: Task, values: {title: "Thank {{ doc.customer.name }}"}}
      - start: follow_up
  on_delete:
    on: {document: Deal, event: delete}
    do:
      - notify: {to: owner, text: "{{ doc.number }} was deleted"}
"""


def test_a_loop_with_a_task_or_a_wait_in_it_is_fine(problems_of: Problems) -> None:
    """`call` → `decide` → `bump` → `call` comes back through a task, and
    `pause` → `call` through a wait: a person or the clock stops each turn."""
    assert problems_of({"sale.yaml": GOOD}, config=CONFIG) == []


def test_the_shipped_typical_sale_passes_and_can_be_switched_off(problems_of: Problems) -> None:
    assert problems_of({}, config=CONFIG) == []
    off = "processes:\n  typical_sale: {enabled: false}\n"
    # typical deals would never move: the config must let people move them
    [stuck] = problems_of({"sale.yaml": off}, config=CONFIG)
    assert (
        "`typical` move only through a process, but no enabled process sets `Deal.stage`" in stuck
    )
    by_hand = off + "documents:\n  Deal:\n    statuses:\n      control: {process: []}\n"
    assert problems_of({"sale.yaml": by_hand}, config=CONFIG) == []


def registry_with(registry: Registry, text: str) -> Registry:
    """``registry`` with the processes and automations of ``text`` instead of its own."""
    data = load_text(text, "sale.yaml", {}).data

    def sections(key: str) -> dict[str, Section]:
        node = data.get(key) or {}
        return {k: Section(k, v, node.key_loc(k)) for k, v in node.items()}

    return dataclasses.replace(
        registry,
        sections={"processes": sections("processes"), "automations": sections("automations")},
    )


@pytest.fixture(scope="module")
def base_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    folder = tmp_path_factory.mktemp("base")
    (folder / "config.yaml").write_text(CONFIG, encoding="utf-8")
    return load(folder, env={})


MAIL = """\
processes:
  follow_up:
    document: Deal
    steps:
      mail:
        notify:
          - {channel: email, to: "{{ doc.customer.email }}", subject: "{{ doc.number }}", text: Hi}
          - {channel: sms, text: Hi}
          - {channel: email, to: "{{ doc.customer.mail }}", text: Hi}
        next: approve
      approve:
        approve: {by: sales_head}
        next: done
      done: {end: true}
"""


def test_channels_and_step_kinds_are_the_ones_plugins_bring(base_registry: Registry) -> None:
    """With plugins that deliver `email` and `sms` and run an `approve` step,
    those are accepted; the address of a message is still checked."""
    registry = registry_with(base_registry, MAIL)
    found = definitions.read(registry, ["user", "email", "sms"], ["approve"])
    assert [str(p) for p in sorted(found.problems)] == [
        "sale.yaml:8:13: step `mail` of process `follow_up`: a notification by `sms` needs "
        '`to`: a field (`customer.email`), a template (`"{{ doc.customer.email }}"`) or the '
        "users to write to (`owner`, a user field, `{role: R}`, `{user: LOGIN}`)",
        "sale.yaml:9:34: step `mail` of process `follow_up`: `to`: `Customer` has no field "
        "`mail` (did you mean `email`?)",
    ]
    without = definitions.read(registry, ["user"])
    assert [str(p) for p in sorted(without.problems)] == [
        "sale.yaml:7:23: step `mail` of process `follow_up`: no enabled plugin delivers the "
        "channel `email`; the `mail` plugin delivers it: add `mail: {}` under `plugins` in "
        "config.yaml",
        "sale.yaml:8:13: step `mail` of process `follow_up`: a notification by `sms` needs "
        '`to`: a field (`customer.email`), a template (`"{{ doc.customer.email }}"`) or the '
        "users to write to (`owner`, a user field, `{role: R}`, `{user: LOGIN}`)",
        "sale.yaml:8:23: step `mail` of process `follow_up`: no enabled plugin delivers the "
        "channel `sms`; the `telephony` plugin delivers it: add `telephony: {}` under "
        "`plugins` in config.yaml",
        "sale.yaml:9:23: step `mail` of process `follow_up`: no enabled plugin delivers the "
        "channel `email`; the `mail` plugin delivers it: add `mail: {}` under `plugins` in "
        "config.yaml",
        "sale.yaml:9:34: step `mail` of process `follow_up`: `to`: `Customer` has no field "
        "`mail` (did you mean `email`?)",
        "sale.yaml:12:9: step `approve` of process `follow_up`: unknown key `approve`; "
        "say what it does: `task`, `if`, `parallel`, `wait`, `notify`, `set`, `end`",
    ]


# --- the plugin's settings --------------------------------------------------------------


def test_workdays_and_holidays_are_checked_in_config_yaml(problems_of: Problems) -> None:
    config = CONFIG.replace(
        "processes: {}",
        "processes:\n"
        "    workdays: [mon, tue, funday, Wednesday, 5]\n"
        '    holidays: [2027-01-07, "2027-02-30", 7, tomorrow]\n'
        "    workday: [sat]\n",
    )
    what = "the settings of the `processes` plugin"
    assert problems_of({}, config=config) == [
        f"config.yaml:6:26: `workdays` of {what}: `funday` is not a weekday: "
        "write mon, tue, wed, thu, fri, sat or sun",
        f"config.yaml:6:45: `workdays` of {what}: `5` is not a weekday: "
        "write mon, tue, wed, thu, fri, sat or sun",
        f"config.yaml:7:28: `holidays` of {what}: `2027-02-30` is not a date such as 2027-01-07",
        f"config.yaml:7:42: `holidays` of {what}: `7` is not a date such as 2027-01-07",
        f"config.yaml:7:45: `holidays` of {what}: `tomorrow` is not a date such as 2027-01-07",
        f"config.yaml:8:5: unknown key `workday` in {what} (did you mean `workdays`?)",
    ]
    empty = CONFIG.replace("processes: {}", "processes: {workdays: [], holidays: {new_year: 1}}")
    assert problems_of({}, config=empty) == [
        f"config.yaml:5:25: {what}: `workdays` is empty, so business days "
        "(`bd`) would never pass; list the working weekdays, e.g. `[mon, tue, wed, thu, fri]`",
        f"config.yaml:5:39: {what}: `holidays` lists dates, e.g. `[2027-01-01, 2027-01-07]`",
    ]
    single = CONFIG.replace("processes: {}", "processes: {workdays: 5, holidays: 2027-01-07}")
    assert problems_of({}, config=single) == [
        f"config.yaml:5:25: {what}: `workdays` lists the working weekdays, "
        "e.g. `[mon, tue, wed, thu, fri]`",
    ]


def test_good_settings_make_the_business_calendar(make_config: Callable[..., Path]) -> None:
    config = CONFIG.replace(
        "processes: {}", "processes: {workdays: [sun, monday, Tue], holidays: [2027-01-07]}"
    )
    registry = load(make_config({}, config=config), env={})
    calendar = definitions.calendar_of(registry)
    assert calendar.workdays == frozenset({6, 0, 1})
    assert [str(d) for d in calendar.holidays] == ["2027-01-07"]


# --- the example configurations and the command line -------------------------------------


@pytest.mark.parametrize("name", ["services", "wholesale"])
def test_the_example_configs_still_pass(name: str) -> None:
    registry = load(ROOT / "configs" / name, env={})
    assert "processes" in registry.plugins
    result = CliRunner().invoke(main, ["check", str(ROOT / "configs" / name)])
    assert result.exit_code == 0, result.output
    assert ": OK" in result.output


def test_crm_check_prints_every_problem_of_a_file_and_exits_1(
    make_config: Callable[..., Path],
) -> None:
    """A file with many defects of many kinds: all of them, in one run, in order."""
    folder = make_config(
        {
            "sale.yaml": """\
                processes:
                  follow_up:
                    document: Deal
                    start: {on: {status: wn}}
                    steps:
                      call: {task: {title: Call, due: 2x}, outcomes: {ok: dnoe}}
                      done: {end: true}
                  other:
                    document: Dael
                automations:
                  tell:
                    on: {document: Deal, status: won}
                    do: [{notify: {channel: sms, text: Won}}]
            """
        },
        config=CONFIG,
    )
    result = CliRunner().invoke(main, ["check", str(folder)])
    assert result.exit_code == 1
    lines = [line.replace(str(folder) + "/", "") for line in result.output.splitlines()]
    assert lines == [
        "sale.yaml:4:26: process `follow_up`: `start`: `Deal` has no state `wn` (did you mean "
        "`won`?); its states are `new`, `qualification`, `proposal`, `contract`, `won`, `lost`",
        "sale.yaml:6:39: step `call` of process `follow_up`: `due`: `2x`: unknown unit `x`; "
        "units are m (minutes), h (hours), d (days), w (weeks), bd (business days)",
        "sale.yaml:6:59: step `call` of process `follow_up`: `outcomes` leads to an unknown "
        "step `dnoe` (did you mean `done`?)",
        "sale.yaml:9:15: process `other`: unknown document type `Dael` (did you mean `Deal`?)",
        "sale.yaml:13:19: automation `tell`: a notification by `sms` needs `to`: a field "
        '(`customer.email`), a template (`"{{ doc.customer.email }}"`) or the users to write to '
        "(`owner`, a user field, `{role: R}`, `{user: LOGIN}`)",
        "sale.yaml:13:29: automation `tell`: no enabled plugin delivers the channel `sms`; "
        "the `telephony` plugin delivers it: add `telephony: {}` under `plugins` in "
        "config.yaml",
        "6 problems found",
    ]
    assert "Traceback" not in result.output


# --- malformed input never raises ------------------------------------------------------------

KEYS = [
    "document", "start", "steps", "label", "enabled", "on", "when", "status", "field", "event",
    "task", "title", "assignee", "due", "description", "outcomes", "next", "if", "then", "else",
    "parallel", "join", "wait", "until", "for", "notify", "channel", "to", "text", "subject",
    "set", "end", "role", "user", "do", "create", "values", "process", "stage", "amount",
    "a", "b", "Deal", "won",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=16),
    st.sampled_from([*KEYS, "", "2d", "0d", "1.5d", "owner", "manager", "{{ doc.", "{{ x }}"]),
)
SHAPES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=25,
)


@pytest.mark.parametrize(
    "text",
    [
        "processes:\n  p: {document: Deal, steps: [a, b]}\n",
        "processes:\n  p: {document: Deal, steps: {a: {task: 5}}}\n",
        "processes:\n  p: {document: Deal, steps: {a: {task: {title: T}, outcomes: [x]}}}\n",
        "processes:\n  p: {document: Deal, steps: {a: {parallel: {a: b}, join: a}}}\n",
        "processes:\n  p: {document: Deal, steps: {a: {notify: [1, 2], next: a}}}\n",
        "processes:\n  p: {document: Deal, steps: {a: {set: 7, next: a}}}\n",
        "processes:\n  p: {document: Deal, start: {on: 5}, steps: {a: {end: true}}}\n",
        "automations:\n  a: {on: {document: Deal}, do: {x: 1}}\n",
        "processes:\n  p: {document: ~, start: ~, steps: ~}\n  q: ~\n"
        "automations:\n  a: {on: ~, when: ~, do: ~}\n  b: ~\n",
        "processes:\n  p: {document: Deal, steps: {a: ~, b: {task: ~, outcomes: ~, next: ~}}}\n",
        "processes:\n  p: {document: Deal, steps: {2: {end: true}, true: {end: true}}}\n",
        "automations:\n  a: {on: {document: Deal, status: [won]}, do: [{start: [x]}]}\n",
        "automations:\n  a: {on: {document: Deal}, do: [{set: {stage: [won]}}, {notify: [1]}]}\n",
    ],
)
def test_malformed_shapes_become_problems(base_registry: Registry, text: str) -> None:
    found = definitions.read(registry_with(base_registry, text), ["user"])
    assert found.problems
    assert all(isinstance(p, Problem) and isinstance(p.loc, Loc) for p in found.problems)
    assert all(p.loc.file == "sale.yaml" and p.loc.line > 0 for p in found.problems)
    assert not found.processes.keys() - {"typical_sale"}


def test_a_long_route_map_is_checked_without_recursion(base_registry: Registry) -> None:
    """More steps in a row than Python's recursion limit, looping back to the
    first: one problem, no RecursionError."""
    n = 1500
    steps = "".join(
        f"      s{i}: {{set: {{probability: 1}}, next: s{(i + 1) % n}}}\n" for i in range(n)
    )
    text = f"processes:\n  long:\n    document: Deal\n    steps:\n{steps}"
    found = definitions.read(registry_with(base_registry, text), ["user"])
    [problem] = found.problems
    assert problem.loc == Loc("sale.yaml", 5, 7)
    assert problem.message.startswith("process `long`: the steps `s0` → `s1` → `s2` → ")
    assert problem.message.endswith(
        "→ `s0` form a loop with no task or wait in it, so it would never stop; "
        "put a task or a `wait` on the way"
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(processes=st.dictionaries(st.sampled_from(["p", "q"]), SHAPES, max_size=2),
       automations=st.dictionaries(st.sampled_from(["a", "b"]), SHAPES, max_size=2))  # fmt: skip
def test_no_shape_of_yaml_raises_out_of_read(
    base_registry: Registry, processes: dict[str, Any], automations: dict[str, Any]
) -> None:
    """Whatever the YAML holds, read() returns definitions and problems; both
    as loaded YAML (maps that know their lines) and as plain Python values."""
    text = json.dumps({"processes": processes, "automations": automations})
    for registry in (
        registry_with(base_registry, text),
        dataclasses.replace(
            base_registry,
            sections={
                "processes": {
                    k: Section(k, v, Loc("sale.yaml", 1, 1)) for k, v in processes.items()
                },
                "automations": {
                    k: Section(k, v, Loc("sale.yaml", 1, 1)) for k, v in automations.items()
                },
            },
        ),
    ):
        found = definitions.read(registry, ["user"])
        assert all(isinstance(p, Problem) and str(p) for p in found.problems)
        for p in found.processes.values():
            assert p.first in p.steps


def test_an_outcome_with_a_label_names_its_step_and_its_label_is_text(problems_of: Any) -> None:
    steps = """
processes:
  p:
    document: Deal
    steps:
      call:
        task: {title: Call, assignee: owner}
        outcomes:
          ok: {to: done, label: {en: Agreed, ru: Согласен}}
          no: {label: Refused}
          maybe: {to: done, label: [1, 2], colour: red}
      done: {end: true}
"""
    assert problems_of({"p.yaml": steps}, config=CONFIG) == [
        "p.yaml:10:15: step `call` of process `p`: the outcome `no` leads nowhere: name a step",
        "p.yaml:11:36: step `call` of process `p`: the label of `maybe` is text, or text by language `{en: ..., ru: ...}`",
        "p.yaml:11:44: step `call` of process `p`: the outcome `maybe` takes `to` and `label`, not `colour`",
    ]
