"""Where the tests' reference material is: ``tests/fixtures/``, inside the repository.

A user clones the repository alone, so every file a test reads ships with it (with its licence
notice beside it); nothing under relay/, tests/ or bench/ reads anything outside the clone
(tests/test_self_contained.py checks that). A missing fixture fails the test, never skips it.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def fixture(*parts: str) -> Path:
    """``tests/fixtures/<parts>``; raises if it is missing so the test fails loudly."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"test fixture missing: {path}")
    return path
