"""Hooks the ``telephony`` plugin offers to provider plugins and to others.

Added to the plugin manager by the telephony plugin itself
(``crm_add_hookspecs``); README.md beside this file documents them, and
docs/telephony.md shows a whole provider plugin.
"""

from __future__ import annotations

from typing import Any

from engine.api import hookspec


@hookspec(firstresult=True)
def crm_place_call(
    session: Any, extension: str, number: str, call_id: str, settings: dict[str, Any]
) -> str | None:
    """Ask the exchange to ring the user's ``extension``, then ``number``
    (E.164). ``call_id`` is the CRM's id of the call, already recorded as a
    ringing outgoing Call: pass it to the exchange as the call's reference
    where it takes one. Return the provider's call id (``call_id`` itself
    when the provider adopts it), or None if this plugin places no calls.
    *First result.* ``session`` is the caller's database session (a job may
    be queued in it); ``settings`` is every enabled plugin's settings by
    name: read your own. Raise ``engine.api.HandledError`` with a message
    the user reads when the exchange refuses. What happens to the call
    afterwards arrives through ``plugins.telephony.api.report``."""


@hookspec
def crm_call_event(session: Any, event: Any, call: Any) -> None:
    """Called after the telephony plugin applied a provider's call event
    (``plugins.telephony.api.Event``) to the Call record ``call``, in the
    same transaction: another plugin may react to calls ringing, answered
    or ended (``event.kind``). ``event.number`` is the other party's number
    in E.164 form."""
