"""In this repository the suite installs the sample plugin first (the
``sample_plugin`` fixture of tests/conftest.py); a published plugin is
simply installed in the environment its tests run in."""

from __future__ import annotations

import pytest

# the framework's fixtures come through its `pytest11` entry point; named here
# too, so that an environment installed before that entry point existed has them
from engine.testing import crm_app, crm_drain, crm_login  # noqa: F401


@pytest.fixture(autouse=True)
def _installed(sample_plugin: None) -> None:
    """The sample distribution is installed through its entry point."""
