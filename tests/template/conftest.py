"""Markers for the template tests.

``sam_build`` marks the one test that runs a real ``sam build`` (about 3 s here with a warm
pip cache, under 30 s cold: it downloads the layer's wheels from PyPI). Deselect it with
``-m "not sam_build"`` when offline; ``make build`` builds the same way.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers used only here (pytest runs with --strict-markers)."""
    config.addinivalue_line(
        "markers", "sam_build: runs `sam build` into a temporary folder (needs PyPI or pip cache)"
    )
