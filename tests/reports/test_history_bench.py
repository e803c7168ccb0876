"""The history reports' benchmark runs small: the reports and the hand-written
SQL agree on every report before anything is timed (timings belong to
``python -m bench --reports-history``)."""

from __future__ import annotations

import pytest

from bench.__main__ import main


def test_the_history_reports_benchmark_runs_and_agrees(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--reports-history", "--rows", "3000", "--quick", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "3,000 deals" in out
    for name in ("deal_conversion", "deals_by_manager", "deals_by_department", "deal_stage_time",
                 "sales_plan"):  # fmt: skip
        assert name in out
