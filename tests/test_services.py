"""``crm worker`` runs the plugins' long-running services (crm_worker_services)
beside the jobs: each in its own thread in the app's context, started again
when it ends early, stopped with the worker."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from engine import services
from engine.testing import dispose, make_app


class Flaky:
    """Fails on its first run, then works until told to stop."""

    def __init__(self) -> None:
        self.runs = 0
        self.in_context: list[bool] = []
        self.working = threading.Event()

    def __call__(self, stop: threading.Event) -> None:
        from flask import current_app

        self.runs += 1
        self.in_context.append(current_app.extensions.get("crm") is not None)
        if self.runs == 1:
            raise ConnectionError("the exchange hung up")
        self.working.set()
        stop.wait()


def test_a_service_that_fails_is_started_again_and_stops_with_the_worker(
    tmp_path: Path, monkeypatch: Any
) -> None:
    app = make_app(tmp_path, "{}\n")
    try:
        service = Flaky()
        monkeypatch.setattr(services, "FIRST_PAUSE", 0.05)
        crm = app.extensions["crm"]

        class Plugin:
            from engine.hookspecs import hookimpl

            @hookimpl
            def crm_worker_services(self, registry: Any) -> list[Any]:
                return [service]

        crm.pm.register(Plugin(), name="listener")
        stop = threading.Event()
        threads = services.start(app, stop)
        assert len(threads) == 1
        assert service.working.wait(5)
        assert service.runs == 2 and service.in_context == [True, True]
        stop.set()
        threads[0].join(5)
        assert not threads[0].is_alive()
    finally:
        dispose(app)


def test_no_services_no_threads(tmp_path: Path) -> None:
    app = make_app(tmp_path, "{}\n")
    try:
        assert services.start(app, threading.Event()) == []
    finally:
        dispose(app)
