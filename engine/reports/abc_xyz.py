"""Report kinds: abc_xyz (see engine/reports/__init__.py)."""

from __future__ import annotations
