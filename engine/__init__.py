"""The CRM engine: YAML metadata in, a checked registry, a schema and an app out.

The public API that plugins may import lives in the modules named in
docs/plugins.md (``engine.hookspecs``, ``engine.registry``, ``engine.errors``,
``engine.expressions``, ``engine.filters``, ``engine.statuses``).
"""

__version__ = "0.1.0"
