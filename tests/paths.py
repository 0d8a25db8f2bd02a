"""Where the shared reference material is: ``../shared`` beside the repository (as in CI).

Tests that read shared fixtures or schemas fail — never skip — when it is missing, so a CI run
without it cannot pass by testing less.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"shared material missing: {path} (CI puts ../shared beside the repo)"
        )
    return path
