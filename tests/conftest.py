"""Shared test fixtures. Everything a test needs lives inside the repository (tests/data/ with attribution)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA
