"""A sales company with the mail plugin on: the base layer, processes, a
real SMTP server (the ``smtp`` fixture, aiosmtpd) as the configuration's
mailbox, users in the base roles, and helpers to run the outbox."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.testing import Client, dispose, drain, make_app

FROM = "Romashka <crm@romashka.example>"


def mail_settings(smtp_port: int, **more: Any) -> dict[str, Any]:
    return {"smtp": {"host": "127.0.0.1", "port": smtp_port}, "from": FROM, **more}


@pytest.fixture
def mail_app(tmp_path: Path, db_url: str, smtp: Any) -> Iterator[Callable[..., Any]]:
    """``mail_app(**mail_settings)`` → a migrated app of the base layer with
    processes and mail on, sending through the test's SMTP server."""
    apps: list[Any] = []

    def build(metadata: str = "", layers: tuple[str, ...] = ("base",), **settings: Any) -> Any:
        app = make_app(
            tmp_path / f"config{len(apps)}",
            metadata or "{}\n",
            plugins={"processes": {}, "mail": mail_settings(smtp.port, **settings)},
            layers=layers,
            database=db_url,
        )
        apps.append(app)
        return app

    yield build
    for app in apps:
        dispose(app)


@pytest.fixture
def login() -> Callable[..., Client]:
    return lambda app, username: Client(app, username)


@pytest.fixture
def run_jobs() -> Callable[[Any], int]:
    return drain
