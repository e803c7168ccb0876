"""Long-running services beside the job runner (``crm_worker_services``).

``crm worker`` runs each service a plugin returns in a daemon thread of its
own, inside the app's context, until the worker stops. A service that
returns or raises while the worker is still running is started again after
a pause that doubles from one second up to a minute (and resets once the
service has run for a minute), so a lost connection to an exchange heals by
itself and a broken one does not spin.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("crm.services")

FIRST_PAUSE = 1.0
LONGEST_PAUSE = 60.0


def _name(service: Any) -> str:
    return str(getattr(service, "__name__", None) or type(service).__name__)


def supervise(app: Any, service: Callable[[threading.Event], Any], stop: threading.Event) -> None:
    """Run ``service`` until ``stop`` is set, starting it again when it ends."""
    pause = FIRST_PAUSE
    while not stop.is_set():
        started = time.monotonic()
        try:
            with app.app_context():
                service(stop)
        except Exception as exc:  # a service's failure is logged, never the worker's end
            log.error("service %s failed: %s", _name(service), exc)
        if stop.is_set():
            break
        pause = FIRST_PAUSE if time.monotonic() - started > LONGEST_PAUSE else pause
        log.info("service %s ended; starting it again in %.0f s", _name(service), pause)
        stop.wait(pause)
        pause = min(pause * 2, LONGEST_PAUSE)


def start(app: Any, stop: threading.Event) -> list[threading.Thread]:
    """Start every enabled plugin's services; their threads."""
    crm = app.extensions["crm"]
    threads = []
    for result in crm.pm.hook.crm_worker_services(registry=crm.registry):
        for service in result or ():
            thread = threading.Thread(
                target=supervise, args=(app, service, stop), name=f"crm-{_name(service)}",
                daemon=True,
            )  # fmt: skip
            thread.start()
            threads.append(thread)
    return threads
