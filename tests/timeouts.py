"""``subprocess_timeout`` for test modules (see tests/conftest.py)."""

from __future__ import annotations

import os


def subprocess_timeout(base_seconds: float) -> float:
    """``base_seconds`` (enough on an idle machine) times the load factor of the session."""
    return base_seconds * float(os.environ.get("FEEDALIGN_TEST_LOAD_FACTOR", "4"))
