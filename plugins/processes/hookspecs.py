"""Hooks the ``processes`` plugin offers to other plugins.

Added to the plugin manager by the plugin itself (``crm_add_hookspecs``),
so only a configuration with ``processes`` on knows them.
"""

from __future__ import annotations

from engine.api import hookspec


@hookspec
def crm_notification_channels() -> list[str]:
    """Return the names of the notification channels this plugin delivers
    (``user``, ``email``, ``sms``, ...); a route map or an automation that
    notifies by a channel nobody delivers is a check error. A plugin that
    does not need ``processes`` marks its implementation
    ``@hookimpl(optionalhook=True)``."""


@hookspec
def crm_process_step_kinds() -> list[str]:
    """Return extra step kinds for route maps (beyond the built-in ``task``,
    ``if``, ``notify``, ``set``, ``wait``, ``parallel`` and ``end``); a plugin
    that adds one also checks its steps in ``crm_check``."""
