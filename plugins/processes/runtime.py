"""Running route maps and automations, inside the caller's transaction.

An instance of a process is a ``ProcessInstance`` record whose ``tokens``
rows say where it stands: one row per branch, ``active`` while the engine
passes through instant steps, ``waiting`` on a task or the clock,
``joined`` at the join of a parallel split, ``done`` once passed. Every
change to an instance moves its version counter, and the instance row is
locked (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite has one writer at a
time), so two workers, or a task completed twice, advance it once: the
second one finds the task closed and the token moved on.

Whatever leaves the system (email, SMS) is queued in the outbox
(``engine.jobs``) in the same transaction; in-app notifications are
``Notification`` records written there too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from engine import api
from engine.api import USER, DocType, Documents, HandledError

from .definitions import Action, Assignee, Definitions, Notify, Process, Step, Trigger

TASK, INSTANCE, NOTIFICATION = "Task", "ProcessInstance", "Notification"
#: how deep automations and processes may set off one another in one save
MAX_DEPTH = 8
#: steps one advance may pass through (the checks refuse loops without a task)
MAX_STEPS = 500
COMPLETING = "processes.completing"


class ProcessError(HandledError):
    """A process could not go on; the message names the process and step."""


class Runtime:
    """Processes and automations for one transaction, on behalf of ``docs``'s user."""

    def __init__(self, docs: Documents, defs: Definitions):
        self.user_docs = docs
        self.defs = defs
        self.session = docs.session
        self.models = docs.models
        self.registry = docs.registry
        # the engine writes readonly fields (a task's outcome, an instance's tokens)
        self.docs = Documents(
            docs.models, docs.session, docs.principal.user_id, docs.principal.roles, docs.pm,
            now=docs.now, username=docs.principal.username, trusted=True,
        )  # fmt: skip
        self.calendar = defs.calendar
        depth = docs.session.info.get("processes.depth", 0)
        self.depth = depth

    # -- events -------------------------------------------------------------------------

    def created(self, d: DocType, doc: Any) -> None:
        self._fire(d, doc, lambda t: t.event == "create")

    def updated(self, d: DocType, doc: Any, changes: Mapping[str, tuple[Any, Any]]) -> None:
        status = d.statuses.field if d.statuses else None
        self._fire(
            d,
            doc,
            lambda t: (
                (t.event == "update" and any(k != status for k in changes))
                or (t.event == "field" and t.value in changes)
            ),
        )
        self.stop(d, doc)

    def stop(self, d: DocType, doc: Any) -> None:
        """After a save: cancel the running instances whose ``stop_when``
        holds for the document now (one query for the document's instances)."""
        stoppable = {
            p.name: p
            for p in self.defs.processes.values()
            if p.document == d.name and p.stop_when is not None
        }
        if not stoppable:
            return
        cls = self.models.cls(INSTANCE)
        running = self.session.execute(
            sa.select(cls).where(
                cls.doctype == d.name, cls.doc_id == doc.id, cls.status == "running",
                cls.process.in_(sorted(stoppable)),
            ).order_by(cls.id)
        ).scalars().all()  # fmt: skip
        for instance in running:
            condition = stoppable[instance.process].stop_when
            assert condition is not None
            if instance.status == "running" and api.truthy(self._evaluate(d, doc, condition)):
                # kept in the task: written in the configuration's language
                with api.speaking(self.registry.locale):
                    reason = api.gettext(
                        "the process “%(process)s” stopped: %(condition)s",
                        process=instance.label,
                        condition=condition,
                    )
                self.finish(instance, "cancelled", reason)

    def status_changed(self, d: DocType, doc: Any, target: str) -> None:
        self._fire(d, doc, lambda t: t.event == "status" and t.value == target)

    def deleted(self, d: DocType, doc: Any) -> None:
        self._fire(d, doc, lambda t: t.event == "delete")
        if d.name not in (TASK, INSTANCE, NOTIFICATION):
            self.cancel_instances(d, doc)

    def _fire(self, d: DocType, doc: Any, matches: Any) -> None:
        processes, automations = self.defs.for_document(d.name)
        chosen_p = [p for p in processes if matches(p.start)]
        chosen_a = [a for a in automations if matches(a.trigger)]
        if not chosen_p and not chosen_a:
            return
        if self.depth >= MAX_DEPTH:
            names = ", ".join([*(p.name for p in chosen_p), *(a.name for a in chosen_a)])
            raise ProcessError(
                f"automations and processes set one another off more than {MAX_DEPTH} times "
                f"in one save (last: {names}); check their triggers for a loop"
            )
        self.session.info["processes.depth"] = self.depth + 1
        try:
            for a in chosen_a:
                if self._when(a.trigger, d, doc):
                    for i, action in enumerate(a.actions):
                        self._act(f"{a.name}:{i}", action, d, doc)
            for p in chosen_p:
                if self._when(p.start, d, doc):
                    self.start(p, d, doc)
        finally:
            self.session.info["processes.depth"] = self.depth

    def _when(self, t: Trigger, d: DocType, doc: Any) -> bool:
        if t.when is None:
            return True
        return api.truthy(self._evaluate(d, doc, t.when))

    # -- expressions ----------------------------------------------------------------------

    def _view(self, d: DocType, doc: Any) -> Any:
        return self.docs.view(d, doc)

    def _evaluate(self, d: DocType, doc: Any, source: str) -> Any:
        view = self._view(d, doc)
        return api.evaluate(source, self.docs.expression_context(view, d.fields, source))

    def _render(self, d: DocType, doc: Any, source: str) -> str:
        view = self._view(d, doc)
        ctx = self.docs.expression_context(view, d.fields, source, template=True)
        return api.render(source, ctx).strip()

    # -- automations ----------------------------------------------------------------------

    def _act(self, name: str, action: Action, d: DocType, doc: Any) -> None:
        if action.kind == "notify":
            assert action.notify is not None
            self.notify(
                action.notify, d, doc, key=f"automation:{name}:{d.name}:{doc.id}:{_stamp(doc)}"
            )
        elif action.kind == "set":
            self.set_fields(d, doc, action.set)
        elif action.kind == "create":
            assert action.document is not None
            values = {
                k: self._render(d, doc, v) if isinstance(v, str) and "{{" in v else v
                for k, v in action.values.items()
            }
            self.docs.create(action.document, values)
        elif action.kind == "start":
            assert action.process is not None
            self.start(self.defs.processes[action.process], d, doc)

    # -- setting fields ---------------------------------------------------------------------

    def set_fields(self, d: DocType, doc: Any, values: Mapping[str, Any]) -> None:
        """Set fields as the process: templates rendered, the status field moved
        there with its history row and hooks, whatever the manual transitions
        say (the route map is the authority on its document's stages)."""
        if not values:
            return
        status = d.statuses.field if d.statuses else None
        plain = {
            k: self._render(d, doc, v) if isinstance(v, str) and "{{" in v else v
            for k, v in values.items()
            if k != status
        }
        if plain:
            self.docs.update(d.name, doc, plain)
        if status is not None and status in values:
            self.move(d, doc, str(values[status]))

    def move(self, d: DocType, doc: Any, target: str) -> None:
        assert d.statuses is not None
        source = getattr(doc, d.statuses.field)
        if source == target:
            return
        setattr(doc, d.statuses.field, target)
        self.docs.touch(doc)
        self.docs.flush(d, doc)
        self.docs.add_history(d, doc, source, target)
        self.docs.call_hook(
            "crm_document_updated", doctype=d, doc=doc, changes={d.statuses.field: (source, target)}
        )
        self.docs.call_hook("crm_status_changed", doctype=d, doc=doc, source=source, target=target)

    # -- notifications ------------------------------------------------------------------------

    def notify(self, n: Notify, d: DocType, doc: Any, key: str) -> None:
        text = self._render(d, doc, n.text) if n.text else ""
        if n.channel == "user":
            assert isinstance(n.to, Assignee)
            for user_id in self.people(n.to, d, doc, every=True):
                self.docs.create(
                    NOTIFICATION,
                    {"recipient": user_id, "text": text, "doctype": d.name, "doc_id": doc.id},
                )
            return
        payload: dict[str, Any] = {"text": text, "doctype": d.name, "doc_id": doc.id}
        if isinstance(n.to, Assignee):
            users = self.people(n.to, d, doc, every=True)
            if not users:
                return
            payload["users"] = users
        else:
            to = self._render(d, doc, str(n.to))
            if not to:
                return  # no address: nothing to send (a `when` usually says so)
            payload["to"] = to
        if n.subject:
            payload["subject"] = self._render(d, doc, n.subject)
        if n.template:
            payload["template"] = n.template
        job = f"notify.{n.channel}"
        if job in self._plugin_jobs():  # the channel's plugin delivers it, templates and all
            api.enqueue(self.session, job, payload, key=key)
            return
        if "users" in payload:
            payload["to"] = self._addresses(payload.pop("users"))
            if not payload["to"]:
                return
        if n.channel == "email":
            payload.setdefault("subject", text[:80])
            api.enqueue(self.session, "crm.email", payload, key=key)
        elif n.channel == "sms":
            api.enqueue(self.session, "crm.sms", payload, key=key)
        else:
            api.enqueue(self.session, job, payload, key=key)

    def _plugin_jobs(self) -> set[str]:
        """The names of the jobs the enabled plugins run, once per configuration."""
        registry = self.docs.registry
        found = registry.extensions.get("processes.jobs")
        if found is None:
            pm = self.docs.pm
            found = {n for r in (pm.hook.crm_jobs() if pm else ()) for n in r or {}}
            registry.extensions["processes.jobs"] = found
        return set(found)

    def _addresses(self, user_ids: list[int]) -> list[str]:
        users = self.models.table(USER)
        rows = self.session.execute(
            sa.select(users.c.email).where(users.c.id.in_(user_ids), users.c.email.is_not(None))
        )
        return [r[0] for r in rows if r[0]]

    # -- people -------------------------------------------------------------------------------

    def people(self, who: Assignee, d: DocType, doc: Any, every: bool = False) -> list[int]:
        """User ids: the owner, a user field, a role's least loaded member
        (every member when ``every``), or a user by login."""
        if who.kind in ("owner", "field"):
            name = d.owner if who.kind == "owner" else who.value
            assert name is not None
            value = getattr(doc, d.fields[name].column)
            return [value] if value is not None else []
        users = self.models.table(USER)
        if who.kind == "user":
            row = self.session.execute(
                sa.select(users.c.id).where(users.c.username == who.value, users.c.active.is_(True))
            ).first()
            return [row[0]] if row else []
        members = (
            sa.select(users.c.id)
            .join(USER_ROLE, USER_ROLE.c.user_id == users.c.id)
            .join(ROLE, ROLE.c.id == USER_ROLE.c.role_id)
            .where(ROLE.c.name == who.value, users.c.active.is_(True))
        )
        if every:
            return list(self.session.execute(members.order_by(users.c.id)).scalars())
        tasks = self.models.table(TASK)
        load = (
            sa.select(sa.func.count(tasks.c.id))
            .where(tasks.c.assignee_id == users.c.id, tasks.c.status == "open")
            .scalar_subquery()
        )
        row = self.session.execute(members.order_by(load, users.c.id).limit(1)).first()
        return [row[0]] if row else []

    def assignee(self, who: Assignee, d: DocType, doc: Any, where: str) -> int:
        found = self.people(who, d, doc)
        if found:
            return found[0]
        # nobody fits (an empty role, a user who left): the document's owner
        # takes it rather than the work being lost
        if d.owner:
            owner = getattr(doc, d.fields[d.owner].column)
            if owner is not None:
                return int(owner)
        if self.docs.user_id is not None:
            return self.docs.user_id
        raise ProcessError(f"{where}: nobody to assign the task to ({who})")

    # -- instances -------------------------------------------------------------------------------

    def start(self, p: Process, d: DocType, doc: Any) -> Any:
        owner = getattr(doc, d.fields[d.owner].column) if d.owner else None
        instance = self.docs.create(
            INSTANCE,
            {"process": p.name, "label": p.label, "doctype": d.name, "doc_id": doc.id,
             "owner": owner if owner is not None else self.docs.user_id},
        )  # fmt: skip
        token = self._token(instance, p.first, branch="", parent="")
        self._run(p, instance, d, doc, [(token, p.first)])
        return instance

    def _token(self, instance: Any, step: str, branch: str, parent: str) -> Any:
        cls = self.models.children[(INSTANCE, "tokens")]
        token = cls(step=step, state="active", branch=branch, parent=parent, since=self.docs.now())
        instance.tokens.append(token)
        self.session.flush()
        return token

    def _run(
        self, p: Process, instance: Any, d: DocType, doc: Any, todo: list[tuple[Any, str]]
    ) -> None:
        """Enter steps until every token waits or the instance has ended."""
        passed = 0
        while todo and instance.status == "running":
            token, name = todo.pop(0)
            passed += 1
            if passed > MAX_STEPS:
                raise ProcessError(f"process `{p.name}` passed {MAX_STEPS} steps without stopping")
            todo += self._enter(p, instance, d, doc, token, name)
        self.docs.touch(instance)
        self.session.flush()

    def _enter(
        self, p: Process, instance: Any, d: DocType, doc: Any, token: Any, name: str
    ) -> list[tuple[Any, str]]:
        step = p.steps[name]
        where = f"process `{p.name}`, step `{name}`"
        joins = p.join_of()
        if name in joins and token.branch.startswith(f"{joins[name]}@"):
            return self._arrive(p, instance, token, name)
        token.step, token.state, token.since, token.task_id = name, "active", self.docs.now(), None
        self.set_fields(d, doc, step.set)
        for i, n in enumerate(step.notify):
            self.notify(
                n, d, doc, key=f"process:{instance.id}:{token.id}:{name}:{i}:{_visits(token)}"
            )
        if step.kind == "task":
            assert step.task is not None
            spec = step.task
            due = spec.due.after(self.docs.now(), self.calendar) if spec.due else None
            task = self.docs.create(
                TASK,
                {"title": self._render(d, doc, spec.title)[:300] or name,
                 "description": self._render(d, doc, spec.description) if spec.description else None,
                 "assignee": self.assignee(spec.assignee, d, doc, where), "due": due,
                 "outcomes": ",".join(step.outcomes) or None, "process": instance.id, "step": name,
                 "doctype": d.name, "doc_id": doc.id},
            )  # fmt: skip
            token.state, token.task_id = "waiting", task.id
            return []
        if step.kind == "if":
            assert step.condition is not None
            yes = api.truthy(self._evaluate(d, doc, step.condition))
            target = step.then if yes else step.otherwise
            return [(token, target)] if target else []
        if step.kind == "parallel":
            token.state = "done"
            group = f"{name}@{token.id}"
            out = []
            for branch in step.parallel:
                out.append((self._token(instance, branch, group, token.branch), branch))
            return out
        if step.kind == "wait":
            assert step.wait is not None
            until = self._until(step, d, doc)
            token.state = "waiting"
            self.session.flush()
            api.enqueue(
                self.session, "processes.resume",
                {"instance": instance.id, "token": token.id, "step": name},
                key=f"resume:{instance.id}:{token.id}:{_visits(token)}", run_after=until,
            )  # fmt: skip
            return []
        if step.kind == "end":
            self.finish(instance, "done")
            return []
        # notify / set / a plugin's kind: straight on
        return [(token, step.next)] if step.next else []

    def _until(self, step: Step, d: DocType, doc: Any) -> dt.datetime:
        assert step.wait is not None
        now = self.docs.now()
        if step.wait.duration is not None:
            return step.wait.duration.after(now, self.calendar)
        value = getattr(doc, d.fields[str(step.wait.until)].column)
        if value is None:
            return now  # nothing to wait for
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        # a date: its start on the company's clock
        return dt.datetime.combine(value, dt.time(), self.calendar.tz).astimezone(dt.UTC)

    def _arrive(self, p: Process, instance: Any, token: Any, join: str) -> list[tuple[Any, str]]:
        """A branch reached its join: the last of the split's branches to
        arrive takes the instance on, as one token of the branch that split."""
        token.step, token.state, token.since = join, "joined", self.docs.now()
        group = token.branch
        split = p.steps[group.split("@", 1)[0]]
        joined = [t for t in instance.tokens if t.branch == group and t.state == "joined"]
        if len(joined) < len(split.parallel):
            return []
        for t in joined:
            t.state = "done"
        outer = self._token(instance, join, token.parent, _parent_of(instance, group))
        return [(outer, join)]

    def finish(self, instance: Any, state: str, reason: str | None = None) -> None:
        """End an instance: its open tasks are cancelled, its tokens passed."""
        self.close(instance, reason)
        if reason is not None:
            instance.reason = reason[:300]
        self.move(self.registry.documents[INSTANCE], instance, state)

    def close(self, instance: Any, reason: str | None = None) -> None:
        """Cancel an ended instance's open tasks (each with the reason, for its
        timeline and for whoever tries to complete it later) and pass its
        tokens. Doing it twice changes nothing."""
        if reason is None:
            with api.speaking(self.registry.locale):
                reason = api.gettext(
                    "the process “%(process)s” was cancelled", process=instance.label
                )
        tasks = self.models.cls(TASK)
        for task in self.session.execute(
            sa.select(tasks).where(tasks.process_id == instance.id, tasks.status == "open")
        ).scalars():
            task.reason = reason[:300]
            self.move(self.registry.documents[TASK], task, "cancelled")
        for t in instance.tokens:
            t.state = "done"
        if instance.finished_at is None:
            instance.finished_at = self.docs.now()

    def cancel_instances(self, d: DocType, doc: Any, reason: str | None = None) -> None:
        cls = self.models.cls(INSTANCE)
        for instance in self.session.execute(
            sa.select(cls).where(
                cls.doctype == d.name, cls.doc_id == doc.id, cls.status == "running"
            )
        ).scalars():
            self.finish(instance, "cancelled", reason)

    def steered(self, d: DocType, doc: Any) -> str | None:
        """Why a person may not move ``doc`` by hand: a running process sets
        its status field (the typical sale's fixed stages), or None."""
        if d.statuses is None:
            return None
        field = d.statuses.field
        steering = [
            p.name for p in self.defs.processes.values()
            if p.document == d.name and any(field in s.set for s in p.steps.values())
        ]  # fmt: skip
        if not steering:
            return None
        cls = self.models.cls(INSTANCE)
        label = self.session.execute(
            sa.select(cls.label).where(
                cls.doctype == d.name, cls.doc_id == doc.id, cls.status == "running",
                cls.process.in_(steering),
            ).limit(1)
        ).scalar()  # fmt: skip
        if label is None:
            return None
        return api.gettext(
            "its stages follow the process “%(label)s”: complete the process's tasks to move it",
            label=label,
        )

    # -- resuming -------------------------------------------------------------------------------

    def lock(self, instance_id: int) -> Any:
        cls = self.models.cls(INSTANCE)
        stmt = sa.select(cls).where(cls.id == instance_id)
        if self.session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        return self.session.execute(
            stmt.execution_options(populate_existing=True)
        ).scalar_one_or_none()

    def _document(self, instance: Any) -> tuple[Process | None, DocType, Any]:
        p = self.defs.processes.get(instance.process)
        d = self.registry.documents[instance.doctype]
        doc = self.session.get(self.models.cls(d.name), instance.doc_id)
        return p, d, doc

    def task_done(self, task: Any) -> None:
        """A task of an instance was completed: its token goes on by the outcome."""
        if task.process_id is None:
            return
        instance = self.lock(task.process_id)
        if instance is None or instance.status != "running":
            return
        p, d, doc = self._document(instance)
        if p is None or doc is None:
            return
        token = next(
            (t for t in instance.tokens if t.task_id == task.id and t.state == "waiting"), None
        )
        if token is None:
            return  # already moved on (the second of two completions)
        step = p.steps.get(token.step)
        if step is None:
            return
        target = step.outcomes.get(task.outcome or "") if step.outcomes else step.next
        if step.outcomes and target is None:
            raise ProcessError(f"choose an outcome of the task: {', '.join(step.outcomes)}")
        token.state = "done"
        if target:
            self._run(p, instance, d, doc, [(token, target)])
        else:
            self.docs.touch(instance)
            self.session.flush()

    def resume(self, instance_id: int, token_id: int, step_name: str) -> None:
        """The clock reached a wait: go on, unless the date moved later."""
        instance = self.lock(instance_id)
        if instance is None or instance.status != "running":
            return
        token = next((t for t in instance.tokens if t.id == token_id), None)
        if token is None or token.state != "waiting" or token.step != step_name:
            return
        p, d, doc = self._document(instance)
        if p is None or doc is None:
            return
        step = p.steps[step_name]
        if step.wait is not None and step.wait.until:
            until = self._until(step, d, doc)
            if until > self.docs.now() + dt.timedelta(seconds=1):
                api.enqueue(
                    self.session, "processes.resume",
                    {"instance": instance.id, "token": token.id, "step": step_name},
                    key=f"resume:{instance.id}:{token.id}:{until.isoformat()}", run_after=until,
                )  # fmt: skip
                return
        token.state = "done"
        if step.next:
            self._run(p, instance, d, doc, [(token, step.next)])


def _parent_of(instance: Any, group: str) -> str:
    """The branch that the split's own token was in, to return to after the join."""
    split_token_id = int(group.rsplit("@", 1)[1])
    for t in instance.tokens:
        if t.id == split_token_id:
            return str(t.parent or "")
    return ""


def _visits(token: Any) -> str:
    """Tells one pass through a step from the next, for idempotency keys."""
    since = token.since
    return since.strftime("%Y%m%d%H%M%S%f") if since else "0"


def _stamp(doc: Any) -> str:
    return str(getattr(doc, "version", "") or "")


USER_ROLE = sa.table("ab_user_role", sa.column("user_id"), sa.column("role_id"))
ROLE = sa.table("ab_role", sa.column("id"), sa.column("name"))
