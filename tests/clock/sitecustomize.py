"""Moves the clock of every Python process the tests start (``crm worker``,
``crm run``, ``crm import``) as far ahead as the test run's own clock: the
suite puts this folder on PYTHONPATH when ``CRM_TEST_CLOCK_DAYS`` is set."""

import datetime as dt
import os

days = int(os.environ.get("CRM_TEST_CLOCK_DAYS") or 0)
if days:
    import time_machine

    time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=days), tick=True).start()
