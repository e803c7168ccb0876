"""The one clock the engine reads.

Jobs, due dates and deadlines, ``today()`` and ``now`` in expressions,
relative date filters, calendars, reports and audit stamps all ask
:func:`now`. A test (or a demo that replays the past) moves time for the
whole engine at once with :func:`use`; nothing else in the engine or its
plugins calls ``datetime.now``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from zoneinfo import ZoneInfo


def _system() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_source: Callable[[], dt.datetime] = _system


def now() -> dt.datetime:
    """The current moment, timezone-aware, in UTC."""
    moment = _source()
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def today(tz: dt.tzinfo | str | None = None) -> dt.date:
    """Today's date where ``tz`` is (the company's time zone), UTC without one."""
    zone = ZoneInfo(tz) if isinstance(tz, str) else (tz or dt.UTC)
    return now().astimezone(zone).date()


@contextmanager
def use(source: Callable[[], dt.datetime]) -> Iterator[None]:
    """Read time from ``source`` inside the block (tests, replays)."""
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous
