from __future__ import annotations

import pathlib

import pytest


@pytest.fixture
def store_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """A path for a new store directory (not yet created)."""
    return tmp_path / "store"
