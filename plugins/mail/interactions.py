"""A letter on the customer's timeline: where the configuration has an
Interaction type with a kind ``email`` (the base layer's), each letter sent
or received about a customer is kept as a done Interaction of kind email,
linked from the letter (``interaction``). A letter is a fact, not a plan:
the interaction is recorded as done without asking for the next one.
"""

from __future__ import annotations

from typing import Any

from engine.api import Documents

INTERACTION = "Interaction"
#: EmailMessage field → Interaction field, where both exist
CARRIED = {"customer": "customer", "contact": "contact", "interest": "interest"}


def applies(registry: Any) -> bool:
    d = registry.documents.get(INTERACTION)
    message = registry.documents.get("EmailMessage")
    if d is None or message is None or "interaction" not in message.fields:
        return False
    kind = d.fields.get("kind")
    return kind is not None and "email" in (kind.values or {}) and d.statuses is not None


def record(docs: Documents, row: Any) -> Any:
    """The done Interaction of kind email for the letter ``row`` (made once);
    None when the configuration keeps none or the letter is about no customer."""
    registry = docs.registry
    if not applies(registry) or getattr(row, "interaction_id", None) is not None:
        return None
    if getattr(row, "customer_id", None) is None:
        return None
    d = registry.documents[INTERACTION]
    values: dict[str, Any] = {
        "kind": "email",
        "subject": (row.subject or "—")[:255],
        "planned_at": row.sent_at or docs.now(),
        "duration": 0,
    }
    for source, target in CARRIED.items():
        value = getattr(row, f"{source}_id", None)
        if target in d.fields and value is not None:
            values[target] = value
    if "manager" in d.fields and getattr(row, "user_id", None) is not None:
        values["manager"] = row.user_id
    excerpt = " ".join((row.text or "").split())[:500]
    arrow = "←" if row.direction == "in" else "→"
    result = f"{arrow} {row.from_address if row.direction == 'in' else row.to}: {excerpt}"
    if "result" in d.fields:
        values["result"] = result.strip()
    if "duration" not in d.fields:
        values.pop("duration")
    interaction = docs.create(INTERACTION, values)
    done = _done_state(d)
    if done is not None and d.statuses is not None:
        source = getattr(interaction, d.statuses.field)
        setattr(interaction, d.statuses.field, done)
        docs.touch(interaction)
        docs.flush(d, interaction)
        docs.add_history(d, interaction, source, done)
    row.interaction_id = interaction.id
    return interaction


def _done_state(d: Any) -> str | None:
    states = d.statuses.states
    if "done" in states:
        return "done"
    for name, state in states.items():
        if state.final and getattr(state, "outcome", None) == "done":
            return str(name)
    return None
