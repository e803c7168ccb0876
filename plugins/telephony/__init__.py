"""Telephony: providers, the call log, the caller card, telemarketing and SMS.

Turned on with ``plugins: {telephony: {...settings}}`` in a config. It will
bring providers (a PBX or cloud telephony service) that place calls and report
call events, a call log matched to customers by phone number, a caller card
that pops up on an incoming call, telemarketing call lists worked by
operators, and SMS sending through the outbox. Its document types (call,
call list, SMS) will come as a metadata layer from the ``metadata/`` folder
beside this file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.api import hookimpl

from . import hookspecs

METADATA = Path(__file__).parent / "metadata"


@hookimpl
def crm_metadata_layers() -> list[tuple[str, Path]]:
    return [("telephony", METADATA)] if METADATA.is_dir() else []


@hookimpl
def crm_add_hookspecs(pm: Any) -> None:
    """The provider hooks (hookspecs.py): ``crm_place_call``, ``crm_call_event``."""
    pm.add_hookspecs(hookspecs)
