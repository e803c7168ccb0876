"""Processes: route maps, tasks, automations and notifications.

Turned on with ``plugins: {processes: {}}`` in a config. It will interpret the
``processes`` and ``automations`` sections: route maps whose steps create
tasks, branch, wait and set fields; automations that fire on a document being
created, changed or moved to a status; and notifications delivered over the
channels that plugins declare. Its document types (task, process instance)
will come as a metadata layer from the ``metadata/`` folder beside this file.
"""

from __future__ import annotations

from pathlib import Path

from engine.hookspecs import hookimpl

METADATA = Path(__file__).parent / "metadata"


@hookimpl
def crm_metadata_layers() -> list[tuple[str, Path]]:
    return [("processes", METADATA)] if METADATA.is_dir() else []
