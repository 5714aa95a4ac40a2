"""Markers for the template tests.

``sam_build`` marks the one test that runs a real ``sam build`` into a temporary folder:
about 4 s on the development machine (2026-11, 2.5 s for the build itself, the same with
pip's cache off), because pip downloads the DicomLayer's wheels from PyPI. Deselect it
with ``-m "not sam_build"`` when offline; ``make build`` builds the same way.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers used only here (pytest runs with --strict-markers)."""
    config.addinivalue_line(
        "markers", "sam_build: runs `sam build` into a temporary folder (needs PyPI or pip cache)"
    )
