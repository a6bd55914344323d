"""Shared fixtures. ../shared/data is the team's corpus; tests that need it say so."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HUSHLINK_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
IN_CI = os.environ.get("CI") == "true"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared corpus; in CI its absence is a failure, never a skip."""
    if not DATA.is_dir():
        if IN_CI:
            pytest.fail(f"{DATA} is missing in CI")
        pytest.skip(f"{DATA} not found (the team's shared corpus)")
    return DATA


@pytest.fixture
def tone() -> np.ndarray:
    t = np.arange(16_000) / 16_000
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
