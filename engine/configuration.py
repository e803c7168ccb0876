"""One configuration, read and checked once: what the app, the CLI and the worker share.

``load_configuration(folder)`` reads the YAML once: the checked metadata
(``registry``), the plugin manager with the enabled plugins (``pm``), every
field type by name and each plugin's settings as its schema loaded them
(``registry.plugins``). No later stage reads a YAML file again; what a
plugin derives from the configuration (its parsed sections) it keeps in
``registry.extensions``, which lives and dies with the configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.fieldtypes import FieldType
from engine.registry import Registry


@dataclass(frozen=True)
class Configuration:
    """A checked configuration: everything a stage needs to run it."""

    registry: Registry
    #: the pluggy manager with the core and the enabled plugins registered
    pm: Any
    #: every field type metadata may use, core and plugins', by name
    field_types: Mapping[str, FieldType]

    @property
    def settings(self) -> Mapping[str, Mapping[str, Any]]:
        """Each enabled plugin's settings by plugin name, as its schema loaded them."""
        return self.registry.plugins


def load_configuration(
    config_dir: str | Path, env: Mapping[str, str] | None = None
) -> Configuration:
    """Read and check a configuration folder; MetadataError lists every problem."""
    from engine.loader import Loader

    loader = Loader(Path(config_dir), env)
    registry = loader.load()
    field_types = {t.name: t for result in loader.pm.hook.crm_field_types() for t in result}
    return Configuration(registry, loader.pm, field_types)
