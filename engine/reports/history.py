"""Report kinds: history (see engine/reports/__init__.py)."""

from __future__ import annotations


# --- conversion, compared funnels, time in stage, plan and fact ---
# conversion, by_manager, by_department and stage_time live in
# engine/reports/history_kinds.py, plan_fact in engine/reports/plans.py
# (load_kinds() imports both).
