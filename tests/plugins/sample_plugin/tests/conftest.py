"""In this repository the suite installs the sample plugin first (the
``sample_plugin`` fixture of tests/conftest.py); a published plugin is
simply installed in the environment its tests run in."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _installed(sample_plugin: None) -> None:
    """The sample distribution is installed through its entry point."""
