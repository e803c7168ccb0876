"""Hooks the ``telephony`` plugin offers to provider plugins.

Added to the plugin manager by the telephony plugin itself
(``crm_add_hookspecs``); README.md beside this file documents them.
"""

from __future__ import annotations

from typing import Any

from engine.api import hookspec


@hookspec(firstresult=True)
def crm_place_call(extension: str, number: str, settings: dict[str, Any]) -> str | None:
    """Ask the PBX to ring ``extension``, then ``number`` (E.164). Return the
    provider's call id, or None if this plugin places no calls. *First result.*
    What happens to the call afterwards arrives through ``crm_call_event``."""


@hookspec
def crm_call_event(session: Any, event: dict[str, Any]) -> None:
    """Called for every call event a provider reports (ringing, answered,
    hung up, recording available), with the other party's number in E.164
    form under ``event["number"]``; the other keys depend on the provider."""
